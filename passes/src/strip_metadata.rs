//! `strip-metadata`: drops the debugging information exporters attach to nodes (doc
//! strings and `metadata_props`, such as PyTorch's per-node stack traces). Exact: the
//! computation is untouched; only the file shrinks (tiny_lm: 0.58 MB of 3.9 MB).

use crate::error::PassError;
use crate::pass::{Changed, Pass, PassCx};
use crate::registry::PassInfo;
use cc_ir::Graph;

inventory::submit! {
    PassInfo {
        name: "strip-metadata",
        summary: "drop node doc strings and metadata_props (exporter stack traces)",
        options: &[],
        create: |_| Ok(Box::new(StripMetadata)),
    }
}

/// The metadata-stripping pass.
#[derive(Clone, Copy, Debug, Default)]
pub struct StripMetadata;

impl Pass for StripMetadata {
    fn name(&self) -> &str {
        "strip-metadata"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let dropped = cc_ir::onnx::strip_node_metadata(g)?;
        cx.stat("bytes_dropped", dropped);
        Ok(Changed(dropped > 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_ir::Op;

    #[test]
    fn doc_strings_are_dropped_and_counted() {
        let mut g = Graph::new("g");
        let x = g.add_value("x", None).unwrap();
        let y = g.add_value("y", None).unwrap();
        let id = g
            .add_node("n", Op::Identity, vec![Some(x)], vec![Some(y)])
            .unwrap();
        g.node_mut(id).doc_string = "trace".into();
        let mut cx = PassCx::new(0);
        assert!(StripMetadata.run(&mut g, &mut cx).unwrap().is_changed());
        assert_eq!(cx.stats()[0].1.to_string(), "5");
        assert!(!StripMetadata.run(&mut g, &mut cx).unwrap().is_changed());
    }
}
