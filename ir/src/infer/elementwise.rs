//! Elementwise ops: unary, broadcasting binary/variadic, Where, Clip, and the ops whose
//! output has the shape of their first input (Identity, Softmax, CumSum, Cast, CastLike,
//! Dropout).

use super::{dims::broadcast, tensor, Ctx};
use crate::dtype::DType;
use crate::error::Result;
use crate::op::{BinaryOp, Op, UnaryOp};
use crate::types::{Dim, ValueType};

/// Broadcasts the shapes of the present inputs among `slots`.
fn broadcast_inputs(c: &Ctx, slots: impl Iterator<Item = usize>) -> Result<Option<Vec<Dim>>> {
    let shapes: Vec<Option<&[Dim]>> = slots.filter(|&s| c.has(s)).map(|s| c.shape(s)).collect();
    broadcast(&shapes).map_err(|m| c.err(m))
}

/// Input 0's shape as an owned shape.
fn shape0(c: &Ctx) -> Option<Vec<Dim>> {
    c.shape(0).map(<[Dim]>::to_vec)
}

pub(super) fn infer(c: &Ctx) -> Result<Vec<Option<ValueType>>> {
    Ok(match &c.node.op {
        Op::Unary(UnaryOp::Not | UnaryOp::IsNaN) => vec![tensor(Some(DType::Bool), shape0(c))],
        Op::Unary(_)
        | Op::LeakyRelu { .. }
        | Op::Gelu { .. }
        | Op::Identity
        | Op::Softmax { .. }
        | Op::CumSum { .. } => vec![tensor(c.elem(0), shape0(c))],
        Op::Cast { to, .. } => vec![tensor(Some(*to), shape0(c))],
        Op::CastLike { .. } => vec![tensor(c.elem(1), shape0(c))],
        Op::Dropout { .. } => vec![
            tensor(c.elem(0), shape0(c)),
            tensor(Some(DType::Bool), shape0(c)),
        ],
        Op::Binary(b) => {
            let shape = broadcast_inputs(c, 0..2)?;
            let elem = match b {
                BinaryOp::Equal
                | BinaryOp::Less
                | BinaryOp::LessOrEqual
                | BinaryOp::Greater
                | BinaryOp::GreaterOrEqual
                | BinaryOp::And
                | BinaryOp::Or
                | BinaryOp::Xor => Some(DType::Bool),
                _ => c.elem(0),
            };
            vec![tensor(elem, shape)]
        }
        Op::Mod { .. } => vec![tensor(c.elem(0), broadcast_inputs(c, 0..2)?)],
        Op::Variadic(_) => {
            let elem = (0..c.n_in()).find_map(|s| c.elem(s));
            vec![tensor(elem, broadcast_inputs(c, 0..c.n_in())?)]
        }
        Op::Where => {
            let elem = c.elem(1).or_else(|| c.elem(2));
            vec![tensor(elem, broadcast_inputs(c, 0..3)?)]
        }
        Op::Clip => vec![tensor(c.elem(0), broadcast_inputs(c, 0..3)?)],
        _ => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use crate::dtype::DType::*;
    use crate::infer::testutil::*;
    use crate::op::{BinaryOp, Op, UnaryOp, VariadicOp};

    #[test]
    fn unary_keeps_type_and_logical_gives_bool() {
        assert_eq!(
            run(Op::Unary(UnaryOp::Relu), &[t(F16, "N,3")], 1),
            ["f16[N,3]"]
        );
        assert_eq!(
            run(Op::Unary(UnaryOp::IsNaN), &[t(F32, "2")], 1),
            ["bool[2]"]
        );
        assert_eq!(
            run(Op::Gelu { approximate: None }, &[t(F32, "?,4")], 1),
            ["f32[?,4]"]
        );
    }

    #[test]
    fn binary_broadcasts_and_comparisons_give_bool() {
        assert_eq!(
            run(
                Op::Binary(BinaryOp::Add),
                &[t(F32, "N,1,4"), t(F32, "3,1")],
                1
            ),
            ["f32[N,3,4]"]
        );
        assert_eq!(
            run(Op::Binary(BinaryOp::Less), &[t(I64, "N"), t(I64, "")], 1),
            ["bool[N]"]
        );
        assert_eq!(
            run(
                Op::Binary(BinaryOp::PRelu),
                &[t(F32, "1,8,5,5"), t(F32, "8,1,1")],
                1
            ),
            ["f32[1,8,5,5]"]
        );
    }

    #[test]
    fn broadcast_contradiction_is_an_error() {
        let mut g = crate::Graph::new("g");
        let a = input(&mut g, "a", t(F32, "2,3"));
        let b = input(&mut g, "b", t(F32, "4,3"));
        let (id, _) = node(&mut g, Op::Binary(BinaryOp::Mul), &[Some(a), Some(b)], 1);
        let e = crate::infer::infer_node(&g, id).unwrap_err().to_string();
        assert!(e.contains("Mul") && e.contains("cannot broadcast"), "{e}");
    }

    #[test]
    fn variadic_where_clip_dropout_cast() {
        assert_eq!(
            run(
                Op::Variadic(VariadicOp::Max),
                &[t(F32, "3"), t(F32, "2,1"), t(F32, "")],
                1
            ),
            ["f32[2,3]"]
        );
        assert_eq!(
            run(Op::Where, &[t(Bool, "N,1"), t(I32, "5"), t(I32, "1")], 1),
            ["i32[N,5]"]
        );
        assert_eq!(
            run(Op::Clip, &[t(F32, "2,2"), t(F32, ""), t(F32, "")], 1),
            ["f32[2,2]"]
        );
        assert_eq!(
            run(Op::Dropout { seed: None }, &[t(F32, "B,7")], 2),
            ["f32[B,7]", "bool[B,7]"]
        );
        assert_eq!(
            run(
                Op::Cast {
                    to: I8,
                    saturate: None
                },
                &[t(F32, "4")],
                1
            ),
            ["i8[4]"]
        );
        assert_eq!(
            run(
                Op::CastLike { saturate: None },
                &[t(F32, "N,4"), t(F16, "")],
                1
            ),
            ["f16[N,4]"]
        );
    }
}
