//! Preparing a graph for fixed-size code: shared weights decoded, runtime inputs
//! specialised to the requested shapes, everything computable from constants and static
//! shapes folded to constants, and every remaining value checked to be static.

use crate::backend::BackendOptions;
use crate::cpu::eval::eval_node;
use cc_ir::types::known_shape;
use cc_ir::{DType, Error, Graph, Op, Result, Tensor, ValueId, ValueType};

/// The graph inputs that take a value from the caller (those without data).
pub fn runtime_inputs(g: &Graph) -> Vec<ValueId> {
    crate::cpu::exec::runtime_inputs(g)
}

/// A copy of `g` ready for code generation (see the module doc).
pub fn prepare(g: &Graph, opts: &BackendOptions) -> Result<Graph> {
    let mut g = match cc_ir::compressed::shared::materialize(g)? {
        Some(m) => m,
        None => g.clone(),
    };
    let inputs = runtime_inputs(&g);
    if !opts.input_shapes.is_empty() {
        if opts.input_shapes.len() != inputs.len() {
            return Err(Error::invalid(format!(
                "{} input shapes given for {} runtime inputs",
                opts.input_shapes.len(),
                inputs.len()
            )));
        }
        for (&v, shape) in inputs.iter().zip(&opts.input_shapes) {
            let val = g.value(v);
            let elem = val.ty.as_ref().and_then(ValueType::elem).ok_or_else(|| {
                Error::invalid(format!("input {}: unknown element type", val.name()))
            })?;
            if let Some(decl) = val.ty.as_ref().and_then(ValueType::shape) {
                let clash = decl.len() != shape.len()
                    || decl
                        .iter()
                        .zip(shape)
                        .any(|(d, &s)| d.known().is_some_and(|k| k != s as i64));
                if clash {
                    return Err(Error::invalid(format!(
                        "input {}: shape {shape:?} does not fit the declared shape",
                        val.name()
                    )));
                }
            }
            g.value_mut(v).ty = Some(ValueType::tensor(elem, known_shape(shape)));
        }
    }
    cc_ir::infer::infer_shapes(&mut g)?;
    while fold_static(&mut g)? > 0 {
        cc_ir::infer::infer_shapes(&mut g)?;
    }
    Ok(g)
}

/// The static shape of `v`, or an error naming it.
pub fn static_shape(g: &Graph, v: ValueId) -> Result<Vec<usize>> {
    let val = g.value(v);
    let dims = val
        .ty
        .as_ref()
        .and_then(ValueType::shape)
        .ok_or_else(|| Error::invalid(format!("value {}: unknown shape", val.name())))?;
    dims.iter()
        .map(|d| {
            d.known()
                .and_then(|k| usize::try_from(k).ok())
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "value {}: dimension {d} is not static (give the input shapes)",
                        val.name()
                    ))
                })
        })
        .collect()
}

/// The element type of `v`, or an error naming it.
pub fn elem_type(g: &Graph, v: ValueId) -> Result<DType> {
    let val = g.value(v);
    val.ty
        .as_ref()
        .and_then(ValueType::elem)
        .ok_or_else(|| Error::invalid(format!("value {}: unknown element type", val.name())))
}

/// Replaces every node whose inputs are all constants (or, for Shape and Size, whose
/// input has a static shape) by constants; returns how many were replaced.
fn fold_static(g: &mut Graph) -> Result<usize> {
    let mut folded = 0;
    for id in g.topo_order()? {
        let node = g.node(id);
        let outs: Vec<Option<ValueId>> = node.outputs().to_vec();
        if outs.iter().flatten().any(|&o| g.is_output(o)) || !node.implicit_inputs().is_empty() {
            continue;
        }
        let result = match &node.op {
            Op::Shape { .. } | Op::Size => {
                let Some(x) = node.input(0) else { continue };
                let Ok(shape) = static_shape(g, x) else {
                    continue;
                };
                let Ok(dtype) = elem_type(g, x) else { continue };
                if dtype == DType::String {
                    continue;
                }
                let probe = Tensor::from_raw(
                    DType::U8,
                    shape.clone(),
                    vec![0u8; shape.iter().product()].into(),
                )?;
                eval_node(&node.op, &[Some(&probe)], Some(outs.len()))?
            }
            Op::Other(_) => None,
            op => {
                let ins: Vec<Option<&Tensor>> = node
                    .inputs()
                    .iter()
                    .map(|i| i.and_then(|v| g.const_data(v)))
                    .collect();
                let all = node
                    .inputs()
                    .iter()
                    .zip(&ins)
                    .all(|(i, t)| i.is_none() || t.is_some());
                if !all {
                    continue;
                }
                eval_node(op, &ins, Some(outs.len()))?
            }
        };
        let Some(tensors) = result else { continue };
        for (o, t) in outs.into_iter().zip(tensors) {
            let Some(o) = o else { continue };
            let name = g.unique_name(&format!("{}.static", g.value(o).name()));
            let c = g.add_const(&name, t)?;
            g.replace_all_uses(o, c);
        }
        g.remove_node(id);
        folded += 1;
    }
    Ok(folded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reshape_graph() -> Graph {
        // y = Reshape(x, Shape(x)[0] · [-1]) : the shape is computable once x is static.
        let mut g = Graph::new("t");
        let x = g
            .add_value(
                "x",
                Some(ValueType::tensor(
                    DType::F32,
                    Some(vec![cc_ir::Dim::Sym("N".into()), cc_ir::Dim::Known(6)]),
                )),
            )
            .unwrap();
        let s = g.add_value("s", None).unwrap();
        let y = g.add_value("y", None).unwrap();
        g.add_node(
            "shape",
            Op::Shape {
                start: None,
                end: None,
            },
            vec![Some(x)],
            vec![Some(s)],
        )
        .unwrap();
        g.add_node(
            "reshape",
            Op::Reshape { allowzero: None },
            vec![Some(x), Some(s)],
            vec![Some(y)],
        )
        .unwrap();
        g.set_inputs(vec![x]);
        g.set_outputs(vec![y]);
        g
    }

    #[test]
    fn specialises_inputs_and_folds_shape_subgraphs() {
        let g = reshape_graph();
        let opts = BackendOptions {
            input_shapes: vec![vec![3, 6]],
            ..Default::default()
        };
        let p = prepare(&g, &opts).unwrap();
        assert_eq!(p.node_count(), 1);
        let y = p.outputs()[0];
        assert_eq!(static_shape(&p, y).unwrap(), vec![3, 6]);
    }

    #[test]
    fn symbolic_dims_without_shapes_are_reported() {
        let g = reshape_graph();
        let p = prepare(&g, &BackendOptions::default()).unwrap();
        let x = p.inputs()[0];
        let e = static_shape(&p, x).unwrap_err().to_string();
        assert!(e.contains("value x") && e.contains("not static"), "{e}");
    }

    #[test]
    fn wrong_input_count_or_shape_is_an_error() {
        let g = reshape_graph();
        let two = BackendOptions {
            input_shapes: vec![vec![1, 6], vec![1]],
            ..Default::default()
        };
        assert!(prepare(&g, &two).is_err());
        let bad = BackendOptions {
            input_shapes: vec![vec![2, 5]],
            ..Default::default()
        };
        let e = prepare(&g, &bad).unwrap_err().to_string();
        assert!(e.contains("input x"), "{e}");
    }
}
