//! Plugins through the `cc-compile` binary (built with the plugins by
//! `cc_tests::plugin_build`): the example plugin runs with `--plugin LIB --passes
//! lamp,quant` and its output runs in onnxruntime; `CC_PLUGIN_PATH` folders load and
//! their passes are listed; every failure — a plugin of another ABI version, a missing
//! file, a file that is no library, a library without the descriptor symbol, a
//! duplicate pass name, a pass that panics, fails, returns malformed bytes or an
//! invalid graph — is one `error:` line naming the plugin, exit code 2, nothing
//! written. Uses the demo model in the repository, so it runs without ../shared.

use cc_tests::cli_rejection::assert_rejected;
use cc_tests::plugin_build::{build_plugins, PluginLibs};
use cc_tests::{digits_accuracy, ours_vs_onnxruntime, Oracle};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo/digits_cnn")
}

/// Runs cc-compile with `args` on the demo model, output to `dir/out.onnx`.
fn compile(libs: &PluginLibs, dir: &Path, args: &[&str]) -> (Output, PathBuf) {
    let out = dir.join("out.onnx");
    let output = Command::new(&libs.cc_compile)
        .env_remove("CC_PLUGIN_PATH")
        .arg(demo().join("model.onnx"))
        .arg("-o")
        .arg(&out)
        .args(args)
        .output()
        .unwrap();
    (output, out)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn example_plugin_with_quant_runs_and_its_output_runs_in_onnxruntime() {
    let libs = build_plugins().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (output, out) = compile(
        libs,
        tmp.path(),
        &[
            "--plugin",
            path(&libs.lamp),
            "--passes",
            "lamp{ratio=0.5},quant",
            "--report",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("lamp{ratio=0.5,ops=Conv|Gemm|MatMul}"),
        "{stderr}"
    );
    assert!(stderr.contains("zeroed=93968"), "{stderr}");
    let g = cc_ir::onnx::load_model(&out).unwrap();
    let acc = digits_accuracy(&g, &demo());
    let original = cc_ir::onnx::load_model(&demo().join("model.onnx")).unwrap();
    let base = digits_accuracy(&original, &demo());
    println!("cc-compile --plugin lamp --passes lamp{{ratio=0.5}},quant: accuracy {acc:.4} (f32 {base:.4})");
    assert!(acc >= base - 0.01, "accuracy {acc} vs {base}");
    if let Some(oracle) = Oracle::find() {
        let err = ours_vs_onnxruntime(&oracle, &g, &out, &demo()).unwrap();
        println!("ours vs onnxruntime on the written file: {err:.2e}");
        assert!(err < 1e-3, "{err}");
    }
}

#[test]
fn plugin_path_folders_load_and_their_passes_are_listed() {
    let libs = build_plugins().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let plugins = tmp.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::copy(&libs.lamp, plugins.join(libs.lamp.file_name().unwrap())).unwrap();
    let list = Command::new(&libs.cc_compile)
        .env("CC_PLUGIN_PATH", &plugins)
        .arg("--list-passes")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success());
    let line = text.lines().find(|l| l.starts_with("lamp ")).unwrap();
    assert!(
        line.contains("LAMP") && line.ends_with("[plugin lamp]"),
        "{line}"
    );
    assert!(text.contains("ratio=<a number> (default 0.5)"), "{text}");
    // Without the variable the pass is unknown.
    let (output, out) = compile(libs, tmp.path(), &["--passes", "lamp"]);
    assert_rejected(&output, &out, &["unknown pass \"lamp\""]);
    let run = Command::new(&libs.cc_compile)
        .env("CC_PLUGIN_PATH", tmp.path().join("missing"))
        .arg("--list-passes")
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("(from CC_PLUGIN_PATH): cannot list it"));
}

#[test]
fn loading_failures_are_one_line_errors() {
    let libs = build_plugins().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<String>, Vec<String>)> = vec![
        (
            vec!["--plugin".into(), path(&libs.future_abi).into()],
            vec![
                format!("plugin {}:", libs.future_abi.display()),
                "built for plugin ABI version 2, but this cc-compile speaks version 1".into(),
            ],
        ),
        (
            vec!["--plugin".into(), "/no/such/libplugin.so".into()],
            vec!["plugin /no/such/libplugin.so: cannot open".into()],
        ),
        (
            vec!["--plugin".into(), path(&demo().join("model.onnx")).into()],
            vec!["model.onnx: cannot load the library".into()],
        ),
    ];
    for (args, needles) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        let (output, out) = compile(libs, tmp.path(), &args);
        assert_rejected(&output, &out, &needles);
    }
    // The same library under a second name: its pass is already taken.
    let copy = tmp.path().join("libcopy.so");
    std::fs::copy(&libs.lamp, &copy).unwrap();
    let (output, out) = compile(
        libs,
        tmp.path(),
        &[
            "--plugin",
            path(&libs.lamp),
            "--plugin",
            path(&copy),
            "--passes",
            "lamp",
        ],
    );
    assert_rejected(
        &output,
        &out,
        &[
            "plugin lamp (",
            "libcopy.so): pass \"lamp\" is already provided by plugin lamp (",
        ],
    );
    // A real shared library without the descriptor symbol (needs a C compiler).
    let source = tmp.path().join("nosym.c");
    std::fs::write(&source, "int not_a_plugin(void) { return 1; }\n").unwrap();
    let lib = tmp.path().join("libnosym.so");
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&source)
        .status();
    match built {
        Ok(s) if s.success() => {
            let (output, out) = compile(libs, tmp.path(), &["--plugin", path(&lib)]);
            assert_rejected(
                &output,
                &out,
                &["libnosym.so: the library does not export cc_plugin_descriptor"],
            );
        }
        _ => {
            assert!(!cc_tests::in_ci(), "no C compiler under CI");
            println!("skipped the missing-symbol case: no C compiler (cc) here");
        }
    }
}

#[test]
fn failing_plugin_passes_are_one_line_errors() {
    let libs = build_plugins().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let faulty = format!("faulty ({})", libs.faulty.display());
    let cases = [
        (
            "faulty-panic",
            "pass faulty-panic failed: panicked at plugins/test-plugins/faulty/src/lib.rs:",
        ),
        (
            "faulty-fail{why=bad weights}",
            "pass faulty-fail failed: refusing: bad weights",
        ),
        (
            "faulty-garbage",
            "pass faulty-garbage returned malformed IR: IR wire: not a graph message",
        ),
        (
            "faulty-invalid",
            "pass faulty-invalid returned an invalid graph:",
        ),
    ];
    for (passes, needle) in cases {
        let (output, out) = compile(
            libs,
            tmp.path(),
            &["--plugin", path(&libs.faulty), "--passes", passes],
        );
        assert_rejected(&output, &out, &[&format!("plugin {faulty}: "), needle]);
    }
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let (output, _) = compile(
        libs,
        tmp.path(),
        &["--plugin", path(&libs.faulty), "--passes", "faulty-panic"],
    );
    assert!(stderr(&output).contains("index out of bounds in the faulty plugin"));
    // Options are checked by the host against the plugin's schema, values by the pass.
    let (output, out) = compile(
        libs,
        tmp.path(),
        &["--plugin", path(&libs.lamp), "--passes", "lamp{ratio=1.5}"],
    );
    assert_rejected(
        &output,
        &out,
        &["pass lamp failed: option ratio=1.5 is not in [0, 1)"],
    );
    let (output, out) = compile(
        libs,
        tmp.path(),
        &["--plugin", path(&libs.lamp), "--passes", "lamp{rate=0.5}"],
    );
    assert_rejected(
        &output,
        &out,
        &["pass lamp: unknown option \"rate\"; valid options: ratio, ops"],
    );
}
