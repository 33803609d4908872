//! Elementwise unary ops and Cast.

use super::array::{Arr, Data};
use cc_ir::op::UnaryOp;
use cc_ir::{DType, Result};

macro_rules! float_unary {
    ($t:ty, $op:expr) => {
        |x: $t| -> Option<$t> {
            Some(match $op {
                UnaryOp::Neg => -x,
                UnaryOp::Abs => x.abs(),
                UnaryOp::Sqrt => x.sqrt(),
                UnaryOp::Reciprocal => 1.0 / x,
                UnaryOp::Exp => x.exp(),
                UnaryOp::Log => x.ln(),
                UnaryOp::Floor => x.floor(),
                UnaryOp::Ceil => x.ceil(),
                UnaryOp::Relu => {
                    if x > 0.0 {
                        x
                    } else {
                        0.0
                    }
                }
                UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
                UnaryOp::Tanh => x.tanh(),
                UnaryOp::Sin => x.sin(),
                UnaryOp::Cos => x.cos(),
                UnaryOp::Round => x.round_ties_even(),
                UnaryOp::Sign => {
                    if x > 0.0 {
                        1.0
                    } else if x < 0.0 {
                        -1.0
                    } else {
                        x
                    }
                }
                _ => return None,
            })
        }
    };
}

macro_rules! int_unary {
    ($t:ty, $op:expr) => {
        |x: $t| -> Option<$t> {
            Some(match $op {
                UnaryOp::Neg => x.wrapping_neg(),
                UnaryOp::Abs => x.wrapping_abs(),
                UnaryOp::Sign => x.signum(),
                UnaryOp::Relu => x.max(0),
                _ => return None,
            })
        }
    };
}

fn map<T: Copy, U>(v: &[T], f: impl Fn(T) -> Option<U>) -> Option<Vec<U>> {
    v.iter().map(|&x| f(x)).collect()
}

/// An elementwise unary op; `Ok(None)` when the op/type pair is not supported.
pub fn unary(op: UnaryOp, a: &Arr) -> Result<Option<Arr>> {
    let data = match &a.data {
        Data::F32(v) if op == UnaryOp::IsNaN => {
            Some(Data::Bool(v.iter().map(|x| x.is_nan()).collect()))
        }
        Data::F64(v) if op == UnaryOp::IsNaN => {
            Some(Data::Bool(v.iter().map(|x| x.is_nan()).collect()))
        }
        Data::F32(v) => map(v, float_unary!(f32, op)).map(Data::F32),
        Data::F64(v) => map(v, float_unary!(f64, op)).map(Data::F64),
        Data::I64(v) => map(v, int_unary!(i64, op)).map(Data::I64),
        Data::I32(v) => map(v, int_unary!(i32, op)).map(Data::I32),
        Data::I8(v) => map(v, int_unary!(i8, op)).map(Data::I8),
        Data::Bool(v) if op == UnaryOp::Not => Some(Data::Bool(v.iter().map(|x| !x).collect())),
        _ => None,
    };
    data.map(|d| Arr::new(a.shape.clone(), d)).transpose()
}

/// A number on its way through a cast.
#[derive(Clone, Copy)]
enum Num {
    F(f64),
    I(i64),
}

fn to_nums(d: &Data) -> Vec<Num> {
    match d {
        Data::F32(v) => v.iter().map(|&x| Num::F(f64::from(x))).collect(),
        Data::F64(v) => v.iter().map(|&x| Num::F(x)).collect(),
        other => other
            .as_i64()
            .unwrap_or_default()
            .into_iter()
            .map(Num::I)
            .collect(),
    }
}

/// A float converted to an integer range by truncation; `None` when NaN or out of range
/// (ONNX leaves those undefined, so the evaluator does not guess).
fn trunc_in(x: f64, lo: f64, hi: f64) -> Option<i64> {
    let t = x.trunc();
    (t >= lo && t <= hi).then_some(t as i64)
}

/// Cast between f32, f64, i64, i32, u8, i8 and bool. Integer narrowing wraps (as numpy
/// and ONNX Runtime do); float to integer truncates toward zero and is refused
/// (`Ok(None)`) for NaN or out-of-range values.
pub fn cast(a: &Arr, to: DType) -> Result<Option<Arr>> {
    if a.dtype() == to {
        return Ok(Some(a.clone()));
    }
    // f64 -> f32 must round once, directly.
    if let (Data::F64(v), DType::F32) = (&a.data, to) {
        let d = Data::F32(v.iter().map(|&x| x as f32).collect());
        return Arr::new(a.shape.clone(), d).map(Some);
    }
    let nums = to_nums(&a.data);
    macro_rules! ints {
        ($t:ty, $var:ident) => {
            nums.iter()
                .map(|n| match *n {
                    Num::I(i) => Some(i as $t),
                    Num::F(f) => trunc_in(f, <$t>::MIN as f64, <$t>::MAX as f64).map(|i| i as $t),
                })
                .collect::<Option<Vec<$t>>>()
                .map(Data::$var)
        };
    }
    let data = match to {
        DType::F32 => Some(Data::F32(
            nums.iter()
                .map(|n| match *n {
                    Num::F(f) => f as f32,
                    Num::I(i) => i as f32,
                })
                .collect(),
        )),
        DType::F64 => Some(Data::F64(
            nums.iter()
                .map(|n| match *n {
                    Num::F(f) => f,
                    Num::I(i) => i as f64,
                })
                .collect(),
        )),
        DType::Bool => Some(Data::Bool(
            nums.iter()
                .map(|n| match *n {
                    Num::F(f) => f != 0.0,
                    Num::I(i) => i != 0,
                })
                .collect(),
        )),
        // i64 bounds are not exactly representable in f64; keep strictly inside.
        DType::I64 => nums
            .iter()
            .map(|n| match *n {
                Num::I(i) => Some(i),
                Num::F(f) => trunc_in(f, -9.2e18, 9.2e18),
            })
            .collect::<Option<Vec<i64>>>()
            .map(Data::I64),
        DType::I32 => ints!(i32, I32),
        DType::U8 => ints!(u8, U8),
        DType::I8 => ints!(i8, I8),
        _ => None,
    };
    data.map(|d| Arr::new(a.shape.clone(), d)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_and_int_unary() {
        let a = Arr::new(vec![3], Data::F32(vec![-1.5, 0.0, 4.0])).unwrap();
        let r = unary(UnaryOp::Abs, &a).unwrap().unwrap();
        assert_eq!(r.data, Data::F32(vec![1.5, 0.0, 4.0]));
        let r = unary(UnaryOp::Floor, &a).unwrap().unwrap();
        assert_eq!(r.data, Data::F32(vec![-2.0, 0.0, 4.0]));
        let r = unary(UnaryOp::Reciprocal, &a).unwrap().unwrap();
        assert_eq!(r.data, Data::F32(vec![-1.0 / 1.5, f32::INFINITY, 0.25]));
        let i = Arr::new(vec![2], Data::I64(vec![-3, 5])).unwrap();
        assert_eq!(
            unary(UnaryOp::Neg, &i).unwrap().unwrap().data,
            Data::I64(vec![3, -5])
        );
        assert!(unary(UnaryOp::Sqrt, &i).unwrap().is_none());
        assert!(unary(UnaryOp::Erf, &a).unwrap().is_none());
    }

    #[test]
    fn casts() {
        let a = Arr::new(vec![4], Data::F32(vec![-1.7, 0.0, 2.9, 300.0])).unwrap();
        assert_eq!(
            cast(&a, DType::I64).unwrap().unwrap().data,
            Data::I64(vec![-1, 0, 2, 300])
        );
        assert_eq!(
            cast(&a, DType::Bool).unwrap().unwrap().data,
            Data::Bool(vec![true, false, true, true])
        );
        // 300 does not fit u8: undefined, refused.
        assert!(cast(&a, DType::U8).unwrap().is_none());
        let i = Arr::new(vec![2], Data::I64(vec![3, -1])).unwrap();
        assert_eq!(
            cast(&i, DType::F64).unwrap().unwrap().data,
            Data::F64(vec![3.0, -1.0])
        );
        assert_eq!(
            cast(&i, DType::I32).unwrap().unwrap().data,
            Data::I32(vec![3, -1])
        );
        assert!(cast(&i, DType::F16).unwrap().is_none());
    }
}
