//! Quantized Conv weights run through the fused dequantize-Conv of the CPU executor:
//! every fixture with convolutions, quantized with int8 per channel and with int4
//! blocks of 32 (shufflenet: int8 only, the quant pass refuses its int4 form), agrees
//! with onnxruntime (graph optimizations off) within 1e-3 relative, and every Conv
//! whose weight is quantized reports that it ran fused. Run with `--nocapture` to see
//! the figures.

use cc_ir::{Executor, Graph, Op, Tensor};
use cc_tests::{
    fixture_inputs, load_inferred, max_rel_error, read_inputs, run_pipeline, shared_dir,
    test_inputs, Oracle,
};

/// The fixtures with convolutions and the quant specs each is checked with.
const CASES: &[(&str, &[&str])] = &[
    ("digits_cnn", &[INT8, INT4]),
    ("mobilenet_v2", &[INT8, INT4]),
    ("resnet18", &[INT8, INT4]),
    ("shufflenet_v2_x1_0", &[INT8]),
    ("squeezenet1_1", &[INT8, INT4]),
];

const INT8: &str = "quant";
const INT4: &str = "quant{bits=4,granularity=block,block=32}";

/// Conv nodes whose weight is a quantized value read by that Conv alone: the ones the
/// executor can fuse.
fn quantized_convs(g: &Graph) -> usize {
    g.node_ids()
        .into_iter()
        .filter(|&id| {
            let n = g.node(id);
            matches!(n.op, Op::Conv(_))
                && n.input(1).is_some_and(|w| {
                    let v = g.value(w);
                    v.compressed.is_some() && v.uses().len() == 1
                })
        })
        .count()
}

#[test]
fn quantized_conv_fixtures_run_fused_and_agree_with_onnxruntime() {
    let Some(shared) = shared_dir() else { return };
    let Some(oracle) = Oracle::find() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for &(name, specs) in CASES {
        let dir = shared.join("models").join(name);
        let files = test_inputs(&dir);
        let inputs: Vec<Tensor> = read_inputs(&files);
        for &spec in specs {
            let mut g = load_inferred(&dir);
            run_pipeline(&mut g, spec).unwrap();
            let out = tmp.path().join(format!("{name}.onnx"));
            cc_ir::onnx::save_model(&g, &out).unwrap();
            let convs = quantized_convs(&g);
            let ort = match oracle.run_unoptimized(&out, &files) {
                Ok(o) => o,
                Err(e) => {
                    failures.push(format!("{name} {spec}: {e}"));
                    continue;
                }
            };
            for threads in [1, 3] {
                let ex = cc_backends::cpu::CpuExecutor::new(threads).unwrap();
                let ours = ex.run(&g, &inputs).unwrap();
                let fused = ex.fused_dq_convs();
                let mut worst = 0f64;
                for (a, b) in ours.iter().zip(&ort) {
                    worst = worst.max(max_rel_error(a, b).unwrap());
                }
                println!(
                    "{name:<20} {spec:<42} threads {threads}: {convs:>3} quantized convs, {fused:>3} ran fused, ours vs ORT {worst:.3e}"
                );
                if ours.len() != ort.len() || worst > 1e-3 {
                    failures.push(format!(
                        "{name} {spec} threads {threads}: ours vs ORT {worst:.3e}"
                    ));
                }
                let want = if cc_backends::cpu::fusion::enabled() {
                    convs as u64
                } else {
                    0
                };
                if convs == 0 || fused != want {
                    failures.push(format!(
                        "{name} {spec} threads {threads}: {fused} of {convs} quantized convs ran fused"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_quantized_conv_read_twice_is_not_fused_and_still_runs() {
    // The dequantized weight also feeds a second Conv: both read the f32 weight made
    // by a plain DequantizeLinear, and nothing runs fused.
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("models/digits_cnn");
    let mut g = load_inferred(&dir);
    run_pipeline(&mut g, INT8).unwrap();
    let first = g
        .node_ids()
        .into_iter()
        .find(|&id| matches!(g.node(id).op, Op::Conv(_)))
        .unwrap();
    let node = g.node(first);
    let (op, ins) = (node.op.clone(), node.inputs().to_vec());
    let y = node.output(0).unwrap();
    let y2 = g.add_value("second_conv_out", None).unwrap();
    g.add_node("second_conv", op, ins, vec![Some(y2)]).unwrap();
    let mut outs = g.outputs().to_vec();
    outs.push(y2);
    outs.push(y);
    g.set_outputs(outs);
    let inputs: Vec<Tensor> = fixture_inputs(&dir);
    let before = quantized_convs(&g);
    let ex = cc_backends::cpu::CpuExecutor::new(2).unwrap();
    let out = ex.run(&g, &inputs).unwrap();
    let n = out.len();
    // The two convs of the shared weight compute the same thing.
    assert_eq!(max_rel_error(&out[n - 2], &out[n - 1]).unwrap(), 0.0);
    let expect = if cc_backends::cpu::fusion::enabled() {
        before as u64
    } else {
        0
    };
    assert_eq!(ex.fused_dq_convs(), expect);
}
