//! A quick check of protobuf wire framing, so that truncated files are reported as
//! such (the protobuf runtime accepts some top-level messages cut inside a field).

use crate::error::{Error, Result};

fn varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Checks that the top-level fields of a serialized message are complete: every
/// length-delimited field fits in the buffer and no field is cut short.
pub fn check_framing(b: &[u8], what: &str) -> Result<()> {
    let mut pos = 0usize;
    while pos < b.len() {
        let start = pos;
        let bad =
            |why: &str| Error::decode(format!("not {what}: {why} at byte {start} of {}", b.len()));
        let key = varint(b, &mut pos).ok_or_else(|| bad("truncated field key"))?;
        if key >> 3 == 0 {
            return Err(bad("field number 0"));
        }
        let end = match key & 7 {
            0 => {
                varint(b, &mut pos).ok_or_else(|| bad("truncated varint"))?;
                pos
            }
            1 => pos.checked_add(8).ok_or_else(|| bad("bad length"))?,
            2 => {
                let len = varint(b, &mut pos).ok_or_else(|| bad("truncated length"))?;
                usize::try_from(len)
                    .ok()
                    .and_then(|l| pos.checked_add(l))
                    .ok_or_else(|| bad("bad length"))?
            }
            5 => pos.checked_add(4).ok_or_else(|| bad("bad length"))?,
            _ => return Err(bad("unsupported wire type")),
        };
        if end > b.len() {
            return Err(bad("truncated field"));
        }
        pos = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing() {
        assert!(check_framing(&[0x08, 0x01, 0x12, 0x02, 0x61, 0x62], "x").is_ok());
        let e = check_framing(&[0x08, 0x01, 0x12, 0x05, 0x61], "an ONNX model").unwrap_err();
        assert_eq!(
            e.to_string(),
            "not an ONNX model: truncated field at byte 2 of 5"
        );
        assert!(check_framing(&[0x08], "x").is_err());
        assert!(check_framing(&[0x0b], "x").is_err());
        assert!(check_framing(&[0x00, 0x00], "x").is_err());
        assert!(check_framing(&[], "x").is_ok());
    }
}
