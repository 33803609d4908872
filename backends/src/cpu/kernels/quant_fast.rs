//! Fast paths for the ops around integer matmuls, bit-identical to the general kernels
//! ([`super::quant`], the evaluator) they stand in for:
//!
//! - `Cast` of i32/u8/i8 to f32 (the i32 accumulators of MatMulInteger/ConvInteger on
//!   their way back to floats), rounding as `as f32` does (ties to even);
//! - `DynamicQuantizeLinear` on f32, in vectorizable passes: range, then codes rounded
//!   half to even with the `1.5·2^23` trick (exact for `|x| < 2^22`; larger values
//!   saturate whichever way they round).

use crate::cpu::parallel;
use cc_ir::{DType, Op, Result, Tensor};

/// Runs `op` when a fast path applies; `Ok(None)` otherwise.
pub fn run(op: &Op, inputs: &[Option<&Tensor>]) -> Result<Option<Vec<Tensor>>> {
    let Some(Some(x)) = inputs.first() else {
        return Ok(None);
    };
    match op {
        Op::Cast { to: DType::F32, .. } => cast_to_f32(x),
        Op::DynamicQuantizeLinear if x.dtype() == DType::F32 => dynamic_quantize(x),
        _ => Ok(None),
    }
}

/// `Cast(to = FLOAT)` of an i32, u8 or i8 tensor.
fn cast_to_f32(x: &Tensor) -> Result<Option<Vec<Tensor>>> {
    let raw = x.raw()?;
    let y: Vec<f32> = match x.dtype() {
        DType::I32 => raw
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32)
            .collect(),
        DType::U8 => raw.iter().map(|&b| f32::from(b)).collect(),
        DType::I8 => raw.iter().map(|&b| f32::from(b as i8)).collect(),
        _ => return Ok(None),
    };
    Ok(Some(vec![Tensor::from_f32_vec(x.shape().to_vec(), y)?]))
}

/// `x` rounded to the nearest integer, ties to even, for `|x| < 2^22` (other values are
/// returned as they are).
#[inline(always)]
pub fn round_even_small(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    if x.abs() < 4_194_304.0 {
        (x + MAGIC) - MAGIC
    } else {
        x
    }
}

/// Elements per parallel task.
const CHUNK: usize = 1 << 15;

/// DynamicQuantizeLinear: u8 codes with scale `(max - min) / 255` and zero point
/// `round(-min / scale)` over the data's range extended to include 0 (NaN ignored in
/// the range, coded as 0), as the general kernel computes them.
fn dynamic_quantize(x: &Tensor) -> Result<Option<Vec<Tensor>>> {
    let xs = x.f32_view()?;
    let (mut lo, mut hi) = ([0f32; 8], [0f32; 8]);
    let chunks = xs.chunks_exact(8);
    for &v in chunks.remainder() {
        lo[0] = lo[0].min(v);
        hi[0] = hi[0].max(v);
    }
    for c in chunks {
        for i in 0..8 {
            lo[i] = lo[i].min(c[i]);
            hi[i] = hi[i].max(c[i]);
        }
    }
    let min = lo.iter().fold(0f32, |m, &v| m.min(v));
    let max = hi.iter().fold(0f32, |m, &v| m.max(v));
    let scale = if max == min { 1.0 } else { max - min } / 255.0;
    let zp = (0.0 - min / scale).clamp(0.0, 255.0).round_ties_even();
    let mut q = vec![0u8; xs.len()];
    let body = |i: usize, out: &mut [u8]| {
        for (o, &v) in out.iter_mut().zip(parallel::chunk_of(&xs, i, CHUNK)) {
            let r = round_even_small(v / scale) + zp;
            // NaN fails both comparisons and becomes 0, as in the general kernel.
            *o = if r >= 255.0 {
                255
            } else if r > 0.0 {
                r as u8
            } else {
                0
            };
        }
    };
    if xs.len() <= CHUNK {
        body(0, &mut q);
    } else {
        parallel::for_each_chunk(&mut q, CHUNK, &body);
    }
    Ok(Some(vec![
        Tensor::from_raw(DType::U8, x.shape().to_vec(), q.into())?,
        Tensor::from_f32(vec![], vec![scale])?,
        Tensor::from_raw(DType::U8, vec![], vec![zp as u8].into())?,
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_casts_to_f32_match_the_evaluator() {
        let op = Op::Cast {
            to: DType::F32,
            saturate: None,
        };
        let vals = vec![0, -1, 7, i32::MAX, i32::MIN, 16_777_217, -33_554_435];
        let x = Tensor::from_i32(vec![7], vals).unwrap();
        let fast = run(&op, &[Some(&x)]).unwrap().unwrap();
        let slow = crate::cpu::eval::eval_node(&op, &[Some(&x)], Some(1))
            .unwrap()
            .unwrap();
        assert_eq!(fast[0].to_f32().unwrap(), slow[0].to_f32().unwrap());
        let x = Tensor::from_raw(DType::I8, vec![3], vec![0u8, 255, 128].into()).unwrap();
        let y = run(&op, &[Some(&x)]).unwrap().unwrap();
        assert_eq!(y[0].to_f32().unwrap(), vec![0.0, -1.0, -128.0]);
        let other = Op::Cast {
            to: DType::I32,
            saturate: None,
        };
        assert!(run(&other, &[Some(&x)]).unwrap().is_none());
    }

    #[test]
    fn rounding_trick_is_round_half_even() {
        for v in [
            0.5f32,
            1.5,
            2.5,
            -0.5,
            -2.5,
            3.49,
            -3.51,
            1e6 + 0.5,
            4194303.5,
        ] {
            assert_eq!(round_even_small(v), v.round_ties_even(), "{v}");
        }
    }

    #[test]
    fn dynamic_quantize_is_bit_identical_to_the_general_kernel() {
        let pool = crate::cpu::kernels::test_util::cx_pool(2);
        let mut cases: Vec<Vec<f32>> = vec![
            vec![0.0; 5],
            vec![1.0, 2.0, 3.0],
            vec![-1.0, -2.0],
            (0..100_000)
                .map(|i| ((i * 7919 % 10007) as f32 - 4000.0) / 97.0)
                .collect(),
        ];
        let mut odd: Vec<f32> = (0..1000).map(|i| i as f32 * 0.37 - 100.0).collect();
        odd[3] = f32::NAN;
        // A value exactly halfway between two codes.
        odd[4] = 0.0;
        cases.push(odd);
        for xs in cases {
            let x = Tensor::from_f32(vec![xs.len()], xs).unwrap();
            let fast = pool.install(|| run(&Op::DynamicQuantizeLinear, &[Some(&x)]));
            let fast = fast.unwrap().unwrap();
            let slow = crate::cpu::kernels::quant::run(&Op::DynamicQuantizeLinear, &[Some(&x)])
                .unwrap()
                .unwrap();
            for (a, b) in fast.iter().zip(&slow) {
                assert_eq!(a.dtype(), b.dtype());
                assert_eq!(a.shape(), b.shape());
                assert_eq!(a.raw().unwrap(), b.raw().unwrap());
            }
        }
    }
}
