//! `quant{activations=dynamic}` for Conv, as onnxruntime's `quantize_dynamic`
//! (its `ConvInteger` operator quantizer): the input goes through the shared
//! `DynamicQuantizeLinear`, the Conv becomes `ConvInteger(x_q, W_q, x_zp[, W_zp])` (same
//! attributes) → `Cast` to f32 → `Mul` by `x_scale × W_scale` → `Add` bias.
//!
//! Unlike onnxruntime (one weight scale per tensor), the weight keeps the pass's
//! per-output-channel scales: they are stored `[M, 1, …]` so the product broadcasts over
//! the channel axis of the `[N, M, …]` output, and the bias is stored `[M, 1, …]` the
//! same way (onnxruntime inserts a Reshape). onnxruntime's `ConvInteger` takes only a
//! scalar weight zero point: symmetric weights (int8, zero point 0) have none; asymmetric
//! weights whose per-channel zero points differ keep the Conv weight-only, as does a
//! Conv whose bias is not a constant.

use super::activations::{dql_for, replace_with_integer_op, ActSummary, Dql};
use super::Quant;
use crate::error::PassError;
use cc_ir::op::ConvAttrs;
use cc_ir::{Graph, NodeId, Op, Tensor, ValueId};

/// Rewrites Conv node `id` (attributes `attrs`) into the integer form; false (graph
/// unchanged) when it does not qualify.
pub(super) fn rewrite(
    q: &Quant,
    g: &mut Graph,
    id: NodeId,
    attrs: ConvAttrs,
    dqls: &mut Vec<(ValueId, Dql)>,
    sum: &mut ActSummary,
) -> Result<bool, PassError> {
    let node = g.node(id);
    let (Some(x), Some(w), Some(y)) = (node.input(0), node.input(1), node.output(0)) else {
        return Ok(false);
    };
    let bias = match node.input(2) {
        Some(b) => match g.const_data(b) {
            Some(t) => Some(t.to_f32()?),
            None => return Ok(false),
        },
        None => None,
    };
    let Some(wt) = g.const_data(w).cloned() else {
        return Ok(false);
    };
    let shape = wt.shape().to_vec();
    let (Some(&m), true) = (shape.first(), shape.len() >= 3) else {
        return Ok(false);
    };
    if bias.as_ref().is_some_and(|b| b.len() != m) {
        return Ok(false);
    }
    let wname = g.value(w).name().to_string();
    let qw = q.quantize(&wname, &wt.f32_view()?, &shape, 0, 1)?;
    // onnxruntime's ConvInteger: one weight zero point.
    let w_zp = match &qw.zero_point {
        None => None,
        Some(z) => {
            let raw = z.raw()?;
            match raw.first() {
                Some(&v) if raw.iter().all(|&r| r == v) => {
                    Some(Tensor::from_raw(z.dtype(), vec![], vec![v].into())?)
                }
                _ => return Ok(false),
            }
        }
    };
    let name = node.name.clone();
    let (xq, xs, xz) = dql_for(g, dqls, x)?;
    sum.params += wt.len();
    sum.bytes_before += wt.byte_len();
    sum.bytes_after += qw.byte_len();
    // Per-channel tensors [M, 1, ...] broadcasting over the output's channel axis.
    let mut chan = vec![1usize; shape.len() - 1];
    chan[0] = m;
    let codes = g.add_const(&g.unique_name(&format!("{wname}_quantized")), qw.q.clone())?;
    let w_scale = g.add_const(
        &g.unique_name(&format!("{wname}_scale")),
        Tensor::from_f32(chan.clone(), qw.scale.to_f32()?)?,
    )?;
    let mut ins = vec![Some(xq), Some(codes), Some(xz)];
    if let Some(z) = w_zp {
        ins.push(Some(
            g.add_const(&g.unique_name(&format!("{wname}_zero_point")), z)?,
        ));
    }
    let has_bias = bias.is_some();
    let make_bias = |g: &mut Graph| -> Result<Option<ValueId>, PassError> {
        let Some(b) = bias else { return Ok(None) };
        Ok(Some(g.add_const(
            &g.unique_name(&format!("{name}_bias")),
            Tensor::from_f32(chan, b)?,
        )?))
    };
    replace_with_integer_op(
        g,
        (id, y, &name),
        ("ConvInteger", Op::ConvInteger(attrs), ins),
        (xs, w_scale),
        has_bias,
        make_bias,
    )?;
    sum.ops += 1;
    sum.convs += 1;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use crate::options::Options;
    use crate::pass::{Pass, PassCx};
    use cc_ir::op::ConvAttrs;
    use cc_ir::types::{known_shape, ValueType};
    use cc_ir::{DType, Executor, Graph, Op, Tensor};

    /// x[2, 4, 9, 9] → Conv 3x3 (8 channels, pads 1, bias) → y.
    fn conv_graph() -> Graph {
        let mut g = Graph::new("g");
        let x = g
            .add_value(
                "x",
                Some(ValueType::tensor(DType::F32, known_shape(&[2, 4, 9, 9]))),
            )
            .unwrap();
        let w: Vec<f32> = (0..8 * 4 * 9)
            .map(|j| ((j * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let w = g
            .add_const("w", Tensor::from_f32(vec![8, 4, 3, 3], w).unwrap())
            .unwrap();
        let b: Vec<f32> = (0..8).map(|i| i as f32 * 0.25 - 1.0).collect();
        let b = g
            .add_const("b", Tensor::from_f32(vec![8], b).unwrap())
            .unwrap();
        let y = g.add_value("y", None).unwrap();
        let a = ConvAttrs {
            pads: Some(vec![1, 1, 1, 1]),
            ..ConvAttrs::default()
        };
        g.add_node(
            "conv",
            Op::Conv(a),
            vec![Some(x), Some(w), Some(b)],
            vec![Some(y)],
        )
        .unwrap();
        g.set_inputs(vec![x]);
        g.set_outputs(vec![y]);
        g
    }

    fn quantized(spec: &str) -> Graph {
        let o = Options::parse(
            "quant",
            crate::registry::lookup("quant").unwrap().options,
            &spec
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let mut q = super::Quant::from_options(&o).unwrap();
        let mut g = conv_graph();
        let mut cx = PassCx::new(0);
        q.run(&mut g, &mut cx).unwrap();
        cc_ir::verify::verify(&g).unwrap();
        g
    }

    fn ops(g: &Graph) -> Vec<&str> {
        g.topo_order()
            .unwrap()
            .into_iter()
            .map(|id| g.node(id).op.onnx_type().1)
            .collect()
    }

    #[test]
    fn dynamic_rewrites_conv_into_conv_integer_with_channel_scales() {
        let g = quantized("activations=dynamic");
        assert_eq!(
            ops(&g),
            [
                "DynamicQuantizeLinear",
                "ConvInteger",
                "Cast",
                "Mul",
                "Mul",
                "Add"
            ]
        );
        let codes = g
            .const_data(g.value_by_name("w_quantized").unwrap())
            .unwrap();
        assert_eq!(
            (codes.dtype(), codes.shape()),
            (DType::I8, &[8usize, 4, 3, 3][..])
        );
        let s = g.const_data(g.value_by_name("w_scale").unwrap()).unwrap();
        assert_eq!(s.shape(), &[8, 1, 1]);
        // Close to the f32 convolution.
        let xs: Vec<f32> = (0..2 * 4 * 81)
            .map(|i| ((i * 53) % 97) as f32 / 30.0 - 1.2)
            .collect();
        let x = Tensor::from_f32(vec![2, 4, 9, 9], xs).unwrap();
        let ex = cc_backends::cpu::CpuExecutor::new(1).unwrap();
        let got = ex.run(&g, std::slice::from_ref(&x)).unwrap()[0]
            .to_f32()
            .unwrap();
        let want = ex.run(&conv_graph(), &[x]).unwrap()[0].to_f32().unwrap();
        let m = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = got
            .iter()
            .zip(&want)
            .fold(0f32, |e, (a, b)| e.max((a - b).abs() / m));
        assert!(err > 0.0 && err < 0.03, "error {err}");
    }

    #[test]
    fn asymmetric_channel_zero_points_keep_the_conv_weight_only() {
        let g = quantized("activations=dynamic,symmetric=false");
        // Per-channel zero points differ: no ConvInteger (onnxruntime takes one), the
        // weight is compressed as with activations=none.
        assert_eq!(ops(&g), ["Conv"]);
        assert!(g.value(g.value_by_name("w").unwrap()).compressed.is_some());
    }
}
