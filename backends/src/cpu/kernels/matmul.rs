//! MatMul (with batch broadcasting) and Gemm on f32, through the `gemm` crate.

use super::{f32s, input, KernelCx};
use crate::cpu::eval::broadcast_shapes;
use cc_ir::{Error, Result, Tensor};

/// A strided row-major-or-transposed matrix operand.
#[derive(Clone, Copy)]
pub(crate) struct Mat {
    /// Pointer to element (0, 0).
    pub ptr: *const f32,
    /// Column stride.
    pub cs: isize,
    /// Row stride.
    pub rs: isize,
}

/// `dst (m x n, row-major, leading dimension ldd) = [dst +] scale * lhs * rhs`.
///
/// # Safety
/// `dst` must be valid for writes of an `m x n` block with row stride `ldd`, and `lhs`
/// / `rhs` valid for reads of `m x k` / `k x n` elements at their strides.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    ldd: usize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
    scale: f32,
    par: gemm::Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                std::ptr::write_bytes(dst.add(i * ldd), 0, n);
            }
        }
        return;
    }
    if !matches!(par, gemm::Parallelism::None) {
        split_sgemm(m, n, k, dst, ldd, accumulate, lhs, rhs, scale);
        return;
    }
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        ldd as isize,
        accumulate,
        lhs.ptr,
        lhs.cs,
        lhs.rs,
        rhs.ptr,
        rhs.cs,
        rhs.rs,
        1.0,
        scale,
        false,
        false,
        false,
        par,
    );
}

/// Multiply-adds below which a product runs on one thread.
const SERIAL_WORK: usize = 1 << 18;

/// [`sgemm`] split into blocks of rows or columns of `dst`, run on the installed
/// [`crate::cpu::parallel`] pool (each block a single-threaded `gemm` call).
///
/// # Safety
/// As for [`sgemm`].
#[allow(clippy::too_many_arguments)]
unsafe fn split_sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    ldd: usize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
    scale: f32,
) {
    let threads = crate::cpu::parallel::threads();
    let work = m.saturating_mul(n).saturating_mul(k);
    let tasks = (work / SERIAL_WORK).clamp(1, 4 * threads);
    /// The destination and operands, shared by the tasks.
    #[derive(Clone, Copy)]
    struct Shared {
        dst: *mut f32,
        lhs: Mat,
        rhs: Mat,
    }
    // SAFETY: tasks read the operands and write disjoint blocks of `dst`.
    unsafe impl Send for Shared {}
    // SAFETY: as above.
    unsafe impl Sync for Shared {}
    let sh = Shared { dst, lhs, rhs };
    let run = move |r0: usize, rows: usize, c0: usize, cols: usize| {
        // Captures the whole `Shared` (Sync), not its raw-pointer fields.
        #[allow(clippy::redundant_locals)]
        let sh = sh;
        // SAFETY: the block rows r0..r0 + rows, columns c0..c0 + cols lies inside the
        // m x n product, which the caller guarantees valid; blocks are disjoint.
        unsafe {
            sgemm(
                rows,
                cols,
                k,
                sh.dst.add(r0 * ldd + c0),
                ldd,
                accumulate,
                Mat {
                    ptr: sh.lhs.ptr.offset(r0 as isize * sh.lhs.rs),
                    ..sh.lhs
                },
                Mat {
                    ptr: sh.rhs.ptr.offset(c0 as isize * sh.rhs.cs),
                    ..sh.rhs
                },
                scale,
                gemm::Parallelism::None,
            )
        }
    };
    if tasks <= 1 || threads <= 1 {
        run(0, m, 0, n);
    } else if n >= m {
        let per = n.div_ceil(tasks).div_ceil(16) * 16;
        crate::cpu::parallel::for_each(n.div_ceil(per), &|t| {
            let c0 = t * per;
            run(0, m, c0, per.min(n - c0));
        });
    } else {
        let per = m.div_ceil(tasks).div_ceil(8) * 8;
        crate::cpu::parallel::for_each(m.div_ceil(per), &|t| {
            let r0 = t * per;
            run(r0, per.min(m - r0), 0, n);
        });
    }
}

/// Row-major matrix product `c (m x n) = a (m x k) * b (k x n)` on slices, checked.
pub(crate) fn matmul_slices(
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    dims: (usize, usize, usize),
    par: gemm::Parallelism,
) -> Result<()> {
    // SAFETY: f32 and MaybeUninit<f32> have the same layout, and the product only writes
    // initialized values into `c`.
    let c = unsafe { &mut *(c as *mut [f32] as *mut [std::mem::MaybeUninit<f32>]) };
    matmul_uninit(a, b, c, dims, par)
}

/// [`matmul_slices`] into an output that need not be initialized: the product writes
/// every element of the first `m * n` (it never reads the destination).
pub(crate) fn matmul_uninit(
    a: &[f32],
    b: &[f32],
    c: &mut [std::mem::MaybeUninit<f32>],
    (m, k, n): (usize, usize, usize),
    par: gemm::Parallelism,
) -> Result<()> {
    if a.len() < m * k || b.len() < k * n || c.len() < m * n {
        return Err(Error::invalid("matrix product: operand too small"));
    }
    // SAFETY: the lengths were checked above.
    unsafe {
        sgemm(
            m,
            n,
            k,
            c.as_mut_ptr().cast::<f32>(),
            n,
            false,
            Mat {
                ptr: a.as_ptr(),
                cs: 1,
                rs: k as isize,
            },
            Mat {
                ptr: b.as_ptr(),
                cs: 1,
                rs: n as isize,
            },
            1.0,
            par,
        );
    }
    Ok(())
}

/// ONNX MatMul on f32 (numpy semantics: 1-D operands promoted, batch dims broadcast).
pub fn matmul(a: &Tensor, b: &Tensor, cx: &KernelCx<'_>) -> Result<Tensor> {
    let (sa, sb) = (a.shape(), b.shape());
    if sa.is_empty() || sb.is_empty() {
        return Err(Error::invalid("MatMul: operands must have rank >= 1"));
    }
    let a_shape: Vec<usize> = if sa.len() == 1 {
        vec![1, sa[0]]
    } else {
        sa.to_vec()
    };
    let b_shape: Vec<usize> = if sb.len() == 1 {
        vec![sb[0], 1]
    } else {
        sb.to_vec()
    };
    let (ra, rb) = (a_shape.len(), b_shape.len());
    let (m, k) = (a_shape[ra - 2], a_shape[ra - 1]);
    let (k2, n) = (b_shape[rb - 2], b_shape[rb - 1]);
    if k != k2 {
        return Err(Error::invalid(format!(
            "MatMul: inner dimensions differ ({sa:?} x {sb:?})"
        )));
    }
    let batch = broadcast_shapes(&[&a_shape[..ra - 2], &b_shape[..rb - 2]])
        .map_err(|e| Error::invalid(format!("MatMul: {e}")))?;
    let mut out_shape = batch.clone();
    if sa.len() > 1 {
        out_shape.push(m);
    }
    if sb.len() > 1 {
        out_shape.push(n);
    }
    let nb: usize = batch.iter().product();
    let (av, bv) = (f32s(a)?, f32s(b)?);
    let a_off = batch_offsets(&a_shape[..ra - 2], &batch, m * k);
    let b_off = batch_offsets(&b_shape[..rb - 2], &batch, k * n);
    if av.len() < a_off.iter().max().map_or(0, |&o| o + m * k)
        || bv.len() < b_off.iter().max().map_or(0, |&o| o + k * n)
    {
        return Err(Error::invalid(
            "MatMul: operand data is shorter than its shape",
        ));
    }
    let b_shared = b_off.iter().all(|&o| o == 0);
    let a_contig = a_off.iter().enumerate().all(|(i, &o)| o == i * m * k);
    if b_shared && a_contig && k > 0 {
        // One big product: stack the batch into rows, written without zeroing first.
        let fill = |o: &mut [std::mem::MaybeUninit<f32>]| {
            matmul_uninit(&av, &bv, o, (nb * m, k, n), cx.gemm_par())
        };
        // SAFETY: the product writes all nb * m * n elements (k > 0, so it computes
        // every output rather than leaving any to a zero fill).
        let out = unsafe { super::write_new(nb * m * n, fill)? };
        return Tensor::from_f32_vec(out_shape, out);
    }
    let mut out = super::zeros(&[nb, m, n])?;
    if nb >= cx.threads && m * n * k < 1 << 18 {
        let failed = std::sync::Mutex::new(None);
        crate::cpu::parallel::for_each_chunk(&mut out, (m * n).max(1), &|i, c| {
            if let Err(e) = matmul_slices(
                &av[a_off[i]..],
                &bv[b_off[i]..],
                c,
                (m, k, n),
                gemm::Parallelism::None,
            ) {
                if let Ok(mut f) = failed.lock() {
                    f.get_or_insert(e);
                }
            }
        });
        if let Some(e) = failed.into_inner().ok().flatten() {
            return Err(e);
        }
    } else {
        for (i, c) in out.chunks_mut((m * n).max(1)).enumerate() {
            matmul_slices(
                &av[a_off[i]..],
                &bv[b_off[i]..],
                c,
                (m, k, n),
                cx.gemm_par(),
            )?;
        }
    }
    Tensor::from_f32_vec(out_shape, out)
}

/// For each index of the broadcast batch shape `out`, the element offset of the matching
/// matrix of an operand with batch shape `src` (right-aligned, size-1 dims broadcast).
fn batch_offsets(src: &[usize], out: &[usize], mat: usize) -> Vec<usize> {
    let nb: usize = out.iter().product();
    let pad = out.len() - src.len();
    // Strides of src in matrices, 0 where broadcast.
    let mut strides = vec![0usize; out.len()];
    let mut acc = 1;
    for d in (0..src.len()).rev() {
        strides[d + pad] = if src[d] == 1 { 0 } else { acc };
        acc *= src[d];
    }
    let mut offs = Vec::with_capacity(nb);
    let mut idx = vec![0usize; out.len()];
    for _ in 0..nb {
        offs.push(idx.iter().zip(&strides).map(|(i, s)| i * s).sum::<usize>() * mat);
        for d in (0..out.len()).rev() {
            idx[d] += 1;
            if idx[d] < out[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    offs
}

/// ONNX Gemm on f32: `alpha * A' * B' + beta * C` (C broadcast to the output).
pub fn gemm_op(
    inputs: &[Option<&Tensor>],
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
    cx: &KernelCx<'_>,
) -> Result<Tensor> {
    let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
    let c = inputs.get(2).copied().flatten();
    let (&[ar, ac], &[br, bc]) = (a.shape(), b.shape()) else {
        return Err(Error::invalid(format!(
            "Gemm: A and B must be 2-D, got {:?} and {:?}",
            a.shape(),
            b.shape()
        )));
    };
    let (m, k, n) = gemm_dims(a.shape(), [ar, ac], b.shape(), [br, bc], trans_a, trans_b)?;
    let (av, bv) = (f32s(a)?, f32s(b)?);
    if av.len() != m * k || bv.len() != k * n {
        return Err(Error::invalid(
            "Gemm: operand data does not match its shape",
        ));
    }
    let mut out = super::zeros(&[m, n])?;
    if m == 1 && trans_b {
        // A vector times rows of B: dot products over contiguous rows.
        if let Some(c) = c.filter(|_| beta != 0.0) {
            fill_broadcast_c(&mut out, c, m, n, beta)?;
        }
        crate::cpu::parallel::for_each_chunk(&mut out, 64, &|i, o| {
            for (j, o) in o.iter_mut().enumerate() {
                let row = &bv[(i * 64 + j) * k..][..k];
                *o += alpha * super::simd::dot(&av, row);
            }
        });
        return Tensor::from_f32_vec(vec![m, n], out);
    }
    let mut accumulate = false;
    if let Some(c) = c {
        if beta != 0.0 {
            fill_broadcast_c(&mut out, c, m, n, beta)?;
            accumulate = true;
        }
    }
    let lhs = Mat {
        ptr: av.as_ptr(),
        cs: if trans_a { m as isize } else { 1 },
        rs: if trans_a { 1 } else { k as isize },
    };
    let rhs = Mat {
        ptr: bv.as_ptr(),
        cs: if trans_b { k as isize } else { 1 },
        rs: if trans_b { 1 } else { n as isize },
    };
    // SAFETY: operand lengths were checked against m, k, n above.
    unsafe {
        sgemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            n,
            accumulate,
            lhs,
            rhs,
            alpha,
            cx.gemm_par(),
        );
    }
    Tensor::from_f32_vec(vec![m, n], out)
}

/// Gemm's `(m, k, n)` from the 2-D extents of A (`[ar, ac]`) and B (`[br, bc]`) and the
/// transpose flags; an error naming both shapes when the inner dimensions differ.
pub(crate) fn gemm_dims(
    a_shape: &[usize],
    [ar, ac]: [usize; 2],
    b_shape: &[usize],
    [br, bc]: [usize; 2],
    trans_a: bool,
    trans_b: bool,
) -> Result<(usize, usize, usize)> {
    let (m, k) = if trans_a { (ac, ar) } else { (ar, ac) };
    let (k2, n) = if trans_b { (bc, br) } else { (br, bc) };
    if k != k2 {
        return Err(Error::invalid(format!(
            "Gemm: inner dimensions differ ({:?}{} x {:?}{})",
            a_shape,
            if trans_a { "ᵀ" } else { "" },
            b_shape,
            if trans_b { "ᵀ" } else { "" }
        )));
    }
    Ok((m, k, n))
}

/// Writes `beta * C` broadcast (unidirectionally) to an `m x n` buffer.
pub(crate) fn fill_broadcast_c(
    out: &mut [f32],
    c: &Tensor,
    m: usize,
    n: usize,
    beta: f32,
) -> Result<()> {
    let cv = f32s(c)?;
    let s = c.shape();
    let (cr, cc) = match s {
        [] => (1, 1),
        [x] => (1, *x),
        [r, x] => (*r, *x),
        _ => return Err(Error::invalid(format!("Gemm: C has rank {}", s.len()))),
    };
    if (cr != 1 && cr != m) || (cc != 1 && cc != n) || cv.len() != cr * cc {
        return Err(Error::invalid(format!(
            "Gemm: C {s:?} does not broadcast to [{m}, {n}]"
        )));
    }
    for (i, row) in out.chunks_mut(n.max(1)).enumerate() {
        let r = if cr == 1 { 0 } else { i };
        for (j, o) in row.iter_mut().enumerate() {
            *o = beta
                * cv.get(r * cc + if cc == 1 { 0 } else { j })
                    .copied()
                    .unwrap_or(0.0);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::kernels::test_util::{close, cx_pool, t};

    fn naive_mm(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn matmul_broadcasts_batches() {
        let pool = cx_pool(2);
        let _installed = pool.enter();
        let cx = KernelCx::new(2);
        let a = t(&[2, 1, 3, 5], 1);
        let b = t(&[3, 5, 7], 2);
        let out = matmul(&a, &b, &cx).unwrap();
        assert_eq!(out.shape(), &[2, 3, 3, 7]);
        let (av, bv, ov) = (
            a.to_f32().unwrap(),
            b.to_f32().unwrap(),
            out.to_f32().unwrap(),
        );
        for i in 0..2 {
            for j in 0..3 {
                let want = naive_mm(&av[i * 15..], &bv[j * 35..], 3, 5, 7);
                close(&ov[(i * 3 + j) * 21..][..21], &want);
            }
        }
        // Shared 2-D right operand and a 1-D left operand.
        let b2 = t(&[5, 4], 3);
        let out = matmul(&a, &b2, &cx).unwrap();
        assert_eq!(out.shape(), &[2, 1, 3, 4]);
        close(
            &out.to_f32().unwrap(),
            &naive_mm(&av, &b2.to_f32().unwrap(), 6, 5, 4),
        );
        let v = t(&[5], 4);
        let out = matmul(&v, &b2, &cx).unwrap();
        assert_eq!(out.shape(), &[4]);
        close(
            &out.to_f32().unwrap(),
            &naive_mm(&v.to_f32().unwrap(), &b2.to_f32().unwrap(), 1, 5, 4),
        );
        assert!(matmul(&a, &t(&[4, 2], 5), &cx).is_err());
    }

    #[test]
    fn gemm_transposes_and_broadcasts_c() {
        let pool = cx_pool(2);
        let _installed = pool.enter();
        let cx = KernelCx::new(2);
        // m = 1 takes the dot-product path; n = 130 spans several of its blocks.
        for (m, k, n) in [(3, 4, 5), (1, 37, 130)] {
            check_gemm(m, k, n, &cx);
        }
        let (a, b) = (t(&[4, 3], 1), t(&[5, 4], 2));
        let bad_c = t(&[2, 5], 4);
        assert!(gemm_op(
            &[Some(&a), Some(&b), Some(&bad_c)],
            1.0,
            1.0,
            true,
            true,
            &cx
        )
        .is_err());
    }

    /// Gemm with both operands transposed and C broadcast over rows, against naive.
    fn check_gemm(m: usize, k: usize, n: usize, cx: &KernelCx<'_>) {
        let a = t(&[k, m], 1); // transposed
        let b = t(&[n, k], 2); // transposed
        let c = t(&[n], 3);
        let out = gemm_op(&[Some(&a), Some(&b), Some(&c)], 0.5, 2.0, true, true, cx).unwrap();
        let (av, bv, cv) = (
            a.to_f32().unwrap(),
            b.to_f32().unwrap(),
            c.to_f32().unwrap(),
        );
        let mut at = vec![0f32; m * k];
        let mut bt = vec![0f32; k * n];
        for i in 0..m {
            for p in 0..k {
                at[i * k + p] = av[p * m + i];
            }
        }
        for p in 0..k {
            for j in 0..n {
                bt[p * n + j] = bv[j * k + p];
            }
        }
        let prod = naive_mm(&at, &bt, m, k, n);
        let want: Vec<f32> = (0..m * n)
            .map(|i| 0.5 * prod[i] + 2.0 * cv[i % n])
            .collect();
        close(&out.to_f32().unwrap(), &want);
    }
}
