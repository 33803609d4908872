//! Every fixture model, canonicalized (`--passes fold`), runs in onnxruntime and matches
//! the reference output within 1e-4 relative; BatchNormalization and Identity are gone.

use cc_passes::manager::{ManagerOptions, PassManager};
use cc_passes::pipeline::Pipeline;
use cc_tests::{fixture_models, max_rel_error, reference_output, shared_dir, test_inputs, Oracle};

#[test]
fn canonicalized_fixtures_match_reference_outputs_in_onnxruntime() {
    let Some(shared) = shared_dir() else { return };
    let Some(oracle) = Oracle::find() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (name, model_dir) in fixture_models(&shared) {
        let mut g = cc_ir::onnx::load_model(&model_dir.join("model.onnx")).unwrap();
        cc_ir::infer::infer_shapes(&mut g).unwrap();
        let pipeline = Pipeline::parse("fold").unwrap();
        let options = ManagerOptions {
            verify_each: true,
            ..Default::default()
        };
        PassManager::new(&pipeline, options)
            .unwrap()
            .run(&mut g)
            .unwrap();
        for id in g.node_ids() {
            let op = g.node(id).op.onnx_type().1;
            assert!(
                op != "BatchNormalization" && op != "Identity" && op != "Dropout",
                "{name}: {op} left after canonicalization"
            );
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
