//! Conv (im2col + GEMM; direct paths for 1x1 and depthwise) and ConvTranspose
//! (GEMM + col2im) on f32, for 1-D and 2-D spatial inputs.

use super::depthwise::Depthwise;
use super::dq_conv::Filter;
use super::matmul::{sgemm, Mat};
use super::packed_gemm::{self, Epilogue, Operand};
use super::{f32s, input, Activation, KernelCx};
use cc_ir::op::ConvAttrs;
use cc_ir::{Error, Result, Tensor};

/// One spatial axis of a sliding-window op, with padding resolved.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Axis {
    /// Input extent.
    pub input: usize,
    /// Kernel extent.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Dilation.
    pub dilation: usize,
    /// Padding before the first element.
    pub pad: usize,
    /// Output extent.
    pub output: usize,
}

impl Axis {
    /// The output positions `o` whose input index `o*stride - pad + off` lies inside the
    /// input, as a half-open range.
    pub fn valid(&self, off: usize) -> (usize, usize) {
        let s = self.stride as i64;
        let shift = off as i64 - self.pad as i64;
        // smallest o with o*s + shift >= 0
        let lo = if shift >= 0 { 0 } else { (-shift + s - 1) / s };
        // largest o with o*s + shift <= input-1
        let top = self.input as i64 - 1 - shift;
        let hi = if top < 0 { 0 } else { top / s + 1 };
        let lo = (lo as usize).min(self.output);
        (lo, (hi as usize).min(self.output).max(lo))
    }
}

fn attr_list(v: &Option<Vec<i64>>, n: usize, default: i64, what: &str) -> Result<Vec<usize>> {
    let v = v.clone().unwrap_or_else(|| vec![default; n]);
    if v.len() != n || v.iter().any(|&x| x < 0 || (x == 0 && default == 1)) {
        return Err(Error::invalid(format!(
            "{what} {v:?} is invalid for {n} spatial axes"
        )));
    }
    Ok(v.into_iter().map(|x| x as usize).collect())
}

/// Resolves the geometry of every spatial axis (ONNX Conv/Pool output-size rules).
#[allow(clippy::too_many_arguments)]
pub(crate) fn resolve_axes(
    input: &[usize],
    kernel: &[usize],
    strides: &Option<Vec<i64>>,
    dilations: &Option<Vec<i64>>,
    pads: &Option<Vec<i64>>,
    auto_pad: Option<&str>,
    ceil_mode: bool,
) -> Result<Vec<Axis>> {
    let n = input.len();
    let strides = attr_list(strides, n, 1, "strides")?;
    let dilations = attr_list(dilations, n, 1, "dilations")?;
    let pads = attr_list(pads, 2 * n, 0, "pads")?;
    let mut axes = Vec::with_capacity(n);
    for i in 0..n {
        let (inp, k, s, d) = (input[i], kernel[i], strides[i], dilations[i]);
        if k == 0 {
            return Err(Error::invalid("kernel extent 0"));
        }
        let span = d * (k - 1) + 1;
        let (pad, output) = match auto_pad.unwrap_or("NOTSET") {
            "SAME_UPPER" | "SAME_LOWER" => {
                let out = inp.div_ceil(s);
                let total = ((out.max(1) - 1) * s + span).saturating_sub(inp);
                let begin = if auto_pad == Some("SAME_UPPER") {
                    total / 2
                } else {
                    total - total / 2
                };
                (begin, out)
            }
            "VALID" => {
                if inp < span {
                    return Err(Error::invalid(format!(
                        "kernel span {span} exceeds input extent {inp}"
                    )));
                }
                (0, (inp - span) / s + 1)
            }
            "NOTSET" => {
                let padded = inp + pads[i] + pads[i + n];
                if padded < span {
                    return Err(Error::invalid(format!(
                        "kernel span {span} exceeds padded input extent {padded}"
                    )));
                }
                let mut out = if ceil_mode {
                    (padded - span).div_ceil(s) + 1
                } else {
                    (padded - span) / s + 1
                };
                // A window must start inside the input or the leading padding.
                if ceil_mode && (out - 1) * s >= inp + pads[i] {
                    out -= 1;
                }
                (pads[i], out)
            }
            other => return Err(Error::invalid(format!("unknown auto_pad {other:?}"))),
        };
        axes.push(Axis {
            input: inp,
            kernel: k,
            stride: s,
            dilation: d,
            pad,
            output,
        });
    }
    Ok(axes)
}

/// Views an `N x C x spatial` shape as 2-D (`H`, `W`): 1-D inputs get `H = 1`.
/// `None` for other ranks.
fn as_2d(spatial: &[usize]) -> Option<[usize; 2]> {
    match *spatial {
        [w] => Some([1, w]),
        [h, w] => Some([h, w]),
        _ => None,
    }
}

fn unit_axis(input: usize) -> Axis {
    Axis {
        input,
        kernel: 1,
        stride: 1,
        dilation: 1,
        pad: 0,
        output: input,
    }
}

/// ONNX Conv on f32 with 1 or 2 spatial axes, followed by `act` if given; `Ok(None)`
/// for other ranks.
pub fn conv(
    a: &ConvAttrs,
    inputs: &[Option<&Tensor>],
    act: Option<Activation>,
    cx: &KernelCx<'_>,
) -> Result<Option<Tensor>> {
    let (x, w) = (input(inputs, 0)?, input(inputs, 1)?);
    let b = inputs.get(2).copied().flatten();
    let (xs, ws) = (x.shape(), w.shape());
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(Error::invalid(format!(
            "Conv: input {xs:?} and weight {ws:?} ranks do not fit"
        )));
    }
    if as_2d(&xs[2..]).is_none() || as_2d(&ws[2..]).is_none() {
        return Ok(None);
    }
    let wv = f32s(w)?;
    conv_filter(a, x, ws, Filter::F32(&wv), b, act, cx)
}

/// ONNX Conv on f32 input `x` with weights of shape `ws` read through `w` (f32, or
/// compressed and decoded tile by tile), optional bias `b`, then `act`; `Ok(None)` for
/// other than 1 or 2 spatial axes.
pub(crate) fn conv_filter(
    a: &ConvAttrs,
    x: &Tensor,
    ws: &[usize],
    w: Filter<'_>,
    b: Option<&Tensor>,
    act: Option<Activation>,
    cx: &KernelCx<'_>,
) -> Result<Option<Tensor>> {
    let xs = x.shape();
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(Error::invalid(format!(
            "Conv: input {xs:?} and weight {ws:?} ranks do not fit"
        )));
    }
    let (Some(in2), Some(k2)) = (as_2d(&xs[2..]), as_2d(&ws[2..])) else {
        return Ok(None);
    };
    if let Some(ks) = &a.kernel_shape {
        if ks.iter().map(|&k| k as usize).ne(ws[2..].iter().copied()) {
            return Err(Error::invalid(format!(
                "Conv: kernel_shape {ks:?} differs from weight {ws:?}"
            )));
        }
    }
    let (n, c, m) = (xs[0], xs[1], ws[0]);
    let group = usize::try_from(a.group()).unwrap_or(0);
    if group == 0 || c % group != 0 || m % group != 0 || ws[1] * group != c {
        return Err(Error::invalid(format!(
            "Conv: group {} does not fit input {xs:?} and weight {ws:?}",
            a.group()
        )));
    }
    let axes = resolve_axes(
        &xs[2..],
        &ws[2..],
        &a.strides,
        &a.dilations,
        &a.pads,
        a.auto_pad.as_deref(),
        false,
    )?;
    let (ah, aw) = if axes.len() == 1 {
        (unit_axis(1), axes[0])
    } else {
        (axes[0], axes[1])
    };
    debug_assert_eq!([ah.input, aw.input], in2);
    debug_assert_eq!([ah.kernel, aw.kernel], k2);
    let (cg, mg) = (c / group, m / group);
    let (hw, ohw) = (ah.input * aw.input, ah.output * aw.output);
    let kk = cg * ah.kernel * aw.kernel;
    let xv = f32s(x)?;
    if xv.len() != n * c * hw || w.len() != m * kk {
        return Err(Error::invalid("Conv: data does not match the shapes"));
    }
    let bias = match b {
        Some(b) => {
            let bv = f32s(b)?;
            if bv.len() != m {
                return Err(Error::invalid(format!(
                    "Conv: bias {:?} does not match {m} output channels",
                    b.shape()
                )));
            }
            Some(bv)
        }
        None => None,
    };
    let mut out_shape = vec![n, m];
    out_shape.extend(axes.iter().map(|ax| ax.output));
    let total = cc_ir::tensor::shape_count(&out_shape)?;
    if ohw == 0 || n == 0 || m == 0 {
        return Tensor::from_f32_vec(out_shape, vec![0.0; total]).map(Some);
    }
    if cg == 1 && mg == 1 {
        // Depthwise writes each plane once, bias added, with no zeroing pass before.
        let fill = |o: &mut [std::mem::MaybeUninit<f32>]| {
            match w {
                Filter::F32(wv) => {
                    let dw = Depthwise {
                        x: &xv,
                        w: wv,
                        bias: bias.as_deref(),
                        ah,
                        aw,
                        c,
                        act,
                    };
                    dw.run(o, cx.threads);
                }
                Filter::Coded(q) => super::dq_conv::depthwise(
                    q,
                    &xv,
                    bias.as_deref(),
                    (ah, aw),
                    c,
                    act,
                    o,
                    cx.threads,
                ),
            }
            Ok(())
        };
        // SAFETY: `Depthwise::run` and `dq_conv::depthwise` write every element of
        // every plane (see there).
        let out = unsafe { super::write_new(total, fill)? };
        return Tensor::from_f32_vec(out_shape, out).map(Some);
    }
    // The GEMMs overwrite every element (they do not read the destination), so the
    // output starts uninitialized and is filled block by block.
    let mut out: Vec<f32> = Vec::with_capacity(total);
    let pointwise = ah.kernel == 1
        && aw.kernel == 1
        && ah.stride == 1
        && aw.stride == 1
        && ah.pad == 0
        && aw.pad == 0
        && ah.output == ah.input
        && aw.output == aw.input;
    SCRATCH.with(|cell| {
        let mut own = Vec::new();
        let mut held = cell.try_borrow_mut();
        let col = match held.as_mut() {
            Ok(v) => &mut **v,
            Err(_) => &mut own,
        };
        if !pointwise && col.len() < kk * ohw {
            col.resize(kk * ohw, 0.0);
        }
        gemm_groups(
            (&xv, w, out.spare_capacity_mut(), col),
            (pointwise, bias.as_deref(), act),
            cx,
            (n, c, m, group, hw, ohw, kk),
            (ah, aw),
        );
    });
    // SAFETY: gemm_groups wrote all n * m * ohw = total elements (every image, group and
    // output channel block, each fully written by a non-accumulating GEMM).
    unsafe { out.set_len(total) };
    Tensor::from_f32_vec(out_shape, out).map(Some)
}

thread_local! {
    /// The im2col buffer, kept per thread between calls (every element is rewritten by
    /// each use, so it never needs clearing).
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Buffers of [`gemm_groups`]: input, weight, output, im2col scratch.
type ConvBuffers<'a> = (
    &'a [f32],
    Filter<'a>,
    &'a mut [std::mem::MaybeUninit<f32>],
    &'a mut [f32],
);

/// Raw pointers of one GEMM task, shared across the rayon tasks of [`gemm_groups`].
#[derive(Clone, Copy)]
struct GroupPtrs {
    x: *const f32,
    dst: *mut f32,
}
// SAFETY: tasks only read through `x` and write disjoint column or row blocks
// of `dst`.
unsafe impl Send for GroupPtrs {}
// SAFETY: as above.
unsafe impl Sync for GroupPtrs {}

/// Outputs with fewer positions per channel (7x7 maps) run faster through the gemm
/// crate, which packs the weights for its microkernel (measured on ResNet-18's and
/// MobileNet-v2's 7x7 layers), than through the fused AVX-512 kernel.
const PACKED_MIN_COLUMNS: usize = 64;

/// Column block width for one task: whole 16-column micro-tiles, at least `threads`
/// tasks, and (with im2col) an unfolded block that stays in the per-core L2 cache.
fn column_block(ohw: usize, kk: usize, threads: usize, unfold: bool) -> usize {
    // Up to four blocks per thread (of at least 256 columns) so that a thread that
    // starts late still gets its share.
    let parts = if threads > 1 {
        (4 * threads).min(ohw / 256).max(threads)
    } else {
        1
    };
    let mut per = ohw.div_ceil(parts).div_ceil(16) * 16;
    if unfold {
        // About 512 KiB of unfolded input per task.
        let fit = ((128 * 1024) / kk.max(1)).max(64) / 16 * 16;
        if fit < per {
            // Even blocks of at most `fit` columns.
            let blocks = ohw.div_ceil(fit).div_ceil(threads) * threads;
            per = ohw.div_ceil(blocks).div_ceil(16) * 16;
        }
    }
    per.max(16)
}

/// The GEMM part of Conv: per image and group, `out = W_g * im2col(x_g)`, then the bias
/// and the activation; writes every element of `out` (`n * m * ohw`).
///
/// Wide outputs are split by output columns: each task unfolds only its own columns
/// into a per-thread buffer, multiplies, and adds the bias and activation while its
/// block is still in cache. Narrow outputs (few columns, many channels) are unfolded
/// once and split by output channels.
fn gemm_groups(
    (xv, wv, out, col): ConvBuffers<'_>,
    (pointwise, bias, act): (bool, Option<&[f32]>, Option<Activation>),
    cx: &KernelCx<'_>,
    (n, c, m, group, hw, ohw, kk): (usize, usize, usize, usize, usize, usize, usize),
    (ah, aw): (Axis, Axis),
) {
    let (cg, mg) = (c / group, m / group);
    let threads = cx.threads.max(1);
    let packed = ohw >= PACKED_MIN_COLUMNS;
    let work = mg.saturating_mul(ohw).saturating_mul(kk);
    // Below about a million multiply-adds, handing blocks to the other threads and
    // moving the operands between cores costs more than it saves (measured on
    // MobileNet's 1x1 convs: 1 << 20 beat both 5 << 20 and 1 << 18).
    let serial = threads <= 1 || work < 1 << 20;
    let by_cols = serial || ohw >= 64 * threads || ohw >= mg;
    for img in 0..n {
        for g in 0..group {
            let xg = &xv[(img * c + g * cg) * hw..][..cg * hw];
            let block = &mut out[(img * m + g * mg) * ohw..][..mg * ohw];
            let row0 = g * mg;
            let bias_g = bias.map(|b| &b[g * mg..][..mg]);
            if !pointwise
                && packed
                && super::conv_implicit::conv_implicit(
                    xg,
                    (wv, row0),
                    bias_g,
                    act,
                    block,
                    (ah, aw),
                    (cg, mg),
                    threads,
                )
            {
                continue;
            }
            let ptrs = GroupPtrs {
                x: xg.as_ptr(),
                dst: block.as_mut_ptr().cast::<f32>(),
            };
            if by_cols {
                let per = if serial {
                    column_block(ohw, kk, 1, !pointwise)
                } else {
                    column_block(ohw, kk, threads, !pointwise)
                };
                let tasks = ohw.div_ceil(per);
                let task = move |t: usize| {
                    let p = ptrs;
                    let start = t * per;
                    let cnt = per.min(ohw - start);
                    // SAFETY: xg holds cg * hw inputs (sliced above) and the filter
                    // rows row0..row0 + mg (checked by the caller); this task writes
                    // only columns start..start + cnt of the mg x ohw block, which no
                    // other task touches.
                    unsafe {
                        let x = std::slice::from_raw_parts(p.x, cg * hw);
                        column_task(
                            x,
                            (wv, row0),
                            p.dst,
                            (pointwise, bias_g, act),
                            (mg, ohw, kk, hw, start, cnt),
                            (ah, aw),
                        );
                    }
                };
                if serial || tasks == 1 {
                    (0..tasks).for_each(task);
                } else {
                    crate::cpu::parallel::for_each(tasks, &task);
                }
                continue;
            }
            let rhs: &[f32] = if pointwise {
                xg
            } else {
                let col = &mut col[..kk * ohw];
                im2col(xg, col, (ah, aw));
                col
            };
            let rhs_ptr = rhs.as_ptr() as usize;
            let per = mg.div_ceil(threads).div_ceil(8) * 8;
            let tasks = mg.div_ceil(per);
            crate::cpu::parallel::for_each(tasks, &move |t| {
                let p = ptrs;
                let start = t * per;
                let rows = per.min(mg - start);
                if packed && packed_gemm::available() {
                    wv.for_tiles(row0 + start, rows, kk, |i0, tr, a| {
                        let start = start + i0;
                        // SAFETY: rows start..start + tr of the mg x ohw output (a is
                        // their tr x kk weights); rhs is kk x ohw; no other task writes
                        // these rows.
                        let done = unsafe {
                            packed_gemm::sgemm_epilogue(
                                tr,
                                ohw,
                                kk,
                                Operand::a_rows(a.as_ptr(), kk),
                                Operand::b_rows(rhs_ptr as *const f32, ohw),
                                p.dst.add(start * ohw),
                                ohw,
                                Epilogue::new(bias_g.map(|b| &b[start..start + tr]), act),
                            )
                        };
                        debug_assert!(done);
                    });
                    return;
                }
                // SAFETY: rows start..start + rows of the mg x ohw output, which no
                // other task writes; rhs is kk x ohw.
                unsafe {
                    let dst = p.dst.add(start * ohw);
                    let rhs = Mat {
                        ptr: rhs_ptr as *const f32,
                        cs: 1,
                        rs: ohw as isize,
                    };
                    wv.sgemm(row0 + start, rows, kk, rhs, ohw, dst, ohw);
                    if bias_g.is_some() || act.is_some() {
                        let d = std::slice::from_raw_parts_mut(dst, rows * ohw);
                        for (j, row) in d.chunks_mut(ohw).enumerate() {
                            let b = bias_g.map_or(0.0, |b| b[start + j]);
                            Activation::apply_with_bias(act, row, b);
                        }
                    }
                }
            });
        }
    }
}

/// One column block of a Conv GEMM: output columns `start..start + cnt` of the
/// `mg x ohw` block at `dst`, unfolded (unless pointwise) into this thread's scratch,
/// then bias and activation. The weights are filter rows `row0..row0 + mg`.
///
/// # Safety
/// The filter must hold rows `row0..row0 + mg` of `kk` weights, `dst` an `mg x ohw`
/// block (row stride `ohw`) whose columns `start..start + cnt` nobody else accesses
/// meanwhile.
unsafe fn column_task(
    x: &[f32],
    (w, row0): (Filter<'_>, usize),
    dst: *mut f32,
    (pointwise, bias, act): (bool, Option<&[f32]>, Option<Activation>),
    (mg, ohw, kk, hw, start, cnt): (usize, usize, usize, usize, usize, usize),
    (ah, aw): (Axis, Axis),
) {
    let run = |rhs: Mat| -> bool {
        if ohw >= PACKED_MIN_COLUMNS && packed_gemm::available() {
            w.for_tiles(row0, mg, kk, |i0, tr, a| {
                // SAFETY: per the contract of `column_task`; rhs is kk x cnt (row-major,
                // cs 1); a holds rows i0..i0 + tr of the block's weights.
                let done = unsafe {
                    packed_gemm::sgemm_epilogue(
                        tr,
                        cnt,
                        kk,
                        Operand::a_rows(a.as_ptr(), kk),
                        Operand::b_rows(rhs.ptr, rhs.rs as usize),
                        dst.add(i0 * ohw + start),
                        ohw,
                        Epilogue::new(bias.map(|b| &b[i0..i0 + tr]), act),
                    )
                };
                debug_assert!(done);
            });
            return true;
        }
        // SAFETY: per the contract of `column_task`; rhs is kk x cnt.
        unsafe { w.sgemm(row0, mg, kk, rhs, cnt, dst.add(start), ohw) };
        false
    };
    let fused = if pointwise {
        run(Mat {
            ptr: x[start..].as_ptr(),
            cs: 1,
            rs: hw as isize,
        })
    } else {
        BLOCK.with(|cell| {
            let mut own = Vec::new();
            let mut held = cell.try_borrow_mut();
            let col = match held.as_mut() {
                Ok(v) => &mut **v,
                Err(_) => &mut own,
            };
            if col.len() < kk * cnt {
                col.resize(kk * cnt, 0.0);
            }
            let col = &mut col[..kk * cnt];
            im2col_cols(x, col, (ah, aw), start, cnt);
            run(Mat {
                ptr: col.as_ptr(),
                cs: 1,
                rs: cnt as isize,
            })
        })
    };
    if !fused && (bias.is_some() || act.is_some()) {
        for j in 0..mg {
            // SAFETY: row j, columns start..start + cnt of the block, owned by this task.
            let row = unsafe { std::slice::from_raw_parts_mut(dst.add(j * ohw + start), cnt) };
            Activation::apply_with_bias(act, row, bias.map_or(0.0, |b| b[j]));
        }
    }
}

thread_local! {
    /// The per-task unfolded column block of [`column_task`].
    static BLOCK: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Unfolds output columns `start..start + cnt` of `cg` channels of one image into
/// `col` (`cg*kh*kw` rows of `cnt`).
fn im2col_cols(x: &[f32], col: &mut [f32], (ah, aw): (Axis, Axis), start: usize, cnt: usize) {
    let (kh, kw) = (ah.kernel, aw.kernel);
    let (ih, iw) = (ah.input, aw.input);
    let ow = aw.output;
    for (row, dst) in col.chunks_mut(cnt).enumerate() {
        let ch = row / (kh * kw);
        let (dy, dx) = ((row / kw) % kh, row % kw);
        let src = &x[ch * ih * iw..][..ih * iw];
        let (oy0, oy1) = ah.valid(dy * ah.dilation);
        let (ox0, ox1) = aw.valid(dx * aw.dilation);
        let mut p = start;
        let end = start + cnt;
        while p < end {
            let (oy, oxa) = (p / ow, p % ow);
            let oxb = ow.min(oxa + (end - p));
            let d = &mut dst[p - start..][..oxb - oxa];
            p += oxb - oxa;
            if oy < oy0 || oy >= oy1 {
                d.fill(0.0);
                continue;
            }
            let y = oy * ah.stride + dy * ah.dilation - ah.pad;
            let line = &src[y * iw..][..iw];
            let (lo, hi) = (
                ox0.clamp(oxa, oxb),
                ox1.clamp(oxa, oxb).max(ox0.clamp(oxa, oxb)),
            );
            d[..lo - oxa].fill(0.0);
            d[hi - oxa..].fill(0.0);
            if lo < hi {
                let x0 = lo * aw.stride + dx * aw.dilation - aw.pad;
                let d = &mut d[lo - oxa..hi - oxa];
                if aw.stride == 1 {
                    d.copy_from_slice(&line[x0..x0 + (hi - lo)]);
                } else {
                    for (j, o) in d.iter_mut().enumerate() {
                        *o = line[x0 + j * aw.stride];
                    }
                }
            }
        }
    }
}

/// Unfolds `cg` channels of one image into `col` (`cg*kh*kw` rows of `oh*ow`).
fn im2col(x: &[f32], col: &mut [f32], (ah, aw): (Axis, Axis)) {
    let (kh, kw) = (ah.kernel, aw.kernel);
    let (ih, iw) = (ah.input, aw.input);
    let (oh, ow) = (ah.output, aw.output);
    crate::cpu::parallel::for_each_chunk(col, oh * ow, &|row, dst| {
        let ch = row / (kh * kw);
        let (dy, dx) = ((row / kw) % kh, row % kw);
        let src = &x[ch * ih * iw..][..ih * iw];
        let (oy0, oy1) = ah.valid(dy * ah.dilation);
        let (ox0, ox1) = aw.valid(dx * aw.dilation);
        dst[..oy0 * ow].fill(0.0);
        dst[oy1 * ow..].fill(0.0);
        for oy in oy0..oy1 {
            let y = oy * ah.stride + dy * ah.dilation - ah.pad;
            let line = &src[y * iw..][..iw];
            let d = &mut dst[oy * ow..][..ow];
            d[..ox0].fill(0.0);
            d[ox1..].fill(0.0);
            let x0 = ox0 * aw.stride + dx * aw.dilation - aw.pad;
            if aw.stride == 1 {
                d[ox0..ox1].copy_from_slice(&line[x0..x0 + (ox1 - ox0)]);
            } else {
                for (j, o) in d[ox0..ox1].iter_mut().enumerate() {
                    *o = line[x0 + j * aw.stride];
                }
            }
        }
    });
}

/// ONNX ConvTranspose on f32 with 1 or 2 spatial axes and explicit (or no) pads;
/// `Ok(None)` for other ranks, `auto_pad` or `output_shape`.
pub fn conv_transpose(
    a: &ConvAttrs,
    inputs: &[Option<&Tensor>],
    cx: &KernelCx<'_>,
) -> Result<Option<Tensor>> {
    let (x, w) = (input(inputs, 0)?, input(inputs, 1)?);
    let b = inputs.get(2).copied().flatten();
    let (xs, ws) = (x.shape(), w.shape());
    if a.output_shape.is_some() || a.auto_pad.as_deref().is_some_and(|p| p != "NOTSET") {
        return Ok(None);
    }
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(Error::invalid(format!(
            "ConvTranspose: input {xs:?} and weight {ws:?} ranks do not fit"
        )));
    }
    let (Some(_), Some(_)) = (as_2d(&xs[2..]), as_2d(&ws[2..])) else {
        return Ok(None);
    };
    let (n, c) = (xs[0], xs[1]);
    let group = usize::try_from(a.group()).unwrap_or(0);
    if group == 0 || ws[0] != c || c % group != 0 {
        return Err(Error::invalid(format!(
            "ConvTranspose: group {} does not fit input {xs:?} and weight {ws:?}",
            a.group()
        )));
    }
    let (cg, mg) = (c / group, ws[1]);
    let m = mg * group;
    let ns = xs.len() - 2;
    let strides = attr_list(&a.strides, ns, 1, "strides")?;
    let dil = attr_list(&a.dilations, ns, 1, "dilations")?;
    let pads = attr_list(&a.pads, 2 * ns, 0, "pads")?;
    let opad = attr_list(&a.output_padding, ns, 0, "output_padding")?;
    let mut axes = Vec::with_capacity(ns);
    for i in 0..ns {
        let full =
            strides[i] * (xs[2 + i].max(1) - 1) + opad[i] + dil[i] * (ws[2 + i].max(1) - 1) + 1;
        let out = full
            .checked_sub(pads[i] + pads[i + ns])
            .ok_or_else(|| Error::invalid("ConvTranspose: pads exceed the output"))?;
        // Roles swap: the "input" of the sliding window is this op's output.
        axes.push(Axis {
            input: out,
            kernel: ws[2 + i],
            stride: strides[i],
            dilation: dil[i],
            pad: pads[i],
            output: xs[2 + i],
        });
    }
    let (ah, aw) = if ns == 1 {
        (unit_axis(1), axes[0])
    } else {
        (axes[0], axes[1])
    };
    let (hw, ohw) = (ah.output * aw.output, ah.input * aw.input);
    let kk = mg * ah.kernel * aw.kernel;
    let (xv, wv) = (f32s(x)?, f32s(w)?);
    if xv.len() != n * c * hw || wv.len() != c * kk {
        return Err(Error::invalid(
            "ConvTranspose: data does not match the shapes",
        ));
    }
    let mut out_shape = vec![n, m];
    out_shape.extend(axes.iter().map(|ax| ax.input));
    let mut out = super::zeros(&out_shape)?;
    if let Some(b) = b {
        let bv = f32s(b)?;
        if bv.len() != m {
            return Err(Error::invalid(
                "ConvTranspose: bias does not match the channels",
            ));
        }
        for (i, o) in out.chunks_mut(ohw.max(1)).enumerate() {
            o.fill(bv[i % m]);
        }
    }
    let mut col = vec![0f32; kk * hw];
    for img in 0..n {
        for g in 0..group {
            let xg = &xv[(img * c + g * cg) * hw..][..cg * hw];
            let wg = &wv[g * cg * kk..][..cg * kk];
            // col (kk x hw) = wgᵀ (kk x cg) * xg (cg x hw)
            // SAFETY: lengths checked above.
            unsafe {
                sgemm(
                    kk,
                    hw,
                    cg,
                    col.as_mut_ptr(),
                    hw,
                    false,
                    Mat {
                        ptr: wg.as_ptr(),
                        cs: kk as isize,
                        rs: 1,
                    },
                    Mat {
                        ptr: xg.as_ptr(),
                        cs: 1,
                        rs: hw as isize,
                    },
                    1.0,
                    cx.gemm_par(),
                );
            }
            let dst = &mut out[(img * m + g * mg) * ohw..][..mg * ohw];
            col2im(&col, dst, (ah, aw));
        }
    }
    Tensor::from_f32_vec(out_shape, out).map(Some)
}

/// Adds the columns back into the (larger) output image, channel planes in parallel.
fn col2im(col: &[f32], dst: &mut [f32], (ah, aw): (Axis, Axis)) {
    let (kh, kw) = (ah.kernel, aw.kernel);
    let (oh, ow) = (ah.input, aw.input); // image being written
    let (ih, iw) = (ah.output, aw.output); // column grid
    crate::cpu::parallel::for_each_chunk(dst, oh * ow, &|ch, plane| {
        for dy in 0..kh {
            let (y0, y1) = ah.valid(dy * ah.dilation);
            for dx in 0..kw {
                let (x0, x1) = aw.valid(dx * aw.dilation);
                let row = &col[((ch * kh + dy) * kw + dx) * ih * iw..][..ih * iw];
                for y in y0..y1 {
                    let py = y * ah.stride + dy * ah.dilation - ah.pad;
                    for xx in x0..x1 {
                        let px = xx * aw.stride + dx * aw.dilation - aw.pad;
                        plane[py * ow + px] += row[y * iw + xx];
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::kernels::test_util::{close, cx_pool, t};

    /// Naive NCHW convolution.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        x: &[f32],
        w: &[f32],
        b: Option<&[f32]>,
        [n, c, h, wd]: [usize; 4],
        [m, kh, kw]: [usize; 3],
        group: usize,
        [sh, sw]: [usize; 2],
        [dh, dw]: [usize; 2],
        [pt, pl, pb, pr]: [usize; 4],
    ) -> (Vec<f32>, [usize; 2]) {
        let oh = (h + pt + pb - dh * (kh - 1) - 1) / sh + 1;
        let ow = (wd + pl + pr - dw * (kw - 1) - 1) / sw + 1;
        let (cg, mg) = (c / group, m / group);
        let mut out = vec![0f32; n * m * oh * ow];
        for i in 0..n {
            for o in 0..m {
                let g = o / mg;
                for y in 0..oh {
                    for xx in 0..ow {
                        let mut s = b.map_or(0.0, |b| b[o]);
                        for ci in 0..cg {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (y * sh + ky * dh) as i64 - pt as i64;
                                    let ix = (xx * sw + kx * dw) as i64 - pl as i64;
                                    if iy < 0 || ix < 0 || iy >= h as i64 || ix >= wd as i64 {
                                        continue;
                                    }
                                    let cin = g * cg + ci;
                                    s += x[((i * c + cin) * h + iy as usize) * wd + ix as usize]
                                        * w[((o * cg + ci) * kh + ky) * kw + kx];
                                }
                            }
                        }
                        out[((i * m + o) * oh + y) * ow + xx] = s;
                    }
                }
            }
        }
        (out, [oh, ow])
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn conv_matches_naive_over_many_configurations() {
        let pool = cx_pool(2);
        let _installed = pool.enter();
        let cx = KernelCx::new(2);
        // (n, c, h, w, m, kh, kw, group, stride, dilation, pads)
        let cases: &[(
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
            [usize; 2],
            [usize; 2],
            [usize; 4],
        )] = &[
            (1, 3, 7, 9, 5, 3, 3, 1, [1, 1], [1, 1], [1, 1, 1, 1]),
            (2, 4, 8, 7, 6, 3, 2, 2, [2, 1], [1, 2], [0, 2, 1, 0]),
            (1, 6, 9, 9, 6, 3, 3, 6, [2, 2], [1, 1], [1, 1, 1, 1]),
            (1, 4, 6, 5, 8, 3, 3, 4, [1, 2], [2, 1], [2, 1, 0, 1]),
            (2, 5, 4, 6, 3, 1, 1, 1, [1, 1], [1, 1], [0, 0, 0, 0]),
            (1, 5, 7, 7, 4, 1, 1, 1, [2, 2], [1, 1], [0, 0, 0, 0]),
            (1, 2, 11, 10, 3, 5, 5, 1, [3, 2], [1, 1], [2, 2, 2, 2]),
            (1, 5, 9, 8, 5, 3, 3, 5, [2, 1], [2, 2], [2, 1, 1, 2]),
            (2, 3, 10, 11, 3, 3, 2, 3, [3, 3], [1, 2], [0, 1, 2, 0]),
            (1, 4, 1, 7, 4, 1, 3, 4, [1, 1], [1, 1], [0, 1, 0, 1]),
            // Parallel column blocks that start and end inside output rows.
            (1, 128, 20, 21, 24, 3, 3, 1, [1, 1], [1, 1], [1, 1, 1, 1]),
            // Few output columns, many channels: split by output channels.
            (1, 32, 5, 6, 40, 3, 3, 1, [1, 1], [1, 1], [1, 1, 1, 1]),
            // Parallel pointwise.
            (1, 32, 16, 17, 20, 1, 1, 1, [1, 1], [1, 1], [0, 0, 0, 0]),
            // Stride 1 (implicit GEMM): dilation, asymmetric pads, groups, K blocks,
            // several row blocks of output channels.
            (2, 8, 7, 9, 12, 3, 2, 2, [1, 1], [2, 1], [2, 0, 1, 3]),
            (1, 64, 9, 10, 40, 3, 3, 1, [1, 1], [1, 1], [1, 1, 1, 1]),
            (1, 3, 30, 31, 17, 7, 7, 1, [1, 1], [1, 1], [3, 3, 3, 3]),
            // Strided and dilated at once, pads past the kernel's reach, and wide enough
            // (>= 64 positions per channel) for the implicit GEMM.
            (1, 6, 21, 24, 10, 3, 3, 1, [2, 2], [2, 2], [1, 4, 3, 1]),
            (2, 5, 17, 19, 9, 2, 3, 1, [1, 3], [3, 1], [4, 0, 0, 5]),
            // Depthwise over several blocks of output rows.
            (1, 3, 70, 70, 3, 3, 3, 3, [1, 1], [1, 1], [1, 1, 1, 1]),
            (1, 3, 70, 69, 3, 3, 3, 3, [2, 2], [1, 1], [1, 0, 1, 1]),
        ];
        for (i, &(n, c, h, w, m, kh, kw, group, s, d, p)) in cases.iter().enumerate() {
            let x = t(&[n, c, h, w], i as u64);
            let wt = t(&[m, c / group, kh, kw], 100 + i as u64);
            let b = t(&[m], 200 + i as u64);
            let attrs = ConvAttrs {
                group: Some(group as i64),
                strides: Some(s.iter().map(|&v| v as i64).collect()),
                dilations: Some(d.iter().map(|&v| v as i64).collect()),
                pads: Some(p.iter().map(|&v| v as i64).collect()),
                ..Default::default()
            };
            let bias = b.to_f32().unwrap();
            let (want, [oh, ow]) = naive(
                &x.to_f32().unwrap(),
                &wt.to_f32().unwrap(),
                Some(&bias),
                [n, c, h, w],
                [m, kh, kw],
                group,
                s,
                d,
                [p[0], p[1], p[2], p[3]],
            );
            let got = conv(&attrs, &[Some(&x), Some(&wt), Some(&b)], None, &cx)
                .unwrap()
                .unwrap();
            assert_eq!(got.shape(), &[n, m, oh, ow], "case {i}");
            close(&got.to_f32().unwrap(), &want);
            // The fused activation equals the activation applied afterwards.
            let act = Activation::Clip(-0.5, 0.25);
            let fused = conv(&attrs, &[Some(&x), Some(&wt), Some(&b)], Some(act), &cx)
                .unwrap()
                .unwrap();
            let clipped: Vec<f32> = want.iter().map(|v| v.clamp(-0.5, 0.25)).collect();
            close(&fused.to_f32().unwrap(), &clipped);
        }
    }

    #[test]
    fn conv_same_padding_and_1d() {
        let pool = cx_pool(1);
        let _installed = pool.enter();
        let cx = KernelCx::new(1);
        let x = t(&[1, 2, 5, 6], 1);
        let w = t(&[3, 2, 3, 3], 2);
        let attrs = ConvAttrs {
            auto_pad: Some("SAME_UPPER".into()),
            strides: Some(vec![2, 2]),
            ..Default::default()
        };
        let got = conv(&attrs, &[Some(&x), Some(&w)], None, &cx)
            .unwrap()
            .unwrap();
        assert_eq!(got.shape(), &[1, 3, 3, 3]);
        // SAME_UPPER with total padding 2 (rows) / 1 (cols): begin 1 / 0.
        let (want, _) = naive(
            &x.to_f32().unwrap(),
            &w.to_f32().unwrap(),
            None,
            [1, 2, 5, 6],
            [3, 3, 3],
            1,
            [2, 2],
            [1, 1],
            [1, 0, 1, 1],
        );
        close(&got.to_f32().unwrap(), &want);
        let x1 = t(&[2, 3, 10], 3);
        let w1 = t(&[4, 3, 3], 4);
        let got = conv(
            &ConvAttrs {
                pads: Some(vec![1, 1]),
                ..Default::default()
            },
            &[Some(&x1), Some(&w1)],
            None,
            &cx,
        )
        .unwrap()
        .unwrap();
        let (want, _) = naive(
            &x1.to_f32().unwrap(),
            &w1.to_f32().unwrap(),
            None,
            [2, 3, 1, 10],
            [4, 1, 3],
            1,
            [1, 1],
            [1, 1],
            [0, 1, 0, 1],
        );
        assert_eq!(got.shape(), &[2, 4, 10]);
        close(&got.to_f32().unwrap(), &want);
        let bad = t(&[3, 5, 3, 3], 5);
        assert!(conv(&ConvAttrs::default(), &[Some(&x), Some(&bad)], None, &cx).is_err());
    }

    #[test]
    fn conv_transpose_is_the_adjoint_of_conv() {
        // <conv(x), y> == <x, convT(y)> for the same weight, stride, dilation, pads.
        let pool = cx_pool(2);
        let _installed = pool.enter();
        let cx = KernelCx::new(2);
        let (c, m, h, w) = (4, 6, 7, 8);
        let x = t(&[1, c, h, w], 1);
        let wt = t(&[m, c / 2, 3, 2], 2);
        let attrs = ConvAttrs {
            group: Some(2),
            strides: Some(vec![2, 1]),
            dilations: Some(vec![1, 2]),
            pads: Some(vec![1, 0, 1, 1]),
            ..Default::default()
        };
        let y = conv(&attrs, &[Some(&x), Some(&wt)], None, &cx)
            .unwrap()
            .unwrap();
        let r = t(y.shape(), 3);
        let mut tattrs = attrs.clone();
        // Output padding makes the transposed output match the input extent exactly.
        let oh = 2 * (y.shape()[2] - 1) + 3 - 2;
        let ow = y.shape()[3] - 1 + 2 + 1 - 1;
        tattrs.output_padding = Some(vec![(h - oh) as i64, (w - ow) as i64]);
        let back = conv_transpose(&tattrs, &[Some(&r), Some(&wt)], &cx)
            .unwrap()
            .unwrap();
        assert_eq!(back.shape(), &[1, c, h, w]);
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x * y) as f64).sum::<f64>();
        let lhs = dot(&y.to_f32().unwrap(), &r.to_f32().unwrap());
        let rhs = dot(&x.to_f32().unwrap(), &back.to_f32().unwrap());
        assert!(
            (lhs - rhs).abs() < 1e-3 * (1.0 + lhs.abs()),
            "{lhs} vs {rhs}"
        );
    }
}
