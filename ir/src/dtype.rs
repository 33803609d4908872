//! Element types of tensors, numbered as ONNX numbers them.

use std::fmt;

/// A tensor element type. The discriminants are the ONNX `TensorProto.DataType` numbers;
/// types newer than the ones named here are kept as [`DType::Other`] so they round-trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 8-bit integer.
    I8,
    /// Unsigned 16-bit integer.
    U16,
    /// Signed 16-bit integer.
    I16,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// Byte strings.
    String,
    /// Booleans, one byte each.
    Bool,
    /// IEEE half float.
    F16,
    /// 64-bit float.
    F64,
    /// Unsigned 32-bit integer.
    U32,
    /// Unsigned 64-bit integer.
    U64,
    /// Complex of two f32.
    C64,
    /// Complex of two f64.
    C128,
    /// bfloat16.
    BF16,
    /// float8 e4m3fn.
    F8E4M3FN,
    /// float8 e4m3fnuz.
    F8E4M3FNUZ,
    /// float8 e5m2.
    F8E5M2,
    /// float8 e5m2fnuz.
    F8E5M2FNUZ,
    /// Unsigned 4-bit integer, two per byte.
    U4,
    /// Signed 4-bit integer, two per byte.
    I4,
    /// An ONNX data type number this version does not name (kept as is).
    Other(i32),
}

impl DType {
    /// The type for an ONNX data type number; `None` for 0 (UNDEFINED).
    pub fn from_onnx(code: i32) -> Option<DType> {
        use DType::*;
        Some(match code {
            0 => return None,
            1 => F32,
            2 => U8,
            3 => I8,
            4 => U16,
            5 => I16,
            6 => I32,
            7 => I64,
            8 => String,
            9 => Bool,
            10 => F16,
            11 => F64,
            12 => U32,
            13 => U64,
            14 => C64,
            15 => C128,
            16 => BF16,
            17 => F8E4M3FN,
            18 => F8E4M3FNUZ,
            19 => F8E5M2,
            20 => F8E5M2FNUZ,
            21 => U4,
            22 => I4,
            other => Other(other),
        })
    }

    /// The ONNX data type number.
    pub fn to_onnx(self) -> i32 {
        use DType::*;
        match self {
            F32 => 1,
            U8 => 2,
            I8 => 3,
            U16 => 4,
            I16 => 5,
            I32 => 6,
            I64 => 7,
            String => 8,
            Bool => 9,
            F16 => 10,
            F64 => 11,
            U32 => 12,
            U64 => 13,
            C64 => 14,
            C128 => 15,
            BF16 => 16,
            F8E4M3FN => 17,
            F8E4M3FNUZ => 18,
            F8E5M2 => 19,
            F8E5M2FNUZ => 20,
            U4 => 21,
            I4 => 22,
            Other(code) => code,
        }
    }

    /// Bits per element in ONNX raw data; `None` for strings and unknown types.
    pub fn bits(self) -> Option<usize> {
        use DType::*;
        Some(match self {
            U4 | I4 => 4,
            U8 | I8 | Bool | F8E4M3FN | F8E4M3FNUZ | F8E5M2 | F8E5M2FNUZ => 8,
            U16 | I16 | F16 | BF16 => 16,
            F32 | I32 | U32 => 32,
            F64 | I64 | U64 | C64 => 64,
            C128 => 128,
            String | Other(_) => return None,
        })
    }

    /// Bytes needed for `count` elements in ONNX raw data (sub-byte types packed, rounded up).
    pub fn raw_len(self, count: usize) -> Option<usize> {
        self.bits().map(|b| (count * b).div_ceil(8))
    }

    /// True for floating-point types (including the 8-bit floats).
    pub fn is_float(self) -> bool {
        use DType::*;
        matches!(
            self,
            F32 | F16 | F64 | BF16 | F8E4M3FN | F8E4M3FNUZ | F8E5M2 | F8E5M2FNUZ
        )
    }

    /// True for integer types (signed or unsigned, any width).
    pub fn is_int(self) -> bool {
        use DType::*;
        matches!(self, U8 | I8 | U16 | I16 | I32 | I64 | U32 | U64 | U4 | I4)
    }

    /// The short name used by the printer (`f32`, `i64`, ...).
    pub fn name(self) -> std::borrow::Cow<'static, str> {
        use DType::*;
        std::borrow::Cow::Borrowed(match self {
            F32 => "f32",
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            I32 => "i32",
            I64 => "i64",
            String => "str",
            Bool => "bool",
            F16 => "f16",
            F64 => "f64",
            U32 => "u32",
            U64 => "u64",
            C64 => "c64",
            C128 => "c128",
            BF16 => "bf16",
            F8E4M3FN => "f8e4m3fn",
            F8E4M3FNUZ => "f8e4m3fnuz",
            F8E5M2 => "f8e5m2",
            F8E5M2FNUZ => "f8e5m2fnuz",
            U4 => "u4",
            I4 => "i4",
            Other(code) => return std::borrow::Cow::Owned(format!("dtype{code}")),
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}
