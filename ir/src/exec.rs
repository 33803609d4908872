//! The executor interface: how passes (calibration, error measurement) and tools run a
//! graph without depending on a backend. cc-backends' `CpuExecutor` implements it.

use crate::error::Result;
use crate::graph::Graph;
use crate::tensor::Tensor;

/// Runs a graph on concrete inputs.
pub trait Executor: Send + Sync {
    /// Runs `g`: `inputs` bind, in order, to the graph inputs that carry no data (a graph
    /// input with data — an initializer listed as input — keeps its data unless an extra
    /// input is given for it). Returns the graph outputs in order. Wrong input count,
    /// element type or shape, and unsupported ops, are errors naming the input or node.
    fn run(&self, g: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>>;
}
