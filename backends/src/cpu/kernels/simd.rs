//! Small vector loops compiled for AVX2+FMA as well, chosen at run time.

/// The dot product of two slices (over the shorter length), with eight partial sums.
pub fn dot(x: &[f32], y: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features the function is compiled for.
            return unsafe { dot_avx2(x, y) };
        }
    }
    dot_plain(x, y)
}

#[inline(always)]
fn dot_plain(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail: f32 = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in xc.zip(yc) {
        for i in 0..8 {
            acc[i] = a[i].mul_add(b[i], acc[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(x: &[f32], y: &[f32]) -> f32 {
    dot_plain(x, y)
}

/// `out[i] = 1 / (1 + e^-x[i])` over the shorter of the two slices (AVX2 when present).
pub fn sigmoid(out: &mut [std::mem::MaybeUninit<f32>], x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features the function is compiled for.
            unsafe { sigmoid_avx2(out, x) };
            return;
        }
    }
    sigmoid_plain(out, x);
}

#[inline(always)]
fn sigmoid_plain(out: &mut [std::mem::MaybeUninit<f32>], x: &[f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        o.write(1.0 / (1.0 + fast_exp(-v)));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sigmoid_avx2(out: &mut [std::mem::MaybeUninit<f32>], x: &[f32]) {
    sigmoid_plain(out, x);
}

/// The largest element (NaN ignored, -inf for none), in eight lanes so it vectorizes.
#[inline(always)]
fn max8(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = if v > *a { v } else { *a };
        }
    }
    acc.iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |a, &v| if v > a { v } else { a })
}

/// The sum of a slice in eight partial sums (vectorizes).
#[inline(always)]
pub(super) fn sum8(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// One softmax row: `o[i] = e^(s[i] - max) / sum` (AVX2 when present); `o` and `s`
/// have the same length.
pub fn softmax_row(o: &mut [f32], s: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features the function is compiled for.
            unsafe { softmax_row_avx2(o, s) };
            return;
        }
    }
    softmax_row_plain(o, s);
}

#[inline(always)]
fn softmax_row_plain(o: &mut [f32], s: &[f32]) {
    let m = max8(s);
    for (o, &v) in o.iter_mut().zip(s) {
        *o = fast_exp(v - m);
    }
    let r = 1.0 / sum8(o);
    o.iter_mut().for_each(|o| *o *= r);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_row_avx2(o: &mut [f32], s: &[f32]) {
    softmax_row_plain(o, s);
}

/// e^x in f32 without branches or library calls, so loops over it vectorize: range
/// reduction by ln 2 (Cody–Waite) and Cephes' degree-6 polynomial; relative error below
/// 4e-7 across the range. Below -86.9 (e^x < 2e-38) gives 0, above ln(f32::MAX) gives infinity,
/// NaN stays NaN.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const HI: f32 = 88.72;
    const LO: f32 = -86.9;
    let c = if x > HI { HI } else { x };
    let c = if c < LO { LO } else { c };
    // Round to nearest by the 1.5 * 2^23 trick (no SSE4.1 round instruction needed).
    // The integer n also sits in the low mantissa bits of `t`, read without a float to
    // int conversion (which would not vectorize).
    let t = c * std::f32::consts::LOG2_E + 12_582_912.0;
    let n = t - 12_582_912.0;
    let ni = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let r = c - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^(n-1) (n is in -125..=128 after the clamp), doubled after the product.
    let scale = f32::from_bits(((ni + 126) << 23) as u32);
    let v = y * scale * 2.0;
    let v = if x < LO { 0.0 } else { v };
    let v = if x > HI { f32::INFINITY } else { v };
    if x.is_nan() {
        x
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_matches_the_formula() {
        let x: Vec<f32> = (0..100).map(|i| (i as f32 - 50.0) * 0.37).collect();
        let mut out = vec![std::mem::MaybeUninit::new(0f32); x.len()];
        sigmoid(&mut out, &x);
        for (o, v) in out.iter().zip(&x) {
            // SAFETY: every element was initialized above.
            let got = unsafe { o.assume_init() };
            let want = 1.0 / (1.0 + (-v).exp());
            assert!(
                (got - want).abs() <= 1e-6 * want.max(1e-30),
                "{v}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn fast_exp_is_close_to_exp() {
        let mut x = -100.0f32;
        while x < 100.0 {
            let (got, want) = (fast_exp(x), x.exp());
            if want.is_finite() && want > 1e-37 {
                assert!(
                    (got - want).abs() <= 4e-7 * want,
                    "exp({x}): {got} vs {want}"
                );
            }
            x += 0.013;
        }
        assert_eq!(fast_exp(-200.0), 0.0);
        assert_eq!(fast_exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(fast_exp(f32::INFINITY), f32::INFINITY);
        assert!(fast_exp(f32::NAN).is_nan());
        assert_eq!(fast_exp(0.0), 1.0);
    }

    #[test]
    fn dot_matches_the_plain_sum() {
        let x: Vec<f32> = (0..37).map(|i| i as f32 * 0.5 - 3.0).collect();
        let d: Vec<f32> = (0..37).map(|i| i as f32).collect();
        let expect: f32 = x.iter().zip(&d).map(|(a, b)| a * b).sum();
        assert!((dot(&x, &d) - expect).abs() < 1e-3 * expect.abs().max(1.0));
    }
}
