//! `lowrank`: truncated-SVD factorization of constant weights, `W ≈ A·B`.
//!
//! The factored form is written into the graph as two plain-constant layers, so that
//! later passes see ordinary weights (a following `quant` quantizes `A` and `B`;
//! `prune{ratio=0.3},lowrank{keep=0.75},quant{bits=8}` composes):
//!
//! - `MatMul(X, W)` → `MatMul(MatMul(X, A), B)`;
//! - `Gemm(X, W, C)` (transA = 0) → `Gemm(MatMul(X, A), B, C)` with the original
//!   alpha/beta/transB (the bias stays on the second);
//! - `Conv` (2-D, group 1, explicit pads) → two Convs, spatial (`kh×1` `C→r` with the
//!   vertical stride/pad/dilation, then `1×kw` `r→O` with the horizontal ones and the
//!   bias) or channel (1x1 `C→r`, then `kh×kw` `r→O` with the original geometry and the
//!   bias); see [`factor`]. Both SVDs are computed and the form chosen per layer: for
//!   `energy` the one reaching it with fewer parameters, for `keep` the one with the
//!   lower error at that parameter count. Grouped convs are left alone.
//!
//! The pair is named `<node>_lowrank_a` / `<node>_lowrank_b` (weights
//! `<weight>_lowrank_a/_b`). Singular values are split evenly (`A = U_r·√Σ_r`,
//! `B = √Σ_r·V_rᵀ`) so both factors have similar ranges, which suits quantization.
//!
//! Rank (exactly one of, see [`rank`]): `energy=e` (fraction of squared singular values
//! kept), `keep=f` (fraction of each layer's parameters kept) or `params=p` (fraction
//! of all selected layers' parameters, shared out globally by normalized energy). The
//! default is `energy=0.95`: it adapts to each layer's spectrum, bounds each layer's
//! relative weight error by √0.05 ≈ 0.22, and leaves layers whose spectrum is flat
//! dense instead of forcing a fixed cut on them. A layer is factored only when
//! `r·(m+n) < m·n`.
//!
//! `whiten=true` (needs `--calib`; MatMul/Gemm only, convs are factored unwhitened):
//! truncation-aware data whitening after SVD-LLM. With `G = XᵀX` over the recorded
//! layer inputs and `S = chol(G + λI)` (lower, `λ = damp·mean(diag G)`), the SVD is of
//! `Sᵀ·W` (`W` as `[in, out]`); truncating it to `U_r Σ_r V_rᵀ` and setting
//! `A = S⁻ᵀ·U_r·√Σ_r`, `B = √Σ_r·V_rᵀ` minimizes `‖X·W − X·A·B‖` (since
//! `‖X·ΔW‖ = ‖Sᵀ·ΔW‖` when `G = S·Sᵀ`), so the truncation follows output error, not
//! weight error; rank rules then apply to the whitened singular values.
//!
//! Statistics: layers selected/factored, the forms, parameters of the selected
//! weights before/after, the overall relative weight error, the ranks per layer, and
//! with `--calib` the relative error of the model's first output on the calibration
//! data.

pub mod factor;
pub mod linalg;
pub mod rank;

use crate::error::PassError;
use crate::options::{OptionKind, OptionSpec, Options};
use crate::pass::{Changed, Pass, PassCx};
use crate::prune::layers::{layer_of, LayerKind};
use crate::registry::PassInfo;
use crate::weights::WeightSelection;
use cc_ir::op::ConvAttrs;
use cc_ir::{DType, Error, Graph, NodeId, Op, Tensor, ValueId};
use factor::{ConvDims, Form};
use rank::Criterion;
use rayon::prelude::*;

const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "energy",
        kind: OptionKind::Str,
        default: "",
        help: "keep this fraction of each layer's squared singular values (default 0.95 when no rank option is given)",
    },
    OptionSpec {
        name: "keep",
        kind: OptionKind::Str,
        default: "",
        help: "keep this fraction of each layer's parameters",
    },
    OptionSpec {
        name: "params",
        kind: OptionKind::Str,
        default: "",
        help: "keep this fraction of all selected layers' parameters, allocated globally by normalized singular-value energy",
    },
    OptionSpec {
        name: "min_rank",
        kind: OptionKind::Int {
            min: Some(1),
            max: None,
        },
        default: "1",
        help: "smallest rank a factored layer gets",
    },
    OptionSpec {
        name: "whiten",
        kind: OptionKind::Bool,
        default: "false",
        help: "truncation-aware whitening with the calibration inputs (SVD-LLM; MatMul/Gemm; needs --calib)",
    },
    OptionSpec {
        name: "damp",
        kind: OptionKind::Float,
        default: "0.01",
        help: "whiten: dampening added to the input Gram diagonal, as a fraction of its mean",
    },
    OptionSpec {
        name: "ops",
        kind: OptionKind::Str,
        default: "MatMul|Gemm|Conv",
        help: "op types whose weights are factored (MatMul, Gemm, Conv), separated by | or ;",
    },
    OptionSpec {
        name: "ignore",
        kind: OptionKind::Str,
        default: "",
        help: "name globs (* and ?) separated by | or ;: weights or nodes matching are left as they are",
    },
];

inventory::submit! {
    PassInfo {
        name: "lowrank",
        summary: "low-rank factorization of weights by truncated SVD (MatMul/Gemm, Conv spatial or channel; optional whitening)",
        options: OPTIONS,
        create: |o| Ok(Box::new(LowRank::from_options(o)?)),
    }
}

/// Op types `ops=` may name.
const LOWRANK_OPS: &[&str] = &["MatMul", "Gemm", "Conv"];

/// The low-rank pass and its settings.
#[derive(Clone, Debug, PartialEq)]
pub struct LowRank {
    /// How ranks are chosen.
    pub criterion: Criterion,
    /// Smallest rank of a factored layer.
    pub min_rank: usize,
    /// Whiten dense layers with the calibration inputs.
    pub whiten: bool,
    /// Gram dampening for whitening.
    pub damp: f64,
    /// Which weights are factored (`ops=`, `ignore=`).
    pub select: WeightSelection,
}

fn bad(option: &str, value: &str, expected: &str) -> PassError {
    PassError::BadOptionValue {
        pass: "lowrank".into(),
        option: option.into(),
        value: value.into(),
        expected: expected.into(),
    }
}

impl LowRank {
    /// The pass with parsed options.
    pub fn from_options(o: &Options) -> Result<LowRank, PassError> {
        let mut given = Vec::new();
        for name in ["energy", "keep", "params"] {
            let text = o.get_str(name)?;
            if text.is_empty() {
                continue;
            }
            let v: f64 = text
                .parse()
                .ok()
                .filter(|v: &f64| *v > 0.0 && *v <= 1.0)
                .ok_or_else(|| bad(name, text, "a fraction in (0, 1]"))?;
            given.push(match name {
                "energy" => Criterion::Energy(v),
                "keep" => Criterion::Keep(v),
                _ => Criterion::Params(v),
            });
        }
        let criterion = match given.as_slice() {
            [] => Criterion::Energy(0.95),
            [c] => *c,
            _ => {
                return Err(bad(
                    "energy",
                    "(several)",
                    "exactly one of energy=, keep=, params=",
                ))
            }
        };
        let damp = o.get_float("damp")?;
        if !(damp > 0.0 && damp < 1.0) {
            return Err(bad("damp", &damp.to_string(), "a fraction in (0, 1)"));
        }
        let select = WeightSelection::from_options("lowrank", o, LOWRANK_OPS)?;
        let min_rank = o.get_int("min_rank")?;
        Ok(LowRank {
            criterion,
            min_rank: usize::try_from(min_rank)
                .map_err(|_| bad("min_rank", &min_rank.to_string(), "an integer >= 1"))?,
            whiten: o.get_bool("whiten")?,
            damp,
            select,
        })
    }

    fn ignored(&self, name: &str) -> bool {
        self.select.ignored(name)
    }

    /// The layers to factor, in topological order.
    fn targets(&self, g: &Graph) -> Result<Vec<Target>, PassError> {
        let mut out = Vec::new();
        for id in g.topo_order()? {
            let node = g.node(id);
            let op = match &node.op {
                Op::MatMul => "MatMul",
                Op::Gemm { .. } => "Gemm",
                Op::Conv(_) => "Conv",
                _ => continue,
            };
            if !self.select.ops.iter().any(|o| o == op) || self.ignored(&node.name) {
                continue;
            }
            let Some(layer) = layer_of(g, id) else {
                continue;
            };
            let w = layer.w;
            let Some(t) = g.const_data(w) else { continue };
            if t.dtype() != DType::F32
                || t.is_empty()
                || g.is_input(w)
                || g.is_output(w)
                || g.value(w).uses().len() != 1
                || self.ignored(g.value(w).name())
                || node.output(0).is_none()
            {
                continue;
            }
            let kind = match (&node.op, &layer.kind) {
                (Op::Conv(a), LayerKind::Conv { .. }) => {
                    let s = t.shape();
                    Kind::Conv {
                        attrs: Box::new(a.clone()),
                        dims: ConvDims {
                            o: s[0],
                            c: s[1],
                            kh: s[2],
                            kw: s[3],
                        },
                    }
                }
                (_, LayerKind::Dense { trans_w }) => Kind::Dense { trans_w: *trans_w },
                _ => continue,
            };
            out.push(Target {
                node: id,
                x: layer.x,
                w,
                kind,
            });
        }
        Ok(out)
    }
}

/// How a target reads its weight.
#[derive(Clone, Debug)]
enum Kind {
    /// MatMul or Gemm; the weight is stored `[N, K]` when `trans_w`.
    Dense { trans_w: bool },
    /// 2-D conv with group 1.
    Conv {
        attrs: Box<ConvAttrs>,
        dims: ConvDims,
    },
}

/// A layer to factor.
#[derive(Clone, Debug)]
struct Target {
    node: NodeId,
    x: ValueId,
    w: ValueId,
    kind: Kind,
}

/// One factorization candidate of a layer.
struct Cand {
    form: Form,
    /// The matrix (`m×n`, row-major) whose truncation is the weight error.
    mat: Vec<f64>,
    m: usize,
    n: usize,
    svd: linalg::Svd,
    /// Whitening factor `S` (lower, `m×m`), if whitened.
    white: Option<Vec<f64>>,
}

/// The candidates of a layer (weight `w` of shape `shape`): the dense `[K, N]` matrix
/// (whitened with the lower Cholesky factor `chol` of its input Gram if given), or the
/// conv's spatial and channel matrices.
fn candidates(
    t: &Target,
    w: &[f32],
    shape: &[usize],
    chol: Option<&[f64]>,
) -> Result<Vec<Cand>, Error> {
    match &t.kind {
        Kind::Dense { trans_w } => {
            let (m, n) = match (shape, trans_w) {
                ([a, b], false) => (*a, *b),
                ([a, b], true) => (*b, *a),
                _ => return Err(Error::invalid("lowrank: dense weight is not 2-D")),
            };
            let raw: Vec<f64> = w.iter().map(|&v| f64::from(v)).collect();
            let mat = if *trans_w {
                factor::transpose(&raw, n, m)
            } else {
                raw
            };
            let (svd, white) = match chol {
                Some(l) if l.len() == m * m => {
                    let white = linalg::lt_times(l, m, &mat, n);
                    (linalg::thin_svd(&white, m, n)?, Some(l.to_vec()))
                }
                _ => (linalg::thin_svd(&mat, m, n)?, None),
            };
            Ok(vec![Cand {
                form: Form::Dense,
                mat,
                m,
                n,
                svd,
                white,
            }])
        }
        Kind::Conv { dims, .. } => {
            let forms: &[Form] = if dims.kh > 1 && dims.kw > 1 {
                &[Form::Spatial, Form::Channel]
            } else {
                &[Form::Channel]
            };
            forms
                .iter()
                .map(|&form| {
                    let (mat, m, n) = factor::conv_matrix(w, *dims, form);
                    // Singular values decide the form; vectors only for the chosen one.
                    let svd = linalg::singular_values(&mat, m, n)?;
                    Ok(Cand {
                        form,
                        mat,
                        m,
                        n,
                        svd,
                        white: None,
                    })
                })
                .collect()
        }
    }
}

/// The per-layer choice (candidate index, rank) under a per-layer criterion, or `None`
/// when no candidate shrinks the layer.
fn choose_local(cands: &[Cand], criterion: Criterion, min_rank: usize) -> Option<(usize, usize)> {
    let mut best: Option<(usize, usize, f64, usize)> = None; // (idx, r, err, params)
    for (i, c) in cands.iter().enumerate() {
        let k = c.svd.k();
        let r = match criterion {
            Criterion::Energy(e) => rank::energy_rank(&c.svd.s, e),
            Criterion::Keep(f) | Criterion::Params(f) => rank::keep_rank(c.m, c.n, f),
        };
        let r = r.max(min_rank).min(k);
        if !rank::shrinks(c.m, c.n, r) {
            continue;
        }
        let err = rank::rel_error(&c.svd.s, r);
        let params = r * (c.m + c.n);
        let better = match (&best, criterion) {
            (None, _) => true,
            (Some(b), Criterion::Energy(_)) => params < b.3 || (params == b.3 && err < b.2),
            (Some(b), _) => err < b.2 || (err == b.2 && params < b.3),
        };
        if better {
            best = Some((i, r, err, params));
        }
    }
    best.map(|(i, r, ..)| (i, r))
}

/// `P = U_r·√Σ_r` (`[m, r]`, mapped back through `S⁻ᵀ` when whitened) and
/// `Q = √Σ_r·V_rᵀ` (`[r, n]`).
fn split(c: &Cand, r: usize) -> (Vec<f64>, Vec<f64>) {
    let (m, n, k) = (c.m, c.n, c.svd.k());
    let mut p = vec![0f64; m * r];
    for i in 0..m {
        for j in 0..r {
            p[i * r + j] = c.svd.u[i * k + j] * c.svd.s[j].sqrt();
        }
    }
    let mut q = vec![0f64; r * n];
    for j in 0..r {
        let sq = c.svd.s[j].sqrt();
        for i in 0..n {
            q[j * n + i] = sq * c.svd.v[i * k + j];
        }
    }
    if let Some(l) = &c.white {
        p = linalg::solve_lt(l, m, &p, r);
    }
    (p, q)
}

/// A decided factorization of one target.
struct Decision {
    target: usize,
    form: Form,
    rank: usize,
    full: usize,
    p: Vec<f64>,
    q: Vec<f64>,
    m: usize,
    n: usize,
    err2: f64,
}

/// Input Gram matrices `XᵀX` of the dense targets on the calibration data (one per
/// distinct input value), then their damped lower Cholesky factors.
fn whitening_factors(
    g: &Graph,
    targets: &[Target],
    cx: &PassCx,
    damp: f64,
) -> Result<Vec<Option<Vec<f64>>>, PassError> {
    let calib = cx.calibration().ok_or_else(|| {
        Error::invalid(
            "lowrank: option whiten=true needs calibration data (cc-compile --calib FILE.pb|DIR)",
        )
    })?;
    let ex = cx.executor()?;
    let mut values: Vec<ValueId> = Vec::new();
    for t in targets {
        if matches!(t.kind, Kind::Dense { .. }) && !values.contains(&t.x) {
            values.push(t.x);
        }
    }
    if values.is_empty() {
        return Ok(vec![None; targets.len()]);
    }
    let recorded = crate::prune::reconstruct::record(g, ex, calib, &values)?;
    let chols: Vec<Result<Vec<f64>, Error>> = recorded
        .par_iter()
        .map(|x| {
            let k = *x.shape().last().unwrap_or(&0);
            let v = x.f32_view()?;
            let mut gram = crate::prune::linalg::Mat::zeros(k, k);
            crate::prune::linalg::add_at_b(&mut gram, &v, k, &v, k);
            linalg::damped_cholesky(&gram.data, k, damp)
        })
        .collect();
    let chols: Vec<Vec<f64>> = chols.into_iter().collect::<Result<_, _>>()?;
    Ok(targets
        .iter()
        .map(|t| match t.kind {
            Kind::Dense { .. } => values
                .iter()
                .position(|v| *v == t.x)
                .and_then(|i| chols.get(i).cloned()),
            Kind::Conv { .. } => None,
        })
        .collect())
}

/// Relative L2 error of `got` against `want`, over all outputs.
fn output_error(got: &[Tensor], want: &[Tensor]) -> Result<f64, Error> {
    let (mut e, mut n) = (0f64, 0f64);
    for (a, b) in got.iter().zip(want) {
        let (a, b) = (a.to_f64_numbers()?, b.to_f64_numbers()?);
        for (x, y) in a.iter().zip(&b) {
            e += (x - y).powi(2);
            n += y * y;
        }
    }
    Ok(if n > 0.0 { (e / n).sqrt() } else { e.sqrt() })
}

/// Writes the factored pair of one target into the graph.
fn rewrite(g: &mut Graph, t: &Target, d: &Decision) -> Result<(), Error> {
    let node = g.node(t.node).clone();
    let base = if node.name.is_empty() {
        node.output(0)
            .map(|v| g.value(v).name().to_string())
            .unwrap_or_default()
    } else {
        node.name.clone()
    };
    let wname = g.value(t.w).name().to_string();
    let (r, m, n) = (d.rank, d.m, d.n);
    let (a, b, a_op, b_op) = match &t.kind {
        Kind::Dense { trans_w } => {
            let a = Tensor::from_f32_vec(vec![m, r], d.p.iter().map(|&v| v as f32).collect())?;
            let b = if *trans_w {
                let qt = factor::transpose(&d.q, r, n);
                Tensor::from_f32_vec(vec![n, r], qt.iter().map(|&v| v as f32).collect())?
            } else {
                Tensor::from_f32_vec(vec![r, n], d.q.iter().map(|&v| v as f32).collect())?
            };
            (a, b, Op::MatMul, node.op.clone())
        }
        Kind::Conv { attrs, dims } => {
            let (a, b) = factor::conv_factors(&d.p, &d.q, r, *dims, d.form)?;
            let (kh, kw) = (dims.kh as i64, dims.kw as i64);
            let pads = attrs.pads.clone().unwrap_or_else(|| vec![0; 4]);
            let strides = attrs.strides.clone().unwrap_or_else(|| vec![1, 1]);
            let dil = attrs.dilations.clone().unwrap_or_else(|| vec![1, 1]);
            let (pads, strides, dil) = match (pads.as_slice(), strides.as_slice(), dil.as_slice()) {
                ([p0, p1, p2, p3], [s0, s1], [d0, d1]) => {
                    ([*p0, *p1, *p2, *p3], [*s0, *s1], [*d0, *d1])
                }
                _ => return Err(Error::invalid(format!("conv {base}: unexpected geometry"))),
            };
            let conv = |k: [i64; 2], p: [i64; 4], s: [i64; 2], dl: [i64; 2]| {
                Op::Conv(ConvAttrs {
                    auto_pad: None,
                    dilations: Some(dl.to_vec()),
                    group: Some(1),
                    kernel_shape: Some(k.to_vec()),
                    pads: Some(p.to_vec()),
                    strides: Some(s.to_vec()),
                    output_padding: None,
                    output_shape: None,
                })
            };
            let (a_op, b_op) = match d.form {
                Form::Spatial => (
                    conv(
                        [kh, 1],
                        [pads[0], 0, pads[2], 0],
                        [strides[0], 1],
                        [dil[0], 1],
                    ),
                    conv(
                        [1, kw],
                        [0, pads[1], 0, pads[3]],
                        [1, strides[1]],
                        [1, dil[1]],
                    ),
                ),
                _ => (
                    conv([1, 1], [0; 4], [1, 1], [1, 1]),
                    conv([kh, kw], pads, strides, dil),
                ),
            };
            (a, b, a_op, b_op)
        }
    };
    let an = g.unique_name(&format!("{wname}_lowrank_a"));
    let av = g.add_const(&an, a)?;
    let bn = g.unique_name(&format!("{wname}_lowrank_b"));
    let bv = g.add_const(&bn, b)?;
    let mid_name = g.unique_name(&format!("{base}_lowrank"));
    let mid = g.add_value(&mid_name, None)?;
    let a_node = format!("{base}_lowrank_a");
    g.add_node(&a_node, a_op, vec![Some(t.x), Some(av)], vec![Some(mid)])?;
    g.set_input(t.node, 0, Some(mid));
    g.set_input(t.node, 1, Some(bv));
    let b_node = format!("{base}_lowrank_b");
    let nm = g.node_mut(t.node);
    nm.name = b_node;
    nm.op = b_op;
    Ok(())
}

impl Pass for LowRank {
    fn name(&self) -> &str {
        "lowrank"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let targets = self.targets(g)?;
        let chols = if self.whiten {
            whitening_factors(g, &targets, cx, self.damp)?
        } else {
            vec![None; targets.len()]
        };
        let weights: Vec<Tensor> = targets
            .iter()
            .map(|t| {
                g.const_data(t.w)
                    .cloned()
                    .ok_or_else(|| Error::invalid("lowrank: weight lost its data"))
            })
            .collect::<Result<_, _>>()?;
        let cands: Vec<Result<Vec<Cand>, Error>> = targets
            .par_iter()
            .zip(weights.par_iter())
            .zip(chols.par_iter())
            .map(|((t, w), l)| {
                let v = w.f32_view()?;
                candidates(t, &v, w.shape(), l.as_deref())
            })
            .collect();
        let cands: Vec<Vec<Cand>> = cands.into_iter().collect::<Result<_, _>>()?;
        // (candidate index, rank) per target.
        let choice: Vec<Option<(usize, usize)>> = match self.criterion {
            Criterion::Params(p) => {
                // The form of each conv: the lower error at keep=p; then the global share.
                let forms: Vec<usize> = cands
                    .iter()
                    .map(|c| choose_local(c, Criterion::Keep(p), 1).map_or(0, |x| x.0))
                    .collect();
                let budgeted: Vec<rank::Budgeted> = cands
                    .iter()
                    .zip(&forms)
                    .map(|(c, &i)| rank::Budgeted {
                        m: c[i].m,
                        n: c[i].n,
                        s: &c[i].svd.s,
                    })
                    .collect();
                rank::allocate(&budgeted, p, self.min_rank)
                    .into_iter()
                    .zip(forms)
                    .map(|(r, i)| r.map(|r| (i, r)))
                    .collect()
            }
            c => cands
                .iter()
                .map(|cs| choose_local(cs, c, self.min_rank))
                .collect(),
        };
        let mut decisions: Vec<Decision> = choice
            .par_iter()
            .zip(cands.par_iter())
            .enumerate()
            .filter_map(|(ti, (ch, cs))| {
                let (ci, r) = (*ch)?;
                let c = cs.get(ci)?;
                let full;
                let c = if c.svd.u.is_empty() {
                    full = Cand {
                        svd: match linalg::thin_svd(&c.mat, c.m, c.n) {
                            Ok(s) => s,
                            Err(e) => return Some(Err(e)),
                        },
                        mat: c.mat.clone(),
                        white: c.white.clone(),
                        ..*c
                    };
                    &full
                } else {
                    c
                };
                let (p, q) = split(c, r);
                // Plain truncation: the error is the tail of the singular values;
                // whitened: measured on the weight.
                let err2: f64 = if c.white.is_some() {
                    let back = factor::product(&p, &q, c.m, r, c.n);
                    back.iter().zip(&c.mat).map(|(a, b)| (a - b).powi(2)).sum()
                } else {
                    c.svd.s.iter().skip(r).map(|x| x * x).sum()
                };
                Some(Ok(Decision {
                    target: ti,
                    form: c.form,
                    rank: r,
                    full: c.svd.k(),
                    p,
                    q,
                    m: c.m,
                    n: c.n,
                    err2,
                }))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        decisions.sort_by_key(|d| d.target);
        let norm2: f64 = weights
            .iter()
            .map(|w| {
                w.f32_view()
                    .map(|v| v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>())
            })
            .collect::<Result<Vec<f64>, _>>()?
            .iter()
            .sum();
        let before: usize = weights.iter().map(Tensor::len).sum();
        let original = cx.calibration().is_some().then(|| g.clone());
        let mut err2 = 0f64;
        let mut after = before;
        let (mut spatial, mut channel) = (0usize, 0usize);
        let mut ranks = Vec::new();
        for d in &decisions {
            let t = &targets[d.target];
            let name = g.node(t.node).name.clone();
            rewrite(g, t, d)?;
            err2 += d.err2;
            after = after - d.m * d.n + d.rank * (d.m + d.n);
            match d.form {
                Form::Spatial => spatial += 1,
                Form::Channel => channel += 1,
                Form::Dense => {}
            }
            ranks.push(format!("{name}={}/{}{}", d.rank, d.full, d.form.tag()));
        }
        if !decisions.is_empty() {
            cc_ir::infer::infer_shapes(g)?;
        }
        cx.stat("layers", targets.len());
        cx.stat("layers_factored", decisions.len());
        if spatial + channel > 0 {
            cx.stat("conv_spatial", spatial);
            cx.stat("conv_channel", channel);
        }
        cx.stat("params_before", before);
        cx.stat("params_after", after);
        let rel = if norm2 > 0.0 {
            (err2 / norm2).sqrt()
        } else {
            0.0
        };
        cx.stat("weight_rel_error", rel);
        if let (Some(orig), Some(calib)) = (original, cx.calibration()) {
            if !decisions.is_empty() {
                let ex = cx.executor()?;
                let mut e2 = 0f64;
                let mut n2 = 0f64;
                for batch in calib.batches(crate::prune::reconstruct::BATCH)? {
                    let want = ex.run(&orig, &batch)?;
                    let got = ex.run(g, &batch)?;
                    let e = output_error(&got, &want)?;
                    let n: f64 = want
                        .iter()
                        .map(|t| {
                            t.to_f64_numbers()
                                .map(|v| v.iter().map(|x| x * x).sum::<f64>())
                        })
                        .collect::<Result<Vec<f64>, _>>()?
                        .iter()
                        .sum();
                    e2 += e * e * n;
                    n2 += n;
                }
                let out = if n2 > 0.0 { (e2 / n2).sqrt() } else { 0.0 };
                cx.stat("output_rel_error", out);
            }
        }
        cx.stat("ranks", ranks.join(" "));
        Ok(Changed(!decisions.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_ir::types::{known_shape, ValueType};
    use cc_ir::Executor;

    fn lowrank(text: &str) -> Result<LowRank, PassError> {
        let o = crate::options::test_options("lowrank", text)?;
        LowRank::from_options(&o)
    }

    /// A deterministic pseudo-random value in [-1, 1).
    fn rnd(i: usize, seed: usize) -> f32 {
        let x = (i as u64 + 1).wrapping_mul(6364136223846793005)
            ^ (seed as u64).wrapping_mul(1442695040888963407);
        let x = x ^ (x >> 29);
        let x = x.wrapping_mul(0xbf58476d1ce4e5b9);
        ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn input(g: &mut Graph, shape: &[usize]) -> ValueId {
        let x = g
            .add_value("x", Some(ValueType::tensor(DType::F32, known_shape(shape))))
            .unwrap();
        g.set_inputs(vec![x]);
        x
    }

    fn dense_graph(op: Op, w_shape: [usize; 2], k: usize) -> Graph {
        let mut g = Graph::new("g");
        let x = input(&mut g, &[3, k]);
        let w: Vec<f32> = (0..w_shape[0] * w_shape[1]).map(|i| rnd(i, 1)).collect();
        let wv = g
            .add_const("w", Tensor::from_f32(w_shape.to_vec(), w).unwrap())
            .unwrap();
        let n = if w_shape[0] == k {
            w_shape[1]
        } else {
            w_shape[0]
        };
        let b = g
            .add_const(
                "b",
                Tensor::from_f32(vec![n], (0..n).map(|i| rnd(i, 2)).collect()).unwrap(),
            )
            .unwrap();
        let y = g.add_value("y", None).unwrap();
        let inputs = match op {
            Op::Gemm { .. } => vec![Some(x), Some(wv), Some(b)],
            _ => vec![Some(x), Some(wv)],
        };
        g.add_node("layer", op, inputs, vec![Some(y)]).unwrap();
        g.set_outputs(vec![y]);
        cc_ir::infer::infer_shapes(&mut g).unwrap();
        g
    }

    fn conv_graph(o: usize, c: usize, kh: usize, kw: usize, attrs: ConvAttrs) -> Graph {
        let mut g = Graph::new("g");
        let x = input(&mut g, &[2, c, 7, 6]);
        let w: Vec<f32> = (0..o * c * kh * kw).map(|i| rnd(i, 3)).collect();
        let wv = g
            .add_const("w", Tensor::from_f32(vec![o, c, kh, kw], w).unwrap())
            .unwrap();
        let b = g
            .add_const(
                "b",
                Tensor::from_f32(vec![o], (0..o).map(|i| rnd(i, 4)).collect()).unwrap(),
            )
            .unwrap();
        let y = g.add_value("y", None).unwrap();
        g.add_node(
            "conv",
            Op::Conv(attrs),
            vec![Some(x), Some(wv), Some(b)],
            vec![Some(y)],
        )
        .unwrap();
        g.set_outputs(vec![y]);
        cc_ir::infer::infer_shapes(&mut g).unwrap();
        g
    }

    fn run(g: &Graph) -> Vec<f32> {
        let shape: Vec<usize> = match g.value(g.inputs()[0]).ty.as_ref().and_then(|t| t.shape()) {
            Some(d) => d.iter().map(|d| d.to_string().parse().unwrap()).collect(),
            None => panic!("no input shape"),
        };
        let len: usize = shape.iter().product();
        let x = Tensor::from_f32(shape, (0..len).map(|i| rnd(i, 9)).collect()).unwrap();
        let ex = cc_backends::cpu::CpuExecutor::new(1).unwrap();
        ex.run(g, &[x]).unwrap()[0].to_f32().unwrap()
    }

    /// Factors every target of `g` at full rank with the given form (candidate index).
    fn full_rank(g: &mut Graph, form_index: usize) -> Vec<Form> {
        let p = lowrank("").unwrap();
        let targets = p.targets(g).unwrap();
        let mut forms = Vec::new();
        for (ti, t) in targets.iter().enumerate() {
            let w = g.const_data(t.w).unwrap().clone();
            let cs = candidates(t, &w.f32_view().unwrap(), w.shape(), None).unwrap();
            let c0 = &cs[form_index.min(cs.len() - 1)];
            let c = &Cand {
                svd: linalg::thin_svd(&c0.mat, c0.m, c0.n).unwrap(),
                mat: c0.mat.clone(),
                white: None,
                ..*c0
            };
            let r = c.svd.k();
            let (pm, q) = split(c, r);
            let d = Decision {
                target: ti,
                form: c.form,
                rank: r,
                full: r,
                p: pm,
                q,
                m: c.m,
                n: c.n,
                err2: 0.0,
            };
            rewrite(g, t, &d).unwrap();
            forms.push(c.form);
        }
        cc_ir::infer::infer_shapes(g).unwrap();
        cc_ir::verify::verify(g).unwrap();
        forms
    }

    fn assert_close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= tol * scale, "{x} vs {y}");
        }
    }

    #[test]
    fn full_rank_factorization_is_exact_for_matmul_and_gemm() {
        for (op, shape) in [
            (Op::MatMul, [12, 9]),
            (
                Op::Gemm {
                    alpha: None,
                    beta: Some(0.5),
                    trans_a: None,
                    trans_b: Some(1),
                },
                [9, 12],
            ),
            (
                Op::Gemm {
                    alpha: Some(2.0),
                    beta: None,
                    trans_a: None,
                    trans_b: None,
                },
                [12, 9],
            ),
        ] {
            let mut g = dense_graph(op, shape, 12);
            let want = run(&g);
            assert_eq!(full_rank(&mut g, 0), vec![Form::Dense]);
            assert_close(&run(&g), &want, 1e-5);
            let names: Vec<String> = g
                .node_ids()
                .iter()
                .map(|&n| g.node(n).name.clone())
                .collect();
            assert!(names.contains(&"layer_lowrank_a".to_string()), "{names:?}");
            assert!(names.contains(&"layer_lowrank_b".to_string()), "{names:?}");
        }
    }

    #[test]
    fn conv_spatial_and_channel_factorizations_equal_the_conv_at_full_rank() {
        let attrs = ConvAttrs {
            pads: Some(vec![1, 2, 0, 1]),
            strides: Some(vec![2, 1]),
            dilations: Some(vec![1, 2]),
            ..Default::default()
        };
        for form_index in [0, 1] {
            let mut g = conv_graph(5, 4, 3, 2, attrs.clone());
            let want = run(&g);
            let forms = full_rank(&mut g, form_index);
            assert_eq!(forms, vec![[Form::Spatial, Form::Channel][form_index]]);
            assert_close(&run(&g), &want, 1e-5);
        }
        // 1x1 convs have the channel form only.
        let mut g = conv_graph(6, 4, 1, 1, ConvAttrs::default());
        let want = run(&g);
        assert_eq!(full_rank(&mut g, 0), vec![Form::Channel]);
        assert_close(&run(&g), &want, 1e-5);
    }

    #[test]
    fn pass_factors_only_when_it_shrinks_and_reports() {
        // A rank-2 weight: energy=0.999 finds rank 2 and factors it.
        let (k, n) = (16, 12);
        let mut g = dense_graph(Op::MatMul, [k, n], k);
        let w: Vec<f32> = (0..k * n)
            .map(|i| {
                let (r, c) = (i / n, i % n);
                rnd(r, 5) * rnd(c, 6) + 0.5 * rnd(r, 7) * rnd(c, 8)
            })
            .collect();
        let wv = g.value_by_name("w").unwrap();
        g.value_mut(wv).data = Some(Tensor::from_f32(vec![k, n], w).unwrap());
        let want = run(&g);
        let mut p = lowrank("energy=0.999").unwrap();
        let mut cx = PassCx::new(0);
        assert!(p.run(&mut g, &mut cx).unwrap().is_changed());
        assert_close(&run(&g), &want, 1e-5);
        let stat = |k: &str| {
            cx.stats()
                .iter()
                .find(|(n, _)| n == k)
                .unwrap()
                .1
                .to_string()
        };
        assert_eq!(stat("layers_factored"), "1");
        assert_eq!(stat("params_before"), (k * n).to_string());
        assert_eq!(stat("params_after"), (2 * (k + n)).to_string());
        assert_eq!(stat("ranks"), "layer=2/12");
        assert!(stat("weight_rel_error").parse::<f64>().unwrap() < 1e-6);
        // keep=1 on a random square-ish matrix never shrinks: nothing changes...
        let mut g = dense_graph(Op::MatMul, [k, n], k);
        let mut cx = PassCx::new(0);
        let mut p = lowrank("energy=1").unwrap();
        assert!(!p.run(&mut g, &mut cx).unwrap().is_changed());
        // ...and keep=0.5 halves it (within rounding of the rank).
        let mut p = lowrank("keep=0.5").unwrap();
        p.run(&mut g, &mut cx).unwrap();
        let after: usize = cx
            .stats()
            .iter()
            .find(|(n, _)| n == "params_after")
            .unwrap()
            .1
            .to_string()
            .parse()
            .unwrap();
        assert_eq!(after, rank::keep_rank(k, n, 0.5) * (k + n));
        assert!(after * 2 <= k * n);
    }

    #[test]
    fn options_are_checked() {
        assert_eq!(lowrank("").unwrap().criterion, Criterion::Energy(0.95));
        assert_eq!(
            lowrank("keep=0.75").unwrap().criterion,
            Criterion::Keep(0.75)
        );
        assert_eq!(
            lowrank("params=0.3").unwrap().criterion,
            Criterion::Params(0.3)
        );
        for (text, option) in [
            ("keep=0", "keep"),
            ("energy=1.5", "energy"),
            ("keep=0.5,energy=0.9", "energy"),
            ("ops=Add", "ops"),
            ("damp=0", "damp"),
        ] {
            let e = lowrank(text).unwrap_err().to_string();
            assert!(e.contains(&format!("option {option}=")), "{text}: {e}");
        }
        // whiten=true without calibration data is a one-line error.
        let mut g = dense_graph(Op::MatMul, [8, 8], 8);
        let e = lowrank("whiten=true")
            .unwrap()
            .run(&mut g, &mut PassCx::new(0))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("needs calibration data") && !e.contains('\n'),
            "{e}"
        );
    }

    #[test]
    fn whitening_lowers_output_error_on_correlated_inputs() {
        // Inputs with a strongly anisotropic, correlated covariance: x = z·M with a few
        // dominant directions.
        let (rows, k, n, r) = (400, 24, 20, 6);
        let mut mix = vec![0f32; k * k];
        for i in 0..k {
            for j in 0..k {
                let scale = if i < 4 { 10.0 } else { 0.3 };
                mix[i * k + j] = scale * rnd(i * k + j, 11);
            }
        }
        let z: Vec<f32> = (0..rows * k).map(|i| rnd(i, 12)).collect();
        let mut x = vec![0f32; rows * k];
        for s in 0..rows {
            for j in 0..k {
                x[s * k + j] = (0..k).map(|i| z[s * k + i] * mix[i * k + j]).sum();
            }
        }
        let w: Vec<f32> = (0..k * n).map(|i| rnd(i, 13)).collect();
        let t = Target {
            node: NodeId::new(0),
            x: ValueId(0),
            w: ValueId(1),
            kind: Kind::Dense { trans_w: false },
        };
        let mut gram = crate::prune::linalg::Mat::zeros(k, k);
        crate::prune::linalg::add_at_b(&mut gram, &x, k, &x, k);
        let l = linalg::damped_cholesky(&gram.data, k, 1e-6).unwrap();
        let out_err = |white: Option<&[f64]>| {
            let cs = candidates(&t, &w, &[k, n], white).unwrap();
            let (p, q) = split(&cs[0], r);
            let wh = factor::product(&p, &q, k, r, n);
            let (mut e, mut tot) = (0f64, 0f64);
            for s in 0..rows {
                for o in 0..n {
                    let (mut y, mut yh) = (0f64, 0f64);
                    for i in 0..k {
                        y += f64::from(x[s * k + i]) * f64::from(w[i * n + o]);
                        yh += f64::from(x[s * k + i]) * wh[i * n + o];
                    }
                    e += (y - yh).powi(2);
                    tot += y * y;
                }
            }
            (e / tot).sqrt()
        };
        let plain = out_err(None);
        let white = out_err(Some(&l));
        assert!(white < 0.5 * plain, "whitened {white} vs plain {plain}");
        // At full rank the whitened factorization is still exact.
        let cs = candidates(&t, &w, &[k, n], Some(&l)).unwrap();
        let (p, q) = split(&cs[0], k.min(n));
        let wh = factor::product(&p, &q, k, k.min(n), n);
        for (a, b) in wh.iter().zip(&w) {
            assert!((a - f64::from(*b)).abs() < 1e-6);
        }
    }
}
