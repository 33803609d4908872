//! One-dimensional k-means (Lloyd's algorithm) over sorted values.
//!
//! With the values sorted once and prefix sums of `x` and `x²`, the clusters of sorted
//! centroids are contiguous runs split at the midpoints between neighbours, so one
//! Lloyd iteration costs `O(k log n)` (binary searches and prefix-sum differences), not
//! `O(n k)`. Initialisation is by quantiles or by k-means++ (D² sampling, also done with
//! prefix sums and binary searches), deterministic given the seed.

/// How the centroids start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// Centroid `j` at the `(j + 0.5) / k` quantile.
    Quantile,
    /// k-means++: first centroid uniform, each next one drawn with probability
    /// proportional to the squared distance to the nearest chosen one.
    PlusPlus,
}

/// Sorted values with prefix sums of their weights `w` (1 unless weighted), `w·x` and
/// `w·x²`: the error minimised is `Σ w (x − c)²`.
pub struct Sorted {
    x: Vec<f64>,
    /// `s0[i]` = sum of the weights of `x[..i]`.
    s0: Vec<f64>,
    /// `s1[i]` = sum of `w·x` over `x[..i]`.
    s1: Vec<f64>,
    /// `s2[i]` = sum of `w·x²` over `x[..i]`.
    s2: Vec<f64>,
}

impl Sorted {
    /// Sorts `values` (which must be finite) and builds the prefix sums (unit weights).
    #[cfg(test)]
    pub fn new(values: impl Iterator<Item = f32>) -> Sorted {
        Sorted::weighted(values.map(|x| (x, 1.0)))
    }

    /// Sorts `(value, weight)` pairs by value (values finite, weights positive) and
    /// builds the weighted prefix sums.
    pub fn weighted(pairs: impl Iterator<Item = (f32, f64)>) -> Sorted {
        let mut p: Vec<(f64, f64)> = pairs.map(|(x, w)| (f64::from(x), w)).collect();
        p.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let n = p.len() + 1;
        let (mut s0, mut s1, mut s2) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut z, mut a, mut b) = (0f64, 0f64, 0f64);
        s0.push(0.0);
        s1.push(0.0);
        s2.push(0.0);
        for &(v, w) in &p {
            z += w;
            a += w * v;
            b += w * v * v;
            s0.push(z);
            s1.push(a);
            s2.push(b);
        }
        Sorted {
            x: p.into_iter().map(|(v, _)| v).collect(),
            s0,
            s1,
            s2,
        }
    }

    fn len(&self) -> usize {
        self.x.len()
    }

    /// Sum of `(x - c)²` over sorted positions `lo..hi`.
    fn sse(&self, lo: usize, hi: usize, c: f64) -> f64 {
        let n = self.s0[hi] - self.s0[lo];
        let (a, b) = (self.s1[hi] - self.s1[lo], self.s2[hi] - self.s2[lo]);
        (b - 2.0 * c * a + c * c * n).max(0.0)
    }

    /// First position whose value is `>= t`.
    fn lower(&self, t: f64) -> usize {
        self.x.partition_point(|&v| v < t)
    }

    /// Cluster boundaries for sorted centroids `c`: cluster `j` is `b[j]..b[j + 1]`.
    fn bounds(&self, c: &[f64]) -> Vec<usize> {
        let mut b = Vec::with_capacity(c.len() + 1);
        b.push(0);
        for w in c.windows(2) {
            b.push(self.lower((w[0] + w[1]) / 2.0));
        }
        b.push(self.len());
        b
    }
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// k-means++ seeding: `k` centroids (sorted) drawn from the values.
fn plus_plus(s: &Sorted, k: usize, seed: u64) -> Vec<f64> {
    let n = s.len();
    let mut rng = Rng(seed);
    let first = ((rng.next_f64() * n as f64) as usize).min(n - 1);
    let mut c = vec![s.x[first]];
    while c.len() < k {
        // Nearest-centroid segments of the current (sorted) centroids and their costs.
        let b = s.bounds(&c);
        let costs: Vec<f64> = (0..c.len()).map(|j| s.sse(b[j], b[j + 1], c[j])).collect();
        let total: f64 = costs.iter().sum();
        if total <= 0.0 {
            break; // every value already is a centroid
        }
        let mut t = rng.next_f64() * total;
        let mut j = 0;
        while j + 1 < costs.len() && t >= costs[j] {
            t -= costs[j];
            j += 1;
        }
        // Within segment j: the first position where the running cost exceeds t.
        let (lo, hi, cj) = (b[j], b[j + 1], c[j]);
        let (mut a, mut z) = (lo, hi);
        while a + 1 < z {
            let mid = (a + z) / 2;
            if s.sse(lo, mid, cj) <= t {
                a = mid;
            } else {
                z = mid;
            }
        }
        let v = s.x[a.min(n - 1)];
        let at = c.partition_point(|&x| x < v);
        c.insert(at, v);
    }
    c
}

/// Clusters the values into at most `k` centroids with `iters` Lloyd iterations
/// (stopping early once the clusters no longer change). Returns the centroids, sorted;
/// fewer than `k` when there are fewer distinct values (no duplicates are returned).
pub fn kmeans(s: &Sorted, k: usize, iters: usize, init: Init, seed: u64) -> Vec<f64> {
    let n = s.len();
    if n == 0 || k == 0 {
        return vec![0.0];
    }
    let c: Vec<f64> = match init {
        Init::Quantile => {
            let total = s.s0[n];
            (0..k)
                .map(|j| {
                    let t = (j as f64 + 0.5) / k as f64 * total;
                    let at = s.s0.partition_point(|&z| z <= t).saturating_sub(1);
                    s.x[at.min(n - 1)]
                })
                .collect()
        }
        Init::PlusPlus => plus_plus(s, k, seed),
    };
    lloyd(s, c, iters)
}

/// Lloyd iterations from the given centroids (sorted); see [`kmeans`]. Each iteration
/// does not increase the error, so the result is never worse than the start.
pub fn lloyd(s: &Sorted, mut c: Vec<f64>, iters: usize) -> Vec<f64> {
    if s.len() == 0 || c.is_empty() {
        return vec![0.0];
    }
    c.sort_by(f64::total_cmp);
    c.dedup();
    let mut prev: Vec<usize> = Vec::new();
    for _ in 0..iters {
        let b = s.bounds(&c);
        if b == prev {
            break;
        }
        let mut next = Vec::with_capacity(c.len());
        for j in 0..c.len() {
            let (lo, hi) = (b[j], b[j + 1]);
            if hi > lo {
                let w = s.s0[hi] - s.s0[lo];
                next.push(if w > 0.0 {
                    (s.s1[hi] - s.s1[lo]) / w
                } else {
                    s.x[(lo + hi) / 2]
                });
            }
            // An empty cluster is dropped (its values went to neighbours).
        }
        c = next;
        c.dedup();
        prev = if c.len() + 1 == b.len() {
            b
        } else {
            Vec::new()
        };
    }
    c
}

/// Index of the centroid nearest to `x` in sorted `c` (ties to the lower one).
pub fn nearest(c: &[f64], x: f64) -> usize {
    let i = c.partition_point(|&v| v < x);
    if i == 0 {
        0
    } else if i >= c.len() {
        c.len() - 1
    } else if x - c[i - 1] <= c[i] - x {
        i - 1
    } else {
        i
    }
}

/// Total squared error of encoding the values with centroids `c`.
pub fn sse(s: &Sorted, c: &[f64]) -> f64 {
    let b = s.bounds(c);
    (0..c.len()).map(|j| s.sse(b[j], b[j + 1], c[j])).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute_sse(x: &[f32], c: &[f64]) -> f64 {
        x.iter()
            .map(|&v| {
                let v = f64::from(v);
                (v - c[nearest(c, v)]).powi(2)
            })
            .sum()
    }

    #[test]
    fn separated_clusters_are_found() {
        let x: Vec<f32> = (0..300)
            .map(|i| [-5.0, 0.0, 7.0][i % 3] + (i as f32 * 0.37).sin() * 0.1)
            .collect();
        let s = Sorted::new(x.iter().copied());
        for init in [Init::Quantile, Init::PlusPlus] {
            let c = kmeans(&s, 3, 50, init, 7);
            assert_eq!(c.len(), 3, "{init:?}");
            for (got, want) in c.iter().zip([-5.0, 0.0, 7.0]) {
                assert!((got - want).abs() < 0.05, "{init:?}: {c:?}");
            }
        }
    }

    #[test]
    fn prefix_sum_error_matches_brute_force_and_iterations_help() {
        let x: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919 % 1000) as f32 / 100.0).powi(2))
            .collect();
        let s = Sorted::new(x.iter().copied());
        let c0 = kmeans(&s, 16, 0, Init::Quantile, 0);
        let c = kmeans(&s, 16, 30, Init::Quantile, 0);
        let (e0, e) = (sse(&s, &c0), sse(&s, &c));
        assert!((e - brute_sse(&x, &c)).abs() <= 1e-6 * e.max(1.0));
        assert!(e < e0 * 0.9, "{e} vs {e0}");
    }

    #[test]
    fn weights_pull_centroids_towards_heavy_values() {
        // Two values, one centroid: the weighted mean.
        let s = Sorted::weighted([(0.0f32, 3.0), (4.0, 1.0)].into_iter());
        assert_eq!(kmeans(&s, 1, 10, Init::Quantile, 0), vec![1.0]);
        // Unit weights give what `new` gives.
        let x: Vec<f32> = (0..200).map(|i| (i as f32 * 0.37).sin()).collect();
        let a = kmeans(&Sorted::new(x.iter().copied()), 8, 50, Init::Quantile, 0);
        let b = kmeans(
            &Sorted::weighted(x.iter().map(|&v| (v, 1.0))),
            8,
            50,
            Init::Quantile,
            0,
        );
        assert_eq!(a, b);
    }

    #[test]
    fn few_distinct_values_give_few_centroids_and_same_seed_same_result() {
        let x = [1.0f32, 1.0, 2.0, 2.0, 2.0];
        let s = Sorted::new(x.iter().copied());
        assert_eq!(kmeans(&s, 16, 10, Init::Quantile, 0), vec![1.0, 2.0]);
        let y: Vec<f32> = (0..500).map(|i| (i as f32 * 0.731).sin()).collect();
        let s = Sorted::new(y.iter().copied());
        assert_eq!(
            kmeans(&s, 8, 5, Init::PlusPlus, 3),
            kmeans(&s, 8, 5, Init::PlusPlus, 3)
        );
        assert_eq!(nearest(&[0.0, 1.0], 0.5), 0);
        assert_eq!(nearest(&[0.0, 1.0], 0.6), 1);
        assert_eq!(nearest(&[0.0, 1.0], -3.0), 0);
    }
}
