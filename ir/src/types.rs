//! Value types: element type and (possibly symbolic) shape.

use crate::dtype::DType;
use std::fmt;

/// One dimension of a shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A known size.
    Known(i64),
    /// A named symbolic size (ONNX `dim_param`), e.g. `N` or `batch`.
    Sym(String),
    /// An unknown size.
    Unknown,
}

impl Dim {
    /// The size when it is known.
    pub fn known(&self) -> Option<i64> {
        match self {
            Dim::Known(v) => Some(*v),
            _ => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(v) => write!(f, "{v}"),
            Dim::Sym(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// A shape: `None` when even the rank is unknown.
pub type Shape = Option<Vec<Dim>>;

/// A known shape from concrete sizes.
pub fn known_shape(dims: &[usize]) -> Shape {
    Some(dims.iter().map(|&d| Dim::Known(d as i64)).collect())
}

/// The type of a value.
#[derive(Clone, Debug, PartialEq)]
pub enum ValueType {
    /// A dense tensor: element type (if declared) and shape.
    Tensor {
        /// Element type; `None` when the model leaves it undefined.
        elem: Option<DType>,
        /// Dimensions; `None` when the rank is unknown.
        shape: Shape,
    },
    /// Any other ONNX type (sequence, map, optional, sparse tensor), kept as the
    /// serialized `TypeProto` bytes so it round-trips unchanged.
    Opaque(OpaqueType),
}

/// A serialized ONNX `TypeProto` the IR does not interpret, with a printable summary.
#[derive(Clone, Debug, PartialEq)]
pub struct OpaqueType {
    /// Serialized `TypeProto`.
    pub bytes: Vec<u8>,
    /// Short human-readable description (e.g. `seq(tensor(f32))`).
    pub summary: String,
}

impl ValueType {
    /// A tensor type with a known element type and shape.
    pub fn tensor(elem: DType, shape: Shape) -> ValueType {
        ValueType::Tensor {
            elem: Some(elem),
            shape,
        }
    }
    /// Element type for tensor types.
    pub fn elem(&self) -> Option<DType> {
        match self {
            ValueType::Tensor { elem, .. } => *elem,
            ValueType::Opaque(_) => None,
        }
    }
    /// Shape for tensor types (None for unknown rank or non-tensor).
    pub fn shape(&self) -> Option<&[Dim]> {
        match self {
            ValueType::Tensor { shape, .. } => shape.as_deref(),
            ValueType::Opaque(_) => None,
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueType::Tensor { elem, shape } => {
                match elem {
                    Some(e) => write!(f, "{e}")?,
                    None => f.write_str("?")?,
                }
                match shape {
                    None => f.write_str("[*]"),
                    Some(dims) => {
                        f.write_str("[")?;
                        for (i, d) in dims.iter().enumerate() {
                            if i > 0 {
                                f.write_str(",")?;
                            }
                            write!(f, "{d}")?;
                        }
                        f.write_str("]")
                    }
                }
            }
            ValueType::Opaque(o) => f.write_str(&o.summary),
        }
    }
}
