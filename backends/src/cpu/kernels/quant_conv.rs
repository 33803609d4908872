//! ConvInteger and QLinearConv: an N-D convolution over zero-point-adjusted i32 values
//! (groups, strides, dilations, explicit or automatic padding), accumulated exactly in
//! (wrapping) i32. Padding contributes zero after the zero point is subtracted, which
//! is what padding with the input zero point means.
//!
//! Each image and group is lowered to one integer GEMM: the filter rows
//! `[M/group, C/group·K]` times the im2col matrix `[C/group·K, O]` of the input: on the
//! f32 GEMM, exactly, as [`int_gemm`](super::int_gemm) does (the reduction cut into
//! chunks whose integer partial sums stay below 2^24; the im2col matrix is built in f32
//! directly), else (operands beyond 8 bits) through
//! [`int_gemm::gemm`](super::int_gemm::gemm)'s blocked integer loop. The direct loop over taps is kept as
//! the reference and as the fallback when the im2col matrix would be too large.

use super::quant::{
    int_range, int_tensor, minus_zero_point, output_zero_point, requant_factors, round_sat, IntArr,
    QLinear,
};
use cc_ir::op::ConvAttrs;
use cc_ir::{DType, Error, Result, Tensor};

/// Largest im2col matrix (elements) the GEMM path builds; larger ones use the direct loop.
const MAX_COLS: usize = 1 << 26;
/// Largest integer below which f32 is exact.
const F32_EXACT: u64 = (1 << 24) - 1;
/// Shortest reduction chunk worth the f32 path.
const MIN_CHUNK: usize = 32;

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

/// Checked sizes of a convolution.
struct Dims {
    nb: usize,
    c: usize,
    m: usize,
    cg: usize,
    group: usize,
    spatial: Vec<usize>,
    kernel: Vec<usize>,
    geo: Geometry,
    in_size: usize,
    k_size: usize,
    o_size: usize,
}

/// The convolution of `x` [N, C, D...] with `w` [M, C/group, K...]: i32 output
/// [N, M, O...] and its shape, through im2col and the integer GEMM (the direct loop when
/// the im2col matrix would exceed [`MAX_COLS`]).
///
/// `bounds`: known bounds of `|w|` and `|x|` (from the code types and zero points);
/// without them the operands are scanned.
fn conv_i32(a: &ConvAttrs, x: &IntArr, w: &IntArr, bounds: Option<(u64, u64)>) -> Result<IntArr> {
    let d = dims(a, x, w)?;
    if d.cg * d.k_size * d.o_size > MAX_COLS {
        return Ok(direct(&d, x, w));
    }
    let nsp = d.spatial.len();
    let (kk_n, o_n) = (d.k_size, d.o_size);
    let mpg = d.m / d.group;
    let kdim = d.cg * kk_n;
    // 2-D convolutions fill the im2col rows row by row, without the tap table.
    let taps = if nsp == 2 { Vec::new() } else { taps_kk_o(&d) };
    if let Some(out) = conv_f32(&d, x, w, &taps, bounds) {
        let mut shape = vec![d.nb, d.m];
        shape.extend(&d.geo.out);
        return Ok(IntArr { shape, data: out });
    }
    let taps = if nsp == 2 { taps_kk_o(&d) } else { taps };
    let mut cols = vec![0i32; kdim * o_n];
    let mut out = vec![0i32; d.nb * d.m * o_n];
    for b in 0..d.nb {
        for g in 0..d.group {
            for ic in 0..d.cg {
                let base = (b * d.c + g * d.cg + ic) * d.in_size;
                let xin = x.data.get(base..base + d.in_size).unwrap_or(&[]);
                for kk in 0..kk_n {
                    let row = &mut cols[(ic * kk_n + kk) * o_n..][..o_n];
                    let t = &taps[kk * o_n..][..o_n];
                    for (dst, tp) in row.iter_mut().zip(t) {
                        *dst = tp.and_then(|off| xin.get(off).copied()).unwrap_or(0);
                    }
                }
            }
            let wg = &w.data[g * mpg * kdim..(g + 1) * mpg * kdim];
            let dst = &mut out[(b * d.m + g * mpg) * o_n..][..mpg * o_n];
            super::int_gemm::gemm(wg, &cols, mpg, kdim, o_n, dst);
        }
    }
    let mut shape = vec![d.nb, d.m];
    shape.extend(&d.geo.out);
    Ok(IntArr { shape, data: out })
}

/// taps[kk][o]: the input offset of kernel position kk at output position o, or None in
/// padding.
fn taps_kk_o(d: &Dims) -> Vec<Option<usize>> {
    let nsp = d.spatial.len();
    let (kk_n, o_n) = (d.k_size, d.o_size);
    let mut taps: Vec<Option<usize>> = vec![None; kk_n * o_n];
    let mut opos = vec![0usize; nsp];
    for o in 0..o_n {
        let mut kpos = vec![0usize; nsp];
        for kk in 0..kk_n {
            if let Some(t) = taps.get_mut(kk * o_n + o) {
                *t = tap(d, &opos, &kpos);
            }
            step(&mut kpos, &d.kernel);
        }
        step(&mut opos, &d.geo.out);
    }
    taps
}

/// The im2col rows `[KH·KW, OH·OW]` of one 2-D input plane `xin` `[H, W]`, in f32:
/// per kernel position and output row, the valid output columns are one range, read
/// with the stride and the rest zero.
fn im2col_2d(d: &Dims, xin: &[i32], rows: &mut [f32]) -> Option<()> {
    let (h, wd) = (d.spatial[0], d.spatial[1]);
    let (oh_n, ow_n) = (d.geo.out[0], d.geo.out[1]);
    let (kh_n, kw_n) = (d.kernel[0], d.kernel[1]);
    let (sh, sw) = (d.geo.strides[0], d.geo.strides[1] as isize);
    let (dh, dw) = (d.geo.dilations[0], d.geo.dilations[1]);
    let (ph, pw) = (d.geo.pad_begin[0] as isize, d.geo.pad_begin[1] as isize);
    let o_n = oh_n * ow_n;
    for kh in 0..kh_n {
        for kw in 0..kw_n {
            let row = rows.get_mut((kh * kw_n + kw) * o_n..)?.get_mut(..o_n)?;
            // Input column of output column ow: ow·sw + off; valid for ow in lo..hi.
            let off = (kw * dw) as isize - pw;
            let lo = if off >= 0 { 0 } else { (-off + sw - 1) / sw } as usize;
            let room = wd as isize - off;
            let hi = if room <= 0 { 0 } else { (room + sw - 1) / sw } as usize;
            let hi = hi.min(ow_n);
            let lo = lo.min(hi);
            for (oh, r) in row.chunks_mut(ow_n.max(1)).enumerate() {
                let ih = (oh * sh + kh * dh) as isize - ph;
                if ih < 0 || ih as usize >= h {
                    r.fill(0.0);
                    continue;
                }
                let src = xin.get(ih as usize * wd..(ih as usize + 1) * wd)?;
                r.get_mut(..lo)?.fill(0.0);
                r.get_mut(hi..)?.fill(0.0);
                let start = lo as isize * sw + off;
                if sw == 1 {
                    let s = src.get(start as usize..start as usize + (hi - lo))?;
                    for (o, &v) in r.get_mut(lo..hi)?.iter_mut().zip(s) {
                        *o = v as f32;
                    }
                } else {
                    for (j, o) in r.get_mut(lo..hi)?.iter_mut().enumerate() {
                        let i = (start + j as isize * sw) as usize;
                        *o = src.get(i).copied().unwrap_or(0) as f32;
                    }
                }
            }
        }
    }
    Some(())
}

/// The convolution through exact f32 GEMMs: the im2col matrix built once in f32 per
/// image and group, the reduction cut into chunks over which every integer partial sum
/// stays below 2^24 (so f32 is exact in any summation order); `None` when the operands
/// are too large for chunks of at least [`MIN_CHUNK`] (the caller uses the integer GEMM)
/// or the f32 GEMM refuses them.
fn conv_f32(
    d: &Dims,
    x: &IntArr,
    w: &IntArr,
    taps: &[Option<usize>],
    bounds: Option<(u64, u64)>,
) -> Option<Vec<i32>> {
    let absmax = |v: &[i32]| {
        let (lo, hi) = v
            .iter()
            .fold((0i32, 0i32), |(l, h), &x| (l.min(x), h.max(x)));
        u64::from(lo.unsigned_abs().max(hi.unsigned_abs()))
    };
    let (amax, bmax) = bounds.unwrap_or_else(|| (absmax(&w.data), absmax(&x.data)));
    let (kk_n, o_n) = (d.k_size, d.o_size);
    let mpg = d.m / d.group;
    let kdim = d.cg * kk_n;
    let chunk = ((F32_EXACT / (amax * bmax).max(1)) as usize).min(kdim);
    if chunk < MIN_CHUNK.min(kdim) || chunk == 0 || mpg == 0 || o_n == 0 {
        return None;
    }
    let cx = super::KernelCx::new(crate::cpu::parallel::threads());
    let mut out = vec![0i32; d.nb * d.m * o_n];
    let mut cols = vec![0f32; kdim * o_n];
    let mut wf = vec![0f32; mpg * chunk];
    let mut cf = vec![0f32; mpg * o_n];
    for b in 0..d.nb {
        for g in 0..d.group {
            for ic in 0..d.cg {
                let base = (b * d.c + g * d.cg + ic) * d.in_size;
                let xin = x.data.get(base..base + d.in_size)?;
                if d.spatial.len() == 2 {
                    let rows = cols.get_mut(ic * kk_n * o_n..(ic + 1) * kk_n * o_n)?;
                    im2col_2d(d, xin, rows)?;
                    continue;
                }
                for kk in 0..kk_n {
                    let row = cols.get_mut((ic * kk_n + kk) * o_n..)?.get_mut(..o_n)?;
                    let t = taps.get(kk * o_n..)?.get(..o_n)?;
                    for (dst, tp) in row.iter_mut().zip(t) {
                        *dst = tp.and_then(|off| xin.get(off)).map_or(0.0, |&v| v as f32);
                    }
                }
            }
            let wg = w.data.get(g * mpg * kdim..(g + 1) * mpg * kdim)?;
            let dst = out
                .get_mut((b * d.m + g * mpg) * o_n..)?
                .get_mut(..mpg * o_n)?;
            for k0 in (0..kdim).step_by(chunk) {
                let kc = chunk.min(kdim - k0);
                let wc = &mut wf[..mpg * kc];
                for (r, row) in wc.chunks_mut(kc).enumerate() {
                    let src = wg.get(r * kdim + k0..r * kdim + k0 + kc)?;
                    for (o, &v) in row.iter_mut().zip(src) {
                        *o = v as f32;
                    }
                }
                let bc = cols.get(k0 * o_n..(k0 + kc) * o_n)?;
                super::matmul::matmul_slices(wc, bc, &mut cf, (mpg, kc, o_n), cx.gemm_par())
                    .ok()?;
                if k0 == 0 {
                    for (o, &v) in dst.iter_mut().zip(&cf) {
                        *o = v as i32;
                    }
                } else {
                    for (o, &v) in dst.iter_mut().zip(&cf) {
                        *o = o.wrapping_add(v as i32);
                    }
                }
            }
        }
    }
    Some(out)
}

/// The input offset read at output position `opos` by kernel position `kpos`, or None
/// in padding.
fn tap(d: &Dims, opos: &[usize], kpos: &[usize]) -> Option<usize> {
    let mut off = 0usize;
    for i in 0..d.spatial.len() {
        let p = (opos[i] * d.geo.strides[i] + kpos[i] * d.geo.dilations[i]) as isize
            - d.geo.pad_begin[i] as isize;
        if p < 0 || p as usize >= d.spatial[i] {
            return None;
        }
        off = off * d.spatial[i] + p as usize;
    }
    Some(off)
}

/// Checks the operands of a convolution and computes its sizes.
fn dims(a: &ConvAttrs, x: &IntArr, w: &IntArr) -> Result<Dims> {
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
    let spatial = xs[2..].to_vec();
    let geo = geometry(a, &spatial, kernel)?;
    let in_size: usize = spatial.iter().product();
    let k_size: usize = kernel.iter().product();
    let o_size: usize = geo.out.iter().product();
    if x.data.len() != nb * c * in_size || w.data.len() != m * cg * k_size {
        return Err(Error::invalid("convolution operand smaller than its shape"));
    }
    Ok(Dims {
        nb,
        c,
        m,
        cg,
        group,
        kernel: kernel.to_vec(),
        spatial,
        geo,
        in_size,
        k_size,
        o_size,
    })
}

/// The direct convolution (the reference): for each output channel, input channel and
/// output position, the sum over kernel taps.
fn direct(d: &Dims, x: &IntArr, w: &IntArr) -> IntArr {
    let Dims {
        nb,
        c,
        m,
        cg,
        group,
        in_size,
        k_size,
        o_size,
        ..
    } = *d;
    let nsp = d.spatial.len();
    // For each (output position, kernel position): the input offset, or None in padding.
    let mut taps: Vec<Option<usize>> = Vec::with_capacity(o_size * k_size);
    let mut opos = vec![0usize; nsp];
    for _ in 0..o_size {
        let mut kpos = vec![0usize; nsp];
        for _ in 0..k_size {
            taps.push(tap(d, &opos, &kpos));
            step(&mut kpos, &d.kernel);
        }
        step(&mut opos, &d.geo.out);
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
    shape.extend(&d.geo.out);
    IntArr { shape, data: out }
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

/// The largest `|code - zero point|` of integer tensor `t` with zero points `zp`, from
/// its code type's range (`None` for types without one).
fn code_bound(t: &Tensor, zp: Option<&Tensor>) -> Result<Option<u64>> {
    let Some((lo, hi)) = super::quant::int_range(t.dtype()) else {
        return Ok(None);
    };
    let zs = match zp {
        Some(z) => match super::quant::ints(z)? {
            Some(v) => v,
            None => return Ok(None),
        },
        None => vec![0],
    };
    Ok(zs
        .iter()
        .map(|&z| {
            (i64::from(lo) - i64::from(z))
                .unsigned_abs()
                .max((i64::from(hi) - i64::from(z)).unsigned_abs())
        })
        .max())
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
    let bounds = code_bound(w, wzp)?.zip(code_bound(x, xzp)?);
    let y = conv_i32(a, &xa, &wa, bounds)?;
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
    let bounds = code_bound(w, q.b_zp)?.zip(code_bound(x, q.a_zp)?);
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
    let y = conv_i32(a, &xa, &wa, bounds)?;
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

    /// Pseudo-random integers in `lo..=hi`.
    fn ints(n: usize, seed: u64, lo: i32, hi: i32) -> Vec<i32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                lo + ((s >> 33) % (hi - lo + 1) as u64) as i32
            })
            .collect()
    }

    #[test]
    fn gemm_path_is_bit_exact_against_the_direct_loop() {
        let pool = crate::cpu::kernels::test_util::cx_pool(2);
        // (input shape, weight shape, group, strides, pads, dilations, auto_pad)
        type Case = (
            Vec<usize>,
            Vec<usize>,
            i64,
            Vec<i64>,
            Vec<i64>,
            Vec<i64>,
            Option<&'static str>,
        );
        let cases: Vec<Case> = vec![
            // resnet-like 7x7 stride 2 stem (f32 GEMM path).
            (
                vec![1, 3, 32, 32],
                vec![16, 3, 7, 7],
                1,
                vec![2, 2],
                vec![3, 3, 3, 3],
                vec![1, 1],
                None,
            ),
            // 3x3 with 288-long reduction: more than one exact f32 chunk.
            (
                vec![2, 32, 10, 10],
                vec![48, 32, 3, 3],
                1,
                vec![1, 1],
                vec![1, 1, 1, 1],
                vec![1, 1],
                None,
            ),
            // Grouped, asymmetric pads, dilation 2.
            (
                vec![1, 8, 9, 11],
                vec![12, 2, 3, 2],
                4,
                vec![1, 2],
                vec![2, 0, 1, 3],
                vec![2, 1],
                None,
            ),
            // Depthwise, stride 2, SAME_LOWER.
            (
                vec![1, 6, 13, 13],
                vec![6, 1, 3, 3],
                6,
                vec![2, 2],
                vec![0, 0, 0, 0],
                vec![1, 1],
                Some("SAME_LOWER"),
            ),
            // Depthwise multiplier 2, SAME_UPPER.
            (
                vec![1, 4, 8, 8],
                vec![8, 1, 5, 5],
                4,
                vec![1, 1],
                vec![0, 0, 0, 0],
                vec![1, 1],
                Some("SAME_UPPER"),
            ),
            // 1-D and 3-D, 1x1 pointwise, VALID.
            (
                vec![3, 5, 17],
                vec![7, 5, 4],
                1,
                vec![3],
                vec![1, 2],
                vec![2],
                None,
            ),
            (
                vec![1, 4, 5, 6, 7],
                vec![6, 2, 2, 3, 2],
                2,
                vec![1, 2, 1],
                vec![1, 0, 1, 0, 1, 1],
                vec![1, 1, 2],
                None,
            ),
            (
                vec![2, 64, 9, 9],
                vec![32, 64, 1, 1],
                1,
                vec![1, 1],
                vec![0, 0, 0, 0],
                vec![1, 1],
                Some("VALID"),
            ),
        ];
        for (i, (xs, ws, group, strides, pads, dil, auto)) in cases.into_iter().enumerate() {
            let a = ConvAttrs {
                group: Some(group),
                strides: Some(strides),
                pads: auto.is_none().then_some(pads),
                dilations: Some(dil),
                auto_pad: auto.map(String::from),
                ..ConvAttrs::default()
            };
            // uint8 codes minus a zero point, weights int8 or uint8 minus a zero point.
            for (zx, (wlo, whi)) in [(0, (-128, 127)), (131, (-128, 127)), (255, (-200, 255))] {
                let nx: usize = xs.iter().product();
                let nw: usize = ws.iter().product();
                let x = IntArr {
                    shape: xs.clone(),
                    data: ints(nx, i as u64 + 1, 0, 255)
                        .iter()
                        .map(|v| v - zx)
                        .collect(),
                };
                let w = IntArr {
                    shape: ws.clone(),
                    data: ints(nw, i as u64 + 7, wlo, whi),
                };
                let fast = pool.install(|| conv_i32(&a, &x, &w, None)).unwrap();
                let d = dims(&a, &x, &w).unwrap();
                let want = direct(&d, &x, &w);
                assert_eq!(fast.shape, want.shape, "case {i}");
                assert_eq!(fast.data, want.data, "case {i}, zero point {zx}");
                // With the bounds of the code types instead of a scan.
                let bounded = pool.install(|| conv_i32(&a, &x, &w, Some((255, 255))));
                assert_eq!(bounded.unwrap().data, want.data, "case {i} bounded");
                assert!(want.data.iter().any(|&v| v != 0), "case {i}");
            }
        }
        // Operands beyond 8 bits (no exact f32 chunk) take the integer GEMM.
        let a = ConvAttrs {
            pads: Some(vec![1, 1, 1, 1]),
            ..ConvAttrs::default()
        };
        let x = IntArr {
            shape: vec![1, 8, 6, 6],
            data: ints(288, 3, -100_000, 100_000),
        };
        let w = IntArr {
            shape: vec![4, 8, 3, 3],
            data: ints(288, 4, -3000, 3000),
        };
        let d = dims(&a, &x, &w).unwrap();
        assert!(conv_f32(&d, &x, &w, &[], None).is_none());
        let fast = pool.install(|| conv_i32(&a, &x, &w, None)).unwrap();
        assert_eq!(fast.data, direct(&d, &x, &w).data);
    }

    #[test]
    fn bad_channels_are_errors() {
        let x = Tensor::from_u8(vec![1, 3, 2, 2], vec![0; 12]).unwrap();
        let w = Tensor::from_u8(vec![1, 2, 1, 1], vec![0; 2]).unwrap();
        assert!(conv_integer(&ConvAttrs::default(), &x, &w, None, None).is_err());
    }
}
