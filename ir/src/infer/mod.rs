//! Shape and type inference for typed ops.
//!
//! [`infer_node`] computes the type of each output slot of one node from its inputs'
//! types and, where an input is a constant, its data (Reshape targets, Slice bounds,
//! axes inputs, ...). [`infer_shapes`] runs it over the graph in topological order and
//! merges the result into each output value's declared type (see [`merge_types`]).
//! Nothing is guessed: when a rank or a needed constant is unknown the output (or the
//! dimension) stays unknown. Errors are only raised for definite contradictions.

mod conv_pool;
mod dims;
mod elementwise;
mod gather;
mod matmul;
mod misc;
mod quant;
mod reduce;
mod shape_ops;
mod values;

pub use dims::{broadcast, shape_range};

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::{Graph, Node, NodeId};
use crate::op::Op;
use crate::types::{Dim, ValueType};

/// What one node's inference sees: the graph, the node and helpers over its inputs.
pub(crate) struct Ctx<'a> {
    g: &'a Graph,
    id: NodeId,
    node: &'a Node,
}

impl<'a> Ctx<'a> {
    fn new(g: &'a Graph, id: NodeId) -> Self {
        Ctx {
            g,
            id,
            node: g.node(id),
        }
    }
    /// An error about this node.
    pub(crate) fn err(&self, msg: impl std::fmt::Display) -> Error {
        Error::invalid(format!("node {}: {msg}", self.g.node_label(self.id)))
    }
    /// True when input `slot` is present.
    pub(crate) fn has(&self, slot: usize) -> bool {
        self.node.input(slot).is_some()
    }
    /// Number of input slots (present or empty).
    pub(crate) fn n_in(&self) -> usize {
        self.node.inputs().len()
    }
    /// Number of output slots.
    pub(crate) fn n_out(&self) -> usize {
        self.node.outputs().len()
    }
    /// Declared type of input `slot`.
    pub(crate) fn ty(&self, slot: usize) -> Option<&'a ValueType> {
        let g: &'a Graph = self.g;
        g.value(self.node.input(slot)?).ty.as_ref()
    }
    /// Element type of input `slot`.
    pub(crate) fn elem(&self, slot: usize) -> Option<DType> {
        self.ty(slot)?.elem()
    }
    /// Shape of input `slot` (None when its rank is unknown).
    pub(crate) fn shape(&self, slot: usize) -> Option<&'a [Dim]> {
        self.ty(slot)?.shape()
    }
    /// Rank of input `slot`.
    pub(crate) fn rank(&self, slot: usize) -> Option<usize> {
        self.shape(slot).map(<[Dim]>::len)
    }
    /// The integer data of input `slot` when it is a constant of an integer type.
    pub(crate) fn ints(&self, slot: usize) -> Option<Vec<i64>> {
        let t = self.g.const_data(self.node.input(slot)?)?;
        t.to_i64_lossless().ok()
    }
    /// The elements of the small integer input `slot` as dims, following shape
    /// arithmetic back to constants and `Shape` ops (see [`values`]).
    pub(crate) fn dims_value(&self, slot: usize) -> Option<Vec<Dim>> {
        values::dims_value(self.g, self.node.input(slot)?)
    }
    /// The data of input `slot` as f64 when it is a numeric constant.
    pub(crate) fn numbers(&self, slot: usize) -> Option<Vec<f64>> {
        let t = self.g.const_data(self.node.input(slot)?)?;
        t.to_f64_numbers().ok()
    }
    /// Normalizes a possibly negative axis for a tensor of rank `rank`.
    pub(crate) fn axis(&self, axis: i64, rank: usize) -> Result<usize> {
        let r = rank as i64;
        let a = if axis < 0 { axis + r } else { axis };
        if (0..r).contains(&a) {
            Ok(a as usize)
        } else {
            Err(self.err(format!("axis {axis} out of range for rank {rank}")))
        }
    }
}

/// A tensor type, or `None` when neither element type nor rank is known.
pub(crate) fn tensor(elem: Option<DType>, shape: Option<Vec<Dim>>) -> Option<ValueType> {
    if elem.is_none() && shape.is_none() {
        None
    } else {
        Some(ValueType::Tensor { elem, shape })
    }
}

/// The inferred type of each output slot of `node` (`None` where it cannot be inferred).
///
/// [`Op::Other`] nodes get all `None`. Errors name the node and are raised only for
/// definite contradictions between the inputs (e.g. MatMul inner dimensions that are
/// both known and differ).
pub fn infer_node(g: &Graph, node: NodeId) -> Result<Vec<Option<ValueType>>> {
    let c = Ctx::new(g, node);
    let mut out = match &c.node.op {
        Op::Other(_) => Vec::new(),
        Op::Unary(_)
        | Op::LeakyRelu { .. }
        | Op::Gelu { .. }
        | Op::Binary(_)
        | Op::Mod { .. }
        | Op::Variadic(_)
        | Op::Where
        | Op::Clip
        | Op::Identity
        | Op::Softmax { .. }
        | Op::CumSum { .. }
        | Op::Cast { .. }
        | Op::CastLike { .. }
        | Op::Dropout { .. } => elementwise::infer(&c)?,
        Op::Conv(_)
        | Op::ConvTranspose(_)
        | Op::MaxPool(_)
        | Op::AveragePool(_)
        | Op::GlobalPool(_) => conv_pool::infer(&c)?,
        Op::Gemm { .. } | Op::MatMul => matmul::infer(&c)?,
        Op::Flatten { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Concat { .. }
        | Op::Split { .. }
        | Op::Slice
        | Op::Unsqueeze { .. }
        | Op::Squeeze { .. }
        | Op::Expand
        | Op::Shape { .. }
        | Op::Size
        | Op::Pad { .. } => shape_ops::infer(&c)?,
        Op::Gather { .. } | Op::GatherElements { .. } | Op::GatherND { .. } => gather::infer(&c)?,
        Op::Reduce { .. } => reduce::infer(&c)?,
        Op::BatchNormalization { .. }
        | Op::LayerNormalization { .. }
        | Op::ConstantOfShape { .. }
        | Op::Range
        | Op::QuantizeLinear { .. }
        | Op::DequantizeLinear { .. } => misc::infer(&c)?,
        Op::DynamicQuantizeLinear
        | Op::MatMulInteger
        | Op::ConvInteger(_)
        | Op::QLinearMatMul
        | Op::QLinearConv(_) => quant::infer(&c)?,
    };
    out.resize(c.n_out(), None);
    Ok(out)
}

/// Merges an inferred type into a declared one.
///
/// Unknown parts of the declared type are filled in; a declared symbolic or unknown
/// dimension is refined by an inferred known one; a declared symbolic dimension is
/// kept over an inferred unknown or differently named one. Element type, rank or
/// known-dimension disagreement is a conflict (`None`; the caller words the message).
pub fn merge_types(declared: &ValueType, inferred: &ValueType) -> Option<ValueType> {
    let (de, ds, ie, is) = match (declared, inferred) {
        (
            ValueType::Tensor {
                elem: de,
                shape: ds,
            },
            ValueType::Tensor {
                elem: ie,
                shape: is,
            },
        ) => (de, ds, ie, is),
        (ValueType::Opaque(_), ValueType::Opaque(_)) if declared == inferred => {
            return Some(declared.clone())
        }
        _ => return None,
    };
    let elem = match (de, ie) {
        (Some(a), Some(b)) if a != b => return None,
        (Some(a), _) => Some(*a),
        (None, b) => *b,
    };
    let shape = match (ds, is) {
        (Some(a), Some(b)) => {
            if a.len() != b.len() {
                return None;
            }
            let mut dims = Vec::with_capacity(a.len());
            for (x, y) in a.iter().zip(b) {
                dims.push(match (x, y) {
                    (Dim::Known(p), Dim::Known(q)) if p != q => return None,
                    (Dim::Known(_), _) => x.clone(),
                    (_, Dim::Known(_)) => y.clone(),
                    (Dim::Sym(_), _) => x.clone(),
                    (Dim::Unknown, _) => y.clone(),
                });
            }
            Some(dims)
        }
        (Some(a), None) => Some(a.clone()),
        (None, b) => b.clone(),
    };
    Some(ValueType::Tensor { elem, shape })
}

/// Merges the inferred type of output `slot` of `node` with what the graph records;
/// `Ok(None)` when nothing was inferred. The error names node, value and both types.
pub(crate) fn merge_output(
    g: &Graph,
    node: NodeId,
    value: crate::graph::ValueId,
    inferred: Option<&ValueType>,
) -> Result<Option<ValueType>> {
    let Some(inf) = inferred else {
        return Ok(None);
    };
    let v = g.value(value);
    match &v.ty {
        None => Ok(Some(inf.clone())),
        Some(decl) => merge_types(decl, inf).map(Some).ok_or_else(|| {
            Error::invalid(format!(
                "node {}: output {:?} declared {decl} but infers {inf}",
                g.node_label(node),
                v.name()
            ))
        }),
    }
}

/// Infers the types of all values produced by typed ops, in topological order, and
/// merges them into the values' declared types.
pub fn infer_shapes(g: &mut Graph) -> Result<()> {
    for id in g.topo_order()? {
        let inferred = infer_node(g, id)?;
        let outs: Vec<_> = g.node(id).outputs().to_vec();
        for (slot, v) in outs.into_iter().enumerate() {
            let Some(v) = v else { continue };
            if let Some(t) = merge_output(g, id, v, inferred.get(slot).and_then(Option::as_ref))? {
                g.value_mut(v).ty = Some(t);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Small builders for hand-made test graphs.
    use crate::dtype::DType;
    use crate::graph::{Graph, NodeId, ValueId};
    use crate::op::Op;
    use crate::tensor::Tensor;
    use crate::types::{Dim, ValueType};

    /// Parses a dim list like "N,3,?,4".
    pub fn dims(s: &str) -> Vec<Dim> {
        if s.is_empty() {
            return vec![];
        }
        s.split(',')
            .map(|d| match d {
                "?" => Dim::Unknown,
                _ => d
                    .parse::<i64>()
                    .map(Dim::Known)
                    .unwrap_or_else(|_| Dim::Sym(d.to_string())),
            })
            .collect()
    }
    /// A tensor type from an element type and dim list.
    pub fn t(e: DType, s: &str) -> ValueType {
        ValueType::tensor(e, Some(dims(s)))
    }
    /// Adds a graph input of type `ty`.
    pub fn input(g: &mut Graph, name: &str, ty: ValueType) -> ValueId {
        let v = g.add_value(name, Some(ty)).unwrap();
        let mut ins = g.inputs().to_vec();
        ins.push(v);
        g.set_inputs(ins);
        v
    }
    /// Adds an i64 constant vector.
    pub fn ints(g: &mut Graph, name: &str, v: &[i64]) -> ValueId {
        g.add_const(name, Tensor::from_i64(vec![v.len()], v.to_vec()).unwrap())
            .unwrap()
    }
    /// Adds a node with fresh untyped outputs named `out0..`; returns node and outputs.
    pub fn node(
        g: &mut Graph,
        op: Op,
        inputs: &[Option<ValueId>],
        n_out: usize,
    ) -> (NodeId, Vec<ValueId>) {
        let outs: Vec<ValueId> = (0..n_out)
            .map(|_| {
                let n = g.unique_name("out");
                g.add_value(&n, None).unwrap()
            })
            .collect();
        let id = g
            .add_node(
                "",
                op,
                inputs.to_vec(),
                outs.iter().copied().map(Some).collect(),
            )
            .unwrap();
        (id, outs)
    }
    /// Infers one node and renders each output type (`-` when unknown).
    pub fn infer_str(g: &Graph, id: NodeId) -> Vec<String> {
        super::infer_node(g, id)
            .unwrap()
            .into_iter()
            .map(|t| t.map(|t| t.to_string()).unwrap_or_else(|| "-".into()))
            .collect()
    }
    /// Builds a one-node graph over typed inputs and returns its rendered output types.
    pub fn run(op: Op, inputs: &[ValueType], n_out: usize) -> Vec<String> {
        let mut g = Graph::new("t");
        let ins: Vec<Option<ValueId>> = inputs
            .iter()
            .enumerate()
            .map(|(i, ty)| Some(input(&mut g, &format!("in{i}"), ty.clone())))
            .collect();
        let (id, _) = node(&mut g, op, &ins, n_out);
        infer_str(&g, id)
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use crate::op::{BinaryOp, UnaryOp};

    #[test]
    fn merge_rules() {
        let d = t(DType::F32, "N,?,3");
        let m = merge_types(&d, &t(DType::F32, "?,5,3")).unwrap();
        assert_eq!(m.to_string(), "f32[N,5,3]");
        let m = merge_types(&t(DType::F32, "N"), &t(DType::F32, "M")).unwrap();
        assert_eq!(m.to_string(), "f32[N]");
        let m = merge_types(&t(DType::F32, "N"), &t(DType::F32, "7")).unwrap();
        assert_eq!(m.to_string(), "f32[7]");
        assert!(merge_types(&t(DType::F32, "2,3"), &t(DType::F32, "2,4")).is_none());
        assert!(merge_types(&t(DType::F32, "2,3"), &t(DType::F32, "2")).is_none());
        assert!(merge_types(&t(DType::F32, "2"), &t(DType::I64, "2")).is_none());
        let partial = ValueType::Tensor {
            elem: None,
            shape: None,
        };
        assert_eq!(
            merge_types(&partial, &t(DType::I8, "1"))
                .unwrap()
                .to_string(),
            "i8[1]"
        );
    }

    #[test]
    fn infer_shapes_fills_and_checks_declared_types() {
        let mut g = Graph::new("g");
        let x = input(&mut g, "x", t(DType::F32, "N,3"));
        let (_, o1) = node(&mut g, Op::Unary(UnaryOp::Relu), &[Some(x)], 1);
        let y = g.add_value("y", Some(t(DType::F32, "?,3"))).unwrap();
        let w = g
            .add_const(
                "w",
                crate::Tensor::from_f32(vec![3], vec![1.0, 2.0, 3.0]).unwrap(),
            )
            .unwrap();
        g.add_node(
            "add",
            Op::Binary(BinaryOp::Add),
            vec![Some(o1[0]), Some(w)],
            vec![Some(y)],
        )
        .unwrap();
        infer_shapes(&mut g).unwrap();
        assert_eq!(g.value(o1[0]).ty.as_ref().unwrap().to_string(), "f32[N,3]");
        assert_eq!(g.value(y).ty.as_ref().unwrap().to_string(), "f32[N,3]");

        g.value_mut(y).ty = Some(t(DType::F32, "2,4"));
        let err = infer_shapes(&mut g).unwrap_err().to_string();
        assert_eq!(
            err,
            "node \"add\" (Add): output \"y\" declared f32[2,4] but infers f32[N,3]"
        );
    }

    #[test]
    fn extreme_attribute_values_do_not_panic() {
        use crate::op::{ConvAttrs, PoolAttrs};
        let big = i64::MAX;
        let conv = ConvAttrs {
            strides: Some(vec![big]),
            pads: Some(vec![big, big]),
            dilations: Some(vec![big]),
            ..Default::default()
        };
        let x = t(DType::F32, "1,1,9223372036854775807");
        let w = t(DType::F32, "1,1,9223372036854775807");
        run(Op::Conv(conv.clone()), &[x.clone(), w.clone()], 1);
        run(Op::ConvTranspose(conv), &[x.clone(), w], 1);
        let pool = PoolAttrs {
            kernel_shape: Some(vec![big]),
            pads: Some(vec![big, big]),
            ceil_mode: Some(1),
            ..Default::default()
        };
        run(Op::MaxPool(pool), std::slice::from_ref(&x), 2);
        let mut g = Graph::new("g");
        let xv = input(&mut g, "x", x);
        let ends = ints(&mut g, "e", &[i64::MIN]);
        let steps = ints(&mut g, "s", &[i64::MIN]);
        let starts = ints(&mut g, "b", &[big]);
        let (id, _) = node(
            &mut g,
            Op::Slice,
            &[Some(xv), Some(starts), Some(ends), None, Some(steps)],
            1,
        );
        assert!(infer_node(&g, id).is_ok());
        let pads = ints(&mut g, "p", &[0, 0, big, big, 0, big]);
        let (id, _) = node(&mut g, Op::Pad { mode: None }, &[Some(xv), Some(pads)], 1);
        assert!(infer_node(&g, id).is_ok());
        let split = Op::Split {
            axis: Some(-1),
            split: None,
            num_outputs: Some(big),
        };
        let (id, _) = node(&mut g, split, &[Some(xv)], 2);
        assert!(infer_node(&g, id).is_err());
    }

    #[test]
    fn other_ops_infer_nothing() {
        let op = Op::from_onnx("com.x", "Foo", vec![], 1);
        assert_eq!(run(op, &[t(DType::F32, "2")], 2), vec!["-", "-"]);
    }
}
