//! Channel shuffles (Reshape -> Transpose -> Reshape) as one channel permutation.

use super::atoms::Atoms;
use cc_ir::{Dim, Graph, NodeId, Op, ValueId};
use std::collections::{BTreeMap, BTreeSet};

/// A channel shuffle: Reshape (split C into g x C/g) -> Transpose (swap) -> Reshape
/// (merge back), treated as one permutation of the channel axis.
pub(crate) struct Shuffle {
    r1: NodeId,
    x: ValueId,
    y: ValueId,
    axis: usize,
    groups: usize,
    per: usize,
}

impl Shuffle {
    pub(crate) fn apply(&self, a: &mut Atoms, r: u32) {
        let rank = a.rank(self.x).unwrap_or(0);
        for ax in 0..rank {
            if ax != self.axis {
                a.link((self.x, ax), (self.y, ax), r);
            }
        }
        let (g, per) = (self.groups, self.per);
        a.link_map((self.x, self.axis), (self.y, self.axis), r, move |c| {
            Some((c % per) * g + c / per)
        });
        // The shuffle only survives removal when every group loses the same
        // positions: channel b of each group (adjacent after the shuffle) is one unit.
        a.union_within(self.y, self.axis, g);
        a.shuffles.push((self.x, self.axis, self.r1, g));
    }
}

pub(crate) fn find_shuffles(
    g: &Graph,
    a: &Atoms,
    order: &[NodeId],
) -> (BTreeMap<NodeId, Shuffle>, BTreeSet<NodeId>) {
    let mut found = BTreeMap::new();
    let mut skip = BTreeSet::new();
    let single_use = |v: ValueId| g.value(v).uses().len() == 1 && !g.is_output(v);
    for &r1 in order {
        let n1 = g.node(r1);
        if !matches!(n1.op, Op::Reshape { .. }) {
            continue;
        }
        let (Some(x), Some(m1)) = (n1.input(0), n1.output(0)) else {
            continue;
        };
        if !single_use(m1) {
            continue;
        }
        let t = g.value(m1).uses()[0].node();
        let nt = g.node(t);
        let Op::Transpose { perm: Some(perm) } = &nt.op else {
            continue;
        };
        let Some(m2) = nt.output(0) else { continue };
        if !single_use(m2) {
            continue;
        }
        let r2 = g.value(m2).uses()[0].node();
        let n2 = g.node(r2);
        if !matches!(n2.op, Op::Reshape { .. }) {
            continue;
        }
        let Some(y) = n2.output(0) else { continue };
        let (Some(dx), Some(dm), Some(dy)) = (a.dims(x), a.dims(m1), a.dims(y)) else {
            continue;
        };
        if dx != dy || dm.len() != dx.len() + 1 {
            continue;
        }
        // The split axis: first position where dx and dm differ.
        let Some(axis) = (0..dx.len()).find(|&k| dx[k] != dm[k]) else {
            continue;
        };
        let ok_rest = (axis + 1..dx.len()).all(|k| dx[k] == dm[k + 1]);
        let mut want: Vec<i64> = (0..dm.len() as i64).collect();
        want.swap(axis, axis + 1);
        let (Some(c), Some(gr), Some(per)) = (
            dx[axis].known(),
            dm[axis].known(),
            dm.get(axis + 1).and_then(Dim::known),
        ) else {
            continue;
        };
        if !ok_rest || *perm != want || gr * per != c || gr <= 0 || per <= 0 {
            continue;
        }
        found.insert(
            r2,
            Shuffle {
                r1,
                x,
                y,
                axis,
                groups: gr as usize,
                per: per as usize,
            },
        );
        skip.insert(r1);
        skip.insert(t);
    }
    (found, skip)
}
