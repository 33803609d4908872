//! Mapping groups found on a copy with fixed input dims back to the dynamic graph.
//!
//! [`super::prepare`] only folds shape subgraphs and fixes symbolic dims, so every
//! node and value of the copy that survives exists in the original with the same id.
//! A group stays prunable in the original when every constant it slices is a constant
//! there too, every fixup names a constant there (a shape assembled by a Concat is
//! fixed up in its constant piece), and no value carrying it has the carried axis read
//! by a `Shape` node.

use super::rules::{const_ints, norm_axis};
use super::{ChannelGroup, Discovery, Fixup, Role};
use cc_ir::{Dim, Graph, Op, ValueId};
use std::collections::BTreeSet;

/// True when a graph input (without data) has a symbolic or unknown dim.
pub(crate) fn has_symbolic_inputs(g: &Graph) -> bool {
    g.inputs()
        .iter()
        .filter(|&&v| !g.value(v).is_const())
        .any(|&v| match g.value(v).ty.as_ref().and_then(|t| t.shape()) {
            Some(dims) => dims.iter().any(|d| d.known().is_none()),
            None => false,
        })
}

fn exists(g: &Graph, v: ValueId) -> bool {
    g.value_ids().nth(v.0 as usize).is_some() && g.is_live(v)
}

/// The groups of `d` (found on a prepared copy of `g`) as groups of `g`.
pub(crate) fn map_back(g: &Graph, d: Discovery) -> Discovery {
    let groups = d.groups.into_iter().map(|gr| map_group(g, gr)).collect();
    Discovery { groups }
}

fn map_group(g: &Graph, mut gr: ChannelGroup) -> ChannelGroup {
    let mut why: Option<String> = None;
    let block = |w: &mut Option<String>, r: String| {
        if w.is_none() {
            *w = Some(r);
        }
    };
    gr.members.retain(|m| exists(g, m.value));
    for m in &gr.members {
        let v = g.value(m.value);
        if m.role != Role::Carries && !v.is_const() {
            block(&mut why, format!("{:?} is computed at run time", v.name()));
        }
        if m.role == Role::Carries {
            if let Some(r) = shape_read(g, m.value, m.axis) {
                block(&mut why, r);
            }
        }
    }
    let mut fixups = Vec::new();
    for f in gr.fixups.drain(..) {
        match f {
            Fixup::ShapeDim {
                node,
                slot,
                value,
                index,
                per_unit,
            } => {
                if !g.contains_node(node) {
                    block(&mut why, "a shape fixup's node is gone".into());
                    continue;
                }
                let Some(actual) = g.node(node).input(slot) else {
                    block(&mut why, format!("{}: no shape input", g.node_label(node)));
                    continue;
                };
                let _ = value;
                match shape_piece(g, actual, index) {
                    Some((n, s, v, i)) => fixups.push(Fixup::ShapeDim {
                        node: n,
                        slot: s,
                        value: v,
                        index: i,
                        per_unit,
                    }),
                    None if g.value(actual).is_const() => fixups.push(Fixup::ShapeDim {
                        node,
                        slot,
                        value: actual,
                        index,
                        per_unit,
                    }),
                    None => block(
                        &mut why,
                        format!("{}: shape computed at run time", g.node_label(node)),
                    ),
                }
            }
            Fixup::SplitSize { node, value, .. }
            | Fixup::SliceBounds {
                node,
                starts: value,
                ..
            } => {
                let ok = g.contains_node(node)
                    && exists(g, value)
                    && g.value(value).is_const()
                    && match &f {
                        Fixup::SliceBounds { ends, .. } => {
                            exists(g, *ends) && g.value(*ends).is_const()
                        }
                        _ => true,
                    };
                if ok {
                    fixups.push(f);
                } else {
                    block(
                        &mut why,
                        "split sizes or slice bounds computed at run time".into(),
                    );
                }
            }
            Fixup::ConvGroups { node, .. } => {
                if g.contains_node(node) {
                    fixups.push(f);
                } else {
                    block(&mut why, "a conv fixup's node is gone".into());
                }
            }
        }
    }
    gr.fixups = fixups;
    if gr.blocked.is_none() {
        gr.blocked = why;
    }
    gr
}

/// For a runtime shape `v` (rank 1) built by a Concat of 1-D pieces: the Concat node,
/// slot, piece and index within it of element `index`, when that piece is a constant.
fn shape_piece(
    g: &Graph,
    v: ValueId,
    index: usize,
) -> Option<(cc_ir::NodeId, usize, ValueId, usize)> {
    if g.value(v).is_const() {
        return None;
    }
    let (node, _) = g.value(v).producer()?;
    let n = g.node(node);
    if !matches!(n.op, Op::Concat { axis: 0 } | Op::Concat { axis: -1 }) {
        return None;
    }
    let mut off = 0usize;
    for (slot, piece) in n.inputs().iter().enumerate() {
        let piece = (*piece)?;
        let len = g
            .value(piece)
            .ty
            .as_ref()
            .and_then(|t| t.shape())
            .and_then(|d| match d {
                [Dim::Known(k)] => usize::try_from(*k).ok(),
                _ => None,
            })?;
        if index < off + len {
            return g
                .value(piece)
                .is_const()
                .then_some((node, slot, piece, index - off));
        }
        off += len;
    }
    None
}

/// Why axis `axis` of `v` must not change size: a `Shape`/`Size` node reads it (the
/// dims read through Gather/Slice with constant indices are followed).
fn shape_read(g: &Graph, v: ValueId, axis: usize) -> Option<String> {
    let rank = g
        .value(v)
        .ty
        .as_ref()
        .and_then(|t| t.shape())
        .map(<[Dim]>::len)?;
    for u in g.value(v).uses() {
        let node = u.node();
        let n = g.node(node);
        let read: BTreeSet<usize> = match &n.op {
            Op::Size => (0..rank).collect(),
            Op::Shape { start, end } => {
                let r = cc_ir::infer::shape_range(*start, *end, rank);
                let dims: Vec<usize> = r.collect();
                match n.output(0) {
                    Some(s) => dims_read(g, s, &dims),
                    None => BTreeSet::new(),
                }
            }
            _ => continue,
        };
        if read.contains(&axis) {
            return Some(format!("size read by {}", g.node_label(node)));
        }
    }
    None
}

/// The dims of `dims` that uses of the shape value `s` read.
fn dims_read(g: &Graph, s: ValueId, dims: &[usize]) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    let n = dims.len();
    for u in g.value(s).uses() {
        let c = g.node(u.node());
        match &c.op {
            Op::Gather { axis } if axis.unwrap_or(0) == 0 => match const_ints(g, c.input(1)) {
                Some(ix) => out.extend(
                    ix.iter()
                        .filter_map(|&i| norm_axis(i, n))
                        .filter_map(|i| dims.get(i).copied()),
                ),
                None => out.extend(dims.iter().copied()),
            },
            Op::Slice => match (const_ints(g, c.input(1)), const_ints(g, c.input(2))) {
                (Some(st), Some(en)) if st.len() == 1 && en.len() == 1 && c.input(4).is_none() => {
                    let clamp = |x: i64| {
                        let x = if x < 0 { x + n as i64 } else { x };
                        x.clamp(0, n as i64) as usize
                    };
                    let (a, b) = (clamp(st[0]), clamp(en[0]));
                    out.extend((a..b.max(a)).filter_map(|i| dims.get(i).copied()));
                }
                _ => out.extend(dims.iter().copied()),
            },
            _ => out.extend(dims.iter().copied()),
        }
    }
    out
}
