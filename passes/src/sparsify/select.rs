//! Which weights to zero, given an importance score per element.
//!
//! A weight is viewed as `[outer, r, inner]`, `r` the (flattened) reduction axes: for a
//! MatMul `[K, N]` that is `[1, K, N]`, for a Gemm `[N, K]` with transB `[N, K, 1]`, for
//! a Conv `[O, C, kh, kw]` `[O, C·kh·kw, 1]`. Orders are total (score, then position),
//! so ties are always broken the same way: the earlier element is zeroed first (and kept
//! last).

/// A weight's layout around its reduction axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Product of the axes before the reduction axes.
    pub outer: usize,
    /// Product of the reduction axes.
    pub r: usize,
    /// Product of the axes after them.
    pub inner: usize,
}

impl Layout {
    /// The layout of `shape` with reduction axes `axes.0..axes.1` (clamped to the rank).
    pub fn new(shape: &[usize], axes: (usize, usize)) -> Layout {
        let b = axes.1.min(shape.len());
        let a = axes.0.min(b);
        let prod = |s: &[usize]| s.iter().product::<usize>();
        Layout {
            outer: prod(shape.get(..a).unwrap_or_default()),
            r: prod(shape.get(a..b).unwrap_or_default()),
            inner: prod(shape.get(b..).unwrap_or_default()),
        }
    }

    /// Flat index of element `(o, k, i)`.
    pub fn at(&self, o: usize, k: usize, i: usize) -> usize {
        (o * self.r + k) * self.inner + i
    }
}

/// N:M: in every group of `m` consecutive elements along the reduction axes (the last
/// group padded with zeros when `r` is not a multiple of `m`), keeps the `n` with the
/// highest score and zeroes the rest of `w`. Returns the number of elements zeroed here
/// (whether or not they were zero before).
pub fn n_m(w: &mut [f32], score: &[f32], layout: Layout, n: usize, m: usize) -> usize {
    let mut zeroed = 0;
    let mut group: Vec<usize> = Vec::with_capacity(m);
    let sc = |i: usize| score.get(i).copied().unwrap_or(0.0);
    for o in 0..layout.outer {
        for i in 0..layout.inner {
            for start in (0..layout.r).step_by(m.max(1)) {
                group.clear();
                group.extend((start..(start + m).min(layout.r)).map(|k| layout.at(o, k, i)));
                // Highest score first; among equals, the earlier element first.
                group.sort_by(|&a, &b| sc(b).total_cmp(&sc(a)).then(a.cmp(&b)));
                for &idx in group.iter().skip(n) {
                    if let Some(x) = w.get_mut(idx) {
                        *x = 0.0;
                        zeroed += 1;
                    }
                }
            }
        }
    }
    zeroed
}

/// Unstructured per output: for every output (each `(outer, inner)` position), zeroes
/// the `round(ratio·r)` elements along the reduction axes with the lowest score (among
/// equals, the earlier). Wanda compares within an output like this.
pub fn per_output(w: &mut [f32], score: &[f32], layout: Layout, ratio: f64) {
    let k = (ratio * layout.r as f64).round() as usize;
    let sc = |i: usize| score.get(i).copied().unwrap_or(0.0);
    let mut row: Vec<usize> = Vec::with_capacity(layout.r);
    for o in 0..layout.outer {
        for i in 0..layout.inner {
            row.clear();
            row.extend((0..layout.r).map(|j| layout.at(o, j, i)));
            row.sort_by(|&a, &b| sc(a).total_cmp(&sc(b)).then(a.cmp(&b)));
            for &idx in row.iter().take(k) {
                if let Some(x) = w.get_mut(idx) {
                    *x = 0.0;
                }
            }
        }
    }
}

/// Unstructured: zeroes exactly `k` elements across `weights` — those with the lowest
/// score; among equal scores, the earlier weight, then the earlier element. `scores` run
/// parallel to `weights`.
pub fn smallest(weights: &mut [&mut [f32]], scores: &[&[f32]], k: usize) {
    if k == 0 {
        return;
    }
    let mut all: Vec<f32> = scores.iter().flat_map(|s| s.iter().copied()).collect();
    if k >= all.len() {
        for w in weights.iter_mut() {
            w.fill(0.0);
        }
        return;
    }
    let (_, t, _) = all.select_nth_unstable_by(k - 1, |a, b| a.total_cmp(b));
    let threshold = *t;
    // Everything strictly below the threshold goes; ties at it go in order until k.
    let below = all
        .iter()
        .filter(|s| s.total_cmp(&threshold).is_lt())
        .count();
    let mut ties = k.saturating_sub(below);
    for (w, s) in weights.iter_mut().zip(scores) {
        for (x, sc) in w.iter_mut().zip(s.iter()) {
            match sc.total_cmp(&threshold) {
                std::cmp::Ordering::Less => *x = 0.0,
                std::cmp::Ordering::Equal if ties > 0 => {
                    *x = 0.0;
                    ties -= 1;
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_of_matmul_gemm_trans_b_and_conv() {
        assert_eq!(
            Layout::new(&[8, 3], (0, 1)),
            Layout {
                outer: 1,
                r: 8,
                inner: 3
            }
        );
        assert_eq!(
            Layout::new(&[3, 8], (1, 2)),
            Layout {
                outer: 3,
                r: 8,
                inner: 1
            }
        );
        assert_eq!(
            Layout::new(&[4, 2, 3, 3], (1, 4)),
            Layout {
                outer: 4,
                r: 18,
                inner: 1
            }
        );
    }

    #[test]
    fn two_of_four_keeps_the_two_largest_per_group() {
        // One row of 8 along the reduction axis (Gemm transB layout).
        let mut w = vec![0.1, -0.9, 0.5, 0.2, 3.0, 2.0, -1.0, 0.0];
        let s: Vec<f32> = w.iter().map(|x: &f32| x.abs()).collect();
        let z = n_m(&mut w, &s, Layout::new(&[1, 8], (1, 2)), 2, 4);
        assert_eq!(w, vec![0.0, -0.9, 0.5, 0.0, 3.0, 2.0, 0.0, 0.0]);
        assert_eq!(z, 4);
    }

    #[test]
    fn groups_run_down_the_rows_of_a_matmul_weight() {
        // [K=4, N=2]: the groups are the columns.
        let mut w = vec![1.0, 8.0, 2.0, 7.0, 3.0, 6.0, 4.0, 5.0];
        let s: Vec<f32> = w.iter().map(|x: &f32| x.abs()).collect();
        n_m(&mut w, &s, Layout::new(&[4, 2], (0, 1)), 2, 4);
        assert_eq!(w, vec![0.0, 8.0, 0.0, 7.0, 3.0, 0.0, 4.0, 0.0]);
    }

    #[test]
    fn conv_groups_span_channels_and_kernel_and_pad_the_tail() {
        // [O=1, C=2, 1, 3]: r = 6 -> groups [0..4], [4..6] (padded: keeps both).
        let mut w = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let s = w.clone();
        n_m(&mut w, &s, Layout::new(&[1, 2, 1, 3], (1, 4)), 2, 4);
        assert_eq!(w, vec![0.0, 0.0, 3.0, 4.0, 5.0, 6.0]);
        // 1:4 keeps one of the tail pair.
        let mut w = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        n_m(&mut w, &s, Layout::new(&[1, 2, 1, 3], (1, 4)), 1, 4);
        assert_eq!(w, vec![0.0, 0.0, 0.0, 4.0, 0.0, 6.0]);
    }

    #[test]
    fn ties_are_broken_by_position() {
        let mut w = vec![1.0f32; 4];
        let s = w.clone();
        n_m(&mut w, &s, Layout::new(&[4], (0, 1)), 2, 4);
        assert_eq!(w, vec![1.0, 1.0, 0.0, 0.0]);
        let mut a = vec![1.0f32; 5];
        let mut b = vec![1.0f32; 5];
        let (sa, sb) = (a.clone(), b.clone());
        smallest(&mut [&mut a, &mut b], &[&sa, &sb], 7);
        assert_eq!(a, vec![0.0; 5]);
        assert_eq!(b, vec![0.0, 0.0, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn per_output_zeroes_the_same_count_in_every_output() {
        // MatMul [K=4, N=2]: outputs are the columns.
        let mut w = vec![1.0, -8.0, 2.0, 7.0, -3.0, 6.0, 4.0, 5.0];
        let s: Vec<f32> = w.iter().map(|x: &f32| x.abs()).collect();
        per_output(&mut w, &s, Layout::new(&[4, 2], (0, 1)), 0.5);
        assert_eq!(w, vec![0.0, -8.0, 0.0, 7.0, -3.0, 0.0, 4.0, 0.0]);
    }

    #[test]
    fn unstructured_zeroes_exactly_k() {
        let mut w: Vec<f32> = (0..101)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let s: Vec<f32> = w.iter().map(|x| x.abs()).collect();
        let orig = w.clone();
        smallest(&mut [&mut w], &[&s], 50);
        let zeros = w.iter().filter(|x| **x == 0.0).count();
        assert_eq!(zeros, 50);
        // Every kept element is at least as large as every zeroed one.
        let kept_min = w
            .iter()
            .filter(|x| **x != 0.0)
            .fold(f32::INFINITY, |m, x| m.min(x.abs()));
        let dropped_max = orig
            .iter()
            .zip(&w)
            .filter(|(_, n)| **n == 0.0)
            .fold(0f32, |m, (o, _)| m.max(o.abs()));
        assert!(dropped_max <= kept_min);
        let mut all = vec![1.0f32; 3];
        smallest(&mut [&mut all], &[&[0.0, 0.0, 0.0]], 9);
        assert_eq!(all, vec![0.0; 3]);
    }
}
