//! Dropping what exporters attach to nodes for debugging: doc strings and
//! `metadata_props` (e.g. PyTorch's `pkg.torch.onnx.stack_trace`), which can be a
//! sizeable part of a small model's file and mean nothing to inference.

use crate::error::{Error, Result};
use crate::graph::Graph;
use onnx_protobuf::NodeProto;
use protobuf::Message;

/// Clears every node's doc string and `metadata_props` (other unmodelled node fields
/// are kept). Returns how many bytes of them were dropped.
pub fn strip_node_metadata(g: &mut Graph) -> Result<usize> {
    let mut dropped = 0;
    for id in g.node_ids() {
        let label = g.node_label(id);
        let node = g.node_mut(id);
        dropped += node.doc_string.len();
        node.doc_string.clear();
        if node.extra.is_empty() {
            continue;
        }
        let mut n = NodeProto::parse_from_bytes(&node.extra)
            .map_err(|e| Error::invalid(format!("node {label}: extra fields: {e}")))?;
        if n.metadata_props.is_empty() && n.doc_string.is_empty() {
            continue;
        }
        n.metadata_props.clear();
        n.doc_string.clear();
        let bytes = n
            .write_to_bytes()
            .map_err(|e| Error::invalid(format!("node {label}: extra fields: {e}")))?;
        dropped += node.extra.len().saturating_sub(bytes.len());
        node.extra = bytes;
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::Op;
    use onnx_protobuf::StringStringEntryProto;

    #[test]
    fn doc_strings_and_metadata_go_other_fields_stay() {
        let mut g = Graph::new("g");
        let x = g.add_value("x", None).unwrap();
        let y = g.add_value("y", None).unwrap();
        let id = g
            .add_node("n", Op::Identity, vec![Some(x)], vec![Some(y)])
            .unwrap();
        let mut p = NodeProto::new();
        let mut e = StringStringEntryProto::new();
        e.key = "pkg.torch.onnx.stack_trace".into();
        e.value = "a long trace".into();
        p.metadata_props.push(e);
        p.overload = "keep".into();
        g.node_mut(id).extra = p.write_to_bytes().unwrap();
        g.node_mut(id).doc_string = "doc".into();
        let dropped = strip_node_metadata(&mut g).unwrap();
        assert!(dropped >= "a long trace".len() + 3, "{dropped}");
        assert!(g.node(id).doc_string.is_empty());
        let back = NodeProto::parse_from_bytes(&g.node(id).extra).unwrap();
        assert!(back.metadata_props.is_empty());
        assert_eq!(back.overload, "keep");
        assert_eq!(strip_node_metadata(&mut g).unwrap(), 0);
    }
}
