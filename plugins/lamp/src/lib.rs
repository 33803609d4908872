//! An example cc-compile plugin: `lamp`, unstructured pruning with layer-adaptive
//! magnitude scores (Lee et al., "Layer-adaptive sparsity for the magnitude-based
//! pruning", ICLR 2021).
//!
//! Each weight's score is its squared magnitude divided by the sum of the squared
//! magnitudes of every weight of its layer that is at least as large. Scores are
//! comparable across layers, so one global threshold prunes `ratio` of all selected
//! weights while choosing each layer's sparsity by itself; every layer keeps its
//! largest weight (score 1). No data needed.
//!
//! Built as a `cdylib` against the cc-plugin SDK only:
//! `cc-compile --plugin target/release/libcc_plugin_lamp.so --passes 'lamp{ratio=0.5},quant' m.onnx`.

use cc_plugin::cc_ir::{DType, Graph, Op, Tensor, ValueId};
use cc_plugin::{OptionDecl, PassContext, PassError, PluginPass};

/// The `lamp` pass.
pub struct Lamp;

impl PluginPass for Lamp {
    const NAME: &'static str = "lamp";
    const SUMMARY: &'static str =
        "unstructured pruning by layer-adaptive magnitude (LAMP) scores, one global threshold";
    const OPTIONS: &'static [OptionDecl] = &[
        OptionDecl::float(
            "ratio",
            "0.5",
            "fraction of the selected weights set to zero (0..1)",
        ),
        OptionDecl::str(
            "ops",
            "Conv|Gemm|MatMul",
            "op types whose constant weights are pruned (|-separated)",
        ),
    ];

    fn run(g: &mut Graph, cx: &mut PassContext) -> Result<(), PassError> {
        let ratio = cx.options.f64("ratio")?;
        if !(0.0..1.0).contains(&ratio) {
            return Err(format!("option ratio={ratio} is not in [0, 1)").into());
        }
        let ops: Vec<String> = cx
            .options
            .str("ops")?
            .split('|')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let layers = selected_weights(g, &ops)?;
        let params: usize = layers.iter().map(|(_, w)| w.len()).sum();
        let prune = (ratio * params as f64).floor() as usize;
        let masks = lamp_masks(&layers, prune);
        let n_layers = layers.len();
        let mut zeroed = 0usize;
        let mut densest = 0.0f64;
        let mut sparsest = 1.0f64;
        for ((id, mut w), mask) in layers.into_iter().zip(masks) {
            let before = w.iter().filter(|x| **x != 0.0).count();
            for (x, keep) in w.iter_mut().zip(&mask) {
                if !keep {
                    *x = 0.0;
                }
            }
            let after = w.iter().filter(|x| **x != 0.0).count();
            zeroed += before - after;
            let density = after as f64 / w.len().max(1) as f64;
            densest = densest.max(density);
            sparsest = sparsest.min(density);
            let shape = g
                .const_data(id)
                .map(|t| t.shape().to_vec())
                .ok_or("a selected weight lost its data")?;
            g.value_mut(id).data = Some(Tensor::from_f32_vec(shape, w)?);
        }
        cx.stat("weights", n_layers);
        cx.stat("params", params);
        cx.stat("zeroed", zeroed);
        cx.stat("sparsity", zeroed as f64 / params.max(1) as f64);
        cx.stat("min_layer_density", sparsest);
        cx.stat("max_layer_density", densest);
        Ok(())
    }
}

/// The constant f32 weights (rank ≥ 2) read as input 1 of a selected MatMul, Gemm or
/// Conv, each once, in node order, with their values.
fn selected_weights(g: &Graph, ops: &[String]) -> Result<Vec<(ValueId, Vec<f32>)>, PassError> {
    let mut out: Vec<(ValueId, Vec<f32>)> = Vec::new();
    for id in g.topo_order()? {
        let node = g.node(id);
        let op = match node.op {
            Op::MatMul => "MatMul",
            Op::Gemm { .. } => "Gemm",
            Op::Conv { .. } => "Conv",
            _ => continue,
        };
        if !ops.iter().any(|o| o == op) {
            continue;
        }
        let Some(w) = node.input(1) else { continue };
        let Some(t) = g.const_data(w) else { continue };
        if t.dtype() != DType::F32 || t.shape().len() < 2 || out.iter().any(|(v, _)| *v == w) {
            continue;
        }
        out.push((w, t.f32_view()?.into_owned()));
    }
    Ok(out)
}

/// LAMP scores of one layer: w_u² / Σ_{v : |w_v| ≥ |w_u|} w_v² (ties ordered by index).
fn lamp_scores(w: &[f32]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..w.len()).collect();
    let sq = |i: usize| f64::from(w[i]) * f64::from(w[i]);
    order.sort_by(|&a, &b| sq(a).total_cmp(&sq(b)).then(a.cmp(&b)));
    let mut scores = vec![0.0; w.len()];
    let mut tail = 0.0f64;
    for &i in order.iter().rev() {
        tail += sq(i);
        scores[i] = if tail > 0.0 { sq(i) / tail } else { 0.0 };
    }
    scores
}

/// Keep-masks that drop the `prune` lowest-scored weights over all layers (ties broken
/// by layer, then position, so the result is deterministic).
fn lamp_masks(layers: &[(ValueId, Vec<f32>)], prune: usize) -> Vec<Vec<bool>> {
    let scores: Vec<Vec<f64>> = layers.iter().map(|(_, w)| lamp_scores(w)).collect();
    let mut all: Vec<(f64, usize, usize)> = scores
        .iter()
        .enumerate()
        .flat_map(|(l, s)| s.iter().enumerate().map(move |(i, &v)| (v, l, i)))
        .collect();
    let mut masks: Vec<Vec<bool>> = layers.iter().map(|(_, w)| vec![true; w.len()]).collect();
    let prune = prune.min(all.len());
    if prune == 0 {
        return masks;
    }
    let cmp = |a: &(f64, usize, usize), b: &(f64, usize, usize)| {
        a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2))
    };
    all.select_nth_unstable_by(prune - 1, cmp);
    for &(_, l, i) in &all[..prune] {
        if let Some(m) = masks.get_mut(l).and_then(|m| m.get_mut(i)) {
            *m = false;
        }
    }
    masks
}

cc_plugin::export_plugin!("lamp", [Lamp]);

#[cfg(test)]
mod tests {
    use super::*;
    use cc_plugin::cc_ir::ir_wire;

    /// x -> MatMul(w1) -> MatMul(w2) -> y with weights of different scales.
    fn graph() -> Graph {
        let mut g = Graph::new("g");
        let x = g.add_value("x", None).unwrap();
        let h = g.add_value("h", None).unwrap();
        let y = g.add_value("y", None).unwrap();
        let w1 = g.add_value("w1", None).unwrap();
        let w2 = g.add_value("w2", None).unwrap();
        let big: Vec<f32> = (0..16).map(|i| (i as f32 - 7.5) * 10.0).collect();
        let small: Vec<f32> = (0..8).map(|i| (i as f32 - 3.5) * 0.01).collect();
        g.value_mut(w1).data = Some(Tensor::from_f32_vec(vec![4, 4], big).unwrap());
        g.value_mut(w2).data = Some(Tensor::from_f32_vec(vec![4, 2], small).unwrap());
        g.add_node("m1", Op::MatMul, vec![Some(x), Some(w1)], vec![Some(h)])
            .unwrap();
        g.add_node("m2", Op::MatMul, vec![Some(h), Some(w2)], vec![Some(y)])
            .unwrap();
        g.set_inputs(vec![x]);
        g.set_outputs(vec![y]);
        g
    }

    fn run(ratio: &str) -> (Graph, Vec<(String, String)>) {
        let options = format!("ratio={ratio}\nops=Conv|Gemm|MatMul\n");
        let (bytes, stats) =
            cc_plugin::run_on_bytes::<Lamp>(&ir_wire::encode(&graph()), &options, 0).unwrap();
        (ir_wire::decode(&bytes).unwrap(), stats)
    }

    fn zeros(g: &Graph, name: &str) -> usize {
        let id = g.value_by_name(name).unwrap();
        let t = g.const_data(id).unwrap();
        t.f32_view().unwrap().iter().filter(|x| **x == 0.0).count()
    }

    #[test]
    fn scores_are_relative_to_the_layer() {
        let s = lamp_scores(&[1.0, -2.0, 0.0, 2.0]);
        // Sorted by magnitude: 0, 1, 2 (index 1), 2 (index 3); tails 9, 9, 8, 4.
        assert_eq!(s, vec![1.0 / 9.0, 4.0 / 8.0, 0.0, 1.0]);
        // Scaling a layer leaves its scores unchanged.
        assert_eq!(lamp_scores(&[10.0, -20.0, 0.0, 20.0]), s);
    }

    #[test]
    fn global_ratio_spreads_over_layers_of_any_scale() {
        let (g, stats) = run("0.5");
        let (z1, z2) = (zeros(&g, "w1"), zeros(&g, "w2"));
        // 24 weights, 12 zeroed; plain global magnitude would empty w2 (its weights
        // are 1000x smaller), LAMP prunes both and keeps each layer's largest.
        assert_eq!(z1 + z2, 12);
        assert!(z2 < 8 && z1 > 0, "w1 {z1} w2 {z2}");
        let zeroed = stats.iter().find(|(k, _)| k == "zeroed").unwrap();
        assert_eq!(zeroed.1, "12");
        let (g0, _) = run("0");
        assert_eq!(zeros(&g0, "w1") + zeros(&g0, "w2"), 0);
    }

    #[test]
    fn bad_ratio_is_an_error() {
        let err = cc_plugin::run_on_bytes::<Lamp>(
            &ir_wire::encode(&graph()),
            "ratio=1.5\nops=MatMul\n",
            0,
        )
        .unwrap_err();
        assert_eq!(err, "option ratio=1.5 is not in [0, 1)");
    }
}
