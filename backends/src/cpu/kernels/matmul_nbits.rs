//! onnxruntime's `com.microsoft.MatMulNBits` (layout in [`cc_ir::compressed::nbits`]):
//! `Y = A · W (+ bias)` for a weight `W [K, N]` stored transposed as packed 2-, 4- or
//! 8-bit codes with one scale (and zero point) per block of K.
//!
//! The output's columns are split into blocks, one task each on the executor's pool; a
//! task decodes its output features [`PANEL`] rows of K at a time into a reused buffer
//! (the f32 weight is never built whole) and accumulates the partial products with the
//! `gemm` crate. Each weight element is `(code - zero_point) * scale` in f32, as
//! DequantizeLinear computes it (read from a per-block table of the `2^bits` values), so
//! results differ from dequantize-then-matmul only by the order of the f32 sums.
//! `accuracy_level` is a lower bound on precision and is met by computing in f32;
//! `g_idx` and `weight_prepacked` are not supported (errors).

use super::matmul::{sgemm, Mat};
use super::{f32s, KernelCx};
use cc_ir::compressed::nbits::{get_code, NBitsAttrs, NBitsLayout};
use cc_ir::{DType, Error, Op, Result, Tensor};

/// Rows of K decoded per panel.
pub const PANEL: usize = 256;

/// Largest number of output columns one task covers.
const MAX_TASK_COLS: usize = 512;

/// A `MatMulNBits` weight checked against its attributes: packed codes and, per (output
/// feature, block), the scale and zero point as f32.
pub struct NBitsWeight<'a> {
    layout: NBitsLayout,
    codes: &'a [u8],
    scale: Vec<f32>,
    zero: Vec<f32>,
}

impl<'a> NBitsWeight<'a> {
    /// Checks `b`, `scales` and the optional `zero_points` (packed uint8, or unpacked
    /// f32) against `layout`.
    pub fn new(
        layout: NBitsLayout,
        b: &'a Tensor,
        scales: &Tensor,
        zero_points: Option<&Tensor>,
    ) -> Result<NBitsWeight<'a>> {
        let l = layout;
        let (n, nb) = (l.n, l.blocks());
        if b.dtype() != DType::U8 || b.len() != n * l.row_bytes() {
            return Err(Error::invalid(format!(
                "MatMulNBits: B is {} {:?}, expected uint8 {:?} for K={} N={} bits={} block_size={}",
                b.dtype(),
                b.shape(),
                l.b_shape(),
                l.k,
                n,
                l.bits,
                l.block
            )));
        }
        if scales.dtype() != DType::F32 || scales.len() != n * nb {
            return Err(Error::invalid(format!(
                "MatMulNBits: scales are {} {:?}, expected {} f32 values ([{n}, {nb}])",
                scales.dtype(),
                scales.shape(),
                n * nb
            )));
        }
        let scale = scales.to_f32()?;
        let zero = match zero_points {
            None => vec![f32::from(l.default_zero_point()); n * nb],
            Some(z) if z.dtype() == DType::U8 && z.len() == n * l.zp_row_bytes() => {
                let zr = l.zp_row_bytes();
                let raw = z.raw()?;
                let mut out = Vec::with_capacity(n * nb);
                for j in 0..n {
                    let row = raw.get(j * zr..(j + 1) * zr).unwrap_or(&[]);
                    out.extend((0..nb).map(|blk| f32::from(get_code(row, blk, l.bits))));
                }
                out
            }
            Some(z) if z.dtype() == DType::F32 && z.len() == n * nb => z.to_f32()?,
            Some(z) => {
                return Err(Error::invalid(format!(
                "MatMulNBits: zero_points are {} {:?}, expected uint8 [{n}, {}] or f32 [{n}, {nb}]",
                z.dtype(),
                z.shape(),
                l.zp_row_bytes()
            )))
            }
        };
        Ok(NBitsWeight {
            layout,
            codes: b.raw()?.as_ref(),
            scale,
            zero,
        })
    }

    /// Writes `W[k0 + i, j]` for `i in 0..out.len()` (column `j` of the logical weight,
    /// rows `k0..`) to `out`.
    fn column(&self, j: usize, k0: usize, out: &mut [f32]) {
        let l = &self.layout;
        let row = self
            .codes
            .get(j * l.row_bytes()..(j + 1) * l.row_bytes())
            .unwrap_or(&[]);
        let nb = l.blocks();
        let mut i = 0;
        while i < out.len() {
            let k = k0 + i;
            let blk = k / l.block;
            let end = ((blk + 1) * l.block - k0).min(out.len());
            let (s, z) = (
                self.scale.get(j * nb + blk).copied().unwrap_or(0.0),
                self.zero.get(j * nb + blk).copied().unwrap_or(0.0),
            );
            let seg = &mut out[i..end];
            if l.bits == 8 {
                let src = row.get(k..k + seg.len()).unwrap_or(&[]);
                for (o, &c) in seg.iter_mut().zip(src) {
                    *o = (f32::from(c) - z) * s;
                }
            } else {
                let mut table = [0f32; 16];
                for (c, t) in table.iter_mut().enumerate().take(1 << l.bits) {
                    *t = (c as f32 - z) * s;
                }
                if l.bits == 4 && k.is_multiple_of(2) {
                    // Two codes per byte, low nibble first.
                    let src = row.get(k / 2..).unwrap_or(&[]);
                    let even = seg.len() / 2 * 2;
                    let (pairs, rest) = seg.split_at_mut(even);
                    for (o, &byte) in pairs.chunks_exact_mut(2).zip(src) {
                        o[0] = table[usize::from(byte & 0xf)];
                        o[1] = table[usize::from(byte >> 4)];
                    }
                    for (t, o) in rest.iter_mut().enumerate() {
                        *o = table[usize::from(get_code(row, k + even + t, 4))];
                    }
                } else {
                    for (t, o) in seg.iter_mut().enumerate() {
                        *o = table[usize::from(get_code(row, k + t, l.bits)) & 0xf];
                    }
                }
            }
            i = end;
        }
    }
}

/// Output pointer shared by tasks writing disjoint column blocks.
#[derive(Clone, Copy)]
struct Dst(*mut f32);
// SAFETY: tasks write disjoint column blocks of the buffer behind the pointer, which
// outlives the parallel loop.
unsafe impl Send for Dst {}
// SAFETY: as above.
unsafe impl Sync for Dst {}

/// `A · W (+ bias)` for f32 `a` of shape `[..., K]`; the result is `[..., N]`.
pub fn matmul_nbits(
    a: &Tensor,
    w: &NBitsWeight<'_>,
    bias: Option<&Tensor>,
    cx: &KernelCx<'_>,
) -> Result<Tensor> {
    let (k, n) = (w.layout.k, w.layout.n);
    let sa = a.shape();
    if sa.last() != Some(&k) {
        return Err(Error::invalid(format!(
            "MatMulNBits: A {sa:?} does not end in K={k}"
        )));
    }
    let m = cc_ir::tensor::shape_count(&sa[..sa.len() - 1])?;
    let av = f32s(a)?;
    if av.len() != m * k {
        return Err(Error::invalid(
            "MatMulNBits: A's data does not match its shape",
        ));
    }
    let mut out = super::zeros(&[m, n])?;
    if let Some(b) = bias {
        let bv = b.f32_view()?;
        if b.dtype() != DType::F32 || bv.len() != n {
            return Err(Error::invalid(format!(
                "MatMulNBits: bias {:?} is not {n} f32 values",
                b.shape()
            )));
        }
        for row in out.chunks_mut(n) {
            row.copy_from_slice(&bv);
        }
    }
    if m > 0 && n > 0 && k > 0 {
        let per = if cx.threads <= 1 {
            n
        } else {
            n.div_ceil(cx.threads).div_ceil(16).max(1) * 16
        }
        .clamp(1, MAX_TASK_COLS);
        let dst = Dst(out.as_mut_ptr());
        let lhs = av.as_ptr() as usize;
        let task = move |t: usize| {
            let dst = dst;
            let c0 = t * per;
            let cols = per.min(n - c0);
            let mut buf = vec![0f32; PANEL.min(k) * cols];
            let mut k0 = 0;
            while k0 < k {
                let kp = PANEL.min(k - k0);
                // Buffer [cols, kp]: row jj holds W[k0 .. k0 + kp, c0 + jj].
                for (jj, col) in buf.chunks_mut(kp).take(cols).enumerate() {
                    w.column(c0 + jj, k0, col);
                }
                // SAFETY: dst covers m x n with row stride n and this task writes only
                // columns c0 .. c0 + cols; A covers m x k (checked above), read from
                // column k0; buf holds kp x cols elements at the strides given.
                unsafe {
                    sgemm(
                        m,
                        cols,
                        kp,
                        dst.0.add(c0),
                        n,
                        true,
                        Mat {
                            ptr: (lhs as *const f32).add(k0),
                            cs: 1,
                            rs: k as isize,
                        },
                        Mat {
                            ptr: buf.as_ptr(),
                            cs: kp as isize,
                            rs: 1,
                        },
                        1.0,
                        gemm::Parallelism::None,
                    );
                }
                k0 += kp;
            }
        };
        let tasks = n.div_ceil(per);
        if tasks <= 1 {
            task(0);
        } else {
            crate::cpu::parallel::for_each(tasks, &task);
        }
    }
    let mut shape = sa[..sa.len() - 1].to_vec();
    shape.push(n);
    Tensor::from_f32_vec(shape, out)
}

/// Runs `op` if it is `com.microsoft.MatMulNBits` on an f32 `A`; `Ok(None)` for other
/// ops and element types.
pub fn run(op: &Op, inputs: &[Option<&Tensor>], cx: &KernelCx<'_>) -> Result<Option<Tensor>> {
    let Some(attrs) = NBitsAttrs::of(op)? else {
        return Ok(None);
    };
    let a = super::input(inputs, 0)?;
    if a.dtype() != DType::F32 {
        return Ok(None);
    }
    if attrs.weight_prepacked != 0 {
        return Err(Error::unsupported(format!(
            "MatMulNBits: weight_prepacked={} (an EP-specific layout) is not supported",
            attrs.weight_prepacked
        )));
    }
    if inputs.get(4).copied().flatten().is_some() {
        return Err(Error::unsupported(
            "MatMulNBits: the deprecated g_idx input is not supported",
        ));
    }
    let w = NBitsWeight::new(
        attrs.layout,
        super::input(inputs, 1)?,
        super::input(inputs, 2)?,
        inputs.get(3).copied().flatten(),
    )?;
    matmul_nbits(a, &w, inputs.get(5).copied().flatten(), cx).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::kernels::test_util::{cx_pool, rand_vec, t};
    use cc_ir::attr::Attribute;
    use cc_ir::OtherOp;

    /// A random MatMulNBits weight: (B, scales, packed zero points if `zp`).
    fn weight(l: &NBitsLayout, zp: bool, seed: u64) -> (Tensor, Tensor, Option<Tensor>) {
        let nbytes = l.n * l.row_bytes();
        let b: Vec<u8> = rand_vec(nbytes, seed)
            .iter()
            .map(|r| ((r + 1.0) * 127.9) as u8)
            .collect();
        let s: Vec<f32> = rand_vec(l.n * l.blocks(), seed + 1)
            .iter()
            .map(|r| 0.01 + r.abs() * 0.05)
            .collect();
        let z = zp.then(|| {
            let zb: Vec<u8> = rand_vec(l.n * l.zp_row_bytes(), seed + 2)
                .iter()
                .map(|r| ((r + 1.0) * 127.9) as u8)
                .collect();
            Tensor::from_raw(DType::U8, vec![l.n, l.zp_row_bytes()], zb.into()).unwrap()
        });
        (
            Tensor::from_raw(DType::U8, l.b_shape(), b.into()).unwrap(),
            Tensor::from_f32(vec![l.n, l.blocks()], s).unwrap(),
            z,
        )
    }

    /// The reference: every element dequantized by the formula from the packed bytes,
    /// then a naive f64 matmul (+ bias).
    fn naive(
        l: &NBitsLayout,
        a: &Tensor,
        (b, s, z): (&Tensor, &Tensor, Option<&Tensor>),
        bias: Option<&Tensor>,
    ) -> Vec<f64> {
        let (k, n) = (l.k, l.n);
        let (b, s) = (b.raw().unwrap(), s.to_f32().unwrap());
        let mut w = vec![0f64; k * n];
        for j in 0..n {
            for kk in 0..k {
                let blk = kk / l.block;
                let code = get_code(&b[j * l.row_bytes()..], kk, l.bits);
                let zero = match z {
                    None => f32::from(l.default_zero_point()),
                    Some(z) if z.dtype() == DType::F32 => z.to_f32().unwrap()[j * l.blocks() + blk],
                    Some(z) => f32::from(get_code(
                        &z.raw().unwrap()[j * l.zp_row_bytes()..],
                        blk,
                        l.bits,
                    )),
                };
                w[kk * n + j] = f64::from((f32::from(code) - zero) * s[j * l.blocks() + blk]);
            }
        }
        let av = a.to_f32().unwrap();
        let m = av.len() / k;
        let bv = bias.map(|b| b.to_f32().unwrap());
        let mut out = vec![0f64; m * n];
        for r in 0..m {
            for j in 0..n {
                let mut acc = bv.as_ref().map_or(0.0, |b| f64::from(b[j]));
                for kk in 0..k {
                    acc += f64::from(av[r * k + kk]) * w[kk * n + j];
                }
                out[r * n + j] = acc;
            }
        }
        out
    }

    fn op(l: &NBitsLayout) -> Op {
        cc_ir::compressed::nbits::op(l)
    }

    /// Runs the kernel with `threads` and checks it against [`naive`] to 1e-5 of the
    /// magnitude of the output.
    fn check(l: NBitsLayout, a_shape: &[usize], zp: bool, bias: bool, threads: usize) {
        let pool = cx_pool(threads);
        let _installed = pool.enter();
        let cx = KernelCx::new(threads);
        let (b, s, z) = weight(&l, zp, 7 + l.k as u64);
        let a = t(a_shape, 3);
        let bias_t = bias.then(|| t(&[l.n], 5));
        let inputs = [
            Some(&a),
            Some(&b),
            Some(&s),
            z.as_ref(),
            None,
            bias_t.as_ref(),
        ];
        let got = run(&op(&l), &inputs, &cx).unwrap().unwrap();
        let mut want_shape = a_shape[..a_shape.len() - 1].to_vec();
        want_shape.push(l.n);
        assert_eq!(got.shape(), want_shape.as_slice());
        let want = naive(&l, &a, (&b, &s, z.as_ref()), bias_t.as_ref());
        let got = got.to_f32().unwrap();
        let mag = want.iter().fold(1e-3f64, |m, x| m.max(x.abs()));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (f64::from(*g) - w).abs() <= 1e-5 * mag,
                "{l:?} at {i}: {g} vs {w}"
            );
        }
    }

    #[test]
    fn four_bit_blocks_with_and_without_zero_points() {
        // K a multiple of the block, several panels of K, several column tasks.
        check(
            NBitsLayout::new(512, 40, 4, 32).unwrap(),
            &[3, 512],
            false,
            false,
            3,
        );
        check(
            NBitsLayout::new(512, 40, 4, 32).unwrap(),
            &[2, 2, 512],
            true,
            true,
            2,
        );
        // K padded inside the last block (K = 77, blocks of 16), odd block count so the
        // packed zero points of a row end in half a byte.
        check(
            NBitsLayout::new(77, 9, 4, 16).unwrap(),
            &[4, 77],
            true,
            false,
            1,
        );
        check(
            NBitsLayout::new(77, 9, 4, 16).unwrap(),
            &[1, 77],
            false,
            true,
            2,
        );
    }

    #[test]
    fn eight_and_two_bit_codes() {
        check(
            NBitsLayout::new(300, 21, 8, 64).unwrap(),
            &[5, 300],
            true,
            true,
            2,
        );
        check(
            NBitsLayout::new(300, 21, 8, 64).unwrap(),
            &[5, 300],
            false,
            false,
            1,
        );
        check(
            NBitsLayout::new(100, 7, 2, 16).unwrap(),
            &[3, 100],
            true,
            false,
            2,
        );
        check(
            NBitsLayout::new(100, 7, 2, 16).unwrap(),
            &[3, 100],
            false,
            true,
            1,
        );
    }

    #[test]
    fn unpacked_f32_zero_points() {
        let l = NBitsLayout::new(64, 5, 4, 32).unwrap();
        let pool = cx_pool(1);
        let _installed = pool.enter();
        let cx = KernelCx::new(1);
        let (b, s, _) = weight(&l, false, 11);
        let z =
            Tensor::from_f32(vec![5, 2], (0..10).map(|i| 7.5 + i as f32 * 0.1).collect()).unwrap();
        let a = t(&[2, 64], 12);
        let got = run(&op(&l), &[Some(&a), Some(&b), Some(&s), Some(&z)], &cx)
            .unwrap()
            .unwrap()
            .to_f32()
            .unwrap();
        let want = naive(&l, &a, (&b, &s, Some(&z)), None);
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (f64::from(*g) - w).abs() <= 1e-5 * (1.0 + w.abs()),
                "{g} vs {w}"
            );
        }
    }

    #[test]
    fn bad_inputs_are_errors_and_other_ops_are_none() {
        let l = NBitsLayout::new(64, 5, 4, 32).unwrap();
        let pool = cx_pool(1);
        let _installed = pool.enter();
        let cx = KernelCx::new(1);
        let (b, s, _) = weight(&l, false, 21);
        let a = t(&[2, 64], 22);
        // A whose last dimension is not K.
        let a_bad = t(&[2, 63], 23);
        let err = run(&op(&l), &[Some(&a_bad), Some(&b), Some(&s)], &cx)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not end in K=64"), "{err}");
        // Scales of the wrong size.
        let s_bad = Tensor::from_f32(vec![5], vec![1.0; 5]).unwrap();
        let err = run(&op(&l), &[Some(&a), Some(&b), Some(&s_bad)], &cx)
            .unwrap_err()
            .to_string();
        assert!(err.contains("scales"), "{err}");
        // g_idx is refused.
        let g_idx = Tensor::from_i64(vec![64], vec![0; 64]).unwrap();
        let err = run(
            &op(&l),
            &[Some(&a), Some(&b), Some(&s), None, Some(&g_idx)],
            &cx,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("g_idx"), "{err}");
        // A missing attribute names it.
        let no_k = Op::Other(OtherOp {
            domain: "com.microsoft".into(),
            op_type: "MatMulNBits".into(),
            attributes: vec![Attribute::int("N", 5), Attribute::int("block_size", 32)],
        });
        let err = run(&no_k, &[Some(&a), Some(&b), Some(&s)], &cx)
            .unwrap_err()
            .to_string();
        assert!(err.contains("attribute K is missing"), "{err}");
        // Other ops and other element types are not this kernel's.
        assert!(run(&Op::MatMul, &[Some(&a), Some(&b)], &cx)
            .unwrap()
            .is_none());
        let a16 = Tensor::from_i64(vec![2, 64], vec![0; 128]).unwrap();
        assert!(run(&op(&l), &[Some(&a16), Some(&b), Some(&s)], &cx)
            .unwrap()
            .is_none());
    }
}
