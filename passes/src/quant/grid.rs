//! The rounding grid shared by round to nearest and GPTQ: which codes a weight may take
//! and how a range of values picks its scale and zero point.
//!
//! - Symmetric 8-bit codes use ±127 (0 exact, range balanced, what int8 kernels expect).
//! - Symmetric codes of fewer bits use the whole signed range, e.g. −8..7 for 4 bits:
//!   the value of largest magnitude maps to the most negative code (its scale takes
//!   that value's sign, so the scale may be negative), as onnxruntime's MatMulNBits
//!   quantizer does. One more level than ±7 means a finer step (|v|/8 instead of |v|/7);
//!   a value of the opposite sign and the same magnitude clamps to 7.
//! - Asymmetric codes use the whole unsigned range with a zero point, the range
//!   widened to hold 0 so that 0 stays exact.

/// Bits and signedness of the codes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Grid {
    /// Bits per code.
    pub bits: u32,
    /// Signed codes without zero point; else unsigned codes with one.
    pub symmetric: bool,
}

impl Grid {
    /// Smallest and largest code.
    pub fn code_range(self) -> (i32, i32) {
        let half = 1i32 << (self.bits - 1);
        match (self.symmetric, self.bits) {
            (true, 8) => (-(half - 1), half - 1),
            (true, _) => (-half, half - 1),
            (false, _) => (0, (1i32 << self.bits) - 1),
        }
    }

    /// Scale and zero point for values in `[lo, hi]` (a zero range gives scale 1).
    pub fn params(self, lo: f64, hi: f64) -> (f32, i32) {
        let (lo, hi) = (lo as f32, hi as f32);
        let (cmin, cmax) = self.code_range();
        if self.symmetric {
            let m = lo.abs().max(hi.abs());
            if m == 0.0 {
                return (1.0, 0);
            }
            if cmin == -cmax {
                return (m / cmax as f32, 0);
            }
            // The largest-magnitude value lands exactly on the most negative code.
            let v = if lo.abs() > hi.abs() { lo } else { hi };
            (v / cmin as f32, 0)
        } else {
            let (l, h) = (lo.min(0.0), hi.max(0.0));
            if h > l {
                let scale = (h - l) / (cmax - cmin) as f32;
                (scale, (-l / scale).round().clamp(0.0, cmax as f32) as i32)
            } else {
                (1.0, 0)
            }
        }
    }

    /// The code of `x` under `scale` and `zp`.
    pub fn code(self, x: f64, scale: f32, zp: i32) -> i32 {
        let (cmin, cmax) = self.code_range();
        ((x / f64::from(scale)).round() + f64::from(zp)).clamp(f64::from(cmin), f64::from(cmax))
            as i32
    }

    /// The code of `x` and its dequantized value.
    pub fn round(self, x: f64, scale: f32, zp: i32) -> (i32, f64) {
        let c = self.code(x, scale, zp);
        (c, f64::from((c - zp) as f32 * scale))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_bit_symmetric_uses_sixteen_levels_with_the_extreme_exact() {
        let g = Grid {
            bits: 4,
            symmetric: true,
        };
        assert_eq!(g.code_range(), (-8, 7));
        // Largest magnitude negative: positive scale, that value on -8.
        let (s, z) = g.params(-1.6, 0.9);
        assert_eq!((s, z), (0.2, 0));
        assert_eq!(g.round(-1.6, s, z), (-8, -1.6f32 as f64));
        // Largest magnitude positive: negative scale, so it maps to -8 too.
        let (s, _) = g.params(-0.5, 2.4);
        assert!(s < 0.0);
        let (c, d) = g.round(2.4, s, 0);
        assert_eq!(c, -8);
        assert!((d - 2.4).abs() < 1e-6);
        // The opposite extreme of the same magnitude clamps to 7.
        assert_eq!(g.code(-2.4, s, 0), 7);
    }

    #[test]
    fn eight_bit_symmetric_stays_balanced_and_asymmetric_keeps_zero_exact() {
        let g = Grid {
            bits: 8,
            symmetric: true,
        };
        assert_eq!(g.code_range(), (-127, 127));
        let (s, _) = g.params(-1.0, 2.54);
        assert!((s - 0.02).abs() < 1e-7);
        let g = Grid {
            bits: 4,
            symmetric: false,
        };
        let (s, z) = g.params(0.5, 2.0);
        assert_eq!(g.round(0.0, s, z).1, 0.0);
        assert_eq!(g.code(2.0, s, z), 15);
        assert_eq!(g.params(0.0, 0.0), (1.0, 0));
    }
}
