//! cc-backends: executors and code generators for the cc-compile IR.
//!
//! [`cpu::CpuExecutor`] runs graphs (implementing [`cc_ir::Executor`]); the constant
//! evaluator [`cpu::eval`] also serves constant folding. [`c::CBackend`] generates C;
//! [`cuda`] lowers a graph to CUDA C ([`cuda::CudaBackend`]) and runs it through NVRTC
//! ([`cuda::CudaRunner`]).

pub mod arena;
pub mod backend;
pub mod c;
pub mod cpu;
pub mod cuda;

pub use backend::{Artifact, ArtifactFile, Backend, BackendOptions};
pub use c::CBackend;
