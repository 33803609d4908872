//! Fused elementwise regions: a chain of elementwise nodes, each the only reader of
//! the previous one's output and all of one output shape, becomes one kernel (or the
//! epilogue of the Conv/Gemm/MatMul feeding it), e.g. `Add + Relu` or bias `+ Relu`.

use super::shapes::{broadcast_index, const_scalar, dims, f32_literal, require_f32};
use super::weights::{Operand, Param, Weights};
use super::Draft;
use cc_ir::op::{BinaryOp, UnaryOp, VariadicOp};
use cc_ir::{Error, Graph, NodeId, Op, Result, Use, ValueId};

/// Threads per block of elementwise kernels.
const BLOCK: u32 = 256;

/// True for ops this module fuses (f32 elementwise math).
pub fn is_elementwise(op: &Op) -> bool {
    match op {
        Op::Unary(u) => unary_expr(*u, "x").is_some(),
        Op::Binary(b) => binary_expr(*b, "a", "b").is_some(),
        Op::LeakyRelu { .. } | Op::Clip | Op::Variadic(_) => true,
        Op::Gelu { approximate } => matches!(approximate.as_deref(), None | Some("none" | "tanh")),
        _ => false,
    }
}

fn unary_expr(op: UnaryOp, x: &str) -> Option<String> {
    Some(match op {
        UnaryOp::Relu => format!("fmaxf({x}, 0.0f)"),
        UnaryOp::Sigmoid => format!("1.0f / (1.0f + expf(-({x})))"),
        UnaryOp::Tanh => format!("tanhf({x})"),
        UnaryOp::Exp => format!("expf({x})"),
        UnaryOp::Log => format!("logf({x})"),
        UnaryOp::Sqrt => format!("sqrtf({x})"),
        UnaryOp::Reciprocal => format!("1.0f / ({x})"),
        UnaryOp::Neg => format!("-({x})"),
        UnaryOp::Abs => format!("fabsf({x})"),
        UnaryOp::Erf => format!("erff({x})"),
        UnaryOp::Floor => format!("floorf({x})"),
        UnaryOp::Ceil => format!("ceilf({x})"),
        UnaryOp::Sin => format!("sinf({x})"),
        UnaryOp::Cos => format!("cosf({x})"),
        UnaryOp::Sign => format!("(float)((({x}) > 0.0f) - (({x}) < 0.0f))"),
        UnaryOp::Round => format!("rintf({x})"),
        UnaryOp::Softplus => format!("(({x}) > 20.0f ? ({x}) : log1pf(expf({x})))"),
        UnaryOp::Not | UnaryOp::IsNaN => return None,
    })
}

fn binary_expr(op: BinaryOp, a: &str, b: &str) -> Option<String> {
    Some(match op {
        BinaryOp::Add => format!("{a} + {b}"),
        BinaryOp::Sub => format!("{a} - ({b})"),
        BinaryOp::Mul => format!("({a}) * ({b})"),
        BinaryOp::Div => format!("({a}) / ({b})"),
        BinaryOp::Pow => format!("powf({a}, {b})"),
        BinaryOp::PRelu => format!("(({a}) < 0.0f ? ({a}) * ({b}) : ({a}))"),
        _ => return None,
    })
}

/// The node that can be fused after the producer of `v`: the only reader of `v` (which
/// is not a graph output), elementwise, with one output of `v`'s shape.
pub fn fusable_consumer(g: &Graph, v: ValueId) -> Option<NodeId> {
    let val = g.value(v);
    if g.is_output(v) || val.uses().len() != 1 {
        return None;
    }
    let Some(&Use::Input { node, .. }) = val.uses().first() else {
        return None;
    };
    let n = g.node(node);
    if !is_elementwise(&n.op) || n.outputs().len() != 1 {
        return None;
    }
    let out = n.output(0)?;
    let (a, b) = (dims(g, v).ok()?, dims(g, out).ok()?);
    (a == b).then_some(node)
}

/// The chain after node `from` (including `from` itself when `with_self`): each
/// fusable consumer not yet `claimed` by another kernel. The nodes are claimed.
pub fn chain_from(
    g: &Graph,
    from: NodeId,
    with_self: bool,
    claimed: &mut std::collections::BTreeSet<NodeId>,
) -> Vec<NodeId> {
    let mut chain = if with_self { vec![from] } else { Vec::new() };
    claimed.insert(from);
    let mut cur = from;
    while let Some(next) = g
        .node(cur)
        .output(0)
        .and_then(|v| fusable_consumer(g, v))
        .filter(|n| !claimed.contains(n))
    {
        claimed.insert(next);
        chain.push(next);
        cur = next;
    }
    chain
}

/// Statements applying `chain` to the float `v` (the value `carried`, or — when
/// `carried` is `None` — starting from the first node's inputs), at flat output index
/// `idx` of shape `out`. External operands become parameters `e0, e1, ...` (appended to
/// `params`, numbered from `params.len()`); returns the code and the chain's output.
pub fn chain_code(
    g: &Graph,
    chain: &[NodeId],
    carried: Option<ValueId>,
    out: &[usize],
    idx: &str,
    w: &mut Weights,
    params: &mut Vec<Param>,
) -> Result<(String, ValueId)> {
    let mut code = String::new();
    let mut cur = carried;
    for &id in chain {
        let n = g.node(id);
        let label = g.node_label(id);
        let mut args = Vec::new();
        for slot in n.inputs() {
            let Some(v) = *slot else {
                args.push(None);
                continue;
            };
            if Some(v) == cur {
                args.push(Some("v".to_string()));
                continue;
            }
            require_f32(g, v, &label)?;
            if let Some(x) = const_scalar(g, v) {
                args.push(Some(f32_literal(x)));
                continue;
            }
            let name = format!("e{}", params.len());
            let bi = broadcast_index(idx, out, &dims(g, v)?)
                .map_err(|e| Error::invalid(format!("node {label}: {e}")))?;
            match w.operand(g, v, &label)? {
                Operand::F32(b) => params.push(Param::input(&name, b)),
                Operand::Quant(_) => {
                    return Err(Error::unsupported(format!(
                        "cuda backend: node {label}: quantized weight {:?} read by an \
                         elementwise op",
                        g.value(v).name()
                    )))
                }
            }
            args.push(Some(format!("{name}[{bi}]")));
        }
        let expr = node_expr(&n.op, &args)
            .ok_or_else(|| Error::unsupported(format!("cuda backend: node {label} not fusable")))?;
        code.push_str(&format!(
            "    v = {expr}; /* {} */\n",
            super::shapes::comment_safe(&label)
        ));
        let o = n
            .output(0)
            .ok_or_else(|| Error::invalid(format!("node {label} has no output")))?;
        require_f32(g, o, &label)?;
        cur = Some(o);
    }
    let last = cur.ok_or_else(|| Error::invalid("empty elementwise chain"))?;
    Ok((code, last))
}

fn node_expr(op: &Op, args: &[Option<String>]) -> Option<String> {
    let arg = |i: usize| args.get(i).cloned().flatten();
    match op {
        Op::Unary(u) => unary_expr(*u, &arg(0)?),
        Op::Binary(b) => binary_expr(*b, &arg(0)?, &arg(1)?),
        Op::LeakyRelu { alpha } => {
            let x = arg(0)?;
            let a = f32_literal(alpha.unwrap_or(0.01));
            Some(format!("(({x}) < 0.0f ? ({x}) * {a} : ({x}))"))
        }
        Op::Gelu { approximate } => {
            let x = arg(0)?;
            Some(if approximate.as_deref() == Some("tanh") {
                format!("0.5f * ({x}) * (1.0f + tanhf(0.7978845608f * (({x}) + 0.044715f * ({x}) * ({x}) * ({x}))))")
            } else {
                format!("0.5f * ({x}) * (1.0f + erff(({x}) * 0.70710678118f))")
            })
        }
        Op::Clip => {
            let mut e = arg(0)?;
            if let Some(lo) = arg(1) {
                e = format!("fmaxf({e}, {lo})");
            }
            if let Some(hi) = arg(2) {
                e = format!("fminf({e}, {hi})");
            }
            Some(e)
        }
        Op::Variadic(v) => {
            let xs: Vec<String> = args.iter().flatten().cloned().collect();
            let first = xs.first()?.clone();
            let rest = xs.iter().skip(1);
            Some(match v {
                VariadicOp::Max => rest.fold(first, |a, b| format!("fmaxf({a}, {b})")),
                VariadicOp::Min => rest.fold(first, |a, b| format!("fminf({a}, {b})")),
                VariadicOp::Sum => rest.fold(first, |a, b| format!("{a} + {b}")),
                VariadicOp::Mean => {
                    let n = xs.len();
                    format!(
                        "({}) / {}",
                        rest.fold(first, |a, b| format!("{a} + {b}")),
                        f32_literal(n as f32)
                    )
                }
            })
        }
        _ => None,
    }
}

/// A standalone kernel for an elementwise chain (no anchor before it).
pub fn lower_chain(g: &Graph, chain: &[NodeId], w: &mut Weights) -> Result<Draft> {
    let head = *chain
        .first()
        .ok_or_else(|| Error::invalid("empty elementwise chain"))?;
    let last = *chain.last().unwrap_or(&head);
    let out_v = g
        .node(last)
        .output(0)
        .ok_or_else(|| Error::invalid(format!("node {} has no output", g.node_label(last))))?;
    let out = dims(g, out_v)?;
    let n: usize = out.iter().product();
    let mut params = vec![Param {
        name: "y".into(),
        ty: "float*",
        buf: super::weights::Buf::Value(out_v),
    }];
    let (code, _) = chain_code(g, chain, None, &out, "o", w, &mut params)?;
    let body = format!(
        "    int o = blockIdx.x * {BLOCK} + threadIdx.x;\n    if (o >= {n}) return;\n    float v;\n{code}    y[o] = v;\n"
    );
    let name = chain
        .iter()
        .map(|&id| g.node(id).op.onnx_type().1.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join("_");
    Ok(Draft {
        base: name,
        nodes: chain.iter().map(|&id| g.node_label(id)).collect(),
        params,
        helpers: String::new(),
        body,
        grid: [n.div_ceil(BLOCK as usize) as u32, 1, 1],
        block: BLOCK,
        output: out_v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_keep_operand_order() {
        assert_eq!(
            binary_expr(BinaryOp::Sub, "v", "e1[o]").unwrap(),
            "v - (e1[o])"
        );
        assert_eq!(binary_expr(BinaryOp::Equal, "a", "b"), None);
        assert_eq!(unary_expr(UnaryOp::Relu, "v").unwrap(), "fmaxf(v, 0.0f)");
        assert!(!is_elementwise(&Op::Unary(UnaryOp::Not)));
        assert!(is_elementwise(&Op::Clip));
        let clip = node_expr(&Op::Clip, &[Some("v".into()), None, Some("6.0f".into())]);
        assert_eq!(clip.unwrap(), "fminf(v, 6.0f)");
        let mean = node_expr(
            &Op::Variadic(VariadicOp::Mean),
            &[Some("a".into()), Some("b".into())],
        );
        assert_eq!(mean.unwrap(), "(a + b) / 2.0f");
    }
}
