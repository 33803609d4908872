//! The IR wire format: the whole [`Graph`] (values with types, constants, compressed
//! weights, sparsity and annotations; nodes with their ops, slots and ONNX leftovers) as
//! protobuf, with messages derived by `prost` ([`messages`]). It carries what ONNX cannot
//! (compressed weights, pass annotations); it is what `--emit ir` writes and what
//! crosses the plugin boundary.
//!
//! Typed ops travel as their ONNX form (domain, type, attributes from
//! [`crate::Op::attributes`]) and are rebuilt with [`crate::Op::from_onnx`]; value ids
//! are kept, so `encode(decode(encode(g)))` equals `encode(g)` byte for byte.
//!
//! Framing: the bytes start with the magic `CCIR` and the format version as a
//! little-endian `u32` ([`WIRE_VERSION`]), then the protobuf `GraphMsg`. A reader
//! refuses another version with an error naming both, rather than misreading fields.

pub mod decode;
pub mod encode;
pub mod messages;

use crate::error::{Error, Result};
use crate::graph::Graph;
use prost::Message;

/// The first four bytes of every encoding.
pub const WIRE_MAGIC: [u8; 4] = *b"CCIR";

/// The version of the message layout this build writes and reads. Bump it when a
/// change would make an older reader misread a newer encoding.
pub const WIRE_VERSION: u32 = 1;

/// Length of the framing before the protobuf message.
const HEADER_LEN: usize = 8;

/// The wire bytes of a graph: magic, version, message.
pub fn encode(g: &Graph) -> Vec<u8> {
    let msg = encode::graph_msg(g);
    let mut out = Vec::with_capacity(HEADER_LEN + msg.encoded_len());
    out.extend_from_slice(&WIRE_MAGIC);
    out.extend_from_slice(&WIRE_VERSION.to_le_bytes());
    out.extend(msg.encode_to_vec());
    out
}

/// The graph wire bytes describe; a one-line [`Error::Decode`] on malformed input
/// (missing magic, another version, a bad message, inconsistent contents).
pub fn decode(bytes: &[u8]) -> Result<Graph> {
    let body = check_header(bytes)?;
    let msg = messages::GraphMsg::decode(body)
        .map_err(|e| Error::decode(format!("IR wire: not a graph message: {e}")))?;
    decode::graph_from_msg(msg)
}

/// The message after a valid header.
fn check_header(bytes: &[u8]) -> Result<&[u8]> {
    let (Some(magic), Some(version)) = (bytes.get(..4), bytes.get(4..HEADER_LEN)) else {
        return Err(Error::decode(format!(
            "IR wire: {} bytes is too short for the 8-byte header",
            bytes.len()
        )));
    };
    if magic != WIRE_MAGIC {
        return Err(Error::decode(
            "IR wire: the bytes do not start with the CCIR magic (not IR wire bytes)",
        ));
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(version);
    let version = u32::from_le_bytes(v);
    if version != WIRE_VERSION {
        return Err(Error::decode(format!(
            "IR wire: format version {version}, this build reads version {WIRE_VERSION}"
        )));
    }
    Ok(bytes.get(HEADER_LEN..).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::messages::GraphMsg;
    use super::*;
    use crate::attr::{AttrValue, Attribute, EncodedAttr};
    use crate::compressed::shared::HashParams;
    use crate::compressed::{
        CodebookWeight, Compressed, QuantizedWeight, SharedWeight, WeightFormat,
    };
    use crate::dtype::DType;
    use crate::op::{Op, OtherOp};
    use crate::printer::print_graph;
    use crate::sparsity::{SparseEncoding, Sparsity, SparsityPattern};
    use crate::tensor::Tensor;
    use crate::types::{Dim, OpaqueType, ValueType};
    use bytes::Bytes;

    fn f32s(shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product::<usize>();
        Tensor::from_f32(shape, (0..n).map(|i| i as f32 * 0.5 - 1.0).collect()).unwrap()
    }

    /// A graph with every kind of value, compressed weight and slot the wire carries.
    fn sample() -> Graph {
        let mut g = Graph::new("sample");
        g.doc_string = "doc".into();
        g.meta.ir_version = 10;
        g.meta.opset_imports = vec![("".into(), 21), ("my.domain".into(), 1)];
        g.meta.producer_name = "p".into();
        g.meta.model_extra = vec![1, 2, 3];
        g.meta.graph_extra = vec![4];
        let x = g
            .add_value(
                "x",
                Some(ValueType::Tensor {
                    elem: Some(DType::F32),
                    shape: Some(vec![Dim::Sym("N".into()), Dim::Unknown, Dim::Known(4)]),
                }),
            )
            .unwrap();
        let q = QuantizedWeight {
            q: Tensor::from_i8(vec![4, 3], (0..12).map(|i| i as i8 - 6).collect()).unwrap(),
            scale: f32s(vec![3]),
            zero_point: Some(Tensor::from_i8(vec![3], vec![0, 1, -1]).unwrap()),
            axis: 1,
            block_size: None,
            format: WeightFormat::MatMulNBits,
        };
        let wq = g
            .add_value(
                "wq",
                Some(ValueType::tensor(
                    DType::F32,
                    crate::types::known_shape(&[4, 3]),
                )),
            )
            .unwrap();
        g.value_mut(wq).compressed = Some(Compressed::Quantized(q));
        let q4 = QuantizedWeight {
            q: Tensor::from_raw(
                DType::U4,
                vec![4, 2],
                Bytes::from(vec![0x12, 0x34, 0x56, 0x78]),
            )
            .unwrap(),
            scale: f32s(vec![2, 2]),
            zero_point: None,
            axis: 0,
            block_size: Some(2),
            format: WeightFormat::DequantizeLinear,
        };
        let wq4 = g.add_value("wq4", None).unwrap();
        g.value_mut(wq4).compressed = Some(Compressed::Quantized(q4));
        for (name, axis) in [("cb", None), ("cb_axis", Some(0))] {
            let c = CodebookWeight {
                indices: Tensor::from_u8(vec![2, 3], vec![0, 1, 2, 3, 0, 1]).unwrap(),
                centroids: f32s(if axis.is_some() { vec![2, 4] } else { vec![4] }),
                axis,
            };
            let v = g.add_value(name, None).unwrap();
            g.value_mut(v).compressed = Some(Compressed::Codebook(c));
        }
        let hash = HashParams::new(5, 4, 3).unwrap();
        let array = f32s(vec![hash.slots() as usize]);
        for (name, offset) in [("s1", 0), ("s2", 6)] {
            let s = SharedWeight {
                array: array.clone(),
                array_name: "rps".into(),
                shape: vec![2, 3],
                offset,
                scale: 0.25,
                hash,
            };
            let v = g.add_value(name, None).unwrap();
            g.value_mut(v).compressed = Some(Compressed::Shared(s));
        }
        let dense = g.add_const("dense", f32s(vec![4, 4])).unwrap();
        g.value_mut(dense).sparsity = Some(Sparsity {
            pattern: SparsityPattern::NM {
                n: 2,
                m: 4,
                axes: (0, 1),
            },
            zeros: 8,
            len: 16,
            encoding: SparseEncoding::SparseInitializer,
        });
        g.value_mut(dense).annotate("pass", "sparsify");
        g.value_mut(dense).annotate("a", "first");
        let un = g.add_const("un", f32s(vec![3])).unwrap();
        g.value_mut(un).sparsity = Some(Sparsity {
            pattern: SparsityPattern::Unstructured { ratio: 0.5 },
            zeros: 1,
            len: 3,
            encoding: SparseEncoding::Dense,
        });
        let s = g
            .add_const(
                "strs",
                Tensor::from_strings(vec![2], vec![b"ab".to_vec(), vec![]]).unwrap(),
            )
            .unwrap();
        let opaque = g
            .add_value(
                "seq",
                Some(ValueType::Opaque(OpaqueType {
                    bytes: vec![9, 9],
                    summary: "seq(tensor(f32))".into(),
                })),
            )
            .unwrap();
        let y = g.add_value("y", None).unwrap();
        let z = g.add_value("z", None).unwrap();
        let mm = g
            .add_node("mm", Op::MatMul, vec![Some(x), Some(wq)], vec![Some(y)])
            .unwrap();
        g.node_mut(mm).doc_string = "node doc".into();
        g.node_mut(mm).extra = vec![7, 7];
        let attrs = vec![
            Attribute::int("i", -3),
            Attribute::float("f", 1.5),
            Attribute::string("s", "text"),
            Attribute::new("t", AttrValue::Tensor(f32s(vec![2]))),
            Attribute::ints("is", &[1, 2]),
            Attribute::new("fs", AttrValue::Floats(vec![0.5, -0.5])),
            Attribute::new("ss", AttrValue::Strings(vec![b"a".to_vec()])),
            Attribute::new("ts", AttrValue::Tensors(vec![f32s(vec![1]), f32s(vec![])])),
            Attribute::new(
                "body",
                AttrValue::Encoded(EncodedAttr {
                    bytes: vec![10, 4, 98, 111, 100, 121],
                    summary: "graph(body: 0 nodes)".into(),
                }),
            ),
        ];
        let custom = Op::Other(OtherOp {
            domain: "my.domain".into(),
            op_type: "Custom".into(),
            attributes: attrs,
        });
        let c = g
            .add_node(
                "custom",
                custom,
                vec![Some(y), None, Some(s), Some(opaque)],
                vec![Some(z), None],
            )
            .unwrap();
        g.set_implicit_inputs(c, vec![dense, un]);
        g.set_inputs(vec![x, opaque]);
        g.set_outputs(vec![z]);
        g
    }

    fn msg_of(g: &Graph) -> GraphMsg {
        super::encode::graph_msg(g)
    }

    fn decode_msg(m: &GraphMsg) -> Result<Graph> {
        let mut bytes = WIRE_MAGIC.to_vec();
        bytes.extend_from_slice(&WIRE_VERSION.to_le_bytes());
        bytes.extend(m.encode_to_vec());
        decode(&bytes)
    }

    fn error_of(m: &GraphMsg) -> String {
        let e = decode_msg(m).expect_err("decoding should fail").to_string();
        assert!(!e.contains('\n'), "not one line: {e}");
        e
    }

    #[test]
    fn sample_round_trips() {
        let g = sample();
        let bytes = encode(&g);
        let back = decode(&bytes).unwrap();
        assert_eq!(print_graph(&back), print_graph(&g));
        assert_eq!(encode(&back), bytes);
        assert_eq!(back.meta, g.meta);
        assert_eq!(
            (back.name.as_str(), back.doc_string.as_str()),
            ("sample", "doc")
        );
        for id in g.value_ids() {
            let (a, b) = (g.value(id), back.value(id));
            assert_eq!(a.name(), b.name());
            assert_eq!(a.ty, b.ty, "{}", a.name());
            assert_eq!(a.data, b.data, "{}", a.name());
            assert_eq!(format!("{:?}", a.compressed), format!("{:?}", b.compressed));
            assert_eq!(a.sparsity, b.sparsity, "{}", a.name());
            assert_eq!(a.annotations, b.annotations, "{}", a.name());
            assert_eq!(a.producer(), b.producer(), "{}", a.name());
        }
        assert_eq!(back.inputs(), g.inputs());
        assert_eq!(back.outputs(), g.outputs());
        let (na, nb) = (g.node_ids(), back.node_ids());
        assert_eq!(na.len(), nb.len());
        for (a, b) in na.iter().zip(&nb) {
            let (a, b) = (g.node(*a), back.node(*b));
            assert_eq!(a.name, b.name);
            assert_eq!(a.op, b.op);
            assert_eq!(a.doc_string, b.doc_string);
            assert_eq!(a.extra, b.extra);
            assert_eq!(a.inputs(), b.inputs());
            assert_eq!(a.outputs(), b.outputs());
            assert_eq!(a.implicit_inputs(), b.implicit_inputs());
        }
        // The shared array is stored once and both weights decode to the same bytes.
        assert_eq!(msg_of(&g).shared_arrays.len(), 1);
        let s = |n: &str| match &back.value(back.value_by_name(n).unwrap()).compressed {
            Some(Compressed::Shared(s)) => s.array.clone(),
            _ => panic!("{n} not shared"),
        };
        assert_eq!(s("s1"), s("s2"));
    }

    #[test]
    fn typed_op_is_rebuilt_from_its_attributes() {
        let mut g = Graph::new("t");
        g.meta.opset_imports = vec![("".into(), 13)];
        let x = g.add_value("x", None).unwrap();
        let y = g.add_value("y", None).unwrap();
        let op = Op::from_onnx(
            "",
            "Gemm",
            vec![Attribute::float("alpha", 2.0), Attribute::int("transB", 1)],
            13,
        );
        assert!(!op.is_other());
        g.add_node(
            "gemm",
            op.clone(),
            vec![Some(x), None, Some(x)],
            vec![Some(y)],
        )
        .unwrap();
        let back = decode(&encode(&g)).unwrap();
        let n = back.node(back.node_ids()[0]);
        assert_eq!(n.op, op);
        assert_eq!(n.inputs(), &[Some(x), None, Some(x)]);
    }

    #[test]
    fn header_is_checked_first() {
        let bytes = encode(&sample());
        assert_eq!(&bytes[..4], b"CCIR");
        assert_eq!(&bytes[4..8], &WIRE_VERSION.to_le_bytes());
        let err = |b: &[u8]| decode(b).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(&bytes[..5]).contains("too short for the 8-byte header"));
        let mut other = bytes.clone();
        other[0] = b'X';
        assert!(err(&other).contains("CCIR magic"), "{}", err(&other));
        let mut newer = bytes.clone();
        newer[4..8].copy_from_slice(&(WIRE_VERSION + 1).to_le_bytes());
        assert_eq!(
            err(&newer),
            format!(
                "IR wire: format version {}, this build reads version {WIRE_VERSION}",
                WIRE_VERSION + 1
            )
        );
        assert!(decode(&bytes).is_ok());
    }

    #[test]
    fn out_of_range_indices_are_errors() {
        let g = sample();
        let mut m = msg_of(&g);
        m.nodes[0].inputs[0] = 1000;
        assert!(error_of(&m).contains("node \"mm\": value index 999 out of range"));
        let mut m = msg_of(&g);
        m.nodes[1].implicit_inputs.push(77);
        assert!(error_of(&m).contains("out of range"));
        let mut m = msg_of(&g);
        m.outputs.push(u32::MAX);
        assert!(error_of(&m).contains("graph output"));
        let mut m = msg_of(&g);
        m.inputs.push(m.values.len() as u32);
        assert!(error_of(&m).contains("graph input"));
    }

    #[test]
    fn inconsistent_contents_are_errors() {
        let g = sample();
        let idx = |name: &str| g.value_by_name(name).unwrap().0 as usize;
        // Wrong byte length for the dtype and shape.
        let mut m = msg_of(&g);
        m.values[idx("dense")].data.as_mut().unwrap().raw.pop();
        assert!(error_of(&m).contains("\"dense\""));
        // Undefined dtype.
        let mut m = msg_of(&g);
        m.values[idx("dense")].data.as_mut().unwrap().dtype = 0;
        assert!(error_of(&m).contains("undefined element type"));
        // Two kinds of compressed weight at once.
        let mut m = msg_of(&g);
        let cb = m.values[idx("cb")].compressed.clone().unwrap().codebook;
        m.values[idx("wq")].compressed.as_mut().unwrap().codebook = cb;
        assert!(error_of(&m).contains("exactly one"));
        // A shared weight whose array is missing.
        let mut m = msg_of(&g);
        m.shared_arrays.clear();
        assert!(error_of(&m).contains("unknown shared array"));
        // Broken hash parameters.
        let mut m = msg_of(&g);
        let s = m.values[idx("s1")].compressed.as_mut().unwrap();
        s.shared.as_mut().unwrap().chunks = u64::MAX;
        assert!(error_of(&m).contains("2^31"));
        // Quantization axis beyond the rank.
        let mut m = msg_of(&g);
        let q = m.values[idx("wq")].compressed.as_mut().unwrap();
        q.quantized.as_mut().unwrap().axis = 5;
        assert!(error_of(&m).contains("axis 5"));
        // Duplicate value names.
        let mut m = msg_of(&g);
        m.values[1].name = "x".into();
        assert!(error_of(&m).contains("defined twice"));
        // Two producers of one value.
        let mut m = msg_of(&g);
        m.nodes[1].outputs[0] = m.nodes[0].outputs[0];
        assert!(error_of(&m).contains("already has a producer"));
        // Unknown enum numbers.
        let mut m = msg_of(&g);
        m.nodes[1].attributes[0].kind = 42;
        assert!(error_of(&m).contains("unknown attribute kind 42"));
        let mut m = msg_of(&g);
        m.values[idx("x")].ty.as_mut().unwrap().dims[0].kind = 3;
        assert!(error_of(&m).contains("dimension kind"));
        // A typed op whose attributes it does not model.
        let mut m = msg_of(&g);
        m.nodes[0].attributes.push(super::messages::AttrMsg {
            name: "bogus".into(),
            kind: 1,
            ..Default::default()
        });
        assert!(error_of(&m).contains("does not build"));
    }

    #[test]
    fn random_and_truncated_bytes_never_panic() {
        let bytes = encode(&sample());
        let mut errors = 0;
        for len in 0..bytes.len() {
            if decode(&bytes[..len]).is_err() {
                errors += 1;
            }
        }
        assert!(
            errors > bytes.len() / 2,
            "only {errors} truncations rejected"
        );
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..2000 {
            let mut b = bytes.clone();
            if round % 2 == 0 {
                // Flip a few bytes of a valid encoding.
                for _ in 0..4 {
                    let i = next() as usize % b.len();
                    b[i] = next() as u8;
                }
            } else {
                b = (0..next() % 256).map(|_| next() as u8).collect();
            }
            if let Err(e) = decode(&b) {
                assert!(!e.to_string().contains('\n'));
            }
        }
        assert!(decode(b"\xff\xff\xff").is_err());
    }
}
