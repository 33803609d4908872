//! Kernel dispatch: fast kernels for the ops that dominate run time, the reference
//! evaluator ([`crate::cpu::eval`]) for the rest.

pub mod cb_conv;
pub mod cb_gemm;
mod cb_lookup;
pub mod conv;
mod conv_implicit;
mod depthwise;
pub mod dq_conv;
mod dq_filter;
pub mod dq_gemm;
pub mod elementwise;
pub mod int_gemm;
pub mod matmul;
pub mod matmul_nbits;
mod minifloat;
pub mod movement;
pub mod norm;
mod packed_gemm;
pub mod pool;
pub mod quant;
mod quant_conv;
pub mod quant_fast;
pub mod select;
pub mod shape;
mod simd;

use crate::cpu::eval;
pub(crate) use crate::cpu::eval::array::norm_axis;
use cc_ir::{DType, Error, Op, Result, Tensor};
use std::borrow::Cow;

/// What a kernel may use besides its inputs.
///
/// Kernels run their parallel loops on the [`crate::cpu::parallel`] pool installed on
/// the calling thread (the executor installs its own for each run).
pub struct KernelCx<'a> {
    /// Number of threads loops run on (for work-splitting decisions).
    pub threads: usize,
    /// Ties the context to the run that made it.
    pub _run: std::marker::PhantomData<&'a ()>,
}

impl KernelCx<'_> {
    /// A context for kernels run with `threads` threads.
    pub fn new(threads: usize) -> KernelCx<'static> {
        KernelCx {
            threads,
            _run: std::marker::PhantomData,
        }
    }

    /// The gemm crate's parallelism setting for this context.
    pub fn gemm_par(&self) -> gemm::Parallelism {
        if self.threads > 1 {
            gemm::Parallelism::Rayon(self.threads)
        } else {
            gemm::Parallelism::None
        }
    }
}

/// An activation applied to a kernel's output while it is still in cache (a Relu or
/// Clip node that only reads that output, absorbed by the executor).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// max(x, 0)
    Relu,
    /// clamp to [lo, hi] (NaN passes through)
    Clip(f32, f32),
}

impl Activation {
    /// The activation computed by `op` when its only runtime input is the value to
    /// transform and its other inputs are these constants; `None` if it is no such op.
    pub fn of(op: &Op, consts: &[Option<&Tensor>]) -> Option<Activation> {
        match op {
            Op::Unary(cc_ir::op::UnaryOp::Relu) => Some(Activation::Relu),
            Op::Clip => {
                let bound = |i: usize, default: f32| -> Option<f32> {
                    match consts.get(i).copied().flatten() {
                        None => Some(default),
                        Some(t) if t.dtype() == DType::F32 && t.len() == 1 => {
                            t.f32_view().ok().map(|v| v[0])
                        }
                        Some(_) => None,
                    }
                };
                Some(Activation::Clip(
                    bound(1, f32::NEG_INFINITY)?,
                    bound(2, f32::INFINITY)?,
                ))
            }
            _ => None,
        }
    }

    /// Adds `bias` to every element, then applies `act` if given, in one pass.
    pub fn apply_with_bias(act: Option<Activation>, xs: &mut [f32], bias: f32) {
        let (lo, hi) = match act {
            None => (f32::NEG_INFINITY, f32::INFINITY),
            Some(Activation::Relu) => (0.0, f32::INFINITY),
            Some(Activation::Clip(lo, hi)) => (lo, hi),
        };
        xs.iter_mut().for_each(|x| {
            let v = *x + bias;
            let v = if v < lo { lo } else { v };
            *x = if v > hi { hi } else { v };
        });
    }

    /// Applies the activation in place (branch-free, so it vectorizes).
    pub fn apply(self, xs: &mut [f32]) {
        match self {
            Activation::Relu => xs.iter_mut().for_each(|x| {
                let v = *x;
                *x = if v < 0.0 { 0.0 } else { v };
            }),
            Activation::Clip(lo, hi) => xs.iter_mut().for_each(|x| {
                let v = *x;
                let v = if v < lo { lo } else { v };
                *x = if v > hi { hi } else { v };
            }),
        }
    }
}

/// Runs `op` with `act` applied to its single output, for ops whose kernels can fuse it
/// (f32 Conv); `Ok(None)` when they cannot, and the caller runs the two nodes apart.
pub fn run_fused(
    op: &Op,
    act: Activation,
    inputs: &[Option<&Tensor>],
    cx: &KernelCx<'_>,
) -> Result<Option<Tensor>> {
    match op {
        Op::Conv(a) if all_f32(inputs) => conv::conv(a, inputs, Some(act), cx),
        _ => Ok(None),
    }
}

/// Runs one node: its outputs, or `Ok(None)` when no kernel supports the op with these
/// element types (the executor turns that into an error naming the node).
pub fn run_node(
    op: &Op,
    inputs: &[Option<&Tensor>],
    num_outputs: usize,
    cx: &KernelCx<'_>,
) -> Result<Option<Vec<Tensor>>> {
    // --- quantization kernels (quant_fast.rs, quant.rs, quant_conv.rs) ---
    if let Some(out) = quant_fast::run(op, inputs)? {
        return Ok(Some(out));
    }
    if let Some(out) = quant::run(op, inputs)? {
        return Ok(Some(out));
    }
    // --- end quantization kernels ---
    // --- com.microsoft contrib ops (matmul_nbits.rs) ---
    if let Op::Other(_) = op {
        if let Some(out) = matmul_nbits::run(op, inputs, cx)? {
            return Ok(Some(vec![out]));
        }
    }
    // --- end com.microsoft contrib ops ---
    // --- fast f32 kernels (begin) ---
    if let Some(out) = fast_kernel(op, inputs, num_outputs, cx)? {
        return Ok(Some(out));
    }
    // --- fast f32 kernels (end) ---
    eval::eval_node(op, inputs, Some(num_outputs))
}

/// Routes an op to its fast kernel; `Ok(None)` when none applies (other element types,
/// unsupported attribute combinations), leaving the node to the evaluator.
fn fast_kernel(
    op: &Op,
    inputs: &[Option<&Tensor>],
    num_outputs: usize,
    cx: &KernelCx<'_>,
) -> Result<Option<Vec<Tensor>>> {
    let one = |t: Option<Tensor>| Ok(t.map(|t| vec![t]));
    match op {
        Op::Conv(a) if all_f32(inputs) => one(conv::conv(a, inputs, None, cx)?),
        Op::ConvTranspose(a) if all_f32(inputs) => one(conv::conv_transpose(a, inputs, cx)?),
        Op::MatMul if all_f32(inputs) => one(Some(matmul::matmul(
            input(inputs, 0)?,
            input(inputs, 1)?,
            cx,
        )?)),
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } if all_f32(inputs) => one(Some(matmul::gemm_op(
            inputs,
            alpha.unwrap_or(1.0),
            beta.unwrap_or(1.0),
            trans_a.unwrap_or(0) != 0,
            trans_b.unwrap_or(0) != 0,
            cx,
        )?)),
        Op::MaxPool(a) if num_outputs == 1 && all_f32(inputs) => {
            one(pool::max_pool(a, input(inputs, 0)?)?)
        }
        Op::AveragePool(a) if all_f32(inputs) => one(pool::average_pool(a, input(inputs, 0)?)?),
        Op::GlobalPool(kind) if all_f32(inputs) => {
            one(Some(pool::global_pool(*kind, input(inputs, 0)?)?))
        }
        Op::BatchNormalization {
            epsilon,
            training_mode,
            ..
        } if training_mode.unwrap_or(0) == 0 && num_outputs == 1 && all_f32(inputs) => {
            one(Some(norm::batch_norm(inputs, epsilon.unwrap_or(1e-5))?))
        }
        Op::LayerNormalization { axis, epsilon, .. } if num_outputs == 1 && all_f32(inputs) => {
            one(Some(norm::layer_norm(
                inputs,
                axis.unwrap_or(-1),
                epsilon.unwrap_or(1e-5),
            )?))
        }
        Op::Softmax { axis } if all_f32(inputs) => {
            one(Some(norm::softmax(input(inputs, 0)?, axis.unwrap_or(-1))?))
        }
        Op::Unary(cc_ir::op::UnaryOp::IsNaN) => one(select::is_nan(input(inputs, 0)?)?),
        Op::Unary(u) => one(elementwise::unary(*u, input(inputs, 0)?)?),
        Op::Where => one(select::where_f32(
            input(inputs, 0)?,
            input(inputs, 1)?,
            input(inputs, 2)?,
        )?),
        Op::Reduce {
            op,
            axes,
            keepdims,
            noop_with_empty_axes: _,
        } if inputs.len() <= 2 => {
            let axes = match (axes, inputs.get(1).copied().flatten()) {
                (Some(a), _) => Some(a.clone()),
                (None, Some(t)) => Some(t.to_i64_lossless()?),
                (None, None) => None,
            };
            one(select::reduce_last(
                *op,
                input(inputs, 0)?,
                axes,
                keepdims.unwrap_or(1) != 0,
            )?)
        }
        Op::Unsqueeze { axes } => {
            let axes = match (axes, inputs.get(1).copied().flatten()) {
                (Some(a), _) => a.clone(),
                (None, Some(t)) => t.to_i64_lossless()?,
                (None, None) => return Ok(None),
            };
            one(Some(movement::unsqueeze(input(inputs, 0)?, &axes)?))
        }
        Op::Squeeze { axes } => {
            let axes = match (axes, inputs.get(1).copied().flatten()) {
                (Some(a), _) => Some(a.clone()),
                (None, Some(t)) => Some(t.to_i64_lossless()?),
                (None, None) => None,
            };
            one(Some(movement::squeeze(input(inputs, 0)?, axes.as_deref())?))
        }
        Op::Slice => one(movement::slice(input(inputs, 0)?, inputs)?),
        Op::Expand => one(movement::expand(input(inputs, 0)?, input(inputs, 1)?)?),
        Op::Concat { axis } if inputs.iter().all(|t| t.is_some()) => {
            let xs: Vec<&Tensor> = inputs.iter().flatten().copied().collect();
            one(movement::concat(&xs, *axis)?)
        }
        Op::LeakyRelu { alpha } => one(elementwise::leaky_relu(
            input(inputs, 0)?,
            alpha.unwrap_or(0.01),
        )?),
        Op::Gelu { approximate } => one(elementwise::gelu(
            input(inputs, 0)?,
            approximate.as_deref() == Some("tanh"),
        )?),
        Op::Clip => one(elementwise::clip(inputs)?),
        Op::Binary(
            b @ (cc_ir::op::BinaryOp::Equal
            | cc_ir::op::BinaryOp::Less
            | cc_ir::op::BinaryOp::LessOrEqual
            | cc_ir::op::BinaryOp::Greater
            | cc_ir::op::BinaryOp::GreaterOrEqual
            | cc_ir::op::BinaryOp::And
            | cc_ir::op::BinaryOp::Or
            | cc_ir::op::BinaryOp::Xor),
        ) => one(select::compare(*b, input(inputs, 0)?, input(inputs, 1)?)?),
        Op::Binary(b) => one(elementwise::binary(
            *b,
            input(inputs, 0)?,
            input(inputs, 1)?,
        )?),
        Op::Reshape { allowzero } => one(shape::reshape(
            input(inputs, 0)?,
            input(inputs, 1)?,
            allowzero.unwrap_or(0) != 0,
        )?),
        Op::Flatten { axis } => one(Some(shape::flatten(input(inputs, 0)?, axis.unwrap_or(1))?)),
        Op::Transpose { perm } if all_f32(inputs) => {
            one(Some(shape::transpose(input(inputs, 0)?, perm.as_deref())?))
        }
        Op::GatherND { batch_dims } => one(shape::gather_nd(
            input(inputs, 0)?,
            input(inputs, 1)?,
            batch_dims.unwrap_or(0),
        )?),
        // Inference-mode Dropout is the identity; training mode (a true `training_mode`
        // input) is left to the evaluator.
        Op::Dropout { .. } if num_outputs == 1 && !dropout_training(inputs)? => {
            one(Some(input(inputs, 0)?.clone()))
        }
        _ => Ok(None),
    }
}

/// True when a Dropout's optional `training_mode` input (slot 2) is given and true.
fn dropout_training(inputs: &[Option<&Tensor>]) -> Result<bool> {
    match inputs.get(2).copied().flatten() {
        None => Ok(false),
        Some(t) => Ok(t.to_bool()?.first().copied().unwrap_or(false)),
    }
}

/// Input `i`, which must be present.
pub(crate) fn input<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Result<&'a Tensor> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| Error::invalid(format!("input {i} is missing")))
}

/// True when every present input is f32.
fn all_f32(inputs: &[Option<&Tensor>]) -> bool {
    inputs.iter().flatten().all(|t| t.dtype() == DType::F32)
}

/// The f32 data of a tensor (borrowed when aligned).
pub(crate) fn f32s(t: &Tensor) -> Result<Cow<'_, [f32]>> {
    t.f32_view()
}

/// A new buffer of `n` elements, filled by `fill` without being zeroed first (zeroing
/// large outputs costs as much as an elementwise op itself).
///
/// # Safety
/// `fill` must write every element of the slice it is given before returning `Ok`.
pub(crate) unsafe fn write_new(
    n: usize,
    fill: impl FnOnce(&mut [std::mem::MaybeUninit<f32>]) -> Result<()>,
) -> Result<Vec<f32>> {
    let mut v: Vec<f32> = Vec::with_capacity(n);
    let spare = v
        .spare_capacity_mut()
        .get_mut(..n)
        .ok_or_else(|| Error::invalid("output buffer allocation"))?;
    fill(spare)?;
    // SAFETY: the capacity is at least n and the caller guarantees `fill` initialized
    // all n elements.
    unsafe { v.set_len(n) };
    Ok(v)
}

/// A zero-filled output buffer for `shape`, with its element count checked.
pub(crate) fn zeros(shape: &[usize]) -> Result<Vec<f32>> {
    Ok(vec![0.0; cc_ir::tensor::shape_count(shape)?])
}

#[cfg(test)]
pub(crate) mod test_util {
    use cc_ir::Tensor;

    /// A thread pool for kernel tests (install it, or `enter` it, to use it).
    pub fn cx_pool(threads: usize) -> crate::cpu::parallel::ParallelPool {
        crate::cpu::parallel::ParallelPool::new(threads, || {}).unwrap()
    }

    /// Deterministic pseudo-random values in [-1, 1).
    pub fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// A random f32 tensor.
    pub fn t(shape: &[usize], seed: u64) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_f32(shape.to_vec(), rand_vec(n, seed)).unwrap()
    }

    /// Asserts two slices agree to 1e-4 (relative to 1 + |want|).
    pub fn close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (i, (x, y)) in got.iter().zip(want).enumerate() {
            assert!(
                (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                "at {i}: {x} vs {y}"
            );
        }
    }
}
