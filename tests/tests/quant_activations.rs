//! `quant{activations=static|dynamic}` end to end: digits_cnn with int8 weights and
//! calibrated int8 activations keeps its accuracy within 0.5 points of f32 with each
//! calibrator (minmax, percentile, entropy); static and dynamic int8 versions of every
//! fixture load and run in onnxruntime (graph optimizations off) and agree with our
//! executor (dynamic: every Conv with a constant weight becomes ConvInteger, every
//! MatMul/Gemm MatMulInteger); the output is byte-identical across runs; tiny_lm's perplexity with static
//! and dynamic int8 is reported. Fixtures without a `calibration.pb` are calibrated on
//! their `test_data_set_0` input (the only data they ship). Run with `--nocapture` to
//! see the figures.
//!
//! Agreement with onnxruntime: within 1e-3 relative (max norm) — except where activation
//! rounding makes that unreachable: a 1e-7 difference between two correct f32 kernels
//! (summation order) moves a value across a rounding boundary, its 8-bit code differs by
//! one, and the flips cascade through deep models (resnet18 static, tiny_lm). Codes and
//! integer products agree exactly given the same inputs; those cases must instead agree
//! within half the quantization error itself in the L2 norm (ours vs onnxruntime against
//! onnxruntime vs the f32 reference output) and are listed as rounding-limited.

use cc_backends::cpu::CpuExecutor;
use cc_ir::{Executor, Graph, Op, Tensor};
use cc_passes::Report;
use cc_tests::{
    digits_accuracy, fixture_models, lm_perplexity, load_inferred, max_rel_error, pass_stat,
    read_inputs, reference_output, run_with_calibration, shared_dir, test_inputs, Oracle,
};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The calibration data of a fixture: its `calibration.pb`, else its
/// `test_data_set_0` inputs.
fn calib_path(dir: &Path) -> PathBuf {
    let p = dir.join("calibration.pb");
    if p.is_file() {
        p
    } else {
        dir.to_path_buf()
    }
}

/// Runs `spec` over `g` with an executor and (optionally) calibration data, verifying
/// after each pass.
fn quantize(g: &mut Graph, spec: &str, calib: Option<&Path>) -> Result<Report, String> {
    run_with_calibration(g, spec, calib, false)
}

/// Loads the fixture in `dir`, quantizes it with `spec` (calibrated on the fixture's
/// data) and writes it to `out`.
fn quantize_to(dir: &Path, spec: &str, out: &Path) -> (Graph, Report) {
    let mut g = load_inferred(dir);
    let r = quantize(&mut g, spec, Some(&calib_path(dir)))
        .unwrap_or_else(|e| panic!("{}: {spec}: {e}", dir.display()));
    cc_ir::onnx::save_model(&g, out).unwrap();
    (g, r)
}

fn stat(r: &Report, key: &str) -> String {
    pass_stat(r, "quant", key)
}

/// The scales of the activation QuantizeLinear nodes, in node order.
fn activation_scales(g: &Graph) -> Vec<f32> {
    g.topo_order()
        .unwrap()
        .into_iter()
        .filter(|&id| matches!(g.node(id).op, Op::QuantizeLinear { .. }))
        .map(|id| {
            let s = g.node(id).input(1).unwrap();
            g.const_data(s).unwrap().to_f32().unwrap()[0]
        })
        .collect()
}

/// `‖got − want‖₂ / ‖want‖₂` (the denominator at least 1e-12).
fn rel_l2(got: &Tensor, want: &Tensor) -> f64 {
    let (g, w) = (
        got.to_f64_numbers().unwrap(),
        want.to_f64_numbers().unwrap(),
    );
    assert_eq!(g.len(), w.len());
    let d: f64 = g.iter().zip(&w).map(|(a, b)| (a - b).powi(2)).sum();
    let n: f64 = w.iter().map(|b| b * b).sum();
    d.sqrt() / n.sqrt().max(1e-12)
}

fn count_ops(g: &Graph, pred: impl Fn(&Op) -> bool) -> usize {
    g.node_ids()
        .into_iter()
        .filter(|&id| pred(&g.node(id).op))
        .count()
}

#[test]
fn digits_cnn_static_int8_keeps_accuracy_with_every_calibrator() {
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("models/digits_cnn");
    let tmp = tempfile::tempdir().unwrap();
    let base = digits_accuracy(&load_inferred(&dir), &dir);
    println!("digits_cnn f32 accuracy {base:.5}");
    let ex = CpuExecutor::new(2).unwrap();
    let data = cc_cli::eval::load_eval_data(&dir).unwrap();
    let mut minmax_scales = Vec::new();
    for calib in ["minmax", "percentile", "entropy"] {
        let spec = format!("quant{{activations=static,calib={calib}}}");
        let a = tmp.path().join("a.onnx");
        let b = tmp.path().join("b.onnx");
        let (g, r) = quantize_to(&dir, &spec, &a);
        quantize_to(&dir, &spec, &b);
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "{spec}: output differs across runs"
        );
        let acc = digits_accuracy(&g, &dir);
        let acc_file = digits_accuracy(&cc_ir::onnx::load_model(&a).unwrap(), &dir);
        let pairs = count_ops(&g, |op| matches!(op, Op::QuantizeLinear { .. }));
        // Percentile and entropy ranges lie inside the observed (minmax) range.
        let scales = activation_scales(&g);
        if calib == "minmax" {
            minmax_scales = scales.clone();
        }
        assert_eq!(scales.len(), minmax_scales.len());
        for (s, m) in scales.iter().zip(&minmax_scales) {
            assert!(
                *s <= m * (1.0 + 1e-6),
                "calib={calib}: scale {s} > minmax {m}"
            );
        }
        let shown: Vec<String> = scales.iter().map(|s| format!("{s:.4}")).collect();
        // Every Conv/Gemm reads a quantized activation; the pairs run fused.
        assert_eq!(stat(&r, "activation_quantized_ops"), "5");
        assert_eq!(pairs.to_string(), stat(&r, "quantized_activations"));
        let before = ex.fused_fake_quants();
        ex.run(&g, &data.inputs).unwrap();
        let fused = ex.fused_fake_quants() - before;
        if std::env::var("CC_NO_FUSION").map_or(true, |v| v.is_empty() || v == "0") {
            assert_eq!(fused, pairs as u64);
        }
        println!(
            "static int8, calib={calib:<10} accuracy {acc:.5} (from file {acc_file:.5}), {pairs} QDQ pairs, {} bytes, activation scales [{}]",
            std::fs::metadata(&a).unwrap().len(),
            shown.join(", ")
        );
        assert_eq!(acc, acc_file);
        assert!(
            acc >= base - 0.005,
            "calib={calib}: accuracy {acc} is more than 0.5 points under f32 {base}"
        );
    }
    let out = tmp.path().join("dyn.onnx");
    let (g, r) = quantize_to(&dir, "quant{activations=dynamic}", &out);
    let again = tmp.path().join("dyn2.onnx");
    quantize_to(&dir, "quant{activations=dynamic}", &again);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
    let acc = digits_accuracy(&g, &dir);
    let convs = count_ops(&g, |op| matches!(op, Op::ConvInteger(_)));
    let convs_f32 = count_ops(&load_inferred(&dir), |op| matches!(op, Op::Conv(_)));
    assert_eq!(stat(&r, "activation_quantized_convs"), convs.to_string());
    assert_eq!(convs, convs_f32, "every Conv becomes ConvInteger");
    assert_eq!(count_ops(&g, |op| matches!(op, Op::Conv(_))), 0);
    println!(
        "dynamic int8 (Conv → ConvInteger ×{convs}, Gemm → MatMulInteger ×{}) accuracy {acc:.5} (f32 {base:.5}, {:+.2} points), {} bytes",
        count_ops(&g, |op| matches!(op, Op::MatMulInteger)),
        100.0 * (acc - base),
        std::fs::metadata(&out).unwrap().len()
    );
    assert!(acc >= base - 0.005, "dynamic accuracy {acc} vs f32 {base}");
}

#[test]
fn static_needs_calibration_and_8_bit_channels() {
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("models/digits_cnn");
    let mut g = load_inferred(&dir);
    let e = quantize(&mut g, "quant{activations=static}", None).unwrap_err();
    assert!(e.contains("needs calibration data"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    let e = quantize(&mut g, "quant{activations=dynamic,bits=4}", None).unwrap_err();
    assert!(e.contains("option activations="), "{e}");
}

#[test]
fn every_fixture_static_and_dynamic_int8_agrees_with_onnxruntime() {
    let Some(shared) = shared_dir() else { return };
    let Some(oracle) = Oracle::find() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut rounding_limited = Vec::new();
    for (name, dir) in fixture_models(&shared) {
        for spec in ["quant{activations=static}", "quant{activations=dynamic}"] {
            let out = tmp.path().join(format!("{name}.onnx"));
            let (g, r) = quantize_to(&dir, spec, &out);
            let files = test_inputs(&dir);
            let inputs: Vec<Tensor> = read_inputs(&files);
            let ex = CpuExecutor::new(2).unwrap();
            let ours = ex.run(&g, &inputs).unwrap();
            let ours_file = ex
                .run(&cc_ir::onnx::load_model(&out).unwrap(), &inputs)
                .unwrap();
            let ort = match oracle.run_unoptimized(&out, &files) {
                Ok(o) => o,
                Err(e) => {
                    failures.push(format!("{name} {spec}: {e}"));
                    continue;
                }
            };
            let mut worst = 0f64;
            for ((a, b), c) in ours.iter().zip(&ort).zip(&ours_file) {
                worst = worst.max(max_rel_error(a, b).unwrap());
                assert_eq!(max_rel_error(a, c).unwrap(), 0.0, "{name}: IR vs file");
            }
            // Output 0 in the L2 norm: ours vs ORT, and ORT vs the f32 reference.
            let (Some(o), Some(t)) = (ours.first(), ort.first()) else {
                failures.push(format!("{name} {spec}: no output"));
                continue;
            };
            let l2 = rel_l2(o, t);
            let qerr = rel_l2(t, &reference_output(&dir).unwrap());
            let mmi = count_ops(&g, |op| matches!(op, Op::MatMulInteger));
            let ci = count_ops(&g, |op| matches!(op, Op::ConvInteger(_)));
            if spec.contains("dynamic") {
                // Every Conv with a constant f32 weight is rewritten (all fixtures' are).
                assert_eq!(stat(&r, "activation_quantized_convs"), ci.to_string());
                assert_eq!(count_ops(&g, |op| matches!(op, Op::Conv(_))), 0, "{name}");
            }
            let verdict = if worst <= 1e-3 {
                "ok"
            } else if l2 <= 0.5 * qerr {
                rounding_limited.push(format!("{name} {spec}"));
                "rounding-limited"
            } else {
                "FAIL"
            };
            println!(
                "{name:<20} {spec:<28} weights {:>3} activations {:>3} ops {:>3} integer matmuls {mmi:>3} convs {ci:>3}  ours vs ORT max {worst:.3e} L2 {l2:.3e}, quantization error L2 {qerr:.3e}  {verdict}",
                stat(&r, "quantized_weights"),
                stat(&r, "quantized_activations"),
                stat(&r, "activation_quantized_ops"),
            );
            if ort.len() != ours.len() || verdict == "FAIL" {
                failures.push(format!(
                    "{name} {spec}: ours vs ORT max {worst:.3e} L2 {l2:.3e}"
                ));
            }
        }
    }
    println!("within 1e-3 except (rounding-limited): {rounding_limited:?}");
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn tiny_lm_perplexity_with_static_and_dynamic_int8() {
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("models/tiny_lm");
    let tmp = tempfile::tempdir().unwrap();
    let timed = |g: &Graph| {
        let t = Instant::now();
        let p = lm_perplexity(g, &dir);
        (p, t.elapsed().as_secs_f64())
    };
    let (base, t0) = timed(&load_inferred(&dir));
    println!("tiny_lm f32 perplexity {base:.4} (eval {t0:.2}s)");
    for spec in [
        "quant{activations=static,calib=minmax}",
        "quant{activations=static,calib=percentile}",
        "quant{activations=static,calib=entropy}",
        "quant{activations=dynamic}",
    ] {
        let out = tmp.path().join("lm.onnx");
        let (g, r) = quantize_to(&dir, spec, &out);
        let (ppl, t) = timed(&g);
        println!(
            "tiny_lm {spec:<44} perplexity {ppl:.4} (eval {t:.2}s), activations {} ops {}",
            stat(&r, "quantized_activations"),
            stat(&r, "activation_quantized_ops")
        );
        assert!(ppl.is_finite() && ppl > 1.0, "{spec}: perplexity {ppl}");
        assert!(
            stat(&r, "activation_quantized_ops")
                .parse::<usize>()
                .unwrap()
                > 0
        );
    }
}
