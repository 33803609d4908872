//! The execution plan: which kernels run in which order, the weight blob, and where
//! every tensor lives in one device workspace.
//!
//! Nodes are visited in topological order. Conv/Gemm/MatMul absorb the elementwise
//! chain after them as an epilogue, other elementwise chains become one kernel,
//! Reshape-like ops alias their input (no kernel). A kernel runs where the last node it
//! covers stood. Workspace slots are reused once a value's last reader has run
//! (first fit, 256-byte aligned, deterministic).

use super::weights::{Buf, Weights, ALIGN};
use super::{conv, elementwise, gemm, movement, norm, pool, reduce, shapes, Draft};
use crate::arena::Arena;
use cc_ir::{Error, Graph, NodeId, Op, Result, ValueId};
use std::collections::{BTreeMap, BTreeSet};

/// Which device buffer a kernel argument points into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    /// The weight blob.
    Weights,
    /// The workspace (inputs, outputs, intermediates).
    Workspace,
}

/// One kernel argument: a pointer at `offset` bytes into `space`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arg {
    /// Parameter name.
    pub name: String,
    /// C type of the parameter.
    pub ty: &'static str,
    /// Buffer.
    pub space: Space,
    /// Byte offset into the buffer.
    pub offset: usize,
}

/// One generated kernel and its launch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    /// Function name (`k03_conv_relu`).
    pub name: String,
    /// The nodes it computes.
    pub nodes: Vec<String>,
    /// Its CUDA source (helpers and the `__global__` function).
    pub source: String,
    /// Grid size in blocks.
    pub grid: [u32; 3],
    /// Threads per block.
    pub block: u32,
    /// Arguments, in parameter order.
    pub args: Vec<Arg>,
}

/// A graph input or output: its name, shape and workspace offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoSlot {
    /// Value name.
    pub name: String,
    /// Shape (f32 elements).
    pub shape: Vec<usize>,
    /// Byte offset into the workspace.
    pub offset: usize,
}

/// Everything needed to run a graph on the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Graph name.
    pub graph: String,
    /// Kernels in launch order.
    pub kernels: Vec<Kernel>,
    /// The weight blob.
    pub weights: Vec<u8>,
    /// (offset, length, description) of each weight section.
    pub weight_sections: Vec<(usize, usize, String)>,
    /// Workspace size in bytes.
    pub workspace_bytes: usize,
    /// Graph inputs.
    pub inputs: Vec<IoSlot>,
    /// Graph outputs.
    pub outputs: Vec<IoSlot>,
}

fn is_alias(op: &Op) -> bool {
    matches!(
        op,
        Op::Reshape { .. }
            | Op::Flatten { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Identity
            | Op::Dropout { .. }
    )
}

/// Plans `g` (static shapes, f32 activations) for the device. Shared (hashed) weights
/// are decoded to f32 constants first, as the CPU executor does.
pub fn plan(g: &Graph) -> Result<Plan> {
    let decoded = cc_ir::compressed::shared::materialize(g)?;
    let g = decoded.as_ref().unwrap_or(g);
    let order = g.topo_order()?;
    let mut w = Weights::new();
    let mut alias: BTreeMap<ValueId, ValueId> = BTreeMap::new();
    let root = |alias: &BTreeMap<ValueId, ValueId>, v: ValueId| *alias.get(&v).unwrap_or(&v);
    let mut claimed: BTreeSet<NodeId> = BTreeSet::new();
    let pos: BTreeMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut drafts: Vec<(usize, Draft)> = Vec::new();
    for &id in &order {
        if claimed.contains(&id) {
            continue;
        }
        let node = g.node(id);
        let label = g.node_label(id);
        let covered: Vec<NodeId> = if is_alias(&node.op) {
            let (Some(x), Some(y)) = (node.input(0), node.output(0)) else {
                return Err(Error::invalid(format!(
                    "node {label}: missing input or output"
                )));
            };
            if shapes::later_outputs_used(g, node) {
                return Err(Error::unsupported(format!(
                    "cuda backend: node {label}: the second output is not supported"
                )));
            }
            if g.const_data(x).is_some() || g.value(x).compressed.is_some() {
                return Err(Error::unsupported(format!(
                    "cuda backend: node {label}: reshapes a constant (fold constants first)"
                )));
            }
            shapes::require_f32(g, y, &label)?;
            shapes::dims(g, y)?;
            let r = root(&alias, x);
            alias.insert(y, r);
            continue;
        } else {
            match &node.op {
                Op::Conv(_) => {
                    let chain = elementwise::chain_from(g, id, false, &mut claimed);
                    drafts.push((0, conv::lower(g, id, &chain, &mut w)?));
                    chain
                }
                Op::Gemm { .. } | Op::MatMul => {
                    let chain = elementwise::chain_from(g, id, false, &mut claimed);
                    drafts.push((0, gemm::lower(g, id, &chain, &mut w)?));
                    chain
                }
                Op::Concat { .. } | Op::Transpose { .. } | Op::Slice | Op::Gather { .. } => {
                    drafts.push((0, movement::lower(g, id, &mut w)?));
                    Vec::new()
                }
                Op::Softmax { .. } | Op::LayerNormalization { .. } => {
                    drafts.push((0, norm::lower(g, id, &mut w)?));
                    Vec::new()
                }
                Op::Reduce { .. } => {
                    drafts.push((0, reduce::lower(g, id, &mut w)?));
                    Vec::new()
                }
                Op::MaxPool(_) | Op::AveragePool(_) | Op::GlobalPool(_) => {
                    drafts.push((0, pool::lower(g, id, &mut w)?));
                    Vec::new()
                }
                op if elementwise::is_elementwise(op) => {
                    let chain = elementwise::chain_from(g, id, true, &mut claimed);
                    drafts.push((0, elementwise::lower_chain(g, &chain, &mut w)?));
                    chain
                }
                op => {
                    return Err(Error::unsupported(format!(
                        "cuda backend: node {label}: op {} is not supported",
                        op.onnx_type().1
                    )))
                }
            }
        };
        let last = covered.iter().filter_map(|n| pos.get(n)).max().copied();
        let at = last.unwrap_or(0).max(pos.get(&id).copied().unwrap_or(0));
        if let Some(d) = drafts.last_mut() {
            d.0 = at;
        }
    }
    drafts.sort_by_key(|(at, _)| *at);
    let drafts: Vec<Draft> = drafts.into_iter().map(|(_, d)| d).collect();

    // Liveness over kernel indices: graph inputs are defined before kernel 0, graph
    // outputs stay live to the end.
    let rootv = |v: ValueId| root(&alias, v);
    let mut last_use: BTreeMap<ValueId, usize> = BTreeMap::new();
    for (i, d) in drafts.iter().enumerate() {
        for p in &d.params {
            if let Buf::Value(v) = p.buf {
                last_use.insert(rootv(v), i);
            }
        }
    }
    let keep: BTreeSet<ValueId> = g.outputs().iter().map(|&v| rootv(v)).collect();
    for &v in g.outputs() {
        let r = rootv(v);
        if g.const_data(r).is_some() || g.value(r).compressed.is_some() {
            return Err(Error::unsupported(format!(
                "cuda backend: graph output {:?} is a constant",
                g.value(v).name()
            )));
        }
    }
    let mut arena = Arena::new(ALIGN);
    let mut offsets: BTreeMap<ValueId, usize> = BTreeMap::new();
    for &v in g.inputs() {
        shapes::require_f32(g, v, "graph input")?;
        let n = bytes_of(g, v)?;
        offsets.insert(v, arena.alloc(n));
    }
    let mut kernels = Vec::with_capacity(drafts.len());
    for (i, d) in drafts.into_iter().enumerate() {
        let out = rootv(d.output);
        if let std::collections::btree_map::Entry::Vacant(e) = offsets.entry(out) {
            e.insert(arena.alloc(bytes_of(g, out)?));
        }
        let mut args = Vec::with_capacity(d.params.len());
        for p in &d.params {
            let (space, offset) = match p.buf {
                Buf::Weight(o) => (Space::Weights, o),
                Buf::Value(v) => {
                    let r = rootv(v);
                    let o = *offsets.get(&r).ok_or_else(|| {
                        Error::invalid(format!(
                            "cuda backend: value {:?} is read before it is computed",
                            g.value(v).name()
                        ))
                    })?;
                    (Space::Workspace, o)
                }
            };
            args.push(super::plan::Arg {
                name: p.name.clone(),
                ty: p.ty,
                space,
                offset,
            });
        }
        // Free what this kernel read last (never its own output or graph outputs), each
        // value once even when the kernel reads it through several parameters.
        let read_last: BTreeSet<ValueId> = d
            .params
            .iter()
            .filter_map(|p| match p.buf {
                Buf::Value(v) => Some(rootv(v)),
                Buf::Weight(_) => None,
            })
            .filter(|r| *r != out && !keep.contains(r) && last_use.get(r) == Some(&i))
            .collect();
        for r in read_last {
            if let Some(o) = offsets.get(&r) {
                arena.release(*o, bytes_of(g, r)?);
            }
        }
        if !last_use.contains_key(&out) && !keep.contains(&out) {
            if let Some(o) = offsets.get(&out) {
                arena.release(*o, bytes_of(g, out)?);
            }
        }
        let name = format!("k{i:02}_{}", d.base);
        let source = super::source::kernel_source(&name, &d);
        kernels.push(Kernel {
            name,
            nodes: d.nodes,
            source,
            grid: d.grid,
            block: d.block,
            args,
        });
    }
    let io = |v: ValueId| -> Result<IoSlot> {
        let r = rootv(v);
        Ok(IoSlot {
            name: g.value(v).name().to_string(),
            shape: shapes::dims(g, v)?,
            offset: *offsets.get(&r).ok_or_else(|| {
                Error::invalid(format!(
                    "cuda backend: graph output {:?} is never computed",
                    g.value(v).name()
                ))
            })?,
        })
    };
    let inputs = g.inputs().iter().map(|&v| io(v)).collect::<Result<_>>()?;
    let outputs = g.outputs().iter().map(|&v| io(v)).collect::<Result<_>>()?;
    let (weights, weight_sections) = w.into_blob();
    Ok(Plan {
        graph: g.name.clone(),
        kernels,
        weights,
        weight_sections,
        workspace_bytes: arena.size().max(ALIGN),
        inputs,
        outputs,
    })
}

fn bytes_of(g: &Graph, v: ValueId) -> Result<usize> {
    Ok(shapes::dims(g, v)?.iter().product::<usize>() * 4)
}
