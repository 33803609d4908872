//! The integer quantization ops: DynamicQuantizeLinear, MatMulInteger, ConvInteger,
//! QLinearMatMul and QLinearConv (QuantizeLinear and DequantizeLinear are in `misc`).

use super::{conv_pool::conv_of, matmul::matmul_of, tensor, Ctx};
use crate::dtype::DType;
use crate::error::Result;
use crate::op::Op;
use crate::types::{Dim, ValueType};

type Out = Result<Vec<Option<ValueType>>>;

/// QLinear outputs take the type of `y_zero_point` (slot 7), else of the data input.
fn qlinear_elem(c: &Ctx) -> Option<DType> {
    c.elem(7).or_else(|| c.elem(0))
}

pub(super) fn infer(c: &Ctx) -> Out {
    Ok(match &c.node.op {
        Op::DynamicQuantizeLinear => vec![
            tensor(Some(DType::U8), c.shape(0).map(<[Dim]>::to_vec)),
            tensor(Some(DType::F32), Some(Vec::new())),
            tensor(Some(DType::U8), Some(Vec::new())),
        ],
        Op::MatMulInteger => vec![matmul_of(c, 0, 1, Some(DType::I32))?],
        Op::QLinearMatMul => vec![matmul_of(c, 0, 3, qlinear_elem(c))?],
        Op::ConvInteger(a) => vec![conv_of(c, a, 0, 1, Some(DType::I32))?],
        Op::QLinearConv(a) => vec![conv_of(c, a, 0, 3, qlinear_elem(c))?],
        _ => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use crate::dtype::DType::*;
    use crate::graph::Graph;
    use crate::infer::testutil::*;
    use crate::op::{ConvAttrs, Op};

    #[test]
    fn dynamic_quantize_and_integer_matmul() {
        assert_eq!(
            run(Op::DynamicQuantizeLinear, &[t(F32, "N,4")], 3),
            ["u8[N,4]", "f32[]", "u8[]"]
        );
        assert_eq!(
            run(
                Op::MatMulInteger,
                &[t(U8, "B,3,4"), t(I8, "4,5"), t(U8, "")],
                1
            ),
            ["i32[B,3,5]"]
        );
        let f = t(F32, "");
        let q = |e, s| t(e, s);
        assert_eq!(
            run(
                Op::QLinearMatMul,
                &[
                    q(I8, "2,4"),
                    f.clone(),
                    q(I8, ""),
                    q(I8, "4,3"),
                    f.clone(),
                    q(I8, ""),
                    f.clone(),
                    q(I8, "")
                ],
                1
            ),
            ["i8[2,3]"]
        );
    }

    #[test]
    fn integer_convs() {
        let a = ConvAttrs {
            pads: Some(vec![1, 1, 1, 1]),
            ..ConvAttrs::default()
        };
        assert_eq!(
            run(
                Op::ConvInteger(a.clone()),
                &[t(U8, "1,1,3,3"), t(U8, "1,1,2,2"), t(U8, "")],
                1
            ),
            ["i32[1,1,4,4]"]
        );
        let f = t(F32, "");
        assert_eq!(
            run(
                Op::QLinearConv(a),
                &[
                    t(U8, "1,2,5,5"),
                    f.clone(),
                    t(U8, ""),
                    t(I8, "4,2,3,3"),
                    t(F32, "4"),
                    t(I8, "4"),
                    f,
                    t(U8, ""),
                    t(I32, "4")
                ],
                1
            ),
            ["u8[1,4,5,5]"]
        );
        let mut g = Graph::new("g");
        let x = input(&mut g, "x", t(U8, "1,3,5,5"));
        let w = input(&mut g, "w", t(U8, "2,2,3,3"));
        let (id, _) = node(
            &mut g,
            Op::ConvInteger(ConvAttrs::default()),
            &[Some(x), Some(w)],
            1,
        );
        let err = crate::infer::infer_node(&g, id).unwrap_err().to_string();
        assert!(err.contains("channels"), "{err}");
    }
}
