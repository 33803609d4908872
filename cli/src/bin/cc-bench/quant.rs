//! `cc-bench quant [--runs N] [MODEL_DIR]`: 4-bit weight quantization of a language
//! model (default: the tiny_lm fixture) by cc-compile and by onnxruntime's
//! `MatMulNBitsQuantizer`, measured in the same run.
//!
//! Rows: the f32 original; each of [`CC_ROWS`] compiled by `cc-compile`; onnxruntime's
//! quantizer (`tests/oracle/quant_ort.py`: bits 4, block 32, symmetric, its default
//! round-to-nearest). Columns: output file size; perplexity on the folder's evaluation
//! set (`test_data_set_0/input_0.pb`, `targets.pb`) computed by onnxruntime for every
//! file alike (`tests/oracle/ppl_ort.py`), with its graph optimizations off (the graph
//! as written) and on, and by our CPU executor; compile time, the median of N runs
//! (cc-compile: wall time of the whole process, import to export; onnxruntime: the
//! quantizer's own time from loading the model to writing it, Python start-up and
//! imports excluded). A row whose compile fails (an option not implemented yet) prints
//! the error in place of its figures.

use super::{median, model_name, python, python_seconds, repo_root, take_flag, time_compile};
use cc_ir::Executor;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The cc-compile rows: (label, passes, needs the folder's `calibration.pb`). To add a
/// configuration (e.g. once `weights=gptq` lands, its row below starts printing
/// figures), add a line.
pub const CC_ROWS: &[(&str, &str, bool)] = &[
    ("cc rtn", "quant{bits=4,granularity=block,block=32}", false),
    (
        "cc rtn format=ort",
        "quant{bits=4,granularity=block,block=32,format=ort}",
        false,
    ),
    (
        "cc gptq",
        "quant{bits=4,granularity=block,block=32,weights=gptq}",
        true,
    ),
    (
        "cc gptq format=ort",
        "quant{bits=4,granularity=block,block=32,weights=gptq,format=ort}",
        true,
    ),
];

/// Figures of one row.
struct Row {
    label: String,
    size: u64,
    ppl_ort: Option<f64>,
    ppl_ort_opt: Option<f64>,
    ppl_cc: Result<f64, String>,
    compile_s: Option<f64>,
}

/// Perplexity of `model` by onnxruntime (`optimize`: its graph optimizations on).
fn ppl_ort(model: &Path, dir: &Path, optimize: bool) -> Option<f64> {
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join("tests/oracle/ppl_ort.py"))
        .arg(model)
        .arg(dir.join("test_data_set_0/input_0.pb"))
        .arg(dir.join("targets.pb"));
    if !optimize {
        cmd.arg("--no-opt");
    }
    python_seconds(&mut cmd)
}

/// Perplexity of `model` on our CPU executor (2 threads).
fn ppl_cc(model: &Path, dir: &Path) -> Result<f64, String> {
    let data = cc_cli::eval::load_eval_data(dir).map_err(|e| e.to_string())?;
    let targets = data.targets.ok_or("no targets.pb")?;
    let g = cc_cli::run::load_graph(model).map_err(|e| e.to_string())?;
    let ex = cc_backends::cpu::CpuExecutor::new(2).map_err(|e| e.to_string())?;
    let out = ex.run(&g, &data.inputs).map_err(|e| e.to_string())?;
    let logits = out.first().ok_or("no output")?;
    let vocab = *logits.shape().last().ok_or("scalar logits")?;
    let values = logits.to_f64_numbers().map_err(|e| e.to_string())?;
    cc_cli::metrics::perplexity(&values, vocab, &targets).map_err(|e| e.to_string())
}

fn measure(label: &str, file: &Path, dir: &Path, compile_s: Option<f64>) -> Row {
    Row {
        label: label.to_string(),
        size: std::fs::metadata(file).map_or(0, |m| m.len()),
        ppl_ort: ppl_ort(file, dir, false),
        ppl_ort_opt: ppl_ort(file, dir, true),
        ppl_cc: ppl_cc(file, dir),
        compile_s,
    }
}

fn print_row(r: &Row) {
    let f = |v: Option<f64>, digits: usize| {
        v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.digits$}"))
    };
    println!(
        "{:<24} {:>11} {:>10} {:>10} {:>10} {:>10}",
        r.label,
        r.size,
        f(r.ppl_ort, 4),
        f(r.ppl_ort_opt, 4),
        r.ppl_cc
            .as_ref()
            .map_or_else(|e| format!("n/a ({e})"), |v| format!("{v:.4}")),
        f(r.compile_s, 3),
    );
}

/// `cc-bench quant`.
pub fn quant_mode(mut args: Vec<String>) -> Result<(), String> {
    let runs = take_flag(&mut args, "--runs")?.unwrap_or(5).max(1);
    let root = repo_root();
    let dir = match args.first() {
        Some(d) => PathBuf::from(d),
        None => root.join("../shared/models/tiny_lm"),
    };
    let model = dir.join("model.onnx");
    if !model.is_file() {
        return Err(format!("{} not found", model.display()));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let compiler = exe.with_file_name("cc-compile");
    if !compiler.is_file() {
        return Err(format!(
            "{} not found: run `cargo build --release -p cc-cli`",
            compiler.display()
        ));
    }
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    println!(
        "{}: 4-bit weights, blocks of 32, symmetric; compile time median of {runs} runs",
        model_name(&model)
    );
    println!(
        "{:<24} {:>11} {:>10} {:>10} {:>10} {:>10}",
        "row", "size bytes", "ppl ort", "ppl ort-O", "ppl cc", "compile s"
    );
    print_row(&measure("f32 original", &model, &dir, None));
    let calib = dir.join("calibration.pb");
    for (i, &(label, passes, needs_calib)) in CC_ROWS.iter().enumerate() {
        let mut cc_args = vec!["--passes".to_string(), passes.to_string()];
        if needs_calib {
            cc_args.push("--calib".into());
            cc_args.push(calib.to_string_lossy().into_owned());
        }
        let cc_args: Vec<&str> = cc_args.iter().map(String::as_str).collect();
        let row_dir = tmp.path().join(format!("row{i}"));
        std::fs::create_dir_all(&row_dir).map_err(|e| e.to_string())?;
        match time_compile(&compiler, &model, &cc_args, runs, &row_dir) {
            Ok((secs, _)) => {
                print_row(&measure(label, &row_dir.join("out.onnx"), &dir, Some(secs)))
            }
            Err(e) => {
                let last = e.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
                let why = last.split_once("error: ").map_or(last, |(_, w)| w);
                println!("{label:<24} n/a: {}", why.trim());
            }
        }
    }
    // onnxruntime's MatMulNBitsQuantizer.
    let theirs = tmp.path().join("ort.onnx");
    let script = root.join("tests/oracle/quant_ort.py");
    let mut times = Vec::new();
    for _ in 0..runs {
        match python_seconds(
            Command::new(python())
                .arg(&script)
                .arg(&model)
                .arg(&theirs)
                .arg("32"),
        ) {
            Some(t) => times.push(t),
            None => break,
        }
    }
    if times.len() == runs {
        print_row(&measure(
            "ort MatMulNBitsQuantizer",
            &theirs,
            &dir,
            Some(median(&mut times)),
        ));
    } else {
        println!(
            "{:<24} n/a: {} tests/oracle/quant_ort.py failed (needs onnxruntime and onnx-ir)",
            "ort MatMulNBitsQuantizer",
            python().display()
        );
    }
    Ok(())
}
