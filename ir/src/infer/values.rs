//! Symbolic values of small integer tensors ("shape arithmetic").
//!
//! Shapes are often computed in the graph (`Shape -> Gather -> Unsqueeze -> Concat ->
//! Reshape`). [`dims_value`] follows such chains back from a value and returns its
//! elements as dims: known integers where they are constant, the input's dims where they
//! come from a `Shape`. It is what Reshape, Expand, ConstantOfShape and Range read when
//! their shape input is not a plain constant. Anything it cannot follow is `None`.

use super::dims::known;
use crate::graph::{Graph, ValueId};
use crate::op::{BinaryOp, Op};
use crate::types::Dim;

/// How far back a chain is followed.
const MAX_DEPTH: usize = 24;
/// Longest value tracked (shape vectors are short).
const MAX_LEN: usize = 64;

/// The elements of the scalar or 1-D integer value `v`, as dims, when they can be derived.
pub(crate) fn dims_value(g: &Graph, v: ValueId) -> Option<Vec<Dim>> {
    value(g, v, MAX_DEPTH)
}

fn value(g: &Graph, v: ValueId, depth: usize) -> Option<Vec<Dim>> {
    if let Some(t) = g.const_data(v) {
        if t.shape().len() > 1 || t.len() > MAX_LEN {
            return None;
        }
        return t.to_i64_lossless().ok().map(|x| known(&x));
    }
    let depth = depth.checked_sub(1)?;
    let (id, _) = g.value(v).producer()?;
    let n = g.node(id);
    let input = |slot: usize| value(g, n.input(slot)?, depth);
    let consts =
        |slot: usize| -> Option<Vec<i64>> { g.const_data(n.input(slot)?)?.to_i64_lossless().ok() };
    let out = match &n.op {
        Op::Shape { start, end } => {
            let s = g.value(n.input(0)?).ty.as_ref()?.shape()?;
            s.get(super::shape_range(*start, *end, s.len()))?.to_vec()
        }
        Op::Identity | Op::Unsqueeze { .. } | Op::Squeeze { .. } | Op::Reshape { .. } => input(0)?,
        Op::Cast { to, .. } if to.is_int() => input(0)?,
        Op::Concat { .. } => {
            let mut all = Vec::new();
            for slot in 0..n.inputs().len() {
                all.extend(input(slot)?);
            }
            all
        }
        Op::Gather { axis } if axis.unwrap_or(0) == 0 => {
            let data = input(0)?;
            let len = data.len() as i64;
            consts(1)?
                .into_iter()
                .map(|i| {
                    let i = if i < 0 { i + len } else { i };
                    usize::try_from(i).ok().and_then(|i| data.get(i).cloned())
                })
                .collect::<Option<Vec<_>>>()?
        }
        Op::Slice => {
            let data = input(0)?;
            let (s, e) = (consts(1)?, consts(2)?);
            let step = if n.input(4).is_some() {
                consts(4)?
            } else {
                vec![1]
            };
            let (&[s], &[e], &[step]) = (s.as_slice(), e.as_slice(), step.as_slice()) else {
                return None;
            };
            if step != 1 {
                return None;
            }
            let len = data.len() as i64;
            let fix =
                |x: i64| (if x < 0 { x.saturating_add(len) } else { x }).clamp(0, len) as usize;
            let (a, b) = (fix(s), fix(e));
            data.get(a..b.max(a))?.to_vec()
        }
        Op::Binary(op @ (BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div)) => {
            let (a, b) = (input(0)?, input(1)?);
            let len = a.len().max(b.len());
            let pick = |x: &[Dim], i: usize| -> Option<Dim> {
                if x.len() == 1 {
                    x.first().cloned()
                } else {
                    x.get(i).cloned()
                }
            };
            (0..len)
                .map(|i| Some(arith(*op, &pick(&a, i)?, &pick(&b, i)?)))
                .collect::<Option<Vec<_>>>()?
        }
        _ => return None,
    };
    (out.len() <= MAX_LEN).then_some(out)
}

/// Integer arithmetic on dims; a symbol survives only the identities (x*1, x/1, x+0, x-0).
fn arith(op: BinaryOp, a: &Dim, b: &Dim) -> Dim {
    match (a, b) {
        (Dim::Known(x), Dim::Known(y)) => {
            let r = match op {
                BinaryOp::Add => x.checked_add(*y),
                BinaryOp::Sub => x.checked_sub(*y),
                BinaryOp::Mul => x.checked_mul(*y),
                _ => x.checked_div_euclid(*y),
            };
            r.map_or(Dim::Unknown, Dim::Known)
        }
        (_, Dim::Known(1)) if matches!(op, BinaryOp::Mul | BinaryOp::Div) => a.clone(),
        (Dim::Known(1), _) if op == BinaryOp::Mul => b.clone(),
        (_, Dim::Known(0)) if matches!(op, BinaryOp::Add | BinaryOp::Sub) => a.clone(),
        (Dim::Known(0), _) if op == BinaryOp::Add => b.clone(),
        _ => Dim::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::infer::testutil::*;
    use crate::op::Op;

    #[test]
    fn follows_shape_gather_unsqueeze_concat() {
        let mut g = Graph::new("g");
        let x = input(&mut g, "x", t(DType::F32, "B,S,768"));
        let (_, s) = node(
            &mut g,
            Op::Shape {
                start: None,
                end: None,
            },
            &[Some(x)],
            1,
        );
        let i0 = g
            .add_const("i0", crate::Tensor::from_i64(vec![], vec![0]).unwrap())
            .unwrap();
        let (_, b) = node(
            &mut g,
            Op::Gather { axis: None },
            &[Some(s[0]), Some(i0)],
            1,
        );
        let ax = ints(&mut g, "ax", &[0]);
        let (_, bu) = node(
            &mut g,
            Op::Unsqueeze { axes: None },
            &[Some(b[0]), Some(ax)],
            1,
        );
        let rest = ints(&mut g, "rest", &[-1, 12, 64]);
        let (_, cat) = node(
            &mut g,
            Op::Concat { axis: 0 },
            &[Some(bu[0]), Some(rest)],
            1,
        );
        assert_eq!(dims_value(&g, cat[0]).unwrap(), dims("B,-1,12,64"));
        let (r, _) = node(
            &mut g,
            Op::Reshape { allowzero: None },
            &[Some(x), Some(cat[0])],
            1,
        );
        assert_eq!(infer_str(&g, r), ["f32[B,S,12,64]"]);
    }

    #[test]
    fn arithmetic_and_slices() {
        assert_eq!(
            arith(BinaryOp::Mul, &Dim::Known(3), &Dim::Known(4)),
            Dim::Known(12)
        );
        let n = Dim::Sym("N".into());
        assert_eq!(arith(BinaryOp::Mul, &n, &Dim::Known(1)), n);
        assert_eq!(arith(BinaryOp::Mul, &n, &Dim::Known(2)), Dim::Unknown);
        let mut g = Graph::new("g");
        let x = input(&mut g, "x", t(DType::F32, "N,3,4"));
        let (_, s) = node(
            &mut g,
            Op::Shape {
                start: None,
                end: None,
            },
            &[Some(x)],
            1,
        );
        let (a, b) = (ints(&mut g, "a", &[-2]), ints(&mut g, "b", &[i64::MAX]));
        let (_, sl) = node(&mut g, Op::Slice, &[Some(s[0]), Some(a), Some(b)], 1);
        assert_eq!(dims_value(&g, sl[0]).unwrap(), dims("3,4"));
        let dynamic = input(&mut g, "d", t(DType::I64, "2"));
        assert!(dims_value(&g, dynamic).is_none());
    }
}
