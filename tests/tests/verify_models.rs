//! Shape inference and the verifier over every fixture model and ONNX node test: each
//! model must import, pass `infer_shapes` (its declared shapes agreeing with what the
//! typed ops infer) and then `verify`.

use cc_ir::infer::infer_shapes;
use cc_ir::onnx::load_model;
use cc_ir::verify::verify;
use cc_tests::{model_dirs, shared_dir};
use std::path::{Path, PathBuf};

/// Imports one model, infers shapes and verifies it; the number of typed nodes.
fn check(dir: &Path) -> Result<usize, String> {
    let mut g = load_model(&dir.join("model.onnx")).map_err(|e| format!("import: {e}"))?;
    infer_shapes(&mut g).map_err(|e| format!("infer: {e}"))?;
    verify(&g).map_err(|e| format!("verify: {e}"))?;
    Ok(g.node_ids()
        .into_iter()
        .filter(|&n| !g.node(n).op.is_other())
        .count())
}

fn run_all(dirs: &[PathBuf], what: &str) {
    let mut failures = Vec::new();
    let mut typed_nodes = 0;
    for d in dirs {
        match check(d) {
            Ok(n) => typed_nodes += n,
            Err(e) => failures.push(format!("{}: {e}", d.display())),
        }
    }
    println!(
        "{what} inferred and verified: {}/{} ({typed_nodes} typed nodes)",
        dirs.len() - failures.len(),
        dirs.len()
    );
    for f in &failures {
        println!("  FAIL {f}");
    }
    assert!(!dirs.is_empty(), "no {what} found");
    assert!(failures.is_empty(), "{} {what} failed", failures.len());
}

#[test]
fn fixture_models_infer_and_verify() {
    let Some(shared) = shared_dir() else { return };
    run_all(&model_dirs(&shared.join("models")), "models");
}

#[test]
fn node_tests_infer_and_verify() {
    let Some(shared) = shared_dir() else { return };
    run_all(&model_dirs(&shared.join("onnx-node-tests")), "node tests");
}
