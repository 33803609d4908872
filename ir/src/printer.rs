//! The canonical, deterministic text printer.
//!
//! What `--print-ir` shows and what the insta snapshots hold. Nodes come in the graph's
//! deterministic topological order (ties broken by node name, then first output name);
//! weights are listed by name with dtype, shape and a summary (min/max/mean and a short
//! checksum of the bytes), never raw data. Only live values are printed, so a value the
//! graph no longer uses does not show.

use crate::dtype::DType;
use crate::graph::{Graph, NodeId, ValueId};
use crate::tensor::{Tensor, TensorData};
use std::fmt::Write;

/// Prints the graph canonically. A cyclic graph (which the verifier rejects) is printed
/// with its nodes in insertion order and a note at the top.
pub fn print_graph(g: &Graph) -> String {
    let mut s = String::new();
    let opsets: Vec<String> = g
        .meta
        .opset_imports
        .iter()
        .map(|(d, v)| format!("{}={v}", if d.is_empty() { "ai.onnx" } else { d }))
        .collect();
    let _ = writeln!(
        s,
        "graph {:?} (ir {}, opset {})",
        g.name,
        g.meta.ir_version,
        opsets.join(" ")
    );
    let order = match g.topo_order() {
        Ok(o) => o,
        Err(e) => {
            let _ = writeln!(s, "# not a DAG: {e}");
            g.node_ids()
        }
    };
    s.push_str("inputs:\n");
    for &v in g.inputs() {
        let _ = write!(s, "  {}: {}", name(g, v), ty(g, v));
        if let Some(t) = g.const_data(v) {
            let _ = write!(s, " = {}", tensor_summary(t));
        }
        s.push('\n');
    }
    let mut weights: Vec<ValueId> = g
        .value_ids()
        .filter(|&v| g.const_data(v).is_some() && !g.is_input(v) && g.is_live(v))
        .collect();
    weights.sort_by(|a, b| g.value(*a).name().cmp(g.value(*b).name()));
    s.push_str("weights:\n");
    for v in weights {
        if let Some(t) = g.const_data(v) {
            let _ = writeln!(
                s,
                "  {}: {}{}",
                name(g, v),
                tensor_summary(t),
                annotations(g, v)
            );
        }
    }
    let mut packed = crate::compressed::compressed_values(g);
    packed.sort_by(|a, b| g.value(*a).name().cmp(g.value(*b).name()));
    print_shared_arrays(&mut s, g, &packed);
    for v in packed {
        if let Some(crate::compressed::Compressed::Quantized(q)) = &g.value(v).compressed {
            let _ = write!(
                s,
                "  {}: {} = quantized {} scale {}",
                name(g, v),
                ty(g, v),
                q.granularity(),
                tensor_summary(&q.scale)
            );
            let _ = write!(s, " codes {}", tensor_summary(&q.q));
            if let Some(z) = &q.zero_point {
                let _ = write!(s, " zero_point {}", tensor_summary(z));
            }
            s.push_str(&annotations(g, v));
            s.push('\n');
        }
        if let Some(crate::compressed::Compressed::Shared(w)) = &g.value(v).compressed {
            let _ = writeln!(
                s,
                "  {}: {} = shared {} offset={} scale={:e}",
                name(g, v),
                ty(g, v),
                w.array_name,
                w.offset,
                w.scale
            );
        }
        if let Some(crate::compressed::Compressed::Codebook(c)) = &g.value(v).compressed {
            let _ = writeln!(
                s,
                "  {}: {} = codebook {} centroids {} indices {}{}",
                name(g, v),
                ty(g, v),
                c.granularity(),
                tensor_summary(&c.centroids),
                tensor_summary(&c.indices),
                annotations(g, v)
            );
        }
    }
    s.push_str("nodes:\n");
    for id in order {
        print_node(&mut s, g, id);
    }
    s.push_str("outputs:\n");
    for &v in g.outputs() {
        let _ = writeln!(s, "  {}: {}", name(g, v), ty(g, v));
    }
    s
}

/// The sparsity and free-form annotations of a weight, each after a space ("" if none).
fn annotations(g: &Graph, v: ValueId) -> String {
    let val = g.value(v);
    let mut s = String::new();
    if let Some(sp) = &val.sparsity {
        let _ = write!(s, " {sp}");
    }
    for (k, x) in &val.annotations {
        let _ = write!(s, " {k}={x:?}");
    }
    s
}

/// Each shared array once (by name, in name order): its hash parameters and summary.
fn print_shared_arrays(s: &mut String, g: &Graph, packed: &[ValueId]) {
    let mut arrays = std::collections::BTreeMap::new();
    for &v in packed {
        if let Some(crate::compressed::Compressed::Shared(w)) = &g.value(v).compressed {
            arrays.entry(w.array_name.clone()).or_insert(w);
        }
    }
    for (a, w) in arrays {
        let h = &w.hash;
        let _ = writeln!(
            s,
            "  {a}: shared array chunk={} chunks={} perm={:?} sign={:?} {}",
            h.chunk,
            h.chunks,
            h.perm,
            h.sign,
            tensor_summary(&w.array)
        );
    }
}

fn name(g: &Graph, v: ValueId) -> String {
    format!("%{}", g.value(v).name())
}

fn ty(g: &Graph, v: ValueId) -> String {
    match &g.value(v).ty {
        Some(t) => t.to_string(),
        None => "?".to_string(),
    }
}

fn slot_list(g: &Graph, slots: &[Option<ValueId>]) -> String {
    slots
        .iter()
        .map(|s| match s {
            Some(v) => name(g, *v),
            None => "_".to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_node(s: &mut String, g: &Graph, id: NodeId) {
    let n = g.node(id);
    let (domain, op_type) = n.op.onnx_type();
    let _ = write!(s, "  {} = ", slot_list(g, n.outputs()));
    if !domain.is_empty() {
        let _ = write!(s, "{domain}.");
    }
    s.push_str(op_type);
    let attrs = n.op.attributes();
    if !attrs.is_empty() {
        let body: Vec<String> = attrs
            .iter()
            .map(|a| format!("{}={}", a.name, a.value))
            .collect();
        let _ = write!(s, "{{{}}}", body.join(", "));
    }
    let _ = write!(s, "({})", slot_list(g, n.inputs()));
    if !n.implicit_inputs().is_empty() {
        let mut outer: Vec<String> = n.implicit_inputs().iter().map(|&v| name(g, v)).collect();
        outer.sort();
        let _ = write!(s, " outer[{}]", outer.join(", "));
    }
    let tys: Vec<String> = n
        .outputs()
        .iter()
        .map(|o| match o {
            Some(v) => ty(g, *v),
            None => "_".to_string(),
        })
        .collect();
    let _ = write!(s, " : {}", tys.join(", "));
    if !n.name.is_empty() {
        let _ = write!(s, "  # {:?}", n.name);
    }
    s.push('\n');
}

/// dtype, shape and a summary of a tensor's values: min/max/mean for numbers, and an
/// FNV-1a checksum of the bytes so that any change to a weight shows.
pub fn tensor_summary(t: &Tensor) -> String {
    let dims: Vec<String> = t.shape().iter().map(|d| d.to_string()).collect();
    let mut s = format!("{}[{}]", t.dtype(), dims.join(","));
    let stats = match t.dtype() {
        DType::F32 => t.to_f32().ok().map(|v| stats(v.into_iter().map(f64::from))),
        DType::F64 => t.to_f64().ok().map(|v| stats(v.into_iter())),
        d if d.is_int() || d == DType::Bool => t
            .to_i64_lossless()
            .ok()
            .map(|v| stats(v.into_iter().map(|x| x as f64))),
        _ => None,
    };
    if let Some(Some((min, max, mean))) = stats {
        let _ = write!(s, " min={min:.4e} max={max:.4e} mean={mean:.4e}");
    }
    let hash = match t.data() {
        TensorData::Raw(b) => fnv1a(b),
        TensorData::Strings(v) => v.iter().fold(0xcbf29ce484222325u64, |h, x| {
            fnv1a_from(h ^ x.len() as u64, x)
        }),
    };
    let _ = write!(s, " #{:08x}", hash as u32 ^ (hash >> 32) as u32);
    s
}

fn stats(values: impl Iterator<Item = f64>) -> Option<(f64, f64, f64)> {
    let mut n = 0usize;
    let (mut min, mut max, mut sum) = (f64::INFINITY, f64::NEG_INFINITY, 0.0);
    for x in values {
        n += 1;
        min = min.min(x);
        max = max.max(x);
        sum += x;
    }
    (n > 0).then(|| (min, max, sum / n as f64))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_from(0xcbf29ce484222325, bytes)
}

fn fnv1a_from(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::{Op, UnaryOp};
    use crate::types::{Dim, ValueType};

    #[test]
    fn prints_inputs_weights_nodes_outputs_in_order() {
        let mut g = Graph::new("g");
        let x = g
            .add_value(
                "x",
                Some(ValueType::tensor(
                    DType::F32,
                    Some(vec![Dim::Sym("N".into()), Dim::Known(2)]),
                )),
            )
            .unwrap();
        let w = g
            .add_const("w", Tensor::from_f32(vec![2], vec![1.0, 3.0]).unwrap())
            .unwrap();
        let y = g.add_value("y", None).unwrap();
        let z = g.add_value("z", None).unwrap();
        g.set_inputs(vec![x]);
        g.add_node("b", Op::Unary(UnaryOp::Relu), vec![Some(y)], vec![Some(z)])
            .unwrap();
        g.add_node(
            "a",
            Op::Binary(crate::op::BinaryOp::Add),
            vec![Some(x), Some(w)],
            vec![Some(y)],
        )
        .unwrap();
        g.set_outputs(vec![z]);
        let text = print_graph(&g);
        let add = text.find("Add(%x, %w)").unwrap();
        let relu = text.find("Relu(%y)").unwrap();
        assert!(add < relu, "{text}");
        assert!(text.contains("%x: f32[N,2]"), "{text}");
        assert!(
            text.contains("%w: f32[2] min=1.0000e0 max=3.0000e0 mean=2.0000e0"),
            "{text}"
        );
        assert_eq!(text, print_graph(&g.clone()));
    }

    #[test]
    fn weight_lines_show_sparsity_and_annotations() {
        let mut g = Graph::new("g");
        let t = Tensor::from_f32(vec![4], vec![0.0, 1.0, 0.0, 2.0]).unwrap();
        let w = g.add_const("w", t.clone()).unwrap();
        let y = g.add_value("y", None).unwrap();
        g.add_node("n", Op::Unary(UnaryOp::Relu), vec![Some(w)], vec![Some(y)])
            .unwrap();
        g.set_outputs(vec![y]);
        let plain = print_graph(&g);
        g.value_mut(w).sparsity = Some(crate::sparsity::Sparsity::of(
            &t,
            crate::sparsity::SparsityPattern::Unstructured { ratio: 0.5 },
            crate::sparsity::SparseEncoding::Dense,
        ));
        g.value_mut(w).annotate("origin", "test");
        let text = print_graph(&g);
        assert!(
            text.contains(" sparsity=unstructured:0.5 zeros=2/4 (50.00%) origin=\"test\"\n"),
            "{text}"
        );
        assert_eq!(text.lines().count(), plain.lines().count());
    }

    #[test]
    fn checksum_changes_with_data() {
        let a = tensor_summary(&Tensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap());
        let b = tensor_summary(&Tensor::from_f32(vec![2], vec![2.0, 1.0]).unwrap());
        assert_ne!(a, b);
    }
}
