//! Sparse initializers: a weight annotated with
//! [`SparseEncoding::SparseInitializer`](crate::sparsity::SparseEncoding) is written as a
//! COO `SparseTensorProto` (its nonzero values plus their int64 flat indices) in
//! `graph.sparse_initializer`; on import a sparse initializer becomes a dense constant
//! again, annotated with its sparsity. The pattern rides along as the values tensor's
//! `metadata_props` entry [`PATTERN_KEY`] (onnxruntime ignores it).

use super::external::ExternalFiles;
use super::tensor_proto::{tensor_from_proto_with, tensor_header};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::sparsity::{parse_pattern, SparseEncoding, Sparsity, SparsityPattern};
use crate::tensor::{Tensor, TensorData};
use bytes::Bytes;
use onnx_protobuf::{SparseTensorProto, StringStringEntryProto};

/// `metadata_props` key of a sparse initializer's values that holds its pattern.
pub const PATTERN_KEY: &str = "cc.sparsity";

/// Bytes per element of the types a sparse initializer is written for (IEEE floats,
/// whose zero is all-zero bytes up to the sign bit).
fn elem_size(d: DType) -> Option<usize> {
    match d {
        DType::F32 => Some(4),
        DType::F64 => Some(8),
        DType::F16 | DType::BF16 => Some(2),
        _ => None,
    }
}

fn is_zero(e: &[u8]) -> bool {
    match e.split_last() {
        Some((last, rest)) => last & 0x7f == 0 && rest.iter().all(|b| *b == 0),
        None => true,
    }
}

/// The COO form of `t` named `name`, or `None` when its element type has no sparse
/// form here (it is then written dense).
pub fn to_sparse(name: &str, t: &Tensor, s: &Sparsity) -> Result<Option<SparseTensorProto>> {
    let (Some(size), TensorData::Raw(raw)) = (elem_size(t.dtype()), t.data()) else {
        return Ok(None);
    };
    let mut values = Vec::new();
    let mut indices: Vec<i64> = Vec::new();
    for (i, e) in raw.chunks_exact(size).enumerate() {
        if !is_zero(e) {
            values.extend_from_slice(e);
            indices.push(
                i64::try_from(i)
                    .map_err(|_| Error::invalid(format!("weight {name}: index {i} too large")))?,
            );
        }
    }
    let n = indices.len();
    let vt = Tensor::from_raw(t.dtype(), vec![n], Bytes::from(values))?;
    let mut vp = tensor_header(name, &vt);
    if let TensorData::Raw(b) = vt.data() {
        vp.raw_data = b.to_vec();
    }
    let mut e = StringStringEntryProto::new();
    e.key = PATTERN_KEY.to_string();
    e.value = s.pattern.to_string();
    vp.metadata_props.push(e);
    let it = Tensor::from_i64(vec![n], indices)?;
    let mut ip = tensor_header("", &it);
    if let TensorData::Raw(b) = it.data() {
        ip.raw_data = b.to_vec();
    }
    let mut sp = SparseTensorProto::new();
    sp.values = Some(vp).into();
    sp.indices = Some(ip).into();
    sp.dims = t.shape().iter().map(|&d| d as i64).collect();
    Ok(Some(sp))
}

/// The dense tensor of a sparse initializer, its name and its sparsity annotation.
/// Indices may be flat (`[nnz]`) or coordinates (`[nnz, rank]`), as ONNX allows.
pub fn from_sparse(
    mut sp: SparseTensorProto,
    ext: &mut ExternalFiles,
) -> Result<(String, Tensor, Sparsity)> {
    let mut vp = sp
        .values
        .take()
        .ok_or_else(|| Error::invalid("sparse initializer without values"))?;
    let name = vp.name.clone();
    let bad = |why: String| Error::invalid(format!("sparse initializer {name:?}: {why}"));
    let pattern_text = vp
        .metadata_props
        .iter()
        .find(|e| e.key == PATTERN_KEY)
        .map(|e| e.value.clone());
    vp.metadata_props.clear();
    let values = tensor_from_proto_with(&mut vp, ext)?;
    let mut ip = sp.indices.take().ok_or_else(|| bad("no indices".into()))?;
    let indices = tensor_from_proto_with(&mut ip, ext)?.to_i64_lossless()?;
    let shape = sp
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad(format!("negative dim {d}"))))
        .collect::<Result<Vec<usize>>>()?;
    let len = crate::tensor::shape_count(&shape)?;
    let size = elem_size(values.dtype())
        .ok_or_else(|| bad(format!("element type {} is not supported", values.dtype())))?;
    let nnz = values.len();
    let flat: Vec<usize> = if indices.len() == nnz {
        indices
            .iter()
            .map(|&i| usize::try_from(i).ok().filter(|&i| i < len))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("an index is out of range".into()))?
    } else if nnz > 0 && indices.len() == nnz * shape.len() {
        indices
            .chunks_exact(shape.len())
            .map(|c| {
                c.iter().zip(&shape).try_fold(0usize, |acc, (&i, &d)| {
                    usize::try_from(i)
                        .ok()
                        .filter(|&i| i < d)
                        .map(|i| acc * d + i)
                })
            })
            .collect::<Option<_>>()
            .ok_or_else(|| bad("a coordinate is out of range".into()))?
    } else {
        return Err(bad(format!(
            "{} indices for {nnz} values of rank {}",
            indices.len(),
            shape.len()
        )));
    };
    let raw = values.raw()?;
    let mut dense = vec![0u8; len * size];
    for (k, &i) in flat.iter().enumerate() {
        if let (Some(dst), Some(src)) = (
            dense.get_mut(i * size..(i + 1) * size),
            raw.get(k * size..(k + 1) * size),
        ) {
            dst.copy_from_slice(src);
        }
    }
    let t = Tensor::from_raw(values.dtype(), shape, Bytes::from(dense))?;
    let zeros = t.len() - flat.len().min(t.len());
    let pattern =
        pattern_text
            .as_deref()
            .and_then(parse_pattern)
            .unwrap_or(SparsityPattern::Unstructured {
                ratio: if len == 0 {
                    0.0
                } else {
                    zeros as f64 / len as f64
                },
            });
    let s = Sparsity::of(&t, pattern, SparseEncoding::SparseInitializer);
    Ok((name, t, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coo_round_trip_keeps_values_and_pattern() {
        let t =
            Tensor::from_f32(vec![2, 4], vec![0.0, 1.5, 0.0, -2.0, 3.0, 0.0, -0.0, 4.0]).unwrap();
        let s = Sparsity::of(
            &t,
            SparsityPattern::NM {
                n: 2,
                m: 4,
                axes: (1, 2),
            },
            SparseEncoding::SparseInitializer,
        );
        let sp = to_sparse("w", &t, &s).unwrap().unwrap();
        assert_eq!(sp.dims, vec![2, 4]);
        assert_eq!(sp.indices.dims, vec![4]);
        let (name, back, s2) = from_sparse(sp, &mut ExternalFiles::new(None)).unwrap();
        assert_eq!(name, "w");
        assert_eq!(
            back.to_f32().unwrap(),
            vec![0.0, 1.5, 0.0, -2.0, 3.0, 0.0, 0.0, 4.0]
        );
        assert_eq!(s2, s);
    }

    #[test]
    fn coordinate_indices_and_bad_indices() {
        let vt = Tensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap();
        let mk = |idx: Vec<i64>, dims: Vec<usize>| {
            let mut sp = SparseTensorProto::new();
            let mut vp = tensor_header("w", &vt);
            vp.raw_data = vt.raw().unwrap().to_vec();
            let it = Tensor::from_i64(dims, idx).unwrap();
            let mut ip = tensor_header("", &it);
            ip.raw_data = it.raw().unwrap().to_vec();
            sp.values = Some(vp).into();
            sp.indices = Some(ip).into();
            sp.dims = vec![2, 3];
            sp
        };
        let mut ext = ExternalFiles::new(None);
        let (_, t, s) = from_sparse(mk(vec![0, 1, 1, 2], vec![2, 2]), &mut ext).unwrap();
        assert_eq!(t.to_f32().unwrap(), vec![0.0, 1.0, 0.0, 0.0, 0.0, 2.0]);
        assert_eq!(s.zeros, 4);
        assert_eq!(
            s.pattern,
            SparsityPattern::Unstructured { ratio: 4.0 / 6.0 }
        );
        let e = from_sparse(mk(vec![0, 6], vec![2]), &mut ext).unwrap_err();
        assert!(e.to_string().contains("\"w\""), "{e}");
    }
}
