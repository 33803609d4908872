//! Layers with a constant weight (Conv, Gemm, MatMul) seen as `Y = A·W + b`, where the
//! rows of `A` are the input activations (im2col patches for Conv) and `W` is the
//! weight laid out inputs × outputs. Activation-aware importance and reconstruction
//! both work on this view.

use cc_ir::op::ConvAttrs;
use cc_ir::{Error, Graph, NodeId, Op, Result, Tensor, ValueId};

/// How the layer reads its input.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerKind {
    /// 2-D convolution with group 1: `W` is `[Cout, Cin, kh, kw]`, input `[N, Cin, H, W]`.
    Conv {
        /// Kernel height and width.
        kernel: [usize; 2],
        /// Strides.
        strides: [usize; 2],
        /// Dilations.
        dilations: [usize; 2],
        /// Pads: top, left, bottom, right.
        pads: [usize; 4],
    },
    /// Gemm (transA = 0) or MatMul with a 2-D constant right operand: input `[.., K]`.
    Dense {
        /// The weight is stored `[N, K]` (Gemm transB = 1).
        trans_w: bool,
    },
}

/// A layer reading a constant weight along its contraction axis.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// The node.
    pub node: NodeId,
    /// How it reads its input.
    pub kind: LayerKind,
    /// The activation input.
    pub x: ValueId,
    /// The weight.
    pub w: ValueId,
    /// Axis of the weight indexed by input channels/features.
    pub in_axis: usize,
    /// Axis of the weight indexed by outputs.
    pub out_axis: usize,
    /// Input channels or features.
    pub inputs: usize,
    /// Outputs.
    pub outputs: usize,
}

fn usize_pair(v: &Option<Vec<i64>>, default: usize) -> Option<[usize; 2]> {
    match v {
        None => Some([default, default]),
        Some(v) if v.len() == 2 => Some([usize::try_from(v[0]).ok()?, usize::try_from(v[1]).ok()?]),
        Some(_) => None,
    }
}

fn conv_kind(a: &ConvAttrs, w: &[usize]) -> Option<LayerKind> {
    if a.group() != 1 || w.len() != 4 {
        return None;
    }
    if a.auto_pad.as_deref().is_some_and(|p| p != "NOTSET") {
        return None;
    }
    let kernel = [w[2], w[3]];
    if let Some(k) = &a.kernel_shape {
        if k.len() != 2 || k[0] != w[2] as i64 || k[1] != w[3] as i64 {
            return None;
        }
    }
    let pads = match &a.pads {
        None => [0; 4],
        Some(p) if p.len() == 4 => {
            let mut out = [0usize; 4];
            for (o, &v) in out.iter_mut().zip(p) {
                *o = usize::try_from(v).ok()?;
            }
            out
        }
        Some(_) => return None,
    };
    Some(LayerKind::Conv {
        kernel,
        strides: usize_pair(&a.strides, 1)?,
        dilations: usize_pair(&a.dilations, 1)?,
        pads,
    })
}

/// The layer view of `node` if it reads the constant `w` as its weight (input 1).
pub fn layer_of(g: &Graph, node: NodeId) -> Option<Layer> {
    let n = g.node(node);
    let x = n.input(0)?;
    let w = n.input(1)?;
    if g.const_data(x).is_some() {
        return None;
    }
    let shape = g.const_data(w)?.shape().to_vec();
    let (kind, in_axis, out_axis) = match &n.op {
        Op::Conv(a) => (conv_kind(a, &shape)?, 1, 0),
        Op::Gemm {
            trans_a, trans_b, ..
        } => {
            if trans_a.unwrap_or(0) != 0 || shape.len() != 2 {
                return None;
            }
            let t = trans_b.unwrap_or(0) != 0;
            let (i, o) = if t { (1, 0) } else { (0, 1) };
            (LayerKind::Dense { trans_w: t }, i, o)
        }
        Op::MatMul if shape.len() == 2 => (LayerKind::Dense { trans_w: false }, 0, 1),
        _ => return None,
    };
    Some(Layer {
        node,
        kind,
        x,
        w,
        in_axis,
        out_axis,
        inputs: shape[in_axis],
        outputs: shape[out_axis],
    })
}

/// Sum of squares of each input channel/feature of an activation tensor `x` of `layer`.
pub fn channel_sumsq(layer: &Layer, x: &Tensor) -> Result<Vec<f64>> {
    let v = x.f32_view()?;
    let shape = x.shape();
    let k = layer.inputs;
    let mut out = vec![0f64; k];
    match layer.kind {
        LayerKind::Conv { .. } => {
            let (&n, &c) = (shape.first().unwrap_or(&0), shape.get(1).unwrap_or(&0));
            if c != k || shape.len() != 4 {
                return Err(bad_shape(layer, x));
            }
            let plane = shape[2] * shape[3];
            for b in 0..n {
                for (ch, o) in out.iter_mut().enumerate() {
                    let s = (b * c + ch) * plane;
                    *o += v[s..s + plane]
                        .iter()
                        .map(|&a| f64::from(a) * f64::from(a))
                        .sum::<f64>();
                }
            }
        }
        LayerKind::Dense { .. } => {
            if shape.last() != Some(&k) {
                return Err(bad_shape(layer, x));
            }
            for row in v.chunks_exact(k.max(1)) {
                for (o, &a) in out.iter_mut().zip(row) {
                    *o += f64::from(a) * f64::from(a);
                }
            }
        }
    }
    Ok(out)
}

fn bad_shape(layer: &Layer, x: &Tensor) -> Error {
    Error::invalid(format!(
        "activation of shape {:?} does not fit a layer with {} inputs",
        x.shape(),
        layer.inputs
    ))
}

/// The rows of `A` for activation `x`: `[rows, cols]` row-major, with `cols` = inputs
/// (Dense) or inputs·kh·kw (Conv im2col, column order channel, ky, kx like the weight).
pub fn rows(layer: &Layer, x: &Tensor) -> Result<(Vec<f32>, usize)> {
    let v = x.f32_view()?;
    let shape = x.shape();
    match layer.kind {
        LayerKind::Dense { .. } => {
            if shape.last() != Some(&layer.inputs) {
                return Err(bad_shape(layer, x));
            }
            Ok((v.into_owned(), layer.inputs))
        }
        LayerKind::Conv {
            kernel,
            strides,
            dilations,
            pads,
        } => {
            if shape.len() != 4 || shape[1] != layer.inputs {
                return Err(bad_shape(layer, x));
            }
            let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
            let span = |i: usize| dilations[i] * (kernel[i] - 1) + 1;
            let (ph, pw) = (h + pads[0] + pads[2], w + pads[1] + pads[3]);
            if ph < span(0) || pw < span(1) || strides.contains(&0) {
                return Err(bad_shape(layer, x));
            }
            let ho = (ph - span(0)) / strides[0] + 1;
            let wo = (pw - span(1)) / strides[1] + 1;
            let cols = c * kernel[0] * kernel[1];
            let mut out = vec![0f32; n * ho * wo * cols];
            for b in 0..n {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let row = ((b * ho + oy) * wo + ox) * cols;
                        for ch in 0..c {
                            for ky in 0..kernel[0] {
                                let iy = (oy * strides[0] + ky * dilations[0]) as isize
                                    - pads[0] as isize;
                                for kx in 0..kernel[1] {
                                    let ix = (ox * strides[1] + kx * dilations[1]) as isize
                                        - pads[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    let col = (ch * kernel[0] + ky) * kernel[1] + kx;
                                    out[row + col] =
                                        v[((b * c + ch) * h + iy as usize) * w + ix as usize];
                                }
                            }
                        }
                    }
                }
            }
            Ok((out, cols))
        }
    }
}

/// Positions of the im2col/feature columns that belong to input channel `ch`.
pub fn cols_per_input(layer: &Layer) -> usize {
    match layer.kind {
        LayerKind::Conv { kernel, .. } => kernel[0] * kernel[1],
        LayerKind::Dense { .. } => 1,
    }
}

/// The weight as a `[inputs·cols_per_input, outputs]` row-major f32 matrix.
pub fn weight_matrix(layer: &Layer, w: &Tensor) -> Result<Vec<f32>> {
    let v = w.f32_view()?;
    let (k, n) = (layer.inputs * cols_per_input(layer), layer.outputs);
    if v.len() != k * n {
        return Err(Error::invalid(format!(
            "weight of {:?} does not fit its layer",
            w.shape()
        )));
    }
    let transposed = match layer.kind {
        LayerKind::Conv { .. } => true,
        LayerKind::Dense { trans_w } => trans_w,
    };
    if !transposed {
        return Ok(v.into_owned());
    }
    let mut out = vec![0f32; k * n];
    for o in 0..n {
        for i in 0..k {
            out[i * n + o] = v[o * k + i];
        }
    }
    Ok(out)
}

/// The weight tensor of `layer`'s layout from a `[k, n]` row-major matrix, where the
/// layer now has `inputs` inputs and `outputs` outputs.
pub fn weight_tensor(
    layer: &Layer,
    m: &[f64],
    inputs: usize,
    outputs: usize,
    shape_like: &[usize],
) -> Result<Tensor> {
    let per = cols_per_input(layer);
    let k = inputs * per;
    let n = outputs;
    let mut shape = shape_like.to_vec();
    if let Some(d) = shape.get_mut(layer.in_axis) {
        *d = inputs;
    }
    if let Some(d) = shape.get_mut(layer.out_axis) {
        *d = outputs;
    }
    let transposed = match layer.kind {
        LayerKind::Conv { .. } => true,
        LayerKind::Dense { trans_w } => trans_w,
    };
    let mut out = vec![0f32; k * n];
    for i in 0..k {
        for o in 0..n {
            let x = m[i * n + o] as f32;
            if transposed {
                out[o * k + i] = x;
            } else {
                out[i * n + o] = x;
            }
        }
    }
    Tensor::from_f32_vec(shape, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv_layer() -> Layer {
        Layer {
            node: NodeId::new(0),
            kind: LayerKind::Conv {
                kernel: [3, 3],
                strides: [1, 1],
                dilations: [1, 1],
                pads: [1, 1, 1, 1],
            },
            x: ValueId(0),
            w: ValueId(1),
            in_axis: 1,
            out_axis: 0,
            inputs: 2,
            outputs: 1,
        }
    }

    #[test]
    fn im2col_times_weight_is_the_convolution() {
        let l = conv_layer();
        // x: 1x2x3x3, w: 1x2x3x3 (all ones on channel 0, twos on channel 1).
        let xs: Vec<f32> = (0..18).map(|i| i as f32).collect();
        let x = Tensor::from_f32(vec![1, 2, 3, 3], xs.clone()).unwrap();
        let ws: Vec<f32> = (0..18).map(|i| if i < 9 { 1.0 } else { 2.0 }).collect();
        let w = Tensor::from_f32(vec![1, 2, 3, 3], ws).unwrap();
        let (a, cols) = rows(&l, &x).unwrap();
        assert_eq!(cols, 18);
        let wm = weight_matrix(&l, &w).unwrap();
        let y: Vec<f32> = a
            .chunks(cols)
            .map(|r| r.iter().zip(&wm).map(|(p, q)| p * q).sum())
            .collect();
        // Centre output: sum of channel 0 + 2 * sum of channel 1.
        let s0: f32 = xs[..9].iter().sum();
        let s1: f32 = xs[9..].iter().sum();
        assert_eq!(y[4], s0 + 2.0 * s1);
        // Corner (0,0) sees x[0..2, 0..2] of each channel.
        assert_eq!(y[0], (0. + 1. + 3. + 4.) + 2.0 * (9. + 10. + 12. + 13.));
        let ss = channel_sumsq(&l, &x).unwrap();
        assert_eq!(
            ss[0],
            xs[..9].iter().map(|&v| f64::from(v * v)).sum::<f64>()
        );
        let back = weight_tensor(
            &l,
            &wm.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
            2,
            1,
            &[1, 2, 3, 3],
        )
        .unwrap();
        assert_eq!(back, w);
    }
}
