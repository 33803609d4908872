//! Integer GEMM for MatMulInteger/QLinearMatMul: `C[m, n] = A[m, k] · B[k, n]` on i32
//! operands (8-bit codes with their zero points subtracted) with exact wrapping i32
//! accumulation. Rows are split over the installed thread pool; each task walks `k` and
//! `n` in blocks so the slice of `B` it reads stays in cache, and the inner loop
//! (`c_row += a[i, p] · b_row`) is compiled for AVX2 as well, chosen at run time.

use crate::cpu::parallel;

/// Reduction-axis block.
const KB: usize = 128;
/// Column block.
const NB: usize = 512;
/// Rows per parallel task.
const ROWS: usize = 16;

/// `out = a · b` for row-major `a` (`m × k`), `b` (`k × n`), `out` (`m × n`, overwritten);
/// slices shorter than their shapes leave the missing part out.
pub fn gemm(a: &[i32], b: &[i32], m: usize, k: usize, n: usize, out: &mut [i32]) {
    out.iter_mut().for_each(|o| *o = 0);
    if n == 0 || k == 0 || m == 0 {
        return;
    }
    let work = m * k * n;
    let body = |task: usize, c: &mut [i32]| {
        let r0 = task * ROWS;
        block(a, b, r0, k, n, c);
    };
    if work < 1 << 16 {
        for (task, c) in out.chunks_mut(ROWS * n).enumerate() {
            body(task, c);
        }
    } else {
        parallel::for_each_chunk(out, ROWS * n, &body);
    }
}

/// Rows `r0..` of the product into `c` (whole rows of `n`).
fn block(a: &[i32], b: &[i32], r0: usize, k: usize, n: usize, c: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports the feature the function is compiled for.
            unsafe { block_avx2(a, b, r0, k, n, c) };
            return;
        }
    }
    block_plain(a, b, r0, k, n, c);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn block_avx2(a: &[i32], b: &[i32], r0: usize, k: usize, n: usize, c: &mut [i32]) {
    block_plain(a, b, r0, k, n, c);
}

#[inline(always)]
fn block_plain(a: &[i32], b: &[i32], r0: usize, k: usize, n: usize, c: &mut [i32]) {
    let rows = c.len() / n;
    for k0 in (0..k).step_by(KB) {
        let k1 = (k0 + KB).min(k);
        for n0 in (0..n).step_by(NB) {
            let n1 = (n0 + NB).min(n);
            for i in 0..rows {
                let Some(arow) = a.get((r0 + i) * k + k0..(r0 + i) * k + k1) else {
                    return;
                };
                let Some(crow) = c.get_mut(i * n + n0..i * n + n1) else {
                    return;
                };
                for (p, &x) in arow.iter().enumerate() {
                    if x == 0 {
                        continue;
                    }
                    let off = (k0 + p) * n;
                    let Some(brow) = b.get(off + n0..off + n1) else {
                        return;
                    };
                    for (o, &y) in crow.iter_mut().zip(brow) {
                        *o = o.wrapping_add(x.wrapping_mul(y));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[i32], b: &[i32], m: usize, k: usize, n: usize) -> Vec<i32> {
        let mut c = vec![0i32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn blocked_parallel_gemm_matches_the_naive_product() {
        let pool = crate::cpu::kernels::test_util::cx_pool(2);
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 7), (37, 300, 600), (70, 129, 513)] {
            let a: Vec<i32> = (0..m * k).map(|i| (i * 37 % 511) as i32 - 255).collect();
            let b: Vec<i32> = (0..k * n).map(|i| (i * 91 % 255) as i32 - 127).collect();
            let mut c = vec![7i32; m * n];
            pool.install(|| gemm(&a, &b, m, k, n, &mut c));
            assert_eq!(c, naive(&a, &b, m, k, n), "{m}x{k}x{n}");
        }
    }
}
