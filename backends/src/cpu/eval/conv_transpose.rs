//! Reference ConvTranspose over any number of spatial dimensions (the fast kernel covers
//! the common 2-D cases; this covers the rest). Values compute in f64.

use super::array::{strides, Arr, Data};
use super::unary;
use cc_ir::op::ConvAttrs;
use cc_ir::{Error, Result};

/// Per spatial axis: stride, dilation, begin pad and output size, from the ONNX rules
/// (an explicit `output_shape`, or SAME auto-padding, derives the pads).
fn geometry(a: &ConvAttrs, xs: &[usize], ks: &[usize]) -> Result<Vec<(i64, i64, i64, i64)>> {
    let n = xs.len();
    let get = |v: &Option<Vec<i64>>, len: usize, default: i64, what: &str| match v {
        Some(v) if v.len() == len => Ok(v.clone()),
        Some(v) => Err(Error::invalid(format!(
            "ConvTranspose {what} has {} values for {n} spatial axes",
            v.len()
        ))),
        None => Ok(vec![default; len]),
    };
    let st = get(&a.strides, n, 1, "strides")?;
    let dil = get(&a.dilations, n, 1, "dilations")?;
    let opad = get(&a.output_padding, n, 0, "output_padding")?;
    let auto = a.auto_pad.as_deref().unwrap_or("NOTSET");
    let out_shape = match &a.output_shape {
        Some(s) if s.len() == n + 2 => Some(s[2..].to_vec()),
        Some(s) => Some(get(&Some(s.clone()), n, 0, "output_shape")?),
        None => None,
    };
    let pads = match auto {
        "NOTSET" => get(&a.pads, 2 * n, 0, "pads")?,
        "VALID" | "SAME_UPPER" | "SAME_LOWER" => vec![0; 2 * n],
        other => return Err(Error::invalid(format!("ConvTranspose auto_pad {other}"))),
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (x, k) = (xs[i] as i64, ks[i] as i64);
        let (s, d) = (st[i], dil[i]);
        if s < 1 || d < 1 {
            return Err(Error::invalid(
                "ConvTranspose strides and dilations must be positive",
            ));
        }
        let full = s * (x - 1) + opad[i] + (k - 1) * d + 1;
        let target = match (&out_shape, auto) {
            (Some(o), _) => Some(o[i]),
            (None, "SAME_UPPER" | "SAME_LOWER") => Some(x * s),
            _ => None,
        };
        let (pb, o) = match target {
            Some(o) => {
                // Floor division (as the ONNX reference): a negative total (an output
                // larger than the full result) leaves the begin pad at 0.
                let total = full - o;
                let pb = if auto == "SAME_UPPER" {
                    total.div_euclid(2)
                } else {
                    total - total.div_euclid(2)
                };
                (pb, o)
            }
            None => (pads[i], full - pads[i] - pads[i + n]),
        };
        if o < 0 {
            return Err(Error::invalid("ConvTranspose output size is negative"));
        }
        out.push((s, d, pb, o));
    }
    Ok(out)
}

/// ConvTranspose(X, W, B?) on float tensors; `Ok(None)` for other element types.
pub fn conv_transpose(a: &ConvAttrs, x: &Arr, w: &Arr, b: Option<&Arr>) -> Result<Option<Arr>> {
    let (Some(xv), Some(wv)) = (x.data.as_f64(), w.data.as_f64()) else {
        return Ok(None);
    };
    let bv = match b.map(|b| b.data.as_f64()) {
        Some(None) => return Ok(None),
        Some(Some(v)) => Some(v),
        None => None,
    };
    if x.rank() < 3 || w.rank() != x.rank() {
        return Err(Error::invalid(
            "ConvTranspose needs X and W of equal rank >= 3",
        ));
    }
    let group = usize::try_from(a.group()).unwrap_or(0);
    let (nb, c) = (x.shape[0], x.shape[1]);
    if group == 0 || c % group != 0 || w.shape[0] != c {
        return Err(Error::invalid(format!(
            "ConvTranspose: {c} input channels, weight {:?}, group {group}",
            w.shape
        )));
    }
    let (cg, mg) = (c / group, w.shape[1]);
    let m = mg * group;
    if bv.as_ref().is_some_and(|v| v.len() != m) {
        return Err(Error::invalid("ConvTranspose bias length differs from M"));
    }
    let geo = geometry(a, &x.shape[2..], &w.shape[2..])?;
    let mut yshape = vec![nb, m];
    yshape.extend(geo.iter().map(|g| g.3 as usize));
    let ysp: usize = yshape[2..].iter().product();
    let mut y = vec![0.0f64; nb * m * ysp];
    let xst = strides(&x.shape);
    let wst = strides(&w.shape);
    let yst = strides(&yshape);
    let xsp: Vec<usize> = x.shape[2..].to_vec();
    let ksp: Vec<usize> = w.shape[2..].to_vec();
    let xn: usize = xsp.iter().product();
    let kn: usize = ksp.iter().product();
    let unflat = |mut f: usize, dims: &[usize]| -> Vec<usize> {
        let mut idx = vec![0; dims.len()];
        for i in (0..dims.len()).rev() {
            idx[i] = f % dims[i].max(1);
            f /= dims[i].max(1);
        }
        idx
    };
    for n in 0..nb {
        for ci in 0..c {
            let g = ci / cg;
            for xf in 0..xn {
                let xi = unflat(xf, &xsp);
                let xval = xv[n * xst[0] + ci * xst[1] + xf];
                for kf in 0..kn {
                    let ki = unflat(kf, &ksp);
                    let mut yoff = 0usize;
                    let mut ok = true;
                    for (ax, &(s, d, pb, o)) in geo.iter().enumerate() {
                        let p = xi[ax] as i64 * s + ki[ax] as i64 * d - pb;
                        if !(0..o).contains(&p) {
                            ok = false;
                            break;
                        }
                        yoff += p as usize * yst[ax + 2];
                    }
                    if !ok {
                        continue;
                    }
                    for mi in 0..mg {
                        let wval = wv[ci * wst[0] + mi * wst[1] + kf];
                        y[n * yst[0] + (g * mg + mi) * yst[1] + yoff] += xval * wval;
                    }
                }
            }
        }
    }
    if let Some(bv) = bv {
        for (i, v) in y.iter_mut().enumerate() {
            *v += bv[(i / ysp) % m];
        }
    }
    let wide = Arr::new(yshape, Data::F64(y))?;
    unary::cast(&wide, x.dtype())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(shape: Vec<usize>, v: Vec<f32>) -> Arr {
        Arr::new(shape, Data::F32(v)).unwrap()
    }

    #[test]
    fn one_dimensional_strided_with_bias() {
        // x = [1, 2], w = [1, 10], stride 2: y = [1, 10, 2, 20] + 0.5.
        let x = f(vec![1, 1, 2], vec![1.0, 2.0]);
        let w = f(vec![1, 1, 2], vec![1.0, 10.0]);
        let b = f(vec![1], vec![0.5]);
        let a = ConvAttrs {
            strides: Some(vec![2]),
            ..ConvAttrs::default()
        };
        let y = conv_transpose(&a, &x, &w, Some(&b)).unwrap().unwrap();
        assert_eq!(y.shape, vec![1, 1, 4]);
        assert_eq!(y.data, Data::F32(vec![1.5, 10.5, 2.5, 20.5]));
    }

    #[test]
    fn overlap_pads_and_output_shape() {
        // Stride 1 overlaps: y = [1, 3, 2] for x = [1, 2], w = [1, 1].
        let x = f(vec![1, 1, 2], vec![1.0, 2.0]);
        let w = f(vec![1, 1, 2], vec![1.0, 1.0]);
        let y = conv_transpose(&ConvAttrs::default(), &x, &w, None)
            .unwrap()
            .unwrap();
        assert_eq!(y.data, Data::F32(vec![1.0, 3.0, 2.0]));
        let a = ConvAttrs {
            pads: Some(vec![1, 0]),
            ..ConvAttrs::default()
        };
        let y = conv_transpose(&a, &x, &w, None).unwrap().unwrap();
        assert_eq!(y.data, Data::F32(vec![3.0, 2.0]));
        let a = ConvAttrs {
            output_shape: Some(vec![2]),
            ..ConvAttrs::default()
        };
        // Total padding 1, SAME_LOWER-style split by default: begin 1.
        let y = conv_transpose(&a, &x, &w, None).unwrap().unwrap();
        assert_eq!(y.data, Data::F32(vec![3.0, 2.0]));
        // An output longer than the full result grows at the end.
        let a = ConvAttrs {
            output_shape: Some(vec![4]),
            ..ConvAttrs::default()
        };
        let y = conv_transpose(&a, &x, &w, None).unwrap().unwrap();
        assert_eq!(y.data, Data::F32(vec![1.0, 3.0, 2.0, 0.0]));
        let i = Arr::new(vec![1, 1, 2], Data::I64(vec![1, 2])).unwrap();
        assert!(conv_transpose(&ConvAttrs::default(), &i, &w, None)
            .unwrap()
            .is_none());
        let bad = f(vec![2, 1, 2], vec![0.0; 4]);
        assert!(conv_transpose(&ConvAttrs::default(), &x, &bad, None).is_err());
    }
}
