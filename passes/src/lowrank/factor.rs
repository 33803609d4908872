//! The matrices `lowrank` factors and the two layers it writes for each.
//!
//! - Dense (MatMul, Gemm): the weight as `[K, N]` (inputs × outputs); `X·W ≈ (X·A)·B`
//!   with `A = P` (`[K, r]`) and `B = Q` (`[r, N]`).
//! - Conv, spatial: `M[(c,y), (o,x)] = W[o,c,y,x]` (`C·kh × O·kw`); `A` is a `kh×1` conv
//!   `C→r` (`A[k,c,y,0] = P[(c,y),k]`) with the vertical stride/pad/dilation, `B` a
//!   `1×kw` conv `r→O` (`B[o,k,0,x] = Q[k,(o,x)]`) with the horizontal ones and the bias.
//! - Conv, channel: `M[c, (o,y,x)] = W[o,c,y,x]` (`C × O·kh·kw`); `A` is a 1x1 conv
//!   `C→r` (`A[k,c,0,0] = P[c,k]`), `B` a `kh×kw` conv `r→O` (`B[o,k,y,x] = Q[k,(o,y,x)]`)
//!   with the original geometry and the bias.
//!
//! In every case `W = P·Q` reshaped, so both are exact at full rank: zero padding
//! commutes with the linear first factor, and the first conv covers exactly the rows
//! (spatial) or pixels (channel) the second one reads.

use cc_ir::{Result, Tensor};

/// Which factorization a layer gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// MatMul/Gemm: `[K, N] = [K, r]·[r, N]`.
    Dense,
    /// Conv: `kh×1` then `1×kw`.
    Spatial,
    /// Conv: `1x1` then `kh×kw`.
    Channel,
}

impl Form {
    /// One-letter tag for the report.
    pub fn tag(self) -> &'static str {
        match self {
            Form::Dense => "",
            Form::Spatial => "s",
            Form::Channel => "c",
        }
    }
}

/// A conv weight's dimensions `[O, C, kh, kw]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvDims {
    /// Output channels.
    pub o: usize,
    /// Input channels.
    pub c: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
}

/// The `[m, n]` matrix of a conv weight `w` (`[O, C, kh, kw]` row-major) for `form`.
pub fn conv_matrix(w: &[f32], d: ConvDims, form: Form) -> (Vec<f64>, usize, usize) {
    let ConvDims { o, c, kh, kw } = d;
    let (m, n) = match form {
        Form::Spatial => (c * kh, o * kw),
        _ => (c, o * kh * kw),
    };
    let mut out = vec![0f64; m * n];
    for oi in 0..o {
        for ci in 0..c {
            for y in 0..kh {
                for x in 0..kw {
                    let v = f64::from(w[((oi * c + ci) * kh + y) * kw + x]);
                    let (r, col) = match form {
                        Form::Spatial => (ci * kh + y, oi * kw + x),
                        _ => (ci, (oi * kh + y) * kw + x),
                    };
                    out[r * n + col] = v;
                }
            }
        }
    }
    (out, m, n)
}

/// The conv weights `A` and `B` from `P` (`[m, r]`) and `Q` (`[r, n]`) for `form`.
pub fn conv_factors(
    p: &[f64],
    q: &[f64],
    r: usize,
    d: ConvDims,
    form: Form,
) -> Result<(Tensor, Tensor)> {
    let ConvDims { o, c, kh, kw } = d;
    match form {
        Form::Spatial => {
            let n = o * kw;
            let mut a = vec![0f32; r * c * kh];
            for k in 0..r {
                for ci in 0..c {
                    for y in 0..kh {
                        a[(k * c + ci) * kh + y] = p[(ci * kh + y) * r + k] as f32;
                    }
                }
            }
            let mut b = vec![0f32; o * r * kw];
            for oi in 0..o {
                for k in 0..r {
                    for x in 0..kw {
                        b[(oi * r + k) * kw + x] = q[k * n + oi * kw + x] as f32;
                    }
                }
            }
            Ok((
                Tensor::from_f32_vec(vec![r, c, kh, 1], a)?,
                Tensor::from_f32_vec(vec![o, r, 1, kw], b)?,
            ))
        }
        _ => {
            let n = o * kh * kw;
            let mut a = vec![0f32; r * c];
            for k in 0..r {
                for ci in 0..c {
                    a[k * c + ci] = p[ci * r + k] as f32;
                }
            }
            let mut b = vec![0f32; o * r * kh * kw];
            let hw = kh * kw;
            for oi in 0..o {
                for k in 0..r {
                    for s in 0..hw {
                        b[(oi * r + k) * hw + s] = q[k * n + oi * hw + s] as f32;
                    }
                }
            }
            Ok((
                Tensor::from_f32_vec(vec![r, c, 1, 1], a)?,
                Tensor::from_f32_vec(vec![o, r, kh, kw], b)?,
            ))
        }
    }
}

/// `P·Q` (`[m, r]·[r, n]`).
pub fn product(p: &[f64], q: &[f64], m: usize, r: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0f64; m * n];
    for i in 0..m {
        let row = &mut out[i * n..(i + 1) * n];
        for k in 0..r {
            let a = p[i * r + k];
            if a == 0.0 {
                continue;
            }
            for (o, &b) in row.iter_mut().zip(&q[k * n..(k + 1) * n]) {
                *o += a * b;
            }
        }
    }
    out
}

/// Transposes a row-major `m×n` matrix.
pub fn transpose(a: &[f64], m: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            out[j * m + i] = a[i * n + j];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_matrices_are_reshapes_and_factors_invert_them() {
        let d = ConvDims {
            o: 3,
            c: 2,
            kh: 2,
            kw: 3,
        };
        let w: Vec<f32> = (0..36).map(|i| i as f32).collect();
        for form in [Form::Spatial, Form::Channel] {
            let (mat, m, _) = conv_matrix(&w, d, form);
            // Factor as identity·M (r = m): A is the identity embedding.
            let mut p = vec![0f64; m * m];
            for i in 0..m {
                p[i * m + i] = 1.0;
            }
            let (a, b) = conv_factors(&p, &mat, m, d, form).unwrap();
            assert_eq!(a.shape()[0], m);
            // Composing the two conv weights gives W back.
            let (av, bv) = (a.to_f32().unwrap(), b.to_f32().unwrap());
            let (ah, aw) = (a.shape()[2], a.shape()[3]);
            let (bh, bw) = (b.shape()[2], b.shape()[3]);
            for o in 0..3 {
                for c in 0..2 {
                    for y in 0..2 {
                        for x in 0..3 {
                            let mut s = 0f32;
                            for k in 0..m {
                                let ay = if ah == 1 { 0 } else { y };
                                let ax = if aw == 1 { 0 } else { x };
                                let by = if bh == 1 { 0 } else { y };
                                let bx = if bw == 1 { 0 } else { x };
                                s += av[((k * 2 + c) * ah + ay) * aw + ax]
                                    * bv[((o * m + k) * bh + by) * bw + bx];
                            }
                            assert_eq!(s, w[((o * 2 + c) * 2 + y) * 3 + x], "{form:?}");
                        }
                    }
                }
            }
        }
    }
}
