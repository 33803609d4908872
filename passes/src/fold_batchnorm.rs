//! `fold-batchnorm`: folds an inference BatchNormalization into the Conv or Gemm that
//! feeds it.
//!
//! With `s = scale / sqrt(var + eps)`, BN(z) = s * (z - mean) + bias. For `z = conv(x, W) + b`
//! this is `conv(x, W * s) + (b - mean) * s + bias` (W scaled per output channel, any
//! group count). For Gemm `z = alpha * A * B + beta * C` (B constant, transB honoured) it
//! is `alpha * A * (B * s) + (s * (beta * C - mean) + bias)`, with the new C written for
//! beta = 1. The arithmetic runs in f64 and rounds once to f32. New weights get fresh
//! names (the old ones may be shared); the BN's output value takes the producer's output
//! slot, so its name (possibly a graph output) is kept.

use crate::error::PassError;
use crate::pass::{Changed, Pass, PassCx};
use crate::registry::PassInfo;
use cc_ir::{DType, Graph, NodeId, Op, Tensor, ValueId};

inventory::submit! {
    PassInfo {
        name: "fold-batchnorm",
        summary: "fold inference BatchNormalization into the preceding Conv/Gemm weights (exact)",
        options: &[],
        create: |_| Ok(Box::new(FoldBatchNorm)),
    }
}

/// The BatchNorm folding pass.
#[derive(Clone, Copy, Debug, Default)]
pub struct FoldBatchNorm;

/// A constant usable as a folding operand: not a graph input (which could be overridden).
fn konst(g: &Graph, v: Option<ValueId>) -> Option<&Tensor> {
    let v = v?;
    if g.is_input(v) {
        return None;
    }
    g.const_data(v)
}

/// A 1-D f32/f64 constant of length `c`, widened to f64.
fn channel_vec(g: &Graph, v: Option<ValueId>, c: usize) -> Option<Vec<f64>> {
    let t = konst(g, v)?;
    if t.shape() != [c] {
        return None;
    }
    match t.dtype() {
        DType::F32 => Some(t.to_f32().ok()?.into_iter().map(f64::from).collect()),
        DType::F64 => t.to_f64().ok(),
        _ => None,
    }
}

/// An f32 constant's elements and shape.
fn f32_const(g: &Graph, v: Option<ValueId>) -> Option<(Vec<f32>, Vec<usize>)> {
    let t = konst(g, v)?;
    (t.dtype() == DType::F32).then_some(())?;
    Some((t.to_f32().ok()?, t.shape().to_vec()))
}

/// New weight (with its shape) and bias for the producer.
struct Folded {
    weight: Vec<f32>,
    weight_shape: Vec<usize>,
    bias: Vec<f32>,
}

/// BN parameters reduced to per-channel multiplier and shift: y = s*z + t, t = bias - s*mean.
struct Affine {
    s: Vec<f64>,
    mean: Vec<f64>,
    bias: Vec<f64>,
}

fn fold_conv(g: &Graph, p: NodeId, bn: &Affine) -> Option<Folded> {
    let node = g.node(p);
    let c = bn.s.len();
    let (w, shape) = f32_const(g, node.input(1))?;
    if shape.first() != Some(&c) || w.is_empty() {
        return None;
    }
    let b0 = match node.input(2) {
        None => vec![0.0; c],
        Some(_) => {
            let (b, bs) = f32_const(g, node.input(2))?;
            (bs == [c]).then_some(b.into_iter().map(f64::from).collect::<Vec<f64>>())?
        }
    };
    let per = w.len() / c;
    let weight = w
        .iter()
        .enumerate()
        .map(|(i, &x)| (f64::from(x) * bn.s[i / per]) as f32)
        .collect();
    let bias = (0..c)
        .map(|m| ((b0[m] - bn.mean[m]) * bn.s[m] + bn.bias[m]) as f32)
        .collect();
    Some(Folded {
        weight,
        weight_shape: shape,
        bias,
    })
}

fn fold_gemm(g: &Graph, p: NodeId, bn: &Affine) -> Option<Folded> {
    let node = g.node(p);
    let Op::Gemm { beta, trans_b, .. } = &node.op else {
        return None;
    };
    let c = bn.s.len();
    let (w, shape) = f32_const(g, node.input(1))?;
    let trans = trans_b.unwrap_or(0) != 0;
    let [r, k] = shape.as_slice() else {
        return None;
    };
    let n = if trans { *r } else { *k };
    if n != c || w.is_empty() {
        return None;
    }
    let beta = f64::from(beta.unwrap_or(1.0));
    // C must broadcast along rows only: scalar, [1], [N] or [1, N].
    let c0: Vec<f64> = match node.input(2) {
        None => vec![0.0; c],
        Some(_) => {
            let (cv, cs) = f32_const(g, node.input(2))?;
            let cv: Vec<f64> = cv.into_iter().map(f64::from).collect();
            match cs.as_slice() {
                [] | [1] | [1, 1] => vec![cv[0]; c],
                [m] | [1, m] if *m == c => cv,
                _ => return None,
            }
        }
    };
    let weight = w
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let ch = if trans { i / k } else { i % k };
            (f64::from(x) * bn.s[ch]) as f32
        })
        .collect();
    let bias = (0..c)
        .map(|m| (bn.s[m] * (beta * c0[m] - bn.mean[m]) + bn.bias[m]) as f32)
        .collect();
    Some(Folded {
        weight,
        weight_shape: shape,
        bias,
    })
}

impl FoldBatchNorm {
    fn try_fold(g: &mut Graph, bn_node: NodeId) -> Result<bool, PassError> {
        let node = g.node(bn_node);
        let Op::BatchNormalization {
            epsilon,
            training_mode,
            ..
        } = &node.op
        else {
            return Ok(false);
        };
        if training_mode.unwrap_or(0) != 0 || node.outputs().iter().flatten().count() != 1 {
            return Ok(false);
        }
        let (Some(x), Some(y)) = (node.input(0), node.output(0)) else {
            return Ok(false);
        };
        let Some((p, slot)) = g.value(x).producer() else {
            return Ok(false);
        };
        if g.value(x).uses().len() != 1 || g.is_output(x) {
            return Ok(false);
        }
        let c = match konst(g, node.input(1)) {
            Some(t) if t.shape().len() == 1 => t.shape()[0],
            _ => return Ok(false),
        };
        let eps = f64::from(epsilon.unwrap_or(1e-5));
        let (Some(scale), Some(bias), Some(mean), Some(var)) = (
            channel_vec(g, node.input(1), c),
            channel_vec(g, node.input(2), c),
            channel_vec(g, node.input(3), c),
            channel_vec(g, node.input(4), c),
        ) else {
            return Ok(false);
        };
        let affine = Affine {
            s: scale
                .iter()
                .zip(&var)
                .map(|(sc, v)| sc / (v + eps).sqrt())
                .collect(),
            mean,
            bias,
        };
        let folded = match &g.node(p).op {
            Op::Conv(_) => fold_conv(g, p, &affine),
            Op::Gemm { .. } => fold_gemm(g, p, &affine),
            _ => None,
        };
        let Some(f) = folded else {
            return Ok(false);
        };
        let base = |slot: usize, suffix: &str| {
            let name = g
                .node(p)
                .input(slot)
                .map(|v| g.value(v).name().to_string())
                .unwrap_or_else(|| g.value(y).name().to_string());
            format!("{name}_{suffix}")
        };
        let (wname, bname) = (base(1, "bnfold"), base(2, "bnfold"));
        let wname = g.unique_name(&wname);
        let w = g.add_const(&wname, Tensor::from_f32(f.weight_shape, f.weight)?)?;
        let bname = g.unique_name(&bname);
        let b = g.add_const(&bname, Tensor::from_f32(vec![c], f.bias)?)?;
        g.set_input(p, 1, Some(w));
        g.set_input(p, 2, Some(b));
        if let Op::Gemm { beta, .. } = &mut g.node_mut(p).op {
            *beta = None;
        }
        g.remove_node(bn_node);
        g.set_output(p, slot, Some(y))?;
        Ok(true)
    }
}

impl Pass for FoldBatchNorm {
    fn name(&self) -> &str {
        "fold-batchnorm"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let mut folded = 0usize;
        for n in g.topo_order()? {
            if g.contains_node(n)
                && matches!(g.node(n).op, Op::BatchNormalization { .. })
                && Self::try_fold(g, n)?
            {
                folded += 1;
            }
        }
        cx.stat("folded", folded);
        Ok(Changed(folded > 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_ir::op::ConvAttrs;

    const C_IN: usize = 2;
    const C_OUT: usize = 3;
    const W: [f32; 6] = [0.5, -1.0, 2.0, 0.25, -0.75, 1.5];
    const B: [f32; 3] = [0.1, -0.2, 0.3];
    const SCALE: [f32; 3] = [1.5, 0.5, -2.0];
    const SHIFT: [f32; 3] = [0.05, 1.0, -0.5];
    const MEAN: [f32; 3] = [0.2, -0.4, 1.0];
    const VAR: [f32; 3] = [0.9, 2.5, 0.1];
    const EPS: f32 = 1e-3;

    fn vec_const(g: &mut Graph, name: &str, v: &[f32]) -> ValueId {
        g.add_const(name, Tensor::from_f32(vec![v.len()], v.to_vec()).unwrap())
            .unwrap()
    }

    fn bn_params(g: &mut Graph) -> Vec<Option<ValueId>> {
        vec![
            Some(vec_const(g, "scale", &SCALE)),
            Some(vec_const(g, "shift", &SHIFT)),
            Some(vec_const(g, "mean", &MEAN)),
            Some(vec_const(g, "var", &VAR)),
        ]
    }

    fn bn_op() -> Op {
        Op::BatchNormalization {
            epsilon: Some(EPS),
            momentum: None,
            training_mode: None,
        }
    }

    /// x[1,2,1,1] -> Conv 1x1 (W, B) -> BN -> y (graph output).
    fn conv_bn() -> Graph {
        let mut g = Graph::new("g");
        let x = g.add_value("x", None).unwrap();
        let w = g
            .add_const(
                "w",
                Tensor::from_f32(vec![C_OUT, C_IN, 1, 1], W.to_vec()).unwrap(),
            )
            .unwrap();
        let b = vec_const(&mut g, "b", &B);
        let z = g.add_value("z", None).unwrap();
        let y = g.add_value("y", None).unwrap();
        g.add_node(
            "conv",
            Op::Conv(ConvAttrs::default()),
            vec![Some(x), Some(w), Some(b)],
            vec![Some(z)],
        )
        .unwrap();
        let mut ins = vec![Some(z)];
        ins.extend(bn_params(&mut g));
        g.add_node("bn", bn_op(), ins, vec![Some(y)]).unwrap();
        g.set_inputs(vec![x]);
        g.set_outputs(vec![y]);
        g
    }

    /// A 1x1 convolution on one pixel: out[m] = sum_c w[m,c] x[c] + b[m].
    fn conv1x1(x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
        (0..C_OUT)
            .map(|m| (0..C_IN).map(|c| w[m * C_IN + c] * x[c]).sum::<f32>() + b[m])
            .collect()
    }

    fn bn(z: &[f32]) -> Vec<f32> {
        (0..C_OUT)
            .map(|m| (z[m] - MEAN[m]) / (VAR[m] + EPS).sqrt() * SCALE[m] + SHIFT[m])
            .collect()
    }

    fn run(g: &mut Graph) -> Vec<(String, crate::pass::Stat)> {
        let mut cx = PassCx::new(0);
        FoldBatchNorm.run(g, &mut cx).unwrap();
        cc_ir::verify::verify(g).unwrap();
        cx.take_stats()
    }

    fn weights_of(g: &Graph, node: NodeId) -> (Vec<f32>, Vec<f32>) {
        let n = g.node(node);
        (
            g.const_data(n.input(1).unwrap()).unwrap().to_f32().unwrap(),
            g.const_data(n.input(2).unwrap()).unwrap().to_f32().unwrap(),
        )
    }

    #[test]
    fn conv_bn_folds_numerically_exact() {
        let mut g = conv_bn();
        let stats = run(&mut g);
        assert_eq!(stats, vec![("folded".into(), crate::pass::Stat::Int(1))]);
        assert_eq!(g.node_count(), 1);
        let conv = g.node_ids()[0];
        let y = g.value_by_name("y").unwrap();
        assert_eq!(g.node(conv).output(0), Some(y), "graph output name kept");
        assert_eq!(g.outputs(), &[y]);
        let (w2, b2) = weights_of(&g, conv);
        // The original weights are untouched (they may be shared).
        let w = g.value_by_name("w").unwrap();
        assert_eq!(g.const_data(w).unwrap().to_f32().unwrap(), W.to_vec());
        assert_ne!(g.node(conv).input(1), Some(w));
        for x in [[1.0f32, 2.0], [-0.5, 3.0], [0.0, 0.0]] {
            let want = bn(&conv1x1(&x, &W, &B));
            let got = conv1x1(&x, &w2, &b2);
            for (a, b) in want.iter().zip(&got) {
                assert!((a - b).abs() < 1e-5, "{want:?} vs {got:?}");
            }
        }
    }

    #[test]
    fn gemm_bn_with_trans_b_alpha_beta() {
        for trans in [0i64, 1] {
            let mut g = Graph::new("g");
            let a = g.add_value("a", None).unwrap();
            // B as [K=2, N=3] or transposed [N=3, K=2]; both hold W[m, c] semantics.
            let bt: Vec<f32> = if trans == 1 {
                W.to_vec()
            } else {
                (0..C_IN * C_OUT)
                    .map(|i| W[(i % C_OUT) * C_IN + i / C_OUT])
                    .collect()
            };
            let shape = if trans == 1 { vec![3, 2] } else { vec![2, 3] };
            let bw = g
                .add_const("bw", Tensor::from_f32(shape, bt).unwrap())
                .unwrap();
            let c = vec_const(&mut g, "c", &B);
            let z = g.add_value("z", None).unwrap();
            let y = g.add_value("y", None).unwrap();
            let r = g.add_value("r", None).unwrap();
            let gemm = g
                .add_node(
                    "gemm",
                    Op::Gemm {
                        alpha: Some(2.0),
                        beta: Some(0.5),
                        trans_a: None,
                        trans_b: Some(trans),
                    },
                    vec![Some(a), Some(bw), Some(c)],
                    vec![Some(z)],
                )
                .unwrap();
            let mut ins = vec![Some(z)];
            ins.extend(bn_params(&mut g));
            g.add_node("bn", bn_op(), ins, vec![Some(y)]).unwrap();
            g.add_node(
                "relu",
                Op::Unary(cc_ir::op::UnaryOp::Relu),
                vec![Some(y)],
                vec![Some(r)],
            )
            .unwrap();
            g.set_inputs(vec![a]);
            g.set_outputs(vec![r]);
            run(&mut g);
            assert_eq!(g.node_count(), 2);
            let (b2, c2) = weights_of(&g, gemm);
            assert!(matches!(
                g.node(gemm).op,
                Op::Gemm {
                    beta: None,
                    alpha: Some(2.0),
                    ..
                }
            ));
            assert_eq!(g.node(gemm).output(0), Some(y));
            let x = [0.7f32, -1.3];
            let b_half: Vec<f32> = B.iter().map(|v| v * 0.5).collect();
            let w_alpha: Vec<f32> = W.iter().map(|v| v * 2.0).collect();
            let want = bn(&conv1x1(&x, &w_alpha, &b_half));
            let w2: Vec<f32> = if trans == 1 {
                b2.iter().map(|v| v * 2.0).collect()
            } else {
                (0..6)
                    .map(|i| b2[(i % C_IN) * C_OUT + i / C_IN] * 2.0)
                    .collect()
            };
            let got = conv1x1(&x, &w2, &c2);
            for (p, q) in want.iter().zip(&got) {
                assert!((p - q).abs() < 1e-5, "trans={trans}: {want:?} vs {got:?}");
            }
        }
    }

    #[test]
    fn leaves_unsafe_cases_alone() {
        // Conv output read twice: no fold.
        let mut g = conv_bn();
        let z = g.value_by_name("z").unwrap();
        let extra = g.add_value("extra", None).unwrap();
        g.add_node("id", Op::Identity, vec![Some(z)], vec![Some(extra)])
            .unwrap();
        run(&mut g);
        assert_eq!(g.node_count(), 3);
        // Training mode: no fold.
        let mut g = conv_bn();
        let bn_id = g.node_ids()[1];
        g.node_mut(bn_id).op = Op::BatchNormalization {
            epsilon: None,
            momentum: None,
            training_mode: Some(1),
        };
        run(&mut g);
        assert_eq!(g.node_count(), 2);
        // Non-constant mean: no fold.
        let mut g = conv_bn();
        let m = g.add_value("m_in", None).unwrap();
        let bn_id = g.node_ids()[1];
        g.set_input(bn_id, 3, Some(m));
        let x = g.inputs()[0];
        g.set_inputs(vec![x, m]);
        run(&mut g);
        assert_eq!(g.node_count(), 2);
    }
}
