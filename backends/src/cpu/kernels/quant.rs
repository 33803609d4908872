//! Quantization kernels: QuantizeLinear and DequantizeLinear (per-tensor, per-axis and
//! blocked; int8/uint8/int16/uint16/int4/uint4, plus int32 for DequantizeLinear),
//! DynamicQuantizeLinear, MatMulInteger and QLinearMatMul. The integer convolutions are
//! in [`super::quant_conv`].
//!
//! Integer products are accumulated exactly in i32 (i64 where an i32 could overflow is
//! not needed: 8-bit operands). Rounding is half to even, results saturate to the
//! output type. Float scales may be f32 or f16; arithmetic follows the ONNX reference
//! implementation (f32 division for QuantizeLinear, f32 product for DequantizeLinear).

use crate::cpu::eval::{broadcast_index, broadcast_shapes, named_input};
use cc_ir::compressed::ScaleLayout;
use cc_ir::{DType, Error, Op, Result, Tensor};

use super::{minifloat, quant_conv};

/// Runs `op` if it is a quantization op with supported element types; `Ok(None)` for
/// any other op or unsupported types.
pub fn run(op: &Op, inputs: &[Option<&Tensor>]) -> Result<Option<Vec<Tensor>>> {
    let name = op.onnx_type().1;
    let input = |i: usize| named_input(inputs, i, name);
    let opt = |i: usize| inputs.get(i).copied().flatten();
    match op {
        Op::QuantizeLinear {
            axis,
            block_size,
            output_dtype,
            saturate,
        } => {
            let out = match opt(2) {
                Some(z) => z.dtype(),
                None => match output_dtype.filter(|&d| d != 0) {
                    Some(d) => DType::from_onnx(d as i32).unwrap_or(DType::Other(d as i32)),
                    None => DType::U8,
                },
            };
            let p = QParams {
                axis: axis.unwrap_or(1),
                block: block_size.unwrap_or(0),
            };
            if minifloat::format(out).is_some() {
                let sat = saturate.unwrap_or(1) != 0;
                return quantize_float(input(0)?, input(1)?, opt(2), out, p, sat)
                    .map(|o| o.map(|t| vec![t]));
            }
            quantize(input(0)?, input(1)?, opt(2), out, p).map(|o| o.map(|t| vec![t]))
        }
        Op::DequantizeLinear { axis, block_size } => {
            let p = QParams {
                axis: axis.unwrap_or(1),
                block: block_size.unwrap_or(0),
            };
            dequantize(input(0)?, input(1)?, opt(2), p).map(|o| o.map(|t| vec![t]))
        }
        Op::DynamicQuantizeLinear => dynamic_quantize(input(0)?),
        Op::MatMulInteger => matmul_integer(input(0)?, input(1)?, opt(2), opt(3)),
        Op::QLinearMatMul => {
            let q = QLinear {
                a_scale: input(1)?,
                a_zp: opt(2),
                b_scale: input(4)?,
                b_zp: opt(5),
                y_scale: input(6)?,
                y_zp: opt(7),
            };
            qlinear_matmul(input(0)?, input(3)?, &q)
        }
        Op::ConvInteger(a) => quant_conv::conv_integer(a, input(0)?, input(1)?, opt(2), opt(3)),
        Op::QLinearConv(a) => {
            let q = QLinear {
                a_scale: input(1)?,
                a_zp: opt(2),
                b_scale: input(4)?,
                b_zp: opt(5),
                y_scale: input(6)?,
                y_zp: opt(7),
            };
            quant_conv::qlinear_conv(a, input(0)?, input(3)?, opt(8), &q)
        }
        _ => Ok(None),
    }
}

/// Scales and zero points of a QLinear op: `a` is the data input, `b` the weight.
pub(super) struct QLinear<'a> {
    /// Scale of the data input.
    pub a_scale: &'a Tensor,
    /// Zero point of the data input.
    pub a_zp: Option<&'a Tensor>,
    /// Scale of the weight (scalar or per output channel / column).
    pub b_scale: &'a Tensor,
    /// Zero point of the weight.
    pub b_zp: Option<&'a Tensor>,
    /// Scale of the output.
    pub y_scale: &'a Tensor,
    /// Zero point of the output (its type is the output type).
    pub y_zp: Option<&'a Tensor>,
}

/// The `axis` and `block_size` attributes of QuantizeLinear/DequantizeLinear.
#[derive(Clone, Copy)]
struct QParams {
    axis: i64,
    block: i64,
}

/// Saturation bounds of an integer type the kernels produce; `None` for others.
pub(super) fn int_range(d: DType) -> Option<(i32, i32)> {
    Some(match d {
        DType::U8 => (0, 255),
        DType::I8 => (-128, 127),
        DType::U16 => (0, 65535),
        DType::I16 => (-32768, 32767),
        DType::U4 => (0, 15),
        DType::I4 => (-8, 7),
        UINT2 => (0, 3),
        INT2 => (-2, 1),
        _ => return None,
    })
}

/// ONNX uint2 (opset 25; no named [`DType`] yet).
const UINT2: DType = cc_ir::int_codes::UINT2;
/// ONNX int2 (opset 25; no named [`DType`] yet).
const INT2: DType = cc_ir::int_codes::INT2;

/// The elements of an integer tensor (2-, 4-, 8-, 16- or 32-bit) as i32; `None` for
/// other types. Packed sub-byte values are unpacked lowest bits first.
pub(super) fn ints(t: &Tensor) -> Result<Option<Vec<i32>>> {
    if !cc_ir::int_codes::is_int_code_type(t.dtype()) {
        return Ok(None);
    }
    t.int_codes().map(Some)
}

/// An integer tensor of type `d` from values already within its range (sub-byte values
/// are packed, lowest bits first).
pub(super) fn int_tensor(d: DType, shape: Vec<usize>, v: &[i32]) -> Result<Tensor> {
    Tensor::from_int_codes(d, shape, v)
}

/// The elements of an f32 or f16 tensor as f32; `None` for other types.
pub(super) fn floats(t: &Tensor) -> Result<Option<Vec<f32>>> {
    Ok(Some(match t.dtype() {
        DType::F32 => t.to_f32()?,
        DType::F16 => t
            .raw()?
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return Ok(None),
    }))
}

/// An f32 or f16 tensor from f32 values (rounded to nearest even for f16).
pub(super) fn float_tensor(d: DType, shape: Vec<usize>, v: Vec<f32>) -> Result<Tensor> {
    match d {
        DType::F32 => Tensor::from_f32_vec(shape, v),
        DType::F16 => {
            let bytes: Vec<u8> = v
                .iter()
                .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                .collect();
            Tensor::from_raw(DType::F16, shape, bytes.into())
        }
        other => Err(Error::unsupported(format!(
            "float tensor of element type {other}"
        ))),
    }
}

/// Rounds `x` to the nearest integer, ties to even, and saturates to `[lo, hi]`
/// (NaN becomes 0 before saturation).
pub(super) fn round_sat(x: f64, (lo, hi): (i32, i32)) -> i32 {
    let r = x.round_ties_even();
    if r.is_nan() {
        0.clamp(lo, hi)
    } else {
        r.clamp(f64::from(lo), f64::from(hi)) as i32
    }
}

/// How a quantization parameter (scale or zero point) maps onto the data elements.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Granularity {
    /// One value for all elements.
    Tensor,
    /// One value per index along an axis, or per block of indices along it (the
    /// layout the IR's quantized weights use too).
    Layout(ScaleLayout),
}

impl Granularity {
    /// The granularity of a parameter of shape `p` for data of shape `x`.
    fn of(x: &[usize], p: &[usize], q: QParams, what: &str) -> Result<Granularity> {
        let count: usize = p.iter().product();
        if q.block <= 0 && (p.is_empty() || count == 1 && p.len() <= 1) {
            return Ok(Granularity::Tensor);
        }
        let axis = crate::cpu::eval::array::norm_axis(q.axis, x.len(), what)?;
        let dim = x.get(axis).copied().unwrap_or(1);
        if q.block <= 0 {
            if p != [dim] {
                return Err(Error::invalid(format!(
                    "{what}: per-axis parameter of shape {p:?} for data {x:?} on axis {axis}"
                )));
            }
            return Ok(Granularity::Layout(ScaleLayout::new(x, axis, None)?));
        }
        let block = q.block as usize;
        let blocks = p.get(axis).copied().unwrap_or(0);
        let same_elsewhere = p.len() == x.len()
            && p.iter()
                .zip(x)
                .enumerate()
                .all(|(i, (a, b))| i == axis || a == b);
        if !same_elsewhere || blocks == 0 || blocks * block < dim || (blocks - 1) * block >= dim {
            return Err(Error::invalid(format!(
                "{what}: blocked parameter of shape {p:?} does not fit data {x:?} with block size {block} on axis {axis}"
            )));
        }
        Ok(Granularity::Layout(ScaleLayout::new(x, axis, Some(block))?))
    }

    /// The scale and zero point for data element `i`; an error when its parameter
    /// index is past either list.
    #[inline]
    fn params<Z: Copy>(self, i: usize, ss: &[f32], zs: &[Z], what: &str) -> Result<(f32, Z)> {
        let k = self.index(i);
        let (Some(&s), Some(&z)) = (ss.get(k), zs.get(k)) else {
            return Err(Error::invalid(format!(
                "{what}: parameter index {k} out of range"
            )));
        };
        Ok((s, z))
    }

    /// The parameter index for data element `i`.
    fn index(self, i: usize) -> usize {
        match self {
            Granularity::Tensor => 0,
            Granularity::Layout(l) => l.index(i),
        }
    }
}

/// The zero points as i32 (zeros when absent), checked against the scale's shape.
fn zero_points(zp: Option<&Tensor>, scale: &Tensor, what: &str) -> Result<Option<Vec<i32>>> {
    let Some(z) = zp else {
        return Ok(Some(vec![0; scale.len()]));
    };
    if z.len() != scale.len() {
        return Err(Error::invalid(format!(
            "{what}: zero point {:?} and scale {:?} differ in shape",
            z.shape(),
            scale.shape()
        )));
    }
    ints(z)
}

/// QuantizeLinear: `saturate(round(x / scale) + zero_point)` into `out`.
fn quantize(
    x: &Tensor,
    scale: &Tensor,
    zp: Option<&Tensor>,
    out: DType,
    p: QParams,
) -> Result<Option<Tensor>> {
    let what = "QuantizeLinear";
    let (Some(range), Some(xs), Some(ss)) = (int_range(out), floats(x)?, floats(scale)?) else {
        return Ok(None);
    };
    let Some(zs) = zero_points(zp, scale, what)? else {
        return Ok(None);
    };
    let g = Granularity::of(x.shape(), scale.shape(), p, what)?;
    let f16_scale = scale.dtype() == DType::F16;
    let mut q = Vec::with_capacity(xs.len());
    for (i, &v) in xs.iter().enumerate() {
        let (s, z) = g.params(i, &ss, &zs, what)?;
        // The scale's type sets the precision of the division.
        let mut d = v / s;
        if f16_scale {
            d = half::f16::from_f32(d).to_f32();
        }
        q.push(round_sat(
            f64::from(d).round_ties_even() + f64::from(z),
            range,
        ));
    }
    int_tensor(out, x.shape().to_vec(), &q).map(Some)
}

/// The float zero points (zeros when absent) of a float8/float4 quantization.
fn float_zero_points(zp: Option<&Tensor>, scale: &Tensor, what: &str) -> Result<Option<Vec<f32>>> {
    let Some(z) = zp else {
        return Ok(Some(vec![0.0; scale.len()]));
    };
    if z.len() != scale.len() {
        return Err(Error::invalid(format!(
            "{what}: zero point {:?} and scale {:?} differ in shape",
            z.shape(),
            scale.shape()
        )));
    }
    minifloat::decode_tensor(z)
}

/// QuantizeLinear to a float8/float4 type: `x / scale + zero_point`, rounded to the
/// nearest representable value (ties to even), saturating when `saturate`.
fn quantize_float(
    x: &Tensor,
    scale: &Tensor,
    zp: Option<&Tensor>,
    out: DType,
    p: QParams,
    saturate: bool,
) -> Result<Option<Tensor>> {
    let what = "QuantizeLinear";
    let (Some(xs), Some(ss)) = (floats(x)?, floats(scale)?) else {
        return Ok(None);
    };
    let Some(zs) = float_zero_points(zp, scale, what)? else {
        return Ok(None);
    };
    let g = Granularity::of(x.shape(), scale.shape(), p, what)?;
    let mut v = Vec::with_capacity(xs.len());
    for (i, &xv) in xs.iter().enumerate() {
        let (s, z) = g.params(i, &ss, &zs, what)?;
        v.push(xv / s + z);
    }
    minifloat::encode_tensor(out, x.shape().to_vec(), &v, saturate)
}

/// DequantizeLinear: `(x - zero_point) * scale`, in the scale's type.
fn dequantize(
    x: &Tensor,
    scale: &Tensor,
    zp: Option<&Tensor>,
    p: QParams,
) -> Result<Option<Tensor>> {
    let what = "DequantizeLinear";
    if minifloat::format(x.dtype()).is_some() {
        let (Some(xs), Some(ss), Some(zs)) = (
            minifloat::decode_tensor(x)?,
            floats(scale)?,
            float_zero_points(zp, scale, what)?,
        ) else {
            return Ok(None);
        };
        let g = Granularity::of(x.shape(), scale.shape(), p, what)?;
        let y = xs
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let k = g.index(i);
                (v - zs.get(k).copied().unwrap_or(0.0)) * ss.get(k).copied().unwrap_or(0.0)
            })
            .collect();
        return float_tensor(scale.dtype(), x.shape().to_vec(), y).map(Some);
    }
    let (Some(xs), Some(ss)) = (ints(x)?, floats(scale)?) else {
        return Ok(None);
    };
    let Some(zs) = zero_points(zp, scale, what)? else {
        return Ok(None);
    };
    let g = Granularity::of(x.shape(), scale.shape(), p, what)?;
    let mut y = Vec::with_capacity(xs.len());
    for (i, &v) in xs.iter().enumerate() {
        let (s, z) = g.params(i, &ss, &zs, what)?;
        // Exact in f32 for 8/16-bit inputs; int32 inputs have no zero point.
        y.push((i64::from(v) - i64::from(z)) as f32 * s);
    }
    float_tensor(scale.dtype(), x.shape().to_vec(), y).map(Some)
}

/// DynamicQuantizeLinear: u8 quantization with scale and zero point from the data's
/// range (extended to include 0), as the ONNX reference computes them.
fn dynamic_quantize(x: &Tensor) -> Result<Option<Vec<Tensor>>> {
    let Some(xs) = floats(x)? else {
        return Ok(None);
    };
    if x.dtype() != DType::F32 {
        return Ok(None);
    }
    let max = xs.iter().fold(0f32, |m, &v| m.max(v));
    let min = xs.iter().fold(0f32, |m, &v| m.min(v));
    let scale = if max == min { 1.0 } else { max - min } / 255.0;
    let zp_f = (0.0 - min / scale).clamp(0.0, 255.0);
    let zp = zp_f.round_ties_even();
    let q: Vec<i32> = xs
        .iter()
        .map(|&v| round_sat(f64::from((v / scale).round_ties_even() + zp), (0, 255)))
        .collect();
    Ok(Some(vec![
        int_tensor(DType::U8, x.shape().to_vec(), &q)?,
        Tensor::from_f32(vec![], vec![scale])?,
        Tensor::from_u8(vec![], vec![zp as u8])?,
    ]))
}

/// An i32 matrix operand: shape and values with its zero point already subtracted.
pub(super) struct IntArr {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<i32>,
}

/// Subtracts a zero point that is a scalar or a vector along `axis` of `x` (`axis` =
/// rank - 2 for rows of a matrix, rank - 1 for columns, 1 for conv channels).
pub(super) fn minus_zero_point(
    x: &Tensor,
    zp: Option<&Tensor>,
    axis: usize,
    what: &str,
) -> Result<Option<IntArr>> {
    let Some(mut data) = ints(x)? else {
        return Ok(None);
    };
    if let Some(z) = zp {
        let Some(zs) = ints(z)? else { return Ok(None) };
        let shape = x.shape();
        let g = if zs.len() == 1 {
            Granularity::Tensor
        } else {
            let dim = shape.get(axis).copied().unwrap_or(1);
            if zs.len() != dim {
                return Err(Error::invalid(format!(
                    "{what}: zero point of {} values for data {shape:?}",
                    zs.len()
                )));
            }
            Granularity::Layout(ScaleLayout::new(shape, axis, None)?)
        };
        for (i, v) in data.iter_mut().enumerate() {
            *v -= zs.get(g.index(i)).copied().unwrap_or(0);
        }
    }
    Ok(Some(IntArr {
        shape: x.shape().to_vec(),
        data,
    }))
}

/// Numpy `matmul` of two i32 arrays (1-D operands promoted and the added axis removed,
/// batch axes broadcast), accumulating exactly with wrapping i32 arithmetic.
pub(super) fn int_matmul(a: &IntArr, b: &IntArr) -> Result<IntArr> {
    if a.shape.is_empty() || b.shape.is_empty() {
        return Err(Error::invalid("MatMul of a scalar"));
    }
    let mut sa = a.shape.clone();
    if sa.len() == 1 {
        sa.insert(0, 1);
    }
    let mut sb = b.shape.clone();
    if sb.len() == 1 {
        sb.push(1);
    }
    let (ra, rb) = (sa.len(), sb.len());
    let (m, k) = (sa[ra - 2], sa[ra - 1]);
    let (k2, n) = (sb[rb - 2], sb[rb - 1]);
    if k != k2 {
        return Err(Error::invalid(format!(
            "MatMul inner dimensions {k} and {k2} differ ({:?} x {:?})",
            a.shape, b.shape
        )));
    }
    let batch = broadcast_shapes(&[&sa[..ra - 2], &sb[..rb - 2]])?;
    let ia = broadcast_index(&sa[..ra - 2], &batch);
    let ib = broadcast_index(&sb[..rb - 2], &batch);
    let mut out = vec![0i32; ia.len() * m * n];
    // A 2-D `b` read by contiguous batches of `a`: one product over all their rows.
    let flat = rb == 2 && ia.iter().enumerate().all(|(i, &p)| i == p);
    if let (true, Some(av), Some(bv)) = (flat, a.data.get(..ia.len() * m * k), b.data.get(..k * n))
    {
        super::int_gemm::gemm(av, bv, ia.len() * m, k, n, &mut out);
    }
    for (bi, (&pa, &pb)) in ia.iter().zip(&ib).enumerate().filter(|_| !flat) {
        let av = a.data.get(pa * m * k..(pa + 1) * m * k);
        let bv = b.data.get(pb * k * n..(pb + 1) * k * n);
        let (Some(av), Some(bv)) = (av, bv) else {
            return Err(Error::invalid("MatMul operand smaller than its shape"));
        };
        let ov = &mut out[bi * m * n..(bi + 1) * m * n];
        super::int_gemm::gemm(av, bv, m, k, n, ov);
    }
    let mut shape = batch;
    if a.shape.len() > 1 {
        shape.push(m);
    }
    if b.shape.len() > 1 {
        shape.push(n);
    }
    Ok(IntArr { shape, data: out })
}

/// MatMulInteger: i32 product of zero-point-adjusted 8-bit operands (`a_zero_point`
/// scalar or per row, `b_zero_point` scalar or per column).
fn matmul_integer(
    a: &Tensor,
    b: &Tensor,
    azp: Option<&Tensor>,
    bzp: Option<&Tensor>,
) -> Result<Option<Vec<Tensor>>> {
    let what = "MatMulInteger";
    let rows = a.shape().len().saturating_sub(2);
    let cols = b.shape().len().saturating_sub(1);
    let (Some(a), Some(b)) = (
        minus_zero_point(a, azp, rows, what)?,
        minus_zero_point(b, bzp, cols, what)?,
    ) else {
        return Ok(None);
    };
    let y = int_matmul(&a, &b)?;
    Ok(Some(vec![Tensor::from_i32(y.shape, y.data)?]))
}

/// The requantization factor(s) `a_scale * b_scale / y_scale` computed in the scales'
/// precision (f16 scales round after each step), one per weight channel.
pub(super) fn requant_factors(q: &QLinear<'_>) -> Result<Option<Vec<f64>>> {
    let (Some(sa), Some(sb), Some(sy)) =
        (floats(q.a_scale)?, floats(q.b_scale)?, floats(q.y_scale)?)
    else {
        return Ok(None);
    };
    // The data and output scales are per tensor; only the weight's may be per channel.
    let (&[sa], &[sy]) = (sa.as_slice(), sy.as_slice()) else {
        return Err(Error::invalid(format!(
            "input and output scales must be scalars, got {:?} and {:?}",
            q.a_scale.shape(),
            q.y_scale.shape()
        )));
    };
    let f16 = q.a_scale.dtype() == DType::F16;
    let r = |v: f32| {
        if f16 {
            half::f16::from_f32(v).to_f32()
        } else {
            v
        }
    };
    Ok(Some(
        sb.iter().map(|&b| f64::from(r(r(sa * b) / sy))).collect(),
    ))
}

/// The output zero point of a QLinear op (0 when absent); `Ok(None)` when its element
/// type is not an integer type.
pub(super) fn output_zero_point(q: &QLinear<'_>) -> Result<Option<i32>> {
    Ok(match q.y_zp {
        Some(z) => ints(z)?.map(|v| v.first().copied().unwrap_or(0)),
        None => Some(0),
    })
}

/// QLinearMatMul: integer product, then requantized to the output zero point's type.
fn qlinear_matmul(a: &Tensor, b: &Tensor, q: &QLinear<'_>) -> Result<Option<Vec<Tensor>>> {
    let what = "QLinearMatMul";
    let out = q.y_zp.map_or(a.dtype(), Tensor::dtype);
    let Some(range) = int_range(out) else {
        return Ok(None);
    };
    let rows = a.shape().len().saturating_sub(2);
    let cols = b.shape().len().saturating_sub(1);
    let (Some(am), Some(bm)) = (
        minus_zero_point(a, q.a_zp, rows, what)?,
        minus_zero_point(b, q.b_zp, cols, what)?,
    ) else {
        return Ok(None);
    };
    let Some(factors) = requant_factors(q)? else {
        return Ok(None);
    };
    let Some(yz) = output_zero_point(q)? else {
        return Ok(None);
    };
    let y = int_matmul(&am, &bm)?;
    let n = if b.shape().len() > 1 {
        b.shape().last().copied().unwrap_or(1)
    } else {
        1
    };
    if factors.len() != 1 && factors.len() != n {
        return Err(Error::invalid(format!(
            "{what}: {} weight scales for {n} output columns",
            factors.len()
        )));
    }
    let vals: Vec<i32> = y
        .data
        .iter()
        .enumerate()
        .map(|(i, &acc)| {
            let f = if factors.len() == 1 {
                factors[0]
            } else {
                factors.get(i % n.max(1)).copied().unwrap_or(0.0)
            };
            round_sat(
                (f64::from(acc) * f).round_ties_even() + f64::from(yz),
                range,
            )
        })
        .collect();
    Ok(Some(vec![int_tensor(out, y.shape, &vals)?]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(axis: i64, block: i64) -> QParams {
        QParams { axis, block }
    }

    #[test]
    fn quantize_rounds_half_to_even_and_saturates() {
        let x = Tensor::from_f32(vec![6], vec![0.5, 1.5, 2.5, -0.5, 300.0, -300.0]).unwrap();
        let s = Tensor::from_f32(vec![], vec![1.0]).unwrap();
        let z = Tensor::from_u8(vec![], vec![0]).unwrap();
        let y = quantize(&x, &s, Some(&z), DType::U8, q(1, 0))
            .unwrap()
            .unwrap();
        assert_eq!(y.to_u8().unwrap(), vec![0, 2, 2, 0, 255, 0]);
        // Negative zero point, int8.
        let z = Tensor::from_i8(vec![], vec![-3]).unwrap();
        let y = quantize(&x, &s, Some(&z), DType::I8, q(1, 0))
            .unwrap()
            .unwrap();
        assert_eq!(y.to_i8().unwrap(), vec![-3, -1, -1, -3, 127, -128]);
    }

    #[test]
    fn int4_packing_round_trips() {
        let x = Tensor::from_f32(vec![5], vec![-9.0, -8.0, 1.0, 7.0, 7.6]).unwrap();
        let s = Tensor::from_f32(vec![], vec![1.0]).unwrap();
        let y = quantize(&x, &s, None, DType::I4, q(1, 0)).unwrap().unwrap();
        assert_eq!(y.dtype(), DType::I4);
        // -8 -> 0x8, -8 -> 0x8 | 1 -> 0x1, 7 -> 0x7 | 7 -> 0x7 (odd count: high nibble 0).
        assert_eq!(y.raw().unwrap().as_ref(), &[0x88, 0x71, 0x07]);
        assert_eq!(ints(&y).unwrap().unwrap(), vec![-8, -8, 1, 7, 7]);
        let d = dequantize(
            &y,
            &Tensor::from_f32(vec![], vec![0.5]).unwrap(),
            None,
            q(1, 0),
        )
        .unwrap()
        .unwrap();
        assert_eq!(d.to_f32().unwrap(), vec![-4.0, -4.0, 0.5, 3.5, 3.5]);
        let u = int_tensor(DType::U4, vec![3], &[15, 0, 9]).unwrap();
        assert_eq!(u.raw().unwrap().as_ref(), &[0x0f, 0x09]);
        assert_eq!(ints(&u).unwrap().unwrap(), vec![15, 0, 9]);
    }

    #[test]
    fn int2_packing() {
        let x = Tensor::from_f32(vec![5], vec![-3.0, -2.0, 0.4, 1.0, 5.0]).unwrap();
        let s = Tensor::from_f32(vec![], vec![1.0]).unwrap();
        let y = quantize(&x, &s, None, INT2, q(1, 0)).unwrap().unwrap();
        // -2 -> 0b10, -2 -> 0b10, 0, 1 -> 0b01 | 1 (saturated).
        assert_eq!(y.raw().unwrap().as_ref(), &[0b0100_1010, 0b01]);
        assert_eq!(ints(&y).unwrap().unwrap(), vec![-2, -2, 0, 1, 1]);
        let u = int_tensor(UINT2, vec![4], &[3, 0, 2, 1]).unwrap();
        assert_eq!(u.raw().unwrap().as_ref(), &[0b0110_0011]);
        assert_eq!(ints(&u).unwrap().unwrap(), vec![3, 0, 2, 1]);
    }

    #[test]
    fn per_axis_and_blocked_scales() {
        // x [2, 4]; per-axis on axis 0: scales [1, 2], zero points [0, -1].
        let x = Tensor::from_i8(vec![2, 4], vec![1, 2, 3, 4, 1, 2, 3, 4]).unwrap();
        let s = Tensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap();
        let z = Tensor::from_i8(vec![2], vec![0, -1]).unwrap();
        let y = dequantize(&x, &s, Some(&z), q(0, 0)).unwrap().unwrap();
        assert_eq!(
            y.to_f32().unwrap(),
            vec![1.0, 2.0, 3.0, 4.0, 4.0, 6.0, 8.0, 10.0]
        );
        // Blocked on axis 1 with block 2: scale [2, 2] (last block of each row).
        let s = Tensor::from_f32(vec![2, 2], vec![1.0, 10.0, 100.0, 1000.0]).unwrap();
        let y = dequantize(&x, &s, None, q(1, 2)).unwrap().unwrap();
        assert_eq!(
            y.to_f32().unwrap(),
            vec![1.0, 2.0, 30.0, 40.0, 100.0, 200.0, 3000.0, 4000.0]
        );
        // Blocked quantization with a ragged last block (dim 3, block 2).
        let xf = Tensor::from_f32(vec![1, 3], vec![2.0, 4.0, 9.0]).unwrap();
        let s = Tensor::from_f32(vec![1, 2], vec![2.0, 3.0]).unwrap();
        let y = quantize(&xf, &s, None, DType::U8, q(-1, 2))
            .unwrap()
            .unwrap();
        assert_eq!(y.to_u8().unwrap(), vec![1, 2, 3]);
        // A scale that does not fit the blocks is an error.
        let bad = Tensor::from_f32(vec![1, 3], vec![1.0; 3]).unwrap();
        assert!(quantize(&xf, &bad, None, DType::U8, q(1, 2)).is_err());
    }

    #[test]
    fn dynamic_quantize_matches_the_reference_formula() {
        let x = Tensor::from_f32(vec![4], vec![0.0, 2.0, -3.0, 1000.0]).unwrap();
        let out = dynamic_quantize(&x).unwrap().unwrap();
        let scale = 1003.0f32 / 255.0;
        assert_eq!(out[1].to_f32().unwrap(), vec![scale]);
        let zp = (3.0 / scale).round_ties_even();
        assert_eq!(out[2].to_u8().unwrap(), vec![zp as u8]);
        assert_eq!(out[0].to_u8().unwrap(), vec![1, 2, 0, 255]);
    }

    #[test]
    fn integer_matmuls() {
        // [2,3] x [3,2] with a zero point per row of A and a scalar one for B.
        let a = Tensor::from_u8(vec![2, 3], vec![1, 2, 3, 4, 5, 6]).unwrap();
        let b = Tensor::from_i8(vec![3, 2], vec![1, -1, 2, 0, -3, 4]).unwrap();
        let azp = Tensor::from_u8(vec![2], vec![1, 4]).unwrap();
        let bzp = Tensor::from_i8(vec![], vec![-1]).unwrap();
        let y = matmul_integer(&a, &b, Some(&azp), Some(&bzp))
            .unwrap()
            .unwrap();
        // A-zp = [[0,1,2],[0,1,2]]; B-zp = [[2,0],[3,1],[-2,5]].
        assert_eq!(y[0].to_i32().unwrap(), vec![-1, 11, -1, 11]);
        assert_eq!(y[0].shape(), &[2, 2]);
        // QLinearMatMul: factor 0.5 * 1 / 2 = 0.25; acc -1 -> -0.25 -> 0 (+3) ; 11 -> 2.75 -> 3 (+3).
        let f = |v: f32| Tensor::from_f32(vec![], vec![v]).unwrap();
        let (sa, sb, sy) = (f(0.5), f(1.0), f(2.0));
        let yz = Tensor::from_i8(vec![], vec![3]).unwrap();
        let azp1 = Tensor::from_u8(vec![], vec![0]).unwrap();
        let a2 = Tensor::from_u8(vec![2, 3], vec![0, 1, 2, 0, 1, 2]).unwrap();
        let qp = QLinear {
            a_scale: &sa,
            a_zp: Some(&azp1),
            b_scale: &sb,
            b_zp: Some(&bzp),
            y_scale: &sy,
            y_zp: Some(&yz),
        };
        let y = qlinear_matmul(&a2, &b, &qp).unwrap().unwrap();
        assert_eq!(y[0].to_i8().unwrap(), vec![3, 6, 3, 6]);
    }

    #[test]
    fn float16_scales() {
        let s = float_tensor(DType::F16, vec![], vec![0.5]).unwrap();
        let x = Tensor::from_u8(vec![2], vec![3, 250]).unwrap();
        let y = dequantize(&x, &s, None, q(1, 0)).unwrap().unwrap();
        assert_eq!(y.dtype(), DType::F16);
        assert_eq!(floats(&y).unwrap().unwrap(), vec![1.5, 125.0]);
    }

    #[test]
    fn float8_quantization() {
        let x = Tensor::from_f32(vec![3], vec![2.0, 1000.0, -0.1]).unwrap();
        let s = Tensor::from_f32(vec![], vec![2.0]).unwrap();
        let y = quantize_float(&x, &s, None, DType::F8E4M3FN, q(1, 0), true)
            .unwrap()
            .unwrap();
        // 1.0 = 0x38; 500 saturates to 448 = 0x7e; -0.05 -> nearest e4m3fn value.
        let raw = y.raw().unwrap();
        assert_eq!(&raw[..2], &[0x38, 0x7e]);
        let d = dequantize(&y, &s, None, q(1, 0)).unwrap().unwrap();
        let back = d.to_f32().unwrap();
        assert_eq!(&back[..2], &[2.0, 896.0]);
        assert!((back[2] + 0.1).abs() < 0.004, "{back:?}");
    }

    #[test]
    fn unsupported_types_are_none() {
        let x = Tensor::from_i64(vec![1], vec![1]).unwrap();
        let s = Tensor::from_f32(vec![], vec![1.0]).unwrap();
        assert!(dequantize(&x, &s, None, q(1, 0)).unwrap().is_none());
    }
}
