//! The C backend end to end: for every fixture the generated C compiles with the
//! system compiler at `-O2 -Wall -Wextra -Werror`, runs on `test_data_set_0` and
//! matches the reference output (fp32, 1e-4 relative) or, for compressed variants, our
//! CPU executor on the same graph (1e-3 relative).

use cc_backends::c::toolchain;
use cc_backends::{Backend, BackendOptions, CBackend};
use cc_ir::{Executor, Tensor};
use cc_tests::*;
use std::path::Path;

const FLAGS: &[&str] = &["-O2", "-std=c99", "-Wall", "-Wextra", "-Werror"];

/// The fixture's test inputs.
fn inputs(dir: &Path) -> Vec<Tensor> {
    test_inputs(dir)
        .iter()
        .map(|p| cc_ir::onnx::read_tensor_file(p).unwrap().1)
        .collect()
}

/// Lowers `g` specialised to `ins`, builds it in a temp folder and runs it on `ins`.
fn run_c(g: &cc_ir::Graph, ins: &[Tensor]) -> Result<Vec<Tensor>, String> {
    run_c_with(g, ins, FLAGS)
}

/// [`run_c`] with these compiler flags.
fn run_c_with(g: &cc_ir::Graph, ins: &[Tensor], flags: &[&str]) -> Result<Vec<Tensor>, String> {
    let opts = BackendOptions {
        input_shapes: ins.iter().map(|t| t.shape().to_vec()).collect(),
        ..Default::default()
    };
    let art = CBackend.lower(g, &opts).map_err(|e| e.to_string())?;
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    art.write_to(tmp.path()).map_err(|e| e.to_string())?;
    let exe = toolchain::build(tmp.path(), "model", flags).map_err(|e| e.to_string())?;
    let outs: Vec<(cc_ir::DType, Vec<usize>)> = g
        .outputs()
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let t = g.value(v).ty.as_ref().and_then(|t| t.elem());
            let shape = ins_shape(g, &opts, i);
            (t.unwrap_or(cc_ir::DType::F32), shape)
        })
        .collect();
    toolchain::run(&exe, tmp.path(), "model", ins, &outs, 1)
        .map(|(o, _)| o)
        .map_err(|e| e.to_string())
}

/// The static shape of output `i` once `g` is specialised to the option's inputs.
fn ins_shape(g: &cc_ir::Graph, opts: &BackendOptions, i: usize) -> Vec<usize> {
    let p = cc_backends::c::prepare::prepare(g, opts).unwrap();
    cc_backends::c::prepare::static_shape(&p, p.outputs()[i]).unwrap()
}

/// Skips when no C compiler runs (a failure under CI).
fn have_cc() -> bool {
    match CBackend.check() {
        Ok(()) => true,
        Err(e) => skip::<()>(&format!("C backend: {e}")).is_some(),
    }
}

#[test]
fn every_fixture_matches_the_reference_in_fp32() {
    let Some(shared) = shared_dir() else { return };
    if !have_cc() {
        return;
    }
    let dirs: Vec<_> = fixture_models(&shared)
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    check_all(
        &dirs,
        "C backend fp32 vs reference",
        |d| {
            let (g, _, _) = compile_fixture(d, "", false)?;
            let outs = run_c(&g, &inputs(d))?;
            let want = reference_output(d).map_err(|e| e.to_string())?;
            let err = max_rel_error(&outs[0], &want)?;
            println!("  {}: max rel error {err:.2e}", d.display());
            if err > 1e-4 {
                return Err(format!("max rel error {err:.3e} > 1e-4"));
            }
            Ok(err)
        },
        |errs| format!(", worst {:.2e}", errs.iter().fold(0f64, |m, &e| m.max(e))),
    );
}

/// Every fixture compressed with `spec`: the C output matches our executor's.
fn compressed_matches_executor(spec: &str) {
    let Some(shared) = shared_dir() else { return };
    if !have_cc() {
        return;
    }
    let dirs: Vec<_> = fixture_models(&shared)
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    let ex = cc_backends::cpu::CpuExecutor::new(2).unwrap();
    check_all(
        &dirs,
        &format!("C backend {spec} vs executor"),
        |d| {
            let (g, _, _) = compile_fixture(d, spec, false)?;
            let ins = inputs(d);
            let outs = run_c(&g, &ins)?;
            let want = ex.run(&g, &ins).map_err(|e| e.to_string())?;
            let err = max_rel_error(&outs[0], &want[0])?;
            println!("  {}: max rel error {err:.2e}", d.display());
            if err > 1e-3 {
                return Err(format!("max rel error {err:.3e} > 1e-3"));
            }
            Ok(err)
        },
        |errs| format!(", worst {:.2e}", errs.iter().fold(0f64, |m, &e| m.max(e))),
    );
}

/// The OpenMP build (`-fopenmp`, all cores) also compiles without warnings and gives
/// the same results: resnet18 fp32 against the reference, resnet18 and digits_cnn int8
/// and int4 against our executor.
#[test]
fn openmp_builds_match() {
    let Some(shared) = shared_dir() else { return };
    if !have_cc() {
        return;
    }
    let mut flags = FLAGS.to_vec();
    flags.push("-fopenmp");
    let ex = cc_backends::cpu::CpuExecutor::new(2).unwrap();
    for (name, spec) in [
        ("resnet18", ""),
        ("resnet18", "quant{bits=8}"),
        ("digits_cnn", "quant{bits=4,granularity=block,block=32}"),
    ] {
        let d = shared.join("models").join(name);
        let (g, _, _) = compile_fixture(&d, spec, false).unwrap();
        let ins = inputs(&d);
        let outs = run_c_with(&g, &ins, &flags).unwrap();
        let want = if spec.is_empty() {
            reference_output(&d).unwrap()
        } else {
            ex.run(&g, &ins).unwrap().remove(0)
        };
        let err = max_rel_error(&outs[0], &want).unwrap();
        println!("openmp {name} {spec:?}: max rel error {err:.2e}");
        assert!(
            err < if spec.is_empty() { 1e-4 } else { 1e-3 },
            "{name} {spec}: {err}"
        );
    }
}

#[test]
fn int8_fixtures_match_the_executor() {
    compressed_matches_executor("quant{bits=8}");
}

#[test]
fn int4_block_fixtures_match_the_executor() {
    compressed_matches_executor("quant{bits=4,block=32}");
}

#[test]
fn codebook_fixtures_match_the_executor() {
    compressed_matches_executor("codebook");
}

#[test]
fn lowrank_fixtures_match_the_executor() {
    compressed_matches_executor("lowrank");
}

#[test]
fn share_fixtures_match_the_executor() {
    compressed_matches_executor("share");
}

/// The generated source with the (shared) runtime replaced by its length and hash, and
/// the header: what the snapshots hold.
fn snapshot_text(art: &cc_backends::Artifact) -> String {
    let text = |p: &str| String::from_utf8(art.file(p).unwrap().bytes.clone()).unwrap();
    let src = text("model.c");
    let rt = cc_backends::c::source::RUNTIME;
    let hash = cc_backends::c::weights::fnv1a(rt.as_bytes());
    let src = src.replacen(
        rt,
        &format!("/* runtime: {} bytes, fnv1a {hash:016x} */\n", rt.len()),
        1,
    );
    format!("{}\n==== model.c ====\n{src}", text("model.h"))
}

/// Lowers the digits_cnn fixture compressed with `spec` (batch of the test input).
fn digits_artifact(spec: &str) -> Option<cc_backends::Artifact> {
    let shared = shared_dir()?;
    let dir = shared.join("models/digits_cnn");
    let (g, _, _) = compile_fixture(&dir, spec, false).unwrap();
    let opts = BackendOptions {
        input_shapes: inputs(&dir).iter().map(|t| t.shape().to_vec()).collect(),
        ..Default::default()
    };
    let a = CBackend.lower(&g, &opts).unwrap();
    // Same graph, same bytes.
    assert_eq!(a, CBackend.lower(&g, &opts).unwrap());
    Some(a)
}

#[test]
fn digits_cnn_fp32_source_snapshot() {
    let Some(a) = digits_artifact("") else { return };
    insta::assert_snapshot!("c_digits_cnn_fp32", snapshot_text(&a));
}

#[test]
fn digits_cnn_int8_source_snapshot() {
    let Some(a) = digits_artifact("quant{bits=8}") else {
        return;
    };
    let text = snapshot_text(&a);
    // The weights stay int8 codes read through descriptors.
    assert_eq!(text.matches("= CC_I8;").count(), 5);
    insta::assert_snapshot!("c_digits_cnn_int8", text);
}

/// vit_tiny's reference output is all zeros (its head is zero-initialised), so the
/// fixture check above proves little for it: compare the head's input instead, C
/// against our executor.
#[test]
fn vit_tiny_head_input_matches_the_executor() {
    let Some(shared) = shared_dir() else { return };
    if !have_cc() {
        return;
    }
    let dir = shared.join("models/vit_tiny");
    let (mut g, _, _) = compile_fixture(&dir, "", false).unwrap();
    let order = g.topo_order().unwrap();
    let head = order
        .iter()
        .rev()
        .find(|&&id| matches!(g.node(id).op, cc_ir::Op::Gemm { .. }))
        .copied()
        .unwrap();
    let x = g.node(head).input(0).unwrap();
    g.set_outputs(vec![x]);
    let ins = inputs(&dir);
    let ex = cc_backends::cpu::CpuExecutor::new(2).unwrap();
    let want = ex.run(&g, &ins).unwrap();
    assert!(want[0]
        .to_f64_numbers()
        .unwrap()
        .iter()
        .any(|&v| v.abs() > 1e-3));
    let got = run_c(&g, &ins).unwrap();
    let err = max_rel_error(&got[0], &want[0]).unwrap();
    println!("vit_tiny head input: max rel error {err:.2e}");
    assert!(err <= 1e-4, "max rel error {err:.3e}");
}
