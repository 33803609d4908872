//! Plugins end to end: the example plugin (plugins/lamp, built as a cdylib by this
//! test) is loaded through the host, `lamp{ratio=0.5},quant` runs on every fixture,
//! every written file runs in onnxruntime and agrees with our executor; digits_cnn
//! accuracy after LAMP pruning is printed; the report and IR of the pipeline with the
//! plugin pass are snapshot-tested. The failure modes (wrong ABI, panics, malformed
//! bytes, missing files) are tested through the binary in cli/tests/plugins.rs.

use cc_passes::plugin_host::load_plugin;
use cc_tests::plugin_build::build_plugins;
use cc_tests::{
    compile_fixture, digits_accuracy, fixture_models, ours_vs_onnxruntime, pass_stat, shared_dir,
    Oracle,
};

/// Builds and loads the example plugin (once per process; loading is idempotent).
fn load_lamp() {
    let libs = build_plugins().unwrap();
    let loaded = load_plugin(&libs.lamp).unwrap();
    assert_eq!(loaded.name, "lamp");
    assert_eq!(loaded.passes, vec!["lamp".to_string()]);
}

#[test]
fn lamp_then_quant_on_every_fixture_runs_in_onnxruntime() {
    let Some(shared) = shared_dir() else { return };
    load_lamp();
    let oracle = Oracle::find();
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (name, dir) in fixture_models(&shared) {
        let (g, r, secs) = compile_fixture(&dir, "lamp{ratio=0.5},quant", false).unwrap();
        let params: f64 = pass_stat(&r, "lamp", "params").parse().unwrap();
        let zeroed: f64 = pass_stat(&r, "lamp", "zeroed").parse().unwrap();
        assert!(params > 0.0, "{name}: no weights selected");
        // floor(0.5 * params), minus weights that were zero already.
        assert!(
            zeroed <= (0.5 * params).floor() && zeroed >= 0.45 * params,
            "{name}"
        );
        assert!(
            pass_stat(&r, "quant", "quantized_weights")
                .parse::<usize>()
                .unwrap()
                > 0
        );
        let out = tmp.path().join(format!("{name}.onnx"));
        cc_ir::onnx::save_model(&g, &out).unwrap();
        let err = match &oracle {
            Some(o) => match ours_vs_onnxruntime(o, &g, &out, &dir) {
                Ok(e) => e,
                Err(e) => {
                    failures.push(format!("{name}: {e}"));
                    continue;
                }
            },
            None => f64::NAN,
        };
        println!(
            "{name}: lamp zeroed {zeroed} of {params} weights ({:.1}%), then int8; \
             ours vs onnxruntime {err:.2e}; {secs:.2} s",
            100.0 * zeroed / params
        );
        if err > 1e-3 {
            failures.push(format!("{name}: ours vs onnxruntime {err:.2e}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn digits_cnn_accuracy_after_lamp() {
    let Some(shared) = shared_dir() else { return };
    load_lamp();
    let dir = shared.join("models/digits_cnn");
    let (f32_graph, _, _) = compile_fixture(&dir, "", false).unwrap();
    let base = digits_accuracy(&f32_graph, &dir);
    for spec in [
        "lamp{ratio=0.5}",
        "lamp{ratio=0.8}",
        "lamp{ratio=0.5},quant",
    ] {
        let (g, r, _) = compile_fixture(&dir, spec, false).unwrap();
        let acc = digits_accuracy(&g, &dir);
        println!(
            "digits_cnn {spec}: accuracy {acc:.4} (f32 {base:.4}); layer density {}..{}",
            pass_stat(&r, "lamp", "min_layer_density"),
            pass_stat(&r, "lamp", "max_layer_density")
        );
        // Half of the weights away by LAMP costs digits_cnn little; 80% still works.
        let floor = if spec.contains("0.8") {
            0.9
        } else {
            base - 0.01
        };
        assert!(acc >= floor, "{spec}: accuracy {acc} (f32 {base})");
    }
}

#[test]
fn plugin_pass_is_listed_and_output_is_deterministic() {
    let Some(shared) = shared_dir() else { return };
    load_lamp();
    let listing = cc_passes::describe_passes();
    let line = listing.lines().find(|l| l.starts_with("lamp ")).unwrap();
    assert!(line.contains("[plugin lamp]"), "{line}");
    assert!(
        listing.contains("ratio=<a number> (default 0.5)"),
        "{listing}"
    );
    let dir = shared.join("models/digits_cnn");
    let bytes = |spec: &str| {
        let (g, _, _) = compile_fixture(&dir, spec, false).unwrap();
        cc_ir::onnx::model_to_bytes(&g).unwrap()
    };
    assert_eq!(bytes("lamp,quant"), bytes("lamp,quant"));
}

/// The report and IR of the pipeline with the plugin pass on digits_cnn.
#[test]
fn pipeline_with_plugin_pass_snapshot() {
    let Some(shared) = shared_dir() else { return };
    load_lamp();
    let dir = shared.join("models/digits_cnn");
    let (g, r, _) = compile_fixture(&dir, "lamp{ratio=0.5},quant{bits=8}", false).unwrap();
    let text = format!(
        "{}\n{}",
        r.to_table_without_timings(),
        cc_ir::printer::print_graph(&g)
    );
    insta::assert_snapshot!("lamp_quant_digits_cnn", text);
}

/// A plugin pass that panics or returns garbage fails its pipeline with an error; the
/// host process goes on and runs the next pipeline, plugin passes included.
#[test]
fn host_keeps_running_after_plugin_failures() {
    let Some(shared) = shared_dir() else { return };
    load_lamp();
    let libs = build_plugins().unwrap();
    load_plugin(&libs.faulty).unwrap();
    let dir = shared.join("models/digits_cnn");
    for (spec, needle) in [
        ("faulty-panic", "panicked at"),
        ("faulty-garbage", "malformed IR"),
        ("faulty-invalid", "invalid graph"),
    ] {
        let err = compile_fixture(&dir, spec, false).unwrap_err();
        assert!(err.contains(needle), "{spec}: {err}");
        assert!(
            err.starts_with(&format!("pass {spec}: plugin faulty (")),
            "{err}"
        );
    }
    let (_, r, _) = compile_fixture(&dir, "lamp{ratio=0.25}", false).unwrap();
    assert_eq!(pass_stat(&r, "lamp", "zeroed"), "46984");
}
