//! Where every value lives in the generated code: a runtime input pointer, the weights
//! blob, a compressed-weight descriptor, or an offset into one arena whose buffers are
//! reused once their last reader has run (reshapes alias their input's buffer).

use super::prepare::{elem_type, static_shape};
use cc_ir::{Error, Graph, NodeId, Op, Result, ValueId};
use std::collections::BTreeMap;

/// The storage of one value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// Runtime input `i` of the generated `run` function.
    Input(usize),
    /// Constant data at this offset of the weights blob.
    Const(usize),
    /// Compressed weight descriptor `i` (`cc_wt[i]`).
    Weight(usize),
    /// Bytes at this offset of the arena.
    Arena(usize),
}

/// The storage plan of a prepared graph.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Place of each planned value.
    pub place: BTreeMap<ValueId, Place>,
    /// Bytes of the arena.
    pub arena_bytes: usize,
}

/// True for ops whose output is the input's bytes under another shape.
pub fn is_alias(op: &Op) -> bool {
    matches!(
        op,
        Op::Reshape { .. }
            | Op::Flatten { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Identity
    )
}

/// Byte size of a value with a static shape.
pub fn value_bytes(g: &Graph, v: ValueId) -> Result<usize> {
    let n: usize = static_shape(g, v)?.iter().product();
    let d = elem_type(g, v)?;
    let size = super::emit::ctype(d).map(|(_, s)| s).ok_or_else(|| {
        Error::unsupported(format!(
            "value {}: element type {d:?} is not supported by the C backend",
            g.value(v).name()
        ))
    })?;
    Ok(n * size)
}

/// A free-list allocator over one arena (best fit, coalescing, 64-byte granules).
#[derive(Default)]
struct Arena {
    free: Vec<(usize, usize)>,
    end: usize,
}

impl Arena {
    fn alloc(&mut self, bytes: usize) -> usize {
        let need = bytes.max(1).div_ceil(64) * 64;
        let best = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, &(_, s))| s >= need)
            .min_by_key(|(_, &(o, s))| (s, o))
            .map(|(i, _)| i);
        if let Some(i) = best {
            let (o, s) = self.free[i];
            if s == need {
                self.free.remove(i);
            } else {
                self.free[i] = (o + need, s - need);
            }
            return o;
        }
        // Grow the last free block if it ends at the arena's end.
        if let Some(i) = self.free.iter().position(|&(o, s)| o + s == self.end) {
            let (o, _) = self.free.remove(i);
            self.end = o + need;
            return o;
        }
        let o = self.end;
        self.end += need;
        o
    }

    fn release(&mut self, off: usize, bytes: usize) {
        let size = bytes.max(1).div_ceil(64) * 64;
        self.free.push((off, size));
        self.free.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(self.free.len());
        for &(o, s) in &self.free {
            match merged.last_mut() {
                Some((lo, ls)) if *lo + *ls == o => *ls += s,
                _ => merged.push((o, s)),
            }
        }
        self.free = merged;
    }
}

/// Plans storage for `order` (the prepared graph's nodes in topological order);
/// `fixed` holds the places of runtime inputs, constants and compressed weights;
/// `absorbed` nodes (activations fused into their producer) alias their input.
pub fn plan(
    g: &Graph,
    order: &[NodeId],
    fixed: BTreeMap<ValueId, Place>,
    absorbed: &[NodeId],
) -> Result<Plan> {
    let mut p = Plan {
        place: fixed,
        arena_bytes: 0,
    };
    // Root (owner of the bytes) of each produced value, and the last reader of each root.
    let mut root: BTreeMap<ValueId, ValueId> = BTreeMap::new();
    let mut last: BTreeMap<ValueId, usize> = BTreeMap::new();
    for (step, &id) in order.iter().enumerate() {
        let node = g.node(id);
        for v in node.inputs().iter().flatten() {
            let r = root.get(v).copied().unwrap_or(*v);
            last.insert(r, step);
        }
        let alias_of = if is_alias(&node.op) || absorbed.contains(&id) {
            node.input(0).map(|x| root.get(&x).copied().unwrap_or(x))
        } else {
            None
        };
        for o in node.outputs().iter().flatten() {
            root.insert(*o, alias_of.unwrap_or(*o));
        }
    }
    for &o in g.outputs() {
        let r = root.get(&o).copied().unwrap_or(o);
        last.insert(r, usize::MAX);
    }
    let mut arena = Arena::default();
    for (step, &id) in order.iter().enumerate() {
        let node = g.node(id);
        for &o in node.outputs().iter().flatten() {
            let r = root.get(&o).copied().unwrap_or(o);
            if r != o {
                let pl = p.place.get(&r).cloned().ok_or_else(|| {
                    Error::invalid(format!("value {}: no storage planned", g.value(r).name()))
                })?;
                p.place.insert(o, pl);
                continue;
            }
            let off = arena.alloc(value_bytes(g, o)?);
            p.place.insert(o, Place::Arena(off));
        }
        let mut done: Vec<ValueId> = Vec::new();
        for v in node.inputs().iter().flatten() {
            let r = root.get(v).copied().unwrap_or(*v);
            if last.get(&r) == Some(&step) && !done.contains(&r) {
                done.push(r);
                if let Some(Place::Arena(off)) = p.place.get(&r) {
                    arena.release(*off, value_bytes(g, r)?);
                }
            }
        }
        // Outputs nobody reads are dead after this step.
        for &o in node.outputs().iter().flatten() {
            if root.get(&o) == Some(&o) && !last.contains_key(&o) {
                if let Some(Place::Arena(off)) = p.place.get(&o) {
                    arena.release(*off, value_bytes(g, o)?);
                }
            }
        }
    }
    p.arena_bytes = arena.end;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arena_reuses_and_coalesces() {
        let mut a = Arena::default();
        let x = a.alloc(100);
        let y = a.alloc(64);
        assert_eq!((x, y), (0, 128));
        a.release(x, 100);
        assert_eq!(a.alloc(10), 0);
        a.release(0, 10);
        a.release(y, 64);
        // all free and coalesced: a larger request reuses from 0
        assert_eq!(a.alloc(192), 0);
        assert_eq!(a.end, 192);
        // growing the trailing block
        a.release(0, 192);
        assert_eq!(a.alloc(256), 0);
        assert_eq!(a.end, 256);
    }
}
