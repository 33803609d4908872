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
mod dynamic;
mod prepare;
mod remove;
mod report;
mod reshape;
mod rules;
mod shuffle;

pub use prepare::prepare;
pub(crate) use prepare::reinfer;
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
        /// When `node` is a Concat that builds the shape read by another node (a shape
        /// assembled at run time from pieces): that reader and its input slot. Removal
        /// then gives the reader its own copy of the Concat, so a shape shared by
        /// readers of several groups (one per layer) shrinks for each reader by its
        /// own group's removals only.
        via: Option<(NodeId, usize)>,
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
    /// A prunable channel group of `units` units whose only member produces them along
    /// `axis` of constant `value` (for tests of code that consumes groups).
    #[cfg(test)]
    pub(crate) fn single_member(units: usize, value: ValueId, axis: usize) -> ChannelGroup {
        ChannelGroup {
            units,
            kind: GroupKind::Channels,
            members: vec![Member {
                value,
                axis,
                offset: 0,
                block: 1,
                stride: 1,
                role: Role::Produces,
                user: None,
            }],
            fixups: vec![],
            blocked: None,
            params: 0,
            flops: 0,
        }
    }

    /// True when the group can be pruned.
    pub fn is_prunable(&self) -> bool {
        self.blocked.is_none() && self.units > 1
    }
}

/// Finds every group (prunable or not) of `g`. Deterministic order.
///
/// Analyse a canonicalized graph (constants folded, BatchNorm folded, Identity
/// removed) with inferred shapes: spaces whose size is not known are blocked.
///
/// When graph inputs have symbolic dims (a dynamic batch), shape subgraphs do not fold
/// and many spaces have no known size; then the analysis runs on a copy prepared with
/// those dims fixed to 1 ([`prepare`]) and its groups are mapped back to `g`
/// ([`dynamic`]): constants computed at run time in `g` block the groups that need
/// them, and shape constants assembled by a Concat are fixed up piece by piece.
pub fn discover(g: &Graph) -> Result<Discovery, cc_ir::Error> {
    if dynamic::has_symbolic_inputs(g) {
        let mut fixed = g.clone();
        if prepare(&mut fixed, None).is_ok() {
            let d = discover_static(&fixed)?;
            return Ok(dynamic::map_back(g, d));
        }
    }
    discover_static(g)
}

/// Discovery on `g` as it is (no specialisation of symbolic dims).
pub fn discover_static(g: &Graph) -> Result<Discovery, cc_ir::Error> {
    let mut a = atoms::Atoms::new(g);
    rules::apply(g, &mut a)?;
    build::groups(g, &mut a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_ir::op::ConvAttrs;
    use cc_ir::{DType, Dim, Op, OtherOp, Tensor, ValueType};

    /// A small graph builder.
    struct B {
        g: Graph,
        n: usize,
    }

    impl B {
        fn new(input: &[usize]) -> (B, ValueId) {
            let mut g = Graph::new("t");
            let dims = input.iter().map(|&d| Dim::Known(d as i64)).collect();
            let x = g
                .add_value("x", Some(ValueType::tensor(DType::F32, Some(dims))))
                .unwrap();
            g.set_inputs(vec![x]);
            (B { g, n: 0 }, x)
        }
        fn name(&mut self, p: &str) -> String {
            self.n += 1;
            format!("{p}{}", self.n)
        }
        fn weight(&mut self, shape: &[usize]) -> ValueId {
            let len: usize = shape.iter().product();
            let data = (0..len)
                .map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5)
                .collect();
            let name = self.name("w");
            let t = Tensor::from_f32(shape.to_vec(), data).unwrap();
            self.g.add_const(&name, t).unwrap()
        }
        fn ints(&mut self, v: &[i64]) -> ValueId {
            let name = self.name("c");
            let t = Tensor::from_i64(vec![v.len()], v.to_vec()).unwrap();
            self.g.add_const(&name, t).unwrap()
        }
        fn node(&mut self, op: Op, inputs: &[ValueId]) -> ValueId {
            let name = self.name("v");
            let y = self.g.add_value(&name, None).unwrap();
            let inputs = inputs.iter().map(|&v| Some(v)).collect();
            self.g.add_node(&name, op, inputs, vec![Some(y)]).unwrap();
            y
        }
        fn conv(&mut self, x: ValueId, cin: usize, cout: usize, group: usize) -> ValueId {
            let w = self.weight(&[cout, cin / group, 1, 1]);
            let b = self.weight(&[cout]);
            let attrs = ConvAttrs {
                group: Some(group as i64),
                ..Default::default()
            };
            self.node(Op::Conv(attrs), &[x, w, b])
        }
        fn finish(mut self, y: ValueId) -> Graph {
            self.g.set_outputs(vec![y]);
            cc_ir::infer::infer_shapes(&mut self.g).unwrap();
            cc_ir::verify::verify(&self.g).unwrap();
            self.g
        }
    }

    /// The name of input `slot` of the node producing `v`.
    fn input_name(g: &Graph, v: ValueId, slot: usize) -> String {
        let node = g.value(v).producer().unwrap().0;
        g.value(g.node(node).input(slot).unwrap())
            .name()
            .to_string()
    }

    fn prunable(d: &Discovery) -> Vec<&ChannelGroup> {
        d.groups.iter().filter(|g| g.is_prunable()).collect()
    }

    fn consumes(g: &Graph, gr: &ChannelGroup) -> Vec<(String, usize, usize, usize)> {
        gr.members
            .iter()
            .filter(|m| m.role == Role::Consumes)
            .map(|m| {
                (
                    g.value(m.value).name().to_string(),
                    m.axis,
                    m.offset,
                    m.block,
                )
            })
            .collect()
    }

    /// Removes unit 0 of every prunable group one at a time and checks the result
    /// verifies.
    fn remove_each(g: &Graph) {
        let d = discover(g).unwrap();
        for gr in prunable(&d) {
            let mut h = g.clone();
            remove_units(&mut h, gr, &[0]).unwrap();
            cc_ir::verify::verify(&h).unwrap();
        }
    }

    /// The first input of the node producing `v` (walks one node up).
    fn h_out(g: &Graph, v: ValueId) -> ValueId {
        let node = g.value(v).producer().unwrap().0;
        let relu_out = g.node(node).input(0).unwrap();
        let relu = g.value(relu_out).producer().unwrap().0;
        g.node(relu).input(0).unwrap()
    }

    #[test]
    fn conv_chain_has_one_group_per_hidden_layer() {
        let (mut b, x) = B::new(&[1, 3, 4, 4]);
        let h = b.conv(x, 3, 8, 1);
        let h = b.node(Op::Unary(cc_ir::op::UnaryOp::Relu), &[h]);
        let y = b.conv(h, 8, 2, 1);
        let g = b.finish(y);
        let d = discover(&g).unwrap();
        let p = prunable(&d);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].units, 8);
        assert_eq!(consumes(&g, p[0]), vec![(input_name(&g, y, 1), 1, 0, 1)]);
        assert_eq!(
            p[0].members
                .iter()
                .filter(|m| m.role == Role::Produces)
                .count(),
            2
        );
        // Input and output channels are blocked.
        assert!(d
            .groups
            .iter()
            .any(|gr| gr.blocked.as_deref() == Some("graph input \"x\"")));
        let mut h = g.clone();
        remove_units(&mut h, p[0], &[1, 5]).unwrap();
        cc_ir::verify::verify(&h).unwrap();
        let w1 = h.value_by_name(&input_name(&g, h_out(&g, y), 1)).unwrap();
        assert_eq!(h.const_data(w1).unwrap().shape(), &[6, 3, 1, 1]);
        assert!(remove_units(&mut g.clone(), p[0], &(0..8).collect::<Vec<_>>()).is_err());
    }

    #[test]
    fn residual_add_merges_branches() {
        let (mut b, x) = B::new(&[1, 3, 4, 4]);
        let a = b.conv(x, 3, 6, 1);
        let c = b.conv(a, 6, 6, 1);
        let s = b.node(Op::Binary(cc_ir::op::BinaryOp::Add), &[a, c]);
        let y = b.conv(s, 6, 2, 1);
        let g = b.finish(y);
        let d = discover(&g).unwrap();
        let p = prunable(&d);
        assert_eq!(p.len(), 1, "{}", to_text(&g, &d));
        let produces: Vec<&str> = p[0]
            .members
            .iter()
            .filter(|m| m.role == Role::Produces && m.axis == 0)
            .map(|m| g.value(m.value).name())
            .collect();
        let mut want = vec![input_name(&g, a, 1), input_name(&g, a, 2)];
        want.extend([input_name(&g, c, 1), input_name(&g, c, 2)]);
        assert_eq!(produces, want);
        remove_each(&g);
    }

    #[test]
    fn concat_maps_offsets() {
        let (mut b, x) = B::new(&[1, 3, 4, 4]);
        let l = b.conv(x, 3, 4, 1);
        let r = b.conv(x, 3, 5, 1);
        let c = b.node(Op::Concat { axis: 1 }, &[l, r]);
        let y = b.conv(c, 9, 2, 1);
        let g = b.finish(y);
        let d = discover(&g).unwrap();
        let p = prunable(&d);
        assert_eq!(p.len(), 2);
        let mut got: Vec<_> = p.iter().map(|gr| (gr.units, consumes(&g, gr))).collect();
        got.sort();
        let wc = input_name(&g, y, 1);
        assert_eq!(
            got,
            vec![
                (4, vec![(wc.clone(), 1, 0, 1)]),
                (5, vec![(wc.clone(), 1, 4, 1)])
            ]
        );
        // Both at once: the shared consumer is sliced once.
        let mut h = g.clone();
        let idx: Vec<usize> = (0..d.groups.len())
            .filter(|&i| d.groups[i].is_prunable())
            .collect();
        remove_many(&mut h, &d, &[(idx[0], vec![0]), (idx[1], vec![1, 2])]).unwrap();
        cc_ir::verify::verify(&h).unwrap();
        let w = h.value_by_name(&wc).unwrap();
        assert_eq!(h.const_data(w).unwrap().shape(), &[2, 6, 1, 1]);
    }

    #[test]
    fn flatten_to_gemm_maps_blocks() {
        let (mut b, x) = B::new(&[1, 3, 2, 2]);
        let c = b.conv(x, 3, 5, 1);
        let f = b.node(Op::Flatten { axis: Some(1) }, &[c]);
        let w = b.weight(&[7, 20]);
        let bias = b.weight(&[7]);
        let gemm = Op::Gemm {
            alpha: None,
            beta: None,
            trans_a: None,
            trans_b: Some(1),
        };
        let y = b.node(gemm, &[f, w, bias]);
        let g = b.finish(y);
        let d = discover(&g).unwrap();
        let p = prunable(&d);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].units, 5);
        assert_eq!(
            consumes(&g, p[0]),
            vec![(g.value(w).name().into(), 1, 0, 4)]
        );
        let mut h = g.clone();
        remove_units(&mut h, p[0], &[2]).unwrap();
        cc_ir::verify::verify(&h).unwrap();
        assert_eq!(h.const_data(w).unwrap().shape(), &[7, 16]);
    }

    #[test]
    fn depthwise_conv_rewrites_its_group_count() {
        let (mut b, x) = B::new(&[1, 3, 4, 4]);
        let a = b.conv(x, 3, 6, 1);
        let dw = b.conv(a, 6, 6, 6);
        let y = b.conv(dw, 6, 2, 1);
        let g = b.finish(y);
        let d = discover(&g).unwrap();
        let p = prunable(&d);
        assert_eq!(p.len(), 1);
        let node = g.value(dw).producer().unwrap().0;
        assert!(p[0]
            .fixups
            .contains(&Fixup::ConvGroups { node, per_unit: 1 }));
        let mut h = g.clone();
        remove_units(&mut h, p[0], &[0, 3]).unwrap();
        cc_ir::verify::verify(&h).unwrap();
        match &h.node(node).op {
            Op::Conv(a) => assert_eq!(a.group, Some(4)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn split_sizes_shrink_with_their_part() {
        let (mut b, x) = B::new(&[1, 3, 4, 4]);
        let a = b.conv(x, 3, 6, 1);
        let sizes = b.ints(&[2, 4]);
        let l = b.g.add_value("left", None).unwrap();
        let r = b.g.add_value("right", None).unwrap();
        let split = Op::Split {
            axis: Some(1),
            split: None,
            num_outputs: None,
        };
        b.g.add_node(
            "split",
            split,
            vec![Some(a), Some(sizes)],
            vec![Some(l), Some(r)],
        )
        .unwrap();
        let cl = b.conv(l, 2, 3, 1);
        let cr = b.conv(r, 4, 3, 1);
        let y = b.node(Op::Binary(cc_ir::op::BinaryOp::Add), &[cl, cr]);
        let g = b.finish(y);
        let d = discover(&g).unwrap();
        let p = prunable(&d);
        let right = p
            .iter()
            .find(|x| x.units == 4)
            .expect("a group for the right part");
        let node = g.value(l).producer().unwrap().0;
        assert!(right.fixups.contains(&Fixup::SplitSize {
            node,
            value: sizes,
            index: 1,
            per_unit: 1
        }));
        let mut h = g.clone();
        remove_units(&mut h, right, &[0, 2]).unwrap();
        cc_ir::verify::verify(&h).unwrap();
        assert_eq!(h.const_data(sizes).unwrap().to_i64().unwrap(), vec![2, 2]);
    }

    #[test]
    fn unmodelled_op_blocks_its_channels() {
        let (mut b, x) = B::new(&[1, 3, 4, 4]);
        let a = b.conv(x, 3, 6, 1);
        let other = Op::Other(OtherOp {
            domain: "com.example".into(),
            op_type: "Mystery".into(),
            attributes: vec![],
        });
        let m = b.node(other, &[a]);
        b.g.value_mut(m).ty = Some(ValueType::tensor(
            DType::F32,
            cc_ir::types::known_shape(&[1, 6, 4, 4]),
        ));
        let y = b.conv(m, 6, 2, 1);
        let g = b.finish(y);
        let d = discover(&g).unwrap();
        assert!(prunable(&d).is_empty(), "{}", to_text(&g, &d));
        let reasons: Vec<&str> = d
            .groups
            .iter()
            .filter_map(|x| x.blocked.as_deref())
            .collect();
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("com.example.Mystery is not modelled")),
            "{reasons:?}"
        );
        let gr = d.groups.iter().find(|x| x.units == 6).unwrap();
        assert!(remove_units(&mut g.clone(), gr, &[0]).is_err());
    }

    #[test]
    fn heads_split_reshape_makes_head_units() {
        // [1,S,8] -> MatMul -> Reshape [1,S,2,4] -> Transpose -> MatMul(q, k^T) ...
        let (mut b, x) = B::new(&[1, 3, 8]);
        let wq = b.weight(&[8, 8]);
        let wk = b.weight(&[8, 8]);
        let wv = b.weight(&[8, 8]);
        let q = b.node(Op::MatMul, &[x, wq]);
        let k = b.node(Op::MatMul, &[x, wk]);
        let v = b.node(Op::MatMul, &[x, wv]);
        let shape = b.ints(&[1, 3, 2, 4]);
        let heads = |b: &mut B, t: ValueId, perm: &[i64]| {
            let r = b.node(Op::Reshape { allowzero: None }, &[t, shape]);
            b.node(
                Op::Transpose {
                    perm: Some(perm.to_vec()),
                },
                &[r],
            )
        };
        let q = heads(&mut b, q, &[0, 2, 1, 3]);
        let k = heads(&mut b, k, &[0, 2, 3, 1]);
        let v = heads(&mut b, v, &[0, 2, 1, 3]);
        let s = b.node(Op::MatMul, &[q, k]);
        let s = b.node(Op::Softmax { axis: Some(-1) }, &[s]);
        let o = b.node(Op::MatMul, &[s, v]);
        let o = b.node(
            Op::Transpose {
                perm: Some(vec![0, 2, 1, 3]),
            },
            &[o],
        );
        let back = b.ints(&[1, 3, 8]);
        let o = b.node(Op::Reshape { allowzero: None }, &[o, back]);
        let wo = b.weight(&[8, 8]);
        let y = b.node(Op::MatMul, &[o, wo]);
        let g = b.finish(y);
        let d = discover(&g).unwrap();
        let p = prunable(&d);
        assert_eq!(p.len(), 1, "{}", to_text(&g, &d));
        assert_eq!(
            p[0].kind,
            GroupKind::Heads {
                head_dim: 4,
                q_per_kv: 1
            }
        );
        assert_eq!(p[0].units, 2);
        assert_eq!(
            consumes(&g, p[0]),
            vec![(g.value(wo).name().into(), 0, 0, 4)]
        );
        let mut h = g.clone();
        remove_units(&mut h, p[0], &[1]).unwrap();
        cc_ir::verify::verify(&h).unwrap();
        assert_eq!(h.const_data(wq).unwrap().shape(), &[8, 4]);
        // The shape constant the three head splits share loses one head for all.
        assert_eq!(
            h.const_data(shape).unwrap().to_i64().unwrap(),
            vec![1, 3, 1, 4]
        );
        assert_eq!(h.const_data(back).unwrap().to_i64().unwrap(), vec![1, 3, 4]);
    }
}
