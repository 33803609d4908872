//! Decoded arrays: the evaluator's working form of a [`Tensor`].

use cc_ir::{DType, Error, Result, Tensor};

/// Elements of a decoded array, one variant per supported element type.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// f32 elements.
    F32(Vec<f32>),
    /// f64 elements.
    F64(Vec<f64>),
    /// i64 elements.
    I64(Vec<i64>),
    /// i32 elements.
    I32(Vec<i32>),
    /// bool elements.
    Bool(Vec<bool>),
    /// u8 elements.
    U8(Vec<u8>),
    /// i8 elements.
    I8(Vec<i8>),
}

/// Applies `$body` to the vector inside any [`Data`] variant, rebuilding the same variant.
macro_rules! map_data {
    ($d:expr, $v:ident => $body:expr) => {
        match $d {
            Data::F32($v) => Data::F32($body),
            Data::F64($v) => Data::F64($body),
            Data::I64($v) => Data::I64($body),
            Data::I32($v) => Data::I32($body),
            Data::Bool($v) => Data::Bool($body),
            Data::U8($v) => Data::U8($body),
            Data::I8($v) => Data::I8($body),
        }
    };
}

impl Data {
    /// Element type.
    pub fn dtype(&self) -> DType {
        match self {
            Data::F32(_) => DType::F32,
            Data::F64(_) => DType::F64,
            Data::I64(_) => DType::I64,
            Data::I32(_) => DType::I32,
            Data::Bool(_) => DType::Bool,
            Data::U8(_) => DType::U8,
            Data::I8(_) => DType::I8,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::F64(v) => v.len(),
            Data::I64(v) => v.len(),
            Data::I32(v) => v.len(),
            Data::Bool(v) => v.len(),
            Data::U8(v) => v.len(),
            Data::I8(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements at `idx`, in that order (indices must be in range: the callers
    /// compute them from validated shapes).
    pub fn take(&self, idx: &[usize]) -> Data {
        map_data!(self, v => idx.iter().map(|&i| v[i]).collect())
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
            (Data::I64(a), Data::I64(b)) => a.extend_from_slice(b),
            (Data::I32(a), Data::I32(b)) => a.extend_from_slice(b),
            (Data::Bool(a), Data::Bool(b)) => a.extend_from_slice(b),
            (Data::U8(a), Data::U8(b)) => a.extend_from_slice(b),
            (Data::I8(a), Data::I8(b)) => a.extend_from_slice(b),
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

    /// Integer elements widened to i64 (None for float types).
    pub fn as_i64(&self) -> Option<Vec<i64>> {
        Some(match self {
            Data::I64(v) => v.clone(),
            Data::I32(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Data::U8(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Data::I8(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Data::Bool(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Data::F32(_) | Data::F64(_) => return None,
        })
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
        let data = match t.dtype() {
            DType::F32 => Data::F32(t.to_f32()?),
            DType::F64 => Data::F64(t.to_f64()?),
            DType::I64 => Data::I64(t.to_i64()?),
            DType::I32 => Data::I32(t.to_i32()?),
            DType::Bool => Data::Bool(t.to_bool()?),
            DType::U8 => Data::U8(t.to_u8()?),
            DType::I8 => Data::I8(t.to_i8()?),
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
        let h = Tensor::from_raw(DType::F16, vec![1], vec![0u8, 0].into()).unwrap();
        assert!(Arr::from_tensor(&h).unwrap().is_none());
    }

    #[test]
    fn strides_and_axes() {
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(norm_axis(-1, 3, "t").unwrap(), 2);
        assert!(norm_axis(3, 3, "t").is_err());
        assert!(norm_axis(-4, 3, "t").is_err());
    }
}
