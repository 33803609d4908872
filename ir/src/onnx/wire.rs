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

/// One field of a serialized message: number, wire type, and byte ranges of the whole
/// field and (for length-delimited fields) of its payload.
struct Field {
    number: u64,
    wire: u64,
    start: usize,
    payload: std::ops::Range<usize>,
}

/// The fields of a message, or `None` when the framing is broken.
fn fields(b: &[u8]) -> Option<Vec<Field>> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < b.len() {
        let start = pos;
        let key = varint(b, &mut pos)?;
        let wire = key & 7;
        let payload_start;
        let end = match wire {
            0 => {
                payload_start = pos;
                varint(b, &mut pos)?;
                pos
            }
            1 => {
                payload_start = pos;
                pos.checked_add(8)?
            }
            2 => {
                let len = usize::try_from(varint(b, &mut pos)?).ok()?;
                payload_start = pos;
                pos.checked_add(len)?
            }
            5 => {
                payload_start = pos;
                pos.checked_add(4)?
            }
            _ => return None,
        };
        if end > b.len() {
            return None;
        }
        out.push(Field {
            number: key >> 3,
            wire,
            start,
            payload: payload_start..end,
        });
        pos = end;
    }
    Some(out)
}

fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Copies the field at `f`, replacing its payload with `payload`.
fn push_len_field(out: &mut Vec<u8>, b: &[u8], f: &Field, payload: &[u8]) {
    let mut key_end = f.start;
    let _ = varint(b, &mut key_end);
    out.extend_from_slice(b.get(f.start..key_end).unwrap_or_default());
    push_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// A serialized model with the `raw_data` of its graph's initializers cut out.
pub struct Split {
    /// The model without those payloads.
    pub rest: Vec<u8>,
    /// For each initializer, in order, the byte range of its `raw_data` in the input.
    pub raw: Vec<Option<std::ops::Range<usize>>>,
}

/// Cuts the initializer payloads out of a serialized `ModelProto` so that the weights can
/// be sliced from the (memory-mapped) input instead of copied by the protobuf parser.
/// `None` when the layout is unusual (repeated graph or raw_data fields, bad framing):
/// the caller then parses the bytes as they are.
pub fn split_weights(b: &[u8]) -> Option<Split> {
    const GRAPH: u64 = 7;
    const INITIALIZER: u64 = 5;
    const RAW_DATA: u64 = 9;
    let model = fields(b)?;
    if model.iter().filter(|f| f.number == GRAPH).count() != 1 {
        return None;
    }
    let mut rest = Vec::with_capacity(b.len().min(1 << 20));
    let mut raw = Vec::new();
    for f in &model {
        if f.number != GRAPH {
            rest.extend_from_slice(b.get(f.start..f.payload.end)?);
            continue;
        }
        if f.wire != 2 {
            return None;
        }
        let gb = b.get(f.payload.clone())?;
        let mut graph = Vec::new();
        for gf in fields(gb)? {
            if gf.number != INITIALIZER {
                graph.extend_from_slice(gb.get(gf.start..gf.payload.end)?);
                continue;
            }
            if gf.wire != 2 {
                return None;
            }
            let tb = gb.get(gf.payload.clone())?;
            let mut tensor = Vec::new();
            let mut data = None;
            for tf in fields(tb)? {
                if tf.number == RAW_DATA {
                    if data.is_some() || tf.wire != 2 {
                        return None;
                    }
                    let base = f.payload.start + gf.payload.start;
                    data = Some(base + tf.payload.start..base + tf.payload.end);
                } else {
                    tensor.extend_from_slice(tb.get(tf.start..tf.payload.end)?);
                }
            }
            push_len_field(&mut graph, gb, &gf, &tensor);
            raw.push(data);
        }
        push_len_field(&mut rest, b, f, &graph);
    }
    Some(Split { rest, raw })
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

    #[test]
    fn split_cuts_raw_data() {
        // model { ir_version: 1, graph { initializer { name: "a", raw_data: [9, 9] } } }
        let tensor = [0x42, 0x01, b'a', 0x4a, 0x02, 9, 9];
        let mut graph = vec![0x2a, tensor.len() as u8];
        graph.extend_from_slice(&tensor);
        let mut model = vec![0x08, 0x01, 0x3a, graph.len() as u8];
        model.extend_from_slice(&graph);
        let split = split_weights(&model).unwrap();
        assert_eq!(
            split.rest,
            vec![0x08, 0x01, 0x3a, 0x05, 0x2a, 0x03, 0x42, 0x01, b'a']
        );
        let r = split.raw[0].clone().unwrap();
        assert_eq!(&model[r], &[9, 9]);
        // Two raw_data fields in one tensor: left to the parser.
        let mut twice = tensor.to_vec();
        twice.extend_from_slice(&[0x4a, 0x00]);
        let mut graph = vec![0x2a, twice.len() as u8];
        graph.extend_from_slice(&twice);
        let mut model = vec![0x3a, graph.len() as u8];
        model.extend_from_slice(&graph);
        assert!(split_weights(&model).is_none());
        assert!(split_weights(&[0x08, 0x01]).is_none(), "no graph");
    }
}
