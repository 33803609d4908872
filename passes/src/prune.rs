//! `prune`: structured pruning over the channel groups of [`crate::groups`].
//!
//! 1. Discover the groups; candidates are the prunable ones, minus attention-head groups
//!    unless `heads=true`, minus groups touching a name that matches `ignore`.
//! 2. Score every unit ([`importance`]: `l1`, `l2`, `bn`, `activation`).
//! 3. Choose units ([`select`]): `ratio` of each group (local) or of all units ranked
//!    together (`global=true`); or a budget, `params=` / `flops=`, the fraction of the
//!    model's parameters / multiply-adds to keep (local: the smallest uniform ratio that
//!    meets it; global: lowest normalized scores first until it is met). `round_to=N`
//!    keeps multiples of N; a group never keeps fewer than one unit.
//! 4. Remove them with [`crate::groups::remove_many`] (slices, Reshape/Split/Slice
//!    constants, Conv group counts, re-inferred types).
//! 5. With `reconstruct=true` (needs calibration data), refit the layers that lost input
//!    channels ([`reconstruct`]).
//!
//! Statistics: groups, candidates, units removed, params and FLOPs before/after (FLOPs
//! are multiply-adds of Conv/Gemm/MatMul at batch 1), and reconstruction errors.

pub mod cost;
pub mod importance;
pub mod layers;
pub mod linalg;
pub mod reconstruct;
pub mod select;

use crate::error::PassError;
use crate::groups::{self, ChannelGroup, GroupKind, Role};
use crate::options::{OptionKind, OptionSpec, Options};
use crate::pass::{Changed, Pass, PassCx};
use crate::registry::PassInfo;
use cc_ir::{Error, Graph, ValueId};
use importance::Criterion;
use select::{Plan, Target};
use std::collections::{BTreeMap, BTreeSet};

const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "ratio",
        kind: OptionKind::Float,
        default: "0.5",
        help: "fraction of units removed, in (0,1): of each group, or of all units with global=true",
    },
    OptionSpec {
        name: "params",
        kind: OptionKind::Float,
        default: "0",
        help: "instead of ratio: fraction of the model's parameters to keep, in (0,1); 0 = off",
    },
    OptionSpec {
        name: "flops",
        kind: OptionKind::Float,
        default: "0",
        help: "instead of ratio: fraction of the model's multiply-adds to keep, in (0,1); 0 = off",
    },
    OptionSpec {
        name: "global",
        kind: OptionKind::Bool,
        default: "false",
        help: "rank units of all groups together (scores normalized per group)",
    },
    OptionSpec {
        name: "criterion",
        kind: OptionKind::Enum(&["l1", "l2", "bn", "activation"]),
        default: "l2",
        help: "unit importance; activation needs --calib",
    },
    OptionSpec {
        name: "round_to",
        kind: OptionKind::Int {
            min: Some(1),
            max: None,
        },
        default: "1",
        help: "kept units per group are a multiple of this",
    },
    OptionSpec {
        name: "ignore",
        kind: OptionKind::Str,
        default: "",
        help: "name globs (* and ?) separated by | or ;: groups touching a matching node or value are kept whole",
    },
    OptionSpec {
        name: "heads",
        kind: OptionKind::Bool,
        default: "false",
        help: "also prune whole attention heads",
    },
    OptionSpec {
        name: "reconstruct",
        kind: OptionKind::Bool,
        default: "false",
        help: "refit layers that lost inputs by least squares on calibration activations (needs --calib)",
    },
    OptionSpec {
        name: "damp",
        kind: OptionKind::Float,
        default: "0.01",
        help: "ridge damping of reconstruct, relative to the mean diagonal of the Gram matrix",
    },
];

inventory::submit! {
    PassInfo {
        name: "prune",
        summary: "structured pruning of channel groups (l1/l2/bn/activation importance, optional least-squares reconstruction)",
        options: OPTIONS,
        create: |o| Ok(Box::new(Prune::from_options(o)?)),
    }
}

/// The pruning pass and its settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Prune {
    /// What to aim for.
    pub target: Target,
    /// Global ranking.
    pub global: bool,
    /// Importance criterion.
    pub criterion: Criterion,
    /// Kept counts are multiples of this.
    pub round_to: usize,
    /// Name globs of groups to leave alone.
    pub ignore: Vec<String>,
    /// Prune attention-head groups too.
    pub heads: bool,
    /// Refit consumers on calibration data.
    pub reconstruct: bool,
    /// Ridge damping of the refit.
    pub damp: f64,
}

fn out_of_range(option: &str, value: f64, expected: &str) -> PassError {
    PassError::BadOptionValue {
        pass: "prune".into(),
        option: option.into(),
        value: value.to_string(),
        expected: expected.into(),
    }
}

impl Prune {
    /// The pass with parsed options; a ratio/params/flops outside (0,1), or both params
    /// and flops, is an error naming the option.
    pub fn from_options(o: &Options) -> Result<Prune, PassError> {
        let ratio = o.get_float("ratio")?;
        if !(ratio > 0.0 && ratio < 1.0) {
            return Err(out_of_range("ratio", ratio, "a number in (0, 1)"));
        }
        let fraction = |name: &str| -> Result<Option<f64>, PassError> {
            let v = o.get_float(name)?;
            if v == 0.0 {
                Ok(None)
            } else if v > 0.0 && v < 1.0 {
                Ok(Some(v))
            } else {
                Err(out_of_range(
                    name,
                    v,
                    "a fraction to keep in (0, 1), or 0 for no target",
                ))
            }
        };
        let target = match (fraction("params")?, fraction("flops")?) {
            (Some(_), Some(f)) => {
                return Err(out_of_range(
                    "flops",
                    f,
                    "unset when params is given (one target at a time)",
                ))
            }
            (Some(p), None) => Target::Params(p),
            (None, Some(f)) => Target::Flops(f),
            (None, None) => Target::Ratio(ratio),
        };
        let damp = o.get_float("damp")?;
        if damp.is_nan() || damp < 0.0 {
            return Err(out_of_range("damp", damp, "a number >= 0"));
        }
        let criterion = o.get_str("criterion")?;
        Ok(Prune {
            target,
            global: o.get_bool("global")?,
            criterion: Criterion::parse(criterion).ok_or_else(|| PassError::BadOptionValue {
                pass: "prune".into(),
                option: "criterion".into(),
                value: criterion.into(),
                expected: "one of l1|l2|bn|activation".into(),
            })?,
            round_to: usize::try_from(o.get_int("round_to")?).unwrap_or(1).max(1),
            ignore: o
                .get_str("ignore")?
                .split(['|', ';'])
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect(),
            heads: o.get_bool("heads")?,
            reconstruct: o.get_bool("reconstruct")?,
            damp,
        })
    }
}

/// Glob match with `*` (any run) and `?` (one character).
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Names a group touches: its member values and the nodes producing or reading them.
fn group_names(g: &Graph, grp: &ChannelGroup) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for m in &grp.members {
        let v = g.value(m.value);
        out.insert(v.name().to_string());
        let nodes = v.producer().map(|(n, _)| n).into_iter();
        for n in nodes.chain(v.uses().iter().map(|u| u.node())) {
            let name = &g.node(n).name;
            if !name.is_empty() {
                out.insert(name.clone());
            }
        }
    }
    out
}

/// Layers (Conv/Gemm/MatMul with a constant weight) that read a Consumes member of
/// a candidate along their input axis, in node order.
fn consumer_layers(g: &Graph, groups: &[&ChannelGroup]) -> Vec<layers::Layer> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for grp in groups {
        for m in grp.members.iter().filter(|m| m.role == Role::Consumes) {
            for u in g.value(m.value).uses() {
                let cc_ir::Use::Input { node, slot: 1 } = *u else {
                    continue;
                };
                if let Some(l) = layers::layer_of(g, node) {
                    if l.w == m.value && l.in_axis == m.axis && seen.insert(node) {
                        out.push(l);
                    }
                }
            }
        }
    }
    out.sort_by_key(|l| l.node.index());
    out
}

/// Removed indices per (constant, axis).
type Removed = BTreeMap<(ValueId, usize), BTreeSet<usize>>;

fn removed_indices(groups: &[&ChannelGroup], remove: &[Vec<usize>]) -> Removed {
    let mut out = Removed::new();
    for (grp, units) in groups.iter().zip(remove) {
        for m in grp.members.iter().filter(|m| m.role != Role::Carries) {
            let e = out.entry((m.value, m.axis)).or_default();
            for &k in units {
                e.extend(m.unit_range(k));
            }
        }
    }
    out
}

fn kept(removed: &Removed, v: ValueId, axis: usize, len: usize) -> Vec<usize> {
    match removed.get(&(v, axis)) {
        Some(r) => (0..len).filter(|i| !r.contains(i)).collect(),
        None => (0..len).collect(),
    }
}

impl Pass for Prune {
    fn name(&self) -> &str {
        "prune"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let disc = groups::discover(g)?;
        let prunable: Vec<usize> = (0..disc.groups.len())
            .filter(|&i| disc.groups[i].is_prunable())
            .collect();
        let candidates: Vec<usize> = prunable
            .iter()
            .copied()
            .filter(|&i| {
                let grp = &disc.groups[i];
                let kind_ok = self.heads || matches!(grp.kind, GroupKind::Channels);
                let ignored = !self.ignore.is_empty()
                    && group_names(g, grp)
                        .iter()
                        .any(|n| self.ignore.iter().any(|p| glob(p, n)));
                kind_ok && !ignored
            })
            .collect();
        let params_before = crate::stats::GraphStats::of(g).params;
        let flops_before = cost::flops(g);
        cx.stat("groups", disc.groups.len());
        cx.stat("prunable", prunable.len());
        cx.stat("candidates", candidates.len());
        let cands: Vec<&ChannelGroup> = candidates.iter().map(|&i| &disc.groups[i]).collect();

        // Calibration activations of the layers that consume candidate channels.
        let need_acts = self.criterion == Criterion::Activation || self.reconstruct;
        let mut recorded: Vec<(layers::Layer, cc_ir::Tensor)> = Vec::new();
        if need_acts && !cands.is_empty() {
            let what = if self.reconstruct {
                "reconstruct=true"
            } else {
                "criterion=activation"
            };
            let calib = cx.calibration().ok_or_else(|| {
                Error::invalid(format!(
                    "{what} needs calibration data (cc-compile --calib FILE.pb|DIR)"
                ))
            })?;
            calib.check(g)?;
            let ex = cx.executor()?;
            let ls = consumer_layers(g, &cands);
            let xs: Vec<ValueId> = ls.iter().map(|l| l.x).collect();
            let acts = reconstruct::record(g, ex, calib, &xs)?;
            recorded = ls.into_iter().zip(acts).collect();
        }
        let act_stats = if self.criterion == Criterion::Activation {
            Some(importance::act_stats(&recorded)?)
        } else {
            None
        };

        let mut fallbacks = 0usize;
        let scores: Vec<Vec<f64>> = cands
            .iter()
            .map(|grp| {
                let (s, fb) = importance::scores(g, grp, self.criterion, act_stats.as_ref());
                fallbacks += usize::from(fb);
                s
            })
            .collect();
        match self.criterion {
            Criterion::Bn => cx.stat("bn-fallback", fallbacks),
            Criterion::Activation => cx.stat("activation-fallback", fallbacks),
            _ => {}
        }
        let model = cost::CostModel::new(g, &cands);
        let plan = Plan {
            target: self.target,
            global: self.global,
            round_to: self.round_to,
        };
        let sel = select::select(&scores, &plan, &model);
        if !matches!(self.target, Target::Ratio(_)) {
            cx.stat("target-met", if sel.target_met { "yes" } else { "no" });
        }
        let requests: Vec<(usize, Vec<usize>)> = candidates
            .iter()
            .zip(&sel.remove)
            .filter(|(_, r)| !r.is_empty())
            .map(|(&i, r)| (i, r.clone()))
            .collect();
        let units_total: usize = cands.iter().map(|c| c.units).sum();
        let units_removed: usize = requests.iter().map(|(_, r)| r.len()).sum();
        if self.heads {
            let is_heads = |i: usize| matches!(disc.groups[i].kind, GroupKind::Heads { .. });
            let total: usize = candidates
                .iter()
                .filter(|&&i| is_heads(i))
                .map(|&i| disc.groups[i].units)
                .sum();
            let removed: usize = requests
                .iter()
                .filter(|(i, _)| is_heads(*i))
                .map(|(_, r)| r.len())
                .sum();
            cx.stat("heads", format!("{removed}/{total} removed"));
        }
        cx.stat("pruned-groups", requests.len());
        cx.stat("units", format!("{units_removed}/{units_total} removed"));
        if requests.is_empty() {
            cx.stat("params", format!("{params_before} -> {params_before}"));
            cx.stat("flops", format!("{flops_before} -> {flops_before}"));
            return Ok(Changed::NO);
        }
        let orig = self.reconstruct.then(|| g.clone());
        groups::remove_many(g, &disc, &requests)?;

        if let Some(orig) = orig {
            let removed = removed_indices(&cands, &sel.remove);
            let jobs: Vec<reconstruct::Job> = recorded
                .into_iter()
                .filter(|(l, _)| {
                    removed
                        .get(&(l.w, l.in_axis))
                        .is_some_and(|r| !r.is_empty())
                })
                .map(|(l, x)| reconstruct::Job {
                    kept_in: kept(&removed, l.w, l.in_axis, l.inputs),
                    kept_out: kept(&removed, l.w, l.out_axis, l.outputs),
                    layer: l,
                    x_full: x,
                })
                .collect();
            let calib = cx
                .calibration()
                .ok_or_else(|| Error::invalid("reconstruct=true needs calibration data"))?
                .clone();
            let ex = cx.executor()?;
            let r = reconstruct::reconstruct(g, &orig, &jobs, ex, &calib, self.damp)?;
            cx.stat("reconstructed", r.layers);
            cx.stat("reconstruct-skipped", r.skipped);
            if r.layers > 0 {
                let n = r.layers as f64;
                cx.stat(
                    "reconstruct-error",
                    format!("{:.4} -> {:.4}", r.err_before / n, r.err_after / n),
                );
            }
        }
        let params_after = crate::stats::GraphStats::of(g).params;
        let flops_after = cost::flops(g);
        cx.stat("params", format!("{params_before} -> {params_after}"));
        cx.stat("flops", format!("{flops_before} -> {flops_after}"));
        cx.stat(
            "kept-params",
            params_after as f64 / params_before.max(1) as f64,
        );
        cx.stat(
            "kept-flops",
            flops_after as f64 / flops_before.max(1) as f64,
        );
        Ok(Changed::YES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Prune, PassError> {
        let info = crate::registry::lookup("prune").unwrap();
        let given: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Prune::from_options(&info.parse_options(&given)?)
    }

    #[test]
    fn options_parse_and_range_errors_name_the_option() {
        let p = parse(&[]).unwrap();
        assert_eq!(p.target, Target::Ratio(0.5));
        assert_eq!(p.criterion, Criterion::L2);
        for bad in ["0", "1", "1.5", "-0.2"] {
            let e = parse(&[("ratio", bad)]).unwrap_err().to_string();
            assert!(
                e.starts_with("pass prune: option ratio=") && e.contains("(0, 1)"),
                "{e}"
            );
        }
        let e = parse(&[("params", "2")]).unwrap_err().to_string();
        assert!(e.contains("option params="), "{e}");
        let e = parse(&[("params", "0.5"), ("flops", "0.5")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("option flops="), "{e}");
        let p = parse(&[
            ("flops", "0.3"),
            ("ignore", "fc*| head ;x?"),
            ("criterion", "bn"),
            ("round_to", "8"),
        ])
        .unwrap();
        assert_eq!(p.target, Target::Flops(0.3));
        assert_eq!(p.ignore, vec!["fc*", "head", "x?"]);
        assert_eq!((p.criterion, p.round_to), (Criterion::Bn, 8));
        assert!(parse(&[("criterion", "l3")]).is_err());
    }

    use crate::calibration::Calibration;
    use cc_ir::{DType, Executor, Op, Tensor, ValueType};
    use std::sync::Arc;

    /// x[N,4] -> Gemm(W1: 8 hidden, transB) -> Relu -> Gemm(W2: 3 outputs) -> y, where
    /// hidden units 4..8 are copies of 0..4 scaled by 0.5 (and read with half the weight):
    /// pruning them loses their contribution, which the second layer can take over
    /// exactly (relu(z/2) = relu(z)/2).
    fn mlp() -> Graph {
        let mut g = Graph::new("mlp");
        let ty = |d: Vec<cc_ir::Dim>| {
            Some(ValueType::Tensor {
                elem: Some(DType::F32),
                shape: Some(d),
            })
        };
        let x = g
            .add_value(
                "x",
                ty(vec![cc_ir::Dim::Sym("N".into()), cc_ir::Dim::Known(4)]),
            )
            .unwrap();
        let mut w1 = Vec::new();
        for k in 0..8 {
            for i in 0..4 {
                let base = ((k % 4) * 4 + i) as f32 * 0.37 - 2.0;
                w1.push(if k < 4 { base.sin() } else { 0.5 * base.sin() });
            }
        }
        let w1 = g
            .add_const("w1", Tensor::from_f32(vec![8, 4], w1).unwrap())
            .unwrap();
        let b1 = g
            .add_const("b1", Tensor::from_f32(vec![8], vec![0.0; 8]).unwrap())
            .unwrap();
        // Rows 4..8 of W2 are half of rows 0..4, so the copies score lower everywhere.
        let w2: Vec<f32> = (0..24)
            .map(|i| {
                let c = ((i % 12) as f32 * 0.71).cos();
                if i < 12 {
                    c
                } else {
                    0.5 * c
                }
            })
            .collect();
        let w2 = g
            .add_const("w2", Tensor::from_f32(vec![8, 3], w2).unwrap())
            .unwrap();
        let b2 = g
            .add_const(
                "b2",
                Tensor::from_f32(vec![3], vec![0.1, 0.2, 0.3]).unwrap(),
            )
            .unwrap();
        let (h, r, y) = (
            g.add_value("h", None).unwrap(),
            g.add_value("r", None).unwrap(),
            g.add_value("y", None).unwrap(),
        );
        let gemm = |t: i64| Op::Gemm {
            alpha: None,
            beta: None,
            trans_a: None,
            trans_b: Some(t),
        };
        g.add_node(
            "fc1",
            gemm(1),
            vec![Some(x), Some(w1), Some(b1)],
            vec![Some(h)],
        )
        .unwrap();
        g.add_node(
            "relu",
            Op::Unary(cc_ir::op::UnaryOp::Relu),
            vec![Some(h)],
            vec![Some(r)],
        )
        .unwrap();
        g.add_node(
            "fc2",
            gemm(0),
            vec![Some(r), Some(w2), Some(b2)],
            vec![Some(y)],
        )
        .unwrap();
        g.set_inputs(vec![x]);
        g.set_outputs(vec![y]);
        cc_ir::infer::infer_shapes(&mut g).unwrap();
        g
    }

    fn calib(n: usize) -> Calibration {
        let v: Vec<f32> = (0..n * 4)
            .map(|i| ((i * 7919) % 23) as f32 / 5.0 - 2.2)
            .collect();
        Calibration::new("synthetic", vec![Tensor::from_f32(vec![n, 4], v).unwrap()])
    }

    fn run_pass(g: &mut Graph, spec: &[(&str, &str)], c: Option<Calibration>) -> PassCx {
        let mut p = parse(spec).unwrap();
        let ex: Arc<dyn Executor> = Arc::new(cc_backends::cpu::CpuExecutor::new(1).unwrap());
        let mut cx = PassCx::new(0)
            .with_executor(Some(ex))
            .with_calibration(c.map(Arc::new));
        assert!(p.run(g, &mut cx).unwrap().is_changed());
        cc_ir::verify::verify(g).unwrap();
        cx
    }

    fn outputs(g: &Graph, c: &Calibration) -> Vec<f32> {
        let ex = cc_backends::cpu::CpuExecutor::new(1).unwrap();
        ex.run(g, &c.inputs).unwrap()[0].to_f32().unwrap()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn prunes_the_weaker_copies_and_reconstruction_recovers_the_output() {
        let c = calib(64);
        let want = outputs(&mlp(), &c);
        let mut plain = mlp();
        let cx = run_pass(&mut plain, &[("ratio", "0.5")], None);
        let w1 = plain.node(plain.node_ids()[0]).input(1).unwrap();
        assert_eq!(plain.const_data(w1).unwrap().shape(), &[4, 4]);
        let stats: Vec<String> = cx.stats().iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert!(
            stats.contains(&"units=4/8 removed".to_string()),
            "{stats:?}"
        );
        assert!(stats.contains(&"params=67 -> 35".to_string()), "{stats:?}");
        let lossy = max_diff(&outputs(&plain, &c), &want);
        assert!(
            lossy > 1e-2,
            "pruning the copies must change the output: {lossy}"
        );

        let mut refit = mlp();
        let cx = run_pass(
            &mut refit,
            &[("ratio", "0.5"), ("reconstruct", "true"), ("damp", "1e-9")],
            Some(c.clone()),
        );
        let stats: Vec<String> = cx.stats().iter().map(|(k, v)| format!("{k}={v}")).collect();
        let exact = max_diff(&outputs(&refit, &c), &want);
        assert!(
            exact < 1e-3,
            "reconstruction should absorb the copies: {exact} {stats:?}"
        );
        assert!(stats.contains(&"reconstructed=1".to_string()), "{stats:?}");
        // Activation criterion on the same data also finds the weaker copies.
        let mut act = mlp();
        run_pass(&mut act, &[("criterion", "activation")], Some(c.clone()));
        assert_eq!(max_diff(&outputs(&act, &c), &outputs(&plain, &c)), 0.0);
    }

    #[test]
    fn calibration_is_required_and_checked() {
        let mut p = parse(&[("reconstruct", "true")]).unwrap();
        let mut g = mlp();
        let e = p.run(&mut g, &mut PassCx::new(0)).unwrap_err().to_string();
        assert!(e.contains("needs calibration data"), "{e}");
        let bad = Calibration::new(
            "bad.pb",
            vec![Tensor::from_f32(vec![2, 5], vec![0.0; 10]).unwrap()],
        );
        let mut cx = PassCx::new(0).with_calibration(Some(Arc::new(bad)));
        let e = p.run(&mut g, &mut cx).unwrap_err().to_string();
        assert!(e.contains("bad.pb") && e.contains("shape"), "{e}");
    }

    #[test]
    fn ignore_and_targets() {
        let mut g = mlp();
        let mut p = parse(&[("ignore", "fc?")]).unwrap();
        let mut cx = PassCx::new(0);
        assert!(!p.run(&mut g, &mut cx).unwrap().is_changed());
        let mut g = mlp();
        let cx = run_pass(&mut g, &[("params", "0.7")], None);
        let kept = crate::stats::GraphStats::of(&g).params as f64 / 67.0;
        assert!(kept <= 0.7, "{kept}");
        assert!(cx
            .stats()
            .iter()
            .any(|(k, v)| k == "target-met" && v.to_string() == "yes"));
    }

    #[test]
    fn globs() {
        assert!(glob("fc*", "fc1.weight"));
        assert!(glob("*.bias", "13.bias"));
        assert!(glob("conv?", "conv3"));
        assert!(!glob("conv?", "conv12"));
        assert!(glob("*", ""));
        assert!(!glob("a*b", "acbd"));
        assert!(glob("a*b*", "acbd"));
    }
}
