//! Import -> export -> import over every fixture model and ONNX node test: the printed
//! IR must be identical, and every test_data_set_0 tensor file must read.

use cc_ir::onnx::{load_model, load_model_bytes, model_to_bytes, read_tensor_file};
use cc_ir::printer::print_graph;
use cc_tests::{check_all, model_dirs, shared_dir};
use std::path::Path;

/// Imports, exports and re-imports one model; an error message on any difference.
fn round_trip(dir: &Path) -> Result<(), String> {
    let path = dir.join("model.onnx");
    let g = load_model(&path).map_err(|e| format!("import: {e}"))?;
    let bytes = model_to_bytes(&g).map_err(|e| format!("export: {e}"))?;
    let again = load_model_bytes(&bytes, Some(dir)).map_err(|e| format!("re-import: {e}"))?;
    let (a, b) = (print_graph(&g), print_graph(&again));
    if a != b {
        let diff = a
            .lines()
            .zip(b.lines())
            .find(|(x, y)| x != y)
            .map(|(x, y)| format!("{x:?} vs {y:?}"))
            .unwrap_or_else(|| "line counts differ".to_string());
        return Err(format!("printed IR differs after round trip: {diff}"));
    }
    if bytes != model_to_bytes(&again).map_err(|e| format!("export 2: {e}"))? {
        return Err("export is not deterministic across a round trip".to_string());
    }
    let data = dir.join("test_data_set_0");
    if let Ok(rd) = std::fs::read_dir(&data) {
        let mut files: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "pb"))
        {
            read_tensor_file(f).map_err(|e| format!("tensor file: {e}"))?;
        }
    }
    Ok(())
}

#[test]
fn fixture_models_round_trip() {
    let Some(shared) = shared_dir() else { return };
    check_all(
        &model_dirs(&shared.join("models")),
        "models imported",
        round_trip,
        |_| String::new(),
    );
}

#[test]
fn node_tests_round_trip() {
    let Some(shared) = shared_dir() else { return };
    check_all(
        &model_dirs(&shared.join("onnx-node-tests")),
        "node tests imported",
        round_trip,
        |_| String::new(),
    );
}
