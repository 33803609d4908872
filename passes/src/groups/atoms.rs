//! Channel atoms: one per index of every (value, axis) space, in a union-find.
//!
//! Spaces are created lazily for axes of known size. Rules union atoms (identity,
//! offset, block and general index maps) and block atoms with a reason; an axis of a
//! node's input or output that no rule mapped is blocked afterwards
//! ([`Atoms::block_unhandled`]), so anything a rule does not model is never pruned.

use super::Role;
use cc_ir::{Dim, Graph, NodeId, ValueId};
use std::collections::{BTreeMap, BTreeSet};

/// Index of a space.
pub(crate) type SpaceId = u32;

const NO_REASON: u32 = u32::MAX;

/// One (value, axis) with its atoms `base .. base + dim`.
#[derive(Clone, Debug)]
pub(crate) struct Space {
    pub value: ValueId,
    pub axis: usize,
    pub dim: usize,
    pub base: usize,
    /// For a constant: the node reading it (each use of a constant is its own space,
    /// so a constant shared by unrelated layers does not tie their channels).
    pub user: Option<NodeId>,
    /// Role of a constant's axis (set by the rule that links it).
    pub role: Option<Role>,
}

/// The atom table.
pub(crate) struct Atoms {
    pub spaces: Vec<Space>,
    index: BTreeMap<(ValueId, usize, Option<NodeId>), SpaceId>,
    cur: Option<NodeId>,
    parent: Vec<u32>,
    blocked: Vec<u32>,
    pub reasons: Vec<String>,
    /// Axes a rule mapped during the current node.
    handled: BTreeSet<(ValueId, usize)>,
    /// Cut points per space (Slice bounds): units may not straddle them.
    pub cuts: BTreeMap<SpaceId, Vec<usize>>,
    /// Channel shuffles: (input, axis, first Reshape, groups).
    pub shuffles: Vec<(ValueId, usize, NodeId, usize)>,
    dims: Vec<Option<Vec<Dim>>>,
    consts: Vec<bool>,
}

impl Atoms {
    /// An empty table for `g`.
    pub fn new(g: &Graph) -> Atoms {
        let ids: Vec<ValueId> = g.value_ids().collect();
        let dims = ids
            .iter()
            .map(|&v| {
                g.value(v)
                    .ty
                    .as_ref()
                    .and_then(|t| t.shape())
                    .map(<[Dim]>::to_vec)
            })
            .collect();
        let consts = ids.iter().map(|&v| g.value(v).is_const()).collect();
        Atoms {
            spaces: Vec::new(),
            index: BTreeMap::new(),
            cur: None,
            parent: Vec::new(),
            blocked: Vec::new(),
            reasons: Vec::new(),
            handled: BTreeSet::new(),
            cuts: BTreeMap::new(),
            shuffles: Vec::new(),
            dims,
            consts,
        }
    }

    /// The dims of a value, when its rank is known.
    pub fn dims(&self, v: ValueId) -> Option<&[Dim]> {
        self.dims.get(v.0 as usize).and_then(|d| d.as_deref())
    }

    /// The rank of a value.
    pub fn rank(&self, v: ValueId) -> Option<usize> {
        self.dims(v).map(<[Dim]>::len)
    }

    /// The known size of an axis.
    pub fn dim(&self, v: ValueId, axis: usize) -> Option<usize> {
        self.dims(v)
            .and_then(|d| d.get(axis))
            .and_then(Dim::known)
            .and_then(|x| usize::try_from(x).ok())
    }

    /// True when the value is a constant.
    pub fn is_const(&self, v: ValueId) -> bool {
        self.consts.get(v.0 as usize).copied().unwrap_or(false)
    }

    /// Sets the node whose rule runs now (constants get one space per reading node).
    pub fn set_node(&mut self, node: Option<NodeId>) {
        self.cur = node;
    }

    fn key(&self, v: ValueId, axis: usize) -> (ValueId, usize, Option<NodeId>) {
        (v, axis, if self.is_const(v) { self.cur } else { None })
    }

    /// The space of `(v, axis)`, created on first use; `None` when its size is unknown.
    pub fn space(&mut self, v: ValueId, axis: usize) -> Option<SpaceId> {
        let key = self.key(v, axis);
        if let Some(&s) = self.index.get(&key) {
            return Some(s);
        }
        let dim = self.dim(v, axis)?;
        let id = self.spaces.len() as SpaceId;
        let base = self.parent.len();
        self.spaces.push(Space {
            value: v,
            axis,
            dim,
            base,
            user: key.2,
            role: None,
        });
        self.parent.extend((base..base + dim).map(|a| a as u32));
        self.blocked.resize(base + dim, NO_REASON);
        self.index.insert(key, id);
        Some(id)
    }

    /// Number of atoms.
    pub fn len(&self) -> usize {
        self.parent.len()
    }

    /// The root of an atom.
    pub fn find(&mut self, mut a: usize) -> usize {
        let mut root = a;
        while self.parent[root] as usize != root {
            root = self.parent[root] as usize;
        }
        while self.parent[a] as usize != root {
            let next = self.parent[a] as usize;
            self.parent[a] = root as u32;
            a = next;
        }
        root
    }

    fn union_atoms(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            // Smaller index becomes the root: deterministic.
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.parent[hi] = lo as u32;
        }
    }

    /// Records a reason and returns its index.
    pub fn reason(&mut self, text: String) -> u32 {
        self.reasons.push(text);
        (self.reasons.len() - 1) as u32
    }

    /// Blocks the atoms `range` of space `s` (keeping an earlier reason).
    fn block_atoms(&mut self, s: SpaceId, range: std::ops::Range<usize>, reason: u32) {
        let base = self.spaces[s as usize].base;
        for a in range {
            let slot = &mut self.blocked[base + a];
            if *slot == NO_REASON {
                *slot = reason;
            }
        }
    }

    /// Blocks axis `axis` of `v` (marks it handled).
    pub fn block(&mut self, v: ValueId, axis: usize, reason: u32) {
        self.handled.insert((v, axis));
        if let Some(s) = self.space(v, axis) {
            let dim = self.spaces[s as usize].dim;
            self.block_atoms(s, 0..dim, reason);
        }
    }

    /// Blocks every axis of `v`.
    pub fn block_value(&mut self, v: ValueId, reason: u32) {
        for axis in 0..self.rank(v).unwrap_or(0) {
            self.block(v, axis, reason);
        }
    }

    /// The reason of a blocked atom.
    pub fn blocked_reason(&self, atom: usize) -> Option<u32> {
        let r = self.blocked[atom];
        (r != NO_REASON).then_some(r)
    }

    /// Sets the role of a constant's axis (ignored for runtime values).
    pub fn set_role(&mut self, v: ValueId, axis: usize, role: Role) {
        if !self.is_const(v) {
            return;
        }
        if let Some(s) = self.space(v, axis) {
            let sp = &mut self.spaces[s as usize];
            // Consumes wins: a contraction axis is what zeroing acts on.
            if sp.role != Some(Role::Consumes) {
                sp.role = Some(role);
            }
        }
    }

    /// Links atom `i` of `(a, axa)` with atom `f(i)` of `(b, axb)` for every `i`; `f`
    /// returns `None` for atoms with no partner. When either size is unknown, the other
    /// side is blocked with `reason`.
    pub fn link_map(
        &mut self,
        (a, axa): (ValueId, usize),
        (b, axb): (ValueId, usize),
        reason: u32,
        f: impl Fn(usize) -> Option<usize>,
    ) {
        self.handled.insert((a, axa));
        self.handled.insert((b, axb));
        let (sa, sb) = (self.space(a, axa), self.space(b, axb));
        match (sa, sb) {
            (Some(sa), Some(sb)) => {
                let (ba, da) = (self.spaces[sa as usize].base, self.spaces[sa as usize].dim);
                let (bb, db) = (self.spaces[sb as usize].base, self.spaces[sb as usize].dim);
                for i in 0..da {
                    match f(i) {
                        Some(j) if j < db => self.union_atoms(ba + i, bb + j),
                        Some(_) => self.block_atoms(sa, i..i + 1, reason),
                        None => {}
                    }
                }
            }
            (Some(s), None) | (None, Some(s)) => {
                let dim = self.spaces[s as usize].dim;
                self.block_atoms(s, 0..dim, reason);
            }
            (None, None) => {}
        }
    }

    /// Links two axes index by index; blocks both when their sizes differ.
    pub fn link(&mut self, a: (ValueId, usize), b: (ValueId, usize), reason: u32) {
        let (da, db) = (self.dim(a.0, a.1), self.dim(b.0, b.1));
        if da.is_some() && db.is_some() && da != db {
            self.block(a.0, a.1, reason);
            self.block(b.0, b.1, reason);
            return;
        }
        self.link_map(a, b, reason, Some);
    }

    /// Unions the atoms of `(v, axis)` within each block of `block` consecutive indices.
    pub fn union_within(&mut self, v: ValueId, axis: usize, block: usize) {
        self.handled.insert((v, axis));
        if block <= 1 {
            return;
        }
        if let Some(s) = self.space(v, axis) {
            let (base, dim) = (self.spaces[s as usize].base, self.spaces[s as usize].dim);
            for i in 0..dim {
                if i % block != 0 {
                    self.union_atoms(base + i - i % block, base + i);
                }
            }
        }
    }

    /// Marks an axis as handled without linking it (a rule decided it needs nothing).
    pub fn handled(&mut self, v: ValueId, axis: usize) {
        self.handled.insert((v, axis));
    }

    /// Records a cut point in `(v, axis)`: no unit may straddle index `at`.
    pub fn cut(&mut self, v: ValueId, axis: usize, at: usize) {
        if let Some(s) = self.space(v, axis) {
            let c = self.cuts.entry(s).or_default();
            if !c.contains(&at) {
                c.push(at);
            }
        }
    }

    /// Blocks every axis of `values` that no rule handled since the last call, with
    /// `reason`, and starts a new node.
    pub fn block_unhandled(&mut self, values: &[ValueId], reason: u32) {
        for &v in values {
            for axis in 0..self.rank(v).unwrap_or(0) {
                if !self.handled.contains(&(v, axis)) {
                    self.block(v, axis, reason);
                }
            }
        }
        self.handled.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_ir::{DType, ValueType};

    fn graph() -> (Graph, ValueId, ValueId, ValueId) {
        let mut g = Graph::new("t");
        let ty = |d: &[usize]| Some(ValueType::tensor(DType::F32, cc_ir::types::known_shape(d)));
        let a = g.add_value("a", ty(&[1, 4])).unwrap();
        let b = g.add_value("b", ty(&[1, 4])).unwrap();
        let c = g.add_value("c", ty(&[1, 8])).unwrap();
        (g, a, b, c)
    }

    #[test]
    fn links_union_atoms_and_blocks_keep_the_first_reason() {
        let (g, a, b, c) = graph();
        let mut at = Atoms::new(&g);
        let r0 = at.reason("first".into());
        let r1 = at.reason("second".into());
        at.link((a, 1), (b, 1), r0);
        // c index 2k and 2k+1 both belong to a's index k.
        at.link_map((c, 1), (a, 1), r0, |i| Some(i / 2));
        let (sa, sc) = (at.space(a, 1).unwrap(), at.space(c, 1).unwrap());
        let (ba, bc) = (at.spaces[sa as usize].base, at.spaces[sc as usize].base);
        assert_eq!(at.find(bc + 5), at.find(ba + 2));
        assert_ne!(at.find(ba + 1), at.find(ba + 2));
        at.block(b, 1, r1);
        at.block(b, 1, r0);
        let sb = at.space(b, 1).unwrap();
        assert_eq!(at.blocked_reason(at.spaces[sb as usize].base), Some(r1));
        // Mismatched sizes block both sides.
        at.link((a, 1), (c, 1), r0);
        assert_eq!(at.blocked_reason(bc), Some(r0));
    }

    #[test]
    fn unhandled_axes_are_blocked() {
        let (g, a, b, _) = graph();
        let mut at = Atoms::new(&g);
        let r = at.reason("unmapped".into());
        at.link((a, 1), (b, 1), r);
        at.block_unhandled(&[a, b], r);
        let sa0 = at.space(a, 0).unwrap();
        let sa1 = at.space(a, 1).unwrap();
        assert_eq!(at.blocked_reason(at.spaces[sa0 as usize].base), Some(r));
        assert_eq!(at.blocked_reason(at.spaces[sa1 as usize].base), None);
    }
}
