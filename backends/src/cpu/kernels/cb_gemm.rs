//! Codebook (clustered) weights: `W = table[Cast(indices) + offsets]`, the lowered form
//! of [`cc_ir::CodebookWeight`]. [`cb_matmul`] / [`cb_gemm`] compute `X · W` without
//! materializing the whole f32 weight: as in [`super::dq_gemm`], the output's columns
//! are split into tasks and each task decodes its columns of the weight [`PANEL`] rows
//! at a time through the table into a reused buffer, accumulating with the `gemm`
//! crate. [`decode`] builds the whole weight (for other readers: Conv, Gather).
//! Each element is exactly the table entry the Gather would read, so results differ
//! from decode-then-matmul only by the order of the f32 sums.

use super::matmul::{fill_broadcast_c, gemm_dims, sgemm, Mat};
use super::{f32s, KernelCx};
use cc_ir::{DType, Error, Result, Tensor};

/// Rows of K decoded per panel.
pub const PANEL: usize = 256;

/// Largest number of output columns one task covers.
const MAX_TASK_COLS: usize = 512;

/// A constant codebook weight as the lowered graph holds it.
#[derive(Clone, Copy)]
pub struct CbWeight<'a> {
    /// The indices (u4 packed two per byte, or u8), in the weight's shape.
    pub indices: &'a Tensor,
    /// The 1-D f32 table the Gather reads.
    pub table: &'a Tensor,
    /// Integer offsets added to the indices (broadcast to their shape), if any.
    pub offsets: Option<&'a Tensor>,
}

/// The weight checked and decoded for lookups.
struct Prepared<'a> {
    raw: &'a [u8],
    u4: bool,
    shape: Vec<usize>,
    table: Vec<f32>,
    /// Offsets broadcast along each axis: `off[j]` applies where the index along axis
    /// `off_axis` is `j` (one entry when there is a single offset).
    off: Vec<usize>,
    off_axis: Option<usize>,
}

#[inline]
fn code(raw: &[u8], u4: bool, i: usize) -> usize {
    if u4 {
        usize::from((raw.get(i / 2).copied().unwrap_or(0) >> ((i % 2) * 4)) & 0xf)
    } else {
        usize::from(raw.get(i).copied().unwrap_or(0))
    }
}

impl<'a> Prepared<'a> {
    /// `Ok(None)` when the form is not one this kernel takes (offsets varying along more
    /// than one axis, negative or out-of-range lookups): the caller then runs the nodes.
    fn new(w: &CbWeight<'a>) -> Result<Option<Prepared<'a>>> {
        let u4 = match w.indices.dtype() {
            DType::U4 => true,
            DType::U8 => false,
            _ => return Ok(None),
        };
        if w.table.dtype() != DType::F32 || w.table.shape().len() != 1 {
            return Ok(None);
        }
        let shape = w.indices.shape().to_vec();
        let n = w.indices.len();
        let raw = w.indices.raw()?.as_ref();
        if raw.len() < if u4 { n.div_ceil(2) } else { n } {
            return Err(Error::invalid(format!(
                "codebook weight: index data is shorter than its shape {shape:?}"
            )));
        }
        let table = w.table.to_f32()?;
        let (off, off_axis) = match w.offsets {
            None => (vec![0], None),
            Some(o) => {
                let os = o.shape();
                if os.len() > shape.len() {
                    return Ok(None);
                }
                // Align trailing dimensions (broadcasting); find the one axis that varies.
                let lead = shape.len() - os.len();
                let mut axis = None;
                for (i, &d) in os.iter().enumerate() {
                    if d != 1 {
                        if axis.is_some() || shape.get(lead + i) != Some(&d) {
                            return Ok(None);
                        }
                        axis = Some(lead + i);
                    }
                }
                let vals = o.to_i64_lossless()?;
                let mut off = Vec::with_capacity(vals.len());
                for v in vals {
                    match usize::try_from(v) {
                        Ok(v) => off.push(v),
                        Err(_) => return Ok(None),
                    }
                }
                if off.is_empty() {
                    return Ok(None);
                }
                (off, axis)
            }
        };
        let max_code = if u4 { 15 } else { 255 };
        let max_code = (0..n)
            .map(|i| code(raw, u4, i))
            .max()
            .unwrap_or(0)
            .min(max_code);
        if off.iter().any(|&o| o + max_code >= table.len()) {
            return Ok(None);
        }
        Ok(Some(Prepared {
            raw,
            u4,
            shape,
            table,
            off,
            off_axis,
        }))
    }

    /// Writes elements `c0 .. c0 + out.len()` of row `r` of the 2-D weight to `out`.
    fn row(&self, r: usize, c0: usize, out: &mut [f32]) {
        let cols = self.shape.get(1).copied().unwrap_or(1);
        let base = r * cols + c0;
        let off = |c: usize| match self.off_axis {
            Some(0) => self.off.get(r).copied().unwrap_or(0),
            Some(_) => self.off.get(c).copied().unwrap_or(0),
            None => self.off.first().copied().unwrap_or(0),
        };
        for (j, o) in out.iter_mut().enumerate() {
            let at = code(self.raw, self.u4, base + j) + off(c0 + j);
            *o = self.table.get(at).copied().unwrap_or(0.0);
        }
    }
}

/// The whole weight decoded (any rank); `Ok(None)` when the form is not supported.
pub fn decode(w: &CbWeight<'_>) -> Result<Option<Tensor>> {
    let Some(p) = Prepared::new(w)? else {
        return Ok(None);
    };
    let inner: usize = match p.off_axis {
        Some(a) => p.shape.iter().skip(a + 1).product(),
        None => 1,
    };
    let dim = p.off.len().max(1);
    let n = w.indices.len();
    let out: Vec<f32> = (0..n)
        .map(|i| {
            let o = match p.off_axis {
                Some(_) => p.off.get((i / inner.max(1)) % dim).copied().unwrap_or(0),
                None => p.off.first().copied().unwrap_or(0),
            };
            p.table
                .get(code(p.raw, p.u4, i) + o)
                .copied()
                .unwrap_or(0.0)
        })
        .collect();
    Tensor::from_f32_vec(p.shape.clone(), out).map(Some)
}

/// Output pointer shared by tasks writing disjoint column blocks.
#[derive(Clone, Copy)]
struct Dst(*mut f32);
// SAFETY: tasks write disjoint column blocks of the buffer behind the pointer, which
// outlives the parallel loop.
unsafe impl Send for Dst {}
// SAFETY: as above.
unsafe impl Sync for Dst {}

/// `out (m x n) += alpha * lhs (m x k) * W` where the 2-D weight holds `B` as `k x n`
/// (`trans_b` false) or `n x k` (`trans_b` true). `lhs` must cover `m x k` at its
/// strides; checked by the callers.
#[allow(clippy::too_many_arguments)]
fn accumulate(
    out: &mut [f32],
    lhs: &[f32],
    lhs_mat: (isize, isize),
    (m, k, n): (usize, usize, usize),
    w: &Prepared<'_>,
    trans_b: bool,
    alpha: f32,
    cx: &KernelCx<'_>,
) -> Result<()> {
    if out.len() < m * n || lhs.len() < m * k {
        return Err(Error::invalid("fused codebook GEMM: operand too small"));
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
                for (j, row) in buf.chunks_mut(kp).take(cols).enumerate() {
                    w.row(c0 + j, k0, row);
                }
                (kp as isize, 1)
            } else {
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

/// The prepared 2-D weight, or `None` when the kernel does not take it.
fn prepared_2d<'a>(w: &CbWeight<'a>) -> Result<Option<(Prepared<'a>, usize, usize)>> {
    let &[rows, cols] = w.indices.shape() else {
        return Ok(None);
    };
    Ok(Prepared::new(w)?.map(|p| (p, rows, cols)))
}

/// MatMul(X, W) on f32 `x` (rank >= 1; leading dims stacked into rows) and a 2-D
/// codebook weight `[K, N]`; `Ok(None)` when not supported (run the nodes instead).
pub fn cb_matmul(x: &Tensor, w: &CbWeight<'_>, cx: &KernelCx<'_>) -> Result<Option<Tensor>> {
    if x.dtype() != DType::F32 {
        return Ok(None);
    }
    let Some((p, k, n)) = prepared_2d(w)? else {
        return Ok(None);
    };
    let sx = x.shape();
    let Some(&kx) = sx.last() else {
        return Err(Error::invalid("MatMul: operands must have rank >= 1"));
    };
    if kx != k {
        return Err(Error::invalid(format!(
            "MatMul: inner dimensions differ ({sx:?} x {:?})",
            w.indices.shape()
        )));
    }
    let xv = f32s(x)?;
    let m = cc_ir::tensor::shape_count(&sx[..sx.len() - 1])?;
    let mut out = super::zeros(&[m, n])?;
    accumulate(
        &mut out,
        &xv,
        (1, k as isize),
        (m, k, n),
        &p,
        false,
        1.0,
        cx,
    )?;
    let mut shape = sx[..sx.len() - 1].to_vec();
    shape.push(n);
    Tensor::from_f32_vec(shape, out).map(Some)
}

/// Gemm(A, W, C?) on f32 with a 2-D codebook weight `W` (transposed when `trans_b`);
/// `Ok(None)` when not supported.
#[allow(clippy::too_many_arguments)]
pub fn cb_gemm(
    a: &Tensor,
    w: &CbWeight<'_>,
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
    let Some((p, rows, cols)) = prepared_2d(w)? else {
        return Ok(None);
    };
    let &[ar, ac] = a.shape() else {
        return Err(Error::invalid(format!(
            "Gemm: A must be 2-D, got {:?}",
            a.shape()
        )));
    };
    let (m, k, n) = gemm_dims(
        a.shape(),
        [ar, ac],
        w.indices.shape(),
        [rows, cols],
        trans_a,
        trans_b,
    )?;
    let av = f32s(a)?;
    let mut out = super::zeros(&[m, n])?;
    if let Some(c) = c.filter(|_| beta != 0.0) {
        fill_broadcast_c(&mut out, c, m, n, beta)?;
    }
    let lhs = if trans_a {
        (m as isize, 1)
    } else {
        (1, k as isize)
    };
    accumulate(&mut out, &av, lhs, (m, k, n), &p, trans_b, alpha, cx)?;
    Tensor::from_f32_vec(vec![m, n], out).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::kernels::matmul;
    use crate::cpu::kernels::test_util::{cx_pool, rand_vec, t};
    use cc_ir::compressed::pack_4bit;

    /// A [rows, cols] weight: 4-bit indices, per-`axis` tables of 16 (or one table).
    fn weight(rows: usize, cols: usize, axis: Option<usize>) -> (Tensor, Tensor, Option<Tensor>) {
        let idx: Vec<i32> = (0..rows * cols)
            .map(|i| ((i * 7 + i / 5) % 16) as i32)
            .collect();
        let indices =
            Tensor::from_raw(DType::U4, vec![rows, cols], pack_4bit(&idx).into()).unwrap();
        let ch = match axis {
            Some(0) => rows,
            Some(_) => cols,
            None => 1,
        };
        let table = Tensor::from_f32(vec![ch * 16], rand_vec(ch * 16, 9)).unwrap();
        let offsets = axis.map(|a| {
            let shape = if a == 0 { vec![rows, 1] } else { vec![1, cols] };
            Tensor::from_i32(shape, (0..ch as i32).map(|c| c * 16).collect()).unwrap()
        });
        (indices, table, offsets)
    }

    /// The weight as the lowered nodes compute it: Gather(table, idx + offsets).
    fn reference(w: &CbWeight<'_>) -> Vec<f32> {
        let codes = cc_ir::compressed::codes_i32(w.indices).unwrap();
        let table = w.table.to_f32().unwrap();
        let (rows, cols) = (w.indices.shape()[0], w.indices.shape()[1]);
        let off = w.offsets.map(|o| o.to_i32().unwrap());
        (0..rows * cols)
            .map(|i| {
                let o = match (&off, w.offsets.map(|o| o.shape()[0])) {
                    (Some(v), Some(1)) => v[i % cols],
                    (Some(v), Some(_)) => v[i / cols],
                    _ => 0,
                };
                table[(codes[i] + o) as usize]
            })
            .collect()
    }

    #[test]
    fn fused_matmul_and_gemm_match_decode_then_multiply() {
        let pool = cx_pool(3);
        pool.install(|| {
            let cx = KernelCx::new(3);
            for axis in [None, Some(0), Some(1)] {
                let (k, n) = (300, 40);
                let (i, tb, o) = weight(k, n, axis);
                let w = CbWeight {
                    indices: &i,
                    table: &tb,
                    offsets: o.as_ref(),
                };
                let full = decode(&w).unwrap().unwrap();
                assert_eq!(full.to_f32().unwrap(), reference(&w), "{axis:?}");
                let x = t(&[2, 3, k], 4);
                let got = cb_matmul(&x, &w, &cx).unwrap().unwrap();
                let want = matmul::matmul(&x, &full, &cx).unwrap();
                assert_eq!(got.shape(), &[2, 3, n]);
                let (g, wv) = (got.to_f32().unwrap(), want.to_f32().unwrap());
                crate::cpu::kernels::test_util::close(&g, &wv);
                // Gemm with B = W^T stored as [n, k] (the transposed weight).
                let (i2, tb2, o2) = weight(n, k, axis);
                let w2 = CbWeight {
                    indices: &i2,
                    table: &tb2,
                    offsets: o2.as_ref(),
                };
                let full2 = decode(&w2).unwrap().unwrap().to_f32().unwrap();
                let a = t(&[5, k], 6);
                let c = t(&[n], 7);
                let got = cb_gemm(&a, &w2, Some(&c), 0.5, 2.0, false, true, &cx)
                    .unwrap()
                    .unwrap()
                    .to_f32()
                    .unwrap();
                let (av, cv) = (a.to_f32().unwrap(), c.to_f32().unwrap());
                let want: Vec<f32> = (0..5 * n)
                    .map(|e| {
                        let (r, col) = (e / n, e % n);
                        let dot: f32 = (0..k).map(|q| av[r * k + q] * full2[col * k + q]).sum();
                        0.5 * dot + 2.0 * cv[col]
                    })
                    .collect();
                crate::cpu::kernels::test_util::close(&got, &want);
            }
        });
    }

    #[test]
    fn out_of_range_lookups_are_left_to_the_nodes() {
        let (i, _, _) = weight(4, 4, None);
        let small = Tensor::from_f32(vec![8], vec![0.0; 8]).unwrap();
        let w = CbWeight {
            indices: &i,
            table: &small,
            offsets: None,
        };
        assert!(decode(&w).unwrap().is_none());
    }
}
