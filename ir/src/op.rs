//! Operations: a typed enum for the ops cc-compile reasons about, plus [`OtherOp`] that
//! carries anything else losslessly.
//!
//! Typed ops are used only for the default ONNX domain, and only at the opsets whose
//! semantics the IR models: [`typed_opsets`] gives that range per op type (see there for
//! the rule and how it was checked); any other opset imports as [`Op::Other`].
//! Attributes are kept as `Option`s: `None` means the attribute was absent and the ONNX
//! default applies, so export writes back exactly what import read. A node whose
//! attributes include anything an op struct does not model stays an [`OtherOp`].

use crate::attr::{AttrBag, AttrOut, Attribute};
use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::Tensor;

/// Lowest default-domain opset whose ops are imported as typed ops (unless
/// [`typed_opsets`] lists an earlier one for the op).
pub const MIN_TYPED_OPSET: i64 = 11;
/// Highest default-domain opset typed for an op that [`typed_opsets`] does not list.
pub const MAX_TYPED_OPSET: i64 = 21;
/// The newest default-domain opset the per-op table was checked against.
pub const CHECKED_OPSET: i64 = 28;

/// Ops whose typed range differs from [`MIN_TYPED_OPSET`]..=[`MAX_TYPED_OPSET`]:
/// (op type, first typed opset, last typed opset).
///
/// Every op listed with [`CHECKED_OPSET`] was compared, version by version, with the
/// ONNX operator changelog (docs/Changelog.md, opsets 22..=28): each of its versions
/// after 21 only widens the type constraints (opset 22 adds bfloat16; 23, 24 and 25 add
/// float4e2m1, float8e8m0 and int2/uint2) or rewords the description without changing
/// the computation (Squeeze/Unsqueeze/Transpose 23-25 wording; Dropout 22; MaxPool and
/// AveragePool 22 state that windows starting in the end padding are dropped, which
/// is what shape inference already assumes by leaving such sizes unknown). Attributes
/// added after 21 (QuantizeLinear-23 `precision`, DequantizeLinear-23 `output_dtype`)
/// are not modelled, so a node that sets them stays [`Op::Other`]; absent, their
/// defaults give the opset-21 behaviour. Exceptions, kept below [`CHECKED_OPSET`]:
/// Cast (24 changes the saturating float8 casts of infinities and adds `round_mode`)
/// and Range (27 computes float16/bfloat16 ranges in f32 by default). CastLike exists
/// from opset 15 and follows Cast: 19 adds `saturate` (float8 only), 21 and 23 only add
/// element types, 24 takes Cast-24's float8 changes, so it is typed 15..=23.
/// The integer quantization ops keep one definition since opset 10 (QLinearMatMul 21
/// only adds float8 types), so they are typed from 10.
const TYPED_OPSETS: &[(&str, i64, i64)] = &[
    ("Cast", MIN_TYPED_OPSET, 23),
    ("CastLike", 15, 23),
    ("Range", MIN_TYPED_OPSET, 26),
    ("MatMulInteger", 10, CHECKED_OPSET),
    ("ConvInteger", 10, CHECKED_OPSET),
    ("QLinearMatMul", 10, CHECKED_OPSET),
    ("QLinearConv", 10, CHECKED_OPSET),
    ("DynamicQuantizeLinear", MIN_TYPED_OPSET, CHECKED_OPSET),
];

/// Ops typed from [`MIN_TYPED_OPSET`] up to [`CHECKED_OPSET`] (see [`TYPED_OPSETS`]).
const CHECKED_UNCHANGED: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
    "BatchNormalization",
    "Relu",
    "Sigmoid",
    "Tanh",
    "Exp",
    "Log",
    "Sqrt",
    "Reciprocal",
    "Neg",
    "Abs",
    "Erf",
    "Not",
    "IsNaN",
    "Floor",
    "Ceil",
    "Sin",
    "Cos",
    "Sign",
    "Round",
    "Softplus",
    "LeakyRelu",
    "Gelu",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Equal",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "And",
    "Or",
    "Xor",
    "PRelu",
    "Mod",
    "Max",
    "Min",
    "Sum",
    "Mean",
    "Where",
    "Clip",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Flatten",
    "Reshape",
    "Transpose",
    "Concat",
    "Split",
    "Slice",
    "Gather",
    "GatherElements",
    "GatherND",
    "Unsqueeze",
    "Squeeze",
    "Expand",
    "Shape",
    "Size",
    "ConstantOfShape",
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL2",
    "ReduceSumSquare",
    "Softmax",
    "LayerNormalization",
    "CumSum",
    "Pad",
    "QuantizeLinear",
    "DequantizeLinear",
    "Identity",
    "Dropout",
];

/// The default-domain opsets (first, last) at which `op_type` imports as a typed op.
///
/// The rule: an op is typed from the first opset whose definition the IR models up to
/// the last opset at which that definition, for the element types the IR handles, is
/// verified unchanged in the ONNX changelog; newer opsets stay [`Op::Other`] until
/// someone checks them. Ops not covered by the table get
/// [`MIN_TYPED_OPSET`]..=[`MAX_TYPED_OPSET`].
pub fn typed_opsets(op_type: &str) -> (i64, i64) {
    if let Some(&(_, lo, hi)) = TYPED_OPSETS.iter().find(|(n, _, _)| *n == op_type) {
        return (lo, hi);
    }
    if CHECKED_UNCHANGED.contains(&op_type) {
        return (MIN_TYPED_OPSET, CHECKED_OPSET);
    }
    (MIN_TYPED_OPSET, MAX_TYPED_OPSET)
}

/// Attributes shared by Conv and ConvTranspose.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ConvAttrs {
    /// `auto_pad` (default NOTSET).
    pub auto_pad: Option<String>,
    /// `dilations` (default 1s).
    pub dilations: Option<Vec<i64>>,
    /// `group` (default 1).
    pub group: Option<i64>,
    /// `kernel_shape` (default: from the weight).
    pub kernel_shape: Option<Vec<i64>>,
    /// `pads` (begin..., end...; default 0s).
    pub pads: Option<Vec<i64>>,
    /// `strides` (default 1s).
    pub strides: Option<Vec<i64>>,
    /// ConvTranspose only: `output_padding`.
    pub output_padding: Option<Vec<i64>>,
    /// ConvTranspose only: `output_shape`.
    pub output_shape: Option<Vec<i64>>,
}

impl ConvAttrs {
    /// Effective group count.
    pub fn group(&self) -> i64 {
        self.group.unwrap_or(1)
    }
}

/// Attributes of MaxPool and AveragePool.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct PoolAttrs {
    /// `auto_pad`.
    pub auto_pad: Option<String>,
    /// `ceil_mode`.
    pub ceil_mode: Option<i64>,
    /// AveragePool: `count_include_pad`.
    pub count_include_pad: Option<i64>,
    /// `dilations`.
    pub dilations: Option<Vec<i64>>,
    /// `kernel_shape` (required).
    pub kernel_shape: Option<Vec<i64>>,
    /// `pads`.
    pub pads: Option<Vec<i64>>,
    /// MaxPool: `storage_order`.
    pub storage_order: Option<i64>,
    /// `strides`.
    pub strides: Option<Vec<i64>>,
}

/// Elementwise ops with one input and no attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// max(x, 0)
    Relu,
    /// 1/(1+e^-x)
    Sigmoid,
    /// tanh
    Tanh,
    /// e^x
    Exp,
    /// ln
    Log,
    /// square root
    Sqrt,
    /// 1/x
    Reciprocal,
    /// -x
    Neg,
    /// |x|
    Abs,
    /// error function
    Erf,
    /// logical not
    Not,
    /// x is NaN
    IsNaN,
    /// floor
    Floor,
    /// ceil
    Ceil,
    /// sin
    Sin,
    /// cos
    Cos,
    /// sign
    Sign,
    /// round half to even
    Round,
    /// ln(1+e^x)
    Softplus,
}

/// Broadcasting elementwise ops with two inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// a + b
    Add,
    /// a - b
    Sub,
    /// a * b
    Mul,
    /// a / b
    Div,
    /// a ^ b
    Pow,
    /// a == b
    Equal,
    /// a < b
    Less,
    /// a <= b
    LessOrEqual,
    /// a > b
    Greater,
    /// a >= b
    GreaterOrEqual,
    /// logical and
    And,
    /// logical or
    Or,
    /// logical xor
    Xor,
    /// PRelu(x, slope)
    PRelu,
}

/// Broadcasting elementwise ops with one or more inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VariadicOp {
    /// elementwise max
    Max,
    /// elementwise min
    Min,
    /// elementwise sum
    Sum,
    /// elementwise mean
    Mean,
}

/// Reductions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// mean
    Mean,
    /// sum
    Sum,
    /// max
    Max,
    /// min
    Min,
    /// product
    Prod,
    /// sqrt of sum of squares
    L2,
    /// sum of squares
    SumSquare,
}

/// Global pooling kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GlobalPoolOp {
    /// GlobalAveragePool
    Average,
    /// GlobalMaxPool
    Max,
}

/// An operation of the default ONNX domain that the IR models, or [`Op::Other`].
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Conv(X, W, B?)
    Conv(ConvAttrs),
    /// ConvTranspose(X, W, B?)
    ConvTranspose(ConvAttrs),
    /// Gemm(A, B, C?)
    Gemm {
        /// alpha (default 1)
        alpha: Option<f32>,
        /// beta (default 1)
        beta: Option<f32>,
        /// transA (default 0)
        trans_a: Option<i64>,
        /// transB (default 0)
        trans_b: Option<i64>,
    },
    /// MatMul(A, B)
    MatMul,
    /// BatchNormalization(X, scale, B, mean, var)
    BatchNormalization {
        /// epsilon (default 1e-5)
        epsilon: Option<f32>,
        /// momentum (default 0.9)
        momentum: Option<f32>,
        /// training_mode (default 0)
        training_mode: Option<i64>,
    },
    /// Elementwise unary op.
    Unary(UnaryOp),
    /// LeakyRelu(X)
    LeakyRelu {
        /// alpha (default 0.01)
        alpha: Option<f32>,
    },
    /// Gelu(X) (opset 20)
    Gelu {
        /// approximate: "none" or "tanh"
        approximate: Option<String>,
    },
    /// Elementwise binary op with broadcasting.
    Binary(BinaryOp),
    /// Mod(A, B)
    Mod {
        /// fmod (default 0)
        fmod: Option<i64>,
    },
    /// Max/Min/Sum/Mean over one or more inputs.
    Variadic(VariadicOp),
    /// Where(cond, X, Y)
    Where,
    /// Clip(X, min?, max?)
    Clip,
    /// MaxPool(X) -> Y, Indices?
    MaxPool(PoolAttrs),
    /// AveragePool(X)
    AveragePool(PoolAttrs),
    /// GlobalAveragePool / GlobalMaxPool
    GlobalPool(GlobalPoolOp),
    /// Flatten(X)
    Flatten {
        /// axis (default 1)
        axis: Option<i64>,
    },
    /// Reshape(X, shape)
    Reshape {
        /// allowzero (default 0)
        allowzero: Option<i64>,
    },
    /// Transpose(X)
    Transpose {
        /// perm (default: reversed axes)
        perm: Option<Vec<i64>>,
    },
    /// Concat(X...)
    Concat {
        /// axis (required)
        axis: i64,
    },
    /// Split(X, split?) -> Y...
    Split {
        /// axis (default 0)
        axis: Option<i64>,
        /// split sizes as attribute (opset < 13)
        split: Option<Vec<i64>>,
        /// num_outputs (opset >= 18)
        num_outputs: Option<i64>,
    },
    /// Slice(X, starts, ends, axes?, steps?)
    Slice,
    /// Gather(X, indices)
    Gather {
        /// axis (default 0)
        axis: Option<i64>,
    },
    /// GatherElements(X, indices)
    GatherElements {
        /// axis (default 0)
        axis: Option<i64>,
    },
    /// GatherND(X, indices)
    GatherND {
        /// batch_dims (default 0)
        batch_dims: Option<i64>,
    },
    /// Unsqueeze(X, axes?)
    Unsqueeze {
        /// axes as attribute (opset < 13)
        axes: Option<Vec<i64>>,
    },
    /// Squeeze(X, axes?)
    Squeeze {
        /// axes as attribute (opset < 13)
        axes: Option<Vec<i64>>,
    },
    /// Expand(X, shape)
    Expand,
    /// Shape(X)
    Shape {
        /// start (default 0)
        start: Option<i64>,
        /// end (default: rank)
        end: Option<i64>,
    },
    /// Size(X)
    Size,
    /// Cast(X)
    Cast {
        /// target element type
        to: DType,
        /// saturate (opset 19; default 1)
        saturate: Option<i64>,
    },
    /// CastLike(X, target): Cast of X to the element type of `target`.
    CastLike {
        /// saturate (opset 19; default 1)
        saturate: Option<i64>,
    },
    /// ConstantOfShape(shape)
    ConstantOfShape {
        /// fill value (default f32 0)
        value: Option<Tensor>,
    },
    /// Range(start, limit, delta)
    Range,
    /// ReduceMean/Sum/Max/Min/Prod/L2/SumSquare(X, axes?)
    Reduce {
        /// which reduction
        op: ReduceOp,
        /// axes as attribute (older opsets)
        axes: Option<Vec<i64>>,
        /// keepdims (default 1)
        keepdims: Option<i64>,
        /// noop_with_empty_axes (default 0)
        noop_with_empty_axes: Option<i64>,
    },
    /// Softmax(X) (opset >= 13 semantics)
    Softmax {
        /// axis (default -1)
        axis: Option<i64>,
    },
    /// LayerNormalization(X, scale, B?)
    LayerNormalization {
        /// axis (default -1)
        axis: Option<i64>,
        /// epsilon (default 1e-5)
        epsilon: Option<f32>,
        /// stash_type (default 1)
        stash_type: Option<i64>,
    },
    /// CumSum(X, axis)
    CumSum {
        /// exclusive (default 0)
        exclusive: Option<i64>,
        /// reverse (default 0)
        reverse: Option<i64>,
    },
    /// Pad(X, pads, constant_value?, axes?)
    Pad {
        /// mode (default "constant")
        mode: Option<String>,
    },
    /// QuantizeLinear(X, scale, zero_point?)
    QuantizeLinear {
        /// axis (default 1)
        axis: Option<i64>,
        /// saturate (default 1)
        saturate: Option<i64>,
        /// block_size (opset 21; default 0)
        block_size: Option<i64>,
        /// output_dtype (opset 21)
        output_dtype: Option<i64>,
    },
    /// DequantizeLinear(X, scale, zero_point?)
    DequantizeLinear {
        /// axis (default 1)
        axis: Option<i64>,
        /// block_size (opset 21; default 0)
        block_size: Option<i64>,
    },
    /// DynamicQuantizeLinear(X) -> Y (u8), Y_scale, Y_zero_point
    DynamicQuantizeLinear,
    /// MatMulInteger(A, B, a_zero_point?, b_zero_point?) -> i32
    MatMulInteger,
    /// ConvInteger(X, W, x_zero_point?, w_zero_point?) -> i32
    ConvInteger(ConvAttrs),
    /// QLinearMatMul(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp)
    QLinearMatMul,
    /// QLinearConv(x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B?)
    QLinearConv(ConvAttrs),
    /// Identity(X)
    Identity,
    /// Dropout(X, ratio?, training_mode?) -> Y, mask?
    Dropout {
        /// seed
        seed: Option<i64>,
    },
    /// Anything else, carried losslessly.
    Other(OtherOp),
}

/// An op the IR does not interpret: domain, type and attributes exactly as imported.
#[derive(Clone, Debug, PartialEq)]
pub struct OtherOp {
    /// Operator domain ("" for the default ONNX domain).
    pub domain: String,
    /// Operator type.
    pub op_type: String,
    /// Attributes, in import order.
    pub attributes: Vec<Attribute>,
}

const UNARY: &[(&str, UnaryOp)] = &[
    ("Relu", UnaryOp::Relu),
    ("Sigmoid", UnaryOp::Sigmoid),
    ("Tanh", UnaryOp::Tanh),
    ("Exp", UnaryOp::Exp),
    ("Log", UnaryOp::Log),
    ("Sqrt", UnaryOp::Sqrt),
    ("Reciprocal", UnaryOp::Reciprocal),
    ("Neg", UnaryOp::Neg),
    ("Abs", UnaryOp::Abs),
    ("Erf", UnaryOp::Erf),
    ("Not", UnaryOp::Not),
    ("IsNaN", UnaryOp::IsNaN),
    ("Floor", UnaryOp::Floor),
    ("Ceil", UnaryOp::Ceil),
    ("Sin", UnaryOp::Sin),
    ("Cos", UnaryOp::Cos),
    ("Sign", UnaryOp::Sign),
    ("Round", UnaryOp::Round),
    ("Softplus", UnaryOp::Softplus),
];

const BINARY: &[(&str, BinaryOp)] = &[
    ("Add", BinaryOp::Add),
    ("Sub", BinaryOp::Sub),
    ("Mul", BinaryOp::Mul),
    ("Div", BinaryOp::Div),
    ("Pow", BinaryOp::Pow),
    ("Equal", BinaryOp::Equal),
    ("Less", BinaryOp::Less),
    ("LessOrEqual", BinaryOp::LessOrEqual),
    ("Greater", BinaryOp::Greater),
    ("GreaterOrEqual", BinaryOp::GreaterOrEqual),
    ("And", BinaryOp::And),
    ("Or", BinaryOp::Or),
    ("Xor", BinaryOp::Xor),
    ("PRelu", BinaryOp::PRelu),
];

const VARIADIC: &[(&str, VariadicOp)] = &[
    ("Max", VariadicOp::Max),
    ("Min", VariadicOp::Min),
    ("Sum", VariadicOp::Sum),
    ("Mean", VariadicOp::Mean),
];

const REDUCE: &[(&str, ReduceOp)] = &[
    ("ReduceMean", ReduceOp::Mean),
    ("ReduceSum", ReduceOp::Sum),
    ("ReduceMax", ReduceOp::Max),
    ("ReduceMin", ReduceOp::Min),
    ("ReduceProd", ReduceOp::Prod),
    ("ReduceL2", ReduceOp::L2),
    ("ReduceSumSquare", ReduceOp::SumSquare),
];

fn lookup<T: Copy>(table: &[(&'static str, T)], name: &str) -> Option<T> {
    table.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}
fn name_of<T: PartialEq>(table: &[(&'static str, T)], v: &T) -> &'static str {
    table
        .iter()
        .find(|(_, x)| x == v)
        .map(|(n, _)| *n)
        .unwrap_or("?")
}

fn conv_attrs(b: &mut AttrBag, transpose: bool) -> Result<ConvAttrs> {
    Ok(ConvAttrs {
        auto_pad: b.string("auto_pad")?,
        dilations: b.ints("dilations")?,
        group: b.int("group")?,
        kernel_shape: b.ints("kernel_shape")?,
        pads: b.ints("pads")?,
        strides: b.ints("strides")?,
        output_padding: if transpose {
            b.ints("output_padding")?
        } else {
            None
        },
        output_shape: if transpose {
            b.ints("output_shape")?
        } else {
            None
        },
    })
}

fn pool_attrs(b: &mut AttrBag, max: bool) -> Result<PoolAttrs> {
    Ok(PoolAttrs {
        auto_pad: b.string("auto_pad")?,
        ceil_mode: b.int("ceil_mode")?,
        count_include_pad: if max {
            None
        } else {
            b.int("count_include_pad")?
        },
        dilations: b.ints("dilations")?,
        kernel_shape: b.ints("kernel_shape")?,
        pads: b.ints("pads")?,
        storage_order: if max { b.int("storage_order")? } else { None },
        strides: b.ints("strides")?,
    })
}

impl Op {
    /// Builds the op for an ONNX node. Anything outside the modelled domain, opset range
    /// or attribute set becomes [`Op::Other`] with the attributes unchanged.
    pub fn from_onnx(domain: &str, op_type: &str, attrs: Vec<Attribute>, opset: i64) -> Op {
        let (lo, hi) = typed_opsets(op_type);
        let typed = (domain.is_empty() || domain == "ai.onnx") && (lo..=hi).contains(&opset);
        if typed {
            let mut bag = AttrBag::new(attrs.clone());
            if let Ok(Some(op)) = Self::typed(op_type, &mut bag, opset) {
                if bag.finish().is_ok() {
                    return op;
                }
            }
        }
        Op::Other(OtherOp {
            domain: domain.to_string(),
            op_type: op_type.to_string(),
            attributes: attrs,
        })
    }

    fn typed(op_type: &str, b: &mut AttrBag, opset: i64) -> Result<Option<Op>> {
        if let Some(u) = lookup(UNARY, op_type) {
            return Ok(Some(Op::Unary(u)));
        }
        if let Some(u) = lookup(BINARY, op_type) {
            return Ok(Some(Op::Binary(u)));
        }
        if let Some(u) = lookup(VARIADIC, op_type) {
            return Ok(Some(Op::Variadic(u)));
        }
        if let Some(op) = lookup(REDUCE, op_type) {
            return Ok(Some(Op::Reduce {
                op,
                axes: b.ints("axes")?,
                keepdims: b.int("keepdims")?,
                noop_with_empty_axes: b.int("noop_with_empty_axes")?,
            }));
        }
        Ok(Some(match op_type {
            "Conv" => Op::Conv(conv_attrs(b, false)?),
            "ConvTranspose" => Op::ConvTranspose(conv_attrs(b, true)?),
            "Gemm" => Op::Gemm {
                alpha: b.float("alpha")?,
                beta: b.float("beta")?,
                trans_a: b.int("transA")?,
                trans_b: b.int("transB")?,
            },
            "MatMul" => Op::MatMul,
            "BatchNormalization" => Op::BatchNormalization {
                epsilon: b.float("epsilon")?,
                momentum: b.float("momentum")?,
                training_mode: b.int("training_mode")?,
            },
            "LeakyRelu" => Op::LeakyRelu {
                alpha: b.float("alpha")?,
            },
            "Gelu" => Op::Gelu {
                approximate: b.string("approximate")?,
            },
            "Mod" => Op::Mod {
                fmod: b.int("fmod")?,
            },
            "Where" => Op::Where,
            "Clip" => Op::Clip,
            "MaxPool" => Op::MaxPool(pool_attrs(b, true)?),
            "AveragePool" => Op::AveragePool(pool_attrs(b, false)?),
            "GlobalAveragePool" => Op::GlobalPool(GlobalPoolOp::Average),
            "GlobalMaxPool" => Op::GlobalPool(GlobalPoolOp::Max),
            "Flatten" => Op::Flatten {
                axis: b.int("axis")?,
            },
            "Reshape" => Op::Reshape {
                allowzero: b.int("allowzero")?,
            },
            "Transpose" => Op::Transpose {
                perm: b.ints("perm")?,
            },
            "Concat" => match b.int("axis")? {
                Some(axis) => Op::Concat { axis },
                None => return Ok(None),
            },
            "Split" => Op::Split {
                axis: b.int("axis")?,
                split: b.ints("split")?,
                num_outputs: b.int("num_outputs")?,
            },
            "Slice" => Op::Slice,
            "Gather" => Op::Gather {
                axis: b.int("axis")?,
            },
            "GatherElements" => Op::GatherElements {
                axis: b.int("axis")?,
            },
            "GatherND" => Op::GatherND {
                batch_dims: b.int("batch_dims")?,
            },
            "Unsqueeze" => Op::Unsqueeze {
                axes: b.ints("axes")?,
            },
            "Squeeze" => Op::Squeeze {
                axes: b.ints("axes")?,
            },
            "Expand" => Op::Expand,
            "Shape" => Op::Shape {
                start: b.int("start")?,
                end: b.int("end")?,
            },
            "Size" => Op::Size,
            "Cast" => match b.int("to")?.and_then(|c| DType::from_onnx(c as i32)) {
                Some(to) => Op::Cast {
                    to,
                    saturate: b.int("saturate")?,
                },
                None => return Ok(None),
            },
            "CastLike" => Op::CastLike {
                saturate: b.int("saturate")?,
            },
            "ConstantOfShape" => Op::ConstantOfShape {
                value: b.tensor("value")?,
            },
            "Range" => Op::Range,
            // Softmax before opset 13 flattens to 2-D first: different semantics.
            "Softmax" if opset >= 13 => Op::Softmax {
                axis: b.int("axis")?,
            },
            "LayerNormalization" => Op::LayerNormalization {
                axis: b.int("axis")?,
                epsilon: b.float("epsilon")?,
                stash_type: b.int("stash_type")?,
            },
            "CumSum" => Op::CumSum {
                exclusive: b.int("exclusive")?,
                reverse: b.int("reverse")?,
            },
            "Pad" => Op::Pad {
                mode: b.string("mode")?,
            },
            "QuantizeLinear" => Op::QuantizeLinear {
                axis: b.int("axis")?,
                saturate: b.int("saturate")?,
                block_size: b.int("block_size")?,
                output_dtype: b.int("output_dtype")?,
            },
            "DequantizeLinear" => Op::DequantizeLinear {
                axis: b.int("axis")?,
                block_size: b.int("block_size")?,
            },
            "DynamicQuantizeLinear" => Op::DynamicQuantizeLinear,
            "MatMulInteger" => Op::MatMulInteger,
            "ConvInteger" => Op::ConvInteger(conv_attrs(b, false)?),
            "QLinearMatMul" => Op::QLinearMatMul,
            "QLinearConv" => Op::QLinearConv(conv_attrs(b, false)?),
            "Identity" => Op::Identity,
            "Dropout" => Op::Dropout {
                seed: b.int("seed")?,
            },
            _ => return Ok(None),
        }))
    }

    /// The ONNX (domain, op_type) of this op.
    pub fn onnx_type(&self) -> (&str, &str) {
        let t = match self {
            Op::Other(o) => return (&o.domain, &o.op_type),
            Op::Conv(_) => "Conv",
            Op::ConvTranspose(_) => "ConvTranspose",
            Op::Gemm { .. } => "Gemm",
            Op::MatMul => "MatMul",
            Op::BatchNormalization { .. } => "BatchNormalization",
            Op::Unary(u) => name_of(UNARY, u),
            Op::LeakyRelu { .. } => "LeakyRelu",
            Op::Gelu { .. } => "Gelu",
            Op::Binary(b) => name_of(BINARY, b),
            Op::Mod { .. } => "Mod",
            Op::Variadic(v) => name_of(VARIADIC, v),
            Op::Where => "Where",
            Op::Clip => "Clip",
            Op::MaxPool(_) => "MaxPool",
            Op::AveragePool(_) => "AveragePool",
            Op::GlobalPool(GlobalPoolOp::Average) => "GlobalAveragePool",
            Op::GlobalPool(GlobalPoolOp::Max) => "GlobalMaxPool",
            Op::Flatten { .. } => "Flatten",
            Op::Reshape { .. } => "Reshape",
            Op::Transpose { .. } => "Transpose",
            Op::Concat { .. } => "Concat",
            Op::Split { .. } => "Split",
            Op::Slice => "Slice",
            Op::Gather { .. } => "Gather",
            Op::GatherElements { .. } => "GatherElements",
            Op::GatherND { .. } => "GatherND",
            Op::Unsqueeze { .. } => "Unsqueeze",
            Op::Squeeze { .. } => "Squeeze",
            Op::Expand => "Expand",
            Op::Shape { .. } => "Shape",
            Op::Size => "Size",
            Op::Cast { .. } => "Cast",
            Op::CastLike { .. } => "CastLike",
            Op::ConstantOfShape { .. } => "ConstantOfShape",
            Op::Range => "Range",
            Op::Reduce { op, .. } => name_of(REDUCE, op),
            Op::Softmax { .. } => "Softmax",
            Op::LayerNormalization { .. } => "LayerNormalization",
            Op::CumSum { .. } => "CumSum",
            Op::Pad { .. } => "Pad",
            Op::QuantizeLinear { .. } => "QuantizeLinear",
            Op::DequantizeLinear { .. } => "DequantizeLinear",
            Op::DynamicQuantizeLinear => "DynamicQuantizeLinear",
            Op::MatMulInteger => "MatMulInteger",
            Op::ConvInteger(_) => "ConvInteger",
            Op::QLinearMatMul => "QLinearMatMul",
            Op::QLinearConv(_) => "QLinearConv",
            Op::Identity => "Identity",
            Op::Dropout { .. } => "Dropout",
        };
        ("", t)
    }

    /// True for [`Op::Other`].
    pub fn is_other(&self) -> bool {
        matches!(self, Op::Other(_))
    }

    /// The attributes to write for this op (absent ones omitted), in a fixed order.
    pub fn attributes(&self) -> Vec<Attribute> {
        let mut o = AttrOut::default();
        match self {
            Op::Other(x) => return x.attributes.clone(),
            Op::Conv(c) | Op::ConvTranspose(c) | Op::ConvInteger(c) | Op::QLinearConv(c) => {
                o.string("auto_pad", &c.auto_pad)
                    .ints("dilations", &c.dilations)
                    .int("group", c.group)
                    .ints("kernel_shape", &c.kernel_shape)
                    .ints("output_padding", &c.output_padding)
                    .ints("output_shape", &c.output_shape)
                    .ints("pads", &c.pads)
                    .ints("strides", &c.strides);
            }
            Op::MaxPool(p) | Op::AveragePool(p) => {
                o.string("auto_pad", &p.auto_pad)
                    .int("ceil_mode", p.ceil_mode)
                    .int("count_include_pad", p.count_include_pad)
                    .ints("dilations", &p.dilations)
                    .ints("kernel_shape", &p.kernel_shape)
                    .ints("pads", &p.pads)
                    .int("storage_order", p.storage_order)
                    .ints("strides", &p.strides);
            }
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => {
                o.float("alpha", *alpha)
                    .float("beta", *beta)
                    .int("transA", *trans_a)
                    .int("transB", *trans_b);
            }
            Op::BatchNormalization {
                epsilon,
                momentum,
                training_mode,
            } => {
                o.float("epsilon", *epsilon)
                    .float("momentum", *momentum)
                    .int("training_mode", *training_mode);
            }
            Op::LeakyRelu { alpha } => {
                o.float("alpha", *alpha);
            }
            Op::Gelu { approximate } => {
                o.string("approximate", approximate);
            }
            Op::Mod { fmod } => {
                o.int("fmod", *fmod);
            }
            Op::Flatten { axis }
            | Op::Gather { axis }
            | Op::GatherElements { axis }
            | Op::Softmax { axis } => {
                o.int("axis", *axis);
            }
            Op::Reshape { allowzero } => {
                o.int("allowzero", *allowzero);
            }
            Op::Transpose { perm } => {
                o.ints("perm", perm);
            }
            Op::Concat { axis } => {
                o.int("axis", Some(*axis));
            }
            Op::Split {
                axis,
                split,
                num_outputs,
            } => {
                o.int("axis", *axis)
                    .int("num_outputs", *num_outputs)
                    .ints("split", split);
            }
            Op::GatherND { batch_dims } => {
                o.int("batch_dims", *batch_dims);
            }
            Op::Unsqueeze { axes } | Op::Squeeze { axes } => {
                o.ints("axes", axes);
            }
            Op::Shape { start, end } => {
                o.int("end", *end).int("start", *start);
            }
            Op::Cast { to, saturate } => {
                o.int("saturate", *saturate)
                    .int("to", Some(i64::from(to.to_onnx())));
            }
            Op::CastLike { saturate } => {
                o.int("saturate", *saturate);
            }
            Op::ConstantOfShape { value } => {
                o.tensor("value", value);
            }
            Op::Reduce {
                axes,
                keepdims,
                noop_with_empty_axes,
                ..
            } => {
                o.ints("axes", axes)
                    .int("keepdims", *keepdims)
                    .int("noop_with_empty_axes", *noop_with_empty_axes);
            }
            Op::LayerNormalization {
                axis,
                epsilon,
                stash_type,
            } => {
                o.int("axis", *axis)
                    .float("epsilon", *epsilon)
                    .int("stash_type", *stash_type);
            }
            Op::CumSum { exclusive, reverse } => {
                o.int("exclusive", *exclusive).int("reverse", *reverse);
            }
            Op::Pad { mode } => {
                o.string("mode", mode);
            }
            Op::QuantizeLinear {
                axis,
                saturate,
                block_size,
                output_dtype,
            } => {
                o.int("axis", *axis)
                    .int("block_size", *block_size)
                    .int("output_dtype", *output_dtype)
                    .int("saturate", *saturate);
            }
            Op::DequantizeLinear { axis, block_size } => {
                o.int("axis", *axis).int("block_size", *block_size);
            }
            Op::Dropout { seed } => {
                o.int("seed", *seed);
            }
            Op::MatMul
            | Op::Unary(_)
            | Op::Binary(_)
            | Op::Variadic(_)
            | Op::Where
            | Op::Clip
            | Op::GlobalPool(_)
            | Op::Slice
            | Op::Expand
            | Op::Size
            | Op::Range
            | Op::DynamicQuantizeLinear
            | Op::MatMulInteger
            | Op::QLinearMatMul
            | Op::Identity => {}
        }
        o.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_ops_round_trip_attributes() {
        let attrs = vec![
            Attribute::int("group", 2),
            Attribute::ints("pads", &[1, 1, 1, 1]),
        ];
        let op = Op::from_onnx("", "Conv", attrs, 17);
        assert!(matches!(op, Op::Conv(ref c) if c.group() == 2));
        assert_eq!(op.attributes().len(), 2);
        assert_eq!(op.onnx_type(), ("", "Conv"));
    }

    #[test]
    fn unmodelled_attribute_or_opset_stays_other() {
        let op = Op::from_onnx("", "Relu", vec![Attribute::int("weird", 1)], 17);
        assert!(op.is_other());
        assert!(Op::from_onnx("", "Relu", vec![], 9).is_other());
        assert!(Op::from_onnx("", "Softmax", vec![], 11).is_other());
        assert!(Op::from_onnx("com.microsoft", "Relu", vec![], 17).is_other());
        assert!(matches!(
            Op::from_onnx("", "Softmax", vec![], 13),
            Op::Softmax { .. }
        ));
    }

    #[test]
    fn per_op_typed_opsets() {
        // Checked unchanged up to CHECKED_OPSET; beyond it, Other.
        assert!(matches!(Op::from_onnx("", "Conv", vec![], 22), Op::Conv(_)));
        assert!(!Op::from_onnx("", "Add", vec![], CHECKED_OPSET).is_other());
        assert!(Op::from_onnx("", "Add", vec![], CHECKED_OPSET + 1).is_other());
        // Semantic changes: Cast at 24, Range at 27.
        let to = vec![Attribute::int("to", 1)];
        assert!(!Op::from_onnx("", "Cast", to.clone(), 23).is_other());
        assert!(Op::from_onnx("", "Cast", to, 24).is_other());
        assert!(!Op::from_onnx("", "Range", vec![], 26).is_other());
        // CastLike: from its first opset (15) to 23.
        assert!(Op::from_onnx("", "CastLike", vec![], 14).is_other());
        let sat = vec![Attribute::int("saturate", 0)];
        let op = Op::from_onnx("", "CastLike", sat.clone(), 19);
        assert_eq!(op, Op::CastLike { saturate: Some(0) });
        assert_eq!(op.onnx_type(), ("", "CastLike"));
        assert_eq!(op.attributes(), sat);
        assert!(Op::from_onnx("", "CastLike", vec![], 24).is_other());
        assert!(Op::from_onnx("", "Range", vec![], 27).is_other());
        // Integer quantization ops from opset 10; others not before 11.
        assert!(matches!(
            Op::from_onnx("", "MatMulInteger", vec![], 10),
            Op::MatMulInteger
        ));
        assert!(Op::from_onnx("", "MatMul", vec![], 10).is_other());
        // An attribute added after 21 that the IR does not model keeps the node Other.
        let p = vec![Attribute::int("precision", 1)];
        assert!(Op::from_onnx("", "QuantizeLinear", p, 23).is_other());
        // Ops not in the table keep 11..=21.
        assert_eq!(typed_opsets("Unknown"), (MIN_TYPED_OPSET, MAX_TYPED_OPSET));
    }

    #[test]
    fn quant_ops_round_trip() {
        let attrs = vec![Attribute::ints("pads", &[1, 1, 1, 1])];
        let op = Op::from_onnx("", "QLinearConv", attrs.clone(), 10);
        assert!(matches!(op, Op::QLinearConv(ref c) if c.pads.is_some()));
        assert_eq!(op.onnx_type(), ("", "QLinearConv"));
        assert_eq!(op.attributes(), attrs);
        for name in ["DynamicQuantizeLinear", "QLinearMatMul", "ConvInteger"] {
            let op = Op::from_onnx("", name, vec![], 21);
            assert_eq!(op.onnx_type(), ("", name));
            assert!(op.attributes().is_empty());
        }
    }
}
