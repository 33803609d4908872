//! Reductions (ReduceMean, ReduceSum, ...): axes from the attribute or input 1,
//! keepdims, noop_with_empty_axes.

use super::{dims::unknowns, tensor, Ctx};
use crate::error::Result;
use crate::op::Op;
use crate::types::{Dim, ValueType};

fn reduce(
    c: &Ctx,
    attr: &Option<Vec<i64>>,
    keepdims: bool,
    noop_empty: bool,
) -> Result<Option<Vec<Dim>>> {
    let Some(x) = c.shape(0) else {
        return Ok(None);
    };
    let axes: Vec<i64> = match attr {
        Some(a) => a.clone(),
        None if c.has(1) => match c.ints(1) {
            Some(a) => a,
            // Axes not known: with keepdims the rank is kept, else nothing is known.
            None => return Ok(keepdims.then(|| unknowns(x.len()))),
        },
        None => Vec::new(),
    };
    if axes.is_empty() && noop_empty {
        return Ok(Some(x.to_vec()));
    }
    let mut red = vec![axes.is_empty(); x.len()];
    for &a in &axes {
        red[c.axis(a, x.len())?] = true;
    }
    Ok(Some(
        x.iter()
            .zip(&red)
            .filter_map(|(d, &r)| match (r, keepdims) {
                (false, _) => Some(d.clone()),
                (true, true) => Some(Dim::Known(1)),
                (true, false) => None,
            })
            .collect(),
    ))
}

pub(super) fn infer(c: &Ctx) -> Result<Vec<Option<ValueType>>> {
    let Op::Reduce {
        axes,
        keepdims,
        noop_with_empty_axes,
        ..
    } = &c.node.op
    else {
        return Ok(Vec::new());
    };
    let s = reduce(
        c,
        axes,
        keepdims.unwrap_or(1) != 0,
        noop_with_empty_axes.unwrap_or(0) != 0,
    )?;
    Ok(vec![tensor(c.elem(0), s)])
}

#[cfg(test)]
mod tests {
    use crate::dtype::DType::*;
    use crate::graph::Graph;
    use crate::infer::testutil::*;
    use crate::op::{Op, ReduceOp};

    fn op(axes: Option<Vec<i64>>, keep: Option<i64>, noop: Option<i64>) -> Op {
        Op::Reduce {
            op: ReduceOp::Mean,
            axes,
            keepdims: keep,
            noop_with_empty_axes: noop,
        }
    }

    #[test]
    fn axes_attribute_and_keepdims() {
        assert_eq!(
            run(op(Some(vec![-1]), None, None), &[t(F32, "N,S,8")], 1),
            ["f32[N,S,1]"]
        );
        assert_eq!(
            run(op(Some(vec![2, 3]), Some(0), None), &[t(F32, "N,C,7,7")], 1),
            ["f32[N,C]"]
        );
        assert_eq!(run(op(None, Some(0), None), &[t(F32, "2,3")], 1), ["f32[]"]);
        assert_eq!(
            run(op(None, None, Some(1)), &[t(F32, "2,3")], 1),
            ["f32[2,3]"]
        );
    }

    #[test]
    fn axes_input() {
        let mut g = Graph::new("g");
        let x = input(&mut g, "x", t(F32, "2,3,4"));
        let a = ints(&mut g, "a", &[1]);
        let (id, _) = node(&mut g, op(None, Some(0), None), &[Some(x), Some(a)], 1);
        assert_eq!(infer_str(&g, id), ["f32[2,4]"]);
        let dynamic = input(&mut g, "d", t(I64, "1"));
        let (id, _) = node(&mut g, op(None, None, None), &[Some(x), Some(dynamic)], 1);
        assert_eq!(infer_str(&g, id), ["f32[?,?,?]"]);
        let (id, _) = node(
            &mut g,
            op(None, Some(0), None),
            &[Some(x), Some(dynamic)],
            1,
        );
        assert_eq!(infer_str(&g, id), ["f32[*]"]);
    }
}
