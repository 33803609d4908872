//! onnxruntime's `com.microsoft.MatMulNBits` form of a quantized MatMul weight.
//!
//! `MatMulNBits(A, B, scales, zero_points?, g_idx?, bias?)` computes `A · W (+ bias)` for
//! a constant weight `W` of logical shape `[K, N]` quantized in blocks of `block_size`
//! elements along K. Its inputs hold `W` transposed:
//! - `B`: uint8 `[N, k_blocks, block_size * bits / 8]`, unsigned codes packed low bits
//!   first along K (K padded to `k_blocks * block_size`);
//! - `scales`: f32 `[N, k_blocks]`;
//! - `zero_points` (optional): uint8 `[N, ceil(k_blocks * bits / 8)]`, packed the same
//!   way row by row; absent, every zero point is `2^(bits - 1)`;
//! - `W[k, n] = (code - zero_point) * scale` of block `k / block_size` of row `n`.
//!
//! Attributes `K`, `N`, `bits` (2, 4 or 8; default 4), `block_size` (a power of two,
//! at least 16), `accuracy_level` (0: unset) and `weight_prepacked` (0: not prepacked).
//!
//! [`lower`] writes a [`QuantizedWeight`] with [`WeightFormat::MatMulNBits`] this way for
//! each MatMul reading it; [`raise`] turns such a node with constant weight inputs back
//! into a quantized value read by a MatMul, so a file we wrote imports to the IR it was
//! written from.

use super::{codes_i32, Compressed, QuantizedWeight, WeightFormat};
use crate::attr::{AttrValue, Attribute};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, Use, ValueId};
use crate::op::{Op, OtherOp};
use crate::tensor::Tensor;
use crate::types::{known_shape, ValueType};

/// The operator domain of `MatMulNBits`.
pub const DOMAIN: &str = "com.microsoft";
/// The operator type.
pub const OP_TYPE: &str = "MatMulNBits";
/// The `com.microsoft` opset version written with `MatMulNBits`.
pub const OPSET: i64 = 1;

/// Geometry of a `MatMulNBits` weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NBitsLayout {
    /// Input features (rows of the logical weight).
    pub k: usize,
    /// Output features (columns of the logical weight).
    pub n: usize,
    /// Bits per code: 2, 4 or 8.
    pub bits: usize,
    /// Block length along K.
    pub block: usize,
}

impl NBitsLayout {
    /// A layout; `bits` must be 2, 4 or 8 and `block` a positive multiple of the codes
    /// per byte.
    pub fn new(k: usize, n: usize, bits: usize, block: usize) -> Result<NBitsLayout> {
        if !matches!(bits, 2 | 4 | 8) {
            return Err(Error::invalid(format!(
                "MatMulNBits: bits={bits} (supported: 2, 4, 8)"
            )));
        }
        if block == 0 || !(block * bits).is_multiple_of(8) {
            return Err(Error::invalid(format!(
                "MatMulNBits: block_size {block} does not fill whole bytes of {bits}-bit codes"
            )));
        }
        Ok(NBitsLayout { k, n, bits, block })
    }

    /// Blocks per output feature: `ceil(K / block_size)`.
    pub fn blocks(&self) -> usize {
        self.k.div_ceil(self.block)
    }

    /// Bytes per block of codes.
    pub fn blob(&self) -> usize {
        self.block * self.bits / 8
    }

    /// Bytes of codes per output feature (one row of `B`).
    pub fn row_bytes(&self) -> usize {
        self.blocks() * self.blob()
    }

    /// Bytes of packed zero points per output feature.
    pub fn zp_row_bytes(&self) -> usize {
        (self.blocks() * self.bits).div_ceil(8)
    }

    /// The zero point used when the node has no `zero_points` input.
    pub fn default_zero_point(&self) -> u8 {
        1u8 << (self.bits - 1)
    }

    /// Shape of `B`.
    pub fn b_shape(&self) -> Vec<usize> {
        vec![self.n, self.blocks(), self.blob()]
    }
}

/// Code `i` of a buffer of `bits`-bit codes packed low bits first.
#[inline]
pub fn get_code(bytes: &[u8], i: usize, bits: usize) -> u8 {
    let per = 8 / bits;
    let byte = bytes.get(i / per).copied().unwrap_or(0);
    (byte >> ((i % per) * bits)) & (((1u16 << bits) - 1) as u8)
}

/// Stores code `i` (see [`get_code`]); the slot must hold zeros.
#[inline]
fn put_code(bytes: &mut [u8], i: usize, bits: usize, v: u8) {
    let per = 8 / bits;
    if let Some(b) = bytes.get_mut(i / per) {
        *b |= (v & (((1u16 << bits) - 1) as u8)) << ((i % per) * bits);
    }
}

/// The attributes of a `MatMulNBits` node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NBitsAttrs {
    /// `K`, `N`, `bits`, `block_size`.
    pub layout: NBitsLayout,
    /// `accuracy_level` (0 when absent).
    pub accuracy_level: i64,
    /// `weight_prepacked` (0 when absent).
    pub weight_prepacked: i64,
    /// Names of attributes this module does not know.
    pub unknown: Vec<String>,
}

impl NBitsAttrs {
    /// The attributes of `op` if it is `com.microsoft.MatMulNBits`; `Ok(None)` for any
    /// other op; an error names a missing or malformed attribute.
    pub fn of(op: &Op) -> Result<Option<NBitsAttrs>> {
        let Op::Other(o) = op else { return Ok(None) };
        if o.domain != DOMAIN || o.op_type != OP_TYPE {
            return Ok(None);
        }
        Self::parse(o).map(Some)
    }

    fn parse(o: &OtherOp) -> Result<NBitsAttrs> {
        let int = |name: &str| -> Result<Option<i64>> {
            match o.attributes.iter().find(|a| a.name == name) {
                None => Ok(None),
                Some(Attribute {
                    value: AttrValue::Int(v),
                    ..
                }) => Ok(Some(*v)),
                Some(_) => Err(Error::invalid(format!(
                    "MatMulNBits: attribute {name} is not an int"
                ))),
            }
        };
        let size = |name: &str, default: Option<i64>| -> Result<usize> {
            let v = int(name)?.or(default).ok_or_else(|| {
                Error::invalid(format!("MatMulNBits: attribute {name} is missing"))
            })?;
            usize::try_from(v)
                .map_err(|_| Error::invalid(format!("MatMulNBits: attribute {name}={v}")))
        };
        let layout = NBitsLayout::new(
            size("K", None)?,
            size("N", None)?,
            size("bits", Some(4))?,
            size("block_size", None)?,
        )?;
        const KNOWN: &[&str] = &[
            "K",
            "N",
            "bits",
            "block_size",
            "accuracy_level",
            "weight_prepacked",
        ];
        Ok(NBitsAttrs {
            layout,
            accuracy_level: int("accuracy_level")?.unwrap_or(0),
            weight_prepacked: int("weight_prepacked")?.unwrap_or(0),
            unknown: o
                .attributes
                .iter()
                .filter(|a| !KNOWN.contains(&a.name.as_str()))
                .map(|a| a.name.clone())
                .collect(),
        })
    }
}

/// The `MatMulNBits` op for `layout` (attributes in the order onnx's `make_node` writes).
pub fn op(layout: &NBitsLayout) -> Op {
    let int = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
    Op::Other(OtherOp {
        domain: DOMAIN.to_string(),
        op_type: OP_TYPE.to_string(),
        attributes: vec![
            Attribute::int("K", int(layout.k)),
            Attribute::int("N", int(layout.n)),
            Attribute::int("bits", int(layout.bits)),
            Attribute::int("block_size", int(layout.block)),
        ],
    })
}

/// The MatMul nodes reading `v` as their input 1 (and nowhere else); `None` if anything
/// else reads it, it is a graph output, or nothing reads it.
fn matmul_readers(g: &Graph, v: ValueId) -> Option<Vec<NodeId>> {
    let uses = g.value(v).uses();
    if uses.is_empty() || g.is_output(v) {
        return None;
    }
    let mut nodes = Vec::with_capacity(uses.len());
    for u in uses {
        let Use::Input { node, slot: 1 } = *u else {
            return None;
        };
        let n = g.node(node);
        if !matches!(n.op, Op::MatMul) || n.input(0) == Some(v) || n.outputs().len() != 1 {
            return None;
        }
        // The activation must be a matrix (MatMulNBits has no vector form).
        if let Some(x) = n.input(0) {
            if let Some(ValueType::Tensor {
                shape: Some(dims), ..
            }) = &g.value(x).ty
            {
                if dims.len() < 2 {
                    return None;
                }
            }
        }
        if !nodes.contains(&node) {
            nodes.push(node);
        }
    }
    Some(nodes)
}

/// The `MatMulNBits` layout of `qw` when it can take that form: 2-D `[K, N]`, blocked
/// along axis 0 with a power-of-two block of at least 16, 4- or 8-bit codes.
pub fn layout_of(qw: &QuantizedWeight) -> Option<NBitsLayout> {
    let &[k, n] = qw.q.shape() else { return None };
    let bits = match qw.q.dtype() {
        DType::I4 | DType::U4 => 4,
        DType::I8 | DType::U8 => 8,
        _ => return None,
    };
    let block = qw.block_size?;
    if qw.axis != 0 || !block.is_power_of_two() || block < 16 || k == 0 || n == 0 {
        return None;
    }
    NBitsLayout::new(k, n, bits, block).ok()
}

/// Rewrites every MatMul reading the compressed value `v` (weight `qw`, named `name`)
/// as `MatMulNBits` over new initializers. `Ok(false)`, touching nothing, when the
/// weight or its readers do not fit (the caller then lowers it to `DequantizeLinear`).
pub fn lower(g: &mut Graph, v: ValueId, qw: &QuantizedWeight, name: &str) -> Result<bool> {
    let Some(l) = layout_of(qw) else {
        return Ok(false);
    };
    let Some(readers) = matmul_readers(g, v) else {
        return Ok(false);
    };
    let signed = matches!(qw.q.dtype(), DType::I4 | DType::I8);
    let offset = if signed {
        i32::from(l.default_zero_point())
    } else {
        0
    };
    let (k, n, nb) = (l.k, l.n, l.blocks());
    let raw = qw.q.raw()?;
    let scale = qw.scale.f32_view()?;
    let zp: Option<Vec<i32>> = qw.zero_point.as_ref().map(codes_i32).transpose()?;
    if raw.len() < (k * n * l.bits).div_ceil(8)
        || scale.len() != nb * n
        || zp.as_ref().is_some_and(|z| z.len() != nb * n)
    {
        return Err(Error::invalid(format!(
            "value {name}: quantized weight parameters do not match its shape [{k}, {n}]"
        )));
    }
    // Unsigned zero point of block `b` of output feature `j`.
    let zero = |b: usize, j: usize| -> u8 {
        let z = zp.as_ref().and_then(|z| z.get(b * n + j)).copied();
        (z.unwrap_or(0) + offset) as u8
    };
    // A signed code c (two's complement in `bits` bits) stored as c + 2^(bits-1) is
    // its bit pattern with the sign bit flipped.
    let flip = if signed { l.default_zero_point() } else { 0 };
    let row = l.row_bytes();
    let mut b_data = vec![0u8; n * row];
    // Transpose [K, N] codes into rows of B, reading the source in order.
    if l.bits == 8 {
        for (kk, src) in raw.chunks(n).take(k).enumerate() {
            for (j, &c) in src.iter().enumerate() {
                if let Some(d) = b_data.get_mut(j * row + kk) {
                    *d = c ^ flip;
                }
            }
        }
    } else {
        for kk in 0..k {
            let shift = (kk % 2) * 4;
            for j in 0..n {
                let i = kk * n + j;
                let nib = (raw.get(i / 2).copied().unwrap_or(0) >> ((i % 2) * 4)) & 0xf;
                if let Some(d) = b_data.get_mut(j * row + kk / 2) {
                    *d |= (nib ^ flip) << shift;
                }
            }
        }
    }
    let mut s_data = vec![0f32; n * nb];
    for j in 0..n {
        let dst = &mut b_data[j * row..(j + 1) * row];
        // Padding past K: the block's zero point (dequantizes to 0).
        for kk in k..nb * l.block {
            put_code(dst, kk, l.bits, zero(kk / l.block, j));
        }
        for b in 0..nb {
            s_data[j * nb + b] = scale[b * n + j];
        }
    }
    // Symmetric signed codes use the default zero point; anything else writes its own.
    let zp_data = if signed && zp.is_none() {
        None
    } else {
        let zr = l.zp_row_bytes();
        let mut z = vec![0u8; n * zr];
        for j in 0..n {
            for b in 0..nb {
                put_code(&mut z[j * zr..(j + 1) * zr], b, l.bits, zero(b, j));
            }
        }
        Some(Tensor::from_raw(DType::U8, vec![n, zr], z.into())?)
    };
    let b_name = g.unique_name(&format!("{name}_Q{}", l.bits));
    let b = g.add_const(
        &b_name,
        Tensor::from_raw(DType::U8, l.b_shape(), b_data.into())?,
    )?;
    let s = g.add_const(
        &g.unique_name(&format!("{name}_scales")),
        Tensor::from_f32(vec![n, nb], s_data)?,
    )?;
    let z = match zp_data {
        Some(t) => Some(g.add_const(&g.unique_name(&format!("{name}_zero_points")), t)?),
        None => None,
    };
    for id in readers {
        g.node_mut(id).op = op(&l);
        g.set_input(id, 1, Some(b));
        g.set_input(id, 2, Some(s));
        if z.is_some() {
            g.set_input(id, 3, z);
        }
    }
    // `v` is dead now: free its name (raising the result gives it back).
    let free = g.unique_name(&format!("{name}.lowered"));
    g.rename_value(v, &free)?;
    Ok(true)
}

/// The weight name a raised `B` input stands for: its name less the `_Q4`/`_Q8` suffix
/// [`lower`] and onnxruntime's quantizer add.
fn weight_name(b_name: &str) -> String {
    for suffix in ["_Q2", "_Q4", "_Q8"] {
        if let Some(base) = b_name.strip_suffix(suffix) {
            if !base.is_empty() {
                return base.to_string();
            }
        }
    }
    format!("{b_name}_weight")
}

/// Raises every `MatMulNBits` node whose `B`, `scales` and (uint8) `zero_points` are
/// constants read by it alone, without `g_idx`, `bias`, `accuracy_level`,
/// `weight_prepacked` or unknown attributes, with 4- or 8-bit codes, into a MatMul
/// reading a quantized value ([`WeightFormat::MatMulNBits`]): the inverse of [`lower`].
/// Others stay `Op::Other`. Returns how many were raised.
pub fn raise(g: &mut Graph) -> Result<usize> {
    if g.meta.opset("").is_none() {
        return Ok(0);
    }
    let mut raised = 0;
    for id in g.topo_order()? {
        let node = g.node(id);
        let Some(attrs) = NBitsAttrs::of(&node.op)? else {
            continue;
        };
        if attrs.accuracy_level != 0
            || attrs.weight_prepacked != 0
            || !attrs.unknown.is_empty()
            || !matches!(attrs.layout.bits, 4 | 8)
            || node.outputs().len() != 1
            || node.output(0).is_none()
            || !node.implicit_inputs().is_empty()
            || node.inputs().iter().skip(4).any(Option::is_some)
        {
            continue;
        }
        let (Some(a), Some(bv), Some(sv)) = (node.input(0), node.input(1), node.input(2)) else {
            continue;
        };
        let zv = node.input(3);
        let sole_const = |v: ValueId| {
            g.const_data(v).is_some()
                && !g.is_input(v)
                && !g.is_output(v)
                && g.value(v).uses().len() == 1
        };
        if [bv, sv].iter().chain(zv.iter()).any(|&v| !sole_const(v)) || a == bv {
            continue;
        }
        let (Some(bt), Some(st)) = (g.const_data(bv), g.const_data(sv)) else {
            continue;
        };
        let zt = zv.and_then(|z| g.const_data(z));
        let Some(qw) = to_quantized(&attrs.layout, bt, st, zt)? else {
            continue;
        };
        let l = attrs.layout;
        let name = g.unique_name(&weight_name(g.value(bv).name()));
        let ty = ValueType::tensor(DType::F32, known_shape(&[l.k, l.n]));
        let w = g.add_value(&name, Some(ty))?;
        g.value_mut(w).compressed = Some(Compressed::Quantized(qw));
        let old: Vec<ValueId> = [Some(bv), Some(sv), zv].into_iter().flatten().collect();
        g.node_mut(id).op = Op::MatMul;
        g.set_input(id, 1, Some(w));
        g.truncate_inputs(id, 2);
        // The old inputs are dead: free their names (lowering again writes the same
        // names) and their data.
        for v in old {
            let free = g.unique_name(&format!("{}.raised", g.value(v).name()));
            g.rename_value(v, &free)?;
            g.value_mut(v).data = None;
        }
        raised += 1;
    }
    Ok(raised)
}

/// The quantized weight `[K, N]` held by `MatMulNBits` inputs; `Ok(None)` when their
/// types or sizes do not match the layout (the node is then left as it is).
fn to_quantized(
    l: &NBitsLayout,
    b: &Tensor,
    scales: &Tensor,
    zero_points: Option<&Tensor>,
) -> Result<Option<QuantizedWeight>> {
    let (k, n, nb) = (l.k, l.n, l.blocks());
    if b.dtype() != DType::U8
        || b.len() != n * l.row_bytes()
        || scales.dtype() != DType::F32
        || scales.len() != n * nb
        || zero_points.is_some_and(|z| z.dtype() != DType::U8 || z.len() != n * l.zp_row_bytes())
        || k == 0
        || n == 0
    {
        return Ok(None);
    }
    let raw = b.raw()?;
    let s = scales.f32_view()?;
    let row = l.row_bytes();
    let off = i32::from(l.default_zero_point());
    // Without zero points the codes are stored signed (code - default zero point), as
    // symmetric weights are; with them, unsigned codes and zero points.
    let signed = zero_points.is_none();
    let mut codes = vec![0i32; k * n];
    for j in 0..n {
        let src = raw.get(j * row..(j + 1) * row).unwrap_or(&[]);
        for kk in 0..k {
            let c = i32::from(get_code(src, kk, l.bits));
            codes[kk * n + j] = if signed { c - off } else { c };
        }
    }
    let mut scale = vec![0f32; nb * n];
    for j in 0..n {
        for blk in 0..nb {
            scale[blk * n + j] = s[j * nb + blk];
        }
    }
    let dtype = match (l.bits, signed) {
        (4, true) => DType::I4,
        (4, false) => DType::U4,
        (_, true) => DType::I8,
        (_, false) => DType::U8,
    };
    let pack = |c: &[i32]| -> Vec<u8> {
        if l.bits == 4 {
            super::pack_4bit(c)
        } else {
            c.iter().map(|&v| v as u8).collect()
        }
    };
    let zero_point = match zero_points {
        None => None,
        Some(z) => {
            let zr = l.zp_row_bytes();
            let raw = z.raw()?;
            let mut zp = vec![0i32; nb * n];
            for j in 0..n {
                let src = raw.get(j * zr..(j + 1) * zr).unwrap_or(&[]);
                for blk in 0..nb {
                    zp[blk * n + j] = i32::from(get_code(src, blk, l.bits));
                }
            }
            Some(Tensor::from_raw(dtype, vec![nb, n], pack(&zp).into())?)
        }
    };
    Ok(Some(QuantizedWeight {
        q: Tensor::from_raw(dtype, vec![k, n], pack(&codes).into())?,
        scale: Tensor::from_f32(vec![nb, n], scale)?,
        zero_point,
        axis: 0,
        block_size: Some(l.block),
        format: WeightFormat::MatMulNBits,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compressed::{dequantize, lower_compressed, pack_4bit};

    /// x [2, K] -> MatMul(x, W) -> y with W a quantized [K, N] weight in `format`.
    fn graph(qw: QuantizedWeight) -> (Graph, ValueId) {
        let (k, n) = (qw.q.shape()[0], qw.q.shape()[1]);
        let mut g = Graph::new("g");
        g.meta.opset_imports = vec![(String::new(), 18)];
        let x = g
            .add_value(
                "x",
                Some(ValueType::tensor(DType::F32, known_shape(&[2, k]))),
            )
            .unwrap();
        let w = g
            .add_value(
                "w",
                Some(ValueType::tensor(DType::F32, known_shape(&[k, n]))),
            )
            .unwrap();
        g.value_mut(w).compressed = Some(Compressed::Quantized(qw));
        let y = g.add_value("y", None).unwrap();
        g.add_node("mm", Op::MatMul, vec![Some(x), Some(w)], vec![Some(y)])
            .unwrap();
        g.set_inputs(vec![x]);
        g.set_outputs(vec![y]);
        (g, w)
    }

    /// A blocked 4-bit weight [K=40, N=3] in blocks of 16 (K padded to 48), signed
    /// without zero points or unsigned with them.
    fn weight(signed: bool) -> QuantizedWeight {
        let (k, n, nb) = (40, 3, 3);
        let codes: Vec<i32> = (0..k * n)
            .map(|i| {
                if signed {
                    (i % 15) as i32 - 7
                } else {
                    (i % 16) as i32
                }
            })
            .collect();
        let scale: Vec<f32> = (0..nb * n).map(|i| 0.5 + i as f32 * 0.25).collect();
        let d = if signed { DType::I4 } else { DType::U4 };
        QuantizedWeight {
            q: Tensor::from_raw(d, vec![k, n], pack_4bit(&codes).into()).unwrap(),
            scale: Tensor::from_f32(vec![nb, n], scale).unwrap(),
            zero_point: (!signed).then(|| {
                let z: Vec<i32> = (0..nb * n).map(|i| 6 + (i % 4) as i32).collect();
                Tensor::from_raw(DType::U4, vec![nb, n], pack_4bit(&z).into()).unwrap()
            }),
            axis: 0,
            block_size: Some(16),
            format: WeightFormat::MatMulNBits,
        }
    }

    #[test]
    fn codes_pack_low_bits_first() {
        let mut b = vec![0u8; 2];
        put_code(&mut b, 0, 4, 0x3);
        put_code(&mut b, 1, 4, 0xa);
        put_code(&mut b, 3, 4, 0xf);
        assert_eq!(b, vec![0xa3, 0xf0]);
        assert_eq!(
            (0..4).map(|i| get_code(&b, i, 4)).collect::<Vec<_>>(),
            vec![3, 10, 0, 15]
        );
        let mut b = vec![0u8; 1];
        put_code(&mut b, 2, 2, 0b11);
        assert_eq!(b, vec![0b0011_0000]);
        assert_eq!(get_code(&b, 2, 2), 3);
    }

    #[test]
    fn lowering_writes_matmul_nbits_and_raising_gives_the_weight_back() {
        for signed in [true, false] {
            let qw = weight(signed);
            let (g, w) = graph(qw.clone());
            let l = lower_compressed(&g).unwrap();
            // One MatMulNBits node, the com.microsoft opset, the default opset unchanged.
            let mm = l.node_ids()[0];
            let attrs = NBitsAttrs::of(&l.node(mm).op).unwrap().unwrap();
            assert_eq!(attrs.layout, NBitsLayout::new(40, 3, 4, 16).unwrap());
            assert_eq!(
                l.meta.opset_imports,
                vec![(String::new(), 18), (DOMAIN.to_string(), 1)]
            );
            let node = l.node(mm);
            let b = l.const_data(node.input(1).unwrap()).unwrap();
            assert_eq!(b.shape(), &[3, 3, 8]);
            assert_eq!(l.value(node.input(1).unwrap()).name(), "w_Q4");
            let s = l.const_data(node.input(2).unwrap()).unwrap();
            assert_eq!(s.shape(), &[3, 3]);
            // Row 0 of B starts with codes W[0, 0], W[1, 0] (+8 when signed).
            let off = if signed { 8 } else { 0 };
            let c = codes_i32(&qw.q).unwrap();
            assert_eq!(
                i32::from(get_code(b.raw().unwrap(), 1, 4)),
                c[3] + off,
                "code of W[1, 0]"
            );
            assert_eq!(node.input(3).is_some(), !signed);
            assert!(!l.is_live(w));
            // Raising gives the same weight, read by a MatMul.
            let mut r = l.clone();
            assert_eq!(raise(&mut r).unwrap(), 1);
            let mm = r.node_ids()[0];
            assert!(matches!(r.node(mm).op, Op::MatMul));
            let wv = r.node(mm).input(1).unwrap();
            assert_eq!(r.value(wv).name(), "w");
            let Some(Compressed::Quantized(back)) = &r.value(wv).compressed else {
                panic!("not raised");
            };
            assert_eq!(back.q.dtype(), qw.q.dtype());
            assert_eq!(back.q.raw().unwrap(), qw.q.raw().unwrap());
            assert_eq!(dequantize(back).unwrap(), dequantize(&qw).unwrap());
            // And lowers to the same inputs again.
            let again = lower_compressed(&r).unwrap();
            let n2 = again.node(again.node_ids()[0]);
            assert_eq!(
                again
                    .const_data(n2.input(1).unwrap())
                    .unwrap()
                    .raw()
                    .unwrap(),
                b.raw().unwrap()
            );
            assert_eq!(again.value(n2.input(1).unwrap()).name(), "w_Q4");
        }
    }

    #[test]
    fn eight_bit_weights_round_trip() {
        for signed in [true, false] {
            let (k, n, nb) = (40, 3, 3);
            let codes: Vec<u8> = (0..k * n).map(|i| (i * 37 % 256) as u8).collect();
            let d = if signed { DType::I8 } else { DType::U8 };
            let qw = QuantizedWeight {
                q: Tensor::from_raw(d, vec![k, n], codes.clone().into()).unwrap(),
                scale: Tensor::from_f32(vec![nb, n], (1..=9).map(|i| i as f32).collect()).unwrap(),
                zero_point: (!signed).then(|| {
                    Tensor::from_raw(DType::U8, vec![nb, n], vec![128u8; nb * n].into()).unwrap()
                }),
                axis: 0,
                block_size: Some(16),
                format: WeightFormat::MatMulNBits,
            };
            let (g, _) = graph(qw.clone());
            let l = lower_compressed(&g).unwrap();
            let node = l.node(l.node_ids()[0]);
            let attrs = NBitsAttrs::of(&node.op).unwrap().unwrap();
            assert_eq!(attrs.layout.bits, 8);
            let b = l.const_data(node.input(1).unwrap()).unwrap();
            assert_eq!(b.shape(), &[3, 3, 16]);
            // W[1, 2] is B[2, 0, 1], shifted by 128 when signed.
            let want = if signed { codes[5] ^ 0x80 } else { codes[5] };
            assert_eq!(b.raw().unwrap()[2 * 48 + 1], want);
            let mut r = l.clone();
            assert_eq!(raise(&mut r).unwrap(), 1);
            let wv = r.node(r.node_ids()[0]).input(1).unwrap();
            let Some(Compressed::Quantized(back)) = &r.value(wv).compressed else {
                panic!("not raised");
            };
            assert_eq!(back.q.raw().unwrap(), qw.q.raw().unwrap());
            assert_eq!(dequantize(back).unwrap(), dequantize(&qw).unwrap());
        }
    }

    #[test]
    fn weights_that_do_not_fit_fall_back_to_dequantize_linear() {
        // Block 8 is not a MatMulNBits block size.
        let mut qw = weight(true);
        qw.block_size = Some(8);
        qw.scale = Tensor::from_f32(vec![5, 3], vec![1.0; 15]).unwrap();
        let (g, _) = graph(qw);
        let l = lower_compressed(&g).unwrap();
        let ops: Vec<&str> = l
            .node_ids()
            .into_iter()
            .map(|id| l.node(id).op.onnx_type().1)
            .collect();
        assert!(ops.contains(&"DequantizeLinear"), "{ops:?}");
        assert!(!ops.contains(&OP_TYPE));
        // A weight also read by something else than MatMul's input 1.
        let (mut g, w) = graph(weight(true));
        let z = g.add_value("z", None).unwrap();
        g.add_node(
            "neg",
            Op::Unary(crate::op::UnaryOp::Neg),
            vec![Some(w)],
            vec![Some(z)],
        )
        .unwrap();
        g.set_outputs(vec![g.outputs()[0], z]);
        let l = lower_compressed(&g).unwrap();
        assert!(l
            .node_ids()
            .into_iter()
            .all(|id| l.node(id).op.onnx_type().1 != OP_TYPE));
    }

    #[test]
    fn nodes_with_bias_or_bad_sizes_stay_as_they_are() {
        let (g, _) = graph(weight(true));
        let mut l = lower_compressed(&g).unwrap();
        let mm = l.node_ids()[0];
        let bias = l
            .add_const("bias", Tensor::from_f32(vec![3], vec![0.0; 3]).unwrap())
            .unwrap();
        l.set_input(mm, 5, Some(bias));
        assert_eq!(raise(&mut l).unwrap(), 0);
        l.truncate_inputs(mm, 3);
        // A wrong N: B no longer matches.
        if let Op::Other(o) = &mut l.node_mut(mm).op {
            o.attributes[1] = Attribute::int("N", 4);
        }
        assert_eq!(raise(&mut l).unwrap(), 0);
        if let Op::Other(o) = &mut l.node_mut(mm).op {
            o.attributes.remove(0);
        }
        let err = raise(&mut l).unwrap_err().to_string();
        assert!(err.contains("attribute K is missing"), "{err}");
    }
}
