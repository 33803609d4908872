//! ONNX `ModelProto` -> [`Graph`].

use super::attrs::{attr_from_proto, subgraph_free_names};
use super::external::ExternalFiles;
use super::tensor_proto::tensor_from_proto_raw;
use super::value_type::type_from_proto;
use crate::attr::{AttrValue, Attribute};
use crate::error::{Error, Result};
use crate::graph::{Graph, ModelMeta, NodeId, ValueId};
use crate::op::Op;
use crate::tensor::Tensor;
use bytes::Bytes;
use onnx_protobuf::{GraphProto, Message, ModelProto, NodeProto};
use std::path::Path;

/// Parses a serialized model; external data is resolved under `base_dir`.
pub fn import_bytes(bytes: &[u8], base_dir: Option<&Path>) -> Result<Graph> {
    super::wire::check_framing(bytes, "an ONNX model")?;
    let model = ModelProto::parse_from_bytes(bytes)
        .map_err(|e| Error::decode(format!("not an ONNX model: {e}")))?;
    import_model(model, base_dir, Vec::new())
}

/// Parses a serialized model held in shared storage (a memory-mapped file): initializer
/// data is sliced from `bytes`, not copied.
pub fn import_shared(bytes: &Bytes, base_dir: Option<&Path>) -> Result<Graph> {
    super::wire::check_framing(bytes, "an ONNX model")?;
    let Some(split) = super::wire::split_weights(bytes) else {
        return import_bytes(bytes, base_dir);
    };
    let model = ModelProto::parse_from_bytes(&split.rest)
        .map_err(|e| Error::decode(format!("not an ONNX model: {e}")))?;
    drop(split.rest);
    let raw = split
        .raw
        .into_iter()
        .map(|r| r.map(|r| bytes.slice(r)))
        .collect();
    import_model(model, base_dir, raw)
}

/// Converts a parsed model (tensor data is moved out of it, not copied). `raw[i]`, when
/// set, is the `raw_data` of initializer `i` (cut out of the serialized model).
pub fn import_model(
    mut model: ModelProto,
    base_dir: Option<&Path>,
    raw: Vec<Option<Bytes>>,
) -> Result<Graph> {
    let gp = model
        .graph
        .take()
        .ok_or_else(|| Error::decode("not an ONNX model: it has no graph"))?;
    if model.ir_version <= 0 {
        return Err(Error::decode(format!(
            "not an ONNX model: ir_version is {}",
            model.ir_version
        )));
    }
    let mut opset_imports = Vec::with_capacity(model.opset_import.len());
    for o in &model.opset_import {
        if o.version <= 0 {
            return Err(Error::decode(format!(
                "not an ONNX model: opset import {:?} has version {}",
                o.domain, o.version
            )));
        }
        opset_imports.push((o.domain.clone(), o.version));
    }
    let mut meta = ModelMeta {
        ir_version: model.ir_version,
        opset_imports,
        producer_name: std::mem::take(&mut model.producer_name),
        producer_version: std::mem::take(&mut model.producer_version),
        ..Default::default()
    };
    model.ir_version = 0;
    model.opset_import.clear();
    meta.model_extra = model
        .write_to_bytes()
        .map_err(|e| Error::decode(format!("model fields: {e}")))?;
    let mut g = Graph::new("");
    g.meta = meta;
    let mut ext = ExternalFiles::new(base_dir);
    import_graph(gp, &mut g, &mut ext, raw)?;
    g.topo_order()?;
    // DequantizeLinear of constant weights becomes a first-class quantized value.
    crate::compressed::raise_compressed(&mut g)?;
    Ok(g)
}

fn node_label(n: &NodeProto) -> String {
    if n.name.is_empty() {
        let out = n
            .output
            .iter()
            .find(|o| !o.is_empty())
            .map_or("", String::as_str);
        format!("node ({}) -> {out:?}", n.op_type)
    } else {
        format!("node {:?} ({})", n.name, n.op_type)
    }
}

/// A node read from the file, waiting for its inputs to be connected.
struct Pending {
    id: NodeId,
    label: String,
    inputs: Vec<String>,
    free: Vec<String>,
}

fn import_graph(
    mut gp: GraphProto,
    g: &mut Graph,
    ext: &mut ExternalFiles,
    raw: Vec<Option<Bytes>>,
) -> Result<()> {
    g.name = std::mem::take(&mut gp.name);
    g.doc_string = std::mem::take(&mut gp.doc_string);

    let mut inputs = Vec::with_capacity(gp.input.len());
    for vi in std::mem::take(&mut gp.input) {
        let ty = vi.type_.as_ref().map(type_from_proto);
        let id = g
            .add_value(&vi.name, ty)
            .map_err(|e| Error::invalid(format!("graph input {:?}: {e}", vi.name)))?;
        inputs.push(id);
    }
    g.set_inputs(inputs);

    let mut raw = raw.into_iter();
    for mut tp in std::mem::take(&mut gp.initializer) {
        let t = tensor_from_proto_raw(&mut tp, ext, raw.next().flatten())?;
        match g.value_by_name(&tp.name) {
            Some(id) if g.is_input(id) && g.const_data(id).is_none() => {
                let v = g.value_mut(id);
                if v.ty.is_none() {
                    v.ty = Some(crate::types::ValueType::tensor(
                        t.dtype(),
                        crate::types::known_shape(t.shape()),
                    ));
                }
                v.data = Some(t);
            }
            _ => {
                g.add_const(&tp.name, t)
                    .map_err(|e| Error::invalid(format!("initializer {:?}: {e}", tp.name)))?;
            }
        }
    }

    // Sparse initializers become dense constants annotated with their sparsity.
    for sp in std::mem::take(&mut gp.sparse_initializer) {
        let (name, t, sparsity) = super::sparse::from_sparse(sp, ext)?;
        let id = match g.value_by_name(&name) {
            Some(id) if g.is_input(id) && g.const_data(id).is_none() => {
                let v = g.value_mut(id);
                if v.ty.is_none() {
                    v.ty = Some(crate::types::ValueType::tensor(
                        t.dtype(),
                        crate::types::known_shape(t.shape()),
                    ));
                }
                v.data = Some(t);
                id
            }
            _ => g
                .add_const(&name, t)
                .map_err(|e| Error::invalid(format!("sparse initializer {name:?}: {e}")))?,
        };
        g.value_mut(id).sparsity = Some(sparsity);
    }

    let opset_of = |meta: &ModelMeta, domain: &str| meta.opset(domain).unwrap_or(0);

    // Phase 1: constants from Constant nodes, and the output values of every other node.
    let mut rest = Vec::new();
    for mut n in std::mem::take(&mut gp.node) {
        if n.op_type.is_empty() {
            return Err(Error::invalid(format!(
                "node {:?}: op_type is empty",
                n.name
            )));
        }
        let mut free: Vec<String> = Vec::new();
        let mut attrs = Vec::with_capacity(n.attribute.len());
        for a in std::mem::take(&mut n.attribute) {
            for name in subgraph_free_names(&a) {
                if !free.contains(&name) {
                    free.push(name);
                }
            }
            attrs.push(attr_from_proto(a, ext));
        }
        if let Some(t) = constant_tensor(&n, &attrs) {
            let out = n.output.first().cloned().unwrap_or_default();
            g.add_const(&out, t)
                .map_err(|e| Error::invalid(format!("{}: output {out:?}: {e}", node_label(&n))))?;
            continue;
        }
        let mut outs = Vec::with_capacity(n.output.len());
        for o in &n.output {
            if o.is_empty() {
                outs.push(None);
                continue;
            }
            if g.value_by_name(o).is_some() {
                return Err(Error::invalid(format!(
                    "{}: output {o:?} is already defined (two producers for one name)",
                    node_label(&n)
                )));
            }
            outs.push(Some(g.add_value(o, None)?));
        }
        rest.push((n, attrs, outs, free));
    }

    // Phase 2: add the nodes with their outputs (inputs are connected once every
    // producer exists, so that file order does not matter).
    let mut pending = Vec::with_capacity(rest.len());
    for (mut n, attrs, outs, free) in rest {
        let label = node_label(&n);
        let domain = std::mem::take(&mut n.domain);
        let op_type = std::mem::take(&mut n.op_type);
        let op = Op::from_onnx(&domain, &op_type, attrs, opset_of(&g.meta, &domain));
        let name = std::mem::take(&mut n.name);
        let id = g.add_node(&name, op, Vec::new(), outs)?;
        let inputs = std::mem::take(&mut n.input);
        n.output.clear();
        g.node_mut(id).doc_string = std::mem::take(&mut n.doc_string);
        g.node_mut(id).extra = n
            .write_to_bytes()
            .map_err(|e| Error::decode(format!("{label}: {e}")))?;
        pending.push(Pending {
            id,
            label,
            inputs,
            free,
        });
    }

    // Phase 3: connect inputs and outer-scope reads.
    for p in &pending {
        for (slot, name) in p.inputs.iter().enumerate() {
            let v = if name.is_empty() {
                None
            } else {
                Some(g.value_by_name(name).ok_or_else(|| {
                    Error::invalid(format!("{}: input {name:?} is not defined", p.label))
                })?)
            };
            g.set_input(p.id, slot, v);
        }
        let outer: Vec<ValueId> = p.free.iter().filter_map(|n| g.value_by_name(n)).collect();
        if !outer.is_empty() {
            g.set_implicit_inputs(p.id, outer);
        }
    }

    for vi in std::mem::take(&mut gp.value_info) {
        if let (Some(id), Some(t)) = (g.value_by_name(&vi.name), vi.type_.as_ref()) {
            if !g.is_input(id) && !g.value(id).is_const() {
                g.value_mut(id).ty = Some(type_from_proto(t));
            }
        }
    }

    let mut outputs = Vec::with_capacity(gp.output.len());
    for vi in std::mem::take(&mut gp.output) {
        let id = g
            .value_by_name(&vi.name)
            .ok_or_else(|| Error::invalid(format!("graph output {:?} is not defined", vi.name)))?;
        if let Some(t) = vi.type_.as_ref() {
            if !g.is_input(id) && !g.value(id).is_const() {
                g.value_mut(id).ty = Some(type_from_proto(t));
            }
        }
        outputs.push(id);
    }
    g.set_outputs(outputs);
    g.meta.graph_extra = gp
        .write_to_bytes()
        .map_err(|e| Error::decode(format!("graph fields: {e}")))?;
    Ok(())
}

/// The tensor of a Constant node that can become a constant value.
fn constant_tensor(n: &NodeProto, attrs: &[Attribute]) -> Option<Tensor> {
    let default_domain = n.domain.is_empty() || n.domain == "ai.onnx";
    if n.op_type != "Constant"
        || !default_domain
        || n.output.len() != 1
        || n.output.first().is_none_or(String::is_empty)
        || !n.input.is_empty()
    {
        return None;
    }
    let [a] = attrs else { return None };
    match (a.name.as_str(), &a.value) {
        ("value", AttrValue::Tensor(t)) => Some(t.clone()),
        ("value_float", AttrValue::Float(f)) => Some(Tensor::scalar_f32(*f)),
        ("value_floats", AttrValue::Floats(v)) => Tensor::from_f32(vec![v.len()], v.clone()).ok(),
        ("value_int", AttrValue::Int(i)) => Tensor::from_i64(vec![], vec![*i]).ok(),
        ("value_ints", AttrValue::Ints(v)) => Tensor::from_i64(vec![v.len()], v.clone()).ok(),
        ("value_string", AttrValue::String(s)) => {
            Tensor::from_strings(vec![], vec![s.clone()]).ok()
        }
        ("value_strings", AttrValue::Strings(v)) => {
            Tensor::from_strings(vec![v.len()], v.clone()).ok()
        }
        _ => None,
    }
}
