//! Row-wise ops: Softmax along one axis and LayerNormalization over the trailing axes,
//! one thread per row (rows are short in the models at hand).

use super::shapes::{axis_of, broadcast_index, dims, f32_literal, later_outputs_used, require_f32};
use super::weights::{Buf, Param, Weights};
use super::Draft;
use cc_ir::{Error, Graph, NodeId, Op, Result};

const BLOCK: u32 = 128;

/// Lowers a Softmax or LayerNormalization node.
pub fn lower(g: &Graph, id: NodeId, w: &mut Weights) -> Result<Draft> {
    let node = g.node(id);
    let label = g.node_label(id);
    let (x_v, y_v) = match (node.input(0), node.output(0)) {
        (Some(x), Some(y)) => (x, y),
        _ => {
            return Err(Error::invalid(format!(
                "node {label}: missing input or output"
            )))
        }
    };
    if later_outputs_used(g, node) {
        return Err(Error::unsupported(format!(
            "cuda backend: node {label}: only the first output is supported"
        )));
    }
    require_f32(g, y_v, &label)?;
    let xd = dims(g, x_v)?;
    let mut params = vec![
        Param {
            name: "y".into(),
            ty: "float*",
            buf: Buf::Value(y_v),
        },
        Param::input("x", w.plain_f32(g, x_v, &label)?),
    ];
    let (base, rows, body) = match &node.op {
        Op::Softmax { axis } => {
            let a = axis_of(axis.unwrap_or(-1), xd.len(), &label)?;
            let outer: usize = xd[..a].iter().product();
            let len = xd[a];
            let inner: usize = xd[a + 1..].iter().product();
            let rows = outer * inner;
            let body = format!(
                "    const int t = blockIdx.x * {BLOCK} + threadIdx.x;\n    if (t >= {rows}) return;\n    const int base = (t / {inner}) * {} + t % {inner};\n    float mx = CC_NEG_INF;\n    for (int j = 0; j < {len}; ++j) mx = fmaxf(mx, x[base + j * {inner}]);\n    float sum = 0.0f;\n    for (int j = 0; j < {len}; ++j) sum += expf(x[base + j * {inner}] - mx);\n    const float inv = 1.0f / sum;\n    for (int j = 0; j < {len}; ++j) y[base + j * {inner}] = expf(x[base + j * {inner}] - mx) * inv;\n",
                len * inner
            );
            ("softmax", rows, body)
        }
        Op::LayerNormalization { axis, epsilon, .. } => {
            let a = axis_of(axis.unwrap_or(-1), xd.len(), &label)?;
            let rows: usize = xd[..a].iter().product();
            let norm = &xd[a..];
            let len: usize = norm.iter().product();
            let s_v = node
                .input(1)
                .ok_or_else(|| Error::invalid(format!("node {label}: no scale")))?;
            params.push(Param::input("sc", w.plain_f32(g, s_v, &label)?));
            let si = broadcast_index("j", norm, &dims(g, s_v)?)?;
            let bias = match node.input(2) {
                Some(b_v) => {
                    params.push(Param::input("bi", w.plain_f32(g, b_v, &label)?));
                    format!(" + bi[{}]", broadcast_index("j", norm, &dims(g, b_v)?)?)
                }
                None => String::new(),
            };
            let eps = f32_literal(epsilon.unwrap_or(1e-5));
            let body = format!(
                "    const int t = blockIdx.x * {BLOCK} + threadIdx.x;\n    if (t >= {rows}) return;\n    const float* xr = x + t * {len};\n    float* yr = y + t * {len};\n    float mean = 0.0f;\n    for (int j = 0; j < {len}; ++j) mean += xr[j];\n    mean /= {lenf};\n    float var = 0.0f;\n    for (int j = 0; j < {len}; ++j) {{ const float d = xr[j] - mean; var += d * d; }}\n    const float inv = 1.0f / sqrtf(var / {lenf} + {eps});\n    for (int j = 0; j < {len}; ++j) yr[j] = (xr[j] - mean) * inv * sc[{si}]{bias};\n",
                lenf = f32_literal(len as f32)
            );
            ("layernormalization", rows, body)
        }
        other => {
            return Err(Error::unsupported(format!(
                "cuda backend: node {label}: {} is not a row op",
                other.onnx_type().1
            )))
        }
    };
    Ok(Draft::one_node(base, label, params, body, rows, BLOCK, y_v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_ir::types::known_shape;
    use cc_ir::{DType, ValueType};

    #[test]
    fn softmax_rows_run_along_the_axis() {
        let mut g = Graph::new("t");
        let ty = ValueType::tensor(DType::F32, known_shape(&[2, 5, 3]));
        let x = g.add_value("x", Some(ty)).unwrap();
        let y = g.add_value("y", None).unwrap();
        let id = g
            .add_node(
                "sm",
                Op::Softmax { axis: Some(1) },
                vec![Some(x)],
                vec![Some(y)],
            )
            .unwrap();
        g.set_inputs(vec![x]);
        g.set_outputs(vec![y]);
        cc_ir::infer::infer_shapes(&mut g).unwrap();
        let d = lower(&g, id, &mut Weights::new()).unwrap();
        assert!(d.body.contains("if (t >= 6) return;"), "{}", d.body);
        assert!(
            d.body.contains("const int base = (t / 3) * 15 + t % 3;"),
            "{}",
            d.body
        );
        assert!(d.body.contains("x[base + j * 3]"));
    }
}
