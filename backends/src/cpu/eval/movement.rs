//! Ops that move elements: Gather, Concat, Slice, Transpose, Split.

use super::array::{norm_axis, strides, Arr};
use cc_ir::{Error, Result};

/// Flat source indices for the cartesian product of per-axis offset lists (each offset
/// already multiplied by its stride), row-major.
fn product_index(lists: &[Vec<usize>]) -> Vec<usize> {
    let mut idx = vec![0usize];
    for l in lists {
        idx = idx
            .iter()
            .flat_map(|&p| l.iter().map(move |&o| p + o))
            .collect();
    }
    idx
}

/// Gather along `axis` (negative axes and indices allowed).
pub fn gather(x: &Arr, indices: &Arr, axis: i64) -> Result<Arr> {
    let a = norm_axis(axis, x.rank(), "Gather")?;
    let st = strides(&x.shape);
    let dim = x.shape[a] as i64;
    let picks = indices
        .ints("Gather indices")?
        .into_iter()
        .map(|i| {
            let j = if i < 0 { i + dim } else { i };
            if (0..dim).contains(&j) {
                Ok(j as usize * st[a])
            } else {
                Err(Error::invalid(format!(
                    "Gather: index {i} out of range for axis of size {dim}"
                )))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let mut lists: Vec<Vec<usize>> = Vec::new();
    let mut shape = Vec::new();
    let axis_list = |ax: usize| -> Vec<usize> { (0..x.shape[ax]).map(|c| c * st[ax]).collect() };
    for ax in 0..a {
        lists.push(axis_list(ax));
    }
    shape.extend_from_slice(&x.shape[..a]);
    lists.push(picks);
    shape.extend_from_slice(&indices.shape);
    for ax in a + 1..x.rank() {
        lists.push(axis_list(ax));
    }
    shape.extend_from_slice(&x.shape[a + 1..]);
    Arr::new(shape, x.data.take(&product_index(&lists)))
}

/// Concat along `axis` (negative allowed); all inputs of one type and matching shapes.
pub fn concat(xs: &[&Arr], axis: i64) -> Result<Arr> {
    let first = xs
        .first()
        .ok_or_else(|| Error::invalid("Concat of no inputs"))?;
    let a = norm_axis(axis, first.rank(), "Concat")?;
    let mut shape = first.shape.clone();
    shape[a] = 0;
    for x in xs {
        let same_rest = x.rank() == first.rank()
            && (0..x.rank()).all(|i| i == a || x.shape[i] == first.shape[i]);
        if !same_rest {
            return Err(Error::invalid(format!(
                "Concat: shapes {:?} and {:?} differ off axis {a}",
                first.shape, x.shape
            )));
        }
        shape[a] += x.shape[a];
    }
    let outer: usize = first.shape[..a].iter().product();
    let chunks: Vec<usize> = xs.iter().map(|x| x.shape[a..].iter().product()).collect();
    let mut joined = first.data.empty_like();
    let mut bases = Vec::with_capacity(xs.len());
    for x in xs {
        bases.push(joined.len());
        joined.extend(&x.data)?;
    }
    let mut idx = Vec::with_capacity(joined.len());
    for o in 0..outer {
        for (b, &c) in bases.iter().zip(&chunks) {
            idx.extend(b + o * c..b + (o + 1) * c);
        }
    }
    Arr::new(shape, joined.take(&idx))
}

/// Slice with ONNX clamping rules; `axes` default to 0..n, `steps` to 1.
pub fn slice(
    x: &Arr,
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> Result<Arr> {
    let n = starts.len();
    if ends.len() != n || axes.is_some_and(|a| a.len() != n) || steps.is_some_and(|s| s.len() != n)
    {
        return Err(Error::invalid(
            "Slice: starts/ends/axes/steps lengths differ",
        ));
    }
    let st = strides(&x.shape);
    let mut lists: Vec<Vec<usize>> = (0..x.rank())
        .map(|ax| (0..x.shape[ax]).map(|c| c * st[ax]).collect())
        .collect();
    let mut shape = x.shape.clone();
    let mut seen = Vec::new();
    for i in 0..n {
        let ax = norm_axis(axes.map_or(i as i64, |a| a[i]), x.rank(), "Slice")?;
        if seen.contains(&ax) {
            return Err(Error::invalid(format!("Slice: axis {ax} repeated")));
        }
        seen.push(ax);
        let step = steps.map_or(1, |s| s[i]);
        let dim = x.shape[ax] as i64;
        let adj = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
        if step == 0 {
            return Err(Error::invalid("Slice: step 0"));
        }
        let (s, e) = if dim == 0 {
            (0, 0)
        } else if step > 0 {
            (adj(starts[i]).clamp(0, dim), adj(ends[i]).clamp(0, dim))
        } else {
            (
                adj(starts[i]).clamp(0, dim - 1),
                adj(ends[i]).clamp(-1, dim - 1),
            )
        };
        let mut coords = Vec::new();
        let mut c = s;
        while (step > 0 && c < e) || (step < 0 && c > e) {
            coords.push(c as usize * st[ax]);
            c = c.saturating_add(step);
        }
        shape[ax] = coords.len();
        lists[ax] = coords;
    }
    Arr::new(shape, x.data.take(&product_index(&lists)))
}

/// Transpose by `perm` (default: reversed axes).
pub fn transpose(x: &Arr, perm: Option<&[i64]>) -> Result<Arr> {
    let r = x.rank();
    let perm: Vec<usize> = match perm {
        None => (0..r).rev().collect(),
        Some(p) => p
            .iter()
            .map(|&v| usize::try_from(v).ok().filter(|&v| v < r))
            .collect::<Option<_>>()
            .ok_or_else(|| Error::invalid(format!("Transpose: bad perm {p:?}")))?,
    };
    let mut sorted = perm.clone();
    sorted.sort_unstable();
    if sorted != (0..r).collect::<Vec<_>>() {
        return Err(Error::invalid(format!("Transpose: bad perm {perm:?}")));
    }
    let st = strides(&x.shape);
    let lists: Vec<Vec<usize>> = perm
        .iter()
        .map(|&p| (0..x.shape[p]).map(|c| c * st[p]).collect())
        .collect();
    let shape = perm.iter().map(|&p| x.shape[p]).collect();
    Arr::new(shape, x.data.take(&product_index(&lists)))
}

/// Split along `axis` into pieces of the given sizes.
pub fn split(x: &Arr, axis: i64, sizes: &[usize]) -> Result<Vec<Arr>> {
    let a = norm_axis(axis, x.rank(), "Split")?;
    if sizes.iter().sum::<usize>() != x.shape[a] {
        return Err(Error::invalid(format!(
            "Split: sizes {sizes:?} do not add up to {}",
            x.shape[a]
        )));
    }
    let mut out = Vec::with_capacity(sizes.len());
    let mut start = 0i64;
    for &s in sizes {
        let end = start + s as i64;
        out.push(slice(x, &[start], &[end], Some(&[a as i64]), None)?);
        start = end;
    }
    Ok(out)
}

/// Split sizes when none are given: `n` pieces of ceil(dim/n), the last one smaller.
pub fn even_split(dim: usize, n: usize) -> Result<Vec<usize>> {
    if n == 0 {
        return Err(Error::invalid("Split into 0 outputs"));
    }
    let chunk = dim.div_ceil(n);
    let mut left = dim;
    Ok((0..n)
        .map(|_| {
            let s = chunk.min(left);
            left -= s;
            s
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::super::array::Data;
    use super::*;

    fn iota(shape: Vec<usize>) -> Arr {
        let n = shape.iter().product::<usize>() as i64;
        Arr::new(shape, Data::I64((0..n).collect())).unwrap()
    }

    #[test]
    fn gather_negative_axis_and_indices() {
        let x = iota(vec![2, 3]);
        let g = gather(&x, &Arr::i64_vec(vec![-1, 0]), -1).unwrap();
        assert_eq!(g.shape, vec![2, 2]);
        assert_eq!(g.data, Data::I64(vec![2, 0, 5, 3]));
        let s = gather(&x, &Arr::new(vec![], Data::I64(vec![1])).unwrap(), 0).unwrap();
        assert_eq!(s.shape, vec![3]);
        assert_eq!(s.data, Data::I64(vec![3, 4, 5]));
        assert!(gather(&x, &Arr::i64_vec(vec![2]), 0).is_err());
    }

    #[test]
    fn concat_on_inner_axis() {
        let a = iota(vec![2, 1]);
        let b = iota(vec![2, 2]);
        let c = concat(&[&a, &b], -1).unwrap();
        assert_eq!(c.shape, vec![2, 3]);
        assert_eq!(c.data, Data::I64(vec![0, 0, 1, 1, 2, 3]));
        assert!(concat(&[&a, &iota(vec![3, 1])], 1).is_err());
    }

    #[test]
    fn slice_steps_and_clamping() {
        let x = iota(vec![10]);
        let s = slice(&x, &[1], &[i64::MAX], None, Some(&[3])).unwrap();
        assert_eq!(s.data, Data::I64(vec![1, 4, 7]));
        let s = slice(&x, &[-1], &[i64::MIN], None, Some(&[-4])).unwrap();
        assert_eq!(s.data, Data::I64(vec![9, 5, 1]));
        let m = iota(vec![3, 4]);
        let s = slice(&m, &[1, -2], &[3, 100], Some(&[0, -1]), None).unwrap();
        assert_eq!(s.shape, vec![2, 2]);
        assert_eq!(s.data, Data::I64(vec![6, 7, 10, 11]));
        assert!(slice(&x, &[0], &[1], None, Some(&[0])).is_err());
        let empty = iota(vec![0, 2]);
        let s = slice(&empty, &[-1], &[0], None, Some(&[-1])).unwrap();
        assert_eq!(s.shape, vec![0, 2]);
    }

    #[test]
    fn transpose_and_split() {
        let x = iota(vec![2, 3]);
        let t = transpose(&x, None).unwrap();
        assert_eq!(t.shape, vec![3, 2]);
        assert_eq!(t.data, Data::I64(vec![0, 3, 1, 4, 2, 5]));
        assert!(transpose(&x, Some(&[0, 0])).is_err());
        let parts = split(&x, 1, &[1, 2]).unwrap();
        assert_eq!(parts[1].data, Data::I64(vec![1, 2, 4, 5]));
        assert_eq!(even_split(5, 2).unwrap(), vec![3, 2]);
    }
}
