//! Normalizations, ConstantOfShape, Range and the quantization ops.

use super::{dims::unknowns, tensor, Ctx};
use crate::dtype::DType;
use crate::error::Result;
use crate::op::Op;
use crate::types::{Dim, ValueType};

type Out = Result<Vec<Option<ValueType>>>;

fn shape0(c: &Ctx) -> Option<Vec<Dim>> {
    c.shape(0).map(<[Dim]>::to_vec)
}

fn batch_norm(c: &Ctx) -> Out {
    // Training outputs (running mean/var; before opset 14 also saved mean/var) have the
    // per-channel shape of the mean input.
    let chan = c
        .shape(3)
        .or_else(|| c.shape(1))
        .map(<[Dim]>::to_vec)
        .or_else(|| c.shape(0).and_then(|x| x.get(1)).map(|d| vec![d.clone()]));
    let stat = tensor(c.elem(3).or_else(|| c.elem(0)), chan);
    let mut out = vec![tensor(c.elem(0), shape0(c))];
    out.extend(vec![stat; c.n_out().saturating_sub(1)]);
    Ok(out)
}

fn layer_norm(c: &Ctx, axis: i64, stash: Option<i64>) -> Out {
    let stash = DType::from_onnx(stash.unwrap_or(1) as i32);
    let stat_shape = match c.shape(0) {
        Some(x) => {
            let a = c.axis(axis, x.len())?;
            Some(
                x.iter()
                    .enumerate()
                    .map(|(i, d)| if i < a { d.clone() } else { Dim::Known(1) })
                    .collect(),
            )
        }
        None => None,
    };
    Ok(vec![
        tensor(c.elem(0), shape0(c)),
        tensor(stash, stat_shape.clone()),
        tensor(stash, stat_shape),
    ])
}

fn constant_of_shape(c: &Ctx, value: &Option<crate::tensor::Tensor>) -> Out {
    let elem = value.as_ref().map_or(DType::F32, |t| t.dtype());
    let shape = match c.dims_value(0) {
        Some(v) => {
            if let Some(bad) = v.iter().find(|d| d.known().is_some_and(|d| d < 0)) {
                return Err(c.err(format!("negative dim {bad} in ConstantOfShape")));
            }
            Some(v)
        }
        None => match c.shape(0) {
            Some([d]) => d
                .known()
                .and_then(|n| usize::try_from(n).ok())
                .map(unknowns),
            _ => None,
        },
    };
    Ok(vec![tensor(Some(elem), shape)])
}

fn range(c: &Ctx) -> Out {
    let elem = c.elem(0).or_else(|| c.elem(1)).or_else(|| c.elem(2));
    let scalar = |s: usize| c.numbers(s).and_then(|v| v.first().copied());
    let len = match (scalar(0), scalar(1), scalar(2)) {
        (Some(s), Some(l), Some(d)) if d != 0.0 => {
            let n = ((l - s) / d).ceil().max(0.0);
            if n.is_finite() && n < i64::MAX as f64 {
                Dim::Known(n as i64)
            } else {
                Dim::Unknown
            }
        }
        (Some(_), Some(_), Some(_)) => return Err(c.err("Range with delta 0")),
        // range(0, n, 1) has n elements, whatever n is.
        (Some(s), None, Some(d)) if s == 0.0 && d == 1.0 => match c.dims_value(1).as_deref() {
            Some([n @ Dim::Sym(_)]) => n.clone(),
            _ => Dim::Unknown,
        },
        _ => Dim::Unknown,
    };
    Ok(vec![tensor(elem, Some(vec![len]))])
}

fn quantize(c: &Ctx, output_dtype: Option<i64>) -> Out {
    let elem = if c.has(2) {
        c.elem(2)
    } else {
        match output_dtype.filter(|&d| d != 0) {
            Some(d) => DType::from_onnx(d as i32),
            None => Some(DType::U8),
        }
    };
    Ok(vec![tensor(elem, shape0(c))])
}

fn dequantize(c: &Ctx) -> Out {
    let elem = c.elem(1).or(Some(DType::F32));
    Ok(vec![tensor(elem, shape0(c))])
}

pub(super) fn infer(c: &Ctx) -> Out {
    match &c.node.op {
        Op::BatchNormalization { .. } => batch_norm(c),
        Op::LayerNormalization {
            axis, stash_type, ..
        } => layer_norm(c, axis.unwrap_or(-1), *stash_type),
        Op::ConstantOfShape { value } => constant_of_shape(c, value),
        Op::Range => range(c),
        Op::QuantizeLinear { output_dtype, .. } => quantize(c, *output_dtype),
        Op::DequantizeLinear { .. } => dequantize(c),
        _ => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use crate::dtype::DType::*;
    use crate::graph::Graph;
    use crate::infer::testutil::*;
    use crate::op::Op;
    use crate::tensor::Tensor;

    #[test]
    fn batch_and_layer_norm() {
        let bn = Op::BatchNormalization {
            epsilon: None,
            momentum: None,
            training_mode: None,
        };
        let c = t(F32, "8");
        assert_eq!(
            run(
                bn,
                &[t(F32, "N,8,4,4"), c.clone(), c.clone(), c.clone(), c],
                3
            ),
            ["f32[N,8,4,4]", "f32[8]", "f32[8]"]
        );
        let ln = Op::LayerNormalization {
            axis: Some(-2),
            epsilon: None,
            stash_type: None,
        };
        assert_eq!(
            run(ln, &[t(F16, "B,S,D"), t(F16, "S,D")], 3),
            ["f16[B,S,D]", "f32[B,1,1]", "f32[B,1,1]"]
        );
    }

    #[test]
    fn constant_of_shape_and_range() {
        let mut g = Graph::new("g");
        let s = ints(&mut g, "s", &[2, 3]);
        let value = Some(Tensor::from_i64(vec![1], vec![7]).unwrap());
        let (id, _) = node(&mut g, Op::ConstantOfShape { value }, &[Some(s)], 1);
        assert_eq!(infer_str(&g, id), ["i64[2,3]"]);
        let dynamic = input(&mut g, "d", t(I64, "4"));
        let (id, _) = node(
            &mut g,
            Op::ConstantOfShape { value: None },
            &[Some(dynamic)],
            1,
        );
        assert_eq!(infer_str(&g, id), ["f32[?,?,?,?]"]);

        let f = |g: &mut Graph, n: &str, v: f32| {
            g.add_const(n, Tensor::from_f32(vec![], vec![v]).unwrap())
                .unwrap()
        };
        let (a, b, d) = (
            f(&mut g, "a", 1.0),
            f(&mut g, "b", 2.0),
            f(&mut g, "c", 0.3),
        );
        let (id, _) = node(&mut g, Op::Range, &[Some(a), Some(b), Some(d)], 1);
        assert_eq!(infer_str(&g, id), ["f32[4]"]);
        let n = input(&mut g, "n", t(I64, ""));
        let one = g
            .add_const("one", Tensor::from_i64(vec![], vec![1]).unwrap())
            .unwrap();
        let (id, _) = node(&mut g, Op::Range, &[Some(one), Some(n), Some(one)], 1);
        assert_eq!(infer_str(&g, id), ["i64[?]"]);
    }

    #[test]
    fn quantize_types() {
        let q = |od: Option<i64>| Op::QuantizeLinear {
            axis: None,
            saturate: None,
            block_size: None,
            output_dtype: od,
        };
        assert_eq!(run(q(None), &[t(F32, "N,4"), t(F32, "")], 1), ["u8[N,4]"]);
        assert_eq!(
            run(q(None), &[t(F32, "N,4"), t(F32, ""), t(I8, "")], 1),
            ["i8[N,4]"]
        );
        assert_eq!(run(q(Some(3)), &[t(F32, "2"), t(F32, "")], 1), ["i8[2]"]);
        let dq = Op::DequantizeLinear {
            axis: None,
            block_size: None,
        };
        assert_eq!(
            run(dq.clone(), &[t(I8, "2,2"), t(F16, "")], 1),
            ["f16[2,2]"]
        );
    }
}
