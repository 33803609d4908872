//! `dce`: dead code elimination. Removes nodes none of whose outputs is read or is a
//! graph output, repeatedly, until none is left.

use crate::error::PassError;
use crate::pass::{Changed, Pass, PassCx};
use crate::registry::PassInfo;
use cc_ir::Graph;

inventory::submit! {
    PassInfo {
        name: "dce",
        summary: "remove nodes whose outputs are never used",
        options: &[],
        create: |_| Ok(Box::new(Dce)),
    }
}

/// The dead code elimination pass.
#[derive(Clone, Copy, Debug, Default)]
pub struct Dce;

impl Pass for Dce {
    fn name(&self) -> &str {
        "dce"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let mut removed = 0usize;
        loop {
            // Reverse topological order frees whole dead chains in one sweep.
            let mut order = g.topo_order()?;
            order.reverse();
            let mut any = false;
            for n in order {
                let dead = g
                    .node(n)
                    .outputs()
                    .iter()
                    .flatten()
                    .all(|&v| g.value(v).uses().is_empty() && !g.is_output(v));
                if dead {
                    g.remove_node(n);
                    removed += 1;
                    any = true;
                }
            }
            if !any {
                break;
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
    use cc_ir::Op;

    #[test]
    fn removes_dead_chains_keeps_outputs() {
        let mut g = Graph::new("g");
        let v: Vec<_> = ["x", "a", "b", "y", "m"]
            .iter()
            .map(|n| g.add_value(n, None).unwrap())
            .collect();
        let relu = Op::Unary(UnaryOp::Relu);
        // Dead chain x -> a -> b, live x -> y, and a multi-output node with one live output.
        g.add_node("d1", relu.clone(), vec![Some(v[0])], vec![Some(v[1])])
            .unwrap();
        g.add_node("d2", relu.clone(), vec![Some(v[1])], vec![Some(v[2])])
            .unwrap();
        g.add_node(
            "live",
            Op::Dropout { seed: None },
            vec![Some(v[0])],
            vec![Some(v[3]), Some(v[4])],
        )
        .unwrap();
        g.set_inputs(vec![v[0]]);
        g.set_outputs(vec![v[3]]);
        let mut cx = PassCx::new(0);
        assert!(Dce.run(&mut g, &mut cx).unwrap().is_changed());
        assert_eq!(g.node_count(), 1);
        assert_eq!(cx.stats()[0].1, crate::pass::Stat::Int(2));
        assert!(!Dce.run(&mut g, &mut cx).unwrap().is_changed());
        cc_ir::verify::verify(&g).unwrap();
    }
}
