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
    }
}
