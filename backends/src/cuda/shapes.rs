//! Static shapes for code generation: every value a kernel touches must have a known
//! shape (bind the inputs with [`bind_input_shapes`] first), and index arithmetic is
//! emitted with the sizes baked in as literals.

use cc_ir::types::known_shape;
use cc_ir::{DType, Dim, Error, Graph, Result, Tensor, ValueId, ValueType};

/// Largest element count a kernel indexes (indices are 32-bit `int`).
pub const MAX_ELEMS: usize = i32::MAX as usize;

/// The known dimensions of value `v`; a symbolic or unknown dimension is an error
/// naming the value (bind the inputs' shapes first).
pub fn dims(g: &Graph, v: ValueId) -> Result<Vec<usize>> {
    let val = g.value(v);
    let shape = val.ty.as_ref().and_then(ValueType::shape).ok_or_else(|| {
        Error::unsupported(format!(
            "cuda backend: value {:?} has no known shape (static shapes are required)",
            val.name()
        ))
    })?;
    let mut out = Vec::with_capacity(shape.len());
    for d in shape {
        match d {
            Dim::Known(k) => out.push(usize::try_from(*k).map_err(|_| {
                Error::invalid(format!("value {:?}: negative dimension {k}", val.name()))
            })?),
            other => {
                return Err(Error::unsupported(format!(
                    "cuda backend: value {:?} has the symbolic dimension {other} (static \
                     shapes are required: bind the input shapes first)",
                    val.name()
                )))
            }
        }
    }
    let n = cc_ir::tensor::shape_count(&out)?;
    if n > MAX_ELEMS {
        return Err(Error::unsupported(format!(
            "cuda backend: value {:?} has {n} elements (at most {MAX_ELEMS})",
            val.name()
        )));
    }
    Ok(out)
}

/// Requires value `v` to be float32 (the element type every generated kernel uses).
pub fn require_f32(g: &Graph, v: ValueId, node: &str) -> Result<()> {
    let elem = g.value(v).ty.as_ref().and_then(ValueType::elem);
    if elem == Some(DType::F32) {
        Ok(())
    } else {
        Err(Error::unsupported(format!(
            "cuda backend: node {node}: value {:?} is {} (only float32 tensors are supported)",
            g.value(v).name(),
            elem.map_or("of unknown type".to_string(), |e| e.to_string())
        )))
    }
}

/// A copy of `g` whose inputs have the given concrete shapes (one per graph input, in
/// order), with shapes inferred again so that symbolic dimensions become known.
pub fn bind_input_shapes(g: &Graph, shapes: &[Vec<usize>]) -> Result<Graph> {
    if shapes.len() != g.inputs().len() {
        return Err(Error::invalid(format!(
            "{} input shapes given for {} graph inputs",
            shapes.len(),
            g.inputs().len()
        )));
    }
    let mut out = g.clone();
    for (&v, shape) in g.inputs().iter().zip(shapes) {
        let val = g.value(v);
        let elem = val.ty.as_ref().and_then(ValueType::elem);
        if let Some(declared) = val.ty.as_ref().and_then(ValueType::shape) {
            let fits = declared.len() == shape.len()
                && declared
                    .iter()
                    .zip(shape)
                    .all(|(d, &s)| d.known().is_none_or(|k| k == s as i64));
            if !fits {
                return Err(Error::invalid(format!(
                    "input {:?}: shape {shape:?} does not fit the declared {}",
                    val.name(),
                    val.ty.as_ref().map_or(String::new(), ToString::to_string)
                )));
            }
        }
        out.value_mut(v).ty = Some(ValueType::Tensor {
            elem,
            shape: known_shape(shape),
        });
    }
    cc_ir::infer::infer_shapes(&mut out)?;
    Ok(out)
}

/// The input shapes of `g` with every symbolic or unknown dimension set to `batch`.
pub fn input_shapes_with(g: &Graph, batch: usize) -> Result<Vec<Vec<usize>>> {
    g.inputs()
        .iter()
        .map(|&v| {
            let val = g.value(v);
            let shape = val.ty.as_ref().and_then(ValueType::shape).ok_or_else(|| {
                Error::unsupported(format!("input {:?} has no known rank", val.name()))
            })?;
            Ok(shape
                .iter()
                .map(|d| {
                    d.known()
                        .and_then(|k| usize::try_from(k).ok())
                        .unwrap_or(batch)
                })
                .collect())
        })
        .collect()
}

/// Axis `a` of a rank-`rank` tensor (negative counts from the end), or an error naming
/// the node.
pub fn axis_of(a: i64, rank: usize, label: &str) -> Result<usize> {
    let r = rank as i64;
    let a = if a < 0 { a + r } else { a };
    usize::try_from(a)
        .ok()
        .filter(|&a| a < rank)
        .ok_or_else(|| Error::invalid(format!("node {label}: axis {a} out of range")))
}

/// True when an output of `node` other than the first is read or is a graph output
/// (the kernels compute only the first).
pub fn later_outputs_used(g: &Graph, node: &cc_ir::Node) -> bool {
    node.outputs()
        .iter()
        .skip(1)
        .flatten()
        .any(|&v| !g.value(v).uses().is_empty() || g.is_output(v))
}

/// Row-major strides of `dims`.
pub fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// A C expression for the flat index into a tensor of shape `input` that
/// multidirectional broadcasting maps to flat index `idx` of the output shape `out`
/// (`input` right-aligned against `out`, size-1 dimensions broadcast).
pub fn broadcast_index(idx: &str, out: &[usize], input: &[usize]) -> Result<String> {
    if input == out {
        return Ok(idx.to_string());
    }
    let n: usize = input.iter().product();
    if n == 1 {
        return Ok("0".to_string());
    }
    if input.len() > out.len() {
        return Err(Error::invalid(format!(
            "shape {input:?} does not broadcast to {out:?}"
        )));
    }
    let lead = out.len() - input.len();
    let os = strides(out);
    let is = strides(input);
    let mut terms = Vec::new();
    for (i, (&d, &st)) in input.iter().zip(&is).enumerate() {
        let od = out[lead + i];
        if d == 1 {
            continue;
        }
        if d != od {
            return Err(Error::invalid(format!(
                "shape {input:?} does not broadcast to {out:?}"
            )));
        }
        let ostride = os[lead + i];
        let mut t = if ostride == 1 {
            idx.to_string()
        } else {
            format!("{idx} / {ostride}")
        };
        if lead + i > 0 {
            t = format!("({t}) % {od}");
        }
        if st != 1 {
            t = format!("({t}) * {st}");
        }
        terms.push(t);
    }
    Ok(if terms.is_empty() {
        "0".to_string()
    } else {
        terms.join(" + ")
    })
}

/// An f32 literal that reproduces `x` exactly (`__int_as_float((int)bits)` with the value in
/// a comment), or a plain literal for simple values.
pub fn f32_literal(x: f32) -> String {
    if x.is_finite() && x == x.trunc() && x.abs() < 1e7 {
        format!("{x:.1}f")
    } else {
        format!("__int_as_float((int)0x{:08x}u) /* {x:e} */", x.to_bits())
    }
}

/// The single f32 value of a constant scalar (one element) tensor, if `v` is one.
pub fn const_scalar(g: &Graph, v: ValueId) -> Option<f32> {
    let t: &Tensor = g.const_data(v)?;
    if t.len() != 1 || t.dtype() != DType::F32 {
        return None;
    }
    t.f32_view().ok()?.first().copied()
}

/// Text safe inside a C block comment (no `*/`, no line breaks).
pub fn comment_safe(s: &str) -> String {
    s.replace("*/", "* /")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_index_maps_each_dimension() {
        assert_eq!(broadcast_index("o", &[2, 3], &[2, 3]).unwrap(), "o");
        assert_eq!(broadcast_index("o", &[2, 3], &[1]).unwrap(), "0");
        assert_eq!(broadcast_index("o", &[2, 3], &[3]).unwrap(), "(o) % 3");
        assert_eq!(
            broadcast_index("o", &[1, 4, 5, 5], &[4, 1, 1]).unwrap(),
            "(o / 25) % 4"
        );
        assert_eq!(broadcast_index("o", &[2, 3], &[2, 1]).unwrap(), "o / 3");
        assert!(broadcast_index("o", &[2, 3], &[4]).is_err());
        assert_eq!(
            broadcast_index("o", &[2, 3, 4], &[3, 1]).unwrap(),
            "(o / 4) % 3"
        );
        assert_eq!(
            broadcast_index("o", &[2, 3, 4], &[2, 1, 4]).unwrap(),
            "(o / 12) * 4 + (o) % 4"
        );
    }

    #[test]
    fn strides_are_row_major() {
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(strides(&[]), Vec::<usize>::new());
    }

    #[test]
    fn literals_are_exact() {
        assert_eq!(f32_literal(2.0), "2.0f");
        assert!(f32_literal(-0.5).starts_with("__int_as_float((int)0xbf000000u)"));
        assert!(f32_literal(0.1).starts_with("__int_as_float((int)0x3dcccccdu)"));
        assert_eq!(comment_safe("a*/b\nc"), "a* /b c");
    }

    #[test]
    fn binding_input_shapes_makes_symbolic_dims_known() {
        let mut g = Graph::new("g");
        let x = g
            .add_value(
                "x",
                Some(ValueType::tensor(
                    DType::F32,
                    Some(vec![Dim::Sym("N".into()), Dim::Known(3)]),
                )),
            )
            .unwrap();
        let y = g.add_value("y", None).unwrap();
        g.add_node(
            "relu",
            cc_ir::Op::Unary(cc_ir::op::UnaryOp::Relu),
            vec![Some(x)],
            vec![Some(y)],
        )
        .unwrap();
        g.set_inputs(vec![x]);
        g.set_outputs(vec![y]);
        cc_ir::infer::infer_shapes(&mut g).unwrap();
        assert!(dims(&g, y).unwrap_err().to_string().contains("symbolic"));
        assert_eq!(input_shapes_with(&g, 2).unwrap(), vec![vec![2, 3]]);
        let b = bind_input_shapes(&g, &[vec![2, 3]]).unwrap();
        assert_eq!(dims(&b, y).unwrap(), vec![2, 3]);
        assert!(bind_input_shapes(&g, &[vec![2, 4]]).is_err());
        assert!(bind_input_shapes(&g, &[]).is_err());
    }
}
