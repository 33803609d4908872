//! Running a plan on the device: NVRTC compiles the generated source once, the weight
//! blob is uploaded once, and each run copies the inputs into the workspace, launches
//! every kernel in order and copies the outputs back.
//!
//! The driver (`libcuda`) and NVRTC (`libnvrtc`) are loaded at run time through cudarc;
//! cudarc panics when a library is missing, so [`check`] probes for them first (and
//! catches a panic from the device query), and every entry point calls it.

use super::plan::Plan;
use cc_ir::{Error, Graph, Result, Tensor};

#[cfg(feature = "cuda")]
mod imp {
    use super::super::plan::{Plan, Space};
    use super::super::source;
    use cc_ir::{Error, Result, Tensor};
    use cudarc::driver::{
        CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, LaunchConfig,
        PushKernelArg,
    };
    use std::sync::Arc;

    fn dev(what: &str, e: impl std::fmt::Debug) -> Error {
        Error::unsupported(format!("cuda: {what}: {e:?}"))
    }

    pub fn check() -> Result<()> {
        // SAFETY: only probes whether the shared libraries can be opened.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(Error::unsupported(
                "no CUDA driver: libcuda.so not found (is an NVIDIA driver installed?)",
            ));
        }
        check_nvrtc()?;
        let count = std::panic::catch_unwind(CudaContext::device_count)
            .map_err(|_| Error::unsupported("cuda: the driver library could not be used"))?
            .map_err(|e| Error::unsupported(format!("no CUDA device: {e:?}")))?;
        if count < 1 {
            return Err(Error::unsupported(
                "no CUDA device: the driver reports 0 devices",
            ));
        }
        Ok(())
    }

    pub fn check_nvrtc() -> Result<()> {
        // SAFETY: only probes whether the shared library can be opened.
        if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            Ok(())
        } else {
            Err(Error::unsupported(
                "no NVRTC: libnvrtc.so not found (install the CUDA runtime compiler or set LD_LIBRARY_PATH)",
            ))
        }
    }

    pub fn compile(plan: &Plan) -> Result<cudarc::nvrtc::Ptx> {
        check_nvrtc()?;
        let src = source::render(plan, "model");
        let opts = cudarc::nvrtc::CompileOptions {
            name: Some("model.cu".into()),
            ..Default::default()
        };
        std::panic::catch_unwind(|| cudarc::nvrtc::compile_ptx_with_opts(&src, opts))
            .map_err(|_| Error::unsupported("cuda: NVRTC could not be used"))?
            .map_err(|e| dev("NVRTC compilation failed", e))
    }

    pub struct Device {
        stream: Arc<CudaStream>,
        _module: Arc<CudaModule>,
        funcs: Vec<CudaFunction>,
        weights: CudaSlice<u8>,
        work: CudaSlice<u8>,
    }

    impl Device {
        pub fn new(plan: &Plan) -> Result<Device> {
            check()?;
            let ptx = compile(plan)?;
            let ctx = CudaContext::new(0).map_err(|e| dev("creating a context", e))?;
            let stream = ctx.default_stream();
            let module = ctx
                .load_module(ptx)
                .map_err(|e| dev("loading the module", e))?;
            let funcs = plan
                .kernels
                .iter()
                .map(|k| {
                    module
                        .load_function(&k.name)
                        .map_err(|e| dev(&format!("kernel {}", k.name), e))
                })
                .collect::<Result<Vec<_>>>()?;
            // The blob is never empty on the device (a graph without weights).
            let blob = if plan.weights.is_empty() {
                vec![0u8; 4]
            } else {
                plan.weights.clone()
            };
            let weights = stream
                .clone_htod(&blob)
                .map_err(|e| dev("uploading the weights", e))?;
            let work = stream
                .alloc_zeros::<u8>(plan.workspace_bytes)
                .map_err(|e| dev("allocating the workspace", e))?;
            Ok(Device {
                stream,
                _module: module,
                funcs,
                weights,
                work,
            })
        }

        pub fn run(&mut self, plan: &Plan, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
            for (io, t) in plan.inputs.iter().zip(inputs) {
                let data = t.f32_view()?;
                let bytes: &[u8] = bytemuck::cast_slice(&data);
                let mut dst = self.work.slice_mut(io.offset..io.offset + bytes.len());
                self.stream
                    .memcpy_htod(bytes, &mut dst)
                    .map_err(|e| dev(&format!("copying input {:?}", io.name), e))?;
            }
            let (wbase, _wsync) = self.weights.device_ptr(&self.stream);
            let (sbase, _ssync) = self.work.device_ptr(&self.stream);
            for (k, f) in plan.kernels.iter().zip(&self.funcs) {
                let ptrs: Vec<u64> = k
                    .args
                    .iter()
                    .map(|a| match a.space {
                        Space::Weights => wbase + a.offset as u64,
                        Space::Workspace => sbase + a.offset as u64,
                    })
                    .collect();
                let mut b = self.stream.launch_builder(f);
                for p in &ptrs {
                    b.arg(p);
                }
                let cfg = LaunchConfig {
                    grid_dim: (k.grid[0], k.grid[1], k.grid[2]),
                    block_dim: (k.block, 1, 1),
                    shared_mem_bytes: 0,
                };
                // SAFETY: the kernel's parameters are exactly these device pointers,
                // into buffers the plan sized for every access the kernel makes.
                unsafe { b.launch(cfg) }.map_err(|e| dev(&format!("launching {}", k.name), e))?;
            }
            drop((_wsync, _ssync));
            let mut outs = Vec::with_capacity(plan.outputs.len());
            for io in &plan.outputs {
                let n: usize = io.shape.iter().product();
                let view = self.work.slice(io.offset..io.offset + 4 * n);
                let bytes = self
                    .stream
                    .clone_dtoh(&view)
                    .map_err(|e| dev(&format!("copying output {:?}", io.name), e))?;
                let vals: Vec<f32> = bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                outs.push(Tensor::from_f32_vec(io.shape.clone(), vals)?);
            }
            Ok(outs)
        }
    }
}

/// Whether CUDA kernels can run here: the error says why not (no driver library, no
/// NVRTC library, no device, or built without the `cuda` feature).
pub fn check() -> Result<()> {
    #[cfg(feature = "cuda")]
    {
        imp::check()
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(Error::unsupported(
            "cc-backends was built without the `cuda` feature",
        ))
    }
}

/// Compiles the plan's generated source with NVRTC and returns the PTX. Needs only
/// the NVRTC library (no driver, no device); the error says why it cannot run.
pub fn compile_ptx(plan: &Plan) -> Result<String> {
    #[cfg(feature = "cuda")]
    {
        let ptx = imp::compile(plan)?;
        std::panic::catch_unwind(|| ptx.to_src())
            .map_err(|_| Error::invalid("cuda: NVRTC returned PTX that is not text"))
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = plan;
        check().map(|_| String::new())
    }
}

/// Runs one graph on the GPU: kernels compiled once, weights uploaded once.
pub struct CudaRunner {
    plan: Plan,
    #[cfg(feature = "cuda")]
    device: imp::Device,
}

impl CudaRunner {
    /// Plans `g` (static shapes), compiles its kernels with NVRTC and uploads the
    /// weights; fails with [`check`]'s reason when CUDA cannot run here.
    pub fn new(g: &Graph) -> Result<CudaRunner> {
        check()?;
        let plan = super::plan::plan(g)?;
        CudaRunner::from_plan(plan)
    }

    /// Like [`CudaRunner::new`] for a plan made already.
    pub fn from_plan(plan: Plan) -> Result<CudaRunner> {
        #[cfg(feature = "cuda")]
        {
            let device = imp::Device::new(&plan)?;
            Ok(CudaRunner { plan, device })
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = plan;
            Err(check()
                .err()
                .unwrap_or_else(|| Error::unsupported("cuda: built without the `cuda` feature")))
        }
    }

    /// The plan being run.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Runs the graph on `inputs` (f32, the planned shapes), returning its outputs.
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        if inputs.len() != self.plan.inputs.len() {
            return Err(Error::invalid(format!(
                "{} inputs given, the graph takes {}",
                inputs.len(),
                self.plan.inputs.len()
            )));
        }
        for (io, t) in self.plan.inputs.iter().zip(inputs) {
            if t.shape() != io.shape.as_slice() || t.dtype() != cc_ir::DType::F32 {
                return Err(Error::invalid(format!(
                    "input {:?}: expected f32{:?}, got {}{:?}",
                    io.name,
                    io.shape,
                    t.dtype(),
                    t.shape()
                )));
            }
        }
        #[cfg(feature = "cuda")]
        {
            self.device.run(&self.plan, inputs)
        }
        #[cfg(not(feature = "cuda"))]
        {
            check().map(|_| Vec::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_explains_itself_and_runner_refuses_without_a_device() {
        match check() {
            Ok(()) => {} // a machine with a GPU
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("CUDA") || msg.contains("NVRTC") || msg.contains("cuda"),
                    "{msg}"
                );
                let g = Graph::new("empty");
                assert_eq!(CudaRunner::new(&g).err().map(|e| e.to_string()), Some(msg));
            }
        }
    }
}
