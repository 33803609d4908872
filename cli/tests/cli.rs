//! The `cc-compile` binary end to end: bad input gives one line and exit code 2 with no
//! output written; good input gives byte-identical output across runs.

use onnx_protobuf::{Message, ModelProto, NodeProto, OperatorSetIdProto, ValueInfoProto};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cc-compile"))
}

fn demo_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo/digits_cnn/model.onnx")
}

/// Runs cc-compile on `model` with extra args, writing to `dir/out.onnx`.
fn compile(dir: &Path, model: &Path, args: &[&str]) -> (Output, PathBuf) {
    let out = dir.join("out.onnx");
    let output = bin()
        .arg(model)
        .arg("-o")
        .arg(&out)
        .args(args)
        .output()
        .unwrap();
    (output, out)
}

#[path = "../../tests/src/cli_rejection.rs"]
mod cli_rejection;
use cli_rejection::assert_rejected;

fn value(name: &str) -> ValueInfoProto {
    let mut v = ValueInfoProto::new();
    v.name = name.into();
    v
}

fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    let mut n = NodeProto::new();
    n.op_type = op.into();
    n.name = format!("{op}_{}", outputs.join("_"));
    n.input = inputs.iter().map(|s| s.to_string()).collect();
    n.output = outputs.iter().map(|s| s.to_string()).collect();
    n
}

/// A model `x -> nodes -> y` written to `dir/name`.
fn write_model(dir: &Path, name: &str, nodes: Vec<NodeProto>) -> PathBuf {
    let mut m = ModelProto::new();
    m.ir_version = 8;
    let mut op = OperatorSetIdProto::new();
    op.version = 17;
    m.opset_import.push(op);
    let g = m.graph.mut_or_insert_default();
    g.name = "g".into();
    g.input.push(value("x"));
    g.output.push(value("y"));
    g.node = nodes;
    let path = dir.join(name);
    std::fs::write(&path, m.write_to_bytes().unwrap()).unwrap();
    path
}

#[test]
fn truncated_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(demo_model()).unwrap();
    let model = dir.path().join("truncated.onnx");
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    let (o, out) = compile(dir.path(), &model, &[]);
    assert_rejected(&o, &out, &["truncated.onnx"]);
}

#[test]
fn non_onnx_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("notes.onnx");
    std::fs::write(&model, "this is a text file, not a model\n").unwrap();
    let (o, out) = compile(dir.path(), &model, &[]);
    assert_rejected(&o, &out, &["not an ONNX model"]);
}

#[test]
fn missing_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = compile(dir.path(), &dir.path().join("absent.onnx"), &[]);
    assert_rejected(&o, &out, &["absent.onnx"]);
}

#[test]
fn cyclic_graph_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(
        dir.path(),
        "cycle.onnx",
        vec![
            node("Add", &["x", "b"], &["a"]),
            node("Relu", &["a"], &["b"]),
            node("Identity", &["a"], &["y"]),
        ],
    );
    let (o, out) = compile(dir.path(), &model, &[]);
    assert_rejected(&o, &out, &["cycle"]);
}

#[test]
fn dangling_input_name_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(
        dir.path(),
        "dangling.onnx",
        vec![node("Add", &["x", "nowhere"], &["y"])],
    );
    let (o, out) = compile(dir.path(), &model, &[]);
    assert_rejected(&o, &out, &["nowhere"]);
}

#[test]
fn unknown_pass_is_rejected_with_the_list_of_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = compile(dir.path(), &demo_model(), &["--passes", "fold,nosuchpass"]);
    assert_rejected(&o, &out, &["nosuchpass"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("dce"));
}

#[test]
fn malformed_options_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for (passes, needle) in [
        ("fold{", "'{' is never closed"),
        (
            "fold{nosuchoption=1}",
            "unknown option \"nosuchoption\"; valid options",
        ),
        ("fold{=1}", "expected an option name"),
        ("fold,,dce", "expected a pass name"),
        ("fold{growth=abc}", "growth=\"abc\" is not a number"),
    ] {
        let (o, out) = compile(dir.path(), &demo_model(), &["--passes", passes]);
        assert_rejected(&o, &out, &[needle]);
    }
}

#[test]
fn output_is_byte_identical_across_runs() {
    let calib = demo_model().with_file_name("calibration.pb");
    let calib = calib.to_str().unwrap();
    // `fold`, and the README's main command (pruning with calibration, on threads).
    for args in [
        vec!["--passes", "fold"],
        vec![
            "--passes",
            "prune{params=0.45,criterion=activation,reconstruct=true}",
            "--calib",
            calib,
        ],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.onnx");
        let b = dir.path().join("b.onnx");
        for out in [&a, &b] {
            let o = bin()
                .arg(demo_model())
                .args(&args)
                .arg("-o")
                .arg(out)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
        assert!(!a.is_empty());
        assert!(a == b, "{args:?}: two runs wrote different bytes");
    }
}

#[test]
fn default_output_name_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("digits.onnx");
    std::fs::copy(demo_model(), &model).unwrap();
    let json = dir.path().join("report.json");
    let o = bin()
        .arg(&model)
        .arg("--report")
        .arg("--report-json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(dir.path().join("digits.cc.onnx").is_file());
    let table = String::from_utf8_lossy(&o.stderr);
    assert!(table.contains("canonicalize"), "{table}");
    let report = std::fs::read_to_string(json).unwrap();
    assert!(report.contains("\"passes\""), "{report}");
}

#[test]
fn list_passes_names_the_canonicalization_passes() {
    let o = bin().arg("--list-passes").output().unwrap();
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for p in [
        "canonicalize",
        "fold",
        "fold-batchnorm",
        "remove-identity",
        "dce",
    ] {
        assert!(text.contains(p), "{p} missing from:\n{text}");
    }
}

#[test]
fn print_ir_shows_the_canonical_text() {
    let dir = tempfile::tempdir().unwrap();
    let (o, _) = compile(dir.path(), &demo_model(), &["--print-ir"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("nodes:") && text.contains("Conv"), "{text}");
}

#[test]
fn print_ir_after_and_verify_each() {
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = compile(
        dir.path(),
        &demo_model(),
        &[
            "--passes",
            "fold,dce",
            "--verify-each",
            "--print-ir-after",
            "dce",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.is_file());
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(text.matches("nodes:").count(), 1, "{text}");
    let (o, _) = compile(
        dir.path(),
        &demo_model(),
        &["--no-canonicalize", "--print-ir-after", "all", "--report"],
    );
    assert!(o.status.success());
    assert!(!String::from_utf8_lossy(&o.stderr).contains("canonicalize"));
}

// ---- `cc-compile run` and `cc-compile eval` ----

/// The demo model's folder (model, test_data_set_0, labels.pb).
fn demo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo/digits_cnn")
}

/// `x -> Relu -> y`, which the CPU executor runs whatever else it supports.
fn relu_model(dir: &Path) -> PathBuf {
    write_model(dir, "relu.onnx", vec![node("Relu", &["x"], &["y"])])
}

fn write_tensor(path: &Path, name: &str, t: &cc_ir::Tensor) {
    cc_ir::onnx::write_tensor_file(path, name, t).unwrap();
}

#[test]
fn run_prints_outputs_and_writes_them() {
    let dir = tempfile::tempdir().unwrap();
    let model = relu_model(dir.path());
    let x = dir.path().join("x.pb");
    let t = cc_ir::Tensor::from_f32(vec![2, 2], vec![-1.0, 2.0, 3.0, -4.0]).unwrap();
    write_tensor(&x, "x", &t);
    let y = dir.path().join("y.pb");
    let all = dir.path().join("outs");
    let o = bin()
        .arg("run")
        .arg(&model)
        .arg("--input")
        .arg(&x)
        .arg("-o")
        .arg(&y)
        .arg("--output-dir")
        .arg(&all)
        .args(["--threads", "2"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "y: f32[2,2] min=0 max=3 mean=1.25\n"
    );
    for p in [y, all.join("output_0.pb")] {
        let (name, got) = cc_ir::onnx::read_tensor_file(&p).unwrap();
        assert_eq!(name, "y");
        assert_eq!(got.to_f32().unwrap(), vec![0.0, 2.0, 3.0, 0.0]);
    }
}

/// Runs `cc-compile run` on the demo model with the given input files, output `dir/y.pb`.
fn run_demo(dir: &Path, inputs: &[&Path]) -> (Output, PathBuf) {
    let out = dir.join("y.pb");
    let mut cmd = bin();
    cmd.arg("run").arg(demo_model());
    for i in inputs {
        cmd.arg("--input").arg(i);
    }
    let o = cmd.arg("-o").arg(&out).output().unwrap();
    (o, out)
}

#[test]
fn run_rejects_wrong_shape_type_count_and_unreadable_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let shape = dir.path().join("shape.pb");
    let t = cc_ir::Tensor::from_f32(vec![1, 1, 4, 4], vec![0.0; 16]).unwrap();
    write_tensor(&shape, "input", &t);
    let (o, out) = run_demo(dir.path(), &[&shape]);
    assert_rejected(&o, &out, &["\"input\" expects shape"]);

    let dtype = dir.path().join("dtype.pb");
    let t = cc_ir::Tensor::from_i64(vec![1, 1, 8, 8], vec![0; 64]).unwrap();
    write_tensor(&dtype, "input", &t);
    let (o, out) = run_demo(dir.path(), &[&dtype]);
    assert_rejected(&o, &out, &["expects element type f32"]);

    let (o, out) = run_demo(dir.path(), &[]);
    assert_rejected(&o, &out, &["takes 1 input(s) (input)"]);

    let text = dir.path().join("text.pb");
    std::fs::write(&text, "not a tensor\n").unwrap();
    let (o, out) = run_demo(dir.path(), &[&text]);
    assert_rejected(&o, &out, &["text.pb"]);

    let (o, out) = run_demo(dir.path(), &[&dir.path().join("absent.pb")]);
    assert_rejected(&o, &out, &["absent.pb"]);
}

#[test]
fn eval_compares_two_models_and_writes_json() {
    let dir = tempfile::tempdir().unwrap();
    let model = relu_model(dir.path());
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let x = cc_ir::Tensor::from_f32(vec![2, 3], vec![1.0, -2.0, 0.5, -1.0, 0.0, 2.0]).unwrap();
    write_tensor(&data.join("input_0.pb"), "x", &x);
    let labels = cc_ir::Tensor::from_i64(vec![2], vec![0, 1]).unwrap();
    write_tensor(&data.join("labels.pb"), "labels", &labels);
    let json = dir.path().join("eval.json");
    let o = bin()
        .arg("eval")
        .arg(&model)
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8_lossy(&o.stdout);
    // Argmaxes are 0 and 2: one of two labels right, in both models.
    assert_eq!(table.matches("0.50000 (1/2)").count(), 2, "{table}");
    let report = std::fs::read_to_string(&json).unwrap();
    assert!(report.contains("\"top1_agreement\": 1.0"), "{report}");
    assert!(report.contains("\"max_abs_error\": 0.0"), "{report}");
}

#[test]
fn eval_rejects_a_missing_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("eval.json");
    let o = bin()
        .arg("eval")
        .arg(demo_model())
        .arg(demo_model())
        .arg("--data")
        .arg(dir.path().join("nodata"))
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert_rejected(&o, &json, &["data folder"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("nodata"));
}

#[test]
fn eval_of_the_demo_model_against_itself_reports_its_accuracy() {
    let o = bin()
        .arg("eval")
        .arg(demo_model())
        .arg(demo_model())
        .arg("--data")
        .arg(demo_dir())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8_lossy(&o.stdout);
    assert_eq!(table.matches("0.98992 (393/397)").count(), 2, "{table}");
    assert!(table.contains("1.0000"), "{table}");
}

#[test]
fn prune_rejects_a_ratio_outside_the_unit_interval() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["1.5", "0", "1"] {
        let (o, out) = compile(
            dir.path(),
            &demo_model(),
            &["--passes", &format!("prune{{ratio={bad}}}")],
        );
        assert_rejected(
            &o,
            &out,
            &[&format!("option ratio=\"{bad}\" is not a number in (0, 1)")],
        );
    }
}

#[test]
fn prune_rejects_calibration_data_of_the_wrong_shape_or_type() {
    let dir = tempfile::tempdir().unwrap();
    let passes = "prune{ratio=0.5,criterion=activation}";
    let shape = dir.path().join("calib_shape.pb");
    let t = cc_ir::Tensor::from_f32(vec![4, 1, 9, 9], vec![0.0; 324]).unwrap();
    write_tensor(&shape, "input", &t);
    let calib = shape.to_string_lossy().into_owned();
    let (o, out) = compile(
        dir.path(),
        &demo_model(),
        &["--passes", passes, "--calib", &calib],
    );
    assert_rejected(&o, &out, &["calib_shape.pb: input \"input\" has shape"]);

    let dtype = dir.path().join("calib_type.pb");
    let t = cc_ir::Tensor::from_i64(vec![4, 1, 8, 8], vec![0; 256]).unwrap();
    write_tensor(&dtype, "input", &t);
    let calib = dtype.to_string_lossy().into_owned();
    let (o, out) = compile(
        dir.path(),
        &demo_model(),
        &["--passes", passes, "--calib", &calib],
    );
    assert_rejected(&o, &out, &["has element type f32 but the data holds i64"]);

    let missing = dir.path().join("absent.pb").to_string_lossy().into_owned();
    let (o, out) = compile(
        dir.path(),
        &demo_model(),
        &["--passes", passes, "--calib", &missing],
    );
    assert_rejected(&o, &out, &["absent.pb not found"]);

    // criterion=activation without --calib.
    let (o, out) = compile(dir.path(), &demo_model(), &["--passes", passes]);
    assert_rejected(&o, &out, &["needs calibration data"]);
}

#[test]
fn prune_with_calibration_writes_a_smaller_model() {
    let dir = tempfile::tempdir().unwrap();
    let calib = demo_dir()
        .join("calibration.pb")
        .to_string_lossy()
        .into_owned();
    let (o, out) = compile(
        dir.path(),
        &demo_model(),
        &[
            "--passes",
            "prune{params=0.45,criterion=activation,reconstruct=true}",
            "--calib",
            &calib,
            "--report",
        ],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("prune"), "{stderr}");
    let before = std::fs::metadata(demo_model()).unwrap().len();
    let after = std::fs::metadata(&out).unwrap().len();
    assert!(after * 2 < before, "{after} vs {before}");
}

#[test]
fn groups_prints_text_and_json() {
    let out = bin().arg("groups").arg(demo_model()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("groups: 5 (4 prunable)\n"), "{text}");
    assert!(text.contains("blocked: graph output"), "{text}");
    let out = bin()
        .args(["groups", "--json"])
        .arg(demo_model())
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 5);
    let prunable = groups.iter().filter(|g| g["prunable"] == true).count();
    assert_eq!(prunable, 4);
    assert!(v["discovery_ms"].as_f64().unwrap() >= 0.0);
}

#[test]
fn groups_rejects_a_missing_model_in_one_line() {
    let out = bin()
        .args(["groups", "/nonexistent/m.onnx"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/m.onnx"), "{err}");
}

#[test]
fn quant_rejects_unsupported_bits_block_and_modes_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for (passes, needle) in [
        ("quant{bits=5}", "option bits=\"5\""),
        ("quant{granularity=block,block=0}", "option block=\"0\""),
        // gptq needs --calib.
        (
            "quant{weights=gptq}",
            "option weights=gptq needs calibration data",
        ),
        ("quant{weights=gptq,damp=0}", "option damp=\"0\""),
        ("quant{activations=static}", "needs calibration data"),
        (
            "quant{activations=dynamic,bits=4}",
            "option activations=\"dynamic\"",
        ),
    ] {
        let (o, out) = compile(dir.path(), &demo_model(), &["--passes", passes]);
        assert_rejected(&o, &out, &[needle]);
    }
}

#[test]
fn quant_gptq_runs_with_calibration_data() {
    let dir = tempfile::tempdir().unwrap();
    let calib = demo_dir()
        .join("calibration.pb")
        .to_string_lossy()
        .into_owned();
    let (o, out) = compile(
        dir.path(),
        &demo_model(),
        &[
            "--passes",
            "quant{bits=4,granularity=block,weights=gptq}",
            "--calib",
            &calib,
            "--report",
        ],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("gptq_layers=5"), "{stderr}");
    assert!(out.exists());
}

#[test]
fn quant_output_is_smaller_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = compile(dir.path(), &demo_model(), &["--passes", "quant"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let before = std::fs::metadata(demo_model()).unwrap().len();
    let after = std::fs::metadata(&out).unwrap().len();
    assert!(after * 3 < before, "{after} vs {before}");
    let bytes = std::fs::read(&out).unwrap();
    let m = ModelProto::parse_from_bytes(&bytes).unwrap();
    let graph = m.graph.as_ref().unwrap();
    assert!(graph.node.iter().any(|n| n.op_type == "DequantizeLinear"));
}

#[test]
fn emit_ir_writes_the_wire_format() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ccir");
    let o = bin()
        .arg(demo_model())
        .args(["--passes", "quant", "--emit", "ir", "--print-ir", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(&out).unwrap();
    assert!(
        cc_ir::onnx::load_model(&out).is_err(),
        "an ONNX model was written"
    );
    let g = cc_ir::ir_wire::decode(&bytes).unwrap();
    assert_eq!(
        cc_ir::printer::print_graph(&g),
        String::from_utf8_lossy(&o.stdout),
        "the file holds the printed IR"
    );
    assert!(
        cc_ir::compressed::has_compressed(&g),
        "the quantized weights are kept compressed"
    );
}
