//! Constant tensors with shared, reference-counted storage.
//!
//! Data is kept exactly as ONNX `raw_data` lays it out (little-endian, sub-byte types
//! packed two per byte). Cloning a [`Tensor`] never copies the data: import, passes and
//! export all share the same bytes.

use crate::dtype::DType;
use crate::error::{Error, Result};
use bytes::Bytes;
use std::sync::Arc;

/// Storage of a tensor's elements.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// Little-endian raw bytes (shared; `Bytes` clones are reference counts).
    Raw(Bytes),
    /// One byte string per element (`DType::String`).
    Strings(Arc<[Vec<u8>]>),
}

/// A constant tensor: element type, shape and data.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    data: TensorData,
}

macro_rules! typed_access {
    ($from:ident, $to:ident, $t:ty, $n:expr, $($dt:ident)|+) => {
        /// A tensor of this element type built from values (row-major).
        pub fn $from(shape: Vec<usize>, values: Vec<$t>) -> Result<Tensor> {
            let mut bytes = Vec::with_capacity(values.len() * $n);
            for v in &values {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            Tensor::from_raw(first_of!($($dt)|+), shape, Bytes::from(bytes))
        }
        /// The elements decoded as this Rust type; an error naming the dtype if it differs.
        pub fn $to(&self) -> Result<Vec<$t>> {
            match (self.dtype, &self.data) {
                ($(DType::$dt)|+, TensorData::Raw(b)) => Ok(b
                    .chunks_exact($n)
                    .map(|c| {
                        let mut a = [0u8; $n];
                        a.copy_from_slice(c);
                        <$t>::from_le_bytes(a)
                    })
                    .collect()),
                _ => Err(Error::unsupported(format!(
                    "tensor of {} {:?} read as {}",
                    self.dtype,
                    self.shape,
                    stringify!($t)
                ))),
            }
        }
    };
}
macro_rules! first_of {
    ($a:ident $(| $rest:ident)*) => {
        DType::$a
    };
}

impl Tensor {
    /// A tensor over raw little-endian bytes; checks that the byte count fits the shape.
    pub fn from_raw(dtype: DType, shape: Vec<usize>, raw: Bytes) -> Result<Tensor> {
        let count = shape_count(&shape)?;
        match dtype.raw_len(count) {
            Some(len) if len == raw.len() => Ok(Tensor {
                dtype,
                shape,
                data: TensorData::Raw(raw),
            }),
            Some(len) => Err(Error::invalid(format!(
                "tensor {dtype}{shape:?} needs {len} bytes of data but has {}",
                raw.len()
            ))),
            None if matches!(dtype, DType::Other(_)) => Ok(Tensor {
                dtype,
                shape,
                data: TensorData::Raw(raw),
            }),
            None => Err(Error::unsupported(format!(
                "raw data for element type {dtype}"
            ))),
        }
    }

    /// A string tensor.
    pub fn from_strings(shape: Vec<usize>, values: Vec<Vec<u8>>) -> Result<Tensor> {
        let count = shape_count(&shape)?;
        if count != values.len() {
            return Err(Error::invalid(format!(
                "string tensor {shape:?} needs {count} elements but has {}",
                values.len()
            )));
        }
        Ok(Tensor {
            dtype: DType::String,
            shape,
            data: TensorData::Strings(values.into()),
        })
    }

    /// A scalar (rank 0) tensor holding one f32.
    pub fn scalar_f32(v: f32) -> Tensor {
        Self::from_raw(DType::F32, vec![], Bytes::copy_from_slice(&v.to_le_bytes()))
            .unwrap_or_else(|_| unreachable!("4 bytes fit a f32 scalar"))
    }

    typed_access!(from_f32, to_f32, f32, 4, F32);
    typed_access!(from_f64, to_f64, f64, 8, F64);
    typed_access!(from_i64, to_i64, i64, 8, I64);
    typed_access!(from_i32, to_i32, i32, 4, I32);
    typed_access!(from_u8, to_u8, u8, 1, U8);
    typed_access!(from_i8, to_i8, i8, 1, I8);

    /// An f32 tensor that takes ownership of `values` without copying them.
    pub fn from_f32_vec(shape: Vec<usize>, values: Vec<f32>) -> Result<Tensor> {
        Tensor::from_raw(DType::F32, shape, Bytes::from_owner(F32Buffer(values)))
    }

    /// The f32 elements, borrowed when the bytes are suitably aligned (always for
    /// tensors made by [`Tensor::from_f32_vec`]), copied otherwise.
    pub fn f32_view(&self) -> Result<std::borrow::Cow<'_, [f32]>> {
        match (self.dtype, &self.data) {
            (DType::F32, TensorData::Raw(b)) => Ok(match bytemuck::try_cast_slice(b) {
                Ok(v) => std::borrow::Cow::Borrowed(v),
                Err(_) => std::borrow::Cow::Owned(self.to_f32()?),
            }),
            _ => Err(Error::unsupported(format!(
                "tensor of {} {:?} read as f32",
                self.dtype, self.shape
            ))),
        }
    }

    /// A bool tensor.
    pub fn from_bool(shape: Vec<usize>, values: Vec<bool>) -> Result<Tensor> {
        let bytes: Vec<u8> = values.iter().map(|&b| b as u8).collect();
        Tensor::from_raw(DType::Bool, shape, Bytes::from(bytes))
    }

    /// The elements of a bool tensor.
    pub fn to_bool(&self) -> Result<Vec<bool>> {
        match (self.dtype, &self.data) {
            (DType::Bool, TensorData::Raw(b)) => Ok(b.iter().map(|&x| x != 0).collect()),
            _ => Err(Error::unsupported(format!(
                "tensor of {} read as bool",
                self.dtype
            ))),
        }
    }

    /// Integer elements of any integer (or bool) type widened to i64.
    pub fn to_i64_lossless(&self) -> Result<Vec<i64>> {
        Ok(match self.dtype {
            DType::I64 => self.to_i64()?,
            DType::I32 => self.to_i32()?.into_iter().map(i64::from).collect(),
            DType::U8 => self.to_u8()?.into_iter().map(i64::from).collect(),
            DType::I8 => self.to_i8()?.into_iter().map(i64::from).collect(),
            DType::Bool => self.to_bool()?.into_iter().map(i64::from).collect(),
            DType::U16 | DType::I16 | DType::U32 => {
                let b = self.raw()?;
                let n = self.dtype.bits().unwrap_or(8) / 8;
                b.chunks_exact(n)
                    .map(|c| match self.dtype {
                        DType::U16 => i64::from(u16::from_le_bytes([c[0], c[1]])),
                        DType::I16 => i64::from(i16::from_le_bytes([c[0], c[1]])),
                        _ => i64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                    })
                    .collect()
            }
            other => {
                return Err(Error::unsupported(format!(
                    "tensor of {other} read as integers"
                )))
            }
        })
    }

    /// The elements as f64: f32 and f64 tensors, and integer or bool tensors (widened
    /// through [`Tensor::to_i64_lossless`]); an error for any other element type.
    pub fn to_f64_numbers(&self) -> Result<Vec<f64>> {
        match self.dtype {
            DType::F32 => Ok(self.f32_view()?.iter().map(|&x| f64::from(x)).collect()),
            DType::F64 => self.to_f64(),
            _ => Ok(self
                .to_i64_lossless()?
                .into_iter()
                .map(|x| x as f64)
                .collect()),
        }
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// Dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The storage.
    pub fn data(&self) -> &TensorData {
        &self.data
    }
    /// The raw bytes (shared); an error for string tensors.
    pub fn raw(&self) -> Result<&Bytes> {
        match &self.data {
            TensorData::Raw(b) => Ok(b),
            TensorData::Strings(_) => Err(Error::unsupported("string tensor has no raw bytes")),
        }
    }
    /// Size of the data in bytes (strings: sum of their lengths).
    pub fn byte_len(&self) -> usize {
        match &self.data {
            TensorData::Raw(b) => b.len(),
            TensorData::Strings(s) => s.iter().map(Vec::len).sum(),
        }
    }
    /// The same data viewed with another shape of equal element count.
    pub fn reshaped(&self, shape: Vec<usize>) -> Result<Tensor> {
        if shape_count(&shape)? != self.len() {
            return Err(Error::invalid(format!(
                "cannot reshape tensor {:?} to {shape:?}",
                self.shape
            )));
        }
        Ok(Tensor {
            dtype: self.dtype,
            shape,
            data: self.data.clone(),
        })
    }
}

/// Owns f32 values and shows them as little-endian bytes (x86-64 and aarch64 are
/// little-endian), so a kernel's output vector becomes a tensor without a copy.
struct F32Buffer(Vec<f32>);

impl AsRef<[u8]> for F32Buffer {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

/// Element count of a shape, with overflow checked (shapes come from files).
pub fn shape_count(shape: &[usize]) -> Result<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        acc.checked_mul(d)
            .ok_or_else(|| Error::invalid(format!("tensor shape {shape:?} overflows")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_round_trip_and_sharing() {
        let t = Tensor::from_f32(vec![2, 2], vec![1.0, -2.0, 3.5, 0.0]).unwrap();
        assert_eq!(t.to_f32().unwrap(), vec![1.0, -2.0, 3.5, 0.0]);
        let c = t.clone();
        assert_eq!(
            c.raw().unwrap().as_ptr(),
            t.raw().unwrap().as_ptr(),
            "clones share storage"
        );
        assert!(t.to_i64().is_err());
    }

    #[test]
    fn owned_f32_vectors_are_viewed_without_copies() {
        let t = Tensor::from_f32_vec(vec![3], vec![1.0, 2.0, 3.0]).unwrap();
        let view = t.f32_view().unwrap();
        assert!(matches!(view, std::borrow::Cow::Borrowed(_)));
        assert_eq!(&*view, &[1.0, 2.0, 3.0]);
        assert_eq!(t.to_f32().unwrap(), vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn raw_length_is_checked() {
        assert!(Tensor::from_raw(DType::F32, vec![3], Bytes::from(vec![0u8; 8])).is_err());
        assert!(Tensor::from_raw(DType::I4, vec![3], Bytes::from(vec![0u8; 2])).is_ok());
        assert!(Tensor::from_raw(DType::F32, vec![usize::MAX, 4], Bytes::new()).is_err());
    }
}
