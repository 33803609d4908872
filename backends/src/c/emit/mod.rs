//! Emitting the C statements of each node: the context every emitter reads ([`Cx`]), C
//! names of element types and literals, and the strided loop nest the elementwise and
//! data-movement emitters share. One module per op family.

pub mod elementwise;
pub mod fusion;
pub mod linalg;
pub mod movement;
pub mod reduce;

use super::plan::{Place, Plan};
use super::prepare::{elem_type, static_shape};
use cc_ir::{DType, Error, Graph, NodeId, Op, Result, Tensor, ValueId};
use std::fmt::Write;

/// GEMM register block rows (`CC_MR` in the runtime).
pub const MR: usize = 6;
/// GEMM depth block (`CC_KC`).
pub const KC: usize = 256;
/// GEMM column block (`CC_NC`).
pub const NC: usize = 1024;

/// Floats of scratch the runtime's `cc_gemm` needs for an `m x k` left operand.
pub fn gemm_scratch(m: usize, _k: usize) -> usize {
    m.div_ceil(MR) * MR * KC + KC * NC
}

/// The C type and byte size of an element type the backend supports.
pub fn ctype(d: DType) -> Option<(&'static str, usize)> {
    Some(match d {
        DType::F32 => ("float", 4),
        DType::F64 => ("double", 8),
        DType::I64 => ("int64_t", 8),
        DType::I32 => ("int32_t", 4),
        DType::I16 => ("int16_t", 2),
        DType::I8 => ("int8_t", 1),
        DType::U8 | DType::Bool => ("uint8_t", 1),
        DType::U16 => ("uint16_t", 2),
        DType::U32 => ("uint32_t", 4),
        DType::U64 => ("uint64_t", 8),
        _ => return None,
    })
}

/// A C literal for an f32 (`1.5f`, `-INFINITY`, `NAN`).
pub fn c_f32(x: f32) -> String {
    if x.is_nan() {
        "NAN".into()
    } else if x.is_infinite() {
        if x > 0.0 { "INFINITY" } else { "(-INFINITY)" }.into()
    } else {
        let s = format!("{x:?}");
        if s.starts_with('-') {
            format!("({s}f)")
        } else {
            format!("{s}f")
        }
    }
}

/// Text safe inside a C block comment.
pub fn comment_text(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect::<String>()
        .replace("*/", "*_")
        .replace("/*", "_*")
}

/// What the node emitters read: the prepared graph and the storage plan; collects the
/// scratch floats the emitted code needs.
pub struct Cx<'a> {
    /// The prepared graph.
    pub g: &'a Graph,
    /// Where each value lives.
    pub plan: &'a Plan,
    /// Largest scratch (floats) any emitted statement uses.
    pub scratch: usize,
    /// Activations fused into their producer.
    pub fused: fusion::Fused,
    /// Conv weights stored pre-packed in the blob ([`linalg::prepack`]).
    pub packed: std::collections::BTreeSet<ValueId>,
}

impl<'a> Cx<'a> {
    /// Static shape of `v`.
    pub fn shape(&self, v: ValueId) -> Result<Vec<usize>> {
        static_shape(self.g, v)
    }

    /// Element type of `v`.
    pub fn dtype(&self, v: ValueId) -> Result<DType> {
        elem_type(self.g, v)
    }

    /// C element type of `v`.
    pub fn ctype(&self, v: ValueId) -> Result<&'static str> {
        let d = self.dtype(v)?;
        ctype(d).map(|(t, _)| t).ok_or_else(|| {
            Error::unsupported(format!(
                "value {}: element type {d:?} is not supported by the C backend",
                self.g.value(v).name()
            ))
        })
    }

    /// Constant data of `v`, if it is a plain constant.
    pub fn const_data(&self, v: ValueId) -> Option<&'a Tensor> {
        self.g.const_data(v)
    }

    /// A typed C pointer expression for the data of `v` (read-only unless `mutable`).
    pub fn ptr(&self, v: ValueId) -> Result<String> {
        let t = self.ctype(v)?;
        let name = self.g.value(v).name();
        Ok(match self.plan.place.get(&v) {
            Some(Place::Input(i)) => format!("((const {t} *)in{i})"),
            Some(Place::Const(off)) => format!("((const {t} *)(cc_blob + {off}))"),
            Some(Place::Arena(off)) => format!("(({t} *)(cc_arena + {off}))"),
            Some(Place::Weight(_)) => {
                return Err(Error::unsupported(format!(
                "value {name}: a compressed weight read by an op other than MatMul, Gemm or Conv"
            )))
            }
            None => return Err(Error::invalid(format!("value {name}: no storage planned"))),
        })
    }

    /// Statements declaring `cc_w` named `var` for `v` (a compressed weight's
    /// descriptor, or an f32 view), and the `const cc_w *` expression to use.
    pub fn weight(&self, v: ValueId, var: &str) -> Result<(String, String)> {
        if let Some(Place::Weight(i)) = self.plan.place.get(&v) {
            return Ok((String::new(), format!("&cc_wt[{i}]")));
        }
        if self.dtype(v)? != DType::F32 {
            return Err(Error::unsupported(format!(
                "value {}: GEMM operands must be f32",
                self.g.value(v).name()
            )));
        }
        Ok((
            format!("cc_w {var} = cc_f32w({});\n", self.ptr(v)?),
            format!("&{var}"),
        ))
    }

    /// Records that a statement needs `floats` of scratch.
    pub fn need_scratch(&mut self, floats: usize) {
        self.scratch = self.scratch.max(floats);
    }
}

/// Input `slot` of `node` (present), or an error naming the node.
pub fn input(g: &Graph, node: NodeId, slot: usize) -> Result<ValueId> {
    g.node(node).input(slot).ok_or_else(|| {
        Error::invalid(format!(
            "node {}: input {slot} is missing",
            g.node_label(node)
        ))
    })
}

/// Output `slot` of `node` (present), or an error naming the node.
pub fn output(g: &Graph, node: NodeId, slot: usize) -> Result<ValueId> {
    g.node(node).output(slot).ok_or_else(|| {
        Error::invalid(format!(
            "node {}: output {slot} is missing",
            g.node_label(node)
        ))
    })
}

/// An error naming the node and saying what is not supported.
pub fn unsupported(g: &Graph, node: NodeId, what: &str) -> Error {
    Error::unsupported(format!(
        "node {}: {what} is not supported by the C backend",
        g.node_label(node)
    ))
}

/// Row-major strides of `shape` (in elements).
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Strides of an input of shape `shape` broadcast to `out` (0 on broadcast axes).
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Result<Vec<usize>> {
    if shape.len() > out.len() {
        return Err(Error::invalid(format!(
            "cannot broadcast {shape:?} to {out:?}"
        )));
    }
    let own = strides(shape);
    let lead = out.len() - shape.len();
    (0..out.len())
        .map(|i| {
            if i < lead {
                return Ok(0);
            }
            let d = shape[i - lead];
            if d == out[i] {
                Ok(if d == 1 { 0 } else { own[i - lead] })
            } else if d == 1 {
                Ok(0)
            } else {
                Err(Error::invalid(format!(
                    "cannot broadcast {shape:?} to {out:?}"
                )))
            }
        })
        .collect()
}

/// One operand of a strided loop nest: a pointer expression, a base offset and a
/// stride (elements) per loop dimension.
pub struct Operand {
    /// Pointer expression.
    pub ptr: String,
    /// Offset of element (0, ..., 0).
    pub base: usize,
    /// Stride per dimension.
    pub strides: Vec<usize>,
}

/// A loop nest over `dims` writing `out[...] = expr(in0[...], in1[...], ...)`, where
/// `expr` receives the C access expressions of the inputs. Dimensions of extent 1 are
/// dropped and neighbours that are contiguous for every operand are merged.
pub fn strided_loop(
    dims: &[usize],
    out: &Operand,
    ins: &[Operand],
    expr: impl Fn(&[String]) -> String,
) -> String {
    // Collapse.
    let mut d: Vec<usize> = Vec::new();
    let mut st: Vec<Vec<usize>> = vec![Vec::new(); ins.len() + 1];
    let all: Vec<&Operand> = std::iter::once(out).chain(ins.iter()).collect();
    for (i, &n) in dims.iter().enumerate() {
        if n == 1 {
            continue;
        }
        let merge = !d.is_empty()
            && all.iter().enumerate().all(|(k, op)| {
                let last = *st[k].last().unwrap_or(&0);
                last == op.strides[i] * n
            });
        if merge {
            if let Some(l) = d.last_mut() {
                *l *= n;
            }
            for (k, op) in all.iter().enumerate() {
                if let Some(l) = st[k].last_mut() {
                    *l = op.strides[i];
                }
            }
        } else {
            d.push(n);
            for (k, op) in all.iter().enumerate() {
                st[k].push(op.strides[i]);
            }
        }
    }
    let total: usize = dims.iter().product();
    let mut s = String::new();
    if total == 0 {
        return s;
    }
    let idx = |k: usize, base: usize| -> String {
        let mut terms: Vec<String> = Vec::new();
        if base != 0 {
            terms.push(base.to_string());
        }
        for (j, &sj) in st[k].iter().enumerate() {
            match sj {
                0 => {}
                1 => terms.push(format!("i{j}")),
                _ => terms.push(format!("i{j} * {sj}")),
            }
        }
        if terms.is_empty() {
            "0".into()
        } else {
            terms.join(" + ")
        }
    };
    for (j, &n) in d.iter().enumerate() {
        let _ = writeln!(
            s,
            "{}for (long i{j} = 0; i{j} < {n}; i{j}++)",
            "  ".repeat(j)
        );
    }
    let args: Vec<String> = ins
        .iter()
        .enumerate()
        .map(|(k, op)| format!("{}[{}]", op.ptr, idx(k + 1, op.base)))
        .collect();
    let _ = writeln!(
        s,
        "{}{}[{}] = {};",
        "  ".repeat(d.len()),
        out.ptr,
        idx(0, out.base),
        expr(&args)
    );
    s
}

/// The C statements of one node.
pub fn emit_node(cx: &mut Cx, node: NodeId) -> Result<String> {
    let g = cx.g;
    let op = &g.node(node).op;
    let absorbed = cx.fused.values().any(|&(a, _, _)| a == node);
    if super::plan::is_alias(op) || absorbed {
        return Ok(String::new());
    }
    match op {
        Op::Unary(_)
        | Op::Binary(_)
        | Op::Variadic(_)
        | Op::Where
        | Op::Clip
        | Op::LeakyRelu { .. }
        | Op::Gelu { .. }
        | Op::Cast { .. }
        | Op::Expand => elementwise::emit(cx, node),
        Op::MatMul | Op::Gemm { .. } | Op::Conv(_) => linalg::emit(cx, node),
        Op::Transpose { .. }
        | Op::Slice
        | Op::Concat { .. }
        | Op::Gather { .. }
        | Op::GatherND { .. }
        | Op::Split { .. } => movement::emit(cx, node),
        Op::Softmax { .. }
        | Op::LayerNormalization { .. }
        | Op::Reduce { .. }
        | Op::MaxPool(_)
        | Op::GlobalPool(_) => reduce::emit(cx, node),
        _ => Err(unsupported(g, node, &format!("op {}", op.onnx_type().1))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(ptr: &str, strides: &[usize]) -> Operand {
        Operand {
            ptr: ptr.into(),
            base: 0,
            strides: strides.to_vec(),
        }
    }

    #[test]
    fn contiguous_dims_merge_and_broadcast_keeps_zero_strides() {
        // [2,3,4] + [3,1] broadcast: the output's last two dims are contiguous but b's are not.
        let out = [2, 3, 4];
        let b = broadcast_strides(&[3, 1], &out).unwrap();
        assert_eq!(b, vec![0, 1, 0]);
        let code = strided_loop(
            &out,
            &op("y", &strides(&out)),
            &[op("a", &strides(&out)), op("b", &b)],
            |a| format!("{} + {}", a[0], a[1]),
        );
        assert!(
            code.contains("i0 < 2") && code.contains("i1 < 3") && code.contains("i2 < 4"),
            "{code}"
        );
        // same shapes: one flat loop
        let flat = strided_loop(
            &out,
            &op("y", &strides(&out)),
            &[op("a", &strides(&out))],
            |a| a[0].clone(),
        );
        assert_eq!(flat, "for (long i0 = 0; i0 < 24; i0++)\n  y[i0] = a[i0];\n");
    }

    #[test]
    fn broadcast_errors_and_literals() {
        assert!(broadcast_strides(&[3], &[2]).is_err());
        assert_eq!(c_f32(1.0), "1.0f");
        assert_eq!(c_f32(-0.5), "(-0.5f)");
        assert_eq!(c_f32(f32::NEG_INFINITY), "(-INFINITY)");
        assert_eq!(comment_text("a*/b\n"), "a*_b?");
        assert_eq!(gemm_scratch(7, 10), 12 * KC + KC * NC);
    }
}
