use cc_backends::cpu::kernels::{conv, KernelCx};
use cc_ir::op::ConvAttrs;
use cc_ir::Tensor;
use std::time::Instant;
fn main() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let cx = KernelCx { pool: &pool, threads: 1 };
    for &(c, m, h, k, s, g) in &[(16usize, 96usize, 112usize, 1usize, 1usize, 1usize), (3, 32, 224, 3, 2, 1), (96, 96, 112, 3, 2, 96), (512, 512, 7, 3, 1, 1)] {
        let x = Tensor::from_f32_vec(vec![1, c, h, h], vec![0.5; c * h * h]).unwrap();
        let w = Tensor::from_f32_vec(vec![m, c / g, k, k], vec![0.25; m * c / g * k * k]).unwrap();
        let b = Tensor::from_f32_vec(vec![m], vec![0.1; m]).unwrap();
        let a = ConvAttrs { group: Some(g as i64), strides: Some(vec![s as i64; 2]), pads: Some(vec![(k / 2) as i64; 4]), ..Default::default() };
        let mut best = f64::MAX;
        for _ in 0..10 {
            let t = Instant::now();
            let o = pool.install(|| conv::conv(&a, &[Some(&x), Some(&w), Some(&b)], None, &cx)).unwrap().unwrap();
            best = best.min(t.elapsed().as_secs_f64() * 1e3);
            drop(o);
        }
        println!("c{c} m{m} h{h} k{k} s{s} g{g}: {best:.3} ms");
    }
}
