//! The CUDA backend (`--backend cuda`): CUDA C generated per op or fused elementwise
//! chain, compiled at run time with NVRTC and run by [`CudaRunner`].
//!
//! [`plan::plan`] turns a graph with static shapes into kernels ([`conv`], [`gemm`],
//! [`pool`], [`elementwise`]), one weight blob ([`weights`]; quantized weights keep
//! their codes and are dequantized inside the GEMM/convolution loads) and a workspace
//! layout. [`source::render`] writes the `.cu` text. The runner (cargo feature `cuda`,
//! on by default) loads the driver and NVRTC dynamically through cudarc, so building
//! needs no CUDA; [`check`] says why it cannot run here.

pub mod conv;
pub mod elementwise;
pub mod gemm;
pub mod plan;
pub mod pool;
pub mod runner;
pub mod shapes;
pub mod source;
pub mod weights;

pub use plan::{plan, Plan};
pub use runner::{check, CudaRunner};
pub use shapes::{bind_input_shapes, input_shapes_with};

use crate::backend::{Artifact, ArtifactFile, Backend, BackendOptions};
use cc_ir::{Graph, Result, ValueId};
use weights::Param;

/// A kernel before it is numbered and placed: the planner names it
/// `k{index}_{base}` and substitutes `$K` in `helpers`/`body` with that name.
#[derive(Clone, Debug)]
pub struct Draft {
    /// Name stem (`conv_relu`).
    pub base: String,
    /// Labels of the nodes it computes.
    pub nodes: Vec<String>,
    /// Parameters (the first is the output).
    pub params: Vec<Param>,
    /// Device helper functions.
    pub helpers: String,
    /// Function body.
    pub body: String,
    /// Grid in blocks.
    pub grid: [u32; 3],
    /// Threads per block.
    pub block: u32,
    /// The value it writes.
    pub output: ValueId,
}

/// The CUDA backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct CudaBackend;

/// The files of the CUDA artifact: `{prefix}.cu`, `{prefix}.weights.bin`, `README.md`.
pub fn artifact(plan: &Plan, prefix: &str) -> Artifact {
    Artifact {
        files: vec![
            ArtifactFile {
                path: format!("{prefix}.cu"),
                bytes: source::render(plan, prefix).into_bytes(),
            },
            ArtifactFile {
                path: format!("{prefix}.weights.bin"),
                bytes: plan.weights.clone(),
            },
            ArtifactFile {
                path: "README.md".into(),
                bytes: source::readme(plan, prefix).into_bytes(),
            },
        ],
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> &str {
        "cuda"
    }

    fn check(&self) -> Result<()> {
        check()
    }

    /// Lowers `g` (static shapes: see [`bind_input_shapes`]) to the `.cu` source, the
    /// weight blob and a README.
    fn lower(&self, g: &Graph, opts: &BackendOptions) -> Result<Artifact> {
        let prefix = &opts.symbol_prefix;
        if prefix.is_empty()
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || prefix.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(cc_ir::Error::invalid(format!(
                "symbol prefix {prefix:?} is not a C identifier"
            )));
        }
        Ok(artifact(&plan(g)?, prefix))
    }
}
