//! Reductions and CumSum. Floats accumulate in f64 and round once at the end.

use super::array::{norm_axis, strides, Arr, Data};
use super::broadcast::broadcast_index;
use cc_ir::op::ReduceOp;
use cc_ir::Result;

/// Numbers widened for accumulation.
enum Wide {
    F(Vec<f64>),
    I(Vec<i64>),
}

fn widen(d: &Data) -> Option<Wide> {
    match d {
        Data::F32(v) => Some(Wide::F(v.iter().map(|&x| f64::from(x)).collect())),
        Data::F64(v) => Some(Wide::F(v.clone())),
        Data::I64(_) | Data::I32(_) | Data::U8(_) | Data::I8(_) => d.as_i64().map(Wide::I),
        Data::Bool(_) => None,
    }
}

/// Narrows accumulated numbers back to the element type of `like`.
fn narrow(w: Wide, like: &Data) -> Data {
    match (w, like) {
        (Wide::F(v), Data::F32(_)) => Data::F32(v.into_iter().map(|x| x as f32).collect()),
        (Wide::F(v), _) => Data::F64(v),
        (Wide::I(v), Data::I32(_)) => Data::I32(v.into_iter().map(|x| x as i32).collect()),
        (Wide::I(v), Data::U8(_)) => Data::U8(v.into_iter().map(|x| x as u8).collect()),
        (Wide::I(v), Data::I8(_)) => Data::I8(v.into_iter().map(|x| x as i8).collect()),
        (Wide::I(v), _) => Data::I64(v),
    }
}

/// Reduce over `axes` (all axes when `axes` is empty and `noop_with_empty_axes` is false;
/// the input unchanged when it is true). `Ok(None)` for unsupported type/op pairs and for
/// Max/Min/Mean over empty groups.
pub fn reduce(
    op: ReduceOp,
    x: &Arr,
    axes: &[i64],
    keepdims: bool,
    noop_with_empty_axes: bool,
) -> Result<Option<Arr>> {
    if axes.is_empty() && noop_with_empty_axes {
        return Ok(Some(x.clone()));
    }
    let red: Vec<usize> = if axes.is_empty() {
        (0..x.rank()).collect()
    } else {
        axes.iter()
            .map(|&a| norm_axis(a, x.rank(), "Reduce"))
            .collect::<Result<_>>()?
    };
    let kept: Vec<usize> = (0..x.rank())
        .map(|i| if red.contains(&i) { 1 } else { x.shape[i] })
        .collect();
    let out_n: usize = kept.iter().product();
    let map = broadcast_index(&kept, &x.shape);
    let group = x.data.len().checked_div(out_n).unwrap_or(0);
    let Some(w) = widen(&x.data) else {
        return Ok(None);
    };
    if group == 0 && matches!(op, ReduceOp::Max | ReduceOp::Min | ReduceOp::Mean) {
        return Ok(None);
    }
    let out = match w {
        Wide::F(v) => {
            let init = match op {
                ReduceOp::Prod => 1.0,
                ReduceOp::Max => f64::NEG_INFINITY,
                ReduceOp::Min => f64::INFINITY,
                _ => 0.0,
            };
            let mut acc = vec![init; out_n];
            for (&o, &val) in map.iter().zip(&v) {
                let a = &mut acc[o];
                *a = match op {
                    ReduceOp::Sum | ReduceOp::Mean => *a + val,
                    ReduceOp::Prod => *a * val,
                    ReduceOp::Max if val.is_nan() || a.is_nan() => f64::NAN,
                    ReduceOp::Min if val.is_nan() || a.is_nan() => f64::NAN,
                    ReduceOp::Max => a.max(val),
                    ReduceOp::Min => a.min(val),
                    ReduceOp::L2 | ReduceOp::SumSquare => *a + val * val,
                };
            }
            match op {
                ReduceOp::Mean => acc.iter_mut().for_each(|a| *a /= group as f64),
                ReduceOp::L2 => acc.iter_mut().for_each(|a| *a = a.sqrt()),
                _ => {}
            }
            Wide::F(acc)
        }
        Wide::I(v) => {
            let init = match op {
                ReduceOp::Prod => 1,
                ReduceOp::Max => i64::MIN,
                ReduceOp::Min => i64::MAX,
                ReduceOp::Sum => 0,
                ReduceOp::Mean | ReduceOp::L2 | ReduceOp::SumSquare => return Ok(None),
            };
            let mut acc = vec![init; out_n];
            for (&o, &val) in map.iter().zip(&v) {
                let a = &mut acc[o];
                *a = match op {
                    ReduceOp::Prod => a.wrapping_mul(val),
                    ReduceOp::Max => (*a).max(val),
                    ReduceOp::Min => (*a).min(val),
                    _ => a.wrapping_add(val),
                };
            }
            Wide::I(acc)
        }
    };
    let shape = if keepdims {
        kept
    } else {
        (0..x.rank())
            .filter(|i| !red.contains(i))
            .map(|i| x.shape[i])
            .collect()
    };
    Arr::new(shape, narrow(out, &x.data)).map(Some)
}

/// CumSum along `axis`, optionally exclusive and/or reversed.
pub fn cumsum(x: &Arr, axis: i64, exclusive: bool, reverse: bool) -> Result<Option<Arr>> {
    let a = norm_axis(axis, x.rank(), "CumSum")?;
    let Some(w) = widen(&x.data) else {
        return Ok(None);
    };
    let st = strides(&x.shape)[a];
    let dim = x.shape[a];
    let n = x.data.len();
    macro_rules! scan {
        ($v:expr, $zero:expr, $add:expr) => {{
            let v = $v;
            let mut out = vec![$zero; n];
            for base in (0..n).filter(|i| (i / st) % dim.max(1) == 0) {
                let mut acc = $zero;
                let order: Box<dyn Iterator<Item = usize>> = if reverse {
                    Box::new((0..dim).rev())
                } else {
                    Box::new(0..dim)
                };
                for k in order {
                    let i = base + k * st;
                    if exclusive {
                        out[i] = acc;
                        acc = $add(acc, v[i]);
                    } else {
                        acc = $add(acc, v[i]);
                        out[i] = acc;
                    }
                }
            }
            out
        }};
    }
    let out = match w {
        Wide::F(v) => Wide::F(scan!(v, 0.0f64, |p: f64, q: f64| p + q)),
        Wide::I(v) => Wide::I(scan!(v, 0i64, |p: i64, q: i64| p.wrapping_add(q))),
    };
    Arr::new(x.shape.clone(), narrow(out, &x.data)).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> Arr {
        Arr::new(vec![2, 3], Data::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])).unwrap()
    }

    #[test]
    fn reductions_over_axes() {
        let s = reduce(ReduceOp::Sum, &m(), &[-1], false, false)
            .unwrap()
            .unwrap();
        assert_eq!((s.shape, s.data), (vec![2], Data::F32(vec![6.0, 15.0])));
        let p = reduce(ReduceOp::Prod, &m(), &[0], true, false)
            .unwrap()
            .unwrap();
        assert_eq!(
            (p.shape, p.data),
            (vec![1, 3], Data::F32(vec![4.0, 10.0, 18.0]))
        );
        let mx = reduce(ReduceOp::Max, &m(), &[], false, false)
            .unwrap()
            .unwrap();
        assert_eq!((mx.shape, mx.data), (vec![], Data::F32(vec![6.0])));
        let mean = reduce(ReduceOp::Mean, &m(), &[1], true, false)
            .unwrap()
            .unwrap();
        assert_eq!(mean.data, Data::F32(vec![2.0, 5.0]));
        let noop = reduce(ReduceOp::Min, &m(), &[], true, true)
            .unwrap()
            .unwrap();
        assert_eq!(noop, m());
        let i = Arr::new(vec![3], Data::I64(vec![4, -2, 7])).unwrap();
        let mn = reduce(ReduceOp::Min, &i, &[0], false, false)
            .unwrap()
            .unwrap();
        assert_eq!(mn.data, Data::I64(vec![-2]));
        assert!(reduce(ReduceOp::Mean, &i, &[0], false, false)
            .unwrap()
            .is_none());
    }

    #[test]
    fn cumsum_variants() {
        let x = m();
        let c = cumsum(&x, 1, false, false).unwrap().unwrap();
        assert_eq!(c.data, Data::F32(vec![1.0, 3.0, 6.0, 4.0, 9.0, 15.0]));
        let c = cumsum(&x, 0, true, false).unwrap().unwrap();
        assert_eq!(c.data, Data::F32(vec![0.0, 0.0, 0.0, 1.0, 2.0, 3.0]));
        let c = cumsum(&x, -1, false, true).unwrap().unwrap();
        assert_eq!(c.data, Data::F32(vec![6.0, 5.0, 3.0, 15.0, 11.0, 6.0]));
    }
}
