//! Elementwise unary ops and Cast.

use super::array::{Arr, Data};
use cc_ir::op::UnaryOp;
use cc_ir::{DType, Result};
use half::f16;

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

macro_rules! uint_unary {
    ($t:ty, $op:expr) => {
        |x: $t| -> Option<$t> {
            Some(match $op {
                UnaryOp::Abs | UnaryOp::Relu => x,
                UnaryOp::Sign => x.min(1),
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

/// An elementwise unary op; `Ok(None)` when the op/type pair is not supported. f16
/// computes in f32 and rounds once.
pub fn unary(op: UnaryOp, a: &Arr) -> Result<Option<Arr>> {
    if op == UnaryOp::IsNaN {
        let v = a.data.as_f64().filter(|_| a.data.is_float());
        let d = v.map(|v| Data::Bool(v.iter().map(|x| x.is_nan()).collect()));
        return d.map(|d| Arr::new(a.shape.clone(), d)).transpose();
    }
    let data = match &a.data {
        Data::F32(v) => map(v, float_unary!(f32, op)).map(Data::F32),
        Data::F64(v) => map(v, float_unary!(f64, op)).map(Data::F64),
        Data::F16(v) => {
            let f = float_unary!(f32, op);
            map(v, |x: f16| f(x.to_f32()).map(f16::from_f32)).map(Data::F16)
        }
        Data::I64(v) => map(v, int_unary!(i64, op)).map(Data::I64),
        Data::I32(v) => map(v, int_unary!(i32, op)).map(Data::I32),
        Data::I16(v) => map(v, int_unary!(i16, op)).map(Data::I16),
        Data::I8(v) => map(v, int_unary!(i8, op)).map(Data::I8),
        Data::U64(v) => map(v, uint_unary!(u64, op)).map(Data::U64),
        Data::U32(v) => map(v, uint_unary!(u32, op)).map(Data::U32),
        Data::U16(v) => map(v, uint_unary!(u16, op)).map(Data::U16),
        Data::U8(v) => map(v, uint_unary!(u8, op)).map(Data::U8),
        Data::Bool(v) if op == UnaryOp::Not => Some(Data::Bool(v.iter().map(|x| !x).collect())),
        _ => None,
    };
    data.map(|d| Arr::new(a.shape.clone(), d)).transpose()
}

/// A number on its way through a cast.
#[derive(Clone, Copy)]
enum Num {
    F(f64),
    I(i128),
}

fn to_nums(d: &Data) -> Option<Vec<Num>> {
    match d.as_f64() {
        Some(v) => Some(v.into_iter().map(Num::F).collect()),
        None => Some(d.as_i128()?.into_iter().map(Num::I).collect()),
    }
}

/// A float converted to an integer range by truncation; `None` when NaN or out of range
/// (ONNX leaves those undefined, so the evaluator does not guess).
fn trunc_in(x: f64, lo: f64, hi: f64) -> Option<i128> {
    let t = x.trunc();
    (t >= lo && t <= hi).then_some(t as i128)
}

/// Cast between the numeric types and bool. Integer narrowing wraps (as numpy and ONNX
/// Runtime do); float to integer truncates toward zero and is refused (`Ok(None)`) for
/// NaN or out-of-range values; every conversion to a float type rounds once. Strings
/// are not converted (`Ok(None)`).
pub fn cast(a: &Arr, to: DType) -> Result<Option<Arr>> {
    if a.dtype() == to {
        return Ok(Some(a.clone()));
    }
    // f64 -> f32 must round once, directly.
    if let (Data::F64(v), DType::F32) = (&a.data, to) {
        let d = Data::F32(v.iter().map(|&x| x as f32).collect());
        return Arr::new(a.shape.clone(), d).map(Some);
    }
    let Some(nums) = to_nums(&a.data) else {
        return Ok(None);
    };
    // Integers wrap; floats must fit (64-bit bounds are not exact in f64: keep strictly
    // inside them).
    macro_rules! ints {
        ($t:ty, $var:ident, $lo:expr, $hi:expr) => {
            nums.iter()
                .map(|n| match *n {
                    Num::I(i) => Some(i as $t),
                    Num::F(f) => trunc_in(f, $lo, $hi).map(|i| i as $t),
                })
                .collect::<Option<Vec<$t>>>()
                .map(Data::$var)
        };
        ($t:ty, $var:ident) => {
            ints!($t, $var, <$t>::MIN as f64, <$t>::MAX as f64)
        };
    }
    let floats = || -> Vec<f64> {
        nums.iter()
            .map(|n| match *n {
                Num::F(f) => f,
                Num::I(i) => i as f64,
            })
            .collect()
    };
    let data = match to {
        // i128 -> f32 directly rounds once; f64 -> f32 too.
        DType::F32 => Some(Data::F32(
            nums.iter()
                .map(|n| match *n {
                    Num::F(f) => f as f32,
                    Num::I(i) => i as f32,
                })
                .collect(),
        )),
        DType::F64 => Some(Data::F64(floats())),
        DType::F16 => Some(Data::F16(floats().into_iter().map(f16::from_f64).collect())),
        DType::Bool => Some(Data::Bool(
            nums.iter()
                .map(|n| match *n {
                    Num::F(f) => f != 0.0,
                    Num::I(i) => i != 0,
                })
                .collect(),
        )),
        DType::I64 => ints!(i64, I64, -9.2e18, 9.2e18),
        DType::I32 => ints!(i32, I32),
        DType::I16 => ints!(i16, I16),
        DType::I8 => ints!(i8, I8),
        DType::U64 => ints!(u64, U64, 0.0, 1.8e19),
        DType::U32 => ints!(u32, U32),
        DType::U16 => ints!(u16, U16),
        DType::U8 => ints!(u8, U8),
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
        assert_eq!(
            cast(&i, DType::F16).unwrap().unwrap().data,
            Data::F16(vec![f16::from_f32(3.0), f16::from_f32(-1.0)])
        );
        assert_eq!(
            cast(&i, DType::U16).unwrap().unwrap().data,
            Data::U16(vec![3, 65535])
        );
        let u = Arr::new(vec![1], Data::U64(vec![u64::MAX])).unwrap();
        assert_eq!(
            cast(&u, DType::I64).unwrap().unwrap().data,
            Data::I64(vec![-1])
        );
        let s = Arr::new(vec![1], Data::Str(vec![b"1".to_vec()])).unwrap();
        assert!(cast(&s, DType::F32).unwrap().is_none());
    }

    #[test]
    fn half_and_unsigned_unary() {
        let h = Arr::new(
            vec![3],
            Data::F16(vec![f16::from_f32(-2.0), f16::NAN, f16::from_f32(0.25)]),
        )
        .unwrap();
        assert_eq!(
            unary(UnaryOp::IsNaN, &h).unwrap().unwrap().data,
            Data::Bool(vec![false, true, false])
        );
        let r = unary(UnaryOp::Sqrt, &h).unwrap().unwrap();
        let Data::F16(v) = r.data else { panic!() };
        assert!(v[0].is_nan() && v[2] == f16::from_f32(0.5));
        let u = Arr::new(vec![2], Data::U32(vec![0, 7])).unwrap();
        assert_eq!(
            unary(UnaryOp::Sign, &u).unwrap().unwrap().data,
            Data::U32(vec![0, 1])
        );
        assert!(unary(UnaryOp::Neg, &u).unwrap().is_none());
        let i = Arr::new(vec![1], Data::I64(vec![1])).unwrap();
        assert!(unary(UnaryOp::IsNaN, &i).unwrap().is_none());
    }
}
