//! Ops that move or resize dims: Flatten, Reshape, Transpose, Concat, Split, Slice,
//! Unsqueeze, Squeeze, Expand, Shape, Size, Pad.

use super::{
    dims::{broadcast, map_known, product, unify, unknowns},
    tensor, Ctx,
};
use crate::dtype::DType;
use crate::error::Result;
use crate::op::Op;
use crate::types::{Dim, ValueType};

type Out = Result<Vec<Option<ValueType>>>;

fn one(c: &Ctx, shape: Option<Vec<Dim>>) -> Out {
    Ok(vec![tensor(c.elem(0), shape)])
}

/// Length of the 1-D input `slot` when its shape is known.
fn len1(c: &Ctx, slot: usize) -> Option<usize> {
    match c.shape(slot)? {
        [d] => d.known().and_then(|v| usize::try_from(v).ok()),
        _ => None,
    }
}

fn flatten(c: &Ctx, axis: Option<i64>) -> Out {
    let Some(x) = c.shape(0) else {
        return one(c, Some(unknowns(2)));
    };
    let r = x.len() as i64;
    let a = axis.unwrap_or(1);
    let a = if a < 0 { a + r } else { a };
    if !(0..=r).contains(&a) {
        return Err(c.err(format!(
            "axis {} out of range for rank {r}",
            axis.unwrap_or(1)
        )));
    }
    let (head, tail) = x.split_at(a as usize);
    one(c, Some(vec![product(head), product(tail)]))
}

fn reshape(c: &Ctx, allowzero: bool) -> Out {
    let Some(target) = c.dims_value(1) else {
        return one(c, len1(c, 1).map(unknowns));
    };
    let x = c.shape(0);
    let mut out = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, t) in target.into_iter().enumerate() {
        out.push(match t {
            Dim::Known(-1) => {
                if infer_at.replace(i).is_some() {
                    return Err(c.err("Reshape target has more than one -1"));
                }
                Dim::Unknown
            }
            Dim::Known(0) if !allowzero => match x {
                Some(x) => x.get(i).cloned().ok_or_else(|| {
                    c.err(format!(
                        "Reshape copies dim {i} of a rank {} input",
                        x.len()
                    ))
                })?,
                None => Dim::Unknown,
            },
            Dim::Known(t) if t < 0 => return Err(c.err(format!("Reshape target dim {t}"))),
            d => d,
        });
    }
    if let (Some(at), Some(x)) = (infer_at, x) {
        out[at] = infer_minus_one(c, x, &out, at)?;
    } else if let (None, Some(x)) = (infer_at, x) {
        if let (Dim::Known(a), Dim::Known(b)) = (product(x), product(&out)) {
            if a != b {
                return Err(c.err(format!("cannot reshape {a} elements into {b}")));
            }
        }
    }
    one(c, Some(out))
}

/// The size of Reshape's `-1` dim: the input's element count over the other target dims,
/// cancelling symbolic dims that appear on both sides.
fn infer_minus_one(c: &Ctx, x: &[Dim], out: &[Dim], at: usize) -> Result<Dim> {
    let mut syms_in: Vec<&str> = Vec::new();
    let mut num: i64 = 1;
    for d in x {
        match d {
            Dim::Known(v) => num = num.saturating_mul(*v),
            Dim::Sym(s) => syms_in.push(s),
            Dim::Unknown => return Ok(Dim::Unknown),
        }
    }
    let mut den: i64 = 1;
    for (i, d) in out.iter().enumerate() {
        if i == at {
            continue;
        }
        match d {
            Dim::Known(v) => den = den.saturating_mul(*v),
            Dim::Sym(s) => match syms_in.iter().position(|x| x == s) {
                Some(p) => {
                    syms_in.remove(p);
                }
                None => return Ok(Dim::Unknown),
            },
            Dim::Unknown => return Ok(Dim::Unknown),
        }
    }
    if den == 0 {
        return Ok(Dim::Unknown);
    }
    match syms_in.as_slice() {
        [] => {}
        // What is left is exactly one symbol.
        [s] if num == den => return Ok(Dim::Sym(s.to_string())),
        _ => return Ok(Dim::Unknown),
    }
    if num % den != 0 {
        return Err(c.err(format!(
            "cannot reshape {num} elements into a multiple of {den}"
        )));
    }
    Ok(Dim::Known(num / den))
}

fn transpose(c: &Ctx, perm: &Option<Vec<i64>>) -> Out {
    let Some(x) = c.shape(0) else {
        return one(c, perm.as_ref().map(|p| unknowns(p.len())));
    };
    let perm: Vec<i64> = match perm {
        Some(p) => p.clone(),
        None => (0..x.len() as i64).rev().collect(),
    };
    if perm.len() != x.len() {
        return Err(c.err(format!(
            "perm has {} axes for a rank {} input",
            perm.len(),
            x.len()
        )));
    }
    let mut out = Vec::with_capacity(x.len());
    for &p in &perm {
        out.push(x[c.axis(p, x.len())?].clone());
    }
    one(c, Some(out))
}

fn concat(c: &Ctx, axis: i64) -> Out {
    let elem = (0..c.n_in()).find_map(|s| c.elem(s));
    let shapes: Vec<Option<&[Dim]>> = (0..c.n_in()).map(|s| c.shape(s)).collect();
    let Some(rank) = shapes.iter().flatten().map(|s| s.len()).next() else {
        return Ok(vec![tensor(elem, None)]);
    };
    let ax = c.axis(axis, rank)?;
    let mut out: Vec<Dim> = unknowns(rank);
    let mut sum = Some(0i64);
    for (i, s) in shapes.iter().enumerate() {
        let Some(s) = s else {
            sum = None;
            continue;
        };
        if s.len() != rank {
            return Err(c.err(format!(
                "input {i} has rank {} but input 0 rank {rank}",
                s.len()
            )));
        }
        for (j, d) in s.iter().enumerate() {
            if j == ax {
                sum = sum.zip(d.known()).and_then(|(a, b)| a.checked_add(b));
            } else if i == 0 || shapes[..i].iter().all(Option::is_none) {
                out[j] = d.clone();
            } else {
                out[j] = unify(&out[j], d).map_err(|()| {
                    c.err(format!("inputs disagree on dim {j}: {} vs {d}", out[j]))
                })?;
            }
        }
    }
    out[ax] = sum.map_or(Dim::Unknown, Dim::Known);
    if c.n_in() == 1 {
        if let Some(s) = shapes[0] {
            out[ax] = s[ax].clone();
        }
    }
    Ok(vec![tensor(elem, Some(out))])
}

fn split(c: &Ctx, axis: Option<i64>, attr: &Option<Vec<i64>>, num: Option<i64>) -> Out {
    let n = c.n_out();
    let Some(x) = c.shape(0) else {
        return Ok(vec![tensor(c.elem(0), None); n]);
    };
    let ax = c.axis(axis.unwrap_or(0), x.len())?;
    let dim = x[ax].known();
    let sizes: Option<Vec<i64>> = if c.has(1) {
        c.ints(1)
    } else if let Some(s) = attr {
        Some(s.clone())
    } else if let Some(k) = num {
        if usize::try_from(k).ok() != Some(n) {
            return Err(c.err(format!("num_outputs {k} but {n} outputs")));
        }
        dim.filter(|&d| d >= 0 && k > 0).and_then(|d| {
            let chunk = d / k + i64::from(d % k != 0);
            let last = d - chunk * (k - 1);
            (last >= 0).then(|| {
                (0..k)
                    .map(|i| if i + 1 < k { chunk } else { last })
                    .collect()
            })
        })
    } else {
        dim.filter(|d| n > 0 && d % n as i64 == 0)
            .map(|d| vec![d / n as i64; n])
    };
    if let Some(s) = &sizes {
        if s.len() != n {
            return Err(c.err(format!("{} split sizes for {n} outputs", s.len())));
        }
        if let Some(d) = dim {
            if s.iter().try_fold(0i64, |a, &b| a.checked_add(b)) != Some(d) {
                return Err(c.err(format!("split sizes {s:?} do not sum to {d}")));
            }
        }
    }
    Ok((0..n)
        .map(|i| {
            let mut s = x.to_vec();
            s[ax] = sizes
                .as_ref()
                .and_then(|v| v.get(i))
                .map_or(Dim::Unknown, |&v| Dim::Known(v));
            tensor(c.elem(0), Some(s))
        })
        .collect())
}

/// Length of a slice of a dim of size `d` (ONNX Slice clamping rules).
fn slice_len(d: i64, start: i64, end: i64, step: i64) -> i64 {
    let fix = |v: i64, lo: i64, hi: i64| {
        let v = if v < 0 { v.saturating_add(d) } else { v };
        v.clamp(lo, hi.max(lo))
    };
    let (span, step) = if step > 0 {
        let (s, e) = (fix(start, 0, d), fix(end, 0, d));
        (e - s, i128::from(step))
    } else {
        let (s, e) = (fix(start, 0, d - 1), fix(end, -1, d - 1));
        (s - e, -i128::from(step))
    };
    let n = (i128::from(span.max(0)) + step - 1) / step;
    i64::try_from(n).unwrap_or(0)
}

fn slice(c: &Ctx) -> Out {
    let Some(x) = c.shape(0) else {
        return one(c, None);
    };
    let r = x.len();
    let (starts, ends) = (c.ints(1), c.ints(2));
    let axes: Option<Vec<i64>> = if c.has(3) {
        c.ints(3)
    } else {
        starts
            .as_ref()
            .or(ends.as_ref())
            .map(|s| (0..s.len() as i64).collect())
    };
    let Some(axes) = axes else {
        return one(c, Some(unknowns(r)));
    };
    let steps = if c.has(4) {
        c.ints(4)
    } else {
        Some(vec![1; axes.len()])
    };
    let mut out = x.to_vec();
    for (i, &a) in axes.iter().enumerate() {
        let a = c.axis(a, r)?;
        let bounds = (|| {
            let s = *starts.as_ref()?.get(i)?;
            let e = *ends.as_ref()?.get(i)?;
            let st = *steps.as_ref()?.get(i)?;
            Some((s, e, st))
        })();
        out[a] = match bounds {
            Some((_, _, 0)) => return Err(c.err("Slice step 0")),
            Some((s, e, st)) => match &x[a] {
                Dim::Known(d) => Dim::Known(slice_len(*d, s, e, st)),
                // The whole dim, whatever its size.
                d if s == 0 && st == 1 && e >= i64::from(i32::MAX) => d.clone(),
                _ => Dim::Unknown,
            },
            None => Dim::Unknown,
        };
    }
    one(c, Some(out))
}

/// Unsqueeze/Squeeze axes: attribute, or constant input 1.
fn axes_of(c: &Ctx, attr: &Option<Vec<i64>>) -> Option<Option<Vec<i64>>> {
    match attr {
        Some(a) => Some(Some(a.clone())),
        None if c.has(1) => c.ints(1).map(Some),
        None => Some(None),
    }
}

fn unsqueeze(c: &Ctx, attr: &Option<Vec<i64>>) -> Out {
    let x = c.shape(0);
    let Some(Some(axes)) = axes_of(c, attr) else {
        let n = if attr.is_none() && !c.has(1) {
            return Err(c.err("Unsqueeze without axes"));
        } else {
            len1(c, 1)
        };
        return one(c, x.zip(n).map(|(x, n)| unknowns(x.len() + n)));
    };
    let Some(x) = x else { return one(c, None) };
    let r = x.len() + axes.len();
    let mut ins = vec![false; r];
    for &a in &axes {
        let a = c.axis(a, r)?;
        if std::mem::replace(&mut ins[a], true) {
            return Err(c.err(format!("Unsqueeze axis {a} repeated")));
        }
    }
    let mut it = x.iter();
    let out = ins
        .iter()
        .map(|&new| {
            if new {
                Dim::Known(1)
            } else {
                it.next().cloned().unwrap_or(Dim::Unknown)
            }
        })
        .collect();
    one(c, Some(out))
}

fn squeeze(c: &Ctx, attr: &Option<Vec<i64>>) -> Out {
    let Some(x) = c.shape(0) else {
        return one(c, None);
    };
    let Some(axes) = axes_of(c, attr) else {
        return one(c, len1(c, 1).map(|n| unknowns(x.len().saturating_sub(n))));
    };
    let drop: Vec<bool> = match axes {
        Some(axes) => {
            let mut d = vec![false; x.len()];
            for &a in &axes {
                let a = c.axis(a, x.len())?;
                if matches!(x[a], Dim::Known(v) if v != 1) {
                    return Err(c.err(format!("Squeeze axis {a} has size {}", x[a])));
                }
                d[a] = true;
            }
            d
        }
        None => {
            if x.iter().any(|d| d.known().is_none()) {
                return one(c, None);
            }
            x.iter().map(|d| d.known() == Some(1)).collect()
        }
    };
    let out = x
        .iter()
        .zip(&drop)
        .filter(|(_, &d)| !d)
        .map(|(d, _)| d.clone())
        .collect();
    one(c, Some(out))
}

fn expand(c: &Ctx) -> Out {
    let target: Option<Vec<Dim>> = c.dims_value(1).or_else(|| len1(c, 1).map(unknowns));
    let Some(target) = target else {
        return one(c, None);
    };
    let shape = broadcast(&[c.shape(0), Some(&target)]).map_err(|m| c.err(m))?;
    one(c, shape)
}

fn shape(c: &Ctx, start: Option<i64>, end: Option<i64>) -> Out {
    let len = c
        .rank(0)
        .map(|r| Dim::Known(super::shape_range(start, end, r).len() as i64));
    Ok(vec![tensor(
        Some(DType::I64),
        Some(vec![len.unwrap_or(Dim::Unknown)]),
    )])
}

fn pad(c: &Ctx) -> Out {
    let Some(x) = c.shape(0) else {
        return one(c, None);
    };
    let r = x.len();
    let Some(pads) = c.ints(1) else {
        return one(c, Some(unknowns(r)));
    };
    let axes: Vec<usize> = if c.has(3) {
        match c.ints(3) {
            Some(a) => a.iter().map(|&a| c.axis(a, r)).collect::<Result<_>>()?,
            None => return one(c, Some(unknowns(r))),
        }
    } else {
        (0..r).collect()
    };
    let n = axes.len();
    if pads.len() != 2 * n {
        return Err(c.err(format!("{} pads for {n} axes", pads.len())));
    }
    let mut out = x.to_vec();
    for (i, &a) in axes.iter().enumerate() {
        let add = pads[i].checked_add(pads[i + n]);
        if add != Some(0) {
            out[a] = map_known(&x[a], |v| add.and_then(|p| v.checked_add(p)));
        }
    }
    one(c, Some(out))
}

pub(super) fn infer(c: &Ctx) -> Out {
    match &c.node.op {
        Op::Flatten { axis } => flatten(c, *axis),
        Op::Reshape { allowzero } => reshape(c, allowzero.unwrap_or(0) != 0),
        Op::Transpose { perm } => transpose(c, perm),
        Op::Concat { axis } => concat(c, *axis),
        Op::Split {
            axis,
            split: s,
            num_outputs,
        } => split(c, *axis, s, *num_outputs),
        Op::Slice => slice(c),
        Op::Unsqueeze { axes } => unsqueeze(c, axes),
        Op::Squeeze { axes } => squeeze(c, axes),
        Op::Expand => expand(c),
        Op::Shape { start, end } => shape(c, *start, *end),
        Op::Size => Ok(vec![tensor(Some(DType::I64), Some(Vec::new()))]),
        Op::Pad { .. } => pad(c),
        _ => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::slice_len;
    use crate::dtype::DType::{F32, I64};
    use crate::graph::{Graph, ValueId};
    use crate::infer::testutil::*;
    use crate::op::Op;

    /// One node over input `x` of type `xt` and i64 constant inputs (`None` = empty slot).
    fn with_consts(op: Op, xt: &str, consts: &[Option<&[i64]>], n_out: usize) -> Vec<String> {
        let mut g = Graph::new("g");
        let x = input(&mut g, "x", t(F32, xt));
        let mut ins: Vec<Option<ValueId>> = vec![Some(x)];
        for (i, k) in consts.iter().enumerate() {
            ins.push(k.map(|k| ints(&mut g, &format!("c{i}"), k)));
        }
        let (id, _) = node(&mut g, op, &ins, n_out);
        infer_str(&g, id)
    }

    #[test]
    fn flatten_and_transpose() {
        assert_eq!(
            run(Op::Flatten { axis: None }, &[t(F32, "2,3,4")], 1),
            ["f32[2,12]"]
        );
        assert_eq!(
            run(Op::Flatten { axis: Some(0) }, &[t(F32, "N,3")], 1),
            ["f32[1,?]"]
        );
        assert_eq!(
            run(Op::Flatten { axis: None }, &[t(F32, "N,C,1,1")], 1),
            ["f32[N,C]"]
        );
        assert_eq!(
            run(Op::Transpose { perm: None }, &[t(F32, "N,3,4")], 1),
            ["f32[4,3,N]"]
        );
        assert_eq!(
            run(
                Op::Transpose {
                    perm: Some(vec![0, 2, 1])
                },
                &[t(F32, "N,3,4")],
                1
            ),
            ["f32[N,4,3]"]
        );
    }

    #[test]
    fn reshape_zero_and_minus_one() {
        let r = Op::Reshape { allowzero: None };
        assert_eq!(
            with_consts(r.clone(), "N,S,768", &[Some(&[0, 0, 12, -1])], 1),
            ["f32[N,S,12,64]"]
        );
        assert_eq!(
            with_consts(r.clone(), "2,3,4", &[Some(&[-1, 4])], 1),
            ["f32[6,4]"]
        );
        assert_eq!(
            with_consts(r.clone(), "N,3,4", &[Some(&[-1, 4])], 1),
            ["f32[?,4]"]
        );
        assert_eq!(
            with_consts(
                Op::Reshape { allowzero: Some(1) },
                "0,3",
                &[Some(&[0, 3])],
                1
            ),
            ["f32[0,3]"]
        );
        // A non-constant target of known length gives the rank only.
        assert_eq!(run(r, &[t(F32, "2,3"), t(I64, "3")], 1), ["f32[?,?,?]"]);
    }

    #[test]
    fn concat_sums_axis_and_checks_others() {
        assert_eq!(
            run(
                Op::Concat { axis: -1 },
                &[t(F32, "N,2"), t(F32, "N,3"), t(F32, "?,1")],
                1
            ),
            ["f32[N,6]"]
        );
        let mut g = Graph::new("g");
        let a = input(&mut g, "a", t(F32, "2,2"));
        let b = input(&mut g, "b", t(F32, "3,2"));
        let (id, _) = node(&mut g, Op::Concat { axis: 1 }, &[Some(a), Some(b)], 1);
        let e = crate::infer::infer_node(&g, id).unwrap_err().to_string();
        assert!(e.contains("Concat") && e.contains("disagree"), "{e}");
    }

    #[test]
    fn split_variants() {
        let s = |split: Option<Vec<i64>>, num: Option<i64>| Op::Split {
            axis: Some(1),
            split,
            num_outputs: num,
        };
        assert_eq!(run(s(None, None), &[t(F32, "N,6")], 3), ["f32[N,2]"; 3]);
        assert_eq!(
            run(s(Some(vec![1, 5]), None), &[t(F32, "N,6")], 2),
            ["f32[N,1]", "f32[N,5]"]
        );
        assert_eq!(
            run(s(None, Some(3)), &[t(F32, "1,7")], 3),
            ["f32[1,3]", "f32[1,3]", "f32[1,1]"]
        );
        assert_eq!(
            with_consts(s(None, None), "4,5", &[Some(&[2, 3])], 2),
            ["f32[4,2]", "f32[4,3]"]
        );
        assert_eq!(run(s(None, None), &[t(F32, "1,7")], 2), ["f32[1,?]"; 2]);
    }

    #[test]
    fn slice_clamps_and_steps() {
        assert_eq!(slice_len(10, 0, i64::MAX, 1), 10);
        assert_eq!(slice_len(10, -3, i64::MAX, 1), 3);
        assert_eq!(slice_len(10, 1, 8, 3), 3);
        assert_eq!(slice_len(10, i64::MAX, i64::MIN, -1), 10);
        assert_eq!(slice_len(10, 5, 2, 1), 0);
        assert_eq!(slice_len(10, -1, -11, -2), 5);
        assert_eq!(
            with_consts(
                Op::Slice,
                "N,10,8",
                &[Some(&[0, 2]), Some(&[i64::MAX, -2]), Some(&[0, 2]), None],
                1
            ),
            ["f32[N,10,4]"]
        );
        assert_eq!(
            with_consts(
                Op::Slice,
                "6,10",
                &[Some(&[9]), Some(&[0]), Some(&[1]), Some(&[-3])],
                1
            ),
            ["f32[6,3]"]
        );
        assert_eq!(
            run(Op::Slice, &[t(F32, "4,4"), t(I64, "1"), t(I64, "1")], 1),
            ["f32[?,?]"]
        );
    }

    #[test]
    fn unsqueeze_squeeze_expand() {
        assert_eq!(
            with_consts(Op::Unsqueeze { axes: None }, "N,3", &[Some(&[0, -1])], 1),
            ["f32[1,N,3,1]"]
        );
        assert_eq!(
            run(
                Op::Unsqueeze {
                    axes: Some(vec![1])
                },
                &[t(F32, "2")],
                1
            ),
            ["f32[2,1]"]
        );
        assert_eq!(
            run(Op::Squeeze { axes: None }, &[t(F32, "1,3,1")], 1),
            ["f32[3]"]
        );
        assert_eq!(
            run(Op::Squeeze { axes: None }, &[t(F32, "1,N")], 1),
            ["f32[*]"]
        );
        assert_eq!(
            with_consts(Op::Squeeze { axes: None }, "N,1,4", &[Some(&[1])], 1),
            ["f32[N,4]"]
        );
        assert_eq!(
            with_consts(Op::Expand, "3,1", &[Some(&[2, 1, 6])], 1),
            ["f32[2,3,6]"]
        );
    }

    #[test]
    fn shape_size_pad() {
        assert_eq!(
            run(
                Op::Shape {
                    start: Some(1),
                    end: Some(-1)
                },
                &[t(F32, "N,3,4,5")],
                1
            ),
            ["i64[2]"]
        );
        assert_eq!(
            run(
                Op::Shape {
                    start: None,
                    end: None
                },
                &[t(F32, "2,3")],
                1
            ),
            ["i64[2]"]
        );
        assert_eq!(run(Op::Size, &[t(F32, "2,3")], 1), ["i64[]"]);
        assert_eq!(
            with_consts(
                Op::Pad { mode: None },
                "N,3,4",
                &[Some(&[0, 1, 2, 0, 1, 2])],
                1
            ),
            ["f32[N,5,8]"]
        );
        assert_eq!(
            with_consts(
                Op::Pad { mode: None },
                "N,3,4",
                &[Some(&[1, 1]), None, Some(&[-1])],
                1
            ),
            ["f32[N,3,6]"]
        );
    }
}
