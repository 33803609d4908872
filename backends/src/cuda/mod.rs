//! The CUDA backend (`--backend cuda`): CUDA C generated per op or fused elementwise
//! chain, compiled at run time with NVRTC and run by [`CudaRunner`].
//!
//! [`plan::plan`] turns a graph with static shapes into kernels ([`conv`], [`gemm`],
//! [`pool`], [`reduce`], [`norm`], [`movement`], [`elementwise`]), one weight blob ([`weights`]; quantized weights keep
//! their codes and are dequantized inside the GEMM/convolution loads) and a workspace
//! layout. [`source::render`] writes the `.cu` text. The runner (cargo feature `cuda`,
//! on by default) loads the driver and NVRTC dynamically through cudarc, so building
//! needs no CUDA; [`check`] says why it cannot run here.

pub mod conv;
pub mod elementwise;
pub mod gemm;
pub mod movement;
pub mod norm;
pub mod plan;
pub mod pool;
pub mod reduce;
pub mod runner;
pub mod shapes;
pub mod source;
pub mod weights;

pub use plan::{plan, Plan};
pub use runner::{check, compile_ptx, CudaRunner};
pub use shapes::{bind_input_shapes, input_shapes_with};

use crate::backend::{Artifact, ArtifactFile, Backend, BackendOptions};
use cc_ir::{Graph, Result, ValueId};
use weights::Param;

/// A kernel before it is numbered and placed: the planner names it
/// `k{index}_{base}` and substitutes `$K` in `helpers`/`body` with that name.
#[derive(Clone, Debug)]
pub struct Draft {
    /// Name stem (`conv_relu`).
    pub base: String,
    /// Labels of the nodes it computes.
    pub nodes: Vec<String>,
    /// Parameters (the first is the output).
    pub params: Vec<Param>,
    /// Device helper functions.
    pub helpers: String,
    /// Function body.
    pub body: String,
    /// Grid in blocks.
    pub grid: [u32; 3],
    /// Threads per block.
    pub block: u32,
    /// The value it writes.
    pub output: ValueId,
}

impl Draft {
    /// A kernel for one node with one thread per item (`items` threads in blocks of
    /// `block`) and no helper functions.
    pub fn one_node(
        base: &str,
        label: String,
        params: Vec<Param>,
        body: String,
        items: usize,
        block: u32,
        output: ValueId,
    ) -> Draft {
        Draft {
            base: base.to_string(),
            nodes: vec![label],
            params,
            helpers: String::new(),
            body,
            grid: [items.div_ceil(block as usize) as u32, 1, 1],
            block,
            output,
        }
    }
}

/// The CUDA backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct CudaBackend;

/// The files of the CUDA artifact: `{prefix}.cu`, `{prefix}.weights.bin`, `README.md`.
pub fn artifact(plan: &Plan, prefix: &str) -> Artifact {
    Artifact {
        files: vec![
            ArtifactFile {
                path: format!("{prefix}.cu"),
                bytes: source::render(plan, prefix).into_bytes(),
            },
            ArtifactFile {
                path: format!("{prefix}.weights.bin"),
                bytes: plan.weights.clone(),
            },
            ArtifactFile {
                path: "README.md".into(),
                bytes: source::readme(plan, prefix).into_bytes(),
            },
        ],
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> &str {
        "cuda"
    }

    fn check(&self) -> Result<()> {
        check()
    }

    /// Lowers `g` (static shapes: see [`bind_input_shapes`]) to the `.cu` source, the
    /// weight blob and a README.
    fn lower(&self, g: &Graph, opts: &BackendOptions) -> Result<Artifact> {
        let prefix = &opts.symbol_prefix;
        if prefix.is_empty()
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || prefix.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(cc_ir::Error::invalid(format!(
                "symbol prefix {prefix:?} is not a C identifier"
            )));
        }
        // The same preparation as the C backend: shared weights materialised, inputs
        // bound to `opts.input_shapes`, every shape computation folded.
        let g = crate::c::prepare::prepare(g, opts)?;
        Ok(artifact(&plan(&g)?, prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::plan::Space;
    use super::*;
    use cc_ir::op::{BinaryOp, ConvAttrs, PoolAttrs, UnaryOp};
    use cc_ir::types::known_shape;
    use cc_ir::{DType, Op, Tensor, ValueType};

    /// x[1,2,6,6] -> Conv(3x3, pad 1) -> Relu -> c1; Conv(c1) -> Add(c1) -> Relu -> r2;
    /// MaxPool 2x2 -> Flatten -> Gemm(transB) -> Sigmoid -> y.
    fn resnetish() -> Graph {
        let mut g = Graph::new("t");
        let f = |g: &mut Graph, name: &str, shape: Vec<usize>| {
            let n = shape.iter().product::<usize>();
            let vals = (0..n).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
            g.add_const(name, Tensor::from_f32(shape, vals).unwrap())
                .unwrap()
        };
        let x = g
            .add_value(
                "x",
                Some(ValueType::tensor(DType::F32, known_shape(&[1, 2, 6, 6]))),
            )
            .unwrap();
        let (w1, b1, w2) = (
            f(&mut g, "w1", vec![2, 2, 3, 3]),
            f(&mut g, "b1", vec![2]),
            f(&mut g, "w2", vec![2, 2, 3, 3]),
        );
        let (fc, fb) = (f(&mut g, "fc", vec![4, 18]), f(&mut g, "fb", vec![4]));
        let mut v = |n: &str| g.add_value(n, None).unwrap();
        let (c1p, c1, c2, s, r2, mp, fl, gm, y) = (
            v("c1p"),
            v("c1"),
            v("c2"),
            v("s"),
            v("r2"),
            v("mp"),
            v("fl"),
            v("gm"),
            v("y"),
        );
        let conv = ConvAttrs {
            pads: Some(vec![1, 1, 1, 1]),
            ..Default::default()
        };
        let relu = Op::Unary(UnaryOp::Relu);
        g.add_node(
            "conv1",
            Op::Conv(conv.clone()),
            vec![Some(x), Some(w1), Some(b1)],
            vec![Some(c1p)],
        )
        .unwrap();
        g.add_node("relu1", relu.clone(), vec![Some(c1p)], vec![Some(c1)])
            .unwrap();
        g.add_node(
            "conv2",
            Op::Conv(conv),
            vec![Some(c1), Some(w2)],
            vec![Some(c2)],
        )
        .unwrap();
        g.add_node(
            "add",
            Op::Binary(BinaryOp::Add),
            vec![Some(c2), Some(c1)],
            vec![Some(s)],
        )
        .unwrap();
        g.add_node("relu2", relu, vec![Some(s)], vec![Some(r2)])
            .unwrap();
        let pool = PoolAttrs {
            kernel_shape: Some(vec![2, 2]),
            strides: Some(vec![2, 2]),
            ..Default::default()
        };
        g.add_node("pool", Op::MaxPool(pool), vec![Some(r2)], vec![Some(mp)])
            .unwrap();
        g.add_node(
            "flat",
            Op::Flatten { axis: None },
            vec![Some(mp)],
            vec![Some(fl)],
        )
        .unwrap();
        let gemm = Op::Gemm {
            alpha: None,
            beta: None,
            trans_a: None,
            trans_b: Some(1),
        };
        g.add_node(
            "fc",
            gemm,
            vec![Some(fl), Some(fc), Some(fb)],
            vec![Some(gm)],
        )
        .unwrap();
        g.add_node(
            "sig",
            Op::Unary(UnaryOp::Sigmoid),
            vec![Some(gm)],
            vec![Some(y)],
        )
        .unwrap();
        g.set_inputs(vec![x]);
        g.set_outputs(vec![y]);
        cc_ir::infer::infer_shapes(&mut g).unwrap();
        g
    }

    #[test]
    fn plans_one_kernel_per_op_with_fused_chains() {
        let g = resnetish();
        let p = plan(&g).unwrap();
        let names: Vec<&str> = p.kernels.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "k00_conv_relu",
                "k01_conv_add_relu",
                "k02_maxpool",
                "k03_gemm_sigmoid"
            ]
        );
        let k1 = &p.kernels[1];
        // Output, input, weight (no bias), the residual operand.
        let params: Vec<&str> = k1.args.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(params, ["y", "x", "w", "e3"]);
        assert!(k1.source.contains("v = v + e3[o];"), "{}", k1.source);
        // The residual operand is conv1's (fused) output, in the workspace at the
        // offset kernel 0 wrote.
        assert_eq!(k1.args[3].space, Space::Workspace);
        assert_eq!(k1.args[3].offset, p.kernels[0].args[0].offset);
        assert_eq!(k1.args[1].offset, p.kernels[0].args[0].offset);
        // A kernel never writes where it reads.
        for k in &p.kernels {
            for a in k.args.iter().skip(1) {
                assert!(
                    a.space == Space::Weights || a.offset != k.args[0].offset,
                    "{}",
                    k.name
                );
            }
        }
        // Launch configs: conv GEMM M=2, N=36 -> one 64x64 tile; pool 2*3*3=18 threads;
        // Gemm M=1, N=4.
        assert_eq!(p.kernels[0].grid, [1, 1, 1]);
        assert_eq!(p.kernels[2].grid, [1, 1, 1]);
        assert_eq!(p.kernels[3].block, 256);
        // Flatten is an alias: the Gemm reads the pool output in place.
        assert_eq!(p.kernels[3].args[1].offset, p.kernels[2].args[0].offset);
        assert_eq!(p.outputs[0].shape, vec![1, 4]);
        assert_eq!(p.outputs[0].offset, p.kernels[3].args[0].offset);
        // The weights: w1, b1, w2, fc, fb — each once, 256-aligned.
        assert_eq!(p.weight_sections.len(), 5);
        assert!(p.weight_sections.iter().all(|s| s.0 % 256 == 0));
        let src = source::render(&p, "model");
        assert_eq!(src.matches("extern \"C\" __global__").count(), 4);
        assert!(src.contains("k03_gemm_sigmoid<<<dim3(1, 1, 1), 256, 0, stream>>>"));
        assert_eq!(src.matches('{').count(), src.matches('}').count());
    }

    #[test]
    fn workspace_is_reused_once_values_are_dead() {
        // Four squarings x*x of [1,4,64,64]: each reads its input twice, so none
        // fuses; with reuse two slots (plus the input) suffice.
        let mut g = Graph::new("squares");
        let x = g
            .add_value(
                "x",
                Some(ValueType::tensor(DType::F32, known_shape(&[1, 4, 64, 64]))),
            )
            .unwrap();
        let mut cur = x;
        for i in 0..4 {
            let y = g.add_value(&format!("y{i}"), None).unwrap();
            let mul = Op::Binary(BinaryOp::Mul);
            g.add_node(
                &format!("n{i}"),
                mul,
                vec![Some(cur), Some(cur)],
                vec![Some(y)],
            )
            .unwrap();
            cur = y;
        }
        g.set_inputs(vec![x]);
        g.set_outputs(vec![cur]);
        cc_ir::infer::infer_shapes(&mut g).unwrap();
        let p = plan(&g).unwrap();
        assert_eq!(p.kernels.len(), 4);
        let one = 4 * 4 * 64 * 64;
        assert!(p.workspace_bytes <= 3 * one, "{} bytes", p.workspace_bytes);
    }

    #[test]
    fn unsupported_ops_and_bad_prefixes_are_errors_naming_them() {
        let mut g = Graph::new("t");
        let x = g
            .add_value(
                "x",
                Some(ValueType::tensor(DType::F32, known_shape(&[2, 3]))),
            )
            .unwrap();
        let y = g.add_value("y", None).unwrap();
        g.add_node(
            "cast",
            Op::Cast {
                to: DType::F32,
                saturate: None,
            },
            vec![Some(x)],
            vec![Some(y)],
        )
        .unwrap();
        g.set_inputs(vec![x]);
        g.set_outputs(vec![y]);
        cc_ir::infer::infer_shapes(&mut g).unwrap();
        let e = plan(&g).unwrap_err().to_string();
        assert!(e.contains("\"cast\"") && e.contains("Cast"), "{e}");
        let opts = BackendOptions {
            symbol_prefix: "9bad".into(),
            ..Default::default()
        };
        assert!(CudaBackend.lower(&resnetish(), &opts).is_err());
        let art = CudaBackend
            .lower(&resnetish(), &BackendOptions::default())
            .unwrap();
        assert_eq!(art.files.len(), 3);
        assert_eq!(CudaBackend.name(), "cuda");
    }
}
