//! Canonicalization is exact on a real model: BatchNormalization inserted after every
//! Conv and Gemm of the digits CNN (plus Identity and Dropout) folds away, and
//! onnxruntime gives the same outputs before and after within 1e-5.

use cc_ir::graph::Use;
use cc_ir::op::Op;
use cc_ir::{Graph, Tensor, ValueId};
use cc_tests::{foldable_op_left, max_rel_error, run_pipeline, Oracle};
use std::path::Path;

fn demo_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo/digits_cnn")
}

/// Inserts `op` on value `v`: every reader of `v` now reads the new node's output.
fn insert_after(g: &mut Graph, v: ValueId, op: Op, extra: Vec<Option<ValueId>>, tag: &str) {
    let uses: Vec<Use> = g.value(v).uses().to_vec();
    let name = g.unique_name(&format!("{}_{tag}", g.value(v).name()));
    let out = g.add_value(&name, g.value(v).ty.clone()).unwrap();
    let mut inputs = vec![Some(v)];
    inputs.extend(extra);
    g.add_node(&name, op, inputs, vec![Some(out)]).unwrap();
    for u in uses {
        if let Use::Input { node, slot } = u {
            g.set_input(node, slot, Some(out));
        }
    }
    if g.is_output(v) {
        let outs: Vec<ValueId> = g
            .outputs()
            .iter()
            .map(|&o| if o == v { out } else { o })
            .collect();
        g.set_outputs(outs);
    }
}

fn channel_params(g: &mut Graph, base: &str, c: usize, k: f32) -> Vec<Option<ValueId>> {
    let f = |a: f32, b: f32, off: f32| -> Vec<f32> {
        (0..c)
            .map(|i| off + a * ((i as f32 + k) * b).sin())
            .collect()
    };
    let parts = [
        ("scale", f(0.3, 0.7, 1.0)),
        ("bias", f(0.1, 1.3, 0.0)),
        ("mean", f(0.2, 0.9, 0.05)),
        ("var", f(0.25, 0.5, 0.8)),
    ];
    parts
        .into_iter()
        .map(|(p, vals)| {
            let name = g.unique_name(&format!("{base}.bn_{p}"));
            Some(
                g.add_const(&name, Tensor::from_f32(vec![c], vals).unwrap())
                    .unwrap(),
            )
        })
        .collect()
}

#[test]
fn batchnorm_identity_dropout_fold_exactly() {
    let Some(oracle) = Oracle::find() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut g = cc_ir::onnx::load_model(&demo_dir().join("model.onnx")).unwrap();
    let targets: Vec<(ValueId, usize)> = g
        .node_ids()
        .into_iter()
        .filter_map(|n| {
            let node = g.node(n);
            let w = node.input(1)?;
            let dims = g.const_data(w)?.shape().to_vec();
            let out = node.output(0)?;
            match &node.op {
                Op::Conv(_) => Some((out, dims[0])),
                Op::Gemm { trans_b, .. } => Some((
                    out,
                    if *trans_b == Some(1) {
                        dims[0]
                    } else {
                        dims[1]
                    },
                )),
                _ => None,
            }
        })
        .collect();
    assert!(
        targets.len() >= 4,
        "expected convs and gemms in the demo model"
    );
    for (k, (v, c)) in targets.into_iter().enumerate() {
        let base = g.value(v).name().to_string();
        let params = channel_params(&mut g, &base, c, k as f32);
        insert_after(
            &mut g,
            v,
            Op::BatchNormalization {
                epsilon: Some(1e-3),
                momentum: None,
                training_mode: None,
            },
            params,
            "bn",
        );
        insert_after(&mut g, v, Op::Identity, vec![], "id");
    }
    let first_out = g.outputs()[0];
    insert_after(
        &mut g,
        first_out,
        Op::Dropout { seed: None },
        vec![],
        "drop",
    );
    cc_ir::infer::infer_shapes(&mut g).unwrap();
    cc_ir::verify::verify(&g).unwrap();
    let before = dir.path().join("with_bn.onnx");
    cc_ir::onnx::save_model(&g, &before).unwrap();

    let report = run_pipeline(&mut g, "").unwrap();
    if let Some(op) = foldable_op_left(&g) {
        panic!("{op} left:\n{}", report.to_table());
    }
    let after = dir.path().join("folded.onnx");
    cc_ir::onnx::save_model(&g, &after).unwrap();

    let inputs = vec![demo_dir().join("test_data_set_0/input_0.pb")];
    let a = oracle.run(&before, &inputs).unwrap();
    let b = oracle.run(&after, &inputs).unwrap();
    let err = max_rel_error(&b[0], &a[0]).unwrap();
    println!("BatchNorm/Identity/Dropout folding: max relative error {err:.3e}");
    assert!(err <= 1e-5, "folding changed outputs by {err:e}");
}
