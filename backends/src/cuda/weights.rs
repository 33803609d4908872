//! The weight blob and how kernels read their tensor operands.
//!
//! Every constant a kernel reads is stored once in one byte blob (256-byte aligned
//! sections, in the order kernels first read them), uploaded to the device once.
//! Quantized weights keep their integer codes (8-bit as bytes, 4-bit packed two per
//! byte, low nibble first) with f32 scales and, if any, f32 zero points; the kernels
//! dequantize while loading ([`Operand::helper`]). Codebook weights are decoded to f32
//! on the host (no fused lookup on the device).

use super::shapes::{comment_safe, dims, require_f32};
use cc_ir::compressed::{codes_i32, Compressed, QuantizedWeight, ScaleLayout};
use cc_ir::{DType, Error, Graph, Result, ValueId};
use std::collections::BTreeMap;

/// Alignment of each section of the blob (bytes).
pub const ALIGN: usize = 256;

/// Where a kernel parameter points: a byte offset into the weight blob, or a graph
/// value living in the workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buf {
    /// Byte offset into the weight blob.
    Weight(usize),
    /// A value (resolved to a workspace offset by the planner).
    Value(ValueId),
}

/// One kernel parameter: C name, C type and what it points to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    /// Parameter name in the kernel signature.
    pub name: String,
    /// C type (`float*`, `const float*`, `const unsigned char*`).
    pub ty: &'static str,
    /// What it points to.
    pub buf: Buf,
}

impl Param {
    /// A read-only f32 tensor parameter.
    pub fn input(name: &str, buf: Buf) -> Param {
        Param {
            name: name.to_string(),
            ty: "const float*",
            buf,
        }
    }
}

/// A quantized weight as stored in the blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantRef {
    codes: usize,
    scale: usize,
    zero_point: Option<usize>,
    bits: u32,
    signed: bool,
    /// Size of the quantized axis.
    dim: usize,
    /// Elements after the quantized axis.
    inner: usize,
    block: Option<usize>,
}

/// How a kernel reads one tensor operand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operand {
    /// Plain f32 data.
    F32(Buf),
    /// Integer codes dequantized on load.
    Quant(QuantRef),
}

impl Operand {
    /// The kernel parameters this operand needs, named after `prefix`.
    pub fn params(&self, prefix: &str) -> Vec<Param> {
        match self {
            Operand::F32(b) => vec![Param::input(prefix, *b)],
            Operand::Quant(q) => {
                let mut p = vec![
                    Param {
                        name: format!("{prefix}_q"),
                        ty: "const unsigned char*",
                        buf: Buf::Weight(q.codes),
                    },
                    Param::input(&format!("{prefix}_s"), Buf::Weight(q.scale)),
                ];
                if let Some(z) = q.zero_point {
                    p.push(Param::input(&format!("{prefix}_z"), Buf::Weight(z)));
                }
                p
            }
        }
    }

    /// Device helper code this operand needs (a dequantizing loader `{fname}`), or "".
    pub fn helper(&self, fname: &str) -> String {
        let Operand::Quant(q) = self else {
            return String::new();
        };
        let code = match (q.bits, q.signed) {
            (8, true) => "    int c = (int)(signed char)q[i];\n".to_string(),
            (8, false) => "    int c = (int)q[i];\n".to_string(),
            (_, signed) => {
                let mut s = "    unsigned int b = q[i >> 1];\n    int c = (int)((i & 1) ? (b >> 4) : (b & 15u));\n".to_string();
                if signed {
                    s.push_str("    c = (c ^ 8) - 8;\n");
                }
                s
            }
        };
        let axis_pos = if q.inner == 1 {
            "i".to_string()
        } else {
            format!("i / {}", q.inner)
        };
        let si = match q.block {
            None => format!("({axis_pos}) % {}", q.dim),
            Some(b) => {
                let nb = q.dim.div_ceil(b);
                let outer = format!("i / {}", q.dim * q.inner);
                let rest = if q.inner == 1 {
                    String::new()
                } else {
                    format!(" + i % {}", q.inner)
                };
                format!(
                    "(({outer}) * {nb} + (({axis_pos}) % {}) / {b}) * {}{rest}",
                    q.dim, q.inner
                )
            }
        };
        let (zp_param, zp) = match q.zero_point {
            Some(_) => (", const float* __restrict__ z", " - z[si]"),
            None => ("", ""),
        };
        format!(
            "/* {}-bit {} codes, scale per {} */\n__device__ __forceinline__ float {fname}(const unsigned char* __restrict__ q, const float* __restrict__ s{zp_param}, int i) {{\n{code}    int si = {si};\n    return ((float)c{zp}) * s[si];\n}}\n",
            q.bits,
            if q.signed { "signed" } else { "unsigned" },
            match q.block {
                None => "channel".to_string(),
                Some(b) => format!("block of {b}"),
            }
        )
    }

    /// A C expression loading flat element `idx` of the operand (`fname` is the
    /// helper's name, `prefix` the parameters' prefix).
    pub fn load(&self, prefix: &str, fname: &str, idx: &str) -> String {
        match self {
            Operand::F32(_) => format!("{prefix}[{idx}]"),
            Operand::Quant(q) => {
                let z = if q.zero_point.is_some() {
                    format!(", {prefix}_z")
                } else {
                    String::new()
                };
                format!("{fname}({prefix}_q, {prefix}_s{z}, {idx})")
            }
        }
    }

    /// True when loads dequantize.
    pub fn is_quantized(&self) -> bool {
        matches!(self, Operand::Quant(_))
    }
}

/// Builds the weight blob, storing each constant once.
#[derive(Debug, Default)]
pub struct Weights {
    blob: Vec<u8>,
    plain: BTreeMap<ValueId, usize>,
    quant: BTreeMap<ValueId, QuantRef>,
    /// (offset, bytes, description) of each section, in blob order.
    sections: Vec<(usize, usize, String)>,
}

impl Weights {
    /// An empty blob.
    pub fn new() -> Weights {
        Weights::default()
    }

    fn push(&mut self, bytes: &[u8], what: String) -> usize {
        let off = self.blob.len().div_ceil(ALIGN) * ALIGN;
        self.blob.resize(off, 0);
        self.blob.extend_from_slice(bytes);
        self.sections.push((off, bytes.len(), comment_safe(&what)));
        off
    }

    /// How a kernel reads value `v` (read by node `node`): constants from the blob
    /// (quantized ones as codes + scales), anything else from the workspace.
    pub fn operand(&mut self, g: &Graph, v: ValueId, node: &str) -> Result<Operand> {
        let val = g.value(v);
        if let Some(c) = &val.compressed {
            return match c {
                Compressed::Quantized(qw) => self.quantized(g, v, qw).map(Operand::Quant),
                Compressed::Codebook(cw) => {
                    // Decoded on the host: the device reads plain f32.
                    if let Some(&off) = self.plain.get(&v) {
                        return Ok(Operand::F32(Buf::Weight(off)));
                    }
                    let data = cc_ir::compressed::codebook::decode(cw)?;
                    let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
                    let off = self.push(&bytes, format!("{} f32 decoded codebook", val.name()));
                    self.plain.insert(v, off);
                    Ok(Operand::F32(Buf::Weight(off)))
                }
                Compressed::Shared(_) => Err(Error::unsupported(format!(
                    "cuda backend: node {node}: shared weight {:?} (decode shared weights \
                     first: cc_ir::compressed::shared::materialize)",
                    val.name()
                ))),
            };
        }
        require_f32(g, v, node)?;
        if let Some(t) = g.const_data(v) {
            if let Some(&off) = self.plain.get(&v) {
                return Ok(Operand::F32(Buf::Weight(off)));
            }
            let data = t.f32_view()?;
            let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
            let off = self.push(&bytes, format!("{} f32{:?}", val.name(), t.shape()));
            self.plain.insert(v, off);
            return Ok(Operand::F32(Buf::Weight(off)));
        }
        Ok(Operand::F32(Buf::Value(v)))
    }

    /// Like [`Weights::operand`] for an operand that must be plain f32.
    pub fn plain_f32(&mut self, g: &Graph, v: ValueId, node: &str) -> Result<Buf> {
        match self.operand(g, v, node)? {
            Operand::F32(b) => Ok(b),
            Operand::Quant(_) => Err(Error::unsupported(format!(
                "cuda backend: node {node}: quantized weight {:?} as this operand (only \
                 the weight of Gemm/MatMul/Conv may be quantized)",
                g.value(v).name()
            ))),
        }
    }

    fn quantized(&mut self, g: &Graph, v: ValueId, qw: &QuantizedWeight) -> Result<QuantRef> {
        if let Some(r) = self.quant.get(&v) {
            return Ok(r.clone());
        }
        let name = g.value(v).name().to_string();
        let shape = qw.q.shape().to_vec();
        if dims(g, v)? != shape {
            return Err(Error::invalid(format!(
                "quantized weight {name:?}: codes {shape:?} differ from the value's shape"
            )));
        }
        let (bits, signed) = match qw.q.dtype() {
            DType::I8 => (8, true),
            DType::U8 => (8, false),
            DType::I4 => (4, true),
            DType::U4 => (4, false),
            other => {
                return Err(Error::unsupported(format!(
                    "cuda backend: quantized weight {name:?} has {other} codes"
                )))
            }
        };
        let codes = codes_i32(&qw.q)?;
        let bytes: Vec<u8> = if bits == 8 {
            codes.iter().map(|&c| c as u8).collect()
        } else {
            codes
                .chunks(2)
                .map(|p| {
                    let lo = (p.first().copied().unwrap_or(0) & 15) as u8;
                    let hi = (p.get(1).copied().unwrap_or(0) & 15) as u8;
                    lo | (hi << 4)
                })
                .collect()
        };
        let layout = ScaleLayout::new(&shape, qw.axis, qw.block_size)?;
        let want = layout.scale_shape(&shape, qw.axis);
        if qw.scale.shape().iter().product::<usize>() != want.iter().product::<usize>() {
            return Err(Error::invalid(format!(
                "quantized weight {name:?}: scale {:?} does not fit codes {shape:?}",
                qw.scale.shape()
            )));
        }
        let scale: Vec<u8> = qw
            .scale
            .f32_view()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let zp = match &qw.zero_point {
            Some(z) => {
                let zc = codes_i32(z)?;
                if zc.len() != qw.scale.len() {
                    return Err(Error::invalid(format!(
                        "quantized weight {name:?}: zero point does not fit the scales"
                    )));
                }
                Some(
                    zc.iter()
                        .flat_map(|&c| (c as f32).to_le_bytes())
                        .collect::<Vec<u8>>(),
                )
            }
            None => None,
        };
        let dim = shape.get(qw.axis).copied().unwrap_or(1);
        let inner = shape.iter().skip(qw.axis + 1).product();
        let codes_off = self.push(&bytes, format!("{name} codes {}{shape:?}", qw.q.dtype()));
        let scale_off = self.push(&scale, format!("{name} scales f32{:?}", qw.scale.shape()));
        let zp_off = zp.map(|z| self.push(&z, format!("{name} zero points as f32")));
        let r = QuantRef {
            codes: codes_off,
            scale: scale_off,
            zero_point: zp_off,
            bits,
            signed,
            dim,
            inner,
            block: qw.block_size,
        };
        self.quant.insert(v, r.clone());
        Ok(r)
    }

    /// The blob bytes.
    pub fn into_blob(self) -> (Vec<u8>, Vec<(usize, usize, String)>) {
        (self.blob, self.sections)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_ir::compressed::{pack_4bit, WeightFormat};
    use cc_ir::types::known_shape;
    use cc_ir::{Tensor, ValueType};

    fn graph_with(qw: QuantizedWeight, shape: &[usize]) -> (Graph, ValueId) {
        let mut g = Graph::new("g");
        let w = g
            .add_value("w", Some(ValueType::tensor(DType::F32, known_shape(shape))))
            .unwrap();
        g.value_mut(w).compressed = Some(Compressed::Quantized(qw));
        (g, w)
    }

    #[test]
    fn plain_constants_are_stored_once_and_aligned() {
        let mut g = Graph::new("g");
        let a = g
            .add_const("a", Tensor::from_f32(vec![3], vec![1.0, 2.0, 3.0]).unwrap())
            .unwrap();
        let b = g
            .add_const("b", Tensor::from_f32(vec![1], vec![4.0]).unwrap())
            .unwrap();
        let x = g
            .add_value("x", Some(ValueType::tensor(DType::F32, known_shape(&[2]))))
            .unwrap();
        let mut w = Weights::new();
        assert_eq!(w.operand(&g, a, "n").unwrap(), Operand::F32(Buf::Weight(0)));
        assert_eq!(
            w.operand(&g, b, "n").unwrap(),
            Operand::F32(Buf::Weight(256))
        );
        assert_eq!(w.operand(&g, a, "n").unwrap(), Operand::F32(Buf::Weight(0)));
        assert_eq!(w.operand(&g, x, "n").unwrap(), Operand::F32(Buf::Value(x)));
        let (blob, sections) = w.into_blob();
        assert_eq!(blob.len(), 260);
        assert_eq!(&blob[256..260], &4.0f32.to_le_bytes());
        assert_eq!(sections.len(), 2);
    }

    #[test]
    fn int4_blocks_pack_low_nibble_first_and_index_scales_by_block() {
        let codes: Vec<i32> = vec![-8, 7, 1, -1, 2, 3, -2, 0];
        let qw = QuantizedWeight {
            q: Tensor::from_raw(DType::I4, vec![4, 2], pack_4bit(&codes).into()).unwrap(),
            scale: Tensor::from_f32(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap(),
            zero_point: None,
            axis: 0,
            block_size: Some(2),
            format: WeightFormat::DequantizeLinear,
        };
        let (g, v) = graph_with(qw, &[4, 2]);
        let mut w = Weights::new();
        let op = w.operand(&g, v, "n").unwrap();
        let (blob, _) = w.into_blob();
        // -8 -> 0x8, 7 -> 0x7: byte 0x78.
        assert_eq!(blob[0], 0x78);
        assert_eq!(blob[1], 0xf1);
        let h = op.helper("dq");
        assert!(h.contains("c = (c ^ 8) - 8;"), "{h}");
        // Scale index of element i: ((i / 8) * 2 + ((i / 2) % 4) / 2) * 2 + i % 2,
        // the layout ScaleLayout defines.
        assert!(
            h.contains("int si = ((i / 8) * 2 + ((i / 2) % 4) / 2) * 2 + i % 2;"),
            "{h}"
        );
        let layout = ScaleLayout::new(&[4, 2], 0, Some(2)).unwrap();
        for i in 0..8 {
            assert_eq!(
                ((i / 8) * 2 + ((i / 2) % 4) / 2) * 2 + i % 2,
                layout.index(i)
            );
        }
        assert_eq!(op.params("w").len(), 2);
        assert_eq!(op.load("w", "dq", "k"), "dq(w_q, w_s, k)");
    }

    #[test]
    fn int8_per_channel_with_zero_points() {
        let qw = QuantizedWeight {
            q: Tensor::from_u8(vec![2, 3], vec![0, 1, 2, 3, 4, 255]).unwrap(),
            scale: Tensor::from_f32(vec![2], vec![0.5, 0.25]).unwrap(),
            zero_point: Some(Tensor::from_u8(vec![2], vec![1, 128]).unwrap()),
            axis: 0,
            block_size: None,
            format: WeightFormat::DequantizeLinear,
        };
        let (g, v) = graph_with(qw, &[2, 3]);
        let mut w = Weights::new();
        let op = w.operand(&g, v, "n").unwrap();
        let h = op.helper("dq");
        assert!(h.contains("int c = (int)q[i];"), "{h}");
        assert!(h.contains("int si = (i / 3) % 2;"), "{h}");
        assert!(h.contains("- z[si]"), "{h}");
        assert_eq!(op.params("w").len(), 3);
        let (blob, sections) = w.into_blob();
        assert_eq!(&blob[0..6], &[0, 1, 2, 3, 4, 255]);
        assert_eq!(sections[2].0, 512);
        assert_eq!(&blob[516..520], &128f32.to_le_bytes());
    }
}
