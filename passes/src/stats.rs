//! Model size summary used for before/after figures.

use cc_ir::Graph;
use serde::Serialize;

/// Size figures of a graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GraphStats {
    /// Number of nodes.
    pub nodes: usize,
    /// Parameters: elements of all live constants (of a shared array: its elements,
    /// once).
    pub params: usize,
    /// Bytes of data of all live constants (compressed weights' own bytes, and each
    /// shared array once).
    pub bytes: usize,
}

impl GraphStats {
    /// The figures of `g`. A constant counts when it is live (read, produced or a graph
    /// input/output).
    pub fn of(g: &Graph) -> GraphStats {
        let mut s = GraphStats {
            nodes: g.node_count(),
            ..Default::default()
        };
        // A shared array (randomized parameter sharing) counts once, not per weight.
        let mut arrays = std::collections::BTreeSet::new();
        for v in g.value_ids() {
            if let Some(t) = g.const_data(v) {
                if g.is_live(v) {
                    s.params += t.len();
                    s.bytes += t.byte_len();
                }
            }
            if let Some(c) = &g.value(v).compressed {
                if g.is_live(v) {
                    s.bytes += c.byte_len();
                    match c.shared_array() {
                        Some((name, t)) => {
                            if arrays.insert(name.to_string()) {
                                s.params += t.len();
                                s.bytes += t.byte_len();
                            }
                        }
                        None => s.params += c.params(),
                    }
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_ir::op::UnaryOp;
    use cc_ir::{Op, Tensor};

    #[test]
    fn counts_live_constants_only() {
        let mut g = Graph::new("g");
        let w = g
            .add_const("w", Tensor::from_f32(vec![2, 3], vec![0.0; 6]).unwrap())
            .unwrap();
        g.add_const("dead", Tensor::from_i64(vec![4], vec![0; 4]).unwrap())
            .unwrap();
        let y = g.add_value("y", None).unwrap();
        g.add_node("n", Op::Unary(UnaryOp::Neg), vec![Some(w)], vec![Some(y)])
            .unwrap();
        g.set_outputs(vec![y]);
        assert_eq!(
            GraphStats::of(&g),
            GraphStats {
                nodes: 1,
                params: 6,
                bytes: 24
            }
        );
    }

    #[test]
    fn a_shared_array_counts_once() {
        use cc_ir::compressed::shared::HashParams;
        use cc_ir::{Compressed, SharedWeight};
        let hash = HashParams::new(1, 4, 5).unwrap();
        let array = Tensor::from_f32(vec![20], vec![0.5; 20]).unwrap();
        let mut g = Graph::new("g");
        let mut outs = Vec::new();
        for (i, offset) in [0u64, 12].into_iter().enumerate() {
            let w = g.add_value(&format!("w{i}"), None).unwrap();
            g.value_mut(w).compressed = Some(Compressed::Shared(SharedWeight {
                array: array.clone(),
                array_name: "shared".into(),
                shape: vec![3, 4],
                offset,
                scale: 1.0,
                hash,
            }));
            let y = g.add_value(&format!("y{i}"), None).unwrap();
            g.add_node(
                &format!("n{i}"),
                Op::Unary(UnaryOp::Neg),
                vec![Some(w)],
                vec![Some(y)],
            )
            .unwrap();
            outs.push(y);
        }
        g.set_outputs(outs);
        assert_eq!(
            GraphStats::of(&g),
            GraphStats {
                nodes: 2,
                params: 20,
                bytes: 80 + 2 * 4
            }
        );
    }
}
