//! Elementwise f32 kernels: unary math, Clip, LeakyRelu, Gelu and broadcasting binary
//! arithmetic, parallel over large tensors.

use super::f32s;
use crate::cpu::eval::broadcast_shapes;
use crate::cpu::parallel::for_each_chunk;
use cc_ir::op::{BinaryOp, UnaryOp};
use cc_ir::{DType, Error, Result, Tensor};
use std::mem::MaybeUninit;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// `o[i] = f(x[i], y[i])` over the shortest of the three (AVX2 code when present).
#[inline]
fn zip2(o: &mut [MaybeUninit<f32>], x: &[f32], y: &[f32], f: &impl Fn(f32, f32) -> f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports the feature the function is compiled for.
            unsafe { zip2_avx2(o, x, y, f) };
            return;
        }
    }
    zip2_plain(o, x, y, f);
}

#[inline(always)]
fn zip2_plain(o: &mut [MaybeUninit<f32>], x: &[f32], y: &[f32], f: &impl Fn(f32, f32) -> f32) {
    for ((o, &a), &b) in o.iter_mut().zip(x).zip(y) {
        o.write(f(a, b));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn zip2_avx2(
    o: &mut [MaybeUninit<f32>],
    x: &[f32],
    y: &[f32],
    f: &impl Fn(f32, f32) -> f32,
) {
    zip2_plain(o, x, y, f);
}

/// `o[i] = f(x[i])` over the shorter of the two (AVX2 code when present).
#[inline]
fn zip1(o: &mut [MaybeUninit<f32>], x: &[f32], f: &impl Fn(f32) -> f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports the feature the function is compiled for.
            unsafe { zip1_avx2(o, x, f) };
            return;
        }
    }
    zip1_plain(o, x, f);
}

#[inline(always)]
fn zip1_plain(o: &mut [MaybeUninit<f32>], x: &[f32], f: &impl Fn(f32) -> f32) {
    for (o, &a) in o.iter_mut().zip(x) {
        o.write(f(a));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn zip1_avx2(o: &mut [MaybeUninit<f32>], x: &[f32], f: &impl Fn(f32) -> f32) {
    zip1_plain(o, x, f);
}

/// `f` applied to every element, in parallel chunks.
fn map(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Result<Vec<f32>> {
    let fill = |out: &mut [MaybeUninit<f32>]| {
        for_each_chunk(out, CHUNK, &|i, o| zip1(o, &x[i * CHUNK..], &f));
        Ok(())
    };
    // SAFETY: the chunks of `out` and `x` pair up one to one over the same length, so
    // every element is written.
    unsafe { super::write_new(x.len(), fill) }
}

fn map_tensor(x: &Tensor, f: impl Fn(f32) -> f32 + Sync) -> Result<Option<Tensor>> {
    if x.dtype() != DType::F32 {
        return Ok(None);
    }
    let out = map(&f32s(x)?, f)?;
    Tensor::from_f32_vec(x.shape().to_vec(), out).map(Some)
}

/// The error function (Abramowitz–Stegun 7.1.26 refined in f64; |error| < 2e-7).
pub fn erf(x: f32) -> f32 {
    let x = x as f64;
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    (if x < 0.0 { -y } else { y }) as f32
}

/// A unary op on f32; `Ok(None)` for other element types or ops without a fast path.
pub fn unary(op: UnaryOp, x: &Tensor) -> Result<Option<Tensor>> {
    match op {
        UnaryOp::Relu => return map_tensor(x, |v| if v < 0.0 { 0.0 } else { v }),
        UnaryOp::Sigmoid if x.dtype() == DType::F32 => {
            let xv = f32s(x)?;
            let fill = |out: &mut [MaybeUninit<f32>]| {
                for_each_chunk(out, CHUNK, &|i, o| {
                    super::simd::sigmoid(o, &xv[i * CHUNK..][..o.len()])
                });
                Ok(())
            };
            // SAFETY: the chunks of the output and of `xv` pair up one to one over the
            // same length, and `sigmoid` writes every element of each.
            let out = unsafe { super::write_new(xv.len(), fill)? };
            return Tensor::from_f32_vec(x.shape().to_vec(), out).map(Some);
        }
        UnaryOp::Neg => return map_tensor(x, |v| -v),
        UnaryOp::Exp => return map_tensor(x, super::simd::fast_exp),
        _ => {}
    }
    let f: fn(f32) -> f32 = match op {
        UnaryOp::Tanh => f32::tanh,
        UnaryOp::Exp => f32::exp,
        UnaryOp::Log => f32::ln,
        UnaryOp::Sqrt => f32::sqrt,
        UnaryOp::Reciprocal => |v| 1.0 / v,
        UnaryOp::Neg => |v| -v,
        UnaryOp::Abs => f32::abs,
        UnaryOp::Erf => erf,
        UnaryOp::Floor => f32::floor,
        UnaryOp::Ceil => f32::ceil,
        UnaryOp::Softplus => |v| if v > 20.0 { v } else { v.exp().ln_1p() },
        _ => return Ok(None),
    };
    map_tensor(x, f)
}

/// LeakyRelu on f32.
pub fn leaky_relu(x: &Tensor, alpha: f32) -> Result<Option<Tensor>> {
    map_tensor(x, |v| if v < 0.0 { alpha * v } else { v })
}

/// Gelu on f32 (exact, or the tanh approximation).
pub fn gelu(x: &Tensor, tanh: bool) -> Result<Option<Tensor>> {
    if tanh {
        let c = (2.0f32 / std::f32::consts::PI).sqrt();
        map_tensor(x, move |v| {
            0.5 * v * (1.0 + (c * (v + 0.044715 * v * v * v)).tanh())
        })
    } else {
        map_tensor(x, |v| {
            0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2))
        })
    }
}

/// Clip on f32 with optional scalar bounds (NaN passes through).
pub fn clip(inputs: &[Option<&Tensor>]) -> Result<Option<Tensor>> {
    let x = super::input(inputs, 0)?;
    let bound = |i: usize, default: f32| -> Result<Option<f32>> {
        match inputs.get(i).copied().flatten() {
            None => Ok(Some(default)),
            Some(t) if t.dtype() != DType::F32 => Ok(None),
            Some(t) => match *f32s(t)? {
                [v] => Ok(Some(v)),
                _ => Err(Error::invalid(format!(
                    "Clip: bound {i} must be a scalar, got {:?}",
                    t.shape()
                ))),
            },
        }
    };
    let (Some(lo), Some(hi)) = (bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?) else {
        return Ok(None);
    };
    // ONNX defines Clip as min(max(x, lo), hi): when lo > hi every value becomes hi.
    // NaN compares false both times and stays NaN.
    map_tensor(x, move |v| {
        let v = if v < lo { lo } else { v };
        if v > hi {
            hi
        } else {
            v
        }
    })
}

/// A broadcasting binary op on two f32 tensors; `Ok(None)` for other types or ops.
pub fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
    if a.dtype() != DType::F32 || b.dtype() != DType::F32 {
        return Ok(None);
    }
    if !matches!(
        op,
        BinaryOp::Add
            | BinaryOp::Sub
            | BinaryOp::Mul
            | BinaryOp::Div
            | BinaryOp::Pow
            | BinaryOp::PRelu
    ) {
        return Ok(None);
    }
    let shape = broadcast_shapes(&[a.shape(), b.shape()])?;
    if op == BinaryOp::PRelu && shape != a.shape() {
        return Err(Error::invalid(format!(
            "PRelu: slope {:?} does not broadcast to X {:?}",
            b.shape(),
            a.shape()
        )));
    }
    let (av, bv) = (f32s(a)?, f32s(b)?);
    // One instantiation per op, so the inner loops inline the arithmetic and vectorize.
    let (ash, bsh) = (a.shape(), b.shape());
    let out = match op {
        BinaryOp::Add => broadcast_apply(&av, ash, &bv, bsh, &shape, |x, y| x + y),
        BinaryOp::Sub => broadcast_apply(&av, ash, &bv, bsh, &shape, |x, y| x - y),
        BinaryOp::Mul => broadcast_apply(&av, ash, &bv, bsh, &shape, |x, y| x * y),
        BinaryOp::Div => broadcast_apply(&av, ash, &bv, bsh, &shape, |x, y| x / y),
        BinaryOp::Pow => match *bv {
            [2.0] => broadcast_apply(&av, ash, &bv, bsh, &shape, |x, _| x * x),
            _ => broadcast_apply(&av, ash, &bv, bsh, &shape, |x: f32, y| {
                if y == 2.0 {
                    x * x
                } else {
                    x.powf(y)
                }
            }),
        },
        _ => broadcast_apply(
            &av,
            ash,
            &bv,
            bsh,
            &shape,
            |x, s| {
                if x < 0.0 {
                    s * x
                } else {
                    x
                }
            },
        ),
    }?;
    Tensor::from_f32_vec(shape, out).map(Some)
}

/// Per-dimension element strides of `src` within the broadcast shape `out` (0 where
/// broadcast).
pub(super) fn strides_in(src: &[usize], out: &[usize]) -> Vec<usize> {
    let pad = out.len() - src.len();
    let mut st = vec![0usize; out.len()];
    let mut acc = 1;
    for d in (0..src.len()).rev() {
        st[d + pad] = if src[d] == 1 { 0 } else { acc };
        acc *= src[d];
    }
    st
}

/// `f(a, b)` over the broadcast shape, dims coalesced so the inner loop is long.
fn broadcast_apply(
    av: &[f32],
    ash: &[usize],
    bv: &[f32],
    bsh: &[usize],
    out: &[usize],
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Result<Vec<f32>> {
    let total = cc_ir::tensor::shape_count(out)?;
    if av.len() != cc_ir::tensor::shape_count(ash)? || bv.len() != cc_ir::tensor::shape_count(bsh)?
    {
        return Err(Error::invalid("binary op: data does not match the shape"));
    }
    if ash == bsh {
        let fill = |o: &mut [MaybeUninit<f32>]| {
            for_each_chunk(o, CHUNK, &|i, o| {
                zip2(o, &av[i * CHUNK..], &bv[i * CHUNK..], &f)
            });
            Ok(())
        };
        // SAFETY: equal shapes, and the lengths were checked against them above, so the
        // three chunkings pair up over the whole output and every element is written.
        return unsafe { super::write_new(total, fill) };
    }
    // Coalesce dims: merge neighbours whose broadcast pattern (per input) agrees.
    let (sa, sb) = (strides_in(ash, out), strides_in(bsh, out));
    let mut dims: Vec<(usize, bool, bool)> = Vec::new(); // (extent, a varies, b varies)
    for d in 0..out.len() {
        if out[d] == 1 {
            continue;
        }
        let cur = (out[d], sa[d] != 0, sb[d] != 0);
        match dims.last_mut() {
            Some(last) if last.1 == cur.1 && last.2 == cur.2 => last.0 *= cur.0,
            _ => dims.push(cur),
        }
    }
    let (inner, ia, ib) = dims.pop().unwrap_or((1, true, true));
    // Strides of the remaining (outer) dims.
    let mut outer_a = vec![0usize; dims.len()];
    let mut outer_b = vec![0usize; dims.len()];
    let (mut acc_a, mut acc_b) = (if ia { inner } else { 1 }, if ib { inner } else { 1 });
    for (i, &(e, va, vb)) in dims.iter().enumerate().rev() {
        if va {
            outer_a[i] = acc_a;
            acc_a *= e;
        }
        if vb {
            outer_b[i] = acc_b;
            acc_b *= e;
        }
    }
    if inner == 0 {
        return Ok(vec![0f32; total]);
    }
    let rows_per_task = (CHUNK / inner).max(1);
    let fill = |o: &mut [MaybeUninit<f32>]| {
        for_each_chunk(o, rows_per_task * inner, &|task, chunk| {
            for (r, row) in chunk.chunks_mut(inner).enumerate() {
                let mut rem = task * rows_per_task + r;
                let (mut oa, mut ob) = (0, 0);
                for i in (0..dims.len()).rev() {
                    let e = dims[i].0;
                    let idx = rem % e;
                    rem /= e;
                    oa += idx * outer_a[i];
                    ob += idx * outer_b[i];
                }
                match (ia, ib) {
                    (true, true) => {
                        zip2(row, &av[oa..oa + inner], &bv[ob..ob + inner], &f);
                    }
                    (true, false) => {
                        let y = bv[ob];
                        zip1(row, &av[oa..oa + inner], &|x| f(x, y));
                    }
                    (false, true) => {
                        let x = av[oa];
                        zip1(row, &bv[ob..ob + inner], &|y| f(x, y));
                    }
                    (false, false) => {
                        let v = f(av[oa], bv[ob]);
                        row.iter_mut().for_each(|o| {
                            o.write(v);
                        });
                    }
                }
            }
        });
        Ok(())
    };
    // SAFETY: `total` is `inner` times the product of the outer dims, so the rows cover
    // the output exactly, and every match arm writes all `inner` elements of its row.
    unsafe { super::write_new(total, fill) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::eval::eval_op;
    use crate::cpu::kernels::test_util::{close, t};
    use cc_ir::Op;

    #[test]
    fn binary_broadcasting_matches_the_evaluator() {
        let shapes: &[(&[usize], &[usize])] = &[
            (&[2, 3, 4], &[2, 3, 4]),
            (&[2, 3, 4], &[4]),
            (&[2, 3, 4], &[3, 1]),
            (&[1, 3, 1, 5], &[2, 1, 4, 1]),
            (&[5], &[]),
            (&[], &[3, 2]),
            (&[2, 1, 3], &[2, 5, 1]),
            (&[1, 7, 5, 5], &[1, 7, 1, 1]),
        ];
        for (i, (sa, sb)) in shapes.iter().enumerate() {
            let (a, b) = (t(sa, i as u64), t(sb, 50 + i as u64));
            for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
                let got = binary(op, &a, &b).unwrap().unwrap();
                let want = eval_op(&Op::Binary(op), &[Some(&a), Some(&b)])
                    .unwrap()
                    .unwrap()
                    .remove(0);
                assert_eq!(got.shape(), want.shape());
                close(&got.to_f32().unwrap(), &want.to_f32().unwrap());
            }
        }
        assert!(binary(BinaryOp::Add, &t(&[2, 3], 1), &t(&[4], 2)).is_err());
    }

    #[test]
    fn unary_and_clip() {
        let x = t(&[3, 5], 1);
        let xv = x.to_f32().unwrap();
        let relu = unary(UnaryOp::Relu, &x).unwrap().unwrap().to_f32().unwrap();
        assert!(relu.iter().zip(&xv).all(|(r, v)| *r == v.max(0.0)));
        for (v, want) in [
            (0.0f32, 0.0f32),
            (0.5, 0.520_499_9),
            (-1.5, -0.966_105_1),
            (3.0, 0.999_977_9),
        ] {
            assert!((erf(v) - want).abs() < 1e-6, "erf({v})");
        }
        let lo = Tensor::scalar_f32(-0.2);
        let hi = Tensor::scalar_f32(0.3);
        let c = clip(&[Some(&x), Some(&lo), Some(&hi)]).unwrap().unwrap();
        let want: Vec<f32> = xv.iter().map(|v| v.clamp(-0.2, 0.3)).collect();
        close(&c.to_f32().unwrap(), &want);
        let i = Tensor::from_i64(vec![2], vec![1, -1]).unwrap();
        assert!(unary(UnaryOp::Relu, &i).unwrap().is_none());
    }

    #[test]
    fn clip_with_min_above_max_gives_max_and_keeps_nan() {
        let x = Tensor::from_f32(vec![4], vec![-3.0, 0.5, 9.0, f32::NAN]).unwrap();
        let (lo, hi) = (Tensor::scalar_f32(2.0), Tensor::scalar_f32(1.0));
        let c = clip(&[Some(&x), Some(&lo), Some(&hi)]).unwrap().unwrap();
        let v = c.to_f32().unwrap();
        assert_eq!(&v[..3], &[1.0, 1.0, 1.0]);
        assert!(v[3].is_nan());
    }
}
