//! Small vector loops compiled for AVX2+FMA as well, chosen at run time.

/// `d[i] += a * x[i]` over the shorter of the two slices.
pub fn axpy(d: &mut [f32], x: &[f32], a: f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features the function is compiled for.
            unsafe { axpy_avx2(d, x, a) };
            return;
        }
    }
    axpy_plain(d, x, a);
}

#[inline(always)]
fn axpy_plain(d: &mut [f32], x: &[f32], a: f32) {
    for (o, &v) in d.iter_mut().zip(x) {
        *o += a * v;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(d: &mut [f32], x: &[f32], a: f32) {
    for (o, &v) in d.iter_mut().zip(x) {
        *o = a.mul_add(v, *o);
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axpy_matches_the_plain_loop() {
        let x: Vec<f32> = (0..37).map(|i| i as f32 * 0.5 - 3.0).collect();
        let mut d: Vec<f32> = (0..37).map(|i| i as f32).collect();
        let mut want = d.clone();
        axpy(&mut d, &x, 1.5);
        axpy_plain(&mut want, &x, 1.5);
        for (a, b) in d.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5);
        }
        let expect: f32 = x.iter().zip(&d).map(|(a, b)| a * b).sum();
        assert!((dot(&x, &d) - expect).abs() < 1e-3 * expect.abs().max(1.0));
    }
}
