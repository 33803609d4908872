//! Ops that compute or change shapes without moving elements: Shape, Size, Reshape,
//! Flatten, Squeeze, Unsqueeze, plus the generators Expand, ConstantOfShape and Range.

use super::array::{norm_axis, Arr, Data};
use super::broadcast::{broadcast_index, broadcast_shapes};
use super::MAX_ELEMENTS;
use cc_ir::{Error, Result, Tensor};

/// A shape as i64 dims (for Shape's output).
pub fn shape_of(dims: &[i64], start: Option<i64>, end: Option<i64>) -> Arr {
    let r = dims.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let s = clamp(start.unwrap_or(0));
    let e = clamp(end.unwrap_or(r));
    Arr::i64_vec(dims.get(s..e.max(s)).unwrap_or_default().to_vec())
}

/// Sizes from a shape operand: non-negative integers.
fn dims_from(a: &Arr, what: &str) -> Result<Vec<usize>> {
    a.ints(what)?
        .into_iter()
        .map(|d| {
            usize::try_from(d).map_err(|_| Error::invalid(format!("{what}: negative size {d}")))
        })
        .collect()
}

/// Reshape with ONNX rules: 0 copies the input dim (unless `allowzero`), one -1 is inferred.
pub fn reshape(x: &Arr, shape: &Arr, allowzero: bool) -> Result<Arr> {
    let spec = shape.ints("Reshape shape")?;
    let out = reshape_dims(&x.shape, x.data.len(), &spec, allowzero)?;
    Arr::new(out, x.data.clone())
}

/// The output shape of Reshape for an input of shape `in_shape` holding `n` elements:
/// 0 in `spec` copies the input dim (unless `allowzero`), one -1 is inferred.
pub(crate) fn reshape_dims(
    in_shape: &[usize],
    n: usize,
    spec: &[i64],
    allowzero: bool,
) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(*in_shape.get(i).ok_or_else(|| {
                Error::invalid(format!("Reshape: 0 at position {i} beyond input rank"))
            })?),
            d if d >= 0 => out.push(d as usize),
            d => return Err(Error::invalid(format!("Reshape: bad size {d}"))),
        }
    }
    if let Some(i) = infer {
        let rest: usize = cc_ir::tensor::shape_count(&out)?;
        if rest == 0 || !n.is_multiple_of(rest) {
            return Err(Error::invalid(format!(
                "Reshape: cannot infer -1 for {} elements into {spec:?}",
                n
            )));
        }
        out[i] = n / rest;
    }
    Ok(out)
}

/// Flatten to 2-D at `axis` (negative allowed, range [-r, r]).
pub fn flatten(x: &Arr, axis: i64) -> Result<Arr> {
    Arr::new(flatten_dims(&x.shape, axis)?, x.data.clone())
}

/// The 2-D shape Flatten makes of `shape` at `axis` (negative allowed, range [-r, r]).
pub(crate) fn flatten_dims(shape: &[usize], axis: i64) -> Result<Vec<usize>> {
    let r = shape.len() as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if !(0..=r).contains(&a) {
        return Err(Error::invalid(format!(
            "Flatten: axis {axis} out of range for rank {r}"
        )));
    }
    let (lo, hi) = shape.split_at(a as usize);
    Ok(vec![lo.iter().product(), hi.iter().product()])
}

/// Squeeze the given axes (all size-1 axes when `None`).
pub fn squeeze(x: &Arr, axes: Option<&[i64]>) -> Result<Arr> {
    let drop: Vec<usize> = match axes {
        None => (0..x.rank()).filter(|&i| x.shape[i] == 1).collect(),
        Some(a) => a
            .iter()
            .map(|&v| norm_axis(v, x.rank(), "Squeeze"))
            .collect::<Result<_>>()?,
    };
    for &d in &drop {
        if x.shape[d] != 1 {
            return Err(Error::invalid(format!(
                "Squeeze: axis {d} of shape {:?} is not 1",
                x.shape
            )));
        }
    }
    let shape = (0..x.rank())
        .filter(|i| !drop.contains(i))
        .map(|i| x.shape[i])
        .collect();
    Arr::new(shape, x.data.clone())
}

/// Insert size-1 axes at `axes` (positions in the output).
pub fn unsqueeze(x: &Arr, axes: &[i64]) -> Result<Arr> {
    let r = x.rank() + axes.len();
    let mut pos = axes
        .iter()
        .map(|&a| norm_axis(a, r, "Unsqueeze"))
        .collect::<Result<Vec<_>>>()?;
    pos.sort_unstable();
    if pos.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::invalid(format!("Unsqueeze: repeated axes {axes:?}")));
    }
    let mut src = x.shape.iter();
    let shape = (0..r)
        .map(|i| {
            if pos.contains(&i) {
                1
            } else {
                src.next().copied().unwrap_or(1)
            }
        })
        .collect();
    Arr::new(shape, x.data.clone())
}

/// The element count of `shape`, or `None` above [`MAX_ELEMENTS`].
fn check_size(shape: &[usize]) -> Result<Option<usize>> {
    let n = cc_ir::tensor::shape_count(shape)?;
    Ok((n <= MAX_ELEMENTS).then_some(n))
}

/// Expand: bidirectional broadcast of `x` to `shape`; `Ok(None)` above [`MAX_ELEMENTS`].
pub fn expand(x: &Arr, shape: &Arr) -> Result<Option<Arr>> {
    let dims = dims_from(shape, "Expand shape")?;
    let out = broadcast_shapes(&[&x.shape, &dims])?;
    if check_size(&out)?.is_none() {
        return Ok(None);
    }
    let idx = broadcast_index(&x.shape, &out);
    Arr::new(out, x.data.take(&idx)).map(Some)
}

/// ConstantOfShape: `value` (default f32 0) repeated; `Ok(None)` for unsupported types
/// or above [`MAX_ELEMENTS`].
pub fn constant_of_shape(shape: &Arr, value: Option<&Tensor>) -> Result<Option<Arr>> {
    let dims = dims_from(shape, "ConstantOfShape shape")?;
    let Some(n) = check_size(&dims)? else {
        return Ok(None);
    };
    let fill = match value {
        None => Arr::new(vec![1], Data::F32(vec![0.0]))?,
        Some(t) => match Arr::from_tensor(t)? {
            Some(a) => a,
            None => return Ok(None),
        },
    };
    if fill.data.len() != 1 {
        return Err(Error::invalid(
            "ConstantOfShape: value must hold one element",
        ));
    }
    Arr::new(dims, fill.data.take(&vec![0; n])).map(Some)
}

/// Range(start, limit, delta): `start + i*delta` for i in 0..max(ceil((limit-start)/delta), 0).
pub fn range(start: &Arr, limit: &Arr, delta: &Arr) -> Result<Option<Arr>> {
    macro_rules! go {
        ($s:expr, $l:expr, $d:expr, $var:ident, $t:ty) => {{
            let (s, l, d) = (single($s)?, single($l)?, single($d)?);
            let n = ((l as f64 - s as f64) / d as f64).ceil();
            if !(n.is_finite()) || d == (0 as $t) {
                return Err(Error::invalid("Range: zero or non-finite delta"));
            }
            let n = n.max(0.0) as usize;
            if n > MAX_ELEMENTS {
                return Ok(None);
            }
            let v: Vec<$t> = (0..n).map(|i| s + (i as $t) * d).collect();
            Data::$var(v)
        }};
    }
    let data = match (&start.data, &limit.data, &delta.data) {
        (Data::F32(s), Data::F32(l), Data::F32(d)) => go!(s, l, d, F32, f32),
        (Data::F64(s), Data::F64(l), Data::F64(d)) => go!(s, l, d, F64, f64),
        (Data::I64(s), Data::I64(l), Data::I64(d)) => go!(s, l, d, I64, i64),
        (Data::I32(s), Data::I32(l), Data::I32(d)) => go!(s, l, d, I32, i32),
        (Data::I16(s), Data::I16(l), Data::I16(d)) => go!(s, l, d, I16, i16),
        _ => return Ok(None),
    };
    let n = data.len();
    Arr::new(vec![n], data).map(Some)
}

fn single<T: Copy>(v: &[T]) -> Result<T> {
    match v {
        [x] => Ok(*x),
        _ => Err(Error::invalid("Range: operands must be scalars")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(v: Vec<i64>) -> Arr {
        Arr::i64_vec(v)
    }

    #[test]
    fn shape_slices() {
        let s = shape_of(&[2, 3, 4], Some(-2), None);
        assert_eq!(s.data, Data::I64(vec![3, 4]));
        assert_eq!(shape_of(&[2, 3], Some(5), None).shape, vec![0]);
    }

    #[test]
    fn reshape_zero_and_minus_one() {
        let x = Arr::new(
            vec![2, 3, 4],
            Data::F32((0..24).map(|v| v as f32).collect()),
        )
        .unwrap();
        assert_eq!(
            reshape(&x, &iv(vec![0, -1]), false).unwrap().shape,
            vec![2, 12]
        );
        assert_eq!(
            reshape(&x, &iv(vec![-1, 0, 2]), false).unwrap().shape,
            vec![4, 3, 2]
        );
        assert!(reshape(&x, &iv(vec![0, 5]), false).is_err());
        assert!(reshape(&x, &iv(vec![-1, -1]), false).is_err());
        let e = Arr::new(vec![0, 3], Data::F32(vec![])).unwrap();
        assert_eq!(
            reshape(&e, &iv(vec![0, 3]), true).unwrap().shape,
            vec![0, 3]
        );
    }

    #[test]
    fn flatten_squeeze_unsqueeze() {
        let x = Arr::new(vec![2, 1, 3], Data::I64(vec![0; 6])).unwrap();
        assert_eq!(flatten(&x, -1).unwrap().shape, vec![2, 3]);
        assert_eq!(flatten(&x, 0).unwrap().shape, vec![1, 6]);
        assert_eq!(squeeze(&x, None).unwrap().shape, vec![2, 3]);
        assert_eq!(squeeze(&x, Some(&[-2])).unwrap().shape, vec![2, 3]);
        assert!(squeeze(&x, Some(&[0])).is_err());
        assert_eq!(unsqueeze(&x, &[0, -1]).unwrap().shape, vec![1, 2, 1, 3, 1]);
    }

    #[test]
    fn generators() {
        let x = Arr::new(vec![3, 1], Data::I64(vec![1, 2, 3])).unwrap();
        let e = expand(&x, &iv(vec![2, 1, 2])).unwrap().unwrap();
        assert_eq!(e.shape, vec![2, 3, 2]);
        assert_eq!(e.data, Data::I64(vec![1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3]));
        let c = constant_of_shape(
            &iv(vec![2, 2]),
            Some(&Tensor::from_i64(vec![1], vec![7]).unwrap()),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.data, Data::I64(vec![7; 4]));
        assert!(constant_of_shape(&iv(vec![1 << 20, 1 << 20]), None)
            .unwrap()
            .is_none());
        let r = range(&iv(vec![10]), &iv(vec![1]), &iv(vec![-3]))
            .unwrap()
            .unwrap();
        assert_eq!(r.data, Data::I64(vec![10, 7, 4]));
        let f = |v: f32| Arr::new(vec![], Data::F32(vec![v])).unwrap();
        let r = range(&f(0.0), &f(1.0), &f(0.25)).unwrap().unwrap();
        assert_eq!(r.data, Data::F32(vec![0.0, 0.25, 0.5, 0.75]));
    }
}
