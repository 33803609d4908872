//! The CPU backend: [`exec::CpuExecutor`] runs a graph; [`kernels`] holds the fast
//! kernels it dispatches to; [`eval`] is the reference evaluator for everything else
//! (and for constant folding).

pub mod cb_fusion;
pub mod eval;
pub mod exec;
pub mod fusion;
pub mod fusion_qdq;
pub mod kernels;
pub mod parallel;

pub use exec::CpuExecutor;
