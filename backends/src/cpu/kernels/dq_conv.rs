//! Fused dequantize-Conv: `Conv(X, DequantizeLinear(Wq), B)` for a constant
//! int8/uint8/int4/uint4 weight (per-tensor, per-axis or blocked f32 scales, optional
//! zero points) without materializing the whole f32 weight.
//!
//! The Conv kernels ([`super::conv`], [`super::conv_implicit`], [`super::depthwise`])
//! read their weights through a [`Filter`]: either the f32 weight in memory, or a
//! compressed weight ([`TileDecode`]: a [`QuantFilter`] here, a codebook weight in
//! [`super::cb_conv`]) that decodes a tile of output channels (at most [`TILE_FLOATS`]
//! weights) into a per-thread buffer right before the GEMM that uses it. Each weight
//! element is dequantized exactly as DequantizeLinear does (`(q - zero_point) * scale`
//! in f32), so results differ from dequantize-then-conv only by the order of the f32
//! sums (not at all, with the same tiles of the same kernels).

use super::conv::Axis;
use super::depthwise::Depthwise;
use super::dq_gemm::DqWeight;
use super::matmul::{sgemm, Mat};
use super::Activation;
use cc_ir::op::ConvAttrs;
use cc_ir::{DType, Result, Tensor};
use std::cell::RefCell;
use std::mem::MaybeUninit;

pub use super::dq_filter::supported;
pub(crate) use super::dq_filter::{QuantFilter, TileDecode};

/// Most weights decoded at once by one task (256 KiB of f32).
pub const TILE_FLOATS: usize = 256 * 1024;

/// Conv weights as the kernels read them: rows of `kk` (one per output channel).
#[derive(Clone, Copy)]
pub(crate) enum Filter<'a> {
    /// The f32 weight in memory.
    F32(&'a [f32]),
    /// A compressed weight (quantized codes, codebook indices), decoded a tile of
    /// output channels at a time.
    Coded(&'a dyn TileDecode),
}

thread_local! {
    /// The decoded tile of this thread's running (or last) task.
    static DECODED: RefCell<TileBuf> = const { RefCell::new(TileBuf { data: Vec::new(), holds: None }) };
}

/// Which tile a [`TileBuf`] holds: filter id, first channel, channels, first and
/// number of columns.
type TileKey = (u64, usize, usize, usize, usize);

/// A per-thread buffer of decoded weights that remembers what it holds, so that a
/// thread running several tasks over the same output channels (column blocks of one
/// row block) decodes them once.
struct TileBuf {
    data: Vec<f32>,
    holds: Option<TileKey>,
}

impl TileBuf {
    /// Columns `k0 .. k0 + kc` of channels `r0 .. r0 + rows` of `q`, decoded unless
    /// already held.
    fn get(
        &mut self,
        q: &dyn TileDecode,
        r0: usize,
        rows: usize,
        (k0, kc): (usize, usize),
    ) -> &[f32] {
        let key = (q.id(), r0, rows, k0, kc);
        let n = rows * kc;
        if self.holds != Some(key) || self.data.len() < n {
            if self.data.len() < n {
                self.data.resize(n, 0.0);
            }
            q.decode(r0, (k0, kc), &mut self.data[..n]);
            self.holds = Some(key);
        }
        &self.data[..n]
    }

    /// Runs `f` with this thread's buffer (a fresh one if it is in use).
    fn with<R>(f: impl FnOnce(&mut TileBuf) -> R) -> R {
        DECODED.with(|cell| match cell.try_borrow_mut() {
            Ok(mut b) => f(&mut b),
            Err(_) => f(&mut TileBuf {
                data: Vec::new(),
                holds: None,
            }),
        })
    }
}

impl Filter<'_> {
    /// Number of weight elements.
    pub fn len(&self) -> usize {
        match self {
            Filter::F32(w) => w.len(),
            Filter::Coded(q) => q.shape().iter().product(),
        }
    }

    /// Output channels decoded together: all of them for f32, else as many as fit in
    /// [`TILE_FLOATS`], a multiple of 8 (the GEMM's row tile), at least 8.
    pub fn tile_rows(&self, kk: usize) -> usize {
        match self {
            Filter::F32(_) => usize::MAX,
            Filter::Coded(_) => (TILE_FLOATS / kk.max(1) / 8 * 8).max(8),
        }
    }

    /// Calls `f(i, count, w)` for consecutive tiles of output channels `r0 .. r0 +
    /// rows`: `w` holds channels `r0 + i .. r0 + i + count` (`kk` weights each),
    /// borrowed (f32) or decoded into this thread's buffer. The caller guarantees
    /// `(r0 + rows) * kk <= self.len()`.
    pub fn for_tiles(
        &self,
        r0: usize,
        rows: usize,
        kk: usize,
        mut f: impl FnMut(usize, usize, &[f32]),
    ) {
        match self {
            Filter::F32(w) => f(0, rows, &w[r0 * kk..(r0 + rows) * kk]),
            Filter::Coded(q) => {
                let tile = self.tile_rows(kk);
                TileBuf::with(|buf| {
                    let mut i = 0;
                    while i < rows {
                        let count = tile.min(rows - i);
                        f(i, count, buf.get(*q, r0 + i, count, (0, kk)));
                        i += count;
                    }
                });
            }
        }
    }

    /// `dst (rows x n, row stride ldd) = W[r0 .. r0 + rows] * rhs` through the `gemm`
    /// crate, where `rhs` is `kk x n`: one call for f32; for quantized weights, panels
    /// of K (all `rows` output channels, at most [`TILE_FLOATS`] weights) decoded and
    /// accumulated one after the other, so small-`n` products keep whole-height calls.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `rows x n` at stride `ldd`, `rhs` for reads of
    /// `kk x n` at its strides, and the filter must hold rows `r0 .. r0 + rows`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn sgemm(
        &self,
        r0: usize,
        rows: usize,
        kk: usize,
        rhs: Mat,
        n: usize,
        dst: *mut f32,
        ldd: usize,
    ) {
        match self {
            // SAFETY: per the contract; the rows are a slice of the f32 weight.
            Filter::F32(w) => unsafe {
                let a = &w[r0 * kk..(r0 + rows) * kk];
                sgemm(
                    rows,
                    n,
                    kk,
                    dst,
                    ldd,
                    false,
                    Mat {
                        ptr: a.as_ptr(),
                        cs: 1,
                        rs: kk as isize,
                    },
                    rhs,
                    1.0,
                    gemm::Parallelism::None,
                );
            },
            Filter::Coded(q) => {
                let kc = (TILE_FLOATS / rows.max(1)).clamp(16, kk.max(16));
                TileBuf::with(|buf| {
                    let mut k0 = 0;
                    while k0 < kk {
                        let len = kc.min(kk - k0);
                        let a = buf.get(*q, r0, rows, (k0, len));
                        // SAFETY: a is rows x len; rows k0 .. k0 + len of rhs are inside
                        // its kk rows; dst per the contract.
                        unsafe {
                            sgemm(
                                rows,
                                n,
                                len,
                                dst,
                                ldd,
                                k0 > 0,
                                Mat {
                                    ptr: a.as_ptr(),
                                    cs: 1,
                                    rs: len as isize,
                                },
                                Mat {
                                    ptr: rhs.ptr.offset(k0 as isize * rhs.rs),
                                    cs: rhs.cs,
                                    rs: rhs.rs,
                                },
                                1.0,
                                gemm::Parallelism::None,
                            );
                        }
                        k0 += len;
                    }
                });
            }
        }
    }
}

/// Depthwise Conv (one input channel per output channel) with a compressed weight:
/// planes split into tasks as [`Depthwise::run`] does; each task decodes the kernels of
/// its channels and runs them through the f32 depthwise kernel. Writes every element
/// of `out` (`n * c` planes).
#[allow(clippy::too_many_arguments)]
pub(super) fn depthwise(
    q: &dyn TileDecode,
    x: &[f32],
    bias: Option<&[f32]>,
    (ah, aw): (Axis, Axis),
    c: usize,
    act: Option<Activation>,
    out: &mut [MaybeUninit<f32>],
    threads: usize,
) {
    let (ohw, ihw, taps) = (ah.output * aw.output, ah.input * aw.input, q.kk());
    if ohw == 0 || out.is_empty() || c == 0 {
        return;
    }
    let planes = out.len() / ohw;
    let work = planes * ohw * taps;
    let tasks = if threads > 1 {
        (work / 32768).clamp(1, 4 * threads).min(planes)
    } else {
        1
    };
    let per = planes.div_ceil(tasks.max(1));
    let chunk = |i: usize, dst: &mut [MaybeUninit<f32>]| {
        let p1 = i * per + dst.len() / ohw;
        let mut p = i * per;
        while p < p1 {
            let ch = p % c;
            let len = (c - ch).min(p1 - p);
            let d = &mut dst[(p - i * per) * ohw..][..len * ohw];
            Filter::Coded(q).for_tiles(ch, len, taps, |i0, cnt, w| {
                let dw = Depthwise {
                    x: &x[(p + i0) * ihw..][..cnt * ihw],
                    w,
                    bias: bias.map(|b| &b[ch + i0..ch + i0 + cnt]),
                    ah,
                    aw,
                    c: cnt,
                    act,
                };
                dw.run(&mut d[i0 * ohw..][..cnt * ohw], 1);
            });
            p += len;
        }
    };
    if tasks <= 1 {
        chunk(0, out);
    } else {
        crate::cpu::parallel::for_each_chunk(out, per * ohw, &chunk);
    }
}

/// Conv(X, DequantizeLinear(W), B) on f32 `x` (and bias) with the quantized weight
/// decoded tile by tile, followed by `act` if given; `Ok(None)` when the types or
/// ranks are not supported (the caller then runs the two nodes apart).
pub fn dq_conv(
    a: &ConvAttrs,
    x: &Tensor,
    w: &DqWeight<'_>,
    bias: Option<&Tensor>,
    act: Option<Activation>,
    cx: &super::KernelCx<'_>,
) -> Result<Option<Tensor>> {
    conv_coded(a, x, bias, act, cx, || QuantFilter::new(w))
}

/// Conv on f32 `x` (and bias) with the compressed weight that `filter` prepares,
/// decoded tile by tile, followed by `act` if given; `Ok(None)` for other input types
/// or when `filter` gives none.
pub(super) fn conv_coded<F: TileDecode>(
    a: &ConvAttrs,
    x: &Tensor,
    bias: Option<&Tensor>,
    act: Option<Activation>,
    cx: &super::KernelCx<'_>,
    filter: impl FnOnce() -> Result<Option<F>>,
) -> Result<Option<Tensor>> {
    if x.dtype() != DType::F32 || bias.is_some_and(|b| b.dtype() != DType::F32) {
        return Ok(None);
    }
    let Some(f) = filter()? else {
        return Ok(None);
    };
    super::conv::conv_filter(a, x, f.shape(), Filter::Coded(&f), bias, act, cx)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::cpu::kernels::test_util::{cx_pool, rand_vec, t};
    use crate::cpu::kernels::{conv, quant, KernelCx};
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

    /// How a test weight is quantized.
    #[derive(Clone, Copy, Debug)]
    enum Form {
        /// int8 per output channel (axis 0), symmetric.
        Int8Channel,
        /// uint8 per output channel with zero points.
        Uint8Channel,
        /// int4 blocked along the input channels (axis 1); zero points or not.
        Int4Block(usize, bool),
        /// uint4 blocked along axis 1 with zero points.
        Uint4Block(usize),
        /// One int8 scale for the whole weight.
        Int8Tensor,
        /// int8 blocked along the output channels (axis 0), with zero points.
        Int8BlockRows(usize),
        /// uint8 per input channel (axis 1), with zero points.
        Uint8Axis1,
    }

    /// Quantized weight parts: codes, scale, zero point, axis, block.
    fn weight(
        form: Form,
        shape: &[usize],
        seed: u64,
    ) -> (Tensor, Tensor, Option<Tensor>, i64, i64) {
        let (m, cg) = (shape[0], shape[1]);
        let with_blocks = |b: usize, axis: usize| {
            let mut s = shape.to_vec();
            s[axis] = s[axis].div_ceil(b);
            s
        };
        match form {
            Form::Int8Channel => (
                codes(DType::I8, shape, (-127, 127), seed),
                scales(&[m], seed + 1),
                None,
                0,
                0,
            ),
            Form::Uint8Channel => (
                codes(DType::U8, shape, (0, 255), seed),
                scales(&[m], seed + 1),
                Some(codes(DType::U8, &[m], (100, 150), seed + 2)),
                0,
                0,
            ),
            Form::Int4Block(b, zp) => {
                let blocked = with_blocks(b, 1);
                (
                    codes(DType::I4, shape, (-8, 7), seed),
                    scales(&blocked, seed + 1),
                    zp.then(|| codes(DType::I4, &blocked, (-2, 2), seed + 2)),
                    1,
                    b as i64,
                )
            }
            Form::Uint4Block(b) => {
                let blocked = with_blocks(b, 1);
                (
                    codes(DType::U4, shape, (0, 15), seed),
                    scales(&blocked, seed + 1),
                    Some(codes(DType::U4, &blocked, (6, 9), seed + 2)),
                    1,
                    b as i64,
                )
            }
            Form::Int8Tensor => (
                codes(DType::I8, shape, (-128, 127), seed),
                Tensor::scalar_f32(0.02),
                None,
                1,
                0,
            ),
            Form::Int8BlockRows(b) => {
                let blocked = with_blocks(b, 0);
                (
                    codes(DType::I8, shape, (-128, 127), seed),
                    scales(&blocked, seed + 1),
                    Some(codes(DType::I8, &blocked, (-3, 3), seed + 2)),
                    0,
                    b as i64,
                )
            }
            Form::Uint8Axis1 => (
                codes(DType::U8, shape, (0, 255), seed),
                scales(&[cg], seed + 1),
                Some(codes(DType::U8, &[cg], (120, 136), seed + 2)),
                1,
                0,
            ),
        }
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

    /// One geometry: x shape, weight shape, group, strides, dilations, pads.
    pub(in crate::cpu::kernels) struct Case {
        pub x: Vec<usize>,
        pub w: Vec<usize>,
        group: i64,
        strides: Vec<i64>,
        dilations: Vec<i64>,
        pads: Vec<i64>,
    }

    impl Case {
        /// The Conv attributes of the geometry.
        pub fn attrs(&self) -> ConvAttrs {
            ConvAttrs {
                group: Some(self.group),
                strides: Some(self.strides.clone()),
                dilations: Some(self.dilations.clone()),
                pads: Some(self.pads.clone()),
                ..Default::default()
            }
        }
    }

    fn case(x: &[usize], w: &[usize], group: i64, s: &[i64], d: &[i64], p: &[i64]) -> Case {
        Case {
            x: x.to_vec(),
            w: w.to_vec(),
            group,
            strides: s.to_vec(),
            dilations: d.to_vec(),
            pads: p.to_vec(),
        }
    }

    /// Checks the fused conv (with a bias and an activation or not) against
    /// dequantize-then-conv, at the given thread count.
    fn check(c: &Case, form: Form, threads: usize, seed: u64) {
        let (q, s, z, axis, block) = weight(form, &c.w, seed);
        let w = DqWeight {
            q: &q,
            scale: &s,
            zero_point: z.as_ref(),
            axis,
            block,
        };
        assert!(supported(&w));
        let what = format!("{form:?}");
        check_fused(
            c,
            &dequantized(&w),
            (threads, seed),
            &what,
            |a, x, b, act, cx| dq_conv(a, x, &w, b, act, cx).unwrap().unwrap(),
        );
    }

    /// Checks `fused(attrs, x, bias, act, cx)` (with a bias and an activation or not)
    /// against the f32 conv with the decoded weight `wf`, at the given thread count;
    /// `what` names the weight's form in a failure.
    pub(in crate::cpu::kernels) fn check_fused(
        c: &Case,
        wf: &Tensor,
        (threads, seed): (usize, u64),
        what: &str,
        fused: impl Fn(&ConvAttrs, &Tensor, Option<&Tensor>, Option<Activation>, &KernelCx) -> Tensor,
    ) {
        let pool = cx_pool(threads);
        let _installed = pool.enter();
        let cx = KernelCx::new(threads);
        let x = t(&c.x, seed + 10);
        let b = t(&c.w[..1], seed + 11);
        let attrs = c.attrs();
        for (bias, act) in [(None, None), (Some(&b), Some(Activation::Relu))] {
            let got = fused(&attrs, &x, bias, act, &cx);
            let want = conv::conv(&attrs, &[Some(&x), Some(wf), bias], act, &cx)
                .unwrap()
                .unwrap();
            assert_eq!(got.shape(), want.shape());
            let (g, r) = (got.to_f32().unwrap(), want.to_f32().unwrap());
            let scale = r.iter().fold(1e-3f32, |a, v| a.max(v.abs()));
            for (i, (p, q)) in g.iter().zip(&r).enumerate() {
                assert!(
                    (p - q).abs() <= 1e-5 * scale,
                    "{what} x {:?} w {:?} threads {threads} at {i}: {p} vs {q}",
                    c.x,
                    c.w
                );
            }
        }
    }

    /// Conv geometries covering every path of the Conv kernels (see each comment).
    pub(in crate::cpu::kernels) fn cases() -> Vec<Case> {
        vec![
            // Plain 3x3, padded.
            case(
                &[1, 8, 9, 7],
                &[6, 8, 3, 3],
                1,
                &[1, 1],
                &[1, 1],
                &[1, 1, 1, 1],
            ),
            // Strided, dilated, asymmetric pads, two images.
            case(
                &[2, 6, 11, 10],
                &[5, 6, 3, 2],
                1,
                &[2, 1],
                &[1, 2],
                &[0, 2, 1, 0],
            ),
            // Groups.
            case(
                &[1, 12, 8, 8],
                &[9, 4, 3, 3],
                3,
                &[1, 2],
                &[2, 1],
                &[2, 1, 0, 1],
            ),
            // Depthwise, stride 1 and 2, two images.
            case(
                &[2, 10, 12, 11],
                &[10, 1, 3, 3],
                10,
                &[1, 1],
                &[1, 1],
                &[1, 1, 1, 1],
            ),
            case(
                &[1, 7, 13, 12],
                &[7, 1, 3, 3],
                7,
                &[2, 2],
                &[1, 1],
                &[1, 0, 1, 1],
            ),
            // Depthwise with a multiplier of 2 (not the depthwise kernel).
            case(
                &[1, 4, 7, 7],
                &[8, 1, 3, 3],
                4,
                &[1, 1],
                &[1, 1],
                &[1, 1, 1, 1],
            ),
            // Pointwise, and strided pointwise.
            case(
                &[1, 40, 9, 9],
                &[24, 40, 1, 1],
                1,
                &[1, 1],
                &[1, 1],
                &[0, 0, 0, 0],
            ),
            case(
                &[1, 40, 9, 9],
                &[24, 40, 1, 1],
                1,
                &[2, 2],
                &[1, 1],
                &[0, 0, 0, 0],
            ),
            // Wide output (implicit GEMM) with several decoded tiles of channels:
            // kk = 1152, 56 rows per tile, 72 output channels.
            case(
                &[1, 128, 10, 10],
                &[72, 128, 3, 3],
                1,
                &[1, 1],
                &[1, 1],
                &[1, 1, 1, 1],
            ),
            // Narrow output, many channels (split by output channels), several tiles:
            // kk = 2304, 24 rows per tile.
            case(
                &[1, 256, 4, 4],
                &[40, 256, 3, 3],
                1,
                &[1, 1],
                &[1, 1],
                &[1, 1, 1, 1],
            ),
            // Wide strided output (im2col column blocks), several tiles.
            case(
                &[1, 96, 21, 21],
                &[80, 96, 3, 3],
                1,
                &[2, 2],
                &[1, 1],
                &[1, 1, 1, 1],
            ),
            // Narrow output whose weights are decoded in several panels of K
            // (kk = 4608, 128 channels) for the `gemm` crate.
            case(
                &[1, 512, 4, 4],
                &[128, 512, 3, 3],
                1,
                &[1, 1],
                &[1, 1],
                &[1, 1, 1, 1],
            ),
            // 1-D.
            case(&[2, 6, 17], &[5, 6, 3], 1, &[2], &[1], &[1, 1]),
        ]
    }

    #[test]
    fn fused_conv_matches_dequantize_then_conv_over_geometries_and_forms() {
        let forms = [
            Form::Int8Channel,
            Form::Uint8Channel,
            Form::Int4Block(32, false),
            Form::Int4Block(32, true),
            // Blocks that do not divide the channel count (or a group's channels).
            Form::Int4Block(5, true),
            Form::Uint4Block(3),
            Form::Int8Tensor,
            Form::Int8BlockRows(4),
            Form::Uint8Axis1,
        ];
        for (i, c) in cases().iter().enumerate() {
            for (j, &form) in forms.iter().enumerate() {
                for threads in [1, 3] {
                    check(c, form, threads, (i * 100 + j * 10) as u64);
                }
            }
        }
    }

    #[test]
    fn tiles_cover_every_channel_once() {
        let kk = 2700;
        let tile = (TILE_FLOATS / kk / 8 * 8).max(8);
        let m = 2 * tile + 10;
        let (q, s, z, axis, block) = weight(Form::Int4Block(32, true), &[m, 300, 3, 3], 1);
        let w = DqWeight {
            q: &q,
            scale: &s,
            zero_point: z.as_ref(),
            axis,
            block,
        };
        let qf = QuantFilter::new(&w).unwrap().unwrap();
        let f = Filter::Coded(&qf);
        assert_eq!(f.tile_rows(kk), tile);
        assert_eq!(f.len(), m * kk);
        assert_eq!(Filter::F32(&[]).tile_rows(kk), usize::MAX);
        let want = dequantized(&w).to_f32().unwrap();
        for _ in 0..2 {
            // Twice: the second pass reads tiles this thread may still hold.
            let mut seen = Vec::new();
            f.for_tiles(3, 2 * tile + 5, kk, |i0, n, rows| {
                assert!(n <= tile && rows.len() == n * kk);
                assert_eq!(rows, &want[(3 + i0) * kk..(3 + i0 + n) * kk]);
                seen.push((i0, n));
            });
            assert_eq!(seen, vec![(0, tile), (tile, tile), (2 * tile, 5)]);
        }
        // A tile held for one filter is not mistaken for another's.
        let (q2, s2, z2, ..) = weight(Form::Int4Block(32, true), &[m, 300, 3, 3], 2);
        let w2 = DqWeight {
            q: &q2,
            scale: &s2,
            zero_point: z2.as_ref(),
            ..w
        };
        let qf2 = QuantFilter::new(&w2).unwrap().unwrap();
        let want2 = dequantized(&w2).to_f32().unwrap();
        Filter::Coded(&qf2).for_tiles(2 * tile + 3, 5, kk, |_, _, rows| {
            assert_eq!(rows, &want2[(2 * tile + 3) * kk..(2 * tile + 8) * kk]);
        });
    }

    #[test]
    fn bad_parameters_are_errors_and_other_types_are_none() {
        let pool = cx_pool(1);
        let _installed = pool.enter();
        let cx = KernelCx::new(1);
        let q = codes(DType::I8, &[4, 3, 3, 3], (-128, 127), 1);
        let s = scales(&[5], 2);
        let w = DqWeight {
            q: &q,
            scale: &s,
            zero_point: None,
            axis: 0,
            block: 0,
        };
        let x = t(&[1, 3, 5, 5], 3);
        let a = ConvAttrs::default();
        let err = dq_conv(&a, &x, &w, None, None, &cx)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not fit weight [4, 3, 3, 3]"), "{err}");
        let s = scales(&[4], 4);
        let z = codes(DType::I8, &[3], (0, 1), 5);
        let w = DqWeight {
            scale: &s,
            zero_point: Some(&z),
            ..w
        };
        let err = dq_conv(&a, &x, &w, None, None, &cx)
            .unwrap_err()
            .to_string();
        assert!(err.contains("differ in shape"), "{err}");
        let w = DqWeight {
            zero_point: None,
            ..w
        };
        // The input's channels do not fit the weight.
        let err = dq_conv(&a, &t(&[1, 2, 5, 5], 6), &w, None, None, &cx)
            .unwrap_err()
            .to_string();
        assert!(err.contains("group"), "{err}");
        // A 16-bit weight or a 3-D convolution is not taken.
        let q16 = Tensor::from_int_codes(DType::I16, vec![4, 3, 3, 3], &[0; 108]).unwrap();
        assert!(!supported(&DqWeight { q: &q16, ..w }));
        let q5 = codes(DType::I8, &[4, 3, 1, 1, 1], (-1, 1), 7);
        assert!(!supported(&DqWeight { q: &q5, ..w }));
        let x16 = Tensor::from_int_codes(DType::I16, vec![1, 3, 5, 5], &[0; 75]).unwrap();
        assert!(dq_conv(&a, &x16, &w, None, None, &cx).unwrap().is_none());
    }
}
