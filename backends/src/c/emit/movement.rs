//! Data movement: Transpose, Slice, Concat, Split, Gather and GatherND, as strided loop
//! nests (index reads are bounds-checked: `run` returns -1 on an index out of range).

use super::{input, output, strided_loop, strides, unsupported, Cx, Operand};
use cc_ir::{Error, NodeId, Op, Result, ValueId};
use std::fmt::Write;

/// The statements of one data-movement node.
pub fn emit(cx: &mut Cx, node: NodeId) -> Result<String> {
    let g = cx.g;
    match &g.node(node).op {
        Op::Transpose { perm } => transpose(cx, node, perm.as_deref()),
        Op::Slice => slice(cx, node),
        Op::Concat { axis } => concat(cx, node, *axis),
        Op::Split { axis, .. } => split(cx, node, axis.unwrap_or(0)),
        Op::Gather { axis } => gather(cx, node, axis.unwrap_or(0)),
        Op::GatherND { batch_dims } => gather_nd(cx, node, batch_dims.unwrap_or(0)),
        op => Err(unsupported(g, node, &format!("op {}", op.onnx_type().1))),
    }
}

/// Normalises a possibly negative axis for rank `rank`.
fn norm_axis(cx: &Cx, node: NodeId, axis: i64, rank: usize) -> Result<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    usize::try_from(a)
        .ok()
        .filter(|&a| a < rank)
        .ok_or_else(|| unsupported(cx.g, node, &format!("axis {axis} for rank {rank}")))
}

/// Integers of a constant input, or an error naming the node.
fn const_ints(cx: &Cx, node: NodeId, v: ValueId, what: &str) -> Result<Vec<i64>> {
    cx.const_data(v)
        .and_then(|t| t.to_i64_lossless().ok())
        .ok_or_else(|| unsupported(cx.g, node, &format!("a {what} that is not constant")))
}

/// A value read or written with a base offset and per-dimension strides.
struct View {
    v: ValueId,
    base: usize,
    strides: Vec<usize>,
}

/// `y = x` element by element over `dims`, both through their views.
fn copy(cx: &Cx, x: View, y: View, dims: &[usize]) -> Result<String> {
    let t = cx.ctype(y.v)?;
    let mut s = format!(
        "const {t} *x = {};\n{t} *y = {};\n",
        cx.ptr(x.v)?,
        cx.ptr(y.v)?
    );
    s.push_str(&strided_loop(
        dims,
        &Operand {
            ptr: "y".into(),
            base: y.base,
            strides: y.strides,
        },
        &[Operand {
            ptr: "x".into(),
            base: x.base,
            strides: x.strides,
        }],
        |a| a[0].clone(),
    ));
    Ok(s)
}

/// A view of `v` from `base` with `strides`.
fn view(v: ValueId, base: usize, strides: Vec<usize>) -> View {
    View { v, base, strides }
}

fn transpose(cx: &mut Cx, node: NodeId, perm: Option<&[i64]>) -> Result<String> {
    let (x, y) = (input(cx.g, node, 0)?, output(cx.g, node, 0)?);
    let sx = cx.shape(x)?;
    let r = sx.len();
    let perm: Vec<usize> = match perm {
        Some(p) => p
            .iter()
            .map(|&a| norm_axis(cx, node, a, r))
            .collect::<Result<_>>()?,
        None => (0..r).rev().collect(),
    };
    let xs = strides(&sx);
    let dims: Vec<usize> = perm.iter().map(|&p| sx[p]).collect();
    let ins: Vec<usize> = perm.iter().map(|&p| xs[p]).collect();
    let out = strides(&dims);
    copy(cx, view(x, 0, ins), view(y, 0, out), &dims)
}

fn slice(cx: &mut Cx, node: NodeId) -> Result<String> {
    let g = cx.g;
    let (x, y) = (input(g, node, 0)?, output(g, node, 0)?);
    let sx = cx.shape(x)?;
    let r = sx.len();
    let starts = const_ints(cx, node, input(g, node, 1)?, "start")?;
    let ends = const_ints(cx, node, input(g, node, 2)?, "end")?;
    let axes = match g.node(node).input(3) {
        Some(v) => const_ints(cx, node, v, "axes")?,
        None => (0..starts.len() as i64).collect(),
    };
    let steps = match g.node(node).input(4) {
        Some(v) => const_ints(cx, node, v, "steps")?,
        None => vec![1; starts.len()],
    };
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(unsupported(
            g,
            node,
            "Slice with inputs of different lengths",
        ));
    }
    let xs = strides(&sx);
    let mut dims = sx.clone();
    let mut ins: Vec<i64> = xs.iter().map(|&s| s as i64).collect();
    let mut base: i64 = 0;
    for i in 0..starts.len() {
        let a = norm_axis(cx, node, axes[i], r)?;
        let d = sx[a] as i64;
        let k = steps[i];
        if k == 0 {
            return Err(unsupported(g, node, "Slice with step 0"));
        }
        let fix = |v: i64| if v < 0 { v + d } else { v };
        let (s, e) = if k > 0 {
            (fix(starts[i]).clamp(0, d), fix(ends[i]).clamp(0, d))
        } else {
            (
                fix(starts[i]).clamp(0, d - 1),
                fix(ends[i]).clamp(-1, d - 1),
            )
        };
        let len = if k > 0 {
            ((e - s).max(0) + k - 1) / k
        } else {
            ((s - e).max(0) + (-k) - 1) / (-k)
        };
        dims[a] = len as usize;
        base += s * xs[a] as i64;
        ins[a] = k * xs[a] as i64;
    }
    if dims != cx.shape(y)? {
        return Err(unsupported(
            g,
            node,
            "Slice whose output shape disagrees with inference",
        ));
    }
    if ins.iter().any(|&s| s < 0) {
        return Err(unsupported(g, node, "Slice with a negative step"));
    }
    let ins: Vec<usize> = ins.into_iter().map(|s| s as usize).collect();
    let out = strides(&dims);
    copy(cx, view(x, base as usize, ins), view(y, 0, out), &dims)
}

fn concat(cx: &mut Cx, node: NodeId, axis: i64) -> Result<String> {
    let g = cx.g;
    let y = output(g, node, 0)?;
    let sy = cx.shape(y)?;
    let a = norm_axis(cx, node, axis, sy.len())?;
    let ys = strides(&sy);
    let mut s = String::new();
    let mut at = 0usize;
    for &x in g.node(node).inputs().iter().flatten() {
        let sx = cx.shape(x)?;
        s.push_str("{\n");
        let (vx, vy) = (view(x, 0, strides(&sx)), view(y, at * ys[a], ys.clone()));
        s.push_str(&copy(cx, vx, vy, &sx)?);
        s.push_str("}\n");
        at += sx.get(a).copied().unwrap_or(0);
    }
    Ok(s)
}

fn split(cx: &mut Cx, node: NodeId, axis: i64) -> Result<String> {
    let g = cx.g;
    let x = input(g, node, 0)?;
    let sx = cx.shape(x)?;
    let a = norm_axis(cx, node, axis, sx.len())?;
    let xs = strides(&sx);
    let mut s = String::new();
    let mut at = 0usize;
    for &y in g.node(node).outputs().iter().flatten() {
        let sy = cx.shape(y)?;
        s.push_str("{\n");
        let (vx, vy) = (view(x, at * xs[a], xs.clone()), view(y, 0, strides(&sy)));
        s.push_str(&copy(cx, vx, vy, &sy)?);
        s.push_str("}\n");
        at += sy.get(a).copied().unwrap_or(0);
    }
    Ok(s)
}

fn gather(cx: &mut Cx, node: NodeId, axis: i64) -> Result<String> {
    let g = cx.g;
    let (x, ind, y) = (input(g, node, 0)?, input(g, node, 1)?, output(g, node, 0)?);
    let sx = cx.shape(x)?;
    let a = norm_axis(cx, node, axis, sx.len())?;
    let it = cx.ctype(ind)?;
    if !matches!(it, "int64_t" | "int32_t") {
        return Err(unsupported(
            g,
            node,
            "Gather indices that are not int32/int64",
        ));
    }
    let outer: usize = sx[..a].iter().product();
    let inner: usize = sx[a + 1..].iter().product();
    let d = sx[a];
    let count: usize = cx.shape(ind)?.iter().product();
    let t = cx.ctype(y)?;
    let mut s = format!(
        "const {t} *x = {};\nconst {it} *ix = {};\n{t} *y = {};\n",
        cx.ptr(x)?,
        cx.ptr(ind)?,
        cx.ptr(y)?
    );
    let _ = writeln!(s, "for (long o = 0; o < {outer}; o++)");
    let _ = writeln!(s, "  for (long j = 0; j < {count}; j++) {{");
    let _ = writeln!(s, "    long q = (long)ix[j];");
    let _ = writeln!(s, "    if (q < 0) q += {d};");
    let _ = writeln!(s, "    if (q < 0 || q >= {d}) return -1;");
    let _ = writeln!(
        s,
        "    for (long i = 0; i < {inner}; i++) y[(o * {count} + j) * {inner} + i] = x[(o * {d} + q) * {inner} + i];"
    );
    let _ = writeln!(s, "  }}");
    Ok(s)
}

fn gather_nd(cx: &mut Cx, node: NodeId, batch_dims: i64) -> Result<String> {
    let g = cx.g;
    if batch_dims != 0 {
        return Err(unsupported(g, node, "GatherND with batch_dims"));
    }
    let (x, ind, y) = (input(g, node, 0)?, input(g, node, 1)?, output(g, node, 0)?);
    let (sx, si) = (cx.shape(x)?, cx.shape(ind)?);
    let it = cx.ctype(ind)?;
    if it != "int64_t" {
        return Err(unsupported(g, node, "GatherND indices that are not int64"));
    }
    let q = *si
        .last()
        .ok_or_else(|| Error::invalid(format!("node {}: scalar indices", g.node_label(node))))?;
    if q > sx.len() {
        return Err(unsupported(
            g,
            node,
            "GatherND index tuples longer than the data rank",
        ));
    }
    let tuples: usize = si[..si.len() - 1].iter().product();
    let inner: usize = sx[q..].iter().product();
    let xs = strides(&sx);
    let t = cx.ctype(y)?;
    let mut s = format!(
        "const {t} *x = {};\nconst int64_t *ix = {};\n{t} *y = {};\n",
        cx.ptr(x)?,
        cx.ptr(ind)?,
        cx.ptr(y)?
    );
    let _ = writeln!(s, "for (long j = 0; j < {tuples}; j++) {{");
    let _ = writeln!(s, "  long off = 0, v;");
    for (k, (&d, &st)) in sx.iter().zip(&xs).take(q).enumerate() {
        let _ = writeln!(s, "  v = (long)ix[j * {q} + {k}]; if (v < 0) v += {d}; if (v < 0 || v >= {d}) return -1; off += v * {st};");
    }
    let _ = writeln!(
        s,
        "  for (long i = 0; i < {inner}; i++) y[j * {inner} + i] = x[off + i];"
    );
    let _ = writeln!(s, "}}");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use crate::c::toolchain::testkit::{ramp, Builder};
    use cc_ir::Op;

    #[test]
    fn transpose_slice_gather_concat_split_match_the_executor() {
        let (mut b, x) = Builder::new(&[2, 3, 4]);
        let t = b.op(
            Op::Transpose {
                perm: Some(vec![2, 0, 1]),
            },
            &[Some(x)],
        );
        // [4,2,3] -> rows 3 and 1 (negative step is refused; use step 2 from 1)
        let (st, en, ax, sp) = (
            b.ints(&[1, -3]),
            b.ints(&[4, 3]),
            b.ints(&[0, 2]),
            b.ints(&[2, 1]),
        );
        let s = b.op(
            Op::Slice,
            &[Some(t), Some(st), Some(en), Some(ax), Some(sp)],
        );
        let idx = b.ints(&[1, -2, 0]);
        let gth = b.op(Op::Gather { axis: Some(1) }, &[Some(s), Some(idx)]);
        let cat = b.op(Op::Concat { axis: 0 }, &[Some(gth), Some(gth)]);
        b.check(&[cat, t], ramp(&[2, 3, 4]), 0.0);
    }
}
