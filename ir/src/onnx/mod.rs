//! ONNX import and export.
//!
//! [`load_model`] reads a model (memory-mapped; external data resolved beside it) into a
//! [`Graph`]; [`save_model`] writes one back atomically. Weights are shared, never
//! copied: import moves `raw_data` into the tensors (external data stays mapped), and
//! export streams each weight's bytes from its storage. Everything the IR does not model
//! (functions, metadata, subgraphs, unknown fields) is carried as serialized protobuf
//! and merged back on export.

mod attrs;
mod export;
mod external;
mod import;
mod metadata;
mod sparse;
mod tensor_proto;
mod value_type;
mod wire;

pub use attrs::{attr_from_proto, attr_to_proto, subgraph_free_names};
pub use external::ExternalFiles;
pub use metadata::strip_node_metadata;
pub use sparse::PATTERN_KEY as SPARSITY_PATTERN_KEY;
pub use tensor_proto::tensor_header;
pub use value_type::{type_from_proto, type_to_proto};

use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::tensor::Tensor;
use onnx_protobuf::{Message, TensorProto};
use std::io::{BufWriter, Write};
use std::path::Path;

/// Options for [`save_model_with`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportOptions {
    /// When the weights total more bytes than this, they are written to an external data
    /// file `<model file name>.data` beside the model.
    pub external_data_threshold: u64,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            external_data_threshold: 2 << 30,
        }
    }
}

/// Loads a model file; external data is read relative to the model's folder.
pub fn load_model(path: &Path) -> Result<Graph> {
    let bytes = external::map_file(path)?;
    let base = path.parent().map(|p| {
        if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        }
    });
    import::import_shared(&bytes, base).map_err(|e| match e {
        Error::Decode(m) => Error::Decode(format!("{}: {m}", path.display())),
        other => other,
    })
}

/// Loads a model from bytes; external data is read relative to `base_dir` (an error if
/// the model has external data and `base_dir` is `None`).
pub fn load_model_bytes(bytes: &[u8], base_dir: Option<&Path>) -> Result<Graph> {
    import::import_bytes(bytes, base_dir)
}

/// Saves a model atomically, weights inline (unless they exceed the default threshold).
pub fn save_model(g: &Graph, path: &Path) -> Result<()> {
    save_model_with(g, path, &ExportOptions::default())
}

/// A temporary file in `dir`, readable like an ordinarily created file (tempfile makes
/// them owner-only).
fn temp_in(dir: &Path) -> Result<tempfile::NamedTempFile> {
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let perms = std::fs::Permissions::from_mode(0o644);
        tmp.as_file()
            .set_permissions(perms)
            .map_err(|e| Error::io(tmp.path(), e))?;
    }
    Ok(tmp)
}

fn write_temp(
    dir: &Path,
    f: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<tempfile::NamedTempFile> {
    let mut tmp = temp_in(dir)?;
    {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        f(&mut w).map_err(|e| Error::io(dir, e))?;
        w.flush().map_err(|e| Error::io(dir, e))?;
    }
    Ok(tmp)
}

/// The folder a file at `path` is written in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to `path` atomically, the way models are saved: into a temporary file
/// beside it that is then renamed into place, so on error nothing is left at `path`.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_temp(parent_dir(path), |w| w.write_all(bytes))?
        .persist(path)
        .map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Saves a model atomically with options: the file (and its external data file, if
/// any) is written to a temporary file beside it and renamed into place, so on error
/// nothing is left at `path`.
pub fn save_model_with(g: &Graph, path: &Path, opts: &ExportOptions) -> Result<()> {
    let dir = parent_dir(path);
    let external = export::weight_bytes(g) > opts.external_data_threshold;
    let location = if external {
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .ok_or_else(|| Error::invalid(format!("{}: not a UTF-8 file name", path.display())))?;
        Some(format!("{file}.data"))
    } else {
        None
    };
    let prepared = export::prepare(g, location.as_deref())?;
    let model_tmp = write_temp(dir, |w| prepared.write(w))?;
    if let Some(loc) = &location {
        let data_tmp = write_temp(dir, |w| prepared.write_external(w))?;
        let data_path = dir.join(loc);
        data_tmp
            .persist(&data_path)
            .map_err(|e| Error::io(&data_path, e.error))?;
    }
    model_tmp
        .persist(path)
        .map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Writes a model with its weights inline.
pub fn write_model(g: &Graph, w: &mut dyn Write) -> Result<()> {
    let prepared = export::prepare(g, None)?;
    let mut bw = BufWriter::with_capacity(1 << 16, w);
    prepared
        .write(&mut bw)
        .and_then(|_| bw.flush())
        .map_err(|e| Error::invalid(format!("cannot write model: {e}")))
}

/// The serialized model, weights inline.
pub fn model_to_bytes(g: &Graph) -> Result<Vec<u8>> {
    let prepared = export::prepare(g, None)?;
    let mut out = Vec::with_capacity(prepared.total_len() as usize);
    prepared
        .write(&mut out)
        .map_err(|e| Error::invalid(format!("cannot write model: {e}")))?;
    Ok(out)
}

/// Converts a `TensorProto` (taking its raw data without copying); external data is read
/// relative to `base_dir`.
pub fn tensor_from_proto(mut p: TensorProto, base_dir: Option<&Path>) -> Result<Tensor> {
    tensor_proto::tensor_from_proto_with(&mut p, &mut ExternalFiles::new(base_dir))
}

/// The inline `TensorProto` for a tensor (data copied into the proto).
pub fn tensor_to_proto(name: &str, t: &Tensor) -> TensorProto {
    tensor_proto::tensor_to_proto(name, t)
}

/// Reads a serialized `TensorProto` file (e.g. `test_data_set_0/input_0.pb`): its name
/// and tensor.
pub fn read_tensor_file(path: &Path) -> Result<(String, Tensor)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    wire::check_framing(&bytes, "a TensorProto")
        .map_err(|e| Error::decode(format!("{}: {e}", path.display())))?;
    let p = TensorProto::parse_from_bytes(&bytes)
        .map_err(|e| Error::decode(format!("{}: not a TensorProto: {e}", path.display())))?;
    let name = p.name.clone();
    let t = tensor_from_proto(p, path.parent())
        .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
    Ok((name, t))
}

/// Writes a tensor as a serialized `TensorProto` file, atomically.
pub fn write_tensor_file(path: &Path, name: &str, t: &Tensor) -> Result<()> {
    let dir = parent_dir(path);
    let mut tmp = temp_in(dir)?;
    {
        let mut w = BufWriter::new(tmp.as_file_mut());
        export::write_tensor(&mut w, name, t)?;
        w.flush().map_err(|e| Error::io(path, e))?;
    }
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests;
