//! MaxPool, AveragePool (1-D and 2-D) and the global pools on f32.

use super::conv::{resolve_axes, Axis};
use super::f32s;
use cc_ir::op::{GlobalPoolOp, PoolAttrs};
use cc_ir::{Error, Result, Tensor};
use rayon::prelude::*;

/// Geometry of a 1-D/2-D pool: N*C planes, the H and W axes, the output shape.
type Geometry = (usize, Axis, Axis, Vec<usize>);

/// The geometry of a 1-D/2-D pool, or `None` for other ranks.
fn geometry(a: &PoolAttrs, x: &Tensor) -> Result<Option<Geometry>> {
    let xs = x.shape();
    if xs.len() < 3 {
        return Err(Error::invalid(format!("pool input {xs:?} has rank < 3")));
    }
    if xs.len() > 4 {
        return Ok(None);
    }
    let kernel: Vec<usize> = a
        .kernel_shape
        .as_ref()
        .ok_or_else(|| Error::invalid("pool: kernel_shape is required"))?
        .iter()
        .map(|&k| usize::try_from(k).unwrap_or(0))
        .collect();
    if kernel.len() != xs.len() - 2 {
        return Err(Error::invalid(format!(
            "pool: kernel_shape {kernel:?} does not fit input {xs:?}"
        )));
    }
    let axes = resolve_axes(
        &xs[2..],
        &kernel,
        &a.strides,
        &a.dilations,
        &a.pads,
        a.auto_pad.as_deref(),
        a.ceil_mode.unwrap_or(0) != 0,
    )?;
    let unit = Axis {
        input: 1,
        kernel: 1,
        stride: 1,
        dilation: 1,
        pad: 0,
        output: 1,
    };
    let (ah, aw) = if axes.len() == 1 {
        (unit, axes[0])
    } else {
        (axes[0], axes[1])
    };
    let mut shape = xs[..2].to_vec();
    shape.extend(axes.iter().map(|ax| ax.output));
    Ok(Some((xs[0] * xs[1], ah, aw, shape)))
}

/// Applies `window` to every output position of every plane.
fn pool_planes(
    x: &Tensor,
    (planes, ah, aw, shape): Geometry,
    window: impl Fn(&[f32], Axis, Axis, usize, usize) -> f32 + Sync,
) -> Result<Tensor> {
    let xv = f32s(x)?;
    let (ihw, ohw) = (ah.input * aw.input, ah.output * aw.output);
    if xv.len() != planes * ihw {
        return Err(Error::invalid("pool: data does not match the shape"));
    }
    let mut out = super::zeros(&shape)?;
    if ohw > 0 {
        out.par_chunks_mut(ohw).enumerate().for_each(|(p, dst)| {
            let src = &xv[p * ihw..][..ihw];
            for oy in 0..ah.output {
                for ox in 0..aw.output {
                    dst[oy * aw.output + ox] = window(src, ah, aw, oy, ox);
                }
            }
        });
    }
    Tensor::from_f32_vec(shape, out)
}

/// The in-range kernel taps of output position `o` along an axis: (first, last+1).
fn taps(ax: Axis, o: usize) -> (usize, usize) {
    let start = (o * ax.stride) as i64 - ax.pad as i64;
    let d = ax.dilation as i64;
    let lo = if start >= 0 { 0 } else { (-start + d - 1) / d };
    let top = ax.input as i64 - 1 - start;
    let hi = if top < 0 {
        0
    } else {
        (top / d + 1).min(ax.kernel as i64)
    };
    (lo as usize, (hi.max(lo)) as usize)
}

/// ONNX MaxPool (single output) on f32; `Ok(None)` for 3-D pools.
pub fn max_pool(a: &PoolAttrs, x: &Tensor) -> Result<Option<Tensor>> {
    let Some(geo) = geometry(a, x)? else {
        return Ok(None);
    };
    pool_planes(x, geo, |src, ah, aw, oy, ox| {
        let (ky0, ky1) = taps(ah, oy);
        let (kx0, kx1) = taps(aw, ox);
        let mut m = f32::NEG_INFINITY;
        for ky in ky0..ky1 {
            let y = oy * ah.stride + ky * ah.dilation - ah.pad;
            for kx in kx0..kx1 {
                let xx = ox * aw.stride + kx * aw.dilation - aw.pad;
                let v = src[y * aw.input + xx];
                if v > m || v.is_nan() {
                    m = v;
                }
            }
        }
        m
    })
    .map(Some)
}

/// ONNX AveragePool on f32 (count_include_pad counts padding inside the padded input,
/// never the extra window that ceil_mode adds); `Ok(None)` for 3-D pools.
pub fn average_pool(a: &PoolAttrs, x: &Tensor) -> Result<Option<Tensor>> {
    let Some(geo) = geometry(a, x)? else {
        return Ok(None);
    };
    let include_pad = a.count_include_pad.unwrap_or(0) != 0;
    // End padding per axis (explicit pads only; auto_pad pads are not counted by ORT).
    let n = x.shape().len() - 2;
    let end_pad = |i: usize| -> usize {
        a.pads
            .as_ref()
            .and_then(|p| p.get(i + n))
            .map_or(0, |&v| v.max(0) as usize)
    };
    let (pe_h, pe_w) = if n == 1 {
        (0, end_pad(0))
    } else {
        (end_pad(0), end_pad(1))
    };
    pool_planes(x, geo, |src, ah, aw, oy, ox| {
        let (ky0, ky1) = taps(ah, oy);
        let (kx0, kx1) = taps(aw, ox);
        let mut s = 0f32;
        for ky in ky0..ky1 {
            let y = oy * ah.stride + ky * ah.dilation - ah.pad;
            for kx in kx0..kx1 {
                let xx = ox * aw.stride + kx * aw.dilation - aw.pad;
                s += src[y * aw.input + xx];
            }
        }
        let count = if include_pad {
            let span = |ax: Axis, o: usize, pe: usize| -> usize {
                // taps inside [-pad, input + pad_end)
                (0..ax.kernel)
                    .filter(|&k| {
                        let p = (o * ax.stride + k * ax.dilation) as i64 - ax.pad as i64;
                        p >= -(ax.pad as i64) && p < (ax.input + pe) as i64
                    })
                    .count()
            };
            span(ah, oy, pe_h) * span(aw, ox, pe_w)
        } else {
            (ky1 - ky0) * (kx1 - kx0)
        };
        if count == 0 {
            f32::NAN
        } else {
            s / count as f32
        }
    })
    .map(Some)
}

/// GlobalAveragePool / GlobalMaxPool on f32 (any spatial rank).
pub fn global_pool(kind: GlobalPoolOp, x: &Tensor) -> Result<Tensor> {
    let xs = x.shape();
    if xs.len() < 2 {
        return Err(Error::invalid(format!(
            "global pool input {xs:?} has rank < 2"
        )));
    }
    let planes = xs[0] * xs[1];
    let size: usize = xs[2..].iter().product();
    let xv = f32s(x)?;
    if xv.len() != planes * size {
        return Err(Error::invalid("global pool: data does not match the shape"));
    }
    let out: Vec<f32> = if size == 0 {
        vec![f32::NAN; planes]
    } else {
        xv.par_chunks(size)
            .map(|p| match kind {
                GlobalPoolOp::Average => p.iter().sum::<f32>() / size as f32,
                GlobalPoolOp::Max => p.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            })
            .collect()
    };
    let mut shape = xs[..2].to_vec();
    shape.extend(std::iter::repeat_n(1, xs.len() - 2));
    Tensor::from_f32_vec(shape, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::kernels::test_util::{close, t};

    fn attrs(k: &[i64], s: &[i64], d: &[i64], p: &[i64], ceil: bool, incl: bool) -> PoolAttrs {
        PoolAttrs {
            kernel_shape: Some(k.to_vec()),
            strides: Some(s.to_vec()),
            dilations: Some(d.to_vec()),
            pads: Some(p.to_vec()),
            ceil_mode: Some(ceil as i64),
            count_include_pad: Some(incl as i64),
            ..Default::default()
        }
    }

    /// Naive 2-D pooling over one plane; `max` or average (with/without pad counting).
    #[allow(clippy::too_many_arguments)]
    fn naive(
        x: &[f32],
        (h, w): (usize, usize),
        (oh, ow): (usize, usize),
        k: [usize; 2],
        s: [usize; 2],
        d: [usize; 2],
        p: [usize; 4],
        mode: u8,
    ) -> Vec<f32> {
        let mut out = vec![];
        for oy in 0..oh {
            for ox in 0..ow {
                let (mut m, mut sum, mut cnt, mut cnt_pad) = (f32::NEG_INFINITY, 0f32, 0, 0);
                for ky in 0..k[0] {
                    for kx in 0..k[1] {
                        let y = (oy * s[0] + ky * d[0]) as i64 - p[0] as i64;
                        let xx = (ox * s[1] + kx * d[1]) as i64 - p[1] as i64;
                        if y < (h + p[2]) as i64 && xx < (w + p[3]) as i64 {
                            cnt_pad += 1;
                        }
                        if y < 0 || xx < 0 || y >= h as i64 || xx >= w as i64 {
                            continue;
                        }
                        let v = x[y as usize * w + xx as usize];
                        m = m.max(v);
                        sum += v;
                        cnt += 1;
                    }
                }
                out.push(match mode {
                    0 => m,
                    1 => sum / cnt as f32,
                    _ => sum / cnt_pad as f32,
                });
            }
        }
        out
    }

    #[test]
    fn pools_match_naive() {
        // (h, w, k, s, d, pads, ceil, expected out)
        let cases = [
            (7, 8, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], false, (4, 4)),
            (7, 8, [3, 2], [2, 2], [1, 1], [0, 0, 0, 0], true, (3, 4)),
            (9, 6, [2, 2], [1, 2], [2, 1], [1, 0, 0, 1], false, (8, 3)),
            (6, 6, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], true, (4, 4)),
        ];
        for (i, (h, w, k, s, d, p, ceil, (oh, ow))) in cases.into_iter().enumerate() {
            let x = t(&[2, 3, h, w], i as u64);
            let xv = x.to_f32().unwrap();
            let i64s = |v: &[usize]| v.iter().map(|&x| x as i64).collect::<Vec<_>>();
            for mode in 0..3u8 {
                let a = attrs(&i64s(&k), &i64s(&s), &i64s(&d), &i64s(&p), ceil, mode == 2);
                let got = if mode == 0 {
                    max_pool(&a, &x).unwrap().unwrap()
                } else {
                    average_pool(&a, &x).unwrap().unwrap()
                };
                assert_eq!(got.shape(), &[2, 3, oh, ow], "case {i}");
                let want: Vec<f32> = xv
                    .chunks(h * w)
                    .flat_map(|pl| naive(pl, (h, w), (oh, ow), k, s, d, p, mode))
                    .collect();
                close(&got.to_f32().unwrap(), &want);
            }
        }
    }

    #[test]
    fn global_pools() {
        let x =
            Tensor::from_f32(vec![1, 2, 2, 2], vec![1., 2., 3., 4., -1., -2., -3., -8.]).unwrap();
        let avg = global_pool(GlobalPoolOp::Average, &x).unwrap();
        assert_eq!(avg.shape(), &[1, 2, 1, 1]);
        assert_eq!(avg.to_f32().unwrap(), vec![2.5, -3.5]);
        let max = global_pool(GlobalPoolOp::Max, &x).unwrap();
        assert_eq!(max.to_f32().unwrap(), vec![4.0, -1.0]);
        assert!(max_pool(&PoolAttrs::default(), &x).is_err());
    }
}
