//! The small dense linear algebra reconstruction needs: Gram matrices, cross products
//! and a ridge-damped Cholesky solve, all accumulated in f64.

use cc_ir::{Error, Result};

/// A row-major matrix of f64.
#[derive(Clone, Debug, PartialEq)]
pub struct Mat {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Elements, row-major.
    pub data: Vec<f64>,
}

impl Mat {
    /// A zero matrix.
    pub fn zeros(rows: usize, cols: usize) -> Mat {
        Mat {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }
    /// Element (r, c).
    pub fn at(&self, r: usize, c: usize) -> f64 {
        self.data[r * self.cols + c]
    }
}

/// Adds `Aᵀ·B` to `out` (`a`: rows×ka, `b`: rows×kb, row-major f32) in f64.
pub fn add_at_b(out: &mut Mat, a: &[f32], ka: usize, b: &[f32], kb: usize) {
    let rows = a.len().checked_div(ka).unwrap_or(0);
    let mut ar = vec![0f64; ka];
    let mut br = vec![0f64; kb];
    for r in 0..rows {
        for (d, &s) in ar.iter_mut().zip(&a[r * ka..(r + 1) * ka]) {
            *d = f64::from(s);
        }
        for (d, &s) in br.iter_mut().zip(&b[r * kb..(r + 1) * kb]) {
            *d = f64::from(s);
        }
        for (i, &x) in ar.iter().enumerate() {
            if x == 0.0 {
                continue;
            }
            let row = &mut out.data[i * kb..(i + 1) * kb];
            for (o, &y) in row.iter_mut().zip(&br) {
                *o += x * y;
            }
        }
    }
}

/// Solves `(G + λI) X = R + λ·P` for X by Cholesky, with `λ = damp · mean(diag G)`:
/// least squares damped towards the prior `P` (zero when `None`). `g`: n×n symmetric
/// positive semi-definite, `r` and `p`: n×m. If the factorization fails, the damping
/// grows tenfold and it retries (up to 6 times).
pub fn ridge_solve(g: &Mat, r: &Mat, damp: f64, prior: Option<&Mat>) -> Result<Mat> {
    let n = g.rows;
    if g.cols != n || r.rows != n || prior.is_some_and(|p| p.rows != n || p.cols != r.cols) {
        return Err(Error::invalid(format!(
            "ridge solve: Gram {}x{} and right-hand side {}x{} do not fit",
            g.rows, g.cols, r.rows, r.cols
        )));
    }
    let mean_diag = (0..n).map(|i| g.at(i, i)).sum::<f64>() / n.max(1) as f64;
    let base = if mean_diag > 0.0 { mean_diag } else { 1.0 };
    let mut lambda = damp.max(1e-12) * base;
    for _ in 0..6 {
        if let Some(l) = cholesky(g, lambda) {
            let mut rhs = r.clone();
            if let Some(p) = prior {
                for (d, s) in rhs.data.iter_mut().zip(&p.data) {
                    *d += lambda * s;
                }
            }
            return Ok(solve_with(&l, n, &rhs));
        }
        lambda *= 10.0;
    }
    Err(Error::invalid(
        "ridge solve: the Gram matrix is not positive definite even with damping",
    ))
}

/// Lower Cholesky factor of `g + λI`, or None when not positive definite.
fn cholesky(g: &Mat, lambda: f64) -> Option<Vec<f64>> {
    let n = g.rows;
    let mut l = vec![0f64; n * n];
    for j in 0..n {
        let mut d = g.at(j, j) + lambda;
        for k in 0..j {
            d -= l[j * n + k] * l[j * n + k];
        }
        if d <= 0.0 || !d.is_finite() {
            return None;
        }
        let d = d.sqrt();
        l[j * n + j] = d;
        for i in j + 1..n {
            let mut s = g.at(i, j);
            let (ri, rj) = (&l[i * n..i * n + j], &l[j * n..j * n + j]);
            for (a, b) in ri.iter().zip(rj) {
                s -= a * b;
            }
            l[i * n + j] = s / d;
        }
    }
    Some(l)
}

/// Solves `L Lᵀ X = R`.
fn solve_with(l: &[f64], n: usize, r: &Mat) -> Mat {
    let m = r.cols;
    let mut x = r.clone();
    // Forward: L Y = R.
    for i in 0..n {
        for k in 0..i {
            let f = l[i * n + k];
            if f != 0.0 {
                for c in 0..m {
                    x.data[i * m + c] -= f * x.data[k * m + c];
                }
            }
        }
        let d = l[i * n + i];
        for c in 0..m {
            x.data[i * m + c] /= d;
        }
    }
    // Backward: Lᵀ X = Y.
    for i in (0..n).rev() {
        for k in i + 1..n {
            let f = l[k * n + i];
            if f != 0.0 {
                for c in 0..m {
                    x.data[i * m + c] -= f * x.data[k * m + c];
                }
            }
        }
        let d = l[i * n + i];
        for c in 0..m {
            x.data[i * m + c] /= d;
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_squares_recovers_a_linear_map() {
        // y = 2*x0 - x1 over 4 samples.
        let a = [1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0, -1.0];
        let y: Vec<f32> = a.chunks(2).map(|r| 2.0 * r[0] - r[1]).collect();
        let mut g = Mat::zeros(2, 2);
        add_at_b(&mut g, &a, 2, &a, 2);
        let mut r = Mat::zeros(2, 1);
        add_at_b(&mut r, &a, 2, &y, 1);
        assert_eq!(g.at(0, 1), g.at(1, 0));
        let x = ridge_solve(&g, &r, 1e-9, None).unwrap();
        assert!((x.at(0, 0) - 2.0).abs() < 1e-6, "{x:?}");
        assert!((x.at(1, 0) + 1.0).abs() < 1e-6, "{x:?}");
    }

    #[test]
    fn singular_gram_is_damped() {
        // Two identical columns: singular without damping.
        let a = [1.0f32, 1.0, 2.0, 2.0];
        let mut g = Mat::zeros(2, 2);
        add_at_b(&mut g, &a, 2, &a, 2);
        let r = Mat {
            rows: 2,
            cols: 1,
            data: vec![5.0, 5.0],
        };
        let x = ridge_solve(&g, &r, 1e-6, None).unwrap();
        assert!((x.at(0, 0) - x.at(1, 0)).abs() < 1e-6, "{x:?}");
        assert!((x.at(0, 0) + x.at(1, 0) - 1.0).abs() < 1e-4, "{x:?}");
        assert!(ridge_solve(&g, &Mat::zeros(3, 1), 0.1, None).is_err());
        // Heavy damping towards a prior returns (nearly) the prior.
        let p = Mat {
            rows: 2,
            cols: 1,
            data: vec![7.0, -3.0],
        };
        let x = ridge_solve(&g, &Mat::zeros(2, 1), 1e9, Some(&p)).unwrap();
        assert!((x.at(0, 0) - 7.0).abs() < 1e-6 && (x.at(1, 0) + 3.0).abs() < 1e-6);
    }
}
