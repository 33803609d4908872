//! The IR wire format: the whole [`Graph`] (values with types, constants, compressed
//! weights, sparsity and annotations; nodes with their ops, slots and ONNX leftovers) as
//! protobuf, with messages derived by `prost` ([`messages`]). It carries what ONNX cannot
//! (compressed weights, pass annotations); it is what `--emit ir` writes and what
//! crosses the plugin boundary.
//!
//! Typed ops travel as their ONNX form (domain, type, attributes from
//! [`crate::Op::attributes`]) and are rebuilt with [`crate::Op::from_onnx`]; value ids
//! are kept, so `encode(decode(encode(g)))` equals `encode(g)` byte for byte.

pub mod decode;
pub mod encode;
pub mod messages;

use crate::error::{Error, Result};
use crate::graph::Graph;
use prost::Message;

/// The wire bytes of a graph.
pub fn encode(g: &Graph) -> Vec<u8> {
    encode::graph_msg(g).encode_to_vec()
}

/// The graph wire bytes describe; a one-line [`Error::Decode`] on malformed input.
pub fn decode(bytes: &[u8]) -> Result<Graph> {
    let msg = messages::GraphMsg::decode(bytes)
        .map_err(|e| Error::decode(format!("IR wire: not a graph message: {e}")))?;
    decode::graph_from_msg(msg)
}
