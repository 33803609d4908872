//! The CUDA backend end to end.
//!
//! - Snapshots of the generated `.cu` for digits_cnn in float32 and int8 (per-channel
//!   quantized weights dequantized inside the GEMM/convolution kernels).
//! - On a machine where `check()` passes: digits_cnn (fp32, int8) and resnet18 (fp32)
//!   run on the GPU and match within 1e-3 relative (fp32 against the fixture's
//!   reference output, int8 against our CPU executor on the same quantized graph).
//!   Elsewhere — also under CI, which has no GPU — the test prints check()'s reason.
//! - Without a GPU the generated kernels still run: the same `.cu` is compiled as C++20
//!   with the host compiler against a small shim (threads of a block are OS threads,
//!   `__syncthreads` a barrier, `__shared__` a function-local static since blocks run
//!   one after another) and its outputs are checked like the GPU's: digits_cnn in fp32,
//!   int8 (symmetric and with zero points) and int4 blocks, hand-made graphs for the
//!   other kernels, resnet18 (fp32, int8), squeezenet1_1, mobilenet_v2, shufflenet_v2
//!   and vit_tiny.
//! - Where libnvrtc can be loaded (no driver or device needed), the generated source of
//!   the fixtures compiles with NVRTC to PTX with an entry per kernel.
//! - Every fixture either plans or fails with an error naming the node and op.

use cc_backends::cuda::{bind_input_shapes, check, plan, source, CudaRunner, Plan};
use cc_backends::{Backend, BackendOptions};
use cc_ir::{Executor, Graph, Tensor};
use cc_tests::{
    load_inferred, max_rel_error, reference_output, run_pipeline, shared_dir, test_inputs,
};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The fixture `name` after canonicalization and `spec`, with the shapes of its first
/// `rows` test inputs (along axis 0) bound; plus those inputs.
fn compiled(shared: &Path, name: &str, spec: &str, rows: usize) -> (Graph, Vec<Tensor>, PathBuf) {
    let dir = shared.join("models").join(name);
    let mut g = load_inferred(&dir);
    run_pipeline(&mut g, spec).unwrap();
    let inputs: Vec<Tensor> = test_inputs(&dir)
        .iter()
        .map(|p| first_rows(&cc_ir::onnx::read_tensor_file(p).unwrap().1, rows))
        .collect();
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
    let g = specialize(&g, shapes);
    (g, inputs, dir)
}

/// `g` specialised to static input shapes as the backends prepare it.
fn specialize(g: &Graph, input_shapes: Vec<Vec<usize>>) -> Graph {
    let opts = cc_backends::BackendOptions {
        input_shapes,
        ..Default::default()
    };
    cc_backends::c::prepare::prepare(g, &opts).unwrap()
}

fn cpu(g: &Graph, inputs: &[Tensor]) -> Vec<Tensor> {
    cc_backends::cpu::CpuExecutor::new(2)
        .unwrap()
        .run(g, inputs)
        .unwrap()
}

#[test]
fn cuda_source_snapshots_of_digits_cnn() {
    let Some(shared) = shared_dir() else { return };
    for (label, spec) in [("fp32", ""), ("int8", "quant{bits=8}")] {
        let (g, _, _) = compiled(&shared, "digits_cnn", spec, usize::MAX);
        let art = cc_backends::cuda::CudaBackend
            .lower(&g, &BackendOptions::default())
            .unwrap();
        let names: Vec<&str> = art.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(names, ["model.cu", "model.weights.bin", "README.md"]);
        let cu = String::from_utf8(art.files[0].bytes.clone()).unwrap();
        let p = plan(&g).unwrap();
        // One kernel per Conv/Gemm (each with its Relu fused) and one for MaxPool;
        // Flatten is an alias.
        let bases: Vec<String> = p.kernels.iter().map(|k| k.name[4..].to_string()).collect();
        let dq = if label == "int8" { "_dq" } else { "" };
        assert_eq!(
            bases,
            [
                format!("conv{dq}_relu"),
                format!("conv{dq}_relu"),
                "maxpool".to_string(),
                format!("conv{dq}_relu"),
                format!("gemm{dq}_relu"),
                format!("gemm{dq}"),
            ],
            "{label}"
        );
        // The weights live in the blob, not in the source.
        assert!(cu.len() < 40_000, "{label}: {} bytes of source", cu.len());
        assert_eq!(art.files[1].bytes, p.weights);
        if label == "int8" {
            assert!(cu.contains("int c = (int)(signed char)q[i];"));
            let fp32 = plan(&compiled(&shared, "digits_cnn", "", usize::MAX).0).unwrap();
            assert!(
                p.weights.len() * 3 < fp32.weights.len(),
                "int8 blob {} vs fp32 {}",
                p.weights.len(),
                fp32.weights.len()
            );
        }
        insta::assert_snapshot!(format!("cuda_digits_cnn_{label}"), cu);
    }
}

#[test]
fn symbolic_shapes_and_unsupported_ops_are_named() {
    let Some(shared) = shared_dir() else { return };
    let g = load_inferred(&shared.join("models/digits_cnn"));
    let e = plan(&g).unwrap_err().to_string();
    assert!(e.contains("symbolic dimension N"), "{e}");
    let g = load_inferred(&shared.join("models/tiny_lm"));
    let shapes = cc_backends::cuda::input_shapes_with(&g, 1).unwrap();
    let e = bind_input_shapes(&g, &shapes)
        .and_then(|g| plan(&g))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cuda backend: node") || e.contains("float32"),
        "{e}"
    );
}

#[test]
fn every_fixture_plans_or_names_what_is_missing() {
    let Some(shared) = shared_dir() else { return };
    let mut planned = Vec::new();
    for (name, dir) in cc_tests::fixture_models(&shared) {
        let mut g = load_inferred(&dir);
        run_pipeline(&mut g, "").unwrap();
        let shapes = cc_backends::cuda::input_shapes_with(&g, 1).unwrap();
        // With static shapes, canonicalization folds the shape arithmetic away.
        let g = specialize(&g, shapes);
        match plan(&g) {
            Ok(p) => {
                println!("{name}: {} kernels", p.kernels.len());
                planned.push(name);
            }
            Err(e) => {
                let e = e.to_string();
                println!("{name}: {e}");
                assert!(e.contains("cuda backend: "), "{name}: {e}");
            }
        }
    }
    for must in ["digits_cnn", "resnet18"] {
        assert!(planned.iter().any(|n| n == must), "{must} did not plan");
    }
}

/// Runs the fixture on the GPU; fp32 against the reference output, quantized against
/// our CPU executor.
fn gpu_case(shared: &Path, name: &str, spec: &str) {
    let (g, inputs, dir) = compiled(shared, name, spec, usize::MAX);
    let mut r = CudaRunner::new(&g).unwrap();
    let got = r.run(&inputs).unwrap();
    let again = r.run(&inputs).unwrap();
    assert_eq!(got, again, "{name} {spec}: a second run differs");
    let want = if spec.is_empty() {
        reference_output(&dir).unwrap()
    } else {
        cpu(&g, &inputs).remove(0)
    };
    let err = max_rel_error(&got[0], &want).unwrap();
    println!("gpu {name} {spec:?}: max relative error {err:.2e}");
    assert!(err <= 1e-3, "{name} {spec}: {err}");
}

#[test]
fn fixtures_run_on_the_gpu() {
    if let Err(e) = check() {
        // Not a failure, even under CI: CI machines have no GPU.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIPPED: cuda: {e}");
        return;
    }
    let Some(shared) = shared_dir() else { return };
    gpu_case(&shared, "digits_cnn", "");
    gpu_case(&shared, "digits_cnn", "quant{bits=8}");
    gpu_case(
        &shared,
        "digits_cnn",
        "quant{bits=4,granularity=block,block=32}",
    );
    gpu_case(&shared, "resnet18", "");
    gpu_case(&shared, "resnet18", "quant{bits=8}");
}

/// The generated source of fixtures and quantized forms compiles with NVRTC (only the
/// library is needed, no GPU; scripts/test.sh installs it from PyPI); skipped with the
/// reason when libnvrtc is not found, a failure under CI.
/// With `CC_CUDA_PTX_DIR` set, the PTX is written there (e.g. to assemble it with
/// `ptxas -arch=sm_90`).
#[test]
fn generated_source_compiles_with_nvrtc() {
    let Some(shared) = shared_dir() else { return };
    let cases = [
        ("digits_cnn", ""),
        ("digits_cnn", "quant{bits=8}"),
        ("digits_cnn", "quant{bits=8,symmetric=false}"),
        ("digits_cnn", "quant{bits=4,granularity=block,block=32}"),
        ("resnet18", ""),
        (
            "resnet18",
            "quant{bits=4,granularity=block,block=32,symmetric=false}",
        ),
        ("mobilenet_v2", ""),
        ("squeezenet1_1", ""),
        ("shufflenet_v2_x1_0", ""),
        ("vit_tiny", ""),
    ];
    for (name, spec) in cases {
        let (g, _, _) = compiled(&shared, name, spec, 1);
        let p = plan(&g).unwrap();
        let ptx = match cc_backends::cuda::compile_ptx(&p) {
            Ok(ptx) => ptx,
            Err(e) if e.to_string().contains("not found") || e.to_string().contains("feature") => {
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "SKIPPED: nvrtc: {e}");
                assert!(!cc_tests::in_ci(), "NVRTC must be present under CI: {e}");
                return;
            }
            Err(e) => panic!("{name} {spec}: {e}"),
        };
        for k in &p.kernels {
            assert!(
                ptx.contains(&format!(".entry {}(", k.name)),
                "{name} {spec}: no entry for {}",
                k.name
            );
        }
        if let Ok(dir) = std::env::var("CC_CUDA_PTX_DIR") {
            let tag: String = spec
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            std::fs::write(Path::new(&dir).join(format!("{name}_{tag}.ptx")), &ptx).unwrap();
        }
        println!(
            "nvrtc {name} {spec:?}: {} kernels, {} bytes of PTX",
            p.kernels.len(),
            ptx.len()
        );
    }
}

// ---- the generated kernels compiled as C++ and run on the CPU -------------------------

const SHIM: &str = r#"
#include <math.h>
#include <barrier>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>
struct cc_dim3 { unsigned x, y, z; };
static thread_local cc_dim3 threadIdx, blockIdx;
static std::barrier<>* cc_bar;
static void __syncthreads() { cc_bar->arrive_and_wait(); }
static inline float __int_as_float(int b) { float f; std::memcpy(&f, &b, 4); return f; }
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(n)
#define __shared__ static
#define __CUDACC_RTC__ 1
"#;

const DRIVER_HEAD: &str = r#"
static void cc_launch(unsigned gx, unsigned gy, unsigned gz, unsigned block, const std::function<void()>& f) {
    std::barrier<> bar(block);
    cc_bar = &bar;
    std::vector<std::thread> ts;
    for (unsigned t = 0; t < block; ++t)
        ts.emplace_back([&, t] {
            threadIdx = {t, 0, 0};
            for (unsigned z = 0; z < gz; ++z)
                for (unsigned y = 0; y < gy; ++y)
                    for (unsigned x = 0; x < gx; ++x) {
                        blockIdx = {x, y, z};
                        f();
                        bar.arrive_and_wait();
                    }
        });
    for (auto& t : ts) t.join();
}
static std::vector<float> cc_read(const char* path, size_t bytes) {
    std::vector<float> v(bytes / 4 + 1, 0.0f);
    FILE* f = fopen(path, "rb");
    if (!f || fread(v.data(), 1, bytes, f) != bytes) { fprintf(stderr, "cannot read %s\n", path); exit(2); }
    fclose(f);
    return v;
}
"#;

/// A C++ `main` running `plan`'s kernels: argv = weights file, one raw f32 file per
/// input, then one output path per output.
fn driver(plan: &Plan) -> String {
    let mut s = String::from(DRIVER_HEAD);
    s.push_str("int main(int argc, char** argv) {\n");
    s.push_str(&format!(
        "    if (argc != {}) return 3;\n    std::vector<float> wv = cc_read(argv[1], {});\n    const unsigned char* weights = (const unsigned char*)wv.data();\n    std::vector<float> sv({} / 4 + 1, 0.0f);\n    unsigned char* workspace = (unsigned char*)sv.data();\n",
        2 + plan.inputs.len() + plan.outputs.len(),
        plan.weights.len(),
        plan.workspace_bytes
    ));
    for (i, io) in plan.inputs.iter().enumerate() {
        let bytes = 4 * io.shape.iter().product::<usize>();
        s.push_str(&format!(
            "    {{ std::vector<float> x = cc_read(argv[{}], {bytes}); memcpy(workspace + {}, x.data(), {bytes}); }}\n",
            2 + i,
            io.offset
        ));
    }
    for k in &plan.kernels {
        let args = k
            .args
            .iter()
            .map(|a| {
                let base = match a.space {
                    cc_backends::cuda::plan::Space::Weights => "weights",
                    cc_backends::cuda::plan::Space::Workspace => "workspace",
                };
                format!("({})({base} + {})", a.ty, a.offset)
            })
            .collect::<Vec<_>>()
            .join(", ");
        s.push_str(&format!(
            "    cc_launch({}, {}, {}, {}, [&] {{ {}({args}); }});\n",
            k.grid[0], k.grid[1], k.grid[2], k.block, k.name
        ));
    }
    for (i, io) in plan.outputs.iter().enumerate() {
        let bytes = 4 * io.shape.iter().product::<usize>();
        s.push_str(&format!(
            "    {{ FILE* f = fopen(argv[{}], \"wb\"); fwrite(workspace + {}, 1, {bytes}, f); fclose(f); }}\n",
            2 + plan.inputs.len() + i,
            io.offset
        ));
    }
    s.push_str("    return 0;\n}\n");
    s
}

/// Compiles the generated source with the host C++ compiler and runs it on `inputs`;
/// `None` (after printing why) when there is no C++20 compiler.
fn emulate(plan: &Plan, inputs: &[Tensor]) -> Option<Vec<Tensor>> {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("emu.cpp");
    let cu = source::render(plan, "model");
    std::fs::write(&src, format!("{SHIM}\n{cu}\n{}", driver(plan))).unwrap();
    let exe = dir.path().join("emu");
    let out = Command::new(&cxx)
        .args([
            "-std=c++20",
            "-O2",
            "-pthread",
            "-Wall",
            "-Wno-unknown-pragmas",
            "-Wno-unused-function",
            "-Werror",
        ])
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED: no C++ compiler {cxx:?}: {e}");
            return None;
        }
    };
    assert!(
        out.status.success(),
        "the generated source does not compile as C++:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wfile = dir.path().join("w.bin");
    std::fs::write(&wfile, &plan.weights).unwrap();
    let mut cmd = Command::new(&exe);
    cmd.arg(&wfile);
    for (i, t) in inputs.iter().enumerate() {
        let p = dir.path().join(format!("in{i}.bin"));
        let bytes: Vec<u8> = t
            .to_f32()
            .unwrap()
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        std::fs::write(&p, bytes).unwrap();
        cmd.arg(p);
    }
    let outs: Vec<PathBuf> = (0..plan.outputs.len())
        .map(|i| dir.path().join(format!("out{i}.bin")))
        .collect();
    cmd.args(&outs);
    let st = cmd.status().unwrap();
    assert!(st.success(), "the emulated kernels failed: {st}");
    Some(
        plan.outputs
            .iter()
            .zip(&outs)
            .map(|(io, p)| {
                let b = std::fs::read(p).unwrap();
                let v: Vec<f32> = b
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                Tensor::from_f32(io.shape.clone(), v).unwrap()
            })
            .collect(),
    )
}

/// The first `n` items (along axis 0) of `t`.
fn first_rows(t: &Tensor, n: usize) -> Tensor {
    let mut shape = t.shape().to_vec();
    let per: usize = shape.iter().skip(1).product();
    shape[0] = shape[0].min(n);
    let v = t.to_f32().unwrap();
    Tensor::from_f32(shape.clone(), v[..shape[0] * per].to_vec()).unwrap()
}

/// Runs fixture `name` after `spec` through the emulated kernels on its first `rows`
/// test inputs; fp32 is compared with the reference output, quantized graphs with our
/// CPU executor. The generated source must contain `needle`.
fn emulated_case(shared: &Path, name: &str, spec: &str, rows: usize, needle: &str) -> Option<f64> {
    let (mut g, inputs, dir) = compiled(shared, name, spec, rows);
    // Also expose the features the last node reads (a fixture's reference output may be
    // degenerate, e.g. all zeros from an untrained head): they are compared with our
    // CPU executor.
    let out0 = g.outputs()[0];
    let (last, _) = g.value(out0).producer().unwrap();
    let probe = g.node(last).input(0).unwrap();
    g.set_outputs(vec![out0, probe]);
    let p = plan(&g).unwrap();
    let cu = source::render(&p, "model");
    assert!(
        cu.contains(needle),
        "{name} {spec}: no {needle:?} in the source"
    );
    let got = emulate(&p, &inputs)?;
    let ours = cpu(&g, &inputs);
    let want = if spec.is_empty() {
        first_rows(&reference_output(&dir).unwrap(), rows)
    } else {
        ours[0].clone()
    };
    let err = max_rel_error(&got[0], &want).unwrap();
    let feat = max_rel_error(&got[1], &ours[1]).unwrap();
    println!(
        "emulated {name} {spec:?}: {} kernels, max relative error {err:.2e} (features {feat:.2e})",
        p.kernels.len()
    );
    assert!(err <= 1e-3 && feat <= 1e-3, "{name} {spec}: {err} / {feat}");
    Some(err.max(feat))
}

#[test]
fn generated_kernels_compute_digits_cnn_on_the_cpu() {
    let Some(shared) = shared_dir() else { return };
    for (spec, needle) in [
        ("", "v = fmaxf(v, 0.0f);"),
        ("quant{bits=8}", "int c = (int)(signed char)q[i];"),
        ("quant{bits=8,symmetric=false}", "- z[si]"),
        (
            "quant{bits=4,granularity=block,block=32}",
            "c = (c ^ 8) - 8;",
        ),
        ("codebook{per=channel}", "f32 decoded codebook"),
        ("share{ratio=0.5}", "v = fmaxf(v, 0.0f);"),
    ] {
        if emulated_case(&shared, "digits_cnn", spec, 16, needle).is_none() {
            return;
        }
    }
}

/// resnet18 (fp32, int8), squeezenet1_1, mobilenet_v2, shufflenet_v2 and vit_tiny
/// through the emulator (about a minute: every block's threads are OS threads).
#[test]
fn generated_kernels_compute_larger_models_on_the_cpu() {
    let Some(shared) = shared_dir() else { return };
    emulated_case(&shared, "resnet18", "", 1, "_conv_add_relu(");
    emulated_case(
        &shared,
        "resnet18",
        "quant{bits=8}",
        1,
        "_conv_dq_add_relu(",
    );
    emulated_case(&shared, "squeezenet1_1", "", 1, "_concat(");
    emulated_case(&shared, "mobilenet_v2", "", 1, "_dwconv_clip(");
    emulated_case(&shared, "shufflenet_v2_x1_0", "", 1, "_slice(");
    emulated_case(&shared, "vit_tiny", "", 1, "_layernormalization(");
}

// ---- hand-made graphs covering the other kernels, emulated against our CPU executor ---

/// A builder for small f32 graphs with deterministic pseudo-random constants.
struct Small {
    g: Graph,
    seed: u32,
}

impl Small {
    fn new() -> Small {
        Small {
            g: Graph::new("small"),
            seed: 1,
        }
    }

    fn data(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.seed = self.seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                ((self.seed >> 16) % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn input(&mut self, name: &str, shape: &[usize]) -> cc_ir::ValueId {
        let ty = cc_ir::ValueType::tensor(cc_ir::DType::F32, cc_ir::types::known_shape(shape));
        let v = self.g.add_value(name, Some(ty)).unwrap();
        let mut ins = self.g.inputs().to_vec();
        ins.push(v);
        self.g.set_inputs(ins);
        v
    }

    fn weight(&mut self, name: &str, shape: &[usize]) -> cc_ir::ValueId {
        let n = shape.iter().product();
        let d = self.data(n);
        self.g
            .add_const(name, Tensor::from_f32(shape.to_vec(), d).unwrap())
            .unwrap()
    }

    fn node(
        &mut self,
        name: &str,
        op: cc_ir::Op,
        ins: &[Option<cc_ir::ValueId>],
    ) -> cc_ir::ValueId {
        let y = self.g.add_value(&format!("{name}_out"), None).unwrap();
        self.g
            .add_node(name, op, ins.to_vec(), vec![Some(y)])
            .unwrap();
        y
    }

    /// Infers shapes, emulates the kernels and compares every output with the CPU
    /// executor on pseudo-random inputs.
    fn check(mut self, outputs: Vec<cc_ir::ValueId>, needles: &[&str]) -> Option<()> {
        self.g.set_outputs(outputs);
        cc_ir::infer::infer_shapes(&mut self.g).unwrap();
        let inputs: Vec<Tensor> = self
            .g
            .inputs()
            .to_vec()
            .iter()
            .map(|&v| {
                let shape = cc_backends::cuda::shapes::dims(&self.g, v).unwrap();
                let n = shape.iter().product();
                let d = self.data(n);
                Tensor::from_f32(shape, d).unwrap()
            })
            .collect();
        let p = plan(&self.g).unwrap();
        let cu = source::render(&p, "model");
        for n in needles {
            assert!(cu.contains(n), "no {n:?} in\n{cu}");
        }
        let got = emulate(&p, &inputs)?;
        let want = cpu(&self.g, &inputs);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            let err = max_rel_error(a, b).unwrap();
            assert!(err <= 1e-5, "output {i}: {err}");
        }
        Some(())
    }
}

#[test]
fn generated_kernels_compute_grouped_and_depthwise_convs_and_pools() {
    use cc_ir::op::{ConvAttrs, GlobalPoolOp, PoolAttrs};
    use cc_ir::Op;
    let mut s = Small::new();
    let x = s.input("x", &[2, 4, 9, 7]);
    let (w, b) = (s.weight("w", &[6, 2, 3, 3]), s.weight("b", &[6]));
    let grouped = Op::Conv(ConvAttrs {
        group: Some(2),
        strides: Some(vec![2, 1]),
        pads: Some(vec![1, 0, 1, 2]),
        ..Default::default()
    });
    let c = s.node("gconv", grouped, &[Some(x), Some(w), Some(b)]);
    let (lo, hi) = (s.weight("lo", &[1]), s.weight("hi", &[1]));
    let dw_w = s.weight("dw", &[6, 1, 3, 3]);
    let dw = Op::Conv(ConvAttrs {
        group: Some(6),
        dilations: Some(vec![2, 1]),
        auto_pad: Some("SAME_UPPER".into()),
        ..Default::default()
    });
    let d = s.node("dwconv", dw, &[Some(c), Some(dw_w)]);
    let d = s.node("clip", Op::Clip, &[Some(d), Some(lo), Some(hi)]);
    let avg = |inc: i64| {
        Op::AveragePool(PoolAttrs {
            kernel_shape: Some(vec![3, 2]),
            strides: Some(vec![2, 2]),
            pads: Some(vec![1, 1, 1, 0]),
            count_include_pad: Some(inc),
            ceil_mode: Some(1),
            ..Default::default()
        })
    };
    let a0 = s.node("avg0", avg(0), &[Some(d)]);
    let a1 = s.node("avg1", avg(1), &[Some(d)]);
    let gm = s.node("gmax", Op::GlobalPool(GlobalPoolOp::Max), &[Some(c)]);
    let rm = Op::Reduce {
        op: cc_ir::op::ReduceOp::Mean,
        axes: Some(vec![1, 3]),
        keepdims: Some(0),
        noop_with_empty_axes: None,
    };
    let red = s.node("rmean", rm, &[Some(c)]);
    let ints = |s: &mut Small, n: &str, v: Vec<i64>| {
        let t = Tensor::from_i64(vec![v.len()], v).unwrap();
        Some(s.g.add_const(n, t).unwrap())
    };
    let (st, en) = (
        ints(&mut s, "st", vec![1, -1]),
        ints(&mut s, "en", vec![100, -6]),
    );
    let (ax, sp) = (
        ints(&mut s, "ax", vec![1, 3]),
        ints(&mut s, "sp", vec![2, -2]),
    );
    let sl = s.node("slice", Op::Slice, &[Some(c), st, en, ax, sp]);
    let gi = Tensor::from_i64(vec![2, 2], vec![2, -1, 0, 2]).unwrap();
    let gi = Some(s.g.add_const("gi", gi).unwrap());
    let ga = s.node("gather", Op::Gather { axis: Some(1) }, &[Some(sl), gi]);
    s.check(
        vec![a0, a1, gm, red, ga],
        &[
            "_conv(",
            "_dwconv_clip(",
            "_averagepool(",
            "_globalmaxpool(",
            "_reducemean(",
            "_slice(",
            "_gather(",
        ],
    );
}

#[test]
fn generated_kernels_compute_matmuls_gemms_and_movement() {
    use cc_ir::op::{BinaryOp, UnaryOp, VariadicOp};
    use cc_ir::Op;
    let mut s = Small::new();
    let a = s.input("a", &[2, 3, 5, 70]);
    let b = s.input("b", &[3, 70, 9]);
    let mm = s.node("mm", Op::MatMul, &[Some(a), Some(b)]);
    let slope = s.weight("slope", &[9]);
    let pr = s.node(
        "prelu",
        Op::Binary(BinaryOp::PRelu),
        &[Some(mm), Some(slope)],
    );
    let t = s.node(
        "tr",
        Op::Transpose {
            perm: Some(vec![1, 0, 3, 2]),
        },
        &[Some(pr)],
    );
    let other = s.input("o", &[3, 2, 9, 5]);
    let cat = s.node("cat", Op::Concat { axis: -1 }, &[Some(t), Some(other)]);
    let ga = s.input("ga", &[33, 17]);
    let gb = s.weight("gb", &[33, 20]);
    let gc = s.weight("gc", &[20]);
    let gemm = Op::Gemm {
        alpha: Some(0.5),
        beta: Some(2.0),
        trans_a: Some(1),
        trans_b: None,
    };
    let g1 = s.node("gemm", gemm, &[Some(ga), Some(gb), Some(gc)]);
    let r = s.weight("r", &[17, 1]);
    let sub = s.node("sub", Op::Binary(BinaryOp::Sub), &[Some(r), Some(g1)]);
    let div = s.node("div", Op::Binary(BinaryOp::Div), &[Some(sub), Some(r)]);
    let lr = s.node("leaky", Op::LeakyRelu { alpha: Some(0.2) }, &[Some(div)]);
    let mx = s.node("max", Op::Variadic(VariadicOp::Max), &[Some(lr), Some(g1)]);
    let th = s.node("tanh", Op::Unary(UnaryOp::Tanh), &[Some(mx)]);
    let sm = s.node("softmax", Op::Softmax { axis: Some(0) }, &[Some(th)]);
    let (lsc, lbi) = (s.weight("lsc", &[17, 20]), s.weight("lbi", &[17, 20]));
    let ln = Op::LayerNormalization {
        axis: Some(-2),
        epsilon: Some(1e-3),
        stash_type: None,
    };
    let ln = s.node("ln", ln, &[Some(sm), Some(lsc), Some(lbi)]);
    s.check(
        vec![cat, th, ln],
        &[
            "_matmul_prelu(",
            "_transpose(",
            "_concat(",
            "_gemm(",
            "_sub_div_leakyrelu_max_tanh(",
            "_softmax(",
            "_layernormalization(",
        ],
    );
}
