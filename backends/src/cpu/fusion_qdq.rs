//! Fake-quantization fusion for the CPU executor: a per-tensor `QuantizeLinear` whose
//! only reader is a `DequantizeLinear` with the same constant scale and zero point (the
//! QDQ pair static activation quantization puts on an activation) runs as one
//! elementwise pass `y = (clamp(round(x / s) + z) - z) · s`, bit-identical to the two
//! nodes run apart; the 8-bit codes are never stored. The pair runs at the
//! QuantizeLinear's place and the DequantizeLinear node is skipped.
//!
//! Off with `CC_NO_FUSION=1`, like the other fusions ([`crate::cpu::fusion::enabled`]).

use crate::cpu::kernels::quant_fast::round_even_small;
use crate::cpu::parallel;
use cc_ir::{DType, Graph, NodeId, Op, Result, Tensor, ValueId};
use std::collections::HashMap;

/// The constant per-tensor parameters of a pair.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FakeQuant {
    /// Scale.
    pub scale: f32,
    /// Zero point.
    pub zero_point: i32,
    /// Code range of the quantized type.
    pub range: (i32, i32),
}

/// A scalar (one element) f32 constant.
fn scalar_f32(g: &Graph, v: ValueId) -> Option<f32> {
    let t = g.const_data(v)?;
    if t.dtype() != DType::F32 || t.len() != 1 {
        return None;
    }
    t.to_f32().ok()?.first().copied()
}

/// A one-element 8-bit zero point and its code range.
fn zero_point_of(g: &Graph, v: Option<ValueId>) -> Option<(i32, (i32, i32))> {
    let Some(v) = v else {
        return Some((0, (0, 255)));
    };
    let t = g.const_data(v)?;
    if t.len() != 1 {
        return None;
    }
    let b = *t.raw().ok()?.first()?;
    match t.dtype() {
        DType::U8 => Some((i32::from(b), (0, 255))),
        DType::I8 => Some((i32::from(b as i8), (-128, 127))),
        _ => None,
    }
}

/// The parameters of QuantizeLinear node `q` when it pairs with DequantizeLinear `dq`.
fn pair(g: &Graph, q: NodeId, dq: NodeId) -> Option<FakeQuant> {
    let (qn, dn) = (g.node(q), g.node(dq));
    let Op::QuantizeLinear {
        block_size,
        output_dtype,
        ..
    } = qn.op
    else {
        return None;
    };
    let Op::DequantizeLinear {
        block_size: dq_block,
        ..
    } = dn.op
    else {
        return None;
    };
    if block_size.unwrap_or(0) != 0 || dq_block.unwrap_or(0) != 0 {
        return None;
    }
    let q_zp = qn.inputs().get(2).copied().flatten();
    let d_zp = dn.inputs().get(2).copied().flatten();
    if q_zp.is_none() && output_dtype.unwrap_or(0) != 0 {
        return None;
    }
    let scale = scalar_f32(g, qn.input(1)?)?;
    let (zero_point, range) = zero_point_of(g, q_zp)?;
    let same_scale = scalar_f32(g, dn.input(1)?)? == scale;
    let same_zp = zero_point_of(g, d_zp).map(|z| z.0) == Some(zero_point);
    (same_scale && same_zp && scale != 0.0 && scale.is_finite()).then_some(FakeQuant {
        scale,
        zero_point,
        range,
    })
}

/// Maps each QuantizeLinear node to the DequantizeLinear it fuses with: per-tensor
/// constant parameters, equal in both, its codes read by that node alone and not a
/// graph output.
pub fn plan(g: &Graph, order: &[NodeId]) -> HashMap<NodeId, (NodeId, FakeQuant)> {
    let mut out = HashMap::new();
    for &id in order {
        let node = g.node(id);
        if !matches!(node.op, Op::QuantizeLinear { .. }) || node.outputs().len() != 1 {
            continue;
        }
        let Some(v) = node.output(0) else { continue };
        if g.is_output(v) {
            continue;
        }
        let [u] = g.value(v).uses() else { continue };
        let dq = u.node();
        let reader = g.node(dq);
        if reader.outputs().len() != 1 || reader.input(0) != Some(v) {
            continue;
        }
        if let Some(fq) = pair(g, id, dq) {
            out.insert(id, (dq, fq));
        }
    }
    out
}

/// `QuantizeLinear` then `DequantizeLinear` of f32 `x` in one pass; `Ok(None)` when `x`
/// is not f32 (the caller then runs the two nodes apart).
pub fn run(x: &Tensor, fq: FakeQuant) -> Result<Option<Tensor>> {
    if x.dtype() != DType::F32 {
        return Ok(None);
    }
    let xs = x.f32_view()?;
    let mut y = vec![0f32; xs.len()];
    let (lo, hi) = (fq.range.0 as f32, fq.range.1 as f32);
    let (s, z) = (fq.scale, fq.zero_point as f32);
    let nan_code = 0f32.clamp(lo, hi);
    let body = |i: usize, out: &mut [f32]| {
        let src = parallel::chunk_of(&xs, i, CHUNK);
        for (o, &v) in out.iter_mut().zip(src) {
            // Saturating values round either way to the same code (|code| < 2^22).
            let r = round_even_small(v / s);
            let q = if r.is_nan() {
                nan_code
            } else {
                (r + z).clamp(lo, hi)
            };
            *o = (q - z) * s;
        }
    };
    if xs.len() <= CHUNK {
        body(0, &mut y);
    } else {
        parallel::for_each_chunk(&mut y, CHUNK, &body);
    }
    Ok(Some(Tensor::from_f32_vec(x.shape().to_vec(), y)?))
}

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::CpuExecutor;
    use cc_ir::types::known_shape;
    use cc_ir::{Executor, ValueType};

    /// x -> QuantizeLinear(s, z) -> DequantizeLinear(s, z) -> y; with `share` the codes
    /// are a graph output too (no fusion).
    fn graph(zp: Tensor, share: bool) -> Graph {
        let mut g = Graph::new("g");
        let x = g
            .add_value(
                "x",
                Some(ValueType::tensor(DType::F32, known_shape(&[5, 7000]))),
            )
            .unwrap();
        let s = g
            .add_const("s", Tensor::from_f32(vec![], vec![0.037]).unwrap())
            .unwrap();
        let z = g.add_const("z", zp).unwrap();
        let q = g.add_value("q", None).unwrap();
        let y = g.add_value("y", None).unwrap();
        g.add_node(
            "quant",
            Op::QuantizeLinear {
                axis: None,
                saturate: None,
                block_size: None,
                output_dtype: None,
            },
            vec![Some(x), Some(s), Some(z)],
            vec![Some(q)],
        )
        .unwrap();
        g.add_node(
            "dequant",
            Op::DequantizeLinear {
                axis: None,
                block_size: None,
            },
            vec![Some(q), Some(s), Some(z)],
            vec![Some(y)],
        )
        .unwrap();
        g.set_inputs(vec![x]);
        g.set_outputs(if share { vec![y, q] } else { vec![y] });
        g
    }

    #[test]
    fn fused_fake_quant_is_bit_identical_to_the_two_nodes() {
        let mut xs: Vec<f32> = (0..35000)
            .map(|i| ((i * 7919 % 10007) as f32 - 5003.0) / 800.0)
            .collect();
        // Exact ties, saturation and NaN.
        xs[0] = 0.037 * 2.5;
        xs[1] = 0.037 * -3.5;
        xs[2] = 1e9;
        xs[3] = -1e9;
        xs[4] = f32::NAN;
        xs[5] = -1e-9;
        xs[6] = -0.0;
        let x = Tensor::from_f32(vec![5, 7000], xs).unwrap();
        let ex = CpuExecutor::new(2).unwrap();
        for zp in [
            Tensor::from_raw(DType::U8, vec![], vec![131u8].into()).unwrap(),
            Tensor::from_raw(DType::U8, vec![], vec![0u8].into()).unwrap(),
            Tensor::from_raw(DType::I8, vec![], vec![(-5i8) as u8].into()).unwrap(),
        ] {
            let fused = graph(zp.clone(), false);
            let order = fused.topo_order().unwrap();
            assert_eq!(plan(&fused, &order).len(), 1);
            let apart = graph(zp, true);
            assert!(plan(&apart, &apart.topo_order().unwrap()).is_empty());
            let before = ex.fused_fake_quants();
            let a = ex.run(&fused, std::slice::from_ref(&x)).unwrap();
            let one = u64::from(crate::cpu::fusion::enabled());
            assert_eq!(ex.fused_fake_quants(), before + one);
            let b = ex.run(&apart, std::slice::from_ref(&x)).unwrap();
            let (a, b) = (a[0].to_f32().unwrap(), b[0].to_f32().unwrap());
            assert_eq!(a.len(), b.len());
            for (i, (p, q)) in a.iter().zip(&b).enumerate() {
                assert_eq!(p.to_bits(), q.to_bits(), "at {i}: {p} vs {q}");
            }
            // Few distinct values: the output is on the quantization grid.
            let k = (a[7] / 0.037).round();
            assert!((a[7] - k * 0.037).abs() < 1e-5);
        }
    }
}
