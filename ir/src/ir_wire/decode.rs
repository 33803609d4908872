//! Wire messages → graph. Every index and every enum number is checked: malformed
//! input gives an [`Error::Decode`] naming what is wrong, never a panic.

use super::messages::*;
use crate::attr::{AttrValue, Attribute, EncodedAttr};
use crate::compressed::shared::HashParams;
use crate::compressed::{CodebookWeight, Compressed, QuantizedWeight, SharedWeight, WeightFormat};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::{Graph, ModelMeta, ValueId};
use crate::op::{typed_opsets, Op, OtherOp};
use crate::sparsity::{SparseEncoding, Sparsity, SparsityPattern};
use crate::tensor::Tensor;
use crate::types::{Dim, OpaqueType, ValueType};
use bytes::Bytes;

fn err(msg: String) -> Error {
    Error::decode(format!("IR wire: {msg}"))
}

fn usize_of(v: u64, what: &str) -> Result<usize> {
    usize::try_from(v).map_err(|_| err(format!("{what}: {v} does not fit in usize")))
}

/// The graph a message describes.
pub fn graph_from_msg(m: GraphMsg) -> Result<Graph> {
    let mut g = Graph::new(&m.name);
    g.doc_string = m.doc_string;
    if let Some(meta) = m.meta {
        g.meta = ModelMeta {
            ir_version: meta.ir_version,
            opset_imports: meta
                .opsets
                .into_iter()
                .map(|o| (o.domain, o.version))
                .collect(),
            producer_name: meta.producer_name,
            producer_version: meta.producer_version,
            model_extra: meta.model_extra,
            graph_extra: meta.graph_extra,
        };
    }
    let mut arrays: Vec<(String, Tensor)> = Vec::with_capacity(m.shared_arrays.len());
    for a in m.shared_arrays {
        let what = format!("shared array {:?}", a.name);
        let t = tensor(a.tensor, &what)?;
        arrays.push((a.name, t));
    }
    let count = m.values.len();
    for v in m.values {
        let what = format!("value {:?}", v.name);
        let ty = v.ty.map(|t| value_type(t, &what)).transpose()?;
        let id = g
            .add_value(&v.name, ty)
            .map_err(|e| err(format!("{what}: {e}")))?;
        let data = v.data.map(|t| tensor(Some(t), &what)).transpose()?;
        let compressed = v
            .compressed
            .map(|c| compressed(c, &arrays, &what))
            .transpose()?;
        let sparsity = v.sparsity.map(|s| sparsity(s, &what)).transpose()?;
        let val = g.value_mut(id);
        val.data = data;
        val.compressed = compressed;
        val.sparsity = sparsity;
        for kv in v.annotations {
            val.annotate(&kv.key, &kv.value);
        }
    }
    let index = |i: u32, what: &str| -> Result<ValueId> {
        if (i as usize) < count {
            Ok(ValueId(i))
        } else {
            Err(err(format!(
                "{what}: value index {i} out of range ({count} values)"
            )))
        }
    };
    let slot = |i: u32, what: &str| -> Result<Option<ValueId>> {
        match i {
            0 => Ok(None),
            i => index(i - 1, what).map(Some),
        }
    };
    for n in m.nodes {
        let what = format!("node {:?}", n.name);
        let inputs = n
            .inputs
            .iter()
            .map(|&i| slot(i, &what))
            .collect::<Result<Vec<_>>>()?;
        let outputs = n
            .outputs
            .iter()
            .map(|&i| slot(i, &what))
            .collect::<Result<Vec<_>>>()?;
        let implicit = n
            .implicit_inputs
            .iter()
            .map(|&i| index(i, &what))
            .collect::<Result<Vec<_>>>()?;
        let attrs = n
            .attributes
            .into_iter()
            .map(|a| attribute(a, &what))
            .collect::<Result<Vec<_>>>()?;
        let op = op(&g.meta, n.domain, n.op_type, n.typed, attrs, &what)?;
        let id = g
            .add_node(&n.name, op, inputs, outputs)
            .map_err(|e| err(format!("{what}: {e}")))?;
        g.set_implicit_inputs(id, implicit);
        let node = g.node_mut(id);
        node.doc_string = n.doc_string;
        node.extra = n.extra;
    }
    let inputs = m
        .inputs
        .iter()
        .map(|&i| index(i, "graph input"))
        .collect::<Result<Vec<_>>>()?;
    let outputs = m
        .outputs
        .iter()
        .map(|&i| index(i, "graph output"))
        .collect::<Result<Vec<_>>>()?;
    g.set_inputs(inputs);
    g.set_outputs(outputs);
    Ok(g)
}

fn op(
    meta: &ModelMeta,
    domain: String,
    op_type: String,
    typed: bool,
    attrs: Vec<Attribute>,
    what: &str,
) -> Result<Op> {
    if !typed {
        return Ok(Op::Other(OtherOp {
            domain,
            op_type,
            attributes: attrs,
        }));
    }
    // A typed op is rebuilt as import builds it: at the model's opset for its domain,
    // else at the first opset of its typed range that accepts the attributes.
    let (lo, hi) = typed_opsets(&op_type);
    let first = meta.opset(&domain).into_iter();
    for opset in first.chain(lo..=hi) {
        let op = Op::from_onnx(&domain, &op_type, attrs.clone(), opset);
        if !op.is_other() {
            return Ok(op);
        }
    }
    Err(err(format!(
        "{what}: typed op {domain:?}.{op_type} does not build from its attributes"
    )))
}

fn dtype(code: i32, what: &str) -> Result<DType> {
    DType::from_onnx(code).ok_or_else(|| err(format!("{what}: undefined element type {code}")))
}

fn tensor(t: Option<TensorMsg>, what: &str) -> Result<Tensor> {
    let t = t.ok_or_else(|| err(format!("{what}: tensor missing")))?;
    let dt = dtype(t.dtype, what)?;
    let shape = t
        .shape
        .iter()
        .map(|&d| usize_of(d, what))
        .collect::<Result<Vec<_>>>()?;
    let r = if dt == DType::String {
        Tensor::from_strings(shape, t.strings)
    } else {
        Tensor::from_raw(dt, shape, Bytes::from(t.raw))
    };
    r.map_err(|e| err(format!("{what}: {e}")))
}

fn value_type(t: TypeMsg, what: &str) -> Result<ValueType> {
    if t.opaque {
        return Ok(ValueType::Opaque(OpaqueType {
            bytes: t.opaque_bytes,
            summary: t.opaque_summary,
        }));
    }
    let elem = match t.elem {
        0 => None,
        c => Some(dtype(c, what)?),
    };
    let shape = if t.has_shape {
        let dims = t
            .dims
            .into_iter()
            .map(|d| match d.kind {
                0 => Ok(Dim::Known(d.size)),
                1 => Ok(Dim::Sym(d.sym)),
                2 => Ok(Dim::Unknown),
                k => Err(err(format!("{what}: unknown dimension kind {k}"))),
            })
            .collect::<Result<Vec<_>>>()?;
        Some(dims)
    } else {
        None
    };
    Ok(ValueType::Tensor { elem, shape })
}

fn compressed(c: CompressedMsg, arrays: &[(String, Tensor)], what: &str) -> Result<Compressed> {
    match (c.quantized, c.codebook, c.shared) {
        (Some(q), None, None) => {
            let codes = tensor(q.q, &format!("{what} codes"))?;
            let scale = tensor(q.scale, &format!("{what} scales"))?;
            let zero_point = q
                .zero_point
                .map(|z| tensor(Some(z), &format!("{what} zero points")))
                .transpose()?;
            let axis = usize_of(q.axis, what)?;
            if axis >= codes.shape().len().max(1) {
                return Err(err(format!(
                    "{what}: quantization axis {axis} out of range for rank {}",
                    codes.shape().len()
                )));
            }
            let block_size = q.block_size.map(|b| usize_of(b, what)).transpose()?;
            let format = match q.format {
                0 => WeightFormat::DequantizeLinear,
                1 => WeightFormat::MatMulNBits,
                f => return Err(err(format!("{what}: unknown weight format {f}"))),
            };
            Ok(Compressed::Quantized(QuantizedWeight {
                q: codes,
                scale,
                zero_point,
                axis,
                block_size,
                format,
            }))
        }
        (None, Some(cb), None) => {
            let indices = tensor(cb.indices, &format!("{what} indices"))?;
            let centroids = tensor(cb.centroids, &format!("{what} centroids"))?;
            let axis = cb.axis.map(|a| usize_of(a, what)).transpose()?;
            if let Some(a) = axis {
                if a >= indices.shape().len() {
                    return Err(err(format!(
                        "{what}: codebook axis {a} out of range for rank {}",
                        indices.shape().len()
                    )));
                }
            }
            Ok(Compressed::Codebook(CodebookWeight {
                indices,
                centroids,
                axis,
            }))
        }
        (None, None, Some(s)) => {
            let array = arrays
                .iter()
                .find(|(n, _)| *n == s.array_name)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| err(format!("{what}: unknown shared array {:?}", s.array_name)))?;
            let (Ok(perm), Ok(sign)) = (
                <[u64; 4]>::try_from(s.perm.as_slice()),
                <[u64; 3]>::try_from(s.sign.as_slice()),
            ) else {
                return Err(err(format!(
                    "{what}: shared weight needs 4 fold and 3 sign coefficients"
                )));
            };
            let hash = HashParams {
                chunk: s.chunk,
                chunks: s.chunks,
                perm,
                sign,
            };
            // The slot bound first: it keeps the primality test of `check` short.
            if s.chunk.saturating_mul(s.chunks) >= crate::compressed::shared::PRIME {
                return Err(err(format!("{what}: shared array of 2^31 slots or more")));
            }
            hash.check(what).map_err(|e| err(e.to_string()))?;
            let shape = s
                .shape
                .iter()
                .map(|&d| usize_of(d, what))
                .collect::<Result<Vec<_>>>()?;
            Ok(Compressed::Shared(SharedWeight {
                array,
                array_name: s.array_name,
                shape,
                offset: s.offset,
                scale: s.scale,
                hash,
            }))
        }
        _ => Err(err(format!(
            "{what}: a compressed weight needs exactly one of quantized, codebook, shared"
        ))),
    }
}

fn sparsity(s: SparsityMsg, what: &str) -> Result<Sparsity> {
    let pattern = match s.pattern {
        0 => SparsityPattern::Unstructured { ratio: s.ratio },
        1 => SparsityPattern::NM {
            n: usize_of(s.n, what)?,
            m: usize_of(s.m, what)?,
            axes: (usize_of(s.axis_lo, what)?, usize_of(s.axis_hi, what)?),
        },
        p => return Err(err(format!("{what}: unknown sparsity pattern {p}"))),
    };
    let encoding = match s.encoding {
        0 => SparseEncoding::Dense,
        1 => SparseEncoding::SparseInitializer,
        e => return Err(err(format!("{what}: unknown sparse encoding {e}"))),
    };
    Ok(Sparsity {
        pattern,
        zeros: usize_of(s.zeros, what)?,
        len: usize_of(s.len, what)?,
        encoding,
    })
}

fn attribute(a: AttrMsg, what: &str) -> Result<Attribute> {
    let at = format!("{what} attribute {:?}", a.name);
    let value = match a.kind {
        1 => AttrValue::Int(a.i),
        2 => AttrValue::Float(a.f),
        3 => AttrValue::String(a.s),
        4 => AttrValue::Tensor(tensor(a.t, &at)?),
        5 => AttrValue::Ints(a.ints),
        6 => AttrValue::Floats(a.floats),
        7 => AttrValue::Strings(a.strings),
        8 => AttrValue::Tensors(
            a.tensors
                .into_iter()
                .map(|t| tensor(Some(t), &at))
                .collect::<Result<Vec<_>>>()?,
        ),
        9 => AttrValue::Encoded(EncodedAttr {
            bytes: a.s,
            summary: a.summary,
        }),
        k => return Err(err(format!("{at}: unknown attribute kind {k}"))),
    };
    Ok(Attribute {
        name: a.name,
        value,
    })
}
