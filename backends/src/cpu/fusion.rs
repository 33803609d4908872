//! Weight-only quantization fusion for the CPU executor: a DequantizeLinear whose
//! inputs are all constants and whose only reader is a MatMul (as input 1) or a Gemm
//! (as input 1) runs together with that reader as one
//! [`dq_gemm`](crate::cpu::kernels::dq_gemm) call, so the f32 weight is never
//! materialized whole. The DequantizeLinear node itself is skipped.
//!
//! Setting the environment variable `CC_NO_FUSION=1` turns this fusion off (both nodes
//! then run apart, the weight dequantized in full on every run); used to time the two
//! paths against each other.

use crate::cpu::kernels::dq_gemm::{self, DqWeight};
use crate::cpu::kernels::KernelCx;
use cc_ir::{Error, Graph, NodeId, Op, Result, Tensor, ValueId};
use std::collections::HashMap;

/// True unless `CC_NO_FUSION` is set to something other than `0` or empty.
pub fn enabled() -> bool {
    std::env::var("CC_NO_FUSION").map_or(true, |v| v.is_empty() || v == "0")
}

/// Maps each MatMul/Gemm reader to the DequantizeLinear node feeding its input 1, for
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
        if !dq_gemm::supported(&w) {
            continue;
        }
        let [u] = g.value(v).uses() else { continue };
        let reader = g.node(u.node());
        let is_b = reader.input(1) == Some(v)
            && reader
                .inputs()
                .iter()
                .enumerate()
                .all(|(i, s)| i == 1 || *s != Some(v));
        let fits = match reader.op {
            Op::MatMul => true,
            Op::Gemm { .. } => true,
            _ => false,
        };
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
    let at = |e: Error| Error::invalid(format!("node {}: {e}", g.node_label(id)));
    let Op::DequantizeLinear { axis, block_size } = g.node(dq).op else {
        return Ok(None);
    };
    let Some(w) = weight_of(g, dq, axis, block_size) else {
        return Ok(None);
    };
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
    match node.op {
        Op::MatMul => dq_gemm::dq_matmul(x, &w, cx).map_err(at),
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => dq_gemm::dq_gemm(
            x,
            &w,
            get(2)?,
            alpha.unwrap_or(1.0),
            beta.unwrap_or(1.0),
            trans_a.unwrap_or(0) != 0,
            trans_b.unwrap_or(0) != 0,
            cx,
        )
        .map_err(at),
        _ => Ok(None),
    }
}
