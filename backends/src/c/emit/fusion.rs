//! Activation fusion: a Relu or a Clip with constant bounds that is the only reader of a
//! Conv or Gemm output becomes a clamp inside that node's code; its output then shares
//! the producer's buffer (the planner treats it as an alias).

use cc_ir::op::UnaryOp;
use cc_ir::{Graph, NodeId, Op};
use std::collections::BTreeMap;

/// Fused activations: producer node -> (activation node, lower bound, upper bound).
pub type Fused = BTreeMap<NodeId, (NodeId, f32, f32)>;

/// The scalar f32 constant of `node`'s optional input `slot`: `Some(None)` when the
/// input is absent, `None` when it is present but not a scalar constant.
fn bound(g: &Graph, node: NodeId, slot: usize) -> Option<Option<f32>> {
    match g.node(node).input(slot) {
        None => Some(None),
        Some(v) => {
            let t = g.const_data(v)?;
            if t.len() != 1 {
                return None;
            }
            t.f32_view().ok().and_then(|x| x.first().copied()).map(Some)
        }
    }
}

/// The activations to fuse in `g`.
pub fn plan(g: &Graph, order: &[NodeId]) -> Fused {
    let mut fused = Fused::new();
    for &id in order {
        let node = g.node(id);
        if !matches!(node.op, Op::Conv(_) | Op::Gemm { .. }) || node.outputs().len() != 1 {
            continue;
        }
        let Some(y) = node.output(0) else { continue };
        let uses = g.value(y).uses();
        if g.is_output(y) || uses.len() != 1 {
            continue;
        }
        let act = uses[0].node();
        let a = g.node(act);
        if a.input(0) != Some(y) || a.outputs().len() != 1 {
            continue;
        }
        let bounds = match &a.op {
            Op::Unary(UnaryOp::Relu) => Some((0.0, f32::INFINITY)),
            Op::Clip => match (bound(g, act, 1), bound(g, act, 2)) {
                (Some(lo), Some(hi)) => {
                    Some((lo.unwrap_or(f32::NEG_INFINITY), hi.unwrap_or(f32::INFINITY)))
                }
                _ => None,
            },
            _ => None,
        };
        if let Some((lo, hi)) = bounds {
            fused.insert(id, (act, lo, hi));
        }
    }
    fused
}
