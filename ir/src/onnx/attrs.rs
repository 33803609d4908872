//! `AttributeProto` <-> [`Attribute`], and the outer-scope names read by subgraphs.

use super::external::ExternalFiles;
use super::tensor_proto::{tensor_from_proto_with, tensor_to_proto};
use crate::attr::{AttrValue, Attribute, EncodedAttr};
use crate::error::{Error, Result};
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::{AttributeProto, GraphProto, Message};
use std::collections::HashSet;

/// The attribute's kind; models that leave `type` UNDEFINED get it from the field set.
pub fn attr_kind(a: &AttributeProto) -> Option<AttributeType> {
    match a.type_.enum_value() {
        Ok(AttributeType::UNDEFINED) => {}
        Ok(t) => return Some(t),
        Err(_) => return None,
    }
    use AttributeType::*;
    Some(if a.g.is_some() {
        GRAPH
    } else if a.t.is_some() {
        TENSOR
    } else if a.sparse_tensor.is_some() {
        SPARSE_TENSOR
    } else if a.tp.is_some() {
        TYPE_PROTO
    } else if !a.graphs.is_empty() {
        GRAPHS
    } else if !a.tensors.is_empty() {
        TENSORS
    } else if !a.sparse_tensors.is_empty() {
        SPARSE_TENSORS
    } else if !a.type_protos.is_empty() {
        TYPE_PROTOS
    } else if !a.floats.is_empty() {
        FLOATS
    } else if !a.ints.is_empty() {
        INTS
    } else if !a.strings.is_empty() {
        STRINGS
    } else if !a.s.is_empty() {
        STRING
    } else if a.f != 0.0 {
        FLOAT
    } else if a.i != 0 {
        INT
    } else {
        return None;
    })
}

/// Converts an attribute, moving tensor data out of it. Kinds the IR does not interpret
/// (and tensors that do not convert) become [`AttrValue::Encoded`].
pub fn attr_from_proto(mut a: AttributeProto, ext: &mut ExternalFiles) -> Attribute {
    let kind = attr_kind(&a);
    let plain = a.ref_attr_name.is_empty()
        && a.doc_string.is_empty()
        && a.special_fields.unknown_fields().iter().next().is_none();
    let name = a.name.clone();
    if plain {
        use AttributeType::*;
        let typed = match kind {
            Some(INT) => Some(AttrValue::Int(a.i)),
            Some(FLOAT) => Some(AttrValue::Float(a.f)),
            Some(STRING) => Some(AttrValue::String(std::mem::take(&mut a.s))),
            Some(INTS) => Some(AttrValue::Ints(std::mem::take(&mut a.ints))),
            Some(FLOATS) => Some(AttrValue::Floats(std::mem::take(&mut a.floats))),
            Some(STRINGS) => Some(AttrValue::Strings(std::mem::take(&mut a.strings))),
            Some(TENSOR) => {
                a.t.as_mut()
                    .and_then(|t| tensor_from_proto_with(t, ext).ok())
                    .map(AttrValue::Tensor)
            }
            Some(TENSORS) => {
                // Convert clones so that a failure leaves the originals for encoding.
                let conv: Option<Vec<_>> = a
                    .tensors
                    .iter()
                    .map(|t| tensor_from_proto_with(&mut t.clone(), ext).ok())
                    .collect();
                conv.map(AttrValue::Tensors)
            }
            _ => None,
        };
        if let Some(value) = typed {
            return Attribute { name, value };
        }
    }
    let summary = encoded_summary(&a, kind);
    Attribute {
        name,
        value: AttrValue::Encoded(EncodedAttr {
            bytes: a.write_to_bytes().unwrap_or_default(),
            summary,
        }),
    }
}

fn encoded_summary(a: &AttributeProto, kind: Option<AttributeType>) -> String {
    use AttributeType::*;
    if !a.ref_attr_name.is_empty() {
        return format!("ref(@{})", a.ref_attr_name);
    }
    match kind {
        Some(GRAPH) => format!(
            "graph({}: {} nodes)",
            a.name,
            a.g.as_ref().map_or(0, |g| g.node.len())
        ),
        Some(GRAPHS) => format!("graphs({}: {})", a.name, a.graphs.len()),
        Some(SPARSE_TENSOR) => format!("sparse_tensor({})", a.name),
        Some(SPARSE_TENSORS) => format!("sparse_tensors({}: {})", a.name, a.sparse_tensors.len()),
        Some(TYPE_PROTO) => format!("type_proto({})", a.name),
        Some(TYPE_PROTOS) => format!("type_protos({}: {})", a.name, a.type_protos.len()),
        Some(k) => format!("encoded({}: {k:?})", a.name),
        None => format!("encoded({})", a.name),
    }
}

/// The `AttributeProto` for an attribute.
pub fn attr_to_proto(a: &Attribute) -> Result<AttributeProto> {
    let mut p = AttributeProto::new();
    let kind = match &a.value {
        AttrValue::Int(v) => {
            p.i = *v;
            AttributeType::INT
        }
        AttrValue::Float(v) => {
            p.f = *v;
            AttributeType::FLOAT
        }
        AttrValue::String(v) => {
            p.s = v.clone();
            AttributeType::STRING
        }
        AttrValue::Tensor(t) => {
            p.t = Some(tensor_to_proto("", t)).into();
            AttributeType::TENSOR
        }
        AttrValue::Ints(v) => {
            p.ints = v.clone();
            AttributeType::INTS
        }
        AttrValue::Floats(v) => {
            p.floats = v.clone();
            AttributeType::FLOATS
        }
        AttrValue::Strings(v) => {
            p.strings = v.clone();
            AttributeType::STRINGS
        }
        AttrValue::Tensors(v) => {
            p.tensors = v.iter().map(|t| tensor_to_proto("", t)).collect();
            AttributeType::TENSORS
        }
        AttrValue::Encoded(e) => {
            let mut p = AttributeProto::parse_from_bytes(&e.bytes).map_err(|err| {
                Error::invalid(format!("attribute {}: bad encoded value: {err}", a.name))
            })?;
            p.name = a.name.clone();
            return Ok(p);
        }
    };
    p.name = a.name.clone();
    p.type_ = kind.into();
    Ok(p)
}

/// Names the subgraphs of an attribute read from enclosing scopes, in first-use order.
pub fn subgraph_free_names(a: &AttributeProto) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for g in a.g.as_ref().into_iter().chain(a.graphs.iter()) {
        for n in graph_free_names(g) {
            if seen.insert(n.clone()) {
                out.push(n);
            }
        }
    }
    out
}

/// Free names of a graph: node inputs and graph outputs (its own and those of nested
/// subgraphs) that the graph does not define itself.
fn graph_free_names(g: &GraphProto) -> Vec<String> {
    let mut defined: HashSet<&str> = HashSet::new();
    defined.extend(g.input.iter().map(|v| v.name.as_str()));
    defined.extend(g.initializer.iter().map(|t| t.name.as_str()));
    for s in &g.sparse_initializer {
        if let Some(v) = s.values.as_ref() {
            defined.insert(v.name.as_str());
        }
    }
    for n in &g.node {
        defined.extend(n.output.iter().map(String::as_str));
    }
    let mut used: Vec<String> = Vec::new();
    for n in &g.node {
        used.extend(n.input.iter().cloned());
        for a in &n.attribute {
            used.extend(subgraph_free_names(a));
        }
    }
    used.extend(g.output.iter().map(|o| o.name.clone()));
    let mut seen = HashSet::new();
    used.into_iter()
        .filter(|n| !n.is_empty() && !defined.contains(n.as_str()) && seen.insert(n.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;
    use onnx_protobuf::{NodeProto, ValueInfoProto};

    fn round(a: &Attribute) -> Attribute {
        let p = attr_to_proto(a).unwrap();
        attr_from_proto(p, &mut ExternalFiles::new(None))
    }

    #[test]
    fn typed_attributes_round_trip() {
        let t = Tensor::from_i64(vec![2], vec![1, 2]).unwrap();
        for a in [
            Attribute::int("i", -3),
            Attribute::float("f", 0.5),
            Attribute::string("s", "x"),
            Attribute::ints("is", &[1, 2]),
            Attribute::new("fs", AttrValue::Floats(vec![1.0])),
            Attribute::new("ss", AttrValue::Strings(vec![b"a".to_vec()])),
            Attribute::new("t", AttrValue::Tensor(t.clone())),
            Attribute::new("ts", AttrValue::Tensors(vec![t])),
        ] {
            assert_eq!(round(&a), a);
        }
    }

    #[test]
    fn undefined_type_is_inferred_and_graphs_are_encoded() {
        let mut p = AttributeProto::new();
        p.name = "axis".into();
        p.i = 2;
        let a = attr_from_proto(p, &mut ExternalFiles::new(None));
        assert_eq!(a.value, AttrValue::Int(2));

        let mut g = GraphProto::new();
        g.node.push(NodeProto::new());
        let mut p = AttributeProto::new();
        p.name = "body".into();
        p.type_ = AttributeType::GRAPH.into();
        p.g = Some(g).into();
        let a = attr_from_proto(p.clone(), &mut ExternalFiles::new(None));
        match &a.value {
            AttrValue::Encoded(e) => assert_eq!(e.summary, "graph(body: 1 nodes)"),
            v => panic!("not encoded: {v:?}"),
        }
        assert_eq!(attr_to_proto(&a).unwrap(), p);

        let mut p = AttributeProto::new();
        p.name = "alpha".into();
        p.ref_attr_name = "a".into();
        p.type_ = AttributeType::FLOAT.into();
        let a = attr_from_proto(p, &mut ExternalFiles::new(None));
        assert!(matches!(a.value, AttrValue::Encoded(_)));
    }

    #[test]
    fn free_names_skip_inner_definitions() {
        // inner: y = Add(x, outer1); nested graph reads y (inner) and outer2.
        let node = |ins: &[&str], outs: &[&str]| {
            let mut n = NodeProto::new();
            n.input = ins.iter().map(|s| s.to_string()).collect();
            n.output = outs.iter().map(|s| s.to_string()).collect();
            n
        };
        let mut nested = GraphProto::new();
        nested.node.push(node(&["y", "outer2"], &["z"]));
        let mut vi = ValueInfoProto::new();
        vi.name = "z".into();
        nested.output.push(vi);
        let mut nested_attr = AttributeProto::new();
        nested_attr.name = "then_branch".into();
        nested_attr.g = Some(nested).into();
        let mut g = GraphProto::new();
        let mut vi = ValueInfoProto::new();
        vi.name = "x".into();
        g.input.push(vi);
        g.node.push(node(&["x", "outer1"], &["y"]));
        let mut n = node(&["c"], &["w"]);
        n.attribute.push(nested_attr);
        g.node.push(n);
        let mut vi = ValueInfoProto::new();
        vi.name = "outer3".into();
        g.output.push(vi);
        let mut a = AttributeProto::new();
        a.g = Some(g).into();
        assert_eq!(
            subgraph_free_names(&a),
            vec!["outer1", "c", "outer2", "outer3"]
        );
    }
}
