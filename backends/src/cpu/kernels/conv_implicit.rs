//! Conv as an implicit GEMM: no im2col buffer.
//!
//! The input planes are copied once, zero-bordered, and split into `sh x sw` phase
//! planes of width `wp` (padded row `Y` goes to phase `Y % sh`, row `Y / sh`; columns
//! alike), so that every stride becomes 1. Output position `(oy, ox)` becomes column
//! `q = oy * wp + ox`; row `(c, ky, kx)` of the unfolded input is then one phase plane
//! of channel `c` (the phase of `ky * dh`, `kx * dw`) shifted by whole rows and columns,
//! contiguous in `q`. The GEMM reads
//! those rows through an offset table, computes the `wp - ow` columns past each output
//! row too (a few percent more work), and each task copies its valid columns out.

use super::conv::Axis;
use super::dq_conv::Filter;
use super::packed_gemm::{self, Epilogue, Operand};
use super::Activation;
use std::mem::MaybeUninit;

/// Output columns per task before splitting by rows too.
const COLS: usize = 240;

/// Raw pointers shared by the tasks of one call.
#[derive(Clone, Copy)]
struct Shared {
    out: *mut f32,
}
// SAFETY: every task writes a disjoint set of output elements (its rows x its columns).
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

/// One group's Conv (`x`: `cg` input planes, `w`: rows `row0..row0 + mg` of the
/// filter, `kk` weights each, `out`: `mg` output planes) when the AVX-512 GEMM is
/// available: writes every element of `out` (bias and activation applied) and returns
/// `true`; otherwise returns `false` having written nothing.
#[allow(clippy::too_many_arguments)]
pub(super) fn conv_implicit(
    x: &[f32],
    (w, row0): (Filter<'_>, usize),
    bias: Option<&[f32]>,
    act: Option<Activation>,
    out: &mut [MaybeUninit<f32>],
    (ah, aw): (Axis, Axis),
    (cg, mg): (usize, usize),
    threads: usize,
) -> bool {
    // A strided 1x1 kernel reads one phase of the input: im2col's gather is cheaper
    // than copying every phase.
    let strided_1x1 = ah.kernel * aw.kernel == 1 && ah.stride * aw.stride > 1;
    if !packed_gemm::available() || strided_1x1 {
        return false;
    }
    let (kh, kw, dh, dw) = (ah.kernel, aw.kernel, ah.dilation, aw.dilation);
    let (sh, sw) = (ah.stride, aw.stride);
    let (ih, iw, oh, ow) = (ah.input, aw.input, ah.output, aw.output);
    let kk = cg * kh * kw;
    // Phase planes: padded row Y lands in phase Y % sh at row Y / sh (columns alike).
    let hp = (oh + (kh - 1) * dh / sh).max((ah.pad + ih).div_ceil(sh));
    let wp = (ow + (kw - 1) * dw / sw).max((aw.pad + iw).div_ceil(sw));
    let plane = hp * wp;
    let chan = sh * sw * plane;
    if x.len() < cg * ih * iw
        || w.len() < (row0 + mg) * kk
        || out.len() < mg * oh * ow
        || bias.is_some_and(|b| b.len() < mg)
        || oh == 0
        || ow == 0
    {
        return false;
    }
    // The padded planes live on in this thread between calls; only what the copy does
    // not overwrite is zeroed.
    let mut xp = PADDED.with(|cell| cell.take());
    if xp.len() < cg * chan {
        xp.resize(cg * chan, 0.0);
    }
    crate::cpu::parallel::for_each_chunk(&mut xp[..cg * chan], chan, &|c, dst| {
        let src = &x[c * ih * iw..][..ih * iw];
        if sh == 1 && sw == 1 {
            // One phase: zero the border rows and each row's border columns.
            let (top, left) = (ah.pad, aw.pad);
            dst[..top * wp].fill(0.0);
            dst[(top + ih) * wp..].fill(0.0);
            for (y, line) in src.chunks_exact(iw).enumerate() {
                let row = &mut dst[(top + y) * wp..][..wp];
                row[..left].fill(0.0);
                row[left..left + iw].copy_from_slice(line);
                row[left + iw..].fill(0.0);
            }
            return;
        }
        dst.fill(0.0);
        for (y, line) in src.chunks_exact(iw).enumerate() {
            let yy = y + ah.pad;
            let row0 = (yy % sh) * sw * plane + (yy / sh) * wp;
            // Column phase by phase: every sw-th input column, consecutive outputs.
            for px in 0..sw {
                let first = (px + sw - aw.pad % sw) % sw;
                if first >= iw {
                    continue;
                }
                let at = row0 + px * plane + (first + aw.pad) / sw;
                let cols = line[first..].iter().step_by(sw);
                for (d, &v) in dst[at..].iter_mut().zip(cols) {
                    *d = v;
                }
            }
        }
    });
    let offs: Vec<usize> = (0..cg)
        .flat_map(|c| {
            (0..kh).flat_map(move |ky| {
                (0..kw).map(move |kx| {
                    let (ty, tx) = (ky * dh, kx * dw);
                    c * chan + ((ty % sh) * sw + tx % sw) * plane + (ty / sh) * wp + tx / sw
                })
            })
        })
        .collect();
    let nq = (oh - 1) * wp + ow;
    // Column blocks of whole 48-column tiles, then row blocks (of 8) until there are
    // about four tasks per thread.
    let col_blocks = nq.div_ceil(COLS);
    let per_col = nq.div_ceil(col_blocks).div_ceil(48) * 48;
    let col_blocks = nq.div_ceil(per_col);
    // Tasks go row block by row block, and the pool hands out halves of the task
    // range first: with a whole number of row blocks per thread every thread starts
    // with the same mix of full and partial column blocks.
    let row_blocks = if threads > 1 {
        (4 * threads).div_ceil(col_blocks).div_ceil(threads) * threads
    } else {
        1
    };
    let row_blocks = row_blocks.min(mg.div_ceil(8)).max(1);
    let per_row = mg.div_ceil(row_blocks).div_ceil(8) * 8;
    let row_blocks = mg.div_ceil(per_row);
    let tasks = col_blocks * row_blocks;
    let shared = Shared {
        out: out.as_mut_ptr().cast::<f32>(),
    };
    let epi_all = Epilogue::new(bias, act);
    let (xp_all, offs) = (&xp[..cg * chan], &offs[..]);
    let task = move |t: usize| {
        let sh = shared;
        let (rb, cb) = (t / col_blocks, t % col_blocks);
        let (r0, q0) = (rb * per_row, cb * per_col);
        let (rows, cnt) = (per_row.min(mg - r0), per_col.min(nq - q0));
        TEMP.with(|cell| {
            let mut own = Vec::new();
            let mut held = cell.try_borrow_mut();
            let tmp = match held.as_mut() {
                Ok(v) => &mut **v,
                Err(_) => &mut own,
            };
            if tmp.len() < rows * cnt {
                tmp.resize(rows * cnt, 0.0);
            }
            w.for_tiles(row0 + r0, rows, kk, |i0, tr, a| {
                let epi = Epilogue {
                    bias: epi_all.bias.map(|b| &b[r0 + i0..r0 + i0 + tr]),
                    ..epi_all
                };
                // SAFETY: a holds the tr x kk weights of rows r0 + i0..; B row p is a
                // phase plane at offs[p] + q0 + j for j < cnt, whose index within its
                // plane is at most ((kh-1)*dh/sh)*wp + (kw-1)*dw/sw + nq - 1 < hp * wp
                // because hp >= oh + (kh-1)*dh/sh and wp >= ow + (kw-1)*dw/sw; tmp
                // holds rows x cnt, of which rows i0..i0 + tr are written.
                let done = unsafe {
                    packed_gemm::sgemm_epilogue(
                        tr,
                        cnt,
                        kk,
                        Operand::a_rows(a.as_ptr(), kk),
                        Operand {
                            base: xp_all.as_ptr().add(q0),
                            k_stride: 0,
                            offs: Some(offs),
                            step: 1,
                            panel_step: 1,
                        },
                        tmp.as_mut_ptr().add(i0 * cnt),
                        cnt,
                        epi,
                    )
                };
                debug_assert!(done);
            });
            // Copy the valid columns (ox < ow) of each row out.
            for r in 0..rows {
                let src = &tmp[r * cnt..][..cnt];
                let mut q = q0;
                while q < q0 + cnt {
                    let (oy, ox) = (q / wp, q % wp);
                    let run_end = (oy * wp + wp).min(q0 + cnt);
                    if ox < ow {
                        let len = (oy * wp + ow).min(run_end) - q;
                        // SAFETY: output plane r0 + r, elements oy*ow + ox .. + len of
                        // this task's rows and columns only.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                src[q - q0..].as_ptr(),
                                sh.out.add((r0 + r) * oh * ow + oy * ow + ox),
                                len,
                            );
                        }
                    }
                    q = run_end;
                }
            }
        });
    };
    if tasks == 1 || threads <= 1 {
        (0..tasks).for_each(task);
    } else {
        crate::cpu::parallel::for_each(tasks, &task);
    }
    PADDED.with(|cell| cell.replace(xp));
    true
}

thread_local! {
    /// The zero-bordered input planes of the last call on this thread.
    static PADDED: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    /// Each task's GEMM output block before its valid columns are copied out.
    static TEMP: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}
