//! cc-passes: the pass infrastructure of cc-compile and its built-in passes.
//!
//! - [`Pass`], [`PassCx`], [`Changed`]: what a pass is and what it sees.
//! - [`registry`]: built-in passes register a [`PassInfo`] with `inventory::submit!`.
//! - [`options`]: typed per-pass options parsed from `key=value` text.
//! - [`pipeline`]: the `name{key=value,...},name` pipeline language.
//! - [`manager`]: runs a pipeline, verifies, times, dumps IR, and builds a [`Report`].
//! - Canonicalization (exact) passes: `fold`, `fold-batchnorm`, `remove-identity`,
//!   `dce`, and `canonicalize` which runs them to a fixed point.

pub mod calibration;
pub mod canonicalize;
pub mod codebook;
pub mod dce;
pub mod error;
pub mod fold;
pub mod fold_batchnorm;
pub mod groups;
pub mod lowrank;
pub mod manager;
pub mod options;
pub mod pass;
pub mod pipeline;
pub mod plugin_host;
pub mod prune;
pub mod quant;
pub mod registry;
pub mod remove_identity;
pub mod report;
pub mod share;
pub mod sparsify;
pub mod stats;
pub mod strip_metadata;
#[cfg(test)]
pub(crate) mod test_graphs;
pub mod weights;

pub use calibration::Calibration;
pub use error::PassError;
pub use manager::{ManagerOptions, PassManager, PrintAfter};
pub use options::{OptionKind, OptionSpec, OptionValue, Options};
pub use pass::{Changed, Pass, PassCx, Stat};
pub use pipeline::{Pipeline, PipelineEntry};
pub use registry::{all_passes, describe_passes, find, lookup, PassInfo};
pub use report::{PassRecord, Report};
pub use stats::GraphStats;
