//! cc-backends: executors and code generators for the cc-compile IR.
//!
//! [`cpu::CpuExecutor`] runs graphs (implementing [`cc_ir::Executor`]); the constant
//! evaluator [`cpu::eval`] also serves constant folding.

pub mod backend;
pub mod cpu;
pub mod cuda;

pub use backend::{Artifact, ArtifactFile, Backend, BackendOptions};
