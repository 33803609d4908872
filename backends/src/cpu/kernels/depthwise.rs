//! Depthwise convolution (one input channel per output channel) on f32 planes.
//!
//! Two kernels, both computing runs of 16 output columns in registers (every tap
//! summed, then the bias and the activation, then one store):
//! - direct (AVX-512; horizontal stride 1 or 2; kernels 3x3, 5x5, 7x7, 1x3, 1x5): reads
//!   the input rows in place with masked loads (lanes outside the row read nothing and
//!   count as the zero padding); stride 2 picks the even columns of two loads with one
//!   permute. 3x3 and 5x5 kernels with vertical dilation 1 compute a batch of output
//!   rows at once (7 or 4 for stride 1, 2 for stride 2), loading each input row of the
//!   batch once for all of them;
//! - ring (any geometry; AVX-512, AVX2+FMA or portable code): copies each input row once
//!   into a zero-bordered buffer split into `stride_w` column phases, kept in a ring of
//!   `(kh - 1) * dilation_h + 1` rows, so that every tap reads 16 contiguous values.
//!
//! Planes are split into parallel tasks of whole planes.

use super::conv::Axis;
use super::Activation;
use std::mem::MaybeUninit;

/// Output columns computed together (one AVX-512 register).
const LANES: usize = 16;

/// The operands and geometry of one depthwise Conv: `x` holds `n * c` input planes of
/// `ah.input x aw.input`, `w` one `kh x kw` kernel per channel, `bias` one value per
/// channel.
pub(crate) struct Depthwise<'a> {
    /// Input planes.
    pub x: &'a [f32],
    /// Kernels, `c * kh * kw`.
    pub w: &'a [f32],
    /// Optional bias, `c`.
    pub bias: Option<&'a [f32]>,
    /// Vertical axis.
    pub ah: Axis,
    /// Horizontal axis.
    pub aw: Axis,
    /// Channels (planes per image).
    pub c: usize,
    /// Activation applied after the bias.
    pub act: Option<Activation>,
}

/// Which kernel and instruction set computes the planes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    /// Ring kernel, portable code.
    Plain,
    /// Ring kernel compiled for AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Ring kernel compiled for AVX-512.
    #[cfg(target_arch = "x86_64")]
    Avx512Ring,
    /// Direct kernel (AVX-512).
    #[cfg(target_arch = "x86_64")]
    Avx512Direct,
}

/// The paths this CPU can run for a geometry, best first.
fn paths(ah: Axis, aw: Axis) -> Vec<Path> {
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            if aw.stride <= 2 {
                v.push(Path::Avx512Direct);
            }
            v.push(Path::Avx512Ring);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            v.push(Path::Avx2);
        }
    }
    let _ = (ah, aw);
    v.push(Path::Plain);
    v
}

thread_local! {
    /// The ring kernel's row buffer, kept per thread between calls.
    static RING: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The clamp bounds of an optional activation (none: the whole line).
fn bounds(act: Option<Activation>) -> (f32, f32) {
    match act {
        None => (f32::NEG_INFINITY, f32::INFINITY),
        Some(Activation::Relu) => (0.0, f32::INFINITY),
        Some(Activation::Clip(lo, hi)) => (lo, hi),
    }
}

impl Depthwise<'_> {
    /// Writes every element of `out` (`n * c` output planes), in parallel tasks of whole
    /// planes when `threads > 1`.
    pub(crate) fn run(&self, out: &mut [MaybeUninit<f32>], threads: usize) {
        let path = paths(self.ah, self.aw)[0];
        self.run_with(out, threads, path);
    }

    fn run_with(&self, out: &mut [MaybeUninit<f32>], threads: usize, path: Path) {
        let ohw = self.ah.output * self.aw.output;
        if ohw == 0 || out.is_empty() {
            return;
        }
        let planes = out.len() / ohw;
        let work = planes * ohw * self.ah.kernel * self.aw.kernel;
        // At least ~32k multiply-adds per task, up to four tasks per thread.
        let tasks = if threads > 1 {
            (work / 32768).clamp(1, 4 * threads).min(planes)
        } else {
            1
        };
        if tasks <= 1 {
            self.planes(path, 0, out);
            return;
        }
        let per = planes.div_ceil(tasks);
        crate::cpu::parallel::for_each_chunk(out, per * ohw, &|i, dst| {
            self.planes(path, i * per, dst)
        });
    }

    /// Writes the whole output planes `dst`, the first of which is plane `first`.
    fn planes(&self, path: Path, first: usize, dst: &mut [MaybeUninit<f32>]) {
        match path {
            Path::Plain => self.ring::<false>(first, dst),
            // SAFETY (all three): `paths` offers these only when the CPU has the features
            // the functions are compiled for.
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => unsafe { self.ring_avx2(first, dst) },
            #[cfg(target_arch = "x86_64")]
            Path::Avx512Ring => unsafe { self.ring_avx512(first, dst) },
            #[cfg(target_arch = "x86_64")]
            Path::Avx512Direct => unsafe { self.direct_avx512(first, dst) },
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn ring_avx2(&self, first: usize, dst: &mut [MaybeUninit<f32>]) {
        self.ring::<true>(first, dst);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn ring_avx512(&self, first: usize, dst: &mut [MaybeUninit<f32>]) {
        self.ring::<true>(first, dst);
    }

    /// The ring kernel (see the module doc); `FMA` uses fused multiply-adds (only in
    /// code compiled for them).
    #[inline(always)]
    fn ring<const FMA: bool>(&self, first: usize, dst: &mut [MaybeUninit<f32>]) {
        let Depthwise {
            x,
            w,
            bias,
            ah,
            aw,
            c,
            act,
        } = *self;
        let (kh, kw) = (ah.kernel, aw.kernel);
        let (iw, ihw) = (aw.input, ah.input * aw.input);
        let (oh, ow) = (ah.output, aw.output);
        let sw = aw.stride;
        let (lo, hi) = bounds(act);
        // Each ring row: `sw` phases of `len` values; phase p, index j holds padded
        // column j * sw + p, i.e. input column j * sw + p - pad.
        let len = ow.div_ceil(LANES) * LANES + (kw - 1) * aw.dilation / sw;
        let slots = (kh - 1) * ah.dilation + 1;
        let row_len = sw * len;
        let tap_off: Vec<usize> = (0..kw)
            .map(|dx| {
                let o = dx * aw.dilation;
                (o % sw) * len + o / sw
            })
            .collect();
        let mut held = vec![usize::MAX; slots];
        let mut rows: Vec<(usize, usize)> = Vec::with_capacity(kh);
        // Taken out of the thread-local (and put back after) so that the loops below
        // are compiled as part of this function, with its target features, not inside
        // a closure.
        let mut ring = RING.take();
        {
            ring.clear();
            // The borders stay zero: fills only write the data columns.
            ring.resize(slots * row_len, 0.0);
            for (k, out) in dst.chunks_mut(oh * ow).enumerate() {
                let plane = first + k;
                let ch = plane % c;
                let src = &x[plane * ihw..][..ihw];
                let wk = &w[ch * kh * kw..][..kh * kw];
                let b = bias.map_or(0.0, |b| b[ch]);
                held.fill(usize::MAX);
                for oy in 0..oh {
                    rows.clear();
                    for dy in 0..kh {
                        // Padded row r holds input row r - pad.
                        let r = oy * ah.stride + dy * ah.dilation;
                        let Some(iy) = r.checked_sub(ah.pad).filter(|&y| y < ah.input) else {
                            continue;
                        };
                        let slot = r % slots;
                        if held[slot] != r {
                            held[slot] = r;
                            fill_row(
                                &mut ring[slot * row_len..][..row_len],
                                &src[iy * iw..][..iw],
                                aw,
                                len,
                            );
                        }
                        rows.push((slot * row_len, dy));
                    }
                    let line = &mut out[oy * ow..][..ow];
                    for ox0 in (0..ow).step_by(LANES) {
                        let mut acc = [b; LANES];
                        for &(base, dy) in &rows {
                            for (dx, &off) in tap_off.iter().enumerate() {
                                let wv = wk[dy * kw + dx];
                                let s = &ring[base + off + ox0..][..LANES];
                                for (a, &v) in acc.iter_mut().zip(s) {
                                    *a = if FMA { wv.mul_add(v, *a) } else { *a + wv * v };
                                }
                            }
                        }
                        for (o, &a) in line[ox0..].iter_mut().zip(&acc) {
                            let v = if a < lo { lo } else { a };
                            o.write(if v > hi { hi } else { v });
                        }
                    }
                }
            }
        }
        RING.set(ring);
    }

    /// [`Self::direct`] for the kernel extents it is instantiated for.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn direct_avx512(&self, first: usize, dst: &mut [MaybeUninit<f32>]) {
        let (ah, aw) = (self.ah, self.aw);
        // Batches of output rows share their input rows' loads when the vertical
        // dilation is 1 and the vertical stride is instantiated.
        let sh = if ah.dilation == 1 { ah.stride } else { 0 };
        // SAFETY: compiled for AVX-512F, which the caller checked; each instance is
        // chosen for the geometry it handles.
        unsafe {
            match (ah.kernel, aw.kernel, aw.stride, sh) {
                // Heights that are multiples of 7 (7, 14, 28, 56, 112): batches of 7
                // waste no rows.
                (3, 3, 1, 1) if ah.output % 7 == 0 => self.direct::<3, 3, 1, 1, 7>(first, dst),
                (3, 3, 1, 1) => self.direct::<3, 3, 1, 1, 4>(first, dst),
                (3, 3, 2, 2) => self.direct::<3, 3, 2, 2, 2>(first, dst),
                (3, 3, 1, _) => self.direct::<3, 3, 1, 0, 1>(first, dst),
                (3, 3, 2, _) => self.direct::<3, 3, 2, 0, 1>(first, dst),
                (5, 5, 1, 1) => self.direct::<5, 5, 1, 1, 2>(first, dst),
                (5, 5, 1, _) => self.direct::<5, 5, 1, 0, 1>(first, dst),
                (5, 5, 2, _) => self.direct::<5, 5, 2, 0, 1>(first, dst),
                (1, 3, 1, _) => self.direct::<1, 3, 1, 0, 1>(first, dst),
                (1, 3, 2, _) => self.direct::<1, 3, 2, 0, 1>(first, dst),
                (1, 5, 1, _) => self.direct::<1, 5, 1, 0, 1>(first, dst),
                (7, 7, 1, _) => self.direct::<7, 7, 1, 0, 1>(first, dst),
                (7, 7, 2, _) => self.direct::<7, 7, 2, 0, 1>(first, dst),
                _ => self.ring::<true>(first, dst),
            }
        }
    }

    /// The direct kernel (see the module doc) for a `KH x KW` kernel and horizontal
    /// stride `SW` (1 or 2), computing `R` output rows at a time: with `R > 1` the
    /// vertical stride is `SH` and the vertical dilation 1, and each input row of the
    /// batch is loaded once for all the output rows it feeds.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; the geometry must have these extents and strides.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn direct<
        const KH: usize,
        const KW: usize,
        const SW: usize,
        const SH: usize,
        const R: usize,
    >(
        &self,
        first: usize,
        dst: &mut [MaybeUninit<f32>],
    ) {
        use std::arch::x86_64::*;
        /// Most input rows one batch reads.
        const ROWS: usize = 10;
        let Depthwise {
            x,
            w,
            bias,
            ah,
            aw,
            c,
            act,
        } = *self;
        // Input rows per batch (one per kernel row when R == 1).
        let nt = if R > 1 { (R - 1) * SH + KH } else { KH };
        debug_assert!(aw.stride == SW && ah.kernel == KH && aw.kernel == KW && nt <= ROWS);
        debug_assert!(R == 1 || (ah.stride == SH && ah.dilation == 1));
        let (iw, ihw) = (aw.input, ah.input * aw.input);
        let (oh, ow) = (ah.output, aw.output);
        // The lanes of a 16-wide load at input column c0 that fall inside the row.
        let mask = |c0: isize| -> u16 {
            let lo = (-c0).clamp(0, 16) as u32;
            let hi = (iw as isize - c0).clamp(0, 16) as u32;
            if hi <= lo {
                0
            } else {
                (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as u16
            }
        };
        // Per block of 16 output columns and tap column: the input column the load
        // starts at and the masks of its lanes (a second load for stride 2).
        let table: Vec<[(isize, u16, u16); KW]> = (0..ow.div_ceil(LANES))
            .map(|b| {
                std::array::from_fn(|dx| {
                    let c0 = (b * LANES * SW + dx * aw.dilation) as isize - aw.pad as isize;
                    let m1 = if SW == 2 {
                        mask(c0 + LANES as isize)
                    } else {
                        0
                    };
                    (c0, mask(c0), m1)
                })
            })
            .collect();
        // Rows in the padding read this zero row instead (so no tap is skipped and a
        // zero weight never meets an infinite input).
        let zero_row = vec![0f32; iw];
        let (lo, hi) = bounds(act);
        // SAFETY: the intrinsics need AVX-512F (the caller's contract). Loads read only
        // the lanes their mask selects, which are columns 0..iw of an input row inside
        // `x` or of `zero_row`; stores write only columns 0..ow of output rows below
        // `oh` inside `dst`.
        unsafe {
            let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
            let even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
            let zero = _mm512_setzero_ps();
            for (k, out) in dst.chunks_mut(oh * ow).enumerate() {
                let plane = first + k;
                let ch = plane % c;
                let src = x[plane * ihw..][..ihw].as_ptr();
                let wk = &w[ch * KH * KW..][..KH * KW];
                let mut wv = [[zero; KW]; KH];
                for (dy, row) in wv.iter_mut().enumerate() {
                    for (dx, v) in row.iter_mut().enumerate() {
                        *v = _mm512_set1_ps(wk[dy * KW + dx]);
                    }
                }
                let b = _mm512_set1_ps(bias.map_or(0.0, |b| b[ch]));
                let dptr = out.as_mut_ptr() as *mut f32;
                for oy in (0..oh).step_by(R) {
                    let mut rows = [zero_row.as_ptr(); ROWS];
                    for (t, row) in rows.iter_mut().enumerate().take(nt) {
                        // Padded input row of batch row t.
                        let r = if R > 1 {
                            oy * SH + t
                        } else {
                            oy * ah.stride + t * ah.dilation
                        };
                        if let Some(iy) = r.checked_sub(ah.pad).filter(|&y| y < ah.input) {
                            *row = src.add(iy * iw);
                        }
                    }
                    for (blk, tab) in table.iter().enumerate() {
                        // Two chains per output row (even and odd kernel rows).
                        let mut acc = [[zero; 2]; R];
                        for a in acc.iter_mut() {
                            a[0] = b;
                        }
                        for (t, &rp) in rows.iter().enumerate().take(nt) {
                            for (dx, &(c0, m0, m1)) in tab.iter().enumerate() {
                                let p = rp.wrapping_offset(c0);
                                let v = if SW == 1 {
                                    _mm512_maskz_loadu_ps(m0, p)
                                } else {
                                    let v0 = _mm512_maskz_loadu_ps(m0, p);
                                    let v1 = _mm512_maskz_loadu_ps(m1, p.wrapping_add(LANES));
                                    _mm512_permutex2var_ps(v0, even, v1)
                                };
                                for (j, a) in acc.iter_mut().enumerate() {
                                    // Kernel row of output row oy + j that input row t is.
                                    let dy = t.wrapping_sub(j * SH);
                                    if dy < KH {
                                        a[dy & 1] = _mm512_fmadd_ps(v, wv[dy][dx], a[dy & 1]);
                                    }
                                }
                            }
                        }
                        let ox0 = blk * LANES;
                        let tail = ((1u32 << (ow - ox0).min(LANES)) - 1) as u16;
                        for (j, a) in acc.iter().enumerate().take(oh - oy) {
                            // max/min return the second operand when either is NaN, so
                            // NaN passes through like the scalar clamp.
                            let v = _mm512_add_ps(a[0], a[1]);
                            let v = _mm512_min_ps(hi, _mm512_max_ps(lo, v));
                            let at = dptr.add((oy + j) * ow + ox0);
                            if ow - ox0 >= LANES {
                                _mm512_storeu_ps(at, v);
                            } else {
                                _mm512_mask_storeu_ps(at, tail, v);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Fills one padded, phase-split row (`stride` phases of `len` values) from input row
/// `line`: phase p, index j gets input column `j * stride + p - pad`, for the columns
/// inside the input (the others are not written).
#[inline(always)]
pub(crate) fn fill_row(dst: &mut [f32], line: &[f32], aw: Axis, len: usize) {
    let (sw, iw) = (aw.stride, aw.input);
    for (p, dst) in dst.chunks_exact_mut(len).enumerate() {
        let j0 = aw.pad.saturating_sub(p).div_ceil(sw);
        let j1 = (aw.pad + iw).saturating_sub(p).div_ceil(sw).min(len);
        if j0 >= j1 {
            continue;
        }
        let first = j0 * sw + p - aw.pad;
        let n = j1 - j0;
        let d = &mut dst[j0..j1];
        if sw == 1 {
            d.copy_from_slice(&line[first..first + n]);
        } else if sw == 2 {
            // Pairs vectorize where a generic stride does not.
            let s = &line[first..];
            let full = (s.len() / 2).min(n);
            for (o, pair) in d[..full].iter_mut().zip(s.chunks_exact(2)) {
                *o = pair[0];
            }
            if full < n {
                d[full] = s[2 * full];
            }
        } else {
            for (o, &v) in d.iter_mut().zip(line[first..].iter().step_by(sw)) {
                *o = v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::kernels::conv::resolve_axes;
    use crate::cpu::kernels::test_util::{cx_pool, rand_vec};

    /// Naive depthwise convolution of `planes` planes of `c` channels, then bias and
    /// the activation's clamp.
    fn naive(d: &Depthwise<'_>, planes: usize) -> Vec<f32> {
        let (ah, aw) = (d.ah, d.aw);
        let (lo, hi) = bounds(d.act);
        let mut out = Vec::new();
        for p in 0..planes {
            let ch = p % d.c;
            for oy in 0..ah.output {
                for ox in 0..aw.output {
                    let mut s = d.bias.map_or(0.0, |b| b[ch]);
                    for ky in 0..ah.kernel {
                        for kx in 0..aw.kernel {
                            let y = (oy * ah.stride + ky * ah.dilation) as i64 - ah.pad as i64;
                            let x = (ox * aw.stride + kx * aw.dilation) as i64 - aw.pad as i64;
                            if y < 0 || x < 0 || y >= ah.input as i64 || x >= aw.input as i64 {
                                continue;
                            }
                            let v =
                                d.x[p * ah.input * aw.input + y as usize * aw.input + x as usize];
                            s += v * d.w[(ch * ah.kernel + ky) * aw.kernel + kx];
                        }
                    }
                    let v = if s < lo { lo } else { s };
                    out.push(if v > hi { hi } else { v });
                }
            }
        }
        out
    }

    /// Runs every path this CPU has on one geometry, with 1 and 3 threads, against the
    /// naive reference.
    #[allow(clippy::too_many_arguments)]
    fn check(
        (n, c, h, w): (usize, usize, usize, usize),
        (kh, kw): (usize, usize),
        s: [i64; 2],
        d: [i64; 2],
        p: [i64; 4],
        act: Option<Activation>,
        special: bool,
        seed: u64,
    ) {
        let axes = resolve_axes(
            &[h, w],
            &[kh, kw],
            &Some(s.to_vec()),
            &Some(d.to_vec()),
            &Some(p.to_vec()),
            None,
            false,
        )
        .unwrap();
        let mut x = rand_vec(n * c * h * w, seed);
        if special {
            // Infinities and NaN at the borders and inside.
            let (last, mid) = (x.len() - 1, x.len() / 2);
            x[0] = f32::INFINITY;
            x[last] = f32::NEG_INFINITY;
            x[mid] = f32::NAN;
        }
        let wt = rand_vec(c * kh * kw, seed + 1);
        let bias = rand_vec(c, seed + 2);
        let dw = Depthwise {
            x: &x,
            w: &wt,
            bias: Some(&bias),
            ah: axes[0],
            aw: axes[1],
            c,
            act,
        };
        let want = naive(&dw, n * c);
        let pool = cx_pool(3);
        for path in paths(axes[0], axes[1]) {
            for threads in [1, 3] {
                let mut out = vec![MaybeUninit::new(f32::NAN); want.len()];
                pool.install(|| dw.run_with(&mut out, threads, path));
                for (i, (o, &y)) in out.iter().zip(&want).enumerate() {
                    // SAFETY: initialized above (and overwritten by the kernel).
                    let v = unsafe { o.assume_init() };
                    let ok = if y.is_finite() {
                        (v - y).abs() <= 1e-4 * (1.0 + y.abs())
                    } else {
                        v.is_nan() == y.is_nan() && (y.is_nan() || v == y)
                    };
                    assert!(
                        ok,
                        "{path:?} threads {threads} {:?} k {kh}x{kw} s {s:?} d {d:?} p {p:?} \
                         at {i}: {v} vs {y}",
                        (n, c, h, w)
                    );
                }
            }
        }
    }

    #[test]
    fn depthwise_matches_naive() {
        let relu = Some(Activation::Relu);
        let clip = Some(Activation::Clip(-0.5, 0.75));
        let mut seed = 0u64;
        for (h, w) in [
            (1, 1),
            (2, 3),
            (5, 7),
            (7, 7),
            (14, 14),
            (9, 17),
            (16, 16),
            (20, 33),
        ] {
            for (kh, kw) in [(3, 3), (5, 5), (1, 3), (2, 3), (3, 1), (7, 7), (1, 1)] {
                for s in [[1, 1], [2, 2], [1, 2], [2, 1], [3, 3]] {
                    for p in [[0, 0, 0, 0], [1, 1, 1, 1], [2, 1, 0, 3], [kh as i64 / 2; 4]] {
                        for d in [[1, 1], [2, 2]] {
                            let span = |k: usize, d: i64| (k - 1) * d as usize + 1;
                            let (ph, pw) = ((p[0] + p[2]) as usize, (p[1] + p[3]) as usize);
                            if h + ph < span(kh, d[0]) || w + pw < span(kw, d[1]) {
                                continue;
                            }
                            seed += 1;
                            let act = [None, relu, clip][seed as usize % 3];
                            let geo = ((1 + seed as usize % 2), 3, h, w);
                            check(geo, (kh, kw), s, d, p, act, seed.is_multiple_of(7), seed);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn depthwise_mobilenet_shapes() {
        // Many channels and the sizes of the real layers (parallel tasks of several
        // planes, several 16-column blocks per row, ragged last blocks).
        for (c, h, s) in [
            (32, 112, 1),
            (24, 56, 2),
            (40, 28, 1),
            (64, 14, 2),
            (96, 7, 1),
        ] {
            let act = Some(Activation::Clip(0.0, 6.0));
            check(
                (1, c, h, h),
                (3, 3),
                [s, s],
                [1, 1],
                [1; 4],
                act,
                false,
                c as u64,
            );
            check(
                (1, c, h, h),
                (5, 5),
                [s, s],
                [1, 1],
                [2; 4],
                None,
                true,
                h as u64,
            );
        }
    }
}
