//! Assembling `PREFIX.c`: the runtime, the blob and arena globals, `init` (blob read and
//! checked, compressed-weight descriptors filled), `free` and `run` (one block per node,
//! then the outputs copied out).

use super::api::Port;
use super::emit::{self, comment_text, Cx};
use super::plan::{self, Place};
use super::prepare::{elem_type, runtime_inputs, static_shape};
use super::weights::Blob;
use cc_ir::{Compressed, DType, Error, Graph, Result, Tensor, ValueId};
use std::collections::BTreeMap;
use std::fmt::Write;

/// The C runtime every generated source starts with.
pub const RUNTIME: &str = include_str!("runtime.c");

/// What [`generate`] produces.
pub struct Generated {
    /// `PREFIX.c`.
    pub source: String,
    /// `PREFIX.weights.bin`.
    pub blob: Vec<u8>,
    /// The runtime inputs.
    pub inputs: Vec<Port>,
    /// The outputs.
    pub outputs: Vec<Port>,
}

fn port(g: &Graph, v: ValueId) -> Result<Port> {
    let d = elem_type(g, v)?;
    let ctype = emit::ctype(d).map(|(t, _)| t).ok_or_else(|| {
        Error::unsupported(format!(
            "value {}: element type {d:?} is not supported by the C backend",
            g.value(v).name()
        ))
    })?;
    Ok(Port {
        name: g.value(v).name().to_string(),
        ctype,
        shape: static_shape(g, v)?,
    })
}

/// Little-endian bytes of a constant as the generated code reads it (bool as bytes).
fn tensor_bytes(t: &Tensor, name: &str) -> Result<Vec<u8>> {
    if t.dtype() == DType::Bool {
        return Ok(t.to_bool()?.into_iter().map(u8::from).collect());
    }
    if emit::ctype(t.dtype()).is_none() {
        return Err(Error::unsupported(format!(
            "constant {name}: element type {:?} is not supported by the C backend",
            t.dtype()
        )));
    }
    Ok(t.raw()?.to_vec())
}

/// The `init` statements filling descriptor `i` for the compressed weight `c`.
fn weight_init(i: usize, name: &str, c: &Compressed, blob: &mut Blob) -> Result<String> {
    let mut s = String::new();
    let axis_dims = |shape: &[usize], axis: usize| -> (usize, usize) {
        (
            shape.get(axis).copied().unwrap_or(1),
            shape.iter().skip(axis + 1).product(),
        )
    };
    let (kind, codes, scale, zp, dim, inner, block) = match c {
        Compressed::Quantized(q) => {
            let kind = match q.q.dtype() {
                DType::I8 => "CC_I8",
                DType::U8 => "CC_U8",
                DType::I4 => "CC_I4",
                DType::U4 => "CC_U4",
                d => {
                    return Err(Error::unsupported(format!(
                        "weight {name}: {d:?} codes are not supported by the C backend"
                    )))
                }
            };
            let (dim, inner) = axis_dims(q.q.shape(), q.axis);
            let codes = blob.add(q.q.raw()?);
            let scale = blob.add(&tensor_bytes(&q.scale, name)?);
            let zp = match &q.zero_point {
                Some(z) => Some(blob.add(z.raw()?)),
                None => None,
            };
            (
                kind,
                codes,
                scale,
                zp,
                dim,
                inner,
                q.block_size.unwrap_or(0),
            )
        }
        Compressed::Codebook(cb) => {
            cb.check(name)?;
            let kind = match cb.indices.dtype() {
                DType::U8 => "CC_CB8",
                DType::U4 => "CC_CB4",
                d => {
                    return Err(Error::unsupported(format!(
                        "weight {name}: codebook indices of type {d:?} are not supported by the C backend"
                    )))
                }
            };
            let (dim, inner) = match cb.axis {
                Some(a) => axis_dims(cb.indices.shape(), a),
                None => (1, 1),
            };
            let codes = blob.add(cb.indices.raw()?);
            let scale = blob.add(&tensor_bytes(&cb.centroids, name)?);
            (kind, codes, scale, None, dim, inner, cb.table_len())
        }
        Compressed::Shared(_) => {
            return Err(Error::invalid(format!(
                "weight {name}: shared weights are decoded before code generation"
            )))
        }
    };
    let _ = writeln!(s, "    /* {} */", comment_text(name));
    let _ = writeln!(s, "    cc_wt[{i}].kind = {kind};");
    let _ = writeln!(s, "    cc_wt[{i}].f = 0;");
    let _ = writeln!(s, "    cc_wt[{i}].codes = cc_blob + {codes};");
    let _ = writeln!(
        s,
        "    cc_wt[{i}].scale = (const float *)(cc_blob + {scale});"
    );
    match zp {
        Some(z) => {
            let _ = writeln!(s, "    cc_wt[{i}].zp = cc_blob + {z};");
        }
        None => {
            let _ = writeln!(s, "    cc_wt[{i}].zp = 0;");
        }
    }
    let _ = writeln!(s, "    cc_wt[{i}].dim = {dim};");
    let _ = writeln!(s, "    cc_wt[{i}].inner = {inner};");
    let _ = writeln!(s, "    cc_wt[{i}].block = {block};");
    Ok(s)
}

/// Generates the source and the blob of a prepared graph.
pub fn generate(g: &Graph, prefix: &str) -> Result<Generated> {
    let order = g.topo_order()?;
    let rt = runtime_inputs(g);
    let inputs: Vec<Port> = rt.iter().map(|&v| port(g, v)).collect::<Result<_>>()?;
    let outputs: Vec<Port> = g
        .outputs()
        .iter()
        .map(|&v| port(g, v))
        .collect::<Result<_>>()?;
    let mut fixed: BTreeMap<ValueId, Place> = BTreeMap::new();
    for (i, &v) in rt.iter().enumerate() {
        fixed.insert(v, Place::Input(i));
    }
    let mut blob = Blob::default();
    let mut inits = String::new();
    let mut nweights = 0usize;
    // Conv weights stored in the GEMM's packed layout (no packing at run time).
    let mut packed = std::collections::BTreeSet::new();
    for &id in &order {
        if let Some((w, groups, mg, kg)) = emit::linalg::prepack_layout(g, id) {
            let Some(t) = g.const_data(w) else { continue };
            let data = emit::linalg::prepack(&t.f32_view()?, groups, mg, kg);
            let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            fixed.insert(w, Place::Const(blob.add(&bytes)));
            packed.insert(w);
        }
    }
    let reads: Vec<ValueId> = order
        .iter()
        .flat_map(|&id| {
            g.node(id)
                .inputs()
                .iter()
                .flatten()
                .copied()
                .collect::<Vec<_>>()
        })
        .chain(g.outputs().iter().copied())
        .collect();
    for v in reads {
        if fixed.contains_key(&v) {
            continue;
        }
        let val = g.value(v);
        if let Some(t) = &val.data {
            let off = blob.add(&tensor_bytes(t, val.name())?);
            fixed.insert(v, Place::Const(off));
        } else if let Some(c) = &val.compressed {
            inits.push_str(&weight_init(nweights, val.name(), c, &mut blob)?);
            fixed.insert(v, Place::Weight(nweights));
            nweights += 1;
        }
    }
    let fused = emit::fusion::plan(g, &order);
    let absorbed: Vec<_> = fused.values().map(|&(a, _, _)| a).collect();
    let plan = plan::plan(g, &order, fixed, &absorbed)?;
    let mut cx = Cx {
        g,
        plan: &plan,
        scratch: 0,
        fused,
        packed,
    };
    let mut body = String::new();
    for (step, &id) in order.iter().enumerate() {
        let code = emit::emit_node(&mut cx, id)?;
        if code.is_empty() {
            continue;
        }
        let node = g.node(id);
        let _ = writeln!(
            body,
            "    /* [{step}] {} {} */\n    {{",
            node.op.onnx_type().1,
            comment_text(&node.name)
        );
        for line in code.lines() {
            let _ = writeln!(body, "        {line}");
        }
        let _ = writeln!(body, "    }}");
    }
    for (i, &v) in g.outputs().iter().enumerate() {
        let bytes = plan::value_bytes(g, v)?;
        let _ = writeln!(body, "    memcpy(out{i}, {}, {bytes});", cx.ptr(v)?);
    }
    let scratch = cx.scratch.max(1);
    let arena = plan.arena_bytes.max(64);
    let (blob, hash) = blob.finish();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "/* Generated by cc-compile (C backend) from graph \"{}\": {} nodes.\n   C99; needs only libc and libm (OpenMP pragmas are used when compiled with -fopenmp). */",
        comment_text(&g.name),
        order.len()
    );
    s.push_str("#include <math.h>\n#include <stdint.h>\n#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n");
    let _ = writeln!(s, "#include \"{prefix}.h\"\n");
    s.push_str(RUNTIME);
    let _ = writeln!(s, "\n#define CC_BLOB_BYTES {}", blob.len());
    let _ = writeln!(s, "#define CC_BLOB_HASH 0x{hash:016x}ULL");
    let _ = writeln!(s, "#define CC_ARENA_BYTES {arena}");
    let _ = writeln!(s, "#define CC_SCRATCH_FLOATS {scratch}\n");
    s.push_str("static unsigned char *cc_blob_raw, *cc_arena_raw, *cc_scratch_raw;\n");
    s.push_str("static const unsigned char *cc_blob;\nstatic unsigned char *cc_arena;\nstatic float *cc_scratch;\n");
    if nweights > 0 {
        let _ = writeln!(s, "static cc_w cc_wt[{nweights}];");
    }
    s.push_str(
        "\nstatic unsigned char *cc_align64(unsigned char *p)\n{\n    return p + ((64 - (uintptr_t)p % 64) % 64);\n}\n\n",
    );
    let _ = writeln!(s, "void {prefix}_free(void)\n{{");
    s.push_str("    free(cc_blob_raw);\n    free(cc_arena_raw);\n    free(cc_scratch_raw);\n");
    s.push_str("    cc_blob_raw = cc_arena_raw = cc_scratch_raw = 0;\n    cc_blob = 0;\n    cc_arena = 0;\n    cc_scratch = 0;\n}\n\n");
    let _ = writeln!(s, "int {prefix}_init(const char *weights_path)\n{{");
    s.push_str(
        r#"    FILE *f;
    uint64_t h = 0xcbf29ce484222325ULL, len = 0, want = 0;
    long i;
    int k;
"#,
    );
    let _ = writeln!(s, "    {prefix}_free();");
    s.push_str(
        r#"    f = fopen(weights_path, "rb");
    if (!f)
        return -1;
    cc_blob_raw = (unsigned char *)malloc(CC_BLOB_BYTES + 64);
    cc_arena_raw = (unsigned char *)malloc(CC_ARENA_BYTES + 64);
    cc_scratch_raw = (unsigned char *)malloc(sizeof(float) * CC_SCRATCH_FLOATS + 64);
    if (!cc_blob_raw || !cc_arena_raw || !cc_scratch_raw) {
        fclose(f);
        free(cc_blob_raw);
        free(cc_arena_raw);
        free(cc_scratch_raw);
        cc_blob_raw = cc_arena_raw = cc_scratch_raw = 0;
        return -4;
    }
    {
        unsigned char *b = cc_align64(cc_blob_raw);
        size_t got = fread(b, 1, CC_BLOB_BYTES, f);
        int extra = fgetc(f);
        fclose(f);
        if (got != CC_BLOB_BYTES || extra != EOF || memcmp(b, "CCWEIGHT", 8) != 0) {
            free(cc_blob_raw);
            free(cc_arena_raw);
            free(cc_scratch_raw);
            cc_blob_raw = cc_arena_raw = cc_scratch_raw = 0;
            return -2;
        }
        for (k = 0; k < 8; k++) {
            len |= (uint64_t)b[8 + k] << (8 * k);
            want |= (uint64_t)b[16 + k] << (8 * k);
        }
        for (i = 64; i < CC_BLOB_BYTES; i++) {
            h ^= b[i];
            h *= 0x100000001b3ULL;
        }
        if (len != CC_BLOB_BYTES || want != CC_BLOB_HASH || h != CC_BLOB_HASH) {
            free(cc_blob_raw);
            free(cc_arena_raw);
            free(cc_scratch_raw);
            cc_blob_raw = cc_arena_raw = cc_scratch_raw = 0;
            return -2;
        }
        cc_blob = b;
    }
    cc_arena = cc_align64(cc_arena_raw);
    cc_scratch = (float *)cc_align64(cc_scratch_raw);
"#,
    );
    s.push_str(&inits);
    s.push_str("    return 0;\n}\n\n");
    let sig = super::api::run_signature(prefix, &inputs, &outputs);
    let _ = writeln!(s, "{sig}\n{{");
    for i in 0..inputs.len() {
        let _ = writeln!(s, "    (void)in{i};");
    }
    s.push_str("    if (!cc_blob)\n        return -3;\n");
    s.push_str(&body);
    s.push_str("    return 0;\n}\n");
    Ok(Generated {
        source: s,
        blob,
        inputs,
        outputs,
    })
}
