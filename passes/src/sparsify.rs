//! `sparsify`: weight sparsity, unstructured (`ratio=`) or N:M (`pattern=2:4`).
//!
//! Each constant f32 weight read by a selected op (MatMul input 1 of rank 2, Gemm input
//! 1, Conv input 1) has its least important elements set to zero:
//!
//! - `ratio=r`: exactly `round(r·size)` elements per weight (`scope=layer`), or that
//!   fraction of all selected weights together (`scope=global`).
//! - `pattern=N:M`: in every group of `M` consecutive elements along the reduction
//!   (input) axes, only the `N` most important stay — the layout of NVIDIA's 2:4 sparse
//!   tensor cores. The groups run along K of a MatMul `[K, N]`, along K of a Gemm weight
//!   (`[K, N]`, or `[N, K]` with transB), and along the flattened `C·kh·kw` of a Conv
//!   `[O, C, kh, kw]`; when the axis length is not a multiple of `M`, the last group
//!   counts as padded with zeros.
//!
//! Importance is `|w|` (`criterion=magnitude`) or `|w|·‖x‖` with the input-feature
//! norms measured on the calibration data (`criterion=wanda`, needs `--calib`; see
//! [`wanda`]). Ties go by position, so the result is deterministic.
//!
//! Each sparsified weight carries a [`Sparsity`] annotation (pattern, zeros) that
//! `--print-ir` shows. The ONNX output stays dense unless `encoding=sparse_initializer`
//! asks for COO `SparseTensorProto`s (onnxruntime densifies them at load).

pub mod select;
pub mod wanda;

use crate::error::PassError;
use crate::options::{OptionKind, OptionSpec, Options};
use crate::pass::{Changed, Pass, PassCx};
use crate::registry::PassInfo;
use crate::weights::WeightSelection;
use cc_ir::{Error, Graph, NodeId, SparseEncoding, Sparsity, SparsityPattern, Tensor, ValueId};
use select::Layout;

const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "ratio",
        kind: OptionKind::Float,
        default: "0",
        help: "unstructured: fraction of weights set to zero, in (0, 1) (not with pattern=)",
    },
    OptionSpec {
        name: "pattern",
        kind: OptionKind::Str,
        default: "",
        help: "N:M structured sparsity along the reduction axis, e.g. 2:4 (the default when ratio= is not given)",
    },
    OptionSpec {
        name: "scope",
        kind: OptionKind::Enum(&["layer", "global", "output"]),
        default: "layer",
        help: "ratio=: the fraction applies to each weight, to all selected weights together, or to each output's inputs (as Wanda)",
    },
    OptionSpec {
        name: "criterion",
        kind: OptionKind::Enum(&["magnitude", "wanda"]),
        default: "magnitude",
        help: "importance: |w|, or |w|·||x|| with input norms from the calibration data (wanda; needs --calib)",
    },
    OptionSpec {
        name: "encoding",
        kind: OptionKind::Enum(&["dense", "sparse_initializer"]),
        default: "dense",
        help: "how the ONNX output stores sparsified weights: dense, or COO SparseTensorProto in graph.sparse_initializer",
    },
    OptionSpec {
        name: "ops",
        kind: OptionKind::Str,
        default: "MatMul|Gemm|Conv",
        help: "op types whose weights are sparsified (MatMul, Gemm, Conv), separated by | or ;",
    },
    OptionSpec {
        name: "ignore",
        kind: OptionKind::Str,
        default: "",
        help: "name globs (* and ?) separated by | or ;: weights or nodes matching stay dense",
    },
];

inventory::submit! {
    PassInfo {
        name: "sparsify",
        summary: "weight sparsity: unstructured magnitude (ratio=) or N:M (pattern=2:4), annotated on the weights",
        options: OPTIONS,
        create: |o| Ok(Box::new(Sparsify::from_options(o)?)),
    }
}

/// Op types `ops=` may name.
const SPARSIFY_OPS: &[&str] = &["MatMul", "Gemm", "Conv"];

/// What gets zeroed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// This fraction of the elements, the least important.
    Ratio(f64),
    /// `n` of every `m` along the reduction axes are kept.
    NM {
        /// Kept per group.
        n: usize,
        /// Group length.
        m: usize,
    },
}

/// What the fraction of `ratio=` applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Each weight.
    Layer,
    /// All selected weights together.
    Global,
    /// The inputs of each output (row of a Gemm transB weight, column of a MatMul
    /// weight, output channel of a Conv).
    Output,
}

/// How elements are ranked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Criterion {
    /// `|w|`.
    Magnitude,
    /// `|w|·‖x‖` on the calibration data.
    Wanda,
}

/// The sparsify pass and its settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Sparsify {
    /// What gets zeroed.
    pub mode: Mode,
    /// What `ratio=` applies to.
    pub scope: Scope,
    /// Importance criterion.
    pub criterion: Criterion,
    /// How the ONNX writer stores the result.
    pub encoding: SparseEncoding,
    /// Which weights are sparsified (`ops=`, `ignore=`).
    pub select: WeightSelection,
}

/// A weight to sparsify.
#[derive(Clone, Debug)]
pub struct Target {
    /// The weight.
    pub value: ValueId,
    /// The first selected node reading it.
    pub node: NodeId,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its reduction axes `axes.0..axes.1`.
    pub axes: (usize, usize),
}

fn bad(option: &str, value: &str, expected: &str) -> PassError {
    PassError::BadOptionValue {
        pass: "sparsify".into(),
        option: option.into(),
        value: value.into(),
        expected: expected.into(),
    }
}

/// Parses `N:M` with `1 <= N < M`.
fn parse_nm(s: &str) -> Option<(usize, usize)> {
    let (n, m) = s.split_once(':')?;
    let (n, m): (usize, usize) = (n.trim().parse().ok()?, m.trim().parse().ok()?);
    (n >= 1 && n < m).then_some((n, m))
}

impl Sparsify {
    /// The pass with parsed options.
    pub fn from_options(o: &Options) -> Result<Sparsify, PassError> {
        let ratio = o.get_float("ratio")?;
        let pattern = o.get_str("pattern")?;
        let ratio_given = ratio != 0.0;
        let mode = if pattern.is_empty() {
            if !ratio_given {
                Mode::NM { n: 2, m: 4 }
            } else if ratio > 0.0 && ratio < 1.0 {
                Mode::Ratio(ratio)
            } else {
                return Err(bad("ratio", &ratio.to_string(), "a fraction in (0, 1)"));
            }
        } else if ratio_given {
            return Err(bad(
                "pattern",
                pattern,
                "either ratio= or pattern=, not both",
            ));
        } else {
            let (n, m) = parse_nm(pattern)
                .ok_or_else(|| bad("pattern", pattern, "N:M with 1 <= N < M, e.g. 2:4"))?;
            Mode::NM { n, m }
        };
        let select = WeightSelection::from_options("sparsify", o, SPARSIFY_OPS)?;
        Ok(Sparsify {
            mode,
            scope: match o.get_str("scope")? {
                "global" => Scope::Global,
                "output" => Scope::Output,
                _ => Scope::Layer,
            },
            criterion: match o.get_str("criterion")? {
                "wanda" => Criterion::Wanda,
                _ => Criterion::Magnitude,
            },
            encoding: match o.get_str("encoding")? {
                "sparse_initializer" => SparseEncoding::SparseInitializer,
                _ => SparseEncoding::Dense,
            },
            select,
        })
    }

    /// The weights to sparsify, each once, in topological order of their first reader
    /// (see [`WeightSelection::targets`]), with their reduction axes: MatMul's K, Gemm's
    /// by `transB`, Conv's input channels and kernel positions together.
    pub fn targets(&self, g: &Graph) -> Result<Vec<Target>, PassError> {
        let mut out = Vec::new();
        for t in self.select.targets(g)? {
            let Some(data) = g.const_data(t.value) else {
                continue;
            };
            let shape = data.shape().to_vec();
            let end = if t.op == "Conv" {
                shape.len()
            } else {
                t.red_axis + 1
            };
            out.push(Target {
                value: t.value,
                node: t.node,
                axes: (t.red_axis, end),
                shape,
            });
        }
        Ok(out)
    }
}

impl Pass for Sparsify {
    fn name(&self) -> &str {
        "sparsify"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let targets = self.targets(g)?;
        let originals: Vec<Vec<f32>> = targets
            .iter()
            .map(|t| match g.const_data(t.value) {
                Some(d) => d.f32_view().map(|v| v.into_owned()),
                None => Ok(Vec::new()),
            })
            .collect::<Result<_, Error>>()?;
        let scores: Vec<Vec<f32>> = match self.criterion {
            Criterion::Magnitude => originals
                .iter()
                .map(|w| w.iter().map(|x| x.abs()).collect())
                .collect(),
            Criterion::Wanda => {
                let calib = cx.calibration().ok_or_else(|| {
                    Error::invalid(
                        "option criterion=wanda needs calibration data (cc-compile --calib FILE.pb|DIR)",
                    )
                })?;
                let ex = cx.executor()?;
                wanda::scores(g, ex, calib, &targets, &originals)?
            }
        };
        let mut weights = originals.clone();
        match self.mode {
            Mode::NM { n, m } => {
                for ((t, w), s) in targets.iter().zip(weights.iter_mut()).zip(&scores) {
                    select::n_m(w, s, Layout::new(&t.shape, t.axes), n, m);
                }
            }
            Mode::Ratio(r) if self.scope == Scope::Output => {
                for ((t, w), s) in targets.iter().zip(weights.iter_mut()).zip(&scores) {
                    select::per_output(w, s, Layout::new(&t.shape, t.axes), r);
                }
            }
            Mode::Ratio(r) if self.scope == Scope::Global => {
                let total: usize = weights.iter().map(Vec::len).sum();
                let k = (r * total as f64).round() as usize;
                let mut ws: Vec<&mut [f32]> = weights.iter_mut().map(Vec::as_mut_slice).collect();
                let ss: Vec<&[f32]> = scores.iter().map(Vec::as_slice).collect();
                select::smallest(&mut ws, &ss, k);
            }
            Mode::Ratio(r) => {
                for (w, s) in weights.iter_mut().zip(&scores) {
                    let k = (r * w.len() as f64).round() as usize;
                    select::smallest(&mut [w.as_mut_slice()], &[s.as_slice()], k);
                }
            }
        }
        let (mut params, mut zeros_before, mut zeros_after) = (0usize, 0usize, 0usize);
        let (mut err2, mut norm2) = (0f64, 0f64);
        for ((t, w), orig) in targets.iter().zip(weights).zip(&originals) {
            zeros_before += orig.iter().filter(|x| **x == 0.0).count();
            for (a, b) in orig.iter().zip(&w) {
                err2 += f64::from(a - b).powi(2);
                norm2 += f64::from(*a).powi(2);
            }
            params += w.len();
            let tensor = Tensor::from_f32(t.shape.clone(), w)?;
            let pattern = match self.mode {
                Mode::Ratio(ratio) => SparsityPattern::Unstructured { ratio },
                Mode::NM { n, m } => SparsityPattern::NM { n, m, axes: t.axes },
            };
            let sp = Sparsity::of(&tensor, pattern, self.encoding);
            zeros_after += sp.zeros;
            let val = g.value_mut(t.value);
            val.data = Some(tensor);
            val.sparsity = Some(sp);
        }
        cx.stat("sparsified_weights", targets.len());
        cx.stat("sparsified_params", params);
        cx.stat("zeros_before", zeros_before);
        cx.stat("zeros_after", zeros_after);
        let frac = |z: usize| {
            if params > 0 {
                z as f64 / params as f64
            } else {
                0.0
            }
        };
        cx.stat("sparsity", frac(zeros_after));
        cx.stat(
            "weight_rel_error",
            if norm2 > 0.0 {
                (err2 / norm2).sqrt()
            } else {
                0.0
            },
        );
        Ok(Changed(!targets.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_graphs::{one_weight_graph, stat, test_weights};
    use cc_ir::types::{known_shape, ValueType};
    use cc_ir::{DType, Op};

    fn sparsify(text: &str) -> Result<Sparsify, PassError> {
        let o = crate::options::test_options("sparsify", text)?;
        Sparsify::from_options(&o)
    }

    /// x[1, k] · w, with w read by `op` (MatMul [k, n], Gemm [k, n] or transB [n, k]).
    fn graph(op: Op, shape: [usize; 2]) -> Graph {
        let k = if matches!(
            op,
            Op::Gemm {
                trans_b: Some(1),
                ..
            }
        ) {
            shape[1]
        } else {
            shape[0]
        };
        one_weight_graph(op, "n", k, shape, test_weights(shape[0] * shape[1]))
    }

    fn weight(g: &Graph) -> (Vec<f32>, Sparsity) {
        let v = g.value_by_name("w").unwrap();
        (
            g.const_data(v).unwrap().to_f32().unwrap(),
            g.value(v).sparsity.clone().unwrap(),
        )
    }

    #[test]
    fn two_of_four_along_k_of_a_matmul_and_of_a_trans_b_gemm() {
        for (op, shape) in [
            (Op::MatMul, [16, 6]),
            (
                Op::Gemm {
                    alpha: None,
                    beta: None,
                    trans_a: None,
                    trans_b: Some(1),
                },
                [6, 16],
            ),
        ] {
            let trans = matches!(op, Op::Gemm { .. });
            let mut g = graph(op, shape);
            let mut p = sparsify("pattern=2:4").unwrap();
            let mut cx = PassCx::new(0);
            p.run(&mut g, &mut cx).unwrap();
            let (w, sp) = weight(&g);
            let at = |k: usize, j: usize| if trans { w[j * 16 + k] } else { w[k * 6 + j] };
            for j in 0..6 {
                for g4 in 0..4 {
                    let zeros = (0..4).filter(|i| at(g4 * 4 + i, j) == 0.0).count();
                    assert!(zeros >= 2, "column {j} group {g4}");
                }
            }
            assert_eq!(sp.zeros, 48);
            let axes = if trans { (1, 2) } else { (0, 1) };
            assert_eq!(sp.pattern, SparsityPattern::NM { n: 2, m: 4, axes });
            assert_eq!(stat(&cx, "zeros_after"), "48");
            assert_eq!(stat(&cx, "sparsity"), "0.5");
            cc_ir::verify::verify(&g).unwrap();
        }
    }

    #[test]
    fn unstructured_ratio_zeroes_the_exact_count_per_layer() {
        let mut g = graph(Op::MatMul, [10, 7]);
        let mut p = sparsify("ratio=0.3").unwrap();
        let mut cx = PassCx::new(0);
        p.run(&mut g, &mut cx).unwrap();
        let (w, sp) = weight(&g);
        assert_eq!(w.iter().filter(|x| **x == 0.0).count(), 21);
        assert_eq!(sp.zeros, 21);
        assert_eq!(sp.pattern, SparsityPattern::Unstructured { ratio: 0.3 });
        assert_eq!(stat(&cx, "sparsified_weights"), "1");
        let text = cc_ir::printer::print_graph(&g);
        assert!(
            text.contains("sparsity=unstructured:0.3 zeros=21/70 (30.00%)"),
            "{text}"
        );
    }

    #[test]
    fn conv_groups_run_along_channels_and_kernel() {
        let mut g = Graph::new("g");
        let x = g
            .add_value(
                "x",
                Some(ValueType::tensor(DType::F32, known_shape(&[1, 2, 3, 3]))),
            )
            .unwrap();
        // [O=2, C=2, 1, 2]: r = 4 per output channel.
        let w = g
            .add_const(
                "w",
                Tensor::from_f32(
                    vec![2, 2, 1, 2],
                    vec![1.0, 4.0, 2.0, 3.0, -8.0, 5.0, 6.0, -7.0],
                )
                .unwrap(),
            )
            .unwrap();
        let y = g.add_value("y", None).unwrap();
        g.add_node(
            "c",
            Op::Conv(Default::default()),
            vec![Some(x), Some(w)],
            vec![Some(y)],
        )
        .unwrap();
        g.set_inputs(vec![x]);
        g.set_outputs(vec![y]);
        sparsify("")
            .unwrap()
            .run(&mut g, &mut PassCx::new(0))
            .unwrap();
        let (w, sp) = weight(&g);
        assert_eq!(w, vec![0.0, 4.0, 0.0, 3.0, -8.0, 0.0, 0.0, -7.0]);
        assert_eq!(
            sp.pattern,
            SparsityPattern::NM {
                n: 2,
                m: 4,
                axes: (1, 4)
            }
        );
    }

    #[test]
    fn ignore_ops_and_encoding() {
        let mut g = graph(Op::MatMul, [4, 4]);
        sparsify("ignore=w")
            .unwrap()
            .run(&mut g, &mut PassCx::new(0))
            .unwrap();
        assert!(g.value(g.value_by_name("w").unwrap()).sparsity.is_none());
        sparsify("ops=Conv")
            .unwrap()
            .run(&mut g, &mut PassCx::new(0))
            .unwrap();
        assert!(g.value(g.value_by_name("w").unwrap()).sparsity.is_none());
        sparsify("encoding=sparse_initializer")
            .unwrap()
            .run(&mut g, &mut PassCx::new(0))
            .unwrap();
        let (_, sp) = weight(&g);
        assert_eq!(sp.encoding, SparseEncoding::SparseInitializer);
        // Written as a sparse initializer and read back dense with the same annotation.
        let bytes = cc_ir::onnx::model_to_bytes(&g).unwrap();
        let back = cc_ir::onnx::load_model_bytes(&bytes, None).unwrap();
        let v = back.value_by_name("w").unwrap();
        assert_eq!(back.value(v).sparsity.as_ref(), Some(&sp));
        assert_eq!(back.const_data(v).unwrap().to_f32().unwrap(), weight(&g).0);
        assert_eq!(cc_ir::onnx::model_to_bytes(&back).unwrap(), bytes);
    }

    #[test]
    fn wanda_needs_calibration_and_bad_options_name_the_option() {
        let mut g = graph(Op::MatMul, [4, 4]);
        let e = sparsify("criterion=wanda")
            .unwrap()
            .run(&mut g, &mut PassCx::new(0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--calib"), "{e}");
        for (text, option) in [
            ("ratio=1.5", "ratio"),
            ("pattern=4:2", "pattern"),
            ("pattern=x", "pattern"),
            ("pattern=2:4,ratio=0.5", "pattern"),
            ("ops=Add", "ops"),
        ] {
            let e = sparsify(text).unwrap_err().to_string();
            assert!(e.contains(&format!("option {option}=")), "{text}: {e}");
        }
        assert_eq!(sparsify("").unwrap().mode, Mode::NM { n: 2, m: 4 });
    }
}
