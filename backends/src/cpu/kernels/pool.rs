//! MaxPool, AveragePool (1-D and 2-D) and the global pools on f32.

use super::conv::{resolve_axes, Axis};
use super::depthwise::fill_row;
use super::f32s;
use cc_ir::op::{GlobalPoolOp, PoolAttrs};
use cc_ir::{Error, Result, Tensor};
use std::mem::MaybeUninit;

/// Geometry of a 1-D/2-D pool: N*C planes, the H and W axes, the output shape.
type Geometry = (usize, Axis, Axis, Vec<usize>);

/// The geometry of a 1-D/2-D pool, or `None` for other ranks.
fn geometry(a: &PoolAttrs, x: &Tensor) -> Result<Option<Geometry>> {
    let xs = x.shape();
    if xs.len() < 3 {
        return Err(Error::invalid(format!("pool input {xs:?} has rank < 3")));
    }
    if xs.len() > 4 {
        return Ok(None);
    }
    let kernel: Vec<usize> = a
        .kernel_shape
        .as_ref()
        .ok_or_else(|| Error::invalid("pool: kernel_shape is required"))?
        .iter()
        .map(|&k| usize::try_from(k).unwrap_or(0))
        .collect();
    if kernel.len() != xs.len() - 2 {
        return Err(Error::invalid(format!(
            "pool: kernel_shape {kernel:?} does not fit input {xs:?}"
        )));
    }
    let axes = resolve_axes(
        &xs[2..],
        &kernel,
        &a.strides,
        &a.dilations,
        &a.pads,
        a.auto_pad.as_deref(),
        a.ceil_mode.unwrap_or(0) != 0,
    )?;
    let unit = Axis {
        input: 1,
        kernel: 1,
        stride: 1,
        dilation: 1,
        pad: 0,
        output: 1,
    };
    let (ah, aw) = if axes.len() == 1 {
        (unit, axes[0])
    } else {
        (axes[0], axes[1])
    };
    let mut shape = xs[..2].to_vec();
    shape.extend(axes.iter().map(|ax| ax.output));
    Ok(Some((xs[0] * xs[1], ah, aw, shape)))
}

/// A 1-D/2-D pool computed separably, one output row at a time: the window's input
/// rows are combined column by column, the result is spread into a padded row split
/// into `stride_w` column phases, and each output then combines `kw` contiguous runs
/// of that row. Padding is -inf for max (taps in it never win) and 0 for sums.
struct Separable<'a> {
    x: &'a [f32],
    ah: Axis,
    aw: Axis,
    /// AveragePool: the divisor's factor per output row and per output column.
    counts: Option<(Vec<f32>, Vec<f32>)>,
}

thread_local! {
    /// Row buffers of [`Separable`], kept per thread between calls.
    static ROWS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Max with NaN propagation (a NaN tap makes the result NaN), branch-free.
#[inline(always)]
fn max_nan(m: f32, v: f32) -> f32 {
    if v > m || v.is_nan() {
        v
    } else {
        m
    }
}

/// Combines `count >= 1` runs of `N` values lane by lane (max with NaN propagation, or
/// sum), in registers.
#[inline(always)]
fn combine<'s, const MAX: bool, const N: usize>(
    count: usize,
    src: impl Fn(usize) -> &'s [f32],
) -> [f32; N] {
    let mut m = [0f32; N];
    m.copy_from_slice(&src(0)[..N]);
    for k in 1..count {
        for (m, &v) in m.iter_mut().zip(&src(k)[..N]) {
            *m = if MAX { max_nan(*m, v) } else { *m + v };
        }
    }
    m
}

/// `dst[i] = src(0)[i] . src(1)[i] . ... . src(count - 1)[i]` (see [`combine`]), each
/// `src(k)` holding at least `dst.len()` values, or `dst.len()` rounded up to 16 when
/// `wide`; divided by `cx[i] * cy` (NaN for 0) when `div` is `Some((cx, cy))`. Runs of
/// 16 columns are combined in registers and stored once (an in-place update per
/// source would become masked stores that the next loads stall on).
#[inline(always)]
fn reduce<'s, const MAX: bool>(
    dst: &mut [MaybeUninit<f32>],
    count: usize,
    wide: bool,
    div: Option<(&[f32], f32)>,
    src: impl Fn(usize) -> &'s [f32],
) {
    let n = dst.len();
    let finish = |i: usize, v: f32| match div {
        None => v,
        Some((cx, cy)) => {
            let d = cx[i] * cy;
            if d == 0.0 {
                f32::NAN
            } else {
                v / d
            }
        }
    };
    let full = if wide {
        n.div_ceil(16) * 16
    } else {
        n / 16 * 16
    };
    for i in (0..full).step_by(16) {
        let m = combine::<MAX, 16>(count, |k| &src(k)[i..]);
        for (j, (d, &v)) in dst[i..].iter_mut().zip(&m).enumerate() {
            d.write(finish(i + j, v));
        }
    }
    for (i, d) in dst.iter_mut().enumerate().skip(full) {
        let m = combine::<MAX, 1>(count, |k| &src(k)[i..]);
        d.write(finish(i, m[0]));
    }
}

/// The vertical pass of a horizontal stride 2 pool: combines `count` input rows
/// (`src(k)`, `iw` values each) and writes column x to phase `(x + pad) % 2`, index
/// `(x + pad) / 2` of `padded` (two phases of `len`), 32 columns at a time; `iw >= 32`.
#[inline(always)]
fn reduce_split2<'s, const MAX: bool>(
    padded: &mut [f32],
    (len, pad, iw): (usize, usize, usize),
    count: usize,
    src: impl Fn(usize) -> &'s [f32],
) {
    // Even columns x0 + 2j go to phase pad % 2 from index (x0 + pad) / 2 on; odd ones
    // to the other phase from (x0 + pad + 1) / 2 on.
    let (pe, po) = (pad % 2, 1 - pad % 2);
    let (be, bo) = (pad / 2, pad.div_ceil(2));
    // Runs of 32 from column 0, the last one moved back to end at the last even-length
    // prefix (`iw >= 32`; overlapping runs rewrite the same values).
    let end = iw / 2 * 2;
    let starts = (0..end - 32).step_by(32).chain(std::iter::once(end - 32));
    for x0 in starts {
        let m = combine::<MAX, 32>(count, |k| &src(k)[x0..]);
        let ev: [f32; 16] = std::array::from_fn(|j| m[2 * j]);
        let od: [f32; 16] = std::array::from_fn(|j| m[2 * j + 1]);
        padded[pe * len + x0 / 2 + be..][..16].copy_from_slice(&ev);
        padded[po * len + x0 / 2 + bo..][..16].copy_from_slice(&od);
    }
    for x in end..iw {
        let m = combine::<MAX, 1>(count, |k| &src(k)[x..]);
        let pc = x + pad;
        padded[(pc % 2) * len + pc / 2] = m[0];
    }
}

/// Views initialized values as possibly uninitialized ones (to share [`reduce`]).
fn as_uninit(s: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and [`reduce`], the only
    // user, writes initialized values only.
    unsafe { &mut *(s as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

impl Separable<'_> {
    /// Pools all planes into `out` (`planes * oh * ow`), in parallel tasks of planes.
    fn run<const MAX: bool>(&self, out: &mut [MaybeUninit<f32>]) {
        let ohw = self.ah.output * self.aw.output;
        if ohw == 0 || out.is_empty() {
            return;
        }
        let planes = out.len() / ohw;
        let threads = crate::cpu::parallel::threads();
        let tasks = if threads > 1 {
            (out.len() / 4096).clamp(1, 4 * threads).min(planes)
        } else {
            1
        };
        let per = planes.div_ceil(tasks);
        crate::cpu::parallel::for_each_chunk(out, per * ohw, &|i, dst| {
            self.planes_dispatch::<MAX>(i * per, dst)
        });
    }

    fn planes_dispatch<const MAX: bool>(&self, first: usize, dst: &mut [MaybeUninit<f32>]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports AVX-512F.
                unsafe { self.planes_avx512::<MAX>(first, dst) };
                return;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2.
                unsafe { self.planes_avx2::<MAX>(first, dst) };
                return;
            }
        }
        self.planes::<MAX>(first, dst);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn planes_avx512<const MAX: bool>(&self, first: usize, dst: &mut [MaybeUninit<f32>]) {
        self.planes::<MAX>(first, dst);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn planes_avx2<const MAX: bool>(&self, first: usize, dst: &mut [MaybeUninit<f32>]) {
        self.planes::<MAX>(first, dst);
    }

    /// Writes the whole output planes `dst`, the first of which is plane `first`.
    #[inline(always)]
    fn planes<const MAX: bool>(&self, first: usize, dst: &mut [MaybeUninit<f32>]) {
        let Separable { x, ah, aw, .. } = *self;
        let (iw, ihw, ow) = (aw.input, ah.input * aw.input, aw.output);
        let pad = if MAX { f32::NEG_INFINITY } else { 0.0 };
        let sw = aw.stride;
        // Phase length: room for 16-lane runs over every output and for the data
        // columns written 16 at a time by `reduce_split2`.
        let len = (ow.div_ceil(16) * 16 + (aw.kernel - 1) * aw.dilation / sw)
            .max((iw + aw.pad).div_ceil(sw) + 16);
        let offs: Vec<usize> = (0..aw.kernel)
            .map(|kx| {
                let o = kx * aw.dilation;
                (o % sw) * len + o / sw
            })
            .collect();
        // Taken out of the thread-local (and put back after) so that the loops below
        // are compiled as part of this function, with its target features, not inside
        // a closure.
        let mut buf = ROWS.take();
        {
            buf.clear();
            // The padded row's borders keep `pad`: fills write only the data columns.
            buf.resize(iw + sw * len, pad);
            let (col, padded) = buf.split_at_mut(iw);
            for (k, out) in dst.chunks_mut(ah.output * ow).enumerate() {
                let src = &x[(first + k) * ihw..][..ihw];
                for (oy, o) in out.chunks_mut(ow).enumerate() {
                    let (ky0, ky1) = taps(ah, oy);
                    let row = |k: usize| {
                        let y = oy * ah.stride + (ky0 + k) * ah.dilation - ah.pad;
                        &src[y * iw..][..iw]
                    };
                    if ky0 >= ky1 {
                        col.fill(pad);
                        fill_row(padded, col, aw, len);
                    } else if sw == 2 && iw >= 32 {
                        reduce_split2::<MAX>(padded, (len, aw.pad, iw), ky1 - ky0, row);
                    } else {
                        reduce::<MAX>(as_uninit(col), ky1 - ky0, false, None, row);
                        fill_row(padded, col, aw, len);
                    }
                    let padded = &*padded;
                    let div = self.counts.as_ref().map(|(cy, cx)| (&cx[..], cy[oy]));
                    reduce::<MAX>(o, offs.len(), true, div, |k| &padded[offs[k]..]);
                }
            }
        }
        ROWS.set(buf);
    }
}

/// Pools `x` separably (see [`Separable`]).
fn pool_separable<const MAX: bool>(
    x: &Tensor,
    (planes, ah, aw, shape): Geometry,
    counts: Option<(Vec<f32>, Vec<f32>)>,
) -> Result<Tensor> {
    let xv = f32s(x)?;
    if xv.len() != planes * ah.input * aw.input {
        return Err(Error::invalid("pool: data does not match the shape"));
    }
    let total = cc_ir::tensor::shape_count(&shape)?;
    let sep = Separable {
        x: &xv,
        ah,
        aw,
        counts,
    };
    // SAFETY: `run` writes every output element (each output row in `planes`).
    let out = unsafe {
        super::write_new(total, |o| {
            sep.run::<MAX>(o);
            Ok(())
        })?
    };
    Tensor::from_f32_vec(shape, out)
}

/// The in-range kernel taps of output position `o` along an axis: (first, last+1).
fn taps(ax: Axis, o: usize) -> (usize, usize) {
    let start = (o * ax.stride) as i64 - ax.pad as i64;
    let d = ax.dilation as i64;
    let lo = if start >= 0 { 0 } else { (-start + d - 1) / d };
    let top = ax.input as i64 - 1 - start;
    let hi = if top < 0 {
        0
    } else {
        (top / d + 1).min(ax.kernel as i64)
    };
    (lo as usize, (hi.max(lo)) as usize)
}

/// ONNX MaxPool (single output) on f32: NaN if any tap is NaN, -inf for a window
/// entirely in the padding; `Ok(None)` for 3-D pools.
pub fn max_pool(a: &PoolAttrs, x: &Tensor) -> Result<Option<Tensor>> {
    let Some(geo) = geometry(a, x)? else {
        return Ok(None);
    };
    pool_separable::<true>(x, geo, None).map(Some)
}

/// ONNX AveragePool on f32 (count_include_pad counts padding inside the padded input,
/// never the extra window that ceil_mode adds; NaN for a window with nothing to
/// count); `Ok(None)` for 3-D pools.
pub fn average_pool(a: &PoolAttrs, x: &Tensor) -> Result<Option<Tensor>> {
    let Some(geo) = geometry(a, x)? else {
        return Ok(None);
    };
    let include_pad = a.count_include_pad.unwrap_or(0) != 0;
    // End padding per axis (explicit pads only; auto_pad pads are not counted by ORT).
    let n = x.shape().len() - 2;
    let end_pad = |i: usize| -> usize {
        a.pads
            .as_ref()
            .and_then(|p| p.get(i + n))
            .map_or(0, |&v| v.max(0) as usize)
    };
    let (pe_h, pe_w) = if n == 1 {
        (0, end_pad(0))
    } else {
        (end_pad(0), end_pad(1))
    };
    // The divisor is a product of per-axis counts.
    let counts = |ax: Axis, pe: usize| -> Vec<f32> {
        (0..ax.output)
            .map(|o| {
                let c = if include_pad {
                    // taps inside [-pad, input + pad_end)
                    (0..ax.kernel)
                        .filter(|&k| {
                            let p = (o * ax.stride + k * ax.dilation) as i64 - ax.pad as i64;
                            p >= -(ax.pad as i64) && p < (ax.input + pe) as i64
                        })
                        .count()
                } else {
                    let (k0, k1) = taps(ax, o);
                    k1 - k0
                };
                c as f32
            })
            .collect()
    };
    let (_, ah, aw, _) = geo;
    let cs = (counts(ah, pe_h), counts(aw, pe_w));
    pool_separable::<false>(x, geo, Some(cs)).map(Some)
}

/// GlobalAveragePool / GlobalMaxPool on f32 (any spatial rank).
pub fn global_pool(kind: GlobalPoolOp, x: &Tensor) -> Result<Tensor> {
    let xs = x.shape();
    if xs.len() < 2 {
        return Err(Error::invalid(format!(
            "global pool input {xs:?} has rank < 2"
        )));
    }
    let planes = xs[0] * xs[1];
    let size: usize = xs[2..].iter().product();
    let xv = f32s(x)?;
    if xv.len() != planes * size {
        return Err(Error::invalid("global pool: data does not match the shape"));
    }
    let out: Vec<f32> = if size == 0 {
        vec![f32::NAN; planes]
    } else {
        let mut out = vec![0f32; planes];
        let per = (1usize << 14).div_ceil(size);
        crate::cpu::parallel::for_each_chunk(&mut out, per, &|i, o| {
            for (j, o) in o.iter_mut().enumerate() {
                let p = &xv[(i * per + j) * size..][..size];
                *o = match kind {
                    GlobalPoolOp::Average => p.iter().sum::<f32>() / size as f32,
                    GlobalPoolOp::Max => p.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                };
            }
        });
        out
    };
    let mut shape = xs[..2].to_vec();
    shape.extend(std::iter::repeat_n(1, xs.len() - 2));
    Tensor::from_f32_vec(shape, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::kernels::test_util::{close, cx_pool, rand_vec, t};

    fn attrs(k: &[i64], s: &[i64], d: &[i64], p: &[i64], ceil: bool, incl: bool) -> PoolAttrs {
        PoolAttrs {
            kernel_shape: Some(k.to_vec()),
            strides: Some(s.to_vec()),
            dilations: Some(d.to_vec()),
            pads: Some(p.to_vec()),
            ceil_mode: Some(ceil as i64),
            count_include_pad: Some(incl as i64),
            ..Default::default()
        }
    }

    /// Naive 2-D pooling over one plane; `max` or average (with/without pad counting).
    #[allow(clippy::too_many_arguments)]
    fn naive(
        x: &[f32],
        (h, w): (usize, usize),
        (oh, ow): (usize, usize),
        k: [usize; 2],
        s: [usize; 2],
        d: [usize; 2],
        p: [usize; 4],
        mode: u8,
    ) -> Vec<f32> {
        let mut out = vec![];
        for oy in 0..oh {
            for ox in 0..ow {
                let (mut m, mut sum, mut cnt, mut cnt_pad) = (f32::NEG_INFINITY, 0f32, 0, 0);
                for ky in 0..k[0] {
                    for kx in 0..k[1] {
                        let y = (oy * s[0] + ky * d[0]) as i64 - p[0] as i64;
                        let xx = (ox * s[1] + kx * d[1]) as i64 - p[1] as i64;
                        if y < (h + p[2]) as i64 && xx < (w + p[3]) as i64 {
                            cnt_pad += 1;
                        }
                        if y < 0 || xx < 0 || y >= h as i64 || xx >= w as i64 {
                            continue;
                        }
                        let v = x[y as usize * w + xx as usize];
                        if v > m || v.is_nan() {
                            m = v;
                        }
                        sum += v;
                        cnt += 1;
                    }
                }
                out.push(match mode {
                    0 => m,
                    1 => sum / cnt as f32,
                    _ => sum / cnt_pad as f32,
                });
            }
        }
        out
    }

    #[test]
    fn pools_match_naive() {
        // (h, w, k, s, d, pads, ceil, expected out)
        let cases = [
            (7, 8, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], false, (4, 4)),
            (7, 8, [3, 2], [2, 2], [1, 1], [0, 0, 0, 0], true, (3, 4)),
            (9, 6, [2, 2], [1, 2], [2, 1], [1, 0, 0, 1], false, (8, 3)),
            (6, 6, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], true, (4, 4)),
        ];
        for (i, (h, w, k, s, d, p, ceil, (oh, ow))) in cases.into_iter().enumerate() {
            let x = t(&[2, 3, h, w], i as u64);
            let xv = x.to_f32().unwrap();
            let i64s = |v: &[usize]| v.iter().map(|&x| x as i64).collect::<Vec<_>>();
            for mode in 0..3u8 {
                let a = attrs(&i64s(&k), &i64s(&s), &i64s(&d), &i64s(&p), ceil, mode == 2);
                let got = if mode == 0 {
                    max_pool(&a, &x).unwrap().unwrap()
                } else {
                    average_pool(&a, &x).unwrap().unwrap()
                };
                assert_eq!(got.shape(), &[2, 3, oh, ow], "case {i}");
                let want: Vec<f32> = xv
                    .chunks(h * w)
                    .flat_map(|pl| naive(pl, (h, w), (oh, ow), k, s, d, p, mode))
                    .collect();
                close(&got.to_f32().unwrap(), &want);
            }
        }
    }

    /// Asserts equal NaN-ness and infinities, and values within 1e-5 relative.
    fn same(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let ok = if w.is_finite() {
                (g - w).abs() <= 1e-5 * (1.0 + w.abs())
            } else {
                g.is_nan() == w.is_nan() && (w.is_nan() || g == w)
            };
            assert!(ok, "{what} at {i}: {g} vs {w}");
        }
    }

    #[test]
    fn pools_match_naive_over_many_geometries() {
        let pool = cx_pool(3);
        let mut seed = 0u64;
        for (h, w) in [
            (1, 1),
            (1, 9),
            (5, 7),
            (8, 8),
            (13, 20),
            (33, 18),
            (4, 70),
            (3, 33),
        ] {
            for k in [[1, 1], [2, 2], [3, 3], [3, 2], [1, 3], [5, 5]] {
                for s in [[1, 1], [2, 2], [2, 1], [3, 3]] {
                    for p in [[0, 0, 0, 0], [1, 1, 1, 1], [0, 2, 1, 0], [2, 2, 2, 2]] {
                        for d in [[1, 1], [2, 1]] {
                            for ceil in [false, true] {
                                seed += 1;
                                let span = |k: usize, d: usize| (k - 1) * d + 1;
                                if h + p[0] + p[2] < span(k[0], d[0])
                                    || w + p[1] + p[3] < span(k[1], d[1])
                                {
                                    continue;
                                }
                                let mut xv = rand_vec(2 * 3 * h * w, seed);
                                if seed.is_multiple_of(3) {
                                    let n = xv.len();
                                    xv[seed as usize % n] = f32::NAN;
                                    xv[(seed as usize * 7) % n] = f32::INFINITY;
                                    xv[n - 1] = f32::NEG_INFINITY;
                                }
                                let x = Tensor::from_f32(vec![2, 3, h, w], xv.clone()).unwrap();
                                let i64s =
                                    |v: &[usize]| v.iter().map(|&x| x as i64).collect::<Vec<_>>();
                                for mode in 0..3u8 {
                                    let a = attrs(
                                        &i64s(&k),
                                        &i64s(&s),
                                        &i64s(&d),
                                        &i64s(&p),
                                        ceil,
                                        mode == 2,
                                    );
                                    let got = pool
                                        .install(|| {
                                            if mode == 0 {
                                                max_pool(&a, &x)
                                            } else {
                                                average_pool(&a, &x)
                                            }
                                        })
                                        .unwrap()
                                        .unwrap();
                                    let (oh, ow) = (got.shape()[2], got.shape()[3]);
                                    let want: Vec<f32> = xv
                                        .chunks(h * w)
                                        .flat_map(|pl| {
                                            naive(pl, (h, w), (oh, ow), k, s, d, p, mode)
                                        })
                                        .collect();
                                    let what = format!("mode {mode} {h}x{w} k {k:?} s {s:?} d {d:?} p {p:?} ceil {ceil}");
                                    same(&got.to_f32().unwrap(), &want, &what);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn max_pool_nan_padding_and_1d() {
        // A NaN tap makes its windows NaN; padding never wins over a negative value.
        let x = Tensor::from_f32(
            vec![1, 1, 2, 3],
            vec![-5.0, f32::NAN, -1.0, -2.0, -3.0, -4.0],
        )
        .unwrap();
        let a = attrs(&[2, 2], &[1, 1], &[1, 1], &[1, 1, 1, 1], false, false);
        let got = max_pool(&a, &x).unwrap().unwrap().to_f32().unwrap();
        assert_eq!(got.len(), 12);
        // Output columns 0..4 of row 0 see input row 0 columns (c-1, c).
        assert_eq!(got[0], -5.0);
        assert!(got[1].is_nan() && got[2].is_nan());
        assert_eq!(got[3], -1.0);
        assert_eq!(&got[8..], &[-2.0, -2.0, -3.0, -4.0]);
        // 1-D: [N, C, W].
        let x1 = Tensor::from_f32(
            vec![1, 2, 5],
            vec![1., 5., 2., 0., 3., 9., -1., -2., -3., 8.],
        )
        .unwrap();
        let a1 = attrs(&[3], &[2], &[1], &[1, 1], false, false);
        let got = max_pool(&a1, &x1).unwrap().unwrap();
        assert_eq!(got.shape(), &[1, 2, 3]);
        assert_eq!(got.to_f32().unwrap(), vec![5., 5., 3., 9., -1., 8.]);
        let got = average_pool(&attrs(&[3], &[2], &[1], &[1, 1], false, true), &x1)
            .unwrap()
            .unwrap();
        close(
            &got.to_f32().unwrap(),
            &[2.0, 7.0 / 3.0, 1.0, 8.0 / 3.0, -2.0, 5.0 / 3.0],
        );
    }

    #[test]
    fn global_pools() {
        let x =
            Tensor::from_f32(vec![1, 2, 2, 2], vec![1., 2., 3., 4., -1., -2., -3., -8.]).unwrap();
        let avg = global_pool(GlobalPoolOp::Average, &x).unwrap();
        assert_eq!(avg.shape(), &[1, 2, 1, 1]);
        assert_eq!(avg.to_f32().unwrap(), vec![2.5, -3.5]);
        let max = global_pool(GlobalPoolOp::Max, &x).unwrap();
        assert_eq!(max.to_f32().unwrap(), vec![4.0, -1.0]);
        assert!(max_pool(&PoolAttrs::default(), &x).is_err());
    }
}
