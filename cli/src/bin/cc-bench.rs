//! `cc-bench`: benchmarks against onnxruntime, both measured in the same run.
//!
//! `cc-bench [compile] [--runs N] [MODEL.onnx ...]` (the default mode): import ->
//! canonicalize -> export speed and peak memory of `cc-compile` on fixture models (default:
//! every ../shared/models model), next to onnxruntime's session creation for the same
//! model. Needs the `cc-compile` binary beside this one (`cargo build --release -p
//! cc-cli`).
//!
//! `cc-bench run [--threads T] [--runs N] [MODEL ...]`: inference time of our CPU
//! executor (in process, one warm-up run, then the median of N runs of `Executor::run`)
//! against onnxruntime (`tests/oracle/time_ort_run.py`: intra-op threads T, inter-op 1,
//! one warm-up, median of N) on the fixture's `test_data_set_0` inputs. MODEL is a
//! fixture name or a `.onnx` path (default: resnet18, mobilenet_v2, tiny_lm); a path
//! may name the fixture whose inputs it takes (`/tmp/r18q.onnx=resnet18`, for a
//! compiled model written outside the fixture folders; without that, the inputs are
//! the `test_data_set_0` beside the file). T defaults to 2, N to 10.
//!
//! `cc-bench quant [--runs N] [MODEL_DIR]`: tiny_lm (or MODEL_DIR) quantized to 4 bits
//! by cc-compile and by onnxruntime's `MatMulNBitsQuantizer`: file size, perplexity (by
//! onnxruntime for every file, and by our executor) and compile time (see
//! `cc-bench/quant.rs`).
//!
//! `cc-bench c [--runs N] [--threads T] [MODEL_DIR ...]`: the generated C (`--backend
//! c`, built with `cc -O3 -march=native`) against onnxruntime on resnet18 and
//! mobilenet_v2 (see `cc-bench/c.rs`).
//!
//! The `groups s` column is the median wall time of `cc-compile groups MODEL` (import ->
//! fix symbolic dims -> canonicalize -> group discovery -> report) per model. After the
//! models, one more row times `prune{ratio=0.5}` end to end on resnet18 (import ->
//! canonicalize -> prune -> export).
//!
//! The onnxruntime columns need `CC_PYTHON` (or `.venv/bin/python`) with onnxruntime.
//! Prints medians and ratios; the machines are noisy, so no single run is quoted.

use cc_ir::Executor;

#[path = "cc-bench/c.rs"]
mod c;
#[path = "cc-bench/quant.rs"]
mod quant;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => {
            args.remove(0);
            run_mode(args)
        }
        Some("compile") => {
            args.remove(0);
            compile_mode(args)
        }
        Some("quant") => {
            args.remove(0);
            quant::quant_mode(args)
        }
        Some("c") => {
            args.remove(0);
            c::c_mode(args)
        }
        _ => compile_mode(args),
    }
}

/// Removes `flag VALUE` from `args`; the value parsed, if the flag was there.
fn take_flag(args: &mut Vec<String>, flag: &str) -> Result<Option<usize>, String> {
    let Some(i) = args.iter().position(|a| a == flag) else {
        return Ok(None);
    };
    let v = args
        .get(i + 1)
        .and_then(|v| v.parse().ok())
        .ok_or(format!("{flag} needs a number"))?;
    args.drain(i..i + 2);
    Ok(Some(v))
}

/// The repository root.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Python with onnxruntime: `CC_PYTHON`, else `.venv/bin/python` in the repository.
fn python() -> PathBuf {
    std::env::var_os("CC_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python"))
}

/// The name of a model's folder (`.../resnet18/model.onnx` -> `resnet18`).
fn model_name(model: &Path) -> String {
    model
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `cc-bench run`: our CPU executor against onnxruntime inference.
fn run_mode(mut args: Vec<String>) -> Result<(), String> {
    let threads = take_flag(&mut args, "--threads")?.unwrap_or(2);
    let runs = take_flag(&mut args, "--runs")?.unwrap_or(10).max(1);
    if args.is_empty() {
        args = ["resnet18", "mobilenet_v2", "tiny_lm"]
            .map(String::from)
            .to_vec();
    }
    let shared = repo_root().join("../shared/models");
    let ort_script = repo_root().join("tests/oracle/time_ort_run.py");
    let ex = cc_backends::cpu::CpuExecutor::new(threads).map_err(|e| e.to_string())?;
    println!(
        "{:<22} {:>8} {:>14} {:>14} {:>10}",
        "model", "threads", "cc median ms", "ort median ms", "cc/ort"
    );
    for arg in &args {
        let (model, data) = match arg.split_once(".onnx=") {
            Some((path, fixture)) => (PathBuf::from(format!("{path}.onnx")), Some(fixture)),
            None if arg.ends_with(".onnx") => (PathBuf::from(arg), None),
            None => (shared.join(arg).join("model.onnx"), None),
        };
        let dir = match data {
            Some(fixture) => shared.join(fixture),
            None => model.parent().unwrap_or(Path::new(".")).to_path_buf(),
        };
        let input_files: Vec<PathBuf> = (0..)
            .map(|i| dir.join(format!("test_data_set_0/input_{i}.pb")))
            .take_while(|p| p.is_file())
            .collect();
        let g = cc_cli::run::load_graph(&model).map_err(|e| e.to_string())?;
        let inputs = cc_cli::run::read_inputs(&input_files).map_err(|e| e.to_string())?;
        let at = |e: cc_ir::Error| format!("{}: {e}", model.display());
        ex.run(&g, &inputs).map_err(at)?;
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let start = Instant::now();
            ex.run(&g, &inputs).map_err(at)?;
            times.push(start.elapsed().as_secs_f64());
        }
        let cc = median(&mut times);
        let ort = python_seconds(
            Command::new(python())
                .arg(&ort_script)
                .arg(&model)
                .arg(threads.to_string())
                .arg(runs.to_string())
                .args(&input_files),
        );
        let name = if model.file_name().is_some_and(|f| f == "model.onnx") {
            model_name(&model)
        } else {
            model
                .file_stem()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        println!(
            "{:<22} {:>8} {:>14.2} {:>14} {:>10}",
            name,
            threads,
            cc * 1e3,
            ort.map(|t| format!("{:.2}", t * 1e3))
                .unwrap_or_else(|| "n/a".into()),
            ort.map(|t| format!("{:.2}", cc / t))
                .unwrap_or_else(|| "n/a".into()),
        );
    }
    Ok(())
}

/// The number a Python helper printed, if it ran successfully.
fn python_seconds(cmd: &mut Command) -> Option<f64> {
    cmd.output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
}

/// Pipelines timed end to end by `cc-bench compile` after the per-model table:
/// (fixture, passes). Pipelines that need calibration get the fixture's calibration.pb.
const PIPELINE_ROWS: &[(&str, &str)] = &[
    ("resnet18", "prune{ratio=0.5}"),
    ("resnet18", "quant"),
    ("resnet18", "quant{bits=4,granularity=block,block=32}"),
    (
        "tiny_lm",
        "quant{bits=4,granularity=block,block=32,weights=gptq}",
    ),
    ("tiny_lm", "codebook"),
];

/// `cc-bench compile`: cc-compile's import -> canonicalize -> export against onnxruntime
/// session creation.
fn compile_mode(mut args: Vec<String>) -> Result<(), String> {
    let runs = take_flag(&mut args, "--runs")?.unwrap_or(5);
    let root = repo_root();
    let models: Vec<PathBuf> = if args.is_empty() {
        let dir = root.join("../shared/models");
        let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("model.onnx"))
            .filter(|p| p.is_file())
            .collect();
        v.sort();
        v
    } else {
        args.iter().map(PathBuf::from).collect()
    };
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let compiler = exe.with_file_name("cc-compile");
    if !compiler.is_file() {
        return Err(format!(
            "{} not found: run `cargo build --release -p cc-cli`",
            compiler.display()
        ));
    }
    let python = python();
    let ort_script = root.join("tests/oracle/time_ort.py");
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    println!(
        "{:<22} {:>9} {:>12} {:>10} {:>12} {:>10} {:>10} {:>10}",
        "model", "size MB", "cc median s", "peak MB", "peak/size", "ort s", "cc/ort", "groups s"
    );
    for model in models {
        let size = std::fs::metadata(&model).map_err(|e| e.to_string())?.len() as f64;
        let (cc, peak) = time_compile(&compiler, &model, &[], runs, tmp.path())?;
        let groups = time_groups(&compiler, &model, runs)?;
        let ort = python_seconds(
            Command::new(&python)
                .arg(&ort_script)
                .arg(&model)
                .arg(runs.to_string()),
        );
        let name = model_name(&model);
        let mb = |b: f64| b / (1024.0 * 1024.0);
        println!(
            "{:<22} {:>9.1} {:>12.3} {:>10.1} {:>12.2} {:>10} {:>10} {:>10.3}",
            name,
            mb(size),
            cc,
            mb(peak as f64),
            peak as f64 / size,
            ort.map(|t| format!("{t:.3}"))
                .unwrap_or_else(|| "n/a".into()),
            ort.map(|t| format!("{:.2}", cc / t))
                .unwrap_or_else(|| "n/a".into()),
            groups,
        );
    }
    // Compression pipelines end to end (import -> canonicalize -> passes -> export).
    println!(
        "\n{:<14} {:<50} {:>12} {:>10}",
        "model", "passes", "cc median s", "peak MB"
    );
    for (model, passes) in PIPELINE_ROWS {
        let path = root.join(format!("../shared/models/{model}/model.onnx"));
        if !path.is_file() {
            continue;
        }
        let mut args = vec!["--passes", passes];
        let calib = root.join(format!("../shared/models/{model}/calibration.pb"));
        let calib_arg = calib.to_string_lossy().to_string();
        if passes.contains("gptq") || passes.contains("static") {
            args.extend(["--calib", calib_arg.as_str()]);
        }
        let (cc, peak) = time_compile(&compiler, &path, &args, runs, tmp.path())?;
        println!(
            "{model:<14} {passes:<50} {cc:>12.3} {:>10.1}",
            peak as f64 / (1024.0 * 1024.0),
        );
    }
    Ok(())
}

/// Median wall time of `runs` runs of `cc-compile groups MODEL` (output discarded).
fn time_groups(compiler: &Path, model: &Path, runs: usize) -> Result<f64, String> {
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let o = Command::new(compiler)
            .arg("groups")
            .arg(model)
            .output()
            .map_err(|e| e.to_string())?;
        times.push(start.elapsed().as_secs_f64());
        if !o.status.success() {
            return Err(format!(
                "groups {}: {}",
                model.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Median wall time of `runs` runs of `cc-compile MODEL -o OUT --report-json J ARGS`, and
/// the largest peak memory the reports give.
fn time_compile(
    compiler: &Path,
    model: &Path,
    args: &[&str],
    runs: usize,
    tmp: &Path,
) -> Result<(f64, u64), String> {
    let out = tmp.join("out.onnx");
    let json = tmp.join("report.json");
    let mut times = Vec::new();
    let mut peak = 0u64;
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let o = Command::new(compiler)
            .arg(model)
            .arg("-o")
            .arg(&out)
            .arg("--report-json")
            .arg(&json)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        times.push(start.elapsed().as_secs_f64());
        if !o.status.success() {
            return Err(format!(
                "{}: {}",
                model.display(),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        let report = std::fs::read_to_string(&json).map_err(|e| e.to_string())?;
        peak = peak.max(json_number(&report, "peak_memory_bytes").unwrap_or(0));
    }
    Ok((median(&mut times), peak))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The number after `"key":` in a JSON text (the report's flat fields).
fn json_number(text: &str, key: &str) -> Option<u64> {
    let at = text.find(&format!("\"{key}\""))?;
    let rest = text
        .get(at + key.len() + 2..)?
        .trim_start()
        .strip_prefix(':')?;
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}
