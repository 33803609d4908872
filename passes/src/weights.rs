//! What the weight-compression passes share: which constant weights they work on
//! (`ops=` and `ignore=` options), and the weight-error statistics they report.

use crate::error::PassError;
use crate::options::Options;
use crate::pass::PassCx;
use crate::prune::glob;
use cc_ir::{DType, Graph, NodeId, Op, ValueId};

/// Op types whose constant weights the passes can select.
pub const WEIGHT_OPS: &[&str] = &["MatMul", "Gemm", "Conv", "Gather"];

/// One selected weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightTarget {
    /// The constant value.
    pub value: ValueId,
    /// Its first selected reader.
    pub node: NodeId,
    /// The reader's op type (one of [`WEIGHT_OPS`]).
    pub op: &'static str,
    /// Output-channel axis of the weight (MatMul 1, Gemm 0 or 1 by `transB`, Conv 0,
    /// Gather rows 0).
    pub out_axis: usize,
    /// Reduction axis (MatMul 0, Gemm by `transB`, Conv 1 (input channels), Gather 1).
    pub red_axis: usize,
}

/// The `ops=` and `ignore=` options of a weight pass.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightSelection {
    /// Op types whose weights are selected.
    pub ops: Vec<String>,
    /// Name globs (`*`, `?`) of weights or nodes left alone.
    pub ignore: Vec<String>,
}

/// Splits an option list at `|` or `;`, dropping empty entries.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(['|', ';'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

impl WeightSelection {
    /// Reads `ops` and `ignore` of `pass`; an op outside `allowed` is an error naming it.
    pub fn from_options(
        pass: &str,
        o: &Options,
        allowed: &[&str],
    ) -> Result<WeightSelection, PassError> {
        let ops = split_list(o.get_str("ops")?);
        if let Some(op) = ops.iter().find(|op| !allowed.contains(&op.as_str())) {
            return Err(PassError::BadOptionValue {
                pass: pass.into(),
                option: "ops".into(),
                value: op.clone(),
                expected: format!("a list of {}", allowed.join("|")),
            });
        }
        Ok(WeightSelection {
            ops,
            ignore: split_list(o.get_str("ignore")?),
        })
    }

    /// True when `name` matches an `ignore` glob.
    pub fn ignored(&self, name: &str) -> bool {
        self.ignore.iter().any(|p| glob(p, name))
    }

    /// The selected weights in topological order of their first reader, each once:
    /// non-empty f32 constants (not graph inputs or outputs) read as the weight of a
    /// MatMul (rank 2), Gemm (rank 2), Conv (rank 3 or more) or Gather on axis 0
    /// (rank 2, the table), whose op type is in `ops` and whose name and reader's name
    /// match no `ignore` glob.
    pub fn targets(&self, g: &Graph) -> Result<Vec<WeightTarget>, PassError> {
        let mut out: Vec<WeightTarget> = Vec::new();
        for id in g.topo_order()? {
            let node = g.node(id);
            // (op, weight input slot, output-channel axis, reduction axis, rank; 0 = 3+).
            let (op, slot, out_axis, red_axis, rank) = match &node.op {
                Op::MatMul => ("MatMul", 1, 1, 0, 2),
                Op::Gemm { trans_b, .. } if trans_b.unwrap_or(0) != 0 => ("Gemm", 1, 0, 1, 2),
                Op::Gemm { .. } => ("Gemm", 1, 1, 0, 2),
                Op::Conv { .. } => ("Conv", 1, 0, 1, 0),
                Op::Gather { axis } if axis.unwrap_or(0) == 0 => ("Gather", 0, 0, 1, 2),
                _ => continue,
            };
            if !self.ops.iter().any(|o| o == op) || self.ignored(&node.name) {
                continue;
            }
            let Some(w) = node.input(slot) else { continue };
            let Some(t) = g.const_data(w) else { continue };
            let rank_ok = if rank == 0 {
                t.shape().len() >= 3
            } else {
                t.shape().len() == rank
            };
            if t.dtype() != DType::F32
                || !rank_ok
                || t.is_empty()
                || g.is_input(w)
                || g.is_output(w)
                || self.ignored(g.value(w).name())
                || out.iter().any(|t| t.value == w)
            {
                continue;
            }
            out.push(WeightTarget {
                value: w,
                node: id,
                op,
                out_axis,
                red_axis,
            });
        }
        Ok(out)
    }
}

/// Weight-error and size figures summed over the weights a pass changed.
#[derive(Clone, Debug, Default)]
pub struct WeightErrors {
    /// Elements of the changed weights.
    pub params: usize,
    /// Their bytes before.
    pub bytes_before: usize,
    /// Their bytes after.
    pub bytes_after: usize,
    err2: f64,
    norm2: f64,
    worst: f64,
}

impl WeightErrors {
    /// Adds one weight: its original values, its values as the pass left them (same
    /// length), and its size in bytes before and after.
    pub fn add(&mut self, original: &[f32], changed: &[f32], before: usize, after: usize) {
        let (mut e, mut n) = (0f64, 0f64);
        for (a, b) in original.iter().zip(changed) {
            e += f64::from(a - b).powi(2);
            n += f64::from(*a).powi(2);
        }
        self.err2 += e;
        self.norm2 += n;
        if n > 0.0 {
            self.worst = self.worst.max((e / n).sqrt());
        }
        self.params += original.len();
        self.bytes_before += before;
        self.bytes_after += after;
    }

    /// ‖W − Ŵ‖ / ‖W‖ over all added weights together.
    pub fn rel_error(&self) -> f64 {
        if self.norm2 > 0.0 {
            (self.err2 / self.norm2).sqrt()
        } else {
            0.0
        }
    }

    /// The largest per-weight relative error.
    pub fn worst(&self) -> f64 {
        self.worst
    }

    /// Records `weight_rel_error` and `weight_rel_error_max`.
    pub fn record_errors(&self, cx: &mut PassCx) {
        cx.stat("weight_rel_error", self.rel_error());
        cx.stat("weight_rel_error_max", self.worst());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_ir::types::{known_shape, ValueType};
    use cc_ir::Tensor;

    #[test]
    fn targets_follow_ops_ignore_and_transb() {
        let mut g = Graph::new("g");
        let x = g
            .add_value(
                "x",
                Some(ValueType::tensor(DType::F32, known_shape(&[1, 4]))),
            )
            .unwrap();
        let w1 = g
            .add_const("w1", Tensor::from_f32(vec![4, 4], vec![1.0; 16]).unwrap())
            .unwrap();
        let w2 = g
            .add_const("w2", Tensor::from_f32(vec![3, 4], vec![1.0; 12]).unwrap())
            .unwrap();
        let (h, y) = (
            g.add_value("h", None).unwrap(),
            g.add_value("y", None).unwrap(),
        );
        g.add_node("mm", Op::MatMul, vec![Some(x), Some(w1)], vec![Some(h)])
            .unwrap();
        let gemm = Op::Gemm {
            alpha: None,
            beta: None,
            trans_a: None,
            trans_b: Some(1),
        };
        g.add_node("gemm", gemm, vec![Some(h), Some(w2)], vec![Some(y)])
            .unwrap();
        g.set_inputs(vec![x]);
        g.set_outputs(vec![y]);
        let sel = |ops: &str, ignore: &str| WeightSelection {
            ops: split_list(ops),
            ignore: split_list(ignore),
        };
        let t = sel("MatMul|Gemm", "").targets(&g).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].value, t[0].out_axis, t[0].red_axis), (w1, 1, 0));
        assert_eq!(
            (t[1].value, t[1].op, t[1].out_axis, t[1].red_axis),
            (w2, "Gemm", 0, 1)
        );
        assert_eq!(sel("MatMul|Gemm", "w*").targets(&g).unwrap().len(), 0);
        assert_eq!(sel("Gemm", "").targets(&g).unwrap().len(), 1);
        assert_eq!(sel("Conv", "").targets(&g).unwrap().len(), 0);
    }

    #[test]
    fn weight_errors_sum_over_weights_and_keep_the_worst() {
        let mut e = WeightErrors::default();
        e.add(&[3.0, 4.0], &[3.0, 4.0], 8, 2);
        e.add(&[1.0, 0.0], &[0.0, 0.0], 8, 2);
        assert_eq!((e.params, e.bytes_before, e.bytes_after), (4, 16, 4));
        assert!((e.rel_error() - (1.0f64 / 26.0).sqrt()).abs() < 1e-12);
        assert_eq!(e.worst(), 1.0);
    }
}
