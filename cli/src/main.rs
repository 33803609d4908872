//! `cc-compile`: import an ONNX model, run a pipeline of passes, write the result.
//! Subcommands: `run` (run a model on the CPU executor), `eval` (compare an original
//! and a compressed model on a data folder) and `groups` (print the channel groups); their logic is in the `cc_cli` library.
//!
//! Every failure is one line on stderr (`error: ...`) with exit code 2, and no output
//! file is written (the writer goes through a temporary file and a rename).

mod memory;

use anyhow::{bail, Context, Result};
use cc_cli::{eval, run as runner};
use cc_passes::manager::{ManagerOptions, PassManager, PrintAfter};
use cc_passes::pipeline::Pipeline;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Compress an ONNX model with a pipeline of passes.
#[derive(Parser, Debug)]
#[command(
    name = "cc-compile",
    version,
    about,
    long_about = None,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// `run` or `eval`; without one, compile MODEL.
    #[command(subcommand)]
    command: Option<Command>,
    /// Input model (ONNX).
    model: Option<PathBuf>,
    /// Output model; default: MODEL.cc.onnx (MODEL.cc.ccir with `--emit ir`) beside
    /// the input.
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
    /// Load a plugin library of third-party passes (repeatable). The libraries in the
    /// folders listed in `CC_PLUGIN_PATH` load too, first.
    #[arg(long = "plugin", value_name = "LIB")]
    plugins: Vec<PathBuf>,
    /// Print the report (per pass: time, nodes, params, bytes before/after) to stderr.
    #[arg(long)]
    report: bool,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    report_json: Option<PathBuf>,
    /// What to write: `onnx` (the model) or `ir` (the IR wire format, compressed
    /// weights and annotations kept; see `cc_ir::ir_wire`).
    #[arg(long, value_enum, default_value_t = Emit::Onnx)]
    emit: Emit,
    /// Seed for passes that draw random numbers.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Backend: `onnx` writes a model (or `--emit ir`), `c` writes C sources, a header
    /// and a weights blob into the folder `-o DIR` (default MODEL.cc.c/ beside the input),
    /// `cuda` writes model.cu, a weights blob and a README (default MODEL.cc.cuda/).
    #[arg(long, value_enum, default_value_t = BackendKind::Onnx)]
    backend: BackendKind,
    /// Shape of a runtime input for `--backend c|cuda` (`1x3x224x224`), one per input in
    /// order; needed when the model's inputs have symbolic dimensions.
    #[arg(long = "input-shape", value_name = "AxBx..")]
    input_shapes: Vec<String>,
    /// Calibration data for data-aware passes (`prune{criterion=activation}`,
    /// `reconstruct=true`): a TensorProto file for a one-input model, or a folder of
    /// input_<i>.pb files; axis 0 is the batch.
    #[arg(long, value_name = "FILE.pb|DIR")]
    calib: Option<PathBuf>,
}

/// The output format of a compile.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Emit {
    /// An ONNX model.
    Onnx,
    /// The IR wire format.
    Ir,
}

/// What a compile writes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum BackendKind {
    /// An ONNX model (or the IR wire format with `--emit ir`).
    Onnx,
    /// C99 sources, header, weights blob, driver, Makefile and README in a folder.
    C,
    /// CUDA C source (`model.cu`), weights blob and README in a folder.
    Cuda,
}

/// Subcommands besides compiling.
#[derive(Subcommand, Debug)]
enum Command {
    /// Run a model on the CPU executor; print a summary of each output.
    Run(RunArgs),
    /// Run an original and a compressed model on the same data and compare them.
    Eval(EvalArgs),
    /// Print the channel groups (sets of slices removable together) of a model.
    Groups(GroupsArgs),
}

/// Arguments of `cc-compile groups`.
#[derive(clap::Args, Debug)]
struct GroupsArgs {
    /// The model (ONNX).
    model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Arguments of `cc-compile run`.
#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The model (ONNX).
    model: PathBuf,
    /// An input TensorProto file; repeat for each graph input without data, in order.
    #[arg(long = "input", value_name = "X.pb")]
    inputs: Vec<PathBuf>,
    /// Write output 0 to this TensorProto file.
    #[arg(short, long, value_name = "Y.pb")]
    output: Option<PathBuf>,
    /// Write every output to DIR/output_<i>.pb (DIR is created).
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
    /// Executor threads; default: the number of CPUs.
    #[arg(long)]
    threads: Option<usize>,
}

/// Arguments of `cc-compile eval`.
#[derive(clap::Args, Debug)]
struct EvalArgs {
    /// The original model.
    original: PathBuf,
    /// The compressed model.
    compressed: PathBuf,
    /// Folder with input_*.pb (itself or in test_data_set_0/), and optionally labels.pb
    /// and targets.pb.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Executor threads; default: the number of CPUs.
    #[arg(long)]
    threads: Option<usize>,
    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
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
    match cli.command {
        Some(Command::Run(args)) => return run_command(args),
        Some(Command::Eval(args)) => return eval_command(args),
        Some(Command::Groups(args)) => {
            print!("{}", cc_cli::groups::report(&args.model, args.json)?);
            return Ok(());
        }
        None => {}
    }
    load_plugins(&cli.plugins)?;
    if cli.list_passes {
        print!("{}", cc_passes::registry::describe_passes());
        return Ok(());
    }
    let Some(model) = cli.model.as_deref() else {
        bail!("no input model given (usage: cc-compile [--passes P] MODEL.onnx -o OUT.onnx)");
    };
    let pipeline = Pipeline::parse(&cli.passes)?;
    if cli.backend != BackendKind::Onnx && cli.emit == Emit::Ir {
        bail!("--emit ir writes a model; it cannot be combined with --backend c or cuda");
    }
    if cli.backend == BackendKind::Onnx && !cli.input_shapes.is_empty() {
        bail!("--input-shape is for --backend c or cuda");
    }
    let input_shapes = cli
        .input_shapes
        .iter()
        .map(|s| parse_shape(s))
        .collect::<Result<Vec<_>>>()?;
    let print_ir_after = cli.print_ir_after.as_deref().map(|p| {
        if p == "all" {
            PrintAfter::All
        } else {
            PrintAfter::Pass(p.to_string())
        }
    });
    let output = cli.output.clone().unwrap_or_else(|| {
        let onnx = default_output(model);
        match (cli.backend, cli.emit) {
            (BackendKind::C, _) => onnx.with_extension("c"),
            (BackendKind::Cuda, _) => onnx.with_extension("cuda"),
            (BackendKind::Onnx, Emit::Onnx) => onnx,
            (BackendKind::Onnx, Emit::Ir) => onnx.with_extension("ccir"),
        }
    });

    let mut graph = cc_ir::onnx::load_model(model)?;
    cc_ir::infer::infer_shapes(&mut graph).with_context(|| format!("{}", model.display()))?;
    cc_ir::verify::verify(&graph).with_context(|| format!("{}", model.display()))?;
    let calibration = match &cli.calib {
        Some(path) => {
            let c = cc_passes::Calibration::load(path)?;
            c.check(&graph)
                .with_context(|| format!("{}", model.display()))?;
            Some(std::sync::Arc::new(c))
        }
        None => None,
    };

    let options = ManagerOptions {
        canonicalize: !cli.no_canonicalize,
        verify_each: cli.verify_each,
        print_ir_after,
        seed: cli.seed,
    };
    let mut manager = PassManager::new(&pipeline, options)?
        .with_ir_sink(Box::new(std::io::stdout()))
        .with_executor(std::sync::Arc::new(cc_backends::cpu::CpuExecutor::new(
            threads(None),
        )?));
    if let Some(c) = calibration {
        manager = manager.with_calibration(c);
    }
    let mut report = manager.run(&mut graph)?;
    if cli.print_ir {
        print!("{}", cc_ir::printer::print_graph(&graph));
    }
    match (cli.backend, cli.emit) {
        (BackendKind::C, _) => write_c(&graph, input_shapes, &output)
            .with_context(|| format!("{}", model.display()))?,
        (BackendKind::Cuda, _) => write_cuda(&graph, input_shapes, &output)
            .with_context(|| format!("{}", model.display()))?,
        (BackendKind::Onnx, Emit::Onnx) => cc_ir::onnx::save_model(&graph, &output)?,
        (BackendKind::Onnx, Emit::Ir) => {
            cc_ir::onnx::write_file_atomic(&output, &cc_ir::ir_wire::encode(&graph))?
        }
    }
    report.peak_memory_bytes = memory::peak_rss_bytes();
    if cli.report {
        eprint!("{}", report.to_table());
    }
    if let Some(path) = &cli.report_json {
        cc_ir::onnx::write_file_atomic(path, report.to_json().as_bytes())?;
    }
    Ok(())
}

/// Loads the plugins of the `CC_PLUGIN_PATH` folders, then those given with `--plugin`.
fn load_plugins(flags: &[PathBuf]) -> Result<()> {
    use cc_passes::plugin_host::{load_plugin, load_plugin_dirs, PLUGIN_PATH_VAR};
    if let Some(dirs) = std::env::var_os(PLUGIN_PATH_VAR) {
        load_plugin_dirs(&dirs)?;
    }
    for path in flags {
        load_plugin(path)?;
    }
    Ok(())
}

/// Threads to use: the flag, else the number of CPUs.
fn threads(flag: Option<usize>) -> usize {
    flag.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

/// `cc-compile run`: runs the model, writes the requested outputs, prints a summary.
fn run_command(args: RunArgs) -> Result<()> {
    let g = runner::load_graph(&args.model)?;
    let inputs = runner::read_inputs(&args.inputs)?;
    let (outs, _) = runner::run_model(&g, &inputs, threads(args.threads))
        .with_context(|| format!("{}", args.model.display()))?;
    let names = runner::output_names(&g);
    if let Some(path) = &args.output {
        let (Some(name), Some(t)) = (names.first(), outs.first()) else {
            bail!("{}: the model has no outputs", args.model.display());
        };
        cc_ir::onnx::write_tensor_file(path, name, t)?;
    }
    if let Some(dir) = &args.output_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for (i, (name, t)) in names.iter().zip(&outs).enumerate() {
            cc_ir::onnx::write_tensor_file(&dir.join(format!("output_{i}.pb")), name, t)?;
        }
    }
    for (name, t) in names.iter().zip(&outs) {
        println!("{}", runner::describe(name, t));
    }
    Ok(())
}

/// `cc-compile eval`: runs both models on the data, prints the comparison table.
fn eval_command(args: EvalArgs) -> Result<()> {
    let data = eval::load_eval_data(&args.data)?;
    let report = eval::evaluate(
        &args.original,
        &args.compressed,
        &data,
        threads(args.threads),
    )?;
    print!("{}", report.to_table());
    if let Some(path) = &args.json {
        cc_ir::onnx::write_file_atomic(path, report.to_json().as_bytes())?;
    }
    Ok(())
}

/// `1x3x224x224` -> `[1, 3, 224, 224]`.
fn parse_shape(s: &str) -> Result<Vec<usize>> {
    s.split(['x', 'X', ','])
        .map(|d| {
            d.trim()
                .parse::<usize>()
                .with_context(|| format!("--input-shape {s:?}: {d:?} is not a dimension"))
        })
        .collect()
}

/// Lowers `g` with the C backend and writes the files into the folder `out`.
fn write_c(g: &cc_ir::Graph, input_shapes: Vec<Vec<usize>>, out: &Path) -> Result<()> {
    use cc_backends::Backend;
    check_static_inputs(g, &input_shapes)?;
    let opts = cc_backends::BackendOptions {
        input_shapes,
        ..Default::default()
    };
    let art = cc_backends::CBackend.lower(g, &opts)?;
    art.write_to(out)?;
    Ok(())
}

/// Lowers `g` with the CUDA backend (source, weights, README) into the folder `out`.
fn write_cuda(g: &cc_ir::Graph, input_shapes: Vec<Vec<usize>>, out: &Path) -> Result<()> {
    use cc_backends::Backend;
    check_static_inputs(g, &input_shapes)?;
    let opts = cc_backends::BackendOptions {
        input_shapes,
        ..Default::default()
    };
    let art = cc_backends::cuda::CudaBackend.lower(g, &opts)?;
    art.write_to(out)?;
    Ok(())
}

/// Code generation needs static shapes: without `--input-shape`, every runtime input
/// must have them (no guessed batch size); the error suggests the model's own dims.
fn check_static_inputs(g: &cc_ir::Graph, input_shapes: &[Vec<usize>]) -> Result<()> {
    if input_shapes.is_empty() {
        for v in cc_backends::c::prepare::runtime_inputs(g) {
            let val = g.value(v);
            let shape = val.ty.as_ref().and_then(|t| t.shape());
            if shape.is_none_or(|s| s.iter().any(|d| d.known().is_none())) {
                // Suggest the known dimensions with every symbolic one (the batch) at 1.
                let example = shape.map_or("1x3x224x224".to_string(), |s| {
                    s.iter()
                        .map(|d| d.known().unwrap_or(1).to_string())
                        .collect::<Vec<_>>()
                        .join("x")
                });
                bail!(
                    "input {:?} has no static shape; give it with --input-shape (e.g. {example})",
                    val.name()
                );
            }
        }
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
    fn input_shapes_parse() {
        assert_eq!(parse_shape("1x3x224x224").unwrap(), vec![1, 3, 224, 224]);
        assert_eq!(parse_shape("4").unwrap(), vec![4]);
        assert!(parse_shape("1xNx2").is_err());
    }

    #[test]
    fn default_output_sits_beside_the_input() {
        assert_eq!(
            default_output(Path::new("a/b/model.onnx")),
            PathBuf::from("a/b/model.cc.onnx")
        );
    }
}
