//! The CPU executor: runs a graph node by node in topological order, freeing each
//! intermediate value after its last use.
//!
//! Constant-weight DequantizeLinear -> MatMul/Gemm/Conv pairs run as one fused
//! dequantize-GEMM or dequantize-Conv ([`crate::cpu::fusion`]; off with
//! `CC_NO_FUSION=1`).

use crate::cpu::cb_fusion;
use crate::cpu::fusion;
use crate::cpu::fusion_qdq;
use crate::cpu::kernels::{self, Activation, KernelCx};
use crate::cpu::parallel::ParallelPool;
use cc_ir::{Dim, Error, Executor, Graph, NodeId, Result, Tensor, ValueId, ValueType};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Runs graphs on the CPU with a fixed number of threads.
pub struct CpuExecutor {
    /// Runs kernels' parallel loops (see [`crate::cpu::parallel`]).
    par: ParallelPool,
    threads: usize,
    aligned: Mutex<AlignedConsts>,
    /// Number of DequantizeLinear + MatMul/Gemm pairs run fused (see [`fusion`]).
    dq_fused: AtomicU64,
    /// Number of codebook-lookup + MatMul/Gemm pairs run fused (see [`cb_fusion`]).
    cb_fused: AtomicU64,
    /// Number of QuantizeLinear + DequantizeLinear pairs run fused (see [`fusion_qdq`]).
    fq_fused: AtomicU64,
    /// Number of DequantizeLinear + Conv pairs run fused (see [`fusion`]).
    dq_convs: AtomicU64,
    /// Number of codebook-lookup + Conv pairs run fused (see [`cb_fusion`]).
    cb_convs: AtomicU64,
}

/// Aligned copies of f32 constants whose bytes are not 4-byte aligned (as imported from
/// protobuf), made once and reused across runs so kernels borrow instead of copying.
/// Keyed by the original's data address and length; the original is kept alive beside
/// its copy, so an address cannot be reused by other data while it is a key.
#[derive(Default)]
struct AlignedConsts {
    map: HashMap<(usize, usize), (Tensor, Tensor)>,
    bytes: usize,
}

/// Above this many cached bytes the cache starts over.
const ALIGNED_CACHE_LIMIT: usize = 1 << 31;

impl AlignedConsts {
    /// The aligned copy of `t`, if `t` is an unaligned f32 tensor.
    fn get(&mut self, t: &Tensor) -> Result<Option<Tensor>> {
        if t.dtype() != cc_ir::DType::F32 {
            return Ok(None);
        }
        let raw = t.raw()?;
        if bytemuck::try_cast_slice::<u8, f32>(raw).is_ok() {
            return Ok(None);
        }
        let key = (raw.as_ptr() as usize, raw.len());
        if let Some((_, copy)) = self.map.get(&key) {
            return Ok(Some(copy.reshaped(t.shape().to_vec())?));
        }
        if self.bytes + raw.len() > ALIGNED_CACHE_LIMIT {
            self.map.clear();
            self.bytes = 0;
        }
        let copy = Tensor::from_f32_vec(t.shape().to_vec(), t.to_f32()?)?;
        self.bytes += raw.len();
        self.map.insert(key, (t.clone(), copy.clone()));
        Ok(Some(copy))
    }
}

impl CpuExecutor {
    /// An executor using `threads` threads (at least 1).
    pub fn new(threads: usize) -> Result<CpuExecutor> {
        let threads = threads.max(1);
        keep_freed_memory();
        let par = ParallelPool::new(threads, flush_denormals)
            .map_err(|e| Error::invalid(format!("cannot start {threads} threads: {e}")))?;
        Ok(CpuExecutor {
            par,
            threads,
            aligned: Mutex::new(AlignedConsts::default()),
            dq_fused: AtomicU64::new(0),
            cb_fused: AtomicU64::new(0),
            fq_fused: AtomicU64::new(0),
            dq_convs: AtomicU64::new(0),
            cb_convs: AtomicU64::new(0),
        })
    }

    /// Number of threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// How many DequantizeLinear + MatMul/Gemm pairs this executor has run as one fused
    /// dequantize-GEMM so far, over all runs (see [`crate::cpu::fusion`]).
    pub fn fused_dq_gemms(&self) -> u64 {
        self.dq_fused.load(Ordering::Relaxed)
    }

    /// How many codebook lookups + MatMul/Gemm readers this executor has run as one
    /// fused table-lookup GEMM so far, over all runs (see [`crate::cpu::cb_fusion`]).
    pub fn fused_cb_gemms(&self) -> u64 {
        self.cb_fused.load(Ordering::Relaxed)
    }

    /// How many QuantizeLinear + DequantizeLinear pairs this executor has run as one
    /// fake-quantization pass so far, over all runs (see [`fusion_qdq`]).
    pub fn fused_fake_quants(&self) -> u64 {
        self.fq_fused.load(Ordering::Relaxed)
    }

    /// How many DequantizeLinear + Conv pairs this executor has run as one fused
    /// dequantize-Conv so far, over all runs (see [`crate::cpu::fusion`]).
    pub fn fused_dq_convs(&self) -> u64 {
        self.dq_convs.load(Ordering::Relaxed)
    }

    /// How many codebook lookups + Conv readers this executor has run as one fused
    /// codebook Conv so far, over all runs (see [`crate::cpu::cb_fusion`]).
    pub fn fused_cb_convs(&self) -> u64 {
        self.cb_convs.load(Ordering::Relaxed)
    }
}

/// Asks glibc's allocator to serve large buffers from its heap and to keep freed memory
/// instead of returning it to the system at once: without this every large activation
/// is a fresh `mmap` whose pages fault in one by one, which costs more than the
/// arithmetic on it. Process-wide; the executor is the process's main consumer of memory
/// when it runs.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt only adjusts allocator tuning parameters; both values are in
            // the documented ranges (the mmap threshold may be at most 32 MiB on 64-bit).
            unsafe {
                mallopt(M_MMAP_THRESHOLD, 32 << 20);
                mallopt(M_TRIM_THRESHOLD, 512 << 20);
            }
        });
    }
}

/// Sets the calling thread to flush denormal floats to zero (FTZ and DAZ on x86-64):
/// trained weights and activations hold denormals whose arithmetic is tens of times
/// slower; flushing them changes results by less than 1e-38 per value.
fn flush_denormals() {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse"))]
    {
        #[allow(deprecated)]
        // SAFETY: only the FTZ (bit 15) and DAZ (bit 6) flags of this thread's MXCSR
        // register change; SSE is always present on x86-64.
        unsafe {
            use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
            _mm_setcsr(_mm_getcsr() | 0x8040);
        }
    }
}

/// Flushes denormals on the calling thread (see [`flush_denormals`]) while alive, and
/// puts its previous floating-point mode back when dropped.
struct FlushDenormals {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse"))]
    saved: u32,
}

impl FlushDenormals {
    fn enter() -> FlushDenormals {
        #[cfg(all(target_arch = "x86_64", target_feature = "sse"))]
        {
            #[allow(deprecated)]
            // SAFETY: reading this thread's MXCSR register has no side effects.
            let saved = unsafe { std::arch::x86_64::_mm_getcsr() };
            flush_denormals();
            FlushDenormals { saved }
        }
        #[cfg(not(all(target_arch = "x86_64", target_feature = "sse")))]
        FlushDenormals {}
    }
}

impl Drop for FlushDenormals {
    fn drop(&mut self) {
        #[cfg(all(target_arch = "x86_64", target_feature = "sse"))]
        #[allow(deprecated)]
        // SAFETY: restores the value this thread's MXCSR held before `enter`.
        unsafe {
            std::arch::x86_64::_mm_setcsr(self.saved)
        };
    }
}

/// The graph inputs that take a value from the caller (those without data).
pub fn runtime_inputs(g: &Graph) -> Vec<ValueId> {
    g.inputs()
        .iter()
        .copied()
        .filter(|&v| g.const_data(v).is_none())
        .collect()
}

/// Checks a caller's tensor against the input's declared type: element type, rank and
/// every known dimension; symbolic dimensions must bind consistently across inputs.
fn check_input(
    g: &Graph,
    v: ValueId,
    t: &Tensor,
    symbols: &mut HashMap<String, usize>,
) -> Result<()> {
    let name = g.value(v).name();
    let Some(ValueType::Tensor { elem, shape }) = &g.value(v).ty else {
        return Ok(());
    };
    if let Some(e) = elem {
        if *e != t.dtype() {
            return Err(Error::invalid(format!(
                "input {name:?} expects element type {e} but got {}",
                t.dtype()
            )));
        }
    }
    let Some(dims) = shape else { return Ok(()) };
    let bad = || {
        Error::invalid(format!(
            "input {name:?} expects shape {} but got {:?}",
            ValueType::Tensor {
                elem: *elem,
                shape: shape.clone()
            },
            t.shape()
        ))
    };
    if dims.len() != t.shape().len() {
        return Err(bad());
    }
    for (d, &actual) in dims.iter().zip(t.shape()) {
        match d {
            Dim::Known(k) if *k != actual as i64 => return Err(bad()),
            Dim::Sym(s) => {
                let bound = *symbols.entry(s.clone()).or_insert(actual);
                if bound != actual {
                    return Err(Error::invalid(format!(
                        "input {name:?}: dimension {s} is {actual} here but {bound} in another input"
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

impl Executor for CpuExecutor {
    fn run(&self, g: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        let _flushing = FlushDenormals::enter();
        // Compressed weights run as their DequantizeLinear lowering: a MatMul/Gemm/Conv
        // reader takes the fused dequantize-GEMM/-Conv (the f32 weight is never built
        // whole); other readers get the weight dequantized at run time.
        if cc_ir::compressed::has_compressed(g) {
            // Shared weights (randomized parameter sharing) are decoded straight to f32
            // constants from their hash, not through the integer ops they are written as.
            let decoded = cc_ir::compressed::shared::materialize(g)?;
            let g = decoded.as_ref().unwrap_or(g);
            let lowered = cc_ir::compressed::lower_compressed(g)?;
            return self.par.install(|| self.run_on_pool(&lowered, inputs));
        }
        self.par.install(|| self.run_on_pool(g, inputs))
    }
}

impl CpuExecutor {
    fn run_on_pool(&self, g: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        let run_started = std::time::Instant::now();
        let order = g.topo_order()?;
        let wanted = runtime_inputs(g);
        if inputs.len() != wanted.len() {
            let names: Vec<&str> = wanted.iter().map(|&v| g.value(v).name()).collect();
            return Err(Error::invalid(format!(
                "the model takes {} input(s) ({}) but {} were given",
                wanted.len(),
                names.join(", "),
                inputs.len()
            )));
        }
        let mut env: HashMap<ValueId, Tensor> = HashMap::new();
        let mut symbols = HashMap::new();
        for (&v, t) in wanted.iter().zip(inputs) {
            check_input(g, v, t, &mut symbols)?;
            env.insert(v, t.clone());
        }
        let last_use = last_uses(g, &order);
        // Constants read by nodes, realigned where their bytes are not f32-aligned.
        let mut consts: HashMap<ValueId, Tensor> = HashMap::new();
        {
            let mut cache = self
                .aligned
                .lock()
                .map_err(|_| Error::invalid("CPU executor: constant cache poisoned"))?;
            for &id in &order {
                for &v in g.node(id).inputs().iter().flatten() {
                    if env.contains_key(&v) || consts.contains_key(&v) {
                        continue;
                    }
                    if let Some(t) = g.const_data(v) {
                        if let Some(copy) = cache.get(t)? {
                            consts.insert(v, copy);
                        }
                    }
                }
            }
        }
        let cx = KernelCx::new(self.threads);
        let fusions = plan_fusions(g, &order);
        let mut absorbed: HashSet<NodeId> = HashSet::new();
        // --- dequantize-GEMM fusion (fusion.rs) ---
        let dq_plan = if fusion::enabled() {
            fusion::plan(g, &order)
        } else {
            HashMap::new()
        };
        absorbed.extend(dq_plan.values().copied());
        // --- end dequantize-GEMM fusion ---
        // --- codebook lookups (cb_fusion.rs) ---
        let cb_plan = cb_fusion::plan(g, &order, fusion::enabled());
        absorbed.extend(cb_plan.values().flat_map(cb_fusion::Step::absorbed));
        // --- end codebook lookups ---
        // --- fake-quantization fusion (fusion_qdq.rs) ---
        let fq_plan = if fusion::enabled() {
            fusion_qdq::plan(g, &order)
        } else {
            HashMap::new()
        };
        // --- end fake-quantization fusion ---
        let mut profile = Profile::from_env();
        if let Some(p) = profile.as_mut() {
            p.planning = run_started.elapsed();
        }
        for (step, &id) in order.iter().enumerate() {
            let node = g.node(id);
            let started = profile.as_ref().map(|_| std::time::Instant::now());
            let mut dq_done = match dq_plan.get(&id) {
                Some(&dq) => {
                    let act = fusions.get(&id).copied();
                    let done = self.run_dq_fused(g, (id, dq, act), &mut env, &consts, &cx)?;
                    if let (true, Some((act_node, _))) = (done, act) {
                        absorbed.insert(act_node);
                    }
                    done
                }
                None => false,
            };
            let cb_done = match cb_plan.get(&id) {
                Some(s) => {
                    let act = fusions.get(&id).copied().filter(|_| s.fused);
                    let done = self.run_cb(g, (id, s, act), &mut env, &consts, &cx)?;
                    if let (true, Some((act_node, _))) = (done, act) {
                        absorbed.insert(act_node);
                    }
                    done
                }
                None => false,
            };
            if let Some(&(dq, fq)) = fq_plan.get(&id) {
                let x = node
                    .input(0)
                    .and_then(|v| env.get(&v).or_else(|| g.const_data(v)));
                if let Some(t) = x.map(|x| fusion_qdq::run(x, fq)).transpose()?.flatten() {
                    if let Some(v) = g.node(dq).output(0) {
                        env.insert(v, t);
                    }
                    absorbed.insert(dq);
                    self.fq_fused.fetch_add(1, Ordering::Relaxed);
                    dq_done = true;
                }
            }
            if !absorbed.contains(&id) && !dq_done && !cb_done {
                let fused = match fusions.get(&id) {
                    Some(&(act_node, act)) => {
                        run_fused(g, id, act, &env, &consts, &cx)?.map(|t| (act_node, t))
                    }
                    None => None,
                };
                if let Some((act_node, t)) = fused {
                    absorbed.insert(act_node);
                    if let Some(v) = g.node(act_node).output(0) {
                        env.insert(v, t);
                    }
                } else {
                    let outs = run_one(g, id, &env, &consts, &cx)?;
                    for (slot, t) in outs.into_iter().enumerate() {
                        if let Some(v) = node.output(slot) {
                            env.insert(v, t);
                        }
                    }
                }
            }
            if let (Some(p), Some(t)) = (profile.as_mut(), started) {
                p.add(g, id, t.elapsed());
            }
            for v in node.inputs().iter().flatten() {
                if last_use.get(v) == Some(&step) && !g.is_output(*v) {
                    env.remove(v);
                }
            }
        }
        if let Some(p) = profile {
            p.report();
        }
        g.outputs()
            .iter()
            .map(|&v| {
                env.get(&v)
                    .or_else(|| g.const_data(v))
                    .cloned()
                    .ok_or_else(|| {
                        Error::invalid(format!("output {:?} was not computed", g.value(v).name()))
                    })
            })
            .collect()
    }
}

impl CpuExecutor {
    /// Runs reader `id` fused with its DequantizeLinear `dq` (planned by
    /// [`fusion::plan`]) and, when `act` names an activation node fused into the
    /// reader, with that activation too; stores the output (of the activation node if
    /// any): `Ok(true)`. When the fused kernel cannot take the inputs, runs `dq` alone,
    /// stores its output and returns `Ok(false)` so the caller runs the reader as usual.
    fn run_dq_fused(
        &self,
        g: &Graph,
        (id, dq, act): (NodeId, NodeId, Option<(NodeId, Activation)>),
        env: &mut HashMap<ValueId, Tensor>,
        consts: &HashMap<ValueId, Tensor>,
        cx: &KernelCx<'_>,
    ) -> Result<bool> {
        let lookup = |v: ValueId| {
            env.get(&v)
                .or_else(|| consts.get(&v))
                .or_else(|| g.const_data(v))
        };
        if let Some(t) = fusion::run_with(g, id, dq, lookup, act.map(|a| a.1), cx)? {
            let writer = act.map_or(id, |a| a.0);
            if let Some(v) = g.node(writer).output(0) {
                env.insert(v, t);
            }
            let counter = if matches!(g.node(id).op, cc_ir::Op::Conv(_)) {
                &self.dq_convs
            } else {
                &self.dq_fused
            };
            counter.fetch_add(1, Ordering::Relaxed);
            return Ok(true);
        }
        let outs = run_one(g, dq, env, consts, cx)?;
        for (slot, t) in outs.into_iter().enumerate() {
            if let Some(v) = g.node(dq).output(slot) {
                env.insert(v, t);
            }
        }
        Ok(false)
    }
}

impl CpuExecutor {
    /// Runs codebook step `s` at node `id` (planned by [`cb_fusion::plan`]) and, when
    /// `act` names an activation node fused into a Conv reader, that activation too;
    /// stores the output (of the activation node if any): `Ok(true)`. When the kernel
    /// cannot take the inputs, runs the lookup's absorbed nodes apart, stores their
    /// outputs and returns `Ok(false)` so the caller runs node `id` as usual.
    fn run_cb(
        &self,
        g: &Graph,
        (id, s, act): (NodeId, &cb_fusion::Step, Option<(NodeId, Activation)>),
        env: &mut HashMap<ValueId, Tensor>,
        consts: &HashMap<ValueId, Tensor>,
        cx: &KernelCx<'_>,
    ) -> Result<bool> {
        let lookup = |v: ValueId| {
            env.get(&v)
                .or_else(|| consts.get(&v))
                .or_else(|| g.const_data(v))
        };
        if let Some(t) = cb_fusion::run(g, id, s, lookup, act.map(|a| a.1), cx)? {
            let writer = act.map_or(id, |a| a.0);
            if let Some(v) = g.node(writer).output(0) {
                env.insert(v, t);
            }
            if s.fused {
                let counter = if matches!(g.node(id).op, cc_ir::Op::Conv(_)) {
                    &self.cb_convs
                } else {
                    &self.cb_fused
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(true);
        }
        for n in s.nodes().into_iter().filter(|&n| n != id) {
            let outs = run_one(g, n, env, consts, cx)?;
            for (slot, t) in outs.into_iter().enumerate() {
                if let Some(v) = g.node(n).output(slot) {
                    env.insert(v, t);
                }
            }
        }
        Ok(false)
    }
}

/// Time spent per op type in one run, collected when env `CC_PROFILE` is set and printed
/// to stderr at the end of the run (slowest first).
struct Profile {
    per_op: std::collections::BTreeMap<String, (std::time::Duration, usize)>,
    /// With `CC_PROFILE=nodes`, every node's own line too.
    per_node: Option<Vec<(String, std::time::Duration)>>,
    /// Time from the start of the run to its first node (checks and plans).
    planning: std::time::Duration,
}

impl Profile {
    fn from_env() -> Option<Profile> {
        std::env::var_os("CC_PROFILE").map(|v| Profile {
            per_op: Default::default(),
            per_node: (v == "nodes").then(Vec::new),
            planning: Default::default(),
        })
    }

    fn add(&mut self, g: &Graph, id: NodeId, took: std::time::Duration) {
        let op = &g.node(id).op;
        if let Some(nodes) = self.per_node.as_mut() {
            let shapes: Vec<String> = g
                .node(id)
                .inputs()
                .iter()
                .flatten()
                .map(|&v| match &g.value(v).ty {
                    Some(t) => t.to_string(),
                    None => "?".into(),
                })
                .collect();
            nodes.push((format!("{} {}", g.node_label(id), shapes.join(" ")), took));
        }
        let e = self.per_op.entry(op.onnx_type().1.to_string()).or_default();
        e.0 += took;
        e.1 += 1;
    }

    fn report(self) {
        for (label, took) in self.per_node.iter().flatten() {
            eprintln!("  {:>9.3} ms  {label}", took.as_secs_f64() * 1e3);
        }
        let mut rows: Vec<_> = self.per_op.into_iter().collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.1 .0));
        let total: f64 = rows.iter().map(|r| r.1 .0.as_secs_f64()).sum();
        eprintln!(
            "CC_PROFILE: {:.3} ms in nodes, {:.3} ms planning the run",
            total * 1e3,
            self.planning.as_secs_f64() * 1e3
        );
        for (op, (took, n)) in rows {
            eprintln!(
                "  {op:<24} {:>9.3} ms  {n:>5} nodes",
                took.as_secs_f64() * 1e3
            );
        }
    }
}

/// For each value read by a node, the step (index in `order`) of its last reader.
fn last_uses(g: &Graph, order: &[NodeId]) -> HashMap<ValueId, usize> {
    let mut last = HashMap::new();
    for (step, &id) in order.iter().enumerate() {
        for v in g.node(id).inputs().iter().flatten() {
            last.insert(*v, step);
        }
    }
    last
}

/// Producer nodes (Conv) whose single output is read only by an activation node (Relu,
/// or Clip with constant bounds) and is not a graph output: the producer's kernel can
/// apply the activation itself. Maps producer -> (activation node, activation).
fn plan_fusions(g: &Graph, order: &[NodeId]) -> HashMap<NodeId, (NodeId, Activation)> {
    let mut plan = HashMap::new();
    for &id in order {
        let node = g.node(id);
        if !matches!(node.op, cc_ir::Op::Conv(_)) || node.outputs().len() != 1 {
            continue;
        }
        let Some(v) = node.output(0) else { continue };
        if g.is_output(v) {
            continue;
        }
        let [u] = g.value(v).uses() else { continue };
        let user = g.node(u.node());
        if user.input(0) != Some(v) || user.outputs().len() != 1 || user.output(0).is_none() {
            continue;
        }
        let rest = &user.inputs()[1..];
        if rest
            .iter()
            .flatten()
            .any(|&c| g.const_data(c).is_none() || c == v)
        {
            continue;
        }
        let mut consts: Vec<Option<&Tensor>> = vec![None];
        consts.extend(rest.iter().map(|c| c.and_then(|c| g.const_data(c))));
        if let Some(act) = Activation::of(&user.op, &consts) {
            plan.insert(id, (u.node(), act));
        }
    }
    plan
}

/// Runs a producer with its activation fused; `Ok(None)` when its kernel cannot.
fn run_fused(
    g: &Graph,
    id: NodeId,
    act: Activation,
    env: &HashMap<ValueId, Tensor>,
    consts: &HashMap<ValueId, Tensor>,
    cx: &KernelCx<'_>,
) -> Result<Option<Tensor>> {
    let inputs = gather_inputs(g, id, env, consts)?;
    let at = |e: Error| Error::invalid(format!("node {}: {e}", g.node_label(id)));
    kernels::run_fused(&g.node(id).op, act, &inputs, cx).map_err(at)
}

/// The tensors a node reads, from the environment or the graph's constants.
fn gather_inputs<'a>(
    g: &'a Graph,
    id: NodeId,
    env: &'a HashMap<ValueId, Tensor>,
    consts: &'a HashMap<ValueId, Tensor>,
) -> Result<Vec<Option<&'a Tensor>>> {
    let node = g.node(id);
    let mut inputs: Vec<Option<&Tensor>> = Vec::with_capacity(node.inputs().len());
    for slot in node.inputs() {
        inputs.push(match slot {
            None => None,
            Some(v) => Some(
                env.get(v)
                    .or_else(|| consts.get(v))
                    .or_else(|| g.const_data(*v))
                    .ok_or_else(|| {
                        Error::invalid(format!(
                            "node {}: input {:?} has no value",
                            g.node_label(id),
                            g.value(*v).name()
                        ))
                    })?,
            ),
        });
    }
    Ok(inputs)
}

fn run_one(
    g: &Graph,
    id: NodeId,
    env: &HashMap<ValueId, Tensor>,
    consts: &HashMap<ValueId, Tensor>,
    cx: &KernelCx<'_>,
) -> Result<Vec<Tensor>> {
    let node = g.node(id);
    let inputs = gather_inputs(g, id, env, consts)?;
    let at = |e: Error| Error::invalid(format!("node {}: {e}", g.node_label(id)));
    match kernels::run_node(&node.op, &inputs, node.outputs().len(), cx).map_err(at)? {
        Some(outs) => Ok(outs),
        None => {
            let types: Vec<String> = inputs
                .iter()
                .map(|t| {
                    t.map(|t| t.dtype().to_string())
                        .unwrap_or_else(|| "_".into())
                })
                .collect();
            let (domain, op) = node.op.onnx_type();
            Err(Error::unsupported(format!(
                "node {}: the CPU executor does not support {}{op} on ({})",
                g.node_label(id),
                if domain.is_empty() {
                    String::new()
                } else {
                    format!("{domain}.")
                },
                types.join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_ir::op::{BinaryOp, Op, UnaryOp};
    use cc_ir::types::known_shape;
    use cc_ir::DType;

    fn add_relu() -> Graph {
        let mut g = Graph::new("g");
        let x = g
            .add_value("x", Some(ValueType::tensor(DType::F32, known_shape(&[2]))))
            .unwrap();
        let b = g
            .add_const("b", Tensor::from_f32(vec![2], vec![1.0, -5.0]).unwrap())
            .unwrap();
        let s = g.add_value("s", None).unwrap();
        let y = g.add_value("y", None).unwrap();
        g.set_inputs(vec![x]);
        g.add_node(
            "add",
            Op::Binary(BinaryOp::Add),
            vec![Some(x), Some(b)],
            vec![Some(s)],
        )
        .unwrap();
        g.add_node(
            "relu",
            Op::Unary(UnaryOp::Relu),
            vec![Some(s)],
            vec![Some(y)],
        )
        .unwrap();
        g.set_outputs(vec![y]);
        g
    }

    #[test]
    fn runs_a_small_graph() {
        let g = add_relu();
        let ex = CpuExecutor::new(2).unwrap();
        let x = Tensor::from_f32(vec![2], vec![2.0, 3.0]).unwrap();
        let out = ex.run(&g, &[x]).unwrap();
        assert_eq!(out[0].to_f32().unwrap(), vec![3.0, 0.0]);
    }

    /// x -> Conv(1x1, weight 2) -> Clip[0, 1] -> y; with `share`, the Conv output is
    /// also a graph output (so the Clip must not be fused).
    fn conv_clip(share: bool) -> Graph {
        let mut g = Graph::new("g");
        let x = g
            .add_value(
                "x",
                Some(ValueType::tensor(DType::F32, known_shape(&[1, 1, 1, 3]))),
            )
            .unwrap();
        // Unaligned constant data: one byte of offset inside a shared buffer.
        let bytes = bytes::Bytes::from(vec![0u8, 0, 0, 0, 0x40, 0, 0, 0]).slice(1..5);
        let w = g
            .add_const(
                "w",
                Tensor::from_raw(DType::F32, vec![1, 1, 1, 1], bytes).unwrap(),
            )
            .unwrap();
        let lo = g.add_const("lo", Tensor::scalar_f32(0.0)).unwrap();
        let hi = g.add_const("hi", Tensor::scalar_f32(1.0)).unwrap();
        let c = g.add_value("c", None).unwrap();
        let y = g.add_value("y", None).unwrap();
        g.set_inputs(vec![x]);
        g.add_node(
            "conv",
            Op::Conv(Default::default()),
            vec![Some(x), Some(w)],
            vec![Some(c)],
        )
        .unwrap();
        g.add_node(
            "clip",
            Op::Clip,
            vec![Some(c), Some(lo), Some(hi)],
            vec![Some(y)],
        )
        .unwrap();
        g.set_outputs(if share { vec![y, c] } else { vec![y] });
        g
    }

    #[test]
    fn activations_fuse_into_conv_only_when_nothing_else_reads_the_conv() {
        let x = Tensor::from_f32(vec![1, 1, 1, 3], vec![-1.0, 0.25, 3.0]).unwrap();
        let ex = CpuExecutor::new(2).unwrap();
        let g = conv_clip(false);
        let order = g.topo_order().unwrap();
        assert_eq!(plan_fusions(&g, &order).len(), 1);
        // The weight is 2.0 stored unaligned: realigned, then applied.
        let out = ex.run(&g, std::slice::from_ref(&x)).unwrap();
        assert_eq!(out[0].to_f32().unwrap(), vec![0.0, 0.5, 1.0]);
        // Second run reuses the cached aligned weight.
        let again = ex.run(&g, std::slice::from_ref(&x)).unwrap();
        assert_eq!(again[0], out[0]);
        let g = conv_clip(true);
        let order = g.topo_order().unwrap();
        assert!(plan_fusions(&g, &order).is_empty());
        let out = ex.run(&g, &[x]).unwrap();
        assert_eq!(out[0].to_f32().unwrap(), vec![0.0, 0.5, 1.0]);
        assert_eq!(out[1].to_f32().unwrap(), vec![-2.0, 0.5, 6.0]);
    }

    #[test]
    fn bad_inputs_are_errors_naming_the_input() {
        let g = add_relu();
        let ex = CpuExecutor::new(1).unwrap();
        let err = ex.run(&g, &[]).unwrap_err().to_string();
        assert!(err.contains("takes 1 input(s) (x)"), "{err}");
        let wrong_shape = Tensor::from_f32(vec![3], vec![0.0; 3]).unwrap();
        let err = ex.run(&g, &[wrong_shape]).unwrap_err().to_string();
        assert!(err.contains("\"x\" expects shape f32[2]"), "{err}");
        let wrong_type = Tensor::from_i64(vec![2], vec![0; 2]).unwrap();
        let err = ex.run(&g, &[wrong_type]).unwrap_err().to_string();
        assert!(err.contains("element type f32"), "{err}");
    }
}
