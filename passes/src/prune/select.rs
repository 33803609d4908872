//! Which units to remove: local (per group) or global ranking, for a ratio or a
//! parameter/FLOP target, with `round_to` and never fewer than one unit kept.

use super::cost::CostModel;

/// What to aim for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// Remove this fraction of the units (of each group when local, of all candidate
    /// units when global).
    Ratio(f64),
    /// Keep at most this fraction of the model's parameters.
    Params(f64),
    /// Keep at most this fraction of the model's multiply-adds.
    Flops(f64),
}

/// How to choose.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plan {
    /// What to aim for.
    pub target: Target,
    /// Rank all units together (scores normalized per group) instead of per group.
    pub global: bool,
    /// Kept counts are rounded to a multiple of this (at least this many kept, unless
    /// the group has fewer units).
    pub round_to: usize,
}

/// The outcome: units to remove per candidate (sorted), and whether a params/FLOPs
/// target was reached.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    /// Sorted unit indices to remove, per candidate group.
    pub remove: Vec<Vec<usize>>,
    /// False when the target could not be reached by pruning every candidate down to
    /// its minimum.
    pub target_met: bool,
}

/// The fewest units a group of `units` may keep.
fn min_keep(units: usize, round_to: usize) -> usize {
    round_to.max(1).min(units)
}

/// `keep` rounded to the nearest multiple of `round_to` (within the group's bounds).
fn round_keep(keep: usize, units: usize, round_to: usize) -> usize {
    let r = round_to.max(1);
    let rounded = (keep + r / 2) / r * r;
    rounded.clamp(min_keep(units, r), units)
}

/// Units kept by a local ratio.
fn keep_local(units: usize, ratio: f64, round_to: usize) -> usize {
    let removed = (ratio * units as f64 + 1e-9).floor() as usize;
    round_keep(units.saturating_sub(removed), units, round_to)
}

/// Indices of the `n` lowest scores (ties: lower index first), sorted.
fn lowest(scores: &[f64], n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    let mut v: Vec<usize> = idx.into_iter().take(n).collect();
    v.sort_unstable();
    v
}

fn budget_met(target: Target, cost: &CostModel, removed: &[usize]) -> bool {
    let (p, f) = cost.predict(removed);
    match target {
        Target::Ratio(_) => true,
        Target::Params(x) => p as f64 <= x * cost.params as f64,
        Target::Flops(x) => f as f64 <= x * cost.flops as f64,
    }
}

/// Chooses units to remove. `scores[i]` are the importances of candidate `i`'s units.
pub fn select(scores: &[Vec<f64>], plan: &Plan, cost: &CostModel) -> Selection {
    let units: Vec<usize> = scores.iter().map(Vec::len).collect();
    let counts = if plan.global {
        global_counts(scores, plan, cost)
    } else {
        local_counts(&units, plan, cost)
    };
    let target_met = budget_met(plan.target, cost, &counts);
    let remove = scores
        .iter()
        .zip(&counts)
        .map(|(s, &n)| lowest(s, n.min(s.len())))
        .collect();
    Selection { remove, target_met }
}

/// Removal counts for local ranking.
fn local_counts(units: &[usize], plan: &Plan, cost: &CostModel) -> Vec<usize> {
    let at = |r: f64| -> Vec<usize> {
        units
            .iter()
            .map(|&u| u - keep_local(u, r, plan.round_to))
            .collect()
    };
    match plan.target {
        Target::Ratio(r) => at(r),
        target => {
            // The smallest uniform ratio that meets the budget (bisection; predicted
            // cost falls as the ratio grows).
            let (mut lo, mut hi) = (0.0f64, 1.0f64 - 1e-9);
            if !budget_met(target, cost, &at(hi)) {
                return at(hi);
            }
            for _ in 0..50 {
                let mid = 0.5 * (lo + hi);
                if budget_met(target, cost, &at(mid)) {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            at(hi)
        }
    }
}

/// Removal counts for global ranking: scores divided by their group's mean, lowest
/// first, skipping units of groups at their minimum.
fn global_counts(scores: &[Vec<f64>], plan: &Plan, cost: &CostModel) -> Vec<usize> {
    let mut pool: Vec<(f64, usize, usize)> = Vec::new();
    for (gi, s) in scores.iter().enumerate() {
        let mean = s.iter().sum::<f64>() / s.len().max(1) as f64;
        for (k, &x) in s.iter().enumerate() {
            let v = if mean > 0.0 { x / mean } else { 0.0 };
            pool.push((v, gi, k));
        }
    }
    pool.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let units: Vec<usize> = scores.iter().map(Vec::len).collect();
    let scaled = |t: Target, f: f64| match t {
        Target::Params(x) => Target::Params(x * f),
        Target::Flops(x) => Target::Flops(x * f),
        r => r,
    };
    // Rounding kept counts up to multiples of round_to keeps more than the ranking
    // chose: aim a little lower until the rounded choice meets the budget.
    let mut removed = Vec::new();
    for step in 0..40 {
        let aim = scaled(plan.target, 1.0 - 0.02 * f64::from(step));
        removed = greedy(&pool, &units, plan.round_to, aim, cost);
        if matches!(plan.target, Target::Ratio(_)) || budget_met(plan.target, cost, &removed) {
            break;
        }
    }
    removed
}

/// Removes the lowest-ranked units of `pool` until `target` is met (or the ratio of
/// all units is reached), then rounds kept counts up to multiples of `round_to`.
fn greedy(
    pool: &[(f64, usize, usize)],
    units: &[usize],
    round_to: usize,
    target: Target,
    cost: &CostModel,
) -> Vec<usize> {
    let total: usize = units.iter().sum();
    let mut removed = vec![0usize; units.len()];
    let want = match target {
        Target::Ratio(r) => (r * total as f64 + 1e-9).floor() as usize,
        _ => total,
    };
    let mut taken = 0usize;
    for &(_, gi, _) in pool {
        if taken >= want {
            break;
        }
        if !matches!(target, Target::Ratio(_)) && budget_met(target, cost, &removed) {
            break;
        }
        if units[gi] - removed[gi] <= min_keep(units[gi], round_to) {
            continue;
        }
        removed[gi] += 1;
        taken += 1;
    }
    // round_to: round each kept count up to a multiple (keeps more, never fewer).
    let r = round_to.max(1);
    for (gi, n) in removed.iter_mut().enumerate() {
        let keep = units[gi] - *n;
        let up = keep.div_ceil(r) * r;
        *n = units[gi] - up.clamp(min_keep(units[gi], r), units[gi]);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::ChannelGroup;
    use cc_ir::{Graph, Tensor};

    fn model(sizes: &[usize]) -> (Graph, Vec<ChannelGroup>) {
        let mut g = Graph::new("g");
        let mut groups = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let w = g
                .add_const(
                    &format!("w{i}"),
                    Tensor::from_f32(vec![n, 10], vec![1.0; n * 10]).unwrap(),
                )
                .unwrap();
            let y = g.add_value(&format!("y{i}"), None).unwrap();
            g.add_node(
                &format!("n{i}"),
                cc_ir::Op::Unary(cc_ir::op::UnaryOp::Neg),
                vec![Some(w)],
                vec![Some(y)],
            )
            .unwrap();
            groups.push(ChannelGroup::single_member(n, w, 0));
        }
        (g, groups)
    }

    fn plan(target: Target, global: bool, round_to: usize) -> Plan {
        Plan {
            target,
            global,
            round_to,
        }
    }

    #[test]
    fn local_ratio_round_to_and_floor() {
        let (g, groups) = model(&[10, 3, 1]);
        let refs: Vec<&ChannelGroup> = groups.iter().collect();
        let cost = CostModel::new(&g, &refs);
        let scores = vec![
            (0..10).map(|i| (10 - i) as f64).collect::<Vec<_>>(),
            vec![3.0, 1.0, 2.0],
            vec![1.0],
        ];
        let s = select(&scores, &plan(Target::Ratio(0.5), false, 1), &cost);
        assert_eq!(s.remove[0], vec![5, 6, 7, 8, 9]);
        assert_eq!(s.remove[1], vec![1]);
        assert!(s.remove[2].is_empty(), "never below one unit");
        let s = select(&scores, &plan(Target::Ratio(0.99), false, 4), &cost);
        assert_eq!(s.remove[0].len(), 6, "keeps 4");
        assert!(s.remove[1].is_empty(), "3 units < round_to 4: kept");
    }

    #[test]
    fn params_target_is_met_locally_and_globally() {
        let (g, groups) = model(&[20, 20]);
        let refs: Vec<&ChannelGroup> = groups.iter().collect();
        let cost = CostModel::new(&g, &refs);
        assert_eq!(cost.params, 400);
        let scores = vec![vec![1.0; 20], (0..20).map(|i| i as f64).collect()];
        for global in [false, true] {
            let s = select(&scores, &plan(Target::Params(0.45), global, 1), &cost);
            let removed: Vec<usize> = s.remove.iter().map(Vec::len).collect();
            let (p, _) = cost.predict(&removed);
            assert!(s.target_met && p <= 180, "{global}: {p}");
            assert!(p >= 160, "not over-pruned: {p}");
        }
        let s = select(&scores, &plan(Target::Params(0.01), false, 1), &cost);
        assert!(!s.target_met);
        assert_eq!(s.remove[0].len(), 19);
    }

    #[test]
    fn global_ratio_takes_lowest_normalized_scores() {
        let (g, groups) = model(&[4, 4]);
        let refs: Vec<&ChannelGroup> = groups.iter().collect();
        let cost = CostModel::new(&g, &refs);
        let scores = vec![vec![1.0, 1.0, 1.0, 1.0], vec![0.1, 0.1, 1.9, 1.9]];
        let s = select(&scores, &plan(Target::Ratio(0.25), true, 1), &cost);
        assert_eq!(s.remove, vec![Vec::<usize>::new(), vec![0, 1]]);
    }

    #[test]
    fn global_target_with_round_to_still_meets_the_budget() {
        let (g, groups) = model(&[24, 24, 24]);
        let refs: Vec<&ChannelGroup> = groups.iter().collect();
        let cost = CostModel::new(&g, &refs);
        let scores: Vec<Vec<f64>> = (0..3)
            .map(|j| {
                (0..24)
                    .map(|i| ((i * 7 + j * 5) % 24) as f64 + 1.0)
                    .collect()
            })
            .collect();
        let s = select(&scores, &plan(Target::Params(0.5), true, 8), &cost);
        assert!(s.target_met);
        for r in &s.remove {
            assert_eq!((24 - r.len()) % 8, 0, "kept {}", 24 - r.len());
        }
    }
}
