//! An AVX-512 SGEMM for row-major operands with the bias and activation applied in
//! registers before the single store of each output tile.
//!
//! `C (m x n) = A (m x k) * B (k x n)`, all three row-major with their own row strides.
//! The microkernel holds an 8 x 48 tile of `C` in 24 zmm accumulators; for every `k` it
//! broadcasts 8 elements of `A` (one per row, read in place: no packing of `A`, so
//! constant weights are used as they are) and loads 48 contiguous elements of `B`
//! (column edges with masked loads, which never touch memory outside the mask). `K` is
//! split into blocks of at most [`KC`] so that the 8 rows of `A` a tile reads stay in
//! L1; partial sums go through `C` between blocks.

use super::Activation;

/// Rows of one microkernel tile.
const MR: usize = 8;
/// Columns of one full microkernel tile (three zmm vectors).
const NR: usize = 48;
/// Columns of one block of `B` (whole tiles), kept in L2 while all rows of `A` pass.
const NC: usize = 5 * NR;
/// Largest `k` block.
const KC: usize = 384;
/// How far ahead (in elements of `k`) the microkernel prefetches rows of `A`.
const PF: usize = 64;

/// What the last `k` block does to each tile before storing it: add the row's bias,
/// then clamp to `[lo, hi]` (NaN passes through).
#[derive(Clone, Copy)]
pub(crate) struct Epilogue<'a> {
    /// Per-row bias (`m` values), if any.
    pub bias: Option<&'a [f32]>,
    /// Lower clamp bound (`-inf` for none).
    pub lo: f32,
    /// Upper clamp bound (`+inf` for none).
    pub hi: f32,
}

impl<'a> Epilogue<'a> {
    /// The epilogue for an optional bias and activation.
    pub fn new(bias: Option<&'a [f32]>, act: Option<Activation>) -> Self {
        let (lo, hi) = match act {
            None => (f32::NEG_INFINITY, f32::INFINITY),
            Some(Activation::Relu) => (0.0, f32::INFINITY),
            Some(Activation::Clip(lo, hi)) => (lo, hi),
        };
        Epilogue { bias, lo, hi }
    }
}

/// Whether this CPU runs the AVX-512 kernel (checked once).
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A row-major matrix operand: element `(i, j)` at `ptr + i * ld + j`.
#[derive(Clone, Copy)]
pub(crate) struct RowMajor {
    /// Element (0, 0).
    pub ptr: *const f32,
    /// Row stride in elements.
    pub ld: usize,
}

/// The rows of a `B` operand: row `p` starts at `base + p * ld`, or, with an offset
/// table, at `base + offs[p]` (an implicit im2col: each row a shifted view of one
/// zero-padded input plane).
#[derive(Clone, Copy)]
pub(crate) struct BRows<'a> {
    /// Element (0, 0).
    pub base: *const f32,
    /// Row stride when there is no offset table.
    pub ld: usize,
    /// Per-row element offsets from `base` (at least `k` of them), if any.
    pub offs: Option<&'a [usize]>,
}

impl From<RowMajor> for BRows<'_> {
    fn from(b: RowMajor) -> Self {
        BRows {
            base: b.ptr,
            ld: b.ld,
            offs: None,
        }
    }
}

/// `C = epilogue(A * B)`, overwriting (never reading before writing) the `m x n` block
/// of `C` at `c` with row stride `ldc`. Returns `false` (having done nothing) when the
/// CPU lacks AVX-512; the caller then uses another GEMM.
///
/// # Safety
/// `a` must be readable for `m x k`, `b` for `k x n` elements at their strides, `c`
/// writable for `m x n` at stride `ldc`, no other thread accessing that block, and the
/// bias (if any) at least `m` long.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm_epilogue<'b>(
    m: usize,
    n: usize,
    k: usize,
    a: RowMajor,
    b: impl Into<BRows<'b>>,
    c: *mut f32,
    ldc: usize,
    epi: Epilogue<'_>,
) -> bool {
    let b: BRows<'b> = b.into();
    if b.offs.is_some_and(|o| o.len() < k) {
        return false;
    }
    if !available() {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if m == 0 || n == 0 {
            return true;
        }
        // SAFETY: AVX-512F is present (checked above); the pointer contract is the
        // caller's.
        unsafe {
            match b.offs {
                None => avx512::gemm::<false>(m, n, k, a, b, c, ldc, epi),
                Some(_) => avx512::gemm::<true>(m, n, k, a, b, c, ldc, epi),
            }
        };
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, n, k, a, b, c, ldc, epi);
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{BRows, Epilogue, RowMajor, KC, MR, NC, NR, PF};

    /// Where row `p` of `B` starts, shifted by `j0` columns.
    ///
    /// # Safety
    /// `p` must be a row of `b` (below the `k` the offsets were checked against).
    #[inline(always)]
    unsafe fn b_row<const OFFS: bool>(b: &BRows<'_>, p: usize) -> *const f32 {
        // SAFETY: per the contract.
        unsafe {
            match b.offs {
                Some(o) if OFFS => b.base.add(*o.get_unchecked(p)),
                _ => b.base.add(p * b.ld),
            }
        }
    }
    use std::arch::x86_64::*;

    /// See [`super::sgemm_epilogue`].
    ///
    /// # Safety
    /// As there, and AVX-512F must be available.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn gemm<const OFFS: bool>(
        m: usize,
        n: usize,
        k: usize,
        a: RowMajor,
        b: BRows<'_>,
        c: *mut f32,
        ldc: usize,
        epi: Epilogue<'_>,
    ) {
        // Column blocks of whole tiles, so that a block of B stays in L2.
        let mut j0 = 0;
        while j0 < n {
            let nc = NC.min(n - j0);
            // SAFETY: columns j0..j0 + nc of B and C, inside the caller's blocks.
            let (bj, cj) = unsafe {
                (
                    BRows {
                        base: b.base.add(j0),
                        ..b
                    },
                    c.add(j0),
                )
            };
            // SAFETY: as for this function, on a column block.
            unsafe { column_block::<OFFS>(m, nc, k, a, bj, cj, ldc, epi) };
            j0 += nc;
        }
    }

    /// [`gemm`] on at most [`NC`] columns.
    ///
    /// # Safety
    /// As for [`gemm`].
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn column_block<const OFFS: bool>(
        m: usize,
        n: usize,
        k: usize,
        a: RowMajor,
        b: BRows<'_>,
        c: *mut f32,
        ldc: usize,
        epi: Epilogue<'_>,
    ) {
        let blocks = k.div_ceil(KC).max(1);
        let kc = k.div_ceil(blocks).max(1);
        let mut p0 = 0;
        loop {
            let len = kc.min(k - p0);
            let first = p0 == 0;
            let last = p0 + len >= k;
            for i0 in (0..m).step_by(MR) {
                let rows = MR.min(m - i0);
                let bias = epi.bias.map(|bv| bv[i0..].as_ptr());
                let tile_epi = last.then_some((bias, epi.lo, epi.hi));
                // SAFETY: rows i0..i0 + rows of A (columns p0..p0 + len) and of C are
                // inside the caller's blocks.
                let ap = unsafe { a.ptr.add(i0 * a.ld + p0) };
                let cp = unsafe { c.add(i0 * ldc) };
                let mut j0 = 0;
                while j0 < n {
                    let cols = NR.min(n - j0);
                    let ta = RowMajor { ptr: ap, ld: a.ld };
                    // SAFETY: columns j0..j0 + cols of B and C are inside the blocks.
                    let tb = BRows {
                        base: unsafe { b.base.add(j0) },
                        ..b
                    };
                    let tc = unsafe { cp.add(j0) };
                    // SAFETY: the tile lies inside the operands (see above).
                    unsafe {
                        match cols.div_ceil(16) {
                            3 => tile::<3, OFFS>(
                                (p0, len),
                                ta,
                                rows,
                                tb,
                                cols,
                                tc,
                                ldc,
                                first,
                                tile_epi,
                            ),
                            2 => tile::<2, OFFS>(
                                (p0, len),
                                ta,
                                rows,
                                tb,
                                cols,
                                tc,
                                ldc,
                                first,
                                tile_epi,
                            ),
                            _ => tile::<1, OFFS>(
                                (p0, len),
                                ta,
                                rows,
                                tb,
                                cols,
                                tc,
                                ldc,
                                first,
                                tile_epi,
                            ),
                        }
                    }
                    j0 += cols;
                }
            }
            p0 += len;
            if p0 >= k {
                break;
            }
        }
    }

    /// One `rows x cols` tile (`rows <= 8`, `16 * (NV - 1) < cols <= 16 * NV`) over
    /// `len` steps of `k` from `p0` (A's pointer already at column `p0`): `C = [C +] A * B`, then `epi` (bias pointer, lo, hi) if given.
    ///
    /// # Safety
    /// AVX-512F; `a` readable for `rows x len`, `b` for `len x cols`, `c` writable for
    /// `rows x cols` (and readable unless `first`), bias readable for `rows`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    #[inline]
    unsafe fn tile<const NV: usize, const OFFS: bool>(
        (p0, len): (usize, usize),
        a: RowMajor,
        rows: usize,
        b: BRows<'_>,
        cols: usize,
        c: *mut f32,
        ldc: usize,
        first: bool,
        epi: Option<(Option<*const f32>, f32, f32)>,
    ) {
        let tail = cols - 16 * (NV - 1);
        let mask: __mmask16 = if tail >= 16 {
            0xffff
        } else {
            ((1u32 << tail) - 1) as __mmask16
        };
        // Rows past the edge repeat the last row (computed, never stored).
        let ar: [*const f32; MR] =
            // SAFETY: every row index is clamped to rows - 1, inside A.
            std::array::from_fn(|r| unsafe { a.ptr.add(r.min(rows - 1) * a.ld) });
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        for p in 0..len {
            // SAFETY: row p0 + p < k of B.
            let bp = unsafe { b_row::<OFFS>(&b, p0 + p) };
            let mut bv = [_mm512_setzero_ps(); NV];
            for (v, slot) in bv.iter_mut().enumerate() {
                // SAFETY: row p of the B tile, columns 16v.. within `cols` (the last
                // vector masked).
                *slot = unsafe {
                    if v + 1 == NV {
                        _mm512_maskz_loadu_ps(mask, bp.add(16 * v))
                    } else {
                        _mm512_loadu_ps(bp.add(16 * v))
                    }
                };
            }
            // Rows of A are far apart (whole weight rows): fetch ahead, one row a step.
            _mm_prefetch::<_MM_HINT_T0>(ar[p & (MR - 1)].wrapping_add(p + PF) as *const i8);
            for r in 0..MR {
                // SAFETY: element p of row r of the A tile.
                let x = _mm512_set1_ps(unsafe { *ar[r].add(p) });
                for v in 0..NV {
                    acc[r][v] = _mm512_fmadd_ps(x, bv[v], acc[r][v]);
                }
            }
        }
        for (r, row) in acc.iter().enumerate().take(rows) {
            // SAFETY: row r < rows of the C tile.
            let cr = unsafe { c.add(r * ldc) };
            let post = epi.map(|(bias, lo, hi)| {
                // SAFETY: bias holds `rows` values.
                let b = bias.map_or(0.0, |bp| unsafe { *bp.add(r) });
                (_mm512_set1_ps(b), _mm512_set1_ps(lo), _mm512_set1_ps(hi))
            });
            for (v, &x) in row.iter().enumerate() {
                let m = if v + 1 == NV { mask } else { 0xffff };
                // SAFETY: columns 16v.. of row r, masked to `cols`.
                let dst = unsafe { cr.add(16 * v) };
                let mut x = x;
                if !first {
                    x = _mm512_add_ps(x, unsafe { _mm512_maskz_loadu_ps(m, dst) });
                }
                if let Some((b, lo, hi)) = post {
                    x = _mm512_add_ps(x, b);
                    // max(lo, x) / min(hi, x) return x when x is NaN.
                    x = _mm512_min_ps(hi, _mm512_max_ps(lo, x));
                }
                // SAFETY: as above.
                unsafe { _mm512_mask_storeu_ps(dst, m, x) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], epi: Epilogue) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for p in 0..k {
                    s += a[i * k + p] as f64 * b[p * n + j] as f64;
                }
                let v = s as f32 + epi.bias.map_or(0.0, |b| b[i]);
                c[i * n + j] = v.max(epi.lo).min(epi.hi);
            }
        }
        c
    }

    fn data(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matches_naive_over_edges_and_k_blocks() {
        if !available() {
            eprintln!("no AVX-512 on this CPU: kernel not exercised");
            return;
        }
        let ms = [1, 3, 8, 9, 17, 64];
        let ns = [1, 5, 16, 17, 33, 48, 49, 100];
        let ks = [1, 2, 7, 147, 385, 800];
        let mut seed = 0;
        for &m in &ms {
            for &n in &ns {
                for &k in &ks {
                    seed += 1;
                    let a = data(m * k, seed);
                    let b = data(k * n, seed + 1000);
                    let bias = data(m, seed + 2000);
                    for (bi, act) in [
                        (false, None),
                        (true, Some(Activation::Relu)),
                        (true, Some(Activation::Clip(-0.5, 0.25))),
                    ] {
                        let epi = Epilogue::new(bi.then_some(&bias[..]), act);
                        // A wider C: the columns past n must stay untouched.
                        let ldc = n + 3;
                        let mut c = vec![7f32; m * ldc];
                        let done = unsafe {
                            sgemm_epilogue(
                                m,
                                n,
                                k,
                                RowMajor {
                                    ptr: a.as_ptr(),
                                    ld: k,
                                },
                                RowMajor {
                                    ptr: b.as_ptr(),
                                    ld: n,
                                },
                                c.as_mut_ptr(),
                                ldc,
                                epi,
                            )
                        };
                        assert!(done);
                        let want = naive(m, n, k, &a, &b, epi);
                        for i in 0..m {
                            for j in 0..ldc {
                                let got = c[i * ldc + j];
                                if j >= n {
                                    assert_eq!(got, 7.0, "m{m} n{n} k{k}: wrote past the edge");
                                    continue;
                                }
                                let w = want[i * n + j];
                                assert!(
                                    (got - w).abs() <= 1e-4 * (1.0 + w.abs() * k as f32 / 8.0),
                                    "m{m} n{n} k{k} ({i},{j}): {got} vs {w}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn nan_passes_through_the_clamp() {
        if !available() {
            return;
        }
        let a = [f32::NAN, 1.0];
        let b = [1.0f32; 2];
        let mut c = [0f32; 2];
        let epi = Epilogue::new(None, Some(Activation::Relu));
        unsafe {
            sgemm_epilogue(
                2,
                1,
                1,
                RowMajor {
                    ptr: a.as_ptr(),
                    ld: 1,
                },
                RowMajor {
                    ptr: b.as_ptr(),
                    ld: 1,
                },
                c.as_mut_ptr(),
                1,
                epi,
            );
        }
        assert!(c[0].is_nan());
        assert_eq!(c[1], 1.0);
    }
}

#[cfg(test)]
mod bench {
    use super::*;

    /// Timing of conv-like shapes; run with `--ignored --nocapture`.
    #[test]
    #[ignore]
    fn gflops() {
        for &(m, n, k) in &[
            (64usize, 224usize, 576usize),
            (64, 3136, 576),
            (128, 784, 1152),
            (256, 196, 2304),
            (512, 49, 4608),
            (512, 63, 4608),
            (1280, 49, 320),
            (64, 1024, 147),
            (960, 49, 160),
        ] {
            let a = vec![0.5f32; m * k];
            let b = vec![0.25f32; k * n];
            let mut c = vec![0f32; m * n];
            let reps = (3e8 / (m * n * k) as f64).max(1.0) as usize;
            let mut s = f64::INFINITY;
            for _ in 0..9 {
                let t = std::time::Instant::now();
                for _ in 0..reps {
                    unsafe {
                        sgemm_epilogue(
                            m,
                            n,
                            k,
                            RowMajor {
                                ptr: a.as_ptr(),
                                ld: k,
                            },
                            RowMajor {
                                ptr: b.as_ptr(),
                                ld: n,
                            },
                            c.as_mut_ptr(),
                            n,
                            Epilogue::new(None, None),
                        );
                    }
                }
                s = s.min(t.elapsed().as_secs_f64() / reps as f64);
            }
            println!(
                "m{m} n{n} k{k}: {:.3} ms {:.1} GFLOP/s",
                s * 1e3,
                2.0 * (m * n * k) as f64 / s / 1e9
            );
        }
    }
}
