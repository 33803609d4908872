//! `quant`: post-training weight quantization (round to nearest).
//!
//! Each constant f32 weight read by a selected op (MatMul input 1 of rank 2, Gemm input
//! 1, Conv input 1) becomes a first-class quantized value ([`cc_ir::QuantizedWeight`]):
//! per output channel (`granularity=channel`) or per block of `block` elements along the
//! reduction axis (`granularity=block`), 8 or 4 bits, symmetric (signed codes, no zero
//! point) or asymmetric (unsigned codes with zero points). The ONNX writer lowers each to
//! initializers + `DequantizeLinear`; the CPU executor runs MatMul/Gemm readers through
//! its fused dequantize-GEMM and dequantizes Conv weights at run time. With
//! `format=ort` (blocked weights only), MatMul weights are written as onnxruntime's
//! `com.microsoft.MatMulNBits` instead ([`cc_ir::compressed::nbits`]).
//!
//! `activations=static|dynamic` also quantizes the data inputs of those ops (see
//! [`activations`]).
//!
//! `weights=gptq` (needs `--calib`) rounds MatMul/Gemm/Conv weights with GPTQ's
//! layer-wise error compensation instead (see [`gptq`]); the codes take the same forms.

pub mod activations;
mod dyn_conv;
pub mod gptq;
pub mod grid;

use crate::error::PassError;
use crate::options::{OptionKind, OptionSpec, Options};
use crate::pass::{Changed, Pass, PassCx};
use crate::registry::PassInfo;
use crate::weights::{WeightErrors, WeightSelection, WEIGHT_OPS};
use cc_ir::compressed::{pack_4bit, ScaleLayout};
use cc_ir::{Compressed, DType, Error, Graph, QuantizedWeight, Tensor, ValueId, WeightFormat};

const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "bits",
        kind: OptionKind::Enum(&["8", "4"]),
        default: "8",
        help: "bits per weight code",
    },
    OptionSpec {
        name: "granularity",
        kind: OptionKind::Enum(&["channel", "block"]),
        default: "channel",
        help: "one scale per output channel, or per block along the reduction axis",
    },
    OptionSpec {
        name: "block",
        kind: OptionKind::Enum(&["32", "64", "128"]),
        default: "32",
        help: "block length with granularity=block",
    },
    OptionSpec {
        name: "symmetric",
        kind: OptionKind::Bool,
        default: "true",
        help: "signed codes without zero point (false: unsigned codes with zero points)",
    },
    OptionSpec {
        name: "weights",
        kind: OptionKind::Enum(&["rtn", "gptq"]),
        default: "rtn",
        help: "weight rounding: round to nearest, or gptq (layer-wise error compensation on the calibration data; needs --calib)",
    },
    OptionSpec {
        name: "damp",
        kind: OptionKind::Float,
        default: "0.01",
        help: "weights=gptq: dampening added to the Hessian diagonal, as a fraction of its mean",
    },
    OptionSpec {
        name: "gptq_block",
        kind: OptionKind::Int {
            min: Some(1),
            max: None,
        },
        default: "128",
        help: "weights=gptq: lazy-batch width (rows of the weight updated together)",
    },
    OptionSpec {
        name: "sequential",
        kind: OptionKind::Bool,
        default: "false",
        help: "weights=gptq: record each layer's inputs with the layers before it already quantized (false: all from the f32 model at once)",
    },
    OptionSpec {
        name: "act_order",
        kind: OptionKind::Bool,
        default: "false",
        help: "weights=gptq: quantize inputs in order of decreasing Hessian diagonal, scales fixed up front",
    },
    OptionSpec {
        name: "activations",
        kind: OptionKind::Enum(&["none", "static", "dynamic"]),
        default: "none",
        help: "activation quantization: static (calibrated QDQ pairs, needs --calib) or dynamic (DynamicQuantizeLinear + MatMulInteger)",
    },
    OptionSpec {
        name: "calib",
        kind: OptionKind::Enum(&["minmax", "percentile", "entropy"]),
        default: "minmax",
        help: "activation range calibration for activations=static",
    },
    OptionSpec {
        name: "percentile",
        kind: OptionKind::Str,
        default: "99.99",
        help: "percentage of values kept by calib=percentile",
    },
    OptionSpec {
        name: "format",
        kind: OptionKind::Enum(&["onnx", "ort"]),
        default: "onnx",
        help: "onnx: DequantizeLinear; ort: onnxruntime's com.microsoft.MatMulNBits for blocked MatMul weights (granularity=block; others stay DequantizeLinear)",
    },
    OptionSpec {
        name: "ops",
        kind: OptionKind::Str,
        default: "MatMul|Gemm|Conv",
        help:
            "op types whose weights are quantized (MatMul, Gemm, Conv, Gather), separated by | or ;",
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
        name: "quant",
        summary: "weight quantization (int8 per channel, int4 per block; round to nearest or GPTQ)",
        options: OPTIONS,
        create: |o| Ok(Box::new(Quant::from_options(o)?)),
    }
}

/// The quantization pass and its settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Quant {
    /// Bits per code: 8 or 4.
    pub bits: u32,
    /// Block length along the reduction axis; `None` = per output channel.
    pub block: Option<usize>,
    /// Signed codes without zero points.
    pub symmetric: bool,
    /// Op types whose weights are quantized.
    pub select: WeightSelection,
    /// How the weights are written (`format=ort`: `MatMulNBits` where they fit).
    pub format: WeightFormat,
    /// Activation quantization.
    pub activations: activations::Activations,
    /// `weights=gptq` settings; `None` = round to nearest.
    pub gptq: Option<gptq::GptqSettings>,
}

fn bad(option: &str, value: &str, expected: &str) -> PassError {
    PassError::BadOptionValue {
        pass: "quant".into(),
        option: option.into(),
        value: value.into(),
        expected: expected.into(),
    }
}

impl Quant {
    /// The pass with parsed options; options not implemented yet are errors naming them.
    pub fn from_options(o: &Options) -> Result<Quant, PassError> {
        let bits = match o.get_str("bits")? {
            "4" => 4,
            _ => 8,
        };
        let block = match o.get_str("granularity")? {
            "block" => {
                let b = o.get_str("block")?;
                Some(b.parse().map_err(|_| bad("block", b, "one of 32|64|128"))?)
            }
            _ => None,
        };
        let gptq = match o.get_str("weights")? {
            "gptq" => {
                let damp = o.get_float("damp")?;
                if !(damp > 0.0 && damp < 1.0) {
                    return Err(bad("damp", &damp.to_string(), "a fraction in (0, 1)"));
                }
                let block = o.get_int("gptq_block")?;
                Some(gptq::GptqSettings {
                    damp,
                    block: usize::try_from(block)
                        .map_err(|_| bad("gptq_block", &block.to_string(), "an integer >= 1"))?,
                    sequential: o.get_bool("sequential")?,
                    act_order: o.get_bool("act_order")?,
                })
            }
            _ => None,
        };
        let activations = activations::Activations::from_options(o, bits, block)?;
        let select = WeightSelection::from_options("quant", o, WEIGHT_OPS)?;
        let format = match o.get_str("format")? {
            "ort" if block.is_none() => {
                return Err(bad(
                    "format",
                    "ort",
                    "onnx with granularity=channel (MatMulNBits holds blocked weights: add granularity=block)",
                ))
            }
            "ort" => WeightFormat::MatMulNBits,
            _ => WeightFormat::DequantizeLinear,
        };
        Ok(Quant {
            bits,
            block,
            symmetric: o.get_bool("symmetric")?,
            select,
            format,
            activations,
            gptq,
        })
    }

    fn ignored(&self, name: &str) -> bool {
        self.select.ignored(name)
    }

    /// The weights to quantize: (value, output-channel axis, reduction axis), each once
    /// (see [`WeightSelection::targets`]).
    fn targets(&self, g: &Graph) -> Result<Vec<(ValueId, usize, usize)>, PassError> {
        Ok(self
            .select
            .targets(g)?
            .into_iter()
            .map(|t| (t.value, t.out_axis, t.red_axis))
            .collect())
    }

    /// Quantizes `w` (logical `shape`): codes, scales and zero points.
    fn quantize(
        &self,
        name: &str,
        w: &[f32],
        shape: &[usize],
        out_axis: usize,
        red_axis: usize,
    ) -> Result<QuantizedWeight, Error> {
        let axis = self.scale_axis(out_axis, red_axis);
        let layout = ScaleLayout::new(shape, axis, self.block)?;
        let scale_shape = layout.scale_shape(shape, axis);
        let n_scales: usize = scale_shape.iter().product();
        let (mut lo, mut hi) = (vec![0f32; n_scales], vec![0f32; n_scales]);
        for (i, &x) in w.iter().enumerate() {
            if !x.is_finite() {
                return Err(Error::invalid(format!(
                    "weight {name}: element {i} is not finite"
                )));
            }
            let s = layout.index(i);
            if let (Some(l), Some(h)) = (lo.get_mut(s), hi.get_mut(s)) {
                *l = l.min(x);
                *h = h.max(x);
            }
        }
        let grid = self.grid();
        let mut scale = vec![1f32; n_scales];
        let mut zp = vec![0i32; n_scales];
        for s in 0..n_scales {
            (scale[s], zp[s]) = grid.params(f64::from(lo[s]), f64::from(hi[s]));
        }
        let codes: Vec<i32> = w
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let s = layout.index(i);
                grid.code(f64::from(x), scale[s], zp[s])
            })
            .collect();
        self.assemble(shape, axis, &codes, scale, &zp)
    }

    /// The code grid of these settings.
    pub(crate) fn grid(&self) -> grid::Grid {
        grid::Grid {
            bits: self.bits,
            symmetric: self.symmetric,
        }
    }

    /// The axis a weight's scales run along: the reduction axis for blocks, else the
    /// output-channel axis.
    fn scale_axis(&self, out_axis: usize, red_axis: usize) -> usize {
        if self.block.is_some() {
            red_axis
        } else {
            out_axis
        }
    }

    /// A quantized weight of logical `shape` from its codes (one per element), scales and
    /// zero points (one per scale, in the layout of `axis` and [`Quant::block`]).
    fn assemble(
        &self,
        shape: &[usize],
        axis: usize,
        codes: &[i32],
        scale: Vec<f32>,
        zp: &[i32],
    ) -> Result<QuantizedWeight, Error> {
        let layout = ScaleLayout::new(shape, axis, self.block)?;
        let scale_shape = layout.scale_shape(shape, axis);
        let dtype = match (self.bits, self.symmetric) {
            (4, true) => DType::I4,
            (4, false) => DType::U4,
            (_, true) => DType::I8,
            (_, false) => DType::U8,
        };
        let pack = |c: &[i32]| -> Vec<u8> {
            if self.bits == 4 {
                pack_4bit(c)
            } else {
                c.iter().map(|&v| v as u8).collect()
            }
        };
        let q = Tensor::from_raw(dtype, shape.to_vec(), pack(codes).into())?;
        let zero_point = if self.symmetric {
            None
        } else {
            Some(Tensor::from_raw(
                dtype,
                scale_shape.clone(),
                pack(zp).into(),
            )?)
        };
        Ok(QuantizedWeight {
            q,
            scale: Tensor::from_f32(scale_shape, scale)?,
            zero_point,
            axis,
            block_size: self.block,
            format: self.format,
        })
    }
}

impl Pass for Quant {
    fn name(&self) -> &str {
        "quant"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let act = activations::apply(self, g, cx)?;
        let targets = self.targets(g)?;
        let originals: Vec<Option<Tensor>> = targets
            .iter()
            .map(|(v, ..)| g.const_data(*v).cloned())
            .collect();
        let mut gptq_out = match &self.gptq {
            Some(settings) => {
                let calib = cx.calibration().ok_or_else(|| {
                    Error::invalid(
                        "option weights=gptq needs calibration data (cc-compile --calib FILE.pb|DIR)",
                    )
                })?;
                let ex = cx.executor()?;
                Some(gptq::quantize_layers(
                    self, settings, g, &targets, calib, ex,
                )?)
            }
            None => None,
        };
        let mut errors = WeightErrors::default();
        for ((v, out_axis, red_axis), t) in targets.iter().zip(originals) {
            let Some(t) = t else {
                continue;
            };
            let name = g.value(*v).name().to_string();
            let w = t.f32_view()?;
            let qw = match gptq_out.as_mut().and_then(|o| o.weights.remove(v)) {
                Some(qw) => qw,
                None => self.quantize(&name, &w, t.shape(), *out_axis, *red_axis)?,
            };
            let d = cc_ir::compressed::dequantize(&qw)?;
            errors.add(&w, &d, t.byte_len(), qw.byte_len());
            let val = g.value_mut(*v);
            val.data = None;
            val.compressed = Some(Compressed::Quantized(qw));
        }
        cx.stat("quantized_weights", targets.len() + act.weights);
        cx.stat("quantized_params", errors.params + act.params);
        cx.stat(
            "weight_bytes_before",
            errors.bytes_before + act.bytes_before,
        );
        cx.stat("weight_bytes_after", errors.bytes_after + act.bytes_after);
        if self.activations != activations::Activations::None {
            cx.stat("quantized_activations", act.activations);
            cx.stat("activation_quantized_ops", act.ops);
            cx.stat("activation_quantized_convs", act.convs);
        }
        errors.record_errors(cx);
        if let Some(o) = gptq_out {
            o.record_stats(cx);
        }
        Ok(Changed(!targets.is_empty() || act.ops > 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_graphs::{self, run_pass, stat, test_weights};

    fn quant(text: &str) -> Result<Quant, PassError> {
        let o = crate::options::test_options("quant", text)?;
        Quant::from_options(&o)
    }

    fn matmul_graph(k: usize, n: usize) -> (Graph, Vec<f32>) {
        let w = test_weights(k * n);
        (test_graphs::matmul_graph(k, n, &w), w)
    }

    #[test]
    fn int8_per_channel_is_close_and_a_quarter_the_size() {
        let (mut g, w) = matmul_graph(64, 8);
        let mut q = quant("").unwrap();
        let cx = run_pass(&mut q, &mut g, 0);
        let v = g.value_by_name("w").unwrap();
        assert!(g.const_data(v).is_none());
        let Some(Compressed::Quantized(qw)) = &g.value(v).compressed else {
            panic!("not quantized")
        };
        assert_eq!(qw.q.dtype(), DType::I8);
        assert_eq!(qw.scale.shape(), &[8]);
        assert_eq!(qw.axis, 1);
        let d = cc_ir::compressed::dequantize(qw).unwrap();
        let max = w.iter().fold(0f32, |m, x| m.max(x.abs()));
        for (a, b) in w.iter().zip(&d) {
            assert!((a - b).abs() <= max / 127.0 * 0.5 + 1e-6);
        }
        assert_eq!(stat(&cx, "weight_bytes_before"), "2048");
        assert_eq!(stat(&cx, "weight_bytes_after"), (512 + 32).to_string());
        cc_ir::verify::verify(&g).unwrap();
    }

    #[test]
    fn int4_blocks_run_along_the_reduction_axis_and_pack() {
        let (mut g, w) = matmul_graph(64, 8);
        let mut q = quant("bits=4,granularity=block,block=32,symmetric=false").unwrap();
        run_pass(&mut q, &mut g, 0);
        let v = g.value_by_name("w").unwrap();
        let Some(Compressed::Quantized(qw)) = &g.value(v).compressed else {
            panic!("not quantized")
        };
        assert_eq!(qw.q.dtype(), DType::U4);
        assert_eq!(qw.q.byte_len(), 64 * 8 / 2);
        assert_eq!(qw.scale.shape(), &[2, 8]);
        assert_eq!(qw.axis, 0);
        assert_eq!(qw.block_size, Some(32));
        let d = cc_ir::compressed::dequantize(qw).unwrap();
        let err: f32 = w
            .iter()
            .zip(&d)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        let range = w.iter().fold(0f32, |m, x| m.max(x.abs())) * 2.0;
        assert!(err <= range / 15.0 * 0.5 + 1e-5, "err {err}");
    }

    #[test]
    fn format_ort_writes_matmul_nbits() {
        let (mut g, _) = matmul_graph(64, 8);
        let mut q = quant("bits=4,granularity=block,block=32,format=ort").unwrap();
        assert_eq!(q.format, WeightFormat::MatMulNBits);
        run_pass(&mut q, &mut g, 0);
        let v = g.value_by_name("w").unwrap();
        let Some(Compressed::Quantized(qw)) = &g.value(v).compressed else {
            panic!("not quantized")
        };
        assert_eq!(qw.format, WeightFormat::MatMulNBits);
        let l = cc_ir::compressed::lower_compressed(&g).unwrap();
        let ops: Vec<(String, String)> = l
            .node_ids()
            .into_iter()
            .map(|id| {
                let (d, o) = l.node(id).op.onnx_type();
                (d.to_string(), o.to_string())
            })
            .collect();
        assert_eq!(ops, vec![("com.microsoft".into(), "MatMulNBits".into())]);
        // The default is DequantizeLinear.
        assert_eq!(quant("").unwrap().format, WeightFormat::DequantizeLinear);
    }

    #[test]
    fn ignore_and_ops_select_weights() {
        let (mut g, _) = matmul_graph(4, 4);
        let mut q = quant("ignore=w").unwrap();
        assert!(!run_pass(&mut q, &mut g, 0).stats().is_empty());
        assert!(g.value(g.value_by_name("w").unwrap()).compressed.is_none());
        let mut q = quant("ops=Conv").unwrap();
        run_pass(&mut q, &mut g, 0);
        assert!(g.value(g.value_by_name("w").unwrap()).compressed.is_none());
    }

    #[test]
    fn bad_options_name_the_option() {
        for (text, option) in [
            ("bits=5", "bits"),
            ("granularity=block,block=0", "block"),
            ("weights=gptq,damp=0", "damp"),
            ("weights=gptq,gptq_block=0", "gptq_block"),
            ("activations=static,bits=4", "activations"),
            (
                "activations=static,calib=percentile,percentile=x",
                "percentile",
            ),
            ("ops=Add", "ops"),
            ("format=ort", "format"),
        ] {
            let e = quant(text).unwrap_err().to_string();
            assert!(e.contains(&format!("option {option}=")), "{text}: {e}");
        }
    }
}
