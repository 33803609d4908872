//! `reconstruct=true`: after removal, refit each layer whose inputs lost channels so its
//! output on the calibration data matches the unpruned model's.
//!
//! For a layer `Y = A·W + b` (rows of `A`: input activations, im2col patches for Conv),
//! with `A_full` recorded on the original model and `A'` on the pruned model so far
//! (layers are refitted in topological order, so each fit also absorbs the error of the
//! layers before it), the target is `T = A_full·W_full` on the kept outputs, and
//!
//!   W' = argmin ‖A'·W' − T‖² + λ‖W' − W₀‖²,   λ = damp · mean(diag A'ᵀA'),
//!
//! where `W₀` is the pruned weight (the ridge pulls towards it, so a layer with fewer
//! calibration rows than inputs stays close to where it was). Solved by Cholesky on the
//! normal equations in f64. Bias compensation: when the layer has a bias (Conv B, Gemm C,
//! or a MatMul followed by an Add of a constant vector; Conv and Gemm get one if they had
//! none) the fit is on centered data and the bias takes the mean residual
//! `b' = b + mean(T) − mean(A')·W'`. Layers whose fit would have more than
//! [`MAX_COLS`] unknowns per output are left as they are (reported as skipped); at most
//! [`MAX_ROWS`] evenly spaced rows enter a fit.

use super::layers::{layer_of, rows, weight_matrix, weight_tensor, Layer};
use super::linalg::{add_at_b, ridge_solve, Mat};
use crate::calibration::Calibration;
use cc_ir::op::BinaryOp;
use cc_ir::{Error, Executor, Graph, NodeId, Op, Result, Tensor, ValueId};

/// Largest number of unknowns per output (columns of `A'`) a refit solves for.
pub const MAX_COLS: usize = 4096;

/// Most rows (samples × output positions) a refit uses; beyond it, evenly spaced rows
/// are taken, the same ones from `A'` and `A_full`.
pub const MAX_ROWS: usize = 16384;

/// Every `step`-th row of a row-major matrix with `cols` columns.
fn every_nth_row(v: Vec<f32>, cols: usize, step: usize) -> Vec<f32> {
    if step <= 1 || cols == 0 {
        return v;
    }
    v.chunks_exact(cols)
        .step_by(step)
        .flatten()
        .copied()
        .collect()
}

/// Calibration samples run through the executor at once.
pub const BATCH: usize = 32;

/// Runs `g` on the calibration data (in batches of [`BATCH`] samples, so the
/// executor's intermediate activations stay small) and returns the given values,
/// concatenated along axis 0.
pub fn record(
    g: &Graph,
    ex: &dyn Executor,
    calib: &Calibration,
    values: &[ValueId],
) -> Result<Vec<Tensor>> {
    let mut probe = g.clone();
    probe.set_outputs(values.to_vec());
    let mut per_value: Vec<Vec<Tensor>> = vec![Vec::new(); values.len()];
    for batch in calib.batches(BATCH)? {
        let outs = ex.run(&probe, &batch)?;
        if outs.len() != values.len() {
            return Err(Error::invalid(format!(
                "calibration run returned {} tensors for {} values",
                outs.len(),
                values.len()
            )));
        }
        for (acc, t) in per_value.iter_mut().zip(outs) {
            acc.push(t);
        }
    }
    per_value
        .iter()
        .map(|parts| crate::calibration::concat_rows(parts))
        .collect()
}

/// One layer to refit: its view in the original graph, its recorded input there, and
/// the input/output indices the pruned layer keeps.
#[derive(Clone, Debug)]
pub struct Job {
    /// The layer in the original graph (its node id is the same in the pruned graph).
    pub layer: Layer,
    /// Its input activations on the calibration data, in the original graph.
    pub x_full: Tensor,
    /// Kept input channels/features.
    pub kept_in: Vec<usize>,
    /// Kept outputs.
    pub kept_out: Vec<usize>,
}

/// What reconstruction did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Refit {
    /// Layers refitted.
    pub layers: usize,
    /// Layers left as they were (unsupported form, too many unknowns).
    pub skipped: usize,
    /// Relative output error ‖A'W₀ − T‖/‖T‖ summed over refitted layers, before.
    pub err_before: f64,
    /// The same after the refit (with the new bias).
    pub err_after: f64,
}

/// Where a layer's bias lives.
enum Bias {
    /// Input slot of the layer node (Conv 2, Gemm 2); current value if any.
    Slot(usize, Option<ValueId>),
    /// A following Add node reading a constant vector at this slot.
    Add(NodeId, usize, ValueId),
    /// None can be written.
    None,
}

fn bias_of(g: &Graph, layer: &Layer, outputs: usize) -> Bias {
    let node = g.node(layer.node);
    let vec_ok = |v: ValueId| {
        g.const_data(v)
            .is_some_and(|t| t.shape() == [outputs] && t.dtype() == cc_ir::DType::F32)
    };
    match &node.op {
        Op::Conv(_) => match node.input(2) {
            Some(b) if vec_ok(b) => Bias::Slot(2, Some(b)),
            Some(_) => Bias::None,
            None => Bias::Slot(2, None),
        },
        Op::Gemm { alpha, beta, .. } => {
            if alpha.unwrap_or(1.0) != 1.0 || beta.unwrap_or(1.0) != 1.0 {
                return Bias::None;
            }
            match node.input(2) {
                Some(b) if vec_ok(b) => Bias::Slot(2, Some(b)),
                Some(_) => Bias::None,
                None => Bias::Slot(2, None),
            }
        }
        Op::MatMul => {
            let Some(y) = node.output(0) else {
                return Bias::None;
            };
            let uses = g.value(y).uses();
            if uses.len() != 1 || g.is_output(y) {
                return Bias::None;
            }
            let cc_ir::Use::Input { node: add, slot } = uses[0] else {
                return Bias::None;
            };
            if !matches!(g.node(add).op, Op::Binary(BinaryOp::Add)) {
                return Bias::None;
            }
            let other = 1 - slot.min(1);
            match g.node(add).input(other) {
                Some(b) if vec_ok(b) && g.value(b).uses().len() == 1 => Bias::Add(add, other, b),
                _ => Bias::None,
            }
        }
        _ => Bias::None,
    }
}

/// Gemm with alpha != 1 cannot be refitted as `A·W + b`.
fn refittable(g: &Graph, layer: &Layer) -> bool {
    match &g.node(layer.node).op {
        Op::Gemm { alpha, .. } => alpha.unwrap_or(1.0) == 1.0,
        _ => true,
    }
}

/// Refits every job's layer in `g` (see the module doc).
pub fn reconstruct(
    g: &mut Graph,
    orig: &Graph,
    jobs: &[Job],
    ex: &dyn Executor,
    calib: &Calibration,
    damp: f64,
) -> Result<Refit> {
    let order = g.topo_order()?;
    let pos = |n: NodeId| order.iter().position(|&o| o == n).unwrap_or(usize::MAX);
    let mut sorted: Vec<&Job> = jobs.iter().collect();
    sorted.sort_by_key(|j| pos(j.layer.node));
    let mut out = Refit::default();
    for job in sorted {
        match refit_one(g, orig, job, ex, calib, damp)? {
            Some((before, after)) => {
                out.layers += 1;
                out.err_before += before;
                out.err_after += after;
            }
            None => out.skipped += 1,
        }
    }
    Ok(out)
}

/// Refits one layer; `None` when it is skipped, else the relative errors before/after.
fn refit_one(
    g: &mut Graph,
    orig: &Graph,
    job: &Job,
    ex: &dyn Executor,
    calib: &Calibration,
    damp: f64,
) -> Result<Option<(f64, f64)>> {
    let full = &job.layer;
    if !g.contains_node(full.node) {
        return Ok(None);
    }
    let Some(cur) = layer_of(g, full.node) else {
        return Ok(None);
    };
    let (k_in, n_out) = (job.kept_in.len(), job.kept_out.len());
    let per = super::layers::cols_per_input(&cur);
    if cur.inputs != k_in
        || cur.outputs != n_out
        || cur.kind != full.kind
        || k_in * per > MAX_COLS
        || !refittable(g, &cur)
    {
        return Ok(None);
    }
    let Some(w_full_t) = orig.const_data(full.w) else {
        return Ok(None);
    };
    let Some(w_cur_t) = g.const_data(cur.w).cloned() else {
        return Ok(None);
    };
    let x_cur = record(g, ex, calib, &[cur.x])?
        .pop()
        .ok_or_else(|| Error::invalid("calibration run returned nothing"))?;
    let (a_cur, kc) = rows(&cur, &x_cur)?;
    let (a_full, kf) = rows(full, &job.x_full)?;
    let m = a_cur.len() / kc.max(1);
    if m == 0 || a_full.len() / kf.max(1) != m {
        return Ok(None);
    }
    let step = m.div_ceil(MAX_ROWS);
    let (a_cur, a_full) = (
        every_nth_row(a_cur, kc, step),
        every_nth_row(a_full, kf, step),
    );
    let m = a_cur.len() / kc.max(1);
    // Target T = A_full · W_full[:, kept_out].
    let wf = weight_matrix(full, w_full_t)?;
    let nf = full.outputs;
    let mut t = vec![0f32; m * n_out];
    for r in 0..m {
        let arow = &a_full[r * kf..(r + 1) * kf];
        let trow = &mut t[r * n_out..(r + 1) * n_out];
        let mut acc = vec![0f64; n_out];
        for (i, &a) in arow.iter().enumerate() {
            if a == 0.0 {
                continue;
            }
            let wrow = &wf[i * nf..(i + 1) * nf];
            for (o, &j) in acc.iter_mut().zip(&job.kept_out) {
                *o += f64::from(a) * f64::from(wrow[j]);
            }
        }
        for (d, s) in trow.iter_mut().zip(acc) {
            *d = s as f32;
        }
    }
    let w0 = weight_matrix(&cur, &w_cur_t)?;
    let bias = bias_of(g, &cur, n_out);
    let centered = !matches!(bias, Bias::None);
    let mut gram = Mat::zeros(kc, kc);
    add_at_b(&mut gram, &a_cur, kc, &a_cur, kc);
    let mut rhs = Mat::zeros(kc, n_out);
    add_at_b(&mut rhs, &a_cur, kc, &t, n_out);
    let mean = |v: &[f32], k: usize| {
        let mut mu = vec![0f64; k];
        for row in v.chunks_exact(k.max(1)) {
            for (u, &x) in mu.iter_mut().zip(row) {
                *u += f64::from(x);
            }
        }
        mu.iter_mut().for_each(|u| *u /= m as f64);
        mu
    };
    let (mu_a, mu_t) = if centered {
        (mean(&a_cur, kc), mean(&t, n_out))
    } else {
        (vec![0.0; kc], vec![0.0; n_out])
    };
    if centered {
        let mf = m as f64;
        for (i, &ui) in mu_a.iter().enumerate() {
            let grow = &mut gram.data[i * kc..(i + 1) * kc];
            for (gv, &uj) in grow.iter_mut().zip(&mu_a) {
                *gv -= mf * ui * uj;
            }
            let rrow = &mut rhs.data[i * n_out..(i + 1) * n_out];
            for (rv, &tj) in rrow.iter_mut().zip(&mu_t) {
                *rv -= mf * ui * tj;
            }
        }
    }
    let prior = Mat {
        rows: kc,
        cols: n_out,
        data: w0.iter().map(|&x| f64::from(x)).collect(),
    };
    let w_new = ridge_solve(&gram, &rhs, damp, Some(&prior))?;
    // New bias offset: mean(T) - mean(A')·W'  (added to the current bias).
    let mut db = mu_t.clone();
    for (i, &u) in mu_a.iter().enumerate() {
        if u != 0.0 {
            for (j, d) in db.iter_mut().enumerate() {
                *d -= u * w_new.data[i * n_out + j];
            }
        }
    }
    // Errors before (W0, no bias change) and after.
    let (mut e0, mut e1, mut tt) = (0f64, 0f64, 0f64);
    for r in 0..m {
        let arow = &a_cur[r * kc..(r + 1) * kc];
        for j in 0..n_out {
            let (mut y0, mut y1) = (0f64, db[j]);
            for (i, &a) in arow.iter().enumerate() {
                if a != 0.0 {
                    y0 += f64::from(a) * f64::from(w0[i * n_out + j]);
                    y1 += f64::from(a) * w_new.data[i * n_out + j];
                }
            }
            let target = f64::from(t[r * n_out + j]);
            e0 += (y0 - target).powi(2);
            e1 += (y1 - target).powi(2);
            tt += target * target;
        }
    }
    let tt = tt.max(1e-30);
    let (before, after) = ((e0 / tt).sqrt(), (e1 / tt).sqrt());
    if !(after.is_finite() && after < before) {
        // The refit did not help on the calibration data: keep the pruned layer.
        return Ok(Some((before, before)));
    }
    let wt = weight_tensor(&cur, &w_new.data, k_in, n_out, w_cur_t.shape())?;
    let wname = g.unique_name(&format!("{}_refit", g.value(cur.w).name()));
    let wv = g.add_const(&wname, wt)?;
    g.set_input(cur.node, 1, Some(wv));
    let write_bias = |g: &mut Graph, old: Option<ValueId>| -> Result<ValueId> {
        let base = match old {
            Some(b) => g
                .const_data(b)
                .map(|t| t.to_f32())
                .transpose()?
                .unwrap_or_else(|| vec![0.0; n_out]),
            None => vec![0.0; n_out],
        };
        let nb: Vec<f32> = base
            .iter()
            .zip(&db)
            .map(|(&b, &d)| (f64::from(b) + d) as f32)
            .collect();
        let name = match old {
            Some(b) => format!("{}_refit", g.value(b).name()),
            None => format!("{}_bias_refit", g.value(cur.w).name()),
        };
        let name = g.unique_name(&name);
        g.add_const(&name, Tensor::from_f32(vec![n_out], nb)?)
    };
    match bias {
        Bias::Slot(slot, old) => {
            let b = write_bias(g, old)?;
            g.set_input(cur.node, slot, Some(b));
        }
        Bias::Add(add, slot, old) => {
            let b = write_bias(g, Some(old))?;
            g.set_input(add, slot, Some(b));
        }
        Bias::None => {}
    }
    Ok(Some((before, after)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_subsampling_keeps_whole_rows() {
        let v: Vec<f32> = (0..12).map(|x| x as f32).collect();
        assert_eq!(every_nth_row(v.clone(), 2, 1), v);
        assert_eq!(
            every_nth_row(v, 2, 4),
            vec![0.0, 1.0, 8.0, 9.0],
            "rows 0 and 4 of 6"
        );
    }
}
