//! `cc-bench`: import -> canonicalize -> export speed and peak memory of `cc-compile`
//! on fixture models, next to onnxruntime's session creation for the same model,
//! measured in the same run.
//!
//! usage: cc-bench [--runs N] [MODEL.onnx ...]   (default: every ../shared/models model)
//! Needs the `cc-compile` binary beside this one (`cargo build --release -p cc-cli`) and,
//! for the onnxruntime column, `CC_PYTHON` (or `.venv/bin/python`) with onnxruntime.
//! Prints medians and ratios; the machines are noisy, so no single run is quoted.

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
    let mut runs = 5usize;
    if let Some(i) = args.iter().position(|a| a == "--runs") {
        runs = args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or("--runs needs a number")?;
        args.drain(i..i + 2);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
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
    let python = std::env::var_os("CC_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    let ort_script = root.join("tests/oracle/time_ort.py");
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    println!(
        "{:<22} {:>9} {:>12} {:>10} {:>12} {:>10} {:>10}",
        "model", "size MB", "cc median s", "peak MB", "peak/size", "ort s", "cc/ort"
    );
    for model in models {
        let size = std::fs::metadata(&model).map_err(|e| e.to_string())?.len() as f64;
        let out = tmp.path().join("out.onnx");
        let json = tmp.path().join("report.json");
        let mut times = Vec::new();
        let mut peak = 0u64;
        for _ in 0..runs {
            let start = Instant::now();
            let o = Command::new(&compiler)
                .arg(&model)
                .arg("-o")
                .arg(&out)
                .arg("--report-json")
                .arg(&json)
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
        let cc = median(&mut times);
        let ort = Command::new(&python)
            .arg(&ort_script)
            .arg(&model)
            .arg(runs.to_string())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<f64>()
                    .ok()
            });
        let name = model
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mb = |b: f64| b / (1024.0 * 1024.0);
        println!(
            "{:<22} {:>9.1} {:>12.3} {:>10.1} {:>12.2} {:>10} {:>10}",
            name,
            mb(size),
            cc,
            mb(peak as f64),
            peak as f64 / size,
            ort.map(|t| format!("{t:.3}"))
                .unwrap_or_else(|| "n/a".into()),
            ort.map(|t| format!("{:.2}", cc / t))
                .unwrap_or_else(|| "n/a".into()),
        );
    }
    Ok(())
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
