//! Codebook lookups in the CPU executor: the lowered form of a clustered weight,
//! `Gather(table, Cast(indices) [+ offsets])` with constant inputs (see
//! [`cc_ir::compressed::codebook::CodebookPattern`]), runs as one step.
//!
//! - When its only reader is a MatMul or Gemm taking it as input 1, the reader runs the
//!   fused table-lookup GEMM ([`cb_gemm`](crate::cpu::kernels::cb_gemm)); when it is a
//!   1-D or 2-D Conv taking it as its weight, the fused codebook Conv
//!   ([`cb_conv`](crate::cpu::kernels::cb_conv)), which looks up a tile of output
//!   channels at a time. Either way the f32 weight is never built whole (off with
//!   `CC_NO_FUSION=1`, like the dequantize-GEMM fusion).
//! - Otherwise (Gather, ...) the weight is decoded at the `Gather` node in one pass,
//!   without running the `Cast` of packed 4-bit indices.
//!
//! The `Cast`/`Add` (and, when fused, the `Gather`) nodes are skipped.

use crate::cpu::fusion::{reader_of, Reader};
use crate::cpu::kernels::cb_gemm::{self, CbWeight};
use crate::cpu::kernels::{cb_conv, Activation, KernelCx};
use cc_ir::compressed::codebook::CodebookPattern;
use cc_ir::{Error, Graph, NodeId, Op, Result, Tensor, ValueId};
use std::collections::HashMap;

/// One planned codebook step.
#[derive(Clone, Debug)]
pub struct Step {
    /// The lowered lookup.
    pub pattern: CodebookPattern,
    /// True when the step runs at a MatMul/Gemm/Conv reader (fused GEMM or Conv);
    /// false when it decodes the weight at the `Gather`.
    pub fused: bool,
}

impl Step {
    /// The nodes this step replaces (the executor skips them).
    pub fn absorbed(&self) -> Vec<NodeId> {
        let p = &self.pattern;
        let mut out = vec![p.cast];
        out.extend(p.add);
        if self.fused {
            out.push(p.gather);
        }
        out
    }

    /// The nodes of the lookup in order, for running them apart.
    pub fn nodes(&self) -> Vec<NodeId> {
        let p = &self.pattern;
        let mut out = vec![p.cast];
        out.extend(p.add);
        out.push(p.gather);
        out
    }
}

/// Steps keyed by the node they run at: the MatMul/Gemm/Conv reader (fused, when
/// `fuse` is set) or the `Gather`.
pub fn plan(g: &Graph, order: &[NodeId], fuse: bool) -> HashMap<NodeId, Step> {
    let mut plan = HashMap::new();
    for &id in order {
        let node = g.node(id);
        if !matches!(node.op, Op::Gather { .. }) {
            continue;
        }
        let Some(v) = node.output(0) else { continue };
        let Some(pattern) = CodebookPattern::find(g, v) else {
            continue;
        };
        let reader = match g.value(v).uses() {
            [u] if fuse && !g.is_output(v) => {
                let r = g.node(u.node());
                let is_b = r.input(1) == Some(v)
                    && r.inputs()
                        .iter()
                        .enumerate()
                        .all(|(i, s)| i == 1 || *s != Some(v));
                let takes = match r.op {
                    Op::MatMul | Op::Gemm { .. } => g
                        .const_data(pattern.indices)
                        .is_some_and(|t| t.shape().len() == 2),
                    Op::Conv(_) => weight_of(g, &pattern).is_some_and(|w| cb_conv::supported(&w)),
                    _ => false,
                };
                (is_b && takes && r.outputs().len() == 1).then(|| u.node())
            }
            _ => None,
        };
        match reader {
            Some(r) => plan.insert(
                r,
                Step {
                    pattern,
                    fused: true,
                },
            ),
            None => plan.insert(
                id,
                Step {
                    pattern,
                    fused: false,
                },
            ),
        };
    }
    plan
}

/// The constant weight of a step.
fn weight_of<'a>(g: &'a Graph, p: &CodebookPattern) -> Option<CbWeight<'a>> {
    Some(CbWeight {
        indices: g.const_data(p.indices)?,
        table: g.const_data(p.table)?,
        offsets: match p.offsets {
            Some(o) => Some(g.const_data(o)?),
            None => None,
        },
    })
}

/// Runs step `s` at node `id`: the reader's output (fused GEMM or Conv, followed by
/// activation `act`, which only a Conv reader takes: `Ok(None)` for MatMul/Gemm with an
/// activation) or the decoded weight (at the `Gather`). `Ok(None)` when the kernel
/// cannot take these inputs (the caller then runs the step's nodes apart). `value`
/// looks up the reader's other inputs.
pub fn run<'a>(
    g: &'a Graph,
    id: NodeId,
    s: &Step,
    value: impl Fn(ValueId) -> Option<&'a Tensor>,
    act: Option<Activation>,
    cx: &KernelCx<'_>,
) -> Result<Option<Tensor>> {
    let at = |e: Error| Error::invalid(format!("node {}: {e}", g.node_label(id)));
    let Some(w) = weight_of(g, &s.pattern) else {
        return Ok(None);
    };
    if !s.fused {
        return cb_gemm::decode(&w).map_err(at);
    }
    let Some(reader) = reader_of(g, id, value, act)? else {
        return Ok(None);
    };
    match reader {
        Reader::Conv { attrs, x, bias } => {
            cb_conv::cb_conv(attrs, x, &w, bias, act, cx).map_err(at)
        }
        Reader::MatMul { x } => cb_gemm::cb_matmul(x, &w, cx).map_err(at),
        Reader::Gemm {
            a,
            c,
            alpha,
            beta,
            trans_a,
            trans_b,
        } => cb_gemm::cb_gemm(a, &w, c, alpha, beta, trans_a, trans_b, cx).map_err(at),
    }
}

#[cfg(test)]
mod tests {
    use crate::cpu::CpuExecutor;
    use cc_ir::compressed::pack_4bit;
    use cc_ir::types::known_shape;
    use cc_ir::{CodebookWeight, Compressed, DType, Executor, Graph, Op, Tensor, ValueType};

    /// x[3, 40] -> MatMul(x, W [40, 24] codebook) -> y, and y -> Gather(W', ids) for a
    /// second (embedding-like) codebook weight read by a Gather.
    fn graph(axis: Option<usize>) -> Graph {
        let mut g = Graph::new("g");
        let x = g
            .add_value(
                "x",
                Some(ValueType::tensor(DType::F32, known_shape(&[3, 40]))),
            )
            .unwrap();
        let ids = g
            .add_value(
                "ids",
                Some(ValueType::tensor(DType::I64, known_shape(&[2]))),
            )
            .unwrap();
        let mk = |g: &mut Graph, name: &str, rows: usize, cols: usize, axis: Option<usize>| {
            let idx: Vec<i32> = (0..rows * cols)
                .map(|i| ((i * 11 + i / 7) % 16) as i32)
                .collect();
            let ch = match axis {
                Some(0) => rows,
                Some(_) => cols,
                None => 1,
            };
            let cents: Vec<f32> = (0..ch * 16)
                .map(|i| ((i * 29 % 31) as f32 - 15.0) / 10.0)
                .collect();
            let centroids = match axis {
                Some(_) => Tensor::from_f32(vec![ch, 16], cents).unwrap(),
                None => Tensor::from_f32(vec![16], cents).unwrap(),
            };
            let w = g
                .add_value(
                    name,
                    Some(ValueType::tensor(DType::F32, known_shape(&[rows, cols]))),
                )
                .unwrap();
            g.value_mut(w).compressed = Some(Compressed::Codebook(CodebookWeight {
                indices: Tensor::from_raw(DType::U4, vec![rows, cols], pack_4bit(&idx).into())
                    .unwrap(),
                centroids,
                axis,
            }));
            w
        };
        let w = mk(&mut g, "w", 40, 24, axis.map(|_| 1));
        let e = mk(&mut g, "e", 10, 24, axis.map(|_| 0));
        let y = g.add_value("y", None).unwrap();
        let z = g.add_value("z", None).unwrap();
        g.add_node("mm", Op::MatMul, vec![Some(x), Some(w)], vec![Some(y)])
            .unwrap();
        g.add_node(
            "emb",
            Op::Gather { axis: None },
            vec![Some(e), Some(ids)],
            vec![Some(z)],
        )
        .unwrap();
        g.set_inputs(vec![x, ids]);
        g.set_outputs(vec![y, z]);
        g.meta.opset_imports = vec![(String::new(), 21)];
        g
    }

    #[test]
    fn codebook_weights_run_fused_and_decoded_and_match_the_reference() {
        let xs: Vec<f32> = (0..120)
            .map(|i| ((i * 7 % 23) as f32 - 11.0) / 10.0)
            .collect();
        let x = Tensor::from_f32(vec![3, 40], xs.clone()).unwrap();
        let ids = Tensor::from_i64(vec![2], vec![7, 2]).unwrap();
        let ex = CpuExecutor::new(2).unwrap();
        for axis in [None, Some(0)] {
            let g = graph(axis);
            let before = ex.fused_cb_gemms();
            let out = ex.run(&g, &[x.clone(), ids.clone()]).unwrap();
            let fused = u64::from(crate::cpu::fusion::enabled());
            assert_eq!(ex.fused_cb_gemms() - before, fused);
            let decoded = |name: &str| {
                let v = g.value_by_name(name).unwrap();
                let Some(Compressed::Codebook(cw)) = &g.value(v).compressed else {
                    panic!()
                };
                cc_ir::compressed::codebook::decode(cw).unwrap()
            };
            let (w, e) = (decoded("w"), decoded("e"));
            let y = out[0].to_f32().unwrap();
            for (r, c) in [(0, 0), (2, 23), (1, 7)] {
                let want: f32 = (0..40).map(|k| xs[r * 40 + k] * w[k * 24 + c]).sum();
                assert!((y[r * 24 + c] - want).abs() < 1e-4 * (1.0 + want.abs()));
            }
            let z = out[1].to_f32().unwrap();
            assert_eq!(&z[..24], &e[7 * 24..8 * 24]);
            assert_eq!(&z[24..], &e[2 * 24..3 * 24]);
        }
    }
}
