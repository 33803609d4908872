//! `cc-compile`: import an ONNX model, run a pipeline of passes, write the result.
//!
//! Every failure is one line on stderr (`error: ...`) with exit code 2, and no output
//! file is written (the writer goes through a temporary file and a rename).

mod memory;

use anyhow::{bail, Context, Result};
use cc_passes::manager::{ManagerOptions, PassManager, PrintAfter};
use cc_passes::pipeline::Pipeline;
use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Compress an ONNX model with a pipeline of passes.
#[derive(Parser, Debug)]
#[command(name = "cc-compile", version, about, long_about = None)]
struct Cli {
    /// Input model (ONNX).
    model: Option<PathBuf>,
    /// Output model; default: MODEL.cc.onnx beside the input.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Pipeline: `name` or `name{key=value,...}`, comma-separated.
    #[arg(long, default_value = "")]
    passes: String,
    /// Do not run the canonicalization passes first.
    #[arg(long)]
    no_canonicalize: bool,
    /// Run the verifier after every pass.
    #[arg(long)]
    verify_each: bool,
    /// Print the IR after this pass (a pass name, or `all`) to stdout.
    #[arg(long, value_name = "PASS|all")]
    print_ir_after: Option<String>,
    /// Print the final IR to stdout.
    #[arg(long)]
    print_ir: bool,
    /// List the available passes and their options, then exit.
    #[arg(long)]
    list_passes: bool,
    /// Print the report (per pass: time, nodes, params, bytes before/after) to stderr.
    #[arg(long)]
    report: bool,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    report_json: Option<PathBuf>,
    /// Seed for passes that draw random numbers.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes joined on one line.
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

fn run(cli: Cli) -> Result<()> {
    if cli.list_passes {
        print!("{}", cc_passes::registry::describe_passes());
        return Ok(());
    }
    let Some(model) = cli.model.as_deref() else {
        bail!("no input model given (usage: cc-compile [--passes P] MODEL.onnx -o OUT.onnx)");
    };
    let pipeline = Pipeline::parse(&cli.passes)?;
    let print_ir_after = cli.print_ir_after.as_deref().map(|p| {
        if p == "all" {
            PrintAfter::All
        } else {
            PrintAfter::Pass(p.to_string())
        }
    });
    let output = cli.output.clone().unwrap_or_else(|| default_output(model));

    let mut graph = cc_ir::onnx::load_model(model)?;
    cc_ir::infer::infer_shapes(&mut graph).with_context(|| format!("{}", model.display()))?;
    cc_ir::verify::verify(&graph).with_context(|| format!("{}", model.display()))?;

    let options = ManagerOptions {
        canonicalize: !cli.no_canonicalize,
        verify_each: cli.verify_each,
        print_ir_after,
        seed: cli.seed,
    };
    let mut manager =
        PassManager::new(&pipeline, options)?.with_ir_sink(Box::new(std::io::stdout()));
    let mut report = manager.run(&mut graph)?;
    if cli.print_ir {
        print!("{}", cc_ir::printer::print_graph(&graph));
    }
    cc_ir::onnx::save_model(&graph, &output)?;
    report.peak_memory_bytes = memory::peak_rss_bytes();
    if cli.report {
        eprint!("{}", report.to_table());
    }
    if let Some(path) = &cli.report_json {
        cc_ir::onnx::write_file_atomic(path, report.to_json().as_bytes())?;
    }
    Ok(())
}

/// `dir/model.onnx` -> `dir/model.cc.onnx`.
fn default_output(model: &Path) -> PathBuf {
    let stem = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    model.with_file_name(format!("{stem}.cc.onnx"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_output_sits_beside_the_input() {
        assert_eq!(
            default_output(Path::new("a/b/model.onnx")),
            PathBuf::from("a/b/model.cc.onnx")
        );
    }
}
