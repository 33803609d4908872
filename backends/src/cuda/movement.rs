//! Data movement: Concat, Transpose, Slice and Gather (constant indices, inlined),
//! one thread per output element.

use super::shapes::{axis_of, dims, require_f32, strides};
use super::weights::{Buf, Param, Weights};
use super::Draft;
use cc_ir::{Error, Graph, NodeId, Op, Result};

const BLOCK: u32 = 256;

/// Lowers a Concat, Transpose, Slice or Gather node.
pub fn lower(g: &Graph, id: NodeId, w: &mut Weights) -> Result<Draft> {
    let node = g.node(id);
    let label = g.node_label(id);
    let y_v = node
        .output(0)
        .ok_or_else(|| Error::invalid(format!("node {label} has no output")))?;
    require_f32(g, y_v, &label)?;
    let yd = dims(g, y_v)?;
    let n: usize = yd.iter().product();
    let mut params = vec![Param {
        name: "y".into(),
        ty: "float*",
        buf: Buf::Value(y_v),
    }];
    let head =
        format!("    int o = blockIdx.x * {BLOCK} + threadIdx.x;\n    if (o >= {n}) return;\n");
    let (base, body) = match &node.op {
        Op::Concat { axis } => {
            let a = axis_of(*axis, yd.len(), &label)?;
            let inner: usize = yd.iter().skip(a + 1).product();
            let total = yd.get(a).copied().unwrap_or(1);
            let mut body = format!(
                "{head}    const int q = (o / {inner}) % {total}, outer = o / {}, r = o % {inner};\n",
                inner * total
            );
            let mut start = 0usize;
            let mut first = true;
            for (i, v) in node.inputs().iter().enumerate() {
                let Some(v) = *v else { continue };
                let d = dims(g, v)?;
                let len = d.get(a).copied().unwrap_or(0);
                if len == 0 {
                    continue;
                }
                let name = format!("x{i}");
                params.push(Param::input(&name, w.plain_f32(g, v, &label)?));
                let end = start + len;
                body.push_str(&format!(
                    "    {}if (q < {end}) y[o] = {name}[(outer * {len} + (q - {start})) * {inner} + r];\n",
                    if first { "" } else { "else " }
                ));
                first = false;
                start = end;
            }
            if start != total {
                return Err(Error::invalid(format!(
                    "node {label}: inputs add up to {start} along axis {a}, output has {total}"
                )));
            }
            ("concat", body)
        }
        Op::Transpose { perm } => {
            let x_v = node
                .input(0)
                .ok_or_else(|| Error::invalid(format!("node {label}: input 0 missing")))?;
            let xd = dims(g, x_v)?;
            let rank = xd.len();
            let perm: Vec<usize> = match perm {
                Some(p) => p
                    .iter()
                    .map(|&a| axis_of(a, rank, &label))
                    .collect::<Result<_>>()?,
                None => (0..rank).rev().collect(),
            };
            if perm.len() != rank || yd.len() != rank {
                return Err(Error::invalid(format!(
                    "node {label}: perm of wrong length"
                )));
            }
            params.push(Param::input("x", w.plain_f32(g, x_v, &label)?));
            let (ys, xs) = (strides(&yd), strides(&xd));
            let terms: Vec<String> = perm
                .iter()
                .enumerate()
                .filter(|&(i, _)| yd.get(i).copied().unwrap_or(1) > 1)
                .map(|(i, &p)| format!("((o / {}) % {}) * {}", ys[i], yd[i], xs[p]))
                .collect();
            let idx = if terms.is_empty() {
                "0".to_string()
            } else {
                terms.join(" + ")
            };
            ("transpose", format!("{head}    y[o] = x[{idx}];\n"))
        }
        Op::Gather { axis } => {
            let (x_v, i_v) = match (node.input(0), node.input(1)) {
                (Some(x), Some(i)) => (x, i),
                _ => return Err(Error::invalid(format!("node {label}: missing input"))),
            };
            let xd = dims(g, x_v)?;
            let a = axis_of(axis.unwrap_or(0), xd.len(), &label)?;
            let idx = g
                .const_data(i_v)
                .ok_or_else(|| {
                    Error::unsupported(format!(
                        "cuda backend: node {label}: Gather indices are not a constant"
                    ))
                })?
                .to_i64_lossless()?;
            if idx.is_empty() || idx.len() > 4096 {
                return Err(Error::unsupported(format!(
                    "cuda backend: node {label}: Gather of {} indices (1 to 4096 are inlined)",
                    idx.len()
                )));
            }
            let dim = xd[a] as i64;
            let idx = idx
                .iter()
                .map(|&i| {
                    let j = if i < 0 { i + dim } else { i };
                    if (0..dim).contains(&j) {
                        Ok(j.to_string())
                    } else {
                        Err(Error::invalid(format!(
                            "node {label}: Gather index {i} out of range for {dim}"
                        )))
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            params.push(Param::input("x", w.plain_f32(g, x_v, &label)?));
            let inner: usize = xd[a + 1..].iter().product();
            let count = idx.len();
            let body = format!(
                "{head}    const int idx[{count}] = {{{}}};\n    const int r = o % {inner}, q = (o / {inner}) % {count}, outer = o / {};\n    y[o] = x[(outer * {dim} + idx[q]) * {inner} + r];\n",
                idx.join(", "),
                inner * count
            );
            ("gather", body)
        }
        Op::Slice => {
            let x_v = node
                .input(0)
                .ok_or_else(|| Error::invalid(format!("node {label}: input 0 missing")))?;
            let xd = dims(g, x_v)?;
            if xd.len() != yd.len() {
                return Err(Error::invalid(format!("node {label}: rank changed")));
            }
            let (start, step) = slice_params(g, id, &xd, &label)?;
            params.push(Param::input("x", w.plain_f32(g, x_v, &label)?));
            let (ys, xs) = (strides(&yd), strides(&xd));
            let mut terms = Vec::new();
            for i in 0..xd.len() {
                let coord = format!("((o / {}) % {})", ys[i], yd[i]);
                let pos = match (start[i], step[i]) {
                    (0, 1) => coord,
                    (s0, 1) => format!("({s0} + {coord})"),
                    (s0, st) => format!("({s0} + {coord} * {st})"),
                };
                terms.push(format!("{pos} * {}", xs[i]));
            }
            (
                "slice",
                format!("{head}    y[o] = x[{}];\n", terms.join(" + ")),
            )
        }
        other => {
            return Err(Error::unsupported(format!(
                "cuda backend: node {label}: {} is not a movement op",
                other.onnx_type().1
            )))
        }
    };
    Ok(Draft::one_node(base, label, params, body, n, BLOCK, y_v))
}

/// Per axis of the input: the first index read and the step, from the constant
/// `starts`, `ends`, `axes`, `steps` inputs of a Slice (clamped as ONNX defines).
fn slice_params(g: &Graph, id: NodeId, xd: &[usize], label: &str) -> Result<(Vec<i64>, Vec<i64>)> {
    let node = g.node(id);
    let ints = |slot: usize| -> Result<Option<Vec<i64>>> {
        match node.input(slot) {
            None => Ok(None),
            Some(v) => g
                .const_data(v)
                .ok_or_else(|| {
                    Error::unsupported(format!(
                        "cuda backend: node {label}: Slice input {slot} is not a constant"
                    ))
                })?
                .to_i64_lossless()
                .map(Some),
        }
    };
    let starts = ints(1)?.ok_or_else(|| Error::invalid(format!("node {label}: no starts")))?;
    let rank = xd.len();
    let axes = match ints(3)? {
        Some(a) => a
            .iter()
            .map(|&a| axis_of(a, rank, label))
            .collect::<Result<Vec<_>>>()?,
        None => (0..starts.len()).collect(),
    };
    let steps = ints(4)?.unwrap_or_else(|| vec![1; starts.len()]);
    if axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(Error::invalid(format!(
            "node {label}: starts, axes and steps differ in length"
        )));
    }
    let mut start = vec![0i64; rank];
    let mut step = vec![1i64; rank];
    for ((&a, &s0), &st) in axes.iter().zip(&starts).zip(&steps) {
        if st == 0 {
            return Err(Error::invalid(format!("node {label}: step 0")));
        }
        let dim = xd.get(a).copied().unwrap_or(0) as i64;
        let s0 = if s0 < 0 { s0.saturating_add(dim) } else { s0 };
        start[a] = if st > 0 {
            s0.clamp(0, dim)
        } else {
            s0.clamp(0, (dim - 1).max(0))
        };
        step[a] = st;
    }
    Ok((start, step))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_ir::types::known_shape;
    use cc_ir::{DType, ValueType};

    fn graph(op: Op, ins: &[&[usize]]) -> (Graph, NodeId) {
        let mut g = Graph::new("t");
        let xs: Vec<_> = ins
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let ty = ValueType::tensor(DType::F32, known_shape(s));
                Some(g.add_value(&format!("x{i}"), Some(ty)).unwrap())
            })
            .collect();
        let y = g.add_value("y", None).unwrap();
        let id = g.add_node("n", op, xs.clone(), vec![Some(y)]).unwrap();
        g.set_inputs(xs.into_iter().flatten().collect());
        g.set_outputs(vec![y]);
        cc_ir::infer::infer_shapes(&mut g).unwrap();
        (g, id)
    }

    #[test]
    fn concat_picks_the_input_by_the_axis_coordinate() {
        let (g, id) = graph(Op::Concat { axis: 1 }, &[&[2, 3, 4], &[2, 1, 4]]);
        let d = lower(&g, id, &mut Weights::new()).unwrap();
        assert!(d
            .body
            .contains("const int q = (o / 4) % 4, outer = o / 16, r = o % 4;"));
        assert!(d
            .body
            .contains("    if (q < 3) y[o] = x0[(outer * 3 + (q - 0)) * 4 + r];"));
        assert!(d
            .body
            .contains("    else if (q < 4) y[o] = x1[(outer * 1 + (q - 3)) * 4 + r];"));
        assert_eq!(d.params.len(), 3);
    }

    #[test]
    fn slice_starts_and_steps_are_clamped() {
        let mut g = Graph::new("t");
        let ty = ValueType::tensor(DType::F32, known_shape(&[4, 10]));
        let x = g.add_value("x", Some(ty)).unwrap();
        let c = |g: &mut Graph, n: &str, v: Vec<i64>| {
            let len = v.len();
            Some(
                g.add_const(n, cc_ir::Tensor::from_i64(vec![len], v).unwrap())
                    .unwrap(),
            )
        };
        let (s, e) = (c(&mut g, "s", vec![-1, 1]), c(&mut g, "e", vec![-100, 100]));
        let (a, st) = (c(&mut g, "a", vec![1, 0]), c(&mut g, "st", vec![-3, 2]));
        let y = g.add_value("y", None).unwrap();
        let id = g
            .add_node("sl", Op::Slice, vec![Some(x), s, e, a, st], vec![Some(y)])
            .unwrap();
        g.set_inputs(vec![x]);
        g.set_outputs(vec![y]);
        cc_ir::infer::infer_shapes(&mut g).unwrap();
        assert_eq!(dims(&g, y).unwrap(), vec![2, 4]);
        // Rows 1, 3; columns 9, 6, 3, 0.
        let d = lower(&g, id, &mut Weights::new()).unwrap();
        assert!(
            d.body
                .contains("y[o] = x[(1 + ((o / 4) % 2) * 2) * 10 + (9 + ((o / 1) % 4) * -3) * 1];"),
            "{}",
            d.body
        );
    }

    #[test]
    fn transpose_maps_output_to_input_strides() {
        let (g, id) = graph(
            Op::Transpose {
                perm: Some(vec![0, 2, 1]),
            },
            &[&[2, 3, 4]],
        );
        let d = lower(&g, id, &mut Weights::new()).unwrap();
        // y[a][b][c] = x[a][c][b]: y strides (12, 3, 1), x strides (12, 4, 1).
        assert!(
            d.body
                .contains("y[o] = x[((o / 12) % 2) * 12 + ((o / 3) % 4) * 1 + ((o / 1) % 3) * 4];"),
            "{}",
            d.body
        );
        // Check the mapping numerically for every output index.
        for o in 0..24usize {
            let (a, b, c) = (o / 12, (o / 3) % 4, o % 3);
            let want = a * 12 + c * 4 + b;
            assert_eq!(((o / 12) % 2) * 12 + ((o / 3) % 4) + (o % 3) * 4, want);
        }
    }
}
