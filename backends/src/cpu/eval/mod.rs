//! A reference evaluator for typed ops on constant inputs.
//!
//! [`eval_op`] computes the outputs of one op from constant input tensors. It covers what
//! constant and shape subgraphs use (shape arithmetic, indexing, casts, elementwise math,
//! reductions) on f32, f64, f16, signed and unsigned integers of 8 to 64 bits and bool;
//! string tensors are moved, gathered and compared for equality. It also has simple
//! N-d references for the cases the CPU executor's fast kernels leave to it (MaxPool,
//! AveragePool, ConvTranspose, BatchNormalization, Dropout outside training). It returns
//! `Ok(None)` whenever the op, the element type or the situation is not supported, or the
//! result would be undefined by ONNX (integer division by zero, out-of-range
//! float-to-int casts, random dropout): callers then leave the node alone. Malformed
//! inputs (shape clashes, out-of-range indices) are errors.

pub mod array;
mod binary;
mod broadcast;
mod conv_transpose;
mod movement;
mod norm;
mod pool;
mod reduce;
mod shape_ops;
mod unary;

pub use binary::{Arith, Cmp, Logic};
pub use broadcast::{broadcast_index, broadcast_shapes};
pub(crate) use shape_ops::{flatten_dims, reshape_dims};

use array::Arr;
use cc_ir::op::{BinaryOp, VariadicOp};
use cc_ir::{Error, Op, Result, Tensor};

/// Largest number of elements the evaluator produces for one output; above this,
/// generators (Expand, ConstantOfShape, Range) answer `Ok(None)`.
pub const MAX_ELEMENTS: usize = 1 << 26;

/// The outputs of `op` applied to constant `inputs` (`None` = optional input left empty),
/// or `Ok(None)` when the evaluator does not support the op or the element types.
///
/// Split without explicit sizes needs the node's output count: use [`eval_node`].
pub fn eval_op(op: &Op, inputs: &[Option<&Tensor>]) -> Result<Option<Vec<Tensor>>> {
    eval_node(op, inputs, None)
}

/// Input `i`, or an error naming the op `name` when it is absent.
pub(crate) fn named_input<'a>(
    inputs: &[Option<&'a Tensor>],
    i: usize,
    name: &str,
) -> Result<&'a Tensor> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| Error::invalid(format!("{name}: input {i} is missing")))
}

/// [`eval_op`] with the number of outputs the node declares (used by Split).
pub fn eval_node(
    op: &Op,
    inputs: &[Option<&Tensor>],
    num_outputs: Option<usize>,
) -> Result<Option<Vec<Tensor>>> {
    let name = op.onnx_type().1.to_string();
    let input = |i: usize| named_input(inputs, i, &name);
    // Ops that need only the tensor's shape, or pass any type through.
    match op {
        Op::Shape { start, end } => {
            let dims: Vec<i64> = input(0)?.shape().iter().map(|&d| d as i64).collect();
            return one(shape_ops::shape_of(&dims, *start, *end));
        }
        Op::Size => {
            return Ok(Some(vec![Tensor::from_i64(
                vec![],
                vec![input(0)?.len() as i64],
            )?]))
        }
        Op::Identity => return Ok(Some(vec![input(0)?.clone()])),
        _ => {}
    }
    let mut args: Vec<Option<Arr>> = Vec::with_capacity(inputs.len());
    for t in inputs {
        match t {
            None => args.push(None),
            Some(t) => match Arr::from_tensor(t)? {
                Some(a) => args.push(Some(a)),
                None => return Ok(None),
            },
        }
    }
    let arg = |i: usize| -> Result<&Arr> {
        args.get(i)
            .and_then(Option::as_ref)
            .ok_or_else(|| Error::invalid(format!("{name}: input {i} is missing")))
    };
    let opt = |i: usize| args.get(i).and_then(Option::as_ref);
    let ints = |i: usize, what: &str| -> Result<Option<Vec<i64>>> {
        opt(i).map(|a| a.ints(what)).transpose()
    };
    let out: Option<Arr> = match op {
        Op::Unary(u) => unary::unary(*u, arg(0)?)?,
        Op::Binary(b) => {
            let (x, y) = (arg(0)?, arg(1)?);
            match b {
                BinaryOp::Add => binary::arith(Arith::Add, x, y)?,
                BinaryOp::Sub => binary::arith(Arith::Sub, x, y)?,
                BinaryOp::Mul => binary::arith(Arith::Mul, x, y)?,
                BinaryOp::Div => binary::arith(Arith::Div, x, y)?,
                BinaryOp::Pow => binary::arith(Arith::Pow, x, y)?,
                BinaryOp::Equal => binary::compare(Cmp::Eq, x, y)?,
                BinaryOp::Less => binary::compare(Cmp::Lt, x, y)?,
                BinaryOp::LessOrEqual => binary::compare(Cmp::Le, x, y)?,
                BinaryOp::Greater => binary::compare(Cmp::Gt, x, y)?,
                BinaryOp::GreaterOrEqual => binary::compare(Cmp::Ge, x, y)?,
                BinaryOp::And => binary::logic(Logic::And, x, y)?,
                BinaryOp::Or => binary::logic(Logic::Or, x, y)?,
                BinaryOp::Xor => binary::logic(Logic::Xor, x, y)?,
                BinaryOp::PRelu => None,
            }
        }
        Op::Mod { fmod } => binary::arith(
            Arith::Mod {
                fmod: fmod.unwrap_or(0) != 0,
            },
            arg(0)?,
            arg(1)?,
        )?,
        Op::Variadic(v) => variadic(*v, &args)?,
        Op::Clip => {
            let mut x = Some(arg(0)?.clone());
            if let (Some(lo), Some(cur)) = (opt(1), x.as_ref()) {
                x = binary::arith(Arith::Max, cur, lo)?;
            }
            if let (Some(hi), Some(cur)) = (opt(2), x.as_ref()) {
                x = binary::arith(Arith::Min, cur, hi)?;
            }
            x
        }
        Op::Where => binary::where_(arg(0)?, arg(1)?, arg(2)?)?,
        Op::Cast { to, .. } => unary::cast(arg(0)?, *to)?,
        // `saturate` only concerns float8 targets, which the evaluator does not decode.
        Op::CastLike { .. } => unary::cast(arg(0)?, arg(1)?.dtype())?,
        Op::Reshape { allowzero } => Some(shape_ops::reshape(
            arg(0)?,
            arg(1)?,
            allowzero.unwrap_or(0) != 0,
        )?),
        Op::Flatten { axis } => Some(shape_ops::flatten(arg(0)?, axis.unwrap_or(1))?),
        Op::Squeeze { axes } => {
            let axes = axes.clone().or(ints(1, "Squeeze axes")?);
            Some(shape_ops::squeeze(arg(0)?, axes.as_deref())?)
        }
        Op::Unsqueeze { axes } => {
            let axes = match axes.clone() {
                Some(a) => a,
                None => arg(1)?.ints("Unsqueeze axes")?,
            };
            Some(shape_ops::unsqueeze(arg(0)?, &axes)?)
        }
        Op::Expand => shape_ops::expand(arg(0)?, arg(1)?)?,
        Op::ConstantOfShape { value } => shape_ops::constant_of_shape(arg(0)?, value.as_ref())?,
        Op::Range => shape_ops::range(arg(0)?, arg(1)?, arg(2)?)?,
        Op::Transpose { perm } => Some(movement::transpose(arg(0)?, perm.as_deref())?),
        Op::Concat { axis } => {
            let xs: Vec<&Arr> = args.iter().flatten().collect();
            Some(movement::concat(&xs, *axis)?)
        }
        Op::Gather { axis } => Some(movement::gather(arg(0)?, arg(1)?, axis.unwrap_or(0))?),
        Op::Slice => {
            let starts = arg(1)?.ints("Slice starts")?;
            let ends = arg(2)?.ints("Slice ends")?;
            let axes = ints(3, "Slice axes")?;
            let steps = ints(4, "Slice steps")?;
            Some(movement::slice(
                arg(0)?,
                &starts,
                &ends,
                axes.as_deref(),
                steps.as_deref(),
            )?)
        }
        Op::BatchNormalization {
            epsilon,
            momentum,
            training_mode,
        } => {
            let ins = [arg(0)?, arg(1)?, arg(2)?, arg(3)?, arg(4)?];
            let eps = f64::from(epsilon.unwrap_or(1e-5));
            let mom = f64::from(momentum.unwrap_or(0.9));
            let training = training_mode.unwrap_or(0) != 0;
            return match norm::batch_norm(ins, eps, mom, training)? {
                Some(outs) => outs
                    .into_iter()
                    .take(num_outputs.unwrap_or(1).max(1))
                    .map(Arr::into_tensor)
                    .collect::<Result<Vec<_>>>()
                    .map(Some),
                None => Ok(None),
            };
        }
        Op::ConvTranspose(a) => conv_transpose::conv_transpose(a, arg(0)?, arg(1)?, opt(2))?,
        Op::MaxPool(a) | Op::AveragePool(a) => {
            let average = matches!(op, Op::AveragePool(_));
            let want_indices = !average && num_outputs.unwrap_or(1) > 1;
            return match pool::pool(a, arg(0)?, average, want_indices)? {
                Some(outs) => outs
                    .into_iter()
                    .map(Arr::into_tensor)
                    .collect::<Result<Vec<_>>>()
                    .map(Some),
                None => Ok(None),
            };
        }
        Op::Dropout { .. } => {
            let training = match opt(2) {
                Some(t) => t.scalar_int("Dropout training_mode")? != 0,
                None => false,
            };
            let ratio = match opt(1).map(|r| r.data.as_f64()) {
                Some(Some(r)) => r,
                Some(None) => return Err(Error::invalid("Dropout: ratio must be a float")),
                None => vec![0.5],
            };
            // Training with a nonzero ratio draws random numbers: not reproducible.
            if training && ratio.iter().any(|&r| r != 0.0) {
                return Ok(None);
            }
            let x = arg(0)?;
            let mut outs = vec![x.clone().into_tensor()?];
            if num_outputs.unwrap_or(1) > 1 {
                outs.push(Tensor::from_bool(
                    x.shape.clone(),
                    vec![true; x.data.len()],
                )?);
            }
            return Ok(Some(outs));
        }
        Op::Split {
            axis,
            split,
            num_outputs: n_attr,
        } => {
            let x = arg(0)?;
            let axis = axis.unwrap_or(0);
            let dim = x.shape[array::norm_axis(axis, x.rank(), "Split")?];
            let sizes: Vec<i64> = match (ints(1, "Split sizes")?, split) {
                (Some(s), _) => s,
                (None, Some(s)) => s.clone(),
                (None, None) => match n_attr.map(|n| n as usize).or(num_outputs) {
                    Some(n) => movement::even_split(dim, n)?
                        .into_iter()
                        .map(|s| s as i64)
                        .collect(),
                    None => return Ok(None),
                },
            };
            let sizes = sizes
                .into_iter()
                .map(|s| usize::try_from(s).map_err(|_| Error::invalid("Split: negative size")))
                .collect::<Result<Vec<_>>>()?;
            let parts = movement::split(x, axis, &sizes)?;
            return parts
                .into_iter()
                .map(Arr::into_tensor)
                .collect::<Result<Vec<_>>>()
                .map(Some);
        }
        Op::Reduce {
            op: r,
            axes,
            keepdims,
            noop_with_empty_axes,
        } => {
            let axes = match axes.clone() {
                Some(a) => a,
                None => ints(1, "Reduce axes")?.unwrap_or_default(),
            };
            reduce::reduce(
                *r,
                arg(0)?,
                &axes,
                keepdims.unwrap_or(1) != 0,
                noop_with_empty_axes.unwrap_or(0) != 0,
            )?
        }
        Op::CumSum { exclusive, reverse } => reduce::cumsum(
            arg(0)?,
            arg(1)?.scalar_int("CumSum axis")?,
            exclusive.unwrap_or(0) != 0,
            reverse.unwrap_or(0) != 0,
        )?,
        _ => None,
    };
    match out {
        Some(a) => one(a),
        None => Ok(None),
    }
}

fn one(a: Arr) -> Result<Option<Vec<Tensor>>> {
    Ok(Some(vec![a.into_tensor()?]))
}

/// Max/Min/Sum/Mean over any number of broadcast inputs.
fn variadic(op: VariadicOp, args: &[Option<Arr>]) -> Result<Option<Arr>> {
    let xs: Vec<&Arr> = args.iter().flatten().collect();
    let Some((first, rest)) = xs.split_first() else {
        return Err(Error::invalid("variadic op with no inputs"));
    };
    let arith = match op {
        VariadicOp::Max => Arith::Max,
        VariadicOp::Min => Arith::Min,
        VariadicOp::Sum | VariadicOp::Mean => Arith::Add,
    };
    let mut acc = (*first).clone();
    for x in rest {
        match binary::arith(arith, &acc, x)? {
            Some(a) => acc = a,
            None => return Ok(None),
        }
    }
    if op == VariadicOp::Mean {
        let n = xs.len() as f64;
        let div = match acc.data {
            array::Data::F32(_) => array::Data::F32(vec![n as f32]),
            array::Data::F64(_) => array::Data::F64(vec![n]),
            array::Data::F16(_) => array::Data::F16(vec![half::f16::from_f64(n)]),
            _ => return Ok(None),
        };
        return binary::arith(Arith::Div, &acc, &Arr::new(vec![], div)?);
    }
    Ok(Some(acc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_ir::op::{ReduceOp, UnaryOp};
    use cc_ir::DType;

    fn i64s(shape: Vec<usize>, v: Vec<i64>) -> Tensor {
        Tensor::from_i64(shape, v).unwrap()
    }

    #[test]
    fn shape_size_identity_need_no_decoding() {
        let h = Tensor::from_raw(DType::F16, vec![2, 3], vec![0u8; 12].into()).unwrap();
        let s = eval_op(
            &Op::Shape {
                start: None,
                end: None,
            },
            &[Some(&h)],
        )
        .unwrap()
        .unwrap();
        assert_eq!(s[0].to_i64().unwrap(), vec![2, 3]);
        let n = eval_op(&Op::Size, &[Some(&h)]).unwrap().unwrap();
        assert_eq!((n[0].shape().len(), n[0].to_i64().unwrap()), (0, vec![6]));
        // Other ops on bf16 are not supported: no guess.
        let b = Tensor::from_raw(DType::BF16, vec![2], vec![0u8; 4].into()).unwrap();
        assert!(eval_op(&Op::Unary(UnaryOp::Neg), &[Some(&b)])
            .unwrap()
            .is_none());
        let n = eval_op(&Op::Unary(UnaryOp::Neg), &[Some(&h)])
            .unwrap()
            .unwrap();
        assert_eq!(n[0].dtype(), DType::F16);
    }

    #[test]
    fn reshape_and_unsqueeze_from_inputs() {
        let x = Tensor::from_f32(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let shape = i64s(vec![2], vec![-1, 0]);
        let r = eval_op(&Op::Reshape { allowzero: None }, &[Some(&x), Some(&shape)])
            .unwrap()
            .unwrap();
        assert_eq!(r[0].shape(), &[2, 3]);
        let axes = i64s(vec![1], vec![-1]);
        let u = eval_op(&Op::Unsqueeze { axes: None }, &[Some(&x), Some(&axes)])
            .unwrap()
            .unwrap();
        assert_eq!(u[0].shape(), &[2, 3, 1]);
        assert!(eval_op(&Op::Unsqueeze { axes: None }, &[Some(&x)]).is_err());
    }

    #[test]
    fn split_needs_output_count_without_sizes() {
        let x = i64s(vec![4], vec![1, 2, 3, 4]);
        let op = Op::Split {
            axis: None,
            split: None,
            num_outputs: None,
        };
        assert!(eval_op(&op, &[Some(&x)]).unwrap().is_none());
        let parts = eval_node(&op, &[Some(&x)], Some(2)).unwrap().unwrap();
        assert_eq!(parts[1].to_i64().unwrap(), vec![3, 4]);
        let sizes = i64s(vec![2], vec![1, 3]);
        let parts = eval_op(&op, &[Some(&x), Some(&sizes)]).unwrap().unwrap();
        assert_eq!(parts[0].to_i64().unwrap(), vec![1]);
    }

    #[test]
    fn reduce_axes_input_variadic_and_clip() {
        let x = Tensor::from_f32(vec![2, 2], vec![1.0, -2.0, 3.0, 4.0]).unwrap();
        let axes = i64s(vec![1], vec![0]);
        let op = Op::Reduce {
            op: ReduceOp::Sum,
            axes: None,
            keepdims: Some(0),
            noop_with_empty_axes: None,
        };
        let r = eval_op(&op, &[Some(&x), Some(&axes)]).unwrap().unwrap();
        assert_eq!(r[0].to_f32().unwrap(), vec![4.0, 2.0]);
        let m = eval_op(&Op::Variadic(VariadicOp::Mean), &[Some(&x), Some(&x)])
            .unwrap()
            .unwrap();
        assert_eq!(m[0].to_f32().unwrap(), vec![1.0, -2.0, 3.0, 4.0]);
        let lo = Tensor::scalar_f32(0.0);
        let c = eval_op(&Op::Clip, &[Some(&x), Some(&lo), None])
            .unwrap()
            .unwrap();
        assert_eq!(c[0].to_f32().unwrap(), vec![1.0, 0.0, 3.0, 4.0]);
        let mm = eval_op(&Op::MatMul, &[Some(&x), Some(&x)]).unwrap();
        assert!(mm.is_none());
    }

    #[test]
    fn movement_ops_carry_strings_and_narrow_types() {
        let s = Tensor::from_strings(vec![2], vec![b"a".to_vec(), b"b".to_vec()]).unwrap();
        let c = eval_op(&Op::Concat { axis: 0 }, &[Some(&s), Some(&s)])
            .unwrap()
            .unwrap();
        assert_eq!(c[0].shape(), &[4]);
        let idx = i64s(vec![1], vec![1]);
        let g = eval_op(&Op::Gather { axis: None }, &[Some(&c[0]), Some(&idx)])
            .unwrap()
            .unwrap();
        assert_eq!(
            g[0],
            Tensor::from_strings(vec![1], vec![b"b".to_vec()]).unwrap()
        );
        let u = Tensor::from_raw(DType::U16, vec![2], vec![1u8, 0, 2, 0].into()).unwrap();
        let t = eval_op(
            &Op::Transpose { perm: None },
            &[Some(&u.reshaped(vec![1, 2]).unwrap())],
        )
        .unwrap()
        .unwrap();
        assert_eq!((t[0].dtype(), t[0].shape()), (DType::U16, &[2, 1][..]));
        assert_eq!(t[0].to_i64_lossless().unwrap(), vec![1, 2]);
    }

    #[test]
    fn dropout_is_identity_outside_training() {
        let x = Tensor::from_f32(vec![2], vec![1.0, -2.0]).unwrap();
        let op = Op::Dropout { seed: None };
        let outs = eval_node(&op, &[Some(&x)], Some(2)).unwrap().unwrap();
        assert_eq!(outs[0], x);
        assert_eq!(outs[1].to_bool().unwrap(), vec![true, true]);
        let zero = Tensor::scalar_f32(0.0);
        let half = Tensor::scalar_f32(0.5);
        let on = Tensor::from_bool(vec![], vec![true]).unwrap();
        let outs = eval_node(&op, &[Some(&x), Some(&zero), Some(&on)], Some(1))
            .unwrap()
            .unwrap();
        assert_eq!(outs, vec![x.clone()]);
        assert!(eval_node(&op, &[Some(&x), Some(&half), Some(&on)], Some(2))
            .unwrap()
            .is_none());
    }

    #[test]
    fn cast_and_where_through_ops() {
        let c = Tensor::from_bool(vec![2], vec![true, false]).unwrap();
        let a = i64s(vec![2], vec![1, 2]);
        let b = i64s(vec![], vec![9]);
        let w = eval_op(&Op::Where, &[Some(&c), Some(&a), Some(&b)])
            .unwrap()
            .unwrap();
        assert_eq!(w[0].to_i64().unwrap(), vec![1, 9]);
        let f = eval_op(
            &Op::Cast {
                to: DType::F32,
                saturate: None,
            },
            &[Some(&w[0])],
        )
        .unwrap()
        .unwrap();
        assert_eq!(f[0].to_f32().unwrap(), vec![1.0, 9.0]);
        let like = Tensor::from_raw(DType::U16, vec![0], Vec::new().into()).unwrap();
        let u = eval_op(
            &Op::CastLike { saturate: None },
            &[Some(&f[0]), Some(&like)],
        )
        .unwrap()
        .unwrap();
        assert_eq!((u[0].dtype(), u[0].shape()), (DType::U16, &[2][..]));
        assert_eq!(u[0].to_i64_lossless().unwrap(), vec![1, 9]);
        assert!(eval_op(&Op::CastLike { saturate: None }, &[Some(&f[0])]).is_err());
    }
}
