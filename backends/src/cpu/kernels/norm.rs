//! BatchNormalization (inference), LayerNormalization and Softmax on f32.

use super::{f32s, input, norm_axis};
use crate::cpu::parallel::{chunk_of, for_each_chunk};
use cc_ir::{Error, Result, Tensor};

/// BatchNormalization in inference mode: `(x - mean) / sqrt(var + eps) * scale + B` per
/// channel (axis 1).
pub fn batch_norm(inputs: &[Option<&Tensor>], epsilon: f32) -> Result<Tensor> {
    let x = input(inputs, 0)?;
    let xs = x.shape();
    if xs.len() < 2 {
        return Err(Error::invalid(format!(
            "BatchNormalization input {xs:?} has rank < 2"
        )));
    }
    let c = xs[1];
    let mut params = Vec::with_capacity(4);
    for (i, what) in [(1, "scale"), (2, "B"), (3, "mean"), (4, "var")] {
        let p = f32s(input(inputs, i)?)?;
        if p.len() != c {
            return Err(Error::invalid(format!(
                "BatchNormalization: {what} has {} elements for {c} channels",
                p.len()
            )));
        }
        params.push(p);
    }
    let (mul, add): (Vec<f32>, Vec<f32>) = (0..c)
        .map(|i| {
            let m = params[0][i] / (params[3][i] + epsilon).sqrt();
            (m, params[1][i] - params[2][i] * m)
        })
        .unzip();
    let xv = f32s(x)?;
    let size: usize = xs[2..].iter().product();
    if xv.len() != xs[0] * c * size {
        return Err(Error::invalid(
            "BatchNormalization: data does not match the shape",
        ));
    }
    let mut out = super::zeros(xs)?;
    if size > 0 {
        for_each_chunk(&mut out, size, &|p, o| {
            let s = chunk_of(&xv, p, size);
            let (m, a) = (mul[p % c], add[p % c]);
            for (o, &v) in o.iter_mut().zip(s) {
                *o = v * m + a;
            }
        });
    }
    Tensor::from_f32_vec(xs.to_vec(), out)
}

/// LayerNormalization (output Y only) over the axes from `axis` on; scale and bias
/// broadcast over the normalized block.
pub fn layer_norm(inputs: &[Option<&Tensor>], axis: i64, epsilon: f32) -> Result<Tensor> {
    let x = input(inputs, 0)?;
    let xs = x.shape();
    let a = norm_axis(axis, xs.len(), "LayerNormalization")?;
    let inner: usize = xs[a..].iter().product();
    let xv = f32s(x)?;
    let block = |i: usize, what: &str| -> Result<Option<Vec<f32>>> {
        let Some(t) = inputs.get(i).copied().flatten() else {
            return Ok(None);
        };
        let v = f32s(t)?;
        match v.len() {
            1 => Ok(Some(vec![v[0]; inner])),
            l if l == inner => Ok(Some(v.into_owned())),
            _ => Err(Error::invalid(format!(
                "LayerNormalization: {what} {:?} does not broadcast to {:?}",
                t.shape(),
                &xs[a..]
            ))),
        }
    };
    let scale =
        block(1, "scale")?.ok_or_else(|| Error::invalid("LayerNormalization: scale is missing"))?;
    let bias = block(2, "bias")?;
    let mut out = super::zeros(xs)?;
    if inner > 0 {
        for_each_chunk(&mut out, inner, &|r, o| {
            let s = chunk_of(&xv, r, inner);
            let mean = s.iter().map(|&v| v as f64).sum::<f64>() / inner as f64;
            let var = s.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / inner as f64;
            let inv = 1.0 / (var as f32 + epsilon).sqrt();
            let mean = mean as f32;
            for (j, (o, &v)) in o.iter_mut().zip(s).enumerate() {
                let y = (v - mean) * inv * scale[j];
                *o = match &bias {
                    Some(b) => y + b[j],
                    None => y,
                };
            }
        });
    }
    Tensor::from_f32_vec(xs.to_vec(), out)
}

/// Softmax along one axis (opset 13 semantics).
pub fn softmax(x: &Tensor, axis: i64) -> Result<Tensor> {
    let xs = x.shape();
    let rank = xs.len().max(1);
    let a = norm_axis(axis, rank, "Softmax")?;
    let dim = xs.get(a).copied().unwrap_or(1);
    let inner: usize = xs.get(a + 1..).map_or(1, |s| s.iter().product());
    let xv = f32s(x)?;
    let mut out = super::zeros(xs)?;
    let block = dim * inner;
    if block > 0 {
        for_each_chunk(&mut out, block, &|r, o| {
            let s = chunk_of(&xv, r, block);
            if inner == 1 {
                super::simd::softmax_row(o, s);
            } else {
                for i in 0..inner {
                    let m = (0..dim)
                        .map(|d| s[d * inner + i])
                        .fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0f32;
                    for d in 0..dim {
                        let e = super::simd::fast_exp(s[d * inner + i] - m);
                        o[d * inner + i] = e;
                        sum += e;
                    }
                    for d in 0..dim {
                        o[d * inner + i] /= sum;
                    }
                }
            }
        });
    }
    Tensor::from_f32_vec(xs.to_vec(), out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::kernels::test_util::{close, t};

    #[test]
    fn batch_norm_matches_formula() {
        let x = t(&[2, 3, 2, 2], 1);
        let p: Vec<Tensor> = (0..4).map(|i| t(&[3], 10 + i)).collect();
        let var = Tensor::from_f32(
            vec![3],
            p[3].to_f32().unwrap().iter().map(|v| v.abs()).collect(),
        )
        .unwrap();
        let out = batch_norm(
            &[Some(&x), Some(&p[0]), Some(&p[1]), Some(&p[2]), Some(&var)],
            1e-3,
        )
        .unwrap();
        let (xv, s, b, m, v) = (
            x.to_f32().unwrap(),
            p[0].to_f32().unwrap(),
            p[1].to_f32().unwrap(),
            p[2].to_f32().unwrap(),
            var.to_f32().unwrap(),
        );
        let want: Vec<f32> = xv
            .iter()
            .enumerate()
            .map(|(i, &xi)| {
                let c = (i / 4) % 3;
                (xi - m[c]) / (v[c] + 1e-3).sqrt() * s[c] + b[c]
            })
            .collect();
        close(&out.to_f32().unwrap(), &want);
        assert!(batch_norm(
            &[Some(&x), Some(&x), Some(&p[1]), Some(&p[2]), Some(&var)],
            1e-3
        )
        .is_err());
    }

    #[test]
    fn layer_norm_and_softmax() {
        let x = t(&[2, 3, 4], 1);
        let scale = t(&[3, 4], 2);
        let bias = t(&[3, 4], 3);
        let out = layer_norm(&[Some(&x), Some(&scale), Some(&bias)], 1, 1e-5).unwrap();
        let (xv, sv, bv) = (
            x.to_f32().unwrap(),
            scale.to_f32().unwrap(),
            bias.to_f32().unwrap(),
        );
        let mut want = vec![];
        for r in xv.chunks(12) {
            let mean = r.iter().sum::<f32>() / 12.0;
            let var = r.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 12.0;
            for (j, v) in r.iter().enumerate() {
                want.push((v - mean) / (var + 1e-5).sqrt() * sv[j] + bv[j]);
            }
        }
        close(&out.to_f32().unwrap(), &want);

        let sm = softmax(&x, 1).unwrap().to_f32().unwrap();
        for b in 0..2 {
            for i in 0..4 {
                let col: Vec<f32> = (0..3).map(|d| xv[b * 12 + d * 4 + i]).collect();
                let z: f32 = col.iter().map(|v| v.exp()).sum();
                for d in 0..3 {
                    assert!((sm[b * 12 + d * 4 + i] - col[d].exp() / z).abs() < 1e-6);
                }
            }
        }
        let last = softmax(&x, -1).unwrap().to_f32().unwrap();
        for r in last.chunks(4) {
            assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        assert!(softmax(&x, 3).is_err());
    }
}
