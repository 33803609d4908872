//! Shape inference and the verifier over every fixture model and ONNX node test: each
//! model must import, pass `infer_shapes` (its declared shapes agreeing with what the
//! typed ops infer) and then `verify`. For the fixture models, inference from the graph
//! inputs and weights alone must also reproduce every declared graph output type.

use cc_ir::infer::infer_shapes;
use cc_ir::onnx::load_model;
use cc_ir::verify::verify;
use cc_tests::{check_all, model_dirs, shared_dir};
use std::path::Path;

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

/// " (N typed nodes)" over the per-model counts.
fn typed_nodes(counts: &[usize]) -> String {
    format!(" ({} typed nodes)", counts.iter().sum::<usize>())
}

/// Clears the type of every node-produced value, infers again, and compares the graph
/// outputs with their declared types; an error message on the first difference.
fn outputs_from_inputs_alone(dir: &Path) -> Result<(), String> {
    let declared = load_model(&dir.join("model.onnx")).map_err(|e| format!("import: {e}"))?;
    let mut g = declared.clone();
    let produced: Vec<_> = g
        .value_ids()
        .filter(|&v| g.value(v).producer().is_some())
        .collect();
    for v in produced {
        g.value_mut(v).ty = None;
    }
    infer_shapes(&mut g).map_err(|e| format!("infer: {e}"))?;
    verify(&g).map_err(|e| format!("verify: {e}"))?;
    for &o in declared.outputs() {
        let (want, got) = (&declared.value(o).ty, &g.value(o).ty);
        if want != got {
            let show = |t: &Option<cc_ir::ValueType>| t.as_ref().map(|t| t.to_string());
            return Err(format!(
                "output {:?} declared {:?} but infers {:?}",
                declared.value(o).name(),
                show(want),
                show(got)
            ));
        }
    }
    Ok(())
}

#[test]
fn fixture_model_outputs_are_inferred_from_inputs_alone() {
    let Some(shared) = shared_dir() else { return };
    check_all(
        &model_dirs(&shared.join("models")),
        "fixture model outputs inferred exactly",
        outputs_from_inputs_alone,
        |_| String::new(),
    );
}

#[test]
fn fixture_models_infer_and_verify() {
    let Some(shared) = shared_dir() else { return };
    check_all(
        &model_dirs(&shared.join("models")),
        "models inferred and verified",
        check,
        typed_nodes,
    );
}

#[test]
fn node_tests_infer_and_verify() {
    let Some(shared) = shared_dir() else { return };
    check_all(
        &model_dirs(&shared.join("onnx-node-tests")),
        "node tests inferred and verified",
        check,
        typed_nodes,
    );
}
