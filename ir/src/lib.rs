//! cc-ir: the intermediate representation of cc-compile.
//!
//! A model is a [`Graph`]: operations ([`Op`]) in a petgraph DAG, values in a table with
//! element type, (symbolic) shape and, for weights, shared constant data ([`Tensor`]).
//! The crate also holds shape inference ([`infer`]), the verifier ([`verify`]), the
//! canonical text printer ([`printer`]) and ONNX import/export ([`onnx`]).

pub mod attr;
pub mod compressed;
pub mod dtype;
pub mod error;
pub mod exec;
pub mod graph;
pub mod infer;
pub mod int_codes;
pub mod ir_wire;
pub mod onnx;
pub mod op;
pub mod opset;
pub mod printer;
pub mod sparsity;
pub mod tensor;
pub mod types;
pub mod verify;

pub use attr::{AttrValue, Attribute};
pub use compressed::{CodebookWeight, Compressed, QuantizedWeight, SharedWeight, WeightFormat};
pub use dtype::DType;
pub use error::{Error, Result};
pub use exec::Executor;
pub use graph::{Graph, ModelMeta, Node, NodeId, Use, Value, ValueId};
pub use op::{Op, OtherOp};
pub use sparsity::{SparseEncoding, Sparsity, SparsityPattern};
pub use tensor::Tensor;
pub use types::{Dim, Shape, ValueType};
