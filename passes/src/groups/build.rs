//! From atom components to [`ChannelGroup`]s.
//!
//! Every component of linked atoms that touches a parameter (a constant axis with a
//! role) is one unit. Its atoms, space by space, form contiguous runs; components with
//! the same runs (same spaces, same run lengths, same side of every Slice/Split cut)
//! form a class, sorted by position, and each maximal stretch of the class whose run
//! starts are affine in the unit number is one group.

use super::atoms::{Atoms, SpaceId};
use super::rules::{const_ints, norm_axis};
use super::{ChannelGroup, Discovery, Fixup, GroupKind, Member, Role};
use cc_ir::{Graph, NodeId, Op, Result, ValueId};
use std::collections::{BTreeMap, BTreeSet};

/// One contiguous run of a component in a space.
#[derive(Clone, Copy, Debug)]
struct Run {
    space: SpaceId,
    start: usize,
    len: usize,
}

/// Builds the groups from the linked atoms.
pub(crate) fn groups(g: &Graph, a: &mut Atoms) -> Result<Discovery> {
    let n = a.len();
    let roots: Vec<usize> = (0..n).map(|i| a.find(i)).collect();
    // A constant linked to channels is sliced with them: without an explicit role
    // it produces them (a table sliced or broadcast into the channel axis).
    for i in 0..a.spaces.len() {
        let sp = &a.spaces[i];
        if sp.role.is_none() && a.is_const(sp.value) {
            a.spaces[i].role = Some(Role::Produces);
        }
    }
    let mut has_param = vec![false; n];
    for s in &a.spaces {
        if matches!(s.role, Some(Role::Produces | Role::Consumes)) {
            for i in 0..s.dim {
                has_param[roots[s.base + i]] = true;
            }
        }
    }
    // Spaces in (value, axis) order.
    let mut order: Vec<SpaceId> = (0..a.spaces.len() as SpaceId).collect();
    order.sort_by_key(|&s| {
        let sp = &a.spaces[s as usize];
        (sp.value, sp.axis, sp.user)
    });
    let mut comp_of = vec![u32::MAX; n];
    let mut comps: Vec<Vec<Run>> = Vec::new();
    let mut comp_blocked: Vec<Option<u32>> = Vec::new();
    for &s in &order {
        let sp = &a.spaces[s as usize];
        if sp.dim == 1 {
            continue; // a single index is never a removable channel
        }
        for i in 0..sp.dim {
            let atom = sp.base + i;
            let root = roots[atom];
            if !has_param[root] {
                continue;
            }
            if comp_of[root] == u32::MAX {
                comp_of[root] = comps.len() as u32;
                comps.push(Vec::new());
                comp_blocked.push(None);
            }
            let c = comp_of[root] as usize;
            if let Some(r) = a.blocked_reason(atom) {
                let b = &mut comp_blocked[c];
                *b = Some(b.map_or(r, |x| x.min(r)));
            }
            let runs = &mut comps[c];
            match runs.last_mut() {
                Some(run) if run.space == s && run.start + run.len == i => run.len += 1,
                _ => runs.push(Run {
                    space: s,
                    start: i,
                    len: 1,
                }),
            }
        }
    }
    // Only components that a runtime value carries are channels.
    let carried: Vec<bool> = comps
        .iter()
        .map(|runs| {
            runs.iter()
                .any(|r| !a.is_const(a.spaces[r.space as usize].value))
        })
        .collect();
    // Classes by signature.
    let mut classes: BTreeMap<Vec<(SpaceId, usize, usize)>, Vec<usize>> = BTreeMap::new();
    for (c, runs) in comps.iter().enumerate() {
        if !carried[c] {
            continue;
        }
        let key = runs
            .iter()
            .map(|r| {
                let region = a
                    .cuts
                    .get(&r.space)
                    .map_or(0, |cuts| cuts.iter().filter(|&&p| p <= r.start).count());
                (r.space, r.len, region)
            })
            .collect();
        classes.entry(key).or_default().push(c);
    }
    let mut out = Vec::new();
    for (_, mut members) in classes {
        members.sort_by_key(|&c| comps[c].first().map_or(0, |r| r.start));
        let mut i = 0;
        while i < members.len() {
            let mut j = i + 1;
            while j < members.len() && affine(&comps, &members[i..=j]) {
                j += 1;
            }
            let run = &members[i..j];
            out.push(make_group(g, a, &comps, &comp_blocked, run));
            i = j;
        }
    }
    out.sort_by(|x, y| {
        let k = |gr: &ChannelGroup| {
            gr.members
                .first()
                .map(|m| (m.value, m.axis, m.offset))
                .unwrap_or((ValueId(0), 0, 0))
        };
        k(x).cmp(&k(y))
    });
    Ok(Discovery { groups: out })
}

/// True when the run starts of `cs` are affine in the position, space by space.
fn affine(comps: &[Vec<Run>], cs: &[usize]) -> bool {
    let first = &comps[cs[0]];
    let second = &comps[cs[1]];
    first.iter().zip(second).enumerate().all(|(j, (r0, r1))| {
        if r1.start < r0.start + r0.len {
            return false;
        }
        let stride = r1.start - r0.start;
        cs.iter()
            .enumerate()
            .all(|(k, &c)| comps[c][j].start == r0.start + k * stride)
    })
}

fn make_group(
    g: &Graph,
    a: &Atoms,
    comps: &[Vec<Run>],
    blocked: &[Option<u32>],
    cs: &[usize],
) -> ChannelGroup {
    let units = cs.len();
    let first = &comps[cs[0]];
    let mut members: Vec<Member> = first
        .iter()
        .enumerate()
        .map(|(j, r)| {
            let sp = &a.spaces[r.space as usize];
            let stride = if units > 1 {
                comps[cs[1]][j].start - r.start
            } else {
                r.len
            };
            Member {
                value: sp.value,
                axis: sp.axis,
                offset: r.start,
                block: r.len,
                stride,
                role: sp.role.unwrap_or(Role::Carries),
                user: sp.user,
            }
        })
        .collect();
    members.sort_by_key(|m| (m.role == Role::Carries, m.value, m.axis, m.user, m.offset));
    let mut blocked = cs
        .iter()
        .filter_map(|&c| blocked[c])
        .min()
        .map(|r| a.reasons[r as usize].clone());
    let fixups = fixups(g, a, &members, &mut blocked);
    let kind = kind(g, &members);
    let (params, flops) = cost(g, a, &members, units);
    ChannelGroup {
        units,
        kind,
        members,
        fixups,
        blocked,
        params,
        flops,
    }
}

fn fixups(g: &Graph, a: &Atoms, members: &[Member], blocked: &mut Option<String>) -> Vec<Fixup> {
    let mut out = Vec::new();
    for m in members.iter().filter(|m| m.role == Role::Carries) {
        let per = m.block as i64;
        if let Some((node, slot)) = g.value(m.value).producer() {
            let n = g.node(node);
            match &n.op {
                Op::Reshape { .. } | Op::Expand => {
                    let Some(shape) = const_ints(g, n.input(1)) else {
                        if blocked.is_none() {
                            *blocked =
                                Some(format!("{}: shape is not a constant", g.node_label(node)));
                        }
                        continue;
                    };
                    let rank = a.rank(m.value).unwrap_or(0);
                    let Some(index) = (m.axis + shape.len()).checked_sub(rank) else {
                        continue;
                    };
                    let keep = if matches!(n.op, Op::Expand) { 1 } else { 0 };
                    if shape.get(index).is_some_and(|&d| d > keep) {
                        if let Some(value) = n.input(1) {
                            out.push(Fixup::ShapeDim {
                                node,
                                slot: 1,
                                value,
                                index,
                                per_unit: per,
                                via: None,
                            });
                        }
                    }
                }
                Op::Conv(attrs) if attrs.group() > 1 && m.axis == 1 => {
                    let m_out = a.dim(m.value, 1).unwrap_or(0) as i64;
                    let cout = m_out / attrs.group();
                    if cout > 0 && per % cout == 0 {
                        out.push(Fixup::ConvGroups {
                            node,
                            per_unit: per / cout,
                        });
                    }
                }
                Op::Split { .. } => match n.input(1) {
                    Some(value) if g.value(value).is_const() => out.push(Fixup::SplitSize {
                        node,
                        value,
                        index: slot,
                        per_unit: per,
                    }),
                    _ => {
                        if blocked.is_none() {
                            *blocked =
                                Some(format!("{}: split sizes not given", g.node_label(node)));
                        }
                    }
                },
                _ => {}
            }
        }
        // Slices reading this member on its axis.
        for u in g.value(m.value).uses() {
            let cc_ir::Use::Input { node, slot: 0 } = *u else {
                continue;
            };
            let n = g.node(node);
            if !matches!(n.op, Op::Slice) {
                continue;
            }
            let Some(rank) = a.rank(m.value) else {
                continue;
            };
            let (Some(starts_v), Some(ends_v)) = (n.input(1), n.input(2)) else {
                continue;
            };
            let (Some(starts), Some(ends)) =
                (const_ints(g, Some(starts_v)), const_ints(g, Some(ends_v)))
            else {
                continue;
            };
            let axes: Vec<usize> = match n.input(3) {
                Some(v) => const_ints(g, Some(v))
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|&x| norm_axis(x, rank))
                    .collect(),
                None => (0..starts.len()).collect(),
            };
            let Some(k) = axes.iter().position(|&x| x == m.axis) else {
                continue;
            };
            let Some(dim) = a.dim(m.value, m.axis) else {
                continue;
            };
            let d = dim as i64;
            let shrink = |b: i64| -> i64 {
                let p = if b < 0 { b + d } else { b }.clamp(0, d);
                let before = (m.offset as i64) < p;
                if b >= d || b < -d {
                    0
                } else if b >= 0 {
                    if before {
                        per
                    } else {
                        0
                    }
                } else if before {
                    0
                } else {
                    -per
                }
            };
            let (Some(&s), Some(&e)) = (starts.get(k), ends.get(k)) else {
                continue;
            };
            let (sp, ep) = (shrink(s), shrink(e));
            if sp != 0 || ep != 0 {
                out.push(Fixup::SliceBounds {
                    node,
                    starts: starts_v,
                    ends: ends_v,
                    index: k,
                    starts_per_unit: sp,
                    ends_per_unit: ep,
                });
            }
        }
    }
    // The first Reshape of a channel shuffle: its per-group size shrinks.
    for &(x, axis, r1, groups) in &a.shuffles {
        let per_unit: usize = members
            .iter()
            .filter(|m| m.value == x && m.axis == axis)
            .map(|m| m.block)
            .sum();
        if per_unit == 0 {
            continue;
        }
        let n = g.node(r1);
        match (n.input(1), const_ints(g, n.input(1))) {
            (Some(value), Some(shape)) if shape.get(axis + 1).is_some_and(|&d| d > 0) => {
                out.push(Fixup::ShapeDim {
                    node: r1,
                    slot: 1,
                    value,
                    index: axis + 1,
                    per_unit: (per_unit / groups.max(1)) as i64,
                    via: None,
                });
            }
            (Some(_), Some(_)) => {}
            _ => {
                if blocked.is_none() {
                    *blocked = Some(format!("{}: shape is not a constant", g.node_label(r1)));
                }
            }
        }
    }
    let mut seen = BTreeSet::new();
    out.retain(|f| seen.insert(format!("{f:?}")));
    out
}

/// Heads when a runtime member sits on a batch axis of a MatMul of two runtime values
/// (attention); `head_dim` from the smallest weight slice, `q_per_kv` from the blocks
/// on those batch axes.
fn kind(g: &Graph, members: &[Member]) -> GroupKind {
    let mut head_blocks = Vec::new();
    for m in members.iter().filter(|m| m.role == Role::Carries) {
        for u in g.value(m.value).uses() {
            let n = g.node(u.node());
            if !matches!(n.op, Op::MatMul) {
                continue;
            }
            let runtime = n.inputs().iter().flatten().all(|v| !g.value(*v).is_const());
            let rank = g
                .value(m.value)
                .ty
                .as_ref()
                .and_then(|t| t.shape())
                .map_or(0, <[cc_ir::Dim]>::len);
            if runtime && rank >= 3 && m.axis < rank - 2 {
                head_blocks.push(m.block);
            }
        }
    }
    if head_blocks.is_empty() {
        return GroupKind::Channels;
    }
    // Weight slices: K/V projections hold one head (head_dim), Q projections q_per_kv.
    let blocks: Vec<usize> = members
        .iter()
        .filter(|m| m.role == Role::Produces)
        .map(|m| m.block)
        .collect();
    let (Some(&lo), Some(&hi)) = (blocks.iter().min(), blocks.iter().max()) else {
        return GroupKind::Channels;
    };
    GroupKind::Heads {
        head_dim: lo,
        q_per_kv: (hi / lo.max(1)).max(1),
    }
}

fn numel(a: &Atoms, v: ValueId) -> u64 {
    a.dims(v).map_or(0, |d| {
        d.iter()
            .map(|x| x.known().map_or(1, |k| k.max(0) as u64))
            .product()
    })
}

/// Multiply-adds of a Conv/ConvTranspose/Gemm/MatMul node (batch 1).
fn macs(g: &Graph, a: &Atoms, node: NodeId) -> u64 {
    let n = g.node(node);
    let (Some(x), Some(w), Some(y)) = (n.input(0), n.input(1), n.output(0)) else {
        return 0;
    };
    let batch = |v: ValueId| a.dim(v, 0).unwrap_or(1).max(1) as u64;
    match &n.op {
        Op::Conv(_) => {
            numel(a, y) / batch(y) * (numel(a, w) / a.dim(w, 0).unwrap_or(1).max(1) as u64)
        }
        Op::ConvTranspose(_) => {
            numel(a, x) / batch(x) * (numel(a, w) / a.dim(w, 0).unwrap_or(1).max(1) as u64)
        }
        Op::Gemm { trans_a, .. } => {
            let k = a
                .dim(x, if trans_a.unwrap_or(0) != 0 { 0 } else { 1 })
                .unwrap_or(1);
            numel(a, y) * k as u64
        }
        Op::MatMul => {
            let k = a
                .rank(x)
                .and_then(|r| a.dim(x, r.checked_sub(1)?))
                .unwrap_or(1);
            numel(a, y) * k as u64
        }
        _ => 0,
    }
}

fn cost(g: &Graph, a: &Atoms, members: &[Member], units: usize) -> (u64, u64) {
    // Fraction of each (value, axis) the group covers.
    let mut frac: BTreeMap<(ValueId, usize), f64> = BTreeMap::new();
    for m in members {
        let d = a.dim(m.value, m.axis).unwrap_or(1).max(1) as f64;
        *frac.entry((m.value, m.axis)).or_default() += (units * m.block) as f64 / d;
    }
    let mut per_value: BTreeMap<ValueId, f64> = BTreeMap::new();
    for (&(v, _), &f) in &frac {
        let e = per_value.entry(v).or_default();
        *e = e.max(f.min(1.0));
    }
    let params: f64 = per_value
        .iter()
        .filter(|(v, _)| g.value(**v).is_const())
        .map(|(v, f)| numel(a, *v) as f64 * f)
        .sum();
    let mut nodes = BTreeSet::new();
    for v in per_value.keys() {
        if let Some((p, _)) = g.value(*v).producer() {
            nodes.insert(p);
        }
        for u in g.value(*v).uses() {
            nodes.insert(u.node());
        }
    }
    let mut flops = 0.0;
    for node in nodes {
        let n = g.node(node);
        if !matches!(
            n.op,
            Op::Conv(_) | Op::ConvTranspose(_) | Op::Gemm { .. } | Op::MatMul
        ) {
            continue;
        }
        let f = n
            .inputs()
            .iter()
            .chain(n.outputs())
            .flatten()
            .filter_map(|v| per_value.get(v))
            .fold(0.0f64, |acc, &x| acc.max(x));
        flops += macs(g, a, node) as f64 * f;
    }
    (params.round() as u64, flops.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comp(starts: &[(SpaceId, usize)]) -> Vec<Run> {
        starts
            .iter()
            .map(|&(space, start)| Run {
                space,
                start,
                len: 2,
            })
            .collect()
    }

    #[test]
    fn affine_runs_need_a_common_stride_per_space() {
        // Space 0 contiguous blocks of 2; space 1 interleaved with stride 4.
        let comps = vec![
            comp(&[(0, 0), (1, 1)]),
            comp(&[(0, 2), (1, 5)]),
            comp(&[(0, 4), (1, 9)]),
            comp(&[(0, 6), (1, 12)]),
        ];
        assert!(affine(&comps, &[0, 1, 2]));
        assert!(!affine(&comps, &[0, 1, 2, 3]));
        // Overlapping runs are never affine.
        let overlap = vec![comp(&[(0, 0)]), comp(&[(0, 1)])];
        assert!(!affine(&overlap, &[0, 1]));
    }
}
