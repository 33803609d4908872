//! Rank selection for `lowrank`.
//!
//! A factorization of an `m×n` matrix at rank `r` costs `r·(m+n)` parameters instead of
//! `m·n`; it is used only when that is strictly smaller. Its relative (Frobenius) error
//! is `sqrt(Σ_{i>r} σᵢ² / Σ σᵢ²)`, so the rank follows from the singular values:
//!
//! - `energy=e`: the smallest `r` with `Σ_{i≤r} σᵢ² ≥ e·Σ σᵢ²`;
//! - `keep=f`: the largest `r` with `r·(m+n) ≤ f·m·n`;
//! - `params=p` (global): see [`allocate`].

/// How ranks are chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Criterion {
    /// Keep this fraction of each layer's squared singular values.
    Energy(f64),
    /// Keep this fraction of each layer's parameters.
    Keep(f64),
    /// Keep this fraction of all selected layers' parameters, shared out globally.
    Params(f64),
}

/// The smallest rank whose leading singular values hold `e` of the energy (≥ 1).
pub fn energy_rank(s: &[f64], e: f64) -> usize {
    let total: f64 = s.iter().map(|x| x * x).sum();
    if total <= 0.0 {
        return 1.min(s.len());
    }
    let mut acc = 0.0;
    for (i, x) in s.iter().enumerate() {
        acc += x * x;
        // A small tolerance so that e = 1 reaches full rank despite rounding.
        if acc >= e * total * (1.0 - 1e-12) {
            return i + 1;
        }
    }
    s.len()
}

/// The largest rank with `r·(m+n) ≤ f·m·n`.
pub fn keep_rank(m: usize, n: usize, f: f64) -> usize {
    if m + n == 0 {
        return 0;
    }
    ((f * (m * n) as f64) / (m + n) as f64).floor().max(0.0) as usize
}

/// Relative Frobenius error of the rank-`r` truncation.
pub fn rel_error(s: &[f64], r: usize) -> f64 {
    let total: f64 = s.iter().map(|x| x * x).sum();
    if total <= 0.0 {
        return 0.0;
    }
    let tail: f64 = s.iter().skip(r).map(|x| x * x).sum();
    (tail / total).sqrt()
}

/// True when rank `r` strictly shrinks an `m×n` matrix.
pub fn shrinks(m: usize, n: usize, r: usize) -> bool {
    r >= 1 && r * (m + n) < m * n
}

/// One layer taking part in a global allocation: its matrix shape and singular values.
#[derive(Clone, Copy, Debug)]
pub struct Budgeted<'a> {
    /// Rows.
    pub m: usize,
    /// Columns.
    pub n: usize,
    /// Singular values, non-increasing.
    pub s: &'a [f64],
}

/// Global `params=p` allocation: ranks (`None` = the layer stays dense) so that the
/// selected layers together keep at most `p` of their parameters.
///
/// Every layer starts at `min_rank`. Then singular values are granted greedily in
/// order of their *normalized energy per parameter*, `σᵢ² / (‖W‖²·(m+n))`: the share
/// of the layer's own energy that one more rank buys, per parameter it costs (so layers
/// of different scale and shape compete fairly; within a layer the order is the
/// singular values' own, so each layer keeps a prefix). A value that does not fit the
/// remaining budget closes its layer. A layer whose rank ends up not shrinking it is
/// pinned dense (its full size is charged) and the allocation is redone without it,
/// until no layer changes side.
pub fn allocate(layers: &[Budgeted], p: f64, min_rank: usize) -> Vec<Option<usize>> {
    let total: usize = layers.iter().map(|l| l.m * l.n).sum();
    let budget = p * total as f64;
    let mut dense = vec![false; layers.len()];
    loop {
        let pinned: usize = layers
            .iter()
            .zip(&dense)
            .filter(|(_, &d)| d)
            .map(|(l, _)| l.m * l.n)
            .sum();
        let avail = budget - pinned as f64;
        let mut ranks: Vec<usize> = layers
            .iter()
            .map(|l| min_rank.min(l.s.len()).max(1.min(l.s.len())))
            .collect();
        let mut used: f64 = layers
            .iter()
            .zip(&ranks)
            .zip(&dense)
            .filter(|(_, &d)| !d)
            .map(|((l, &r), _)| (r * (l.m + l.n)) as f64)
            .sum();
        let mut cands: Vec<(f64, usize, usize)> = Vec::new();
        for (li, l) in layers.iter().enumerate() {
            if dense[li] {
                continue;
            }
            let energy: f64 = l.s.iter().map(|x| x * x).sum();
            if energy <= 0.0 {
                continue;
            }
            let c = (l.m + l.n) as f64;
            for (i, x) in l.s.iter().enumerate().skip(ranks[li]) {
                cands.push((x * x / (energy * c), li, i));
            }
        }
        cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut closed = vec![false; layers.len()];
        for (_, li, i) in cands {
            if closed[li] || i != ranks[li] {
                continue;
            }
            let c = (layers[li].m + layers[li].n) as f64;
            if used + c > avail {
                closed[li] = true;
                continue;
            }
            used += c;
            ranks[li] += 1;
        }
        let mut changed = false;
        for (li, l) in layers.iter().enumerate() {
            if !dense[li] && !shrinks(l.m, l.n, ranks[li]) {
                dense[li] = true;
                changed = true;
            }
        }
        if !changed {
            return ranks
                .into_iter()
                .zip(dense)
                .map(|(r, d)| (!d).then_some(r))
                .collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_and_keep_rules() {
        let s = [3.0, 2.0, 1.0, 0.0];
        // Energies 9, 4, 1 of 14.
        assert_eq!(energy_rank(&s, 0.5), 1);
        assert_eq!(energy_rank(&s, 9.0 / 14.0), 1);
        assert_eq!(energy_rank(&s, 0.9), 2);
        assert_eq!(energy_rank(&s, 1.0), 3);
        assert_eq!(keep_rank(100, 100, 0.5), 25);
        assert_eq!(keep_rank(64, 192, 0.75), 36);
        assert!((rel_error(&s, 1) - (5.0f64 / 14.0).sqrt()).abs() < 1e-12);
        assert_eq!(rel_error(&s, 3), 0.0);
        assert!(shrinks(4, 4, 1) && !shrinks(4, 4, 2) && !shrinks(4, 4, 0));
    }

    #[test]
    fn global_budget_prefers_cheap_normalized_energy_and_respects_the_budget() {
        // Layer 0: flat spectrum; layer 1: one dominant value. Same shape.
        let flat = vec![1.0; 32];
        let steep: Vec<f64> = (0..32).map(|i| 0.5f64.powi(i)).collect();
        let layers = [
            Budgeted {
                m: 32,
                n: 32,
                s: &flat,
            },
            Budgeted {
                m: 32,
                n: 32,
                s: &steep,
            },
        ];
        let r = allocate(&layers, 0.25, 1);
        let (r0, r1) = (r[0].unwrap(), r[1].unwrap());
        // 0.25·2048 = 512 params = 8 ranks of 64.
        assert!((r0 + r1) * 64 <= 512, "{r:?}");
        assert_eq!(r0 + r1, 8, "{r:?}");
        // The steep layer needs few ranks for nearly all its energy; the flat one gets
        // the rest.
        assert!(r1 <= 4 && r0 >= 4, "{r:?}");
        // A budget near 1 would give ranks that do not shrink: those layers stay dense.
        let r = allocate(&layers, 0.99, 1);
        assert!(r.iter().any(|x| x.is_none()), "{r:?}");
        let kept: usize = r.iter().map(|x| x.map_or(32 * 32, |r| r * 64)).sum();
        assert!(kept as f64 <= 0.99 * 2048.0, "{r:?}");
    }
}
