//! The ONNX node-test conformance harness for the CPU executor.
//!
//! Each case folder (`shared/onnx-node-tests/test_*`) holds `model.onnx` and
//! `test_data_set_0/{input,output}_*.pb`. [`run_case`] imports the model, infers
//! shapes, runs it with a [`CpuExecutor`] and compares every output with the reference
//! (see [`compare`] for the tolerances).
//!
//! Cases are grouped into op families by [`family_of`]. A family is *claimed* when at
//! least one of its cases passes: the executor evidently supports that op, so every
//! case of the family is accounted for, either in `tests/conformance/manifest.txt`
//! (passes, checked by the `conformance` test) or in
//! `tests/conformance/known_failures.txt` (with the reason). Both files are written by
//! `cargo run --release -p cc-tests --bin conformance-manifest` ([`write_files`]), so
//! when the executor learns new ops, regenerating them claims the new families.

use cc_backends::cpu::exec::CpuExecutor;
use cc_ir::infer::infer_shapes;
use cc_ir::onnx::{load_model, read_tensor_file};
use cc_ir::{DType, Executor, Graph, Tensor};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Relative tolerance for f32/f64 outputs: |got - want| <= ATOL + RTOL * |want|.
pub const RTOL: f64 = 1e-3;
/// Absolute tolerance for f32/f64 outputs.
pub const ATOL: f64 = 1e-5;
/// Relative tolerance for f16/bf16 outputs (about 8 units in the last place).
pub const RTOL_HALF: f64 = 1e-2;
/// Absolute tolerance for f16/bf16 outputs.
pub const ATOL_HALF: f64 = 1e-3;

/// Threads the harness runs the executor with.
pub const THREADS: usize = 2;

/// Why a case failed, coarsely, for the known-failures file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FailKind {
    /// The model does not import or its shapes do not infer.
    Import,
    /// A reference tensor file does not read (e.g. sequence or optional inputs).
    Data,
    /// The executor does not support an op or element type in the model.
    Unsupported,
    /// The executor ran but reported an error.
    Error,
    /// The executor panicked.
    Panic,
    /// Outputs differ from the reference.
    Mismatch,
}

impl FailKind {
    /// The tag written in the known-failures file.
    pub fn tag(self) -> &'static str {
        match self {
            FailKind::Import => "import",
            FailKind::Data => "data",
            FailKind::Unsupported => "unsupported",
            FailKind::Error => "error",
            FailKind::Panic => "panic",
            FailKind::Mismatch => "mismatch",
        }
    }
}

/// A failed case: kind and a one-line message.
#[derive(Clone, Debug)]
pub struct Failure {
    /// Coarse kind.
    pub kind: FailKind,
    /// One-line reason.
    pub msg: String,
}

fn fail(kind: FailKind, msg: impl std::fmt::Display) -> Failure {
    let msg = msg.to_string();
    let line = msg.lines().next().unwrap_or("").replace('\t', " ");
    let short: String = line.chars().take(160).collect();
    Failure { kind, msg: short }
}

/// The node-test case folders under `shared/onnx-node-tests`, sorted.
pub fn case_dirs(shared: &Path) -> Vec<PathBuf> {
    crate::model_dirs(&shared.join("onnx-node-tests"))
}

/// The folder name of a case.
pub fn case_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The op family of a case: the op type of the model whose name (lowercase, without
/// underscores) is the longest prefix of the case name after `test_`; else, for an
/// `_expanded` case, the family of the case it expands; else the first node's op type.
pub fn family_of(name: &str, op_types: &[String], families: &BTreeMap<String, String>) -> String {
    let stem = squash(name.strip_prefix("test_").unwrap_or(name));
    let best = op_types
        .iter()
        .filter(|t| stem.starts_with(&squash(t)))
        .max_by_key(|t| t.len());
    if let Some(t) = best {
        return t.clone();
    }
    if let Some(i) = name.find("_expanded") {
        if let Some(f) = families.get(&name[..i]) {
            return f.clone();
        }
    }
    op_types
        .first()
        .cloned()
        .unwrap_or_else(|| "(empty)".into())
}

/// The distinct op types of a model's top-level nodes, in node order.
pub fn op_types(g: &Graph) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for id in g.node_ids() {
        let t = g.node(id).op.onnx_type().1.to_string();
        if !v.contains(&t) {
            v.push(t);
        }
    }
    v
}

/// Families of all cases (name -> (family, the model's op types)), computed from their
/// models; cases whose model does not import are grouped by name (their first word after
/// `test_`) and have no op types.
pub fn families(dirs: &[PathBuf]) -> BTreeMap<String, (String, Vec<String>)> {
    let mut types: Vec<(String, Option<Vec<String>>)> = dirs
        .iter()
        .map(|d| {
            let types = load_model(&d.join("model.onnx")).ok().map(|g| op_types(&g));
            (case_name(d), types)
        })
        .collect();
    // Non-expanded cases first so expanded ones can look their family up.
    types.sort_by_key(|(n, _)| n.contains("_expanded"));
    let mut fams: BTreeMap<String, String> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (name, t) in types {
        let f = match &t {
            Some(t) => family_of(&name, t, &fams),
            None => name
                .strip_prefix("test_")
                .unwrap_or(&name)
                .split('_')
                .next()
                .unwrap_or("")
                .to_string(),
        };
        fams.insert(name.clone(), f.clone());
        out.insert(name, (f, t.unwrap_or_default()));
    }
    out
}

/// Runs one case and compares its outputs; `Err` with the reason when it fails.
pub fn run_case(dir: &Path, ex: &CpuExecutor) -> Result<(), Failure> {
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case_inner(dir, ex)));
    match caught {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(fail(FailKind::Panic, format!("panic: {msg}")))
        }
    }
}

fn numbered(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    (0..)
        .map(|i| dir.join(format!("test_data_set_0/{prefix}_{i}.pb")))
        .take_while(|p| p.exists())
        .collect()
}

fn run_case_inner(dir: &Path, ex: &CpuExecutor) -> Result<(), Failure> {
    let mut g = load_model(&dir.join("model.onnx")).map_err(|e| fail(FailKind::Import, e))?;
    infer_shapes(&mut g).map_err(|e| fail(FailKind::Import, format!("infer: {e}")))?;
    let read = |p: &PathBuf| {
        read_tensor_file(p)
            .map(|(_, t)| t)
            .map_err(|e| fail(FailKind::Data, format!("{}: {e}", p.display())))
    };
    let inputs = numbered(dir, "input")
        .iter()
        .map(read)
        .collect::<Result<Vec<_>, _>>()?;
    let wants = numbered(dir, "output")
        .iter()
        .map(read)
        .collect::<Result<Vec<_>, _>>()?;
    let gots = ex.run(&g, &inputs).map_err(|e| {
        let kind = if matches!(e, cc_ir::Error::Unsupported(_)) {
            FailKind::Unsupported
        } else {
            FailKind::Error
        };
        fail(kind, e)
    })?;
    if gots.len() != wants.len() {
        return Err(fail(
            FailKind::Mismatch,
            format!("{} outputs, reference has {}", gots.len(), wants.len()),
        ));
    }
    for (i, (got, want)) in gots.iter().zip(&wants).enumerate() {
        compare(got, want).map_err(|m| fail(FailKind::Mismatch, format!("output {i}: {m}")))?;
    }
    Ok(())
}

fn as_f64(t: &Tensor) -> Option<Vec<f64>> {
    match t.dtype() {
        DType::F32 => t
            .to_f32()
            .ok()
            .map(|v| v.into_iter().map(f64::from).collect()),
        DType::F64 => t.to_f64().ok(),
        DType::F16 | DType::BF16 => t.raw().ok().map(|b| {
            b.chunks_exact(2)
                .map(|c| {
                    let bits = u16::from_le_bytes([c[0], c[1]]);
                    if t.dtype() == DType::F16 {
                        f64::from(half::f16::from_bits(bits).to_f32())
                    } else {
                        f64::from(half::bf16::from_bits(bits).to_f32())
                    }
                })
                .collect()
        }),
        _ => None,
    }
}

/// Compares an output with its reference: same element type and shape; floats within
/// `ATOL + RTOL * |want|` (f16/bf16: the `_HALF` tolerances), NaN exactly where the
/// reference has NaN and infinities equal; every other type (integers, bool, strings,
/// 8-bit floats) exactly.
pub fn compare(got: &Tensor, want: &Tensor) -> Result<(), String> {
    if got.dtype() != want.dtype() {
        return Err(format!("element type {} != {}", got.dtype(), want.dtype()));
    }
    if got.shape() != want.shape() {
        return Err(format!("shape {:?} != {:?}", got.shape(), want.shape()));
    }
    let (rtol, atol) = match got.dtype() {
        DType::F16 | DType::BF16 => (RTOL_HALF, ATOL_HALF),
        _ => (RTOL, ATOL),
    };
    if let (Some(g), Some(w)) = (as_f64(got), as_f64(want)) {
        for (i, (a, b)) in g.iter().zip(&w).enumerate() {
            let ok = if b.is_nan() || a.is_nan() {
                a.is_nan() && b.is_nan()
            } else if b.is_infinite() || a.is_infinite() {
                a == b
            } else {
                (a - b).abs() <= atol + rtol * b.abs()
            };
            if !ok {
                return Err(format!("element {i}: {a} != {b} (reference)"));
            }
        }
        return Ok(());
    }
    if got.data() != want.data() {
        return Err("values differ".into());
    }
    Ok(())
}

/// One case's family and outcome.
#[derive(Debug)]
pub struct Outcome {
    /// The op family ([`family_of`]).
    pub family: String,
    /// True when the model contains the family's op itself (not only an expansion of it
    /// into other ops).
    pub direct: bool,
    /// Pass, or why not.
    pub result: Result<(), Failure>,
}

/// The outcome of running every case, by case name.
pub type Results = BTreeMap<String, Outcome>;

/// Runs every case under `shared`.
pub fn run_all(shared: &Path) -> Result<Results, String> {
    let dirs = case_dirs(shared);
    let fams = families(&dirs);
    let ex = CpuExecutor::new(THREADS).map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for d in &dirs {
        let name = case_name(d);
        let (family, ops) = fams.get(&name).cloned().unwrap_or_default();
        let direct = ops.contains(&family);
        let result = run_case(d, &ex);
        out.insert(
            name,
            Outcome {
                family,
                direct,
                result,
            },
        );
    }
    Ok(out)
}

/// The claimed families: those with a passing case whose model contains the family's
/// op itself (a family whose only passing cases are `_expanded` into other ops is not
/// claimed: the executor does not run the op).
pub fn claimed(results: &Results) -> Vec<String> {
    let mut v: Vec<String> = results
        .values()
        .filter(|o| o.direct && o.result.is_ok())
        .map(|o| o.family.clone())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Passing and total case counts of the claimed families.
pub fn claimed_counts(results: &Results) -> (usize, usize) {
    let fams = claimed(results);
    let cases: Vec<&Outcome> = results
        .values()
        .filter(|o| fams.contains(&o.family))
        .collect();
    (
        cases.iter().filter(|o| o.result.is_ok()).count(),
        cases.len(),
    )
}

/// The manifest and known-failures file contents for `results`: the manifest lists
/// every passing case, claimed families first; the known failures list every failing
/// case of a claimed family with its reason.
pub fn render(results: &Results) -> (String, String) {
    let claimed = claimed(results);
    let mut by_family: BTreeMap<(bool, &str), Vec<(&str, &Outcome)>> = BTreeMap::new();
    for (name, o) in results {
        let is_claimed = claimed.contains(&o.family);
        if is_claimed || o.result.is_ok() {
            by_family
                .entry((!is_claimed, &o.family))
                .or_default()
                .push((name, o));
        }
    }
    let (pass, total) = claimed_counts(results);
    let mut manifest = String::new();
    let mut known = String::new();
    let _ = writeln!(
        manifest,
        "# ONNX node-test cases the CPU executor passes, by op family.\n\
         # Generated by `cargo run --release -p cc-tests --bin conformance-manifest`;\n\
         # checked by `cargo test --release -p cc-tests --test conformance`.\n\
         # Claimed families: {} ({pass}/{total} of their cases pass; the others are in\n\
         # known_failures.txt).",
        claimed.len()
    );
    let _ = writeln!(
        known,
        "# Cases of claimed op families that do not pass: `case  # [kind] reason`.\n\
         # Generated with manifest.txt by the conformance-manifest tool; do not edit."
    );
    let mut other_header = false;
    for ((unclaimed, fam), cases) in &by_family {
        if *unclaimed && !other_header {
            let _ = writeln!(
                manifest,
                "\n# ---- Passing cases of unclaimed families (the op itself is not run;\n\
                 # these cases expand it into other ops, or test a degenerate model).",
            );
            other_header = true;
        }
        let ok = cases.iter().filter(|(_, o)| o.result.is_ok()).count();
        let _ = writeln!(manifest, "\n# {fam} ({ok}/{})", cases.len());
        let mut any_fail = false;
        for (name, o) in cases {
            match &o.result {
                Ok(()) => {
                    let _ = writeln!(manifest, "{name}");
                }
                Err(f) => {
                    if !any_fail {
                        let _ = writeln!(known, "\n# {fam}");
                        any_fail = true;
                    }
                    let _ = writeln!(known, "{name}  # [{}] {}", f.kind.tag(), f.msg);
                }
            }
        }
    }
    (manifest, known)
}

/// The folder holding the manifest files (`tests/conformance`).
pub fn manifest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance")
}

/// The case names listed in a manifest-style file (comments and blank lines skipped;
/// anything after `#` on a line ignored).
pub fn listed(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_follow_the_case_name() {
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let none = BTreeMap::new();
        assert_eq!(
            family_of("test_conv_with_strides", &t(&["Conv"]), &none),
            "Conv"
        );
        assert_eq!(
            family_of("test_convtranspose_1d", &t(&["ConvTranspose"]), &none),
            "ConvTranspose"
        );
        assert_eq!(
            family_of("test_reduce_sum_keepdims", &t(&["ReduceSum"]), &none),
            "ReduceSum"
        );
        assert_eq!(
            family_of("test_batchnorm_epsilon", &t(&["BatchNormalization"]), &none),
            "BatchNormalization"
        );
        let mut known = BTreeMap::new();
        known.insert("test_softmax_axis_0".to_string(), "Softmax".to_string());
        assert_eq!(
            family_of(
                "test_softmax_axis_0_expanded",
                &t(&["Exp", "ReduceSum"]),
                &known
            ),
            "Softmax"
        );
    }

    #[test]
    fn comparison_tolerances() {
        let f = |v: Vec<f32>| Tensor::from_f32(vec![v.len()], v).unwrap();
        assert!(compare(&f(vec![1.0, f32::NAN]), &f(vec![1.0005, f32::NAN])).is_ok());
        assert!(compare(&f(vec![1.0]), &f(vec![1.002])).is_err());
        assert!(compare(&f(vec![0.0]), &f(vec![f32::NAN])).is_err());
        assert!(compare(&f(vec![1e-6]), &f(vec![0.0])).is_ok());
        let i = |v: Vec<i64>| Tensor::from_i64(vec![v.len()], v).unwrap();
        assert!(compare(&i(vec![1, 2]), &i(vec![1, 2])).is_ok());
        assert!(compare(&i(vec![1, 2]), &i(vec![1, 3])).is_err());
        assert!(compare(&f(vec![1.0]), &i(vec![1])).is_err());
    }

    #[test]
    fn listed_skips_comments() {
        assert_eq!(
            listed("# head\n\n# Add (2/2)\ntest_add\ntest_add_bcast  # note\n"),
            vec!["test_add", "test_add_bcast"]
        );
    }
}
