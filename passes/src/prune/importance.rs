//! Unit importance for the `prune` pass.
//!
//! - `l1` / `l2`: per member (every constant Produces/Consumes slice of the group), the
//!   l1 norm or the l2 norm of each unit's slice, divided by the member's mean over units
//!   so a big layer does not drown a small one; the unit's score is the sum over members.
//! - `bn`: |scale| of a BatchNormalization that reads a
//!   Produces member as its scale. Canonicalization folds inference BatchNorm into the
//!   preceding Conv/Gemm, which multiplies that layer's output channel by the BN scale; the
//!   scale is then part of the folded weights, so groups without a BN fall back to `l2`
//!   (which measures exactly the folded scale times the weight norm). The number of
//!   fallbacks is reported as the statistic `bn-fallback`.
//! - `activation` (Wanda-style): for each Consumes member read by a layer whose input
//!   activations were recorded on the calibration data, `‖X_j‖₂ · ‖W_{:,j}‖₂` per input
//!   channel `j` of the unit (the size of what removing the channel takes from that
//!   layer's output), normalized per member like `l2`; groups with no such member fall
//!   back to `l2` (statistic `activation-fallback`).

use super::layers::{channel_sumsq, Layer};
use crate::groups::{ChannelGroup, Member, Role};
use cc_ir::{Graph, NodeId, Op, Result, Tensor, ValueId};
use std::collections::BTreeMap;

/// The importance criterion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Criterion {
    /// Sum of absolute values.
    L1,
    /// Euclidean norm.
    L2,
    /// BatchNorm scale magnitude.
    Bn,
    /// Activation norm times weight norm, from calibration data.
    Activation,
}

impl Criterion {
    /// Parses the option word.
    pub fn parse(s: &str) -> Option<Criterion> {
        Some(match s {
            "l1" => Criterion::L1,
            "l2" => Criterion::L2,
            "bn" => Criterion::Bn,
            "activation" => Criterion::Activation,
            _ => return None,
        })
    }
}

/// Recorded per-channel activation energy of layers: layer node -> (layer, Σx² per
/// input channel).
pub type ActStats = BTreeMap<NodeId, (Layer, Vec<f64>)>;

/// Builds [`ActStats`] from recorded activations.
pub fn act_stats(layers: &[(Layer, Tensor)]) -> Result<ActStats> {
    let mut out = ActStats::new();
    for (l, x) in layers {
        out.insert(l.node, (l.clone(), channel_sumsq(l, x)?));
    }
    Ok(out)
}

/// Per-unit norms of one constant member: p = 1 (sum |w|) or 2 (sum w², square-rooted).
fn member_norms(g: &Graph, units: usize, m: &Member, p: u8) -> Option<Vec<f64>> {
    let t = g.const_data(m.value)?;
    let v = t.to_f64_numbers().ok()?;
    let shape = t.shape();
    let axis_len = *shape.get(m.axis)?;
    let inner: usize = shape[m.axis + 1..].iter().product();
    let outer: usize = shape[..m.axis].iter().product();
    // Norm contribution of each index along the axis.
    let mut per_index = vec![0f64; axis_len];
    for o in 0..outer {
        for (a, pi) in per_index.iter_mut().enumerate() {
            let s = (o * axis_len + a) * inner;
            let slice = v.get(s..s + inner)?;
            *pi += match p {
                1 => slice.iter().map(|x| x.abs()).sum::<f64>(),
                _ => slice.iter().map(|x| x * x).sum::<f64>(),
            };
        }
    }
    let mut out = Vec::with_capacity(units);
    for k in 0..units {
        let r = m.unit_range(k);
        let s: f64 = per_index.get(r)?.iter().sum();
        out.push(if p == 1 { s } else { s.sqrt() });
    }
    Some(out)
}

/// Divides by the mean (a member of all zeros contributes nothing).
fn normalized(mut v: Vec<f64>) -> Vec<f64> {
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    if mean > 0.0 && mean.is_finite() {
        v.iter_mut().for_each(|x| *x /= mean);
    } else {
        v.iter_mut().for_each(|x| *x = 0.0);
    }
    v
}

fn magnitude(g: &Graph, grp: &ChannelGroup, p: u8) -> Vec<f64> {
    let mut score = vec![0f64; grp.units];
    let mut seen = std::collections::BTreeSet::new();
    for m in &grp.members {
        // A constant read by several nodes appears once per reader: count it once.
        if m.role == Role::Carries || !seen.insert((m.value, m.axis, m.offset, m.stride)) {
            continue;
        }
        if let Some(n) = member_norms(g, grp.units, m, p) {
            for (s, x) in score.iter_mut().zip(normalized(n)) {
                *s += x;
            }
        }
    }
    score
}

/// |scale| of a BatchNormalization reading a member as its scale.
fn bn_scale(g: &Graph, grp: &ChannelGroup) -> Option<Vec<f64>> {
    for m in &grp.members {
        if m.role != Role::Produces {
            continue;
        }
        let is_scale = g.value(m.value).uses().iter().any(|u| match u {
            cc_ir::Use::Input { node, slot: 1 } => {
                matches!(g.node(*node).op, Op::BatchNormalization { .. })
            }
            _ => false,
        });
        if !is_scale {
            continue;
        }
        let v = g.const_data(m.value)?.to_f64_numbers().ok()?;
        let mut out = Vec::with_capacity(grp.units);
        for k in 0..grp.units {
            let r = m.unit_range(k);
            out.push(v.get(r)?.iter().map(|x| x.abs()).sum::<f64>());
        }
        return Some(out);
    }
    None
}

/// Layers that read `value` as their weight.
fn readers(g: &Graph, value: ValueId, acts: &ActStats) -> Vec<NodeId> {
    g.value(value)
        .uses()
        .iter()
        .filter_map(|u| match u {
            cc_ir::Use::Input { node, slot: 1 } if acts.contains_key(node) => Some(*node),
            _ => None,
        })
        .collect()
}

fn activation(g: &Graph, grp: &ChannelGroup, acts: &ActStats) -> Option<Vec<f64>> {
    let mut score = vec![0f64; grp.units];
    let mut any = false;
    for m in &grp.members {
        if m.role != Role::Consumes {
            continue;
        }
        let nodes = match m.user {
            Some(u) if acts.contains_key(&u) => vec![u],
            Some(_) => vec![],
            None => readers(g, m.value, acts),
        };
        for node in nodes {
            let Some((layer, sumsq)) = acts.get(&node) else {
                continue;
            };
            if layer.in_axis != m.axis {
                continue;
            }
            let Some(wn) = member_norms_per_index(g, m.value, m.axis) else {
                continue;
            };
            let mut per_unit = Vec::with_capacity(grp.units);
            for k in 0..grp.units {
                let r = m.unit_range(k);
                let (Some(x), Some(w)) = (sumsq.get(r.clone()), wn.get(r)) else {
                    return None;
                };
                per_unit.push(x.iter().zip(w).map(|(a, b)| a.sqrt() * b.sqrt()).sum());
            }
            for (s, x) in score.iter_mut().zip(normalized(per_unit)) {
                *s += x;
            }
            any = true;
        }
    }
    any.then_some(score)
}

/// Σw² of each index along `axis` of a constant.
fn member_norms_per_index(g: &Graph, value: ValueId, axis: usize) -> Option<Vec<f64>> {
    let t = g.const_data(value)?;
    let v = t.to_f64_numbers().ok()?;
    let shape = t.shape();
    let axis_len = *shape.get(axis)?;
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out = vec![0f64; axis_len];
    for (i, x) in v.iter().enumerate() {
        out[(i / inner) % axis_len] += x * x;
    }
    Some(out)
}

/// Scores of every unit of `grp` (higher = more important), and whether the criterion
/// had to fall back to `l2`.
pub fn scores(
    g: &Graph,
    grp: &ChannelGroup,
    criterion: Criterion,
    acts: Option<&ActStats>,
) -> (Vec<f64>, bool) {
    match criterion {
        Criterion::L1 => (magnitude(g, grp, 1), false),
        Criterion::L2 => (magnitude(g, grp, 2), false),
        Criterion::Bn => match bn_scale(g, grp) {
            Some(s) => (s, false),
            None => (magnitude(g, grp, 2), true),
        },
        Criterion::Activation => match acts.and_then(|a| activation(g, grp, a)) {
            Some(s) => (s, false),
            None => (magnitude(g, grp, 2), true),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::GroupKind;

    fn group(members: Vec<Member>, units: usize) -> ChannelGroup {
        ChannelGroup {
            units,
            kind: GroupKind::Channels,
            members,
            fixups: vec![],
            blocked: None,
            params: 0,
            flops: 0,
        }
    }

    fn member(value: ValueId, axis: usize, role: Role) -> Member {
        Member {
            value,
            axis,
            offset: 0,
            block: 1,
            stride: 1,
            role,
            user: None,
        }
    }

    #[test]
    fn magnitudes_are_normalized_per_member() {
        let mut g = Graph::new("g");
        // Producer rows norms (l1): 1, 3; consumer columns (l1): 100, 100.
        let a = g
            .add_const(
                "a",
                Tensor::from_f32(vec![2, 2], vec![0.5, -0.5, 1.0, 2.0]).unwrap(),
            )
            .unwrap();
        let b = g
            .add_const(
                "b",
                Tensor::from_f32(vec![1, 2], vec![100.0, -100.0]).unwrap(),
            )
            .unwrap();
        let grp = group(
            vec![member(a, 0, Role::Produces), member(b, 1, Role::Consumes)],
            2,
        );
        let (s, fb) = scores(&g, &grp, Criterion::L1, None);
        assert!(!fb);
        // a: [1, 3] / 2 = [0.5, 1.5]; b: [1, 1].
        assert_eq!(s, vec![1.5, 2.5]);
        let (s2, _) = scores(&g, &grp, Criterion::L2, None);
        assert!(s2[0] < s2[1]);
        // No BN and no activations: both fall back to l2.
        assert_eq!(scores(&g, &grp, Criterion::Bn, None), (s2.clone(), true));
        assert_eq!(scores(&g, &grp, Criterion::Activation, None), (s2, true));
    }

    #[test]
    fn bn_scale_magnitude_when_a_batchnorm_reads_the_group() {
        let mut g = Graph::new("g");
        let x = g.add_value("x", None).unwrap();
        let c = |g: &mut Graph, n: &str, v: Vec<f32>| {
            g.add_const(n, Tensor::from_f32(vec![3], v).unwrap())
                .unwrap()
        };
        let scale = c(&mut g, "scale", vec![0.5, -2.0, 1.0]);
        let bias = c(&mut g, "bias", vec![0.0; 3]);
        let mean = c(&mut g, "mean", vec![0.0; 3]);
        let var = c(&mut g, "var", vec![1.0; 3]);
        let y = g.add_value("y", None).unwrap();
        g.add_node(
            "bn",
            Op::BatchNormalization {
                epsilon: None,
                momentum: None,
                training_mode: None,
            },
            vec![Some(x), Some(scale), Some(bias), Some(mean), Some(var)],
            vec![Some(y)],
        )
        .unwrap();
        let grp = group(
            vec![
                member(bias, 0, Role::Produces),
                member(scale, 0, Role::Produces),
            ],
            3,
        );
        assert_eq!(
            scores(&g, &grp, Criterion::Bn, None),
            (vec![0.5, 2.0, 1.0], false)
        );
    }
}
