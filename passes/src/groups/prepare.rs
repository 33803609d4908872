//! Preparing a graph for discovery: static input shapes, folded shape subgraphs.

use cc_ir::{Graph, ValueId};

/// Fixes the shapes of the graph inputs (`shapes[i]` for the i-th input without data;
/// `None`: every symbolic or unknown dim becomes 1), re-infers all types and runs
/// `canonicalize`, so shape subgraphs fold to constants and every space has a size.
/// Group discovery is meant to run on a graph prepared this way.
pub fn prepare(g: &mut Graph, shapes: Option<&[Vec<usize>]>) -> Result<(), cc_ir::Error> {
    let inputs: Vec<ValueId> = g
        .inputs()
        .iter()
        .copied()
        .filter(|&v| !g.value(v).is_const())
        .collect();
    for (i, v) in inputs.into_iter().enumerate() {
        let Some(cc_ir::ValueType::Tensor { elem, shape }) = g.value(v).ty.clone() else {
            continue;
        };
        let new = match (shapes.and_then(|s| s.get(i)), shape) {
            (Some(s), _) => Some(s.iter().map(|&d| cc_ir::Dim::Known(d as i64)).collect()),
            (None, Some(dims)) => Some(
                dims.into_iter()
                    .map(|d| match d {
                        cc_ir::Dim::Known(k) => cc_ir::Dim::Known(k),
                        _ => cc_ir::Dim::Known(1),
                    })
                    .collect(),
            ),
            (None, None) => None,
        };
        g.value_mut(v).ty = Some(cc_ir::ValueType::Tensor { elem, shape: new });
    }
    let pipeline =
        crate::Pipeline::parse("canonicalize").map_err(|e| cc_ir::Error::invalid(e.to_string()))?;
    // Folding a shape subgraph makes more types known, which lets more fold: repeat
    // until the node count settles.
    for _ in 0..64 {
        let before = g.node_count();
        reinfer(g)?;
        crate::PassManager::new(&pipeline, crate::ManagerOptions::default())
            .and_then(|mut m| m.run(g))
            .map_err(|e| cc_ir::Error::invalid(e.to_string()))?;
        if g.node_count() == before {
            break;
        }
    }
    reinfer(g)
}

/// Forgets the types of values produced by typed ops and infers them again.
pub(crate) fn reinfer(g: &mut Graph) -> Result<(), cc_ir::Error> {
    for id in g.node_ids() {
        if g.node(id).op.is_other() {
            continue;
        }
        let outs: Vec<ValueId> = g.node(id).outputs().iter().flatten().copied().collect();
        for v in outs {
            g.value_mut(v).ty = None;
        }
    }
    cc_ir::infer::infer_shapes(g)
}
