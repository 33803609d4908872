//! Per-op rules that link or block channel atoms.
//!
//! Each rule links the axes it understands (identity, offsets for Concat/Split/Slice,
//! blocks for Reshape/Flatten, contraction axes for Conv/Gemm/MatMul) and sets the roles
//! of constant axes; every other axis of the node's inputs and outputs is blocked
//! afterwards with a reason naming the node. Normalizations, Softmax and reductions
//! block the axes they act over.

use super::atoms::Atoms;
use super::reshape::{reshape_links, selected_later, ReshapeLink};
use super::shuffle::find_shuffles;
use super::Role;
use cc_ir::op::{ConvAttrs, ReduceOp};
use cc_ir::{Dim, Graph, Node, NodeId, Op, Result, ValueId};
use std::collections::BTreeSet;

/// Applies the rules of every node, then blocks graph inputs and outputs.
pub(crate) fn apply(g: &Graph, a: &mut Atoms) -> Result<()> {
    let order = g.topo_order()?;
    let (shuffles, skip) = find_shuffles(g, a, &order);
    for &id in &order {
        let node = g.node(id);
        let label = g.node_label(id);
        let mut cx = Cx {
            g,
            id,
            node,
            label: &label,
        };
        a.set_node(Some(id));
        let unmapped = a.reason(format!("{label}: axis not mapped by the rule"));
        if skip.contains(&id) {
            // The shuffle's intermediate values; its input and output are linked at
            // the last Reshape.
            let r = a.reason(format!("{label}: inside a channel shuffle"));
            for &v in node.outputs().iter().flatten() {
                a.block_value(v, r);
            }
            for v in node.inputs().iter().skip(1).flatten() {
                for axis in 0..a.rank(*v).unwrap_or(0) {
                    a.handled(*v, axis);
                }
            }
            if let Some(x) = node.input(0) {
                for axis in 0..a.rank(x).unwrap_or(0) {
                    a.handled(x, axis);
                }
            }
        } else if let Some(sh) = shuffles.get(&id) {
            sh.apply(a, unmapped);
        } else {
            cx.rule(a, unmapped);
        }
        a.block_unhandled(&touched(node), unmapped);
    }
    a.set_node(None);
    for &v in g.inputs() {
        let r = a.reason(format!("graph input {:?}", g.value(v).name()));
        a.block_value(v, r);
    }
    for &v in g.outputs() {
        let r = a.reason(format!("graph output {:?}", g.value(v).name()));
        a.block_value(v, r);
    }
    Ok(())
}

fn touched(node: &Node) -> Vec<ValueId> {
    node.inputs()
        .iter()
        .chain(node.outputs())
        .flatten()
        .copied()
        .chain(node.implicit_inputs().iter().copied())
        .collect()
}

/// Normalizes a possibly negative axis.
pub(crate) fn norm_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let x = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&x).then_some(x as usize)
}

/// The integer elements of a constant.
pub(crate) fn const_ints(g: &Graph, v: Option<ValueId>) -> Option<Vec<i64>> {
    g.const_data(v?)?.to_i64_lossless().ok()
}

struct Cx<'a> {
    g: &'a Graph,
    id: NodeId,
    node: &'a Node,
    label: &'a str,
}

impl Cx<'_> {
    fn input(&self, slot: usize) -> Option<ValueId> {
        self.node.input(slot)
    }
    fn output(&self, slot: usize) -> Option<ValueId> {
        self.node.output(slot)
    }

    fn rule(&mut self, a: &mut Atoms, r: u32) {
        let (Some(x), Some(y)) = (self.input(0), self.output(0)) else {
            return;
        };
        let (rx, ry) = (a.rank(x), a.rank(y));
        match &self.node.op {
            Op::Unary(_)
            | Op::LeakyRelu { .. }
            | Op::Gelu { .. }
            | Op::Cast { .. }
            | Op::CastLike { .. }
            | Op::Identity
            | Op::Dropout { .. }
            | Op::Clip => {
                if let Some(rank) = rx {
                    for axis in 0..rank {
                        a.link((x, axis), (y, axis), r);
                    }
                }
                // Scalar extra inputs (Clip bounds, CastLike target) carry no channel.
                for v in self.node.inputs().iter().skip(1).flatten() {
                    if a.rank(*v).is_some_and(|k| k > 0)
                        && !matches!(self.node.op, Op::CastLike { .. })
                    {
                        let why = a.reason(format!("{}: tensor bound", self.label));
                        a.block_value(*v, why);
                    }
                }
                if matches!(self.node.op, Op::CastLike { .. }) {
                    if let Some(t) = self.input(1) {
                        for axis in 0..a.rank(t).unwrap_or(0) {
                            a.handled(t, axis);
                        }
                    }
                }
            }
            Op::Binary(_) | Op::Variadic(_) | Op::Where | Op::Mod { .. } => {
                self.broadcast(a, r);
            }
            Op::Conv(attrs) => self.conv(a, attrs, r),
            Op::ConvTranspose(attrs) => self.conv_transpose(a, attrs, r),
            Op::Gemm {
                trans_a, trans_b, ..
            } => self.gemm(a, trans_a.unwrap_or(0) != 0, trans_b.unwrap_or(0) != 0, r),
            Op::MatMul => self.matmul(a, r),
            Op::BatchNormalization { training_mode, .. } => {
                if training_mode.unwrap_or(0) != 0 || self.node.outputs().len() > 1 {
                    return;
                }
                if let Some(rank) = rx {
                    for axis in 0..rank {
                        a.link((x, axis), (y, axis), r);
                    }
                }
                for slot in 1..5 {
                    if let Some(p) = self.input(slot) {
                        a.link((p, 0), (y, 1), r);
                        a.set_role(p, 0, Role::Produces);
                    }
                }
            }
            Op::LayerNormalization { axis, .. } => {
                let Some(rank) = rx else { return };
                let Some(first) = norm_axis(axis.unwrap_or(-1), rank) else {
                    return;
                };
                let why = a.reason(format!("normalized by {}", self.label));
                for ax in 0..rank {
                    if ax < first {
                        a.link((x, ax), (y, ax), r);
                    } else {
                        a.block(x, ax, why);
                        a.block(y, ax, why);
                    }
                }
                for slot in 1..3 {
                    if let Some(p) = self.input(slot) {
                        a.block_value(p, why);
                    }
                }
            }
            Op::Softmax { axis } => {
                let Some(rank) = rx else { return };
                let sm = norm_axis(axis.unwrap_or(-1), rank);
                let why = a.reason(format!("softmax over the axis in {}", self.label));
                for ax in 0..rank {
                    if Some(ax) == sm {
                        a.block(x, ax, why);
                        a.block(y, ax, why);
                    } else {
                        a.link((x, ax), (y, ax), r);
                    }
                }
            }
            Op::Reduce {
                op,
                axes,
                keepdims,
                noop_with_empty_axes,
            } => self.reduce(a, *op, axes, *keepdims, *noop_with_empty_axes, r),
            Op::GlobalPool(_) | Op::MaxPool(_) | Op::AveragePool(_) => {
                if rx.is_some_and(|k| k >= 2) && ry == rx {
                    a.link((x, 0), (y, 0), r);
                    a.link((x, 1), (y, 1), r);
                }
            }
            Op::Flatten { .. } | Op::Reshape { .. } => self.reshape(a, x, y, r),
            Op::Transpose { perm } => {
                let Some(rank) = rx else { return };
                let perm: Vec<usize> = match perm {
                    Some(p) => p.iter().filter_map(|&v| norm_axis(v, rank)).collect(),
                    None => (0..rank).rev().collect(),
                };
                if perm.len() == rank {
                    for (o, &i) in perm.iter().enumerate() {
                        a.link((x, i), (y, o), r);
                    }
                }
            }
            Op::Concat { axis } => self.concat(a, *axis, r),
            Op::Split { axis, .. } => self.split(a, axis.unwrap_or(0), r),
            Op::Slice => self.slice(a, r),
            Op::Gather { axis } => self.gather(a, axis.unwrap_or(0), r),
            Op::Unsqueeze { axes } | Op::Squeeze { axes } => {
                let axes = axes.clone().or_else(|| const_ints(self.g, self.input(1)));
                let unsq = matches!(self.node.op, Op::Unsqueeze { .. });
                self.squeeze(a, axes, unsq, r);
            }
            Op::Expand => {
                self.broadcast_one(a, x, y, r);
            }
            Op::Pad { .. } => {
                let Some(rank) = rx else { return };
                let Some(pads) = const_ints(self.g, self.input(1)) else {
                    return;
                };
                let axes: Vec<usize> = match const_ints(self.g, self.input(3)) {
                    Some(ax) => ax.iter().filter_map(|&v| norm_axis(v, rank)).collect(),
                    None => (0..rank).collect(),
                };
                let n = axes.len();
                if pads.len() != 2 * n {
                    return;
                }
                let padded: BTreeSet<usize> = (0..n)
                    .filter(|&i| pads[i] != 0 || pads[i + n] != 0)
                    .map(|i| axes[i])
                    .collect();
                for ax in 0..rank {
                    if !padded.contains(&ax) {
                        a.link((x, ax), (y, ax), r);
                    }
                }
            }
            Op::Shape { .. } | Op::Size => {
                // Reads sizes: a known axis it reads cannot shrink silently.
                let why = a.reason(format!("size read by {}", self.label));
                a.block_value(x, why);
            }
            Op::Other(o) => {
                let why = a.reason(format!(
                    "{}: op {}{} is not modelled",
                    self.label,
                    if o.domain.is_empty() {
                        String::new()
                    } else {
                        format!("{}.", o.domain)
                    },
                    o.op_type
                ));
                for v in touched(self.node) {
                    a.block_value(v, why);
                }
            }
            _ => {
                let why = a.reason(format!(
                    "{}: op {} is not modelled",
                    self.label,
                    self.node.op.onnx_type().1
                ));
                for v in touched(self.node) {
                    a.block_value(v, why);
                }
            }
        }
    }

    /// Multidirectional broadcasting: each input axis of the output's size is linked.
    fn broadcast(&self, a: &mut Atoms, r: u32) {
        let Some(y) = self.output(0) else { return };
        for &x in self.node.inputs().iter().flatten() {
            self.broadcast_one(a, x, y, r);
            // A constant operand is a per-channel parameter.
            if a.is_const(x) {
                for ax in 0..a.rank(x).unwrap_or(0) {
                    a.set_role(x, ax, Role::Produces);
                }
            }
        }
    }

    fn broadcast_one(&self, a: &mut Atoms, x: ValueId, y: ValueId, r: u32) {
        let (Some(rx), Some(ry)) = (a.rank(x), a.rank(y)) else {
            return;
        };
        if rx > ry {
            return;
        }
        for ax in 0..rx {
            let o = ry - rx + ax;
            let (dx, dy) = (dim_of(a, x, ax), dim_of(a, y, o));
            if dx == Dim::Known(1) && dy != Dim::Known(1) {
                continue; // broadcast: not linked (blocked as unmapped, one atom)
            }
            a.link((x, ax), (y, o), r);
        }
    }

    fn conv(&self, a: &mut Atoms, attrs: &ConvAttrs, r: u32) {
        let (Some(x), Some(w), Some(y)) = (self.input(0), self.input(1), self.output(0)) else {
            return;
        };
        let (Some(rank), Some(ry)) = (a.rank(x), a.rank(y)) else {
            return;
        };
        if rank < 3 || ry != rank || a.rank(w) != Some(rank) {
            return;
        }
        a.link((x, 0), (y, 0), r);
        let group = attrs.group();
        let (cin, cout) = if group == 1 {
            (0, 0)
        } else {
            let (Some(c), Some(m)) = (a.dim(x, 1), a.dim(y, 1)) else {
                return; // channel axes unmapped: blocked
            };
            let gr = usize::try_from(group).unwrap_or(0);
            if gr == 0 || c % gr != 0 || m % gr != 0 {
                return;
            }
            (c / gr, m / gr)
        };
        if let Some(b) = self.input(2) {
            a.link((b, 0), (y, 1), r);
            a.set_role(b, 0, Role::Produces);
        }
        a.link((w, 0), (y, 1), r);
        a.set_role(w, 0, Role::Produces);
        if group == 1 {
            a.link((x, 1), (w, 1), r);
            a.set_role(w, 1, Role::Consumes);
            return;
        }
        // A group of the conv is one unit: its input and output channels go together.
        a.union_within(x, 1, cin);
        a.union_within(y, 1, cout);
        a.link_map((x, 1), (y, 1), r, |i| Some(i / cin * cout));
    }

    fn conv_transpose(&self, a: &mut Atoms, attrs: &ConvAttrs, r: u32) {
        let (Some(x), Some(w), Some(y)) = (self.input(0), self.input(1), self.output(0)) else {
            return;
        };
        let Some(rank) = a.rank(x) else { return };
        if rank < 3 || a.rank(y) != Some(rank) || attrs.group() != 1 {
            return;
        }
        a.link((x, 0), (y, 0), r);
        a.link((x, 1), (w, 0), r);
        a.set_role(w, 0, Role::Consumes);
        a.link((w, 1), (y, 1), r);
        a.set_role(w, 1, Role::Produces);
        if let Some(b) = self.input(2) {
            a.link((b, 0), (y, 1), r);
            a.set_role(b, 0, Role::Produces);
        }
    }

    fn gemm(&self, a: &mut Atoms, ta: bool, tb: bool, r: u32) {
        let (Some(x), Some(w), Some(y)) = (self.input(0), self.input(1), self.output(0)) else {
            return;
        };
        if a.rank(x) != Some(2) || a.rank(w) != Some(2) || a.rank(y) != Some(2) {
            return;
        }
        let (am, ak) = if ta { (1, 0) } else { (0, 1) };
        let (bk, bn) = if tb { (1, 0) } else { (0, 1) };
        a.link((x, am), (y, 0), r);
        a.link((x, ak), (w, bk), r);
        a.link((w, bn), (y, 1), r);
        a.set_role(w, bk, Role::Consumes);
        a.set_role(w, bn, Role::Produces);
        a.set_role(x, ak, Role::Consumes);
        a.set_role(x, am, Role::Produces);
        if let Some(c) = self.input(2) {
            self.broadcast_one(a, c, y, r);
            for ax in 0..a.rank(c).unwrap_or(0) {
                a.set_role(c, ax, Role::Produces);
            }
        }
    }

    fn matmul(&self, a: &mut Atoms, r: u32) {
        let (Some(x), Some(w), Some(y)) = (self.input(0), self.input(1), self.output(0)) else {
            return;
        };
        let (Some(ra), Some(rb), Some(ry)) = (a.rank(x), a.rank(w), a.rank(y)) else {
            return;
        };
        if ra < 2 || rb < 2 || ry != ra.max(rb) {
            return; // vector operands: left unmapped (blocked)
        }
        a.link((x, ra - 1), (w, rb - 2), r);
        a.link((x, ra - 2), (y, ry - 2), r);
        a.link((w, rb - 1), (y, ry - 1), r);
        a.set_role(w, rb - 2, Role::Consumes);
        a.set_role(w, rb - 1, Role::Produces);
        a.set_role(x, ra - 1, Role::Consumes);
        a.set_role(x, ra - 2, Role::Produces);
        for (v, rv) in [(x, ra), (w, rb)] {
            for ax in 0..rv - 2 {
                let o = ry - rv + ax;
                if dim_of(a, v, ax) == Dim::Known(1) && dim_of(a, y, o) != Dim::Known(1) {
                    continue;
                }
                a.link((v, ax), (y, o), r);
            }
        }
    }

    fn reduce(
        &self,
        a: &mut Atoms,
        op: ReduceOp,
        axes: &Option<Vec<i64>>,
        keepdims: Option<i64>,
        noop: Option<i64>,
        r: u32,
    ) {
        let (Some(x), Some(y)) = (self.input(0), self.output(0)) else {
            return;
        };
        let Some(rank) = a.rank(x) else { return };
        let axes = axes.clone().or_else(|| const_ints(self.g, self.input(1)));
        let reduced: BTreeSet<usize> = match axes {
            Some(v) if !v.is_empty() => v.iter().filter_map(|&ax| norm_axis(ax, rank)).collect(),
            _ if noop.unwrap_or(0) != 0 => BTreeSet::new(),
            _ => (0..rank).collect(),
        };
        let why = a.reason(format!("reduced ({op:?}) by {}", self.label));
        let keep = keepdims.unwrap_or(1) != 0;
        let mut o = 0;
        for ax in 0..rank {
            if reduced.contains(&ax) {
                a.block(x, ax, why);
                if keep {
                    a.block(y, o, why);
                    o += 1;
                }
            } else {
                a.link((x, ax), (y, o), r);
                o += 1;
            }
        }
    }

    fn reshape(&self, a: &mut Atoms, x: ValueId, y: ValueId, r: u32) {
        let (Some(dx), Some(dy)) = (
            a.dims(x).map(<[Dim]>::to_vec),
            a.dims(y).map(<[Dim]>::to_vec),
        ) else {
            return;
        };
        for link in reshape_links(&dx, &dy) {
            match link {
                ReshapeLink::Same(i, o) => a.link((x, i), (y, o), r),
                ReshapeLink::Split { i, o, inner } => {
                    // When the leading new axis is later selected from (a fused
                    // projection split into parts, then Gather/Split/Slice on the part
                    // axis), units live on the next axis instead: c -> (c / inner2) % n.
                    let next = (o + 1..dy.len()).find(|&k| dy[k].known() != Some(1));
                    match next {
                        Some(o2) if selected_later(self.g, a, y, o, 4) => {
                            let n = dy[o2].known().unwrap_or(1).max(1) as usize;
                            let inner2 = (inner / n).max(1);
                            a.link_map((x, i), (y, o2), r, move |c| Some((c / inner2) % n));
                        }
                        _ => a.link_map((x, i), (y, o), r, |c| Some(c / inner)),
                    }
                }
                ReshapeLink::Merge { i, o, inner } => {
                    a.link_map((y, o), (x, i), r, |c| Some(c / inner));
                }
            }
        }
    }

    fn concat(&self, a: &mut Atoms, axis: i64, r: u32) {
        let Some(y) = self.output(0) else { return };
        let Some(rank) = a.rank(y) else { return };
        let Some(axis) = norm_axis(axis, rank) else {
            return;
        };
        let mut offset = 0usize;
        for &x in self.node.inputs().iter().flatten() {
            if a.rank(x) != Some(rank) {
                return;
            }
            for ax in 0..rank {
                if ax != axis {
                    a.link((x, ax), (y, ax), r);
                }
            }
            let Some(d) = a.dim(x, axis) else { return };
            let off = offset;
            a.link_map((x, axis), (y, axis), r, move |i| Some(off + i));
            if a.is_const(x) {
                for ax in 0..rank {
                    a.set_role(x, ax, Role::Produces);
                }
            }
            offset += d;
        }
    }

    fn split(&self, a: &mut Atoms, axis: i64, r: u32) {
        let Some(x) = self.input(0) else { return };
        let Some(rank) = a.rank(x) else { return };
        let Some(axis) = norm_axis(axis, rank) else {
            return;
        };
        let mut offset = 0usize;
        for &y in self.node.outputs().iter().flatten() {
            if a.rank(y) != Some(rank) {
                return;
            }
            for ax in 0..rank {
                if ax != axis {
                    a.link((x, ax), (y, ax), r);
                }
            }
            let Some(d) = a.dim(y, axis) else { return };
            let off = offset;
            a.link_map((y, axis), (x, axis), r, move |i| Some(off + i));
            a.cut(x, axis, offset);
            offset += d;
        }
        a.cut(x, axis, offset);
    }

    fn slice(&self, a: &mut Atoms, r: u32) {
        let (Some(x), Some(y)) = (self.input(0), self.output(0)) else {
            return;
        };
        let Some(rank) = a.rank(x) else { return };
        let (Some(starts), Some(ends)) = (
            const_ints(self.g, self.input(1)),
            const_ints(self.g, self.input(2)),
        ) else {
            return;
        };
        let axes: Vec<usize> = match self.input(3) {
            Some(v) => match const_ints(self.g, Some(v)) {
                Some(ax) => ax.iter().filter_map(|&v| norm_axis(v, rank)).collect(),
                None => return,
            },
            None => (0..starts.len()).collect(),
        };
        let steps = match self.input(4) {
            Some(v) => match const_ints(self.g, Some(v)) {
                Some(s) => s,
                None => return,
            },
            None => vec![1; axes.len()],
        };
        if starts.len() != axes.len() || ends.len() != axes.len() || steps.len() != axes.len() {
            return;
        }
        for ax in 0..rank {
            match axes.iter().position(|&v| v == ax) {
                None => a.link((x, ax), (y, ax), r),
                Some(k) => {
                    let Some(d) = a.dim(x, ax) else { continue };
                    if steps[k] != 1 {
                        continue;
                    }
                    let clamp = |v: i64| -> usize {
                        let v = if v < 0 { v + d as i64 } else { v };
                        v.clamp(0, d as i64) as usize
                    };
                    let (s, e) = (clamp(starts[k]), clamp(ends[k]));
                    if a.dim(y, ax) != Some(e.saturating_sub(s)) {
                        continue;
                    }
                    if s == 0 && e == d {
                        a.link((x, ax), (y, ax), r);
                        continue;
                    }
                    a.cut(x, ax, s);
                    a.cut(x, ax, e);
                    a.link_map((y, ax), (x, ax), r, move |i| Some(s + i));
                    // Atoms of x outside the slice are simply not read here.
                    a.handled(x, ax);
                }
            }
        }
    }

    fn gather(&self, a: &mut Atoms, axis: i64, r: u32) {
        let (Some(x), Some(ind), Some(y)) = (self.input(0), self.input(1), self.output(0)) else {
            return;
        };
        let (Some(rank), Some(ri), Some(ry)) = (a.rank(x), a.rank(ind), a.rank(y)) else {
            return;
        };
        let Some(axis) = norm_axis(axis, rank) else {
            return;
        };
        if ry != rank - 1 + ri {
            return;
        }
        for ax in 0..rank {
            if ax < axis {
                a.link((x, ax), (y, ax), r);
            } else if ax > axis {
                a.link((x, ax), (y, ax - 1 + ri), r);
                a.set_role(x, ax, Role::Produces);
            }
        }
        for ax in 0..ri {
            a.link((ind, ax), (y, axis + ax), r);
        }
    }

    fn squeeze(&self, a: &mut Atoms, axes: Option<Vec<i64>>, unsqueeze: bool, r: u32) {
        let (Some(x), Some(y)) = (self.input(0), self.output(0)) else {
            return;
        };
        let (Some(rx), Some(ry)) = (a.rank(x), a.rank(y)) else {
            return;
        };
        // Axes of the larger shape that are the inserted/removed ones.
        let big = rx.max(ry);
        let set: BTreeSet<usize> = match axes {
            Some(v) => v.iter().filter_map(|&ax| norm_axis(ax, big)).collect(),
            None if !unsqueeze => (0..rx).filter(|&ax| a.dim(x, ax) == Some(1)).collect(),
            None => return,
        };
        let (small, large) = if unsqueeze { (x, y) } else { (y, x) };
        let mut s = 0;
        for l in 0..big {
            if set.contains(&l) {
                a.handled(large, l);
                continue;
            }
            a.link((small, s), (large, l), r);
            s += 1;
        }
    }

    #[allow(dead_code)]
    fn id(&self) -> NodeId {
        self.id
    }
}

fn dim_of(a: &Atoms, v: ValueId, axis: usize) -> Dim {
    a.dims(v)
        .and_then(|d| d.get(axis))
        .cloned()
        .unwrap_or(Dim::Unknown)
}
