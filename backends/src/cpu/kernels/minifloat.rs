//! The 8- and 4-bit float formats QuantizeLinear/DequantizeLinear target: float8e4m3fn,
//! float8e5m2 and float4e2m1 (packed two per byte, low nibble first). Encoding rounds to
//! nearest, ties to even; with `saturate`, out-of-range values (and infinities) become
//! the largest finite value of the sign, as ONNX specifies.

use cc_ir::{DType, Result, Tensor};

/// How a format spends its top exponent.
#[derive(Clone, Copy, PartialEq)]
enum Special {
    /// Only all-ones (exponent and mantissa) is NaN; no infinities (e4m3fn).
    FiniteNan,
    /// IEEE-like: top exponent is infinity (mantissa 0) or NaN (e5m2).
    Ieee,
    /// No infinities and no NaN (e2m1).
    None,
}

/// A small float format.
#[derive(Clone, Copy)]
pub(super) struct Format {
    ebits: u32,
    mbits: u32,
    bias: i32,
    special: Special,
}

/// ONNX float4e2m1 (opset 23; no named [`DType`] yet).
pub(super) const FLOAT4E2M1: DType = DType::Other(23);

/// The format of a float8/float4 element type; `None` for others.
pub(super) fn format(d: DType) -> Option<Format> {
    Some(match d {
        DType::F8E4M3FN => Format {
            ebits: 4,
            mbits: 3,
            bias: 7,
            special: Special::FiniteNan,
        },
        DType::F8E5M2 => Format {
            ebits: 5,
            mbits: 2,
            bias: 15,
            special: Special::Ieee,
        },
        FLOAT4E2M1 => Format {
            ebits: 2,
            mbits: 1,
            bias: 1,
            special: Special::None,
        },
        _ => return None,
    })
}

impl Format {
    fn bits(self) -> u32 {
        1 + self.ebits + self.mbits
    }

    /// The value of a code.
    pub(super) fn decode(self, code: u8) -> f32 {
        let (e, m) = (self.ebits, self.mbits);
        let sign = if (code >> (e + m)) & 1 == 1 {
            -1.0
        } else {
            1.0
        };
        let exp = i32::from((code >> m) & ((1 << e) - 1) as u8);
        let man = i32::from(code & ((1 << m) - 1) as u8);
        let top = (1 << e) - 1;
        match self.special {
            Special::FiniteNan if exp == top && man == (1 << m) - 1 => return f32::NAN,
            Special::Ieee if exp == top => {
                return if man == 0 {
                    sign * f32::INFINITY
                } else {
                    f32::NAN
                }
            }
            _ => {}
        }
        let mag = if exp == 0 {
            man as f32 * 2f32.powi(1 - self.bias - m as i32)
        } else {
            (1.0 + man as f32 / (1 << m) as f32) * 2f32.powi(exp - self.bias)
        };
        sign * mag
    }

    /// The largest finite non-negative code.
    fn max_code(self) -> u8 {
        let all = (1u16 << (self.ebits + self.mbits)) - 1;
        (match self.special {
            Special::FiniteNan => all - 1,
            Special::Ieee => all - (1 << self.mbits),
            Special::None => all,
        }) as u8
    }

    fn nan(self) -> u8 {
        match self.special {
            Special::None => self.max_code(),
            _ => ((1u16 << (self.ebits + self.mbits)) - 1) as u8,
        }
    }

    /// The code nearest to `x` (ties to even).
    pub(super) fn encode(self, x: f32, saturate: bool) -> u8 {
        let sign_bit = 1u8 << (self.ebits + self.mbits);
        if x.is_nan() {
            return self.nan();
        }
        let sign = if x.is_sign_negative() { sign_bit } else { 0 };
        let a = x.abs();
        let max = self.max_code();
        let max_val = self.decode(max);
        if a > max_val {
            let code = if saturate {
                max
            } else {
                match self.special {
                    Special::Ieee => max + 1,
                    Special::FiniteNan => return self.nan() | sign,
                    Special::None => max,
                }
            };
            // Finite values within half a step of the maximum still round to it.
            let step = max_val - self.decode(max - 1);
            if a.is_finite() && a < max_val + step / 2.0 {
                return max | sign;
            }
            return code | sign;
        }
        // Codes 0..=max are ordered by value: binary search the first code >= a.
        let (mut lo, mut hi) = (0u8, max);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.decode(mid) < a {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let code = if lo == 0 {
            0
        } else {
            let (below, above) = (self.decode(lo - 1), self.decode(lo));
            let (db, da) = (a - below, above - a);
            if db < da || (db == da && (lo - 1) % 2 == 0) {
                lo - 1
            } else {
                lo
            }
        };
        code | sign
    }
}

/// The elements of a float8/float4 tensor as f32; `None` for other types.
pub(super) fn decode_tensor(t: &Tensor) -> Result<Option<Vec<f32>>> {
    let Some(f) = format(t.dtype()) else {
        return Ok(None);
    };
    let raw = t.raw()?;
    let n = t.len();
    Ok(Some(if f.bits() == 4 {
        (0..n)
            .map(|i| {
                let b = raw.get(i / 2).copied().unwrap_or(0);
                f.decode(if i % 2 == 0 { b & 0x0f } else { b >> 4 })
            })
            .collect()
    } else {
        raw.iter().take(n).map(|&b| f.decode(b)).collect()
    }))
}

/// A float8/float4 tensor of type `d` encoding `v`.
pub(super) fn encode_tensor(
    d: DType,
    shape: Vec<usize>,
    v: &[f32],
    saturate: bool,
) -> Result<Option<Tensor>> {
    let Some(f) = format(d) else {
        return Ok(None);
    };
    let codes: Vec<u8> = v.iter().map(|&x| f.encode(x, saturate)).collect();
    let bytes: Vec<u8> = if f.bits() == 4 {
        codes
            .chunks(2)
            .map(|c| {
                (c.first().copied().unwrap_or(0) & 0x0f) | (c.get(1).copied().unwrap_or(0) << 4)
            })
            .collect()
    } else {
        codes
    };
    Tensor::from_raw(d, shape, bytes.into()).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e4m3fn_values() {
        let f = format(DType::F8E4M3FN).unwrap();
        assert_eq!(f.decode(0x7e), 448.0);
        assert!(f.decode(0x7f).is_nan());
        assert_eq!(f.decode(0x01), 2f32.powi(-9));
        assert_eq!(f.encode(448.0, true), 0x7e);
        assert_eq!(f.encode(1000.0, true), 0x7e);
        assert_eq!(f.encode(f32::INFINITY, true), 0x7e);
        assert_eq!(f.encode(-1000.0, true), 0xfe);
        assert!(f.decode(f.encode(1000.0, false)).is_nan());
        // 1.0625 lies halfway between 1.0 (0x38) and 1.125 (0x39): ties to even.
        assert_eq!(f.encode(1.0625, true), 0x38);
        assert_eq!(f.encode(1.1875, true), 0x3a);
        for code in 0..0x7eu8 {
            assert_eq!(f.encode(f.decode(code), true), code);
        }
    }

    #[test]
    fn e5m2_and_e2m1_values() {
        let f = format(DType::F8E5M2).unwrap();
        assert_eq!(f.decode(0x7b), 57344.0);
        assert_eq!(f.decode(0x7c), f32::INFINITY);
        assert_eq!(f.encode(1e6, false), 0x7c);
        assert_eq!(f.encode(1e6, true), 0x7b);
        let g = format(FLOAT4E2M1).unwrap();
        let vals: Vec<f32> = (0..8).map(|c| g.decode(c)).collect();
        assert_eq!(vals, vec![0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]);
        assert_eq!(g.encode(2.5, true), 4); // tie between 2 (code 4) and 3 (code 5)
        assert_eq!(g.encode(-5.0, true), 0x8 | 6); // tie between 4 and 6 -> 4
        let t = encode_tensor(FLOAT4E2M1, vec![3], &[1.0, -6.0, 0.5], true)
            .unwrap()
            .unwrap();
        assert_eq!(t.raw().unwrap().as_ref(), &[0xf2, 0x01]);
        assert_eq!(decode_tensor(&t).unwrap().unwrap(), vec![1.0, -6.0, 0.5]);
    }
}
