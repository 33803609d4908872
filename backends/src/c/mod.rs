//! The C backend (`--backend c`): one self-contained C99 source file per model, a header
//! with a plain C API, the weights as a blob file, a driver, a Makefile and a README.
//!
//! Lowering: [`prepare`] specialises the graph to static shapes and folds everything
//! computable ahead of time; [`plan`] places every value (runtime inputs, blob offsets,
//! compressed-weight descriptors, one reused arena); [`emit`] writes each node's
//! statements; [`source`] assembles `PREFIX.c` around the runtime (`runtime.c`: packed
//! GEMM with the weight's dequantization in its packing, im2col conv, pools, norms).
//! Quantized (int8/uint8/int4/uint4, per axis or per block) and codebook weights stay
//! compressed in the blob; shared weights are decoded when lowering.

pub mod api;
pub mod emit;
pub mod plan;
pub mod prepare;
pub mod source;
pub mod toolchain;
pub mod weights;

use crate::backend::{Artifact, ArtifactFile, Backend, BackendOptions};
use cc_ir::{Error, Graph, Result};

/// The C code generator.
#[derive(Clone, Debug, Default)]
pub struct CBackend;

/// True for a valid C identifier prefix (letters, digits, `_`; not starting with a digit).
pub fn valid_prefix(p: &str) -> bool {
    !p.is_empty()
        && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !p.starts_with(|c: char| c.is_ascii_digit())
}

impl Backend for CBackend {
    fn name(&self) -> &str {
        "c"
    }

    fn check(&self) -> Result<()> {
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        match std::process::Command::new(&cc).arg("--version").output() {
            Ok(o) if o.status.success() => Ok(()),
            Ok(_) => Err(Error::unsupported(format!("C compiler {cc} does not run"))),
            Err(e) => Err(Error::unsupported(format!("no C compiler {cc}: {e}"))),
        }
    }

    fn lower(&self, g: &Graph, opts: &BackendOptions) -> Result<Artifact> {
        let p = &opts.symbol_prefix;
        if !valid_prefix(p) {
            return Err(Error::invalid(format!(
                "symbol prefix {p:?} is not a C identifier"
            )));
        }
        let prepared = prepare::prepare(g, opts)?;
        let gen = source::generate(&prepared, p)?;
        let files = vec![
            ArtifactFile {
                path: format!("{p}.c"),
                bytes: gen.source.into_bytes(),
            },
            ArtifactFile {
                path: format!("{p}.h"),
                bytes: api::header(p, &gen.inputs, &gen.outputs).into_bytes(),
            },
            ArtifactFile {
                path: format!("{p}.weights.bin"),
                bytes: gen.blob.clone(),
            },
            ArtifactFile {
                path: format!("{p}_main.c"),
                bytes: api::driver(p, &gen.inputs, &gen.outputs).into_bytes(),
            },
            ArtifactFile {
                path: "Makefile".into(),
                bytes: api::makefile(p).into_bytes(),
            },
            ArtifactFile {
                path: "README.md".into(),
                bytes: api::readme(p, &gen.inputs, &gen.outputs, gen.blob.len()).into_bytes(),
            },
        ];
        Ok(Artifact { files })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert!(valid_prefix("model") && valid_prefix("_m2"));
        assert!(!valid_prefix("2m") && !valid_prefix("a-b") && !valid_prefix(""));
        let e = CBackend
            .lower(
                &Graph::new("g"),
                &BackendOptions {
                    symbol_prefix: "a b".into(),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert!(e.to_string().contains("not a C identifier"));
    }

    #[test]
    fn an_op_without_an_emitter_is_an_error_naming_node_and_op() {
        use cc_ir::types::known_shape;
        use cc_ir::{DType, Op, OtherOp, ValueType};
        let mut g = Graph::new("g");
        let x = g
            .add_value("x", Some(ValueType::tensor(DType::F32, known_shape(&[2]))))
            .unwrap();
        let y = g
            .add_value("y", Some(ValueType::tensor(DType::F32, known_shape(&[2]))))
            .unwrap();
        let other = Op::Other(OtherOp {
            domain: String::new(),
            op_type: "Hardmax".into(),
            attributes: vec![],
        });
        g.add_node("hm", other, vec![Some(x)], vec![Some(y)])
            .unwrap();
        g.set_inputs(vec![x]);
        g.set_outputs(vec![y]);
        let e = CBackend
            .lower(&g, &BackendOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("hm") && e.contains("Hardmax"), "{e}");
    }
}
