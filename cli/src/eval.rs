//! `cc-compile eval`: run an original and a compressed model on the same data and
//! compare them — output error, cosine similarity, top-1 agreement, and, when the data
//! folder has them, accuracy against `labels.pb` and perplexity against `targets.pb`.

use crate::metrics::{self, Accuracy};
use crate::run::{self, fmt_num};
use cc_ir::{Error, Result, Tensor};
use std::path::{Path, PathBuf};

/// The evaluation data of a folder: its inputs and, when present, labels and targets.
#[derive(Debug)]
pub struct EvalData {
    /// The `input_*.pb` files, in order.
    pub input_files: Vec<PathBuf>,
    /// Their tensors.
    pub inputs: Vec<Tensor>,
    /// One class per sample (`labels.pb`), if present.
    pub labels: Option<Vec<i64>>,
    /// One next token per position (`targets.pb`), if present.
    pub targets: Option<Vec<i64>>,
}

/// `dir/input_0.pb, dir/input_1.pb, ...` while they exist.
fn input_files_in(dir: &Path) -> Vec<PathBuf> {
    (0..)
        .map(|i| dir.join(format!("input_{i}.pb")))
        .take_while(|p| p.is_file())
        .collect()
}

/// Loads the data of `dir`: `input_*.pb` from `dir` itself or from
/// `dir/test_data_set_0` (a fixture model folder); `labels.pb` and `targets.pb` from the
/// folder holding the inputs, `dir`, or the parent of the inputs' folder.
pub fn load_eval_data(dir: &Path) -> Result<EvalData> {
    if !dir.is_dir() {
        return Err(Error::invalid(format!(
            "data folder {} not found",
            dir.display()
        )));
    }
    let mut folder = dir.to_path_buf();
    let mut input_files = input_files_in(&folder);
    if input_files.is_empty() {
        folder = dir.join("test_data_set_0");
        input_files = input_files_in(&folder);
    }
    if input_files.is_empty() {
        return Err(Error::invalid(format!(
            "no input_0.pb in {} or {}/test_data_set_0",
            dir.display(),
            dir.display()
        )));
    }
    let inputs = run::read_inputs(&input_files)?;
    let mut places = vec![folder.clone(), dir.to_path_buf()];
    if let Some(p) = folder.parent() {
        places.push(p.to_path_buf());
    }
    let find = |file: &str| -> Result<Option<Vec<i64>>> {
        match places.iter().map(|d| d.join(file)).find(|p| p.is_file()) {
            None => Ok(None),
            Some(p) => {
                let (_, t) = cc_ir::onnx::read_tensor_file(&p)?;
                let v = t.to_i64_lossless().map_err(|_| {
                    Error::invalid(format!(
                        "{}: expected integers but the tensor holds {}",
                        p.display(),
                        t.dtype()
                    ))
                })?;
                Ok(Some(v))
            }
        }
    };
    Ok(EvalData {
        input_files,
        inputs,
        labels: find("labels.pb")?,
        targets: find("targets.pb")?,
    })
}

/// How one output of the compressed model differs from the original's.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputComparison {
    /// Output name (in the original model).
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Largest absolute difference.
    pub max_abs: f64,
    /// Largest absolute difference over the largest original magnitude.
    pub max_rel: f64,
    /// Mean cosine similarity of the rows along the last axis.
    pub cosine: f64,
    /// Fraction of rows (along the last axis) with the same argmax.
    pub top1: f64,
}

/// Compares outputs pairwise: `got` (compressed) against `want` (original).
pub fn compare_outputs(
    names: &[String],
    want: &[Tensor],
    got: &[Tensor],
) -> Result<Vec<OutputComparison>> {
    if want.len() != got.len() {
        return Err(Error::invalid(format!(
            "the original model has {} output(s) but the compressed one has {}",
            want.len(),
            got.len()
        )));
    }
    want.iter()
        .zip(got)
        .enumerate()
        .map(|(i, (w, g))| {
            let name = names.get(i).cloned().unwrap_or_else(|| format!("#{i}"));
            if w.shape() != g.shape() {
                return Err(Error::invalid(format!(
                    "output {name:?}: shape {:?} in the original but {:?} in the compressed model",
                    w.shape(),
                    g.shape()
                )));
            }
            let at = |e: Error| Error::invalid(format!("output {name:?}: {e}"));
            let (wv, gv) = (
                metrics::to_f64(w).map_err(at)?,
                metrics::to_f64(g).map_err(at)?,
            );
            let row = metrics::row_len(w.shape());
            Ok(OutputComparison {
                shape: w.shape().to_vec(),
                max_abs: metrics::max_abs_error(&gv, &wv),
                max_rel: metrics::max_rel_error(&gv, &wv),
                cosine: metrics::mean_row_cosine(&gv, &wv, row),
                top1: metrics::top1_agreement(&gv, &wv, row),
                name,
            })
        })
        .collect()
}

/// Task figures of one model: accuracy and perplexity of its output 0.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskFigures {
    /// Accuracy against the labels (argmax over the last axis), if labels were given.
    pub accuracy: Option<Accuracy>,
    /// Perplexity of the targets, if targets were given.
    pub perplexity: Option<f64>,
}

/// Accuracy and perplexity of `logits` (rows along the last axis) for the given labels
/// and targets.
pub fn task_figures(
    logits: &Tensor,
    labels: Option<&[i64]>,
    targets: Option<&[i64]>,
) -> Result<TaskFigures> {
    if labels.is_none() && targets.is_none() {
        return Ok(TaskFigures {
            accuracy: None,
            perplexity: None,
        });
    }
    let v = metrics::to_f64(logits)?;
    let row = metrics::row_len(logits.shape());
    Ok(TaskFigures {
        accuracy: labels
            .map(|l| metrics::accuracy(&v, row, l))
            .transpose()
            .map_err(|e| Error::invalid(format!("labels.pb: {e}")))?,
        perplexity: targets
            .map(|t| metrics::perplexity(&v, row, t))
            .transpose()
            .map_err(|e| Error::invalid(format!("targets.pb: {e}")))?,
    })
}

/// One model's side of an evaluation.
#[derive(Clone, Debug)]
pub struct ModelResult {
    /// The model file.
    pub path: PathBuf,
    /// Wall time of the executor run, seconds.
    pub seconds: f64,
    /// Accuracy / perplexity.
    pub figures: TaskFigures,
}

/// The outcome of `cc-compile eval`.
#[derive(Clone, Debug)]
pub struct EvalReport {
    /// The original model.
    pub original: ModelResult,
    /// The compressed model.
    pub compressed: ModelResult,
    /// Per output: the compressed model's error against the original.
    pub outputs: Vec<OutputComparison>,
}

/// Runs one model on the data; its outputs and result.
pub fn run_on_data(
    path: &Path,
    data: &EvalData,
    threads: usize,
) -> Result<(Vec<String>, Vec<Tensor>, ModelResult)> {
    let g = run::load_graph(path)?;
    let (outs, time) = run::run_model(&g, &data.inputs, threads)
        .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
    let first = outs
        .first()
        .ok_or_else(|| Error::invalid(format!("{}: the model has no outputs", path.display())))?;
    let figures = task_figures(first, data.labels.as_deref(), data.targets.as_deref())
        .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
    let result = ModelResult {
        path: path.to_path_buf(),
        seconds: time.as_secs_f64(),
        figures,
    };
    Ok((run::output_names(&g), outs, result))
}

/// Runs both models on the data and compares them.
pub fn evaluate(
    original: &Path,
    compressed: &Path,
    data: &EvalData,
    threads: usize,
) -> Result<EvalReport> {
    let (names, want, original) = run_on_data(original, data, threads)?;
    let (_, got, compressed) = run_on_data(compressed, data, threads)?;
    Ok(EvalReport {
        outputs: compare_outputs(&names, &want, &got)?,
        original,
        compressed,
    })
}

fn fmt_acc(a: &Option<Accuracy>) -> String {
    match a {
        Some(a) => format!("{:.5} ({}/{})", a.fraction(), a.correct, a.total),
        None => "-".into(),
    }
}

fn fmt_opt(x: Option<f64>) -> String {
    x.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into())
}

impl EvalReport {
    /// A plain-text table: per model run time, accuracy and perplexity; per output the
    /// error figures.
    pub fn to_table(&self) -> String {
        let (o, c) = (&self.original, &self.compressed);
        let mut s = String::new();
        let name = |p: &Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        s += &format!("{:<12} {:>20} {:>20}\n", "", "original", "compressed");
        s += &format!(
            "{:<12} {:>20} {:>20}\n",
            "model",
            name(&o.path),
            name(&c.path)
        );
        s += &format!("{:<12} {:>20.4} {:>20.4}\n", "run s", o.seconds, c.seconds);
        if o.figures.accuracy.is_some() {
            s += &format!(
                "{:<12} {:>20} {:>20}\n",
                "accuracy",
                fmt_acc(&o.figures.accuracy),
                fmt_acc(&c.figures.accuracy)
            );
        }
        if o.figures.perplexity.is_some() {
            s += &format!(
                "{:<12} {:>20} {:>20}\n",
                "perplexity",
                fmt_opt(o.figures.perplexity),
                fmt_opt(c.figures.perplexity)
            );
        }
        s += "\n";
        s += &format!(
            "{:<16} {:<14} {:>12} {:>12} {:>10} {:>8}\n",
            "output", "shape", "max abs err", "max rel err", "cosine", "top-1"
        );
        for r in &self.outputs {
            let shape: Vec<String> = r.shape.iter().map(usize::to_string).collect();
            s += &format!(
                "{:<16} {:<14} {:>12} {:>12} {:>10} {:>8}\n",
                r.name,
                format!("[{}]", shape.join(",")),
                fmt_num(r.max_abs),
                fmt_num(r.max_rel),
                format!("{:.6}", r.cosine),
                format!("{:.4}", r.top1)
            );
        }
        s
    }

    /// The report as JSON (NaN figures become `null`).
    pub fn to_json(&self) -> String {
        use serde_json::json;
        let model = |m: &ModelResult| {
            json!({
                "path": m.path.display().to_string(),
                "seconds": m.seconds,
                "accuracy": m.figures.accuracy.map(|a| a.fraction()),
                "correct": m.figures.accuracy.map(|a| a.correct),
                "total": m.figures.accuracy.map(|a| a.total),
                "perplexity": m.figures.perplexity,
            })
        };
        let outputs: Vec<serde_json::Value> = self
            .outputs
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "shape": r.shape,
                    "max_abs_error": r.max_abs,
                    "max_rel_error": r.max_rel,
                    "mean_cosine": r.cosine,
                    "top1_agreement": r.top1,
                })
            })
            .collect();
        let v = json!({
            "original": model(&self.original),
            "compressed": model(&self.compressed),
            "outputs": outputs,
        });
        format!("{v:#}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: Vec<usize>, v: Vec<f32>) -> Tensor {
        Tensor::from_f32(shape, v).unwrap()
    }

    #[test]
    fn compares_outputs() {
        let want = [t(vec![2, 2], vec![1.0, 0.0, 0.0, 2.0])];
        let got = [t(vec![2, 2], vec![1.0, 0.5, 1.0, 0.0])];
        let r = compare_outputs(&["y".into()], &want, &got).unwrap();
        assert_eq!(r[0].max_abs, 2.0);
        assert_eq!(r[0].max_rel, 1.0);
        assert_eq!(r[0].top1, 0.5);
        let c0 = 1.0 / 1.25f64.sqrt();
        assert!((r[0].cosine - c0 / 2.0).abs() < 1e-12);
        let bad = [t(vec![4], vec![0.0; 4])];
        let e = compare_outputs(&["y".into()], &want, &bad).unwrap_err();
        assert!(e.to_string().contains("shape"), "{e}");
        assert!(compare_outputs(&[], &want, &[]).is_err());
    }

    #[test]
    fn task_figures_from_labels_and_targets() {
        let logits = t(vec![2, 2], vec![0.0, 1.0, 0.0, 0.0]);
        let f = task_figures(&logits, Some(&[1, 1]), Some(&[1, 0])).unwrap();
        assert_eq!(
            f.accuracy,
            Some(Accuracy {
                correct: 1,
                total: 2
            })
        );
        let p1 = (1.0 + 1f64.exp()).ln() - 1.0;
        let want = ((p1 + 2f64.ln()) / 2.0).exp();
        assert!((f.perplexity.unwrap() - want).abs() < 1e-12);
        let e = task_figures(&logits, Some(&[1]), None).unwrap_err();
        assert!(e.to_string().contains("labels.pb"), "{e}");
    }

    #[test]
    fn loads_data_from_a_model_folder_or_its_test_set() {
        let dir = tempfile::tempdir().unwrap();
        let set = dir.path().join("test_data_set_0");
        std::fs::create_dir(&set).unwrap();
        let x = t(vec![1, 2], vec![1.0, 2.0]);
        cc_ir::onnx::write_tensor_file(&set.join("input_0.pb"), "x", &x).unwrap();
        let labels = Tensor::from_i64(vec![1], vec![1]).unwrap();
        cc_ir::onnx::write_tensor_file(&dir.path().join("labels.pb"), "labels", &labels).unwrap();
        for d in [dir.path(), set.as_path()] {
            let data = load_eval_data(d).unwrap();
            assert_eq!(data.inputs, vec![x.clone()]);
            assert_eq!(data.labels, Some(vec![1]));
            assert_eq!(data.targets, None);
        }
        let e = load_eval_data(&dir.path().join("absent")).unwrap_err();
        assert!(e.to_string().contains("not found"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        let e = load_eval_data(empty.path()).unwrap_err();
        assert!(e.to_string().contains("no input_0.pb"), "{e}");
    }

    #[test]
    fn report_renders_as_table_and_json() {
        let m = |p: &str, correct| ModelResult {
            path: PathBuf::from(p),
            seconds: 0.5,
            figures: TaskFigures {
                accuracy: Some(Accuracy { correct, total: 4 }),
                perplexity: None,
            },
        };
        let r = EvalReport {
            original: m("a.onnx", 4),
            compressed: m("b.onnx", 3),
            outputs: vec![OutputComparison {
                name: "logits".into(),
                shape: vec![4, 10],
                max_abs: 0.25,
                max_rel: 0.05,
                cosine: 0.999,
                top1: 0.75,
            }],
        };
        let table = r.to_table();
        assert!(table.contains("1.00000 (4/4)"), "{table}");
        assert!(table.contains("0.75000 (3/4)"), "{table}");
        assert!(!table.contains("perplexity"), "{table}");
        assert!(
            table.contains("logits") && table.contains("[4,10]"),
            "{table}"
        );
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["compressed"]["correct"], 3);
        assert_eq!(v["outputs"][0]["top1_agreement"], 0.75);
        assert!(v["original"]["perplexity"].is_null());
    }
}
