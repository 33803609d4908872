//! `quant{activations=static|dynamic}`: activation quantization for the ops whose weights
//! the pass quantizes (MatMul, Gemm, Conv).
//!
//! Choices follow onnxruntime's quantizers' defaults: activations are **uint8
//! asymmetric** (per tensor, scale and zero point from a range that always includes 0),
//! weights int8 symmetric per output channel (the pass's own `symmetric`/`bits` options
//! still choose the weights; activation quantization needs `bits=8` and
//! `granularity=channel`).
//!
//! - `static` (needs `--calib`): the data input of every quantized op is calibrated on
//!   the calibration inputs, run through the f32 graph in batches. The IR gets an
//!   explicit `QuantizeLinear → DequantizeLinear` pair (per-tensor constant scale and
//!   zero point) on that activation, shared by all quantized readers of the same value;
//!   weights stay compressed IR values (lowered to `DequantizeLinear` on export), so the
//!   written file is onnxruntime's QDQ form. Ranges (`calib=`):
//!   - `minmax`: the smallest and largest value seen;
//!   - `percentile`: onnxruntime's asymmetric percentile method on a 2048-bin histogram
//!     over `[-t, t]` (`t` the largest magnitude): `(100 - p) / 200` of the mass is cut
//!     on each side (`percentile=p`, default 99.99), the cut points are bin edges,
//!     clipped to the observed range;
//!   - `entropy`: the KL-divergence threshold search of TensorRT / onnxruntime's
//!     `HistogramCollector.get_entropy_threshold` on a 2048-bin histogram with 128
//!     quantized bins (TensorRT's sizes; onnxruntime defaults to 128 bins, which leaves
//!     one candidate): for each symmetric window around the zero bin, `p` is the window
//!     with the outside mass folded into its end bins, `q` the window merged into 128
//!     bins and spread back over `p`'s non-zero bins; both are smoothed (eps 1e-4) and
//!     the window with the least `KL(p‖q)` gives the range (clipped to the observed
//!     range). Unlike onnxruntime, `q` keeps fractions (onnxruntime truncates it to
//!     integers) and is zero where `p` is, as in TensorRT/MXNet.
//!
//!   onnxruntime grows its histograms batch by batch; here a first pass over the
//!   calibration data finds each activation's range and a second fills histograms of
//!   that fixed range (the same as onnxruntime's when the data comes in one batch).
//! - `dynamic`: what onnxruntime's `quantize_dynamic` emits for MatMul: the activation
//!   goes through `DynamicQuantizeLinear` (one per activation value), the reader becomes
//!   `MatMulInteger(x_q, W_q, x_zp[, W_zp])` → `Cast` to f32 → `Mul` by
//!   `x_scale × W_scale` (one weight scale per output column). Gemm (without `transA`) is
//!   rewritten the same way (`alpha` folded into the weight scales, `transB` weights
//!   stored transposed, the bias added after, scaled by `beta`). The weight codes are
//!   then plain integer constants (initializers) rather than compressed IR values,
//!   because `MatMulInteger` reads the codes themselves. Conv becomes
//!   `ConvInteger` → `Cast` → `Mul` (per-channel scales) → `Add` bias (see
//!   [`super::dyn_conv`]).

use super::Quant;
use crate::calibration::Calibration;
use crate::error::PassError;
use crate::options::Options;
use crate::pass::PassCx;
use cc_ir::op::BinaryOp;
use cc_ir::types::ValueType;
use cc_ir::{DType, Error, Executor, Graph, NodeId, Op, Tensor, ValueId};

/// Samples per calibration run.
const BATCH: usize = 32;
/// Histogram bins for `percentile` and `entropy`.
pub const HIST_BINS: usize = 2048;
/// Quantized bins of the entropy search (uint8/int8 ranges: 128 per side of zero).
pub const QUANT_BINS: usize = 128;

/// How activation ranges are found from calibration data.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CalibMethod {
    /// Smallest and largest value.
    MinMax,
    /// Percentile cut (the percentage kept, e.g. 99.99).
    Percentile(f64),
    /// KL-divergence threshold search.
    Entropy,
}

/// Activation quantization mode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activations {
    /// Weights only.
    None,
    /// Calibrated QuantizeLinear/DequantizeLinear pairs.
    Static(CalibMethod),
    /// DynamicQuantizeLinear + MatMulInteger.
    Dynamic,
}

impl Activations {
    /// Reads `activations`, `calib` and `percentile`; activation quantization needs
    /// `bits` = 8 and per-channel weights (`block` = `None`).
    pub fn from_options(o: &Options, bits: u32, block: Option<usize>) -> Result<Self, PassError> {
        let act = o.get_str("activations")?;
        let mode = match act {
            "static" => {
                let calib = match o.get_str("calib")? {
                    "percentile" => {
                        let p = o.get_str("percentile")?;
                        let v: f64 = p
                            .parse()
                            .ok()
                            .filter(|v: &f64| (50.0..=100.0).contains(v))
                            .ok_or_else(|| super::bad("percentile", p, "a number in 50..100"))?;
                        CalibMethod::Percentile(v)
                    }
                    "entropy" => CalibMethod::Entropy,
                    _ => CalibMethod::MinMax,
                };
                Activations::Static(calib)
            }
            "dynamic" => Activations::Dynamic,
            _ => Activations::None,
        };
        if mode != Activations::None && (bits != 8 || block.is_some()) {
            return Err(super::bad(
                "activations",
                act,
                "none with bits=4 or granularity=block (activation quantization uses 8-bit per-channel weights)",
            ));
        }
        Ok(mode)
    }
}

/// What activation quantization did (for the pass's statistics).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ActSummary {
    /// Activation values given a QuantizeLinear/DequantizeLinear pair or a
    /// DynamicQuantizeLinear.
    pub activations: usize,
    /// Ops now reading a quantized activation.
    pub ops: usize,
    /// Of those, Convs rewritten into ConvInteger (dynamic).
    pub convs: usize,
    /// Weights turned into integer constants (dynamic).
    pub weights: usize,
    /// Their elements.
    pub params: usize,
    /// Their f32 bytes.
    pub bytes_before: usize,
    /// Bytes of their codes, scales and zero points.
    pub bytes_after: usize,
}

/// The quantized ops whose data input (slot 0) gets quantized: MatMul/Gemm/Conv nodes
/// that read one of `weights` at slot 1, whose data input is not a constant nor of a
/// known element type other than f32, and that are not excluded by `ops`/`ignore`.
fn readers(q: &Quant, g: &Graph, weights: &[ValueId]) -> Result<Vec<NodeId>, PassError> {
    let mut out = Vec::new();
    for id in g.topo_order()? {
        let node = g.node(id);
        let op = match node.op {
            Op::MatMul => "MatMul",
            Op::Gemm { .. } => "Gemm",
            Op::Conv { .. } => "Conv",
            _ => continue,
        };
        let reads = node.input(1).is_some_and(|w| weights.contains(&w));
        let x = node.input(0);
        // QuantizeLinear's f32 scale and DynamicQuantizeLinear need f32 data.
        let x_ok = x.is_some_and(|x| {
            let elem = g.value(x).ty.as_ref().and_then(|t| t.elem());
            g.const_data(x).is_none() && elem.is_none_or(|e| e == DType::F32)
        });
        if reads && x_ok && q.select.ops.iter().any(|o| o == op) && !q.ignored(&node.name) {
            out.push(id);
        }
    }
    Ok(out)
}

/// The distinct data inputs of `nodes`, in order of first use.
fn activation_values(g: &Graph, nodes: &[NodeId]) -> Vec<ValueId> {
    let mut out: Vec<ValueId> = Vec::new();
    for &n in nodes {
        if let Some(x) = g.node(n).input(0) {
            if !out.contains(&x) {
                out.push(x);
            }
        }
    }
    out
}

/// Runs activation quantization before the weights are quantized: static calibrates on
/// the f32 graph and inserts QDQ pairs; dynamic rewrites MatMul/Gemm readers into
/// integer matmuls. Returns what it did.
pub fn apply(q: &Quant, g: &mut Graph, cx: &PassCx) -> Result<ActSummary, PassError> {
    match q.activations {
        Activations::None => Ok(ActSummary::default()),
        Activations::Static(method) => {
            let calib = cx.calibration().ok_or_else(|| {
                Error::invalid(
                    "activations=static needs calibration data (cc-compile --calib FILE.pb|DIR)",
                )
            })?;
            calib.check(g)?;
            let weights: Vec<ValueId> = q.targets(g)?.into_iter().map(|t| t.0).collect();
            let nodes = readers(q, g, &weights)?;
            let acts = activation_values(g, &nodes);
            let ranges = calibrate(g, cx.executor()?, calib, &acts, method)?;
            insert_qdq(g, &nodes, &acts, &ranges)?;
            Ok(ActSummary {
                activations: acts.len(),
                ops: nodes.len(),
                ..Default::default()
            })
        }
        Activations::Dynamic => dynamic(q, g),
    }
}

/// uint8 asymmetric scale and zero point for the range `[lo, hi]` (extended to include
/// 0), as onnxruntime's `compute_scale_zp`: `scale = (hi - lo) / 255`, zero point
/// `round(-lo / scale)`; a zero range gets scale 1 and zero point 0.
pub fn qparams(lo: f32, hi: f32) -> (f32, u8) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    if hi - lo <= 0.0 || !(hi - lo).is_finite() {
        return (1.0, 0);
    }
    let scale = (hi - lo) / 255.0;
    let zp = (-lo / scale).round_ties_even().clamp(0.0, 255.0);
    (scale, zp as u8)
}

/// Smallest and largest finite value of `xs` (`None` when there is none).
pub fn minmax(xs: &[f32]) -> Option<(f32, f32)> {
    xs.iter()
        .filter(|v| v.is_finite())
        .fold(None, |acc, &v| match acc {
            None => Some((v, v)),
            Some((l, h)) => Some((l.min(v), h.max(v))),
        })
}

/// A histogram of `bins` equal bins over `[-t, t]` (numpy's `histogram` binning: the
/// last bin includes `t`; values outside are not counted).
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// Half-width of the range.
    pub t: f32,
    /// Counts per bin.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// An empty histogram over `[-t, t]`.
    pub fn new(t: f32, bins: usize) -> Histogram {
        Histogram {
            t,
            counts: vec![0; bins.max(1)],
        }
    }

    /// Counts the finite values of `xs`.
    pub fn add(&mut self, xs: &[f32]) {
        let n = self.counts.len();
        if self.t <= 0.0 {
            return;
        }
        let norm = n as f64 / (2.0 * f64::from(self.t));
        for &v in xs {
            if !v.is_finite() || v.abs() > self.t {
                continue;
            }
            let i = ((f64::from(v) + f64::from(self.t)) * norm) as usize;
            if let Some(c) = self.counts.get_mut(i.min(n - 1)) {
                *c += 1;
            }
        }
    }

    /// Edge `i` (0..=bins) of the bins.
    pub fn edge(&self, i: usize) -> f32 {
        let n = self.counts.len() as f64;
        (-f64::from(self.t) + 2.0 * f64::from(self.t) * i as f64 / n) as f32
    }
}

/// onnxruntime's asymmetric percentile range: cut `(100 - pct) / 200` of the mass on
/// each side; the bin edges where the cumulative distribution first reaches the cuts,
/// clipped to `[min, max]`.
pub fn percentile_range(h: &Histogram, min: f32, max: f32, pct: f64) -> (f32, f32) {
    let total: u64 = h.counts.iter().sum();
    if total == 0 {
        return (min, max);
    }
    let cut = (100.0 - pct) / 200.0;
    let mut cdf = Vec::with_capacity(h.counts.len());
    let mut acc = 0u64;
    for &c in &h.counts {
        acc += c;
        cdf.push(acc as f64 / total as f64);
    }
    // numpy searchsorted (side left): the first index whose cdf is >= v.
    let search = |v: f64| cdf.iter().position(|&c| c >= v).unwrap_or(cdf.len());
    let lo = h.edge(search(cut)).max(min);
    let hi = h.edge(search(1.0 - cut)).min(max);
    (lo, hi)
}

/// Replaces zeros by `eps` and takes that mass off the non-zero entries (onnxruntime's
/// `smooth_distribution`); `None` when all entries are zero.
fn smooth(p: &[f64], eps: f64) -> Option<Vec<f64>> {
    let zeros = p.iter().filter(|&&v| v == 0.0).count();
    let nonzeros = p.len() - zeros;
    if nonzeros == 0 {
        return None;
    }
    let eps1 = eps * zeros as f64 / nonzeros as f64;
    Some(
        p.iter()
            .map(|&v| if v == 0.0 { eps } else { v - eps1 })
            .collect(),
    )
}

/// KL(p‖q) of two unnormalized distributions (scipy's `entropy(p, q)`).
fn kl(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
    p.iter()
        .zip(q)
        .map(|(&a, &b)| {
            let (a, b) = (a / sp, b / sq);
            if a > 0.0 {
                a * (a / b).ln()
            } else {
                0.0
            }
        })
        .sum()
}

/// The KL-divergence threshold search (TensorRT; onnxruntime's `get_entropy_threshold`)
/// over a histogram symmetric around 0, with `quant_bins` quantized bins; the range is
/// clipped to `[min, max]`.
pub fn entropy_range(h: &Histogram, min: f32, max: f32, quant_bins: usize) -> (f32, f32) {
    let hist: Vec<f64> = h.counts.iter().map(|&c| c as f64).collect();
    let n = hist.len();
    let zero = n / 2;
    let half = (quant_bins / 2).max(1);
    if zero < half || hist.iter().all(|&c| c == 0.0) {
        return (min, max);
    }
    let mut best = (f64::INFINITY, min, max);
    for i in half..=zero {
        let start = zero - i;
        let end = (zero + i + 1).min(n);
        let sliced = &hist[start..end];
        let mut p = sliced.to_vec();
        let left: f64 = hist[..start].iter().sum();
        let right: f64 = hist[end..].iter().sum();
        if let Some(first) = p.first_mut() {
            *first += left;
        }
        if let Some(last) = p.last_mut() {
            *last += right;
        }
        let merged = sliced.len() / quant_bins;
        let mut q = vec![0f64; p.len()];
        if merged > 0 {
            for b in 0..quant_bins {
                let s = b * merged;
                let e = if b + 1 == quant_bins {
                    p.len()
                } else {
                    s + merged
                };
                let mass: f64 = sliced[s..e].iter().sum();
                let nz = p[s..e].iter().filter(|&&v| v != 0.0).count();
                if nz > 0 {
                    for j in s..e {
                        if p[j] != 0.0 {
                            q[j] = mass / nz as f64;
                        }
                    }
                }
            }
        }
        let div = match (smooth(&p, 1e-4), smooth(&q, 1e-4)) {
            (Some(p), Some(q)) => kl(&p, &q),
            _ => f64::INFINITY,
        };
        if div < best.0 {
            best = (div, h.edge(start), h.edge(end));
        }
    }
    (best.1.max(min), best.2.min(max))
}

/// The per-activation ranges `[lo, hi]` of `values` on the calibration data.
fn calibrate(
    g: &Graph,
    ex: &dyn Executor,
    calib: &Calibration,
    values: &[ValueId],
    method: CalibMethod,
) -> Result<Vec<(f32, f32)>, PassError> {
    let mut probe = g.clone();
    probe.set_outputs(values.to_vec());
    let batches = calib.batches(BATCH)?;
    let run = |batch: &[Tensor]| -> Result<Vec<Tensor>, PassError> {
        let outs = ex.run(&probe, batch)?;
        if outs.len() != values.len() {
            return Err(Error::invalid(format!(
                "calibration run returned {} tensors for {} activations",
                outs.len(),
                values.len()
            ))
            .into());
        }
        Ok(outs)
    };
    let mut ranges: Vec<Option<(f32, f32)>> = vec![None; values.len()];
    for batch in &batches {
        for (r, t) in ranges.iter_mut().zip(run(batch)?) {
            let xs = t.to_f32()?;
            if let Some((l, h)) = minmax(&xs) {
                *r = Some(r.map_or((l, h), |(a, b)| (a.min(l), b.max(h))));
            }
        }
    }
    let ranges: Vec<(f32, f32)> = ranges
        .into_iter()
        .map(|r| r.unwrap_or((0.0, 0.0)))
        .collect();
    if method == CalibMethod::MinMax {
        return Ok(ranges);
    }
    let mut hists: Vec<Histogram> = ranges
        .iter()
        .map(|&(l, h)| Histogram::new(l.abs().max(h.abs()), HIST_BINS))
        .collect();
    for batch in &batches {
        for (hist, t) in hists.iter_mut().zip(run(batch)?) {
            hist.add(&t.to_f32()?);
        }
    }
    Ok(hists
        .iter()
        .zip(&ranges)
        .map(|(h, &(l, hi))| match method {
            CalibMethod::Percentile(p) => percentile_range(h, l, hi, p),
            _ => entropy_range(h, l, hi, QUANT_BINS),
        })
        .collect())
}

/// `ty` with element type `elem` (shape kept).
pub(super) fn retyped(ty: Option<&ValueType>, elem: DType) -> Option<ValueType> {
    match ty {
        Some(ValueType::Tensor { shape, .. }) => Some(ValueType::tensor(elem, shape.clone())),
        _ => None,
    }
}

/// Inserts `QuantizeLinear → DequantizeLinear` on each activation (per-tensor uint8,
/// constants shared by the pair) and makes the data input of every reader in `nodes`
/// that reads it read the dequantized value.
fn insert_qdq(
    g: &mut Graph,
    nodes: &[NodeId],
    acts: &[ValueId],
    ranges: &[(f32, f32)],
) -> Result<(), PassError> {
    for (&x, &(lo, hi)) in acts.iter().zip(ranges) {
        let name = g.value(x).name().to_string();
        let ty = g.value(x).ty.clone();
        let (scale, zp) = qparams(lo, hi);
        let s = g.add_const(
            &g.unique_name(&format!("{name}_scale")),
            Tensor::from_f32(vec![], vec![scale])?,
        )?;
        let z = g.add_const(
            &g.unique_name(&format!("{name}_zero_point")),
            Tensor::from_raw(DType::U8, vec![], vec![zp].into())?,
        )?;
        let xq = g.add_value(
            &g.unique_name(&format!("{name}_quantized")),
            retyped(ty.as_ref(), DType::U8),
        )?;
        let xd = g.add_value(
            &g.unique_name(&format!("{name}_dequantized")),
            retyped(ty.as_ref(), DType::F32),
        )?;
        g.add_node(
            &g.unique_name(&format!("{name}_QuantizeLinear")),
            Op::QuantizeLinear {
                axis: None,
                saturate: None,
                block_size: None,
                output_dtype: None,
            },
            vec![Some(x), Some(s), Some(z)],
            vec![Some(xq)],
        )?;
        g.add_node(
            &g.unique_name(&format!("{name}_DequantizeLinear")),
            Op::DequantizeLinear {
                axis: None,
                block_size: None,
            },
            vec![Some(xq), Some(s), Some(z)],
            vec![Some(xd)],
        )?;
        for &n in nodes {
            if g.node(n).input(0) == Some(x) {
                g.set_input(n, 0, Some(xd));
            }
        }
    }
    Ok(())
}

/// The outputs of one DynamicQuantizeLinear: codes, scale, zero point.
pub(super) type Dql = (ValueId, ValueId, ValueId);

/// Integer weight constants for MatMulInteger: codes `[K, N]`, per-column scales `[N]`
/// (times `alpha`) and zero points.
struct IntWeight {
    codes: ValueId,
    scale: ValueId,
    zero_point: Option<ValueId>,
}

/// Rewrites the MatMul/Gemm readers of quantizable weights into
/// DynamicQuantizeLinear + MatMulInteger + Cast + Mul (+ Add for a Gemm bias), and Conv
/// readers into DynamicQuantizeLinear + ConvInteger + Cast + Mul (+ Add bias).
fn dynamic(q: &Quant, g: &mut Graph) -> Result<ActSummary, PassError> {
    let targets = q.targets(g)?;
    let weights: Vec<ValueId> = targets.iter().map(|t| t.0).collect();
    let nodes = readers(q, g, &weights)?;
    let mut sum = ActSummary::default();
    let mut dqls: Vec<(ValueId, Dql)> = Vec::new();
    let mut done_weights: Vec<ValueId> = Vec::new();
    for id in nodes {
        let node = g.node(id);
        if let Op::Conv(a) = &node.op {
            let (a, w) = (a.clone(), node.input(1));
            if super::dyn_conv::rewrite(q, g, id, a, &mut dqls, &mut sum)? {
                if let Some(w) = w.filter(|w| !done_weights.contains(w)) {
                    done_weights.push(w);
                }
            }
            continue;
        }
        // (transpose W, alpha, beta, bias).
        let (trans_b, alpha, beta, bias) = match node.op {
            Op::MatMul => (false, 1.0, 1.0, None),
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } if trans_a.unwrap_or(0) == 0 => (
                trans_b.unwrap_or(0) != 0,
                alpha.unwrap_or(1.0),
                beta.unwrap_or(1.0),
                node.input(2),
            ),
            _ => continue,
        };
        let (Some(x), Some(w), Some(y)) = (node.input(0), node.input(1), node.output(0)) else {
            continue;
        };
        // A bias scaled by beta must be a constant (folded) unless beta is 1.
        let bias_data = match bias {
            Some(c) if beta != 1.0 => match g.const_data(c) {
                Some(t) => Some(t.to_f32()?),
                None => continue,
            },
            _ => None,
        };
        let Some(wt) = g.const_data(w).cloned() else {
            continue;
        };
        let name = node.name.clone();
        let iw = int_weight(q, g, w, &wt, trans_b, alpha, &mut sum)?;
        if !done_weights.contains(&w) {
            done_weights.push(w);
        }
        let (xq, xs, xz) = dql_for(g, &mut dqls, x)?;
        let mut mi = vec![Some(xq), Some(iw.codes), Some(xz)];
        if let Some(z) = iw.zero_point {
            mi.push(Some(z));
        }
        let make_bias = |g: &mut Graph| -> Result<Option<ValueId>, PassError> {
            let Some(c) = bias else { return Ok(None) };
            Ok(Some(match (&bias_data, g.const_data(c)) {
                (Some(data), Some(t)) => {
                    let shape = t.shape().to_vec();
                    let scaled = data.iter().map(|v| v * beta).collect();
                    g.add_const(
                        &g.unique_name(&format!("{name}_bias")),
                        Tensor::from_f32(shape, scaled)?,
                    )?
                }
                _ => c,
            }))
        };
        replace_with_integer_op(
            g,
            (id, y, &name),
            ("MatMulInteger", Op::MatMulInteger, mi),
            (xs, iw.scale),
            bias.is_some(),
            make_bias,
        )?;
        sum.ops += 1;
    }
    sum.activations = dqls.len();
    sum.weights = done_weights.len();
    Ok(sum)
}

/// Replaces node `id` (output `y`, named `name`) by the integer form onnxruntime's
/// dynamic quantizer writes: `int_op(ins)` in i32, `Cast` to f32, `Mul` by
/// `x_scale · w_scale`, then, when `has_bias`, `Add` of the bias `make_bias` gives
/// (called after the `Mul`, so its constant follows it).
pub(super) fn replace_with_integer_op(
    g: &mut Graph,
    (id, y, name): (NodeId, ValueId, &str),
    (op_name, int_op, ins): (&str, Op, Vec<Option<ValueId>>),
    (xs, w_scale): (ValueId, ValueId),
    has_bias: bool,
    make_bias: impl FnOnce(&mut Graph) -> Result<Option<ValueId>, PassError>,
) -> Result<(), PassError> {
    let y_ty = g.value(y).ty.clone();
    g.remove_node(id);
    let yi = g.add_value(
        &g.unique_name(&format!("{name}_int")),
        retyped(y_ty.as_ref(), DType::I32),
    )?;
    g.add_node(
        &g.unique_name(&format!("{name}_{op_name}")),
        int_op,
        ins,
        vec![Some(yi)],
    )?;
    let yf = g.add_value(
        &g.unique_name(&format!("{name}_float")),
        retyped(y_ty.as_ref(), DType::F32),
    )?;
    g.add_node(
        &g.unique_name(&format!("{name}_Cast")),
        Op::Cast {
            to: DType::F32,
            saturate: None,
        },
        vec![Some(yi)],
        vec![Some(yf)],
    )?;
    let sc = g.add_value(&g.unique_name(&format!("{name}_scale")), None)?;
    g.add_node(
        &g.unique_name(&format!("{name}_scale_Mul")),
        Op::Binary(BinaryOp::Mul),
        vec![Some(xs), Some(w_scale)],
        vec![Some(sc)],
    )?;
    let mul_out = if has_bias {
        g.add_value(
            &g.unique_name(&format!("{name}_scaled")),
            retyped(y_ty.as_ref(), DType::F32),
        )?
    } else {
        y
    };
    g.add_node(
        &g.unique_name(&format!("{name}_Mul")),
        Op::Binary(BinaryOp::Mul),
        vec![Some(yf), Some(sc)],
        vec![Some(mul_out)],
    )?;
    if let Some(c) = make_bias(g)? {
        g.add_node(
            &g.unique_name(&format!("{name}_bias_Add")),
            Op::Binary(BinaryOp::Add),
            vec![Some(mul_out), Some(c)],
            vec![Some(y)],
        )?;
    }
    Ok(())
}

/// The DynamicQuantizeLinear outputs of `x`: those in `dqls`, else a new one (recorded).
pub(super) fn dql_for(
    g: &mut Graph,
    dqls: &mut Vec<(ValueId, Dql)>,
    x: ValueId,
) -> Result<Dql, PassError> {
    if let Some((_, d)) = dqls.iter().find(|(v, _)| *v == x) {
        return Ok(*d);
    }
    let d = add_dql(g, x)?;
    dqls.push((x, d));
    Ok(d)
}

/// One DynamicQuantizeLinear on `x`; its three outputs.
fn add_dql(g: &mut Graph, x: ValueId) -> Result<Dql, PassError> {
    let name = g.value(x).name().to_string();
    let ty = g.value(x).ty.clone();
    let xq = g.add_value(
        &g.unique_name(&format!("{name}_quantized")),
        retyped(ty.as_ref(), DType::U8),
    )?;
    let xs = g.add_value(
        &g.unique_name(&format!("{name}_scale")),
        Some(ValueType::tensor(DType::F32, Some(vec![]))),
    )?;
    let xz = g.add_value(
        &g.unique_name(&format!("{name}_zero_point")),
        Some(ValueType::tensor(DType::U8, Some(vec![]))),
    )?;
    g.add_node(
        &g.unique_name(&format!("{name}_DynamicQuantizeLinear")),
        Op::DynamicQuantizeLinear,
        vec![Some(x)],
        vec![Some(xq), Some(xs), Some(xz)],
    )?;
    Ok((xq, xs, xz))
}

/// Quantizes weight `w` (`[K, N]`, or `[N, K]` with `trans_b`) per output column and
/// adds its integer constants (codes stored `[K, N]`).
fn int_weight(
    q: &Quant,
    g: &mut Graph,
    w: ValueId,
    t: &Tensor,
    trans_b: bool,
    alpha: f32,
    sum: &mut ActSummary,
) -> Result<IntWeight, PassError> {
    let name = g.value(w).name().to_string();
    let shape = t.shape().to_vec();
    let &[r, c] = shape.as_slice() else {
        return Err(Error::invalid(format!("weight {name}: not a matrix ({shape:?})")).into());
    };
    let (out_axis, red_axis) = if trans_b { (0, 1) } else { (1, 0) };
    let qw = q.quantize(&name, &t.f32_view()?, &shape, out_axis, red_axis)?;
    let (k, n) = if trans_b { (c, r) } else { (r, c) };
    let raw = qw.q.raw()?;
    let codes: Vec<u8> = if trans_b {
        let mut out = vec![0u8; raw.len()];
        for i in 0..n {
            for j in 0..k {
                if let (Some(o), Some(&v)) = (out.get_mut(j * n + i), raw.get(i * k + j)) {
                    *o = v;
                }
            }
        }
        out
    } else {
        raw.to_vec()
    };
    sum.params += t.len();
    sum.bytes_before += t.byte_len();
    sum.bytes_after += qw.byte_len();
    let scales: Vec<f32> = qw.scale.to_f32()?.iter().map(|s| s * alpha).collect();
    let codes = g.add_const(
        &g.unique_name(&format!("{name}_quantized")),
        Tensor::from_raw(qw.q.dtype(), vec![k, n], codes.into())?,
    )?;
    let scale = g.add_const(
        &g.unique_name(&format!("{name}_scale")),
        Tensor::from_f32(vec![n], scales)?,
    )?;
    let zero_point = match qw.zero_point {
        Some(z) => Some(g.add_const(&g.unique_name(&format!("{name}_zero_point")), z)?),
        None => None,
    };
    Ok(IntWeight {
        codes,
        scale,
        zero_point,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pass::Pass;
    use cc_ir::types::known_shape;
    use std::sync::Arc;

    /// x[4, 64] read by two MatMuls (weights [64, 8] and [64, 5]) and a Relu; y0, y1 out.
    fn two_readers() -> Graph {
        let mut g = Graph::new("g");
        let x = g
            .add_value(
                "x",
                Some(ValueType::tensor(DType::F32, known_shape(&[4, 64]))),
            )
            .unwrap();
        let mut outs = Vec::new();
        for (i, n) in [8usize, 5].into_iter().enumerate() {
            let w: Vec<f32> = (0..64 * n)
                .map(|j| ((j * 37 + i * 11) % 101) as f32 / 50.0 - 1.0)
                .collect();
            let w = g
                .add_const(&format!("w{i}"), Tensor::from_f32(vec![64, n], w).unwrap())
                .unwrap();
            let y = g.add_value(&format!("y{i}"), None).unwrap();
            g.add_node(
                &format!("mm{i}"),
                Op::MatMul,
                vec![Some(x), Some(w)],
                vec![Some(y)],
            )
            .unwrap();
            outs.push(y);
        }
        g.set_inputs(vec![x]);
        g.set_outputs(outs);
        g
    }

    fn input(seed: u64) -> Tensor {
        let xs: Vec<f32> = uniform(256, seed).iter().map(|u| 3.0 * u - 1.0).collect();
        Tensor::from_f32(vec![4, 64], xs).unwrap()
    }

    fn quantized(spec: &str, calib: Option<Tensor>) -> Result<Graph, PassError> {
        let o = Options::parse(
            "quant",
            crate::registry::lookup("quant").unwrap().options,
            &spec
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        )?;
        let mut q = Quant::from_options(&o)?;
        let mut g = two_readers();
        let ex: Arc<dyn Executor> = Arc::new(cc_backends::cpu::CpuExecutor::new(1).unwrap());
        let mut cx = PassCx::new(0)
            .with_executor(Some(ex))
            .with_calibration(calib.map(|t| Arc::new(Calibration::new("test", vec![t]))));
        q.run(&mut g, &mut cx)?;
        cc_ir::verify::verify(&g).unwrap();
        Ok(g)
    }

    fn ops(g: &Graph) -> Vec<&str> {
        g.topo_order()
            .unwrap()
            .into_iter()
            .map(|id| g.node(id).op.onnx_type().1)
            .collect()
    }

    /// Max |a - b| / max |b| over all outputs of `g` and the f32 graph on `x`.
    fn error_vs_f32(g: &Graph, x: &Tensor) -> f32 {
        let ex = cc_backends::cpu::CpuExecutor::new(1).unwrap();
        let got = ex.run(g, std::slice::from_ref(x)).unwrap();
        let want = ex.run(&two_readers(), std::slice::from_ref(x)).unwrap();
        let mut worst = 0f32;
        for (a, b) in got.iter().zip(&want) {
            let (a, b) = (a.to_f32().unwrap(), b.to_f32().unwrap());
            let m = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (p, q) in a.iter().zip(&b) {
                worst = worst.max((p - q).abs() / m);
            }
        }
        worst
    }

    #[test]
    fn static_puts_one_calibrated_pair_on_a_shared_activation() {
        let x = input(5);
        let e = quantized("activations=static", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs calibration data"), "{e}");
        let g = quantized("activations=static", Some(x.clone())).unwrap();
        assert_eq!(
            ops(&g),
            ["QuantizeLinear", "DequantizeLinear", "MatMul", "MatMul"]
        );
        // Both readers read the one dequantized value; the weights are compressed.
        let q = g.value_by_name("x_scale").unwrap();
        let (lo, hi) = minmax(&x.to_f32().unwrap()).unwrap();
        let scale = g.const_data(q).unwrap().to_f32().unwrap()[0];
        assert_eq!(scale, qparams(lo, hi).0);
        let xd = g.value_by_name("x_dequantized").unwrap();
        assert_eq!(g.value(xd).uses().len(), 2);
        assert!(g.value(g.value_by_name("w0").unwrap()).compressed.is_some());
        // On the calibration data itself: int8 weights and activations stay close.
        let err = error_vs_f32(&g, &x);
        assert!(err > 0.0 && err < 0.03, "error {err}");
    }

    #[test]
    fn dynamic_rewrites_matmuls_into_integer_matmuls() {
        let g = quantized("activations=dynamic", None).unwrap();
        let o = ops(&g);
        assert_eq!(
            o.iter()
                .filter(|&&op| op == "DynamicQuantizeLinear")
                .count(),
            1
        );
        assert_eq!(o.iter().filter(|&&op| op == "MatMulInteger").count(), 2);
        assert!(!o.contains(&"MatMul"));
        // The weight codes are int8 constants [K, N] feeding MatMulInteger.
        let codes = g.value_by_name("w0_quantized").unwrap();
        let t = g.const_data(codes).unwrap();
        assert_eq!((t.dtype(), t.shape()), (DType::I8, &[64usize, 8][..]));
        for seed in [1, 2] {
            let err = error_vs_f32(&g, &input(seed));
            assert!(err > 0.0 && err < 0.03, "error {err}");
        }
    }

    /// A deterministic pseudo-random stream in [0, 1).
    fn uniform(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32) / (1u64 << 24) as f32
            })
            .collect()
    }

    /// Standard normal samples (Box-Muller).
    fn normal(n: usize, seed: u64) -> Vec<f32> {
        let u = uniform(2 * n, seed);
        u.chunks(2)
            .map(|p| {
                let (a, b) = (p[0].max(1e-7), p[1]);
                (-2.0 * a.ln()).sqrt() * (2.0 * std::f32::consts::PI * b).cos()
            })
            .collect()
    }

    #[test]
    fn minmax_and_qparams_cover_zero() {
        assert_eq!(minmax(&[1.0, f32::NAN, -2.5, 3.0]), Some((-2.5, 3.0)));
        assert_eq!(minmax(&[f32::NAN]), None);
        // A range [0, 2.55] maps onto 0..255 with zero point 0.
        let (s, z) = qparams(0.5, 2.55);
        assert!((s - 0.01).abs() < 1e-7);
        assert_eq!(z, 0);
        // [-1, 1]: zero point in the middle, 0 exact.
        let (s, z) = qparams(-1.0, 1.0);
        assert!((s - 2.0 / 255.0).abs() < 1e-7);
        assert!(z == 127 || z == 128, "{z}");
        assert_eq!(qparams(0.0, 0.0), (1.0, 0));
    }

    #[test]
    fn histogram_bins_like_numpy() {
        let mut h = Histogram::new(1.0, 4);
        h.add(&[-1.0, -0.4, 0.0, 0.49, 0.5, 1.0, 2.0]);
        assert_eq!(h.counts, vec![1, 1, 2, 2]);
        assert_eq!(h.edge(0), -1.0);
        assert_eq!(h.edge(2), 0.0);
        assert_eq!(h.edge(4), 1.0);
    }

    #[test]
    fn percentile_cuts_the_tails() {
        // 0..10000 uniformly: 99% keeps [~50, ~9950].
        let xs: Vec<f32> = (0..10000).map(|i| i as f32).collect();
        let (l, h) = minmax(&xs).unwrap();
        let mut hist = Histogram::new(l.abs().max(h.abs()), HIST_BINS);
        hist.add(&xs);
        let (lo, hi) = percentile_range(&hist, l, h, 99.0);
        assert!((lo - 50.0).abs() < 10.0, "lo {lo}");
        assert!((hi - 9950.0).abs() < 10.0, "hi {hi}");
        // 100 keeps everything up to the last bin's left edge (as onnxruntime).
        let (lo, hi) = percentile_range(&hist, l, h, 100.0);
        let bin = 2.0 * 9999.0 / HIST_BINS as f32;
        assert_eq!(lo, 0.0);
        assert!((hi - (9999.0 - bin)).abs() < 1e-2, "hi {hi}");
    }

    #[test]
    fn entropy_clips_outliers_of_a_gaussian_but_keeps_a_uniform_range() {
        // A normal distribution with a few far outliers: the threshold lands well
        // inside the outliers but beyond 2 standard deviations.
        let mut xs = normal(200_000, 7);
        xs.extend([40.0, -40.0, 35.0]);
        let (l, h) = minmax(&xs).unwrap();
        let mut hist = Histogram::new(l.abs().max(h.abs()), HIST_BINS);
        hist.add(&xs);
        let (lo, hi) = entropy_range(&hist, l, h, QUANT_BINS);
        assert!(hi > 2.0 && hi < 20.0, "hi {hi}");
        assert!(lo < -2.0 && lo > -20.0, "lo {lo}");
        assert!((lo + hi).abs() < 0.1, "symmetric window: {lo} {hi}");
        // A uniform distribution on [-1, 1]: clipping loses mass, the full range wins.
        let xs: Vec<f32> = uniform(100_000, 3).iter().map(|u| 2.0 * u - 1.0).collect();
        let (l, h) = minmax(&xs).unwrap();
        let mut hist = Histogram::new(l.abs().max(h.abs()), HIST_BINS);
        hist.add(&xs);
        let (lo, hi) = entropy_range(&hist, l, h, QUANT_BINS);
        assert!(hi > 0.95 && lo < -0.95, "{lo} {hi}");
    }

    #[test]
    fn smoothing_and_kl_behave() {
        assert!(smooth(&[0.0, 0.0], 1e-4).is_none());
        let s = smooth(&[0.0, 2.0, 2.0], 1e-4).unwrap();
        assert!((s.iter().sum::<f64>() - 4.0).abs() < 1e-12);
        assert!(kl(&[1.0, 2.0], &[2.0, 4.0]).abs() < 1e-12);
        assert!(kl(&[1.0, 0.0], &[0.5, 0.5]) > 0.69);
    }
}
