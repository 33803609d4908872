//! Reference BatchNormalization, in inference and in training mode (the fast kernel
//! covers inference on f32). Values compute in f64.

use super::array::{Arr, Data};
use super::unary;
use cc_ir::{Error, Result};

/// BatchNormalization(X, scale, B, mean, var). In training mode the statistics are the
/// batch's (mean and population variance over every axis but 1) and the outputs are Y
/// and the updated running mean and variance (`running * momentum + batch * (1 -
/// momentum)`); otherwise Y alone from the given statistics. `Ok(None)` for non-float
/// types.
pub fn batch_norm(
    inputs: [&Arr; 5],
    epsilon: f64,
    momentum: f64,
    training: bool,
) -> Result<Option<Vec<Arr>>> {
    let [x, scale, bias, mean, var] = inputs;
    let (Some(xv), Some(sv), Some(bv), Some(mv), Some(vv)) = (
        x.data.as_f64(),
        scale.data.as_f64(),
        bias.data.as_f64(),
        mean.data.as_f64(),
        var.data.as_f64(),
    ) else {
        return Ok(None);
    };
    if x.rank() < 2 {
        return Err(Error::invalid("BatchNormalization input needs rank >= 2"));
    }
    let c = x.shape[1];
    if [&sv, &bv, &mv, &vv].iter().any(|v| v.len() != c) {
        return Err(Error::invalid(format!(
            "BatchNormalization parameters must have {c} elements (the channel count)"
        )));
    }
    let inner: usize = x.shape[2..].iter().product();
    let chan = |i: usize| (i / inner.max(1)) % c;
    let (use_mean, use_var) = if training {
        let count = (xv.len() / c.max(1)).max(1) as f64;
        let mut bm = vec![0.0f64; c];
        for (i, &v) in xv.iter().enumerate() {
            bm[chan(i)] += v;
        }
        bm.iter_mut().for_each(|m| *m /= count);
        let mut bvar = vec![0.0f64; c];
        for (i, &v) in xv.iter().enumerate() {
            let d = v - bm[chan(i)];
            bvar[chan(i)] += d * d;
        }
        bvar.iter_mut().for_each(|v| *v /= count);
        (bm, bvar)
    } else {
        (mv.clone(), vv.clone())
    };
    let y: Vec<f64> = xv
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let k = chan(i);
            (v - use_mean[k]) / (use_var[k] + epsilon).sqrt() * sv[k] + bv[k]
        })
        .collect();
    let back = |shape: Vec<usize>, v: Vec<f64>, like: &Arr| -> Result<Option<Arr>> {
        unary::cast(&Arr::new(shape, Data::F64(v))?, like.dtype())
    };
    let Some(y) = back(x.shape.clone(), y, x)? else {
        return Ok(None);
    };
    let mut outs = vec![y];
    if training {
        let run = |r: &[f64], b: &[f64]| -> Vec<f64> {
            r.iter()
                .zip(b)
                .map(|(&r, &b)| r * momentum + b * (1.0 - momentum))
                .collect()
        };
        for (r, b, like) in [(&mv, &use_mean, mean), (&vv, &use_var, var)] {
            match back(like.shape.clone(), run(r, b), like)? {
                Some(a) => outs.push(a),
                None => return Ok(None),
            }
        }
    }
    Ok(Some(outs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(shape: Vec<usize>, v: Vec<f32>) -> Arr {
        Arr::new(shape, Data::F32(v)).unwrap()
    }

    #[test]
    fn training_uses_batch_statistics() {
        // One channel, values 1 and 3: batch mean 2, variance 1.
        let x = f(vec![2, 1], vec![1.0, 3.0]);
        let one = f(vec![1], vec![1.0]);
        let zero = f(vec![1], vec![0.0]);
        let outs = batch_norm([&x, &one, &zero, &zero, &one], 0.0, 0.5, true)
            .unwrap()
            .unwrap();
        assert_eq!(outs[0].data, Data::F32(vec![-1.0, 1.0]));
        assert_eq!(outs[1].data, Data::F32(vec![1.0]));
        assert_eq!(outs[2].data, Data::F32(vec![1.0]));
        let inf = batch_norm([&x, &one, &zero, &zero, &one], 0.0, 0.5, false)
            .unwrap()
            .unwrap();
        assert_eq!(inf.len(), 1);
        assert_eq!(inf[0].data, Data::F32(vec![1.0, 3.0]));
        let two = f(vec![2], vec![1.0, 1.0]);
        assert!(batch_norm([&x, &two, &zero, &zero, &one], 0.0, 0.5, true).is_err());
    }
}
