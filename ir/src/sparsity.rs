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

/// True when `w` (of `shape`) has at most `n` nonzeros in every group of `m`
/// consecutive elements along the axes `axes.0..axes.1` (the last group of a row
/// padded with zeros).
pub fn n_m_holds(w: &[f32], shape: &[usize], n: usize, m: usize, axes: (usize, usize)) -> bool {
    let b = axes.1.min(shape.len());
    let a = axes.0.min(b);
    let prod = |s: Option<&[usize]>| s.unwrap_or_default().iter().product::<usize>();
    let (outer, r, inner) = (
        prod(shape.get(..a)),
        prod(shape.get(a..b)),
        prod(shape.get(b..)),
    );
    if outer * r * inner != w.len() || m == 0 {
        return false;
    }
    (0..outer).all(|o| {
        (0..inner).all(|i| {
            (0..r).step_by(m).all(|start| {
                let nonzero = (start..(start + m).min(r))
                    .filter(|k| w.get((o * r + k) * inner + i).is_some_and(|x| *x != 0.0))
                    .count();
                nonzero <= n
            })
        })
    })
}

/// Re-checks every sparsity annotation of `g` against its weight (after a pass changed
/// the graph): the zero count is updated from the data (dequantized or decoded for a
/// compressed weight), and an annotation whose weight no longer follows its N:M pattern
/// (a later pass refitted or reshaped it) is dropped. Weights whose data cannot be read
/// keep their annotation.
pub fn refresh(g: &mut crate::graph::Graph) {
    use crate::compressed::Compressed;
    let annotated: Vec<_> = g
        .value_ids()
        .filter(|&v| g.value(v).sparsity.is_some())
        .collect();
    for v in annotated {
        let val = g.value(v);
        let dense: Option<(Vec<f32>, Vec<usize>)> = if let Some(t) = &val.data {
            t.f32_view()
                .ok()
                .map(|w| (w.into_owned(), t.shape().to_vec()))
        } else if let Some(Compressed::Quantized(q)) = &val.compressed {
            crate::compressed::dequantize(q)
                .ok()
                .map(|w| (w, q.q.shape().to_vec()))
        } else if let Some(Compressed::Codebook(c)) = &val.compressed {
            let shape = val.ty.as_ref().and_then(|t| t.shape()).and_then(|d| {
                d.iter()
                    .map(|x| x.known().and_then(|k| usize::try_from(k).ok()))
                    .collect()
            });
            crate::compressed::codebook::decode(c).ok().zip(shape)
        } else {
            None
        };
        let (Some((w, shape)), Some(old)) = (dense, val.sparsity.clone()) else {
            continue;
        };
        let holds = match old.pattern {
            SparsityPattern::NM { n, m, axes } => n_m_holds(&w, &shape, n, m, axes),
            SparsityPattern::Unstructured { .. } => true,
        };
        let zeros = w.iter().filter(|x| **x == 0.0).count();
        g.value_mut(v).sparsity = holds.then_some(Sparsity {
            zeros,
            len: w.len(),
            ..old
        });
    }
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
    fn n_m_check_and_refresh_drop_broken_patterns() {
        // [K=4, N=2] with 2:4 along K: column 0 keeps 2, column 1 keeps 3.
        let w = [1.0, 1.0, 0.0, 2.0, 3.0, 3.0, 0.0, 0.0];
        assert!(!n_m_holds(&w, &[4, 2], 2, 4, (0, 1)));
        assert!(n_m_holds(&w, &[4, 2], 3, 4, (0, 1)));
        // [2, 4] along the rows: [1, 1, 0, 2] keeps 3.
        assert!(!n_m_holds(&w, &[2, 4], 2, 4, (1, 2)));
        assert!(n_m_holds(&w, &[2, 4], 3, 4, (1, 2)));
        let mut g = crate::graph::Graph::new("g");
        let t = Tensor::from_f32(vec![4, 2], w.to_vec()).unwrap();
        let v = g.add_const("w", t.clone()).unwrap();
        let pattern = |n| SparsityPattern::NM {
            n,
            m: 4,
            axes: (0, 1),
        };
        g.value_mut(v).sparsity = Some(Sparsity {
            zeros: 0,
            ..Sparsity::of(&t, pattern(3), SparseEncoding::Dense)
        });
        refresh(&mut g);
        assert_eq!(g.value(v).sparsity.as_ref().map(|s| s.zeros), Some(3));
        g.value_mut(v).sparsity = Some(Sparsity::of(&t, pattern(2), SparseEncoding::Dense));
        refresh(&mut g);
        assert_eq!(g.value(v).sparsity, None);
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
