//! Graphs and helpers shared by the passes' unit tests: one-weight graphs
//! (`x[1, k]` read by a MatMul or Gemm with a constant weight), the deterministic test
//! weights, running a pass and reading its statistics.

use crate::pass::{Pass, PassCx};
use cc_ir::types::{known_shape, ValueType};
use cc_ir::{DType, Graph, Op, Tensor, ValueId};

/// Element `i` of the test weights: `((i * 37 % 101) - 50) / 17`, a spread of values in
/// about [-2.9, 3.0] with no pattern along rows or columns.
pub(crate) fn weight_value(i: usize) -> f32 {
    ((i * 37 % 101) as f32 - 50.0) / 17.0
}

/// The first `len` test weights ([`weight_value`]).
pub(crate) fn test_weights(len: usize) -> Vec<f32> {
    (0..len).map(weight_value).collect()
}

/// Adds value `x`, f32 `[1, k]` (to be made the graph input).
pub(crate) fn add_row_input(g: &mut Graph, k: usize) -> ValueId {
    g.add_value(
        "x",
        Some(ValueType::tensor(DType::F32, known_shape(&[1, k]))),
    )
    .unwrap()
}

/// Graph `g`: input `x[1, k]` read by node `node` (op `op`) with the constant `w` of
/// `shape` as its input 1, output `y`.
pub(crate) fn one_weight_graph(
    op: Op,
    node: &str,
    k: usize,
    shape: [usize; 2],
    w: Vec<f32>,
) -> Graph {
    let mut g = Graph::new("g");
    let x = add_row_input(&mut g, k);
    let wv = g
        .add_const("w", Tensor::from_f32(shape.to_vec(), w).unwrap())
        .unwrap();
    let y = g.add_value("y", None).unwrap();
    g.add_node(node, op, vec![Some(x), Some(wv)], vec![Some(y)])
        .unwrap();
    g.set_inputs(vec![x]);
    g.set_outputs(vec![y]);
    g
}

/// `x[1, k] · w[k, n]` (MatMul node `mm`) with the constant weight `w`.
pub(crate) fn matmul_graph(k: usize, n: usize, w: &[f32]) -> Graph {
    one_weight_graph(Op::MatMul, "mm", k, [k, n], w.to_vec())
}

/// Runs pass `p` over `g` with seed `seed` (panicking on an error); its context.
pub(crate) fn run_pass(p: &mut impl Pass, g: &mut Graph, seed: u64) -> PassCx {
    let mut cx = PassCx::new(seed);
    p.run(g, &mut cx).unwrap();
    cx
}

/// Statistic `key` recorded in `cx` (panicking when absent).
pub(crate) fn stat(cx: &PassCx, key: &str) -> String {
    cx.stats()
        .iter()
        .find(|(n, _)| n == key)
        .unwrap()
        .1
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_weight_graph_wires_input_weight_and_output() {
        let w = test_weights(12);
        let g = matmul_graph(3, 4, &w);
        g.node_ids()
            .iter()
            .for_each(|&id| assert_eq!(g.node(id).name, "mm"));
        let wv = g.value_by_name("w").unwrap();
        assert_eq!(g.const_data(wv).unwrap().shape(), &[3, 4]);
        assert_eq!(g.const_data(wv).unwrap().to_f32().unwrap(), w);
        assert_eq!(g.inputs(), &[g.value_by_name("x").unwrap()]);
        assert_eq!(g.outputs(), &[g.value_by_name("y").unwrap()]);
        cc_ir::verify::verify(&g).unwrap();
    }

    #[test]
    fn test_weights_are_spread_and_signed() {
        let w = test_weights(101);
        assert!(w.iter().any(|&v| v < -2.0) && w.iter().any(|&v| v > 2.0));
        assert_eq!(w[0], -50.0 / 17.0);
        assert_eq!(w[1], weight_value(1));
    }
}
