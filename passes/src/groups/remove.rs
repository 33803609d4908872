//! Removing units: slicing constants, applying fixups, re-inferring types.
//!
//! Constant members are gathered per (constant, reading node) first, so a constant named
//! by several members (or several groups) is rewritten once. A constant whose readers
//! all lose the same slices is rewritten in place; otherwise each reader that loses
//! slices gets its own sliced copy and the others keep the original. Shape, split and
//! slice constants of the fixups are rewritten the same way, per reading node.

use super::{ChannelGroup, Discovery, Fixup, Role};
use cc_ir::{DType, Error, Graph, NodeId, Op, Result, Tensor, Use, ValueId};
use std::collections::{BTreeMap, BTreeSet};

/// Indices to drop, per axis.
type AxisCuts = BTreeMap<usize, BTreeSet<usize>>;
/// Element shrinks of an integer constant.
type Deltas = BTreeMap<usize, i64>;
/// A reading (node, input slot).
type Reader = (NodeId, usize);

/// Removes units `units` (sorted, unique, each < `group.units`, not all of them) of
/// `group` from `g`: slices every constant member (a constant named by several members
/// is rewritten once), applies the fixups, then re-runs shape inference. Errors if the
/// group is blocked or the request is invalid. Value ids of copied constants change, so
/// run [`super::discover`] again before removing units of another group (or use
/// [`remove_many`]).
pub fn remove_units(g: &mut Graph, group: &ChannelGroup, units: &[usize]) -> Result<()> {
    let d = Discovery {
        groups: vec![group.clone()],
    };
    remove_many(g, &d, &[(0, units.to_vec())])
}

/// Removes units of several groups of one [`Discovery`] of `g` at once:
/// `requests` holds (index into `d.groups`, sorted unique units). Slices shared by
/// several groups (a constant consumed by a Concat of two groups) are combined, so the
/// groups need not be rediscovered between removals. Empty unit lists are skipped.
pub fn remove_many(g: &mut Graph, d: &Discovery, requests: &[(usize, Vec<usize>)]) -> Result<()> {
    // (value, reader) -> axis -> indices to drop.
    let mut cuts: BTreeMap<(ValueId, Option<NodeId>), BTreeMap<usize, BTreeSet<usize>>> =
        BTreeMap::new();
    // (reader, slot, value) -> element -> shrink.
    let mut ints: BTreeMap<(NodeId, usize, ValueId), BTreeMap<usize, i64>> = BTreeMap::new();
    let mut conv_groups: BTreeMap<NodeId, i64> = BTreeMap::new();
    // Shapes built by a Concat at run time: reader -> (concat, slot, piece) -> shrinks.
    let mut pieces: BTreeMap<Reader, BTreeMap<(NodeId, usize, ValueId), Deltas>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for (gi, units) in requests {
        if units.is_empty() {
            continue;
        }
        if !seen.insert(*gi) {
            return Err(Error::invalid(format!("group {gi} requested twice")));
        }
        let group = d
            .groups
            .get(*gi)
            .ok_or_else(|| Error::invalid(format!("no group {gi}")))?;
        check_request(*gi, group, units)?;
        let n = units.len() as i64;
        for m in group.members.iter().filter(|m| m.role != Role::Carries) {
            let set = cuts
                .entry((m.value, m.user))
                .or_default()
                .entry(m.axis)
                .or_default();
            for &k in units {
                set.extend(m.unit_range(k));
            }
        }
        for f in &group.fixups {
            match *f {
                Fixup::ShapeDim {
                    node,
                    slot,
                    value,
                    index,
                    per_unit,
                    via: Some(reader),
                } => {
                    *pieces
                        .entry(reader)
                        .or_default()
                        .entry((node, slot, value))
                        .or_default()
                        .entry(index)
                        .or_default() += per_unit * n;
                }
                Fixup::ShapeDim {
                    node,
                    slot,
                    value,
                    index,
                    per_unit,
                    via: None,
                } => {
                    *ints
                        .entry((node, slot, value))
                        .or_default()
                        .entry(index)
                        .or_default() += per_unit * n;
                }
                Fixup::SplitSize {
                    node,
                    value,
                    index,
                    per_unit,
                } => {
                    *ints
                        .entry((node, 1, value))
                        .or_default()
                        .entry(index)
                        .or_default() += per_unit * n;
                }
                Fixup::ConvGroups { node, per_unit } => {
                    *conv_groups.entry(node).or_default() += per_unit * n;
                }
                Fixup::SliceBounds {
                    node,
                    starts,
                    ends,
                    index,
                    starts_per_unit,
                    ends_per_unit,
                } => {
                    for (slot, v, per) in [(1, starts, starts_per_unit), (2, ends, ends_per_unit)] {
                        if per != 0 {
                            *ints
                                .entry((node, slot, v))
                                .or_default()
                                .entry(index)
                                .or_default() += per * n;
                        }
                    }
                }
            }
        }
    }
    // Slice the constants.
    let mut by_value: BTreeMap<ValueId, Vec<(Option<NodeId>, AxisCuts)>> = BTreeMap::new();
    for ((v, user), axes) in cuts {
        by_value.entry(v).or_default().push((user, axes));
    }
    for (v, readers) in by_value {
        let original = g
            .const_data(v)
            .cloned()
            .ok_or_else(|| Error::invalid(format!("{:?} is not a constant", g.value(v).name())))?;
        let vname = g.value(v).name().to_string();
        let slice = |axes: &BTreeMap<usize, BTreeSet<usize>>| -> Result<Tensor> {
            let mut t = original.clone();
            for (&axis, drop) in axes {
                t = drop_indices(&t, axis, drop)
                    .map_err(|e| Error::invalid(format!("{vname:?}: {e}")))?;
            }
            Ok(t)
        };
        let same = readers.windows(2).all(|w| w[0].1 == w[1].1);
        let covered = reader_nodes(g, v)
            .iter()
            .all(|n| readers.iter().any(|(u, _)| *u == Some(*n)));
        if same && (covered || readers.iter().any(|(u, _)| u.is_none())) {
            let t = slice(&readers[0].1)?;
            set_const(g, v, t);
        } else {
            for (user, axes) in &readers {
                let Some(user) = user else { continue };
                let t = slice(axes)?;
                copy_for(g, v, *user, t)?;
            }
        }
    }
    // Integer constants of the fixups, per reading node.
    let mut int_by_value: BTreeMap<ValueId, Vec<(Reader, Deltas)>> = BTreeMap::new();
    for ((node, slot, v), deltas) in ints {
        int_by_value
            .entry(v)
            .or_default()
            .push(((node, slot), deltas));
    }
    for (v, readers) in int_by_value {
        let t = g
            .const_data(v)
            .cloned()
            .ok_or_else(|| Error::invalid(format!("{:?} is not a constant", g.value(v).name())))?;
        let vname = g.value(v).name().to_string();
        let shrink = |deltas: &Deltas| shrink_ints(&t, deltas, &vname);
        let same = readers.windows(2).all(|w| w[0].1 == w[1].1);
        let uses = g.value(v).uses().len();
        if same && uses == readers.len() && !g.is_output(v) {
            let nt = shrink(&readers[0].1)?;
            set_const(g, v, nt);
        } else {
            for ((node, slot), deltas) in &readers {
                let nt = shrink(deltas)?;
                let name = g.unique_name(g.value(v).name());
                let nv = g.add_const(&name, nt)?;
                g.set_input(*node, *slot, Some(nv));
            }
        }
    }
    for (reader, shrinks) in pieces {
        concat_for_reader(g, reader, &shrinks)?;
    }
    for (node, dlt) in conv_groups {
        if let Op::Conv(attrs) = &mut g.node_mut(node).op {
            let gr = attrs.group() - dlt;
            if gr < 1 {
                return Err(Error::invalid("conv group count would drop below 1"));
            }
            attrs.group = Some(gr);
        }
    }
    super::reinfer(g)
}

/// `t` (an integer constant named `name`) with element `i` reduced by `deltas[i]`.
fn shrink_ints(t: &Tensor, deltas: &Deltas, name: &str) -> Result<Tensor> {
    let mut vals = t.to_i64_lossless()?;
    for (&i, &dlt) in deltas {
        let x = vals
            .get_mut(i)
            .ok_or_else(|| Error::invalid(format!("{name:?} has no element {i}")))?;
        let before = *x;
        *x -= dlt;
        if before >= 0 && *x < 0 {
            return Err(Error::invalid(format!(
                "{name:?}: element {i} would become negative ({x})"
            )));
        }
    }
    match t.dtype() {
        DType::I32 => {
            Tensor::from_i32(t.shape().to_vec(), vals.iter().map(|&x| x as i32).collect())
        }
        _ => Tensor::from_i64(t.shape().to_vec(), vals),
    }
}

/// Gives `reader` its own copy of the Concat that builds the shape it reads, with the
/// pieces in `shrinks` (keyed by concat, slot, piece) shrunk; the original Concat stays
/// for its other readers, or is removed when none is left.
fn concat_for_reader(
    g: &mut Graph,
    (reader, rslot): Reader,
    shrinks: &BTreeMap<(NodeId, usize, ValueId), Deltas>,
) -> Result<()> {
    let Some(&(concat, _, _)) = shrinks.keys().next() else {
        return Ok(());
    };
    if shrinks.keys().any(|&(c, _, _)| c != concat) {
        return Err(Error::invalid(format!(
            "{}: its shape is built by more than one Concat",
            g.node_label(reader)
        )));
    }
    let old_out = g
        .node(concat)
        .output(0)
        .ok_or_else(|| Error::invalid("shape Concat without output"))?;
    if g.node(reader).input(rslot) != Some(old_out) {
        return Err(Error::invalid(format!(
            "{}: input {rslot} is not the shape Concat's output",
            g.node_label(reader)
        )));
    }
    let mut inputs = g.node(concat).inputs().to_vec();
    for (&(_, slot, piece), deltas) in shrinks {
        let t = g.const_data(piece).cloned().ok_or_else(|| {
            Error::invalid(format!("{:?} is not a constant", g.value(piece).name()))
        })?;
        let nt = shrink_ints(&t, deltas, g.value(piece).name())?;
        let name = g.unique_name(g.value(piece).name());
        let nv = g.add_const(&name, nt)?;
        match inputs.get_mut(slot) {
            Some(x) => *x = Some(nv),
            None => return Err(Error::invalid("shape Concat has no such input")),
        }
    }
    let base = format!("{}_{}", g.node(concat).name, g.node(reader).name);
    let out_name = g.unique_name(&format!("{}_shape", g.node(reader).name));
    let out = g.add_value(&out_name, None)?;
    let op = g.node(concat).op.clone();
    let node_name = g.unique_name(&base);
    g.add_node(&node_name, op, inputs, vec![Some(out)])?;
    g.set_input(reader, rslot, Some(out));
    if g.value(old_out).uses().is_empty() && !g.is_output(old_out) {
        g.remove_node(concat);
    }
    Ok(())
}

fn check_request(gi: usize, group: &ChannelGroup, units: &[usize]) -> Result<()> {
    if let Some(r) = &group.blocked {
        return Err(Error::invalid(format!("group {gi} is blocked: {r}")));
    }
    if units.len() >= group.units {
        return Err(Error::invalid(format!(
            "group {gi}: cannot remove {} of its {} units",
            units.len(),
            group.units
        )));
    }
    if units.windows(2).any(|w| w[0] >= w[1]) || units.iter().any(|&k| k >= group.units) {
        return Err(Error::invalid(format!(
            "group {gi}: units must be sorted, unique and below {}",
            group.units
        )));
    }
    Ok(())
}

/// Nodes reading `v` through an input slot.
fn reader_nodes(g: &Graph, v: ValueId) -> BTreeSet<NodeId> {
    g.value(v)
        .uses()
        .iter()
        .filter_map(|u| match u {
            Use::Input { node, .. } => Some(*node),
            Use::Implicit { .. } => None,
        })
        .collect()
}

fn set_const(g: &mut Graph, v: ValueId, t: Tensor) {
    let ty = cc_ir::ValueType::tensor(t.dtype(), cc_ir::types::known_shape(t.shape()));
    let val = g.value_mut(v);
    val.ty = Some(ty);
    val.data = Some(t);
}

/// Gives `user` its own constant `t` in place of `v`.
fn copy_for(g: &mut Graph, v: ValueId, user: NodeId, t: Tensor) -> Result<()> {
    let name = g.unique_name(g.value(v).name());
    let nv = g.add_const(&name, t)?;
    let slots: Vec<usize> = g
        .node(user)
        .inputs()
        .iter()
        .enumerate()
        .filter(|(_, x)| **x == Some(v))
        .map(|(i, _)| i)
        .collect();
    for s in slots {
        g.set_input(user, s, Some(nv));
    }
    Ok(())
}

/// `t` without the indices `drop` along `axis`.
pub(crate) fn drop_indices(t: &Tensor, axis: usize, drop: &BTreeSet<usize>) -> Result<Tensor> {
    keep_map(t, axis, |i| !drop.contains(&i))
}

/// Copies `t` keeping the indices along `axis` for which `keep` holds.
fn keep_map(t: &Tensor, axis: usize, keep: impl Fn(usize) -> bool) -> Result<Tensor> {
    let shape = t.shape().to_vec();
    let d = *shape
        .get(axis)
        .ok_or_else(|| Error::invalid(format!("tensor {shape:?} has no axis {axis}")))?;
    let bits = t
        .dtype()
        .bits()
        .filter(|b| b % 8 == 0)
        .ok_or_else(|| Error::unsupported(format!("slicing {} tensors", t.dtype())))?;
    let esize = bits / 8;
    let inner: usize = shape[axis + 1..].iter().product::<usize>() * esize;
    let outer: usize = shape[..axis].iter().product();
    let raw = t.raw()?;
    let kept: Vec<usize> = (0..d).filter(|&i| keep(i)).collect();
    let mut out = Vec::with_capacity(outer * kept.len() * inner);
    for o in 0..outer {
        for &i in &kept {
            let start = (o * d + i) * inner;
            let chunk = raw
                .get(start..start + inner)
                .ok_or_else(|| Error::invalid("tensor data shorter than its shape"))?;
            out.extend_from_slice(chunk);
        }
    }
    let mut new_shape = shape;
    new_shape[axis] = kept.len();
    Tensor::from_raw(t.dtype(), new_shape, bytes::Bytes::from(out))
}

/// Zeroes, in the graph, the [`Role::Consumes`] slices of units `units` of `group` (the
/// reference for the exactness check: same outputs as removing them). Each zeroed
/// constant is copied for its reading node, so other readers are unaffected. f32 only.
pub fn zero_consumers(g: &mut Graph, group: &ChannelGroup, units: &[usize]) -> Result<()> {
    let mut zero: BTreeMap<(ValueId, Option<NodeId>), AxisCuts> = BTreeMap::new();
    for m in group.members.iter().filter(|m| m.role == Role::Consumes) {
        let set: BTreeSet<usize> = units.iter().flat_map(|&k| m.unit_range(k)).collect();
        zero.entry((m.value, m.user))
            .or_default()
            .entry(m.axis)
            .or_default()
            .extend(set);
    }
    for ((v, user), axes) in zero {
        let t = g
            .const_data(v)
            .cloned()
            .ok_or_else(|| Error::invalid(format!("{:?} is not a constant", g.value(v).name())))?;
        let shape = t.shape().to_vec();
        let mut data = t.to_f32()?;
        let rank = shape.len();
        if axes.keys().any(|&a| a >= rank) {
            return Err(Error::invalid(format!(
                "{:?} has no such axis",
                g.value(v).name()
            )));
        }
        let mut strides = vec![1usize; rank];
        for i in (0..rank.saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * shape[i + 1];
        }
        for (idx, x) in data.iter_mut().enumerate() {
            if axes
                .iter()
                .any(|(axis, set)| set.contains(&((idx / strides[*axis]) % shape[*axis])))
            {
                *x = 0.0;
            }
        }
        let nt = Tensor::from_f32(shape, data)?;
        match user {
            Some(u) => copy_for(g, v, u, nt)?,
            None => set_const(g, v, nt),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_indices_slices_any_axis() {
        let t = Tensor::from_f32(vec![2, 3], vec![0., 1., 2., 3., 4., 5.]).unwrap();
        let r = drop_indices(&t, 1, &BTreeSet::from([1])).unwrap();
        assert_eq!(r.shape(), &[2, 2]);
        assert_eq!(r.to_f32().unwrap(), vec![0., 2., 3., 5.]);
        let r = drop_indices(&t, 0, &BTreeSet::from([0])).unwrap();
        assert_eq!(r.to_f32().unwrap(), vec![3., 4., 5.]);
    }
}
