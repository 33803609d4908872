//! Kernel dispatch: fast kernels for the ops that dominate run time, the reference
//! evaluator ([`crate::cpu::eval`]) for the rest.

use crate::cpu::eval;
use cc_ir::{Op, Result, Tensor};

/// What a kernel may use besides its inputs.
pub struct KernelCx<'a> {
    /// The thread pool kernels parallelize on.
    pub pool: &'a rayon::ThreadPool,
    /// Number of threads in the pool.
    pub threads: usize,
}

/// Runs one node: its outputs, or `Ok(None)` when no kernel supports the op with these
/// element types (the executor turns that into an error naming the node).
pub fn run_node(
    op: &Op,
    inputs: &[Option<&Tensor>],
    num_outputs: usize,
    _cx: &KernelCx<'_>,
) -> Result<Option<Vec<Tensor>>> {
    eval::eval_node(op, inputs, Some(num_outputs))
}
