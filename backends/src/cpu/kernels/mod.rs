//! Kernel dispatch: fast kernels for the ops that dominate run time, the reference
//! evaluator ([`crate::cpu::eval`]) for the rest.

mod minifloat;
pub mod quant;
mod quant_conv;

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
    // --- quantization kernels (quant.rs, quant_conv.rs) ---
    if let Some(out) = quant::run(op, inputs)? {
        return Ok(Some(out));
    }
    // --- end quantization kernels ---
    eval::eval_node(op, inputs, Some(num_outputs))
}
