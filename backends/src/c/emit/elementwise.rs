//! Elementwise ops with broadcasting: unary math, binary arithmetic and comparisons,
//! Max/Min/Sum/Mean, Where, Clip, LeakyRelu, Gelu, Cast and Expand.

use super::{broadcast_strides, c_f32, input, output, strided_loop, unsupported, Cx, Operand};
use cc_ir::op::{BinaryOp, UnaryOp, VariadicOp};
use cc_ir::{DType, NodeId, Op, Result};

/// Builds a C expression from the access expressions of the operands.
type Expr = Box<dyn Fn(&[String]) -> String>;

/// C expression of a unary op on `x` of element type `d`.
fn unary(op: UnaryOp, x: &str, d: DType) -> Option<String> {
    let float = d == DType::F32;
    Some(match op {
        UnaryOp::Relu if float => format!("({x} > 0.0f ? {x} : 0.0f)"),
        UnaryOp::Relu => format!("({x} > 0 ? {x} : 0)"),
        UnaryOp::Sigmoid if float => format!("(1.0f / (1.0f + expf(-{x})))"),
        UnaryOp::Tanh if float => format!("tanhf({x})"),
        UnaryOp::Exp if float => format!("expf({x})"),
        UnaryOp::Log if float => format!("logf({x})"),
        UnaryOp::Sqrt if float => format!("sqrtf({x})"),
        UnaryOp::Reciprocal if float => format!("(1.0f / {x})"),
        UnaryOp::Neg => format!("(-{x})"),
        UnaryOp::Abs if float => format!("fabsf({x})"),
        UnaryOp::Abs => format!("({x} < 0 ? -{x} : {x})"),
        UnaryOp::Erf if float => format!("erff({x})"),
        UnaryOp::Not if d == DType::Bool => format!("(uint8_t)!{x}"),
        UnaryOp::IsNaN if float => format!("(uint8_t)({x} != {x})"),
        UnaryOp::Floor if float => format!("floorf({x})"),
        UnaryOp::Ceil if float => format!("ceilf({x})"),
        UnaryOp::Sin if float => format!("sinf({x})"),
        UnaryOp::Cos if float => format!("cosf({x})"),
        UnaryOp::Sign if float => format!("(float)(({x} > 0.0f) - ({x} < 0.0f))"),
        UnaryOp::Round if float => format!("rintf({x})"),
        UnaryOp::Softplus if float => format!("logf(expf({x}) + 1.0f)"),
        _ => return None,
    })
}

/// C expression of a binary op; `b_const` is the right operand when it is a scalar
/// constant (Pow by 2 becomes a product).
fn binary(op: BinaryOp, a: &str, b: &str, d: DType, b_const: Option<f64>) -> Option<String> {
    let float = d == DType::F32;
    let int = matches!(
        d,
        DType::I64 | DType::I32 | DType::I16 | DType::I8 | DType::U8
    );
    Some(match op {
        BinaryOp::Add if float || int => format!("{a} + {b}"),
        BinaryOp::Sub if float || int => format!("{a} - {b}"),
        BinaryOp::Mul if float || int => format!("{a} * {b}"),
        BinaryOp::Div if float => format!("{a} / {b}"),
        BinaryOp::Pow if float => match b_const {
            Some(2.0) => format!("{a} * {a}"),
            Some(1.0) => a.to_string(),
            Some(0.5) => format!("sqrtf({a})"),
            _ => format!("powf({a}, {b})"),
        },
        BinaryOp::Equal => format!("(uint8_t)({a} == {b})"),
        BinaryOp::Less => format!("(uint8_t)({a} < {b})"),
        BinaryOp::LessOrEqual => format!("(uint8_t)({a} <= {b})"),
        BinaryOp::Greater => format!("(uint8_t)({a} > {b})"),
        BinaryOp::GreaterOrEqual => format!("(uint8_t)({a} >= {b})"),
        BinaryOp::And if d == DType::Bool => format!("(uint8_t)({a} && {b})"),
        BinaryOp::Or if d == DType::Bool => format!("(uint8_t)({a} || {b})"),
        BinaryOp::Xor if d == DType::Bool => format!("(uint8_t)(!{a} != !{b})"),
        BinaryOp::PRelu if float => format!("({a} < 0.0f ? {a} * {b} : {a})"),
        _ => return None,
    })
}

/// The statements of one elementwise node.
pub fn emit(cx: &mut Cx, node: NodeId) -> Result<String> {
    let g = cx.g;
    let n = g.node(node);
    let y = output(g, node, 0)?;
    let out_shape = cx.shape(y)?;
    let out_t = cx.dtype(y)?;
    let ins: Vec<Option<cc_ir::ValueId>> = n.inputs().to_vec();
    let present: Vec<cc_ir::ValueId> = ins.iter().flatten().copied().collect();
    let first = input(g, node, 0)?;
    let in_t = cx.dtype(first)?;
    let ct_out = cx.ctype(y)?;
    let bad = |what: &str| unsupported(g, node, what);
    let scalar_const = |v: cc_ir::ValueId| {
        cx.const_data(v)
            .filter(|t| t.len() == 1)
            .and_then(|t| t.to_f64_numbers().ok())
            .and_then(|v| v.first().copied())
    };
    // The operands and an expression over their access strings.
    let (operands, expr): (Vec<cc_ir::ValueId>, Expr) = match &n.op {
        Op::Unary(u) => {
            let u = *u;
            if unary(u, "x", in_t).is_none() {
                return Err(bad(&format!("{} on {in_t:?}", n.op.onnx_type().1)));
            }
            (
                vec![first],
                Box::new(move |a| unary(u, &a[0], in_t).unwrap_or_default()),
            )
        }
        Op::Binary(b) => {
            let b = *b;
            let rhs = input(g, node, 1)?;
            let k = scalar_const(rhs);
            if binary(b, "a", "b", in_t, k).is_none() {
                return Err(bad(&format!("{} on {in_t:?}", n.op.onnx_type().1)));
            }
            (
                vec![first, rhs],
                Box::new(move |a| binary(b, &a[0], &a[1], in_t, k).unwrap_or_default()),
            )
        }
        Op::Variadic(v) => {
            if in_t != DType::F32 {
                return Err(bad(&format!("{} on {in_t:?}", n.op.onnx_type().1)));
            }
            let v = *v;
            let count = present.len();
            (
                present.clone(),
                Box::new(move |a| {
                    let mut e = a[0].clone();
                    for x in &a[1..] {
                        e = match v {
                            VariadicOp::Max => format!("fmaxf({e}, {x})"),
                            VariadicOp::Min => format!("fminf({e}, {x})"),
                            VariadicOp::Sum | VariadicOp::Mean => format!("{e} + {x}"),
                        };
                    }
                    if v == VariadicOp::Mean {
                        format!("({e}) / {count}.0f")
                    } else {
                        e
                    }
                }),
            )
        }
        Op::Where => {
            let x = input(g, node, 1)?;
            let z = input(g, node, 2)?;
            (
                vec![first, x, z],
                Box::new(|a| format!("{} ? {} : {}", a[0], a[1], a[2])),
            )
        }
        Op::Clip => {
            if in_t != DType::F32 {
                return Err(bad(&format!("Clip on {in_t:?}")));
            }
            let lo = ins.get(1).copied().flatten();
            let hi = ins.get(2).copied().flatten();
            let mut ops = vec![first];
            let lo_i = lo.map(|v| {
                ops.push(v);
                ops.len() - 1
            });
            let hi_i = hi.map(|v| {
                ops.push(v);
                ops.len() - 1
            });
            (
                ops,
                Box::new(move |a| {
                    // Ternaries, not fmaxf/fminf (library calls at -O2 in C99 mode).
                    let mut e = a[0].clone();
                    if let Some(i) = lo_i {
                        e = format!("({e} < {0} ? {0} : {e})", a[i]);
                    }
                    if let Some(i) = hi_i {
                        e = format!("({e} > {0} ? {0} : {e})", a[i]);
                    }
                    e
                }),
            )
        }
        Op::LeakyRelu { alpha } => {
            let al = c_f32(alpha.unwrap_or(0.01));
            (
                vec![first],
                Box::new(move |a| format!("({0} >= 0.0f ? {0} : {al} * {0})", a[0])),
            )
        }
        Op::Gelu { approximate } => {
            let tanh = approximate.as_deref() == Some("tanh");
            (
                vec![first],
                Box::new(move |a| {
                    if tanh {
                        format!(
                            "0.5f * {0} * (1.0f + tanhf(0.7978845608f * ({0} + 0.044715f * {0} * {0} * {0})))",
                            a[0]
                        )
                    } else {
                        format!("0.5f * {0} * (1.0f + erff({0} * 0.70710678118f))", a[0])
                    }
                }),
            )
        }
        Op::Cast { .. } => {
            let to_bool = out_t == DType::Bool;
            cx.ctype(first)?;
            let t = ct_out.to_string();
            (
                vec![first],
                Box::new(move |a| {
                    if to_bool {
                        format!("(uint8_t)({} != 0)", a[0])
                    } else {
                        format!("({t}){}", a[0])
                    }
                }),
            )
        }
        Op::Expand => (vec![first], Box::new(|a| a[0].clone())),
        _ => return Err(bad(&format!("op {}", n.op.onnx_type().1))),
    };
    let mut loads = Vec::new();
    for &v in &operands {
        loads.push(Operand {
            ptr: format!("x{}", loads.len()),
            base: 0,
            strides: broadcast_strides(&cx.shape(v)?, &out_shape)
                .map_err(|e| bad(&e.to_string()))?,
        });
    }
    let out = Operand {
        ptr: "y".into(),
        base: 0,
        strides: super::strides(&out_shape),
    };
    let body = strided_loop(&out_shape, &out, &loads, |a| expr(a));
    let mut s = String::new();
    for (i, &v) in operands.iter().enumerate() {
        // An operand the expression folded away (Pow by a constant) is not declared.
        if body.contains(&format!("x{i}[")) {
            s.push_str(&format!("const {} *x{i} = {};\n", cx.ctype(v)?, cx.ptr(v)?));
        }
    }
    s.push_str(&format!("{ct_out} *y = {};\n", cx.ptr(y)?));
    s.push_str(&body);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::c::toolchain::testkit::{ramp, Builder};

    #[test]
    fn elementwise_ops_match_the_executor() {
        let (mut b, x) = Builder::new(&[2, 3, 4]);
        let row = b.floats(&[4], 0.7);
        let col = b.floats(&[3, 1], 1.3);
        let two = b.floats(&[1], -2.0);
        let add = b.op(Op::Binary(BinaryOp::Add), &[Some(x), Some(row)]);
        let div = b.op(Op::Binary(BinaryOp::Div), &[Some(add), Some(col)]);
        let pw = b.op(Op::Binary(BinaryOp::Pow), &[Some(div), Some(two)]);
        let erf = b.op(Op::Unary(UnaryOp::Erf), &[Some(div)]);
        let sig = b.op(Op::Unary(UnaryOp::Sigmoid), &[Some(erf)]);
        let lt = b.op(Op::Binary(BinaryOp::Less), &[Some(x), Some(col)]);
        let wh = b.op(Op::Where, &[Some(lt), Some(sig), Some(pw)]);
        let lo = b.floats(&[1], -0.0);
        let cl = b.op(Op::Clip, &[Some(div), Some(lo), None]);
        let gelu = b.op(Op::Gelu { approximate: None }, &[Some(div)]);
        let mx = b.op(
            Op::Variadic(VariadicOp::Max),
            &[Some(cl), Some(gelu), Some(row)],
        );
        let cast = b.op(
            Op::Cast {
                to: DType::I64,
                saturate: None,
            },
            &[Some(add)],
        );
        let shape = b.ints(&[3, 2, 3, 4]);
        let ex = b.op(Op::Expand, &[Some(col), Some(shape)]);
        b.check(&[wh, mx, cast, ex], ramp(&[2, 3, 4]), 1e-6);
    }

    #[test]
    fn expressions_by_type() {
        assert_eq!(
            unary(UnaryOp::Relu, "x", DType::F32).unwrap(),
            "(x > 0.0f ? x : 0.0f)"
        );
        assert!(unary(UnaryOp::Sqrt, "x", DType::I64).is_none());
        assert_eq!(
            binary(BinaryOp::Pow, "a", "b", DType::F32, Some(2.0)).unwrap(),
            "a * a"
        );
        assert_eq!(
            binary(BinaryOp::Pow, "a", "b", DType::F32, Some(3.0)).unwrap(),
            "powf(a, b)"
        );
        assert!(binary(BinaryOp::Div, "a", "b", DType::I64, None).is_none());
        assert!(binary(BinaryOp::And, "a", "b", DType::F32, None).is_none());
    }
}
