//! The [`Backend`] trait: what lowers an IR graph to something a target executes.
//!
//! The cpu executor runs graphs directly; code-generating backends (`c`, `cuda`)
//! lower a graph to an [`Artifact`] — a set of named files (sources, headers, weight
//! blobs, a Makefile) that the caller writes into an output folder.

use cc_ir::{Graph, Result};

/// Options shared by the code-generating backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendOptions {
    /// Prefix of the generated C API symbols and the base name of the files
    /// (`model` gives `model.c`, `model.h`, `model_run(...)`).
    pub symbol_prefix: String,
    /// Shapes of the graph's runtime inputs, in order, that replace symbolic or unknown
    /// dimensions (a backend generating fixed-size code specialises to them); empty:
    /// the graph's own shapes, which must then be static.
    pub input_shapes: Vec<Vec<usize>>,
}

impl Default for BackendOptions {
    fn default() -> Self {
        BackendOptions {
            symbol_prefix: "model".into(),
            input_shapes: Vec::new(),
        }
    }
}

/// One generated file: a path relative to the output folder and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactFile {
    /// Path relative to the output folder (plain file name, no `..`).
    pub path: String,
    /// Contents.
    pub bytes: Vec<u8>,
}

/// What a backend produced: files to write into the output folder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Artifact {
    /// The files, in a deterministic order.
    pub files: Vec<ArtifactFile>,
}

impl Artifact {
    /// The file named `path`, if any.
    pub fn file(&self, path: &str) -> Option<&ArtifactFile> {
        self.files.iter().find(|f| f.path == path)
    }

    /// Writes every file into `dir` (created if missing), each atomically.
    pub fn write_to(&self, dir: &std::path::Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| cc_ir::Error::io(dir, e))?;
        for f in &self.files {
            cc_ir::onnx::write_file_atomic(&dir.join(&f.path), &f.bytes)?;
        }
        Ok(())
    }
}

/// A target the IR can be lowered to.
pub trait Backend {
    /// The backend's name (`c`, `cuda`).
    fn name(&self) -> &str;
    /// Whether this backend can run here; the error says why not (no compiler, no
    /// driver, no device). Lowering to source never needs this to succeed.
    fn check(&self) -> Result<()>;
    /// Lowers `g` to files. An op or form the backend does not implement is an error
    /// naming the node, never a guess.
    fn lower(&self, g: &Graph, opts: &BackendOptions) -> Result<Artifact>;
}
