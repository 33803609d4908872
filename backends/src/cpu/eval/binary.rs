//! Broadcasting binary ops: arithmetic, comparisons and logic.

use super::array::{Arr, Data};
use super::broadcast::{broadcast_index, broadcast_shapes};
use super::unary;
use cc_ir::{Error, Result};
use half::f16;

/// Arithmetic ops on two numbers of the same type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arith {
    /// a + b
    Add,
    /// a - b
    Sub,
    /// a * b
    Mul,
    /// a / b (integers truncate toward zero)
    Div,
    /// a ^ b
    Pow,
    /// max(a, b)
    Max,
    /// min(a, b)
    Min,
    /// Mod: with `fmod` the sign follows the dividend, else the divisor.
    Mod {
        /// C fmod semantics.
        fmod: bool,
    },
}

/// Comparisons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// a == b
    Eq,
    /// a < b
    Lt,
    /// a <= b
    Le,
    /// a > b
    Gt,
    /// a >= b
    Ge,
}

/// Logical ops on bools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logic {
    /// a && b
    And,
    /// a || b
    Or,
    /// a != b
    Xor,
}

fn zip<T: Copy, U>(
    a: &[T],
    b: &[T],
    ia: &[usize],
    ib: &[usize],
    f: impl Fn(T, T) -> Option<U>,
) -> Option<Vec<U>> {
    ia.iter().zip(ib).map(|(&i, &j)| f(a[i], b[j])).collect()
}

macro_rules! float_arith {
    ($t:ty, $op:expr) => {
        |x: $t, y: $t| -> Option<$t> {
            Some(match $op {
                Arith::Add => x + y,
                Arith::Sub => x - y,
                Arith::Mul => x * y,
                Arith::Div => x / y,
                Arith::Pow => x.powf(y),
                Arith::Max => {
                    if x.is_nan() || y.is_nan() {
                        <$t>::NAN
                    } else {
                        x.max(y)
                    }
                }
                Arith::Min => {
                    if x.is_nan() || y.is_nan() {
                        <$t>::NAN
                    } else {
                        x.min(y)
                    }
                }
                Arith::Mod { fmod: true } => x % y,
                // Python/numpy `%`: the sign follows the divisor, a zero result takes
                // the divisor's sign.
                Arith::Mod { fmod: false } => {
                    let r = x % y;
                    if r == 0.0 {
                        (0.0 as $t).copysign(y)
                    } else if (r < 0.0) != (y < 0.0) {
                        r + y
                    } else {
                        r
                    }
                }
            })
        }
    };
}

macro_rules! int_arith {
    ($t:ty, $op:expr) => {
        |x: $t, y: $t| -> Option<$t> {
            #[allow(unused_comparisons)]
            let neg = |v: $t| v < (0 as $t);
            Some(match $op {
                Arith::Add => x.wrapping_add(y),
                Arith::Sub => x.wrapping_sub(y),
                Arith::Mul => x.wrapping_mul(y),
                Arith::Div => x.checked_div(y)?,
                Arith::Pow => x.wrapping_pow(u32::try_from(y).ok()?),
                Arith::Max => x.max(y),
                Arith::Min => x.min(y),
                Arith::Mod { fmod: true } => x.checked_rem(y)?,
                Arith::Mod { fmod: false } => {
                    let r = x.checked_rem(y)?;
                    if r != (0 as $t) && neg(r) != neg(y) {
                        r.wrapping_add(y)
                    } else {
                        r
                    }
                }
            })
        }
    };
}

fn prepare(a: &Arr, b: &Arr) -> Result<(Vec<usize>, Vec<usize>, Vec<usize>)> {
    let shape = broadcast_shapes(&[&a.shape, &b.shape])?;
    let ia = broadcast_index(&a.shape, &shape);
    let ib = broadcast_index(&b.shape, &shape);
    Ok((shape, ia, ib))
}

fn type_clash(a: &Arr, b: &Arr) -> Error {
    Error::invalid(format!(
        "operands of types {} and {} differ",
        a.dtype(),
        b.dtype()
    ))
}

/// Elementwise arithmetic with broadcasting. `Ok(None)` for unsupported types and for
/// results that are undefined (integer division by zero, negative integer exponents).
/// f16 computes in f32 and rounds once.
pub fn arith(op: Arith, a: &Arr, b: &Arr) -> Result<Option<Arr>> {
    // Pow allows an exponent of another type; the result has the base's type.
    if op == Arith::Pow && a.dtype() != b.dtype() {
        return pow_mixed(a, b);
    }
    let (shape, ia, ib) = prepare(a, b)?;
    let data = match (&a.data, &b.data) {
        (Data::F32(x), Data::F32(y)) => zip(x, y, &ia, &ib, float_arith!(f32, op)).map(Data::F32),
        (Data::F64(x), Data::F64(y)) => zip(x, y, &ia, &ib, float_arith!(f64, op)).map(Data::F64),
        (Data::F16(x), Data::F16(y)) => {
            let f = float_arith!(f32, op);
            zip(x, y, &ia, &ib, |p: f16, q: f16| {
                f(p.to_f32(), q.to_f32()).map(f16::from_f32)
            })
            .map(Data::F16)
        }
        (Data::I64(x), Data::I64(y)) => zip(x, y, &ia, &ib, int_arith!(i64, op)).map(Data::I64),
        (Data::I32(x), Data::I32(y)) => zip(x, y, &ia, &ib, int_arith!(i32, op)).map(Data::I32),
        (Data::I16(x), Data::I16(y)) => zip(x, y, &ia, &ib, int_arith!(i16, op)).map(Data::I16),
        (Data::I8(x), Data::I8(y)) => zip(x, y, &ia, &ib, int_arith!(i8, op)).map(Data::I8),
        (Data::U64(x), Data::U64(y)) => zip(x, y, &ia, &ib, int_arith!(u64, op)).map(Data::U64),
        (Data::U32(x), Data::U32(y)) => zip(x, y, &ia, &ib, int_arith!(u32, op)).map(Data::U32),
        (Data::U16(x), Data::U16(y)) => zip(x, y, &ia, &ib, int_arith!(u16, op)).map(Data::U16),
        (Data::U8(x), Data::U8(y)) => zip(x, y, &ia, &ib, int_arith!(u8, op)).map(Data::U8),
        (Data::Bool(_), Data::Bool(_)) | (Data::Str(_), Data::Str(_)) => None,
        _ => return Err(type_clash(a, b)),
    };
    data.map(|d| Arr::new(shape, d)).transpose()
}

/// Pow with an exponent of another type. A float base takes the exponent converted to
/// its type; an integer base with a float exponent computes in f64 and truncates toward
/// zero (as ONNX Runtime does); an integer base with an integer exponent takes the
/// exponent converted to its type.
fn pow_mixed(a: &Arr, b: &Arr) -> Result<Option<Arr>> {
    if a.data.is_float() || !b.data.is_float() {
        return match unary::cast(b, a.dtype())? {
            Some(e) => arith(Arith::Pow, a, &e),
            None => Ok(None),
        };
    }
    let (Some(x), Some(y)) = (a.data.as_i128(), b.data.as_f64()) else {
        return Ok(None);
    };
    let (shape, ia, ib) = prepare(a, b)?;
    let v: Vec<f64> = ia
        .iter()
        .zip(&ib)
        .map(|(&i, &j)| (x[i] as f64).powf(y[j]))
        .collect();
    let wide = Arr::new(shape, Data::F64(v))?;
    unary::cast(&wide, a.dtype())
}

fn cmp_fn<T: PartialOrd + Copy>(op: Cmp) -> impl Fn(T, T) -> Option<bool> {
    move |x, y| {
        Some(match op {
            Cmp::Eq => x == y,
            Cmp::Lt => x < y,
            Cmp::Le => x <= y,
            Cmp::Gt => x > y,
            Cmp::Ge => x >= y,
        })
    }
}

/// Elementwise comparison with broadcasting; the result is bool. Strings support only
/// equality; f16 compares exactly (as its f32 value).
pub fn compare(op: Cmp, a: &Arr, b: &Arr) -> Result<Option<Arr>> {
    let (shape, ia, ib) = prepare(a, b)?;
    let v = match (&a.data, &b.data) {
        (Data::F32(x), Data::F32(y)) => zip(x, y, &ia, &ib, cmp_fn(op)),
        (Data::F64(x), Data::F64(y)) => zip(x, y, &ia, &ib, cmp_fn(op)),
        (Data::F16(x), Data::F16(y)) => zip(x, y, &ia, &ib, cmp_fn(op)),
        (Data::I64(x), Data::I64(y)) => zip(x, y, &ia, &ib, cmp_fn(op)),
        (Data::I32(x), Data::I32(y)) => zip(x, y, &ia, &ib, cmp_fn(op)),
        (Data::I16(x), Data::I16(y)) => zip(x, y, &ia, &ib, cmp_fn(op)),
        (Data::I8(x), Data::I8(y)) => zip(x, y, &ia, &ib, cmp_fn(op)),
        (Data::U64(x), Data::U64(y)) => zip(x, y, &ia, &ib, cmp_fn(op)),
        (Data::U32(x), Data::U32(y)) => zip(x, y, &ia, &ib, cmp_fn(op)),
        (Data::U16(x), Data::U16(y)) => zip(x, y, &ia, &ib, cmp_fn(op)),
        (Data::U8(x), Data::U8(y)) => zip(x, y, &ia, &ib, cmp_fn(op)),
        (Data::Bool(x), Data::Bool(y)) => zip(x, y, &ia, &ib, cmp_fn(op)),
        (Data::Str(x), Data::Str(y)) if op == Cmp::Eq => {
            Some(ia.iter().zip(&ib).map(|(&i, &j)| x[i] == y[j]).collect())
        }
        (Data::Str(_), Data::Str(_)) => None,
        _ => return Err(type_clash(a, b)),
    };
    v.map(|v| Arr::new(shape, Data::Bool(v))).transpose()
}

/// Elementwise logic on bools with broadcasting; `Ok(None)` for non-bool operands.
pub fn logic(op: Logic, a: &Arr, b: &Arr) -> Result<Option<Arr>> {
    let (Data::Bool(x), Data::Bool(y)) = (&a.data, &b.data) else {
        return Ok(None);
    };
    let (shape, ia, ib) = prepare(a, b)?;
    let v = zip(x, y, &ia, &ib, |p, q| {
        Some(match op {
            Logic::And => p && q,
            Logic::Or => p || q,
            Logic::Xor => p != q,
        })
    });
    v.map(|v| Arr::new(shape, Data::Bool(v))).transpose()
}

/// Where(cond, x, y) with three-way broadcasting.
pub fn where_(c: &Arr, x: &Arr, y: &Arr) -> Result<Option<Arr>> {
    let Data::Bool(cv) = &c.data else {
        return Ok(None);
    };
    if x.dtype() != y.dtype() {
        return Err(type_clash(x, y));
    }
    let shape = broadcast_shapes(&[&c.shape, &x.shape, &y.shape])?;
    let ic = broadcast_index(&c.shape, &shape);
    let ix = broadcast_index(&x.shape, &shape);
    let iy = broadcast_index(&y.shape, &shape);
    let pick: Vec<bool> = ic.iter().map(|&i| cv[i]).collect();
    let xs = x.data.take(&ix);
    let ys = y.data.take(&iy);
    let choose = |p: &[bool]| -> Vec<usize> {
        // Index into the concatenation [xs, ys].
        let n = p.len();
        p.iter()
            .enumerate()
            .map(|(i, &b)| if b { i } else { n + i })
            .collect()
    };
    let mut both = xs;
    both.extend(&ys)?;
    Arr::new(shape, both.take(&choose(&pick))).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i(shape: Vec<usize>, v: Vec<i64>) -> Arr {
        Arr::new(shape, Data::I64(v)).unwrap()
    }
    fn f(shape: Vec<usize>, v: Vec<f32>) -> Arr {
        Arr::new(shape, Data::F32(v)).unwrap()
    }

    #[test]
    fn broadcast_add_and_sub() {
        let a = f(vec![2, 1], vec![1.0, 2.0]);
        let b = f(vec![3], vec![10.0, 20.0, 30.0]);
        let r = arith(Arith::Add, &a, &b).unwrap().unwrap();
        assert_eq!(r.shape, vec![2, 3]);
        assert_eq!(r.data, Data::F32(vec![11.0, 21.0, 31.0, 12.0, 22.0, 32.0]));
        let r = arith(Arith::Sub, &b, &a).unwrap().unwrap();
        assert_eq!(r.data, Data::F32(vec![9.0, 19.0, 29.0, 8.0, 18.0, 28.0]));
    }

    #[test]
    fn integer_division_truncates_and_mod_follows_divisor() {
        let a = i(vec![4], vec![7, -7, 7, -7]);
        let b = i(vec![4], vec![2, 2, -2, -2]);
        let d = arith(Arith::Div, &a, &b).unwrap().unwrap();
        assert_eq!(d.data, Data::I64(vec![3, -3, -3, 3]));
        let m = arith(Arith::Mod { fmod: false }, &a, &b).unwrap().unwrap();
        assert_eq!(m.data, Data::I64(vec![1, 1, -1, -1]));
        let m = arith(Arith::Mod { fmod: true }, &a, &b).unwrap().unwrap();
        assert_eq!(m.data, Data::I64(vec![1, -1, 1, -1]));
        let z = i(vec![1], vec![0]);
        assert!(arith(Arith::Div, &a, &z).unwrap().is_none());
    }

    #[test]
    fn pow_max_min_and_type_errors() {
        let a = f(vec![2], vec![2.0, 3.0]);
        let e = i(vec![], vec![2]);
        let p = arith(Arith::Pow, &a, &e).unwrap().unwrap();
        assert_eq!(p.data, Data::F32(vec![4.0, 9.0]));
        let m = arith(Arith::Max, &a, &f(vec![], vec![2.5]))
            .unwrap()
            .unwrap();
        assert_eq!(m.data, Data::F32(vec![2.5, 3.0]));
        assert!(arith(Arith::Add, &a, &e).is_err());
        assert!(arith(Arith::Add, &a, &i(vec![], vec![1])).is_err());
    }

    #[test]
    fn float_mod_sign_follows_divisor() {
        let a = f(vec![4], vec![7.5, -7.5, 7.5, 4.0]);
        let b = f(vec![4], vec![2.0, 2.0, -2.0, -2.0]);
        let m = arith(Arith::Mod { fmod: false }, &a, &b).unwrap().unwrap();
        assert_eq!(m.data, Data::F32(vec![1.5, 0.5, -0.5, -0.0]));
        let Data::F32(v) = m.data else { panic!() };
        assert!(v[3].is_sign_negative());
        let m = arith(Arith::Mod { fmod: true }, &a, &b).unwrap().unwrap();
        assert_eq!(m.data, Data::F32(vec![1.5, -1.5, 1.5, 0.0]));
    }

    #[test]
    fn pow_with_mixed_types_keeps_the_base_type() {
        let base = i(vec![3], vec![1, 2, 3]);
        let e = f(vec![3], vec![4.0, 5.0, 0.5]);
        let p = arith(Arith::Pow, &base, &e).unwrap().unwrap();
        assert_eq!(p.data, Data::I64(vec![1, 32, 1]));
        let u = Arr::new(vec![1], Data::U32(vec![3])).unwrap();
        let p = arith(Arith::Pow, &f(vec![1], vec![2.0]), &u)
            .unwrap()
            .unwrap();
        assert_eq!(p.data, Data::F32(vec![8.0]));
    }

    #[test]
    fn narrow_unsigned_and_half_types() {
        let a = Arr::new(vec![2], Data::U16(vec![65535, 3])).unwrap();
        let b = Arr::new(vec![], Data::U16(vec![2])).unwrap();
        let s = arith(Arith::Add, &a, &b).unwrap().unwrap();
        assert_eq!(s.data, Data::U16(vec![1, 5]));
        let m = arith(Arith::Mod { fmod: false }, &a, &b).unwrap().unwrap();
        assert_eq!(m.data, Data::U16(vec![1, 1]));
        let h = |v: &[f32]| Data::F16(v.iter().map(|&x| f16::from_f32(x)).collect());
        let x = Arr::new(vec![2], h(&[1.0, 3.0])).unwrap();
        let d = arith(Arith::Div, &x, &Arr::new(vec![], h(&[3.0])).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(d.data, h(&[1.0 / 3.0, 1.0]));
        let lt = compare(Cmp::Lt, &x, &Arr::new(vec![], h(&[2.0])).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(lt.data, Data::Bool(vec![true, false]));
        let s1 = Arr::new(vec![2], Data::Str(vec![b"a".to_vec(), b"b".to_vec()])).unwrap();
        let s2 = Arr::new(vec![], Data::Str(vec![b"b".to_vec()])).unwrap();
        let eq = compare(Cmp::Eq, &s1, &s2).unwrap().unwrap();
        assert_eq!(eq.data, Data::Bool(vec![false, true]));
        assert!(compare(Cmp::Lt, &s1, &s2).unwrap().is_none());
    }

    #[test]
    fn comparisons_logic_and_where() {
        let a = i(vec![3], vec![1, 2, 3]);
        let b = i(vec![], vec![2]);
        let lt = compare(Cmp::Lt, &a, &b).unwrap().unwrap();
        assert_eq!(lt.data, Data::Bool(vec![true, false, false]));
        let ge = compare(Cmp::Ge, &a, &b).unwrap().unwrap();
        assert_eq!(ge.data, Data::Bool(vec![false, true, true]));
        let or = logic(Logic::Or, &lt, &ge).unwrap().unwrap();
        assert_eq!(or.data, Data::Bool(vec![true; 3]));
        let w = where_(&lt, &a, &i(vec![], vec![-1])).unwrap().unwrap();
        assert_eq!(w.data, Data::I64(vec![1, -1, -1]));
    }
}
