//! Raising a graph's default-domain opset.
//!
//! Writing a compressed weight may need a newer opset than the model has (blocked and
//! 4-bit `DequantizeLinear` need 21). Raising the opset import alone would change the
//! meaning of ops whose attributes became inputs on the way, so [`raise_default_opset`]
//! rewrites those nodes into their newer form first:
//!
//! - Squeeze, Unsqueeze (13) and ReduceSum (13), the other reductions (18): the `axes`
//!   attribute becomes a constant int64 input;
//! - Split (13): the `split` attribute becomes a constant input; (18) a Split given
//!   neither sizes nor `num_outputs` gets `num_outputs` = its output count, which is
//!   the equal split it computed before.
//!
//! Default-domain nodes the IR carries as [`Op::Other`] (ops or versions it does not
//! model) are never guessed about: raising past them is refused with the node named.

use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId};
use crate::op::{Op, ReduceOp};
use crate::tensor::Tensor;

/// The model's default-domain opset, if it imports one.
pub fn default_opset(g: &Graph) -> Option<i64> {
    g.meta
        .opset_imports
        .iter()
        .find(|(d, _)| d.is_empty() || d == "ai.onnx")
        .map(|(_, v)| *v)
}

/// Raises the default-domain opset of `g` to `to` (no change when it is already there),
/// rewriting nodes whose form changed between the two opsets. Errors name the node that
/// cannot be carried over; `g` is unchanged then.
pub fn raise_default_opset(g: &mut Graph, to: i64) -> Result<()> {
    let Some(from) = default_opset(g) else {
        g.meta.opset_imports.push((String::new(), to));
        return Ok(());
    };
    if from >= to {
        return Ok(());
    }
    if from < crate::op::MIN_TYPED_OPSET {
        return Err(Error::unsupported(format!(
            "the model is at opset {from}; raising it to {to} is only done from opset {}",
            crate::op::MIN_TYPED_OPSET
        )));
    }
    let ids = g.node_ids();
    for &id in &ids {
        let node = g.node(id);
        if let Op::Other(other) = &node.op {
            if other.domain.is_empty() || other.domain == "ai.onnx" {
                return Err(Error::unsupported(format!(
                    "node {} ({}) is not modelled at opset {from}, so it cannot be carried to opset {to}",
                    node.name, other.op_type
                )));
            }
        }
    }
    let mut work = g.clone();
    for id in ids {
        upgrade_node(&mut work, id, from, to)?;
    }
    if let Some((_, v)) = work
        .meta
        .opset_imports
        .iter_mut()
        .find(|(d, _)| d.is_empty() || d == "ai.onnx")
    {
        *v = to;
    }
    *g = work;
    Ok(())
}

/// True when an op whose form changed at `at` is crossed by raising `from` to `to`.
fn crosses(from: i64, to: i64, at: i64) -> bool {
    from < at && at <= to
}

/// Adds `values` as a constant int64 input at `slot` of `id` (named after the node).
fn attr_to_input(g: &mut Graph, id: NodeId, slot: usize, what: &str, values: &[i64]) -> Result<()> {
    let name = g.unique_name(&format!("{}_{what}", g.node(id).name));
    let t = Tensor::from_i64(vec![values.len()], values.to_vec())?;
    let v = g.add_const(&name, t)?;
    if g.node(id).input(slot).is_some() {
        return Err(Error::invalid(format!(
            "node {} has both a {what} attribute and a {what} input",
            g.node(id).name
        )));
    }
    g.set_input(id, slot, Some(v));
    Ok(())
}

fn upgrade_node(g: &mut Graph, id: NodeId, from: i64, to: i64) -> Result<()> {
    let op = g.node(id).op.clone();
    match op {
        Op::Squeeze { axes: Some(axes) } if crosses(from, to, 13) => {
            attr_to_input(g, id, 1, "axes", &axes)?;
            g.node_mut(id).op = Op::Squeeze { axes: None };
        }
        Op::Unsqueeze { axes: Some(axes) } if crosses(from, to, 13) => {
            attr_to_input(g, id, 1, "axes", &axes)?;
            g.node_mut(id).op = Op::Unsqueeze { axes: None };
        }
        Op::Reduce {
            op,
            axes: Some(axes),
            keepdims,
            noop_with_empty_axes,
        } => {
            let at = if op == ReduceOp::Sum { 13 } else { 18 };
            if crosses(from, to, at) {
                attr_to_input(g, id, 1, "axes", &axes)?;
                g.node_mut(id).op = Op::Reduce {
                    op,
                    axes: None,
                    keepdims,
                    noop_with_empty_axes,
                };
            }
        }
        Op::Split {
            axis,
            split,
            num_outputs,
        } => {
            let mut split = split;
            let mut num_outputs = num_outputs;
            if crosses(from, to, 13) {
                if let Some(sizes) = split.take() {
                    attr_to_input(g, id, 1, "split", &sizes)?;
                }
            }
            if crosses(from, to, 18) && g.node(id).input(1).is_none() && num_outputs.is_none() {
                let n = g.node(id).outputs().len();
                num_outputs = Some(i64::try_from(n).map_err(|_| {
                    Error::invalid(format!("node {}: too many outputs", g.node(id).name))
                })?);
            }
            g.node_mut(id).op = Op::Split {
                axis,
                split,
                num_outputs,
            };
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::op::OtherOp;
    use crate::types::{known_shape, ValueType};

    fn graph(opset: i64) -> (Graph, crate::graph::ValueId) {
        let mut g = Graph::new("g");
        g.meta.opset_imports = vec![(String::new(), opset)];
        let x = g
            .add_value(
                "x",
                Some(ValueType::tensor(DType::F32, known_shape(&[2, 4, 1]))),
            )
            .unwrap();
        g.set_inputs(vec![x]);
        (g, x)
    }

    #[test]
    fn axes_and_split_attributes_become_inputs() {
        let (mut g, x) = graph(11);
        let s = g.add_value("s", None).unwrap();
        let m = g.add_value("m", None).unwrap();
        let (a, b) = (
            g.add_value("a", None).unwrap(),
            g.add_value("b", None).unwrap(),
        );
        let sq = g
            .add_node(
                "sq",
                Op::Squeeze {
                    axes: Some(vec![2]),
                },
                vec![Some(x)],
                vec![Some(s)],
            )
            .unwrap();
        let rm = g
            .add_node(
                "rm",
                Op::Reduce {
                    op: ReduceOp::Mean,
                    axes: Some(vec![1]),
                    keepdims: Some(0),
                    noop_with_empty_axes: None,
                },
                vec![Some(s)],
                vec![Some(m)],
            )
            .unwrap();
        let sp = g
            .add_node(
                "sp",
                Op::Split {
                    axis: Some(1),
                    split: None,
                    num_outputs: None,
                },
                vec![Some(s)],
                vec![Some(a), Some(b)],
            )
            .unwrap();
        g.set_outputs(vec![m, a, b]);
        raise_default_opset(&mut g, 21).unwrap();
        assert_eq!(default_opset(&g), Some(21));
        assert_eq!(g.node(sq).op, Op::Squeeze { axes: None });
        let axes = g.node(sq).input(1).and_then(|v| g.const_data(v)).unwrap();
        assert_eq!(axes.to_i64().unwrap(), vec![2]);
        let rm_axes = g.node(rm).input(1).and_then(|v| g.const_data(v)).unwrap();
        assert_eq!(rm_axes.to_i64().unwrap(), vec![1]);
        assert!(matches!(g.node(rm).op, Op::Reduce { axes: None, .. }));
        assert!(matches!(
            g.node(sp).op,
            Op::Split {
                num_outputs: Some(2),
                ..
            }
        ));
        crate::verify::verify(&g).unwrap();
    }

    #[test]
    fn reductions_other_than_sum_keep_attributes_below_18() {
        let (mut g, x) = graph(11);
        let m = g.add_value("m", None).unwrap();
        let rm = g
            .add_node(
                "rm",
                Op::Reduce {
                    op: ReduceOp::Max,
                    axes: Some(vec![1]),
                    keepdims: None,
                    noop_with_empty_axes: None,
                },
                vec![Some(x)],
                vec![Some(m)],
            )
            .unwrap();
        g.set_outputs(vec![m]);
        raise_default_opset(&mut g, 13).unwrap();
        assert!(matches!(g.node(rm).op, Op::Reduce { axes: Some(_), .. }));
        assert!(g.node(rm).input(1).is_none());
    }

    #[test]
    fn unmodelled_default_domain_nodes_are_refused_and_the_graph_kept() {
        let (mut g, x) = graph(17);
        let y = g.add_value("y", None).unwrap();
        let op = Op::Other(OtherOp {
            domain: String::new(),
            op_type: "Weird".into(),
            attributes: Vec::new(),
        });
        g.add_node("w", op, vec![Some(x)], vec![Some(y)]).unwrap();
        g.set_outputs(vec![y]);
        let e = raise_default_opset(&mut g, 21).unwrap_err().to_string();
        assert!(e.contains("node w (Weird)"), "{e}");
        assert_eq!(default_opset(&g), Some(17));
    }
}
