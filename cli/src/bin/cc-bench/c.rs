//! `cc-bench c [--runs N] [--threads T] [--passes SPEC] [MODEL_DIR|NAME ...]`: the C
//! backend against onnxruntime on fixtures (default resnet18 and mobilenet_v2), fp32
//! unless `--passes` compresses the model first (onnxruntime still runs the original
//! model; the error column is then against the reference output too).
//!
//! Each model is imported, canonicalized and lowered to C specialised to its
//! `test_data_set_0` input; the generated driver is built with `cc -O3 -march=native
//! -std=c99` (one thread) and, for T > 1, again with `-fopenmp` (`OMP_NUM_THREADS=T`;
//! libgomp's default wait policy, a bounded spin then sleep: `passive` made every
//! parallel region pay a wake-up and erased the gain, 55 vs 39 ms on resnet18).
//! The driver runs once to check its output against the reference (max relative error
//! printed), then times N runs itself (median); onnxruntime is timed in the same run by
//! `tests/oracle/time_ort_run.py` with intra-op threads 1 and T.

use super::{median, python, python_seconds, repo_root, take_flag};
use cc_backends::c::toolchain;
use cc_backends::{Backend, BackendOptions, CBackend};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The compiler flags of the benchmark builds (single-threaded).
pub const FLAGS: &[&str] = &["-O3", "-march=native", "-std=c99"];

/// One fixture lowered, built and checked: (driver per thread count, inputs, output
/// shape, temp dir kept alive).
struct Built {
    exes: Vec<(usize, PathBuf)>,
    inputs: Vec<cc_ir::Tensor>,
    out: (cc_ir::DType, Vec<usize>),
    err: f64,
    _tmp: tempfile::TempDir,
}

fn build(dir: &Path, threads: usize, passes: &str) -> Result<Built, String> {
    let model = dir.join("model.onnx");
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", dir.display());
    let mut g = cc_ir::onnx::load_model(&model).map_err(|e| at(&e))?;
    cc_ir::infer::infer_shapes(&mut g).map_err(|e| at(&e))?;
    let pipeline = cc_passes::Pipeline::parse(passes).map_err(|e| at(&e))?;
    cc_passes::PassManager::new(&pipeline, Default::default())
        .map_err(|e| at(&e))?
        .run(&mut g)
        .map_err(|e| at(&e))?;
    let files: Vec<PathBuf> = (0..)
        .map(|i| dir.join(format!("test_data_set_0/input_{i}.pb")))
        .take_while(|p| p.is_file())
        .collect();
    let inputs = cc_cli::run::read_inputs(&files).map_err(|e| at(&e))?;
    let opts = BackendOptions {
        input_shapes: inputs.iter().map(|t| t.shape().to_vec()).collect(),
        ..Default::default()
    };
    let art = CBackend.lower(&g, &opts).map_err(|e| at(&e))?;
    let tmp = tempfile::tempdir().map_err(|e| at(&e))?;
    art.write_to(tmp.path()).map_err(|e| at(&e))?;
    let prepared = cc_backends::c::prepare::prepare(&g, &opts).map_err(|e| at(&e))?;
    let y = prepared.outputs()[0];
    let shape = cc_backends::c::prepare::static_shape(&prepared, y).map_err(|e| at(&e))?;
    let out = (cc_ir::DType::F32, shape);
    let mut exes = vec![(
        1,
        toolchain::build(tmp.path(), "model", FLAGS).map_err(|e| at(&e))?,
    )];
    if threads > 1 {
        let par = tmp.path().join("omp");
        art.write_to(&par).map_err(|e| at(&e))?;
        let mut flags = FLAGS.to_vec();
        flags.push("-fopenmp");
        exes.push((
            threads,
            toolchain::build(&par, "model", &flags).map_err(|e| at(&e))?,
        ));
    }
    let (got, _) = toolchain::run(
        &exes[0].1,
        tmp.path(),
        "model",
        &inputs,
        std::slice::from_ref(&out),
        1,
    )
    .map_err(|e| at(&e))?;
    let (_, want) = cc_ir::onnx::read_tensor_file(&dir.join("test_data_set_0/output_0.pb"))
        .map_err(|e| at(&e))?;
    let err = max_rel(&got[0], &want).map_err(|e| at(&e))?;
    Ok(Built {
        exes,
        inputs,
        out,
        err,
        _tmp: tmp,
    })
}

fn max_rel(a: &cc_ir::Tensor, b: &cc_ir::Tensor) -> Result<f64, String> {
    let (x, y) = (
        a.to_f64_numbers().map_err(|e| e.to_string())?,
        b.to_f64_numbers().map_err(|e| e.to_string())?,
    );
    if x.len() != y.len() {
        return Err("output sizes differ".into());
    }
    let scale = y.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-12);
    Ok(x.iter()
        .zip(&y)
        .fold(0f64, |m, (p, q)| m.max((p - q).abs()))
        / scale)
}

/// `cc-bench c`.
pub fn c_mode(mut args: Vec<String>) -> Result<(), String> {
    let runs = take_flag(&mut args, "--runs")?.unwrap_or(10).max(1);
    let threads = take_flag(&mut args, "--threads")?.unwrap_or(2).max(1);
    let passes = match args.iter().position(|a| a == "--passes") {
        Some(i) if i + 1 < args.len() => {
            let spec = args[i + 1].clone();
            args.drain(i..i + 2);
            spec
        }
        Some(_) => return Err("--passes needs a pipeline".into()),
        None => String::new(),
    };
    if args.is_empty() {
        args = ["resnet18", "mobilenet_v2"].map(String::from).to_vec();
    }
    let shared = repo_root().join("../shared/models");
    let ort_script = repo_root().join("tests/oracle/time_ort_run.py");
    println!(
        "C built with {} {} (+ -fopenmp for threads > 1); medians of {runs} runs; passes: {}",
        toolchain::compiler(),
        FLAGS.join(" "),
        if passes.is_empty() {
            "none (fp32)"
        } else {
            &passes
        }
    );
    println!(
        "{:<16} {:>8} {:>12} {:>14} {:>14} {:>8}",
        "model", "threads", "max rel err", "C median ms", "ort median ms", "C/ort"
    );
    for arg in &args {
        let dir = if Path::new(arg).is_dir() {
            PathBuf::from(arg)
        } else {
            shared.join(arg)
        };
        let b = build(&dir, threads, &passes)?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let inputs: Vec<PathBuf> = (0..b.inputs.len())
            .map(|i| dir.join(format!("test_data_set_0/input_{i}.pb")))
            .collect();
        for (t, exe) in &b.exes {
            let work = exe.parent().unwrap_or(Path::new("."));
            // The driver times each run; take the median of a few invocations' medians.
            let mut ms = Vec::new();
            for _ in 0..3 {
                std::env::set_var("OMP_NUM_THREADS", t.to_string());
                let (_, m) = toolchain::run(
                    exe,
                    work,
                    "model",
                    &b.inputs,
                    std::slice::from_ref(&b.out),
                    runs,
                )
                .map_err(|e| e.to_string())?;
                ms.push(m);
            }
            let c = median(&mut ms);
            let ort = python_seconds(
                Command::new(python())
                    .arg(&ort_script)
                    .arg(dir.join("model.onnx"))
                    .arg(t.to_string())
                    .arg(runs.to_string())
                    .args(&inputs),
            )
            .map(|s| s * 1e3);
            println!(
                "{:<16} {:>8} {:>12.1e} {:>14.2} {:>14} {:>8}",
                name,
                t,
                b.err,
                c,
                ort.map(|o| format!("{o:.2}"))
                    .unwrap_or_else(|| "n/a".into()),
                ort.map(|o| format!("{:.2}", c / o))
                    .unwrap_or_else(|| "n/a".into()),
            );
        }
    }
    Ok(())
}
