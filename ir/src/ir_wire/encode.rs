//! Graph → wire messages.

use super::messages::*;
use crate::attr::{AttrValue, Attribute};
use crate::compressed::{Compressed, WeightFormat};
use crate::graph::{Graph, Value};
use crate::sparsity::{SparseEncoding, Sparsity, SparsityPattern};
use crate::tensor::{Tensor, TensorData};
use crate::types::{Dim, ValueType};

/// The message for a whole graph.
pub fn graph_msg(g: &Graph) -> GraphMsg {
    let mut shared_arrays: Vec<NamedTensorMsg> = Vec::new();
    let values = g
        .value_ids()
        .map(|id| value_msg(g.value(id), &mut shared_arrays))
        .collect();
    let slot = |v: &Option<crate::graph::ValueId>| v.map_or(0, |v| v.0 + 1);
    let nodes = g
        .node_ids()
        .into_iter()
        .map(|id| {
            let n = g.node(id);
            let (domain, op_type) = n.op.onnx_type();
            NodeMsg {
                name: n.name.clone(),
                doc_string: n.doc_string.clone(),
                domain: domain.to_string(),
                op_type: op_type.to_string(),
                typed: !n.op.is_other(),
                attributes: n.op.attributes().iter().map(attr_msg).collect(),
                inputs: n.inputs().iter().map(slot).collect(),
                outputs: n.outputs().iter().map(slot).collect(),
                implicit_inputs: n.implicit_inputs().iter().map(|v| v.0).collect(),
                extra: n.extra.clone(),
            }
        })
        .collect();
    let m = &g.meta;
    GraphMsg {
        name: g.name.clone(),
        doc_string: g.doc_string.clone(),
        meta: Some(MetaMsg {
            ir_version: m.ir_version,
            opsets: m
                .opset_imports
                .iter()
                .map(|(domain, version)| OpsetMsg {
                    domain: domain.clone(),
                    version: *version,
                })
                .collect(),
            producer_name: m.producer_name.clone(),
            producer_version: m.producer_version.clone(),
            model_extra: m.model_extra.clone(),
            graph_extra: m.graph_extra.clone(),
        }),
        values,
        nodes,
        inputs: g.inputs().iter().map(|v| v.0).collect(),
        outputs: g.outputs().iter().map(|v| v.0).collect(),
        shared_arrays,
    }
}

fn value_msg(v: &Value, shared_arrays: &mut Vec<NamedTensorMsg>) -> ValueMsg {
    ValueMsg {
        name: v.name().to_string(),
        ty: v.ty.as_ref().map(type_msg),
        data: v.data.as_ref().map(tensor_msg),
        compressed: v
            .compressed
            .as_ref()
            .map(|c| compressed_msg(c, shared_arrays)),
        sparsity: v.sparsity.as_ref().map(sparsity_msg),
        annotations: v
            .annotations
            .iter()
            .map(|(key, value)| KeyValueMsg {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
    }
}

fn type_msg(t: &ValueType) -> TypeMsg {
    match t {
        ValueType::Tensor { elem, shape } => TypeMsg {
            opaque: false,
            elem: elem.map_or(0, |e| e.to_onnx()),
            has_shape: shape.is_some(),
            dims: shape
                .iter()
                .flatten()
                .map(|d| match d {
                    Dim::Known(size) => DimMsg {
                        kind: 0,
                        size: *size,
                        sym: String::new(),
                    },
                    Dim::Sym(s) => DimMsg {
                        kind: 1,
                        size: 0,
                        sym: s.clone(),
                    },
                    Dim::Unknown => DimMsg {
                        kind: 2,
                        size: 0,
                        sym: String::new(),
                    },
                })
                .collect(),
            ..Default::default()
        },
        ValueType::Opaque(o) => TypeMsg {
            opaque: true,
            opaque_bytes: o.bytes.clone(),
            opaque_summary: o.summary.clone(),
            ..Default::default()
        },
    }
}

/// The message for a tensor.
pub fn tensor_msg(t: &Tensor) -> TensorMsg {
    let (raw, strings) = match t.data() {
        TensorData::Raw(b) => (b.to_vec(), Vec::new()),
        TensorData::Strings(s) => (Vec::new(), s.to_vec()),
    };
    TensorMsg {
        dtype: t.dtype().to_onnx(),
        shape: t.shape().iter().map(|&d| d as u64).collect(),
        raw,
        strings,
    }
}

fn compressed_msg(c: &Compressed, shared_arrays: &mut Vec<NamedTensorMsg>) -> CompressedMsg {
    match c {
        Compressed::Quantized(q) => CompressedMsg {
            quantized: Some(QuantizedMsg {
                q: Some(tensor_msg(&q.q)),
                scale: Some(tensor_msg(&q.scale)),
                zero_point: q.zero_point.as_ref().map(tensor_msg),
                axis: q.axis as u64,
                block_size: q.block_size.map(|b| b as u64),
                format: match q.format {
                    WeightFormat::DequantizeLinear => 0,
                    WeightFormat::MatMulNBits => 1,
                },
            }),
            ..Default::default()
        },
        Compressed::Codebook(cb) => CompressedMsg {
            codebook: Some(CodebookMsg {
                indices: Some(tensor_msg(&cb.indices)),
                centroids: Some(tensor_msg(&cb.centroids)),
                axis: cb.axis.map(|a| a as u64),
            }),
            ..Default::default()
        },
        Compressed::Shared(s) => {
            if !shared_arrays.iter().any(|a| a.name == s.array_name) {
                shared_arrays.push(NamedTensorMsg {
                    name: s.array_name.clone(),
                    tensor: Some(tensor_msg(&s.array)),
                });
            }
            CompressedMsg {
                shared: Some(SharedMsg {
                    array_name: s.array_name.clone(),
                    shape: s.shape.iter().map(|&d| d as u64).collect(),
                    offset: s.offset,
                    scale: s.scale,
                    chunk: s.hash.chunk,
                    chunks: s.hash.chunks,
                    perm: s.hash.perm.to_vec(),
                    sign: s.hash.sign.to_vec(),
                }),
                ..Default::default()
            }
        }
    }
}

fn sparsity_msg(s: &Sparsity) -> SparsityMsg {
    let mut m = SparsityMsg {
        zeros: s.zeros as u64,
        len: s.len as u64,
        encoding: match s.encoding {
            SparseEncoding::Dense => 0,
            SparseEncoding::SparseInitializer => 1,
        },
        ..Default::default()
    };
    match &s.pattern {
        SparsityPattern::Unstructured { ratio } => {
            m.pattern = 0;
            m.ratio = *ratio;
        }
        SparsityPattern::NM { n, m: mm, axes } => {
            m.pattern = 1;
            m.n = *n as u64;
            m.m = *mm as u64;
            m.axis_lo = axes.0 as u64;
            m.axis_hi = axes.1 as u64;
        }
    }
    m
}

fn attr_msg(a: &Attribute) -> AttrMsg {
    let mut m = AttrMsg {
        name: a.name.clone(),
        ..Default::default()
    };
    match &a.value {
        AttrValue::Int(v) => (m.kind, m.i) = (1, *v),
        AttrValue::Float(v) => (m.kind, m.f) = (2, *v),
        AttrValue::String(v) => (m.kind, m.s) = (3, v.clone()),
        AttrValue::Tensor(t) => (m.kind, m.t) = (4, Some(tensor_msg(t))),
        AttrValue::Ints(v) => (m.kind, m.ints) = (5, v.clone()),
        AttrValue::Floats(v) => (m.kind, m.floats) = (6, v.clone()),
        AttrValue::Strings(v) => (m.kind, m.strings) = (7, v.clone()),
        AttrValue::Tensors(v) => (m.kind, m.tensors) = (8, v.iter().map(tensor_msg).collect()),
        AttrValue::Encoded(e) => {
            (m.kind, m.s, m.summary) = (9, e.bytes.clone(), e.summary.clone());
        }
    }
    m
}
