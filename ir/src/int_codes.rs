//! One codec for integer tensors as `i32` codes: 2-, 4-, 8-, 16- and 32-bit types,
//! the sub-byte ones packed lowest bits first (ONNX INT4/UINT4/INT2/UINT2 layout).
//! Quantized weights, the quant pass and the CPU kernels all go through it.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// ONNX uint2 (opset 25; no named [`DType`] yet).
pub const UINT2: DType = DType::Other(25);
/// ONNX int2 (opset 25; no named [`DType`] yet).
pub const INT2: DType = DType::Other(26);

/// Bits per element and signedness of a packed sub-byte integer type.
pub fn sub_byte(d: DType) -> Option<(usize, bool)> {
    match d {
        DType::U4 => Some((4, false)),
        DType::I4 => Some((4, true)),
        UINT2 => Some((2, false)),
        INT2 => Some((2, true)),
        _ => None,
    }
}

/// True for the element types [`Tensor::int_codes`] reads.
pub fn is_int_code_type(d: DType) -> bool {
    sub_byte(d).is_some()
        || matches!(
            d,
            DType::I8 | DType::U8 | DType::I16 | DType::U16 | DType::I32
        )
}

/// Code `i` of packed sub-byte data (`bits` per element, lowest bits first); bytes past
/// the end read as zero.
#[inline]
pub fn sub_byte_code(raw: &[u8], bits: usize, signed: bool, i: usize) -> i32 {
    let per = 8 / bits;
    let mask = (1u8 << bits) - 1;
    let byte = raw.get(i / per).copied().unwrap_or(0);
    let v = i32::from((byte >> ((i % per) * bits)) & mask);
    if signed && v >= 1 << (bits - 1) {
        v - (1 << bits)
    } else {
        v
    }
}

/// Packs codes as `bits`-bit elements, lowest bits first (values are masked, not
/// checked).
pub fn pack_sub_byte(codes: &[i32], bits: usize) -> Vec<u8> {
    let per = 8 / bits;
    let mask = (1u8 << bits) - 1;
    codes
        .chunks(per)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0u8, |b, (k, &x)| b | ((x as u8 & mask) << (k * bits)))
        })
        .collect()
}

impl Tensor {
    /// The elements of an integer tensor (i2/u2/i4/u4 packed, i8/u8, i16/u16, i32) as
    /// i32 codes; an error naming the type for any other element type or for data
    /// shorter than the shape.
    pub fn int_codes(&self) -> Result<Vec<i32>> {
        let n = self.len();
        let d = self.dtype();
        if let Some((bits, signed)) = sub_byte(d) {
            let raw = self.raw()?;
            if raw.len() < (n * bits).div_ceil(8) {
                return Err(Error::invalid(format!(
                    "{d:?} tensor of shape {:?} has only {} bytes",
                    self.shape(),
                    raw.len()
                )));
            }
            return Ok((0..n)
                .map(|i| sub_byte_code(raw, bits, signed, i))
                .collect());
        }
        Ok(match d {
            DType::I8 => self.to_i8()?.into_iter().map(i32::from).collect(),
            DType::U8 => self.to_u8()?.into_iter().map(i32::from).collect(),
            DType::I32 => self.to_i32()?,
            DType::I16 | DType::U16 => self
                .to_i64_lossless()?
                .into_iter()
                .map(|v| v as i32)
                .collect(),
            other => {
                return Err(Error::invalid(format!(
                    "integer codes of type {other:?} are not supported"
                )))
            }
        })
    }

    /// An integer tensor of type `dtype` from codes already within its range (sub-byte
    /// types packed lowest bits first; out-of-range values wrap, they are not checked).
    pub fn from_int_codes(dtype: DType, shape: Vec<usize>, codes: &[i32]) -> Result<Tensor> {
        if let Some((bits, _)) = sub_byte(dtype) {
            return Tensor::from_raw(dtype, shape, pack_sub_byte(codes, bits).into());
        }
        let bytes: Vec<u8> = match dtype {
            DType::U8 | DType::I8 => codes.iter().map(|&x| x as u8).collect(),
            DType::U16 | DType::I16 => codes
                .iter()
                .flat_map(|&x| (x as u16).to_le_bytes())
                .collect(),
            DType::I32 => codes.iter().flat_map(|&x| x.to_le_bytes()).collect(),
            other => {
                return Err(Error::unsupported(format!(
                    "integer tensor of element type {other}"
                )))
            }
        };
        Tensor::from_raw(dtype, shape, bytes.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips() {
        let cases: &[(DType, &[i32])] = &[
            (DType::I4, &[-8, 7, 0, -1, 3]),
            (DType::U4, &[15, 0, 9]),
            (INT2, &[-2, 1, 0, -1, 1]),
            (UINT2, &[3, 0, 2, 1, 3, 3]),
            (DType::I8, &[-128, 127, 0, -5]),
            (DType::U8, &[255, 0, 17]),
            (DType::I16, &[-32768, 32767, -3]),
            (DType::U16, &[65535, 0, 1234]),
            (DType::I32, &[i32::MIN, i32::MAX, 0]),
        ];
        for &(d, codes) in cases {
            let t = Tensor::from_int_codes(d, vec![codes.len()], codes).unwrap();
            assert_eq!(t.dtype(), d);
            assert_eq!(t.int_codes().unwrap(), codes, "{d:?}");
            assert!(is_int_code_type(d));
        }
    }

    #[test]
    fn packing_is_lowest_bits_first() {
        let t = Tensor::from_int_codes(DType::I4, vec![3], &[1, -2, 5]).unwrap();
        assert_eq!(t.raw().unwrap().as_ref(), &[0xe1, 0x05]);
        let t = Tensor::from_int_codes(UINT2, vec![5], &[1, 2, 3, 0, 2]).unwrap();
        assert_eq!(t.raw().unwrap().as_ref(), &[0b00_11_10_01, 0b10]);
    }

    #[test]
    fn other_types_and_short_data_are_errors() {
        let f = Tensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap();
        let e = f.int_codes().unwrap_err().to_string();
        assert!(e.contains("F32"), "{e}");
        assert!(!is_int_code_type(DType::F32));
        assert!(Tensor::from_int_codes(DType::F32, vec![1], &[1]).is_err());
        // int2 has no fixed byte length in `from_raw`: 9 codes need 3 bytes.
        let short = Tensor::from_raw(INT2, vec![9], vec![0u8, 0].into()).unwrap();
        let e = short.int_codes().unwrap_err().to_string();
        assert!(e.contains("only 2 bytes"), "{e}");
    }
}
