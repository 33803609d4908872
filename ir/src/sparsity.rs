//! Sparsity annotations on weights.
//!
//! A pass that zeroes weights (`sparsify`) records what it guarantees on the value
//! ([`crate::Value::sparsity`]): the pattern (unstructured, or N:M along the reduction
//! axes), the number of zeros, and how the ONNX writer should store the weight. The
//! printer shows it on the weight's line; the ONNX writer stores the weight dense unless
//! [`SparseEncoding::SparseInitializer`] is asked for, in which case it writes a COO
//! `SparseTensorProto` in `graph.sparse_initializer` (see [`crate::onnx`]).

use crate::tensor::Tensor;
use std::fmt;

/// Which elements are zero.
#[derive(Clone, Debug, PartialEq)]
pub enum SparsityPattern {
    /// Any elements: `ratio` is the fraction asked to be zero.
    Unstructured {
        /// Fraction of elements zeroed (0..=1).
        ratio: f64,
    },
    /// In every group of `m` consecutive elements along the reduction axes, at most `n`
    /// are nonzero (NVIDIA's 2:4 sparse tensor cores use n=2, m=4).
    NM {
        /// Nonzeros kept per group.
        n: usize,
        /// Group length.
        m: usize,
        /// The reduction axes `axes.0..axes.1` (flattened, row-major) the groups run
        /// along: `0..1` for a MatMul `[K, N]`, `1..2` for a Gemm `[N, K]` with transB,
        /// `1..4` for a Conv `[O, C, kh, kw]`.
        axes: (usize, usize),
    },
}

/// How the ONNX writer stores a sparse weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SparseEncoding {
    /// A dense initializer (zeros included).
    #[default]
    Dense,
    /// A COO `SparseTensorProto` (values + int64 flat indices) in
    /// `graph.sparse_initializer`.
    SparseInitializer,
}

/// The sparsity recorded on a weight.
#[derive(Clone, Debug, PartialEq)]
pub struct Sparsity {
    /// The pattern the zeros follow.
    pub pattern: SparsityPattern,
    /// Number of zero elements.
    pub zeros: usize,
    /// Number of elements.
    pub len: usize,
    /// How the weight is written to ONNX.
    pub encoding: SparseEncoding,
}

impl Sparsity {
    /// The annotation for `t` with `pattern`, its zeros counted.
    pub fn of(t: &Tensor, pattern: SparsityPattern, encoding: SparseEncoding) -> Sparsity {
        Sparsity {
            pattern,
            zeros: count_zeros(t),
            len: t.len(),
            encoding,
        }
    }

    /// Fraction of elements that are zero.
    pub fn fraction(&self) -> f64 {
        if self.len == 0 {
            0.0
        } else {
            self.zeros as f64 / self.len as f64
        }
    }
}

impl fmt::Display for SparsityPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SparsityPattern::Unstructured { ratio } => write!(f, "unstructured:{ratio}"),
            SparsityPattern::NM { n, m, axes } => write!(f, "{n}:{m}@{}..{}", axes.0, axes.1),
        }
    }
}

impl fmt::Display for Sparsity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sparsity={} zeros={}/{} ({:.2}%)",
            self.pattern,
            self.zeros,
            self.len,
            100.0 * self.fraction()
        )?;
        if self.encoding == SparseEncoding::SparseInitializer {
            f.write_str(" encoding=sparse_initializer")?;
        }
        Ok(())
    }
}

/// Parses the text [`SparsityPattern`]'s `Display` writes (`unstructured:0.5`,
/// `2:4@0..1`); `None` if it is not one.
pub fn parse_pattern(s: &str) -> Option<SparsityPattern> {
    if let Some(r) = s.strip_prefix("unstructured:") {
        let ratio: f64 = r.parse().ok()?;
        return (0.0..=1.0)
            .contains(&ratio)
            .then_some(SparsityPattern::Unstructured { ratio });
    }
    let (nm, axes) = s.split_once('@')?;
    let (n, m) = nm.split_once(':')?;
    let (a, b) = axes.split_once("..")?;
    let (n, m, a, b) = (
        n.parse().ok()?,
        m.parse().ok()?,
        a.parse().ok()?,
        b.parse().ok()?,
    );
    (n <= m && m > 0 && a < b).then_some(SparsityPattern::NM { n, m, axes: (a, b) })
}

/// Number of elements of `t` equal to zero (either sign); 0 for non-float tensors.
pub fn count_zeros(t: &Tensor) -> usize {
    match t.to_f64_numbers() {
        Ok(v) if t.dtype().is_float() => v.iter().filter(|x| **x == 0.0).count(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        for p in [
            SparsityPattern::Unstructured { ratio: 0.5 },
            SparsityPattern::NM {
                n: 2,
                m: 4,
                axes: (1, 4),
            },
        ] {
            assert_eq!(parse_pattern(&p.to_string()), Some(p));
        }
        assert_eq!(parse_pattern("2:4"), None);
        assert_eq!(parse_pattern("unstructured:2"), None);
        assert_eq!(parse_pattern("5:4@0..1"), None);
    }

    #[test]
    fn counts_zeros_and_prints() {
        let t = Tensor::from_f32(vec![4], vec![0.0, -0.0, 1.0, 2.0]).unwrap();
        let s = Sparsity::of(
            &t,
            SparsityPattern::NM {
                n: 2,
                m: 4,
                axes: (0, 1),
            },
            SparseEncoding::SparseInitializer,
        );
        assert_eq!(s.zeros, 2);
        assert_eq!(
            s.to_string(),
            "sparsity=2:4@0..1 zeros=2/4 (50.00%) encoding=sparse_initializer"
        );
    }
}
