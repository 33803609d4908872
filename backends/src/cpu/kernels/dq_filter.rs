//! Quantized Conv weights prepared for decoding: codes (int8/uint8/int4/uint4), f32
//! scales and zero points of any DequantizeLinear layout, decoded a tile of output
//! channels (and a range of their columns) at a time by [`QuantFilter::decode`], exactly
//! as DequantizeLinear computes each element (`(q - zero_point) * scale` in f32).

use super::dq_gemm::DqWeight;
use cc_ir::compressed::ScaleLayout;
use cc_ir::{DType, Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};

/// A constant Conv weight `[M, Cg, spatial..]` stored in a compressed form and decoded
/// a tile of output channels (and a range of their columns) at a time: quantized codes
/// ([`QuantFilter`]) or codebook indices ([`super::cb_conv::CbFilter`]).
pub(crate) trait TileDecode: Sync {
    /// Unique among all filters made by this process (keys the decoded-tile buffers).
    fn id(&self) -> u64;

    /// The weight's shape.
    fn shape(&self) -> &[usize];

    /// Writes columns `k0 .. k0 + kc` of output channels `r0 .. r0 + out.len() / kc`
    /// to `out` (row-major, `kc` per channel), each element as the lowered nodes
    /// compute it.
    fn decode(&self, r0: usize, cols: (usize, usize), out: &mut [f32]);

    /// Elements per output channel.
    fn kk(&self) -> usize {
        self.shape().iter().skip(1).product()
    }
}

/// A fresh filter id (see [`TileDecode::id`]).
pub(super) fn next_filter_id() -> u64 {
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

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
    /// Blocks of `b` along axis 1 (input channels, the form the quant pass writes for
    /// Conv): the parameter of element `(r, c, s)` is `(r * nb + c / b) * taps + s`.
    ChanBlock { b: usize, nb: usize, taps: usize },
    /// Any other layout, element by element.
    Generic(ScaleLayout),
}

/// A constant quantized Conv weight prepared for decoding tiles of output channels.
pub(crate) struct QuantFilter<'a> {
    /// See [`TileDecode::id`].
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
pub(super) mod simd_decode {
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
        nibbles_with(raw, first, out, |v| nibble(v, signed));
    }

    /// `out[j] = f(n)` for the 4-bit code `n` at `first + j` of the packed `raw`
    /// (lowest bits first; `f` sees the code in the low four bits of its byte, the
    /// upper ones unspecified); 0.0 past the end of `raw`.
    #[inline(always)]
    pub(in crate::cpu::kernels) fn nibbles_with(
        raw: &[u8],
        first: usize,
        out: &mut [f32],
        f: impl Fn(u8) -> f32,
    ) {
        let mut i = first;
        let out = match out.split_first_mut() {
            Some((o, rest)) if i % 2 == 1 => {
                *o = raw.get(i / 2).map_or(0.0, |&b| f(b >> 4));
                i += 1;
                rest
            }
            _ => out,
        };
        let pairs = out.len() / 2;
        let src = raw.get(i / 2..).unwrap_or(&[]);
        let (whole, tail) = out.split_at_mut(pairs * 2);
        for (o, &b) in whole.chunks_exact_mut(2).zip(src) {
            o[0] = f(b);
            o[1] = f(b >> 4);
        }
        // Pairs past the end of the data, and a last odd code.
        let have = src.len().min(pairs);
        whole[have * 2..].fill(0.0);
        if let Some(o) = tail.first_mut() {
            *o = src.get(pairs).map_or(0.0, |&b| f(b));
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
        Ok(Some(QuantFilter {
            id: next_filter_id(),
            raw,
            kind,
            shape,
            kk,
            scale,
            zero,
            map,
        }))
    }
}

impl TileDecode for QuantFilter<'_> {
    fn id(&self) -> u64 {
        self.id
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn kk(&self) -> usize {
        self.kk
    }

    /// Dequantizes exactly as DequantizeLinear does (`(q - zero_point) * scale`).
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
