//! insta snapshots of the canonical IR of each fixture model after canonicalization.
//! CI runs them in check mode (`INSTA_UPDATE=no`); review changes with `cargo insta review`.

use cc_passes::manager::{ManagerOptions, PassManager};
use cc_passes::pipeline::Pipeline;
use cc_tests::{fixture_models, shared_dir};

#[test]
fn canonical_ir_of_each_fixture() {
    let Some(shared) = shared_dir() else { return };
    for (name, model_dir) in fixture_models(&shared) {
        let mut g = cc_ir::onnx::load_model(&model_dir.join("model.onnx")).unwrap();
        cc_ir::infer::infer_shapes(&mut g).unwrap();
        let options = ManagerOptions {
            verify_each: true,
            ..Default::default()
        };
        let report = PassManager::new(&Pipeline::parse("").unwrap(), options)
            .unwrap()
            .run(&mut g)
            .unwrap();
        insta::assert_snapshot!(format!("canonical_{name}"), cc_ir::printer::print_graph(&g));
        insta::assert_snapshot!(format!("report_{name}"), report.to_table_without_timings());
    }
}
