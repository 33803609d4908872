//! `fold`: constant folding, including shape subgraphs over static shapes.
//!
//! A typed node whose inputs are all constants is evaluated with
//! [`cc_backends::cpu::eval::eval_node`]; its outputs become constants that keep their
//! value ids and names, and the node is removed. `Shape` and `Size` of a value whose
//! static type has a fully known shape fold too, so shape subgraphs collapse wherever
//! shapes are known. `Op::Other` never folds, nor does Identity (`remove-identity`
//! bypasses it without copying the weight), and nodes the evaluator does not support
//! stay as they are. Initializers that are also graph inputs are not constants here
//! (they can be overridden at run time).
//!
//! Size rule (so folding never bloats a model): a node folds when its outputs hold at
//! most `always-elements` elements in total (shape-like values), or otherwise when the
//! outputs' bytes are at most `growth` times the bytes of its constant inputs. So a
//! Transpose or Cast of a weight folds, while Expand/ConstantOfShape/Range producing a
//! big tensor from a few numbers stay in the graph.

use crate::error::PassError;
use crate::options::{OptionKind, OptionSpec, Options};
use crate::pass::{Changed, Pass, PassCx};
use crate::registry::PassInfo;
use cc_backends::cpu::eval::eval_node;
use cc_ir::infer::shape_range;
use cc_ir::types::known_shape;
use cc_ir::{Graph, NodeId, Op, Tensor, ValueType};

const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "always-elements",
        kind: OptionKind::Int {
            min: Some(0),
            max: None,
        },
        default: "65536",
        help: "outputs with at most this many elements always fold",
    },
    OptionSpec {
        name: "growth",
        kind: OptionKind::Float,
        default: "4",
        help: "larger outputs fold only if their bytes are at most this times the inputs' bytes",
    },
];

inventory::submit! {
    PassInfo {
        name: "fold",
        summary: "constant folding, including shape subgraphs over static shapes (exact)",
        options: OPTIONS,
        create: |o| Ok(Box::new(Fold::from_options(o)?)),
    }
}

/// The constant-folding pass.
#[derive(Clone, Debug)]
pub struct Fold {
    /// Outputs with at most this many elements always fold.
    pub always_elements: usize,
    /// Larger outputs fold only when output bytes <= growth * input bytes.
    pub growth: f64,
}

impl Default for Fold {
    fn default() -> Self {
        Fold {
            always_elements: 65536,
            growth: 4.0,
        }
    }
}

impl Fold {
    /// The pass with parsed options.
    pub fn from_options(o: &Options) -> Result<Fold, PassError> {
        Ok(Fold {
            always_elements: usize::try_from(o.get_int("always-elements")?).unwrap_or(0),
            growth: o.get_float("growth")?,
        })
    }

    /// The static dims of a value, when its type has a fully known shape.
    fn static_dims(g: &Graph, v: cc_ir::ValueId) -> Option<Vec<i64>> {
        let shape = g.value(v).ty.as_ref()?.shape()?;
        shape
            .iter()
            .map(|d| d.known().filter(|&k| k >= 0))
            .collect()
    }

    /// Outputs of a Shape/Size node over a non-constant input with a static shape.
    fn fold_static_shape(g: &Graph, n: NodeId) -> Result<Option<Vec<Tensor>>, PassError> {
        let node = g.node(n);
        let Some(x) = node.input(0) else {
            return Ok(None);
        };
        let Some(dims) = Self::static_dims(g, x) else {
            return Ok(None);
        };
        let t = match &node.op {
            Op::Shape { start, end } => {
                let v = dims
                    .get(shape_range(*start, *end, dims.len()))
                    .unwrap_or_default()
                    .to_vec();
                Tensor::from_i64(vec![v.len()], v)?
            }
            Op::Size => {
                let n = dims.iter().try_fold(1i64, |a, &d| a.checked_mul(d));
                match n {
                    Some(n) => Tensor::from_i64(vec![], vec![n])?,
                    None => return Ok(None),
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(vec![t]))
    }

    /// Gather or Slice (with constant indices) of `Shape(x)` where `x` has a known rank
    /// and every selected dimension is known, even if others are symbolic: the op is
    /// evaluated on the dimension positions, which are then replaced by their sizes.
    fn fold_known_dims(g: &Graph, n: NodeId) -> Result<Option<Vec<Tensor>>, PassError> {
        let node = g.node(n);
        let Some(s) = node.input(0) else {
            return Ok(None);
        };
        let Some((shape_node, _)) = g.value(s).producer() else {
            return Ok(None);
        };
        let Op::Shape { start, end } = &g.node(shape_node).op else {
            return Ok(None);
        };
        let Some(x) = g.node(shape_node).input(0) else {
            return Ok(None);
        };
        let Some(dims) = g.value(x).ty.as_ref().and_then(|t| t.shape()) else {
            return Ok(None);
        };
        let positions: Vec<i64> = shape_range(*start, *end, dims.len())
            .map(|i| i as i64)
            .collect();
        let positions = Tensor::from_i64(vec![positions.len()], positions)?;
        let mut inputs: Vec<Option<&Tensor>> = vec![Some(&positions)];
        for v in node.inputs().iter().skip(1) {
            match v {
                None => inputs.push(None),
                Some(v) if g.is_input(*v) => return Ok(None),
                Some(v) => match g.const_data(*v) {
                    Some(t) => inputs.push(Some(t)),
                    None => return Ok(None),
                },
            }
        }
        let Ok(Some(outs)) = eval_node(&node.op, &inputs, Some(1)) else {
            return Ok(None);
        };
        let Some(picked) = outs.first() else {
            return Ok(None);
        };
        let sizes: Option<Vec<i64>> = picked
            .to_i64()?
            .iter()
            .map(|&p| {
                let d = usize::try_from(p).ok().and_then(|p| dims.get(p))?;
                d.known().filter(|&k| k >= 0)
            })
            .collect();
        match sizes {
            Some(v) => Ok(Some(vec![Tensor::from_i64(picked.shape().to_vec(), v)?])),
            None => Ok(None),
        }
    }

    /// Tries to fold one node; true when it was folded.
    fn fold_node(&self, g: &mut Graph, n: NodeId) -> Result<bool, PassError> {
        let node = g.node(n);
        // Identity is left to remove-identity: folding it would copy shared weights.
        if node.op.is_other() || node.op == Op::Identity || !node.implicit_inputs().is_empty() {
            return Ok(false);
        }
        let n_out = node.outputs().len();
        if node.outputs().iter().flatten().count() == 0 {
            return Ok(false);
        }
        let all_const = node
            .inputs()
            .iter()
            .flatten()
            // An initializer that is also a graph input can be overridden at run time.
            .all(|&v| g.value(v).is_const() && !g.is_input(v));
        let (outs, in_bytes) = if all_const {
            let inputs: Vec<Option<&Tensor>> = node
                .inputs()
                .iter()
                .map(|v| v.and_then(|v| g.const_data(v)))
                .collect();
            let in_bytes: usize = inputs.iter().flatten().map(|t| t.byte_len()).sum();
            let outs = eval_node(&node.op, &inputs, Some(n_out)).map_err(|e| {
                cc_ir::Error::invalid(format!("folding node {}: {e}", g.node_label(n)))
            })?;
            (outs, in_bytes)
        } else if matches!(node.op, Op::Shape { .. } | Op::Size) {
            (Self::fold_static_shape(g, n)?, 0)
        } else if matches!(node.op, Op::Gather { .. } | Op::Slice) {
            (Self::fold_known_dims(g, n)?, 0)
        } else {
            return Ok(false);
        };
        let Some(outs) = outs else {
            return Ok(false);
        };
        if outs.len() != n_out {
            return Ok(false);
        }
        let out_elems: usize = outs.iter().map(Tensor::len).sum();
        let out_bytes: usize = outs.iter().map(Tensor::byte_len).sum();
        if out_elems > self.always_elements && out_bytes as f64 > self.growth * in_bytes as f64 {
            return Ok(false);
        }
        let slots: Vec<Option<cc_ir::ValueId>> = g.node(n).outputs().to_vec();
        g.remove_node(n);
        for (v, t) in slots.into_iter().zip(outs) {
            if let Some(v) = v {
                let val = g.value_mut(v);
                val.ty = Some(ValueType::tensor(t.dtype(), known_shape(t.shape())));
                val.data = Some(t);
            }
        }
        Ok(true)
    }
}

impl Pass for Fold {
    fn name(&self) -> &str {
        "fold"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let mut folded = 0usize;
        // Topological order: a folded producer makes its consumers foldable in the same
        // sweep.
        for n in g.topo_order()? {
            if g.contains_node(n) && self.fold_node(g, n)? {
                folded += 1;
            }
        }
        cx.stat("folded", folded);
        Ok(Changed(folded > 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_ir::op::{BinaryOp, UnaryOp};
    use cc_ir::types::Dim;
    use cc_ir::OtherOp;

    fn run(g: &mut Graph, p: &mut Fold) -> (bool, Vec<(String, crate::pass::Stat)>) {
        let mut cx = PassCx::new(0);
        let c = p.run(g, &mut cx).unwrap();
        cc_ir::verify::verify(g).unwrap();
        (c.is_changed(), cx.take_stats())
    }

    #[test]
    fn folds_constant_chain_keeping_ids_and_names() {
        let mut g = Graph::new("g");
        let a = g
            .add_const("a", Tensor::from_f32(vec![2], vec![1.0, 4.0]).unwrap())
            .unwrap();
        let s = g.add_value("s", None).unwrap();
        let y = g.add_value("y", None).unwrap();
        g.add_node(
            "sqrt",
            Op::Unary(UnaryOp::Sqrt),
            vec![Some(a)],
            vec![Some(s)],
        )
        .unwrap();
        g.add_node(
            "mul",
            Op::Binary(BinaryOp::Mul),
            vec![Some(s), Some(a)],
            vec![Some(y)],
        )
        .unwrap();
        g.set_outputs(vec![y]);
        let (changed, stats) = run(&mut g, &mut Fold::default());
        assert!(changed);
        assert_eq!(stats[0].1, crate::pass::Stat::Int(2));
        assert_eq!(g.node_count(), 0);
        assert_eq!(g.outputs(), &[y]);
        assert_eq!(g.value(y).name(), "y");
        assert_eq!(g.const_data(y).unwrap().to_f32().unwrap(), vec![1.0, 8.0]);
        // Nothing left to do: unchanged.
        assert!(!run(&mut g, &mut Fold::default()).0);
    }

    /// x[N?,3,4,5] -> Shape -> Gather(1) -> Unsqueeze(0) -> Concat([-1], .) -> Reshape(x, .)
    fn shape_chain(batch: Dim) -> (Graph, cc_ir::ValueId) {
        let mut g = Graph::new("g");
        let ty = ValueType::Tensor {
            elem: Some(cc_ir::DType::F32),
            shape: Some(vec![batch, Dim::Known(3), Dim::Known(4), Dim::Known(5)]),
        };
        let x = g.add_value("x", Some(ty)).unwrap();
        let idx = g
            .add_const("idx", Tensor::from_i64(vec![], vec![1]).unwrap())
            .unwrap();
        let axes = g
            .add_const("axes", Tensor::from_i64(vec![1], vec![0]).unwrap())
            .unwrap();
        let m1 = g
            .add_const("m1", Tensor::from_i64(vec![1], vec![-1]).unwrap())
            .unwrap();
        let names = ["shape", "dim", "dim1", "target", "y"];
        let v: Vec<_> = names
            .iter()
            .map(|n| g.add_value(n, None).unwrap())
            .collect();
        g.add_node(
            "Shape",
            Op::Shape {
                start: None,
                end: None,
            },
            vec![Some(x)],
            vec![Some(v[0])],
        )
        .unwrap();
        g.add_node(
            "Gather",
            Op::Gather { axis: Some(0) },
            vec![Some(v[0]), Some(idx)],
            vec![Some(v[1])],
        )
        .unwrap();
        g.add_node(
            "Unsqueeze",
            Op::Unsqueeze { axes: None },
            vec![Some(v[1]), Some(axes)],
            vec![Some(v[2])],
        )
        .unwrap();
        g.add_node(
            "Concat",
            Op::Concat { axis: 0 },
            vec![Some(m1), Some(v[2])],
            vec![Some(v[3])],
        )
        .unwrap();
        g.add_node(
            "Reshape",
            Op::Reshape { allowzero: None },
            vec![Some(x), Some(v[3])],
            vec![Some(v[4])],
        )
        .unwrap();
        g.set_inputs(vec![x]);
        g.set_outputs(vec![v[4]]);
        (g, v[3])
    }

    #[test]
    fn folds_shape_gather_unsqueeze_concat_chain() {
        let (mut g, target) = shape_chain(Dim::Known(2));
        let (_, stats) = run(&mut g, &mut Fold::default());
        assert_eq!(stats, vec![("folded".into(), crate::pass::Stat::Int(4))]);
        assert_eq!(g.node_count(), 1, "only the Reshape of the input is left");
        assert_eq!(g.const_data(target).unwrap().to_i64().unwrap(), vec![-1, 3]);
        assert_eq!(g.value(target).ty.as_ref().unwrap().to_string(), "i64[2]");
    }

    #[test]
    fn known_dims_of_partly_symbolic_shape_fold() {
        // Gather(Shape(x), 1) reads the known dim 3 although the batch dim is symbolic.
        let (mut g, target) = shape_chain(Dim::Sym("N".into()));
        let (_, stats) = run(&mut g, &mut Fold::default());
        assert_eq!(stats, vec![("folded".into(), crate::pass::Stat::Int(3))]);
        assert_eq!(g.node_count(), 2, "Shape and Reshape stay");
        assert_eq!(g.const_data(target).unwrap().to_i64().unwrap(), vec![-1, 3]);
    }

    #[test]
    fn unknown_dims_do_not_fold() {
        // Selecting the symbolic dim (index 0, or -4) keeps the whole chain.
        for idx in [0i64, -4] {
            let (mut g, target) = shape_chain(Dim::Sym("N".into()));
            let i = g.value_by_name("idx").unwrap();
            g.value_mut(i).data = Some(Tensor::from_i64(vec![], vec![idx]).unwrap());
            assert!(!run(&mut g, &mut Fold::default()).0);
            assert_eq!(g.node_count(), 5);
            assert!(g.const_data(target).is_none());
        }
        // Unknown rank: nothing folds.
        let (mut g, _) = shape_chain(Dim::Known(2));
        let x = g.value_by_name("x").unwrap();
        g.value_mut(x).ty = None;
        assert!(!run(&mut g, &mut Fold::default()).0);
    }

    #[test]
    fn slice_of_shape_with_known_tail_folds() {
        let mut g = Graph::new("g");
        let ty = ValueType::Tensor {
            elem: Some(cc_ir::DType::F32),
            shape: Some(vec![Dim::Sym("N".into()), Dim::Known(7), Dim::Known(9)]),
        };
        let x = g.add_value("x", Some(ty)).unwrap();
        let c = |g: &mut Graph, n: &str, v: i64| {
            g.add_const(n, Tensor::from_i64(vec![1], vec![v]).unwrap())
                .unwrap()
        };
        let (st, en) = (c(&mut g, "st", -2), c(&mut g, "en", i64::MAX));
        let s = g.add_value("s", None).unwrap();
        let t = g.add_value("t", None).unwrap();
        g.add_node(
            "shape",
            Op::Shape {
                start: None,
                end: None,
            },
            vec![Some(x)],
            vec![Some(s)],
        )
        .unwrap();
        g.add_node(
            "slice",
            Op::Slice,
            vec![Some(s), Some(st), Some(en)],
            vec![Some(t)],
        )
        .unwrap();
        g.set_inputs(vec![x]);
        g.set_outputs(vec![t]);
        assert!(run(&mut g, &mut Fold::default()).0);
        assert_eq!(g.const_data(t).unwrap().to_i64().unwrap(), vec![7, 9]);
    }

    #[test]
    fn identity_and_graph_input_initializers_do_not_fold() {
        let mut g = Graph::new("g");
        let c = g
            .add_const("c", Tensor::from_f32(vec![1], vec![2.0]).unwrap())
            .unwrap();
        let (a, b) = (
            g.add_value("a", None).unwrap(),
            g.add_value("b", None).unwrap(),
        );
        g.add_node("id", Op::Identity, vec![Some(c)], vec![Some(a)])
            .unwrap();
        g.add_node("neg", Op::Unary(UnaryOp::Neg), vec![Some(c)], vec![Some(b)])
            .unwrap();
        g.set_inputs(vec![c]);
        g.set_outputs(vec![a, b]);
        assert!(!run(&mut g, &mut Fold::default()).0);
        g.set_inputs(vec![]);
        let (_, stats) = run(&mut g, &mut Fold::default());
        assert_eq!(stats[0].1, crate::pass::Stat::Int(1), "only Neg folds");
        assert!(g.const_data(a).is_none());
    }

    #[test]
    fn other_ops_and_size_limits_are_respected() {
        let mut g = Graph::new("g");
        let c = g
            .add_const("c", Tensor::from_f32(vec![1], vec![1.0]).unwrap())
            .unwrap();
        let shape = g
            .add_const("shape", Tensor::from_i64(vec![2], vec![100, 100]).unwrap())
            .unwrap();
        let o = g.add_value("o", None).unwrap();
        let e = g.add_value("e", None).unwrap();
        let other = Op::Other(OtherOp {
            domain: String::new(),
            op_type: "Neg".into(),
            attributes: vec![],
        });
        g.add_node("other", other, vec![Some(c)], vec![Some(o)])
            .unwrap();
        g.add_node(
            "expand",
            Op::Expand,
            vec![Some(c), Some(shape)],
            vec![Some(e)],
        )
        .unwrap();
        g.set_outputs(vec![o, e]);
        let mut strict = Fold {
            always_elements: 1000,
            growth: 4.0,
        };
        assert!(
            !run(&mut g, &mut strict).0,
            "10000 elements from 20 bytes stay"
        );
        let mut loose = Fold {
            always_elements: 10_000,
            growth: 4.0,
        };
        assert!(run(&mut g, &mut loose).0);
        assert_eq!(g.const_data(e).unwrap().shape(), &[100, 100]);
        assert_eq!(g.node_count(), 1, "Other op never folds");
    }

    #[test]
    fn options_parse() {
        let info = crate::registry::find("fold").unwrap();
        let o = info
            .parse_options(&[("growth".into(), "1.5".into())])
            .unwrap();
        let f = Fold::from_options(&o).unwrap();
        assert_eq!((f.always_elements, f.growth), (65536, 1.5));
    }

    #[test]
    fn default_matches_the_option_defaults() {
        let info = crate::registry::find("fold").unwrap();
        let f = Fold::from_options(&info.parse_options(&[]).unwrap()).unwrap();
        let d = Fold::default();
        assert_eq!((f.always_elements, f.growth), (d.always_elements, d.growth));
    }
}
