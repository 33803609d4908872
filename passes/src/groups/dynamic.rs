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
use std::collections::{BTreeMap, BTreeSet};

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
    let carried: BTreeMap<(ValueId, usize), usize> = gr
        .members
        .iter()
        .filter(|m| m.role == Role::Carries)
        .map(|m| ((m.value, m.axis), m.block))
        .collect();
    for m in &gr.members {
        let v = g.value(m.value);
        if m.role != Role::Carries && !v.is_const() {
            block(&mut why, format!("{:?} is computed at run time", v.name()));
        }
        if m.role == Role::Carries {
            if let Some(r) = shape_read(g, &carried, m.value, m.axis) {
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
                ..
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
                let piece = shape_piece(g, actual, index);
                match piece {
                    Some(p) if g.value(p.value).is_const() => fixups.push(Fixup::ShapeDim {
                        node: p.node,
                        slot: p.slot,
                        value: p.value,
                        index: p.index,
                        per_unit,
                        via: Some((node, slot)),
                    }),
                    // A dim read at run time from a value of this group on the same
                    // axis shrinks by itself.
                    Some(p) if adapts(&carried, g, p.value, p.index) => {}
                    _ if g.value(actual).is_const() => fixups.push(Fixup::ShapeDim {
                        node,
                        slot,
                        value: actual,
                        index,
                        per_unit,
                        via: None,
                    }),
                    _ => block(
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
    // Several Reshape/Expand nodes of the copy may read one Concat-built shape here.
    let mut seen = BTreeSet::new();
    fixups.retain(|f| seen.insert(format!("{f:?}")));
    gr.fixups = fixups;
    if gr.blocked.is_none() {
        gr.blocked = why;
    }
    gr
}

/// Element `index` of a shape built by a Concat: which input of the Concat holds it.
struct Piece {
    node: cc_ir::NodeId,
    slot: usize,
    value: ValueId,
    index: usize,
}

/// `v = Slice(Shape(x), [a], [b])` with constant bounds: `x` and the dims it holds.
fn shape_slice(g: &Graph, v: ValueId) -> Option<(ValueId, std::ops::Range<usize>)> {
    let (node, _) = g.value(v).producer()?;
    let n = g.node(node);
    if !matches!(n.op, Op::Slice) || n.input(4).is_some() {
        return None;
    }
    let (st, en) = (const_ints(g, n.input(1))?, const_ints(g, n.input(2))?);
    let (&[a], &[b]) = (st.as_slice(), en.as_slice()) else {
        return None;
    };
    let (sn, _) = g.value(n.input(0)?).producer()?;
    let shape = g.node(sn);
    let Op::Shape { start, end } = &shape.op else {
        return None;
    };
    let x = shape.input(0)?;
    let rank = g
        .value(x)
        .ty
        .as_ref()
        .and_then(|t| t.shape())
        .map(<[Dim]>::len)?;
    let dims: Vec<usize> = cc_ir::infer::shape_range(*start, *end, rank).collect();
    let m = dims.len() as i64;
    let clamp = |x: i64| (if x < 0 { x + m } else { x }).clamp(0, m) as usize;
    let (a, b) = (clamp(a), clamp(b).max(clamp(a)));
    let first = *dims.get(a).unwrap_or(&rank);
    Some((x, first..first + (b - a)))
}

/// For a runtime shape `v` (rank 1) built by a Concat of 1-D pieces: the piece holding
/// element `index`.
fn shape_piece(g: &Graph, v: ValueId, index: usize) -> Option<Piece> {
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
            })
            .or_else(|| shape_slice(g, piece).map(|(_, r)| r.len()))?;
        if index < off + len {
            return Some(Piece {
                node,
                slot,
                value: piece,
                index: index - off,
            });
        }
        off += len;
    }
    None
}

/// True when element `index` of `piece` (a `Slice(Shape(x))`) is a dim of `x` that the
/// group carries.
fn adapts(
    carried: &BTreeMap<(ValueId, usize), usize>,
    g: &Graph,
    piece: ValueId,
    index: usize,
) -> bool {
    shape_slice(g, piece).is_some_and(|(x, dims)| {
        let d = dims.start + index;
        d < dims.end && carried.contains_key(&(x, d))
    })
}

/// True when the dim `axis` of `v`, read by `Slice(Shape(v))` into `piece`, only feeds
/// Concat-built shapes of Reshapes whose output carries the group on the matching axis
/// with the same block (the target then shrinks by itself).
fn read_feeds_group_shapes(
    carried: &BTreeMap<(ValueId, usize), usize>,
    g: &Graph,
    piece: ValueId,
    v: ValueId,
    axis: usize,
) -> bool {
    let Some((x, dims)) = shape_slice(g, piece) else {
        return false;
    };
    if x != v || !dims.contains(&axis) {
        return false;
    }
    let Some(&block) = carried.get(&(v, axis)) else {
        return false;
    };
    g.value(piece).uses().iter().all(|u| {
        let k = g.node(u.node());
        if !matches!(k.op, Op::Concat { .. }) {
            return false;
        }
        let Some(shape) = k.output(0) else {
            return false;
        };
        g.value(shape).uses().iter().all(|ru| {
            let r = g.node(ru.node());
            let cc_ir::Use::Input { slot: 1, .. } = ru else {
                return false;
            };
            if !matches!(r.op, Op::Reshape { .. }) {
                return false;
            }
            let Some(out) = r.output(0) else { return false };
            // The element of the target that holds our dim.
            (0..64).any(|t| {
                shape_piece(g, shape, t)
                    .is_some_and(|p| p.value == piece && dims.start + p.index == axis)
                    && carried.get(&(out, t)) == Some(&block)
            })
        })
    })
}

/// Why axis `axis` of `v` must not change size: a `Shape`/`Size` node reads it (the
/// dims read through Gather/Slice with constant indices are followed; a read that only
/// rebuilds a shape carrying the same units is fine).
fn shape_read(
    g: &Graph,
    carried: &BTreeMap<(ValueId, usize), usize>,
    v: ValueId,
    axis: usize,
) -> Option<String> {
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
                    Some(s) => {
                        let mut read = BTreeSet::new();
                        for su in g.value(s).uses() {
                            let c = su.node();
                            let piece = g.node(c).output(0);
                            let rebuilds = piece
                                .is_some_and(|p| read_feeds_group_shapes(carried, g, p, v, axis));
                            if !rebuilds {
                                read.extend(dims_read_by(g, c, &dims));
                            }
                        }
                        read
                    }
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

/// The dims of `dims` (the elements of a shape value) that node `c` reads from it.
fn dims_read_by(g: &Graph, c: cc_ir::NodeId, dims: &[usize]) -> BTreeSet<usize> {
    let n = dims.len();
    let c = g.node(c);
    let all = || dims.iter().copied().collect::<BTreeSet<usize>>();
    match &c.op {
        Op::Gather { axis } if axis.unwrap_or(0) == 0 => match const_ints(g, c.input(1)) {
            Some(ix) => ix
                .iter()
                .filter_map(|&i| norm_axis(i, n))
                .filter_map(|i| dims.get(i).copied())
                .collect(),
            None => all(),
        },
        Op::Slice => match (const_ints(g, c.input(1)), const_ints(g, c.input(2))) {
            (Some(st), Some(en)) if st.len() == 1 && en.len() == 1 && c.input(4).is_none() => {
                let clamp = |x: i64| {
                    let x = if x < 0 { x + n as i64 } else { x };
                    x.clamp(0, n as i64) as usize
                };
                let (a, b) = (clamp(st[0]), clamp(en[0]));
                (a..b.max(a)).filter_map(|i| dims.get(i).copied()).collect()
            }
            _ => all(),
        },
        _ => all(),
    }
}
