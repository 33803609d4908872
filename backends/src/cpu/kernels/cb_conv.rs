//! Fused codebook Conv: `Conv(X, Gather(table, Cast(indices) [+ offsets]), B)` for a
//! constant codebook weight, without materializing the whole f32 weight. The weight is
//! read through [`Filter::Coded`]: a tile of output channels is looked up in the table
//! right before the GEMM (or depthwise kernel) that uses it, exactly as the lowered
//! Gather would read each element, so results differ from decode-then-conv only by the
//! order of the f32 sums (not at all, with the same tiles of the same kernels).

use super::cb_gemm::{CbWeight, Prepared};
use super::dq_conv::TileDecode;
use super::dq_filter::next_filter_id;
use super::dq_gemm::RowDecode;
use super::Activation;
use cc_ir::op::ConvAttrs;
use cc_ir::{DType, Result, Tensor};

/// A codebook Conv weight prepared for decoding tiles of output channels.
pub(crate) struct CbFilter<'a> {
    id: u64,
    w: Prepared<'a>,
}

impl<'a> CbFilter<'a> {
    /// `Ok(None)` when the form is not one the lookup takes (see [`supported`]).
    pub fn new(w: &CbWeight<'a>) -> Result<Option<CbFilter<'a>>> {
        if !supported(w) {
            return Ok(None);
        }
        Ok(Prepared::new(w)?.map(|w| CbFilter {
            id: next_filter_id(),
            w,
        }))
    }
}

impl TileDecode for CbFilter<'_> {
    fn id(&self) -> u64 {
        self.id
    }

    fn shape(&self) -> &[usize] {
        self.w.shape()
    }

    fn decode(&self, r0: usize, (k0, kc): (usize, usize), out: &mut [f32]) {
        for (i, row) in out.chunks_exact_mut(kc.max(1)).enumerate() {
            self.w.row(r0 + i, k0, row);
        }
    }
}

/// True when a Conv reading the weight can take the fused path: 3-D or 4-D (1-D or 2-D
/// Conv) u4/u8 indices into a 1-D f32 table.
pub fn supported(w: &CbWeight<'_>) -> bool {
    matches!(w.indices.dtype(), DType::U4 | DType::U8)
        && matches!(w.indices.shape().len(), 3 | 4)
        && w.table.dtype() == DType::F32
        && w.table.shape().len() == 1
}

/// Conv(X, W, B) on f32 `x` (and bias) with the codebook weight `w` decoded tile by
/// tile, followed by `act` if given; `Ok(None)` when the types, ranks or offsets are
/// not supported (the caller then runs the nodes apart).
pub fn cb_conv(
    a: &ConvAttrs,
    x: &Tensor,
    w: &CbWeight<'_>,
    bias: Option<&Tensor>,
    act: Option<Activation>,
    cx: &super::KernelCx<'_>,
) -> Result<Option<Tensor>> {
    super::dq_conv::conv_coded(a, x, bias, act, cx, || CbFilter::new(w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::kernels::dq_conv::tests::{cases, check_fused, Case};
    use crate::cpu::kernels::test_util::{cx_pool, rand_vec, t};
    use crate::cpu::kernels::{cb_gemm, KernelCx};
    use cc_ir::compressed::pack_4bit;

    /// How a test weight is clustered.
    #[derive(Clone, Copy, Debug)]
    enum Form {
        /// 4-bit packed indices (tables of 16), one table.
        U4Tensor,
        /// 4-bit packed indices, one table per output channel (offsets `[M, 1, 1, 1]`).
        U4Channel,
        /// 8-bit indices (tables of 256), one table.
        U8Tensor,
        /// 8-bit indices, one table per output channel (offsets `[M, 1, 1]`, broadcast).
        U8Channel,
        /// 4-bit indices, one table per input channel (offsets along axis 1).
        U4Axis1,
    }

    /// Indices, flat table and offsets of a clustered weight of `shape`.
    fn weight(form: Form, shape: &[usize], seed: u64) -> (Tensor, Tensor, Option<Tensor>) {
        let n: usize = shape.iter().product();
        let (u4, len) = match form {
            Form::U8Tensor | Form::U8Channel => (false, 256),
            _ => (true, 16),
        };
        let idx: Vec<i32> = rand_vec(n, seed)
            .iter()
            .map(|r| (((r + 1.0) / 2.0 * len as f32) as i32).min(len as i32 - 1))
            .collect();
        let indices = if u4 {
            Tensor::from_raw(DType::U4, shape.to_vec(), pack_4bit(&idx).into()).unwrap()
        } else {
            let b: Vec<u8> = idx.iter().map(|&i| i as u8).collect();
            Tensor::from_raw(DType::U8, shape.to_vec(), b.into()).unwrap()
        };
        let rank = shape.len();
        let (tables, off_shape) = match form {
            Form::U4Tensor | Form::U8Tensor => (1, None),
            Form::U4Channel => {
                let mut s = vec![1; rank];
                s[0] = shape[0];
                (shape[0], Some(s))
            }
            // Trailing dimensions only: broadcast over the leading ones.
            Form::U8Channel => (shape[0], Some([vec![shape[0]], vec![1; rank - 1]].concat())),
            Form::U4Axis1 => {
                let mut s = vec![1; rank - 1];
                s[0] = shape[1];
                (shape[1], Some(s))
            }
        };
        let table = Tensor::from_f32(vec![tables * len], rand_vec(tables * len, seed + 1)).unwrap();
        let offsets = off_shape.map(|s| {
            Tensor::from_i32(s, (0..tables as i32).map(|c| c * len as i32).collect()).unwrap()
        });
        (indices, table, offsets)
    }

    /// Checks the fused conv (with a bias and an activation or not) against
    /// decode-then-conv, at the given thread count.
    fn check(c: &Case, form: Form, threads: usize, seed: u64) {
        let (i, tb, o) = weight(form, &c.w, seed);
        let w = CbWeight {
            indices: &i,
            table: &tb,
            offsets: o.as_ref(),
        };
        assert!(supported(&w));
        let wf = cb_gemm::decode(&w).unwrap().unwrap();
        let what = format!("{form:?}");
        check_fused(c, &wf, (threads, seed), &what, |a, x, b, act, cx| {
            cb_conv(a, x, &w, b, act, cx).unwrap().unwrap()
        });
    }

    #[test]
    fn fused_conv_matches_decode_then_conv_over_geometries_and_forms() {
        let forms = [
            Form::U4Tensor,
            Form::U4Channel,
            Form::U8Tensor,
            Form::U8Channel,
            Form::U4Axis1,
        ];
        for (i, c) in cases().iter().enumerate() {
            for (j, &form) in forms.iter().enumerate() {
                for threads in [1, 3] {
                    check(c, form, threads, (i * 100 + j * 10) as u64);
                }
            }
        }
    }

    #[test]
    fn decoded_weight_is_the_gather_of_the_lowered_nodes() {
        // Element by element as Gather(table, indices + offsets) reads it.
        for form in [Form::U4Channel, Form::U8Channel, Form::U4Axis1] {
            let shape = [6, 5, 3, 3];
            let (i, tb, o) = weight(form, &shape, 7);
            let w = CbWeight {
                indices: &i,
                table: &tb,
                offsets: o.as_ref(),
            };
            let codes = cc_ir::compressed::codes_i32(&i).unwrap();
            let (table, off) = (tb.to_f32().unwrap(), o.as_ref().unwrap().to_i32().unwrap());
            let want: Vec<f32> = (0..codes.len())
                .map(|e| {
                    let ch = match form {
                        Form::U4Axis1 => e / 9 % 5,
                        _ => e / 45,
                    };
                    table[(codes[e] + off[ch]) as usize]
                })
                .collect();
            let f = CbFilter::new(&w).unwrap().unwrap();
            // A tile of channels 2..5, columns 7..30.
            let mut tile = vec![f32::NAN; 3 * 23];
            f.decode(2, (7, 23), &mut tile);
            for (r, row) in tile.chunks(23).enumerate() {
                assert_eq!(row, &want[(2 + r) * 45 + 7..(2 + r) * 45 + 30], "{form:?}");
            }
            assert_eq!(
                cb_gemm::decode(&w).unwrap().unwrap().to_f32().unwrap(),
                want
            );
        }
    }

    #[test]
    fn other_forms_are_left_to_the_nodes() {
        let pool = cx_pool(1);
        let _installed = pool.enter();
        let cx = KernelCx::new(1);
        let (i, tb, _) = weight(Form::U4Tensor, &[4, 3, 3, 3], 1);
        let x = t(&[1, 3, 5, 5], 3);
        let a = ConvAttrs::default();
        // A table too short for the indices.
        let short = Tensor::from_f32(vec![4], vec![0.0; 4]).unwrap();
        let w = CbWeight {
            indices: &i,
            table: &short,
            offsets: None,
        };
        assert!(cb_conv(&a, &x, &w, None, None, &cx).unwrap().is_none());
        // 2-D or 5-D indices, an f64 input.
        let w = CbWeight {
            indices: &i,
            table: &tb,
            offsets: None,
        };
        let i2 = i.reshaped(vec![4, 27]).unwrap();
        assert!(!supported(&CbWeight { indices: &i2, ..w }));
        let i5 = i.reshaped(vec![4, 3, 3, 3, 1]).unwrap();
        assert!(!supported(&CbWeight { indices: &i5, ..w }));
        let x64 = Tensor::from_f64(vec![1, 3, 5, 5], vec![0.0; 75]).unwrap();
        assert!(cb_conv(&a, &x64, &w, None, None, &cx).unwrap().is_none());
        // The input's channels do not fit the weight.
        let err = cb_conv(&a, &t(&[1, 2, 5, 5], 6), &w, None, None, &cx)
            .unwrap_err()
            .to_string();
        assert!(err.contains("group"), "{err}");
    }
}
