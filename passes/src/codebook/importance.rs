//! Calibration weighting for the codebook pass: each weight element counts in k-means in
//! proportion to the mean square of the input feature it multiplies (recorded on the
//! calibration data), so the clusters fit the weights that move the outputs most.

use crate::calibration::Calibration;
use cc_ir::{Error, Executor, Graph, NodeId, Op, Result, ValueId};

/// How a reader's activation and weight line up on the reduction (input-feature) axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The activation the weight multiplies.
    pub x: ValueId,
    /// The feature axis of the activation (negative: from the end).
    pub x_axis: isize,
    /// The reduction axis of the weight.
    pub w_axis: usize,
}

/// The layout of reader `id` (MatMul, Gemm, Conv with group 1); `None` otherwise.
pub fn layout(g: &Graph, id: NodeId) -> Option<Layout> {
    let node = g.node(id);
    let x = node.input(0)?;
    let (x_axis, w_axis) = match &node.op {
        Op::MatMul => (-1, 0),
        Op::Gemm {
            trans_a, trans_b, ..
        } => (
            if trans_a.unwrap_or(0) != 0 { 0 } else { 1 },
            usize::from(trans_b.unwrap_or(0) != 0),
        ),
        Op::Conv(a) if a.group.unwrap_or(1) == 1 => (1, 1),
        _ => return None,
    };
    Some(Layout { x, x_axis, w_axis })
}

/// Mean square of each feature of each value in `xs` (along its axis) over the
/// calibration data, run through `ex` in batches.
pub fn feature_mean_squares(
    g: &Graph,
    ex: &dyn Executor,
    calib: &Calibration,
    xs: &[(ValueId, isize)],
) -> Result<Vec<Vec<f64>>> {
    let mut probe = g.clone();
    probe.set_outputs(xs.iter().map(|(v, _)| *v).collect());
    let mut sums: Vec<Vec<f64>> = vec![Vec::new(); xs.len()];
    let mut counts = vec![0f64; xs.len()];
    for batch in calib.batches(crate::prune::reconstruct::BATCH)? {
        let outs = ex.run(&probe, &batch)?;
        for (((t, (v, axis)), sum), count) in outs
            .iter()
            .zip(xs)
            .zip(sums.iter_mut())
            .zip(counts.iter_mut())
        {
            let shape = t.shape();
            let rank = shape.len() as isize;
            let a = if *axis < 0 { axis + rank } else { *axis };
            let a = usize::try_from(a)
                .ok()
                .filter(|&a| a < shape.len())
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "calibration: value {} has no axis {axis}",
                        g.value(*v).name()
                    ))
                })?;
            let dim = shape[a];
            let inner: usize = shape[a + 1..].iter().product();
            if sum.is_empty() {
                sum.resize(dim, 0.0);
            }
            if sum.len() != dim {
                return Err(Error::invalid(format!(
                    "calibration: value {} changes its width between batches",
                    g.value(*v).name()
                )));
            }
            let data = t.to_f32()?;
            for (i, &x) in data.iter().enumerate() {
                if let Some(s) = sum.get_mut((i / inner.max(1)) % dim.max(1)) {
                    *s += f64::from(x) * f64::from(x);
                }
            }
            *count += (data.len() / dim.max(1)) as f64;
        }
    }
    Ok(sums
        .into_iter()
        .zip(counts)
        .map(|(s, c)| s.into_iter().map(|v| v / c.max(1.0)).collect())
        .collect())
}

/// Per-element weights of a weight of `shape` whose reduction axis is `w_axis`, from
/// the feature mean squares `ms` (a small floor keeps every weight positive); `None`
/// when the widths differ or every feature is silent.
pub fn element_weights(shape: &[usize], w_axis: usize, ms: &[f64]) -> Option<Vec<f64>> {
    let dim = *shape.get(w_axis)?;
    if ms.len() != dim {
        return None;
    }
    let mean = ms.iter().sum::<f64>() / dim.max(1) as f64;
    if mean <= 0.0 || !mean.is_finite() {
        return None;
    }
    let floor = mean * 1e-6;
    let inner: usize = shape.iter().skip(w_axis + 1).product();
    let n: usize = shape.iter().product();
    Some(
        (0..n)
            .map(|i| ms.get((i / inner.max(1)) % dim).copied().unwrap_or(0.0) + floor)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_weights_follow_the_reduction_axis() {
        // W [2, 3] with the reduction on axis 0 (MatMul): rows take the feature's weight.
        let w = element_weights(&[2, 3], 0, &[4.0, 0.0]).unwrap();
        assert!((w[0] - 4.0).abs() < 1e-3 && w[2] == w[0]);
        assert!(w[3] > 0.0 && w[3] < 1e-3);
        // Reduction on axis 1 (Gemm with transB): columns.
        let w = element_weights(&[2, 3], 1, &[1.0, 2.0, 3.0]).unwrap();
        assert!((w[4] - 2.0).abs() < 1e-3);
        assert!(element_weights(&[2, 3], 1, &[1.0]).is_none());
        assert!(element_weights(&[2, 3], 0, &[0.0, 0.0]).is_none());
    }
}
