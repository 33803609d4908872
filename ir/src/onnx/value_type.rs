//! ONNX `TypeProto` <-> [`ValueType`].

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::types::{Dim, OpaqueType, ValueType};
use onnx_protobuf::tensor_shape_proto::{dimension, Dimension};
use onnx_protobuf::type_proto::{self, Value};
use onnx_protobuf::{Message, TensorShapeProto, TypeProto};

/// The IR type of an ONNX type: tensors are modelled, everything else is kept opaque.
pub fn type_from_proto(t: &TypeProto) -> ValueType {
    match &t.value {
        Some(Value::TensorType(tt)) => ValueType::Tensor {
            elem: DType::from_onnx(tt.elem_type),
            shape: tt.shape.as_ref().map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(dimension::Value::DimValue(v)) => Dim::Known(*v),
                        Some(dimension::Value::DimParam(p)) if !p.is_empty() => Dim::Sym(p.clone()),
                        _ => Dim::Unknown,
                    })
                    .collect()
            }),
        },
        _ => ValueType::Opaque(OpaqueType {
            bytes: t.write_to_bytes().unwrap_or_default(),
            summary: summary(t),
        }),
    }
}

fn elem_name(code: i32) -> String {
    DType::from_onnx(code).map_or("?".to_string(), |d| d.to_string())
}

fn sub(t: &protobuf::MessageField<TypeProto>) -> String {
    t.as_ref().map_or("?".to_string(), summary)
}

/// A short description of an ONNX type, e.g. `seq(tensor(f32))`.
pub fn summary(t: &TypeProto) -> String {
    match &t.value {
        Some(Value::TensorType(tt)) => format!("tensor({})", elem_name(tt.elem_type)),
        Some(Value::SequenceType(s)) => format!("seq({})", sub(&s.elem_type)),
        Some(Value::MapType(m)) => format!("map({},{})", elem_name(m.key_type), sub(&m.value_type)),
        Some(Value::OptionalType(o)) => format!("optional({})", sub(&o.elem_type)),
        Some(Value::SparseTensorType(s)) => format!("sparse_tensor({})", elem_name(s.elem_type)),
        _ => "type(?)".to_string(),
    }
}

/// The ONNX type for an IR type.
pub fn type_to_proto(t: &ValueType) -> Result<TypeProto> {
    match t {
        ValueType::Tensor { elem, shape } => {
            let mut tt = type_proto::Tensor::new();
            tt.elem_type = elem.map_or(0, DType::to_onnx);
            if let Some(dims) = shape {
                let mut sp = TensorShapeProto::new();
                sp.dim = dims
                    .iter()
                    .map(|d| {
                        let mut pd = Dimension::new();
                        pd.value = match d {
                            Dim::Known(v) => Some(dimension::Value::DimValue(*v)),
                            Dim::Sym(s) => Some(dimension::Value::DimParam(s.clone())),
                            Dim::Unknown => None,
                        };
                        pd
                    })
                    .collect();
                tt.shape = Some(sp).into();
            }
            let mut p = TypeProto::new();
            p.value = Some(Value::TensorType(tt));
            Ok(p)
        }
        ValueType::Opaque(o) => TypeProto::parse_from_bytes(&o.bytes)
            .map_err(|e| Error::invalid(format!("opaque type {}: {e}", o.summary))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_types_round_trip() {
        let t = ValueType::Tensor {
            elem: Some(DType::F32),
            shape: Some(vec![Dim::Sym("N".into()), Dim::Known(3), Dim::Unknown]),
        };
        assert_eq!(type_from_proto(&type_to_proto(&t).unwrap()), t);
        let t = ValueType::Tensor {
            elem: None,
            shape: None,
        };
        assert_eq!(type_from_proto(&type_to_proto(&t).unwrap()), t);
    }

    #[test]
    fn sequences_are_opaque() {
        let inner = type_to_proto(&ValueType::tensor(DType::I64, None)).unwrap();
        let mut seq = type_proto::Sequence::new();
        seq.elem_type = Some(inner).into();
        let mut p = TypeProto::new();
        p.value = Some(Value::SequenceType(seq));
        let t = type_from_proto(&p);
        assert_eq!(t.to_string(), "seq(tensor(i64))");
        assert_eq!(type_to_proto(&t).unwrap(), p);
    }
}
