//! Running a model on the CPU executor: loading the model and its input files, running
//! it, and describing its outputs (what `cc-compile run` does).

use crate::metrics;
use cc_backends::cpu::CpuExecutor;
use cc_ir::{Error, Executor, Graph, Result, Tensor};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Imports a model, infers its shapes and verifies it; errors name the file.
pub fn load_graph(path: &Path) -> Result<Graph> {
    let mut g = cc_ir::onnx::load_model(path)?;
    let at = |e: Error| Error::invalid(format!("{}: {e}", path.display()));
    cc_ir::infer::infer_shapes(&mut g).map_err(at)?;
    cc_ir::verify::verify(&g).map_err(at)?;
    Ok(g)
}

/// Reads `TensorProto` files, in order.
pub fn read_inputs(paths: &[PathBuf]) -> Result<Vec<Tensor>> {
    paths
        .iter()
        .map(|p| cc_ir::onnx::read_tensor_file(p).map(|(_, t)| t))
        .collect()
}

/// Names of the graph outputs, in order.
pub fn output_names(g: &Graph) -> Vec<String> {
    g.outputs()
        .iter()
        .map(|&v| g.value(v).name().to_string())
        .collect()
}

/// Runs `g` on `inputs` with `threads` threads; returns its outputs and the wall time
/// of the run.
pub fn run_model(g: &Graph, inputs: &[Tensor], threads: usize) -> Result<(Vec<Tensor>, Duration)> {
    let ex = CpuExecutor::new(threads)?;
    let start = Instant::now();
    let outs = ex.run(g, inputs)?;
    Ok((outs, start.elapsed()))
}

/// One line describing a tensor: `name: dtype[shape] min=.. max=.. mean=..` (the
/// statistics are left out for non-numeric tensors).
pub fn describe(name: &str, t: &Tensor) -> String {
    let shape: Vec<String> = t.shape().iter().map(usize::to_string).collect();
    let head = format!("{name}: {}[{}]", t.dtype(), shape.join(","));
    match metrics::to_f64(t) {
        Ok(v) => {
            let s = metrics::stats(&v);
            format!(
                "{head} min={} max={} mean={}",
                fmt_num(s.min),
                fmt_num(s.max),
                fmt_num(s.mean)
            )
        }
        Err(_) => head,
    }
}

/// A number in at most 6 significant digits (scientific outside 1e-4..1e6).
pub fn fmt_num(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.into()
    } else if x == 0.0 {
        "0".into()
    } else if (1e-4..1e6).contains(&x.abs()) {
        let digits = x.abs().log10().floor() as i64 + 1;
        let keep = (6 - digits).max(0) as usize;
        trim_zeros(&format!("{x:.keep$}"))
    } else {
        format!("{x:.5e}")
    }
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_a_tensor() {
        let t = Tensor::from_f32(vec![2, 2], vec![1.0, -2.0, 3.5, 0.5]).unwrap();
        assert_eq!(describe("y", &t), "y: f32[2,2] min=-2 max=3.5 mean=0.75");
        let s = Tensor::from_strings(vec![1], vec![b"a".to_vec()]).unwrap();
        assert!(describe("s", &s).starts_with("s: "));
    }

    #[test]
    fn formats_numbers_compactly() {
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_num(3.663414), "3.66341");
        assert_eq!(fmt_num(123.5), "123.5");
        assert_eq!(fmt_num(1.5e-7), "1.50000e-7");
        assert_eq!(fmt_num(f64::NAN), "nan");
    }
}
