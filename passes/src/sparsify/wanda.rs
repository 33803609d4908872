//! `criterion=wanda`: activation-aware importance |w|·‖x‖ (Wanda, Sun et al. 2023).
//!
//! `‖x_j‖` is the L2 norm, over all calibration rows, of the input feature `j` a weight
//! element multiplies: the last axis of a MatMul's / Gemm's data input (the first with
//! transA), or for a Conv the input channel (over batch and spatial positions, the same
//! for every kernel tap of that channel; grouped convolutions map each output's group).

use super::select::Layout;
use super::Target;
use crate::calibration::Calibration;
use crate::prune::reconstruct::record;
use cc_ir::{Error, Executor, Graph, Op, Result, Tensor};

/// Per-feature L2 norms of the data input `x` of a layer, for the given op.
fn feature_norms(op: &Op, x: &Tensor) -> Result<Vec<f64>> {
    let v = x.f32_view()?;
    let shape = x.shape();
    // (axis holding the features, as a layout with that single axis).
    let axis = match op {
        Op::Gemm { trans_a, .. } if trans_a.unwrap_or(0) != 0 => 0,
        Op::Conv(_) => 1,
        _ => shape.len().saturating_sub(1),
    };
    let l = Layout::new(shape, (axis, axis + 1));
    let mut n = vec![0f64; l.r];
    for o in 0..l.outer {
        for (k, slot) in n.iter_mut().enumerate() {
            for i in 0..l.inner {
                let a = f64::from(v.get(l.at(o, k, i)).copied().unwrap_or(0.0));
                *slot += a * a;
            }
        }
    }
    Ok(n.into_iter().map(f64::sqrt).collect())
}

/// The Wanda score of every element of each target's weight `w` (in target order).
pub fn scores(
    g: &Graph,
    ex: &dyn Executor,
    calib: &Calibration,
    targets: &[Target],
    weights: &[Vec<f32>],
) -> Result<Vec<Vec<f32>>> {
    let mut xs = Vec::with_capacity(targets.len());
    for t in targets {
        let x = g.node(t.node).input(0).ok_or_else(|| {
            Error::invalid(format!(
                "sparsify: {} has no data input",
                g.node_label(t.node)
            ))
        })?;
        xs.push(x);
    }
    let acts = record(g, ex, calib, &xs)?;
    let mut out = Vec::with_capacity(targets.len());
    for ((t, w), x) in targets.iter().zip(weights).zip(&acts) {
        let op = &g.node(t.node).op;
        let norms = feature_norms(op, x)?;
        let l = Layout::new(&t.shape, t.axes);
        let mut s = vec![0f32; w.len()];
        let group = match op {
            Op::Conv(c) => usize::try_from(c.group()).unwrap_or(1).max(1),
            _ => 1,
        };
        let per_group_out = (l.outer / group).max(1);
        // Conv: kernel taps per input channel (the reduction axes are C·kh·kw).
        let taps = match op {
            Op::Conv(_) => t.shape.iter().skip(2).product::<usize>().max(1),
            _ => 1,
        };
        let cg = l.r / taps;
        for o in 0..l.outer {
            for k in 0..l.r {
                let feature = match op {
                    Op::Conv(_) => (o / per_group_out) * cg + k / taps,
                    _ => k,
                };
                let norm = norms.get(feature).copied().unwrap_or(0.0) as f32;
                for i in 0..l.inner {
                    let idx = l.at(o, k, i);
                    if let (Some(d), Some(wv)) = (s.get_mut(idx), w.get(idx)) {
                        *d = wv.abs() * norm;
                    }
                }
            }
        }
        out.push(s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norms_per_feature_of_matmul_and_conv_inputs() {
        let x = Tensor::from_f32(vec![2, 2], vec![3.0, 0.0, 4.0, 1.0]).unwrap();
        assert_eq!(feature_norms(&Op::MatMul, &x).unwrap(), vec![5.0, 1.0]);
        // [1, C=2, 1, 2]
        let x = Tensor::from_f32(vec![1, 2, 1, 2], vec![3.0, 4.0, 0.0, 2.0]).unwrap();
        let n = feature_norms(&Op::Conv(Default::default()), &x).unwrap();
        assert_eq!(n, vec![5.0, 2.0]);
    }
}
