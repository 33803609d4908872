//! Compressed weights as first-class IR values.
//!
//! A value may hold a [`Compressed`] weight instead of plain constant data: its `ty` is
//! the logical (float) type and shape, `data` stays `None`, so passes that read
//! [`Graph::const_data`] leave it alone (it is not a plain constant). Backends lower a
//! compressed value to what their target runs; [`lower_compressed`] rewrites each one to
//! standard ONNX ops (constants + one `DequantizeLinear`), which the ONNX writer and the
//! CPU executor both use.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::{Graph, ValueId};
use crate::op::Op;
use crate::tensor::Tensor;

pub mod codebook;
pub mod nbits;
pub mod shared;
pub use codebook::CodebookWeight;
pub use shared::SharedWeight;

/// A compressed weight.
#[derive(Clone, Debug)]
pub enum Compressed {
    /// Integer codes with scales (and zero points), per axis or per block.
    Quantized(QuantizedWeight),
    /// Indices into tables of centroids (weight clustering), see [`codebook`].
    Codebook(CodebookWeight),
    /// A view into an array shared by many weights (randomized parameter sharing), see
    /// [`shared`].
    Shared(SharedWeight),
}

/// A quantized tensor, stored as ONNX stores the inputs of `DequantizeLinear`.
#[derive(Clone, Debug)]
pub struct QuantizedWeight {
    /// Codes (i8/u8/i4/u4; 4-bit types packed two per byte), in the logical shape.
    pub q: Tensor,
    /// Scales (f32): one per channel of `axis`, or per block along `axis`.
    pub scale: Tensor,
    /// Zero points (same type as `q`, shape of `scale`); `None` for symmetric codes.
    pub zero_point: Option<Tensor>,
    /// The axis the scales run along (per-axis), or the blocked axis.
    pub axis: usize,
    /// Block length along `axis` for blocked quantization.
    pub block_size: Option<usize>,
    /// The form [`lower_compressed`] writes it in.
    pub format: WeightFormat,
}

/// How [`lower_compressed`] writes a quantized weight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightFormat {
    /// Initializers and one standard `DequantizeLinear`.
    #[default]
    DequantizeLinear,
    /// onnxruntime's contrib op `com.microsoft.MatMulNBits` in place of each MatMul
    /// reading the weight ([`nbits`]), when the weight fits (2-D `[K, N]`, 4- or 8-bit
    /// codes in power-of-two blocks of at least 16 along K) and only MatMuls read it (as
    /// their input 1); otherwise `DequantizeLinear`.
    MatMulNBits,
}

impl QuantizedWeight {
    /// Lowest default-domain opset whose `DequantizeLinear` can express this weight.
    pub fn min_opset(&self) -> i64 {
        if self.block_size.is_some() || matches!(self.q.dtype(), DType::I4 | DType::U4) {
            21
        } else {
            13
        }
    }

    /// Bytes held: codes, scales and zero points.
    pub fn byte_len(&self) -> usize {
        self.q.byte_len()
            + self.scale.byte_len()
            + self.zero_point.as_ref().map_or(0, Tensor::byte_len)
    }

    /// Granularity as printed: `axis=A` or `axis=A block=B` (and ` as MatMulNBits`
    /// for that format).
    pub fn granularity(&self) -> String {
        let g = match self.block_size {
            Some(b) => format!("axis={} block={b}", self.axis),
            None => format!("axis={}", self.axis),
        };
        match self.format {
            WeightFormat::DequantizeLinear => g,
            WeightFormat::MatMulNBits => format!("{g} as MatMulNBits"),
        }
    }
}

impl Compressed {
    /// Lowest default-domain opset that can hold the lowered form.
    pub fn min_opset(&self) -> i64 {
        match self {
            Compressed::Quantized(q) => q.min_opset(),
            Compressed::Codebook(c) => c.min_opset(),
            Compressed::Shared(s) => s.min_opset(),
        }
    }

    /// Elements of the logical tensor.
    pub fn params(&self) -> usize {
        match self {
            Compressed::Quantized(q) => q.q.len(),
            Compressed::Codebook(c) => c.indices.len(),
            Compressed::Shared(s) => s.len(),
        }
    }

    /// Bytes held by the compressed form; for a shared weight, its own bytes only (the
    /// array it shares with others is counted once per array: see
    /// [`Compressed::shared_array`]).
    pub fn byte_len(&self) -> usize {
        match self {
            Compressed::Quantized(q) => q.byte_len(),
            Compressed::Codebook(c) => c.byte_len(),
            Compressed::Shared(s) => s.byte_len(),
        }
    }

    /// For a shared weight, the name and data of the array it reads (the same for every
    /// weight of one `share` run).
    pub fn shared_array(&self) -> Option<(&str, &Tensor)> {
        match self {
            Compressed::Shared(s) => Some((&s.array_name, &s.array)),
            _ => None,
        }
    }
}

/// True when some live value of `g` holds a compressed weight.
pub fn has_compressed(g: &Graph) -> bool {
    g.value_ids()
        .any(|v| g.value(v).compressed.is_some() && g.is_live(v))
}

/// Values of `g` holding compressed weights (live ones, in id order).
pub fn compressed_values(g: &Graph) -> Vec<ValueId> {
    g.value_ids()
        .filter(|&v| g.value(v).compressed.is_some() && g.is_live(v))
        .collect()
}

/// A copy of `g` (weights shared, not copied) where every compressed value is produced
/// by standard ops: quantized → initializers (codes, scale, zero point) and one
/// `DequantizeLinear`; codebook → `Gather(centroids, Cast(indices) [+ offsets])`; shared
/// → the hash of [`shared`] in integer ops and a `Gather` from the one array. The
/// default-domain opset is raised to the lowest one that holds the result (13 for
/// per-axis 8-bit, 21 for blocks or 4-bit codes). Weights in
/// [`WeightFormat::MatMulNBits`] that fit turn their MatMul readers into
/// `com.microsoft.MatMulNBits` instead ([`nbits::lower`]; adds that opset import).
pub fn lower_compressed(g: &Graph) -> Result<Graph> {
    let mut out = g.clone();
    let mut need = 0i64;
    let mut contrib = false;
    let mut arrays = std::collections::BTreeMap::new();
    for v in compressed_values(g) {
        let Some(c) = out.value_mut(v).compressed.take() else {
            continue;
        };
        let name = g.value(v).name().to_string();
        let as_nbits = match &c {
            Compressed::Quantized(qw) => {
                qw.format == WeightFormat::MatMulNBits && nbits::lower(&mut out, v, qw, &name)?
            }
            Compressed::Codebook(_) | Compressed::Shared(_) => false,
        };
        if as_nbits {
            contrib = true;
            continue;
        }
        need = need.max(c.min_opset());
        match c {
            Compressed::Quantized(qw) => {
                let q = out.add_const(&out.unique_name(&format!("{name}_quantized")), qw.q)?;
                let s = out.add_const(&out.unique_name(&format!("{name}_scale")), qw.scale)?;
                let z = match qw.zero_point {
                    Some(z) => {
                        Some(out.add_const(&out.unique_name(&format!("{name}_zero_point")), z)?)
                    }
                    None => None,
                };
                let mut inputs = vec![Some(q), Some(s)];
                if z.is_some() {
                    inputs.push(z);
                }
                let axis = i64::try_from(qw.axis)
                    .map_err(|_| Error::invalid(format!("value {name}: axis out of range")))?;
                let block_size = qw.block_size.map(i64::try_from).transpose().map_err(|_| {
                    Error::invalid(format!("value {name}: block size out of range"))
                })?;
                let op = Op::DequantizeLinear {
                    axis: Some(axis),
                    block_size,
                };
                let node = out.unique_name(&format!("{name}_dequantize"));
                out.add_node(&node, op, inputs, vec![Some(v)])?;
            }
            Compressed::Codebook(cw) => codebook::lower(&mut out, v, &name, cw)?,
            Compressed::Shared(sw) => shared::lower(&mut out, v, &name, sw, &mut arrays)?,
        }
    }
    if need > 0 {
        crate::opset::raise_default_opset(&mut out, need).map_err(|e| {
            Error::invalid(format!("the compressed weights need opset {need}: {e}"))
        })?;
    }
    if need > 0 && out.meta.ir_version != 0 {
        // INT4/UINT4 and opset 21 need IR version 10; opset 13 needs 7.
        let ir = if need >= 21 { 10 } else { 7 };
        out.meta.ir_version = out.meta.ir_version.max(ir);
    }
    if contrib && out.meta.opset(nbits::DOMAIN).is_none() {
        out.meta
            .opset_imports
            .push((nbits::DOMAIN.to_string(), nbits::OPSET));
    }
    Ok(out)
}

/// Raises every `DequantizeLinear` of `g` whose inputs are constants read by it alone
/// (codes i8/u8/i4/u4, f32 scales per axis or per block, zero points of the codes' type)
/// and whose output is not a graph output into a quantized value: the inverse of
/// [`lower_compressed`], so a model we wrote imports to the IR it was written from.
/// Per-tensor (scalar scale) forms are left as nodes. `com.microsoft.MatMulNBits`
/// nodes with constant weights are raised too ([`nbits::raise`]), and so are constant
/// codebook lookups (`Gather(table, Cast(indices) [+ offsets])`, see [`codebook`]).
/// Returns how many weights were raised.
pub fn raise_compressed(g: &mut Graph) -> Result<usize> {
    let mut raised = nbits::raise(g)?;
    raised += codebook::raise(g)?;
    for id in g.topo_order()? {
        let node = g.node(id);
        let Op::DequantizeLinear { axis, block_size } = node.op else {
            continue;
        };
        let Some(out) = node.output(0) else { continue };
        if node.outputs().len() != 1 || g.is_output(out) || !node.implicit_inputs().is_empty() {
            continue;
        }
        let ins: Vec<ValueId> = node.inputs().iter().flatten().copied().collect();
        if ins.len() != node.inputs().len() || !(2..=3).contains(&ins.len()) {
            continue;
        }
        let sole_const = |v: ValueId| {
            g.const_data(v).is_some()
                && !g.is_input(v)
                && !g.is_output(v)
                && g.value(v).uses().len() == 1
        };
        if !ins.iter().all(|&v| sole_const(v)) {
            continue;
        }
        let (Some(q), Some(scale)) = (g.const_data(ins[0]), g.const_data(ins[1])) else {
            continue;
        };
        let zero_point = ins.get(2).and_then(|&z| g.const_data(z)).cloned();
        if !matches!(q.dtype(), DType::I8 | DType::U8 | DType::I4 | DType::U4)
            || scale.dtype() != DType::F32
            || zero_point
                .as_ref()
                .is_some_and(|z| z.dtype() != q.dtype() || z.shape() != scale.shape())
        {
            continue;
        }
        let rank = q.shape().len() as i64;
        let a = axis.unwrap_or(1);
        let a = if a < 0 { a + rank } else { a };
        let Ok(a) = usize::try_from(a) else { continue };
        if a >= q.shape().len() {
            continue;
        }
        let block = match block_size {
            None | Some(0) => None,
            Some(b) => match usize::try_from(b) {
                Ok(b) => Some(b),
                Err(_) => continue,
            },
        };
        let layout = ScaleLayout::new(q.shape(), a, block)?;
        if scale.shape() != layout.scale_shape(q.shape(), a).as_slice() {
            continue;
        }
        let qw = QuantizedWeight {
            q: q.clone(),
            scale: scale.clone(),
            zero_point,
            axis: a,
            block_size: block,
            format: WeightFormat::DequantizeLinear,
        };
        let ty = crate::types::ValueType::tensor(DType::F32, crate::types::known_shape(q.shape()));
        g.remove_node(id);
        // The inputs are dead now: free their names (so lowering again writes the same
        // names) and their data.
        for &v in &ins {
            let free = g.unique_name(&format!("{}.raised", g.value(v).name()));
            g.rename_value(v, &free)?;
            g.value_mut(v).data = None;
        }
        let v = g.value_mut(out);
        v.ty = Some(ty);
        v.compressed = Some(Compressed::Quantized(qw));
        raised += 1;
    }
    Ok(raised)
}

/// Dequantizes a quantized weight to f32 in its logical shape (reference path: tests,
/// error measurement; the executor does not use it for MatMul/Gemm readers).
pub fn dequantize(qw: &QuantizedWeight) -> Result<Vec<f32>> {
    let shape = qw.q.shape().to_vec();
    let codes = codes_i32(&qw.q)?;
    let scale = qw.scale.f32_view()?;
    let zp = match &qw.zero_point {
        Some(z) => codes_i32(z)?,
        None => vec![0; scale.len()],
    };
    let layout = ScaleLayout::new(&shape, qw.axis, qw.block_size)?;
    let mut out = Vec::with_capacity(codes.len());
    for (i, &c) in codes.iter().enumerate() {
        let si = layout.index(i);
        let s = *scale
            .get(si)
            .ok_or_else(|| Error::invalid("quantized weight: scale shape does not match"))?;
        let z = *zp
            .get(si)
            .ok_or_else(|| Error::invalid("quantized weight: zero point shape does not match"))?;
        out.push((c - z) as f32 * s);
    }
    Ok(out)
}

/// Where each element of a quantized tensor finds its scale, as `DequantizeLinear`
/// defines it: per axis, the scales run along `axis`; blocked, the scale tensor has the
/// weight's shape with `axis` cut into blocks of `block` elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScaleLayout {
    dim: usize,
    inner: usize,
    block: Option<usize>,
}

impl ScaleLayout {
    /// The layout for a tensor of `shape`; an axis out of range or a zero block is an error.
    pub fn new(shape: &[usize], axis: usize, block: Option<usize>) -> Result<ScaleLayout> {
        let dim = *shape.get(axis).ok_or_else(|| {
            Error::invalid(format!(
                "quantized weight: axis {axis} out of range for {shape:?}"
            ))
        })?;
        if block == Some(0) {
            return Err(Error::invalid("quantized weight: block size 0"));
        }
        Ok(ScaleLayout {
            dim,
            inner: shape.iter().skip(axis + 1).product(),
            block,
        })
    }

    /// Shape of the scale tensor for a weight of `shape` quantized along `axis`.
    pub fn scale_shape(&self, shape: &[usize], axis: usize) -> Vec<usize> {
        match self.block {
            None => vec![self.dim],
            Some(b) => {
                let mut s = shape.to_vec();
                if let Some(d) = s.get_mut(axis) {
                    *d = self.dim.div_ceil(b);
                }
                s
            }
        }
    }

    /// Index into the (flattened) scale tensor of element `i` of the weight.
    pub fn index(&self, i: usize) -> usize {
        let a = (i / self.inner.max(1)) % self.dim.max(1);
        match self.block {
            None => a,
            Some(b) => {
                let outer = i / (self.dim * self.inner).max(1);
                let rest = i % self.inner.max(1);
                (outer * self.dim.div_ceil(b) + a / b) * self.inner + rest
            }
        }
    }
}

/// Integer codes of an i8/u8/i4/u4 tensor, unpacked (see [`Tensor::int_codes`]).
pub fn codes_i32(t: &Tensor) -> Result<Vec<i32>> {
    match t.dtype() {
        DType::I8 | DType::U8 | DType::I4 | DType::U4 => t.int_codes(),
        other => Err(Error::invalid(format!(
            "quantized codes of type {other:?} are not supported"
        ))),
    }
}

/// Packs 4-bit codes (two per byte, low nibble first) as ONNX INT4/UINT4 data (see
/// [`Tensor::from_int_codes`]).
pub fn pack_4bit(codes: &[i32]) -> Vec<u8> {
    crate::int_codes::pack_sub_byte(codes, 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{known_shape, ValueType};

    fn weight(block: Option<usize>) -> QuantizedWeight {
        let codes: Vec<i32> = (0..8).map(|i| i - 4).collect();
        let (q, scale) = match block {
            None => (
                Tensor::from_raw(
                    DType::I8,
                    vec![2, 4],
                    codes
                        .iter()
                        .map(|&c| c as i8 as u8)
                        .collect::<Vec<u8>>()
                        .into(),
                )
                .unwrap(),
                Tensor::from_f32(vec![2], vec![0.5, 2.0]).unwrap(),
            ),
            Some(_) => (
                Tensor::from_raw(DType::I4, vec![2, 4], pack_4bit(&codes).into()).unwrap(),
                Tensor::from_f32(vec![1, 4], vec![0.5, 1.0, 2.0, 4.0]).unwrap(),
            ),
        };
        QuantizedWeight {
            q,
            scale,
            zero_point: None,
            axis: 0,
            block_size: block,
            format: WeightFormat::DequantizeLinear,
        }
    }

    #[test]
    fn dequantize_per_axis_and_blocked() {
        let d = dequantize(&weight(None)).unwrap();
        assert_eq!(d, vec![-2.0, -1.5, -1.0, -0.5, 0.0, 2.0, 4.0, 6.0]);
        let d = dequantize(&weight(Some(2))).unwrap();
        assert_eq!(d, vec![-2.0, -3.0, -4.0, -4.0, 0.0, 1.0, 4.0, 12.0]);
    }

    #[test]
    fn four_bit_codes_round_trip_through_packing() {
        let codes = vec![-8, 7, 0, -1, 3];
        let t = Tensor::from_raw(DType::I4, vec![5], pack_4bit(&codes).into()).unwrap();
        assert_eq!(codes_i32(&t).unwrap(), codes);
    }

    #[test]
    fn lowering_adds_one_dequantize_and_raises_the_opset() {
        let mut g = Graph::new("g");
        let w = g
            .add_value(
                "w",
                Some(ValueType::tensor(DType::F32, known_shape(&[2, 4]))),
            )
            .unwrap();
        g.value_mut(w).compressed = Some(Compressed::Quantized(weight(Some(2))));
        g.set_outputs(vec![w]);
        g.meta.opset_imports = vec![(String::new(), 13)];
        assert!(has_compressed(&g));
        let l = lower_compressed(&g).unwrap();
        assert!(!has_compressed(&l));
        let (n, _) = l.value(w).producer().unwrap();
        assert!(matches!(
            l.node(n).op,
            Op::DequantizeLinear {
                axis: Some(0),
                block_size: Some(2)
            }
        ));
        assert_eq!(l.meta.opset_imports, vec![(String::new(), 21)]);
        // The original is untouched.
        assert!(g.value(w).producer().is_none());
        // Raising the lowered graph gives the quantized value back.
        let mut r = l.clone();
        assert_eq!(
            raise_compressed(&mut r).unwrap(),
            0,
            "graph outputs stay nodes"
        );
        let y = r.add_value("y", None).unwrap();
        r.add_node(
            "neg",
            Op::Unary(crate::op::UnaryOp::Neg),
            vec![Some(w)],
            vec![Some(y)],
        )
        .unwrap();
        r.set_outputs(vec![y]);
        assert_eq!(raise_compressed(&mut r).unwrap(), 1);
        assert!(r.value(w).producer().is_none());
        let Some(Compressed::Quantized(qw)) = &r.value(w).compressed else {
            panic!("not raised")
        };
        assert_eq!((qw.axis, qw.block_size), (0, Some(2)));
        assert_eq!(
            dequantize(qw).unwrap(),
            dequantize(&weight(Some(2))).unwrap()
        );
    }
}
