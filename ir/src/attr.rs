//! Node attributes as the IR keeps them.
//!
//! Typed ops hold their attributes as struct fields; [`Attribute`] is the neutral form
//! used at the ONNX boundary and by [`crate::op::OtherOp`], which carries attributes it
//! does not interpret. Kinds the IR never inspects (subgraphs, sparse tensors, type
//! protos, references to function attributes) stay as the serialized ONNX
//! `AttributeProto` ([`AttrValue::Encoded`]) so they round-trip unchanged.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::fmt;

/// One named attribute.
#[derive(Clone, Debug, PartialEq)]
pub struct Attribute {
    /// Attribute name.
    pub name: String,
    /// Its value.
    pub value: AttrValue,
}

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    /// Integer.
    Int(i64),
    /// Float.
    Float(f32),
    /// Byte string.
    String(Vec<u8>),
    /// Tensor.
    Tensor(Tensor),
    /// Integers.
    Ints(Vec<i64>),
    /// Floats.
    Floats(Vec<f32>),
    /// Byte strings.
    Strings(Vec<Vec<u8>>),
    /// Tensors.
    Tensors(Vec<Tensor>),
    /// A whole serialized ONNX `AttributeProto` the IR does not interpret.
    Encoded(EncodedAttr),
}

/// A serialized `AttributeProto` (subgraph, sparse tensor, type proto, function attribute
/// reference), with a printable summary and the outer-scope names its subgraphs read.
#[derive(Clone, Debug, PartialEq)]
pub struct EncodedAttr {
    /// Serialized `AttributeProto`, name included.
    pub bytes: Vec<u8>,
    /// Short description for the printer, e.g. `graph(then_branch: 3 nodes)`.
    pub summary: String,
}

impl Attribute {
    /// An integer attribute.
    pub fn int(name: &str, v: i64) -> Self {
        Self::new(name, AttrValue::Int(v))
    }
    /// A float attribute.
    pub fn float(name: &str, v: f32) -> Self {
        Self::new(name, AttrValue::Float(v))
    }
    /// An integer-list attribute.
    pub fn ints(name: &str, v: &[i64]) -> Self {
        Self::new(name, AttrValue::Ints(v.to_vec()))
    }
    /// A string attribute.
    pub fn string(name: &str, v: &str) -> Self {
        Self::new(name, AttrValue::String(v.as_bytes().to_vec()))
    }
    /// An attribute from its parts.
    pub fn new(name: &str, value: AttrValue) -> Self {
        Attribute {
            name: name.to_string(),
            value,
        }
    }
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list<T: fmt::Display>(f: &mut fmt::Formatter<'_>, v: &[T]) -> fmt::Result {
            f.write_str("[")?;
            for (i, x) in v.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{x}")?;
            }
            f.write_str("]")
        }
        match self {
            AttrValue::Int(v) => write!(f, "{v}"),
            AttrValue::Float(v) => write!(f, "{v:?}"),
            AttrValue::String(s) => write!(f, "{:?}", String::from_utf8_lossy(s)),
            AttrValue::Tensor(t) => write!(f, "tensor({}{:?})", t.dtype(), t.shape()),
            AttrValue::Ints(v) => list(f, v),
            AttrValue::Floats(v) => {
                let s: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
                list(f, &s)
            }
            AttrValue::Strings(v) => {
                let s: Vec<String> = v
                    .iter()
                    .map(|x| format!("{:?}", String::from_utf8_lossy(x)))
                    .collect();
                list(f, &s)
            }
            AttrValue::Tensors(v) => write!(f, "tensors({})", v.len()),
            AttrValue::Encoded(e) => f.write_str(&e.summary),
        }
    }
}

/// Attributes being read into a typed op: each `take_*` removes one, and
/// [`AttrBag::finish`] fails when any are left that the op does not model, so that
/// the node stays an `Other` op instead of losing meaning.
pub struct AttrBag {
    attrs: Vec<Attribute>,
}

impl AttrBag {
    /// A bag over attributes.
    pub fn new(attrs: Vec<Attribute>) -> Self {
        AttrBag { attrs }
    }
    fn take(&mut self, name: &str) -> Option<AttrValue> {
        let i = self.attrs.iter().position(|a| a.name == name)?;
        Some(self.attrs.remove(i).value)
    }
    fn mismatch(name: &str, want: &str) -> Error {
        Error::unsupported(format!("attribute {name} is not {want}"))
    }
    /// An optional integer.
    pub fn int(&mut self, name: &str) -> Result<Option<i64>> {
        match self.take(name) {
            None => Ok(None),
            Some(AttrValue::Int(v)) => Ok(Some(v)),
            Some(_) => Err(Self::mismatch(name, "an int")),
        }
    }
    /// An optional float.
    pub fn float(&mut self, name: &str) -> Result<Option<f32>> {
        match self.take(name) {
            None => Ok(None),
            Some(AttrValue::Float(v)) => Ok(Some(v)),
            Some(_) => Err(Self::mismatch(name, "a float")),
        }
    }
    /// An optional integer list.
    pub fn ints(&mut self, name: &str) -> Result<Option<Vec<i64>>> {
        match self.take(name) {
            None => Ok(None),
            Some(AttrValue::Ints(v)) => Ok(Some(v)),
            Some(_) => Err(Self::mismatch(name, "a list of ints")),
        }
    }
    /// An optional UTF-8 string.
    pub fn string(&mut self, name: &str) -> Result<Option<String>> {
        match self.take(name) {
            None => Ok(None),
            Some(AttrValue::String(v)) => String::from_utf8(v)
                .map(Some)
                .map_err(|_| Self::mismatch(name, "UTF-8")),
            Some(_) => Err(Self::mismatch(name, "a string")),
        }
    }
    /// An optional tensor.
    pub fn tensor(&mut self, name: &str) -> Result<Option<Tensor>> {
        match self.take(name) {
            None => Ok(None),
            Some(AttrValue::Tensor(t)) => Ok(Some(t)),
            Some(_) => Err(Self::mismatch(name, "a tensor")),
        }
    }
    /// Succeeds when every attribute was taken.
    pub fn finish(self) -> Result<()> {
        match self.attrs.first() {
            None => Ok(()),
            Some(a) => Err(Error::unsupported(format!(
                "attribute {} is not modelled",
                a.name
            ))),
        }
    }
}

/// Collects the attributes of a typed op for export, skipping absent ones.
#[derive(Default)]
pub struct AttrOut(pub Vec<Attribute>);

impl AttrOut {
    /// Adds an integer when present.
    pub fn int(&mut self, name: &str, v: Option<i64>) -> &mut Self {
        if let Some(v) = v {
            self.0.push(Attribute::int(name, v));
        }
        self
    }
    /// Adds a float when present.
    pub fn float(&mut self, name: &str, v: Option<f32>) -> &mut Self {
        if let Some(v) = v {
            self.0.push(Attribute::float(name, v));
        }
        self
    }
    /// Adds an integer list when present.
    pub fn ints(&mut self, name: &str, v: &Option<Vec<i64>>) -> &mut Self {
        if let Some(v) = v {
            self.0.push(Attribute::ints(name, v));
        }
        self
    }
    /// Adds a string when present.
    pub fn string(&mut self, name: &str, v: &Option<String>) -> &mut Self {
        if let Some(v) = v {
            self.0.push(Attribute::string(name, v));
        }
        self
    }
    /// Adds a tensor when present.
    pub fn tensor(&mut self, name: &str, v: &Option<Tensor>) -> &mut Self {
        if let Some(v) = v {
            self.0
                .push(Attribute::new(name, AttrValue::Tensor(v.clone())));
        }
        self
    }
}
