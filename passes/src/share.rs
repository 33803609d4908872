//! `share`: randomized parameter sharing after ROAST / STABLE-RPS. Every constant f32
//! weight read by a selected op (MatMul input 1 of rank 2, Gemm input 1, Conv input 1,
//! Gather table) becomes a [`cc_ir::SharedWeight`] reading one array of about
//! `ratio` × (their total size) through the seeded chunked hash of
//! [`cc_ir::compressed::shared`] (slot and ±1 sign of each element's global position;
//! each weight scaled by a power of two near its RMS).
//!
//! The array is fitted after training: each slot holds the mean of its members'
//! sign-corrected, scaled-down weights (the least-squares fit of the normalized
//! weights). With `ratio=1` every slot has one member and the model is reproduced
//! exactly. The ONNX writer recomputes the hash in integer ops (`Range`, `Div`, `Mod`,
//! `Mul`, `Add`, `Gather`, `Reshape`), so only the array is stored; the CPU executor
//! decodes the weights directly from the formula.

use crate::error::PassError;
use crate::options::{OptionKind, OptionSpec, Options};
use crate::pass::{Changed, Pass, PassCx};
use crate::registry::PassInfo;
use crate::weights::{WeightSelection, WEIGHT_OPS};
use cc_ir::compressed::shared::{self, HashParams};
use cc_ir::{Compressed, Error, Graph, SharedWeight, Tensor, ValueId};

const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "ratio",
        kind: OptionKind::Float,
        default: "0.5",
        help: "size of the shared array as a fraction of the selected weights' elements, in (0, 1]",
    },
    OptionSpec {
        name: "chunk",
        kind: OptionKind::Int {
            min: Some(1),
            max: Some(1 << 16),
        },
        default: "32",
        help: "chunk length: consecutive elements that stay consecutive in the array",
    },
    OptionSpec {
        name: "scale",
        kind: OptionKind::Enum(&["rms", "none"]),
        default: "rms",
        help: "per-weight scale: a power of two near the weight's RMS (rms), or 1 (none)",
    },
    OptionSpec {
        name: "ops",
        kind: OptionKind::Str,
        default: "MatMul|Gemm|Conv",
        help: "op types whose weights are shared (MatMul, Gemm, Conv, Gather), separated by | or ;",
    },
    OptionSpec {
        name: "ignore",
        kind: OptionKind::Str,
        default: "",
        help: "name globs (* and ?) separated by | or ;: weights or nodes matching are kept in f32",
    },
];

inventory::submit! {
    PassInfo {
        name: "share",
        summary: "randomized parameter sharing (ROAST/STABLE-RPS: one hashed array for all weights)",
        options: OPTIONS,
        create: |o| Ok(Box::new(Share::from_options(o)?)),
    }
}

/// The parameter-sharing pass and its settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Share {
    /// Array size as a fraction of the selected elements, in (0, 1].
    pub ratio: f64,
    /// Chunk length.
    pub chunk: u64,
    /// Scale each weight by a power of two near its RMS.
    pub rms_scale: bool,
    /// Which weights are shared (`ops=`, `ignore=`).
    pub select: WeightSelection,
}

/// The power of two nearest (in log scale) to the RMS of `w`; 1 for a zero weight.
pub fn rms_scale(w: &[f32]) -> f32 {
    let ss: f64 = w.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    let rms = (ss / w.len().max(1) as f64).sqrt();
    if !(rms.is_normal()) {
        return 1.0;
    }
    let e = rms.log2().round().clamp(-100.0, 100.0) as i32;
    2f32.powi(e)
}

/// The mean of each slot's sign-corrected members: `members[j]` is `(slot, sign·x)`.
/// Slots without members are 0.
pub fn fit(slots: usize, members: impl Iterator<Item = (usize, f32)>) -> Vec<f32> {
    let mut sum = vec![0f64; slots];
    let mut count = vec![0u32; slots];
    for (s, x) in members {
        if let (Some(a), Some(c)) = (sum.get_mut(s), count.get_mut(s)) {
            *a += f64::from(x);
            *c += 1;
        }
    }
    sum.iter()
        .zip(&count)
        .map(|(&a, &c)| {
            if c == 0 {
                0.0
            } else {
                (a / f64::from(c)) as f32
            }
        })
        .collect()
}

impl Share {
    /// The pass with parsed options.
    pub fn from_options(o: &Options) -> Result<Share, PassError> {
        let ratio = o.get_float("ratio")?;
        if !(ratio > 0.0 && ratio <= 1.0) {
            return Err(PassError::BadOptionValue {
                pass: "share".into(),
                option: "ratio".into(),
                value: ratio.to_string(),
                expected: "a number in (0, 1]".into(),
            });
        }
        let select = WeightSelection::from_options("share", o, WEIGHT_OPS)?;
        Ok(Share {
            ratio,
            chunk: o.get_int("chunk")?.max(1) as u64,
            rms_scale: o.get_str("scale")? == "rms",
            select,
        })
    }

    /// The weights to share, each once, in topological order of their first reader
    /// (see [`WeightSelection::targets`]).
    fn targets(&self, g: &Graph) -> Result<Vec<ValueId>, PassError> {
        Ok(self
            .select
            .targets(g)?
            .into_iter()
            .map(|t| t.value)
            .collect())
    }
}

/// A name for a new shared array: free among the graph's values and the arrays of
/// shared weights already in it.
fn array_name(g: &Graph) -> String {
    let taken: Vec<String> = cc_ir::compressed::compressed_values(g)
        .into_iter()
        .filter_map(|v| {
            g.value(v)
                .compressed
                .as_ref()
                .and_then(Compressed::shared_array)
                .map(|(n, _)| n.to_string())
        })
        .collect();
    let mut name = g.unique_name("shared_weights");
    let mut k = 1;
    while taken.contains(&name) {
        name = g.unique_name(&format!("shared_weights_{k}"));
        k += 1;
    }
    name
}

impl Pass for Share {
    fn name(&self) -> &str {
        "share"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let targets = self.targets(g)?;
        let mut weights: Vec<(ValueId, Tensor, Vec<f32>, f32)> = Vec::new();
        for &v in &targets {
            let Some(t) = g.const_data(v).cloned() else {
                continue;
            };
            let w = t.f32_view()?.into_owned();
            if let Some(i) = w.iter().position(|x| !x.is_finite()) {
                return Err(Error::invalid(format!(
                    "weight {}: element {i} is not finite",
                    g.value(v).name()
                ))
                .into());
            }
            let scale = if self.rms_scale { rms_scale(&w) } else { 1.0 };
            weights.push((v, t, w, scale));
        }
        let total: u64 = weights.iter().map(|(_, _, w, _)| w.len() as u64).sum();
        cx.stat("shared_weights", weights.len());
        if weights.is_empty() {
            return Ok(Changed(false));
        }
        let want = ((self.ratio * total as f64).round() as u64).max(1);
        let seed = cx.seed() ^ 0x5348_4152_4520_5250; // "SHARE RP"
        let hash = HashParams::new(seed, self.chunk, want.div_ceil(self.chunk))?;
        if total >= shared::PRIME {
            return Err(Error::invalid(format!(
                "share: {total} weight elements do not fit the 2^31 position space"
            ))
            .into());
        }
        let slots = hash.slots() as usize;
        // Fit: the mean of each slot's members (sign-corrected, divided by the scale).
        let mut offset = 0u64;
        let mut members = Vec::with_capacity(total as usize);
        for (_, _, w, scale) in &weights {
            for (j, &x) in w.iter().enumerate() {
                let p = offset + j as u64;
                let y = x / scale;
                let y = if hash.negative(p) { -y } else { y };
                members.push((hash.slot(p) as usize, y));
            }
            offset += w.len() as u64;
        }
        let array = Tensor::from_f32_vec(vec![slots], fit(slots, members.into_iter()))?;
        let name = array_name(g);
        let (mut err2, mut norm2, mut worst) = (0f64, 0f64, 0f64);
        let mut offset = 0u64;
        for (v, t, w, scale) in weights {
            let sw = SharedWeight {
                array: array.clone(),
                array_name: name.clone(),
                shape: t.shape().to_vec(),
                offset,
                scale,
                hash,
            };
            offset += w.len() as u64;
            let d = shared::decode(&sw)?;
            let (mut e, mut nn) = (0f64, 0f64);
            for (a, b) in w.iter().zip(&d) {
                e += f64::from(a - b).powi(2);
                nn += f64::from(*a).powi(2);
            }
            err2 += e;
            norm2 += nn;
            if nn > 0.0 {
                worst = worst.max((e / nn).sqrt());
            }
            let val = g.value_mut(v);
            val.data = None;
            val.compressed = Some(Compressed::Shared(sw));
        }
        cx.stat("params_before", total);
        cx.stat("params_after", slots);
        cx.stat("chunk", hash.chunk);
        cx.stat("weight_bytes_before", total * 4);
        cx.stat("weight_bytes_after", slots * 4 + targets.len() * 4);
        let rel = if norm2 > 0.0 {
            (err2 / norm2).sqrt()
        } else {
            0.0
        };
        cx.stat("weight_rel_error", rel);
        cx.stat("weight_rel_error_max", worst);
        Ok(Changed(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_graphs::{add_row_input, run_pass, stat, test_weights};
    use cc_ir::Executor;
    use cc_ir::{DType, Op};

    fn share(text: &str) -> Result<Share, PassError> {
        let o = crate::options::test_options("share", text)?;
        Share::from_options(&o)
    }

    /// x[1, k] · w1[k, n] · w2[n, n]: two weights of very different magnitudes.
    fn graph(k: usize, n: usize) -> (Graph, Vec<f32>, Vec<f32>) {
        let mut g = Graph::new("g");
        let x = add_row_input(&mut g, k);
        let w1 = test_weights(k * n);
        let w2: Vec<f32> = (0..n * n)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 4000.0)
            .collect();
        let a = g
            .add_const("w1", Tensor::from_f32(vec![k, n], w1.clone()).unwrap())
            .unwrap();
        let b = g
            .add_const("w2", Tensor::from_f32(vec![n, n], w2.clone()).unwrap())
            .unwrap();
        let y = g.add_value("y", None).unwrap();
        let z = g.add_value("z", None).unwrap();
        g.add_node("mm1", Op::MatMul, vec![Some(x), Some(a)], vec![Some(y)])
            .unwrap();
        g.add_node("mm2", Op::MatMul, vec![Some(y), Some(b)], vec![Some(z)])
            .unwrap();
        g.set_inputs(vec![x]);
        g.set_outputs(vec![z]);
        g.meta.opset_imports = vec![(String::new(), 17)];
        (g, w1, w2)
    }

    fn weight(g: &Graph, name: &str) -> SharedWeight {
        let v = g.value_by_name(name).unwrap();
        let Some(Compressed::Shared(sw)) = &g.value(v).compressed else {
            panic!("{name} not shared")
        };
        sw.clone()
    }

    #[test]
    fn ratio_one_reproduces_every_weight_exactly() {
        for chunk in [1, 7, 32, 1000] {
            let (mut g, w1, w2) = graph(40, 24);
            let cx = run_pass(
                &mut share(&format!("ratio=1,chunk={chunk}")).unwrap(),
                &mut g,
                3,
            );
            assert_eq!(shared::decode(&weight(&g, "w1")).unwrap(), w1);
            assert_eq!(shared::decode(&weight(&g, "w2")).unwrap(), w2);
            assert_eq!(stat(&cx, "weight_rel_error"), "0");
            assert_eq!(stat(&cx, "shared_weights"), "2");
            cc_ir::verify::verify(&g).unwrap();
        }
    }

    #[test]
    fn fit_is_the_slot_mean_of_sign_corrected_weights() {
        assert_eq!(
            fit(3, [(0, 1.0), (0, 3.0), (2, -1.0)].into_iter()),
            vec![2.0, 0.0, -1.0]
        );
        let (mut g, w1, w2) = graph(40, 24);
        run_pass(&mut share("ratio=0.25,chunk=4").unwrap(), &mut g, 3);
        let (a, b) = (weight(&g, "w1"), weight(&g, "w2"));
        assert!(std::ptr::eq(
            a.array.raw().unwrap().as_ptr(),
            b.array.raw().unwrap().as_ptr()
        ));
        assert_eq!((a.offset, b.offset), (0, 960));
        let h = a.hash;
        let arr = a.array.to_f32().unwrap();
        let mut sums = vec![(0f64, 0u32); arr.len()];
        for (p, (x, s)) in w1
            .iter()
            .map(|x| (x, a.scale))
            .chain(w2.iter().map(|x| (x, b.scale)))
            .enumerate()
        {
            let sign = if h.negative(p as u64) { -1.0 } else { 1.0 };
            let e = &mut sums[h.slot(p as u64) as usize];
            e.0 += f64::from(x / s) * sign;
            e.1 += 1;
        }
        for (z, (s, c)) in arr.iter().zip(&sums) {
            let want = if *c == 0 { 0.0 } else { s / f64::from(*c) };
            assert!((f64::from(*z) - want).abs() < 1e-6, "{z} vs {want}");
        }
        // The scales follow the magnitudes (powers of two).
        assert!(a.scale > 100.0 * b.scale && a.scale.log2().fract() == 0.0);
        // Sharing into a quarter loses accuracy, and is deterministic with the seed.
        let (mut g2, ..) = graph(40, 24);
        run_pass(&mut share("ratio=0.25,chunk=4").unwrap(), &mut g2, 3);
        assert_eq!(weight(&g2, "w1").array, a.array);
        let (mut g3, ..) = graph(40, 24);
        run_pass(&mut share("ratio=0.25,chunk=4").unwrap(), &mut g3, 4);
        assert_ne!(weight(&g3, "w1").array, a.array);
    }

    #[test]
    fn rms_scale_keeps_the_small_weight() {
        let err = |spec: &str| {
            let (mut g, _, _) = graph(40, 24);
            let cx = run_pass(&mut share(spec).unwrap(), &mut g, 1);
            stat(&cx, "weight_rel_error_max").parse::<f64>().unwrap()
        };
        let (with, without) = (err("ratio=0.5"), err("ratio=0.5,scale=none"));
        assert!(with < without && with < 1.0, "{with} vs {without}");
    }

    #[test]
    fn the_lowered_integer_ops_compute_the_rust_formula() {
        for spec in ["ratio=0.3,chunk=5", "ratio=1,chunk=32", "ratio=0.1,chunk=1"] {
            let (mut g, ..) = graph(40, 24);
            run_pass(&mut share(spec).unwrap(), &mut g, 11);
            let l = cc_ir::compressed::lower_compressed(&g).unwrap();
            assert!(!cc_ir::compressed::has_compressed(&l));
            // One array initializer for both weights.
            let arrays = l
                .value_ids()
                .filter(|&v| {
                    l.const_data(v)
                        .is_some_and(|t| t.dtype() == DType::F32 && t.len() > 2)
                })
                .count();
            assert_eq!(arrays, 1, "{spec}");
            // Expose the two lowered weights as outputs and run the integer subgraph.
            let (a, b) = (
                l.value_by_name("w1").unwrap(),
                l.value_by_name("w2").unwrap(),
            );
            let mut l = l;
            l.set_outputs(vec![a, b]);
            let ex = cc_backends::cpu::CpuExecutor::new(1).unwrap();
            let x = Tensor::from_f32(vec![1, 40], vec![0.0; 40]).unwrap();
            let got = ex.run(&l, &[x]).unwrap();
            for (t, name) in got.iter().zip(["w1", "w2"]) {
                let want = shared::decode(&weight(&g, name)).unwrap();
                assert_eq!(t.to_f32().unwrap(), want, "{spec} {name}");
                assert_eq!(t.shape(), weight(&g, name).shape.as_slice());
            }
        }
    }

    #[test]
    fn options_select_weights_and_bad_values_name_the_option() {
        let (mut g, ..) = graph(4, 4);
        let cx = run_pass(&mut share("ignore=w1").unwrap(), &mut g, 0);
        assert_eq!(stat(&cx, "shared_weights"), "1");
        assert!(g.value(g.value_by_name("w1").unwrap()).compressed.is_none());
        let (mut g, ..) = graph(4, 4);
        run_pass(&mut share("ops=Conv").unwrap(), &mut g, 0);
        assert!(!cc_ir::compressed::has_compressed(&g));
        for (text, option) in [
            ("ratio=0", "ratio"),
            ("ratio=1.5", "ratio"),
            ("chunk=0", "chunk"),
            ("scale=max", "scale"),
            ("ops=Add", "ops"),
        ] {
            let e = share(text).unwrap_err().to_string();
            assert!(e.contains(&format!("option {option}=")), "{text}: {e}");
        }
    }
}
