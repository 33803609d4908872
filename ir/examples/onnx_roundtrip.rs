//! Imports a model and saves it again: `onnx_roundtrip IN OUT [external_threshold]`.

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(input), Some(output)) = (args.get(1), args.get(2)) else {
        return Err("usage: onnx_roundtrip IN OUT [external_threshold]".into());
    };
    let g = cc_ir::onnx::load_model(Path::new(input))?;
    let mut opts = cc_ir::onnx::ExportOptions::default();
    if let Some(t) = args.get(3) {
        opts.external_data_threshold = t.parse()?;
    }
    cc_ir::onnx::save_model_with(&g, Path::new(output), &opts)?;
    Ok(())
}
