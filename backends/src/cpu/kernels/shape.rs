//! Data movement without arithmetic: zero-copy Reshape/Flatten (any element type),
//! f32 Transpose and GatherND (fixed-width element types).

use super::f32s;
use crate::cpu::eval::{flatten_dims, reshape_dims};
use crate::cpu::parallel::for_each_chunk;
use bytes::Bytes;
use cc_ir::{DType, Error, Result, Tensor};

/// Reshape sharing the input's data; `Ok(None)` for string tensors.
pub fn reshape(x: &Tensor, shape: &Tensor, allowzero: bool) -> Result<Option<Tensor>> {
    if x.dtype() == DType::String {
        return Ok(None);
    }
    let spec = shape.to_i64_lossless()?;
    let out = reshape_dims(x.shape(), x.len(), &spec, allowzero)?;
    x.reshaped(out).map(Some)
}

/// Flatten to 2-D at `axis` (range [-r, r]), sharing the data.
pub fn flatten(x: &Tensor, axis: i64) -> Result<Tensor> {
    x.reshaped(flatten_dims(x.shape(), axis)?)
}

/// Transpose of an f32 tensor (`perm` default: reversed axes).
pub fn transpose(x: &Tensor, perm: Option<&[i64]>) -> Result<Tensor> {
    let xs = x.shape();
    let r = xs.len();
    let perm: Vec<usize> = match perm {
        Some(p) => p
            .iter()
            .map(|&a| usize::try_from(a).unwrap_or(usize::MAX))
            .collect(),
        None => (0..r).rev().collect(),
    };
    let mut seen = vec![false; r];
    for &p in &perm {
        match seen.get_mut(p) {
            Some(s) if !*s => *s = true,
            _ => {
                return Err(Error::invalid(format!(
                    "Transpose: perm {perm:?} is not a permutation of {r} axes"
                )))
            }
        }
    }
    if perm.len() != r {
        return Err(Error::invalid(format!(
            "Transpose: perm {perm:?} is not a permutation of {r} axes"
        )));
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| xs[p]).collect();
    let xv = f32s(x)?;
    let mut in_strides = vec![1usize; r];
    for d in (0..r.saturating_sub(1)).rev() {
        in_strides[d] = in_strides[d + 1] * xs[d + 1];
    }
    // Source stride of each output axis.
    let st: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let mut out = super::zeros(&out_shape)?;
    if xv.len() != out.len() {
        return Err(Error::invalid("Transpose: data does not match the shape"));
    }
    let inner = out_shape.last().copied().unwrap_or(1);
    if inner == 0 || out.is_empty() {
        return Tensor::from_f32_vec(out_shape, out);
    }
    let inner_st = st.last().copied().unwrap_or(1);
    let rows_per_task = (16384 / inner).max(1);
    for_each_chunk(&mut out, rows_per_task * inner, &|task, chunk| {
        for (ri, row) in chunk.chunks_mut(inner).enumerate() {
            let mut rem = task * rows_per_task + ri;
            let mut off = 0;
            for d in (0..r.saturating_sub(1)).rev() {
                off += (rem % out_shape[d]) * st[d];
                rem /= out_shape[d];
            }
            if inner_st == 1 {
                row.copy_from_slice(&xv[off..off + inner]);
            } else {
                for (j, o) in row.iter_mut().enumerate() {
                    *o = xv[off + j * inner_st];
                }
            }
        }
    });
    Tensor::from_f32_vec(out_shape, out)
}

/// GatherND on any fixed-width element type; `Ok(None)` for sub-byte and string types.
pub fn gather_nd(x: &Tensor, idx: &Tensor, batch_dims: i64) -> Result<Option<Tensor>> {
    let Some(width) = x
        .dtype()
        .raw_len(1)
        .filter(|&w| w > 0 && x.dtype().raw_len(2) == Some(2 * w) && x.dtype() != DType::String)
    else {
        return Ok(None);
    };
    let (xs, is) = (x.shape(), idx.shape());
    let b =
        usize::try_from(batch_dims).map_err(|_| Error::invalid("GatherND: negative batch_dims"))?;
    let q = *is
        .last()
        .ok_or_else(|| Error::invalid("GatherND: indices must have rank >= 1"))?;
    if b >= is.len() || b + q > xs.len() || xs[..b] != is[..b] {
        return Err(Error::invalid(format!(
            "GatherND: indices {is:?} (batch_dims {b}) do not fit data {xs:?}"
        )));
    }
    let indices = idx.to_i64_lossless()?;
    let slice: usize = xs[b + q..].iter().product();
    let batch: usize = xs[..b].iter().product();
    let per_batch_data: usize = xs[b..].iter().product();
    let lookups = indices.len() / q.max(1);
    let per_batch_lookups = lookups.checked_div(batch).unwrap_or(0);
    let raw = x.raw()?;
    let mut out = Vec::with_capacity(lookups * slice * width);
    for l in 0..lookups {
        let bi = l.checked_div(per_batch_lookups).unwrap_or(0);
        let mut off = 0usize;
        for (j, &v) in indices[l * q..][..q].iter().enumerate() {
            let dim = xs[b + j];
            let v = if v < 0 { v + dim as i64 } else { v };
            if !(0..dim as i64).contains(&v) {
                return Err(Error::invalid(format!(
                    "GatherND: index {v} out of range for dimension {dim}"
                )));
            }
            off = off * dim + v as usize;
        }
        let start = (bi * per_batch_data + off * slice) * width;
        let bytes = raw
            .get(start..start + slice * width)
            .ok_or_else(|| Error::invalid("GatherND: data does not match the shape"))?;
        out.extend_from_slice(bytes);
    }
    let mut shape = is[..is.len() - 1].to_vec();
    shape.extend_from_slice(&xs[b + q..]);
    Tensor::from_raw(x.dtype(), shape, Bytes::from(out)).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::eval::eval_op;
    use crate::cpu::kernels::test_util::t;
    use cc_ir::Op;

    #[test]
    fn transpose_matches_the_evaluator() {
        let x = t(&[2, 3, 4, 5], 1);
        for perm in [
            vec![0, 2, 3, 1],
            vec![3, 2, 1, 0],
            vec![1, 0, 2, 3],
            vec![0, 1, 2, 3],
        ] {
            let got = transpose(&x, Some(&perm)).unwrap();
            let op = Op::Transpose { perm: Some(perm) };
            let want = eval_op(&op, &[Some(&x)]).unwrap().unwrap().remove(0);
            assert_eq!(got, want);
        }
        assert!(transpose(&x, Some(&[0, 0, 1, 2])).is_err());
    }

    #[test]
    fn reshape_shares_data_and_gather_nd_picks_slices() {
        let x = t(&[2, 3, 4], 1);
        let shape = Tensor::from_i64(vec![2], vec![0, -1]).unwrap();
        let r = reshape(&x, &shape, false).unwrap().unwrap();
        assert_eq!(r.shape(), &[2, 12]);
        assert_eq!(r.raw().unwrap().as_ptr(), x.raw().unwrap().as_ptr());
        assert!(reshape(&x, &Tensor::from_i64(vec![1], vec![5]).unwrap(), false).is_err());
        let xv = x.to_f32().unwrap();
        // batch_dims 1: for each of the 2 batches pick row idx of its [3, 4] matrix.
        let idx = Tensor::from_i64(vec![2, 1], vec![2, -3]).unwrap();
        let g = gather_nd(&x, &idx, 1).unwrap().unwrap();
        assert_eq!(g.shape(), &[2, 4]);
        let mut want = xv[8..12].to_vec();
        want.extend_from_slice(&xv[12..16]);
        assert_eq!(g.to_f32().unwrap(), want);
        let idx = Tensor::from_i64(vec![1, 3], vec![1, 2, 3]).unwrap();
        let g = gather_nd(&x, &idx, 0).unwrap().unwrap();
        assert_eq!(g.to_f32().unwrap(), vec![xv[23]]);
        let bad = Tensor::from_i64(vec![1, 2], vec![2, 0]).unwrap();
        assert!(gather_nd(&x, &bad, 0).is_err());
    }
}
