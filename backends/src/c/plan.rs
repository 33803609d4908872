//! Where every value lives in the generated code: a runtime input pointer, the weights
//! blob, a compressed-weight descriptor, or an offset into one arena whose buffers are
//! reused once their last reader has run (reshapes alias their input's buffer).

use super::prepare::{elem_type, static_shape};
use crate::arena::Arena;
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
    let mut arena = Arena::new(64);
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
    p.arena_bytes = arena.size();
    Ok(p)
}
