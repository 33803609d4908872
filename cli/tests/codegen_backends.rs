//! `cc-compile --backend c|cuda`: writes the generated files into a folder,
//! byte-identical across runs; bad input gives one line, exit code 2 and nothing
//! written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn demo_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo/digits_cnn/model.onnx")
}

fn compile_with(backend: &str, out: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cc-compile"))
        .arg(demo_model())
        .args(["--backend", backend, "-o"])
        .arg(out)
        .args(args)
        .output()
        .unwrap()
}

fn compile_c(out: &Path, args: &[&str]) -> Output {
    compile_with("c", out, args)
}

#[path = "../../tests/src/cli_rejection.rs"]
mod cli_rejection;

fn assert_rejected(o: &Output, out: &Path, needle: &str) {
    cli_rejection::assert_rejected(o, out, &[needle]);
}

#[test]
fn writes_the_c_files_deterministically() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for dir in [&a, &b] {
        let o = compile_c(
            dir,
            &["--passes", "quant{bits=8}", "--input-shape", "2x1x8x8"],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    for f in [
        "model.c",
        "model.h",
        "model.weights.bin",
        "model_main.c",
        "Makefile",
        "README.md",
    ] {
        let x = std::fs::read(a.join(f)).unwrap();
        assert!(!x.is_empty(), "{f} is empty");
        assert_eq!(
            x,
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs between runs"
        );
    }
    let h = std::fs::read_to_string(a.join("model.h")).unwrap();
    assert!(h.contains("#define MODEL_INPUT0_ELEMENTS 128"), "{h}");
}

#[test]
fn default_folder_sits_beside_the_input() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("net.onnx");
    std::fs::copy(demo_model(), &model).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_cc-compile"))
        .arg(&model)
        .args(["--backend", "c", "--input-shape", "1x1x8x8"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(tmp.path().join("net.cc.c/model.c").is_file());
}

#[test]
fn symbolic_inputs_need_a_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("c");
    assert_rejected(&compile_c(&out, &[]), &out, "--input-shape");
}

#[test]
fn bad_shapes_and_flags_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("c");
    assert_rejected(
        &compile_c(&out, &["--input-shape", "1x8x8"]),
        &out,
        "does not fit",
    );
    assert_rejected(
        &compile_c(&out, &["--input-shape", "1xNx8x8"]),
        &out,
        "not a dimension",
    );
    assert_rejected(
        &compile_c(&out, &["--input-shape", "1x1x8x8", "--emit", "ir"]),
        &out,
        "--backend c or cuda",
    );
}

#[test]
fn writes_the_cuda_files_deterministically() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for dir in [&a, &b] {
        let o = compile_with(
            "cuda",
            dir,
            &["--passes", "quant{bits=8}", "--input-shape", "2x1x8x8"],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    for f in ["model.cu", "model.weights.bin", "README.md"] {
        let x = std::fs::read(a.join(f)).unwrap();
        assert!(!x.is_empty(), "{f} is empty");
        assert_eq!(x, std::fs::read(b.join(f)).unwrap(), "{f} differs");
    }
    let cu = std::fs::read_to_string(a.join("model.cu")).unwrap();
    assert!(cu.contains("__global__"), "no kernels");
    let out = tmp.path().join("cuda");
    assert_rejected(&compile_with("cuda", &out, &[]), &out, "--input-shape");
    assert_rejected(
        &compile_with("cuda", &out, &["--input-shape", "1x1x8x8", "--emit", "ir"]),
        &out,
        "--backend c or cuda",
    );
}
