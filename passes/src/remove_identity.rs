//! `remove-identity`: removes Identity nodes and inference-mode Dropout.
//!
//! Readers of the node's output read its input instead. Graph output names never change:
//! when the output is a graph output, the node goes only if its input is produced by a
//! node and is neither a graph input nor a graph output; then the producer writes the
//! output value directly and the input's other readers read it. Otherwise the node stays.

use crate::error::PassError;
use crate::pass::{Changed, Pass, PassCx};
use crate::registry::PassInfo;
use cc_ir::{DType, Graph, NodeId, Op};

inventory::submit! {
    PassInfo {
        name: "remove-identity",
        summary: "remove Identity and inference-mode Dropout, keeping graph output names",
        options: &[],
        create: |_| Ok(Box::new(RemoveIdentity)),
    }
}

/// The Identity/Dropout removal pass.
#[derive(Clone, Copy, Debug, Default)]
pub struct RemoveIdentity;

/// True for Identity, and for Dropout that is a no-op: no training_mode input or a
/// constant false one, and a mask output that nobody reads.
fn is_passthrough(g: &Graph, n: NodeId) -> bool {
    let node = g.node(n);
    match node.op {
        Op::Identity => true,
        Op::Dropout { .. } => {
            let training_off = match node.input(2) {
                None => true,
                Some(t) => {
                    !g.is_input(t)
                        && g.const_data(t).is_some_and(|d| {
                            d.dtype() == DType::Bool
                                && d.to_bool().is_ok_and(|v| v.iter().all(|b| !b))
                        })
                }
            };
            let mask_unused = node
                .output(1)
                .is_none_or(|m| g.value(m).uses().is_empty() && !g.is_output(m));
            training_off && mask_unused && node.outputs().len() <= 2
        }
        _ => false,
    }
}

impl RemoveIdentity {
    fn try_remove(g: &mut Graph, n: NodeId) -> Result<bool, PassError> {
        if !is_passthrough(g, n) {
            return Ok(false);
        }
        let node = g.node(n);
        let (Some(inp), Some(out)) = (node.input(0), node.output(0)) else {
            return Ok(false);
        };
        if !node.implicit_inputs().is_empty() || inp == out {
            return Ok(false);
        }
        if !g.is_output(out) {
            g.remove_node(n);
            g.replace_all_uses(out, inp);
            return Ok(true);
        }
        let Some((p, slot)) = g.value(inp).producer() else {
            return Ok(false);
        };
        if g.is_input(inp) || g.is_output(inp) {
            return Ok(false);
        }
        g.remove_node(n);
        g.set_output(p, slot, Some(out))?;
        g.replace_all_uses(inp, out);
        Ok(true)
    }
}

impl Pass for RemoveIdentity {
    fn name(&self) -> &str {
        "remove-identity"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let mut removed = 0usize;
        for n in g.topo_order()? {
            if g.contains_node(n) && Self::try_remove(g, n)? {
                removed += 1;
            }
        }
        cx.stat("removed", removed);
        Ok(Changed(removed > 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_ir::op::UnaryOp;
    use cc_ir::{Tensor, ValueId};

    fn run(g: &mut Graph) -> usize {
        let mut cx = PassCx::new(0);
        RemoveIdentity.run(g, &mut cx).unwrap();
        cc_ir::verify::verify(g).unwrap();
        match cx.stats()[0].1 {
            crate::pass::Stat::Int(v) => v as usize,
            _ => unreachable!(),
        }
    }

    /// x -> Relu -> a -> op -> b -> Neg -> c ; returns (graph, [x, a, b, c]).
    fn chain(op: Op, out_is_graph_output: bool) -> (Graph, Vec<ValueId>) {
        let mut g = Graph::new("g");
        let v: Vec<ValueId> = ["x", "a", "b", "c"]
            .iter()
            .map(|n| g.add_value(n, None).unwrap())
            .collect();
        g.add_node(
            "relu",
            Op::Unary(UnaryOp::Relu),
            vec![Some(v[0])],
            vec![Some(v[1])],
        )
        .unwrap();
        g.add_node("mid", op, vec![Some(v[1])], vec![Some(v[2])])
            .unwrap();
        g.add_node(
            "neg",
            Op::Unary(UnaryOp::Neg),
            vec![Some(v[2])],
            vec![Some(v[3])],
        )
        .unwrap();
        g.set_inputs(vec![v[0]]);
        g.set_outputs(if out_is_graph_output {
            vec![v[2], v[3]]
        } else {
            vec![v[3]]
        });
        (g, v)
    }

    #[test]
    fn identity_inside_graph_is_bypassed() {
        let (mut g, v) = chain(Op::Identity, false);
        assert_eq!(run(&mut g), 1);
        assert_eq!(g.node_count(), 2);
        let neg = g.value(v[3]).producer().unwrap().0;
        assert_eq!(g.node(neg).input(0), Some(v[1]));
    }

    #[test]
    fn graph_output_name_is_kept() {
        let (mut g, v) = chain(Op::Identity, true);
        assert_eq!(run(&mut g), 1);
        assert_eq!(g.node_count(), 2);
        assert_eq!(g.outputs(), &[v[2], v[3]]);
        let relu = g.value(v[2]).producer().unwrap().0;
        assert_eq!(g.node(relu).name, "relu");
        assert!(g.value(v[1]).producer().is_none() && g.value(v[1]).uses().is_empty());
        let neg = g.value(v[3]).producer().unwrap().0;
        assert_eq!(g.node(neg).input(0), Some(v[2]));
    }

    #[test]
    fn identity_from_graph_input_to_output_stays() {
        let mut g = Graph::new("g");
        let x = g.add_value("x", None).unwrap();
        let y = g.add_value("y", None).unwrap();
        g.add_node("id", Op::Identity, vec![Some(x)], vec![Some(y)])
            .unwrap();
        g.set_inputs(vec![x]);
        g.set_outputs(vec![y]);
        assert_eq!(run(&mut g), 0);
        assert_eq!(g.node_count(), 1);
        // Between two graph outputs it stays too.
        let (mut g, v) = chain(Op::Identity, true);
        g.set_outputs(vec![v[1], v[2], v[3]]);
        assert_eq!(run(&mut g), 0);
    }

    #[test]
    fn dropout_only_in_inference_mode() {
        let (mut g, _) = chain(Op::Dropout { seed: None }, false);
        assert_eq!(run(&mut g), 1);

        let (mut g, v) = chain(Op::Dropout { seed: None }, false);
        let mid = g.value(v[2]).producer().unwrap().0;
        let on = g
            .add_const("on", Tensor::from_bool(vec![], vec![true]).unwrap())
            .unwrap();
        g.set_input(mid, 2, Some(on));
        assert_eq!(run(&mut g), 0, "training mode on");

        let (mut g, v) = chain(Op::Dropout { seed: None }, false);
        let mid = g.value(v[2]).producer().unwrap().0;
        let off = g
            .add_const("off", Tensor::from_bool(vec![], vec![false]).unwrap())
            .unwrap();
        g.set_input(mid, 2, Some(off));
        let mask = g.add_value("mask", None).unwrap();
        g.set_output(mid, 1, Some(mask)).unwrap();
        assert_eq!(run(&mut g), 1, "mask produced but unused");

        let (mut g, v) = chain(Op::Dropout { seed: None }, false);
        let mid = g.value(v[2]).producer().unwrap().0;
        let mask = g.add_value("mask", None).unwrap();
        g.set_output(mid, 1, Some(mask)).unwrap();
        g.set_outputs(vec![v[3], mask]);
        assert_eq!(run(&mut g), 0, "mask is a graph output");
    }
}
