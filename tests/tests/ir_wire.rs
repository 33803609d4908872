//! The IR wire format end to end: every fixture, as imported and after each weight
//! pass, survives `encode`/`decode`: the printed IR is identical, re-encoding gives the
//! same bytes, and our executor gives identical outputs.

use cc_ir::{ir_wire, printer::print_graph, Tensor};
use cc_tests::{fixture_inputs, fixture_models, load_inferred, run_cpu, run_pipeline, shared_dir};

const SPECS: &[&str] = &[
    "",
    "quant",
    "quant{bits=4,granularity=block}",
    "codebook",
    "share{ratio=0.5}",
    "sparsify",
];

#[test]
fn every_fixture_round_trips_after_each_weight_pass() {
    let Some(shared) = shared_dir() else {
        return;
    };
    let models = fixture_models(&shared);
    assert!(!models.is_empty(), "no fixture models");
    let mut checked = 0;
    for (name, dir) in &models {
        let inputs: Vec<Tensor> = fixture_inputs(dir);
        for spec in SPECS {
            let mut g = load_inferred(dir);
            if !spec.is_empty() {
                run_pipeline(&mut g, spec).unwrap_or_else(|e| panic!("{name} {spec}: {e}"));
            }
            let bytes = ir_wire::encode(&g);
            let back = ir_wire::decode(&bytes).unwrap_or_else(|e| panic!("{name} {spec}: {e}"));
            assert_eq!(
                print_graph(&back),
                print_graph(&g),
                "{name} {spec}: printed IR"
            );
            assert!(
                ir_wire::encode(&back) == bytes,
                "{name} {spec}: re-encoding changed the bytes"
            );
            if !inputs.is_empty() {
                assert_eq!(
                    run_cpu(&back, &inputs),
                    run_cpu(&g, &inputs),
                    "{name} {spec}: outputs"
                );
            }
            checked += 1;
        }
    }
    println!("{checked} fixture/pipeline pairs round-tripped");
}

/// Models with subgraph attributes (If, Loop, Scan): the written ONNX is the same
/// before and after the wire round trip, so the bodies survive unchanged.
#[test]
fn subgraph_attributes_survive() {
    let Some(shared) = shared_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let names = ["test_if", "test_loop11", "test_scan9_sum", "test_scan_sum"];
    for name in names {
        let path = shared.join("onnx-node-tests").join(name).join("model.onnx");
        let g = cc_ir::onnx::load_model(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let back = ir_wire::decode(&ir_wire::encode(&g)).unwrap();
        let (a, b) = (tmp.path().join("a.onnx"), tmp.path().join("b.onnx"));
        cc_ir::onnx::save_model(&g, &a).unwrap();
        cc_ir::onnx::save_model(&back, &b).unwrap();
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "{name}"
        );
        assert!(
            print_graph(&back).contains("graph("),
            "{name}: no subgraph attribute"
        );
    }
}
