//! The graph verifier.
//!
//! [`verify`] checks, in order: the graph is acyclic; live values have non-empty,
//! distinct names; no node output is also a graph input or a constant; every node
//! input, implicit input and graph output is defined (a graph input, a constant, or
//! produced by a node); each typed op's input/output slot
//! counts lie within its ONNX arity; use lists, producers and dependency edges agree
//! with the node slots; constants' declared types match their data; and shape
//! inference agrees with every recorded output type. Errors are one line naming the
//! node and value.

use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, Use, ValueId};
use crate::infer::{infer_node, merge_output};
use crate::op::Op;
use crate::types::{Dim, ValueType};
use std::collections::BTreeMap;

/// Unbounded arity.
const MANY: usize = usize::MAX;

/// ONNX (min inputs, max inputs, min outputs, max outputs) of a typed op (at its typed opsets);
/// `None` for [`Op::Other`].
pub fn arity(op: &Op) -> Option<(usize, usize, usize, usize)> {
    Some(match op {
        Op::Other(_) => return None,
        Op::Conv(_) | Op::ConvTranspose(_) | Op::Gemm { .. } => (2, 3, 1, 1),
        Op::MatMul
        | Op::Binary(_)
        | Op::Mod { .. }
        | Op::Reshape { .. }
        | Op::Gather { .. }
        | Op::GatherElements { .. }
        | Op::GatherND { .. }
        | Op::Expand
        | Op::CastLike { .. }
        | Op::CumSum { .. } => (2, 2, 1, 1),
        Op::BatchNormalization { .. } => (5, 5, 1, 5),
        Op::Unary(_)
        | Op::LeakyRelu { .. }
        | Op::Gelu { .. }
        | Op::AveragePool(_)
        | Op::GlobalPool(_)
        | Op::Flatten { .. }
        | Op::Transpose { .. }
        | Op::Shape { .. }
        | Op::Size
        | Op::Cast { .. }
        | Op::ConstantOfShape { .. }
        | Op::Softmax { .. }
        | Op::Identity => (1, 1, 1, 1),
        Op::Variadic(_) | Op::Concat { .. } => (1, MANY, 1, 1),
        Op::Where | Op::Range => (3, 3, 1, 1),
        Op::Clip => (1, 3, 1, 1),
        Op::MaxPool(_) => (1, 1, 1, 2),
        Op::Split { .. } => (1, 2, 1, MANY),
        Op::Slice => (3, 5, 1, 1),
        Op::Unsqueeze { .. } | Op::Squeeze { .. } => (1, 2, 1, 1),
        Op::Reduce { .. } => (1, 2, 1, 1),
        Op::LayerNormalization { .. } => (2, 3, 1, 3),
        Op::Pad { .. } => (2, 4, 1, 1),
        Op::QuantizeLinear { .. } | Op::DequantizeLinear { .. } => (2, 3, 1, 1),
        Op::Dropout { .. } => (1, 3, 1, 2),
        Op::DynamicQuantizeLinear => (1, 1, 3, 3),
        Op::MatMulInteger | Op::ConvInteger(_) => (2, 4, 1, 1),
        Op::QLinearMatMul => (8, 8, 1, 1),
        Op::QLinearConv(_) => (8, 9, 1, 1),
    })
}

fn invalid(msg: String) -> Error {
    Error::invalid(msg)
}

/// Checks the graph's invariants; the error names the offending node or value.
pub fn verify(g: &Graph) -> Result<()> {
    let order = g.topo_order()?;
    check_names(
        g.value_ids()
            .filter(|&v| g.is_live(v))
            .map(|v| g.value(v).name()),
    )?;
    check_defined(g)?;
    for &id in &order {
        check_arity(g, id)?;
    }
    check_links(g)?;
    check_consts(g)?;
    for &id in &order {
        check_shapes(g, id)?;
    }
    Ok(())
}

/// Names must be non-empty and distinct.
pub(crate) fn check_names<'a>(names: impl Iterator<Item = &'a str>) -> Result<()> {
    let mut seen = BTreeMap::new();
    for n in names {
        if n.is_empty() {
            return Err(invalid("a live value has an empty name".into()));
        }
        if seen.insert(n, ()).is_some() {
            return Err(invalid(format!("value name {n:?} is used twice")));
        }
    }
    Ok(())
}

fn is_defined(g: &Graph, v: ValueId) -> bool {
    g.is_input(v)
        || g.value(v).is_const()
        || g.value(v).compressed.is_some()
        || g.value(v).producer().is_some()
}

fn check_defined(g: &Graph) -> Result<()> {
    for v in g.value_ids() {
        let val = g.value(v);
        if let Some((p, _)) = val.producer() {
            let also = if g.is_input(v) {
                "a graph input"
            } else if val.is_const() {
                "a constant"
            } else {
                continue;
            };
            return Err(invalid(format!(
                "node {}: output {:?} is also {also}",
                g.node_label(p),
                val.name()
            )));
        }
    }
    for id in g.node_ids() {
        let n = g.node(id);
        for (slot, v) in n.inputs().iter().enumerate() {
            if let Some(v) = v {
                if !is_defined(g, *v) {
                    return Err(invalid(format!(
                        "node {}: input {slot} {:?} is not defined",
                        g.node_label(id),
                        g.value(*v).name()
                    )));
                }
            }
        }
        for &v in n.implicit_inputs() {
            if !is_defined(g, v) {
                return Err(invalid(format!(
                    "node {}: subgraph reads {:?}, which is not defined",
                    g.node_label(id),
                    g.value(v).name()
                )));
            }
        }
    }
    for &v in g.outputs() {
        if !is_defined(g, v) {
            return Err(invalid(format!(
                "graph output {:?} is not defined",
                g.value(v).name()
            )));
        }
    }
    Ok(())
}

fn check_arity(g: &Graph, id: NodeId) -> Result<()> {
    let n = g.node(id);
    let Some((min_in, max_in, min_out, max_out)) = arity(&n.op) else {
        return Ok(());
    };
    let fmt = |lo: usize, hi: usize| match hi {
        MANY => format!("at least {lo}"),
        _ if lo == hi => format!("{lo}"),
        _ => format!("{lo}..={hi}"),
    };
    let ins = n.inputs().len();
    if ins < min_in || ins > max_in {
        return Err(invalid(format!(
            "node {}: has {ins} inputs, expects {}",
            g.node_label(id),
            fmt(min_in, max_in)
        )));
    }
    if let Some(slot) = (0..min_in).find(|&s| n.input(s).is_none()) {
        return Err(invalid(format!(
            "node {}: required input {slot} is empty",
            g.node_label(id)
        )));
    }
    let outs = n.outputs().len();
    if outs < min_out || outs > max_out {
        return Err(invalid(format!(
            "node {}: has {outs} outputs, expects {}",
            g.node_label(id),
            fmt(min_out, max_out)
        )));
    }
    Ok(())
}

/// Producers, use lists and edges must match what the node slots say.
fn check_links(g: &Graph) -> Result<()> {
    let mut want_uses: BTreeMap<ValueId, Vec<Use>> = BTreeMap::new();
    for id in g.node_ids() {
        let n = g.node(id);
        for (slot, v) in n.inputs().iter().enumerate() {
            if let Some(v) = v {
                want_uses
                    .entry(*v)
                    .or_default()
                    .push(Use::Input { node: id, slot });
            }
        }
        for &v in n.implicit_inputs() {
            want_uses
                .entry(v)
                .or_default()
                .push(Use::Implicit { node: id });
        }
        for (slot, v) in n.outputs().iter().enumerate() {
            if let Some(v) = v {
                if g.value(*v).producer() != Some((id, slot)) {
                    return Err(invalid(format!(
                        "node {}: output {slot} {:?} does not record it as producer",
                        g.node_label(id),
                        g.value(*v).name()
                    )));
                }
            }
        }
    }
    let mut want_edges = Vec::new();
    for v in g.value_ids() {
        let val = g.value(v);
        if let Some((p, slot)) = val.producer() {
            if !g.contains_node(p) || g.node(p).output(slot) != Some(v) {
                return Err(invalid(format!(
                    "value {:?}: recorded producer does not output it",
                    val.name()
                )));
            }
        }
        let mut want = want_uses.remove(&v).unwrap_or_default();
        let mut have = val.uses().to_vec();
        want.sort();
        have.sort();
        if want != have {
            return Err(invalid(format!(
                "value {:?}: use list disagrees with the node inputs",
                val.name()
            )));
        }
        if let Some((p, _)) = val.producer() {
            want_edges.extend(want.iter().map(|u| (p, u.node(), v)));
        }
    }
    let mut have_edges = g.edges();
    want_edges.sort();
    have_edges.sort();
    if want_edges != have_edges {
        let diff = want_edges
            .iter()
            .find(|e| !have_edges.contains(e))
            .or_else(|| have_edges.iter().find(|e| !want_edges.contains(e)));
        let what = diff
            .map(|(a, b, v)| {
                format!(
                    "edge {} -> {} for {:?}",
                    g.node_label(*a),
                    g.node_label(*b),
                    g.value(*v).name()
                )
            })
            .unwrap_or_else(|| "duplicate edges".into());
        return Err(invalid(format!(
            "dependency edges disagree with the uses: {what}"
        )));
    }
    Ok(())
}

fn check_consts(g: &Graph) -> Result<()> {
    for v in g.value_ids().filter(|&v| g.is_live(v)) {
        let val = g.value(v);
        let (Some(t), Some(ty)) = (val.data.as_ref(), val.ty.as_ref()) else {
            continue;
        };
        let data_ty = ValueType::tensor(
            t.dtype(),
            Some(t.shape().iter().map(|&d| Dim::Known(d as i64)).collect()),
        );
        let ok = match ty {
            ValueType::Tensor { elem, shape } => {
                elem.is_none_or(|e| e == t.dtype())
                    && shape.as_ref().is_none_or(|s| {
                        s.len() == t.shape().len()
                            && s.iter()
                                .zip(t.shape())
                                .all(|(d, &n)| d.known().is_none_or(|k| k == n as i64))
                    })
            }
            ValueType::Opaque(_) => false,
        };
        if !ok {
            return Err(invalid(format!(
                "constant {:?} declared {ty} but holds {data_ty}",
                val.name()
            )));
        }
    }
    Ok(())
}

fn check_shapes(g: &Graph, id: NodeId) -> Result<()> {
    if g.node(id).op.is_other() {
        return Ok(());
    }
    let inferred = infer_node(g, id)?;
    for (slot, v) in g.node(id).outputs().iter().enumerate() {
        if let Some(v) = v {
            merge_output(g, id, *v, inferred.get(slot).and_then(Option::as_ref))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::infer::testutil::*;
    use crate::op::{ConvAttrs, UnaryOp};
    use crate::tensor::Tensor;

    /// x -> Relu -> a -> Neg -> b (output), all typed.
    fn chain() -> (Graph, Vec<ValueId>, Vec<NodeId>) {
        let mut g = Graph::new("g");
        let x = input(&mut g, "x", t(DType::F32, "N,4"));
        let a = g.add_value("a", Some(t(DType::F32, "N,4"))).unwrap();
        let b = g.add_value("b", Some(t(DType::F32, "N,4"))).unwrap();
        let n1 = g
            .add_node("r", Op::Unary(UnaryOp::Relu), vec![Some(x)], vec![Some(a)])
            .unwrap();
        let n2 = g
            .add_node("n", Op::Unary(UnaryOp::Neg), vec![Some(a)], vec![Some(b)])
            .unwrap();
        g.set_outputs(vec![b]);
        (g, vec![x, a, b], vec![n1, n2])
    }

    fn err(g: &Graph) -> String {
        verify(g).unwrap_err().to_string()
    }

    #[test]
    fn a_well_formed_graph_passes() {
        let (g, ..) = chain();
        verify(&g).unwrap();
    }

    #[test]
    fn cycle_is_rejected() {
        let (mut g, v, n) = chain();
        g.set_input(n[0], 0, Some(v[2]));
        assert!(err(&g).contains("cycle"), "{}", err(&g));
    }

    #[test]
    fn undefined_input_and_output_are_rejected() {
        let (mut g, v, n) = chain();
        let ghost = g.add_value("ghost", None).unwrap();
        g.set_input(n[1], 0, Some(ghost));
        assert_eq!(
            err(&g),
            "node \"n\" (Neg): input 0 \"ghost\" is not defined"
        );
        g.set_input(n[1], 0, Some(v[1]));
        g.set_outputs(vec![v[2], ghost]);
        assert_eq!(err(&g), "graph output \"ghost\" is not defined");
    }

    #[test]
    fn values_are_defined_once() {
        let (mut g, v, _) = chain();
        g.set_inputs(vec![v[0], v[1]]);
        assert_eq!(
            err(&g),
            "node \"r\" (Relu): output \"a\" is also a graph input"
        );
        let (mut g, v, _) = chain();
        g.value_mut(v[2]).data = Some(Tensor::from_f32(vec![1, 4], vec![0.0; 4]).unwrap());
        assert_eq!(err(&g), "node \"n\" (Neg): output \"b\" is also a constant");
    }

    #[test]
    fn empty_or_duplicate_names_are_rejected() {
        assert!(check_names(["a", "b"].into_iter()).is_ok());
        let e = check_names(["a", "b", "a"].into_iter())
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"a\" is used twice"), "{e}");
        assert!(check_names(["a", ""].into_iter()).is_err());
    }

    #[test]
    fn bad_arity_is_rejected() {
        let mut g = Graph::new("g");
        let x = input(&mut g, "x", t(DType::F32, "1,3,8,8"));
        let y = g.add_value("y", None).unwrap();
        g.add_node(
            "conv",
            Op::Conv(ConvAttrs::default()),
            vec![Some(x)],
            vec![Some(y)],
        )
        .unwrap();
        assert_eq!(err(&g), "node \"conv\" (Conv): has 1 inputs, expects 2..=3");

        let (mut g, _, n) = chain();
        let extra = g.add_value("extra", None).unwrap();
        g.set_output(n[0], 1, Some(extra)).unwrap();
        assert_eq!(err(&g), "node \"r\" (Relu): has 2 outputs, expects 1");
        assert_eq!(arity(&Op::Dropout { seed: None }), Some((1, 3, 1, 2)));
    }

    #[test]
    fn empty_required_input_is_rejected() {
        let mut g = Graph::new("g");
        let x = input(&mut g, "x", t(DType::F32, "2"));
        let y = g.add_value("y", None).unwrap();
        g.add_node("w", Op::Where, vec![Some(x), None, Some(x)], vec![Some(y)])
            .unwrap();
        assert_eq!(err(&g), "node \"w\" (Where): required input 1 is empty");
    }

    #[test]
    fn shape_contradiction_is_rejected() {
        let (mut g, v, _) = chain();
        g.value_mut(v[2]).ty = Some(t(DType::F32, "N,5"));
        assert_eq!(
            err(&g),
            "node \"n\" (Neg): output \"b\" declared f32[N,5] but infers f32[N,4]"
        );
        g.value_mut(v[2]).ty = Some(t(DType::I64, "N,4"));
        assert!(err(&g).contains("declared i64[N,4]"));
        // Less precise declarations are fine.
        g.value_mut(v[2]).ty = Some(t(DType::F32, "?,4"));
        verify(&g).unwrap();
    }

    #[test]
    fn const_type_mismatch_is_rejected() {
        let (mut g, ..) = chain();
        let w = g
            .add_const("w", Tensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap())
            .unwrap();
        let y = g.add_value("y", None).unwrap();
        g.add_node("id", Op::Identity, vec![Some(w)], vec![Some(y)])
            .unwrap();
        verify(&g).unwrap();
        g.value_mut(w).ty = Some(t(DType::F32, "3"));
        assert_eq!(err(&g), "constant \"w\" declared f32[3] but holds f32[2]");
        g.value_mut(w).ty = Some(t(DType::I32, "2"));
        assert!(err(&g).contains("declared i32[2]"));
    }

    #[test]
    fn other_ops_are_not_shape_checked() {
        let mut g = Graph::new("g");
        let x = input(&mut g, "x", t(DType::F32, "2"));
        let y = g.add_value("y", Some(t(DType::I8, "9,9"))).unwrap();
        g.add_node(
            "o",
            Op::from_onnx("custom", "Foo", vec![], 1),
            vec![Some(x)],
            vec![Some(y)],
        )
        .unwrap();
        verify(&g).unwrap();
    }
}
