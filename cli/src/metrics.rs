//! Output statistics and the figures `cc-compile eval` reports: error between two
//! models' outputs, cosine similarity, top-1 agreement, accuracy against labels and
//! perplexity against next-token targets. Everything is computed in f64.

use cc_ir::{Error, Result, Tensor};

/// The elements of a numeric tensor (float, integer or bool) as f64.
pub fn to_f64(t: &Tensor) -> Result<Vec<f64>> {
    t.to_f64_numbers().map_err(|_| {
        Error::unsupported(format!("tensor of {} has no numeric statistics", t.dtype()))
    })
}

/// Minimum, maximum and mean of a tensor's elements.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    /// Smallest element (NaN for an empty tensor or when any element is NaN).
    pub min: f64,
    /// Largest element (NaN for an empty tensor or when any element is NaN).
    pub max: f64,
    /// Arithmetic mean (NaN for an empty tensor).
    pub mean: f64,
}

/// [`Stats`] of a slice of values.
pub fn stats(values: &[f64]) -> Stats {
    if values.is_empty() {
        return Stats {
            min: f64::NAN,
            max: f64::NAN,
            mean: f64::NAN,
        };
    }
    let mut min = f64::INFINITY;
    let mut max = f64::NEG_INFINITY;
    let mut sum = 0.0;
    for &v in values {
        if v.is_nan() {
            min = f64::NAN;
            max = f64::NAN;
        } else if !min.is_nan() {
            min = min.min(v);
            max = max.max(v);
        }
        sum += v;
    }
    Stats {
        min,
        max,
        mean: sum / values.len() as f64,
    }
}

/// Length of the last axis (1 for a scalar); rows are the slices along it.
pub fn row_len(shape: &[usize]) -> usize {
    shape.last().copied().unwrap_or(1)
}

/// Largest absolute difference between `got` and `want` (infinite if either has a NaN
/// where the other does not agree).
pub fn max_abs_error(got: &[f64], want: &[f64]) -> f64 {
    got.iter().zip(want).fold(0f64, |m, (a, b)| {
        if a.is_nan() || b.is_nan() {
            f64::INFINITY
        } else {
            m.max((a - b).abs())
        }
    })
}

/// Relative error in the max norm: largest absolute difference divided by the largest
/// magnitude of the reference `want`.
pub fn max_rel_error(got: &[f64], want: &[f64]) -> f64 {
    let scale = want.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-12);
    max_abs_error(got, want) / scale
}

/// Cosine similarity of two vectors; 1 when both are zero, 0 when only one is.
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    match (na == 0.0, nb == 0.0) {
        (true, true) => 1.0,
        (true, false) | (false, true) => 0.0,
        _ => dot / (na * nb),
    }
}

/// Mean over rows (slices of `row` elements) of the cosine similarity of `a` and `b`.
pub fn mean_row_cosine(a: &[f64], b: &[f64], row: usize) -> f64 {
    if row == 0 || a.is_empty() {
        return f64::NAN;
    }
    let rows: Vec<f64> = a
        .chunks(row)
        .zip(b.chunks(row))
        .map(|(x, y)| cosine(x, y))
        .collect();
    rows.iter().sum::<f64>() / rows.len() as f64
}

/// Index of the largest element of each row (the first one on ties; NaNs never win).
pub fn argmax_rows(values: &[f64], row: usize) -> Vec<usize> {
    if row == 0 {
        return Vec::new();
    }
    values
        .chunks(row)
        .map(|r| {
            let mut best = 0;
            for (i, &v) in r.iter().enumerate() {
                if let Some(&b) = r.get(best) {
                    if v > b || (b.is_nan() && !v.is_nan()) {
                        best = i;
                    }
                }
            }
            best
        })
        .collect()
}

/// Fraction of rows whose argmax is the same in `a` and `b`.
pub fn top1_agreement(a: &[f64], b: &[f64], row: usize) -> f64 {
    let (x, y) = (argmax_rows(a, row), argmax_rows(b, row));
    if x.is_empty() {
        return f64::NAN;
    }
    let same = x.iter().zip(&y).filter(|(p, q)| p == q).count();
    same as f64 / x.len() as f64
}

/// Correct predictions out of a total.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accuracy {
    /// Rows whose argmax equals the label.
    pub correct: usize,
    /// Number of labels.
    pub total: usize,
}

impl Accuracy {
    /// `correct / total` (NaN when there are no labels).
    pub fn fraction(&self) -> f64 {
        if self.total == 0 {
            f64::NAN
        } else {
            self.correct as f64 / self.total as f64
        }
    }
}

/// Accuracy of `logits` (rows of `row` scores, argmax = prediction) against one label
/// per row.
pub fn accuracy(logits: &[f64], row: usize, labels: &[i64]) -> Result<Accuracy> {
    let pred = argmax_rows(logits, row);
    if pred.len() != labels.len() {
        return Err(Error::invalid(format!(
            "{} labels for {} predictions (rows of {row})",
            labels.len(),
            pred.len()
        )));
    }
    let correct = pred
        .iter()
        .zip(labels)
        .filter(|(&p, &l)| i64::try_from(p).ok() == Some(l))
        .count();
    Ok(Accuracy {
        correct,
        total: labels.len(),
    })
}

/// Perplexity: exp of the mean negative log-likelihood of each target under the
/// log-softmax of its row of `row` logits, in f64.
pub fn perplexity(logits: &[f64], row: usize, targets: &[i64]) -> Result<f64> {
    if row == 0 || logits.len() != targets.len().saturating_mul(row) || targets.is_empty() {
        return Err(Error::invalid(format!(
            "{} targets for {} logits (rows of {row})",
            targets.len(),
            logits.len()
        )));
    }
    let mut nll = 0.0;
    for (r, &t) in logits.chunks(row).zip(targets) {
        let logit = usize::try_from(t)
            .ok()
            .and_then(|i| r.get(i))
            .copied()
            .ok_or_else(|| {
                Error::invalid(format!("target {t} is outside the vocabulary 0..{row}"))
            })?;
        let max = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + r.iter().map(|&x| (x - max).exp()).sum::<f64>().ln();
        nll += lse - logit;
    }
    Ok((nll / targets.len() as f64).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_values() {
        let s = stats(&[1.0, -3.0, 5.0, 1.0]);
        assert_eq!((s.min, s.max, s.mean), (-3.0, 5.0, 1.0));
        assert!(stats(&[]).mean.is_nan());
        assert!(stats(&[1.0, f64::NAN]).max.is_nan());
    }

    #[test]
    fn tensors_of_several_types_convert() {
        let t = Tensor::from_i64(vec![3], vec![1, -2, 7]).unwrap();
        assert_eq!(to_f64(&t).unwrap(), vec![1.0, -2.0, 7.0]);
        let t = Tensor::from_f32(vec![2], vec![0.5, -1.5]).unwrap();
        assert_eq!(to_f64(&t).unwrap(), vec![0.5, -1.5]);
        let s = Tensor::from_strings(vec![1], vec![b"a".to_vec()]).unwrap();
        assert!(to_f64(&s).is_err());
    }

    #[test]
    fn errors_in_abs_and_max_norm() {
        let want = [1.0, -4.0, 2.0];
        let got = [1.5, -4.0, 1.0];
        assert_eq!(max_abs_error(&got, &want), 1.0);
        assert_eq!(max_rel_error(&got, &want), 0.25);
        assert_eq!(max_abs_error(&[f64::NAN], &[0.0]), f64::INFINITY);
    }

    #[test]
    fn cosine_of_known_vectors() {
        assert!((cosine(&[1.0, 0.0], &[0.0, 2.0])).abs() < 1e-15);
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-15);
        assert!((cosine(&[1.0, 1.0], &[1.0, 0.0]) - 0.5f64.sqrt()).abs() < 1e-15);
        assert_eq!(cosine(&[0.0, 0.0], &[0.0, 0.0]), 1.0);
        // Rows [1,0]·[0,1] = 0 and [1,1]·[2,2] = 1: mean 0.5.
        let m = mean_row_cosine(&[1.0, 0.0, 1.0, 1.0], &[0.0, 1.0, 2.0, 2.0], 2);
        assert!((m - 0.5).abs() < 1e-15);
    }

    #[test]
    fn argmax_and_top1() {
        let a = [0.1, 0.9, 0.0, 3.0, 3.0, -1.0, f64::NAN, 1.0, 0.0];
        assert_eq!(argmax_rows(&a, 3), vec![1, 0, 1]);
        let b = [0.8, 0.1, 0.0, 0.0, 3.0, -1.0, 0.0, 2.0, 0.0];
        // rows: 1 vs 0 (differ), 0 vs 1 (differ), 1 vs 1 (agree)
        assert!((top1_agreement(&a, &b, 3) - 1.0 / 3.0).abs() < 1e-15);
        assert_eq!(top1_agreement(&a, &a, 3), 1.0);
    }

    #[test]
    fn accuracy_against_labels() {
        let logits = [0.0, 1.0, 5.0, 0.0, 0.2, 0.3, 0.1, 0.0];
        let acc = accuracy(&logits, 2, &[1, 0, 1, 1]).unwrap();
        assert_eq!(
            acc,
            Accuracy {
                correct: 3,
                total: 4
            }
        );
        assert_eq!(acc.fraction(), 0.75);
        assert!(accuracy(&logits, 2, &[1, 0]).is_err());
    }

    #[test]
    fn perplexity_of_known_distributions() {
        // Uniform logits over 4 symbols: perplexity 4 whatever the targets.
        let p = perplexity(&[0.0; 8], 4, &[0, 3]).unwrap();
        assert!((p - 4.0).abs() < 1e-12, "{p}");
        // Probabilities 1/2, 1/4, 1/4 (logits ln p): targets 0 and 1 give
        // NLL ln2 and ln4, mean 1.5 ln2, perplexity 2^1.5.
        let l = [0.5f64.ln(), 0.25f64.ln(), 0.25f64.ln()];
        let logits: Vec<f64> = l.iter().chain(&l).map(|x| x + 7.0).collect();
        let p = perplexity(&logits, 3, &[0, 1]).unwrap();
        assert!((p - 2f64.powf(1.5)).abs() < 1e-12, "{p}");
        assert!(perplexity(&logits, 3, &[0, 3]).is_err());
        assert!(perplexity(&logits, 3, &[0]).is_err());
    }
}
