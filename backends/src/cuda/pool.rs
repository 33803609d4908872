//! Pooling: MaxPool / AveragePool over 2-D windows (one thread per output element)
//! and GlobalAveragePool / GlobalMaxPool (one thread per (batch, channel)).

use super::conv::{pads_for, sizes};
use super::shapes::{dims, later_outputs_used};
use super::weights::{Buf, Param, Weights};
use super::Draft;
use cc_ir::op::{GlobalPoolOp, PoolAttrs};
use cc_ir::{Error, Graph, NodeId, Op, Result};

const BLOCK: u32 = 256;

/// Lowers a MaxPool, AveragePool or global pool node.
pub fn lower(g: &Graph, id: NodeId, w: &mut Weights) -> Result<Draft> {
    let node = g.node(id);
    let label = g.node_label(id);
    let x_v = node
        .input(0)
        .ok_or_else(|| Error::invalid(format!("node {label}: input 0 missing")))?;
    let y_v = node
        .output(0)
        .ok_or_else(|| Error::invalid(format!("node {label} has no output")))?;
    if later_outputs_used(g, node) {
        return Err(Error::unsupported(format!(
            "cuda backend: node {label}: the Indices output of MaxPool is not supported"
        )));
    }
    let (xd, yd) = (dims(g, x_v)?, dims(g, y_v)?);
    let x = w.plain_f32(g, x_v, &label)?;
    super::shapes::require_f32(g, y_v, &label)?;
    let params = vec![
        Param {
            name: "y".into(),
            ty: "float*",
            buf: Buf::Value(y_v),
        },
        Param::input("x", x),
    ];
    let (base, body, n) = match &node.op {
        Op::GlobalPool(kind) => {
            let (&b, &c) = (xd.first().unwrap_or(&1), xd.get(1).unwrap_or(&1));
            if xd.len() < 3 {
                return Err(Error::invalid(format!(
                    "node {label}: input rank {}",
                    xd.len()
                )));
            }
            let hw: usize = xd[2..].iter().product();
            let (init, step, fin, base) = match kind {
                GlobalPoolOp::Average => (
                    "0.0f",
                    "acc += x[base + i];",
                    format!("acc / {}", super::shapes::f32_literal(hw as f32)),
                    "globalaveragepool",
                ),
                GlobalPoolOp::Max => (
                    "CC_NEG_INF",
                    "acc = fmaxf(acc, x[base + i]);",
                    "acc".to_string(),
                    "globalmaxpool",
                ),
            };
            let n = b * c;
            (
                base.to_string(),
                format!(
                    "    int o = blockIdx.x * {BLOCK} + threadIdx.x;\n    if (o >= {n}) return;\n    const int base = o * {hw};\n    float acc = {init};\n    for (int i = 0; i < {hw}; ++i) {step}\n    y[o] = {fin};\n"
                ),
                n,
            )
        }
        Op::MaxPool(a) => window(&xd, &yd, a, true, &label)?,
        Op::AveragePool(a) => window(&xd, &yd, a, false, &label)?,
        other => {
            return Err(Error::unsupported(format!(
                "cuda backend: node {label}: {} is not a pool",
                other.onnx_type().1
            )))
        }
    };
    Ok(Draft::one_node(&base, label, params, body, n, BLOCK, y_v))
}

fn window(
    xd: &[usize],
    yd: &[usize],
    a: &PoolAttrs,
    max: bool,
    label: &str,
) -> Result<(String, String, usize)> {
    let (&[b, c, h, wi], &[yb, yc, oh, ow]) = (xd, yd) else {
        return Err(Error::unsupported(format!(
            "cuda backend: node {label}: only 2-D pooling is supported (input {xd:?})"
        )));
    };
    if yb != b || yc != c {
        return Err(Error::invalid(format!(
            "node {label}: output {yd:?} does not fit input {xd:?}"
        )));
    }
    let k = sizes(a.kernel_shape.as_deref(), 2, 0, "kernel_shape")?;
    if k.contains(&0) {
        return Err(Error::invalid(format!(
            "node {label}: kernel_shape missing"
        )));
    }
    let s = sizes(a.strides.as_deref(), 2, 1, "stride")?;
    let d = sizes(a.dilations.as_deref(), 2, 1, "dilation")?;
    let auto = a.auto_pad.as_deref();
    let (pt, pb) = pads_for(auto, a.pads.as_deref(), 0, 2, (h, oh, k[0], s[0], d[0]))?;
    let (pl, pr) = pads_for(auto, a.pads.as_deref(), 1, 2, (wi, ow, k[1], s[1], d[1]))?;
    let n = b * c * oh * ow;
    let head = format!(
        "    int o = blockIdx.x * {BLOCK} + threadIdx.x;\n    if (o >= {n}) return;\n    const int px = o % {ow}, py = (o / {ow}) % {oh}, bc = o / {ohw};\n    const float* xp = x + bc * {hw};\n",
        ohw = oh * ow,
        hw = h * wi
    );
    let loops = format!(
        "    for (int r = 0; r < {kh}; ++r) {{\n        const int iy = py * {sh} - {pt} + r * {dh};\n        for (int q = 0; q < {kw}; ++q) {{\n            const int ix = px * {sw} - {pl} + q * {dw};\n",
        kh = k[0],
        kw = k[1],
        sh = s[0],
        sw = s[1],
        dh = d[0],
        dw = d[1],
    );
    let inside = format!("iy >= 0 && iy < {h} && ix >= 0 && ix < {wi}");
    let body = if max {
        format!(
            "{head}    float acc = CC_NEG_INF;\n{loops}            if ({inside}) acc = fmaxf(acc, xp[iy * {wi} + ix]);\n        }}\n    }}\n    y[o] = acc;\n"
        )
    } else {
        // count_include_pad counts window positions inside the padded input.
        let count = if a.count_include_pad.unwrap_or(0) != 0 {
            format!(
                "            if (iy >= -{pt} && iy < {} && ix >= -{pl} && ix < {}) cnt += 1.0f;\n",
                h + pb,
                wi + pr
            )
        } else {
            "            if (inside) cnt += 1.0f;\n".to_string()
        };
        format!(
            "{head}    float acc = 0.0f, cnt = 0.0f;\n{loops}            const bool inside = {inside};\n            if (inside) acc += xp[iy * {wi} + ix];\n{count}        }}\n    }}\n    y[o] = cnt > 0.0f ? acc / cnt : 0.0f;\n"
        )
    };
    let base = if max { "maxpool" } else { "averagepool" };
    Ok((base.to_string(), body, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_pool_window_code() {
        let a = PoolAttrs {
            kernel_shape: Some(vec![3, 3]),
            strides: Some(vec![2, 2]),
            pads: Some(vec![1, 1, 1, 1]),
            ..Default::default()
        };
        let (base, body, n) = window(&[1, 2, 8, 8], &[1, 2, 4, 4], &a, true, "mp").unwrap();
        assert_eq!((base.as_str(), n), ("maxpool", 32));
        assert!(
            body.contains("const int iy = py * 2 - 1 + r * 1;"),
            "{body}"
        );
        assert!(body.contains("acc = fmaxf(acc, xp[iy * 8 + ix]);"));
        assert_eq!(body.matches('{').count(), body.matches('}').count());
        let (_, avg, _) = window(&[1, 2, 8, 8], &[1, 2, 4, 4], &a, false, "ap").unwrap();
        assert!(avg.contains("if (inside) cnt += 1.0f;"));
        assert!(window(&[1, 2, 8], &[1, 2, 4], &a, true, "mp").is_err());
    }
}
