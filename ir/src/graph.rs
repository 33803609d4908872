//! The graph: operations in a `petgraph` DAG, values in a table.
//!
//! Nodes are operations; an edge `producer -> consumer` carries one use of a value (its
//! weight is the [`ValueId`]). Each [`Value`] knows its name, type, constant data (for
//! weights), its producer slot and its uses, so passes can walk both ways in O(1).
//! Graph inputs and constants have no producer node. All mutation goes through
//! [`Graph`] methods that keep slots, use lists and edges consistent.

use crate::error::{Error, Result};
use crate::op::Op;
use crate::tensor::Tensor;
use crate::types::ValueType;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, IntoEdgeReferences};
use petgraph::Direction;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// Index of a node (operation) in the graph.
pub type NodeId = NodeIndex<u32>;

/// Index of a value in the graph's value table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

impl ValueId {
    fn idx(self) -> usize {
        self.0 as usize
    }
}

/// Where a value is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Use {
    /// Input slot `slot` of `node`.
    Input {
        /// The consuming node.
        node: NodeId,
        /// The input slot.
        slot: usize,
    },
    /// Read by name from inside a subgraph attribute of `node` (outer-scope reference).
    Implicit {
        /// The node owning the subgraph.
        node: NodeId,
    },
}

impl Use {
    /// The consuming node.
    pub fn node(self) -> NodeId {
        match self {
            Use::Input { node, .. } | Use::Implicit { node } => node,
        }
    }
}

/// An entry of the value table.
#[derive(Clone, Debug)]
pub struct Value {
    name: String,
    /// Element type and shape, when known.
    pub ty: Option<ValueType>,
    /// Constant data: set for weights (initializers, folded constants).
    pub data: Option<Tensor>,
    /// A compressed weight (quantized, ...): set instead of `data`; `ty` is the logical
    /// type. See [`crate::compressed`].
    pub compressed: Option<crate::compressed::Compressed>,
    /// The sparsity a pass guarantees for this weight (see [`crate::sparsity`]).
    pub sparsity: Option<crate::sparsity::Sparsity>,
    /// Free-form `(key, value)` annotations, sorted by key (see [`Value::annotate`]).
    pub annotations: Vec<(String, String)>,
    producer: Option<(NodeId, usize)>,
    uses: Vec<Use>,
}

impl Value {
    /// The value's unique name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Producing node and output slot, if an operation produces it.
    pub fn producer(&self) -> Option<(NodeId, usize)> {
        self.producer
    }
    /// Where the value is read.
    pub fn uses(&self) -> &[Use] {
        &self.uses
    }
    /// True when the value holds constant data.
    pub fn is_const(&self) -> bool {
        self.data.is_some()
    }
    /// Sets annotation `key` to `value`, keeping the list sorted by key.
    pub fn annotate(&mut self, key: &str, value: &str) {
        match self
            .annotations
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
        {
            Ok(i) => {
                if let Some(slot) = self.annotations.get_mut(i) {
                    slot.1 = value.to_string();
                }
            }
            Err(i) => self
                .annotations
                .insert(i, (key.to_string(), value.to_string())),
        }
    }
    /// The value of annotation `key`, if set.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// An operation with its input and output slots.
#[derive(Clone, Debug)]
pub struct Node {
    /// Node name (may be empty, as ONNX allows).
    pub name: String,
    /// The operation.
    pub op: Op,
    /// Documentation string carried through from ONNX.
    pub doc_string: String,
    /// Serialized ONNX `NodeProto` fields the IR does not model (metadata, overload,
    /// unknown fields), written back on export.
    pub extra: Vec<u8>,
    inputs: Vec<Option<ValueId>>,
    outputs: Vec<Option<ValueId>>,
    implicit_inputs: Vec<ValueId>,
}

impl Node {
    /// Input slots (`None` = optional input left empty).
    pub fn inputs(&self) -> &[Option<ValueId>] {
        &self.inputs
    }
    /// Output slots (`None` = optional output not produced).
    pub fn outputs(&self) -> &[Option<ValueId>] {
        &self.outputs
    }
    /// Outer-scope values read by this node's subgraph attributes.
    pub fn implicit_inputs(&self) -> &[ValueId] {
        &self.implicit_inputs
    }
    /// Input `slot` if present and non-empty.
    pub fn input(&self, slot: usize) -> Option<ValueId> {
        self.inputs.get(slot).copied().flatten()
    }
    /// Output `slot` if present and non-empty.
    pub fn output(&self, slot: usize) -> Option<ValueId> {
        self.outputs.get(slot).copied().flatten()
    }
}

/// Model-level facts the IR carries through unchanged.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelMeta {
    /// ONNX IR version of the imported model.
    pub ir_version: i64,
    /// (domain, version) pairs, in import order.
    pub opset_imports: Vec<(String, i64)>,
    /// Producer name.
    pub producer_name: String,
    /// Producer version.
    pub producer_version: String,
    /// Serialized ModelProto fields not modelled here (functions, metadata, training
    /// info, unknown fields), written back on export.
    pub model_extra: Vec<u8>,
    /// Serialized GraphProto fields not modelled here.
    pub graph_extra: Vec<u8>,
}

impl ModelMeta {
    /// The opset version imported for `domain` ("" and "ai.onnx" are the same domain).
    pub fn opset(&self, domain: &str) -> Option<i64> {
        let norm = |d: &str| if d == "ai.onnx" { "" } else { d }.to_string();
        let want = norm(domain);
        self.opset_imports
            .iter()
            .find(|(d, _)| norm(d) == want)
            .map(|(_, v)| *v)
    }
}

/// A model graph.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// Graph name.
    pub name: String,
    /// Graph documentation string.
    pub doc_string: String,
    /// Model-level metadata.
    pub meta: ModelMeta,
    dag: StableDiGraph<Node, ValueId>,
    values: Vec<Value>,
    names: HashMap<String, ValueId>,
    inputs: Vec<ValueId>,
    outputs: Vec<ValueId>,
}

impl Graph {
    /// An empty graph.
    pub fn new(name: &str) -> Self {
        Graph {
            name: name.to_string(),
            ..Default::default()
        }
    }

    // ---- values ----------------------------------------------------------------------

    /// Adds a value with a new unique name (error if the name is taken or empty).
    pub fn add_value(&mut self, name: &str, ty: Option<ValueType>) -> Result<ValueId> {
        if name.is_empty() {
            return Err(Error::invalid("value with an empty name"));
        }
        if self.names.contains_key(name) {
            return Err(Error::invalid(format!(
                "value name {name:?} is defined twice"
            )));
        }
        let id = ValueId(self.values.len() as u32);
        self.values.push(Value {
            name: name.to_string(),
            ty,
            data: None,
            compressed: None,
            sparsity: None,
            annotations: Vec::new(),
            producer: None,
            uses: Vec::new(),
        });
        self.names.insert(name.to_string(), id);
        Ok(id)
    }

    /// Adds a constant value (a weight) whose type is taken from the tensor.
    pub fn add_const(&mut self, name: &str, tensor: Tensor) -> Result<ValueId> {
        let ty = ValueType::tensor(tensor.dtype(), crate::types::known_shape(tensor.shape()));
        let id = self.add_value(name, Some(ty))?;
        self.values[id.idx()].data = Some(tensor);
        Ok(id)
    }

    /// A name not used by any value, built from `base` (`base`, `base_1`, `base_2`, ...).
    pub fn unique_name(&self, base: &str) -> String {
        if !self.names.contains_key(base) && !base.is_empty() {
            return base.to_string();
        }
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| !self.names.contains_key(n))
            .unwrap_or_else(|| unreachable!("an unbounded range always has a free name"))
    }

    /// The value with this id.
    ///
    /// # Panics
    /// On an id not made by this graph (a programming error, never input data).
    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id.idx()]
    }

    /// Mutable access to a value's type and data.
    pub fn value_mut(&mut self, id: ValueId) -> &mut Value {
        &mut self.values[id.idx()]
    }

    /// Looks a value up by name.
    pub fn value_by_name(&self, name: &str) -> Option<ValueId> {
        self.names.get(name).copied()
    }

    /// Renames a value (error if the new name is taken).
    pub fn rename_value(&mut self, id: ValueId, name: &str) -> Result<()> {
        if self.values[id.idx()].name == name {
            return Ok(());
        }
        if name.is_empty() || self.names.contains_key(name) {
            return Err(Error::invalid(format!(
                "cannot rename to {name:?}: name taken or empty"
            )));
        }
        let old = std::mem::replace(&mut self.values[id.idx()].name, name.to_string());
        self.names.remove(&old);
        self.names.insert(name.to_string(), id);
        Ok(())
    }

    /// Every value id ever created (including ones no longer used).
    pub fn value_ids(&self) -> impl Iterator<Item = ValueId> + '_ {
        (0..self.values.len() as u32).map(ValueId)
    }

    /// True when the value is a graph input or output, produced, or read by a node.
    pub fn is_live(&self, id: ValueId) -> bool {
        let v = self.value(id);
        v.producer.is_some()
            || !v.uses.is_empty()
            || self.inputs.contains(&id)
            || self.outputs.contains(&id)
    }

    /// The constant data of a value, if it is a constant.
    pub fn const_data(&self, id: ValueId) -> Option<&Tensor> {
        self.value(id).data.as_ref()
    }

    // ---- graph inputs / outputs ------------------------------------------------------

    /// Graph inputs, in order.
    pub fn inputs(&self) -> &[ValueId] {
        &self.inputs
    }
    /// Graph outputs, in order.
    pub fn outputs(&self) -> &[ValueId] {
        &self.outputs
    }
    /// Replaces the list of graph inputs.
    pub fn set_inputs(&mut self, inputs: Vec<ValueId>) {
        self.inputs = inputs;
    }
    /// Replaces the list of graph outputs.
    pub fn set_outputs(&mut self, outputs: Vec<ValueId>) {
        self.outputs = outputs;
    }
    /// True when `id` is a graph output.
    pub fn is_output(&self, id: ValueId) -> bool {
        self.outputs.contains(&id)
    }
    /// True when `id` is a graph input.
    pub fn is_input(&self, id: ValueId) -> bool {
        self.inputs.contains(&id)
    }

    // ---- nodes -----------------------------------------------------------------------

    /// Adds a node. Each output value must not already have a producer; inputs must be
    /// values of this graph.
    pub fn add_node(
        &mut self,
        name: &str,
        op: Op,
        inputs: Vec<Option<ValueId>>,
        outputs: Vec<Option<ValueId>>,
    ) -> Result<NodeId> {
        for v in inputs.iter().chain(outputs.iter()).flatten() {
            if v.idx() >= self.values.len() {
                return Err(Error::invalid(format!(
                    "node {name:?}: unknown value id {}",
                    v.0
                )));
            }
        }
        for v in outputs.iter().flatten() {
            if self.values[v.idx()].producer.is_some() {
                return Err(Error::invalid(format!(
                    "node {name:?}: value {:?} already has a producer",
                    self.values[v.idx()].name
                )));
            }
        }
        let id = self.dag.add_node(Node {
            name: name.to_string(),
            op,
            doc_string: String::new(),
            extra: Vec::new(),
            inputs: Vec::new(),
            outputs: outputs.clone(),
            implicit_inputs: Vec::new(),
        });
        for (slot, v) in outputs.iter().enumerate() {
            if let Some(v) = v {
                self.values[v.idx()].producer = Some((id, slot));
                // Nodes added earlier may already read this value: give them their edges.
                let uses = self.values[v.idx()].uses.clone();
                for u in uses {
                    self.dag.add_edge(id, u.node(), *v);
                }
            }
        }
        // Uses of values produced by this node itself (a self-loop) still get edges, so
        // the verifier can see the cycle.
        self.dag[id].inputs = vec![None; inputs.len()];
        for (slot, v) in inputs.into_iter().enumerate() {
            self.set_input(id, slot, v);
        }
        Ok(id)
    }

    /// The node with this id.
    ///
    /// # Panics
    /// On an id that is not (or no longer) in the graph: a programming error.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.dag[id]
    }

    /// Mutable access to a node's name, op and doc string (slots change only through
    /// [`Graph::set_input`] and friends).
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.dag[id]
    }

    /// True when the node exists.
    pub fn contains_node(&self, id: NodeId) -> bool {
        self.dag.contains_node(id)
    }

    /// All node ids, in insertion order.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.dag.node_indices().collect()
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.dag.node_count()
    }

    /// Sets input `slot` of `node` (growing the slot list if needed).
    pub fn set_input(&mut self, node: NodeId, slot: usize, value: Option<ValueId>) {
        if slot >= self.dag[node].inputs.len() {
            self.dag[node].inputs.resize(slot + 1, None);
        }
        if let Some(old) = self.dag[node].inputs[slot] {
            self.remove_use(old, Use::Input { node, slot });
        }
        self.dag[node].inputs[slot] = value;
        if let Some(v) = value {
            self.add_use(v, Use::Input { node, slot });
        }
    }

    /// Drops trailing input slots beyond `len`.
    pub fn truncate_inputs(&mut self, node: NodeId, len: usize) {
        while self.dag[node].inputs.len() > len {
            let slot = self.dag[node].inputs.len() - 1;
            self.set_input(node, slot, None);
            self.dag[node].inputs.pop();
        }
    }

    /// Records outer-scope values read by a node's subgraphs.
    pub fn set_implicit_inputs(&mut self, node: NodeId, values: Vec<ValueId>) {
        let old = std::mem::take(&mut self.dag[node].implicit_inputs);
        for v in old {
            self.remove_use(v, Use::Implicit { node });
        }
        for &v in &values {
            self.add_use(v, Use::Implicit { node });
        }
        self.dag[node].implicit_inputs = values;
    }

    /// Makes output `slot` of `node` produce `value` (which must have no producer), or
    /// clears it.
    pub fn set_output(&mut self, node: NodeId, slot: usize, value: Option<ValueId>) -> Result<()> {
        if let Some(v) = value {
            if self.values[v.idx()].producer.is_some() {
                return Err(Error::invalid(format!(
                    "value {:?} already has a producer",
                    self.values[v.idx()].name
                )));
            }
        }
        if slot >= self.dag[node].outputs.len() {
            self.dag[node].outputs.resize(slot + 1, None);
        }
        if let Some(old) = self.dag[node].outputs[slot] {
            self.values[old.idx()].producer = None;
            let uses = self.values[old.idx()].uses.clone();
            for u in uses {
                self.remove_edge(node, u.node(), old);
            }
        }
        self.dag[node].outputs[slot] = value;
        if let Some(v) = value {
            self.values[v.idx()].producer = Some((node, slot));
            let uses = self.values[v.idx()].uses.clone();
            for u in uses {
                self.dag.add_edge(node, u.node(), v);
            }
        }
        Ok(())
    }

    /// Removes a node: its inputs lose a use, its outputs lose their producer.
    pub fn remove_node(&mut self, node: NodeId) {
        let n = self.dag[node].inputs.len();
        for slot in 0..n {
            self.set_input(node, slot, None);
        }
        self.set_implicit_inputs(node, Vec::new());
        let outs = self.dag[node].outputs.clone();
        for (slot, v) in outs.iter().enumerate() {
            if v.is_some() {
                let _ = self.set_output(node, slot, None);
            }
        }
        self.dag.remove_node(node);
    }

    /// Makes every node input and graph output that reads `old` read `new` instead.
    pub fn replace_all_uses(&mut self, old: ValueId, new: ValueId) {
        let uses = self.values[old.idx()].uses.clone();
        for u in uses {
            match u {
                Use::Input { node, slot } => self.set_input(node, slot, Some(new)),
                Use::Implicit { node } => {
                    let vals: Vec<ValueId> = self.dag[node]
                        .implicit_inputs
                        .iter()
                        .map(|&v| if v == old { new } else { v })
                        .collect();
                    self.set_implicit_inputs(node, vals);
                }
            }
        }
        for o in &mut self.outputs {
            if *o == old {
                *o = new;
            }
        }
    }

    /// Nodes that read any output of `node`.
    pub fn successors(&self, node: NodeId) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .dag
            .neighbors_directed(node, Direction::Outgoing)
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Number of dependency edges (one per use of a node-produced value).
    pub fn edge_count(&self) -> usize {
        self.dag.edge_count()
    }

    /// The dependency edges as (producer, consumer, value), for the verifier.
    pub fn edges(&self) -> Vec<(NodeId, NodeId, ValueId)> {
        self.dag
            .edge_references()
            .map(|e| (e.source(), e.target(), *e.weight()))
            .collect()
    }

    /// Nodes in a deterministic topological order: among ready nodes, the one with the
    /// smallest (name, first output name) comes first. Errors on a cycle, naming a node
    /// on it.
    pub fn topo_order(&self) -> Result<Vec<NodeId>> {
        let key = |id: NodeId| {
            let n = &self.dag[id];
            let out = n
                .outputs
                .iter()
                .flatten()
                .next()
                .map(|v| self.values[v.idx()].name.clone())
                .unwrap_or_default();
            Reverse((n.name.clone(), out, id.index()))
        };
        let mut indeg: HashMap<NodeId, usize> = self
            .dag
            .node_indices()
            .map(|n| (n, self.dag.edges_directed(n, Direction::Incoming).count()))
            .collect();
        let mut ready: BinaryHeap<_> = indeg
            .iter()
            .filter(|(_, &d)| d == 0)
            .map(|(&n, _)| key(n))
            .collect();
        let mut order = Vec::with_capacity(self.dag.node_count());
        while let Some(Reverse((_, _, idx))) = ready.pop() {
            let id = NodeIndex::new(idx);
            order.push(id);
            for e in self.dag.edges_directed(id, Direction::Outgoing) {
                let d = indeg.entry(e.target()).or_default();
                *d -= 1;
                if *d == 0 {
                    ready.push(key(e.target()));
                }
            }
        }
        if order.len() != self.dag.node_count() {
            let stuck = self
                .dag
                .node_indices()
                .find(|n| indeg.get(n).copied().unwrap_or(0) > 0)
                .map(|n| self.node_label(n))
                .unwrap_or_default();
            return Err(Error::invalid(format!(
                "graph has a cycle through node {stuck}"
            )));
        }
        Ok(order)
    }

    /// A label for messages: the node's name, or its op type and first output.
    pub fn node_label(&self, id: NodeId) -> String {
        let n = &self.dag[id];
        let first = n
            .outputs
            .iter()
            .flatten()
            .next()
            .map(|v| self.values[v.idx()].name.as_str())
            .unwrap_or("");
        if n.name.is_empty() {
            format!("{} -> {first:?}", n.op.onnx_type().1)
        } else {
            format!("{:?} ({})", n.name, n.op.onnx_type().1)
        }
    }

    fn add_use(&mut self, v: ValueId, u: Use) {
        self.values[v.idx()].uses.push(u);
        if let Some((p, _)) = self.values[v.idx()].producer {
            self.dag.add_edge(p, u.node(), v);
        }
    }

    fn remove_use(&mut self, v: ValueId, u: Use) {
        let uses = &mut self.values[v.idx()].uses;
        if let Some(i) = uses.iter().position(|&x| x == u) {
            uses.remove(i);
            if let Some((p, _)) = self.values[v.idx()].producer {
                self.remove_edge(p, u.node(), v);
            }
        }
    }

    fn remove_edge(&mut self, from: NodeId, to: NodeId, v: ValueId) {
        let e = self
            .dag
            .edges_connecting(from, to)
            .find(|e| *e.weight() == v)
            .map(|e| e.id());
        if let Some(e) = e {
            self.dag.remove_edge(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::{Op, UnaryOp};

    fn chain() -> (Graph, Vec<ValueId>, Vec<NodeId>) {
        let mut g = Graph::new("g");
        let x = g.add_value("x", None).unwrap();
        let a = g.add_value("a", None).unwrap();
        let b = g.add_value("b", None).unwrap();
        g.set_inputs(vec![x]);
        let n1 = g
            .add_node("n1", Op::Unary(UnaryOp::Relu), vec![Some(x)], vec![Some(a)])
            .unwrap();
        let n2 = g
            .add_node("n2", Op::Unary(UnaryOp::Neg), vec![Some(a)], vec![Some(b)])
            .unwrap();
        g.set_outputs(vec![b]);
        (g, vec![x, a, b], vec![n1, n2])
    }

    #[test]
    fn uses_and_edges_stay_consistent() {
        let (mut g, v, n) = chain();
        assert_eq!(g.edge_count(), 1);
        assert_eq!(
            g.value(v[1]).uses(),
            &[Use::Input {
                node: n[1],
                slot: 0
            }]
        );
        g.set_input(n[1], 0, Some(v[0]));
        assert_eq!(g.edge_count(), 0);
        assert!(g.value(v[1]).uses().is_empty());
        g.remove_node(n[0]);
        assert!(g.value(v[1]).producer().is_none());
        assert_eq!(g.topo_order().unwrap(), vec![n[1]]);
    }

    #[test]
    fn topo_order_is_deterministic_and_finds_cycles() {
        let (mut g, v, n) = chain();
        assert_eq!(g.topo_order().unwrap(), n);
        g.set_input(n[0], 0, Some(v[2]));
        let err = g.topo_order().unwrap_err().to_string();
        assert!(err.contains("cycle"), "{err}");
    }

    #[test]
    fn producer_added_after_consumer_gets_edges() {
        let mut g = Graph::new("g");
        let x = g.add_value("x", None).unwrap();
        let a = g.add_value("a", None).unwrap();
        let b = g.add_value("b", None).unwrap();
        let n2 = g
            .add_node("n2", Op::Unary(UnaryOp::Neg), vec![Some(a)], vec![Some(b)])
            .unwrap();
        let n1 = g
            .add_node("n1", Op::Unary(UnaryOp::Relu), vec![Some(x)], vec![Some(a)])
            .unwrap();
        assert_eq!(g.edge_count(), 1);
        assert_eq!(g.topo_order().unwrap(), vec![n1, n2]);
    }

    #[test]
    fn names_are_unique() {
        let (mut g, ..) = chain();
        assert!(g.add_value("a", None).is_err());
        assert_eq!(g.unique_name("a"), "a_1");
    }

    #[test]
    fn annotations_stay_sorted_and_survive_clone() {
        let mut g = Graph::new("g");
        let v = g.add_value("v", None).unwrap();
        g.value_mut(v).annotate("b", "1");
        g.value_mut(v).annotate("a", "2");
        g.value_mut(v).annotate("b", "3");
        let c = g.clone();
        assert_eq!(
            c.value(v).annotations,
            vec![("a".to_string(), "2".to_string()), ("b".into(), "3".into())]
        );
        assert_eq!(c.value(v).annotation("b"), Some("3"));
        assert_eq!(c.value(v).annotation("c"), None);
    }
}
