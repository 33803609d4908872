//! ConvInteger and QLinearConv: a direct N-D convolution over zero-point-adjusted i32
//! values (groups, strides, dilations, explicit or automatic padding), accumulated
//! exactly in i32. Padding contributes zero after the zero point is subtracted, which
//! is what padding with the input zero point means.

use super::quant::{
    int_range, int_tensor, minus_zero_point, output_zero_point, requant_factors, round_sat, IntArr,
    QLinear,
};
use cc_ir::op::ConvAttrs;
use cc_ir::{DType, Error, Result, Tensor};

/// Output geometry of a convolution: per spatial axis, output size and begin padding.
struct Geometry {
    out: Vec<usize>,
    pad_begin: Vec<usize>,
    strides: Vec<usize>,
    dilations: Vec<usize>,
}

/// A per-spatial-axis attribute with default `def`, checked for length and sign.
fn per_axis(v: &Option<Vec<i64>>, n: usize, def: i64, name: &str) -> Result<Vec<usize>> {
    let v = v.clone().unwrap_or_else(|| vec![def; n]);
    if v.len() != n {
        return Err(Error::invalid(format!(
            "{name} has {} values for {n} spatial axes",
            v.len()
        )));
    }
    v.into_iter()
        .map(|x| usize::try_from(x).map_err(|_| Error::invalid(format!("negative {name} {x}"))))
        .collect()
}

fn geometry(a: &ConvAttrs, x: &[usize], kernel: &[usize]) -> Result<Geometry> {
    let n = kernel.len();
    let strides = per_axis(&a.strides, n, 1, "strides")?;
    let dilations = per_axis(&a.dilations, n, 1, "dilations")?;
    if strides.contains(&0) || dilations.contains(&0) {
        return Err(Error::invalid("zero stride or dilation"));
    }
    let pads = per_axis(&a.pads, 2 * n, 0, "pads")?;
    let mut out = Vec::with_capacity(n);
    let mut pad_begin = Vec::with_capacity(n);
    for i in 0..n {
        let (xi, s) = (x[i], strides[i]);
        let dk = (kernel[i].saturating_sub(1)) * dilations[i] + 1;
        let (pb, pe) = match a.auto_pad.as_deref() {
            None | Some("NOTSET") => (pads[i], pads[i + n]),
            Some("VALID") => (0, 0),
            Some(mode @ ("SAME_UPPER" | "SAME_LOWER")) => {
                let o = xi.div_ceil(s);
                let total = ((o.saturating_sub(1)) * s + dk).saturating_sub(xi);
                if mode == "SAME_UPPER" {
                    (total / 2, total - total / 2)
                } else {
                    (total - total / 2, total / 2)
                }
            }
            Some(other) => return Err(Error::invalid(format!("unknown auto_pad {other:?}"))),
        };
        let padded = xi + pb + pe;
        if padded < dk {
            return Err(Error::invalid(format!(
                "kernel extent {dk} exceeds padded input {padded}"
            )));
        }
        out.push((padded - dk) / s + 1);
        pad_begin.push(pb);
    }
    Ok(Geometry {
        out,
        pad_begin,
        strides,
        dilations,
    })
}

/// The direct convolution of `x` [N, C, D...] with `w` [M, C/group, K...]: i32 output
/// [N, M, O...] and its shape.
fn conv_i32(a: &ConvAttrs, x: &IntArr, w: &IntArr) -> Result<IntArr> {
    let (xs, ws) = (&x.shape, &w.shape);
    if xs.len() < 3 || xs.len() != ws.len() {
        return Err(Error::invalid(format!(
            "convolution of input {xs:?} with weight {ws:?}"
        )));
    }
    let (nb, c, m, cg) = (xs[0], xs[1], ws[0], ws[1]);
    let group = usize::try_from(a.group()).map_err(|_| Error::invalid("negative group"))?;
    if group == 0 || cg * group != c || m % group != 0 {
        return Err(Error::invalid(format!(
            "input has {c} channels but weight {ws:?} with group {group}"
        )));
    }
    let kernel = &ws[2..];
    if let Some(k) = &a.kernel_shape {
        if k.iter().map(|&v| v as usize).ne(kernel.iter().copied()) {
            return Err(Error::invalid(format!(
                "kernel_shape {k:?} differs from the weight {ws:?}"
            )));
        }
    }
    let spatial = &xs[2..];
    let geo = geometry(a, spatial, kernel)?;
    let nsp = spatial.len();
    let in_size: usize = spatial.iter().product();
    let k_size: usize = kernel.iter().product();
    let o_size: usize = geo.out.iter().product();
    if x.data.len() != nb * c * in_size || w.data.len() != m * cg * k_size {
        return Err(Error::invalid("convolution operand smaller than its shape"));
    }
    // For each (output position, kernel position): the input offset, or None in padding.
    let mut taps: Vec<Option<usize>> = Vec::with_capacity(o_size * k_size);
    let mut opos = vec![0usize; nsp];
    for _ in 0..o_size {
        let mut kpos = vec![0usize; nsp];
        for _ in 0..k_size {
            let mut off = 0usize;
            let mut inside = true;
            for d in 0..nsp {
                let p = (opos[d] * geo.strides[d] + kpos[d] * geo.dilations[d]) as isize
                    - geo.pad_begin[d] as isize;
                if p < 0 || p as usize >= spatial[d] {
                    inside = false;
                    break;
                }
                off = off * spatial[d] + p as usize;
            }
            taps.push(inside.then_some(off));
            step(&mut kpos, kernel);
        }
        step(&mut opos, &geo.out);
    }
    let mpg = m / group;
    let mut out = vec![0i32; nb * m * o_size];
    for b in 0..nb {
        for oc in 0..m {
            let g = oc / mpg;
            let dst = &mut out[(b * m + oc) * o_size..(b * m + oc + 1) * o_size];
            for ic in 0..cg {
                let xin = &x.data[(b * c + g * cg + ic) * in_size..][..in_size];
                let wk = &w.data[(oc * cg + ic) * k_size..][..k_size];
                for (o, acc) in dst.iter_mut().enumerate() {
                    let t = &taps[o * k_size..(o + 1) * k_size];
                    let mut s = 0i32;
                    for (tap, &wv) in t.iter().zip(wk) {
                        if let Some(off) = tap {
                            s = s.wrapping_add(xin[*off].wrapping_mul(wv));
                        }
                    }
                    *acc = acc.wrapping_add(s);
                }
            }
        }
    }
    let mut shape = vec![nb, m];
    shape.extend(&geo.out);
    Ok(IntArr { shape, data: out })
}

/// Advances a row-major multi-index within `dims`.
fn step(pos: &mut [usize], dims: &[usize]) {
    for d in (0..pos.len()).rev() {
        pos[d] += 1;
        if pos[d] < dims[d] {
            return;
        }
        pos[d] = 0;
    }
}

/// ConvInteger: i32 convolution of zero-point-adjusted 8-bit data and weight (weight
/// zero point scalar or per output channel).
pub(super) fn conv_integer(
    a: &ConvAttrs,
    x: &Tensor,
    w: &Tensor,
    xzp: Option<&Tensor>,
    wzp: Option<&Tensor>,
) -> Result<Option<Vec<Tensor>>> {
    let what = "ConvInteger";
    if let Some(z) = xzp {
        if z.len() != 1 {
            return Err(Error::invalid(format!(
                "{what}: x_zero_point must be a scalar, got {:?}",
                z.shape()
            )));
        }
    }
    let (Some(xa), Some(wa)) = (
        minus_zero_point(x, xzp, 0, what)?,
        minus_zero_point(w, wzp, 0, what)?,
    ) else {
        return Ok(None);
    };
    let y = conv_i32(a, &xa, &wa)?;
    Ok(Some(vec![Tensor::from_i32(y.shape, y.data)?]))
}

/// QLinearConv: integer convolution plus the i32 bias, requantized per output channel
/// to the output zero point's type.
pub(super) fn qlinear_conv(
    a: &ConvAttrs,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    q: &QLinear<'_>,
) -> Result<Option<Vec<Tensor>>> {
    let what = "QLinearConv";
    let out = q.y_zp.map_or(x.dtype(), Tensor::dtype);
    let Some(range) = int_range(out) else {
        return Ok(None);
    };
    let (Some(xa), Some(wa)) = (
        minus_zero_point(x, q.a_zp, 0, what)?,
        minus_zero_point(w, q.b_zp, 0, what)?,
    ) else {
        return Ok(None);
    };
    let Some(factors) = requant_factors(q)? else {
        return Ok(None);
    };
    let Some(yz) = output_zero_point(q)? else {
        return Ok(None);
    };
    let m = wa.shape.first().copied().unwrap_or(0);
    let b = match bias {
        Some(b) if b.dtype() == DType::I32 && b.len() == m => b.to_i32()?,
        Some(b) => {
            return Err(Error::invalid(format!(
                "{what}: bias {} {:?} for {m} output channels",
                b.dtype(),
                b.shape()
            )))
        }
        None => vec![0; m],
    };
    if factors.len() != 1 && factors.len() != m {
        return Err(Error::invalid(format!(
            "{what}: {} weight scales for {m} output channels",
            factors.len()
        )));
    }
    let y = conv_i32(a, &xa, &wa)?;
    let o_size: usize = y.shape.get(2..).map_or(1, |s| s.iter().product());
    let vals: Vec<i32> = y
        .data
        .iter()
        .enumerate()
        .map(|(i, &acc)| {
            let ch = (i / o_size.max(1)) % m.max(1);
            let f = factors
                .get(if factors.len() == 1 { 0 } else { ch })
                .copied()
                .unwrap_or(0.0);
            let acc = acc.wrapping_add(b.get(ch).copied().unwrap_or(0));
            round_sat(
                (f64::from(acc) * f).round_ties_even() + f64::from(yz),
                range,
            )
        })
        .collect();
    Ok(Some(vec![int_tensor(out, y.shape, &vals)?]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_integer_with_padding_and_zero_points() {
        // x 1x1x3x3 = 1..9 with zero point 1 -> 0..8; w 1x1x2x2 all 1, pads 1.
        let x = Tensor::from_u8(vec![1, 1, 3, 3], (1..=9).collect()).unwrap();
        let w = Tensor::from_u8(vec![1, 1, 2, 2], vec![1; 4]).unwrap();
        let z = Tensor::from_u8(vec![], vec![1]).unwrap();
        let a = ConvAttrs {
            pads: Some(vec![1, 1, 1, 1]),
            ..ConvAttrs::default()
        };
        let y = conv_integer(&a, &x, &w, Some(&z), None).unwrap().unwrap();
        assert_eq!(y[0].shape(), &[1, 1, 4, 4]);
        assert_eq!(
            y[0].to_i32().unwrap(),
            vec![0, 1, 3, 2, 3, 8, 12, 7, 9, 20, 24, 13, 6, 13, 15, 8]
        );
    }

    #[test]
    fn groups_strides_and_same_padding() {
        // Two groups of one channel each; weight per group: [1, -1] on a 1-D input.
        let x = Tensor::from_i8(vec![1, 2, 4], vec![1, 2, 3, 4, 10, 20, 30, 40]).unwrap();
        let w = Tensor::from_i8(vec![2, 1, 2], vec![1, -1, 2, 0]).unwrap();
        let a = ConvAttrs {
            group: Some(2),
            strides: Some(vec![2]),
            auto_pad: Some("SAME_UPPER".into()),
            ..ConvAttrs::default()
        };
        let y = conv_integer(&a, &x, &w, None, None).unwrap().unwrap();
        assert_eq!(y[0].shape(), &[1, 2, 2]);
        assert_eq!(y[0].to_i32().unwrap(), vec![-1, -1, 20, 60]);
    }

    #[test]
    fn qlinear_conv_requantizes_per_channel_with_bias() {
        let x = Tensor::from_u8(vec![1, 1, 1, 2], vec![10, 20]).unwrap();
        let w = Tensor::from_i8(vec![2, 1, 1, 1], vec![1, -2]).unwrap();
        let f = |v: Vec<f32>| Tensor::from_f32(vec![v.len()], v).unwrap();
        let (sx, sw, sy) = (f(vec![0.5]), f(vec![1.0, 0.25]), f(vec![1.0]));
        let xz = Tensor::from_u8(vec![], vec![0]).unwrap();
        let yz = Tensor::from_u8(vec![], vec![100]).unwrap();
        let bias = Tensor::from_i32(vec![2], vec![1, 0]).unwrap();
        let q = QLinear {
            a_scale: &sx,
            a_zp: Some(&xz),
            b_scale: &sw,
            b_zp: None,
            y_scale: &sy,
            y_zp: Some(&yz),
        };
        let y = qlinear_conv(&ConvAttrs::default(), &x, &w, Some(&bias), &q)
            .unwrap()
            .unwrap();
        // ch0: (10+1)*0.5=5.5->6, (20+1)*0.5=10.5->10; ch1: -20*0.125=-2.5->-2, -40*0.125=-5.
        assert_eq!(y[0].to_u8().unwrap(), vec![106, 110, 98, 95]);
    }

    #[test]
    fn bad_channels_are_errors() {
        let x = Tensor::from_u8(vec![1, 3, 2, 2], vec![0; 12]).unwrap();
        let w = Tensor::from_u8(vec![1, 2, 1, 1], vec![0; 2]).unwrap();
        assert!(conv_integer(&ConvAttrs::default(), &x, &w, None, None).is_err());
    }
}
