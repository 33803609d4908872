//! `cc-compile groups MODEL.onnx [--json]`: loads a model, fixes symbolic input dims
//! to 1, canonicalizes it and prints its channel groups ([`cc_passes::groups`]).

use anyhow::{Context, Result};
use cc_passes::groups;
use std::path::Path;
use std::time::Instant;

/// The report of `cc-compile groups` for `model`: text, or pretty JSON with `json`.
/// The JSON gains `"discovery_ms"`, the time discovery took.
pub fn report(model: &Path, json: bool) -> Result<String> {
    let mut g = cc_ir::onnx::load_model(model)?;
    cc_ir::infer::infer_shapes(&mut g).with_context(|| format!("{}", model.display()))?;
    groups::prepare(&mut g, None).with_context(|| format!("{}", model.display()))?;
    let t = Instant::now();
    let d = groups::discover(&g).with_context(|| format!("{}", model.display()))?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if json {
        let mut v = groups::to_json(&g, &d);
        v["discovery_ms"] = serde_json::json!(ms);
        Ok(format!("{}\n", serde_json::to_string_pretty(&v)?))
    } else {
        Ok(groups::to_text(&g, &d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_model_is_an_error() {
        let e = report(Path::new("/nonexistent/model.onnx"), false).unwrap_err();
        assert!(format!("{e:#}").contains("/nonexistent/model.onnx"));
    }
}
