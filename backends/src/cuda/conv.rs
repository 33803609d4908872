//! 2-D Conv as an implicit GEMM: per group (grid z), `M` = output channels of the
//! group, `N` = batch x output pixels, `K` = input channels of the group x kernel
//! window. A is the weight (dequantized on load when quantized), B gathers input
//! pixels on the fly (zero outside the padding); the store adds the bias and runs the
//! fused elementwise epilogue.

use super::gemm::{epilogue, GemmSpec, THREADS};
use super::shapes::dims;
use super::weights::{Buf, Param, Weights};
use super::Draft;
use cc_ir::op::ConvAttrs;
use cc_ir::{Error, Graph, NodeId, Op, Result};

/// Threads per block of the direct depthwise kernel.
const DW_BLOCK: u32 = 128;

/// Begin/end padding of spatial axis `i` for input size `input`, output size `out`,
/// kernel `k`, stride `s`, dilation `d`, as `auto_pad` and `pads` define.
pub fn pads_for(
    auto_pad: Option<&str>,
    pads: Option<&[i64]>,
    i: usize,
    rank: usize,
    (input, out, k, s, d): (usize, usize, usize, usize, usize),
) -> Result<(usize, usize)> {
    match auto_pad.unwrap_or("NOTSET") {
        "NOTSET" => {
            let get = |j: usize| -> Result<usize> {
                let p = pads.and_then(|p| p.get(j)).copied().unwrap_or(0);
                usize::try_from(p).map_err(|_| Error::invalid(format!("negative pad {p}")))
            };
            Ok((get(i)?, get(i + rank)?))
        }
        "VALID" => Ok((0, 0)),
        mode @ ("SAME_UPPER" | "SAME_LOWER") => {
            let need =
                (out.saturating_sub(1) * s + (k.saturating_sub(1)) * d + 1).saturating_sub(input);
            let small = need / 2;
            Ok(if mode == "SAME_UPPER" {
                (small, need - small)
            } else {
                (need - small, small)
            })
        }
        other => Err(Error::invalid(format!("auto_pad {other:?}"))),
    }
}

/// Attribute list `v` (or `n` copies of `default`) as sizes.
pub fn sizes(v: Option<&[i64]>, n: usize, default: usize, what: &str) -> Result<Vec<usize>> {
    match v {
        None => Ok(vec![default; n]),
        Some(v) if v.len() == n => v
            .iter()
            .map(|&x| {
                usize::try_from(x)
                    .ok()
                    .filter(|&x| x > 0)
                    .ok_or_else(|| Error::invalid(format!("{what} {x} is not positive")))
            })
            .collect(),
        Some(v) => Err(Error::invalid(format!(
            "{what} has {} entries, expected {n}",
            v.len()
        ))),
    }
}

/// Lowers a Conv node and the elementwise `chain` fused after it.
pub fn lower(g: &Graph, id: NodeId, chain: &[NodeId], w: &mut Weights) -> Result<Draft> {
    let node = g.node(id);
    let label = g.node_label(id);
    let Op::Conv(attrs) = &node.op else {
        return Err(Error::invalid(format!("node {label} is not a Conv")));
    };
    let input = |slot: usize| {
        node.input(slot)
            .ok_or_else(|| Error::invalid(format!("node {label}: input {slot} missing")))
    };
    let (x_v, w_v) = (input(0)?, input(1)?);
    let y_v = node
        .output(0)
        .ok_or_else(|| Error::invalid(format!("node {label} has no output")))?;
    let (xd, wd, yd) = (dims(g, x_v)?, dims(g, w_v)?, dims(g, y_v)?);
    let geo = Geometry::new(attrs, &xd, &wd, &yd)
        .map_err(|e| Error::unsupported(format!("cuda backend: node {label}: {e}")))?;
    let x = w.plain_f32(g, x_v, &label)?;
    let wt = w.operand(g, w_v, &label)?;
    let mut params = vec![
        Param {
            name: "y".into(),
            ty: "float*",
            buf: Buf::Value(y_v),
        },
        Param::input("x", x),
    ];
    params.extend(wt.params("w"));
    let bias = match node.input(2) {
        Some(b) => {
            params.push(Param::input("bias", w.plain_f32(g, b, &label)?));
            "    v += bias[z * {MG} + m];\n".replace("{MG}", &geo.mg.to_string())
        }
        None => String::new(),
    };
    let Geometry {
        batch,
        c,
        h,
        wi,
        m,
        mg,
        cg,
        kh,
        kw,
        oh,
        ow,
        stride,
        dil,
        pad,
        groups,
    } = geo;
    let kk = cg * kh * kw;
    let ohw = oh * ow;
    let load_a = format!(
        "    v = {};\n",
        wt.load("w", "$K_w", &format!("(z * {mg} + m) * {kk} + k"))
    );
    let load_b = format!(
        "    const int ci = k / {khw}, rs = k - ci * {khw}, r = rs / {kw}, s = rs - r * {kw};\n    const int bn = n / {ohw}, p = n - bn * {ohw}, py = p / {ow}, px = p - py * {ow};\n    const int iy = py * {sh} - {ph} + r * {dh}, ix = px * {sw} - {pw} + s * {dw};\n    if (iy >= 0 && iy < {h} && ix >= 0 && ix < {wi}) v = x[((bn * {c} + z * {cg} + ci) * {h} + iy) * {wi} + ix];\n",
        khw = kh * kw,
        sh = stride.0,
        sw = stride.1,
        ph = pad.0,
        pw = pad.1,
        dh = dil.0,
        dw = dil.1,
    );
    let (code, last) = epilogue(g, id, chain, w, &mut params)?;
    if let Some(p) = params.first_mut() {
        p.buf = Buf::Value(last);
    }
    let (body, grid, block) = if cg == 1 && mg == 1 {
        // Depthwise: one thread per output element, the window summed directly (a
        // GEMM tile would use one row of 64).
        let total = batch * m * ohw;
        let bias = bias.replace("z * 1 + m", "ch");
        let body = format!(
            "    const int o = blockIdx.x * {DW_BLOCK} + threadIdx.x;\n    if (o >= {total}) return;\n    const int px = o % {ow}, py = (o / {ow}) % {oh}, ch = (o / {ohw}) % {m}, bn = o / {};\n    const float* xp = x + (bn * {c} + ch) * {};\n    float v = 0.0f;\n    for (int r = 0; r < {kh}; ++r) {{\n        const int iy = py * {sh} - {ph} + r * {dh};\n        if (iy < 0 || iy >= {h}) continue;\n        for (int s = 0; s < {kw}; ++s) {{\n            const int ix = px * {sw} - {pw} + s * {dw};\n            if (ix < 0 || ix >= {wi}) continue;\n            v = fmaf(xp[iy * {wi} + ix], {}, v);\n        }}\n    }}\n{bias}{code}    y[o] = v;\n",
            m * ohw,
            h * wi,
            wt.load("w", "$K_w", &format!("(ch * {kh} + r) * {kw} + s")),
            sh = stride.0,
            sw = stride.1,
            ph = pad.0,
            pw = pad.1,
            dh = dil.0,
            dw = dil.1,
        );
        let blocks = u32::try_from(total.div_ceil(DW_BLOCK as usize)).map_err(|_| {
            Error::unsupported(format!("cuda backend: node {label}: grid too large"))
        })?;
        (body, [blocks, 1, 1], DW_BLOCK)
    } else {
        let store = format!(
            "    const int bn = n / {ohw}, p = n - bn * {ohw};\n    const int o = (bn * {m} + z * {mg} + m) * {ohw} + p;\n{bias}{code}    y[o] = v;\n"
        );
        let spec = GemmSpec {
            m: mg,
            n: batch * ohw,
            k: kk,
            batch: groups,
            load_a,
            a_k_contig: true,
            load_b,
            b_k_contig: false,
            store,
        };
        let (body, grid) = spec.body()?;
        (body, grid, THREADS)
    };
    let mut nodes = vec![label];
    nodes.extend(chain.iter().map(|&c| g.node_label(c)));
    let mut base = String::from(if block == DW_BLOCK && cg == 1 && mg == 1 {
        "dwconv"
    } else {
        "conv"
    });
    if wt.is_quantized() {
        base.push_str("_dq");
    }
    for &c in chain {
        base.push('_');
        base.push_str(&g.node(c).op.onnx_type().1.to_ascii_lowercase());
    }
    Ok(Draft {
        base,
        nodes,
        params,
        helpers: wt.helper("$K_w"),
        body,
        grid,
        block,
        output: last,
    })
}

/// The sizes of a 2-D convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    batch: usize,
    c: usize,
    h: usize,
    wi: usize,
    m: usize,
    mg: usize,
    cg: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    stride: (usize, usize),
    dil: (usize, usize),
    pad: (usize, usize),
    groups: usize,
}

impl Geometry {
    fn new(a: &ConvAttrs, xd: &[usize], wd: &[usize], yd: &[usize]) -> Result<Geometry> {
        let (&[batch, c, h, wi], &[m, cg, kh, kw], &[yb, ym, oh, ow]) = (xd, wd, yd) else {
            return Err(Error::unsupported(format!(
                "only 2-D convolution is supported (input {xd:?}, weight {wd:?})"
            )));
        };
        let groups = usize::try_from(a.group())
            .ok()
            .filter(|&g| g > 0)
            .ok_or_else(|| Error::invalid(format!("group {}", a.group())))?;
        if c != cg * groups || m % groups != 0 || yb != batch || ym != m {
            return Err(Error::invalid(format!(
                "shapes do not agree: input {xd:?}, weight {wd:?}, group {groups}, output {yd:?}"
            )));
        }
        let stride = sizes(a.strides.as_deref(), 2, 1, "stride")?;
        let dil = sizes(a.dilations.as_deref(), 2, 1, "dilation")?;
        let auto = a.auto_pad.as_deref();
        let ph = pads_for(
            auto,
            a.pads.as_deref(),
            0,
            2,
            (h, oh, kh, stride[0], dil[0]),
        )?;
        let pw = pads_for(
            auto,
            a.pads.as_deref(),
            1,
            2,
            (wi, ow, kw, stride[1], dil[1]),
        )?;
        Ok(Geometry {
            batch,
            c,
            h,
            wi,
            m,
            mg: m / groups,
            cg,
            kh,
            kw,
            oh,
            ow,
            stride: (stride[0], stride[1]),
            dil: (dil[0], dil[1]),
            pad: (ph.0, pw.0),
            groups,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_splits_the_excess() {
        // Input 7, kernel 3, stride 2 -> output 4 needs 2 padded elements in all.
        let p = pads_for(Some("SAME_UPPER"), None, 0, 2, (7, 4, 3, 2, 1)).unwrap();
        assert_eq!(p, (1, 1));
        let p = pads_for(Some("SAME_LOWER"), None, 0, 2, (8, 4, 4, 2, 1)).unwrap();
        assert_eq!(p, (1, 1));
        let p = pads_for(Some("SAME_LOWER"), None, 0, 2, (8, 4, 3, 2, 1)).unwrap();
        assert_eq!(p, (1, 0));
        let p = pads_for(None, Some(&[1, 2, 3, 4]), 1, 2, (8, 4, 3, 2, 1)).unwrap();
        assert_eq!(p, (2, 4));
        assert!(pads_for(None, Some(&[-1, 0, 0, 0]), 0, 2, (8, 4, 3, 2, 1)).is_err());
    }

    #[test]
    fn geometry_checks_groups_and_rank() {
        let a = ConvAttrs {
            group: Some(2),
            pads: Some(vec![1, 1, 1, 1]),
            ..Default::default()
        };
        let g = Geometry::new(&a, &[1, 4, 5, 5], &[6, 2, 3, 3], &[1, 6, 5, 5]).unwrap();
        assert_eq!((g.mg, g.cg, g.groups, g.pad), (3, 2, 2, (1, 1)));
        assert!(Geometry::new(&a, &[1, 4, 5, 5], &[6, 4, 3, 3], &[1, 6, 5, 5]).is_err());
        assert!(Geometry::new(&a, &[1, 4, 5], &[6, 2, 3], &[1, 6, 5]).is_err());
    }
}
