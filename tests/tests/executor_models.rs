//! The CPU executor on every fixture model: output 0 of test_data_set_0 must match the
//! reference within 1e-4 relative (max norm), tiny_lm's logits within 1e-3 absolute;
//! both as imported and after the default canonicalization pipeline.

use cc_backends::cpu::CpuExecutor;
use cc_ir::infer::infer_shapes;
use cc_ir::onnx::{load_model, read_tensor_file};
use cc_ir::{Executor, Graph, Tensor};
use cc_passes::manager::{ManagerOptions, PassManager};
use cc_passes::pipeline::Pipeline;
use cc_tests::{fixture_models, max_rel_error, reference_output, shared_dir, test_inputs};
use std::path::Path;

/// Largest absolute difference between two f32 tensors of equal shape.
fn max_abs_error(got: &Tensor, want: &Tensor) -> Result<f64, String> {
    if got.shape() != want.shape() {
        return Err(format!("shape {:?} != {:?}", got.shape(), want.shape()));
    }
    let (g, w) = (
        got.to_f32().map_err(|e| e.to_string())?,
        want.to_f32().map_err(|e| e.to_string())?,
    );
    Ok(g.iter().zip(&w).fold(0f64, |m, (a, b)| {
        if a.is_nan() || b.is_nan() {
            f64::INFINITY
        } else {
            m.max((a - b).abs() as f64)
        }
    }))
}

/// Runs `g` on the fixture inputs; the error of output 0 and whether it is in tolerance.
fn check(name: &str, dir: &Path, g: &Graph, ex: &CpuExecutor) -> Result<(f64, bool), String> {
    let inputs: Vec<Tensor> = test_inputs(dir)
        .iter()
        .map(|p| {
            read_tensor_file(p)
                .map(|(_, t)| t)
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let outs = ex.run(g, &inputs).map_err(|e| format!("run: {e}"))?;
    let got = outs.first().ok_or("no outputs")?;
    let want = reference_output(dir).map_err(|e| e.to_string())?;
    if name == "tiny_lm" {
        let e = max_abs_error(got, &want)?;
        Ok((e, e <= 1e-3))
    } else {
        let e = max_rel_error(got, &want)?;
        Ok((e, e <= 1e-4))
    }
}

#[test]
fn every_fixture_model_matches_its_reference_output() {
    let Some(shared) = shared_dir() else { return };
    let models = fixture_models(&shared);
    assert!(!models.is_empty(), "no fixture models");
    let ex = CpuExecutor::new(2).unwrap();
    let mut failures = Vec::new();
    for (name, dir) in &models {
        let mut g = match load_model(&dir.join("model.onnx")) {
            Ok(g) => g,
            Err(e) => {
                failures.push(format!("{name}: import: {e}"));
                continue;
            }
        };
        if let Err(e) = infer_shapes(&mut g) {
            failures.push(format!("{name}: infer: {e}"));
            continue;
        }
        for stage in ["imported", "canonicalized"] {
            if stage == "canonicalized" {
                let run =
                    PassManager::new(&Pipeline::parse("").unwrap(), ManagerOptions::default())
                        .and_then(|mut pm| pm.run(&mut g));
                if let Err(e) = run {
                    failures.push(format!("{name}: canonicalize: {e}"));
                    break;
                }
            }
            match check(name, dir, &g, &ex) {
                Ok((e, ok)) => {
                    println!(
                        "{name:<20} {stage:<14} error {e:.3e}{}",
                        if ok { "" } else { "  FAIL" }
                    );
                    if !ok {
                        failures.push(format!("{name} ({stage}): error {e:.3e}"));
                    }
                }
                Err(e) => failures.push(format!("{name} ({stage}): {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}
