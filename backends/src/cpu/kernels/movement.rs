//! Data movement on any fixed-width element type, done on raw bytes: Unsqueeze and
//! Squeeze without copying, Expand and Concat with row copies.

use cc_ir::{DType, Error, Result, Tensor};

/// Bytes per element, for fixed-width types of at least one byte (not sub-byte or
/// string types).
fn elem_size(d: DType) -> Option<usize> {
    let one = d.raw_len(1)?;
    (one > 0 && d.raw_len(2) == Some(2 * one) && !matches!(d, DType::String)).then_some(one)
}

/// Normalizes `axis` against `rank`.
fn axis_in(axis: i64, rank: usize, what: &str) -> Result<usize> {
    super::norm_axis(axis, rank, what)
}

/// Unsqueeze as a reshape (the data is shared, not copied).
pub fn unsqueeze(x: &Tensor, axes: &[i64]) -> Result<Tensor> {
    let r = x.shape().len() + axes.len();
    let mut pos = axes
        .iter()
        .map(|&a| axis_in(a, r, "Unsqueeze"))
        .collect::<Result<Vec<_>>>()?;
    pos.sort_unstable();
    if pos.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::invalid(format!("Unsqueeze: repeated axes {axes:?}")));
    }
    let mut src = x.shape().iter();
    let shape = (0..r)
        .map(|i| {
            if pos.binary_search(&i).is_ok() {
                1
            } else {
                src.next().copied().unwrap_or(1)
            }
        })
        .collect();
    x.reshaped(shape)
}

/// Squeeze as a reshape (the data is shared, not copied).
pub fn squeeze(x: &Tensor, axes: Option<&[i64]>) -> Result<Tensor> {
    let xs = x.shape();
    let drop: Vec<usize> = match axes {
        None => (0..xs.len()).filter(|&i| xs[i] == 1).collect(),
        Some(a) => a
            .iter()
            .map(|&v| axis_in(v, xs.len(), "Squeeze"))
            .collect::<Result<_>>()?,
    };
    for &d in &drop {
        if xs[d] != 1 {
            return Err(Error::invalid(format!(
                "Squeeze: axis {d} of shape {xs:?} is not 1"
            )));
        }
    }
    let shape = (0..xs.len())
        .filter(|i| !drop.contains(i))
        .map(|i| xs[i])
        .collect();
    x.reshaped(shape)
}

/// Expand (bidirectional broadcast to `shape`); `Ok(None)` for element types without a
/// fixed byte width.
pub fn expand(x: &Tensor, shape: &Tensor) -> Result<Option<Tensor>> {
    let Some(es) = elem_size(x.dtype()) else {
        return Ok(None);
    };
    let target: Vec<usize> = shape
        .to_i64_lossless()?
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::invalid("Expand: negative dimension in the shape"))?;
    let out = crate::cpu::eval::broadcast_shapes(&[x.shape(), &target])
        .map_err(|e| Error::invalid(format!("Expand: {e}")))?;
    let total = cc_ir::tensor::shape_count(&out)?;
    let src = x.raw()?;
    if src.len() != x.len() * es {
        return Err(Error::invalid("Expand: data does not match the shape"));
    }
    if total == x.len() {
        return x.reshaped(out).map(Some);
    }
    // Source strides (elements) per output dim, 0 where broadcast.
    let pad = out.len() - x.shape().len();
    let mut st = vec![0usize; out.len()];
    let mut acc = 1;
    for d in (0..x.shape().len()).rev() {
        st[d + pad] = if x.shape()[d] == 1 { 0 } else { acc };
        acc *= x.shape()[d];
    }
    // The trailing run of dims copied whole from the source (contiguous and unbroadcast).
    let mut inner = 1;
    let mut k = out.len();
    while k > 0 && st[k - 1] == inner && out[k - 1] > 0 {
        inner *= out[k - 1];
        k -= 1;
    }
    let mut buf = vec![0u8; total * es];
    if total == 0 {
        return Tensor::from_raw(x.dtype(), out, buf.into()).map(Some);
    }
    let row = inner * es;
    for (ri, dst) in buf.chunks_mut(row).enumerate() {
        let mut rem = ri;
        let mut off = 0;
        for d in (0..k).rev() {
            off += (rem % out[d]) * st[d];
            rem /= out[d];
        }
        let s = src
            .get(off * es..off * es + row)
            .ok_or_else(|| Error::invalid("Expand: source index out of range"))?;
        dst.copy_from_slice(s);
    }
    Tensor::from_raw(x.dtype(), out, aligned(buf)).map(Some)
}

/// Concat along `axis`; `Ok(None)` when element types differ or have no fixed width.
pub fn concat(xs: &[&Tensor], axis: i64) -> Result<Option<Tensor>> {
    let Some(first) = xs.first() else {
        return Ok(None);
    };
    let dt = first.dtype();
    let Some(es) = elem_size(dt) else {
        return Ok(None);
    };
    if xs.iter().any(|t| t.dtype() != dt) {
        return Ok(None);
    }
    let r = first.shape().len();
    let a = axis_in(axis, r.max(1), "Concat")?;
    let mut out = first.shape().to_vec();
    if r == 0 {
        return Ok(None);
    }
    out[a] = 0;
    for t in xs {
        let s = t.shape();
        if s.len() != r || (0..r).any(|d| d != a && s[d] != first.shape()[d]) {
            return Err(Error::invalid(format!(
                "Concat: shape {s:?} does not match {:?} off axis {a}",
                first.shape()
            )));
        }
        out[a] += s[a];
    }
    let outer: usize = out[..a].iter().product();
    let inner: usize = out[a + 1..].iter().product();
    let total = cc_ir::tensor::shape_count(&out)?;
    let mut buf = Vec::with_capacity(total * es);
    let raws: Vec<&[u8]> = xs
        .iter()
        .map(|t| t.raw().map(|b| &b[..]))
        .collect::<Result<_>>()?;
    for (t, raw) in xs.iter().zip(&raws) {
        if raw.len() != t.len() * es {
            return Err(Error::invalid("Concat: data does not match the shape"));
        }
    }
    for o in 0..outer {
        for (t, raw) in xs.iter().zip(&raws) {
            let n = t.shape()[a] * inner * es;
            buf.extend_from_slice(&raw[o * n..(o + 1) * n]);
        }
    }
    Tensor::from_raw(dt, out, aligned(buf)).map(Some)
}

/// Slice with positive steps on fixed-width element types; `Ok(None)` for negative
/// steps, repeated axes and other element types (left to the evaluator).
pub fn slice(x: &Tensor, inputs: &[Option<&Tensor>]) -> Result<Option<Tensor>> {
    let Some(es) = elem_size(x.dtype()) else {
        return Ok(None);
    };
    let ints = |i: usize| -> Result<Option<Vec<i64>>> {
        inputs
            .get(i)
            .copied()
            .flatten()
            .map(|t| t.to_i64_lossless())
            .transpose()
    };
    let (Some(starts), Some(ends)) = (ints(1)?, ints(2)?) else {
        return Ok(None);
    };
    let xs = x.shape();
    let r = xs.len();
    let axes: Vec<usize> = match ints(3)? {
        Some(a) => a
            .iter()
            .map(|&v| axis_in(v, r, "Slice"))
            .collect::<Result<_>>()?,
        None => (0..starts.len()).collect(),
    };
    let steps = ints(4)?.unwrap_or_else(|| vec![1; starts.len()]);
    if axes.len() != starts.len() || ends.len() != starts.len() || steps.len() != starts.len() {
        return Err(Error::invalid(
            "Slice: starts, ends, axes and steps differ in length",
        ));
    }
    let mut begin = vec![0usize; r];
    let mut step = vec![1usize; r];
    let mut out = xs.to_vec();
    let mut seen = vec![false; r];
    for (i, &a) in axes.iter().enumerate() {
        if a >= r || seen[a] || steps[i] <= 0 {
            return Ok(None);
        }
        seen[a] = true;
        let d = xs[a] as i64;
        let clampi = |v: i64| {
            let v = if v < 0 { v.saturating_add(d) } else { v };
            v.clamp(0, d)
        };
        let (b, e) = (clampi(starts[i]), clampi(ends[i]));
        let s = steps[i];
        begin[a] = b as usize;
        step[a] = s as usize;
        out[a] = if e > b {
            ((e - b + s - 1) / s) as usize
        } else {
            0
        };
    }
    // Element strides of the source.
    let mut st = vec![1usize; r];
    for d in (0..r.saturating_sub(1)).rev() {
        st[d] = st[d + 1] * xs[d + 1];
    }
    let src = x.raw()?;
    if src.len() != x.len() * es {
        return Err(Error::invalid("Slice: data does not match the shape"));
    }
    let total = cc_ir::tensor::shape_count(&out)?;
    let mut buf = Vec::with_capacity(total * es);
    if total > 0 {
        let base: usize = (0..r).map(|d| begin[d] * st[d]).sum();
        let inner = out.last().copied().unwrap_or(1);
        let inner_step = step.last().copied().unwrap_or(1) * st.last().copied().unwrap_or(1);
        let rows = total / inner;
        for ri in 0..rows {
            let mut rem = ri;
            let mut off = base;
            for d in (0..r.saturating_sub(1)).rev() {
                off += (rem % out[d]) * step[d] * st[d];
                rem /= out[d];
            }
            if inner_step == 1 {
                let row = src
                    .get(off * es..(off + inner) * es)
                    .ok_or_else(|| Error::invalid("Slice: index out of range"))?;
                buf.extend_from_slice(row);
            } else {
                for j in 0..inner {
                    let o = (off + j * inner_step) * es;
                    let e = src
                        .get(o..o + es)
                        .ok_or_else(|| Error::invalid("Slice: index out of range"))?;
                    buf.extend_from_slice(e);
                }
            }
        }
    }
    Tensor::from_raw(x.dtype(), out, aligned(buf)).map(Some)
}

/// Wraps bytes so f32 views of them borrow: a `Vec<u8>` from the global allocator is
/// in practice 8-byte aligned; when it is not, the bytes are copied into one that is.
fn aligned(buf: Vec<u8>) -> bytes::Bytes {
    if (buf.as_ptr() as usize).is_multiple_of(8) {
        return buf.into();
    }
    let mut words = vec![0u64; buf.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..buf.len()].copy_from_slice(&buf);
    bytes::Bytes::from_owner(Words(words, buf.len()))
}

/// u64-aligned storage exposed as its first `.1` bytes.
struct Words(Vec<u64>, usize);

impl AsRef<[u8]> for Words {
    fn as_ref(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.0)[..self.1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::eval::eval_op;
    use crate::cpu::kernels::test_util::t;
    use cc_ir::Op;

    #[test]
    fn expand_and_concat_match_the_evaluator() {
        let i = Tensor::from_i64(vec![2, 1, 3], (0..6).collect()).unwrap();
        let f = t(&[2, 1, 1, 3], 4);
        for (x, shape) in [
            (&i, vec![2, 4, 3]),
            (&i, vec![3, 2, 1, 1]),
            (&f, vec![2, 2, 3, 1]),
            (&f, vec![1]),
        ] {
            let s = Tensor::from_i64(vec![shape.len()], shape).unwrap();
            let got = expand(x, &s).unwrap().unwrap();
            let want = eval_op(&Op::Expand, &[Some(x), Some(&s)])
                .unwrap()
                .unwrap()
                .remove(0);
            assert_eq!(got, want);
        }
        let (a, b) = (t(&[2, 3, 2], 1), t(&[2, 1, 2], 2));
        for (xs, axis) in [(vec![&a, &b], 1i64), (vec![&a, &a], -1), (vec![&b, &b], 0)] {
            let got = concat(&xs, axis).unwrap().unwrap();
            let args: Vec<Option<&Tensor>> = xs.iter().map(|&x| Some(x)).collect();
            let want = eval_op(&Op::Concat { axis }, &args)
                .unwrap()
                .unwrap()
                .remove(0);
            assert_eq!(got, want);
        }
        assert!(concat(&[&a, &b], 2).is_err());
        let x = t(&[3, 4, 5], 7);
        let i64s = |v: &[i64]| Tensor::from_i64(vec![v.len()], v.to_vec()).unwrap();
        for (st, en, ax, sp) in [
            (vec![1], vec![i64::MAX], None, None),
            (
                vec![0, -3],
                vec![2, 100],
                Some(vec![0, 2]),
                Some(vec![1, 2]),
            ),
            (vec![-2, 1], vec![-1, 4], Some(vec![-1, 1]), None),
            (vec![5], vec![1], Some(vec![2]), None),
        ] {
            let (st, en) = (i64s(&st), i64s(&en));
            let ax = ax.map(|a: Vec<i64>| i64s(&a));
            let sp = sp.map(|a: Vec<i64>| i64s(&a));
            let args = [Some(&x), Some(&st), Some(&en), ax.as_ref(), sp.as_ref()];
            let got = slice(&x, &args).unwrap().unwrap();
            let want = eval_op(&Op::Slice, &args).unwrap().unwrap().remove(0);
            assert_eq!(got, want);
        }
        let u = unsqueeze(&a, &[0, -1]).unwrap();
        assert_eq!(u.shape(), &[1, 2, 3, 2, 1]);
        assert_eq!(squeeze(&u, None).unwrap(), a);
        assert!(squeeze(&a, Some(&[0])).is_err());
    }
}
