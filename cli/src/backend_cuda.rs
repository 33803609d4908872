//! `--backend cuda -o DIR`: writes the CUDA lowering of a compiled graph into a folder
//! (`model.cu`, `model.weights.bin`, `README.md`).
//!
//! The backend needs static shapes: symbolic input dimensions (the batch) are bound to
//! 1 here, or to the sizes given with [`write_cuda_with_shapes`]; with the shapes
//! known, canonicalization then folds the shape arithmetic away ([`specialize`]).

use anyhow::Context;
use cc_backends::cuda::{bind_input_shapes, input_shapes_with, CudaBackend};
use cc_backends::{Backend, BackendOptions};
use cc_ir::Graph;
use std::path::Path;

/// `graph` with its inputs bound to `shapes`, then canonicalized and shape-inferred
/// until nothing changes (static shapes turn `Shape`-based arithmetic into constants).
pub fn specialize(graph: &Graph, shapes: &[Vec<usize>]) -> anyhow::Result<Graph> {
    let mut g = bind_input_shapes(graph, shapes).context("binding the input shapes")?;
    let pipeline = cc_passes::Pipeline::parse("")?;
    for _ in 0..100 {
        let before = g.node_count();
        cc_passes::PassManager::new(&pipeline, cc_passes::ManagerOptions::default())?
            .run(&mut g)
            .context("canonicalizing with static shapes")?;
        cc_ir::infer::infer_shapes(&mut g).context("inferring static shapes")?;
        if g.node_count() == before {
            break;
        }
    }
    Ok(g)
}

/// Writes the CUDA source, weight blob and README of `graph` into `dir` (created if
/// missing), with every symbolic input dimension set to 1.
pub fn write_cuda(graph: &Graph, dir: &Path) -> anyhow::Result<()> {
    let shapes = input_shapes_with(graph, 1).context("binding the input shapes")?;
    write_cuda_with_shapes(graph, &shapes, dir)
}

/// Like [`write_cuda`] with the concrete shape of each graph input.
pub fn write_cuda_with_shapes(
    graph: &Graph,
    shapes: &[Vec<usize>],
    dir: &Path,
) -> anyhow::Result<()> {
    let g = specialize(graph, shapes)?;
    let art = CudaBackend
        .lower(&g, &BackendOptions::default())
        .context("lowering to CUDA")?;
    art.write_to(dir)
        .with_context(|| format!("writing {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_ir::op::UnaryOp;
    use cc_ir::{DType, Dim, Op, ValueType};

    fn relu_graph() -> Graph {
        let mut g = Graph::new("relu");
        let x = g
            .add_value(
                "x",
                Some(ValueType::tensor(
                    DType::F32,
                    Some(vec![Dim::Sym("N".into()), Dim::Known(3)]),
                )),
            )
            .unwrap();
        let y = g.add_value("y", None).unwrap();
        g.add_node("r", Op::Unary(UnaryOp::Relu), vec![Some(x)], vec![Some(y)])
            .unwrap();
        g.set_inputs(vec![x]);
        g.set_outputs(vec![y]);
        cc_ir::infer::infer_shapes(&mut g).unwrap();
        g
    }

    #[test]
    fn writes_source_blob_and_readme_with_the_batch_bound_to_one() {
        let dir = tempfile::tempdir().unwrap();
        write_cuda(&relu_graph(), dir.path()).unwrap();
        let cu = std::fs::read_to_string(dir.path().join("model.cu")).unwrap();
        assert!(cu.contains("input 0 \"x\": f32[1, 3]"), "{cu}");
        assert!(cu.contains("v = fmaxf(e1[o], 0.0f);"), "{cu}");
        assert!(dir.path().join("model.weights.bin").is_file());
        let readme = std::fs::read_to_string(dir.path().join("README.md")).unwrap();
        assert!(readme.contains("model_launch"));
        let out = dir.path().join("b4");
        write_cuda_with_shapes(&relu_graph(), &[vec![4, 3]], &out).unwrap();
        let cu = std::fs::read_to_string(out.join("model.cu")).unwrap();
        assert!(cu.contains("f32[4, 3]"));
        let bad = write_cuda_with_shapes(&relu_graph(), &[vec![4, 5]], &out);
        assert!(bad.is_err());
    }
}
