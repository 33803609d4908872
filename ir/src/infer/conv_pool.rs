//! Conv, ConvTranspose, MaxPool, AveragePool and the global pools.

use super::{
    dims::{map_known, unknowns},
    tensor, Ctx,
};
use crate::dtype::DType;
use crate::error::Result;
use crate::op::{ConvAttrs, Op, PoolAttrs};
use crate::types::{Dim, ValueType};

/// Padding mode.
#[derive(Clone, Copy, PartialEq)]
enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

fn auto_pad(c: &Ctx, s: &Option<String>) -> Result<AutoPad> {
    Ok(match s.as_deref() {
        None | Some("NOTSET") => AutoPad::NotSet,
        Some("SAME_UPPER") => AutoPad::SameUpper,
        Some("SAME_LOWER") => AutoPad::SameLower,
        Some("VALID") => AutoPad::Valid,
        Some(o) => return Err(c.err(format!("unknown auto_pad {o:?}"))),
    })
}

/// A per-spatial-axis attribute with default `def`; its length must match.
fn per_axis(c: &Ctx, name: &str, v: &Option<Vec<i64>>, n: usize, def: i64) -> Result<Vec<i64>> {
    match v {
        None => Ok(vec![def; n]),
        Some(v) if v.len() == n => Ok(v.clone()),
        Some(v) => Err(c.err(format!(
            "{name} has {} values for {n} spatial axes",
            v.len()
        ))),
    }
}

/// The pads attribute (begin..., end...) with default 0s.
fn pads(c: &Ctx, v: &Option<Vec<i64>>, n: usize) -> Result<Vec<i64>> {
    per_axis(c, "pads", v, 2 * n, 0)
}

/// Sliding-window output sizes for Conv and the pools.
struct Window {
    kernel: Vec<i64>,
    strides: Vec<i64>,
    dilations: Vec<i64>,
    pads: Vec<i64>,
    mode: AutoPad,
    ceil: bool,
}

impl Window {
    /// Output size along spatial axis `i` (computed in i128: sizes come from files).
    fn out_dim(&self, i: usize, d: &Dim) -> Dim {
        let n = self.kernel.len();
        let s = i128::from(self.strides[i].max(1));
        let dk = (i128::from(self.kernel[i]) - 1) * i128::from(self.dilations[i]) + 1;
        let (pb, pe) = (i128::from(self.pads[i]), i128::from(self.pads[i + n]));
        map_known(d, |x| {
            let x = i128::from(x);
            let v = match self.mode {
                AutoPad::SameUpper | AutoPad::SameLower => (x + s - 1).div_euclid(s),
                AutoPad::Valid => (x - dk + s).div_euclid(s),
                AutoPad::NotSet => {
                    let total = x + pb + pe - dk;
                    let o = if self.ceil {
                        (total + s - 1).div_euclid(s) + 1
                    } else {
                        total.div_euclid(s) + 1
                    };
                    // A last window that would start in the end padding: onnxruntime and
                    // PyTorch drop it, ONNX shape inference keeps it. Do not guess.
                    if self.ceil && (o - 1) * s >= x + pb {
                        return None;
                    }
                    o
                }
            };
            i64::try_from(v.max(0)).ok()
        })
    }
}

/// Input and weight shapes of a Conv or ConvTranspose, checked to agree in rank.
struct ConvShapes<'a> {
    x: Option<&'a [Dim]>,
    w: Option<&'a [Dim]>,
    /// Number of spatial axes.
    n: usize,
}

impl<'a> ConvShapes<'a> {
    /// Reads inputs 0 and 1; `None` when neither shape is known.
    fn read(c: &Ctx<'a>) -> Result<Option<Self>> {
        Self::read_inputs(c, 0, 1)
    }

    /// Reads data input `sx` and weight input `sw`; `None` when neither shape is known.
    fn read_inputs(c: &Ctx<'a>, sx: usize, sw: usize) -> Result<Option<Self>> {
        let (x, w) = (c.shape(sx), c.shape(sw));
        let rank = match (x, w) {
            (Some(x), Some(w)) if x.len() != w.len() => {
                return Err(c.err(format!(
                    "input rank {} and weight rank {} differ",
                    x.len(),
                    w.len()
                )))
            }
            (Some(x), _) => x.len(),
            (None, Some(w)) => w.len(),
            (None, None) => return Ok(None),
        };
        if rank < 3 {
            return Err(c.err(format!("rank {rank} input for a convolution")));
        }
        Ok(Some(Self { x, w, n: rank - 2 }))
    }

    /// Input dim `i`, unknown where the shape is.
    fn x(&self, i: usize) -> Dim {
        dim_at(self.x, i)
    }

    /// Weight dim `i`, unknown where the shape is.
    fn w(&self, i: usize) -> Dim {
        dim_at(self.w, i)
    }

    /// The kernel's spatial extent: the attribute, else the weight's spatial dims.
    /// `None` when unknown or of the wrong length.
    fn kernel(&self, a: &ConvAttrs) -> Option<Vec<i64>> {
        let kernel: Option<Vec<i64>> = match &a.kernel_shape {
            Some(k) => Some(k.clone()),
            None => (2..self.n + 2).map(|i| self.w(i).known()).collect(),
        };
        kernel.filter(|k| k.len() == self.n)
    }
}

fn dim_at(s: Option<&[Dim]>, i: usize) -> Dim {
    s.and_then(|s| s.get(i)).cloned().unwrap_or(Dim::Unknown)
}

fn conv(c: &Ctx, a: &ConvAttrs) -> Result<Option<ValueType>> {
    conv_of(c, a, 0, 1, c.elem(0))
}

/// The convolution result of data input `sx` and weight input `sw` with element type
/// `elem` (also used by ConvInteger and QLinearConv).
pub(super) fn conv_of(
    c: &Ctx,
    a: &ConvAttrs,
    sx: usize,
    sw: usize,
    elem: Option<DType>,
) -> Result<Option<ValueType>> {
    let Some(s) = ConvShapes::read_inputs(c, sx, sw)? else {
        return Ok(tensor(elem, None));
    };
    let n = s.n;
    let group = a.group();
    if let (Some(ch), Some(wc)) = (s.x(1).known(), s.w(1).known()) {
        if ch != wc * group {
            return Err(c.err(format!(
                "input has {ch} channels but weight expects {wc} x group {group}"
            )));
        }
    }
    let mut out = vec![s.x(0), s.w(0)];
    let Some(kernel) = s.kernel(a) else {
        out.extend(unknowns(n));
        return Ok(tensor(elem, Some(out)));
    };
    let win = Window {
        strides: per_axis(c, "strides", &a.strides, n, 1)?,
        dilations: per_axis(c, "dilations", &a.dilations, n, 1)?,
        pads: pads(c, &a.pads, n)?,
        mode: auto_pad(c, &a.auto_pad)?,
        ceil: false,
        kernel,
    };
    for i in 0..n {
        out.push(win.out_dim(i, &s.x(i + 2)));
    }
    Ok(tensor(elem, Some(out)))
}

fn conv_transpose(c: &Ctx, a: &ConvAttrs) -> Result<Option<ValueType>> {
    let Some(s) = ConvShapes::read(c)? else {
        return Ok(tensor(c.elem(0), None));
    };
    let n = s.n;
    if let (Some(ch), Some(wc)) = (s.x(1).known(), s.w(0).known()) {
        if ch != wc {
            return Err(c.err(format!("input has {ch} channels but weight expects {wc}")));
        }
    }
    let group = a.group();
    let mut out = vec![s.x(0), map_known(&s.w(1), |m| m.checked_mul(group))];
    if let Some(os) = &a.output_shape {
        // output_shape lists the spatial dims (some exporters include N and C too).
        let sp = os.get(os.len().saturating_sub(n)..).unwrap_or(&[]);
        if sp.len() == n {
            out.extend(sp.iter().map(|&v| Dim::Known(v)));
            return Ok(tensor(c.elem(0), Some(out)));
        }
    }
    let Some(kernel) = s.kernel(a) else {
        out.extend(unknowns(n));
        return Ok(tensor(c.elem(0), Some(out)));
    };
    let strides = per_axis(c, "strides", &a.strides, n, 1)?;
    let dil = per_axis(c, "dilations", &a.dilations, n, 1)?;
    let opad = per_axis(c, "output_padding", &a.output_padding, n, 0)?;
    let mode = auto_pad(c, &a.auto_pad)?;
    let p = match mode {
        AutoPad::NotSet => pads(c, &a.pads, n)?,
        _ => vec![0; 2 * n],
    };
    for i in 0..n {
        out.push(map_known(&s.x(i + 2), |v| match mode {
            AutoPad::SameUpper | AutoPad::SameLower => v.checked_mul(strides[i]),
            _ => {
                let w = |x: i64| i128::from(x);
                let o =
                    w(strides[i]) * (w(v) - 1) + w(opad[i]) + (w(kernel[i]) - 1) * w(dil[i]) + 1
                        - w(p[i])
                        - w(p[i + n]);
                i64::try_from(o).ok()
            }
        }));
    }
    Ok(tensor(c.elem(0), Some(out)))
}

fn pool(c: &Ctx, a: &PoolAttrs) -> Result<Option<Vec<Dim>>> {
    let Some(x) = c.shape(0) else {
        return Ok(None);
    };
    let Some(kernel) = &a.kernel_shape else {
        return Err(c.err("pooling without kernel_shape"));
    };
    let n = kernel.len();
    if x.len() != n + 2 {
        return Err(c.err(format!(
            "kernel_shape has {n} axes for a rank {} input",
            x.len()
        )));
    }
    let win = Window {
        kernel: kernel.clone(),
        strides: per_axis(c, "strides", &a.strides, n, 1)?,
        dilations: per_axis(c, "dilations", &a.dilations, n, 1)?,
        pads: pads(c, &a.pads, n)?,
        mode: auto_pad(c, &a.auto_pad)?,
        ceil: a.ceil_mode.unwrap_or(0) != 0,
    };
    let mut out = x.get(..2).unwrap_or(&[]).to_vec();
    for (i, d) in x.iter().skip(2).enumerate() {
        out.push(win.out_dim(i, d));
    }
    Ok(Some(out))
}

pub(super) fn infer(c: &Ctx) -> Result<Vec<Option<ValueType>>> {
    Ok(match &c.node.op {
        Op::Conv(a) => vec![conv(c, a)?],
        Op::ConvTranspose(a) => vec![conv_transpose(c, a)?],
        Op::MaxPool(a) => {
            let s = pool(c, a)?;
            vec![tensor(c.elem(0), s.clone()), tensor(Some(DType::I64), s)]
        }
        Op::AveragePool(a) => vec![tensor(c.elem(0), pool(c, a)?)],
        Op::GlobalPool(_) => {
            let s = c.shape(0).map(|x| {
                x.iter()
                    .enumerate()
                    .map(|(i, d)| if i < 2 { d.clone() } else { Dim::Known(1) })
                    .collect()
            });
            vec![tensor(c.elem(0), s)]
        }
        _ => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use crate::dtype::DType::*;
    use crate::infer::testutil::*;
    use crate::op::{ConvAttrs, GlobalPoolOp, Op, PoolAttrs};

    #[test]
    fn conv_pads_strides_dilations_groups() {
        let a = ConvAttrs {
            pads: Some(vec![1, 1, 1, 1]),
            strides: Some(vec![2, 2]),
            ..Default::default()
        };
        assert_eq!(
            run(
                Op::Conv(a),
                &[t(F32, "N,3,224,224"), t(F32, "64,3,7,7"), t(F32, "64")],
                1
            ),
            ["f32[N,64,110,110]"]
        );
        let a = ConvAttrs {
            group: Some(4),
            dilations: Some(vec![2]),
            ..Default::default()
        };
        assert_eq!(
            run(Op::Conv(a), &[t(F32, "1,8,10"), t(F32, "4,2,3")], 1),
            ["f32[1,4,6]"]
        );
        let a = ConvAttrs {
            auto_pad: Some("SAME_UPPER".into()),
            strides: Some(vec![2, 2]),
            ..Default::default()
        };
        assert_eq!(
            run(Op::Conv(a), &[t(F32, "1,3,7,H"), t(F32, "5,3,3,3")], 1),
            ["f32[1,5,4,?]"]
        );
    }

    #[test]
    fn conv_channel_mismatch_is_an_error() {
        let mut g = crate::Graph::new("g");
        let x = input(&mut g, "x", t(F32, "1,3,8,8"));
        let w = input(&mut g, "w", t(F32, "4,2,3,3"));
        let (id, _) = node(
            &mut g,
            Op::Conv(ConvAttrs::default()),
            &[Some(x), Some(w)],
            1,
        );
        let e = crate::infer::infer_node(&g, id).unwrap_err().to_string();
        assert!(e.contains("Conv") && e.contains("3 channels"), "{e}");
    }

    #[test]
    fn conv_transpose_output_sizes() {
        let a = ConvAttrs {
            strides: Some(vec![2, 2]),
            pads: Some(vec![1, 1, 1, 1]),
            output_padding: Some(vec![1, 1]),
            ..Default::default()
        };
        assert_eq!(
            run(
                Op::ConvTranspose(a),
                &[t(F32, "1,4,5,5"), t(F32, "4,3,3,3")],
                1
            ),
            ["f32[1,3,10,10]"]
        );
        let a = ConvAttrs {
            output_shape: Some(vec![9, 9]),
            strides: Some(vec![2, 2]),
            ..Default::default()
        };
        assert_eq!(
            run(
                Op::ConvTranspose(a),
                &[t(F32, "1,4,5,5"), t(F32, "4,3,3,3")],
                1
            ),
            ["f32[1,3,9,9]"]
        );
    }

    #[test]
    fn pools() {
        let a = PoolAttrs {
            kernel_shape: Some(vec![3, 3]),
            strides: Some(vec![2, 2]),
            ceil_mode: Some(1),
            ..Default::default()
        };
        assert_eq!(
            run(Op::MaxPool(a.clone()), &[t(F32, "1,64,112,112")], 2),
            ["f32[1,64,56,56]", "i64[1,64,56,56]"]
        );
        let a = PoolAttrs {
            ceil_mode: None,
            ..a
        };
        assert_eq!(
            run(Op::AveragePool(a), &[t(F32, "N,8,6,6")], 1),
            ["f32[N,8,2,2]"]
        );
        assert_eq!(
            run(
                Op::GlobalPool(GlobalPoolOp::Average),
                &[t(F32, "N,C,7,7")],
                1
            ),
            ["f32[N,C,1,1]"]
        );
    }
}
