//! Codebook (clustered) weights: `W = table[Cast(indices) + offsets]`, the lowered form
//! of [`cc_ir::CodebookWeight`]. [`cb_matmul`] / [`cb_gemm`] compute `X · W` without
//! materializing the whole f32 weight: they run the tiled decode-GEMM driver of
//! [`super::dq_gemm`] with the table lookup as its row decoder. The same decoder
//! serves Conv weights a tile of output channels at a time ([`super::cb_conv`]), and
//! [`decode`] builds the whole weight (for other readers, such as Gather). Each element
//! is exactly the table entry the Gather would read, so results differ from
//! decode-then-matmul only by the order of the f32 sums.

use super::cb_lookup::lookup;
use super::dq_gemm::{gemm_decoded, matmul_decoded, RowDecode};
use super::KernelCx;
use cc_ir::{DType, Error, Result, Tensor};

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

/// The weight checked for lookups, seen as `rows` (its first dimension) rows of `cols`
/// elements.
pub(super) struct Prepared<'a> {
    raw: &'a [u8],
    u4: bool,
    shape: Vec<usize>,
    /// Elements per row (the product of all dimensions but the first).
    cols: usize,
    table: Vec<f32>,
    /// Offsets broadcast along one axis: `off[j]` applies where the index along axis
    /// `off_axis` is `j` (one entry when there is a single offset).
    off: Vec<usize>,
    off_axis: Option<usize>,
    /// Elements after one step along `off_axis` (the product of the later dimensions).
    off_inner: usize,
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
    pub(super) fn new(w: &CbWeight<'a>) -> Result<Option<Prepared<'a>>> {
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
        // Every lookup must land in the table: at once when the largest code of the
        // type does, else checked against the largest code present.
        let largest_offset = off.iter().copied().max().unwrap_or(0);
        let type_max = if u4 { 15 } else { 255 };
        if largest_offset + type_max >= table.len() {
            let max_code = (0..n).map(|i| code(raw, u4, i)).max().unwrap_or(0);
            if largest_offset + max_code >= table.len() {
                return Ok(None);
            }
        }
        let rows = shape.first().copied().unwrap_or(1);
        let cols = n.checked_div(rows).unwrap_or(0);
        let off_inner = off_axis.map_or(1, |a| shape.iter().skip(a + 1).product());
        Ok(Some(Prepared {
            raw,
            u4,
            shape,
            cols,
            table,
            off,
            off_axis,
            off_inner,
        }))
    }

    /// The weight's shape.
    pub(super) fn shape(&self) -> &[usize] {
        &self.shape
    }
}

impl RowDecode for Prepared<'_> {
    /// Writes elements `c0 .. c0 + out.len()` of row `r` (`cols` per row) to `out`.
    fn row(&self, r: usize, c0: usize, out: &mut [f32]) {
        let base = r * self.cols + c0;
        let first = |o: usize| self.table.get(o..).unwrap_or(&[]);
        match self.off_axis {
            // One table for the row: a plain lookup.
            None => lookup(self.raw, self.u4, base, first(self.off[0]), out),
            Some(0) => {
                let o = self.off.get(r).copied().unwrap_or(usize::MAX);
                lookup(self.raw, self.u4, base, first(o), out);
            }
            Some(_) => {
                let (inner, dim) = (self.off_inner.max(1), self.off.len());
                for (j, o) in out.iter_mut().enumerate() {
                    let i = base + j;
                    let off = self.off.get((i / inner) % dim).copied().unwrap_or(0);
                    *o = self
                        .table
                        .get(code(self.raw, self.u4, i) + off)
                        .copied()
                        .unwrap_or(0.0);
                }
            }
        }
    }
}

/// The whole weight decoded (any rank); `Ok(None)` when the form is not supported.
pub fn decode(w: &CbWeight<'_>) -> Result<Option<Tensor>> {
    let Some(p) = Prepared::new(w)? else {
        return Ok(None);
    };
    let mut out = super::zeros(&p.shape)?;
    for (r, row) in out.chunks_mut(p.cols.max(1)).enumerate() {
        p.row(r, 0, row);
    }
    Tensor::from_f32_vec(p.shape.clone(), out).map(Some)
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
    matmul_decoded(x, &p, (k, n), cx).map(Some)
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
    gemm_decoded(
        a,
        &p,
        (rows, cols),
        c,
        (alpha, beta),
        (trans_a, trans_b),
        cx,
    )
    .map(Some)
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
