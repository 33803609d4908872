//! Shared helpers for the end-to-end tests: where the fixtures are, the onnxruntime
//! oracle, and output comparison.
//!
//! Fixtures live in `../shared` beside the repository. Outside CI a missing fixture
//! folder or oracle makes a test print why and return; under CI (`CI=true`) it is a
//! failure, so nothing is skipped silently there.

pub mod cli_rejection;
pub mod conformance;
pub mod plugin_build;

use cc_ir::{Result, Tensor};
use std::path::{Path, PathBuf};
use std::process::Command;

/// True when running under CI (`CI=true`).
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true").unwrap_or(false)
}

/// Skips (returns `None` after printing `why`) outside CI; panics under CI.
pub fn skip<T>(why: &str) -> Option<T> {
    if in_ci() {
        panic!("required under CI: {why}");
    }
    // Written to the stderr handle directly, not through `eprintln!`, so the test
    // harness does not capture it: a skip is always visible.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
    None
}

/// The `shared/` folder beside the repository, if present.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    if dir.join("models").is_dir() {
        Some(dir)
    } else {
        skip(&format!(
            "fixture folder {} not found (it is beside the repository in CI)",
            dir.display()
        ))
    }
}

/// Sorted subfolders of `dir` that contain `model.onnx`.
pub fn model_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("model.onnx").is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Runs `check` on every folder in `dirs`, prints `"{label}: passed/total{detail}"`
/// (`detail` computed from the successes' values) and each failure, and asserts that
/// there were folders and that none failed.
pub fn check_all<T>(
    dirs: &[PathBuf],
    label: &str,
    check: impl Fn(&Path) -> std::result::Result<T, String>,
    detail: impl Fn(&[T]) -> String,
) {
    let mut passed = Vec::new();
    let mut failures = Vec::new();
    for d in dirs {
        match check(d) {
            Ok(v) => passed.push(v),
            Err(e) => failures.push(format!("{}: {e}", d.display())),
        }
    }
    println!(
        "{label}: {}/{}{}",
        passed.len(),
        dirs.len(),
        detail(&passed)
    );
    for f in &failures {
        println!("  FAIL {f}");
    }
    assert!(!dirs.is_empty(), "no folders found for {label}");
    assert!(failures.is_empty(), "{} failed for {label}", failures.len());
}

/// Loads `dir/model.onnx` with shapes inferred.
pub fn load_inferred(dir: &Path) -> cc_ir::Graph {
    let mut g = cc_ir::onnx::load_model(&dir.join("model.onnx"))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    cc_ir::infer::infer_shapes(&mut g).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    g
}

/// Statistic `key` of pass `pass` in a report (empty when absent).
pub fn pass_stat(r: &cc_passes::Report, pass: &str, key: &str) -> String {
    r.passes
        .iter()
        .filter(|p| p.name == pass)
        .flat_map(|p| p.stats.iter())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.to_string())
        .unwrap_or_default()
}

/// Test-set accuracy of a digits model `g` on the evaluation data in `dir` (its
/// `test_data_set_0` and labels), run on our executor with 2 threads.
pub fn digits_accuracy(g: &cc_ir::Graph, dir: &Path) -> f64 {
    use cc_ir::Executor;
    let data = cc_cli::eval::load_eval_data(dir).unwrap();
    let ex = cc_backends::cpu::CpuExecutor::new(2).unwrap();
    let out = ex.run(g, &data.inputs).unwrap();
    let logits = out[0].to_f64_numbers().unwrap();
    let labels = data.labels.unwrap();
    cc_cli::metrics::accuracy(&logits, 10, &labels)
        .unwrap()
        .fraction()
}

/// Perplexity of a language model `g` on the evaluation data in `dir` (inputs and
/// next-token targets), run on our executor with 2 threads.
pub fn lm_perplexity(g: &cc_ir::Graph, dir: &Path) -> f64 {
    use cc_ir::Executor;
    let data = cc_cli::eval::load_eval_data(dir).unwrap();
    let ex = cc_backends::cpu::CpuExecutor::new(2).unwrap();
    let out = ex.run(g, &data.inputs).unwrap();
    let logits = out[0].to_f64_numbers().unwrap();
    let vocab = *out[0].shape().last().unwrap();
    cc_cli::metrics::perplexity(&logits, vocab, &data.targets.unwrap()).unwrap()
}

/// Canonicalize + `spec` over the fixture in `dir` (verifying after each pass) with a
/// CPU executor, and the fixture's calibration.pb when `calib`: the graph, its report
/// and the seconds the passes took.
pub fn compile_fixture(
    dir: &Path,
    spec: &str,
    calib: bool,
) -> std::result::Result<(cc_ir::Graph, cc_passes::Report, f64), String> {
    let mut g = load_inferred(dir);
    let options = cc_passes::ManagerOptions {
        verify_each: true,
        ..Default::default()
    };
    let pipeline = cc_passes::Pipeline::parse(spec).map_err(|e| e.to_string())?;
    let mut m = cc_passes::PassManager::new(&pipeline, options)
        .map_err(|e| e.to_string())?
        .with_executor(std::sync::Arc::new(
            cc_backends::cpu::CpuExecutor::new(2).map_err(|e| e.to_string())?,
        ));
    if calib {
        let c =
            cc_passes::Calibration::load(&dir.join("calibration.pb")).map_err(|e| e.to_string())?;
        m = m.with_calibration(std::sync::Arc::new(c));
    }
    let start = std::time::Instant::now();
    let r = m.run(&mut g).map_err(|e| e.to_string())?;
    Ok((g, r, start.elapsed().as_secs_f64()))
}

/// Runs `g` on our CPU executor (2 threads) on `inputs`, panicking on an error.
pub fn run_cpu(g: &cc_ir::Graph, inputs: &[Tensor]) -> Vec<Tensor> {
    use cc_ir::Executor;
    cc_backends::cpu::CpuExecutor::new(2)
        .unwrap()
        .run(g, inputs)
        .unwrap()
}

/// The tensors in `files` (fixture input files), panicking when one cannot be read.
pub fn read_inputs(files: &[PathBuf]) -> Vec<Tensor> {
    files
        .iter()
        .map(|p| cc_ir::onnx::read_tensor_file(p).unwrap().1)
        .collect()
}

/// The input tensors of the fixture in `dir` (its `test_data_set_0`), in order.
pub fn fixture_inputs(dir: &Path) -> Vec<Tensor> {
    read_inputs(&test_inputs(dir))
}

/// Loads the fixture in `dir`, runs `spec` over it (verifying after each pass) and
/// writes it to `out`, panicking on an error: the graph, the report and the file's size.
pub fn compile_and_save(
    dir: &Path,
    spec: &str,
    out: &Path,
) -> (cc_ir::Graph, cc_passes::Report, u64) {
    let mut g = load_inferred(dir);
    let r = run_pipeline(&mut g, spec).unwrap();
    cc_ir::onnx::save_model(&g, out).unwrap();
    let size = std::fs::metadata(out).unwrap().len();
    (g, r, size)
}

/// Runs `spec` over `g`, verifying after each pass, with a CPU executor (2 threads) and,
/// when `calib` names one, the calibration data there (checked against `g` first when
/// `check`).
pub fn run_with_calibration(
    g: &mut cc_ir::Graph,
    spec: &str,
    calib: Option<&Path>,
    check: bool,
) -> std::result::Result<cc_passes::Report, String> {
    let options = cc_passes::ManagerOptions {
        verify_each: true,
        ..Default::default()
    };
    let pipeline = cc_passes::Pipeline::parse(spec).map_err(|e| e.to_string())?;
    let mut m = cc_passes::PassManager::new(&pipeline, options)
        .map_err(|e| e.to_string())?
        .with_executor(std::sync::Arc::new(
            cc_backends::cpu::CpuExecutor::new(2).unwrap(),
        ));
    if let Some(p) = calib {
        let c = cc_passes::Calibration::load(p).map_err(|e| e.to_string())?;
        if check {
            c.check(g).map_err(|e| e.to_string())?;
        }
        m = m.with_calibration(std::sync::Arc::new(c));
    }
    m.run(g).map_err(|e| e.to_string())
}

/// Compiles the fixture in `dir` with `spec` twice into `tmp` ([`compile_and_save`])
/// and asserts that the two files are byte-identical, that the file imports (shapes
/// inferred) to the compiled IR (all but the header line: the IR keeps the source
/// opset, the file may have a raised one) and that writing the imported graph again
/// gives the same bytes; `check_imported` first checks the imported graph further.
pub fn assert_deterministic_round_trip(
    dir: &Path,
    spec: &str,
    tmp: &Path,
    check_imported: impl Fn(&cc_ir::Graph),
) {
    let a = tmp.join("a.onnx");
    let b = tmp.join("b.onnx");
    let (g, ..) = compile_and_save(dir, spec, &a);
    compile_and_save(dir, spec, &b);
    let bytes = std::fs::read(&a).unwrap();
    assert_eq!(bytes, std::fs::read(&b).unwrap(), "{spec}");
    let mut back = cc_ir::onnx::load_model(&a).unwrap();
    cc_ir::infer::infer_shapes(&mut back).unwrap();
    check_imported(&back);
    assert_eq!(
        printed_body(&back),
        printed_body(&g),
        "{spec}: the written model imports to a different IR"
    );
    let c = tmp.join("c.onnx");
    cc_ir::onnx::save_model(&back, &c).unwrap();
    assert_eq!(
        bytes,
        std::fs::read(&c).unwrap(),
        "{spec}: writing the imported model again changes it"
    );
}

/// The printed IR of `g` without its header line.
pub fn printed_body(g: &cc_ir::Graph) -> String {
    let p = cc_ir::printer::print_graph(g);
    p.split_once('\n').map(|(_, b)| b.to_string()).unwrap()
}

/// One fixture compiled in [`sweep_against_onnxruntime`] and run in both runtimes.
pub struct SweepRun<'a> {
    /// The fixture's folder name.
    pub name: &'a str,
    /// The pipeline it was compiled with.
    pub spec: &'a str,
    /// The compile report.
    pub report: &'a cc_passes::Report,
    /// The written file's size in bytes.
    pub size: u64,
    /// Seconds taken to compile and write the file.
    pub secs: f64,
    /// Largest relative error of our executor against onnxruntime over the outputs.
    pub worst: f64,
}

/// Compiles every fixture under `shared` with each of `specs` ([`compile_and_save`]),
/// and compares it in our executor and onnxruntime ([`ours_vs_onnxruntime`]), printing
/// `line` of each run: the failures (onnxruntime could not run it, or the two differ by
/// more than 1e-3 relative), each as `"{name} {spec}: why"`.
pub fn sweep_against_onnxruntime(
    shared: &Path,
    oracle: &Oracle,
    specs: &[&str],
    line: impl Fn(&SweepRun) -> String,
) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (name, dir) in fixture_models(shared) {
        for &spec in specs {
            let out = tmp.path().join(format!("{name}.onnx"));
            let started = std::time::Instant::now();
            let (g, report, size) = compile_and_save(&dir, spec, &out);
            let secs = started.elapsed().as_secs_f64();
            let worst = match ours_vs_onnxruntime(oracle, &g, &out, &dir) {
                Ok(w) => w,
                Err(e) => {
                    failures.push(format!("{name} {spec}: {e}"));
                    continue;
                }
            };
            let run = SweepRun {
                name: &name,
                spec,
                report: &report,
                size,
                secs,
                worst,
            };
            println!("{}", line(&run));
            if worst > 1e-3 {
                failures.push(format!("{name} {spec}: ours vs ORT {worst:.3e}"));
            }
        }
    }
    failures
}

/// Runs the pass pipeline `spec` over `g`, verifying the graph after each pass.
pub fn run_pipeline(
    g: &mut cc_ir::Graph,
    spec: &str,
) -> std::result::Result<cc_passes::Report, cc_passes::PassError> {
    let options = cc_passes::ManagerOptions {
        verify_each: true,
        ..Default::default()
    };
    cc_passes::PassManager::new(&cc_passes::Pipeline::parse(spec)?, options)?.run(g)
}

/// The first BatchNormalization, Identity or Dropout left in `g` (canonicalization
/// removes them all), by op type.
pub fn foldable_op_left(g: &cc_ir::Graph) -> Option<&str> {
    g.node_ids()
        .into_iter()
        .map(|id| g.node(id).op.onnx_type().1)
        .find(|op| matches!(*op, "BatchNormalization" | "Identity" | "Dropout"))
}

/// The fixture models under `shared/models` as (folder name, folder), sorted.
pub fn fixture_models(shared: &Path) -> Vec<(String, PathBuf)> {
    model_dirs(&shared.join("models"))
        .into_iter()
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, p)
        })
        .collect()
}

/// The Python interpreter with onnxruntime, from `CC_PYTHON` (set by scripts/test.sh).
pub struct Oracle {
    python: PathBuf,
    script: PathBuf,
}

impl Oracle {
    /// The oracle if `CC_PYTHON` names a Python that can import onnxruntime.
    pub fn find() -> Option<Oracle> {
        let python = match std::env::var_os("CC_PYTHON") {
            Some(p) => PathBuf::from(p),
            None => return skip("CC_PYTHON is not set (scripts/test.sh sets it up)"),
        };
        let ok = Command::new(&python)
            .args(["-c", "import onnxruntime, onnx, numpy"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return skip(&format!(
                "{} cannot import onnxruntime/onnx/numpy",
                python.display()
            ));
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("oracle/run_ort.py");
        Some(Oracle { python, script })
    }

    /// Runs `model` in onnxruntime on the given input files; returns its outputs.
    pub fn run(
        &self,
        model: &Path,
        inputs: &[PathBuf],
    ) -> std::result::Result<Vec<Tensor>, String> {
        self.run_with(model, inputs, true)
    }

    /// Like [`Oracle::run`] with onnxruntime's graph optimizations switched off: the
    /// graph's own semantics (some optimizations are lossy, e.g. a DequantizeLinear
    /// feeding MatMul becomes an integer MatMul on dynamically quantized activations).
    pub fn run_unoptimized(
        &self,
        model: &Path,
        inputs: &[PathBuf],
    ) -> std::result::Result<Vec<Tensor>, String> {
        self.run_with(model, inputs, false)
    }

    fn run_with(
        &self,
        model: &Path,
        inputs: &[PathBuf],
        optimize: bool,
    ) -> std::result::Result<Vec<Tensor>, String> {
        let out = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&self.python);
        if !optimize {
            cmd.env("CC_ORT_DISABLE_OPT", "1");
        }
        let status = cmd
            .arg(&self.script)
            .arg(model)
            .arg(out.path())
            .args(inputs)
            .output()
            .map_err(|e| e.to_string())?;
        if !status.status.success() {
            return Err(format!(
                "onnxruntime failed on {}: {}",
                model.display(),
                String::from_utf8_lossy(&status.stderr)
            ));
        }
        let mut outs = Vec::new();
        for i in 0.. {
            let p = out.path().join(format!("output_{i}.pb"));
            if !p.exists() {
                break;
            }
            let (_, t) = cc_ir::onnx::read_tensor_file(&p).map_err(|e| e.to_string())?;
            outs.push(t);
        }
        Ok(outs)
    }
}

/// `g` with extra graph outputs: the first non-constant input of each output's
/// producer (the features entering a classifier head or LM head). vit_tiny's head is
/// zero-initialised, so its logits are all zero whatever the body computes; comparing
/// the features too keeps agreement checks meaningful on every fixture.
pub fn with_feature_outputs(g: &cc_ir::Graph) -> cc_ir::Graph {
    let mut probed = g.clone();
    let mut outputs = g.outputs().to_vec();
    for &o in g.outputs() {
        let Some((node, _)) = g.value(o).producer() else {
            continue;
        };
        let feature = g
            .node(node)
            .inputs()
            .iter()
            .flatten()
            .copied()
            .find(|&v| !g.value(v).is_const() && g.value(v).compressed.is_none());
        if let Some(v) = feature.filter(|v| !outputs.contains(v)) {
            outputs.push(v);
        }
    }
    probed.set_outputs(outputs);
    probed
}

/// Runs the compressed graph `g` and the file `out` written from it on the fixture
/// inputs of `dir` with our executor (the two must agree exactly), and the file with
/// the features before each output's producer added as outputs
/// ([`with_feature_outputs`]) in onnxruntime with its graph optimizations off: the
/// largest relative error of ours against onnxruntime over outputs and features, or
/// why onnxruntime could not run it.
pub fn ours_vs_onnxruntime(
    oracle: &Oracle,
    g: &cc_ir::Graph,
    out: &Path,
    dir: &Path,
) -> std::result::Result<f64, String> {
    use cc_ir::Executor;
    let files = test_inputs(dir);
    let inputs: Vec<Tensor> = files
        .iter()
        .map(|p| cc_ir::onnx::read_tensor_file(p).map(|t| t.1))
        .collect::<Result<_>>()
        .map_err(|e| e.to_string())?;
    let ex = cc_backends::cpu::CpuExecutor::new(2).map_err(|e| e.to_string())?;
    let file = cc_ir::onnx::load_model(out).map_err(|e| e.to_string())?;
    let probed = with_feature_outputs(g);
    let ours = ex.run(&probed, &inputs).map_err(|e| e.to_string())?;
    let ours_file = ex.run(&file, &inputs).map_err(|e| e.to_string())?;
    let probe_file = out.with_extension("features.onnx");
    cc_ir::onnx::save_model(&probed, &probe_file).map_err(|e| e.to_string())?;
    let ort = oracle.run_unoptimized(&probe_file, &files);
    let _ = std::fs::remove_file(&probe_file);
    let ort = ort?;
    if ort.len() != ours.len() || ours_file.len() != g.outputs().len() {
        return Err(format!(
            "{} outputs and features from the IR, {} from onnxruntime, {} from the file",
            ours.len(),
            ort.len(),
            ours_file.len()
        ));
    }
    for (a, c) in ours.iter().zip(&ours_file) {
        if a.shape() != c.shape() || max_rel_error(a, c)? != 0.0 {
            return Err("the IR and the written file give different outputs".into());
        }
    }
    let mut worst = 0f64;
    for (a, b) in ours.iter().zip(&ort) {
        worst = worst.max(max_rel_error(a, b)?);
    }
    Ok(worst)
}

/// Largest absolute difference divided by the largest reference magnitude (relative
/// error in the max norm); `Err` if shapes or types differ.
pub fn max_rel_error(got: &Tensor, want: &Tensor) -> Result<f64, String> {
    if got.shape() != want.shape() {
        return Err(format!("shape {:?} != {:?}", got.shape(), want.shape()));
    }
    let as_f64 = |t: &Tensor| t.to_f64_numbers().map_err(|e| e.to_string());
    let (g, w) = (as_f64(got)?, as_f64(want)?);
    let scale = w.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-12);
    let diff = g.iter().zip(&w).fold(0f64, |m, (a, b)| {
        if a.is_nan() || b.is_nan() {
            f64::INFINITY
        } else {
            m.max((a - b).abs())
        }
    });
    Ok(diff / scale)
}

/// The input files of a fixture's `test_data_set_0`, in order.
pub fn test_inputs(model_dir: &Path) -> Vec<PathBuf> {
    (0..)
        .map(|i| model_dir.join(format!("test_data_set_0/input_{i}.pb")))
        .take_while(|p| p.exists())
        .collect()
}

/// The reference output 0 of a fixture.
pub fn reference_output(model_dir: &Path) -> Result<Tensor> {
    cc_ir::onnx::read_tensor_file(&model_dir.join("test_data_set_0/output_0.pb")).map(|(_, t)| t)
}
