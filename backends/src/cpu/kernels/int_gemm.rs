//! Integer GEMM for MatMulInteger/QLinearMatMul: `C[m, n] = A[m, k] · B[k, n]` on i32
//! operands (8-bit codes with their zero points subtracted) with exact wrapping i32
//! accumulation.
//!
//! Large products run on the f32 GEMM, exactly: with `|a| ≤ A` and `|b| ≤ B`, every
//! partial sum over at most `⌊(2^24 - 1) / (A·B)⌋` terms is an integer below 2^24, which
//! f32 represents exactly whatever the summation order (8-bit codes: 258 terms), so the
//! reduction axis is cut into such chunks, each chunk's product is computed in f32 and
//! added into the i32 result. Small products (and operands too large for useful chunks)
//! use a blocked i32 loop: rows split over the installed thread pool, `k` and `n` walked
//! in blocks so the slice of `B` in use stays in cache, the inner loop compiled for AVX2
//! as well, chosen at run time.

use crate::cpu::kernels::KernelCx;
use crate::cpu::parallel;

/// Reduction-axis block.
const KB: usize = 128;
/// Column block.
const NB: usize = 512;
/// Rows per parallel task.
const ROWS: usize = 16;

/// Largest integer below which f32 is exact.
const F32_EXACT: u64 = (1 << 24) - 1;
/// Shortest reduction chunk worth the f32 path.
const MIN_CHUNK: usize = 32;
/// Smallest product (`m·k·n`) sent to the f32 path.
const F32_WORK: usize = 1 << 18;

/// `out = a · b` for row-major `a` (`m × k`), `b` (`k × n`), `out` (`m × n`, overwritten);
/// slices shorter than their shapes leave the missing part out.
pub fn gemm(a: &[i32], b: &[i32], m: usize, k: usize, n: usize, out: &mut [i32]) {
    out.iter_mut().for_each(|o| *o = 0);
    if n == 0 || k == 0 || m == 0 {
        return;
    }
    let work = m * k * n;
    if work >= F32_WORK && a.len() >= m * k && b.len() >= k * n && out.len() >= m * n {
        let amax = a
            .iter()
            .map(|v| u64::from(v.unsigned_abs()))
            .max()
            .unwrap_or(0);
        let bmax = b
            .iter()
            .map(|v| u64::from(v.unsigned_abs()))
            .max()
            .unwrap_or(0);
        if amax == 0 || bmax == 0 {
            return;
        }
        let chunk = (F32_EXACT / (amax * bmax)).min(k as u64) as usize;
        if chunk >= MIN_CHUNK.min(k) && gemm_f32(a, b, (m, k, n), chunk, out) {
            return;
        }
        out.iter_mut().for_each(|o| *o = 0);
    }
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

/// The product through exact f32 GEMMs over reduction chunks of `chunk`; false if the
/// f32 GEMM refused the operands (the caller then uses the integer loop).
fn gemm_f32(
    a: &[i32],
    b: &[i32],
    (m, k, n): (usize, usize, usize),
    chunk: usize,
    out: &mut [i32],
) -> bool {
    let cx = KernelCx::new(parallel::threads());
    let mut af = vec![0f32; m * chunk];
    let mut cf = vec![0f32; m * n];
    for k0 in (0..k).step_by(chunk.max(1)) {
        let kc = chunk.min(k - k0);
        let af = &mut af[..m * kc];
        for (i, row) in af.chunks_mut(kc).enumerate() {
            for (d, &s) in row.iter_mut().zip(&a[i * k + k0..i * k + k0 + kc]) {
                *d = s as f32;
            }
        }
        let bf: Vec<f32> = b[k0 * n..(k0 + kc) * n].iter().map(|&v| v as f32).collect();
        if super::matmul::matmul_slices(af, &bf, &mut cf, (m, kc, n), cx.gemm_par()).is_err() {
            return false;
        }
        for (o, &v) in out.iter_mut().zip(&cf) {
            *o = o.wrapping_add(v as i32);
        }
    }
    true
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
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 5, 7),
            (37, 300, 600),
            (70, 129, 513),
            (64, 700, 96),
        ] {
            let a: Vec<i32> = (0..m * k).map(|i| (i * 37 % 511) as i32 - 255).collect();
            let b: Vec<i32> = (0..k * n).map(|i| (i * 91 % 255) as i32 - 127).collect();
            let mut c = vec![7i32; m * n];
            pool.install(|| gemm(&a, &b, m, k, n, &mut c));
            assert_eq!(c, naive(&a, &b, m, k, n), "{m}x{k}x{n}");
        }
        // Operands too large for exact f32 chunks take the integer loop.
        let (m, k, n) = (64, 64, 80);
        let a: Vec<i32> = (0..m * k).map(|i| (i as i32 % 7 - 3) * 100_000).collect();
        let b: Vec<i32> = (0..k * n).map(|i| (i as i32 % 5 - 2) * 1000).collect();
        let mut c = vec![0i32; m * n];
        pool.install(|| gemm(&a, &b, m, k, n, &mut c));
        let want: Vec<i32> = (0..m * n)
            .map(|e| {
                let (i, j) = (e / n, e % n);
                (0..k).fold(0i32, |s, p| {
                    s.wrapping_add(a[i * k + p].wrapping_mul(b[p * n + j]))
                })
            })
            .collect();
        assert_eq!(c, want);
    }
}
