//! cc-plugin: the SDK for third-party cc-compile passes.
//!
//! A plugin is a `cdylib` crate that depends on this crate only. It implements
//! [`PluginPass`] for each of its passes and exports them with [`export_plugin!`]:
//!
//! ```ignore
//! use cc_plugin::{cc_ir::Graph, OptionDecl, PassContext, PassError, PluginPass};
//!
//! struct Rename;
//! impl PluginPass for Rename {
//!     const NAME: &'static str = "rename";
//!     const SUMMARY: &'static str = "renames the graph";
//!     const OPTIONS: &'static [OptionDecl] = &[OptionDecl::str("name", "x", "new name")];
//!     fn run(g: &mut Graph, cx: &mut PassContext) -> Result<(), PassError> {
//!         g.name = cx.options.str("name")?.to_string();
//!         Ok(())
//!     }
//! }
//! cc_plugin::export_plugin!("rename-plugin", [Rename]);
//! ```
//!
//! `cc-compile --plugin target/release/librename_plugin.so --passes rename{name=y} m.onnx`
//! then runs it like a built-in pass. [`abi`] documents the C ABI underneath (a plugin
//! may implement it in any language); plugins/README.md is the author's guide.

pub mod abi;
pub mod options;
pub mod sdk;

pub use cc_ir;
pub use options::{OptionDecl, OptionKind, OptionValues};
pub use sdk::{run_on_bytes, PassContext, PassError, PluginPass};
