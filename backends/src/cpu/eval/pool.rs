//! Reference MaxPool and AveragePool over any number of spatial dimensions (the fast
//! kernels cover the common 2-D f32 cases; this covers the rest). Values compute in f64.

use super::array::{Arr, Data};
use super::unary;
use cc_ir::op::PoolAttrs;
use cc_ir::{Error, Result};

/// Per spatial axis: input size, kernel, stride, dilation, begin pad, end pad, output size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Axis {
    size: i64,
    kernel: i64,
    stride: i64,
    dilation: i64,
    pad_begin: i64,
    pad_end: i64,
    out: i64,
}

fn attr_or(v: &Option<Vec<i64>>, n: usize, default: i64, what: &str) -> Result<Vec<i64>> {
    match v {
        Some(v) if v.len() == n => Ok(v.clone()),
        Some(v) => Err(Error::invalid(format!(
            "pool {what} has {} values for {n} spatial axes",
            v.len()
        ))),
        None => Ok(vec![default; n]),
    }
}

/// The geometry of every spatial axis of `shape` (N, C, spatial...), following the ONNX
/// output-size rules (opset 22: with `ceil_mode`, a last window that would start in the
/// end padding is dropped).
fn axes(a: &PoolAttrs, shape: &[usize]) -> Result<Vec<Axis>> {
    let n = shape.len().saturating_sub(2);
    let kernel = a
        .kernel_shape
        .clone()
        .ok_or_else(|| Error::invalid("pool without kernel_shape"))?;
    let kernel = attr_or(&Some(kernel), n, 1, "kernel_shape")?;
    let strides = attr_or(&a.strides, n, 1, "strides")?;
    let dil = attr_or(&a.dilations, n, 1, "dilations")?;
    let pads = attr_or(&a.pads, 2 * n, 0, "pads")?;
    let ceil = a.ceil_mode.unwrap_or(0) != 0;
    let auto = a.auto_pad.as_deref().unwrap_or("NOTSET");
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (size, k, s, d) = (shape[i + 2] as i64, kernel[i], strides[i], dil[i]);
        if k < 1 || s < 1 || d < 1 {
            return Err(Error::invalid(
                "pool kernel, strides and dilations must be positive",
            ));
        }
        let span = (k - 1) * d + 1;
        let (pb, pe, o) = match auto {
            "NOTSET" => {
                let (pb, pe) = (pads[i], pads[i + n]);
                let room = size + pb + pe - span;
                if room < 0 {
                    return Err(Error::invalid("pool window larger than the padded input"));
                }
                let mut o = if ceil { (room + s - 1) / s } else { room / s } + 1;
                if ceil && (o - 1) * s >= size + pb {
                    o -= 1;
                }
                (pb, pe, o)
            }
            "VALID" => {
                if size < span {
                    return Err(Error::invalid("pool window larger than the input"));
                }
                (0, 0, (size - span) / s + 1)
            }
            "SAME_UPPER" | "SAME_LOWER" => {
                let o = (size + s - 1) / s;
                let total = ((o - 1) * s + span - size).max(0);
                let small = total / 2;
                if auto == "SAME_UPPER" {
                    (small, total - small, o)
                } else {
                    (total - small, small, o)
                }
            }
            other => return Err(Error::invalid(format!("pool auto_pad {other}"))),
        };
        out.push(Axis {
            size,
            kernel: k,
            stride: s,
            dilation: d,
            pad_begin: pb,
            pad_end: pe,
            out: o,
        });
    }
    Ok(out)
}

/// Calls `f` with every multi-index of `dims` in row-major order.
fn for_each_index(dims: &[i64], mut f: impl FnMut(&[i64])) {
    if dims.iter().any(|&d| d <= 0) {
        return;
    }
    let mut idx = vec![0i64; dims.len()];
    loop {
        f(&idx);
        let mut i = dims.len();
        loop {
            if i == 0 {
                return;
            }
            i -= 1;
            idx[i] += 1;
            if idx[i] < dims[i] {
                break;
            }
            idx[i] = 0;
        }
    }
}

/// MaxPool (`average` false; with `want_indices`, also the flat index of each maximum:
/// batch and channel row-major, the spatial position row-major, or column-major with
/// `storage_order` 1) or AveragePool. `Ok(None)` for unsupported element types.
pub fn pool(a: &PoolAttrs, x: &Arr, average: bool, want_indices: bool) -> Result<Option<Vec<Arr>>> {
    if x.rank() < 3 {
        return Ok(None);
    }
    let column_major = a.storage_order.unwrap_or(0) != 0;
    let Some(v) = x.data.as_f64().or_else(|| match x.data {
        Data::U8(_) | Data::I8(_) if !average => x
            .data
            .as_i64()
            .map(|v| v.into_iter().map(|i| i as f64).collect()),
        _ => None,
    }) else {
        return Ok(None);
    };
    let ax = axes(a, &x.shape)?;
    let include_pad = a.count_include_pad.unwrap_or(0) != 0;
    let (nb, ch) = (x.shape[0], x.shape[1]);
    let spatial: Vec<i64> = ax.iter().map(|a| a.size).collect();
    let plane: i64 = spatial.iter().product();
    let out_dims: Vec<i64> = ax.iter().map(|a| a.out).collect();
    let kernel: Vec<i64> = ax.iter().map(|a| a.kernel).collect();
    let mut vals = Vec::new();
    let mut idxs = Vec::new();
    for b in 0..nb * ch {
        let base = b as i64 * plane;
        for_each_index(&out_dims, |o| {
            let (mut best, mut best_at) = (f64::NEG_INFINITY, -1i64);
            let (mut sum, mut count) = (0.0f64, 0i64);
            for_each_index(&kernel, |k| {
                let (mut flat, mut col) = (0i64, 0i64);
                let mut inside = true;
                let mut in_pads = true;
                for (i, a) in ax.iter().enumerate() {
                    let p = o[i] * a.stride - a.pad_begin + k[i] * a.dilation;
                    inside &= (0..a.size).contains(&p);
                    in_pads &= (-a.pad_begin..a.size + a.pad_end).contains(&p);
                    flat = flat * a.size + p;
                }
                for (i, a) in ax.iter().enumerate().rev() {
                    col = col * a.size + (o[i] * a.stride - a.pad_begin + k[i] * a.dilation);
                }
                if inside {
                    let val = v[(base + flat) as usize];
                    if val > best || best_at < 0 {
                        best = val;
                        best_at = base + if column_major { col } else { flat };
                    }
                    sum += val;
                    count += 1;
                } else if in_pads && include_pad {
                    count += 1;
                }
            });
            if average {
                vals.push(if count > 0 {
                    sum / count as f64
                } else {
                    f64::NAN
                });
            } else {
                vals.push(best);
                idxs.push(best_at);
            }
        });
    }
    let mut shape = vec![nb, ch];
    shape.extend(out_dims.iter().map(|&d| d as usize));
    let wide = Arr::new(shape.clone(), Data::F64(vals))?;
    let Some(y) = unary::cast(&wide, x.dtype())? else {
        return Ok(None);
    };
    let mut outs = vec![y];
    if want_indices {
        outs.push(Arr::new(shape, Data::I64(idxs))?);
    }
    Ok(Some(outs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(k: &[i64]) -> PoolAttrs {
        PoolAttrs {
            kernel_shape: Some(k.to_vec()),
            ..PoolAttrs::default()
        }
    }

    #[test]
    fn max_pool_3d_with_indices() {
        let x = Arr::new(
            vec![1, 1, 2, 2, 2],
            Data::F32(vec![1.0, 8.0, 3.0, 4.0, 5.0, 6.0, 7.0, 2.0]),
        )
        .unwrap();
        let outs = pool(&attrs(&[2, 2, 2]), &x, false, true).unwrap().unwrap();
        assert_eq!(outs[0].shape, vec![1, 1, 1, 1, 1]);
        assert_eq!(outs[0].data, Data::F32(vec![8.0]));
        assert_eq!(outs[1].data, Data::I64(vec![1]));
    }

    #[test]
    fn average_pool_pads_and_ceil_mode() {
        let x = Arr::new(vec![1, 1, 3], Data::F32(vec![1.0, 2.0, 3.0])).unwrap();
        let mut a = attrs(&[2]);
        a.pads = Some(vec![1, 0]);
        let y = pool(&a, &x, true, false).unwrap().unwrap();
        assert_eq!(y[0].data, Data::F32(vec![1.0, 1.5, 2.5]));
        a.count_include_pad = Some(1);
        let y = pool(&a, &x, true, false).unwrap().unwrap();
        assert_eq!(y[0].data, Data::F32(vec![0.5, 1.5, 2.5]));
        let mut c = attrs(&[2]);
        c.strides = Some(vec![2]);
        c.ceil_mode = Some(1);
        let y = pool(&c, &x, true, false).unwrap().unwrap();
        assert_eq!(y[0].data, Data::F32(vec![1.5, 3.0]));
        c.auto_pad = Some("SAME_UPPER".into());
        c.ceil_mode = None;
        let y = pool(&c, &x, false, false).unwrap().unwrap();
        assert_eq!(y[0].data, Data::F32(vec![2.0, 3.0]));
    }

    #[test]
    fn max_pool_on_bytes_and_refusals() {
        let x = Arr::new(vec![1, 1, 2, 2], Data::U8(vec![1, 200, 3, 4])).unwrap();
        let y = pool(&attrs(&[2, 2]), &x, false, false).unwrap().unwrap();
        assert_eq!(y[0].data, Data::U8(vec![200]));
        assert!(pool(&attrs(&[2, 2]), &x, true, false).unwrap().is_none());
        let mut a = attrs(&[2, 1]);
        a.storage_order = Some(1);
        let y = pool(&a, &x, false, true).unwrap().unwrap();
        // Maxima 3 at (1, 0) and 200 at (0, 1): column-major positions 1 and 2.
        assert_eq!(y[0].data, Data::U8(vec![3, 200]));
        assert_eq!(y[1].data, Data::I64(vec![1, 2]));
        assert!(pool(&attrs(&[3, 3]), &x, false, false).is_err());
        assert!(pool(&PoolAttrs::default(), &x, false, false).is_err());
    }
}
