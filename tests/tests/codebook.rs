//! The `codebook` pass end to end: tiny_lm perplexity and digits_cnn accuracy with
//! 4-bit codebooks (per tensor and per channel); every fixture clustered with 4 bits
//! loads and runs in onnxruntime (graph optimizations off) and in our executor (on the
//! IR and on the written file), agreeing within 1e-3 relative; the file holds half a
//! byte per clustered weight plus the tables; the written file is byte-identical across
//! runs and imports back to the same IR; MatMul/Gemm readers take the fused table-lookup
//! GEMM and every Conv reader the fused codebook Conv (checked against onnxruntime);
//! with `--calib`, activation-weighted k-means lowers tiny_lm's perplexity; the
//! clustered IR of digits_cnn is snapshot-tested. Run with `--nocapture` to see the
//! figures.

use cc_ir::{Compressed, Executor, Graph, Tensor};
use cc_passes::Report;
use cc_tests::{
    assert_deterministic_round_trip, compile_and_save, digits_accuracy, fixture_inputs,
    fixture_models, lm_perplexity, load_inferred, max_rel_error, pass_stat, run_cpu, run_pipeline,
    run_with_calibration, shared_dir, sweep_against_onnxruntime, test_inputs, Oracle, SweepRun,
};
use std::path::Path;

/// A statistic of the codebook pass in a report.
fn stat(r: &Report, key: &str) -> String {
    pass_stat(r, "codebook", key)
}

fn stat_usize(r: &Report, key: &str) -> u64 {
    stat(r, key).parse().unwrap()
}

/// Size of the f32 model in `dir` as we write it (canonicalized, as every pipeline is).
fn f32_written_size(dir: &Path, tmp: &Path) -> u64 {
    let out = tmp.join("f32.onnx");
    let mut g = load_inferred(dir);
    run_pipeline(&mut g, "canonicalize").unwrap();
    cc_ir::onnx::save_model(&g, &out).unwrap();
    std::fs::metadata(&out).unwrap().len()
}

/// Checks the written size against the packing: the file is the f32 model (as we write
/// it) less the clustered weights' f32 bytes plus half a byte per clustered weight and
/// the tables, within `slack` bytes (names, node and type records of the lowering) plus,
/// per channel, the int32 table offsets (4 bytes per channel: at most a quarter of the
/// tables' bytes).
fn assert_packed(r: &Report, f32_size: u64, size: u64, slack: u64, what: &str) {
    let (params, before, after) = (
        stat_usize(r, "codebook_params"),
        stat_usize(r, "weight_bytes_before"),
        stat_usize(r, "weight_bytes_after"),
    );
    assert_eq!(before, params * 4, "{what}");
    assert!(
        after >= params.div_ceil(2) && after < params.div_ceil(2) + params,
        "{what}"
    );
    let tables = after - params.div_ceil(2);
    let slack = slack
        + if what.contains("channel") {
            tables / 4
        } else {
            0
        };
    let expect = f32_size - before + after;
    assert!(
        size <= expect + slack && size + slack >= expect,
        "{what}: file {size} bytes, expected about {expect}"
    );
}

#[test]
fn tiny_lm_perplexity_with_4_bit_codebooks() {
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("models/tiny_lm");
    let tmp = tempfile::tempdir().unwrap();
    let f32_size = std::fs::metadata(dir.join("model.onnx")).unwrap().len();
    let written = f32_written_size(&dir, tmp.path());
    let base = lm_perplexity(&load_inferred(&dir), &dir);
    println!("tiny_lm f32 perplexity {base:.4}, {f32_size} bytes");
    let mut ppl_of = Vec::new();
    for spec in [
        "codebook",
        "codebook{per=tensor}",
        "codebook{per=channel}",
        "codebook{init=kmeans++}",
        "codebook{ops=MatMul|Gather}",
        "codebook{bits=3,per=channel}",
        "codebook{bits=5}",
        "codebook{iters=0}",
        "codebook{iters=5}",
        "codebook{iters=100}",
    ] {
        let out = tmp.path().join("c.onnx");
        let started = std::time::Instant::now();
        let (g, r, size) = compile_and_save(&dir, spec, &out);
        let took = started.elapsed().as_secs_f64();
        let ppl = lm_perplexity(&g, &dir);
        println!(
            "tiny_lm {spec:<30} perplexity {ppl:.4}  file {size} bytes ({:.3}x smaller)  weights {}  weight error {:.4}  compile {took:.2}s",
            f32_size as f64 / size as f64,
            stat(&r, "codebook_weights"),
            stat(&r, "weight_rel_error").parse::<f64>().unwrap()
        );
        if !spec.contains("Gather") {
            assert_packed(&r, written, size, 16 << 10, spec);
        }
        assert!(
            ppl > base * 0.99,
            "{spec}: perplexity {ppl} below f32 {base}?"
        );
        ppl_of.push((spec, ppl, size));
    }
    // The acceptance bound of the issue for 4 bits (int4 rtn block 32 is 3.7187).
    let default = ppl_of[0].1;
    assert!(
        default < base * 1.10,
        "codebook-4 perplexity {default} vs f32 {base}"
    );
    // The default is per tensor: per-channel tables (and their offsets) make the file
    // larger; at about the same size (3 bits per channel: still a larger file) the
    // perplexity is worse than per tensor's with 4 bits.
    assert_eq!(ppl_of[0].1, ppl_of[1].1);
    let (tensor4, channel3) = (ppl_of[1], ppl_of[5]);
    assert!(ppl_of[2].2 > tensor4.2);
    assert!(
        channel3.2 > tensor4.2 && channel3.1 > tensor4.1,
        "{channel3:?} vs {tensor4:?}"
    );
}

#[test]
fn digits_cnn_accuracy_with_4_bit_codebooks() {
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("models/digits_cnn");
    let tmp = tempfile::tempdir().unwrap();
    let f32_size = std::fs::metadata(dir.join("model.onnx")).unwrap().len();
    let written = f32_written_size(&dir, tmp.path());
    let base = digits_accuracy(&load_inferred(&dir), &dir);
    println!("digits_cnn f32: {f32_size} bytes, accuracy {base:.5}");
    for spec in [
        "codebook",
        "codebook{per=channel}",
        "codebook{bits=3,per=channel}",
        "codebook{bits=2}",
    ] {
        let out = tmp.path().join("c.onnx");
        let (g, r, size) = compile_and_save(&dir, spec, &out);
        let acc = digits_accuracy(&g, &dir);
        let acc_file = digits_accuracy(&cc_ir::onnx::load_model(&out).unwrap(), &dir);
        println!(
            "digits_cnn {spec:<24} {size} bytes ({:.3}x smaller), accuracy {acc:.5}, weight error {:.4}",
            f32_size as f64 / size as f64,
            stat(&r, "weight_rel_error").parse::<f64>().unwrap()
        );
        assert_eq!(acc, acc_file, "{spec}: IR vs file");
        assert_packed(&r, written, size, 4 << 10, spec);
        if !spec.contains("bits=2") {
            assert!(acc >= 0.985, "{spec}: accuracy {acc} < 0.985");
        }
    }
}

#[test]
fn every_fixture_with_4_bit_codebooks_agrees_with_onnxruntime() {
    let Some(shared) = shared_dir() else { return };
    let Some(oracle) = Oracle::find() else { return };
    let specs = ["codebook", "codebook{per=channel}"];
    let failures = sweep_against_onnxruntime(&shared, &oracle, &specs, |run| {
        let SweepRun {
            name,
            spec,
            report: r,
            size,
            secs: took,
            worst,
        } = *run;
        format!(
            "{name:<18} {spec:<22} {size:>9} bytes  weights {:>3}  weight error {:<8.4} compile {took:.2}s  ours vs ORT {worst:.3e}",
            stat(r, "codebook_weights"),
            stat(r, "weight_rel_error").parse::<f64>().unwrap_or(0.0)
        )
    });
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn codebook_output_is_byte_identical_across_runs_and_round_trips() {
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("models/digits_cnn");
    let tmp = tempfile::tempdir().unwrap();
    for spec in [
        "codebook",
        "codebook{per=channel,init=kmeans++}",
        "codebook{bits=6}",
    ] {
        // Import raises the written lookups back to codebook values.
        assert_deterministic_round_trip(&dir, spec, tmp.path(), |back| {
            let n = cc_ir::compressed::compressed_values(back)
                .into_iter()
                .filter(|&v| matches!(back.value(v).compressed, Some(Compressed::Codebook(_))))
                .count();
            assert!(n > 0, "{spec}: nothing raised");
        });
    }
}

#[test]
fn codebook_ir_snapshot() {
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("models/digits_cnn");
    let mut g = load_inferred(&dir);
    run_pipeline(&mut g, "codebook").unwrap();
    insta::assert_snapshot!("codebook_digits_cnn", cc_ir::printer::print_graph(&g));
    let mut g = load_inferred(&dir);
    run_pipeline(&mut g, "codebook{per=channel}").unwrap();
    insta::assert_snapshot!(
        "codebook_channel_digits_cnn",
        cc_ir::printer::print_graph(&g)
    );
}

#[test]
fn codebook_gemm_weights_run_through_the_fused_kernel() {
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("models/digits_cnn");
    let inputs = fixture_inputs(&dir);
    for spec in ["codebook", "codebook{per=channel}"] {
        let mut g = load_inferred(&dir);
        run_pipeline(&mut g, spec).unwrap();
        // The reference: the same model with every codebook weight decoded to f32.
        let mut plain = g.clone();
        for v in cc_ir::compressed::compressed_values(&g) {
            let Some(Compressed::Codebook(cw)) = plain.value_mut(v).compressed.take() else {
                panic!("{spec}: not a codebook value")
            };
            let d = cc_ir::compressed::codebook::decode(&cw).unwrap();
            plain.value_mut(v).data =
                Some(Tensor::from_f32(cw.indices.shape().to_vec(), d).unwrap());
        }
        let want = run_cpu(&plain, &inputs);
        let ex = cc_backends::cpu::CpuExecutor::new(2).unwrap();
        let before = ex.fused_cb_gemms();
        let out = ex.run(&g, &inputs).unwrap();
        let err = max_rel_error(&out[0], &want[0]).unwrap();
        assert!(err < 1e-4, "{spec}: fused vs decoded weights {err}");
        // Both Gemm layers take the fused table-lookup GEMM unless fusion is off (the
        // Conv layers take the fused codebook Conv, see
        // `codebook_conv_weights_run_fused_and_agree_with_onnxruntime`).
        if cc_backends::cpu::fusion::enabled() {
            assert_eq!(ex.fused_cb_gemms() - before, 2, "{spec}");
        }
    }
}

/// Number of Conv nodes of `g` whose weight is a codebook value.
fn codebook_convs(g: &Graph) -> u64 {
    g.node_ids()
        .into_iter()
        .filter(|&id| {
            let n = g.node(id);
            matches!(n.op, cc_ir::Op::Conv(_))
                && n.input(1)
                    .is_some_and(|w| matches!(g.value(w).compressed, Some(Compressed::Codebook(_))))
        })
        .count() as u64
}

#[test]
fn codebook_conv_weights_run_fused_and_agree_with_onnxruntime() {
    let Some(shared) = shared_dir() else { return };
    let Some(oracle) = Oracle::find() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let fused = cc_backends::cpu::fusion::enabled();
    let mut failures = Vec::new();
    let mut seen = Vec::new();
    for (name, dir) in fixture_models(&shared) {
        for spec in ["codebook", "codebook{per=channel}"] {
            let out = tmp.path().join(format!("{name}.onnx"));
            let (g, ..) = compile_and_save(&dir, spec, &out);
            let convs = codebook_convs(&g);
            if convs == 0 {
                continue;
            }
            seen.push(name.clone());
            let inputs = fixture_inputs(&dir);
            let ex = cc_backends::cpu::CpuExecutor::new(3).unwrap();
            let ours = ex.run(&g, &inputs).unwrap();
            let ran = ex.fused_cb_convs();
            if fused && ran != convs {
                failures.push(format!(
                    "{name} {spec}: {ran} of {convs} codebook Convs fused"
                ));
            }
            let ort = oracle.run_unoptimized(&out, &test_inputs(&dir)).unwrap();
            let mut worst = 0f64;
            for (a, b) in ours.iter().zip(&ort) {
                worst = worst.max(max_rel_error(a, b).unwrap());
            }
            println!(
                "{name:<18} {spec:<22} codebook Convs {convs:>3}  fused {ran:>3}  ours vs ORT {worst:.3e}"
            );
            if worst > 1e-3 {
                failures.push(format!("{name} {spec}: ours vs ORT {worst:.3e}"));
            }
        }
    }
    for want in [
        "resnet18",
        "mobilenet_v2",
        "squeezenet1_1",
        "shufflenet_v2_x1_0",
        "digits_cnn",
    ] {
        assert!(
            seen.iter().any(|s| s == want),
            "{want}: no codebook Conv weights"
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Runs `spec` over `g` with an executor and the calibration data of `dir`.
fn with_calibration(g: &mut Graph, spec: &str, dir: &Path) -> Report {
    run_with_calibration(g, spec, Some(&dir.join("calibration.pb")), true).unwrap()
}

#[test]
fn calibration_weighted_codebooks() {
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("models/tiny_lm");
    let base = lm_perplexity(&load_inferred(&dir), &dir);
    for (spec, spec_none) in [
        ("codebook", "codebook{weighting=none}"),
        (
            "codebook{per=channel}",
            "codebook{per=channel,weighting=none}",
        ),
    ] {
        let mut g = load_inferred(&dir);
        let r = with_calibration(&mut g, spec, &dir);
        let ppl = lm_perplexity(&g, &dir);
        println!(
            "tiny_lm {spec} with --calib (activation-weighted k-means): perplexity {ppl:.4}, weights weighted {}",
            stat(&r, "calibration_weighted")
        );
        assert_eq!(
            stat(&r, "calibration_weighted"),
            stat(&r, "codebook_weights")
        );
        assert!(ppl < base * 1.10, "{spec}: {ppl} vs f32 {base}");
        // weighting=none ignores the calibration data: the plain result.
        let mut h = load_inferred(&dir);
        let r = with_calibration(&mut h, spec_none, &dir);
        assert_eq!(stat(&r, "calibration_weighted"), "0", "{spec_none}");
        let plain = lm_perplexity(&h, &dir);
        println!("tiny_lm {spec_none}: perplexity {plain:.4}");
        assert!(ppl < plain, "{spec}: weighted {ppl} vs unweighted {plain}");
    }
    let dir = shared.join("models/digits_cnn");
    let mut g = load_inferred(&dir);
    let r = with_calibration(&mut g, "codebook", &dir);
    let acc = digits_accuracy(&g, &dir);
    println!(
        "digits_cnn codebook with --calib: accuracy {acc:.5}, weights weighted {}",
        stat(&r, "calibration_weighted")
    );
    assert!(acc >= 0.985, "{acc}");
}
