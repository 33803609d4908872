//! cc-plugin: the SDK for third-party cc-compile passes.
//!
//! A plugin is a `cdylib` crate that depends on this crate only. It implements
//! [`PluginPass`] for each of its passes and exports them with [`export_plugin!`]:
//!
//! ```
//! use cc_plugin::cc_ir::{Graph, Op, Tensor};
//! use cc_plugin::{OptionDecl, PassContext, PassError, PluginPass};
//!
//! /// Zeroes every MatMul weight entry smaller than `threshold` in magnitude.
//! pub struct Threshold;
//!
//! impl PluginPass for Threshold {
//!     const NAME: &'static str = "threshold";
//!     const SUMMARY: &'static str = "zero small MatMul weights";
//!     const OPTIONS: &'static [OptionDecl] =
//!         &[OptionDecl::float("threshold", "1e-3", "entries below this magnitude become 0")];
//!
//!     fn run(g: &mut Graph, cx: &mut PassContext) -> Result<(), PassError> {
//!         let t = cx.options.f64("threshold")? as f32;
//!         let mut zeroed = 0usize;
//!         for id in g.topo_order()? {
//!             let node = g.node(id);
//!             let (Op::MatMul, Some(w)) = (&node.op, node.input(1)) else { continue };
//!             let Some(data) = g.const_data(w) else { continue };
//!             let shape = data.shape().to_vec();
//!             let mut v = data.f32_view()?.into_owned();
//!             for x in v.iter_mut().filter(|x| x.abs() < t && **x != 0.0) {
//!                 *x = 0.0;
//!                 zeroed += 1;
//!             }
//!             g.value_mut(w).data = Some(Tensor::from_f32_vec(shape, v)?);
//!         }
//!         cx.stat("zeroed", zeroed);
//!         Ok(())
//!     }
//! }
//!
//! cc_plugin::export_plugin!("my-plugin", [Threshold]);
//!
//! // Tested as the host calls it: through the IR wire format.
//! let mut g = Graph::new("g");
//! let x = g.add_value("x", None).unwrap();
//! let w = g.add_value("w", None).unwrap();
//! let y = g.add_value("y", None).unwrap();
//! g.value_mut(w).data = Some(Tensor::from_f32_vec(vec![2, 2], vec![0.5, 1e-4, -2e-4, 1.0]).unwrap());
//! g.add_node("mm", Op::MatMul, vec![Some(x), Some(w)], vec![Some(y)]).unwrap();
//! g.set_inputs(vec![x]);
//! g.set_outputs(vec![y]);
//! let bytes = cc_plugin::cc_ir::ir_wire::encode(&g);
//! let (out, stats) = cc_plugin::run_on_bytes::<Threshold>(&bytes, "threshold=0.001\n", 0).unwrap();
//! assert_eq!(stats, vec![("zeroed".to_string(), "2".to_string())]);
//! let back = cc_plugin::cc_ir::ir_wire::decode(&out).unwrap();
//! let w = back.const_data(back.value_by_name("w").unwrap()).unwrap();
//! assert_eq!(w.f32_view().unwrap().to_vec(), vec![0.5, 0.0, 0.0, 1.0]);
//! ```
//!
//! This is the minimal pass of the author's guide, plugins/README.md.
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
