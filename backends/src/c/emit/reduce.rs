//! Reductions and normalisations: ReduceMean/Sum/Max/Min over contiguous axes, Softmax,
//! LayerNormalization, MaxPool and the global pools (runtime calls).

use super::{c_f32, input, output, unsupported, Cx};
use crate::cpu::kernels::conv::resolve_axes;
use cc_ir::op::{GlobalPoolOp, ReduceOp};
use cc_ir::{NodeId, Op, Result};
use std::fmt::Write;

/// The statements of one reduction or normalisation node.
pub fn emit(cx: &mut Cx, node: NodeId) -> Result<String> {
    let g = cx.g;
    let n = g.node(node);
    let x = input(g, node, 0)?;
    let y = output(g, node, 0)?;
    let sx = cx.shape(x)?;
    if cx.dtype(x)? != cc_ir::DType::F32 {
        return Err(unsupported(g, node, "a non-f32 input"));
    }
    let (px, py) = (cx.ptr(x)?, cx.ptr(y)?);
    let rank = sx.len() as i64;
    let axis_of = |a: i64| -> Result<usize> {
        let a = if a < 0 { a + rank } else { a };
        usize::try_from(a)
            .ok()
            .filter(|&a| a < sx.len())
            .ok_or_else(|| unsupported(g, node, &format!("axis {a}")))
    };
    let split3 = |lo: usize, hi: usize| -> (usize, usize, usize) {
        (
            sx[..lo].iter().product(),
            sx[lo..hi].iter().product(),
            sx[hi..].iter().product(),
        )
    };
    let extra_outputs = n
        .outputs()
        .iter()
        .skip(1)
        .flatten()
        .any(|&v| !g.value(v).uses().is_empty() || g.is_output(v));
    if extra_outputs {
        return Err(unsupported(g, node, "a second output that is read"));
    }
    let mut s = String::new();
    match &n.op {
        Op::Softmax { axis } => {
            let a = axis_of(axis.unwrap_or(-1))?;
            let (o, m, i) = split3(a, a + 1);
            let _ = writeln!(s, "cc_softmax({px}, {py}, {o}, {m}, {i});");
        }
        Op::LayerNormalization { axis, epsilon, .. } => {
            let a = axis_of(axis.unwrap_or(-1))?;
            let (o, m, _) = split3(a, sx.len());
            let scale = input(g, node, 1)?;
            let count = |v| cx.shape(v).map(|s| s.iter().product::<usize>());
            if count(scale)? != m {
                return Err(unsupported(g, node, "a broadcast LayerNormalization scale"));
            }
            let bias = match n.input(2) {
                Some(b) if count(b)? == m => cx.ptr(b)?,
                Some(_) => return Err(unsupported(g, node, "a broadcast LayerNormalization bias")),
                None => "(const float *)0".into(),
            };
            let _ = writeln!(
                s,
                "cc_layernorm({px}, {}, {bias}, {py}, {o}, {m}, {});",
                cx.ptr(scale)?,
                c_f32(epsilon.unwrap_or(1e-5))
            );
        }
        Op::Reduce {
            op,
            axes,
            noop_with_empty_axes,
            ..
        } => {
            let code = match op {
                ReduceOp::Sum => 0,
                ReduceOp::Mean => 1,
                ReduceOp::Max => 2,
                ReduceOp::Min => 3,
                other => return Err(unsupported(g, node, &format!("Reduce {other:?}"))),
            };
            let list: Vec<i64> = match (axes, n.input(1)) {
                (Some(a), _) => a.clone(),
                (None, Some(v)) => cx
                    .const_data(v)
                    .and_then(|t| t.to_i64_lossless().ok())
                    .ok_or_else(|| unsupported(g, node, "axes that are not constant"))?,
                (None, None) => Vec::new(),
            };
            let mut ax: Vec<usize> = if list.is_empty() {
                if noop_with_empty_axes.unwrap_or(0) != 0 {
                    return Err(unsupported(g, node, "noop_with_empty_axes"));
                }
                (0..sx.len()).collect()
            } else {
                list.iter().map(|&a| axis_of(a)).collect::<Result<_>>()?
            };
            ax.sort_unstable();
            ax.dedup();
            let (Some(&lo), Some(&last)) = (ax.first(), ax.last()) else {
                return Err(unsupported(g, node, "a reduction of a scalar"));
            };
            let hi = last + 1;
            if hi - lo != ax.len() {
                return Err(unsupported(
                    g,
                    node,
                    "a reduction over axes that are not contiguous",
                ));
            }
            let (o, m, i) = split3(lo, hi);
            let _ = writeln!(s, "cc_reduce({px}, {py}, {o}, {m}, {i}, {code});");
        }
        Op::GlobalPool(p) => {
            let code = match p {
                GlobalPoolOp::Average => 1,
                GlobalPoolOp::Max => 2,
            };
            let (o, m, _) = split3(2.min(sx.len()), sx.len());
            let _ = writeln!(s, "cc_reduce({px}, {py}, {o}, {m}, 1, {code});");
        }
        Op::MaxPool(a) => {
            if sx.len() != 4 {
                return Err(unsupported(g, node, "MaxPool that is not 2-D"));
            }
            if a.storage_order.unwrap_or(0) != 0 {
                return Err(unsupported(g, node, "MaxPool storage_order"));
            }
            let kernel: Vec<usize> = a
                .kernel_shape
                .clone()
                .unwrap_or_default()
                .iter()
                .map(|&k| usize::try_from(k).unwrap_or(0))
                .collect();
            if kernel.len() != 2 {
                return Err(unsupported(g, node, "MaxPool kernel_shape"));
            }
            let ax = resolve_axes(
                &sx[2..],
                &kernel,
                &a.strides,
                &a.dilations,
                &a.pads,
                a.auto_pad.as_deref(),
                a.ceil_mode.unwrap_or(0) != 0,
            )
            .map_err(|e| unsupported(g, node, &e.to_string()))?;
            let (h, w) = (&ax[0], &ax[1]);
            let _ =
                writeln!(
                s,
                "cc_conv p = {{{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, 1}};",
                sx[0], sx[1], h.input, w.input, sx[1], h.kernel, w.kernel, h.output, w.output,
                h.stride, w.stride, h.pad, w.pad, h.dilation, w.dilation
            );
            let _ = writeln!(s, "cc_maxpool(&p, {px}, {py});");
        }
        op => return Err(unsupported(g, node, &format!("op {}", op.onnx_type().1))),
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use crate::c::toolchain::testkit::{ramp, Builder};
    use cc_ir::op::{GlobalPoolOp, PoolAttrs, ReduceOp};
    use cc_ir::Op;

    #[test]
    fn softmax_reduce_pools_match_the_executor() {
        let (mut b, x) = Builder::new(&[1, 2, 5, 5]);
        let sm = b.op(Op::Softmax { axis: Some(1) }, &[Some(x)]);
        let axes = b.ints(&[2, 3]);
        let rm = b.op(
            Op::Reduce {
                op: ReduceOp::Mean,
                axes: None,
                keepdims: Some(1),
                noop_with_empty_axes: None,
            },
            &[Some(x), Some(axes)],
        );
        let mp = b.op(
            Op::MaxPool(PoolAttrs {
                kernel_shape: Some(vec![3, 3]),
                strides: Some(vec![2, 2]),
                pads: Some(vec![1, 1, 1, 1]),
                ceil_mode: Some(1),
                ..Default::default()
            }),
            &[Some(x)],
        );
        let gp = b.op(Op::GlobalPool(GlobalPoolOp::Max), &[Some(x)]);
        b.check(&[sm, rm, mp, gp], ramp(&[1, 2, 5, 5]), 1e-6);
    }
}
