use std::time::Instant;
fn main() {
    for &(m, n, k) in &[(96usize, 12544usize, 16usize), (32, 12544, 27), (512, 49, 4608), (64, 3136, 576)] {
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; k * n];
        let mut c = vec![0f32; m * n];
        for (acc, par) in [(false, gemm::Parallelism::None), (true, gemm::Parallelism::None)] {
            let mut best = f64::MAX;
            for _ in 0..10 {
                let t = Instant::now();
                unsafe {
                    gemm::gemm(m, n, k, c.as_mut_ptr(), 1, n as isize, acc, a.as_ptr(), 1, k as isize, b.as_ptr(), 1, n as isize, 1.0, 1.0, false, false, false, par);
                }
                best = best.min(t.elapsed().as_secs_f64() * 1e3);
            }
            println!("{m}x{n}x{k} acc={acc}: {best:.3} ms, {:.1} GFLOPS", 2.0 * (m * n * k) as f64 / best / 1e6);
        }
    }
}
