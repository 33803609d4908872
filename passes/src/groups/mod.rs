//! Group discovery: the sets of parameter slices that must be removed together
//! (OTOv3 zero-invariant groups / DepGraph groups), found on any graph.
//!
//! The analysis works on channel atoms `(space, index)`, where a space is one axis of
//! one value (runtime or constant). Per-op rules ([`rules`]) union atoms that must be
//! removed together, or block atoms that cannot be removed (graph inputs/outputs,
//! unmodelled ops, normalizations and reductions over the axis, ...). Every connected
//! component of atoms that touches a parameter is one *unit*; units that touch the same
//! spaces with affine index maps form one [`ChannelGroup`] ([`build`]).
//!
//! [`remove_units`] / [`remove_many`] slice the constants, apply the [`Fixup`]s and
//! re-infer types; [`to_text`] / [`to_json`] are the `cc-compile groups` report.

mod atoms;
mod build;
mod remove;
mod report;
mod rules;

pub use remove::{remove_many, remove_units, zero_consumers};
pub use report::{to_json, to_text};

use cc_ir::{Graph, NodeId, ValueId};

/// All channel groups of a graph.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Discovery {
    /// Groups in a deterministic order (by the first member's value and offset).
    pub groups: Vec<ChannelGroup>,
}

/// A set of parameter slices that must be removed together: removing unit `k` (a
/// channel, or a whole attention head) removes from every member the indices
/// [`Member::unit_range`]`(k)` along `member.axis`.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelGroup {
    /// Number of units (channels, or heads for [`GroupKind::Heads`]).
    pub units: usize,
    /// Channels or attention heads.
    pub kind: GroupKind,
    /// The slices, constants first (sorted by value id and axis), then runtime values.
    pub members: Vec<Member>,
    /// Structural constants/attributes to rewrite when units are removed.
    pub fixups: Vec<Fixup>,
    /// Why it cannot be pruned; `None` = prunable.
    pub blocked: Option<String>,
    /// Parameters all units control together (so one unit ~ params/units).
    pub params: u64,
    /// Multiply-adds (batch 1, symbolic dims taken as 1) all units control together.
    pub flops: u64,
}

/// What a unit is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupKind {
    /// Channels / features.
    Channels,
    /// Attention heads: unit = one key/value head together with the `q_per_kv`
    /// query heads that read it (1 without grouped-query attention).
    Heads {
        /// Size of one head.
        head_dim: usize,
        /// Query heads per key/value head.
        q_per_kv: usize,
    },
}

/// One slice of a group: unit `k` is the indices
/// `offset + k*stride .. offset + k*stride + block` of `value` along `axis`.
///
/// `stride == block` for contiguous layouts; `stride > block` appears after channel
/// shuffles (interleaved channels). Use [`Member::unit_range`] rather than computing
/// the range by hand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The sliced value.
    pub value: ValueId,
    /// The sliced axis.
    pub axis: usize,
    /// First index of unit 0.
    pub offset: usize,
    /// Indices per unit.
    pub block: usize,
    /// Distance between the first indices of consecutive units (>= block).
    pub stride: usize,
    /// What the slice is.
    pub role: Role,
    /// For a constant: the node whose input this slice is. A constant read by several
    /// nodes is one member per node; removal copies it where the readers disagree.
    pub user: Option<NodeId>,
}

impl Member {
    /// The indices of unit `k` along `axis`.
    pub fn unit_range(&self, k: usize) -> std::ops::Range<usize> {
        let start = self.offset + k * self.stride;
        start..start + self.block
    }
}

/// The role of a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// A constant whose slice produces the unit (Conv/Gemm/MatMul weight output axis,
    /// bias, per-channel norm params, PRelu slope, ...).
    Produces,
    /// A constant whose slice consumes the unit (weight input axis): zeroing these
    /// slices is equivalent to removing the unit.
    Consumes,
    /// A runtime value carrying the unit (for reporting/checking only).
    Carries,
}

/// A structural rewrite needed when units are removed. Every fixup names the node it
/// belongs to: a constant shared with other nodes is copied for this node, never
/// rewritten under them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fixup {
    /// Shape constant `value` (input `slot` of `node`: Reshape/Expand shape) whose
    /// element `index` shrinks by `per_unit` for every removed unit.
    ShapeDim {
        /// The node reading the constant.
        node: NodeId,
        /// Its input slot.
        slot: usize,
        /// The shape constant.
        value: ValueId,
        /// Element to shrink.
        index: usize,
        /// Shrink per removed unit.
        per_unit: i64,
    },
    /// Split sizes constant `value` (input 1 of Split `node`): element `index` shrinks
    /// by `per_unit` per unit.
    SplitSize {
        /// The Split node.
        node: NodeId,
        /// The sizes constant.
        value: ValueId,
        /// Output whose size shrinks.
        index: usize,
        /// Shrink per removed unit.
        per_unit: i64,
    },
    /// Conv `group` attribute of `node` shrinks by `per_unit` per unit (depthwise).
    ConvGroups {
        /// The Conv node.
        node: NodeId,
        /// Conv groups per unit.
        per_unit: i64,
    },
    /// Slice `node` on the channel axis: element `index` of its `starts` and `ends`
    /// constants shrink by `starts_per_unit` / `ends_per_unit` per removed unit
    /// (units before the slice move both bounds, units inside move only the end).
    SliceBounds {
        /// The Slice node.
        node: NodeId,
        /// The starts constant (input 1).
        starts: ValueId,
        /// The ends constant (input 2).
        ends: ValueId,
        /// Element of starts/ends (the position of the channel axis in `axes`).
        index: usize,
        /// Shrink of the start per removed unit.
        starts_per_unit: i64,
        /// Shrink of the end per removed unit.
        ends_per_unit: i64,
    },
}

impl ChannelGroup {
    /// True when the group can be pruned.
    pub fn is_prunable(&self) -> bool {
        self.blocked.is_none() && self.units > 1
    }
}

/// Finds every group (prunable or not) of `g`. Deterministic order.
///
/// Analyse a canonicalized graph (constants folded, BatchNorm folded, Identity
/// removed) with inferred shapes: spaces whose size is not known are blocked.
pub fn discover(g: &Graph) -> Result<Discovery, cc_ir::Error> {
    let mut a = atoms::Atoms::new(g);
    rules::apply(g, &mut a)?;
    build::groups(g, &mut a)
}

/// Fixes the shapes of the graph inputs (`shapes[i]` for the i-th input without data;
/// `None`: every symbolic or unknown dim becomes 1), re-infers all types and runs
/// `canonicalize`, so shape subgraphs fold to constants and every space has a size.
/// Group discovery is meant to run on a graph prepared this way.
pub fn prepare(g: &mut Graph, shapes: Option<&[Vec<usize>]>) -> Result<(), cc_ir::Error> {
    let inputs: Vec<ValueId> = g
        .inputs()
        .iter()
        .copied()
        .filter(|&v| !g.value(v).is_const())
        .collect();
    for (i, v) in inputs.into_iter().enumerate() {
        let Some(cc_ir::ValueType::Tensor { elem, shape }) = g.value(v).ty.clone() else {
            continue;
        };
        let new = match (shapes.and_then(|s| s.get(i)), shape) {
            (Some(s), _) => Some(s.iter().map(|&d| cc_ir::Dim::Known(d as i64)).collect()),
            (None, Some(dims)) => Some(
                dims.into_iter()
                    .map(|d| match d {
                        cc_ir::Dim::Known(k) => cc_ir::Dim::Known(k),
                        _ => cc_ir::Dim::Known(1),
                    })
                    .collect(),
            ),
            (None, None) => None,
        };
        g.value_mut(v).ty = Some(cc_ir::ValueType::Tensor { elem, shape: new });
    }
    let pipeline =
        crate::Pipeline::parse("canonicalize").map_err(|e| cc_ir::Error::invalid(e.to_string()))?;
    // Folding a shape subgraph makes more types known, which lets more fold: repeat
    // until the node count settles.
    for _ in 0..64 {
        let before = g.node_count();
        reinfer(g)?;
        crate::PassManager::new(&pipeline, crate::ManagerOptions::default())
            .and_then(|mut m| m.run(g))
            .map_err(|e| cc_ir::Error::invalid(e.to_string()))?;
        if g.node_count() == before {
            break;
        }
    }
    reinfer(g)
}

/// Forgets the types of values produced by typed ops and infers them again.
pub(crate) fn reinfer(g: &mut Graph) -> Result<(), cc_ir::Error> {
    for id in g.node_ids() {
        if g.node(id).op.is_other() {
            continue;
        }
        let outs: Vec<ValueId> = g.node(id).outputs().iter().flatten().copied().collect();
        for v in outs {
            g.value_mut(v).ty = None;
        }
    }
    cc_ir::infer::infer_shapes(g)
}
