//! Table lookups of codebook indices (u8, or u4 packed two per byte, lowest bits
//! first): `out[j] = table[code(first + j)]`, vectorized where the CPU allows (a
//! register permute for tables of 16 under AVX-512 or AVX2, gathers for u8 codes under
//! AVX2) and chosen at run time.

use super::dq_filter::simd_decode::nibbles_with;

/// `out[j] = table[code(first + j)]` for the u8 (`u4` false) or packed u4 codes in
/// `raw`; outputs whose code lies past the end of `raw`, or whose entry lies past the
/// end of `table`, are 0.0.
pub fn lookup(raw: &[u8], u4: bool, first: usize, table: &[f32], out: &mut [f32]) {
    if u4 {
        nibbles(raw, first, table, out);
    } else {
        bytes(raw.get(first..).unwrap_or(&[]), table, out);
    }
}

/// The entry of `c` in `table`, 0.0 past its end.
#[inline(always)]
fn at(table: &[f32], c: u8) -> f32 {
    table.get(usize::from(c)).copied().unwrap_or(0.0)
}

fn bytes(src: &[u8], table: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if table.len() >= 256 && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports the features the function is compiled for.
            unsafe { bytes_avx2(src, table, out) };
            return;
        }
    }
    bytes_plain(src, table, out);
}

#[inline(always)]
fn bytes_plain(src: &[u8], table: &[f32], out: &mut [f32]) {
    for (o, &b) in out.iter_mut().zip(src) {
        *o = at(table, b);
    }
    let have = src.len().min(out.len());
    out[have..].fill(0.0);
}

/// Needs `table.len() >= 256` (every u8 code in range).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn bytes_avx2(src: &[u8], table: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = out.len().min(src.len());
    let mut j = 0;
    if table.len() >= 256 {
        while j + 8 <= n {
            // SAFETY: elements j .. j + 8 lie inside both slices (j + 8 <= n); every
            // index is a byte, below 256 <= table.len(); loads and stores are unaligned.
            unsafe {
                let b = _mm_loadl_epi64(src.as_ptr().add(j).cast::<__m128i>());
                let idx = _mm256_cvtepu8_epi32(b);
                let v = _mm256_i32gather_ps::<4>(table.as_ptr(), idx);
                _mm256_storeu_ps(out.as_mut_ptr().add(j), v);
            }
            j += 8;
        }
    }
    bytes_plain(&src[j..], table, &mut out[j..]);
}

fn nibbles(raw: &[u8], first: usize, table: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the features the function is compiled for.
            unsafe { nibbles_avx512(raw, first, table, out) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports the features the function is compiled for.
            unsafe { nibbles_avx2(raw, first, table, out) };
            return;
        }
    }
    nibbles_plain(raw, first, table, out);
}

#[inline(always)]
fn nibbles_plain(raw: &[u8], first: usize, table: &[f32], out: &mut [f32]) {
    nibbles_with(raw, first, out, |c| at(table, c & 0x0f));
}

/// Before a vector loop over `out` from code `first`: writes a first odd code (so
/// the loop starts on a byte), and gives the next code, the next output, the whole
/// bytes of codes the loop may take (limited by the data and by `out`) and the table's
/// first 16 entries, zero-padded.
#[inline(always)]
fn vector_start<'r>(
    raw: &'r [u8],
    first: usize,
    table: &[f32],
    out: &mut [f32],
) -> (usize, usize, &'r [u8], [f32; 16]) {
    let (mut i, mut j) = (first, 0);
    if i % 2 == 1 && !out.is_empty() {
        nibbles_plain(raw, i, table, &mut out[..1]);
        (i, j) = (i + 1, 1);
    }
    let mut lut = [0f32; 16];
    let n = table.len().min(16);
    lut[..n].copy_from_slice(&table[..n]);
    let bytes = ((out.len() - j) / 2).min(raw.len().saturating_sub(i / 2));
    let src = raw.get(i / 2..i / 2 + bytes).unwrap_or(&[]);
    (i, j, src, lut)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn nibbles_avx512(raw: &[u8], first: usize, table: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let (mut i, mut j, src, lut) = vector_start(raw, first, table, out);
    let (bytes, mut b) = (src.len(), 0);
    // SAFETY: lut holds 16 floats.
    let t = unsafe { _mm512_loadu_ps(lut.as_ptr()) };
    while b + 8 <= bytes {
        // SAFETY: bytes b .. b + 8 lie inside `src`; outputs j .. j + 16 inside `out`
        // (2 * bytes <= out.len() - j at the start); unaligned loads and stores.
        unsafe {
            let x = _mm_cvtepu8_epi16(_mm_loadl_epi64(src.as_ptr().add(b).cast::<__m128i>()));
            let lo = _mm_and_si128(x, _mm_set1_epi16(0x0f));
            let hi = _mm_slli_epi16::<8>(_mm_srli_epi16::<4>(x));
            let idx = _mm512_cvtepu8_epi32(_mm_or_si128(lo, hi));
            _mm512_storeu_ps(out.as_mut_ptr().add(j), _mm512_permutexvar_ps(idx, t));
        }
        b += 8;
        j += 16;
        i += 16;
    }
    nibbles_plain(raw, i, table, &mut out[j..]);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn nibbles_avx2(raw: &[u8], first: usize, table: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let (mut i, mut j, src, lut) = vector_start(raw, first, table, out);
    let (bytes, mut b) = (src.len(), 0);
    // SAFETY: lut holds 16 floats.
    let (t0, t1) = unsafe {
        (
            _mm256_loadu_ps(lut.as_ptr()),
            _mm256_loadu_ps(lut.as_ptr().add(8)),
        )
    };
    while b + 4 <= bytes {
        // SAFETY: bytes b .. b + 4 lie inside `src`; outputs j .. j + 8 inside `out`;
        // unaligned loads and stores.
        unsafe {
            let w = src.as_ptr().add(b).cast::<i32>().read_unaligned();
            let x = _mm_cvtepu8_epi16(_mm_cvtsi32_si128(w));
            let lo = _mm_and_si128(x, _mm_set1_epi16(0x0f));
            let hi = _mm_slli_epi16::<8>(_mm_srli_epi16::<4>(x));
            let idx = _mm256_cvtepu8_epi32(_mm_or_si128(lo, hi));
            let (a, c) = (
                _mm256_permutevar8x32_ps(t0, idx),
                _mm256_permutevar8x32_ps(t1, idx),
            );
            // Codes 8..15 (bit 3 set) take the upper half of the table.
            let upper = _mm256_castsi256_ps(_mm256_slli_epi32::<28>(idx));
            _mm256_storeu_ps(out.as_mut_ptr().add(j), _mm256_blendv_ps(a, c, upper));
        }
        b += 4;
        j += 8;
        i += 8;
    }
    nibbles_plain(raw, i, table, &mut out[j..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path (plain, AVX2, AVX-512 where the CPU has them) against the scalar
    /// definition, over starts, lengths, short tables and data that ends early.
    #[test]
    fn lookups_match_the_definition() {
        let raw: Vec<u8> = (0..70u32).map(|i| (i * 73 + 5) as u8).collect();
        let table: Vec<f32> = (0..300).map(|i| i as f32 * 0.5 - 3.0).collect();
        for tlen in [16, 9, 256, 300] {
            let table = &table[..tlen];
            for u4 in [true, false] {
                for first in [0, 1, 2, 7] {
                    for len in [0, 1, 5, 8, 16, 17, 33, 64, 100, 140] {
                        let want: Vec<f32> = (first..first + len)
                            .map(|i| {
                                let c = if u4 {
                                    raw.get(i / 2).map(|b| (b >> ((i % 2) * 4)) & 0xf)
                                } else {
                                    raw.get(i).copied()
                                };
                                c.and_then(|c| table.get(usize::from(c)).copied())
                                    .unwrap_or(0.0)
                            })
                            .collect();
                        let mut out = vec![f32::NAN; len];
                        lookup(&raw, u4, first, table, &mut out);
                        assert_eq!(out, want, "u4 {u4} table {tlen} first {first} len {len}");
                        let mut plain = vec![f32::NAN; len];
                        if u4 {
                            nibbles_plain(&raw, first, table, &mut plain);
                        } else {
                            bytes_plain(raw.get(first..).unwrap_or(&[]), table, &mut plain);
                        }
                        assert_eq!(plain, want);
                        #[cfg(target_arch = "x86_64")]
                        if u4 && std::arch::is_x86_feature_detected!("avx2") {
                            let mut v = vec![f32::NAN; len];
                            // SAFETY: the CPU supports AVX2.
                            unsafe { nibbles_avx2(&raw, first, table, &mut v) };
                            assert_eq!(v, want);
                        }
                    }
                }
            }
        }
    }
}
