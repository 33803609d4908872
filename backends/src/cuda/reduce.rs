//! ReduceMean / ReduceSum / ReduceMax / ReduceMin over constant axes: one thread per
//! output element, looping over the reduced elements.

use super::shapes::{dims, f32_literal, require_f32, strides};
use super::weights::{Buf, Param, Weights};
use super::Draft;
use cc_ir::op::ReduceOp;
use cc_ir::{Error, Graph, NodeId, Op, Result};

const BLOCK: u32 = 256;

/// The reduced axes of a Reduce node (attribute or constant input 1), sorted.
fn axes(g: &Graph, id: NodeId, rank: usize, label: &str) -> Result<Vec<usize>> {
    let node = g.node(id);
    let Op::Reduce {
        axes,
        noop_with_empty_axes,
        ..
    } = &node.op
    else {
        return Err(Error::invalid(format!("node {label} is not a Reduce")));
    };
    let listed: Vec<i64> = match (axes, node.input(1)) {
        (Some(a), _) => a.clone(),
        (None, Some(v)) => g
            .const_data(v)
            .ok_or_else(|| {
                Error::unsupported(format!(
                    "cuda backend: node {label}: reduction axes are not a constant"
                ))
            })?
            .to_i64_lossless()?,
        (None, None) => Vec::new(),
    };
    if listed.is_empty() {
        return Ok(if noop_with_empty_axes.unwrap_or(0) != 0 {
            Vec::new()
        } else {
            (0..rank).collect()
        });
    }
    let mut out = listed
        .iter()
        .map(|&a| {
            let a = if a < 0 { a + rank as i64 } else { a };
            usize::try_from(a)
                .ok()
                .filter(|&a| a < rank)
                .ok_or_else(|| Error::invalid(format!("node {label}: axis {a} out of range")))
        })
        .collect::<Result<Vec<_>>>()?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Lowers a Reduce node (Mean, Sum, Max, Min).
pub fn lower(g: &Graph, id: NodeId, w: &mut Weights) -> Result<Draft> {
    let node = g.node(id);
    let label = g.node_label(id);
    let Op::Reduce { op, .. } = &node.op else {
        return Err(Error::invalid(format!("node {label} is not a Reduce")));
    };
    let (x_v, y_v) = match (node.input(0), node.output(0)) {
        (Some(x), Some(y)) => (x, y),
        _ => {
            return Err(Error::invalid(format!(
                "node {label}: missing input or output"
            )))
        }
    };
    require_f32(g, y_v, &label)?;
    let xd = dims(g, x_v)?;
    let n: usize = dims(g, y_v)?.iter().product();
    let red = axes(g, id, xd.len(), &label)?;
    let xs = strides(&xd);
    let kept: Vec<usize> = (0..xd.len()).filter(|a| !red.contains(a)).collect();
    let kept_dims: Vec<usize> = kept.iter().map(|&a| xd[a]).collect();
    let red_dims: Vec<usize> = red.iter().map(|&a| xd[a]).collect();
    let count: usize = red_dims.iter().product();
    if count * kept_dims.iter().product::<usize>() != xd.iter().product::<usize>() || count == 0 {
        return Err(Error::unsupported(format!(
            "cuda backend: node {label}: empty reduction"
        )));
    }
    let index = |var: &str, axes: &[usize], ds: &[usize]| -> String {
        let st = strides(ds);
        let terms: Vec<String> = axes
            .iter()
            .zip(ds)
            .zip(&st)
            .filter(|((_, &d), _)| d > 1)
            .map(|((&a, &d), &s)| format!("(({var} / {s}) % {d}) * {}", xs[a]))
            .collect();
        if terms.is_empty() {
            "0".into()
        } else {
            terms.join(" + ")
        }
    };
    let (init, step, fin, base) = match op {
        ReduceOp::Mean => (
            "0.0f",
            "acc += x[off];",
            format!("acc / {}", f32_literal(count as f32)),
            "reducemean",
        ),
        ReduceOp::Sum => ("0.0f", "acc += x[off];", "acc".into(), "reducesum"),
        ReduceOp::Max => (
            "CC_NEG_INF",
            "acc = fmaxf(acc, x[off]);",
            "acc".into(),
            "reducemax",
        ),
        ReduceOp::Min => (
            "-CC_NEG_INF",
            "acc = fminf(acc, x[off]);",
            "acc".into(),
            "reducemin",
        ),
        other => {
            return Err(Error::unsupported(format!(
                "cuda backend: node {label}: Reduce{other:?} is not supported"
            )))
        }
    };
    let body = format!(
        "    int o = blockIdx.x * {BLOCK} + threadIdx.x;\n    if (o >= {n}) return;\n    const int base = {};\n    float acc = {init};\n    for (int r = 0; r < {count}; ++r) {{\n        const int off = base + {};\n        {step}\n    }}\n    y[o] = {fin};\n",
        index("o", &kept, &kept_dims),
        index("r", &red, &red_dims),
    );
    let params = vec![
        Param {
            name: "y".into(),
            ty: "float*",
            buf: Buf::Value(y_v),
        },
        Param::input("x", w.plain_f32(g, x_v, &label)?),
    ];
    Ok(Draft::one_node(base, label, params, body, n, BLOCK, y_v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_ir::types::known_shape;
    use cc_ir::{DType, ValueType};

    #[test]
    fn reduce_mean_over_inner_axes() {
        let mut g = Graph::new("t");
        let ty = ValueType::tensor(DType::F32, known_shape(&[2, 3, 4, 5]));
        let x = g.add_value("x", Some(ty)).unwrap();
        let y = g.add_value("y", None).unwrap();
        let op = Op::Reduce {
            op: ReduceOp::Mean,
            axes: Some(vec![-1, 2]),
            keepdims: Some(1),
            noop_with_empty_axes: None,
        };
        let id = g.add_node("rm", op, vec![Some(x)], vec![Some(y)]).unwrap();
        g.set_inputs(vec![x]);
        g.set_outputs(vec![y]);
        cc_ir::infer::infer_shapes(&mut g).unwrap();
        let d = lower(&g, id, &mut Weights::new()).unwrap();
        assert!(
            d.body
                .contains("const int base = ((o / 3) % 2) * 60 + ((o / 1) % 3) * 20;"),
            "{}",
            d.body
        );
        assert!(
            d.body
                .contains("const int off = base + ((r / 5) % 4) * 5 + ((r / 1) % 5) * 1;"),
            "{}",
            d.body
        );
        assert!(d.body.contains("y[o] = acc / 20.0f;"));
        assert_eq!(d.grid, [1, 1, 1]);
    }
}
