//! Fused dequantize-GEMM: `Y = X · dequant(Wq)` for a constant int8/uint8/int4/uint4
//! weight with f32 scales (per-tensor, per-axis or blocked), without materializing the
//! whole f32 weight.
//!
//! The output's columns are split into blocks, one task each on the executor's pool;
//! a task dequantizes its columns of the weight [`PANEL`] rows of K at a time into a
//! reused buffer and accumulates the partial products into its output block with the
//! `gemm` crate. Each weight element is dequantized exactly as DequantizeLinear does
//! (`(q - zero_point) * scale` in f32), so results differ from
//! dequantize-then-matmul only by the order of the f32 sums.

use super::matmul::{fill_broadcast_c, gemm_dims, sgemm, Mat};
use super::{f32s, KernelCx};
use cc_ir::{DType, Error, Result, Tensor};

/// Rows of K dequantized per panel.
pub const PANEL: usize = 256;

/// Largest number of output columns one task covers.
const MAX_TASK_COLS: usize = 512;

/// A constant quantized weight as DequantizeLinear sees it: data, scale, optional zero
/// point and the `axis` / `block_size` attributes.
#[derive(Clone, Copy)]
pub struct DqWeight<'a> {
    /// The quantized data (2-D; int8, uint8, int4 or uint4).
    pub q: &'a Tensor,
    /// The f32 scale (scalar, per-axis or blocked).
    pub scale: &'a Tensor,
    /// The zero point (same type as `q`, same shape as `scale`), if any.
    pub zero_point: Option<&'a Tensor>,
    /// The `axis` attribute (default 1).
    pub axis: i64,
    /// The `block_size` attribute (0: not blocked).
    pub block: i64,
}

/// A 2-D weight decoded a row segment at a time, for [`accumulate`]: the quantized
/// weights here, codebook weights in [`super::cb_gemm`].
pub(super) trait RowDecode: Sync {
    /// Writes elements `c0 .. c0 + out.len()` of row `r` of the decoded weight to `out`.
    fn row(&self, r: usize, c0: usize, out: &mut [f32]);
}

/// How the parameters map onto one row of the 2-D weight.
#[derive(Clone, Copy, Debug, PartialEq)]
enum ColMap {
    /// One parameter for the whole row.
    Scalar,
    /// One parameter per column.
    PerCol,
    /// One parameter per `b` consecutive columns.
    Block(usize),
}

/// A weight decoded for panel-wise dequantization: `rows x cols` codes, and per-row
/// offsets into the parameters plus the column mapping.
struct Prepared<'a> {
    raw: &'a [u8],
    kind: Kind,
    rows: usize,
    cols: usize,
    scale: Vec<f32>,
    zero: Vec<f32>,
    map: ColMap,
    /// Parameter offset of row `r` is `r / row_div * row_mul`.
    row_div: usize,
    row_mul: usize,
}

/// Storage of the quantized codes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    I8,
    U8,
    I4,
    U4,
}

impl Kind {
    fn of(d: DType) -> Option<Kind> {
        Some(match d {
            DType::I8 => Kind::I8,
            DType::U8 => Kind::U8,
            DType::I4 => Kind::I4,
            DType::U4 => Kind::U4,
            _ => return None,
        })
    }
}

/// The code at flat index `i` as f32 (packed 4-bit values are lowest bits first).
#[inline]
fn code(raw: &[u8], kind: Kind, i: usize) -> f32 {
    match kind {
        Kind::I8 => f32::from(raw.get(i).copied().unwrap_or(0) as i8),
        Kind::U8 => f32::from(raw.get(i).copied().unwrap_or(0)),
        Kind::I4 | Kind::U4 => cc_ir::int_codes::sub_byte_code(raw, 4, kind == Kind::I4, i) as f32,
    }
}

/// True when the weight can take the fused path: 2-D int8/uint8/int4/uint4 data, f32
/// scale, zero point of the data's type.
pub fn supported(w: &DqWeight<'_>) -> bool {
    Kind::of(w.q.dtype()).is_some()
        && w.q.shape().len() == 2
        && w.scale.dtype() == DType::F32
        && w.zero_point.is_none_or(|z| z.dtype() == w.q.dtype())
}

impl<'a> Prepared<'a> {
    /// Checks the weight's parameters as DequantizeLinear does; `Ok(None)` when the
    /// types are not supported here.
    fn new(w: &DqWeight<'a>) -> Result<Option<Prepared<'a>>> {
        let what = "DequantizeLinear (fused)";
        let Some(kind) = Kind::of(w.q.dtype()) else {
            return Ok(None);
        };
        if !supported(w) {
            return Ok(None);
        }
        let &[rows, cols] = w.q.shape() else {
            return Ok(None);
        };
        let raw = w.q.raw()?.as_ref();
        let need = match kind {
            Kind::I8 | Kind::U8 => rows * cols,
            Kind::I4 | Kind::U4 => (rows * cols).div_ceil(2),
        };
        if raw.len() < need {
            return Err(Error::invalid(format!(
                "{what}: weight data is shorter than its shape {:?}",
                w.q.shape()
            )));
        }
        let scale = w.scale.to_f32()?;
        let zero: Vec<f32> = match w.zero_point {
            None => vec![0.0; scale.len()],
            Some(z) => {
                if z.shape() != w.scale.shape() {
                    return Err(Error::invalid(format!(
                        "{what}: zero point {:?} and scale {:?} differ in shape",
                        z.shape(),
                        w.scale.shape()
                    )));
                }
                let zr = z.raw()?;
                (0..z.len()).map(|i| code(zr, kind, i)).collect()
            }
        };
        let p = w.scale.shape();
        let count = scale.len();
        let bad = || {
            Error::invalid(format!(
                "{what}: parameter of shape {p:?} does not fit weight [{rows}, {cols}] (axis {}, block size {})",
                w.axis, w.block
            ))
        };
        let (map, row_div, row_mul) =
            if w.block <= 0 && (p.is_empty() || count == 1 && p.len() <= 1) {
                (ColMap::Scalar, 1, 0)
            } else {
                let axis = super::norm_axis(w.axis, 2, what)?;
                if w.block <= 0 {
                    let dim = if axis == 0 { rows } else { cols };
                    if p != [dim] {
                        return Err(bad());
                    }
                    if axis == 0 {
                        (ColMap::Scalar, 1, 1)
                    } else {
                        (ColMap::PerCol, 1, 0)
                    }
                } else {
                    let b = w.block as usize;
                    let (dim, other) = if axis == 0 {
                        (rows, cols)
                    } else {
                        (cols, rows)
                    };
                    let blocks = dim.div_ceil(b);
                    let want = if axis == 0 {
                        [blocks, other]
                    } else {
                        [other, blocks]
                    };
                    if p != want || blocks == 0 {
                        return Err(bad());
                    }
                    if axis == 0 {
                        (ColMap::PerCol, b, cols)
                    } else {
                        (ColMap::Block(b), 1, blocks)
                    }
                }
            };
        Ok(Some(Prepared {
            raw,
            kind,
            rows,
            cols,
            scale,
            zero,
            map,
            row_div,
            row_mul,
        }))
    }
}

impl RowDecode for Prepared<'_> {
    /// Writes the dequantized elements `c0 .. c0 + out.len()` of row `r` to `out`.
    fn row(&self, r: usize, c0: usize, out: &mut [f32]) {
        let base = r * self.cols + c0;
        let off = r / self.row_div * self.row_mul;
        let (s, z) = (
            &self.scale[off.min(self.scale.len())..],
            &self.zero[off.min(self.zero.len())..],
        );
        match self.kind {
            Kind::I8 | Kind::U8 => {
                let src = self.raw.get(base..base + out.len()).unwrap_or(&[]);
                let signed = self.kind == Kind::I8;
                for (o, &b) in out.iter_mut().zip(src) {
                    *o = if signed {
                        f32::from(b as i8)
                    } else {
                        f32::from(b)
                    };
                }
            }
            _ => {
                for (j, o) in out.iter_mut().enumerate() {
                    *o = code(self.raw, self.kind, base + j);
                }
            }
        }
        match self.map {
            ColMap::Scalar => {
                let (s, z) = (
                    s.first().copied().unwrap_or(0.0),
                    z.first().copied().unwrap_or(0.0),
                );
                out.iter_mut().for_each(|o| *o = (*o - z) * s);
            }
            ColMap::PerCol => {
                let (s, z) = (s.get(c0..).unwrap_or(&[]), z.get(c0..).unwrap_or(&[]));
                for ((o, &s), &z) in out.iter_mut().zip(s).zip(z) {
                    *o = (*o - z) * s;
                }
            }
            ColMap::Block(b) => {
                for (j, o) in out.iter_mut().enumerate() {
                    let k = (c0 + j) / b;
                    let (s, z) = (
                        s.get(k).copied().unwrap_or(0.0),
                        z.get(k).copied().unwrap_or(0.0),
                    );
                    *o = (*o - z) * s;
                }
            }
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

/// `out (m x n) += alpha * lhs (m x k) * decoded(w)` where `w` holds `B` as `k x n`
/// (`trans_b` false) or `n x k` (`trans_b` true). `lhs` must cover `m x k` at its
/// strides; checked by the callers.
#[allow(clippy::too_many_arguments)]
fn accumulate(
    out: &mut [f32],
    lhs: &[f32],
    lhs_mat: (isize, isize),
    (m, k, n): (usize, usize, usize),
    w: &impl RowDecode,
    trans_b: bool,
    alpha: f32,
    cx: &KernelCx<'_>,
) -> Result<()> {
    if out.len() < m * n || lhs.len() < m * k {
        return Err(Error::invalid("fused decode-GEMM: operand too small"));
    }
    if m == 0 || n == 0 || k == 0 {
        return Ok(());
    }
    let per = if cx.threads <= 1 {
        n
    } else {
        n.div_ceil(cx.threads).div_ceil(16).max(1) * 16
    }
    .clamp(1, MAX_TASK_COLS);
    let tasks = n.div_ceil(per);
    let dst = Dst(out.as_mut_ptr());
    let lhs_ptr = lhs.as_ptr() as usize;
    let task = move |t: usize| {
        let dst = dst;
        let c0 = t * per;
        let cols = per.min(n - c0);
        let mut buf = vec![0f32; PANEL.min(k) * cols];
        let mut k0 = 0;
        while k0 < k {
            let kp = PANEL.min(k - k0);
            let rhs = if trans_b {
                // Buffer [cols, kp]: row j is weight row c0 + j, columns k0 .. k0 + kp.
                for (j, row) in buf.chunks_mut(kp).take(cols).enumerate() {
                    w.row(c0 + j, k0, row);
                }
                (kp as isize, 1)
            } else {
                // Buffer [kp, cols]: row i is weight row k0 + i, columns c0 .. c0 + cols.
                for (i, row) in buf.chunks_mut(cols).take(kp).enumerate() {
                    w.row(k0 + i, c0, row);
                }
                (1, cols as isize)
            };
            // SAFETY: dst covers m x n with row stride n and this task writes only
            // columns c0 .. c0 + cols; lhs covers m x k at its strides (checked by the
            // callers), offset by k0 columns; buf holds kp x cols elements at the
            // strides given.
            unsafe {
                let (lcs, lrs) = lhs_mat;
                sgemm(
                    m,
                    cols,
                    kp,
                    dst.0.add(c0),
                    n,
                    true,
                    Mat {
                        ptr: (lhs_ptr as *const f32).offset(k0 as isize * lcs),
                        cs: lcs,
                        rs: lrs,
                    },
                    Mat {
                        ptr: buf.as_ptr(),
                        cs: rhs.0,
                        rs: rhs.1,
                    },
                    alpha,
                    gemm::Parallelism::None,
                );
            }
            k0 += kp;
        }
    };
    if tasks <= 1 {
        task(0);
    } else {
        crate::cpu::parallel::for_each(tasks, &task);
    }
    Ok(())
}

/// MatMul(X, DequantizeLinear(W)) on f32 `x` (rank >= 1; leading dims stacked into
/// rows) and a 2-D quantized `w` of shape `[K, N]`; `Ok(None)` when the types are not
/// supported (the caller then runs the two nodes apart).
pub fn dq_matmul(x: &Tensor, w: &DqWeight<'_>, cx: &KernelCx<'_>) -> Result<Option<Tensor>> {
    if x.dtype() != DType::F32 {
        return Ok(None);
    }
    let Some(p) = Prepared::new(w)? else {
        return Ok(None);
    };
    matmul_decoded(x, &p, (p.rows, p.cols), cx).map(Some)
}

/// MatMul(X, W) on f32 `x` (rank >= 1; leading dims stacked into rows) and a 2-D
/// weight `[K, N]` decoded panel by panel from `w`.
pub(super) fn matmul_decoded(
    x: &Tensor,
    w: &impl RowDecode,
    (k, n): (usize, usize),
    cx: &KernelCx<'_>,
) -> Result<Tensor> {
    let sx = x.shape();
    let Some(&kx) = sx.last() else {
        return Err(Error::invalid("MatMul: operands must have rank >= 1"));
    };
    if kx != k {
        return Err(Error::invalid(format!(
            "MatMul: inner dimensions differ ({sx:?} x {:?})",
            [k, n]
        )));
    }
    let xv = f32s(x)?;
    let m = cc_ir::tensor::shape_count(&sx[..sx.len() - 1])?;
    if xv.len() != m * k {
        return Err(Error::invalid(
            "MatMul: operand data does not match its shape",
        ));
    }
    let mut out = super::zeros(&[m, n])?;
    accumulate(&mut out, &xv, (1, k as isize), (m, k, n), w, false, 1.0, cx)?;
    let mut shape = sx[..sx.len() - 1].to_vec();
    shape.push(n);
    Tensor::from_f32_vec(shape, out)
}

/// Gemm(A, DequantizeLinear(W), C?) on f32: `alpha * A' * B' + beta * C`, where `B` is
/// the dequantized 2-D weight (transposed when `trans_b`); `Ok(None)` when the types are
/// not supported.
#[allow(clippy::too_many_arguments)]
pub fn dq_gemm(
    a: &Tensor,
    w: &DqWeight<'_>,
    c: Option<&Tensor>,
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
    cx: &KernelCx<'_>,
) -> Result<Option<Tensor>> {
    if a.dtype() != DType::F32 || c.is_some_and(|c| c.dtype() != DType::F32) {
        return Ok(None);
    }
    let Some(p) = Prepared::new(w)? else {
        return Ok(None);
    };
    let dims = (p.rows, p.cols);
    gemm_decoded(a, &p, dims, c, (alpha, beta), (trans_a, trans_b), cx).map(Some)
}

/// Gemm(A, W, C?) on f32 with the 2-D weight `W` (`rows x cols`, transposed when
/// `trans_b`) decoded panel by panel from `w`: `alpha * A' * W' + beta * C`.
pub(super) fn gemm_decoded(
    a: &Tensor,
    w: &impl RowDecode,
    (rows, cols): (usize, usize),
    c: Option<&Tensor>,
    (alpha, beta): (f32, f32),
    (trans_a, trans_b): (bool, bool),
    cx: &KernelCx<'_>,
) -> Result<Tensor> {
    let &[ar, ac] = a.shape() else {
        return Err(Error::invalid(format!(
            "Gemm: A must be 2-D, got {:?}",
            a.shape()
        )));
    };
    let (m, k, n) = gemm_dims(
        a.shape(),
        [ar, ac],
        &[rows, cols],
        [rows, cols],
        trans_a,
        trans_b,
    )?;
    let av = f32s(a)?;
    if av.len() != m * k {
        return Err(Error::invalid(
            "Gemm: operand data does not match its shape",
        ));
    }
    let mut out = super::zeros(&[m, n])?;
    if let Some(c) = c.filter(|_| beta != 0.0) {
        fill_broadcast_c(&mut out, c, m, n, beta)?;
    }
    let lhs = if trans_a {
        (m as isize, 1)
    } else {
        (1, k as isize)
    };
    accumulate(&mut out, &av, lhs, (m, k, n), w, trans_b, alpha, cx)?;
    Tensor::from_f32_vec(vec![m, n], out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::kernels::test_util::{cx_pool, rand_vec, t};
    use crate::cpu::kernels::{matmul, quant};
    use cc_ir::Op;

    /// Random integer codes in `lo..=hi` as a tensor of type `d`.
    fn codes(d: DType, shape: &[usize], (lo, hi): (i32, i32), seed: u64) -> Tensor {
        let n = shape.iter().product();
        let v: Vec<i32> = rand_vec(n, seed)
            .iter()
            .map(|&r| (lo + ((r + 1.0) / 2.0 * (hi - lo + 1) as f32) as i32).min(hi))
            .collect();
        Tensor::from_int_codes(d, shape.to_vec(), &v).unwrap()
    }

    /// Positive random scales.
    fn scales(shape: &[usize], seed: u64) -> Tensor {
        let n = shape.iter().product();
        let v = rand_vec(n, seed)
            .iter()
            .map(|r| 0.01 + r.abs() * 0.05)
            .collect();
        Tensor::from_f32(shape.to_vec(), v).unwrap()
    }

    /// The weight dequantized by the DequantizeLinear kernel.
    fn dequantized(w: &DqWeight<'_>) -> Tensor {
        let op = Op::DequantizeLinear {
            axis: Some(w.axis),
            block_size: Some(w.block),
        };
        let mut out = quant::run(&op, &[Some(w.q), Some(w.scale), w.zero_point])
            .unwrap()
            .unwrap();
        out.remove(0)
    }

    /// Asserts `got` matches `want` to 1e-5 relative to the magnitude of the terms
    /// summed (`mag`, the product of absolute values).
    fn close(got: &Tensor, want: &Tensor, mag: &Tensor) {
        assert_eq!(got.shape(), want.shape());
        let (g, w, m) = (
            got.to_f32().unwrap(),
            want.to_f32().unwrap(),
            mag.to_f32().unwrap(),
        );
        for (i, ((x, y), s)) in g.iter().zip(&w).zip(&m).enumerate() {
            assert!(
                (x - y).abs() <= 1e-5 * (s + 1e-3),
                "at {i}: {x} vs {y} (scale {s})"
            );
        }
    }

    fn abs(t: &Tensor) -> Tensor {
        let v = t.to_f32().unwrap().iter().map(|x| x.abs()).collect();
        Tensor::from_f32(t.shape().to_vec(), v).unwrap()
    }

    /// The weight `q` with `scale`, `zero_point`, `axis` and `block`.
    fn weight<'a>(
        q: &'a Tensor,
        scale: &'a Tensor,
        zero_point: Option<&'a Tensor>,
        axis: i64,
        block: i64,
    ) -> DqWeight<'a> {
        DqWeight {
            q,
            scale,
            zero_point,
            axis,
            block,
        }
    }

    /// Checks dq_gemm against dequantize-then-Gemm with `(alpha, beta, trans_a, trans_b)`
    /// (the bias `c` given when present).
    fn check_gemm(
        a: &Tensor,
        w: &DqWeight<'_>,
        c: Option<&Tensor>,
        (alpha, beta, trans_a, trans_b): (f32, f32, bool, bool),
        cx: &KernelCx<'_>,
    ) {
        let b = dequantized(w);
        let got = dq_gemm(a, w, c, alpha, beta, trans_a, trans_b, cx)
            .unwrap()
            .unwrap();
        let mut inputs = vec![Some(a), Some(&b)];
        inputs.extend(c.map(Some));
        let want = matmul::gemm_op(&inputs, alpha, beta, trans_a, trans_b, cx).unwrap();
        let abs_inputs: Vec<Tensor> = inputs.iter().flatten().map(|x| abs(x)).collect();
        let abs_refs: Vec<Option<&Tensor>> = abs_inputs.iter().map(Some).collect();
        let mag = matmul::gemm_op(&abs_refs, alpha, beta, trans_a, trans_b, cx).unwrap();
        close(&got, &want, &mag);
    }

    /// Checks dq_matmul against dequantize-then-matmul.
    fn check_matmul(x: &Tensor, w: &DqWeight<'_>, threads: usize) {
        let pool = cx_pool(threads);
        let _installed = pool.enter();
        let cx = KernelCx::new(threads);
        let got = dq_matmul(x, w, &cx).unwrap().unwrap();
        let b = dequantized(w);
        let want = matmul::matmul(x, &b, &cx).unwrap();
        let mag = matmul::matmul(&abs(x), &abs(&b), &cx).unwrap();
        close(&got, &want, &mag);
    }

    #[test]
    fn per_tensor_int8_over_several_panels() {
        let q = codes(DType::I8, &[300, 40], (-128, 127), 1);
        let s = Tensor::scalar_f32(0.02);
        let w = weight(&q, &s, None, 1, 0);
        check_matmul(&t(&[2, 3, 300], 2), &w, 3);
        check_matmul(&t(&[300], 3), &w, 1);
    }

    #[test]
    fn per_axis_uint8_with_zero_points() {
        let q = codes(DType::U8, &[70, 100], (0, 255), 4);
        let s = scales(&[100], 5);
        let z = codes(DType::U8, &[100], (100, 150), 6);
        let w = weight(&q, &s, Some(&z), 1, 0);
        check_matmul(&t(&[5, 70], 7), &w, 2);
        // Per row (axis 0) as well.
        let s0 = scales(&[70], 8);
        let z0 = codes(DType::U8, &[70], (0, 255), 9);
        let w0 = weight(&q, &s0, Some(&z0), 0, 0);
        check_matmul(&t(&[5, 70], 10), &w0, 2);
    }

    #[test]
    fn blocked_int4_and_uint4_with_odd_k() {
        // int4 blocked along K (axis 0): 77 rows in blocks of 32 -> 3 blocks; 21
        // columns, so the packed data has an odd element count.
        let q = codes(DType::I4, &[77, 21], (-8, 7), 11);
        let s = scales(&[3, 21], 12);
        let z = codes(DType::I4, &[3, 21], (-2, 2), 13);
        let w = weight(&q, &s, Some(&z), 0, 32);
        check_matmul(&t(&[4, 77], 14), &w, 2);
        // uint4 blocked along N (axis 1): blocks of 8 over 21 columns -> 3 blocks; K
        // larger than a panel.
        let q = codes(DType::U4, &[257, 21], (0, 15), 15);
        let s = scales(&[257, 3], 16);
        let z = codes(DType::U4, &[257, 3], (7, 9), 17);
        let w = weight(&q, &s, Some(&z), 1, 8);
        check_matmul(&t(&[3, 257], 18), &w, 2);
    }

    #[test]
    fn gemm_with_trans_b_and_bias() {
        let threads = 2;
        let pool = cx_pool(threads);
        let _installed = pool.enter();
        let cx = KernelCx::new(threads);
        // B = dequant(W)ᵀ with W [N=50, K=301], blocked uint4 along K (axis 1).
        let q = codes(DType::U4, &[50, 301], (0, 15), 21);
        let s = scales(&[50, 10], 22);
        let z = codes(DType::U4, &[50, 10], (6, 9), 23);
        let w = weight(&q, &s, Some(&z), 1, 32);
        let c = t(&[50], 24);
        for trans_a in [false, true] {
            let a = if trans_a {
                t(&[301, 6], 25)
            } else {
                t(&[6, 301], 25)
            };
            check_gemm(&a, &w, Some(&c), (0.5, 2.0, trans_a, true), &cx);
        }
        // Per-axis int8 without transB or bias.
        let q = codes(DType::I8, &[301, 50], (-128, 127), 26);
        let s = scales(&[50], 27);
        let w = weight(&q, &s, None, -1, 0);
        check_gemm(&t(&[6, 301], 28), &w, None, (1.0, 1.0, false, false), &cx);
    }

    #[test]
    fn bad_parameters_are_errors_and_other_types_are_none() {
        let pool = cx_pool(1);
        let _installed = pool.enter();
        let cx = KernelCx::new(1);
        let q = codes(DType::I8, &[4, 6], (-128, 127), 31);
        let s = scales(&[5], 32);
        let w = weight(&q, &s, None, 1, 0);
        let err = dq_matmul(&t(&[2, 4], 33), &w, &cx).unwrap_err().to_string();
        assert!(err.contains("does not fit weight [4, 6]"), "{err}");
        let s = scales(&[6], 34);
        let w = DqWeight { scale: &s, ..w };
        let err = dq_matmul(&t(&[2, 5], 35), &w, &cx).unwrap_err().to_string();
        assert!(err.contains("inner dimensions differ"), "{err}");
        let q16 = Tensor::from_i64(vec![4, 6], vec![0; 24]).unwrap();
        let w = DqWeight { q: &q16, ..w };
        assert!(!supported(&w));
        assert!(dq_matmul(&t(&[2, 4], 36), &w, &cx).unwrap().is_none());
    }
}
