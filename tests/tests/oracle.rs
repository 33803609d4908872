//! Every fixture model, canonicalized (`--passes fold`), runs in onnxruntime and matches
//! the reference output within 1e-4 relative; BatchNormalization and Identity are gone.

use cc_tests::{
    fixture_models, foldable_op_left, max_rel_error, reference_output, run_pipeline, shared_dir,
    test_inputs, Oracle,
};

#[test]
fn canonicalized_fixtures_match_reference_outputs_in_onnxruntime() {
    let Some(shared) = shared_dir() else { return };
    let Some(oracle) = Oracle::find() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (name, model_dir) in fixture_models(&shared) {
        let mut g = cc_ir::onnx::load_model(&model_dir.join("model.onnx")).unwrap();
        cc_ir::infer::infer_shapes(&mut g).unwrap();
        run_pipeline(&mut g, "fold").unwrap();
        if let Some(op) = foldable_op_left(&g) {
            panic!("{name}: {op} left after canonicalization");
        }
        let out = dir.path().join(format!("{name}.onnx"));
        cc_ir::onnx::save_model(&g, &out).unwrap();
        let want = reference_output(&model_dir).unwrap();
        match oracle.run(&out, &test_inputs(&model_dir)) {
            Ok(outs) => {
                let err = max_rel_error(&outs[0], &want).unwrap();
                println!("{name}: max relative error vs reference {err:.3e}");
                if err > 1e-4 {
                    failures.push(format!("{name}: error {err:.3e}"));
                }
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
