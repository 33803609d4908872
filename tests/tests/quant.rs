//! The `quant` pass end to end: digits_cnn int8 (per channel) is >= 3.9x smaller on disk
//! with its accuracy kept, int4 blocks of 32 keep >= 98.5%; every fixture quantized with
//! int8 and with int4 blocks of 32 loads and runs in onnxruntime (its graph
//! optimizations off: they rewrite DequantizeLinear→MatMul into a lossy integer MatMul)
//! and in our executor (on the IR and on the written file), agreeing within 1e-3
//! relative; the written file is byte-identical
//! across runs and imports back to the same IR; the quantized IR and report of every fixture are snapshot-tested. Run with
//! `--nocapture` to see the figures.

use cc_ir::{Executor, Tensor};
use cc_passes::Report;
use cc_tests::{
    assert_deterministic_round_trip, compile_and_save, digits_accuracy, fixture_inputs,
    fixture_models, lm_perplexity, load_inferred, max_rel_error, pass_stat, read_inputs, run_cpu,
    run_pipeline, shared_dir, sweep_against_onnxruntime, test_inputs, Oracle, SweepRun,
};

/// A statistic of the quant pass in a report.
fn stat(r: &Report, key: &str) -> String {
    pass_stat(r, "quant", key)
}

#[test]
fn digits_cnn_int8_is_4x_smaller_and_int4_keeps_accuracy() {
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("models/digits_cnn");
    let tmp = tempfile::tempdir().unwrap();
    let f32_size = std::fs::metadata(dir.join("model.onnx")).unwrap().len();
    let base = digits_accuracy(&load_inferred(&dir), &dir);
    println!("digits_cnn f32: {f32_size} bytes, accuracy {base:.5}");

    let out = tmp.path().join("int8.onnx");
    let (g, r, size) = compile_and_save(&dir, "quant", &out);
    let acc = digits_accuracy(&g, &dir);
    let reloaded = cc_ir::onnx::load_model(&out).unwrap();
    let acc_file = digits_accuracy(&reloaded, &dir);
    let ratio = f32_size as f64 / size as f64;
    println!(
        "int8 per channel: {size} bytes ({ratio:.3}x smaller), accuracy {acc:.5} (from file {acc_file:.5}), weight error {}",
        stat(&r, "weight_rel_error")
    );
    assert!(ratio >= 3.9, "int8 file only {ratio:.3}x smaller");
    assert_eq!(acc, acc_file);
    assert!(acc >= base - 1e-9, "int8 accuracy {acc} < f32 {base}");

    let out = tmp.path().join("int4.onnx");
    let (g, r, size) = compile_and_save(&dir, "quant{bits=4,granularity=block,block=32}", &out);
    let acc = digits_accuracy(&g, &dir);
    println!(
        "int4 block 32: {size} bytes ({:.3}x smaller), accuracy {acc:.5}, weight error {}",
        f32_size as f64 / size as f64,
        stat(&r, "weight_rel_error")
    );
    assert!(acc >= 0.985, "int4 block 32 accuracy {acc} < 0.985");
}

#[test]
fn every_fixture_quantized_with_int8_agrees_with_onnxruntime() {
    let Some(shared) = shared_dir() else { return };
    let Some(oracle) = Oracle::find() else { return };
    // int4 blocks need opset 21: opset-17 models with ReduceMean (shufflenet) and the
    // opset-11 legacy digits model are raised to it on the way out.
    let specs = ["quant", "quant{bits=4,granularity=block,block=32}"];
    let failures = sweep_against_onnxruntime(&shared, &oracle, &specs, |run| {
        let SweepRun {
            name,
            spec,
            report: r,
            size,
            worst,
            ..
        } = *run;
        format!(
            "{name:<16} {spec:<44} {size:>9} bytes  weights {:>3}  weight error {:<12.4e} ours vs ORT {worst:.3e}",
            stat(r, "quantized_weights"),
            stat(r, "weight_rel_error").parse::<f64>().unwrap_or(0.0)
        )
    });
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn quantized_output_is_byte_identical_across_runs_and_round_trips() {
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("models/digits_cnn");
    let tmp = tempfile::tempdir().unwrap();
    for spec in [
        "quant",
        "quant{bits=4,granularity=block,block=32,symmetric=false}",
    ] {
        // Import raises the written DequantizeLinear nodes back to quantized values.
        assert_deterministic_round_trip(&dir, spec, tmp.path(), |_| {});
    }
}

#[test]
fn quantized_ir_snapshot() {
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("models/digits_cnn");
    let mut g = load_inferred(&dir);
    run_pipeline(&mut g, "quant{bits=4,granularity=block,block=32}").unwrap();
    insta::assert_snapshot!("quant4_digits_cnn", cc_ir::printer::print_graph(&g));
}

/// The quantized IR and the report (without timings) of every fixture after the default
/// `quant` (int8 weights per channel).
#[test]
fn quantized_ir_and_report_snapshots_of_every_fixture() {
    let Some(shared) = shared_dir() else { return };
    for (name, dir) in fixture_models(&shared) {
        let mut g = load_inferred(&dir);
        let r = run_pipeline(&mut g, "quant").unwrap();
        let text = format!(
            "{}\n{}",
            r.to_table_without_timings(),
            cc_ir::printer::print_graph(&g)
        );
        insta::assert_snapshot!(format!("quant_ir_report_{name}"), text);
    }
}

#[test]
fn quantized_gemm_weights_run_through_the_fused_kernel() {
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("models/digits_cnn");
    let mut g = load_inferred(&dir);
    run_pipeline(&mut g, "quant").unwrap();
    let inputs: Vec<Tensor> = fixture_inputs(&dir);
    let ex = cc_backends::cpu::CpuExecutor::new(2).unwrap();
    let before = ex.fused_dq_gemms();
    let out = ex.run(&g, &inputs).unwrap();
    let want = cc_tests::reference_output(&dir).unwrap();
    assert!(max_rel_error(&out[0], &want).unwrap() < 0.05);
    // Both Gemm layers take the fused dequantize-GEMM unless fusion is switched off.
    if cc_backends::cpu::fusion::enabled() {
        assert_eq!(ex.fused_dq_gemms() - before, 2);
    }
}

#[test]
fn tiny_lm_perplexity_after_weight_quantization() {
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("models/tiny_lm");
    let tmp = tempfile::tempdir().unwrap();
    let base = lm_perplexity(&load_inferred(&dir), &dir);
    println!("tiny_lm f32 perplexity {base:.4}");
    let mut worst = base;
    for (spec, limit) in [
        ("quant", 1.01),
        ("quant{ops=MatMul|Gather}", 1.01),
        ("quant{bits=4,granularity=block,block=32}", 1.10),
        ("quant{bits=4,granularity=block,block=128}", 1.25),
    ] {
        let out = tmp.path().join("q.onnx");
        let (g, report, size) = compile_and_save(&dir, spec, &out);
        let ppl = lm_perplexity(&g, &dir);
        if spec.contains("Gather") {
            // The embedding table is quantized too, and the file still runs in
            // onnxruntime, agreeing with our executor.
            assert_eq!(stat(&report, "quantized_weights"), "30", "{spec}");
            if let Some(oracle) = Oracle::find() {
                let files = test_inputs(&dir);
                let inputs: Vec<Tensor> = read_inputs(&files);
                let ort = oracle.run_unoptimized(&out, &files).unwrap();
                let err = max_rel_error(&run_cpu(&g, &inputs)[0], &ort[0]).unwrap();
                assert!(err < 1e-3, "{spec}: ours vs onnxruntime {err}");
            }
        }
        println!("tiny_lm {spec}: perplexity {ppl:.4}, file {size} bytes");
        assert!(
            ppl < base * limit,
            "{spec}: perplexity {ppl} vs f32 {base} (limit x{limit})"
        );
        assert!(
            ppl > base * 0.99,
            "{spec}: perplexity {ppl} below f32 {base}?"
        );
        worst = worst.max(ppl);
    }
    assert!(worst > base, "quantization changed nothing");
}
