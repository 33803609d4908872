//! Building and running generated code with the system C compiler: what the tests and
//! the benchmark use (`cc` or `$CC`; the driver reads and writes raw tensors).

use cc_ir::{DType, Error, Result, Tensor};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The compiler: `$CC`, else `cc`.
pub fn compiler() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

/// Compiles `PREFIX_main.c` and `PREFIX.c` in `dir` with `flags` into `dir/PREFIX_main`;
/// an error carries the compiler's messages (warnings count as errors when `flags` has
/// `-Werror`).
pub fn build(dir: &Path, prefix: &str, flags: &[&str]) -> Result<PathBuf> {
    let exe = dir.join(format!("{prefix}_main"));
    let out = Command::new(compiler())
        .current_dir(dir)
        .args(flags)
        .arg("-o")
        .arg(&exe)
        .arg(format!("{prefix}_main.c"))
        .arg(format!("{prefix}.c"))
        .arg("-lm")
        .output()
        .map_err(|e| Error::io(dir, e))?;
    if !out.status.success() || !out.stderr.is_empty() {
        return Err(Error::invalid(format!(
            "{}: {} {}: {}",
            dir.display(),
            compiler(),
            flags.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(exe)
}

/// Raw little-endian bytes of an input tensor for the driver.
pub fn raw_bytes(t: &Tensor) -> Result<Vec<u8>> {
    if t.dtype() == DType::Bool {
        return Ok(t.to_bool()?.into_iter().map(u8::from).collect());
    }
    Ok(t.raw()?.to_vec())
}

/// Runs the driver `exe` (`runs` times) on `inputs` with the blob in `dir`; returns the
/// outputs (as `out` describes them: element type and shape) and the median
/// milliseconds the driver measured.
pub fn run(
    exe: &Path,
    dir: &Path,
    prefix: &str,
    inputs: &[Tensor],
    out: &[(DType, Vec<usize>)],
    runs: usize,
) -> Result<(Vec<Tensor>, f64)> {
    let mut args = vec![
        "-r".to_string(),
        runs.to_string(),
        dir.join(format!("{prefix}.weights.bin"))
            .display()
            .to_string(),
    ];
    for (i, t) in inputs.iter().enumerate() {
        let p = dir.join(format!("in{i}.bin"));
        std::fs::write(&p, raw_bytes(t)?).map_err(|e| Error::io(&p, e))?;
        args.push(p.display().to_string());
    }
    for i in 0..out.len() {
        args.push(dir.join(format!("out{i}.bin")).display().to_string());
    }
    let o = Command::new(exe)
        .args(&args)
        .output()
        .map_err(|e| Error::io(exe, e))?;
    let stderr = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() {
        return Err(Error::invalid(format!("{}: {stderr}", exe.display())));
    }
    let ms = stderr
        .lines()
        .find_map(|l| l.strip_prefix("median_ms "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| Error::invalid(format!("{}: no timing in {stderr:?}", exe.display())))?;
    let mut outs = Vec::new();
    for (i, (d, shape)) in out.iter().enumerate() {
        let p = dir.join(format!("out{i}.bin"));
        let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
        outs.push(Tensor::from_raw(*d, shape.clone(), bytes.into())?);
    }
    Ok((outs, ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Backend, BackendOptions};
    use cc_ir::op::UnaryOp;
    use cc_ir::types::known_shape;
    use cc_ir::{Graph, Op, ValueType};

    /// y = Relu(x) + b over [2, 3] with a broadcast bias.
    fn tiny() -> Graph {
        let mut g = Graph::new("tiny");
        let x = g
            .add_value(
                "x",
                Some(ValueType::tensor(DType::F32, known_shape(&[2, 3]))),
            )
            .unwrap();
        let b = g
            .add_const(
                "b",
                Tensor::from_f32_vec(vec![3], vec![1.0, 2.0, 3.0]).unwrap(),
            )
            .unwrap();
        let r = g.add_value("r", None).unwrap();
        let y = g.add_value("y", None).unwrap();
        g.add_node(
            "relu",
            Op::Unary(UnaryOp::Relu),
            vec![Some(x)],
            vec![Some(r)],
        )
        .unwrap();
        g.add_node(
            "add",
            Op::Binary(cc_ir::op::BinaryOp::Add),
            vec![Some(r), Some(b)],
            vec![Some(y)],
        )
        .unwrap();
        g.set_inputs(vec![x]);
        g.set_outputs(vec![y]);
        cc_ir::infer::infer_shapes(&mut g).unwrap();
        g
    }

    #[test]
    fn builds_and_runs_a_tiny_graph_when_a_compiler_is_there() {
        let be = crate::c::CBackend;
        if let Err(e) = be.check() {
            // Under CI a missing compiler is a failure, elsewhere a visible skip.
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{e}");
            eprintln!("SKIPPED: {e}");
            return;
        }
        let art = be.lower(&tiny(), &BackendOptions::default()).unwrap();
        let dir = std::env::temp_dir().join(format!("cc-c-tiny-{}", std::process::id()));
        art.write_to(&dir).unwrap();
        let exe = build(
            &dir,
            "model",
            &["-O1", "-std=c99", "-Wall", "-Wextra", "-Werror"],
        )
        .unwrap();
        let x = Tensor::from_f32_vec(vec![2, 3], vec![-1.0, 0.5, 2.0, 3.0, -4.0, 0.0]).unwrap();
        let (outs, ms) = run(&exe, &dir, "model", &[x], &[(DType::F32, vec![2, 3])], 3).unwrap();
        assert!(ms >= 0.0);
        assert_eq!(
            outs[0].to_f32().unwrap(),
            vec![1.0, 2.5, 5.0, 4.0, 2.0, 3.0]
        );
        // A blob from another model is refused.
        std::fs::write(dir.join("model.weights.bin"), b"CCWEIGHT").unwrap();
        let x = Tensor::from_f32_vec(vec![2, 3], vec![0.0; 6]).unwrap();
        assert!(run(&exe, &dir, "model", &[x], &[(DType::F32, vec![2, 3])], 1).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Test helpers: small graphs built op by op, run through the generated C and compared
/// with the CPU executor.
#[cfg(test)]
pub(crate) mod testkit {
    use super::*;
    use crate::backend::{Backend, BackendOptions};
    use cc_ir::types::known_shape;
    use cc_ir::{Executor, Graph, Op, ValueId, ValueType};

    /// A graph under construction with one f32 input.
    pub struct Builder {
        /// The graph.
        pub g: Graph,
        n: usize,
    }

    impl Builder {
        /// A graph whose input `x` is f32 of `shape`.
        pub fn new(shape: &[usize]) -> (Builder, ValueId) {
            let mut g = Graph::new("t");
            let x = g
                .add_value("x", Some(ValueType::tensor(DType::F32, known_shape(shape))))
                .unwrap();
            g.set_inputs(vec![x]);
            (Builder { g, n: 0 }, x)
        }

        /// An int64 constant.
        pub fn ints(&mut self, v: &[i64]) -> ValueId {
            self.n += 1;
            let t = Tensor::from_i64(vec![v.len()], v.to_vec()).unwrap();
            self.g.add_const(&format!("c{}", self.n), t).unwrap()
        }

        /// An f32 constant of `shape` (values from [`ramp`], scaled by `k`).
        pub fn floats(&mut self, shape: &[usize], k: f32) -> ValueId {
            self.n += 1;
            let v: Vec<f32> = ramp(shape)
                .to_f32()
                .unwrap()
                .iter()
                .map(|x| x * k)
                .collect();
            let t = Tensor::from_f32_vec(shape.to_vec(), v).unwrap();
            self.g.add_const(&format!("c{}", self.n), t).unwrap()
        }

        /// Adds `op` over `inputs`; returns its output.
        pub fn op(&mut self, op: Op, inputs: &[Option<ValueId>]) -> ValueId {
            self.n += 1;
            let y = self.g.add_value(&format!("v{}", self.n), None).unwrap();
            self.g
                .add_node(&format!("n{}", self.n), op, inputs.to_vec(), vec![Some(y)])
                .unwrap();
            y
        }

        /// Sets the outputs, infers shapes, runs the C (when a compiler is there) and the
        /// executor on `x`, and asserts they agree within `tol` relative.
        pub fn check(mut self, outputs: &[ValueId], x: Tensor, tol: f64) {
            self.g.set_outputs(outputs.to_vec());
            cc_ir::infer::infer_shapes(&mut self.g).unwrap();
            let be = crate::c::CBackend;
            if let Err(e) = be.check() {
                assert!(std::env::var("CI").as_deref() != Ok("true"), "{e}");
                eprintln!("SKIPPED: {e}");
                return;
            }
            let want = crate::cpu::CpuExecutor::new(1)
                .unwrap()
                .run(&self.g, std::slice::from_ref(&x))
                .unwrap();
            let art = be.lower(&self.g, &BackendOptions::default()).unwrap();
            let dir = std::env::temp_dir().join(format!(
                "cc-c-kit-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            art.write_to(&dir).unwrap();
            let exe = build(
                &dir,
                "model",
                &["-O1", "-std=c99", "-Wall", "-Wextra", "-Werror"],
            )
            .unwrap();
            let shapes: Vec<(DType, Vec<usize>)> = want
                .iter()
                .map(|t| (t.dtype(), t.shape().to_vec()))
                .collect();
            let (got, _) = run(&exe, &dir, "model", &[x], &shapes, 1).unwrap();
            let _ = std::fs::remove_dir_all(&dir);
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                let (a, b) = (a.to_f64_numbers().unwrap(), b.to_f64_numbers().unwrap());
                let scale = b.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
                let err = a
                    .iter()
                    .zip(&b)
                    .fold(0f64, |m, (p, q)| m.max((p - q).abs()))
                    / scale;
                assert!(err <= tol, "max rel error {err:.3e}: {a:?} vs {b:?}");
            }
        }
    }

    /// `0.1, 0.2, ...` minus an offset, in `shape`.
    pub fn ramp(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| (i as f32) * 0.1 - 1.0).collect();
        Tensor::from_f32_vec(shape.to_vec(), v).unwrap()
    }
}
