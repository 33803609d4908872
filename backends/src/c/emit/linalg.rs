//! MatMul, Gemm and Conv: calls of the runtime's packed GEMM (`cc_gemm`) and conv
//! (`cc_conv2d`: implicit-im2col GEMM, f32 weights stored pre-packed; direct
//! depthwise). A compressed weight is passed as its descriptor and dequantized while
//! the GEMM packs it; low-rank layers are two of these.

use super::{
    broadcast_strides, c_f32, gemm_scratch, input, output, strides, unsupported, Cx, KC, MR,
};
use crate::cpu::kernels::conv::resolve_axes;
use cc_ir::{Graph, NodeId, Op, Result, ValueId};
use std::fmt::Write;

/// The statements of one MatMul, Gemm or Conv node.
pub fn emit(cx: &mut Cx, node: NodeId) -> Result<String> {
    match &cx.g.node(node).op {
        Op::MatMul => matmul(cx, node),
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => gemm(
            cx,
            node,
            alpha.unwrap_or(1.0),
            beta.unwrap_or(1.0),
            trans_a.unwrap_or(0) != 0,
            trans_b.unwrap_or(0) != 0,
        ),
        Op::Conv(_) => conv(cx, node),
        op => Err(unsupported(cx.g, node, &format!("op {}", op.onnx_type().1))),
    }
}

fn matmul(cx: &mut Cx, node: NodeId) -> Result<String> {
    let g = cx.g;
    let (a, b, y) = (input(g, node, 0)?, input(g, node, 1)?, output(g, node, 0)?);
    let (sa, sb) = (cx.shape(a)?, cx.shape(b)?);
    if sa.is_empty() || sb.is_empty() {
        return Err(unsupported(g, node, "MatMul of a scalar"));
    }
    // Treat 1-D operands as [1, K] and [K, 1].
    let a2: Vec<usize> = if sa.len() == 1 {
        vec![1, sa[0]]
    } else {
        sa.clone()
    };
    let b2: Vec<usize> = if sb.len() == 1 {
        vec![sb[0], 1]
    } else {
        sb.clone()
    };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        return Err(unsupported(g, node, &format!("MatMul of {sa:?} by {sb:?}")));
    }
    let (ba, bb) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
    let rank = ba.len().max(bb.len());
    let mut batch = vec![1usize; rank];
    for (i, d) in batch.iter_mut().enumerate() {
        let pa = (i + ba.len()).checked_sub(rank).map_or(1, |j| ba[j]);
        let pb = (i + bb.len()).checked_sub(rank).map_or(1, |j| bb[j]);
        *d = pa.max(pb);
    }
    // Element strides of an operand's batch dims over the output batch (0: broadcast).
    let mat = |s: &[usize]| -> Vec<usize> {
        let full = strides(s);
        let lead = rank - (s.len() - 2);
        (0..rank)
            .map(|i| {
                if i < lead || s[i - lead] == 1 {
                    0
                } else {
                    full[i - lead]
                }
            })
            .collect()
    };
    let sta = mat(&a2);
    let stb = mat(&b2);
    let (wa_decl, wa) = cx.weight(a, "wa")?;
    let (wb_decl, wb) = cx.weight(b, "wb")?;
    cx.need_scratch(gemm_scratch(m, k));
    let mut s = String::new();
    s.push_str(&wa_decl);
    s.push_str(&wb_decl);
    let _ = writeln!(s, "float *y = {};", cx.ptr(y)?);
    let total: usize = batch.iter().product::<usize>() * m * n;
    let _ = writeln!(s, "for (long t = 0; t < {total}; t++) y[t] = 0.0f;");
    let mut ob = String::from("0");
    let mut oa = String::from("0");
    let mut oy = String::from("0");
    let ys = m * n;
    let bstr = strides(&batch);
    for (i, &d) in batch.iter().enumerate() {
        if d == 1 {
            continue;
        }
        let _ = writeln!(s, "for (long b{i} = 0; b{i} < {d}; b{i}++)");
        if sta[i] != 0 {
            let _ = write!(oa, " + b{i} * {}", sta[i]);
        }
        if stb[i] != 0 {
            let _ = write!(ob, " + b{i} * {}", stb[i]);
        }
        let _ = write!(oy, " + b{i} * {}", bstr[i] * ys);
    }
    let _ = writeln!(s, "{{");
    let _ = writeln!(s, "  cc_mat A = {{{wa}, {oa}, {k}, 1, 0, 0, 0}};");
    let _ = writeln!(s, "  cc_mat B = {{{wb}, {ob}, {n}, 1, 0, 0, 0}};");
    let _ = writeln!(
        s,
        "  cc_gemm({m}, {n}, {k}, &A, &B, y + {oy}, {n}, cc_scratch);"
    );
    let _ = writeln!(s, "}}");
    Ok(s)
}

fn gemm(cx: &mut Cx, node: NodeId, alpha: f32, beta: f32, ta: bool, tb: bool) -> Result<String> {
    let g = cx.g;
    let (a, b, y) = (input(g, node, 0)?, input(g, node, 1)?, output(g, node, 0)?);
    let c = g.node(node).input(2);
    let (sa, sb) = (cx.shape(a)?, cx.shape(b)?);
    if sa.len() != 2 || sb.len() != 2 {
        return Err(unsupported(g, node, "Gemm of operands that are not 2-D"));
    }
    let (m, k) = if ta { (sa[1], sa[0]) } else { (sa[0], sa[1]) };
    let n = if tb { sb[0] } else { sb[1] };
    // (row stride, column stride) of the logical A [m,k] and B [k,n].
    let (ars, acs) = if ta { (1, m) } else { (k, 1) };
    let (brs, bcs) = if tb { (1, k) } else { (n, 1) };
    let (wa_decl, wa) = cx.weight(a, "wa")?;
    let (wb_decl, wb) = cx.weight(b, "wb")?;
    cx.need_scratch(gemm_scratch(m, k));
    let mut s = String::new();
    s.push_str(&wa_decl);
    s.push_str(&wb_decl);
    let _ = writeln!(s, "float *y = {};", cx.ptr(y)?);
    let bias = match c {
        Some(c) if beta != 0.0 => {
            let bs = broadcast_strides(&cx.shape(c)?, &[m, n])
                .map_err(|e| unsupported(g, node, &e.to_string()))?;
            let _ = writeln!(s, "const float *c = {};", cx.ptr(c)?);
            Some(format!("c[i * {} + j * {}]", bs[0], bs[1]))
        }
        _ => None,
    };
    let scaled = |e: &str| {
        if beta == 1.0 {
            e.to_string()
        } else {
            format!("{} * {e}", c_f32(beta))
        }
    };
    let fill = match (&bias, alpha == 1.0) {
        (Some(b), true) => scaled(b),
        _ => "0.0f".into(),
    };
    let _ = writeln!(
        s,
        "for (long i = 0; i < {m}; i++) for (long j = 0; j < {n}; j++) y[i * {n} + j] = {fill};"
    );
    let _ = writeln!(s, "{{");
    let _ = writeln!(s, "  cc_mat A = {{{wa}, 0, {ars}, {acs}, 0, 0, 0}};");
    let _ = writeln!(s, "  cc_mat B = {{{wb}, 0, {brs}, {bcs}, 0, 0, 0}};");
    let _ = writeln!(s, "  cc_gemm({m}, {n}, {k}, &A, &B, y, {n}, cc_scratch);");
    let _ = writeln!(s, "}}");
    if alpha != 1.0 {
        let add = bias
            .map(|b| format!(" + {}", scaled(&b)))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "for (long i = 0; i < {m}; i++) for (long j = 0; j < {n}; j++) y[i * {n} + j] = {} * y[i * {n} + j]{add};",
            c_f32(alpha)
        );
    }
    if let Some(&(_, lo, hi)) = cx.fused.get(&node) {
        let _ = writeln!(s, "cc_clamp(y, {}, {}, {});", m * n, c_f32(lo), c_f32(hi));
    }
    Ok(s)
}

fn conv(cx: &mut Cx, node: NodeId) -> Result<String> {
    let g = cx.g;
    let Op::Conv(attrs) = &g.node(node).op else {
        return Err(unsupported(g, node, "op"));
    };
    let (x, w, y) = (input(g, node, 0)?, input(g, node, 1)?, output(g, node, 0)?);
    let bias = g.node(node).input(2);
    let (sx, sw) = (cx.shape(x)?, cx.shape(w)?);
    if !(3..=4).contains(&sx.len()) || sw.len() != sx.len() {
        return Err(unsupported(g, node, &format!("Conv of rank {}", sx.len())));
    }
    let spatial: Vec<usize> = sx[2..].to_vec();
    let kernel: Vec<usize> = sw[2..].to_vec();
    let axes = resolve_axes(
        &spatial,
        &kernel,
        &attrs.strides,
        &attrs.dilations,
        &attrs.pads,
        attrs.auto_pad.as_deref(),
        false,
    )
    .map_err(|e| unsupported(g, node, &e.to_string()))?;
    let groups = usize::try_from(attrs.group()).unwrap_or(0);
    let (n, c, m) = (sx[0], sx[1], sw[0]);
    if groups == 0 || c % groups != 0 || m % groups != 0 || sw[1] * groups != c {
        return Err(unsupported(
            g,
            node,
            &format!("Conv with group {}", attrs.group()),
        ));
    }
    // 1-D as 2-D with a unit height.
    let (hy, wx) = if axes.len() == 1 {
        (None, &axes[0])
    } else {
        (Some(&axes[0]), &axes[1])
    };
    let (h, kh, oh, sh, ph, dh) = hy.map_or((1, 1, 1, 1, 0, 1), |a| {
        (a.input, a.kernel, a.output, a.stride, a.pad, a.dilation)
    });
    let (cg, mg) = (c / groups, m / groups);
    let kg = cg * kh * wx.kernel;
    let depthwise = groups == c && m == c && kh * wx.kernel <= 64;
    if !depthwise {
        cx.need_scratch(gemm_scratch(mg, kg));
    }
    let (w_decl, wexpr) = cx.weight(w, "ww")?;
    let mut s = String::new();
    s.push_str(&w_decl);
    let _ = writeln!(
        s,
        "cc_conv p = {{{n}, {c}, {h}, {}, {m}, {kh}, {}, {oh}, {}, {sh}, {}, {ph}, {}, {dh}, {}, {groups}}};",
        wx.input, wx.kernel, wx.output, wx.stride, wx.pad, wx.dilation
    );
    let b = match bias {
        Some(b) => cx.ptr(b)?,
        None => "(const float *)0".into(),
    };
    let (lo, hi) = cx
        .fused
        .get(&node)
        .map_or((f32::NEG_INFINITY, f32::INFINITY), |&(_, lo, hi)| (lo, hi));
    let packed = if cx.packed.contains(&w) {
        cx.ptr(w)?
    } else {
        "(const float *)0".into()
    };
    let _ = writeln!(
        s,
        "cc_conv2d(&p, {}, {wexpr}, {b}, {}, cc_scratch, {}, {}, {packed});",
        cx.ptr(x)?,
        cx.ptr(y)?,
        c_f32(lo),
        c_f32(hi)
    );
    Ok(s)
}

/// For a Conv whose f32 weight can be stored pre-packed (a constant read only by this
/// node, not depthwise): the weight and (groups, rows per group, columns per group).
pub fn prepack_layout(g: &Graph, node: NodeId) -> Option<(ValueId, usize, usize, usize)> {
    let n = g.node(node);
    let Op::Conv(attrs) = &n.op else { return None };
    let (x, w) = (n.input(0)?, n.input(1)?);
    let t = g.const_data(w)?;
    if t.dtype() != cc_ir::DType::F32 || g.value(w).uses().len() != 1 || n.input(0) == Some(w) {
        return None;
    }
    let sw = t.shape();
    let c = *crate::c::prepare::static_shape(g, x).ok()?.get(1)?;
    let groups = usize::try_from(attrs.group()).ok()?;
    let m = *sw.first()?;
    let taps: usize = sw.iter().skip(2).product();
    if groups == 0 || m % groups != 0 || sw.len() < 3 || (groups == c && m == c && taps <= 64) {
        return None;
    }
    Some((w, groups, m / groups, sw.iter().skip(1).product()))
}

/// `w` ([groups·mg, kg] row-major) in the runtime's packed left-operand layout: per
/// group, per depth block of `KC`, `MR`-row panels stored `[k][MR]` (rows past `mg`
/// zero).
pub fn prepack(w: &[f32], groups: usize, mg: usize, kg: usize) -> Vec<f32> {
    let mp = mg.div_ceil(MR);
    let mut out = Vec::with_capacity(groups * mp * MR * kg);
    for gi in 0..groups {
        for k0 in (0..kg).step_by(KC) {
            let kc = KC.min(kg - k0);
            for ip in 0..mp {
                for k in 0..kc {
                    for i in 0..MR {
                        let row = ip * MR + i;
                        out.push(if row < mg {
                            w.get((gi * mg + row) * kg + k0 + k).copied().unwrap_or(0.0)
                        } else {
                            0.0
                        });
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::c::toolchain::testkit::{ramp, Builder};
    use cc_ir::op::ConvAttrs;

    #[test]
    fn matmul_gemm_conv_match_the_executor() {
        let (mut b, x) = Builder::new(&[1, 4, 6, 6]);
        // grouped, strided, dilated, asymmetric padding
        let w = b.floats(&[6, 2, 3, 3], 0.05);
        let bias = b.floats(&[6], 1.0);
        let conv = Op::Conv(ConvAttrs {
            group: Some(2),
            strides: Some(vec![2, 1]),
            dilations: Some(vec![1, 2]),
            pads: Some(vec![1, 2, 0, 1]),
            ..Default::default()
        });
        let c = b.op(conv, &[Some(x), Some(w), Some(bias)]);
        // depthwise with Relu fused
        let wd = b.floats(&[4, 1, 3, 3], 0.1);
        let dw = Op::Conv(ConvAttrs {
            group: Some(4),
            pads: Some(vec![1, 1, 1, 1]),
            ..Default::default()
        });
        let d = b.op(dw, &[Some(x), Some(wd)]);
        let r = b.op(Op::Unary(cc_ir::op::UnaryOp::Relu), &[Some(d)]);
        // batched MatMul with a broadcast right operand: [1,4,6,6] x [6,5]
        let m = b.floats(&[6, 5], 0.3);
        let mm = b.op(Op::MatMul, &[Some(x), Some(m)]);
        // Gemm with transA, alpha, beta and a row bias: A = x viewed [24,6]^T
        let shape = b.ints(&[24, 6]);
        let a = b.op(Op::Reshape { allowzero: None }, &[Some(x), Some(shape)]);
        let bb = b.floats(&[24, 3], 0.2);
        let cc = b.floats(&[3], 1.0);
        let gemm = Op::Gemm {
            alpha: Some(0.5),
            beta: Some(2.0),
            trans_a: Some(1),
            trans_b: None,
        };
        let gm = b.op(gemm, &[Some(a), Some(bb), Some(cc)]);
        b.check(&[c, r, mm, gm], ramp(&[1, 4, 6, 6]), 1e-5);
    }

    #[test]
    fn prepack_matches_the_panel_layout() {
        // 1 group, 7 rows (two panels, the second padded), 3 columns.
        let w: Vec<f32> = (0..21).map(|v| v as f32).collect();
        let p = prepack(&w, 1, 7, 3);
        assert_eq!(p.len(), 2 * MR * 3);
        // panel 0, k = 1: rows 0..6, column 1
        assert_eq!(&p[MR..2 * MR], &[1.0, 4.0, 7.0, 10.0, 13.0, 16.0]);
        // panel 1, k = 0: row 6 then zeros
        assert_eq!(p[3 * MR], 18.0);
        assert!(p[3 * MR + 1..4 * MR].iter().all(|&v| v == 0.0));
    }
}
