//! Gather, GatherElements and GatherND.

use super::{tensor, Ctx};
use crate::error::Result;
use crate::op::Op;
use crate::types::{Dim, ValueType};

fn gather(c: &Ctx, axis: i64) -> Result<Option<Vec<Dim>>> {
    let (Some(x), Some(idx)) = (c.shape(0), c.shape(1)) else {
        return Ok(None);
    };
    let a = c.axis(axis, x.len())?;
    let mut out = x[..a].to_vec();
    out.extend_from_slice(idx);
    out.extend_from_slice(&x[a + 1..]);
    Ok(Some(out))
}

fn gather_elements(c: &Ctx, axis: i64) -> Result<Option<Vec<Dim>>> {
    let Some(idx) = c.shape(1) else {
        return Ok(None);
    };
    if let Some(x) = c.shape(0) {
        if x.len() != idx.len() {
            return Err(c.err(format!(
                "data rank {} and indices rank {} differ",
                x.len(),
                idx.len()
            )));
        }
        c.axis(axis, x.len())?;
    }
    Ok(Some(idx.to_vec()))
}

fn gather_nd(c: &Ctx, batch_dims: i64) -> Result<Option<Vec<Dim>>> {
    let (Some(x), Some(idx)) = (c.shape(0), c.shape(1)) else {
        return Ok(None);
    };
    let Some((last, lead)) = idx.split_last() else {
        return Err(c.err("GatherND indices must have rank >= 1"));
    };
    let Some(k) = last.known() else {
        return Ok(None);
    };
    let b = usize::try_from(batch_dims).map_err(|_| c.err("negative batch_dims"))?;
    let from = usize::try_from(k)
        .ok()
        .and_then(|k| k.checked_add(b))
        .filter(|&f| f <= x.len())
        .ok_or_else(|| {
            c.err(format!(
                "indices of depth {k} with batch_dims {b} on a rank {} input",
                x.len()
            ))
        })?;
    let mut out = lead.to_vec();
    out.extend_from_slice(&x[from..]);
    Ok(Some(out))
}

pub(super) fn infer(c: &Ctx) -> Result<Vec<Option<ValueType>>> {
    let shape = match &c.node.op {
        Op::Gather { axis } => gather(c, axis.unwrap_or(0))?,
        Op::GatherElements { axis } => gather_elements(c, axis.unwrap_or(0))?,
        Op::GatherND { batch_dims } => gather_nd(c, batch_dims.unwrap_or(0))?,
        _ => return Ok(Vec::new()),
    };
    Ok(vec![tensor(c.elem(0), shape)])
}

#[cfg(test)]
mod tests {
    use crate::dtype::DType::*;
    use crate::infer::testutil::*;
    use crate::op::Op;

    #[test]
    fn gather_inserts_index_shape() {
        assert_eq!(
            run(
                Op::Gather { axis: None },
                &[t(F32, "V,64"), t(I64, "B,S")],
                1
            ),
            ["f32[B,S,64]"]
        );
        assert_eq!(
            run(Op::Gather { axis: None }, &[t(I64, "4"), t(I64, "")], 1),
            ["i64[]"]
        );
        assert_eq!(
            run(
                Op::Gather { axis: Some(-1) },
                &[t(F32, "2,5"), t(I64, "")],
                1
            ),
            ["f32[2]"]
        );
    }

    #[test]
    fn gather_elements_and_nd() {
        assert_eq!(
            run(
                Op::GatherElements { axis: Some(1) },
                &[t(F32, "3,4"), t(I64, "3,2")],
                1
            ),
            ["f32[3,2]"]
        );
        assert_eq!(
            run(
                Op::GatherND { batch_dims: None },
                &[t(F32, "2,3,4"), t(I64, "5,2")],
                1
            ),
            ["f32[5,4]"]
        );
        assert_eq!(
            run(
                Op::GatherND {
                    batch_dims: Some(1)
                },
                &[t(F32, "2,3,4"), t(I64, "2,1")],
                1
            ),
            ["f32[2,4]"]
        );
    }
}
