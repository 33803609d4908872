//! An AVX-512 SGEMM with the bias and activation applied in registers before the single
//! store of each output tile.
//!
//! `C (m x n) = A (m x k) * B (k x n)`, `C` row-major, `A` and `B` as described by
//! [`Operand`] (row-major, transposed, or through a table of per-step offsets: an
//! implicit im2col). The microkernel holds an 8 x 48 tile of `C` in 24 zmm accumulators;
//! for every step of `k` it broadcasts 8 elements of `A` (read in place: constant
//! weights are used as they are; packing them into panels measured no faster) and loads
//! 48 contiguous elements of `B` (column edges with masked loads, which never touch
//! memory outside the mask). A strided `B` read by more than two row tiles is first
//! copied into aligned 48-column panels, block by block; `B` through offsets (the
//! implicit im2col, whose rows are already short contiguous runs) is read in place.
//! `K` is split into blocks of at most [`KC`] and `N` into blocks of [`NC`] so that the
//! working set stays in L1/L2; partial sums go through `C` between `K` blocks.

use super::Activation;

/// Rows of one microkernel tile.
const MR: usize = 8;
/// Columns of one full microkernel tile (three zmm vectors).
const NR: usize = 48;
/// Columns of one block of `B` (whole tiles), kept in L2 while all rows of `A` pass.
const NC: usize = 5 * NR;
/// How far ahead (in elements of `k`) the microkernel prefetches rows of `A`.
const PF: usize = 64;
/// Largest `k` block.
const KC: usize = 256;

/// What the last `k` block does to each tile before storing it: add the bias (one
/// value per row of `C`, or per column), then clamp to `[lo, hi]` (NaN passes through).
#[derive(Clone, Copy)]
pub(crate) struct Epilogue<'a> {
    /// The bias (`m` values, or `n` when `per_column`), if any.
    pub bias: Option<&'a [f32]>,
    /// Whether the bias runs along the columns of `C` instead of its rows.
    pub per_column: bool,
    /// Lower clamp bound (`-inf` for none).
    pub lo: f32,
    /// Upper clamp bound (`+inf` for none).
    pub hi: f32,
}

impl<'a> Epilogue<'a> {
    /// The epilogue for an optional per-row bias and activation.
    pub fn new(bias: Option<&'a [f32]>, act: Option<Activation>) -> Self {
        let (lo, hi) = match act {
            None => (f32::NEG_INFINITY, f32::INFINITY),
            Some(Activation::Relu) => (0.0, f32::INFINITY),
            Some(Activation::Clip(lo, hi)) => (lo, hi),
        };
        Epilogue {
            bias,
            per_column: false,
            lo,
            hi,
        }
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

/// How a GEMM operand is laid out. Element `(i, p)` of `A` (row `i` of `C`, step `p` of
/// `k`) and element `(p, j)` of `B` (`j` a column of `C`, always contiguous) are at
/// `base + i * step + koff(p)` and `base + koff(p) + j`, where `koff(p)` is
/// `p * k_stride`, or `offs[p]` with an offset table (an implicit im2col: each step of
/// `k` a shifted view of a zero-padded input plane).
#[derive(Clone, Copy)]
pub(crate) struct Operand<'a> {
    /// Element (0, 0).
    pub base: *const f32,
    /// Distance between steps of `k` when there is no offset table.
    pub k_stride: usize,
    /// Per-step element offsets from `base` (at least `k` of them), if any.
    pub offs: Option<&'a [usize]>,
    /// Distance between rows of `A` inside one 8-row tile (unused for `B`).
    pub step: usize,
    /// Distance from row 0 to row `i` of `A` is `i * panel_step` for `i` a multiple of 8
    /// (`step` unless `A` is packed in panels; unused for `B`).
    pub panel_step: usize,
}

impl Operand<'_> {
    /// A row-major `A` with row stride `ld`.
    pub fn a_rows(base: *const f32, ld: usize) -> Self {
        Operand {
            base,
            k_stride: 1,
            offs: None,
            step: ld,
            panel_step: ld,
        }
    }

    /// A row-major `B` (rows are steps of `k`) with row stride `ld`.
    pub fn b_rows(base: *const f32, ld: usize) -> Self {
        Operand {
            base,
            k_stride: ld,
            offs: None,
            step: 1,
            panel_step: 1,
        }
    }
}

/// `C = epilogue(A * B)`, overwriting (never reading before writing) the `m x n` block
/// of `C` at `c` with row stride `ldc`. Returns `false` (having done nothing) when the
/// CPU lacks AVX-512 or an offset table is shorter than `k`; the caller then uses
/// another GEMM.
///
/// # Safety
/// `a` must be readable for `m x k`, `b` for `k x n` elements as laid out, `c`
/// writable for `m x n` at stride `ldc`, no other thread accessing that block, and the
/// bias (if any) at least `m` (per column: `n`) long.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm_epilogue(
    m: usize,
    n: usize,
    k: usize,
    a: Operand<'_>,
    b: Operand<'_>,
    c: *mut f32,
    ldc: usize,
    epi: Epilogue<'_>,
) -> bool {
    let short = |o: &Operand<'_>| o.offs.is_some_and(|o| o.len() < k);
    if short(&a) || short(&b) || !available() {
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
            match (a.offs.is_some(), b.offs.is_some()) {
                (false, false) => avx512::gemm::<false, false>(m, n, k, a, b, c, ldc, epi),
                (false, true) => avx512::gemm::<false, true>(m, n, k, a, b, c, ldc, epi),
                (true, false) => avx512::gemm::<true, false>(m, n, k, a, b, c, ldc, epi),
                (true, true) => avx512::gemm::<true, true>(m, n, k, a, b, c, ldc, epi),
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
    use super::{Epilogue, Operand, KC, MR, NC, NR, PF};
    use std::arch::x86_64::*;

    /// `koff(p)` of an operand (see [`Operand`]).
    ///
    /// # Safety
    /// `p` must be below the `k` the offsets were checked against.
    #[inline(always)]
    unsafe fn koff<const OFFS: bool>(o: &Operand<'_>, p: usize) -> usize {
        match o.offs {
            // SAFETY: per the contract.
            Some(t) if OFFS => unsafe { *t.get_unchecked(p) },
            _ => p * o.k_stride,
        }
    }

    /// See [`super::sgemm_epilogue`].
    ///
    /// # Safety
    /// As there, and AVX-512F must be available.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn gemm<const AO: bool, const BO: bool>(
        m: usize,
        n: usize,
        k: usize,
        a: Operand<'_>,
        b: Operand<'_>,
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
                    Operand {
                        base: b.base.add(j0),
                        ..b
                    },
                    c.add(j0),
                )
            };
            let ej = Epilogue {
                bias: match epi.bias {
                    Some(bv) if epi.per_column => Some(&bv[j0..]),
                    other => other,
                },
                ..epi
            };
            // SAFETY: as for this function, on a column block.
            unsafe { column_block::<AO, BO>(m, nc, k, a, bj, cj, ldc, ej) };
            j0 += nc;
        }
    }

    /// [`gemm`] on at most [`NC`] columns.
    ///
    /// # Safety
    /// As for [`gemm`].
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn column_block<const AO: bool, const BO: bool>(
        m: usize,
        n: usize,
        k: usize,
        a: Operand<'_>,
        b: Operand<'_>,
        c: *mut f32,
        ldc: usize,
        epi: Epilogue<'_>,
    ) {
        let blocks = k.div_ceil(KC).max(1);
        let kc = k.div_ceil(blocks).max(1);
        // Packing B (each 48-column panel contiguous, aligned) pays when several row
        // tiles read it.
        let pack = !BO && m > 2 * MR;
        PACKED.with(|cell| {
            let mut own = Vec::new();
            let mut held = cell.try_borrow_mut();
            let buf = match held.as_mut() {
                Ok(v) => &mut **v,
                Err(_) => &mut own,
            };
            let panels = n.div_ceil(NR);
            let need = if pack { panels * NR * kc + 16 } else { 0 };
            if buf.len() < need {
                buf.resize(need, 0.0);
            }
            // 64-byte alignment for the panels.
            let skip = buf.as_ptr().align_offset(64).min(16).min(buf.len());
            let buf = &mut buf[skip..];
            // Unpacked, each 8-row band of A runs through all of K before the next
            // (its rows stream on, prefetched ahead); packed, all rows share each block
            // of B.
            let band = if pack { m } else { MR };
            for r0 in (0..m).step_by(band) {
                let r1 = (r0 + band).min(m);
                let mut p0 = 0;
                loop {
                    let len = kc.min(k - p0);
                    if pack {
                        // SAFETY: B's steps p0..p0 + len and columns 0..n are readable; the
                        // buffer holds panels * NR * len values.
                        unsafe { pack_b::<BO>(&b, p0, len, n, buf.as_mut_ptr()) };
                    }
                    let t0 = Tile {
                        p0,
                        len,
                        rows: 0,
                        cols: 0,
                        ldc,
                        first: p0 == 0,
                        epi: None,
                    };
                    let last = p0 + len >= k;
                    for i0 in (r0..r1).step_by(MR) {
                        let rows = MR.min(m - i0);
                        // SAFETY: rows i0..i0 + rows of A and of C are inside the caller's
                        // blocks.
                        let ta = Operand {
                            base: unsafe { a.base.add(i0 * a.panel_step) },
                            ..a
                        };
                        let cp = unsafe { c.add(i0 * ldc) };
                        let mut j0 = 0;
                        while j0 < n {
                            let cols = NR.min(n - j0);
                            let t = Tile {
                                rows,
                                cols,
                                epi: last.then(|| Epi {
                                    bias: epi.bias.map(|bv| {
                                        if epi.per_column {
                                            bv[j0..].as_ptr()
                                        } else {
                                            bv[i0..].as_ptr()
                                        }
                                    }),
                                    per_column: epi.per_column,
                                    lo: epi.lo,
                                    hi: epi.hi,
                                }),
                                ..t0
                            };
                            // SAFETY: columns j0..j0 + cols of C are inside the block.
                            let tc = unsafe { cp.add(j0) };
                            let nv = cols.div_ceil(16);
                            // SAFETY: the tile lies inside the operands: B's columns
                            // j0..j0 + cols, or its packed panel (whose step p sits at
                            // (p - p0) * NR, reached through the wrapped base).
                            unsafe {
                                if pack {
                                    let tb = Operand {
                                        base: buf
                                            .as_ptr()
                                            .add((j0 / NR) * NR * len)
                                            .wrapping_sub(p0 * NR),
                                        k_stride: NR,
                                        offs: None,
                                        step: 1,
                                        panel_step: 1,
                                    };
                                    match nv {
                                        3 => tile::<3, AO, false>(&t, &ta, &tb, tc),
                                        2 => tile::<2, AO, false>(&t, &ta, &tb, tc),
                                        _ => tile::<1, AO, false>(&t, &ta, &tb, tc),
                                    }
                                } else {
                                    let tb = Operand {
                                        base: b.base.add(j0),
                                        ..b
                                    };
                                    match nv {
                                        3 => tile::<3, AO, BO>(&t, &ta, &tb, tc),
                                        2 => tile::<2, AO, BO>(&t, &ta, &tb, tc),
                                        _ => tile::<1, AO, BO>(&t, &ta, &tb, tc),
                                    }
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
        });
    }

    thread_local! {
        /// The packed panels of B of the running column block.
        static PACKED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// Copies steps `p0..p0 + len` of columns `0..n` of `b` into 48-column panels at
    /// `dst`: panel `q` holds, step by step, columns `48q..48q + 48` (zero past `n`).
    ///
    /// # Safety
    /// AVX-512F; `b` readable there; `dst` writable for `ceil(n / 48) * 48 * len`.
    #[target_feature(enable = "avx512f")]
    unsafe fn pack_b<const BO: bool>(
        b: &Operand<'_>,
        p0: usize,
        len: usize,
        n: usize,
        dst: *mut f32,
    ) {
        for (q, j0) in (0..n).step_by(NR).enumerate() {
            let cols = NR.min(n - j0);
            let masks: [__mmask16; 3] = std::array::from_fn(|v| {
                let c = cols.saturating_sub(16 * v).min(16);
                ((1u32 << c) - 1) as __mmask16
            });
            // SAFETY: panel q of the destination.
            let panel = unsafe { dst.add(q * NR * len) };
            for p in 0..len {
                // SAFETY: step p0 + p < k, columns j0.. masked to n.
                unsafe {
                    let src = b.base.add(koff::<BO>(b, p0 + p) + j0);
                    let out = panel.add(p * NR);
                    for (v, &mk) in masks.iter().enumerate() {
                        let x = _mm512_maskz_loadu_ps(mk, src.add(16 * v));
                        _mm512_storeu_ps(out.add(16 * v), x);
                    }
                }
            }
        }
    }

    /// A tile's epilogue: bias pointer (at the tile's first row or column), direction,
    /// clamp bounds.
    struct Epi {
        bias: Option<*const f32>,
        per_column: bool,
        lo: f32,
        hi: f32,
    }

    /// One tile's extent: `k` steps `p0..p0 + len`, `rows <= 8` rows, `cols` columns
    /// (`16 * (NV - 1) < cols <= 16 * NV`); whether it is the first `k` block (`C` is
    /// overwritten, else accumulated into), and the epilogue of the last block.
    struct Tile {
        p0: usize,
        len: usize,
        rows: usize,
        cols: usize,
        ldc: usize,
        first: bool,
        epi: Option<Epi>,
    }

    /// One tile: `C = [C +] A * B`, then the epilogue if given.
    ///
    /// # Safety
    /// AVX-512F; `a` readable for the tile's rows and `k` steps, `b` for its `k` steps
    /// and columns, `c` writable for `rows x cols` at stride `ldc` (and readable unless
    /// `first`), the bias readable for the tile's rows (per column: columns).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const NV: usize, const AO: bool, const BO: bool>(
        t: &Tile,
        a: &Operand<'_>,
        b: &Operand<'_>,
        c: *mut f32,
    ) {
        let tail = t.cols - 16 * (NV - 1);
        let mask: __mmask16 = if tail >= 16 {
            0xffff
        } else {
            ((1u32 << tail) - 1) as __mmask16
        };
        // Rows past the edge repeat the last row (computed, never stored).
        let ar: [*const f32; MR] =
            // SAFETY: every row index is clamped to rows - 1, inside A.
            std::array::from_fn(|r| unsafe { a.base.add(r.min(t.rows - 1) * a.step) });
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        for p in t.p0..t.p0 + t.len {
            // SAFETY: p < k.
            let (ka, kb) = unsafe { (koff::<AO>(a, p), koff::<BO>(b, p)) };
            // SAFETY: step p of the B tile.
            let bp = b.base.wrapping_add(kb);
            let mut bv = [_mm512_setzero_ps(); NV];
            for (v, slot) in bv.iter_mut().enumerate() {
                // SAFETY: columns 16v.. within `cols` (the last vector masked).
                *slot = unsafe {
                    if v + 1 == NV {
                        _mm512_maskz_loadu_ps(mask, bp.add(16 * v))
                    } else {
                        _mm512_loadu_ps(bp.add(16 * v))
                    }
                };
            }
            // Rows of A may be far apart (whole weight rows): fetch ahead, one row a
            // step (a prefetch never faults, whatever the address).
            _mm_prefetch::<_MM_HINT_T0>(ar[p & (MR - 1)].wrapping_add(ka + PF) as *const i8);
            for r in 0..MR {
                // SAFETY: element (r, p) of the A tile.
                let x = _mm512_set1_ps(unsafe { *ar[r].add(ka) });
                for v in 0..NV {
                    acc[r][v] = _mm512_fmadd_ps(x, bv[v], acc[r][v]);
                }
            }
        }
        let post = t.epi.as_ref().map(|e| {
            let bias_col: [__m512; NV] = std::array::from_fn(|v| match e.bias {
                Some(bp) if e.per_column => {
                    let m = if v + 1 == NV { mask } else { 0xffff };
                    // SAFETY: the tile's columns 16v.. of the bias, masked to `cols`.
                    unsafe { _mm512_maskz_loadu_ps(m, bp.add(16 * v)) }
                }
                _ => _mm512_setzero_ps(),
            });
            (e, bias_col, _mm512_set1_ps(e.lo), _mm512_set1_ps(e.hi))
        });
        for (r, row) in acc.iter().enumerate().take(t.rows) {
            // SAFETY: row r < rows of the C tile.
            let cr = unsafe { c.add(r * t.ldc) };
            let bias_row = match post {
                Some((e, _, _, _)) if !e.per_column => {
                    // SAFETY: the bias holds the tile's rows.
                    _mm512_set1_ps(e.bias.map_or(0.0, |bp| unsafe { *bp.add(r) }))
                }
                _ => _mm512_setzero_ps(),
            };
            for (v, &x) in row.iter().enumerate() {
                let m = if v + 1 == NV { mask } else { 0xffff };
                // SAFETY: columns 16v.. of row r, masked to `cols`.
                let dst = unsafe { cr.add(16 * v) };
                let mut x = x;
                if !t.first {
                    x = _mm512_add_ps(x, unsafe { _mm512_maskz_loadu_ps(m, dst) });
                }
                if let Some((_, bias_col, lo, hi)) = &post {
                    x = _mm512_add_ps(_mm512_add_ps(x, bias_row), bias_col[v]);
                    // max(lo, x) / min(hi, x) return x when x is NaN.
                    x = _mm512_min_ps(*hi, _mm512_max_ps(*lo, x));
                }
                // SAFETY: as above.
                unsafe { _mm512_mask_storeu_ps(dst, m, x) };
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
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
                                Operand::a_rows(a.as_ptr(), k),
                                Operand::b_rows(b.as_ptr(), n),
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
    fn transposed_and_offset_operands_with_column_bias() {
        if !available() {
            return;
        }
        for (m, n, k) in [
            (1, 1, 1),
            (5, 17, 9),
            (9, 49, 160),
            (20, 96, 400),
            (49, 33, 7),
        ] {
            let a = data(m * k, (m * 31 + n + k) as u32);
            let b = data(k * n, (n * 17 + k) as u32);
            let bias = data(n, 77);
            // A stored transposed (k x m), reached through an offset table; B through
            // offsets that place row p at p * (n + 2).
            let at: Vec<f32> = (0..k * m).map(|x| a[(x % m) * k + x / m]).collect();
            let a_offs: Vec<usize> = (0..k).map(|p| p * m).collect();
            let mut bw = vec![0f32; k * (n + 2)];
            for p in 0..k {
                bw[p * (n + 2)..][..n].copy_from_slice(&b[p * n..][..n]);
            }
            let b_offs: Vec<usize> = (0..k).map(|p| p * (n + 2)).collect();
            for use_offs in [false, true] {
                let ao = Operand {
                    base: at.as_ptr(),
                    k_stride: m,
                    offs: use_offs.then_some(&a_offs[..]),
                    step: 1,
                    panel_step: 1,
                };
                let bo = Operand {
                    base: bw.as_ptr(),
                    k_stride: n + 2,
                    offs: use_offs.then_some(&b_offs[..]),
                    step: 1,
                    panel_step: 1,
                };
                let epi = Epilogue {
                    per_column: true,
                    ..Epilogue::new(Some(&bias), Some(Activation::Clip(-0.3, 0.6)))
                };
                let mut c = vec![0f32; m * n];
                assert!(unsafe { sgemm_epilogue(m, n, k, ao, bo, c.as_mut_ptr(), n, epi) });
                for i in 0..m {
                    for j in 0..n {
                        let mut s = 0f64;
                        for p in 0..k {
                            s += a[i * k + p] as f64 * b[p * n + j] as f64;
                        }
                        let w = (s as f32 + bias[j]).clamp(-0.3, 0.6);
                        let got = c[i * n + j];
                        assert!(
                            (got - w).abs() <= 1e-4 * (1.0 + k as f32 / 8.0),
                            "{got} vs {w}"
                        );
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
                Operand::a_rows(a.as_ptr(), 1),
                Operand::b_rows(b.as_ptr(), 1),
                c.as_mut_ptr(),
                1,
                epi,
            );
        }
        assert!(c[0].is_nan());
        assert_eq!(c[1], 1.0);
    }
}
