//! Fast paths for ops the reference evaluator would decode element by element: Where
//! and IsNaN on f32, and ReduceMean/ReduceSum over the last axis of f32 tensors.

use super::elementwise::strides_in;
use super::f32s;
use super::simd::sum8;
use crate::cpu::eval::broadcast_shapes;
use crate::cpu::parallel::{chunk_of, for_each_chunk};
use cc_ir::op::{BinaryOp, ReduceOp};
use cc_ir::{DType, Error, Result, Tensor};

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// Where(cond, x, y) with a bool condition and f32 branches, broadcasting all three;
/// `Ok(None)` for other element types.
pub fn where_f32(c: &Tensor, x: &Tensor, y: &Tensor) -> Result<Option<Tensor>> {
    if c.dtype() != DType::Bool || x.dtype() != DType::F32 || y.dtype() != DType::F32 {
        return Ok(None);
    }
    let shape = broadcast_shapes(&[c.shape(), x.shape(), y.shape()])
        .map_err(|e| Error::invalid(format!("Where: {e}")))?;
    let total = cc_ir::tensor::shape_count(&shape)?;
    let (cv, xv, yv) = (c.raw()?, f32s(x)?, f32s(y)?);
    if cv.len() != c.len() || xv.len() != x.len() || yv.len() != y.len() {
        return Err(Error::invalid("Where: data does not match the shape"));
    }
    let (sc, sx, sy) = (
        strides_in(c.shape(), &shape),
        strides_in(x.shape(), &shape),
        strides_in(y.shape(), &shape),
    );
    let r = shape.len();
    let inner = shape.last().copied().unwrap_or(1);
    let mut out = vec![0f32; total];
    if total == 0 {
        return Tensor::from_f32_vec(shape, out).map(Some);
    }
    let (ic, ix, iy) = (
        sc.last().copied().unwrap_or(0),
        sx.last().copied().unwrap_or(0),
        sy.last().copied().unwrap_or(0),
    );
    let rows_per_task = (CHUNK / inner).max(1);
    for_each_chunk(&mut out, rows_per_task * inner, &|task, chunk| {
        for (ri, row) in chunk.chunks_mut(inner).enumerate() {
            let mut rem = task * rows_per_task + ri;
            let (mut oc, mut ox, mut oy) = (0, 0, 0);
            for d in (0..r.saturating_sub(1)).rev() {
                let i = rem % shape[d];
                rem /= shape[d];
                oc += i * sc[d];
                ox += i * sx[d];
                oy += i * sy[d];
            }
            match (ic, ix, iy) {
                (1, 0, 1) => where_row::<true, false, true>(row, &cv[oc..], &xv[ox..], &yv[oy..]),
                (1, 1, 0) => where_row::<true, true, false>(row, &cv[oc..], &xv[ox..], &yv[oy..]),
                (1, 1, 1) => where_row::<true, true, true>(row, &cv[oc..], &xv[ox..], &yv[oy..]),
                (1, 0, 0) => where_row::<true, false, false>(row, &cv[oc..], &xv[ox..], &yv[oy..]),
                _ => {
                    for (j, o) in row.iter_mut().enumerate() {
                        *o = if cv[oc + j * ic] != 0 {
                            xv[ox + j * ix]
                        } else {
                            yv[oy + j * iy]
                        };
                    }
                }
            }
        }
    });
    Tensor::from_f32_vec(shape, out).map(Some)
}

/// One output row of Where, each operand either contiguous along it (`true`) or one
/// value repeated (`false`); the branchless select vectorizes.
#[inline(always)]
fn where_row<const C: bool, const X: bool, const Y: bool>(
    row: &mut [f32],
    c: &[u8],
    x: &[f32],
    y: &[f32],
) {
    let n = row.len();
    let span = |varies: bool| if varies { n } else { 1 };
    let (c, x, y) = (&c[..span(C)], &x[..span(X)], &y[..span(Y)]);
    for (j, o) in row.iter_mut().enumerate() {
        let cj = c[if C { j } else { 0 }];
        let (xj, yj) = (x[if X { j } else { 0 }], y[if Y { j } else { 0 }]);
        *o = if cj != 0 { xj } else { yj };
    }
}

/// `f(a, b)` over the broadcast of two typed operands, one output byte per element.
fn broadcast_bytes<A: Copy + Sync, B: Copy + Sync>(
    (av, ash): (&[A], &[usize]),
    (bv, bsh): (&[B], &[usize]),
    f: impl Fn(A, B) -> bool + Sync,
) -> Result<(Vec<usize>, Vec<u8>)> {
    let shape = broadcast_shapes(&[ash, bsh])?;
    let total = cc_ir::tensor::shape_count(&shape)?;
    if av.len() != cc_ir::tensor::shape_count(ash)? || bv.len() != cc_ir::tensor::shape_count(bsh)?
    {
        return Err(Error::invalid("data does not match the shape"));
    }
    let (sa, sb) = (strides_in(ash, &shape), strides_in(bsh, &shape));
    let r = shape.len();
    let inner = shape.last().copied().unwrap_or(1);
    let mut out = vec![0u8; total];
    if total == 0 {
        return Ok((shape, out));
    }
    let (ia, ib) = (
        sa.last().copied().unwrap_or(0),
        sb.last().copied().unwrap_or(0),
    );
    let rows_per_task = (CHUNK / inner).max(1);
    for_each_chunk(&mut out, rows_per_task * inner, &|task, chunk| {
        for (ri, row) in chunk.chunks_mut(inner).enumerate() {
            let mut rem = task * rows_per_task + ri;
            let (mut oa, mut ob) = (0, 0);
            for d in (0..r.saturating_sub(1)).rev() {
                let i = rem % shape[d];
                rem /= shape[d];
                oa += i * sa[d];
                ob += i * sb[d];
            }
            for (j, o) in row.iter_mut().enumerate() {
                *o = u8::from(f(av[oa + j * ia], bv[ob + j * ib]));
            }
        }
    });
    Ok((shape, out))
}

/// Comparisons on i64 and f32 and logical ops on bool, broadcasting; `Ok(None)` for
/// other ops and element types.
pub fn compare(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
    let (ash, bsh) = (a.shape(), b.shape());
    let at = |e: Error| Error::invalid(format!("{op:?}: {e}"));
    let res = match (a.dtype(), b.dtype()) {
        (DType::Bool, DType::Bool) => {
            let (av, bv) = (&a.raw()?[..], &b.raw()?[..]);
            let (x, y) = ((av, ash), (bv, bsh));
            match op {
                BinaryOp::And => broadcast_bytes(x, y, |p: u8, q: u8| p != 0 && q != 0),
                BinaryOp::Or => broadcast_bytes(x, y, |p: u8, q: u8| p != 0 || q != 0),
                BinaryOp::Xor => broadcast_bytes(x, y, |p: u8, q: u8| (p != 0) != (q != 0)),
                BinaryOp::Equal => broadcast_bytes(x, y, |p: u8, q: u8| (p != 0) == (q != 0)),
                _ => return Ok(None),
            }
        }
        (DType::I64, DType::I64) => {
            let (Ok(av), Ok(bv)) = (
                bytemuck::try_cast_slice::<u8, i64>(a.raw()?),
                bytemuck::try_cast_slice::<u8, i64>(b.raw()?),
            ) else {
                return Ok(None);
            };
            let (x, y) = ((av, ash), (bv, bsh));
            match op {
                BinaryOp::Equal => broadcast_bytes(x, y, |p: i64, q: i64| p == q),
                BinaryOp::Less => broadcast_bytes(x, y, |p: i64, q: i64| p < q),
                BinaryOp::LessOrEqual => broadcast_bytes(x, y, |p: i64, q: i64| p <= q),
                BinaryOp::Greater => broadcast_bytes(x, y, |p: i64, q: i64| p > q),
                BinaryOp::GreaterOrEqual => broadcast_bytes(x, y, |p: i64, q: i64| p >= q),
                _ => return Ok(None),
            }
        }
        _ => return Ok(None),
    };
    let (shape, out) = res.map_err(at)?;
    Tensor::from_raw(DType::Bool, shape, out.into()).map(Some)
}

/// IsNaN on f32 (bool output); `Ok(None)` for other element types.
pub fn is_nan(x: &Tensor) -> Result<Option<Tensor>> {
    if x.dtype() != DType::F32 {
        return Ok(None);
    }
    let xv = f32s(x)?;
    let mut out = vec![0u8; xv.len()];
    for_each_chunk(&mut out, CHUNK, &|i, o| {
        let s = chunk_of(&xv, i, CHUNK);
        for (o, v) in o.iter_mut().zip(s) {
            *o = u8::from(v.is_nan());
        }
    });
    Tensor::from_raw(DType::Bool, x.shape().to_vec(), out.into()).map(Some)
}

/// ReduceMean/ReduceSum of an f32 tensor over exactly its last axis (the RMSNorm and
/// LayerNorm pattern); `Ok(None)` for other reductions, axes or element types.
pub fn reduce_last(
    op: ReduceOp,
    x: &Tensor,
    axes: Option<Vec<i64>>,
    keepdims: bool,
) -> Result<Option<Tensor>> {
    let xs = x.shape();
    let r = xs.len() as i64;
    let last = match axes.as_deref() {
        Some([a]) => *a == r - 1 || *a == -1,
        _ => false,
    };
    if x.dtype() != DType::F32 || r == 0 || !last || !matches!(op, ReduceOp::Mean | ReduceOp::Sum) {
        return Ok(None);
    }
    let inner = xs[xs.len() - 1];
    if inner == 0 {
        return Ok(None);
    }
    let xv = f32s(x)?;
    let rows = xv.len() / inner;
    let scale = if op == ReduceOp::Mean {
        1.0 / inner as f32
    } else {
        1.0
    };
    let mut out = vec![0f32; rows];
    let rows_per_task = (CHUNK / inner).max(1);
    for_each_chunk(&mut out, rows_per_task, &|i, o| {
        let s = chunk_of(&xv, i, rows_per_task * inner);
        for (o, row) in o.iter_mut().zip(s.chunks_exact(inner)) {
            *o = sum8(row) * scale;
        }
    });
    let mut shape = xs.to_vec();
    if keepdims {
        if let Some(l) = shape.last_mut() {
            *l = 1;
        }
    } else {
        shape.pop();
    }
    Tensor::from_f32_vec(shape, out).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::eval::eval_op;
    use crate::cpu::kernels::test_util::{close, t};
    use cc_ir::Op;

    #[test]
    fn where_broadcasts_like_the_evaluator() {
        let cases: &[(&[usize], &[usize], &[usize])] = &[
            (&[2, 1, 3, 4], &[], &[2, 5, 3, 4]),
            (&[2, 1, 3, 4], &[], &[]),
            (&[4], &[3, 1], &[1]),
            (&[3, 4], &[3, 4], &[3, 4]),
        ];
        for (i, (sc, sx, sy)) in cases.iter().enumerate() {
            let n: usize = sc.iter().product();
            let bits: Vec<bool> = (0..n).map(|k| (k * 7 + i) % 3 == 0).collect();
            let c = Tensor::from_bool(sc.to_vec(), bits).unwrap();
            let (x, y) = (t(sx, i as u64), t(sy, 9 + i as u64));
            let got = where_f32(&c, &x, &y).unwrap().unwrap();
            let want = eval_op(&Op::Where, &[Some(&c), Some(&x), Some(&y)])
                .unwrap()
                .unwrap()
                .remove(0);
            assert_eq!(got.shape(), want.shape());
            assert_eq!(got.to_f32().unwrap(), want.to_f32().unwrap());
        }
    }

    #[test]
    fn comparisons_and_logic_match_the_evaluator() {
        let a = Tensor::from_i64(vec![2, 1, 3], vec![1, 5, -2, 0, 3, 3]).unwrap();
        let b = Tensor::from_i64(vec![4, 1], vec![3, 0, -2, 9]).unwrap();
        let p = Tensor::from_bool(vec![2, 3], vec![true, false, true, true, false, false]).unwrap();
        let q = Tensor::from_bool(vec![3], vec![true, true, false]).unwrap();
        for (op, x, y) in [
            (BinaryOp::Equal, &a, &b),
            (BinaryOp::Less, &a, &b),
            (BinaryOp::LessOrEqual, &b, &a),
            (BinaryOp::Greater, &a, &b),
            (BinaryOp::GreaterOrEqual, &a, &b),
            (BinaryOp::And, &p, &q),
            (BinaryOp::Or, &q, &p),
            (BinaryOp::Xor, &p, &q),
            (BinaryOp::Equal, &p, &q),
        ] {
            let got = compare(op, x, y).unwrap().unwrap();
            let want = eval_op(&Op::Binary(op), &[Some(x), Some(y)])
                .unwrap()
                .unwrap()
                .remove(0);
            assert_eq!(got, want, "{op:?}");
        }
        assert!(compare(BinaryOp::Add, &a, &b).unwrap().is_none());
    }

    #[test]
    fn is_nan_and_last_axis_means() {
        let x = Tensor::from_f32(vec![3], vec![1.0, f32::NAN, -0.0]).unwrap();
        let m = is_nan(&x).unwrap().unwrap();
        assert_eq!(m.to_bool().unwrap(), vec![false, true, false]);
        let x = t(&[2, 3, 5], 3);
        for (op, keep) in [(ReduceOp::Mean, true), (ReduceOp::Sum, false)] {
            let got = reduce_last(op, &x, Some(vec![-1]), keep).unwrap().unwrap();
            let axes = Tensor::from_i64(vec![1], vec![2]).unwrap();
            let rop = Op::Reduce {
                op,
                axes: None,
                keepdims: Some(i64::from(keep)),
                noop_with_empty_axes: None,
            };
            let want = eval_op(&rop, &[Some(&x), Some(&axes)])
                .unwrap()
                .unwrap()
                .remove(0);
            assert_eq!(got.shape(), want.shape());
            close(&got.to_f32().unwrap(), &want.to_f32().unwrap());
        }
        assert!(reduce_last(ReduceOp::Mean, &x, Some(vec![1]), true)
            .unwrap()
            .is_none());
    }
}
