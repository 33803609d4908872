//! Weight-only quantization fusion for the CPU executor: a DequantizeLinear whose
//! inputs are all constants and whose only reader is a MatMul (as input 1) or a Gemm
//! (as input 1) runs together with that reader as one
//! [`dq_gemm`](crate::cpu::kernels::dq_gemm) call, and one read by a Conv (as its
//! weight) as one [`dq_conv`](crate::cpu::kernels::dq_conv) call, so the f32 weight is
//! never materialized whole. The DequantizeLinear node itself is skipped.
//!
//! Setting the environment variable `CC_NO_FUSION=1` turns this fusion off (both nodes
//! then run apart, the weight dequantized in full on every run); used to time the two
//! paths against each other.

use crate::cpu::kernels::dq_gemm::{self, DqWeight};
use crate::cpu::kernels::{dq_conv, Activation, KernelCx};
use cc_ir::op::ConvAttrs;
use cc_ir::{Error, Graph, NodeId, Op, Result, Tensor, ValueId};
use std::collections::HashMap;

/// True unless `CC_NO_FUSION` is set to something other than `0` or empty.
pub fn enabled() -> bool {
    std::env::var("CC_NO_FUSION").map_or(true, |v| v.is_empty() || v == "0")
}

/// Maps each MatMul/Gemm/Conv reader to the DequantizeLinear node feeding its input 1, for
/// every pair the fused kernel can take (constant weight, scale and zero point of
/// supported types; the dequantized value read by nothing else and not a graph output).
pub fn plan(g: &Graph, order: &[NodeId]) -> HashMap<NodeId, NodeId> {
    let mut plan = HashMap::new();
    for &id in order {
        let node = g.node(id);
        let Op::DequantizeLinear { axis, block_size } = node.op else {
            continue;
        };
        let Some(v) = node.output(0) else { continue };
        if node.outputs().len() != 1 || g.is_output(v) || node.inputs().len() < 2 {
            continue;
        }
        let Some(w) = weight_of(g, id, axis, block_size) else {
            continue;
        };
        let [u] = g.value(v).uses() else { continue };
        let reader = g.node(u.node());
        let conv = matches!(reader.op, Op::Conv(_));
        let supported = if conv {
            dq_conv::supported(&w)
        } else {
            dq_gemm::supported(&w)
        };
        if !supported {
            continue;
        }
        let is_b = reader.input(1) == Some(v)
            && reader
                .inputs()
                .iter()
                .enumerate()
                .all(|(i, s)| i == 1 || *s != Some(v));
        let fits = conv || matches!(reader.op, Op::MatMul | Op::Gemm { .. });
        if is_b && fits && reader.outputs().len() == 1 {
            plan.insert(u.node(), id);
        }
    }
    plan
}

/// The constant weight of DequantizeLinear node `dq`; `None` unless all its inputs are
/// constants.
fn weight_of(g: &Graph, dq: NodeId, axis: Option<i64>, block: Option<i64>) -> Option<DqWeight<'_>> {
    let node = g.node(dq);
    let q = g.const_data(node.input(0)?)?;
    let scale = g.const_data(node.input(1)?)?;
    let zero_point = match node.inputs().get(2).copied().flatten() {
        Some(z) => Some(g.const_data(z)?),
        None => None,
    };
    Some(DqWeight {
        q,
        scale,
        zero_point,
        axis: axis.unwrap_or(1),
        block: block.unwrap_or(0),
    })
}

/// Runs reader node `id` with its DequantizeLinear `dq` fused; `Ok(None)` when the
/// kernel cannot take these inputs (the caller then runs the two nodes apart).
/// `value` looks up the reader's other inputs.
pub fn run<'a>(
    g: &'a Graph,
    id: NodeId,
    dq: NodeId,
    value: impl Fn(ValueId) -> Option<&'a Tensor>,
    cx: &KernelCx<'_>,
) -> Result<Option<Tensor>> {
    run_with(g, id, dq, value, None, cx)
}

/// [`run`], with activation `act` applied by the reader's kernel (a Conv reader only:
/// `Ok(None)` for MatMul/Gemm with an activation).
pub fn run_with<'a>(
    g: &'a Graph,
    id: NodeId,
    dq: NodeId,
    value: impl Fn(ValueId) -> Option<&'a Tensor>,
    act: Option<Activation>,
    cx: &KernelCx<'_>,
) -> Result<Option<Tensor>> {
    let at = |e: Error| Error::invalid(format!("node {}: {e}", g.node_label(id)));
    let Op::DequantizeLinear { axis, block_size } = g.node(dq).op else {
        return Ok(None);
    };
    let Some(w) = weight_of(g, dq, axis, block_size) else {
        return Ok(None);
    };
    let Some(reader) = reader_of(g, id, value, act)? else {
        return Ok(None);
    };
    match reader {
        Reader::Conv { attrs, x, bias } => {
            dq_conv::dq_conv(attrs, x, &w, bias, act, cx).map_err(at)
        }
        Reader::MatMul { x } => dq_gemm::dq_matmul(x, &w, cx).map_err(at),
        Reader::Gemm {
            a,
            c,
            alpha,
            beta,
            trans_a,
            trans_b,
        } => dq_gemm::dq_gemm(a, &w, c, alpha, beta, trans_a, trans_b, cx).map_err(at),
    }
}

/// A MatMul, Gemm or Conv node reading a fused constant weight as its input 1, with its
/// other inputs looked up and the Gemm attributes at their defaults.
pub(crate) enum Reader<'a> {
    /// `Conv(x, W, bias?)`.
    Conv {
        /// The Conv attributes.
        attrs: &'a ConvAttrs,
        /// Input 0.
        x: &'a Tensor,
        /// Input 2, when present.
        bias: Option<&'a Tensor>,
    },
    /// `MatMul(x, W)`.
    MatMul {
        /// Input 0.
        x: &'a Tensor,
    },
    /// `Gemm(a, W, c?)`.
    Gemm {
        /// Input 0.
        a: &'a Tensor,
        /// Input 2, when present.
        c: Option<&'a Tensor>,
        /// `alpha` (default 1).
        alpha: f32,
        /// `beta` (default 1).
        beta: f32,
        /// `transA != 0`.
        trans_a: bool,
        /// `transB != 0`.
        trans_b: bool,
    },
}

/// The reader node `id` of a fused weight, its inputs looked up with `value`: `Ok(None)`
/// when its input 0 is absent, when it is no MatMul, Gemm or Conv, or when activation
/// `act` is set and it is no Conv (only the Conv kernels apply one); an error naming
/// the node and input when a present input has no value.
pub(crate) fn reader_of<'a>(
    g: &'a Graph,
    id: NodeId,
    value: impl Fn(ValueId) -> Option<&'a Tensor>,
    act: Option<Activation>,
) -> Result<Option<Reader<'a>>> {
    let node = g.node(id);
    let get = |slot: usize| -> Result<Option<&'a Tensor>> {
        match node.input(slot) {
            None => Ok(None),
            Some(v) => value(v).map(Some).ok_or_else(|| {
                Error::invalid(format!(
                    "node {}: input {:?} has no value",
                    g.node_label(id),
                    g.value(v).name()
                ))
            }),
        }
    };
    let Some(x) = get(0)? else {
        return Ok(None);
    };
    Ok(match &node.op {
        Op::Conv(attrs) => Some(Reader::Conv {
            attrs,
            x,
            bias: get(2)?,
        }),
        _ if act.is_some() => None,
        Op::MatMul => Some(Reader::MatMul { x }),
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => Some(Reader::Gemm {
            a: x,
            c: get(2)?,
            alpha: alpha.unwrap_or(1.0),
            beta: beta.unwrap_or(1.0),
            trans_a: trans_a.unwrap_or(0) != 0,
            trans_b: trans_b.unwrap_or(0) != 0,
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::CpuExecutor;
    use cc_ir::types::known_shape;
    use cc_ir::{DType, Executor, ValueType};

    /// x[3, 40] -> reader(x, DequantizeLinear(uint8 W, per-axis scale and zero point))
    /// -> y; the reader is MatMul (W [40, 24]) or Gemm with transB and a bias (W
    /// [24, 40]). With `share`, the dequantized weight is also a graph output, so the
    /// pair must not fuse.
    fn graph(gemm: bool, share: bool) -> Graph {
        let mut g = Graph::new("g");
        let x = g
            .add_value(
                "x",
                Some(ValueType::tensor(DType::F32, known_shape(&[3, 40]))),
            )
            .unwrap();
        let shape = if gemm { [24, 40] } else { [40, 24] };
        let codes: Vec<u8> = (0..960u32).map(|i| (i * 37 % 251) as u8).collect();
        let q = g
            .add_const(
                "wq",
                Tensor::from_raw(DType::U8, shape.to_vec(), codes.into()).unwrap(),
            )
            .unwrap();
        let s: Vec<f32> = (0..24).map(|i| 0.01 + i as f32 * 1e-3).collect();
        let s = g
            .add_const("s", Tensor::from_f32(vec![24], s).unwrap())
            .unwrap();
        let zp: Vec<u8> = (0..24).map(|i| 120 + i as u8).collect();
        let z = g
            .add_const(
                "z",
                Tensor::from_raw(DType::U8, vec![24], zp.into()).unwrap(),
            )
            .unwrap();
        let w = g.add_value("w", None).unwrap();
        let y = g.add_value("y", None).unwrap();
        g.set_inputs(vec![x]);
        g.add_node(
            "dq",
            Op::DequantizeLinear {
                axis: Some(if gemm { 0 } else { 1 }),
                block_size: None,
            },
            vec![Some(q), Some(s), Some(z)],
            vec![Some(w)],
        )
        .unwrap();
        if gemm {
            let c: Vec<f32> = (0..24).map(|i| i as f32 * 0.1).collect();
            let c = g
                .add_const("c", Tensor::from_f32(vec![24], c).unwrap())
                .unwrap();
            g.add_node(
                "gemm",
                Op::Gemm {
                    alpha: Some(0.5),
                    beta: Some(2.0),
                    trans_a: None,
                    trans_b: Some(1),
                },
                vec![Some(x), Some(w), Some(c)],
                vec![Some(y)],
            )
            .unwrap();
        } else {
            g.add_node("mm", Op::MatMul, vec![Some(x), Some(w)], vec![Some(y)])
                .unwrap();
        }
        g.set_outputs(if share { vec![y, w] } else { vec![y] });
        g
    }

    #[test]
    fn dequantize_matmul_and_gemm_fuse_and_match_the_unfused_path() {
        let xs: Vec<f32> = (0..120)
            .map(|i| ((i * 7 % 23) as f32 - 11.0) / 10.0)
            .collect();
        let x = Tensor::from_f32(vec![3, 40], xs).unwrap();
        let ex = CpuExecutor::new(2).unwrap();
        for gemm in [false, true] {
            let fused = graph(gemm, false);
            let order = fused.topo_order().unwrap();
            assert_eq!(plan(&fused, &order).len(), 1);
            let before = ex.fused_dq_gemms();
            let got = ex.run(&fused, std::slice::from_ref(&x)).unwrap();
            // One fused pair per run (none when CC_NO_FUSION=1 is set).
            let one = u64::from(enabled());
            assert_eq!(ex.fused_dq_gemms(), before + one);
            let apart = graph(gemm, true);
            let order = apart.topo_order().unwrap();
            assert!(plan(&apart, &order).is_empty());
            let want = ex.run(&apart, std::slice::from_ref(&x)).unwrap();
            assert_eq!(ex.fused_dq_gemms(), before + one);
            assert_eq!(got[0].shape(), &[3, 24]);
            let (a, b) = (got[0].to_f32().unwrap(), want[0].to_f32().unwrap());
            for (i, (p, q)) in a.iter().zip(&b).enumerate() {
                assert!(
                    (p - q).abs() <= 1e-5 * (1.0 + q.abs()),
                    "at {i}: {p} vs {q}"
                );
            }
            // And against a manual computation of one element.
            let w = want[1].to_f32().unwrap();
            let xv = x.to_f32().unwrap();
            let (r, col) = (2, 5);
            let dot: f32 = (0..40)
                .map(|k| {
                    xv[r * 40 + k]
                        * if gemm {
                            w[col * 40 + k]
                        } else {
                            w[k * 24 + col]
                        }
                })
                .sum();
            let manual = if gemm {
                0.5 * dot + 2.0 * col as f32 * 0.1
            } else {
                dot
            };
            let v = a[r * 24 + col];
            assert!(
                (v - manual).abs() <= 1e-4 * (1.0 + manual.abs()),
                "{v} vs {manual}"
            );
        }
    }
}
