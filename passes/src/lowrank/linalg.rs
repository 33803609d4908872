//! Dense f64 linear algebra for `lowrank` through faer, always sequential (`Par::Seq`)
//! so that results do not depend on the thread count; matrices are row-major `Vec<f64>`.

use cc_ir::{Error, Result};
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::svd::{svd, svd_scratch, ComputeSvdVectors};
use faer::{Mat, Par};

/// A thin SVD `M = U·diag(s)·Vᵀ` of an `m×n` matrix, `k = min(m, n)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Svd {
    /// Rows of the matrix.
    pub m: usize,
    /// Columns of the matrix.
    pub n: usize,
    /// Left singular vectors, `m×k` row-major.
    pub u: Vec<f64>,
    /// Singular values, non-increasing.
    pub s: Vec<f64>,
    /// Right singular vectors, `n×k` row-major.
    pub v: Vec<f64>,
}

impl Svd {
    /// `min(m, n)`.
    pub fn k(&self) -> usize {
        self.s.len()
    }
}

fn to_faer(a: &[f64], m: usize, n: usize) -> Mat<f64> {
    Mat::from_fn(m, n, |i, j| a[i * n + j])
}

/// The thin SVD of the row-major `m×n` matrix `a`.
pub fn thin_svd(a: &[f64], m: usize, n: usize) -> Result<Svd> {
    svd_imp(a, m, n, true)
}

/// The singular values of the row-major `m×n` matrix `a` only (`u` and `v` empty):
/// much cheaper than [`thin_svd`].
pub fn singular_values(a: &[f64], m: usize, n: usize) -> Result<Svd> {
    svd_imp(a, m, n, false)
}

fn svd_imp(a: &[f64], m: usize, n: usize, vectors: bool) -> Result<Svd> {
    if a.len() != m * n {
        return Err(Error::invalid(format!(
            "svd: {} elements for a {m}x{n} matrix",
            a.len()
        )));
    }
    if a.iter().any(|x| !x.is_finite()) {
        return Err(Error::invalid("svd: the matrix has non-finite elements"));
    }
    let k = m.min(n);
    let fa = to_faer(a, m, n);
    let mut s = faer::diag::Diag::<f64>::zeros(k);
    let (um, vn) = if vectors { (m, n) } else { (0, 0) };
    let mut u = Mat::<f64>::zeros(um, k);
    let mut v = Mat::<f64>::zeros(vn, k);
    let par = Par::Seq;
    let compute = if vectors {
        ComputeSvdVectors::Thin
    } else {
        ComputeSvdVectors::No
    };
    let req = svd_scratch::<f64>(m, n, compute, compute, par, Default::default());
    let mut buf = MemBuffer::new(req);
    svd(
        fa.as_ref(),
        s.as_mut(),
        vectors.then(|| u.as_mut()),
        vectors.then(|| v.as_mut()),
        par,
        MemStack::new(&mut buf),
        Default::default(),
    )
    .map_err(|e| Error::invalid(format!("svd of a {m}x{n} matrix did not converge: {e:?}")))?;
    let sv: Vec<f64> = (0..k).map(|i| s[i]).collect();
    let mut uv = vec![0f64; um * k];
    for i in 0..um {
        for j in 0..k {
            uv[i * k + j] = u[(i, j)];
        }
    }
    let mut vv = vec![0f64; vn * k];
    for i in 0..vn {
        for j in 0..k {
            vv[i * k + j] = v[(i, j)];
        }
    }
    Ok(Svd {
        m,
        n,
        u: uv,
        s: sv,
        v: vv,
    })
}

/// The lower Cholesky factor `L` (row-major `n×n`) of `G + λI` with
/// `λ = damp·mean(diag G)`; the damping grows tenfold (up to 6 times) while the
/// factorization fails.
pub fn damped_cholesky(g: &[f64], n: usize, damp: f64) -> Result<Vec<f64>> {
    if g.len() != n * n {
        return Err(Error::invalid("cholesky: Gram matrix of the wrong size"));
    }
    let mean = (0..n).map(|i| g[i * n + i]).sum::<f64>() / n.max(1) as f64;
    let base = if mean > 0.0 && mean.is_finite() {
        mean
    } else {
        1.0
    };
    let mut lambda = damp.max(1e-12) * base;
    for _ in 0..7 {
        let mut a = Mat::from_fn(n, n, |i, j| {
            g[i * n + j] + if i == j { lambda } else { 0.0 }
        });
        let par = Par::Seq;
        let req = faer::linalg::cholesky::llt::factor::cholesky_in_place_scratch::<f64>(
            n,
            par,
            Default::default(),
        );
        let mut buf = MemBuffer::new(req);
        let ok = faer::linalg::cholesky::llt::factor::cholesky_in_place(
            a.as_mut(),
            Default::default(),
            par,
            MemStack::new(&mut buf),
            Default::default(),
        );
        if ok.is_ok() {
            let mut l = vec![0f64; n * n];
            for i in 0..n {
                for j in 0..=i {
                    l[i * n + j] = a[(i, j)];
                }
            }
            if l.iter().all(|x| x.is_finite()) {
                return Ok(l);
            }
        }
        lambda *= 10.0;
    }
    Err(Error::invalid(
        "cholesky: the input Gram matrix is not positive definite even with damping",
    ))
}

/// Solves `Lᵀ·Z = R` for `Z` (`L`: lower `n×n`, `R`: `n×c`, both row-major).
pub fn solve_lt(l: &[f64], n: usize, r: &[f64], c: usize) -> Vec<f64> {
    let fl = to_faer(l, n, n);
    let mut z = to_faer(r, n, c);
    faer::linalg::triangular_solve::solve_upper_triangular_in_place(
        fl.as_ref().transpose(),
        z.as_mut(),
        Par::Seq,
    );
    let mut out = vec![0f64; n * c];
    for i in 0..n {
        for j in 0..c {
            out[i * c + j] = z[(i, j)];
        }
    }
    out
}

/// `Lᵀ·W` for lower `L` (`n×n`) and `W` (`n×c`), row-major.
pub fn lt_times(l: &[f64], n: usize, w: &[f64], c: usize) -> Vec<f64> {
    let fl = to_faer(l, n, n);
    let fw = to_faer(w, n, c);
    let p = fl.transpose() * fw;
    let mut out = vec![0f64; n * c];
    for i in 0..n {
        for j in 0..c {
            out[i * c + j] = p[(i, j)];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for p in 0..k {
                for j in 0..n {
                    out[i * n + j] += a[i * k + p] * b[p * n + j];
                }
            }
        }
        out
    }

    #[test]
    fn svd_reconstructs_and_sorts() {
        let (m, n) = (5, 3);
        let a: Vec<f64> = (0..m * n).map(|i| ((i * 7 % 11) as f64) - 5.0).collect();
        let d = thin_svd(&a, m, n).unwrap();
        assert!(d.s.windows(2).all(|w| w[0] >= w[1]));
        let k = d.k();
        let mut us = d.u.clone();
        for i in 0..m {
            for j in 0..k {
                us[i * k + j] *= d.s[j];
            }
        }
        let mut vt = vec![0f64; k * n];
        for i in 0..n {
            for j in 0..k {
                vt[j * n + i] = d.v[i * k + j];
            }
        }
        let back = matmul(&us, &vt, m, k, n);
        for (x, y) in a.iter().zip(&back) {
            assert!((x - y).abs() < 1e-10, "{x} vs {y}");
        }
        assert!(thin_svd(&[f64::NAN], 1, 1).is_err());
        let only = singular_values(&a, m, n).unwrap();
        assert!(only.u.is_empty() && only.v.is_empty());
        for (x, y) in only.s.iter().zip(&d.s) {
            assert!((x - y).abs() < 1e-10);
        }
    }

    #[test]
    fn cholesky_solves() {
        let g = [4.0, 2.0, 2.0, 3.0];
        let l = damped_cholesky(&g, 2, 1e-12).unwrap();
        assert!((l[0] - 2.0).abs() < 1e-9 && l[1] == 0.0);
        let r = [1.0, 2.0];
        let z = solve_lt(&l, 2, &r, 1);
        let back = lt_times(&l, 2, &z, 1);
        assert!((back[0] - 1.0).abs() < 1e-9 && (back[1] - 2.0).abs() < 1e-9);
        // A singular Gram matrix is damped into a factor.
        assert!(damped_cholesky(&[1.0, 1.0, 1.0, 1.0], 2, 1e-6).is_ok());
    }
}
