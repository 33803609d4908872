//! Reductions and CumSum. Floats accumulate in f64 and round once at the end.

use super::array::{norm_axis, strides, Arr, Data};
use super::broadcast::broadcast_index;
use cc_ir::op::ReduceOp;
use cc_ir::Result;
use half::f16;

/// Numbers widened for accumulation.
enum Wide {
    F(Vec<f64>),
    I(Vec<i128>),
}

/// Floats widen to f64, integers (and bools, for Max/Min) to i128; strings do not.
fn widen(d: &Data) -> Option<Wide> {
    match d.as_f64() {
        Some(v) => Some(Wide::F(v)),
        None => d.as_i128().map(Wide::I),
    }
}

/// The smallest and largest values of an integer (or bool) element type.
fn int_bounds(d: &Data) -> (i128, i128) {
    match d {
        Data::I64(_) => (i64::MIN.into(), i64::MAX.into()),
        Data::I32(_) => (i32::MIN.into(), i32::MAX.into()),
        Data::I16(_) => (i16::MIN.into(), i16::MAX.into()),
        Data::I8(_) => (i8::MIN.into(), i8::MAX.into()),
        Data::U64(_) => (0, u64::MAX.into()),
        Data::U32(_) => (0, u32::MAX.into()),
        Data::U16(_) => (0, u16::MAX.into()),
        Data::U8(_) => (0, u8::MAX.into()),
        _ => (0, 1),
    }
}

/// Narrows accumulated numbers back to the element type of `like` (floats round once,
/// integers wrap).
fn narrow(w: Wide, like: &Data) -> Data {
    match (w, like) {
        (Wide::F(v), Data::F32(_)) => Data::F32(v.into_iter().map(|x| x as f32).collect()),
        (Wide::F(v), Data::F16(_)) => Data::F16(v.into_iter().map(f16::from_f64).collect()),
        (Wide::F(v), _) => Data::F64(v),
        (Wide::I(v), Data::I32(_)) => Data::I32(v.into_iter().map(|x| x as i32).collect()),
        (Wide::I(v), Data::I16(_)) => Data::I16(v.into_iter().map(|x| x as i16).collect()),
        (Wide::I(v), Data::I8(_)) => Data::I8(v.into_iter().map(|x| x as i8).collect()),
        (Wide::I(v), Data::U64(_)) => Data::U64(v.into_iter().map(|x| x as u64).collect()),
        (Wide::I(v), Data::U32(_)) => Data::U32(v.into_iter().map(|x| x as u32).collect()),
        (Wide::I(v), Data::U16(_)) => Data::U16(v.into_iter().map(|x| x as u16).collect()),
        (Wide::I(v), Data::U8(_)) => Data::U8(v.into_iter().map(|x| x as u8).collect()),
        (Wide::I(v), Data::Bool(_)) => Data::Bool(v.into_iter().map(|x| x != 0).collect()),
        (Wide::I(v), _) => Data::I64(v.into_iter().map(|x| x as i64).collect()),
    }
}

/// Reduce over `axes` (all axes when `axes` is empty and `noop_with_empty_axes` is false;
/// the input unchanged when it is true). `Ok(None)` for unsupported type/op pairs and for
/// Mean over empty groups. Empty groups give the identity of the op: Max the lowest
/// value of the type (-inf, false), Min the highest, Sum/L2/SumSquare 0, Prod 1. Bools
/// reduce with Max/Min only.
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
    if matches!(x.data, Data::Bool(_)) && !matches!(op, ReduceOp::Max | ReduceOp::Min) {
        return Ok(None);
    }
    if group == 0 && op == ReduceOp::Mean {
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
            let (lo, hi) = int_bounds(&x.data);
            let init = match op {
                ReduceOp::Prod => 1,
                ReduceOp::Max => lo,
                ReduceOp::Min => hi,
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
    if matches!(x.data, Data::Bool(_)) {
        return Ok(None);
    }
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
        Wide::I(v) => Wide::I(scan!(v, 0i128, |p: i128, q: i128| p.wrapping_add(q))),
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
    fn empty_sets_bools_and_narrow_types() {
        let e = Arr::new(vec![2, 0], Data::F32(vec![])).unwrap();
        let mx = reduce(ReduceOp::Max, &e, &[1], false, false)
            .unwrap()
            .unwrap();
        assert_eq!(mx.data, Data::F32(vec![f32::NEG_INFINITY; 2]));
        let p = reduce(ReduceOp::Prod, &e, &[1], false, false)
            .unwrap()
            .unwrap();
        assert_eq!(p.data, Data::F32(vec![1.0; 2]));
        assert!(reduce(ReduceOp::Mean, &e, &[1], false, false)
            .unwrap()
            .is_none());
        let ei = Arr::new(vec![0], Data::U16(vec![])).unwrap();
        let mn = reduce(ReduceOp::Min, &ei, &[0], false, false)
            .unwrap()
            .unwrap();
        assert_eq!(mn.data, Data::U16(vec![u16::MAX]));
        let b = Arr::new(vec![2, 2], Data::Bool(vec![true, false, true, true])).unwrap();
        let mn = reduce(ReduceOp::Min, &b, &[1], false, false)
            .unwrap()
            .unwrap();
        assert_eq!(mn.data, Data::Bool(vec![false, true]));
        let eb = Arr::new(vec![0], Data::Bool(vec![])).unwrap();
        let mx = reduce(ReduceOp::Max, &eb, &[0], false, false)
            .unwrap()
            .unwrap();
        assert_eq!(mx.data, Data::Bool(vec![false]));
        assert!(reduce(ReduceOp::Sum, &b, &[0], false, false)
            .unwrap()
            .is_none());
        let u = Arr::new(vec![2], Data::U64(vec![u64::MAX, 2])).unwrap();
        let s = reduce(ReduceOp::Sum, &u, &[0], false, false)
            .unwrap()
            .unwrap();
        assert_eq!(s.data, Data::U64(vec![1]));
        let h = Arr::new(vec![2], Data::F16(vec![f16::ONE, f16::from_f32(2.0)])).unwrap();
        let m = reduce(ReduceOp::Mean, &h, &[0], false, false)
            .unwrap()
            .unwrap();
        assert_eq!(m.data, Data::F16(vec![f16::from_f32(1.5)]));
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
