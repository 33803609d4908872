//! Group discovery over every fixture: counts (discovery time is printed; it is measured in `cc-bench compile`), `cc-compile groups` snapshots,
//! and the exactness check (removing a random subset of a group's units gives the same
//! outputs as zeroing their consumers) on the prepared graphs (symbolic dims fixed to 1)
//! and on the dynamic canonical graphs, plus onnxruntime loading pruned models.
//!
//! `GROUPS_DEBUG=<fixture>` prints that fixture's report and prepared IR in the counts
//! test; `GROUPS_DEBUG_DYN=<fixture>` prints the report on the dynamic graph.

use cc_backends::cpu::CpuExecutor;
use cc_ir::onnx::{load_model, read_tensor_file};
use cc_ir::{Executor, Graph, Tensor};
use cc_passes::groups::{self, ChannelGroup, Discovery};
use cc_tests::{fixture_models, max_rel_error, shared_dir, test_inputs};
use std::path::Path;
use std::time::Instant;

/// Loads a fixture and prepares it for discovery with symbolic dims fixed to 1 (as
/// `cc-compile groups` does); returns the graph and the first sample of
/// `test_data_set_0` (the batch axis cut to 1 where the model leaves it symbolic).
fn load_prepared(dir: &Path) -> (Graph, Vec<Tensor>) {
    let mut g = load_model(&dir.join("model.onnx")).unwrap();
    cc_ir::infer::infer_shapes(&mut g).unwrap();
    let symbolic: Vec<bool> = g
        .inputs()
        .iter()
        .filter(|&&v| !g.value(v).is_const())
        .map(|&v| {
            g.value(v)
                .ty
                .as_ref()
                .and_then(|t| t.shape())
                .and_then(|s| s.first())
                .is_some_and(|d| d.known().is_none())
        })
        .collect();
    let inputs: Vec<Tensor> = test_inputs(dir)
        .iter()
        .zip(symbolic)
        .map(|(p, sym)| {
            let t = read_tensor_file(p).unwrap().1;
            if sym {
                first_sample(&t)
            } else {
                t
            }
        })
        .collect();
    groups::prepare(&mut g, None).unwrap();
    (g, inputs)
}

/// Loads a fixture as the compiler sees it (canonicalized, symbolic dims kept) with the
/// full `test_data_set_0` inputs.
fn load_dynamic(dir: &Path) -> (Graph, Vec<Tensor>) {
    let mut g = load_model(&dir.join("model.onnx")).unwrap();
    cc_ir::infer::infer_shapes(&mut g).unwrap();
    cc_tests::run_pipeline(&mut g, "").unwrap();
    let inputs = test_inputs(dir)
        .iter()
        .map(|p| read_tensor_file(p).unwrap().1)
        .collect();
    (g, inputs)
}

/// The first entry along axis 0 of a tensor (f32 or i64).
fn first_sample(t: &Tensor) -> Tensor {
    let mut shape = t.shape().to_vec();
    let n = t.len() / shape[0].max(1);
    shape[0] = 1;
    match t.dtype() {
        cc_ir::DType::F32 => Tensor::from_f32(shape, t.to_f32().unwrap()[..n].to_vec()).unwrap(),
        cc_ir::DType::I64 => Tensor::from_i64(shape, t.to_i64().unwrap()[..n].to_vec()).unwrap(),
        other => panic!("unexpected input type {other}"),
    }
}

/// Minimum prunable group counts from the acceptance criteria (classifier output,
/// blocked as a graph output, is not counted).
fn minimum(name: &str) -> usize {
    match name {
        "resnet18" => 12,
        "mobilenet_v2" => 25,
        "squeezenet1_1" => 25,
        _ => 1,
    }
}

#[test]
fn group_counts_and_speed() {
    let Some(shared) = shared_dir() else { return };
    for (name, dir) in fixture_models(&shared) {
        let (g, _) = load_prepared(&dir);
        let t = Instant::now();
        let d = groups::discover(&g).unwrap();
        let secs = t.elapsed().as_secs_f64();
        let prunable: Vec<&ChannelGroup> = d.groups.iter().filter(|x| x.is_prunable()).collect();
        let heads = prunable
            .iter()
            .filter(|x| matches!(x.kind, groups::GroupKind::Heads { .. }))
            .count();
        println!(
            "{name}: {} groups, {} prunable ({heads} head groups), discovery {:.1} ms",
            d.groups.len(),
            prunable.len(),
            secs * 1e3
        );
        // The canonical graph with its symbolic dims left as they are (what the prune
        // pass sees): groups found on a fixed copy, mapped back.
        let (plain, _) = load_dynamic(&dir);
        let t = Instant::now();
        let dp = groups::discover(&plain).unwrap();
        if std::env::var("GROUPS_DEBUG_DYN").is_ok_and(|v| v == name) {
            println!("{}", groups::to_text(&plain, &dp));
        }
        println!(
            "  dynamic graph: {} prunable, discovery {:.1} ms",
            dp.groups.iter().filter(|x| x.is_prunable()).count(),
            t.elapsed().as_secs_f64() * 1e3
        );
        if std::env::var("GROUPS_DEBUG").is_ok_and(|v| v == name) {
            println!("{}", groups::to_text(&g, &d));
            println!("{}", cc_ir::printer::print_graph(&g));
        }
        assert!(
            prunable.len() >= minimum(&name),
            "{name}: {} prunable groups, want at least {}",
            prunable.len(),
            minimum(&name)
        );
        if name == "shufflenet_v2_x1_0" {
            // Groups that cross channel shuffles rewrite the shuffle's Reshape shapes.
            let across = prunable
                .iter()
                .filter(|x| {
                    x.fixups
                        .iter()
                        .any(|f| matches!(f, groups::Fixup::ShapeDim { .. }))
                })
                .count();
            println!("  {across} prunable groups cross a channel shuffle");
            assert!(across > 0, "{name}: no group crosses a channel shuffle");
        }
        if matches!(name.as_str(), "vit_tiny" | "llama_tiny" | "tiny_lm") {
            assert!(heads > 0, "{name}: no attention-head group");
        }
    }
}

/// Runs `g`; when every output is zero (a zero-initialised classifier, as in
/// torchvision's ViT, hides every change), adds the classifier's input as an extra
/// output and runs again. Returns the outputs.
fn expose_features_if_zero(
    g: &mut Graph,
    inputs: &[Tensor],
    ex: &CpuExecutor,
    name: &str,
) -> Vec<Tensor> {
    let original = ex.run(g, inputs).unwrap();
    if !original
        .iter()
        .all(|t| t.to_f32().unwrap().iter().all(|&x| x == 0.0))
    {
        return original;
    }
    let out = g.outputs()[0];
    let head = g.value(out).producer().unwrap().0;
    let features = g.node(head).input(0).unwrap();
    let mut outs = g.outputs().to_vec();
    outs.push(features);
    g.set_outputs(outs);
    println!(
        "{name}: outputs are all zero; also comparing {:?}",
        g.value(features).name()
    );
    ex.run(g, inputs).unwrap()
}

/// A small deterministic generator (xorshift) for the random subsets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// A random subset of 0..n with at least 1 and at most n-1 elements, sorted.
    fn subset(&mut self, n: usize) -> Vec<usize> {
        let k = 1 + self.below(n - 1);
        let mut all: Vec<usize> = (0..n).collect();
        for i in 0..k {
            let j = i + self.below(n - i);
            all.swap(i, j);
        }
        let mut s = all[..k].to_vec();
        s.sort_unstable();
        s
    }
}

/// Largest relative error over all outputs.
fn compare(a: &[Tensor], b: &[Tensor]) -> Result<f64, String> {
    if a.len() != b.len() {
        return Err(format!("{} outputs vs {}", a.len(), b.len()));
    }
    a.iter()
        .zip(b)
        .try_fold(0f64, |m, (x, y)| Ok(m.max(max_rel_error(x, y)?)))
}

/// Removes `units` of group `gi` and compares with the original whose consumers of
/// those units are zeroed; returns the error and how far the zeroed model is from the
/// original (so the check is not vacuous).
fn check_group(
    g: &Graph,
    d: &Discovery,
    gi: usize,
    units: &[usize],
    inputs: &[Tensor],
    ex: &CpuExecutor,
    original: &[Tensor],
) -> Result<(f64, f64), String> {
    let group = &d.groups[gi];
    let mut pruned = g.clone();
    groups::remove_units(&mut pruned, group, units).map_err(|e| format!("remove: {e}"))?;
    cc_ir::verify::verify(&pruned).map_err(|e| format!("verify: {e}"))?;
    let mut zeroed = g.clone();
    groups::zero_consumers(&mut zeroed, group, units).map_err(|e| format!("zero: {e}"))?;
    let a = ex
        .run(&pruned, inputs)
        .map_err(|e| format!("run pruned: {e}"))?;
    let b = ex
        .run(&zeroed, inputs)
        .map_err(|e| format!("run zeroed: {e}"))?;
    Ok((compare(&a, &b)?, compare(&b, original)?))
}

#[test]
fn removing_units_equals_zeroing_their_consumers() {
    let Some(shared) = shared_dir() else { return };
    let ex = CpuExecutor::new(2).unwrap();
    let mut failures = Vec::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut runs = Vec::new();
    for (name, dir) in fixture_models(&shared) {
        let (g, inputs) = load_prepared(&dir);
        runs.push((name.clone(), g, inputs));
        let (g, inputs) = load_dynamic(&dir);
        runs.push((format!("{name} (dynamic)"), g, inputs));
    }
    for (name, mut g, inputs) in runs {
        let original = expose_features_if_zero(&mut g, &inputs, &ex, &name);
        let d = groups::discover(&g).unwrap();
        let mut checked = 0;
        let mut changed = 0;
        let mut worst = 0f64;
        for (gi, group) in d.groups.iter().enumerate() {
            if !group.is_prunable() {
                continue;
            }
            let units = rng.subset(group.units);
            checked += 1;
            match check_group(&g, &d, gi, &units, &inputs, &ex, &original) {
                Ok((err, effect)) if err <= 1e-4 => {
                    worst = worst.max(err);
                    changed += usize::from(effect > 1e-6);
                }
                Ok((err, _)) => failures.push(format!(
                    "{name} group {gi} ({} units, removed {units:?}): relative error {err:.3e}",
                    group.units
                )),
                Err(e) => failures.push(format!("{name} group {gi}: {e}")),
            }
        }
        println!(
            "{name}: {checked} prunable groups checked ({changed} change the outputs when \
             removed), worst relative error {worst:.2e}"
        );
        if checked > 0 && changed == 0 {
            failures.push(format!(
                "{name}: no removal changed the outputs (vacuous check)"
            ));
        }
    }
    for f in &failures {
        println!("  FAIL {f}");
    }
    assert!(failures.is_empty(), "{} groups failed", failures.len());
}

#[test]
fn groups_report_snapshots() {
    let Some(shared) = shared_dir() else { return };
    for (name, dir) in fixture_models(&shared) {
        let text = cc_cli::groups::report(&dir.join("model.onnx"), false).unwrap();
        insta::assert_snapshot!(format!("groups_{name}"), text);
    }
}

/// Prunes about a quarter of the units of every prunable group at once
/// ([`groups::remove_many`]), then checks that the model verifies, that onnxruntime
/// loads and runs it, and that it agrees with our executor.
#[test]
fn pruned_models_run_in_onnxruntime() {
    let Some(shared) = shared_dir() else { return };
    let Some(oracle) = cc_tests::Oracle::find() else {
        return;
    };
    let ex = CpuExecutor::new(2).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (name, dir) in fixture_models(&shared) {
        let (mut g, inputs) = load_prepared(&dir);
        expose_features_if_zero(&mut g, &inputs, &ex, &name);
        let d = groups::discover(&g).unwrap();
        let requests: Vec<(usize, Vec<usize>)> = d
            .groups
            .iter()
            .enumerate()
            .filter(|(_, x)| x.is_prunable())
            .map(|(i, x)| {
                (
                    i,
                    (0..(x.units / 4).max(1)).map(|k| k * 2 % x.units).collect(),
                )
            })
            .map(|(i, mut u): (usize, Vec<usize>)| {
                u.sort_unstable();
                u.dedup();
                (i, u)
            })
            .collect();
        let before = param_count(&g);
        groups::remove_many(&mut g, &d, &requests).unwrap();
        cc_ir::verify::verify(&g).unwrap();
        let after = param_count(&g);
        let model = tmp.path().join(format!("{name}.onnx"));
        cc_ir::onnx::save_model(&g, &model).unwrap();
        let files: Vec<std::path::PathBuf> = inputs
            .iter()
            .zip(g.inputs().iter().filter(|&&v| !g.value(v).is_const()))
            .enumerate()
            .map(|(i, (t, &v))| {
                let p = tmp.path().join(format!("{name}_input_{i}.pb"));
                cc_ir::onnx::write_tensor_file(&p, g.value(v).name(), t).unwrap();
                p
            })
            .collect();
        let ours = ex.run(&g, &inputs).unwrap();
        match oracle.run(&model, &files) {
            Ok(theirs) => match compare(&ours, &theirs) {
                Ok(err) if err <= 1e-4 => println!(
                    "{name}: {} groups pruned, params {before} -> {after}, onnxruntime agrees ({err:.1e})",
                    requests.len()
                ),
                Ok(err) => failures.push(format!("{name}: relative error {err:.3e}")),
                Err(e) => failures.push(format!("{name}: {e}")),
            },
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    for f in &failures {
        println!("  FAIL {f}");
    }
    assert!(failures.is_empty(), "{} models failed", failures.len());
}

fn param_count(g: &Graph) -> usize {
    g.value_ids()
        .filter(|&v| g.is_live(v))
        .filter_map(|v| g.const_data(v))
        .map(Tensor::len)
        .sum()
}

/// Discovery never panics and never fails on a graph the IR accepts: every ONNX
/// conformance model is analysed, and its prunable groups (if any) can be removed.
#[test]
fn discovery_runs_on_every_node_test_model() {
    let Some(shared) = shared_dir() else { return };
    let dirs = cc_tests::model_dirs(&shared.join("onnx-node-tests"));
    assert!(!dirs.is_empty(), "no node tests found");
    let (mut analysed, mut with_groups) = (0, 0);
    for dir in dirs {
        let Ok(mut g) = load_model(&dir.join("model.onnx")) else {
            continue;
        };
        if cc_ir::infer::infer_shapes(&mut g).is_err() {
            continue;
        }
        let d = groups::discover(&g)
            .unwrap_or_else(|e| panic!("{}: discovery failed: {e}", dir.display()));
        analysed += 1;
        if let Some((i, gr)) = d.groups.iter().enumerate().find(|(_, x)| x.is_prunable()) {
            with_groups += 1;
            let mut h = g.clone();
            groups::remove_units(&mut h, gr, &[0])
                .unwrap_or_else(|e| panic!("{}: group {i}: {e}", dir.display()));
            cc_ir::verify::verify(&h)
                .unwrap_or_else(|e| panic!("{}: group {i}: {e}", dir.display()));
        }
    }
    println!("node tests: {analysed} analysed, {with_groups} with a prunable group");
    assert!(analysed > 1000);
}
