//! Decoded arrays: the evaluator's working form of a [`Tensor`].

use cc_ir::tensor::TensorData;
use cc_ir::{DType, Error, Result, Tensor};
use half::f16;

/// Elements of a decoded array, one variant per supported element type.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// f32 elements.
    F32(Vec<f32>),
    /// f64 elements.
    F64(Vec<f64>),
    /// f16 elements (arithmetic computes in f32 and rounds once).
    F16(Vec<f16>),
    /// i64 elements.
    I64(Vec<i64>),
    /// i32 elements.
    I32(Vec<i32>),
    /// i16 elements.
    I16(Vec<i16>),
    /// i8 elements.
    I8(Vec<i8>),
    /// u64 elements.
    U64(Vec<u64>),
    /// u32 elements.
    U32(Vec<u32>),
    /// u16 elements.
    U16(Vec<u16>),
    /// u8 elements.
    U8(Vec<u8>),
    /// bool elements.
    Bool(Vec<bool>),
    /// Byte strings (only moved, compared for equality and cast).
    Str(Vec<Vec<u8>>),
}

/// Applies `$body` to the vector inside any [`Data`] variant, rebuilding the same variant.
macro_rules! map_data {
    ($d:expr, $v:ident => $body:expr) => {
        match $d {
            Data::F32($v) => Data::F32($body),
            Data::F64($v) => Data::F64($body),
            Data::F16($v) => Data::F16($body),
            Data::I64($v) => Data::I64($body),
            Data::I32($v) => Data::I32($body),
            Data::I16($v) => Data::I16($body),
            Data::I8($v) => Data::I8($body),
            Data::U64($v) => Data::U64($body),
            Data::U32($v) => Data::U32($body),
            Data::U16($v) => Data::U16($body),
            Data::U8($v) => Data::U8($body),
            Data::Bool($v) => Data::Bool($body),
            Data::Str($v) => Data::Str($body),
        }
    };
}

/// Decodes little-endian elements of `$n` bytes each.
macro_rules! decode_le {
    ($raw:expr, $t:ty, $n:expr) => {
        $raw.chunks_exact($n)
            .map(|c| {
                let mut a = [0u8; $n];
                a.copy_from_slice(c);
                <$t>::from_le_bytes(a)
            })
            .collect::<Vec<$t>>()
    };
}

/// Encodes elements little-endian into a tensor of `$dt`.
macro_rules! encode_le {
    ($dt:expr, $shape:expr, $v:expr) => {{
        let bytes: Vec<u8> = $v.iter().flat_map(|x| x.to_le_bytes()).collect();
        Tensor::from_raw($dt, $shape, bytes.into())
    }};
}

impl Data {
    /// Element type.
    pub fn dtype(&self) -> DType {
        match self {
            Data::F32(_) => DType::F32,
            Data::F64(_) => DType::F64,
            Data::F16(_) => DType::F16,
            Data::I64(_) => DType::I64,
            Data::I32(_) => DType::I32,
            Data::I16(_) => DType::I16,
            Data::I8(_) => DType::I8,
            Data::U64(_) => DType::U64,
            Data::U32(_) => DType::U32,
            Data::U16(_) => DType::U16,
            Data::U8(_) => DType::U8,
            Data::Bool(_) => DType::Bool,
            Data::Str(_) => DType::String,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::F64(v) => v.len(),
            Data::F16(v) => v.len(),
            Data::I64(v) => v.len(),
            Data::I32(v) => v.len(),
            Data::I16(v) => v.len(),
            Data::I8(v) => v.len(),
            Data::U64(v) => v.len(),
            Data::U32(v) => v.len(),
            Data::U16(v) => v.len(),
            Data::U8(v) => v.len(),
            Data::Bool(v) => v.len(),
            Data::Str(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements at `idx`, in that order (indices must be in range: the callers
    /// compute them from validated shapes).
    pub fn take(&self, idx: &[usize]) -> Data {
        map_data!(self, v => idx.iter().map(|&i| Clone::clone(&v[i])).collect())
    }

    /// An empty vector of the same type.
    pub fn empty_like(&self) -> Data {
        map_data!(self, _v => Vec::new())
    }

    /// Appends the elements of `other` (same type) at the end.
    pub fn extend(&mut self, other: &Data) -> Result<()> {
        match (self, other) {
            (Data::F32(a), Data::F32(b)) => a.extend_from_slice(b),
            (Data::F64(a), Data::F64(b)) => a.extend_from_slice(b),
            (Data::F16(a), Data::F16(b)) => a.extend_from_slice(b),
            (Data::I64(a), Data::I64(b)) => a.extend_from_slice(b),
            (Data::I32(a), Data::I32(b)) => a.extend_from_slice(b),
            (Data::I16(a), Data::I16(b)) => a.extend_from_slice(b),
            (Data::I8(a), Data::I8(b)) => a.extend_from_slice(b),
            (Data::U64(a), Data::U64(b)) => a.extend_from_slice(b),
            (Data::U32(a), Data::U32(b)) => a.extend_from_slice(b),
            (Data::U16(a), Data::U16(b)) => a.extend_from_slice(b),
            (Data::U8(a), Data::U8(b)) => a.extend_from_slice(b),
            (Data::Bool(a), Data::Bool(b)) => a.extend_from_slice(b),
            (Data::Str(a), Data::Str(b)) => a.extend_from_slice(b),
            (a, b) => {
                return Err(Error::invalid(format!(
                    "cannot join {} and {} elements",
                    a.dtype(),
                    b.dtype()
                )))
            }
        }
        Ok(())
    }

    /// Integer elements widened to i128, which holds every integer type exactly (None
    /// for float and string types).
    pub fn as_i128(&self) -> Option<Vec<i128>> {
        fn w<T: Copy + Into<i128>>(v: &[T]) -> Vec<i128> {
            v.iter().map(|&x| x.into()).collect()
        }
        Some(match self {
            Data::I64(v) => w(v),
            Data::I32(v) => w(v),
            Data::I16(v) => w(v),
            Data::I8(v) => w(v),
            Data::U64(v) => w(v),
            Data::U32(v) => w(v),
            Data::U16(v) => w(v),
            Data::U8(v) => w(v),
            Data::Bool(v) => v.iter().map(|&x| i128::from(x)).collect(),
            Data::F32(_) | Data::F64(_) | Data::F16(_) | Data::Str(_) => return None,
        })
    }

    /// Integer elements as i64 (None for float and string types, and for u64 values
    /// above `i64::MAX`).
    pub fn as_i64(&self) -> Option<Vec<i64>> {
        match self {
            Data::I64(v) => Some(v.clone()),
            other => other
                .as_i128()?
                .into_iter()
                .map(|x| i64::try_from(x).ok())
                .collect(),
        }
    }

    /// Float elements widened to f64 (None for other types).
    pub fn as_f64(&self) -> Option<Vec<f64>> {
        Some(match self {
            Data::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Data::F64(v) => v.clone(),
            Data::F16(v) => v.iter().map(|&x| f64::from(x)).collect(),
            _ => return None,
        })
    }

    /// True for the float element types.
    pub fn is_float(&self) -> bool {
        matches!(self, Data::F32(_) | Data::F64(_) | Data::F16(_))
    }
}

/// A decoded tensor: shape and elements.
#[derive(Clone, Debug, PartialEq)]
pub struct Arr {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Elements, row-major.
    pub data: Data,
}

impl Arr {
    /// An array; checks that the element count matches the shape.
    pub fn new(shape: Vec<usize>, data: Data) -> Result<Arr> {
        let n = cc_ir::tensor::shape_count(&shape)?;
        if n != data.len() {
            return Err(Error::invalid(format!(
                "array {shape:?} needs {n} elements but has {}",
                data.len()
            )));
        }
        Ok(Arr { shape, data })
    }

    /// Decodes a tensor; `None` for element types the evaluator does not handle.
    pub fn from_tensor(t: &Tensor) -> Result<Option<Arr>> {
        let data = match (t.dtype(), t.data()) {
            (DType::String, TensorData::Strings(s)) => Data::Str(s.to_vec()),
            (DType::F32, _) => Data::F32(t.to_f32()?),
            (DType::F64, _) => Data::F64(t.to_f64()?),
            (DType::I64, _) => Data::I64(t.to_i64()?),
            (DType::I32, _) => Data::I32(t.to_i32()?),
            (DType::Bool, _) => Data::Bool(t.to_bool()?),
            (DType::U8, _) => Data::U8(t.to_u8()?),
            (DType::I8, _) => Data::I8(t.to_i8()?),
            (DType::F16, TensorData::Raw(b)) => Data::F16(decode_le!(b, f16, 2)),
            (DType::I16, TensorData::Raw(b)) => Data::I16(decode_le!(b, i16, 2)),
            (DType::U16, TensorData::Raw(b)) => Data::U16(decode_le!(b, u16, 2)),
            (DType::U32, TensorData::Raw(b)) => Data::U32(decode_le!(b, u32, 4)),
            (DType::U64, TensorData::Raw(b)) => Data::U64(decode_le!(b, u64, 8)),
            _ => return Ok(None),
        };
        Ok(Some(Arr {
            shape: t.shape().to_vec(),
            data,
        }))
    }

    /// Encodes back into a tensor.
    pub fn into_tensor(self) -> Result<Tensor> {
        let s = self.shape;
        match self.data {
            Data::F32(v) => Tensor::from_f32(s, v),
            Data::F64(v) => Tensor::from_f64(s, v),
            Data::I64(v) => Tensor::from_i64(s, v),
            Data::I32(v) => Tensor::from_i32(s, v),
            Data::Bool(v) => Tensor::from_bool(s, v),
            Data::U8(v) => Tensor::from_u8(s, v),
            Data::I8(v) => Tensor::from_i8(s, v),
            Data::F16(v) => encode_le!(DType::F16, s, v),
            Data::I16(v) => encode_le!(DType::I16, s, v),
            Data::U16(v) => encode_le!(DType::U16, s, v),
            Data::U32(v) => encode_le!(DType::U32, s, v),
            Data::U64(v) => encode_le!(DType::U64, s, v),
            Data::Str(v) => Tensor::from_strings(s, v),
        }
    }

    /// A 1-D i64 array.
    pub fn i64_vec(v: Vec<i64>) -> Arr {
        Arr {
            shape: vec![v.len()],
            data: Data::I64(v),
        }
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// Rank.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Integer elements widened to i64; an error naming `what` for float arrays.
    pub fn ints(&self, what: &str) -> Result<Vec<i64>> {
        self.data
            .as_i64()
            .ok_or_else(|| Error::invalid(format!("{what} must be integers, not {}", self.dtype())))
    }

    /// The single element of a one-element integer array.
    pub fn scalar_int(&self, what: &str) -> Result<i64> {
        match self.ints(what)?.as_slice() {
            [x] => Ok(*x),
            other => Err(Error::invalid(format!(
                "{what} must hold one value, not {}",
                other.len()
            ))),
        }
    }
}

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Resolves a possibly negative axis against `rank`; an error naming `what` if out of range.
pub fn norm_axis(axis: i64, rank: usize, what: &str) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(Error::invalid(format!(
            "{what}: axis {axis} out of range for rank {rank}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_round_trip_and_take() {
        let t = Tensor::from_i64(vec![2, 2], vec![1, 2, 3, 4]).unwrap();
        let a = Arr::from_tensor(&t).unwrap().unwrap();
        assert_eq!(a.data.take(&[3, 0]), Data::I64(vec![4, 1]));
        assert_eq!(a.clone().into_tensor().unwrap(), t);
        let b = Tensor::from_raw(DType::BF16, vec![1], vec![0u8, 0].into()).unwrap();
        assert!(Arr::from_tensor(&b).unwrap().is_none());
    }

    #[test]
    fn narrow_and_unsigned_types_round_trip() {
        // f16 1.5 = 0x3E00, -2.0 = 0xC000.
        let h = Tensor::from_raw(DType::F16, vec![2], vec![0x00, 0x3E, 0x00, 0xC0].into()).unwrap();
        let a = Arr::from_tensor(&h).unwrap().unwrap();
        assert_eq!(a.data.as_f64(), Some(vec![1.5, -2.0]));
        assert_eq!(a.into_tensor().unwrap(), h);
        let u =
            Tensor::from_raw(DType::U64, vec![1], u64::MAX.to_le_bytes().to_vec().into()).unwrap();
        let a = Arr::from_tensor(&u).unwrap().unwrap();
        assert_eq!(a.data, Data::U64(vec![u64::MAX]));
        assert_eq!(a.data.as_i128(), Some(vec![i128::from(u64::MAX)]));
        assert!(a.data.as_i64().is_none());
        assert_eq!(a.into_tensor().unwrap(), u);
        let i =
            Tensor::from_raw(DType::I16, vec![1], (-5i16).to_le_bytes().to_vec().into()).unwrap();
        let a = Arr::from_tensor(&i).unwrap().unwrap();
        assert_eq!(a.data.as_i64(), Some(vec![-5]));
        let s = Tensor::from_strings(vec![2], vec![b"a".to_vec(), b"bc".to_vec()]).unwrap();
        let a = Arr::from_tensor(&s).unwrap().unwrap();
        assert_eq!(a.data.take(&[1, 1, 0]).len(), 3);
        assert_eq!(a.into_tensor().unwrap(), s);
    }

    #[test]
    fn strides_and_axes() {
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(norm_axis(-1, 3, "t").unwrap(), 2);
        assert!(norm_axis(3, 3, "t").is_err());
        assert!(norm_axis(-4, 3, "t").is_err());
    }
}
