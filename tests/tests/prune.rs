//! The `prune` pass end to end over the fixture models: `prune{ratio=0.5}` output runs in
//! onnxruntime with the expected output shapes (params/FLOPs before/after printed), the
//! pruned IR is snapshot-tested, digits_cnn keeps its accuracy at <= 45% of the
//! parameters with activation-aware pruning and reconstruction, and tiny_lm's perplexity
//! with a quarter of its MLP channels pruned is reported with and without
//! reconstruction. Run with `--nocapture` to see the figures.

use cc_ir::{Graph, Tensor};
use cc_passes::Report;
use cc_tests::{
    digits_accuracy, fixture_models, lm_perplexity, load_inferred, max_rel_error, pass_stat,
    read_inputs, run_cpu, run_with_calibration, shared_dir, test_inputs, Oracle,
};
use std::path::Path;

/// Canonicalize + `spec`, verifying after each pass, with an executor and (optionally)
/// calibration data.
fn prune(g: &mut Graph, spec: &str, calib: Option<&Path>) -> Result<Report, String> {
    run_with_calibration(g, spec, calib, true)
}

/// A statistic of the prune pass in a report.
fn stat(r: &Report, key: &str) -> String {
    pass_stat(r, "prune", key)
}

fn params(g: &Graph) -> usize {
    cc_passes::GraphStats::of(g).params
}

#[test]
fn ratio_half_on_every_fixture_runs_in_onnxruntime_with_the_expected_shapes() {
    let Some(shared) = shared_dir() else { return };
    let Some(oracle) = Oracle::find() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (name, dir) in fixture_models(&shared) {
        let mut g = load_inferred(&dir);
        let report = match prune(&mut g, "prune{ratio=0.5}", None) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        println!(
            "{name:<20} params {}  flops {}  groups {} (prunable {})  units {}",
            stat(&report, "params"),
            stat(&report, "flops"),
            stat(&report, "groups"),
            stat(&report, "prunable"),
            stat(&report, "units"),
        );
        let out = tmp.path().join(format!("{name}.onnx"));
        cc_ir::onnx::save_model(&g, &out).unwrap();
        let inputs = test_inputs(&dir);
        let want = match oracle.run(&dir.join("model.onnx"), &inputs) {
            Ok(w) => w,
            Err(e) => {
                failures.push(format!("{name}: original: {e}"));
                continue;
            }
        };
        match oracle.run(&out, &inputs) {
            Ok(got) => {
                let ws: Vec<_> = want.iter().map(|t| t.shape().to_vec()).collect();
                let gs: Vec<_> = got.iter().map(|t| t.shape().to_vec()).collect();
                if ws != gs {
                    failures.push(format!("{name}: output shapes {gs:?}, expected {ws:?}"));
                }
                if got
                    .iter()
                    .filter_map(|t| t.to_f64_numbers().ok())
                    .any(|v| v.iter().any(|x| !x.is_finite()))
                {
                    failures.push(format!("{name}: non-finite outputs"));
                }
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn attention_heads_are_pruned_with_heads_true() {
    let Some(shared) = shared_dir() else { return };
    let Some(oracle) = Oracle::find() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // llama_tiny: 2 layers of 2 key/value heads; tiny_lm: 4 layers of 2, with a symbolic
    // batch, so the key/value repetition's Expand shape is built at run time by one
    // Concat that all layers share (each layer must get its own copy).
    for (name, removed, why) in [
        (
            "llama_tiny",
            "2/4 removed",
            "one of the two key/value heads (with its query heads) in each of the two layers",
        ),
        (
            "tiny_lm",
            "4/8 removed",
            "one of the two key/value heads (with its query heads) in each of the four layers",
        ),
    ] {
        let dir = shared.join("models").join(name);
        let mut g = load_inferred(&dir);
        let report = prune(&mut g, "prune{ratio=0.5,heads=true}", None).unwrap();
        let heads = stat(&report, "heads");
        println!(
            "{name} heads=true: heads {heads}, params {}",
            stat(&report, "params")
        );
        assert_eq!(heads, removed, "{name}: {why}");
        let out = tmp.path().join(format!("{name}_heads.onnx"));
        cc_ir::onnx::save_model(&g, &out).unwrap();
        let inputs = test_inputs(&dir);
        let want = oracle.run(&dir.join("model.onnx"), &inputs).unwrap();
        let got = oracle.run(&out, &inputs).unwrap();
        let shapes = |v: &[Tensor]| v.iter().map(|t| t.shape().to_vec()).collect::<Vec<_>>();
        assert_eq!(shapes(&got), shapes(&want), "{name}");
        // Our executor agrees with onnxruntime on the pruned model.
        let tensors: Vec<Tensor> = read_inputs(&inputs);
        let ours = run_cpu(&g, &tensors);
        let err = max_rel_error(&ours[0], &got[0]).unwrap();
        assert!(err < 1e-3, "{name}: ours vs onnxruntime {err}");
    }
}

#[test]
fn pruned_ir_snapshots() {
    let Some(shared) = shared_dir() else { return };
    for (name, dir) in fixture_models(&shared) {
        let mut g = load_inferred(&dir);
        prune(&mut g, "prune{ratio=0.5}", None).unwrap();
        insta::assert_snapshot!(format!("pruned_{name}"), cc_ir::printer::print_graph(&g));
    }
}

#[test]
fn digits_cnn_keeps_its_accuracy_at_45_percent_of_the_parameters() {
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("models/digits_cnn");
    let calib = dir.join("calibration.pb");
    let g0 = load_inferred(&dir);
    let base = digits_accuracy(&g0, &dir);
    let p0 = params(&g0);
    println!("digits_cnn fp32: accuracy {base:.5}, {p0} params");
    let mut best = 0.0;
    for spec in [
        "prune{params=0.45}",
        "prune{params=0.45,criterion=l1}",
        "prune{params=0.45,criterion=activation}",
        "prune{params=0.45,criterion=activation,reconstruct=true}",
    ] {
        let mut g = load_inferred(&dir);
        let r = prune(&mut g, spec, Some(&calib)).unwrap();
        let kept = params(&g) as f64 / p0 as f64;
        let acc = digits_accuracy(&g, &dir);
        println!(
            "{spec:<58} kept params {kept:.4}  accuracy {acc:.5}  flops {}  reconstruct-error {}",
            stat(&r, "flops"),
            stat(&r, "reconstruct-error")
        );
        assert!(kept <= 0.45, "{spec}: kept {kept}");
        if spec.contains("reconstruct=true") {
            best = acc;
        }
    }
    assert!(best >= 0.98, "accuracy {best} < 0.98 at <= 45% params");
}

/// Perplexity of tiny_lm on its evaluation sequences.
fn perplexity(g: &Graph, dir: &Path) -> f64 {
    lm_perplexity(g, dir)
}

#[test]
fn tiny_lm_perplexity_with_a_quarter_of_the_mlp_channels_pruned() {
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("models/tiny_lm");
    let calib = dir.join("calibration.pb");
    let g0 = load_inferred(&dir);
    let base = perplexity(&g0, &dir);
    println!("tiny_lm fp32 perplexity {base:.4}");
    let mut figures = Vec::new();
    for spec in [
        "prune{ratio=0.25}",
        "prune{ratio=0.25,reconstruct=true}",
        "prune{ratio=0.25,criterion=activation}",
        "prune{ratio=0.25,criterion=activation,reconstruct=true}",
    ] {
        let mut g = load_inferred(&dir);
        let r = prune(&mut g, spec, Some(&calib)).unwrap();
        let ppl = perplexity(&g, &dir);
        println!(
            "{spec:<58} perplexity {ppl:.4}  units {}  params {}  reconstruct-error {}",
            stat(&r, "units"),
            stat(&r, "params"),
            stat(&r, "reconstruct-error")
        );
        // The only prunable channel groups of tiny_lm are its four MLPs (352 each).
        assert_eq!(stat(&r, "units"), "352/1408 removed");
        assert!(ppl.is_finite() && ppl > 1.0);
        figures.push(ppl);
    }
    // Reconstruction must not make things worse than the same pruning without it.
    assert!(figures[1] <= figures[0] * 1.001, "{figures:?}");
    assert!(figures[3] <= figures[2] * 1.001, "{figures:?}");
}

#[test]
fn calibration_data_of_another_model_is_rejected() {
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("models/digits_cnn");
    let mut g = load_inferred(&dir);
    let other = shared.join("models/tiny_lm/calibration.pb");
    let e = prune(&mut g, "prune{criterion=activation}", Some(&other)).unwrap_err();
    assert!(
        e.contains("calibration data") && e.contains("tiny_lm"),
        "{e}"
    );
    let e = prune(&mut g, "prune{ratio=1.2}", None).unwrap_err();
    assert!(e.contains("option ratio="), "{e}");
    let e = prune(&mut g, "prune{reconstruct=true}", None).unwrap_err();
    assert!(e.contains("needs calibration data"), "{e}");
}
