//! The task figures in `shared/models/README.md` are reproduced by our own tools:
//! digits_cnn's test accuracy (393/397) and tiny_lm's perplexity (`eval_ppl.txt`), both
//! from the reference outputs stored with the fixtures and from our CPU executor.

use cc_cli::eval::{load_eval_data, task_figures, EvalData, TaskFigures};
use cc_cli::run::{load_graph, run_model};
use cc_ir::Tensor;
use cc_tests::{reference_output, shared_dir};
use std::path::{Path, PathBuf};

/// The fixture model folder `name` with its evaluation data, or `None` (skipped).
fn fixture(name: &str) -> Option<(PathBuf, EvalData)> {
    let dir = shared_dir()?.join("models").join(name);
    let data = load_eval_data(&dir).unwrap();
    Some((dir, data))
}

/// Output 0 of the fixture's model run on our CPU executor.
fn executor_output(dir: &Path, data: &EvalData) -> Tensor {
    let g = load_graph(&dir.join("model.onnx")).unwrap();
    let (outs, _) = run_model(&g, &data.inputs, 2).unwrap();
    outs.into_iter().next().unwrap()
}

fn figures(logits: &Tensor, data: &EvalData) -> TaskFigures {
    task_figures(logits, data.labels.as_deref(), data.targets.as_deref()).unwrap()
}

/// The README's digits_cnn figure: 393 of 397 test images right (0.98992).
fn assert_digits_accuracy(f: &TaskFigures) {
    let acc = f.accuracy.unwrap();
    assert_eq!((acc.correct, acc.total), (393, 397));
    assert_eq!(format!("{:.5}", acc.fraction()), "0.98992");
}

/// The tiny_lm perplexity, to 4 decimals, against `eval_ppl.txt`.
fn assert_tiny_lm_perplexity(dir: &Path, f: &TaskFigures) {
    let text = std::fs::read_to_string(dir.join("eval_ppl.txt")).unwrap();
    let want: f64 = text.trim().parse().unwrap();
    let got = f.perplexity.unwrap();
    assert_eq!(format!("{got:.4}"), format!("{want:.4}"), "{got} vs {want}");
    assert!((got - want).abs() < 1e-4, "{got} vs {want}");
}

#[test]
fn digits_cnn_accuracy_from_reference_outputs() {
    let Some((dir, data)) = fixture("digits_cnn") else {
        return;
    };
    assert_digits_accuracy(&figures(&reference_output(&dir).unwrap(), &data));
}

#[test]
fn digits_cnn_accuracy_on_the_cpu_executor() {
    let Some((dir, data)) = fixture("digits_cnn") else {
        return;
    };
    assert_digits_accuracy(&figures(&executor_output(&dir, &data), &data));
}

#[test]
fn tiny_lm_perplexity_from_reference_outputs() {
    let Some((dir, data)) = fixture("tiny_lm") else {
        return;
    };
    assert_tiny_lm_perplexity(&dir, &figures(&reference_output(&dir).unwrap(), &data));
}

#[test]
fn tiny_lm_perplexity_on_the_cpu_executor() {
    let Some((dir, data)) = fixture("tiny_lm") else {
        return;
    };
    assert_tiny_lm_perplexity(&dir, &figures(&executor_output(&dir, &data), &data));
}
