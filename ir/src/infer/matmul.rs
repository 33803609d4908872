//! Gemm and MatMul.

use super::{
    dims::{broadcast, fmt_dims, unify},
    tensor, Ctx,
};
use crate::error::Result;
use crate::op::Op;
use crate::types::{Dim, ValueType};

fn inner(c: &Ctx, a: &Dim, b: &Dim) -> Result<()> {
    unify(a, b)
        .map(|_| ())
        .map_err(|()| c.err(format!("inner dimensions {a} and {b} differ")))
}

/// The (rows, cols) of a 2-D Gemm operand after the optional transpose.
fn gemm_operand(c: &Ctx, slot: usize, trans: bool) -> Result<Option<(Dim, Dim)>> {
    let Some(s) = c.shape(slot) else {
        return Ok(None);
    };
    let [r, k] = s else {
        return Err(c.err(format!(
            "Gemm input {slot} must be 2-D, got {}",
            fmt_dims(s)
        )));
    };
    Ok(Some(if trans {
        (k.clone(), r.clone())
    } else {
        (r.clone(), k.clone())
    }))
}

fn gemm(c: &Ctx, trans_a: bool, trans_b: bool) -> Result<Option<ValueType>> {
    let a = gemm_operand(c, 0, trans_a)?;
    let b = gemm_operand(c, 1, trans_b)?;
    if let (Some((_, ka)), Some((kb, _))) = (&a, &b) {
        inner(c, ka, kb)?;
    }
    let m = a.map_or(Dim::Unknown, |(m, _)| m);
    let n = b.map_or(Dim::Unknown, |(_, n)| n);
    Ok(tensor(c.elem(0), Some(vec![m, n])))
}

fn matmul(c: &Ctx) -> Result<Option<ValueType>> {
    matmul_of(c, 0, 1, c.elem(0))
}

/// The MatMul result of inputs `sa` and `sb` with element type `elem` (also used by
/// MatMulInteger and QLinearMatMul).
pub(super) fn matmul_of(
    c: &Ctx,
    sa: usize,
    sb: usize,
    elem: Option<crate::dtype::DType>,
) -> Result<Option<ValueType>> {
    let (Some(a), Some(b)) = (c.shape(sa), c.shape(sb)) else {
        return Ok(tensor(elem, None));
    };
    if a.is_empty() || b.is_empty() {
        return Err(c.err("MatMul of a scalar"));
    }
    // 1-D operands are promoted ([k] -> [1,k] / [k,1]) and the added dim removed after.
    let a2: Vec<Dim> = if a.len() == 1 {
        vec![Dim::Known(1), a[0].clone()]
    } else {
        a.to_vec()
    };
    let b2: Vec<Dim> = if b.len() == 1 {
        vec![b[0].clone(), Dim::Known(1)]
    } else {
        b.to_vec()
    };
    let (ra, rb) = (a2.len(), b2.len());
    inner(c, &a2[ra - 1], &b2[rb - 2])?;
    let batch = broadcast(&[Some(&a2[..ra - 2]), Some(&b2[..rb - 2])])
        .map_err(|m| c.err(m))?
        .unwrap_or_default();
    let mut out = batch;
    if a.len() > 1 {
        out.push(a2[ra - 2].clone());
    }
    if b.len() > 1 {
        out.push(b2[rb - 1].clone());
    }
    Ok(tensor(elem, Some(out)))
}

pub(super) fn infer(c: &Ctx) -> Result<Vec<Option<ValueType>>> {
    Ok(match &c.node.op {
        Op::Gemm {
            trans_a, trans_b, ..
        } => vec![gemm(
            c,
            trans_a.unwrap_or(0) != 0,
            trans_b.unwrap_or(0) != 0,
        )?],
        Op::MatMul => vec![matmul(c)?],
        _ => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use crate::dtype::DType::*;
    use crate::infer::testutil::*;
    use crate::op::Op;

    fn gemm(a: i64, b: i64) -> Op {
        Op::Gemm {
            alpha: None,
            beta: None,
            trans_a: Some(a),
            trans_b: Some(b),
        }
    }

    #[test]
    fn gemm_transposes() {
        assert_eq!(
            run(
                gemm(0, 1),
                &[t(F32, "N,512"), t(F32, "10,512"), t(F32, "10")],
                1
            ),
            ["f32[N,10]"]
        );
        assert_eq!(
            run(gemm(1, 0), &[t(F32, "3,4"), t(F32, "3,6")], 1),
            ["f32[4,6]"]
        );
        let unranked = crate::ValueType::Tensor {
            elem: Some(F32),
            shape: None,
        };
        assert_eq!(
            run(gemm(0, 1), &[unranked, t(F32, "10,512")], 1),
            ["f32[?,10]"]
        );
    }

    #[test]
    fn matmul_promotion_and_batch_broadcast() {
        assert_eq!(
            run(Op::MatMul, &[t(F32, "B,1,S,64"), t(F32, "12,64,S")], 1),
            ["f32[B,12,S,S]"]
        );
        assert_eq!(
            run(Op::MatMul, &[t(F32, "4"), t(F32, "2,4,5")], 1),
            ["f32[2,5]"]
        );
        assert_eq!(
            run(Op::MatMul, &[t(F32, "3,4"), t(F32, "4")], 1),
            ["f32[3]"]
        );
        assert_eq!(run(Op::MatMul, &[t(F32, "4"), t(F32, "4")], 1), ["f32[]"]);
    }

    #[test]
    fn inner_dim_mismatch_is_an_error() {
        let mut g = crate::Graph::new("g");
        let a = input(&mut g, "a", t(F32, "2,3"));
        let b = input(&mut g, "b", t(F32, "4,5"));
        let (id, _) = node(&mut g, Op::MatMul, &[Some(a), Some(b)], 1);
        let e = crate::infer::infer_node(&g, id).unwrap_err().to_string();
        assert!(e.contains("MatMul") && e.contains("3 and 4"), "{e}");
        let (id, _) = node(&mut g, gemm(0, 0), &[Some(a), Some(b)], 1);
        assert!(crate::infer::infer_node(&g, id).is_err());
    }
}
