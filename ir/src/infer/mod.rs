//! Shape and type inference for typed ops.
//!
//! (Interim: the full inference lands with its own change.)

use crate::error::Result;
use crate::graph::Graph;

/// Fills in the types of values produced by typed ops.
pub fn infer_shapes(_g: &mut Graph) -> Result<()> {
    Ok(())
}
