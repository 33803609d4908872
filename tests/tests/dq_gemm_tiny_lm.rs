//! Weight-only int8 quantization of tiny_lm, run through the CPU executor's fused
//! dequantize-GEMM: every constant f32 MatMul weight `W[K, N]` is replaced in code by
//! int8 codes, a per-column scale and a DequantizeLinear(axis=1); the logits must stay
//! close to the f32 model's, and every such pair must run fused (unless
//! `CC_NO_FUSION=1`, when none may). Prints the error and the run times.

use cc_backends::cpu::{fusion, CpuExecutor};
use cc_ir::infer::infer_shapes;
use cc_ir::onnx::{load_model, read_tensor_file};
use cc_ir::{DType, Executor, Graph, Op, Tensor};
use cc_tests::{max_rel_error, shared_dir, test_inputs};
use std::time::Instant;

/// Replaces each constant 2-D f32 MatMul weight by int8 codes + per-column f32 scale +
/// DequantizeLinear(axis=1); returns how many were replaced.
fn quantize_matmul_weights(g: &mut Graph) -> usize {
    let mut count = 0;
    for id in g.node_ids() {
        if !matches!(g.node(id).op, Op::MatMul) {
            continue;
        }
        let Some(wv) = g.node(id).input(1) else {
            continue;
        };
        let Some(w) = g.const_data(wv) else { continue };
        let &[k, n] = w.shape() else { continue };
        if w.dtype() != DType::F32 {
            continue;
        }
        let wf = w.to_f32().unwrap();
        let scale: Vec<f32> = (0..n)
            .map(|c| {
                let m = (0..k).fold(0f32, |m, r| m.max(wf[r * n + c].abs()));
                if m > 0.0 {
                    m / 127.0
                } else {
                    1.0
                }
            })
            .collect();
        let codes: Vec<i8> = wf
            .iter()
            .enumerate()
            .map(|(i, &x)| (x / scale[i % n]).round_ties_even().clamp(-127.0, 127.0) as i8)
            .collect();
        let name = g.value(wv).name().to_string();
        let q = g
            .add_const(
                &g.unique_name(&format!("{name}_q")),
                Tensor::from_i8(vec![k, n], codes).unwrap(),
            )
            .unwrap();
        let s = g
            .add_const(
                &g.unique_name(&format!("{name}_scale")),
                Tensor::from_f32(vec![n], scale).unwrap(),
            )
            .unwrap();
        let out = g
            .add_value(&g.unique_name(&format!("{name}_dq")), None)
            .unwrap();
        let dq_name = g.unique_name(&format!("{name}_dequantize"));
        g.add_node(
            &dq_name,
            Op::DequantizeLinear {
                axis: Some(1),
                block_size: None,
            },
            vec![Some(q), Some(s), None],
            vec![Some(out)],
        )
        .unwrap();
        g.set_input(id, 1, Some(out));
        count += 1;
    }
    count
}

/// Median wall time of `runs` runs, in milliseconds.
fn time_ms(ex: &CpuExecutor, g: &Graph, inputs: &[Tensor], runs: usize) -> f64 {
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            ex.run(g, inputs).unwrap();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

#[test]
fn int8_weight_only_tiny_lm_runs_fused_and_stays_close() {
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("models/tiny_lm");
    let mut g = load_model(&dir.join("model.onnx")).unwrap();
    infer_shapes(&mut g).unwrap();
    let inputs: Vec<Tensor> = test_inputs(&dir)
        .iter()
        .map(|p| read_tensor_file(p).unwrap().1)
        .collect();
    let ex = CpuExecutor::new(2).unwrap();
    let want = ex.run(&g, &inputs).unwrap();
    let mut qg = g.clone();
    let replaced = quantize_matmul_weights(&mut qg);
    assert!(replaced >= 20, "only {replaced} MatMul weights quantized");
    let before = ex.fused_dq_gemms();
    let got = ex.run(&qg, &inputs).unwrap();
    let fused = ex.fused_dq_gemms() - before;
    if fusion::enabled() {
        assert_eq!(fused, replaced as u64, "pairs run fused");
    } else {
        assert_eq!(fused, 0, "CC_NO_FUSION=1 yet pairs ran fused");
    }
    let (g0, w0) = (got[0].to_f32().unwrap(), want[0].to_f32().unwrap());
    let abs = g0
        .iter()
        .zip(&w0)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    let rel = max_rel_error(&got[0], &want[0]).unwrap();
    let runs = 20;
    let t_f32 = time_ms(&ex, &g, &inputs, runs);
    let t_q = time_ms(&ex, &qg, &inputs, runs);
    println!(
        "tiny_lm int8 weight-only: {replaced} MatMuls quantized, {fused} fused; logits max abs error {abs:.3e}, max rel error {rel:.3e}; median run f32 {t_f32:.2} ms, int8 {t_q:.2} ms (fusion {})",
        if fusion::enabled() { "on" } else { "off" }
    );
    assert!(rel <= 5e-2, "logits relative error {rel}");
}
