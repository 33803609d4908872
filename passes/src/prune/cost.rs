//! Parameter and FLOP accounting for pruning decisions.
//!
//! [`flops`] counts multiply-adds of Conv, ConvTranspose, Gemm and MatMul at batch 1
//! (symbolic dimensions taken as 1). [`CostModel`] predicts, for a number of removed
//! units per candidate group, the parameters and FLOPs left, exactly for parameters (a
//! constant sliced along several axes keeps the product of what each axis keeps) and,
//! for FLOPs, by scaling each layer with a constant weight by the fraction of that weight
//! kept (layers without a constant weight, e.g. attention score products, are counted
//! unchanged: the prediction errs on the side of too many FLOPs).

use crate::groups::{ChannelGroup, Role};
use cc_ir::{Dim, Graph, NodeId, Op, ValueId};
use std::collections::BTreeMap;

/// Product of a value's dimensions with symbolic/unknown ones taken as 1.
fn elems(g: &Graph, v: Option<ValueId>) -> u64 {
    let Some(v) = v else { return 0 };
    match g.value(v).ty.as_ref().and_then(|t| t.shape()) {
        Some(dims) => dims
            .iter()
            .map(|d| match d {
                Dim::Known(k) => (*k).max(0) as u64,
                _ => 1,
            })
            .product(),
        None => 0,
    }
}

/// Size of dimension `axis` of a value (symbolic = 1).
fn dim(g: &Graph, v: Option<ValueId>, axis: isize) -> u64 {
    let Some(v) = v else { return 0 };
    let Some(dims) = g.value(v).ty.as_ref().and_then(|t| t.shape()) else {
        return 0;
    };
    let i = if axis < 0 {
        dims.len() as isize + axis
    } else {
        axis
    };
    match usize::try_from(i).ok().and_then(|i| dims.get(i)) {
        Some(Dim::Known(k)) => (*k).max(0) as u64,
        Some(_) => 1,
        None => 0,
    }
}

/// Multiply-adds of one node (0 for ops other than Conv/ConvTranspose/Gemm/MatMul).
pub fn node_flops(g: &Graph, n: NodeId) -> u64 {
    let node = g.node(n);
    let w_len = || elems(g, node.input(1));
    match &node.op {
        Op::Conv(_) => {
            let cout = dim(g, node.input(1), 0).max(1);
            elems(g, node.output(0)) * (w_len() / cout)
        }
        Op::ConvTranspose(_) => {
            let cin = dim(g, node.input(1), 0).max(1);
            elems(g, node.input(0)) * (w_len() / cin)
        }
        Op::Gemm { trans_a, .. } => {
            let k = if trans_a.unwrap_or(0) != 0 {
                dim(g, node.input(0), 0)
            } else {
                dim(g, node.input(0), 1)
            };
            elems(g, node.output(0)) * k
        }
        Op::MatMul => elems(g, node.output(0)) * dim(g, node.input(0), -1),
        _ => 0,
    }
}

/// Multiply-adds of the whole graph at batch 1.
pub fn flops(g: &Graph) -> u64 {
    g.node_ids().into_iter().map(|n| node_flops(g, n)).sum()
}

/// One constant touched by candidate groups: its shape and, per axis, the groups that
/// slice it and how many indices one unit of each holds.
#[derive(Clone, Debug)]
struct ConstUse {
    shape: Vec<usize>,
    /// (axis, candidate index, indices per unit)
    slices: Vec<(usize, usize, usize)>,
    /// Layers whose FLOPs scale with this constant's kept fraction.
    flops: u64,
}

/// Predicts parameters and FLOPs for per-group removal counts.
#[derive(Clone, Debug)]
pub struct CostModel {
    consts: Vec<ConstUse>,
    /// Parameters of the graph before pruning.
    pub params: u64,
    /// FLOPs of the graph before pruning.
    pub flops: u64,
}

impl CostModel {
    /// The model for `groups` (the candidates, in order) of `g`.
    pub fn new(g: &Graph, groups: &[&ChannelGroup]) -> CostModel {
        let mut map: BTreeMap<ValueId, ConstUse> = BTreeMap::new();
        let mut seen = std::collections::BTreeSet::new();
        for (ci, grp) in groups.iter().enumerate() {
            for m in &grp.members {
                if m.role == Role::Carries {
                    continue;
                }
                let Some(t) = g.const_data(m.value) else {
                    continue;
                };
                let e = map.entry(m.value).or_insert_with(|| ConstUse {
                    shape: t.shape().to_vec(),
                    slices: Vec::new(),
                    flops: 0,
                });
                // A constant read by several nodes is one member per reader: count the
                // slice once.
                if seen.insert((m.value, m.axis, ci, m.offset, m.stride)) {
                    e.slices.push((m.axis, ci, m.block));
                }
            }
        }
        let mut total_flops = 0u64;
        for n in g.node_ids() {
            let f = node_flops(g, n);
            total_flops += f;
            if f == 0 {
                continue;
            }
            let node = g.node(n);
            // The constant weight of the layer: input 1 (Conv/Gemm/MatMul B), or input 0
            // of a MatMul with a constant left operand.
            let w = [node.input(1), node.input(0)]
                .into_iter()
                .flatten()
                .find(|&v| g.const_data(v).is_some());
            if let Some(e) = w.and_then(|w| map.get_mut(&w)) {
                e.flops += f;
            }
        }
        CostModel {
            consts: map.into_values().collect(),
            params: crate::stats::GraphStats::of(g).params as u64,
            flops: total_flops,
        }
    }

    /// Predicted (parameters, FLOPs) after removing `removed[i]` units of candidate `i`.
    pub fn predict(&self, removed: &[usize]) -> (u64, u64) {
        let mut params = self.params;
        let mut flops = self.flops;
        for c in &self.consts {
            let orig: u64 = c.shape.iter().map(|&d| d as u64).product();
            if orig == 0 {
                continue;
            }
            let mut dims: Vec<u64> = c.shape.iter().map(|&d| d as u64).collect();
            for &(axis, ci, block) in &c.slices {
                let r = removed.get(ci).copied().unwrap_or(0) as u64 * block as u64;
                if let Some(d) = dims.get_mut(axis) {
                    *d = d.saturating_sub(r);
                }
            }
            let kept: u64 = dims.iter().product();
            params = params.saturating_sub(orig - kept.min(orig));
            if c.flops > 0 {
                let kept_flops = (c.flops as f64 * kept as f64 / orig as f64).round() as u64;
                flops = flops.saturating_sub(c.flops - kept_flops.min(c.flops));
            }
        }
        (params, flops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_ir::op::ConvAttrs;
    use cc_ir::Tensor;

    #[test]
    fn conv_flops_and_exact_param_prediction() {
        let mut g = Graph::new("g");
        let x = g
            .add_value(
                "x",
                Some(cc_ir::ValueType::tensor(
                    cc_ir::DType::F32,
                    cc_ir::types::known_shape(&[1, 2, 4, 4]),
                )),
            )
            .unwrap();
        let w = g
            .add_const(
                "w",
                Tensor::from_f32(vec![4, 2, 3, 3], vec![0.5; 72]).unwrap(),
            )
            .unwrap();
        let y = g.add_value("y", None).unwrap();
        g.add_node(
            "c",
            Op::Conv(ConvAttrs {
                pads: Some(vec![1, 1, 1, 1]),
                ..Default::default()
            }),
            vec![Some(x), Some(w)],
            vec![Some(y)],
        )
        .unwrap();
        g.set_inputs(vec![x]);
        g.set_outputs(vec![y]);
        cc_ir::infer::infer_shapes(&mut g).unwrap();
        // 4*16 outputs, each 2*9 multiply-adds.
        assert_eq!(flops(&g), 64 * 18);
        let grp = |axis| ChannelGroup::single_member(4, w, axis);
        let (a, b) = (grp(0), grp(1));
        let m = CostModel::new(&g, &[&a, &b]);
        assert_eq!(m.predict(&[0, 0]), (72, 64 * 18));
        // Out 4->2 and in 2->1: 2*1*9 parameters, a quarter of the FLOPs.
        assert_eq!(m.predict(&[2, 1]), (18, 64 * 18 / 4));
    }
}
