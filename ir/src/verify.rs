//! The graph verifier.
//!
//! (Interim: structural checks only; the full verifier lands with shape inference.)

use crate::error::Result;
use crate::graph::Graph;

/// Checks the graph's invariants; the error names the offending node or value.
pub fn verify(g: &Graph) -> Result<()> {
    g.topo_order().map(|_| ())
}
