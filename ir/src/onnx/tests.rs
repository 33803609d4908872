//! Import/export tests on small hand-built models.

use super::*;
use crate::attr::AttrValue;
use crate::dtype::DType;
use crate::op::Op;
use crate::printer::print_graph;
use crate::types::ValueType;
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, SparseTensorProto,
    StringStringEntryProto, TypeProto, ValueInfoProto,
};

fn vi(name: &str, elem: Option<DType>, dims: &[i64]) -> ValueInfoProto {
    let mut v = ValueInfoProto::new();
    v.name = name.to_string();
    if let Some(e) = elem {
        let shape = Some(dims.iter().map(|&d| crate::types::Dim::Known(d)).collect());
        v.type_ = Some(type_to_proto(&ValueType::tensor(e, shape)).unwrap()).into();
    }
    v
}

fn node(op: &str, name: &str, ins: &[&str], outs: &[&str]) -> NodeProto {
    let mut n = NodeProto::new();
    n.op_type = op.to_string();
    n.name = name.to_string();
    n.input = ins.iter().map(|s| s.to_string()).collect();
    n.output = outs.iter().map(|s| s.to_string()).collect();
    n
}

fn model(graph: GraphProto, ir: i64, opset: i64) -> ModelProto {
    let mut m = ModelProto::new();
    m.ir_version = ir;
    let mut o = OperatorSetIdProto::new();
    o.version = opset;
    m.opset_import.push(o);
    m.graph = Some(graph).into();
    m
}

/// x -> Relu -> y -> Add(y, w) -> z, w an initializer.
fn small_graph() -> GraphProto {
    let mut g = GraphProto::new();
    g.name = "small".into();
    g.input.push(vi("x", Some(DType::F32), &[2]));
    g.output.push(vi("z", Some(DType::F32), &[2]));
    g.initializer.push(tensor_to_proto(
        "w",
        &Tensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap(),
    ));
    // Consumer first: file order must not matter.
    g.node.push(node("Add", "add", &["y", "w"], &["z"]));
    g.node.push(node("Relu", "relu", &["x"], &["y"]));
    g.value_info.push(vi("y", Some(DType::F32), &[2]));
    g
}

fn import(m: &ModelProto) -> Result<Graph> {
    load_model_bytes(&m.write_to_bytes().unwrap(), None)
}

fn err(m: &ModelProto) -> String {
    let e = import(m).unwrap_err().to_string();
    assert!(!e.contains('\n'), "one line: {e}");
    e
}

#[test]
fn imports_and_round_trips() {
    let g = import(&model(small_graph(), 8, 17)).unwrap();
    assert_eq!(g.node_count(), 2);
    let y = g.value_by_name("y").unwrap();
    assert_eq!(g.value(y).ty.as_ref().unwrap().to_string(), "f32[2]");
    let w = g.value_by_name("w").unwrap();
    assert_eq!(g.const_data(w).unwrap().to_f32().unwrap(), vec![1.0, 2.0]);
    let bytes = model_to_bytes(&g).unwrap();
    assert_eq!(bytes, model_to_bytes(&g).unwrap(), "deterministic");
    let again = load_model_bytes(&bytes, None).unwrap();
    assert_eq!(print_graph(&g), print_graph(&again));
    // The streamed bytes are a valid ModelProto with the weight inline.
    let m = ModelProto::parse_from_bytes(&bytes).unwrap();
    let gp = m.graph.as_ref().unwrap();
    assert_eq!(gp.initializer.len(), 1);
    assert_eq!(gp.initializer[0].raw_data.len(), 8);
    assert_eq!(gp.node[0].op_type, "Relu", "nodes in topological order");
    assert_eq!(gp.value_info.len(), 1);
    let mut w = Vec::new();
    write_model(&g, &mut w).unwrap();
    assert_eq!(w, bytes);
}

#[test]
fn not_onnx_and_truncated_files_fail() {
    let e = load_model_bytes(b"hello, this is plain text\n", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not an ONNX model"), "{e}");
    let e = load_model_bytes(&[0xff, 0xff, 0xff, 0x01, 0x02], None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not an ONNX model"), "{e}");
    let bytes = model(small_graph(), 8, 17).write_to_bytes().unwrap();
    let e = load_model_bytes(&bytes[..bytes.len() / 2], None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not an ONNX model"), "{e}");
    assert!(err(&ModelProto::new()).contains("no graph"));
    let e = err(&model(small_graph(), 0, 17));
    assert!(e.contains("ir_version"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.onnx");
    std::fs::write(&p, b"garbage").unwrap();
    let e = load_model(&p).unwrap_err().to_string();
    assert!(
        e.contains("bad.onnx") && e.contains("not an ONNX model"),
        "{e}"
    );
    assert!(load_model(&dir.path().join("missing.onnx")).is_err());
}

#[test]
fn graph_errors_are_clear() {
    let mut g = small_graph();
    g.node.push(node("Conv", "name", &["foo"], &["q"]));
    assert_eq!(
        err(&model(g, 8, 17)),
        "node \"name\" (Conv): input \"foo\" is not defined"
    );
    let mut g = small_graph();
    g.output.push(vi("nope", None, &[]));
    assert_eq!(
        err(&model(g, 8, 17)),
        "graph output \"nope\" is not defined"
    );
    let mut g = small_graph();
    g.node.push(node("Neg", "n2", &["x"], &["y"]));
    let e = err(&model(g, 8, 17));
    assert!(e.contains("\"y\"") && e.contains("two producers"), "{e}");
    let mut g = small_graph();
    g.node.push(node("Neg", "a", &["c"], &["b"]));
    g.node.push(node("Neg", "c_node", &["b"], &["c"]));
    let e = err(&model(g, 8, 17));
    assert!(e.contains("cycle"), "{e}");
    let mut g = small_graph();
    let mut s = SparseTensorProto::new();
    s.values = Some(tensor_to_proto("sp", &Tensor::scalar_f32(1.0))).into();
    g.sparse_initializer.push(s);
    // A sparse initializer without indices is malformed (well-formed ones become dense
    // constants, see `onnx::sparse`).
    let e = import(&model(g, 8, 17)).unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e}");
    assert!(e.to_string().contains("sparse initializer \"sp\""), "{e}");
    let mut g = small_graph();
    let mut bad = tensor_to_proto("w2", &Tensor::scalar_f32(1.0));
    bad.raw_data.pop();
    g.initializer.push(bad);
    let e = err(&model(g, 8, 17));
    assert!(e.contains("tensor \"w2\""), "{e}");
}

#[test]
fn constant_nodes_become_constants() {
    let mut g = GraphProto::new();
    g.input.push(vi("x", Some(DType::F32), &[2]));
    let attr = |n: &mut NodeProto, a: AttributeProto| n.attribute.push(a);
    let mut c1 = node("Constant", "c1", &[], &["k"]);
    let mut a = AttributeProto::new();
    a.name = "value_floats".into();
    a.type_ = AttributeType::FLOATS.into();
    a.floats = vec![3.0, 4.0];
    attr(&mut c1, a);
    let mut c2 = node("Constant", "c2", &[], &["i"]);
    let mut a = AttributeProto::new();
    a.name = "value_int".into();
    a.type_ = AttributeType::INT.into();
    a.i = 5;
    attr(&mut c2, a);
    let mut c3 = node("Constant", "c3", &[], &["sp"]);
    let mut a = AttributeProto::new();
    a.name = "sparse_value".into();
    a.type_ = AttributeType::SPARSE_TENSOR.into();
    a.sparse_tensor = Some(SparseTensorProto::new()).into();
    attr(&mut c3, a);
    g.node.extend([c1, c2, c3]);
    g.node.push(node("Add", "add", &["x", "k"], &["y"]));
    g.output.push(vi("y", Some(DType::F32), &[2]));
    g.output.push(vi("i", None, &[]));
    g.output.push(vi("sp", None, &[]));
    let ir = import(&model(g, 7, 9)).unwrap();
    let k = ir.value_by_name("k").unwrap();
    assert_eq!(ir.const_data(k).unwrap().to_f32().unwrap(), vec![3.0, 4.0]);
    let i = ir.value_by_name("i").unwrap();
    assert_eq!(ir.const_data(i).unwrap().to_i64().unwrap(), vec![5]);
    assert!(ir.const_data(i).unwrap().shape().is_empty());
    let sp = ir.value_by_name("sp").unwrap();
    let (p, _) = ir.value(sp).producer().unwrap();
    assert_eq!(ir.node(p).op.onnx_type(), ("", "Constant"));
    // A constant graph output is exported as a Constant node, the others as initializers.
    let bytes = model_to_bytes(&ir).unwrap();
    let m = ModelProto::parse_from_bytes(&bytes).unwrap();
    let gp = m.graph.as_ref().unwrap();
    assert_eq!(gp.initializer.len(), 1);
    assert_eq!(gp.initializer[0].name, "k");
    let consts: Vec<&str> = gp
        .node
        .iter()
        .filter(|n| n.op_type == "Constant")
        .map(|n| n.output[0].as_str())
        .collect();
    assert_eq!(consts, vec!["i", "sp"]);
    let again = load_model_bytes(&bytes, None).unwrap();
    assert_eq!(print_graph(&ir), print_graph(&again));
}

#[test]
fn old_models_list_initializers_as_inputs() {
    let mut g = small_graph();
    g.input.push(vi("w", Some(DType::F32), &[2]));
    let ir = import(&model(g, 3, 7)).unwrap();
    let w = ir.value_by_name("w").unwrap();
    assert!(ir.is_input(w) && ir.const_data(w).is_some());
    let m = ModelProto::parse_from_bytes(&model_to_bytes(&ir).unwrap()).unwrap();
    let gp = m.graph.as_ref().unwrap();
    assert!(gp.input.iter().any(|v| v.name == "w"));
    assert!(gp.initializer.iter().any(|t| t.name == "w"));
    assert_eq!(m.ir_version, 3);
}

#[test]
fn if_bodies_record_implicit_inputs() {
    let mut then_g = GraphProto::new();
    then_g.node.push(node("Add", "inner", &["x", "w"], &["t"]));
    then_g.output.push(vi("t", None, &[]));
    let mut else_g = GraphProto::new();
    else_g.output.push(vi("x", None, &[]));
    let mut g = small_graph();
    g.input.push(vi("cond", Some(DType::Bool), &[]));
    let mut n = node("If", "if", &["cond"], &["out"]);
    for (name, body) in [("then_branch", then_g), ("else_branch", else_g)] {
        let mut a = AttributeProto::new();
        a.name = name.into();
        a.type_ = AttributeType::GRAPH.into();
        a.g = Some(body).into();
        n.attribute.push(a);
    }
    g.node.push(n);
    g.output.push(vi("out", None, &[]));
    let ir = import(&model(g, 8, 17)).unwrap();
    let id = ir
        .node_ids()
        .into_iter()
        .find(|&id| ir.node(id).name == "if")
        .unwrap();
    let names: Vec<&str> = ir
        .node(id)
        .implicit_inputs()
        .iter()
        .map(|&v| ir.value(v).name())
        .collect();
    assert_eq!(names, vec!["x", "w"]);
    match &ir.node(id).op {
        Op::Other(o) => assert!(matches!(o.attributes[0].value, AttrValue::Encoded(_))),
        op => panic!("If should stay Other: {op:?}"),
    }
    let again = load_model_bytes(&model_to_bytes(&ir).unwrap(), None).unwrap();
    assert_eq!(print_graph(&ir), print_graph(&again));
    assert!(print_graph(&ir).contains("outer[%w, %x]"));
}

#[test]
fn unmodelled_fields_survive() {
    let mut g = small_graph();
    let mut meta = StringStringEntryProto::new();
    meta.key = "k".into();
    meta.value = "v".into();
    g.metadata_props.push(meta.clone());
    g.node[0].doc_string = "doc".into();
    g.node[0].metadata_props.push(meta.clone());
    g.node[0].overload = "ov".into();
    let mut seq = onnx_protobuf::type_proto::Sequence::new();
    seq.elem_type = Some(type_to_proto(&ValueType::tensor(DType::F32, None)).unwrap()).into();
    let mut tp = TypeProto::new();
    tp.value = Some(onnx_protobuf::type_proto::Value::SequenceType(seq));
    let mut sv = ValueInfoProto::new();
    sv.name = "s".into();
    sv.type_ = Some(tp.clone()).into();
    g.input.push(sv);
    let mut m = model(g, 9, 17);
    m.metadata_props.push(meta);
    m.doc_string = "model doc".into();
    m.model_version = 7;
    m.functions.push(onnx_protobuf::FunctionProto::new());
    m.producer_name = "p".into();
    let ir = import(&m).unwrap();
    let add = ir
        .node_ids()
        .into_iter()
        .find(|&id| ir.node(id).name == "add")
        .unwrap();
    assert_eq!(ir.node(add).doc_string, "doc");
    assert!(!ir.node(add).extra.is_empty());
    let s = ir.value_by_name("s").unwrap();
    assert_eq!(
        ir.value(s).ty.as_ref().unwrap().to_string(),
        "seq(tensor(f32))"
    );
    let back = ModelProto::parse_from_bytes(&model_to_bytes(&ir).unwrap()).unwrap();
    assert_eq!(back.metadata_props, m.metadata_props);
    assert_eq!(back.doc_string, "model doc");
    assert_eq!(back.model_version, 7);
    assert_eq!(back.functions.len(), 1);
    assert_eq!(back.producer_name, "p");
    let bg = back.graph.as_ref().unwrap();
    assert_eq!(bg.metadata_props.len(), 1);
    let n = bg.node.iter().find(|n| n.name == "add").unwrap();
    assert_eq!((n.doc_string.as_str(), n.overload.as_str()), ("doc", "ov"));
    assert_eq!(n.metadata_props.len(), 1);
    assert_eq!(bg.input[1].type_.as_ref().unwrap(), &tp);
}

#[test]
fn unknown_ops_and_old_opsets_stay_other() {
    let mut g = small_graph();
    let mut n = node("MyOp", "custom", &["x"], &["c"]);
    n.domain = "com.example".into();
    let mut a = AttributeProto::new();
    a.name = "f".into();
    a.type_ = AttributeType::FLOAT.into();
    a.f = 0.25;
    n.attribute.push(a);
    g.node.push(n);
    g.output.push(vi("c", None, &[]));
    let ir = import(&model(g.clone(), 8, 7)).unwrap();
    for id in ir.node_ids() {
        assert!(ir.node(id).op.is_other(), "opset 7 is not typed");
    }
    let ir = import(&model(g, 8, 17)).unwrap();
    let relu = ir
        .node_ids()
        .into_iter()
        .find(|&id| ir.node(id).name == "relu")
        .unwrap();
    assert!(!ir.node(relu).op.is_other());
    let custom = ir
        .node_ids()
        .into_iter()
        .find(|&id| ir.node(id).name == "custom")
        .unwrap();
    assert_eq!(ir.node(custom).op.onnx_type(), ("com.example", "MyOp"));
    let again = load_model_bytes(&model_to_bytes(&ir).unwrap(), None).unwrap();
    assert_eq!(print_graph(&ir), print_graph(&again));
}

#[test]
fn external_data_write_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let ir = import(&model(small_graph(), 8, 17)).unwrap();
    let path = dir.path().join("m.onnx");
    let opts = ExportOptions {
        external_data_threshold: 4,
    };
    save_model_with(&ir, &path, &opts).unwrap();
    let data = dir.path().join("m.onnx.data");
    assert_eq!(std::fs::metadata(&data).unwrap().len(), 8);
    let m = ModelProto::parse_from_bytes(&std::fs::read(&path).unwrap()).unwrap();
    let t = &m.graph.as_ref().unwrap().initializer[0];
    assert!(t.raw_data.is_empty());
    let keys: Vec<(&str, &str)> = t
        .external_data
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_str()))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("location", "m.onnx.data"),
            ("offset", "0"),
            ("length", "8")
        ]
    );
    let back = load_model(&path).unwrap();
    assert_eq!(print_graph(&ir), print_graph(&back));
    // Without a folder, external data cannot be resolved.
    let e = load_model_bytes(&std::fs::read(&path).unwrap(), None).unwrap_err();
    assert!(e.to_string().contains("tensor \"w\""), "{e}");
    // Inline save below the threshold.
    let inline = dir.path().join("i.onnx");
    save_model(&ir, &inline).unwrap();
    assert!(!dir.path().join("i.onnx.data").exists());
    assert_eq!(
        std::fs::read(&inline).unwrap(),
        model_to_bytes(&ir).unwrap()
    );
}

#[test]
fn failed_save_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ir = import(&model(small_graph(), 8, 17)).unwrap();
    let path = dir.path().join("missing_dir").join("m.onnx");
    assert!(save_model(&ir, &path).is_err());
    assert!(!path.exists());
    // A graph that cannot be exported (a cycle) leaves no file either.
    let mut cyclic = Graph::new("c");
    let x = cyclic.add_value("x", None).unwrap();
    let y = cyclic.add_value("y", None).unwrap();
    cyclic
        .add_node("n", Op::Identity, vec![Some(y)], vec![Some(x)])
        .unwrap();
    cyclic
        .add_node("m", Op::Identity, vec![Some(x)], vec![Some(y)])
        .unwrap();
    let out = dir.path().join("c.onnx");
    assert!(save_model(&cyclic, &out).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn tensor_files_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("input_0.pb");
    let t = Tensor::from_i64(vec![2, 1], vec![7, -8]).unwrap();
    write_tensor_file(&p, "input", &t).unwrap();
    let (name, back) = read_tensor_file(&p).unwrap();
    assert_eq!((name.as_str(), back), ("input", t.clone()));
    let proto = TensorProto::parse_from_bytes(&std::fs::read(&p).unwrap()).unwrap();
    assert_eq!(proto, tensor_to_proto("input", &t));
    let s = Tensor::from_strings(vec![1], vec![b"abc".to_vec()]).unwrap();
    write_tensor_file(&p, "s", &s).unwrap();
    assert_eq!(read_tensor_file(&p).unwrap().1, s);
    std::fs::write(&p, [0xffu8, 0xff]).unwrap();
    let e = read_tensor_file(&p).unwrap_err().to_string();
    assert!(e.contains("input_0.pb"), "{e}");
}

#[test]
fn empty_graph_gets_default_meta() {
    let mut g = Graph::new("empty");
    let x = g
        .add_value("x", Some(ValueType::tensor(DType::F32, None)))
        .unwrap();
    g.set_inputs(vec![x]);
    g.set_outputs(vec![x]);
    let m = ModelProto::parse_from_bytes(&model_to_bytes(&g).unwrap()).unwrap();
    assert_eq!(m.ir_version, 8);
    assert_eq!(m.opset_import[0].version, 17);
    assert_eq!(m.graph.as_ref().unwrap().name, "empty");
}

#[test]
fn damaged_files_never_panic() {
    let bytes = model_to_bytes(&import(&model(small_graph(), 8, 17)).unwrap()).unwrap();
    for len in 0..bytes.len() {
        assert!(
            load_model_bytes(&bytes[..len], None).is_err(),
            "prefix {len}"
        );
    }
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..3000 {
        let mut b = bytes.clone();
        for _ in 0..3 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let i = (state % b.len() as u64) as usize;
            b[i] = (state >> 32) as u8;
        }
        let shared = super::import::import_shared(&bytes::Bytes::from(b.clone()), None);
        match load_model_bytes(&b, None) {
            Ok(g) => {
                // Whatever imports must export and re-import, the same both ways.
                assert_eq!(print_graph(&g), print_graph(&shared.unwrap()));
                let again = model_to_bytes(&g).unwrap();
                load_model_bytes(&again, None).unwrap();
            }
            Err(e) => assert_eq!(e.to_string(), shared.unwrap_err().to_string()),
        }
    }
}

#[test]
fn huge_shapes_are_rejected() {
    let mut g = small_graph();
    let mut t = tensor_to_proto("big", &Tensor::scalar_f32(1.0));
    t.dims = vec![1 << 40, 1 << 20];
    g.initializer.push(t);
    let e = err(&model(g, 8, 17));
    assert!(e.contains("tensor \"big\""), "{e}");
    let mut g = small_graph();
    g.node.push(node("", "empty", &["x"], &["e"]));
    assert!(err(&model(g, 8, 17)).contains("op_type is empty"));
}

#[test]
fn mapped_import_slices_weights() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = small_graph();
    // A typed-field initializer and an empty one beside the raw one.
    let mut typed = TensorProto::new();
    typed.name = "typed".into();
    typed.data_type = DType::I64.to_onnx();
    typed.dims = vec![2];
    typed.int64_data = vec![5, 6];
    g.initializer.push(typed);
    g.initializer.push(tensor_to_proto(
        "none",
        &Tensor::from_f32(vec![0], vec![]).unwrap(),
    ));
    g.node
        .push(node("Concat", "cat", &["typed", "none"], &["c"]));
    g.output.push(vi("c", None, &[]));
    let m = model(g, 8, 17);
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, m.write_to_bytes().unwrap()).unwrap();
    let mapped = load_model(&path).unwrap();
    let plain = import(&m).unwrap();
    assert_eq!(print_graph(&mapped), print_graph(&plain));
    let w = mapped.value_by_name("w").unwrap();
    assert_eq!(
        mapped.const_data(w).unwrap().to_f32().unwrap(),
        vec![1.0, 2.0]
    );
    let t = mapped.value_by_name("typed").unwrap();
    assert_eq!(mapped.const_data(t).unwrap().to_i64().unwrap(), vec![5, 6]);
}

#[test]
fn write_file_atomic_replaces_or_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.json");
    write_file_atomic(&p, b"one").unwrap();
    write_file_atomic(&p, b"two").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"two");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "temporary files left: {left:?}");
    let bad = dir.path().join("no/such/folder/r.json");
    let e = write_file_atomic(&bad, b"x").unwrap_err().to_string();
    assert!(e.contains("no/such/folder"), "{e}");
    assert!(!bad.exists());
}
