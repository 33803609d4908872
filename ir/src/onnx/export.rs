//! [`Graph`] -> ONNX bytes, streaming weights from their shared storage.
//!
//! Everything except initializer payloads is serialized with `onnx-protobuf`; each
//! initializer's raw bytes are written straight from its [`bytes::Bytes`] (or into the
//! external data file), so export never holds a second copy of the weights. Protobuf
//! lets fields come in any order, so a message is its serialized fields followed by the
//! length-delimited fields appended here:
//! `TensorProto = header + raw_data(9)`, `GraphProto = rest + initializer(5)*`,
//! `ModelProto = rest + graph(7)`.

use super::attrs::attr_to_proto;
use super::tensor_proto::{set_external, tensor_header};
use super::value_type::type_to_proto;
use crate::attr::{AttrValue, Attribute};
use crate::error::{Error, Result};
use crate::graph::{Graph, ValueId};
use crate::tensor::TensorData;
use bytes::Bytes;
use onnx_protobuf::{
    GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, ValueInfoProto,
};
use std::io::Write;

const TAG_RAW_DATA: u8 = (9 << 3) | 2;
const TAG_INITIALIZER: u8 = (5 << 3) | 2;
const TAG_GRAPH: u8 = (7 << 3) | 2;
/// Alignment of tensors in external data files.
pub const EXTERNAL_ALIGN: u64 = 4096;

/// One initializer: its serialized header and the payload appended as `raw_data`.
struct Initializer {
    header: Vec<u8>,
    raw: Option<Bytes>,
}

impl Initializer {
    fn len(&self) -> u64 {
        self.header.len() as u64 + self.raw.as_ref().map_or(0, |r| field_len(r.len() as u64))
    }
}

/// A model ready to be written: everything serialized except the weight payloads.
pub struct Prepared {
    model_head: Vec<u8>,
    graph_head: Vec<u8>,
    inits: Vec<Initializer>,
    /// Payloads for the external data file, at their offsets.
    pub external: Vec<(u64, Bytes)>,
}

fn varint_len(mut v: u64) -> u64 {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Bytes of a length-delimited field (one-byte tag) holding `len` bytes.
fn field_len(len: u64) -> u64 {
    1 + varint_len(len) + len
}

fn write_varint(w: &mut dyn Write, mut v: u64) -> std::io::Result<()> {
    let mut buf = [0u8; 10];
    let mut i = 0;
    while v >= 0x80 {
        buf[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    buf[i] = v as u8;
    w.write_all(&buf[..=i])
}

fn ser<M: Message>(m: &M, what: &str) -> Result<Vec<u8>> {
    m.write_to_bytes()
        .map_err(|e| Error::invalid(format!("cannot serialize {what}: {e}")))
}

fn value_info(g: &Graph, v: ValueId) -> Result<ValueInfoProto> {
    let mut vi = ValueInfoProto::new();
    vi.name = g.value(v).name().to_string();
    if let Some(t) = &g.value(v).ty {
        vi.type_ = Some(type_to_proto(t)?).into();
    }
    Ok(vi)
}

/// A dense initializer for `t`; with `external`, its payload goes to `ext` at the next
/// aligned `offset`.
fn dense_initializer(
    name: &str,
    t: &crate::tensor::Tensor,
    external: Option<&str>,
    ext: &mut Vec<(u64, Bytes)>,
    offset: &mut u64,
) -> Result<Initializer> {
    let mut header = tensor_header(name, t);
    let mut raw = None;
    if let TensorData::Raw(b) = t.data() {
        match external {
            Some(loc) if !b.is_empty() => {
                *offset = offset.div_ceil(EXTERNAL_ALIGN) * EXTERNAL_ALIGN;
                set_external(&mut header, loc, *offset, b.len() as u64);
                ext.push((*offset, b.clone()));
                *offset += b.len() as u64;
            }
            _ => raw = Some(b.clone()),
        }
    }
    Ok(Initializer {
        header: ser(&header, "initializer")?,
        raw,
    })
}

/// True when the value asks for a sparse initializer.
fn sparse_encoded(v: &crate::graph::Value) -> bool {
    v.sparsity
        .as_ref()
        .is_some_and(|s| s.encoding == crate::sparsity::SparseEncoding::SparseInitializer)
}

fn name_of(g: &Graph, v: Option<ValueId>) -> String {
    v.map_or(String::new(), |v| g.value(v).name().to_string())
}

/// Serializes `g` except the weight payloads. With `external`, raw weights are placed
/// in that file (its name, relative to the model) instead of inline.
pub fn prepare(g: &Graph, external: Option<&str>) -> Result<Prepared> {
    // Compressed weights are written as standard ops (see `compressed::lower_compressed`).
    let lowered;
    let g = if crate::compressed::has_compressed(g) {
        lowered = crate::compressed::lower_compressed(g)?;
        &lowered
    } else {
        g
    };
    let order = g.topo_order()?;
    let mut gp = if g.meta.graph_extra.is_empty() {
        GraphProto::new()
    } else {
        GraphProto::parse_from_bytes(&g.meta.graph_extra)
            .map_err(|e| Error::invalid(format!("graph extra fields: {e}")))?
    };
    gp.name = g.name.clone();
    gp.doc_string = g.doc_string.clone();

    // Constants that are graph outputs cannot be initializers: write Constant nodes.
    let mut const_nodes: Vec<ValueId> = Vec::new();
    for &o in g.outputs() {
        if g.const_data(o).is_some() && !g.is_input(o) && !const_nodes.contains(&o) {
            const_nodes.push(o);
        }
    }
    for &v in &const_nodes {
        if let Some(t) = g.const_data(v) {
            let mut n = NodeProto::new();
            n.op_type = "Constant".to_string();
            n.output.push(g.value(v).name().to_string());
            n.attribute.push(attr_to_proto(&Attribute::new(
                "value",
                AttrValue::Tensor(t.clone()),
            ))?);
            gp.node.push(n);
        }
    }
    for &id in &order {
        let node = g.node(id);
        let mut n = if node.extra.is_empty() {
            NodeProto::new()
        } else {
            NodeProto::parse_from_bytes(&node.extra).map_err(|e| {
                Error::invalid(format!("node {}: extra fields: {e}", g.node_label(id)))
            })?
        };
        let (domain, op_type) = node.op.onnx_type();
        n.domain = domain.to_string();
        n.op_type = op_type.to_string();
        n.name = node.name.clone();
        n.doc_string = node.doc_string.clone();
        n.input = node.inputs().iter().map(|&v| name_of(g, v)).collect();
        n.output = node.outputs().iter().map(|&v| name_of(g, v)).collect();
        n.attribute = node
            .op
            .attributes()
            .iter()
            .map(attr_to_proto)
            .collect::<Result<_>>()?;
        gp.node.push(n);
    }
    gp.input = g
        .inputs()
        .iter()
        .map(|&v| value_info(g, v))
        .collect::<Result<_>>()?;
    gp.output = g
        .outputs()
        .iter()
        .map(|&v| value_info(g, v))
        .collect::<Result<_>>()?;
    let mut inits = Vec::new();
    let mut ext = Vec::new();
    let mut offset = 0u64;
    for v in g.value_ids() {
        if !g.is_live(v) {
            continue;
        }
        let val = g.value(v);
        match &val.data {
            Some(t) if !const_nodes.contains(&v) && !g.is_input(v) && sparse_encoded(val) => {
                let Some(sp) = val.sparsity.as_ref() else {
                    continue;
                };
                match super::sparse::to_sparse(val.name(), t, sp)? {
                    Some(s) => gp.sparse_initializer.push(s),
                    None => inits.push(dense_initializer(
                        val.name(),
                        t,
                        external,
                        &mut ext,
                        &mut offset,
                    )?),
                }
            }
            Some(t) if !const_nodes.contains(&v) => {
                inits.push(dense_initializer(
                    val.name(),
                    t,
                    external,
                    &mut ext,
                    &mut offset,
                )?);
            }
            Some(_) => {}
            None => {
                if val.producer().is_none() && val.ty.is_some() && !g.is_input(v) && !g.is_output(v)
                {
                    gp.value_info.push(value_info(g, v)?);
                }
            }
        }
    }
    // Node outputs in node order, so the order does not depend on value ids.
    for &id in &order {
        for v in g.node(id).outputs().iter().flatten() {
            let val = g.value(*v);
            if val.ty.is_some() && !val.is_const() && !g.is_input(*v) && !g.is_output(*v) {
                gp.value_info.push(value_info(g, *v)?);
            }
        }
    }

    let mut mp = if g.meta.model_extra.is_empty() {
        ModelProto::new()
    } else {
        ModelProto::parse_from_bytes(&g.meta.model_extra)
            .map_err(|e| Error::invalid(format!("model extra fields: {e}")))?
    };
    let meta = &g.meta;
    mp.ir_version = if meta.ir_version == 0 {
        8
    } else {
        meta.ir_version
    };
    let mut opsets = meta.opset_imports.clone();
    if meta.ir_version == 0 && opsets.is_empty() {
        opsets.push((String::new(), 17));
    }
    mp.opset_import = opsets
        .into_iter()
        .map(|(domain, version)| {
            let mut o = OperatorSetIdProto::new();
            o.domain = domain;
            o.version = version;
            o
        })
        .collect();
    mp.producer_name = meta.producer_name.clone();
    mp.producer_version = meta.producer_version.clone();
    mp.graph.clear();
    Ok(Prepared {
        model_head: ser(&mp, "model")?,
        graph_head: ser(&gp, "graph")?,
        inits,
        external: ext,
    })
}

impl Prepared {
    fn graph_len(&self) -> u64 {
        self.graph_head.len() as u64 + self.inits.iter().map(|i| field_len(i.len())).sum::<u64>()
    }

    /// Total bytes of the model file.
    pub fn total_len(&self) -> u64 {
        self.model_head.len() as u64 + field_len(self.graph_len())
    }

    /// Writes the model.
    pub fn write(&self, w: &mut dyn Write) -> std::io::Result<()> {
        w.write_all(&self.model_head)?;
        w.write_all(&[TAG_GRAPH])?;
        write_varint(w, self.graph_len())?;
        w.write_all(&self.graph_head)?;
        for i in &self.inits {
            w.write_all(&[TAG_INITIALIZER])?;
            write_varint(w, i.len())?;
            w.write_all(&i.header)?;
            if let Some(r) = &i.raw {
                w.write_all(&[TAG_RAW_DATA])?;
                write_varint(w, r.len() as u64)?;
                w.write_all(r)?;
            }
        }
        Ok(())
    }

    /// Writes the external data file (payloads at their aligned offsets).
    pub fn write_external(&self, w: &mut dyn Write) -> std::io::Result<()> {
        let mut pos = 0u64;
        let zeros = [0u8; EXTERNAL_ALIGN as usize];
        for (offset, b) in &self.external {
            while pos < *offset {
                let n = (*offset - pos).min(EXTERNAL_ALIGN) as usize;
                w.write_all(&zeros[..n])?;
                pos += n as u64;
            }
            w.write_all(b)?;
            pos += b.len() as u64;
        }
        Ok(())
    }
}

/// Sum of the raw weight bytes that would be written as initializers.
pub fn weight_bytes(g: &Graph) -> u64 {
    g.value_ids()
        .filter(|&v| g.is_live(v))
        .filter_map(|v| g.const_data(v))
        .map(|t| t.byte_len() as u64)
        .sum()
}

/// Writes `t` as a serialized `TensorProto` named `name`, streaming raw data.
pub fn write_tensor(w: &mut dyn Write, name: &str, t: &crate::tensor::Tensor) -> Result<()> {
    let header = ser(&tensor_header(name, t), "tensor")?;
    let io = |e| Error::invalid(format!("cannot write tensor {name:?}: {e}"));
    w.write_all(&header).map_err(io)?;
    if let TensorData::Raw(r) = t.data() {
        w.write_all(&[TAG_RAW_DATA]).map_err(io)?;
        write_varint(w, r.len() as u64).map_err(io)?;
        w.write_all(r).map_err(io)?;
    }
    Ok(())
}
