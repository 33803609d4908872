//! `codebook`: weight clustering. Each constant f32 weight read by a selected op
//! (MatMul input 1 of rank 2, Gemm input 1, Conv input 1, Gather table) becomes a
//! [`cc_ir::CodebookWeight`]: 1-D k-means with `2^bits` centroids, one table for the
//! whole tensor (`per=tensor`) or one per output channel (`per=channel`), the indices
//! packed (two per byte up to 4 bits). The ONNX writer lowers each weight to
//! `Gather(centroids, Cast(indices) [+ channel offsets])`; the CPU executor runs
//! MatMul/Gemm readers through a fused table-lookup GEMM.
//!
//! Packed 4-bit indices need opset 21 (UINT4); a model whose ops cannot be moved to
//! opset 21 (see [`cc_ir::compressed::lower_compressed`]) keeps one byte per index.
//!
//! k-means runs on the sorted values with prefix sums (see [`kmeans`]), so it is cheap
//! enough for every weight of resnet18 in well under a second; initialisation is by
//! quantiles (default) or k-means++ seeded from the pipeline seed.

mod importance;
mod kmeans;

use crate::error::PassError;
use crate::options::{OptionKind, OptionSpec, Options};
use crate::pass::{Changed, Pass, PassCx};
use crate::registry::PassInfo;
use crate::weights::{WeightErrors, WeightSelection, WEIGHT_OPS};
use cc_ir::compressed::pack_4bit;
use cc_ir::{CodebookWeight, Compressed, DType, Error, Graph, NodeId, Tensor, ValueId};
use kmeans::{Init, Sorted};

const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "bits",
        kind: OptionKind::Int {
            min: Some(2),
            max: Some(8),
        },
        default: "4",
        help: "bits per index: 2^bits centroids per table",
    },
    OptionSpec {
        name: "per",
        kind: OptionKind::Enum(&["tensor", "channel"]),
        default: "tensor",
        help: "one centroid table per weight, or one per output channel",
    },
    OptionSpec {
        name: "iters",
        kind: OptionKind::Int {
            min: Some(0),
            max: Some(1000),
        },
        default: "300",
        help: "k-means (Lloyd) iterations at most; stops early when the clusters settle",
    },
    OptionSpec {
        name: "init",
        kind: OptionKind::Enum(&["quantile", "kmeans++"]),
        default: "quantile",
        help: "centroid initialisation: quantiles, or k-means++ drawn with the pipeline seed",
    },
    OptionSpec {
        name: "weighting",
        kind: OptionKind::Enum(&["auto", "none", "activation"]),
        default: "auto",
        help: "k-means weights: activation = mean square of the input feature on the calibration data (needs --calib); auto = activation when --calib is given",
    },
    OptionSpec {
        name: "ops",
        kind: OptionKind::Str,
        default: "MatMul|Gemm|Conv",
        help:
            "op types whose weights are clustered (MatMul, Gemm, Conv, Gather), separated by | or ;",
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
        name: "codebook",
        summary: "weight clustering (k-means codebook per tensor or per channel, packed indices)",
        options: OPTIONS,
        create: |o| Ok(Box::new(Codebook::from_options(o)?)),
    }
}

/// The weight-clustering pass and its settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Codebook {
    /// Bits per index (2..=8).
    pub bits: u32,
    /// One table per output channel (else one per weight).
    pub per_channel: bool,
    /// Lloyd iterations at most.
    pub iters: usize,
    /// k-means++ initialisation (else quantiles).
    pub plus_plus: bool,
    /// Weighting: `Some(true)` activation (required), `Some(false)` none, `None` auto.
    pub activation_weighted: Option<bool>,
    /// Op types whose weights are clustered.
    pub select: WeightSelection,
}

impl Codebook {
    /// The pass with parsed options.
    pub fn from_options(o: &Options) -> Result<Codebook, PassError> {
        let select = WeightSelection::from_options("codebook", o, WEIGHT_OPS)?;
        Ok(Codebook {
            bits: o.get_int("bits")?.clamp(2, 8) as u32,
            per_channel: o.get_str("per")? == "channel",
            iters: o.get_int("iters")?.max(0) as usize,
            plus_plus: o.get_str("init")? == "kmeans++",
            activation_weighted: match o.get_str("weighting")? {
                "activation" => Some(true),
                "none" => Some(false),
                _ => None,
            },
            select,
        })
    }

    /// The weights to cluster: (value, output-channel axis, first reader), each once
    /// (see [`WeightSelection::targets`]).
    fn targets(&self, g: &Graph) -> Result<Vec<(ValueId, usize, NodeId)>, PassError> {
        Ok(self
            .select
            .targets(g)?
            .into_iter()
            .map(|t| (t.value, t.out_axis, t.node))
            .collect())
    }

    /// Clusters `w` (logical `shape`, output channels along `axis`), each element
    /// counted with its weight in `weights` (all 1 when `None`); `seed` draws the
    /// k-means++ centroids.
    pub fn cluster(
        &self,
        name: &str,
        w: &[f32],
        shape: &[usize],
        axis: usize,
        weights: Option<&[f64]>,
        seed: u64,
    ) -> Result<CodebookWeight, Error> {
        if let Some(i) = w.iter().position(|x| !x.is_finite()) {
            return Err(Error::invalid(format!(
                "weight {name}: element {i} is not finite"
            )));
        }
        let k = 1usize << self.bits;
        let init = if self.plus_plus {
            Init::PlusPlus
        } else {
            Init::Quantile
        };
        let dim = *shape
            .get(axis)
            .ok_or_else(|| Error::invalid(format!("weight {name}: no axis {axis}")))?;
        let inner: usize = shape.iter().skip(axis + 1).product();
        let channels = if self.per_channel { dim } else { 1 };
        let channel_of = |i: usize| {
            if self.per_channel {
                (i / inner.max(1)) % dim.max(1)
            } else {
                0
            }
        };
        // Elements of each channel, in order.
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); channels];
        for i in 0..w.len() {
            if let Some(m) = members.get_mut(channel_of(i)) {
                m.push(i);
            }
        }
        let weight = |i: usize| weights.and_then(|ws| ws.get(i).copied()).unwrap_or(1.0);
        // Per channel, Lloyd also runs from the whole tensor's centroids and the better
        // of the two results is kept, so no channel ends up worse off than with the
        // shared table (Lloyd from quantiles can stop in a poor local optimum on few
        // values).
        let global = if self.per_channel {
            let s = Sorted::weighted(w.iter().enumerate().map(|(i, &x)| (x, weight(i))));
            Some(kmeans::kmeans(&s, k, self.iters, init, seed))
        } else {
            None
        };
        let mut table = vec![0f32; channels * k];
        let mut idx = vec![0i32; w.len()];
        for (c, m) in members.iter().enumerate() {
            let s = Sorted::weighted(m.iter().filter_map(|&i| Some((*w.get(i)?, weight(i)))));
            let mut cents = kmeans::kmeans(
                &s,
                k,
                self.iters,
                init,
                seed ^ (c as u64).wrapping_mul(0x9e37_79b9),
            );
            if let Some(gc) = &global {
                let alt = kmeans::lloyd(&s, gc.clone(), self.iters);
                if kmeans::sse(&s, &alt) < kmeans::sse(&s, &cents) {
                    cents = alt;
                }
            }
            // Unused slots repeat the last centroid (never addressed).
            let last = cents.last().copied().unwrap_or(0.0);
            for j in 0..k {
                if let Some(t) = table.get_mut(c * k + j) {
                    *t = cents.get(j).copied().unwrap_or(last) as f32;
                }
            }
            let cf: Vec<f64> = cents.iter().map(|&x| f64::from(x as f32)).collect();
            for &i in m {
                if let (Some(x), Some(o)) = (w.get(i), idx.get_mut(i)) {
                    *o = kmeans::nearest(&cf, f64::from(*x)) as i32;
                }
            }
        }
        let indices = if self.bits <= 4 {
            Tensor::from_raw(DType::U4, shape.to_vec(), pack_4bit(&idx).into())?
        } else {
            let raw: Vec<u8> = idx.iter().map(|&v| v as u8).collect();
            Tensor::from_raw(DType::U8, shape.to_vec(), raw.into())?
        };
        let (centroids, axis) = if self.per_channel {
            (Tensor::from_f32(vec![channels, k], table)?, Some(axis))
        } else {
            (Tensor::from_f32(vec![k], table)?, None)
        };
        Ok(CodebookWeight {
            indices,
            centroids,
            axis,
        })
    }
}

impl Codebook {
    /// Per-target element weights from calibration activations (see [`importance`]):
    /// with `weighting=activation`, or `auto` when `--calib` was given. Targets whose
    /// reader has no simple layout (Gather, grouped Conv) stay unweighted (`None`).
    fn element_weights(
        &self,
        g: &Graph,
        cx: &PassCx,
        targets: &[(ValueId, usize, NodeId)],
    ) -> Result<Vec<Option<Vec<f64>>>, PassError> {
        let none = || vec![None; targets.len()];
        let calib = match (self.activation_weighted, cx.calibration()) {
            (Some(false), _) | (None, None) => return Ok(none()),
            (Some(true), None) => {
                return Err(PassError::BadOptionValue {
                    pass: "codebook".into(),
                    option: "weighting".into(),
                    value: "activation".into(),
                    expected: "none, or give calibration data with --calib".into(),
                })
            }
            (_, Some(c)) => c,
        };
        let layouts: Vec<Option<importance::Layout>> = targets
            .iter()
            .map(|(_, _, id)| importance::layout(g, *id))
            .collect();
        let mut xs: Vec<(ValueId, isize)> = Vec::new();
        for l in layouts.iter().flatten() {
            if !xs.contains(&(l.x, l.x_axis)) {
                xs.push((l.x, l.x_axis));
            }
        }
        if xs.is_empty() {
            return Ok(none());
        }
        let ms = importance::feature_mean_squares(g, cx.executor()?, calib, &xs)?;
        Ok(targets
            .iter()
            .zip(&layouts)
            .map(|((v, ..), l)| {
                let l = l.as_ref()?;
                let at = xs.iter().position(|x| *x == (l.x, l.x_axis))?;
                let shape = g.const_data(*v)?.shape();
                importance::element_weights(shape, l.w_axis, ms.get(at)?)
            })
            .collect())
    }
}

impl Pass for Codebook {
    fn name(&self) -> &str {
        "codebook"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let targets = self.targets(g)?;
        let weights = self.element_weights(g, cx, &targets)?;
        let mut errors = WeightErrors::default();
        for (n, (v, axis, _)) in targets.iter().enumerate() {
            let Some(t) = g.const_data(*v).cloned() else {
                continue;
            };
            let name = g.value(*v).name().to_string();
            let w = t.f32_view()?;
            let seed = cx.seed().wrapping_add(n as u64);
            let ws = weights.get(n).and_then(|w| w.as_deref());
            let cw = self.cluster(&name, &w, t.shape(), *axis, ws, seed)?;
            let d = cc_ir::compressed::codebook::decode(&cw)?;
            errors.add(&w, &d, t.byte_len(), cw.byte_len());
            let val = g.value_mut(*v);
            val.data = None;
            val.compressed = Some(Compressed::Codebook(cw));
        }
        // Packed 4-bit indices need opset 21; a model whose ops cannot move there keeps
        // one byte per index (UINT8, opset 13).
        let mut index_bits = if self.bits <= 4 { 4 } else { 8 };
        if index_bits == 4 && !targets.is_empty() && cc_ir::compressed::lower_compressed(g).is_err()
        {
            index_bits = 8;
            errors.bytes_after = 0;
            for (v, ..) in &targets {
                let val = g.value_mut(*v);
                if let Some(Compressed::Codebook(cw)) = val.compressed.as_mut() {
                    let codes = cc_ir::compressed::codes_i32(&cw.indices)?;
                    let raw: Vec<u8> = codes.iter().map(|&c| c as u8).collect();
                    cw.indices =
                        Tensor::from_raw(DType::U8, cw.indices.shape().to_vec(), raw.into())?;
                    errors.bytes_after += cw.byte_len();
                }
            }
        }
        cx.stat("codebook_weights", targets.len());
        cx.stat("index_bits_stored", index_bits);
        cx.stat(
            "calibration_weighted",
            weights.iter().filter(|w| w.is_some()).count(),
        );
        cx.stat("codebook_params", errors.params);
        cx.stat("weight_bytes_before", errors.bytes_before);
        cx.stat("weight_bytes_after", errors.bytes_after);
        errors.record_errors(cx);
        Ok(Changed(!targets.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_graphs::{self, run_pass, stat, weight_value};
    use cc_ir::Op;

    fn codebook(text: &str) -> Result<Codebook, PassError> {
        let o = crate::options::test_options("codebook", text)?;
        Codebook::from_options(&o)
    }

    /// x[1, k] · w[k, n] with columns of very different ranges.
    fn matmul_graph(k: usize, n: usize) -> (Graph, Vec<f32>) {
        let w: Vec<f32> = (0..k * n)
            .map(|i| weight_value(i) * (1 + i % n) as f32)
            .collect();
        (test_graphs::matmul_graph(k, n, &w), w)
    }

    fn weight(g: &Graph) -> CodebookWeight {
        let v = g.value_by_name("w").unwrap();
        assert!(g.const_data(v).is_none());
        let Some(Compressed::Codebook(cw)) = &g.value(v).compressed else {
            panic!("not clustered")
        };
        cw.clone()
    }

    #[test]
    fn four_bits_per_tensor_pack_and_use_sixteen_centroids() {
        let (mut g, w) = matmul_graph(64, 8);
        let mut p = codebook("").unwrap();
        let cx = run_pass(&mut p, &mut g, 0);
        let cw = weight(&g);
        assert_eq!(cw.indices.dtype(), DType::U4);
        assert_eq!(cw.indices.shape(), &[64, 8]);
        assert_eq!(cw.centroids.shape(), &[16]);
        assert_eq!(cw.axis, None);
        assert_eq!(stat(&cx, "weight_bytes_before"), "2048");
        assert_eq!(stat(&cx, "weight_bytes_after"), (256 + 64).to_string());
        // Each element decodes to its nearest centroid.
        let d = cc_ir::compressed::codebook::decode(&cw).unwrap();
        let table = cw.centroids.to_f32().unwrap();
        for (a, b) in w.iter().zip(&d) {
            let best = table.iter().map(|c| (a - c).abs()).fold(f32::MAX, f32::min);
            assert!(((a - b).abs() - best).abs() < 1e-6);
        }
        // k-means beats 16 evenly spaced levels over the range.
        let rel: f64 = stat(&cx, "weight_rel_error").parse().unwrap();
        let (lo, hi) = w
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), &x| (l.min(x), h.max(x)));
        let step = (hi - lo) / 15.0;
        let (mut e, mut n) = (0f64, 0f64);
        for &x in &w {
            let q = lo + ((x - lo) / step).round() * step;
            e += f64::from(x - q).powi(2);
            n += f64::from(x).powi(2);
        }
        let uniform = (e / n).sqrt();
        assert!(rel > 0.0 && rel < uniform, "{rel} vs uniform {uniform}");
        cc_ir::verify::verify(&g).unwrap();
    }

    #[test]
    fn per_channel_tables_follow_the_output_axis_and_cut_the_error() {
        let (mut g, _) = matmul_graph(64, 8);
        let cx_t = run_pass(&mut codebook("bits=3").unwrap(), &mut g.clone(), 0);
        let cx_c = run_pass(&mut codebook("bits=3,per=channel").unwrap(), &mut g, 0);
        let cw = weight(&g);
        assert_eq!(cw.centroids.shape(), &[8, 8]);
        assert_eq!(cw.axis, Some(1));
        let (t, c): (f64, f64) = (
            stat(&cx_t, "weight_rel_error").parse().unwrap(),
            stat(&cx_c, "weight_rel_error").parse().unwrap(),
        );
        assert!(c < t, "per channel {c} vs per tensor {t}");
    }

    #[test]
    fn eight_bits_use_bytes_and_kmeans_plus_plus_follows_the_seed() {
        let (g0, _) = matmul_graph(64, 8);
        let mut g = g0.clone();
        run_pass(&mut codebook("bits=8").unwrap(), &mut g, 0);
        assert_eq!(weight(&g).indices.dtype(), DType::U8);
        assert_eq!(weight(&g).indices.byte_len(), 512);
        let mut p = codebook("bits=2,init=kmeans++,iters=0").unwrap();
        let table = |seed| {
            let mut g = g0.clone();
            run_pass(&mut p.clone(), &mut g, seed);
            weight(&g).centroids.to_f32().unwrap()
        };
        assert_eq!(table(1), table(1));
        assert_ne!(table(1), table(2));
        run_pass(&mut p, &mut g0.clone(), 1);
    }

    #[test]
    fn a_model_held_below_opset_21_keeps_byte_indices() {
        let (mut g, _) = matmul_graph(64, 8);
        g.meta.opset_imports = vec![(String::new(), 17)];
        let y = g.outputs()[0];
        let z = g.add_value("z", None).unwrap();
        // A default-domain op the IR does not model cannot be carried to opset 21.
        let op = Op::Other(cc_ir::op::OtherOp {
            domain: String::new(),
            op_type: "Unmodelled".into(),
            attributes: Vec::new(),
        });
        g.add_node("mean", op, vec![Some(y)], vec![Some(z)])
            .unwrap();
        g.set_outputs(vec![z]);
        let cx = run_pass(&mut codebook("").unwrap(), &mut g, 0);
        assert_eq!(weight(&g).indices.dtype(), DType::U8);
        assert_eq!(stat(&cx, "index_bits_stored"), "8");
        assert_eq!(stat(&cx, "weight_bytes_after"), (512 + 64).to_string());
        let l = cc_ir::compressed::lower_compressed(&g).unwrap();
        assert_eq!(l.meta.opset_imports, vec![(String::new(), 17)]);
    }

    #[test]
    fn options_select_weights_and_bad_values_name_the_option() {
        let (mut g, _) = matmul_graph(4, 4);
        run_pass(&mut codebook("ignore=w").unwrap(), &mut g, 0);
        assert!(g.value(g.value_by_name("w").unwrap()).compressed.is_none());
        run_pass(&mut codebook("ops=Conv").unwrap(), &mut g, 0);
        assert!(g.value(g.value_by_name("w").unwrap()).compressed.is_none());
        for (text, option) in [
            ("bits=9", "bits"),
            ("bits=1", "bits"),
            ("per=row", "per"),
            ("ops=Add", "ops"),
        ] {
            let e = codebook(text).unwrap_err().to_string();
            assert!(e.contains(&format!("option {option}=")), "{text}: {e}");
        }
    }
}
