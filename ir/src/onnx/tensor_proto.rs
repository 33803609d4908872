//! `TensorProto` <-> [`Tensor`]: raw data, the typed repeated fields, external data.

use super::external::ExternalFiles;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::{shape_count, Tensor, TensorData};
use bytes::Bytes;
use onnx_protobuf::tensor_proto::DataLocation;
use onnx_protobuf::{StringStringEntryProto, TensorProto};

/// Converts a `TensorProto` into a [`Tensor`], taking its `raw_data` without copying.
/// External data is read through `ext`. Errors name the tensor.
pub fn tensor_from_proto_with(p: &mut TensorProto, ext: &mut ExternalFiles) -> Result<Tensor> {
    tensor_from_proto_raw(p, ext, None)
}

/// Like [`tensor_from_proto_with`], with the `raw_data` supplied separately (sliced from
/// a memory-mapped model file) when `raw` is set.
pub fn tensor_from_proto_raw(
    p: &mut TensorProto,
    ext: &mut ExternalFiles,
    raw: Option<Bytes>,
) -> Result<Tensor> {
    let name = p.name.clone();
    convert(p, ext, raw).map_err(|e| {
        let msg = format!("tensor {name:?}: {}", strip(&e, &name));
        match e {
            Error::Unsupported(_) => Error::Unsupported(msg),
            _ => Error::Invalid(msg),
        }
    })
}

/// Drops a "tensor \"name\": " prefix the inner error may already carry.
fn strip(e: &Error, name: &str) -> String {
    let s = e.to_string();
    let prefix = format!("tensor {name:?}: ");
    s.strip_prefix(&prefix).map(str::to_string).unwrap_or(s)
}

fn convert(p: &mut TensorProto, ext: &mut ExternalFiles, raw: Option<Bytes>) -> Result<Tensor> {
    if p.segment.is_some() {
        return Err(Error::unsupported("segmented tensors are not supported"));
    }
    let dtype =
        DType::from_onnx(p.data_type).ok_or_else(|| Error::invalid("data type is UNDEFINED"))?;
    let shape = p
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| Error::invalid(format!("negative dim {d}"))))
        .collect::<Result<Vec<usize>>>()?;
    let count = shape_count(&shape)?;
    if count > usize::MAX / 128 {
        return Err(Error::invalid(format!(
            "shape {shape:?} has too many elements"
        )));
    }
    if p.data_location.value() == DataLocation::EXTERNAL as i32 {
        let raw = read_external(p, ext)?;
        return Tensor::from_raw(dtype, shape, raw);
    }
    // Lengths are checked before the data is moved out, so a failed conversion leaves
    // the proto intact (attributes then keep it encoded).
    if dtype == DType::String {
        if p.string_data.len() != count {
            return Err(bad_len("string_data", p.string_data.len(), count));
        }
        return Tensor::from_strings(shape, std::mem::take(&mut p.string_data));
    }
    if let Some(raw) = raw {
        if let Some(len) = dtype.raw_len(count) {
            if len != raw.len() {
                return Err(Error::invalid(format!(
                    "raw_data has {} bytes, {dtype}{shape:?} needs {len}",
                    raw.len()
                )));
            }
        }
        return Tensor::from_raw(dtype, shape, raw);
    }
    if !p.raw_data.is_empty() || count == 0 {
        if let Some(len) = dtype.raw_len(count) {
            if len != p.raw_data.len() {
                return Err(Error::invalid(format!(
                    "raw_data has {} bytes, {dtype}{shape:?} needs {len}",
                    p.raw_data.len()
                )));
            }
        }
        let raw = Bytes::from(std::mem::take(&mut p.raw_data));
        return Tensor::from_raw(dtype, shape, raw);
    }
    let raw = typed_fields_to_raw(p, dtype, count)?;
    Tensor::from_raw(dtype, shape, Bytes::from(raw))
}

fn read_external(p: &TensorProto, ext: &mut ExternalFiles) -> Result<Bytes> {
    let mut location = None;
    let mut offset = 0u64;
    let mut length = None;
    for kv in &p.external_data {
        let num = || {
            kv.value.parse::<u64>().map_err(|_| {
                Error::invalid(format!(
                    "external data {} {:?} is not a number",
                    kv.key, kv.value
                ))
            })
        };
        match kv.key.as_str() {
            "location" => location = Some(kv.value.clone()),
            "offset" => offset = num()?,
            "length" => length = Some(num()?),
            _ => {}
        }
    }
    let location = location.ok_or_else(|| Error::invalid("external data without a location"))?;
    ext.read(&p.name, &location, offset, length)
}

fn bad_len(field: &str, got: usize, want: usize) -> Error {
    Error::invalid(format!("{field} has {got} elements, expected {want}"))
}

/// The typed repeated fields as little-endian raw bytes.
fn typed_fields_to_raw(p: &TensorProto, dtype: DType, count: usize) -> Result<Vec<u8>> {
    use DType::*;
    let mut out = Vec::new();
    match dtype {
        F32 | C64 => {
            let want = if dtype == C64 { count * 2 } else { count };
            if p.float_data.len() != want {
                return Err(bad_len("float_data", p.float_data.len(), want));
            }
            out.reserve(want * 4);
            p.float_data
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        }
        F64 | C128 => {
            let want = if dtype == C128 { count * 2 } else { count };
            if p.double_data.len() != want {
                return Err(bad_len("double_data", p.double_data.len(), want));
            }
            p.double_data
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        }
        I64 => {
            if p.int64_data.len() != count {
                return Err(bad_len("int64_data", p.int64_data.len(), count));
            }
            p.int64_data
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        }
        U32 | U64 => {
            if p.uint64_data.len() != count {
                return Err(bad_len("uint64_data", p.uint64_data.len(), count));
            }
            for &v in &p.uint64_data {
                if dtype == U32 {
                    out.extend_from_slice(&(v as u32).to_le_bytes());
                } else {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        I32 => {
            if p.int32_data.len() != count {
                return Err(bad_len("int32_data", p.int32_data.len(), count));
            }
            p.int32_data
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        }
        I16 | U16 | F16 | BF16 => {
            if p.int32_data.len() != count {
                return Err(bad_len("int32_data", p.int32_data.len(), count));
            }
            p.int32_data
                .iter()
                .for_each(|&v| out.extend_from_slice(&(v as u16).to_le_bytes()));
        }
        I8 | U8 | Bool | F8E4M3FN | F8E4M3FNUZ | F8E5M2 | F8E5M2FNUZ => {
            if p.int32_data.len() != count {
                return Err(bad_len("int32_data", p.int32_data.len(), count));
            }
            out.extend(p.int32_data.iter().map(|&v| v as u8));
        }
        U4 | I4 => {
            let packed = count.div_ceil(2);
            if p.int32_data.len() == packed {
                // One int32 per byte, two 4-bit values per byte (low nibble first).
                out.extend(p.int32_data.iter().map(|&v| v as u8));
            } else if p.int32_data.len() == count {
                out.resize(packed, 0);
                for (i, &v) in p.int32_data.iter().enumerate() {
                    let nib = (v as u8) & 0x0f;
                    if let Some(b) = out.get_mut(i / 2) {
                        *b |= if i % 2 == 0 { nib } else { nib << 4 };
                    }
                }
            } else {
                return Err(bad_len("int32_data", p.int32_data.len(), packed));
            }
        }
        Other(_) => {
            if p.int32_data.is_empty() {
                return Err(Error::unsupported(format!(
                    "element type {dtype} without raw_data or int32_data"
                )));
            }
            // Newer (packed) types keep one byte of their raw layout per int32.
            out.extend(p.int32_data.iter().map(|&v| v as u8));
        }
        String => return Err(Error::unsupported("string tensor in raw form")),
    }
    Ok(out)
}

/// The `TensorProto` for `t` named `name`, data inline (raw bytes copied; strings as
/// `string_data`).
pub fn tensor_to_proto(name: &str, t: &Tensor) -> TensorProto {
    let mut p = tensor_header(name, t);
    match t.data() {
        TensorData::Raw(b) => p.raw_data = b.to_vec(),
        TensorData::Strings(s) => p.string_data = s.to_vec(),
    }
    p
}

/// The `TensorProto` for `t` without its raw data (strings are included).
pub fn tensor_header(name: &str, t: &Tensor) -> TensorProto {
    let mut p = TensorProto::new();
    p.name = name.to_string();
    p.data_type = t.dtype().to_onnx();
    p.dims = t.shape().iter().map(|&d| d as i64).collect();
    if let TensorData::Strings(s) = t.data() {
        p.string_data = s.to_vec();
    }
    p
}

/// Marks a header as pointing at `len` bytes of `location` from `offset`.
pub fn set_external(p: &mut TensorProto, location: &str, offset: u64, len: u64) {
    let entry = |k: &str, v: String| {
        let mut e = StringStringEntryProto::new();
        e.key = k.to_string();
        e.value = v;
        e
    };
    p.data_location = DataLocation::EXTERNAL.into();
    p.external_data = vec![
        entry("location", location.to_string()),
        entry("offset", offset.to_string()),
        entry("length", len.to_string()),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(dtype: DType, dims: &[i64]) -> TensorProto {
        let mut p = TensorProto::new();
        p.name = "t".into();
        p.data_type = dtype.to_onnx();
        p.dims = dims.to_vec();
        p
    }

    fn conv(mut p: TensorProto) -> Result<Tensor> {
        tensor_from_proto_with(&mut p, &mut ExternalFiles::new(None))
    }

    #[test]
    fn typed_fields_become_raw() {
        let mut p = proto(DType::F32, &[2]);
        p.float_data = vec![1.5, -2.0];
        assert_eq!(conv(p).unwrap().to_f32().unwrap(), vec![1.5, -2.0]);
        let mut p = proto(DType::I8, &[3]);
        p.int32_data = vec![-1, 7, -128];
        assert_eq!(conv(p).unwrap().to_i8().unwrap(), vec![-1, 7, -128]);
        let mut p = proto(DType::F16, &[1]);
        p.int32_data = vec![0x3c00];
        assert_eq!(&conv(p).unwrap().raw().unwrap()[..], &[0x00, 0x3c]);
        let mut p = proto(DType::Bool, &[2]);
        p.int32_data = vec![1, 0];
        assert_eq!(conv(p).unwrap().to_bool().unwrap(), vec![true, false]);
        let mut p = proto(DType::U32, &[1]);
        p.uint64_data = vec![0xdead_beef];
        assert_eq!(
            &conv(p).unwrap().raw().unwrap()[..],
            &[0xef, 0xbe, 0xad, 0xde]
        );
        let mut p = proto(DType::I64, &[2]);
        p.int64_data = vec![-3, 4];
        assert_eq!(conv(p).unwrap().to_i64().unwrap(), vec![-3, 4]);
        let mut p = proto(DType::C64, &[1]);
        p.float_data = vec![1.0, 2.0];
        assert_eq!(conv(p).unwrap().byte_len(), 8);
        let mut p = proto(DType::String, &[2]);
        p.string_data = vec![b"a".to_vec(), b"bc".to_vec()];
        assert_eq!(conv(p).unwrap().byte_len(), 3);
    }

    #[test]
    fn int4_packing() {
        // Packed: one int32 per byte.
        let mut p = proto(DType::I4, &[3]);
        p.int32_data = vec![0x21, 0x03];
        assert_eq!(&conv(p).unwrap().raw().unwrap()[..], &[0x21, 0x03]);
        // One value per int32: packed low nibble first, sign bits dropped.
        let mut p = proto(DType::I4, &[3]);
        p.int32_data = vec![1, -1, 3];
        assert_eq!(&conv(p).unwrap().raw().unwrap()[..], &[0xf1, 0x03]);
        let mut p = proto(DType::U4, &[3]);
        p.int32_data = vec![1];
        assert!(conv(p).is_err());
    }

    #[test]
    fn errors_name_the_tensor() {
        let mut p = proto(DType::F32, &[3]);
        p.float_data = vec![1.0];
        let err = conv(p).unwrap_err().to_string();
        assert!(err.contains("\"t\"") && err.contains("float_data"), "{err}");
        let mut p = proto(DType::F32, &[1]);
        p.segment = Some(Default::default()).into();
        let err = conv(p).unwrap_err().to_string();
        assert!(err.contains("\"t\"") && err.contains("segment"), "{err}");
        let p = proto(DType::F32, &[-1]);
        assert!(conv(p).unwrap_err().to_string().contains("negative"));
        let mut p = proto(DType::F32, &[1]);
        p.data_type = 0;
        assert!(conv(p).unwrap_err().to_string().contains("UNDEFINED"));
    }

    #[test]
    fn raw_data_is_moved_and_round_trips() {
        let t = Tensor::from_f32(vec![2], vec![3.0, 4.0]).unwrap();
        let mut p = tensor_to_proto("w", &t);
        let ptr = p.raw_data.as_ptr();
        let back = tensor_from_proto_with(&mut p, &mut ExternalFiles::new(None)).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.raw().unwrap().as_ptr(), ptr, "no copy on import");
    }

    #[test]
    fn external_data_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = vec![0u8; 8];
        bytes.extend_from_slice(&7.5f32.to_le_bytes());
        std::fs::write(dir.path().join("w.data"), &bytes).unwrap();
        let mut p = tensor_header("w", &Tensor::from_f32(vec![1], vec![0.0]).unwrap());
        set_external(&mut p, "w.data", 8, 4);
        let mut ext = ExternalFiles::new(Some(dir.path()));
        let t = tensor_from_proto_with(&mut p, &mut ext).unwrap();
        assert_eq!(t.to_f32().unwrap(), vec![7.5]);
    }
}
