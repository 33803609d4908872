//! Fused dequantize-Conv: `Conv(X, DequantizeLinear(Wq), B)` for a constant
//! int8/uint8/int4/uint4 weight (per-tensor, per-axis or blocked f32 scales, optional
//! zero points) without materializing the whole f32 weight.
//!
//! The Conv kernels ([`super::conv`], [`super::conv_implicit`], [`super::depthwise`])
//! read their weights through a [`Filter`]: either the f32 weight in memory, or a
//! [`QuantFilter`] that decodes a tile of output channels (at most [`TILE_FLOATS`]
//! weights) into a per-thread buffer right before the GEMM that uses it. Each weight
//! element is dequantized exactly as DequantizeLinear does (`(q - zero_point) * scale`
//! in f32), so results differ from dequantize-then-conv only by the order of the f32
//! sums (not at all, with the same tiles of the same kernels).

use super::conv::Axis;
use super::depthwise::Depthwise;
use super::dq_gemm::DqWeight;
use super::matmul::{sgemm, Mat};
use super::Activation;
use cc_ir::compressed::ScaleLayout;
use cc_ir::op::ConvAttrs;
use cc_ir::{DType, Error, Result, Tensor};
use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering};

/// Most weights decoded at once by one task (256 KiB of f32).
pub const TILE_FLOATS: usize = 256 * 1024;

/// Channels of a blocked weight's parameter pattern (see [`QuantFilter::decode`]).
const PATTERN_CHANNELS: usize = 16;

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

/// How the parameters (scale, zero point) map onto the weight `[M, Cg, spatial..]`,
/// seen as `M` rows of `kk = Cg * taps` elements.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Map {
    /// One parameter for the whole weight.
    Tensor,
    /// One per output channel (per axis 0).
    Row,
    /// Blocks of `b` along axis 1 (input channels): the parameter of element
    /// `(r, c, s)` is `(r * nb + c / b) * taps + s`. Per axis 1 is the same with
    /// `nb = 1`... not quite: see [`Map::Generic`] for that and every other layout.
    ChanBlock { b: usize, nb: usize, taps: usize },
    /// Any other layout, element by element.
    Generic(ScaleLayout),
}

/// A constant quantized Conv weight prepared for decoding tiles of output channels.
pub(crate) struct QuantFilter<'a> {
    /// Unique among all filters made by this process (keys the decoded-tile buffers).
    id: u64,
    raw: &'a [u8],
    kind: Kind,
    /// The weight's shape `[M, Cg, spatial..]`.
    shape: Vec<usize>,
    /// Elements per output channel.
    kk: usize,
    scale: Vec<f32>,
    zero: Vec<f32>,
    map: Map,
}

/// True when the weight can take the fused path: a 3-D or 4-D (1-D or 2-D Conv)
/// int8/uint8/int4/uint4 weight, f32 scale, zero point of the weight's type.
pub fn supported(w: &DqWeight<'_>) -> bool {
    Kind::of(w.q.dtype()).is_some()
        && matches!(w.q.shape().len(), 3 | 4)
        && w.scale.dtype() == DType::F32
        && w.zero_point.is_none_or(|z| z.dtype() == w.q.dtype())
}

/// Code decoding loops, compiled for AVX2 as well and chosen at run time.
mod simd_decode {
    /// `out[j] = (code(src[j]) - z) * s` for int8 (`signed`) or uint8 codes, over the
    /// shorter of the two slices.
    pub fn bytes(src: &[u8], signed: bool, z: f32, s: f32, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports the features the function is compiled for.
                unsafe { bytes_avx512(src, signed, z, s, out) };
                return;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports the features the function is compiled for.
                unsafe { bytes_avx2(src, signed, z, s, out) };
                return;
            }
        }
        bytes_plain(src, signed, z, s, out);
    }

    #[inline(always)]
    fn bytes_plain(src: &[u8], signed: bool, z: f32, s: f32, out: &mut [f32]) {
        if signed {
            for (o, &b) in out.iter_mut().zip(src) {
                *o = (f32::from(b as i8) - z) * s;
            }
        } else {
            for (o, &b) in out.iter_mut().zip(src) {
                *o = (f32::from(b) - z) * s;
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn bytes_avx512(src: &[u8], signed: bool, z: f32, s: f32, out: &mut [f32]) {
        use std::arch::x86_64::*;
        let n = out.len().min(src.len());
        let (vz, vs) = (_mm512_set1_ps(z), _mm512_set1_ps(s));
        let mut j = 0;
        while j + 16 <= n {
            // SAFETY: elements j .. j + 16 lie inside both slices (j + 16 <= n); the
            // loads and stores are unaligned ones.
            unsafe {
                let b = _mm_loadu_si128(src.as_ptr().add(j).cast::<__m128i>());
                let i = if signed {
                    _mm512_cvtepi8_epi32(b)
                } else {
                    _mm512_cvtepu8_epi32(b)
                };
                let v = _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(i), vz), vs);
                _mm512_storeu_ps(out.as_mut_ptr().add(j), v);
            }
            j += 16;
        }
        bytes_plain(&src[j..n], signed, z, s, &mut out[j..n]);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn bytes_avx2(src: &[u8], signed: bool, z: f32, s: f32, out: &mut [f32]) {
        bytes_plain(src, signed, z, s, out);
    }

    /// `out[j]` = 4-bit code `first + j` of the packed `raw` (lowest bits first), as
    /// f32; bytes past the end of `raw` read as zero.
    pub fn nibbles(raw: &[u8], first: usize, signed: bool, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports the features the function is compiled for.
                unsafe { nibbles_avx2(raw, first, signed, out) };
                return;
            }
        }
        nibbles_plain(raw, first, signed, out);
    }

    #[inline(always)]
    fn nibble(v: u8, signed: bool) -> f32 {
        if signed {
            // Sign-extend the low four bits.
            f32::from(((v << 4) as i8) >> 4)
        } else {
            f32::from(v & 0x0f)
        }
    }

    #[inline(always)]
    fn nibbles_plain(raw: &[u8], first: usize, signed: bool, out: &mut [f32]) {
        let mut i = first;
        let out = match out.split_first_mut() {
            Some((o, rest)) if i % 2 == 1 => {
                *o = nibble(raw.get(i / 2).copied().unwrap_or(0) >> 4, signed);
                i += 1;
                rest
            }
            _ => out,
        };
        let pairs = out.len() / 2;
        let src = raw.get(i / 2..).unwrap_or(&[]);
        let (whole, tail) = out.split_at_mut(pairs * 2);
        for (o, &b) in whole.chunks_exact_mut(2).zip(src) {
            o[0] = nibble(b, signed);
            o[1] = nibble(b >> 4, signed);
        }
        // Pairs past the end of the data, and a last odd code.
        let have = src.len().min(pairs);
        whole[have * 2..].fill(0.0);
        if let Some(o) = tail.first_mut() {
            *o = nibble(src.get(pairs).copied().unwrap_or(0), signed);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn nibbles_avx2(raw: &[u8], first: usize, signed: bool, out: &mut [f32]) {
        nibbles_plain(raw, first, signed, out);
    }
}

impl<'a> QuantFilter<'a> {
    /// Checks the weight's parameters as DequantizeLinear does; `Ok(None)` when the
    /// types are not supported here.
    pub fn new(w: &DqWeight<'a>) -> Result<Option<QuantFilter<'a>>> {
        let what = "DequantizeLinear (fused into Conv)";
        let Some(kind) = Kind::of(w.q.dtype()) else {
            return Ok(None);
        };
        if !supported(w) {
            return Ok(None);
        }
        let shape = w.q.shape().to_vec();
        let n = cc_ir::tensor::shape_count(&shape)?;
        let (m, kk) = match shape.first() {
            Some(&m) if m > 0 => (m, n / m),
            _ => (0, 0),
        };
        let raw = w.q.raw()?.as_ref();
        let need = match kind {
            Kind::I8 | Kind::U8 => n,
            Kind::I4 | Kind::U4 => n.div_ceil(2),
        };
        if raw.len() < need {
            return Err(Error::invalid(format!(
                "{what}: weight data is shorter than its shape {shape:?}"
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
                z.int_codes()?.into_iter().map(|v| v as f32).collect()
            }
        };
        let p = w.scale.shape();
        let bad = || {
            Error::invalid(format!(
                "{what}: parameter of shape {p:?} does not fit weight {shape:?} (axis {}, block size {})",
                w.axis, w.block
            ))
        };
        let rank = shape.len();
        let map = if w.block <= 0 && (p.is_empty() || scale.len() == 1 && p.len() <= 1) {
            if scale.is_empty() {
                return Err(bad());
            }
            Map::Tensor
        } else {
            let axis = super::norm_axis(w.axis, rank, what)?;
            let block = usize::try_from(w.block).ok().filter(|&b| b > 0);
            let layout = ScaleLayout::new(&shape, axis, block)?;
            if p != layout.scale_shape(&shape, axis).as_slice() || m == 0 {
                return Err(bad());
            }
            match (axis, block) {
                (0, None) => Map::Row,
                (1, Some(b)) => Map::ChanBlock {
                    b,
                    nb: shape[1].div_ceil(b),
                    taps: shape[2..].iter().product(),
                },
                _ => Map::Generic(layout),
            }
        };
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Ok(Some(QuantFilter {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            raw,
            kind,
            shape,
            kk,
            scale,
            zero,
            map,
        }))
    }

    /// The weight's shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Writes columns `k0 .. k0 + kc` of the dequantized output channels `r0 .. r0 +
    /// out.len() / kc` to `out` (row-major, `kc` per channel).
    fn decode(&self, r0: usize, (k0, kc): (usize, usize), out: &mut [f32]) {
        let kk = self.kk;
        // Parameter patterns of blocked layouts (see `Map::ChanBlock`).
        let (mut pat_s, mut pat_z) = (Vec::new(), Vec::new());
        for (i, row) in out.chunks_exact_mut(kc.max(1)).enumerate() {
            let r = r0 + i;
            let base = r * kk + k0;
            let bytes = matches!(self.kind, Kind::I8 | Kind::U8);
            if bytes && matches!(self.map, Map::Tensor | Map::Row) {
                // One pass: codes, zero point and scale together.
                let p = if self.map == Map::Row { r } else { 0 };
                let (s, z) = (
                    self.scale.get(p).copied().unwrap_or(0.0),
                    self.zero.get(p).copied().unwrap_or(0.0),
                );
                let src = self.raw.get(base..base + kc).unwrap_or(&[]);
                simd_decode::bytes(src, self.kind == Kind::I8, z, s, row);
                continue;
            }
            if bytes {
                let src = self.raw.get(base..base + kc).unwrap_or(&[]);
                simd_decode::bytes(src, self.kind == Kind::I8, 0.0, 1.0, row);
            } else {
                simd_decode::nibbles(self.raw, base, self.kind == Kind::I4, row);
            }
            let param = |k: usize| {
                (
                    self.scale.get(k).copied().unwrap_or(0.0),
                    self.zero.get(k).copied().unwrap_or(0.0),
                )
            };
            match self.map {
                // (8-bit codes with these maps took the one-pass loop above.)
                Map::Tensor | Map::Row => {
                    let (s, z) = param(if self.map == Map::Row { r } else { 0 });
                    row.iter_mut().for_each(|o| *o = (*o - z) * s);
                }
                Map::ChanBlock { b, nb, taps } => {
                    if taps <= 1 {
                        // 1x1 kernels: one parameter per block of `b` channels.
                        let mut j = 0;
                        while j < kc {
                            let c = k0 + j;
                            let len = (b - c % b).min(kc - j);
                            let (s, z) = param(r * nb + c / b);
                            row[j..j + len].iter_mut().for_each(|o| *o = (*o - z) * s);
                            j += len;
                        }
                        continue;
                    }
                    let mut j = 0;
                    while j < kc {
                        let (c, s0) = ((k0 + j) / taps, (k0 + j) % taps);
                        let first = (r * nb + c / b) * taps;
                        let ps = self.scale.get(first..first + taps).unwrap_or(&[]);
                        let pz = self.zero.get(first..first + taps).unwrap_or(&[]);
                        // Whole channels from here to the end of the block (or the
                        // columns): their parameters repeat with period `taps`, applied
                        // through a pattern of several channels so the loop vectorizes.
                        let whole = if s0 == 0 {
                            (b - c % b).min((kc - j) / taps)
                        } else {
                            0
                        };
                        if whole >= 2 && ps.len() == taps && pz.len() == taps {
                            let reps = whole.min(PATTERN_CHANNELS);
                            pat_s.clear();
                            pat_z.clear();
                            for _ in 0..reps {
                                pat_s.extend_from_slice(ps);
                                pat_z.extend_from_slice(pz);
                            }
                            let seg = &mut row[j..j + whole * taps];
                            for chunk in seg.chunks_mut(reps * taps) {
                                for ((o, &s), &z) in chunk.iter_mut().zip(&pat_s).zip(&pat_z) {
                                    *o = (*o - z) * s;
                                }
                            }
                            j += whole * taps;
                            continue;
                        }
                        // One (part of a) channel: parameters `first + t` for tap `t`.
                        let len = (taps - s0).min(kc - j);
                        let (s, z) = (ps.get(s0..).unwrap_or(&[]), pz.get(s0..).unwrap_or(&[]));
                        for ((o, &s), &z) in row[j..j + len].iter_mut().zip(s).zip(z) {
                            *o = (*o - z) * s;
                        }
                        j += len;
                    }
                }
                Map::Generic(layout) => {
                    for (j, o) in row.iter_mut().enumerate() {
                        let (s, z) = param(layout.index(base + j));
                        *o = (*o - z) * s;
                    }
                }
            }
        }
    }
}

/// Conv weights as the kernels read them: rows of `kk` (one per output channel).
#[derive(Clone, Copy)]
pub(crate) enum Filter<'a> {
    /// The f32 weight in memory.
    F32(&'a [f32]),
    /// Quantized codes, decoded a tile of output channels at a time.
    Quant(&'a QuantFilter<'a>),
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
        q: &QuantFilter<'_>,
        r0: usize,
        rows: usize,
        (k0, kc): (usize, usize),
    ) -> &[f32] {
        let key = (q.id, r0, rows, k0, kc);
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
            Filter::Quant(q) => q.shape.iter().product(),
        }
    }

    /// Output channels decoded together: all of them for f32, else as many as fit in
    /// [`TILE_FLOATS`], a multiple of 8 (the GEMM's row tile), at least 8.
    pub fn tile_rows(&self, kk: usize) -> usize {
        match self {
            Filter::F32(_) => usize::MAX,
            Filter::Quant(_) => (TILE_FLOATS / kk.max(1) / 8 * 8).max(8),
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
            Filter::Quant(q) => {
                let tile = self.tile_rows(kk);
                TileBuf::with(|buf| {
                    let mut i = 0;
                    while i < rows {
                        let count = tile.min(rows - i);
                        f(i, count, buf.get(q, r0 + i, count, (0, kk)));
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
            Filter::Quant(q) => {
                let kc = (TILE_FLOATS / rows.max(1)).clamp(16, kk.max(16));
                TileBuf::with(|buf| {
                    let mut k0 = 0;
                    while k0 < kk {
                        let len = kc.min(kk - k0);
                        let a = buf.get(q, r0, rows, (k0, len));
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

/// Depthwise Conv (one input channel per output channel) with a quantized weight:
/// planes split into tasks as [`Depthwise::run`] does; each task decodes the kernels of
/// its channels and runs them through the f32 depthwise kernel. Writes every element
/// of `out` (`n * c` planes).
#[allow(clippy::too_many_arguments)]
pub(super) fn depthwise(
    q: &QuantFilter<'_>,
    x: &[f32],
    bias: Option<&[f32]>,
    (ah, aw): (Axis, Axis),
    c: usize,
    act: Option<Activation>,
    out: &mut [MaybeUninit<f32>],
    threads: usize,
) {
    let (ohw, ihw, taps) = (ah.output * aw.output, ah.input * aw.input, q.kk);
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
            Filter::Quant(q).for_tiles(ch, len, taps, |i0, cnt, w| {
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
    if x.dtype() != DType::F32 || bias.is_some_and(|b| b.dtype() != DType::F32) {
        return Ok(None);
    }
    let Some(q) = QuantFilter::new(w)? else {
        return Ok(None);
    };
    super::conv::conv_filter(a, x, q.shape(), Filter::Quant(&q), bias, act, cx)
}

#[cfg(test)]
mod tests {
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
    struct Case {
        x: Vec<usize>,
        w: Vec<usize>,
        group: i64,
        strides: Vec<i64>,
        dilations: Vec<i64>,
        pads: Vec<i64>,
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
        let pool = cx_pool(threads);
        let _installed = pool.enter();
        let cx = KernelCx::new(threads);
        let (q, s, z, axis, block) = weight(form, &c.w, seed);
        let w = DqWeight {
            q: &q,
            scale: &s,
            zero_point: z.as_ref(),
            axis,
            block,
        };
        assert!(supported(&w));
        let x = t(&c.x, seed + 10);
        let b = t(&c.w[..1], seed + 11);
        let attrs = ConvAttrs {
            group: Some(c.group),
            strides: Some(c.strides.clone()),
            dilations: Some(c.dilations.clone()),
            pads: Some(c.pads.clone()),
            ..Default::default()
        };
        let wf = dequantized(&w);
        for (bias, act) in [(None, None), (Some(&b), Some(Activation::Relu))] {
            let got = dq_conv(&attrs, &x, &w, bias, act, &cx).unwrap().unwrap();
            let want = conv::conv(&attrs, &[Some(&x), Some(&wf), bias], act, &cx)
                .unwrap()
                .unwrap();
            assert_eq!(got.shape(), want.shape());
            let (g, r) = (got.to_f32().unwrap(), want.to_f32().unwrap());
            let scale = r.iter().fold(1e-3f32, |a, v| a.max(v.abs()));
            for (i, (p, q)) in g.iter().zip(&r).enumerate() {
                assert!(
                    (p - q).abs() <= 1e-5 * scale,
                    "{form:?} x {:?} w {:?} threads {threads} at {i}: {p} vs {q}",
                    c.x,
                    c.w
                );
            }
        }
    }

    fn cases() -> Vec<Case> {
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
    fn code_decoding_matches_the_ir_codec() {
        let raw: Vec<u8> = (0..7u32).map(|i| (i * 73 + 5) as u8).collect();
        for signed in [false, true] {
            for first in 0..4 {
                for len in 0..14 {
                    let mut out = vec![f32::NAN; len];
                    simd_decode::nibbles(&raw, first, signed, &mut out);
                    let want: Vec<f32> = (first..first + len)
                        .map(|i| cc_ir::int_codes::sub_byte_code(&raw, 4, signed, i) as f32)
                        .collect();
                    assert_eq!(out, want, "signed {signed} first {first} len {len}");
                }
            }
            // 8-bit codes: whole vectors and a tail.
            let raw: Vec<u8> = (0..41u32).map(|i| (i * 73 + 5) as u8).collect();
            let mut out = vec![f32::NAN; 41];
            simd_decode::bytes(&raw, signed, 3.0, 0.5, &mut out);
            for (o, &b) in out.iter().zip(&raw) {
                let c = if signed {
                    f32::from(b as i8)
                } else {
                    f32::from(b)
                };
                assert_eq!(*o, (c - 3.0) * 0.5);
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
        let f = Filter::Quant(&qf);
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
        Filter::Quant(&qf2).for_tiles(2 * tile + 3, 5, kk, |_, _, rows| {
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
