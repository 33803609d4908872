//! The protobuf messages of the IR wire format, derived with `prost` (no `.proto` file,
//! no `protoc`). Value references are indices into [`GraphMsg::values`]; in node slots
//! an index is stored plus one so that 0 marks an empty slot.

/// A whole graph.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GraphMsg {
    /// Graph name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Graph doc string.
    #[prost(string, tag = "2")]
    pub doc_string: String,
    /// Model-level metadata.
    #[prost(message, optional, tag = "3")]
    pub meta: Option<MetaMsg>,
    /// The value table, in value-id order.
    #[prost(message, repeated, tag = "4")]
    pub values: Vec<ValueMsg>,
    /// The nodes, in insertion order.
    #[prost(message, repeated, tag = "5")]
    pub nodes: Vec<NodeMsg>,
    /// Graph inputs (value indices).
    #[prost(uint32, repeated, tag = "6")]
    pub inputs: Vec<u32>,
    /// Graph outputs (value indices).
    #[prost(uint32, repeated, tag = "7")]
    pub outputs: Vec<u32>,
    /// Arrays shared by [`SharedMsg`] weights, each stored once, by name.
    #[prost(message, repeated, tag = "8")]
    pub shared_arrays: Vec<NamedTensorMsg>,
}

/// [`crate::ModelMeta`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetaMsg {
    /// ONNX IR version.
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    /// Opset imports.
    #[prost(message, repeated, tag = "2")]
    pub opsets: Vec<OpsetMsg>,
    /// Producer name.
    #[prost(string, tag = "3")]
    pub producer_name: String,
    /// Producer version.
    #[prost(string, tag = "4")]
    pub producer_version: String,
    /// Serialized ModelProto fields not modelled.
    #[prost(bytes = "vec", tag = "5")]
    pub model_extra: Vec<u8>,
    /// Serialized GraphProto fields not modelled.
    #[prost(bytes = "vec", tag = "6")]
    pub graph_extra: Vec<u8>,
}

/// One opset import.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OpsetMsg {
    /// Domain.
    #[prost(string, tag = "1")]
    pub domain: String,
    /// Version.
    #[prost(int64, tag = "2")]
    pub version: i64,
}

/// A `(key, value)` annotation.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValueMsg {
    /// Key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// An entry of the value table.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueMsg {
    /// Unique name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Type, when known.
    #[prost(message, optional, tag = "2")]
    pub ty: Option<TypeMsg>,
    /// Constant data.
    #[prost(message, optional, tag = "3")]
    pub data: Option<TensorMsg>,
    /// Compressed weight.
    #[prost(message, optional, tag = "4")]
    pub compressed: Option<CompressedMsg>,
    /// Sparsity annotation.
    #[prost(message, optional, tag = "5")]
    pub sparsity: Option<SparsityMsg>,
    /// Free-form annotations, sorted by key.
    #[prost(message, repeated, tag = "6")]
    pub annotations: Vec<KeyValueMsg>,
}

/// A value type: a tensor type, or an opaque ONNX `TypeProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeMsg {
    /// True for [`crate::types::ValueType::Opaque`].
    #[prost(bool, tag = "1")]
    pub opaque: bool,
    /// ONNX element type number; 0 = undefined.
    #[prost(int32, tag = "2")]
    pub elem: i32,
    /// True when the rank is known (`dims` then holds every dimension).
    #[prost(bool, tag = "3")]
    pub has_shape: bool,
    /// Dimensions.
    #[prost(message, repeated, tag = "4")]
    pub dims: Vec<DimMsg>,
    /// Serialized `TypeProto` of an opaque type.
    #[prost(bytes = "vec", tag = "5")]
    pub opaque_bytes: Vec<u8>,
    /// Summary of an opaque type.
    #[prost(string, tag = "6")]
    pub opaque_summary: String,
}

/// One dimension.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DimMsg {
    /// 0 known, 1 symbolic, 2 unknown.
    #[prost(uint32, tag = "1")]
    pub kind: u32,
    /// Known size.
    #[prost(int64, tag = "2")]
    pub size: i64,
    /// Symbol name.
    #[prost(string, tag = "3")]
    pub sym: String,
}

/// A constant tensor.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorMsg {
    /// ONNX element type number.
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    /// Shape.
    #[prost(uint64, repeated, tag = "2")]
    pub shape: Vec<u64>,
    /// Little-endian raw data (all types but strings).
    #[prost(bytes = "vec", tag = "3")]
    pub raw: Vec<u8>,
    /// One byte string per element (string tensors).
    #[prost(bytes = "vec", repeated, tag = "4")]
    pub strings: Vec<Vec<u8>>,
}

/// A named tensor.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedTensorMsg {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Tensor.
    #[prost(message, optional, tag = "2")]
    pub tensor: Option<TensorMsg>,
}

/// A compressed weight: exactly one of the fields is set.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CompressedMsg {
    /// Quantized.
    #[prost(message, optional, tag = "1")]
    pub quantized: Option<QuantizedMsg>,
    /// Codebook.
    #[prost(message, optional, tag = "2")]
    pub codebook: Option<CodebookMsg>,
    /// Shared.
    #[prost(message, optional, tag = "3")]
    pub shared: Option<SharedMsg>,
}

/// [`crate::QuantizedWeight`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct QuantizedMsg {
    /// Codes.
    #[prost(message, optional, tag = "1")]
    pub q: Option<TensorMsg>,
    /// Scales.
    #[prost(message, optional, tag = "2")]
    pub scale: Option<TensorMsg>,
    /// Zero points.
    #[prost(message, optional, tag = "3")]
    pub zero_point: Option<TensorMsg>,
    /// Axis.
    #[prost(uint64, tag = "4")]
    pub axis: u64,
    /// Block size.
    #[prost(uint64, optional, tag = "5")]
    pub block_size: Option<u64>,
    /// 0 DequantizeLinear, 1 MatMulNBits.
    #[prost(uint32, tag = "6")]
    pub format: u32,
}

/// [`crate::CodebookWeight`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct CodebookMsg {
    /// Indices.
    #[prost(message, optional, tag = "1")]
    pub indices: Option<TensorMsg>,
    /// Centroids.
    #[prost(message, optional, tag = "2")]
    pub centroids: Option<TensorMsg>,
    /// Channel axis.
    #[prost(uint64, optional, tag = "3")]
    pub axis: Option<u64>,
}

/// [`crate::SharedWeight`]; its array is in [`GraphMsg::shared_arrays`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct SharedMsg {
    /// Name of the shared array.
    #[prost(string, tag = "1")]
    pub array_name: String,
    /// Logical shape.
    #[prost(uint64, repeated, tag = "2")]
    pub shape: Vec<u64>,
    /// First global position.
    #[prost(uint64, tag = "3")]
    pub offset: u64,
    /// Scale.
    #[prost(float, tag = "4")]
    pub scale: f32,
    /// Chunk length.
    #[prost(uint64, tag = "5")]
    pub chunk: u64,
    /// Chunk slots.
    #[prost(uint64, tag = "6")]
    pub chunks: u64,
    /// Fold hash coefficients (4).
    #[prost(uint64, repeated, tag = "7")]
    pub perm: Vec<u64>,
    /// Sign hash coefficients (3).
    #[prost(uint64, repeated, tag = "8")]
    pub sign: Vec<u64>,
}

/// [`crate::Sparsity`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct SparsityMsg {
    /// 0 unstructured, 1 N:M.
    #[prost(uint32, tag = "1")]
    pub pattern: u32,
    /// Unstructured ratio.
    #[prost(double, tag = "2")]
    pub ratio: f64,
    /// N.
    #[prost(uint64, tag = "3")]
    pub n: u64,
    /// M.
    #[prost(uint64, tag = "4")]
    pub m: u64,
    /// First reduction axis.
    #[prost(uint64, tag = "5")]
    pub axis_lo: u64,
    /// End of the reduction axes.
    #[prost(uint64, tag = "6")]
    pub axis_hi: u64,
    /// Zero elements.
    #[prost(uint64, tag = "7")]
    pub zeros: u64,
    /// Elements.
    #[prost(uint64, tag = "8")]
    pub len: u64,
    /// 0 dense, 1 sparse initializer.
    #[prost(uint32, tag = "9")]
    pub encoding: u32,
}

/// An attribute (see [`crate::AttrValue`] for the kinds).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttrMsg {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// 1 int, 2 float, 3 string, 4 tensor, 5 ints, 6 floats, 7 strings, 8 tensors,
    /// 9 encoded.
    #[prost(uint32, tag = "2")]
    pub kind: u32,
    /// Int.
    #[prost(int64, tag = "3")]
    pub i: i64,
    /// Float.
    #[prost(float, tag = "4")]
    pub f: f32,
    /// String, or the serialized `AttributeProto` of an encoded attribute.
    #[prost(bytes = "vec", tag = "5")]
    pub s: Vec<u8>,
    /// Tensor.
    #[prost(message, optional, tag = "6")]
    pub t: Option<TensorMsg>,
    /// Ints.
    #[prost(int64, repeated, tag = "7")]
    pub ints: Vec<i64>,
    /// Floats.
    #[prost(float, repeated, tag = "8")]
    pub floats: Vec<f32>,
    /// Strings.
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub strings: Vec<Vec<u8>>,
    /// Tensors.
    #[prost(message, repeated, tag = "10")]
    pub tensors: Vec<TensorMsg>,
    /// Summary of an encoded attribute.
    #[prost(string, tag = "11")]
    pub summary: String,
}

/// A node.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeMsg {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Doc string.
    #[prost(string, tag = "2")]
    pub doc_string: String,
    /// ONNX domain.
    #[prost(string, tag = "3")]
    pub domain: String,
    /// ONNX op type.
    #[prost(string, tag = "4")]
    pub op_type: String,
    /// True when the IR held a typed op (rebuilt from the attributes on decode).
    #[prost(bool, tag = "5")]
    pub typed: bool,
    /// Attributes.
    #[prost(message, repeated, tag = "6")]
    pub attributes: Vec<AttrMsg>,
    /// Input slots: value index + 1, 0 = empty.
    #[prost(uint32, repeated, tag = "7")]
    pub inputs: Vec<u32>,
    /// Output slots: value index + 1, 0 = empty.
    #[prost(uint32, repeated, tag = "8")]
    pub outputs: Vec<u32>,
    /// Implicit (outer-scope) inputs: value indices.
    #[prost(uint32, repeated, tag = "9")]
    pub implicit_inputs: Vec<u32>,
    /// Serialized NodeProto fields not modelled.
    #[prost(bytes = "vec", tag = "10")]
    pub extra: Vec<u8>,
}
