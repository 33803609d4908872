//! `canonicalize`: runs `fold`, `fold-batchnorm`, `remove-identity` and `dce` until
//! nothing changes (at most `max-iterations` rounds). Statistics are summed per
//! sub-pass as `<pass>.<stat>`, plus `iterations`.

use crate::dce::Dce;
use crate::error::PassError;
use crate::fold::Fold;
use crate::fold_batchnorm::FoldBatchNorm;
use crate::options::{OptionKind, OptionSpec, Options};
use crate::pass::{Changed, Pass, PassCx, Stat};
use crate::registry::PassInfo;
use crate::remove_identity::RemoveIdentity;
use cc_ir::Graph;

const OPTIONS: &[OptionSpec] = &[OptionSpec {
    name: "max-iterations",
    kind: OptionKind::Int {
        min: Some(1),
        max: Some(1000),
    },
    default: "8",
    help: "upper bound on rounds of the four sub-passes",
}];

inventory::submit! {
    PassInfo {
        name: "canonicalize",
        summary: "fold, fold-batchnorm, remove-identity and dce to a fixed point (exact)",
        options: OPTIONS,
        create: |o| Ok(Box::new(Canonicalize::from_options(o)?)),
    }
}

/// The canonicalization pass.
pub struct Canonicalize {
    max_iterations: usize,
    passes: Vec<Box<dyn Pass>>,
}

impl Canonicalize {
    /// The pass with parsed options.
    pub fn from_options(o: &Options) -> Result<Canonicalize, PassError> {
        let fold_info = crate::registry::lookup("fold")?;
        let fold = Fold::from_options(&fold_info.parse_options(&[])?)?;
        Ok(Canonicalize {
            max_iterations: usize::try_from(o.get_int("max-iterations")?).unwrap_or(1),
            passes: vec![
                Box::new(fold),
                Box::new(FoldBatchNorm),
                Box::new(RemoveIdentity),
                Box::new(Dce),
            ],
        })
    }
}

impl Pass for Canonicalize {
    fn name(&self) -> &str {
        "canonicalize"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let mut changed = Changed::NO;
        let mut rounds = 0usize;
        for _ in 0..self.max_iterations {
            rounds += 1;
            let mut round = Changed::NO;
            for p in &mut self.passes {
                let mut sub = cx.child();
                round |= p.run(g, &mut sub)?;
                for (k, v) in sub.take_stats() {
                    let key = format!("{}.{k}", p.name());
                    match v {
                        Stat::Int(d) => cx.add(&key, d),
                        other => cx.stat(&key, other),
                    }
                }
            }
            changed |= round;
            if !round.is_changed() {
                break;
            }
        }
        cx.stat("iterations", rounds);
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_ir::op::{BinaryOp, ConvAttrs};
    use cc_ir::{Op, Tensor};

    /// x -> Conv(W) -> BN(params computed from constants by Add) -> Identity -> y
    #[test]
    fn reaches_fixed_point_across_sub_passes() {
        let mut g = Graph::new("g");
        let x = g.add_value("x", None).unwrap();
        let w = g
            .add_const(
                "w",
                Tensor::from_f32(vec![2, 1, 1, 1], vec![1.0, 2.0]).unwrap(),
            )
            .unwrap();
        let one = g
            .add_const("one", Tensor::from_f32(vec![2], vec![1.0, 1.0]).unwrap())
            .unwrap();
        let zero = g
            .add_const("zero", Tensor::from_f32(vec![2], vec![0.0, 0.0]).unwrap())
            .unwrap();
        let two = g.add_value("two", None).unwrap();
        let z = g.add_value("z", None).unwrap();
        let b = g.add_value("b", None).unwrap();
        let y = g.add_value("y", None).unwrap();
        // BN scale = one + one (folds to a constant first).
        g.add_node(
            "add",
            Op::Binary(BinaryOp::Add),
            vec![Some(one), Some(one)],
            vec![Some(two)],
        )
        .unwrap();
        g.add_node(
            "conv",
            Op::Conv(ConvAttrs::default()),
            vec![Some(x), Some(w)],
            vec![Some(z)],
        )
        .unwrap();
        g.add_node(
            "bn",
            Op::BatchNormalization {
                epsilon: Some(0.0),
                momentum: None,
                training_mode: None,
            },
            vec![Some(z), Some(two), Some(zero), Some(zero), Some(one)],
            vec![Some(b)],
        )
        .unwrap();
        g.add_node("id", Op::Identity, vec![Some(b)], vec![Some(y)])
            .unwrap();
        g.set_inputs(vec![x]);
        g.set_outputs(vec![y]);
        let mut p = crate::registry::find("canonicalize")
            .unwrap()
            .create_default()
            .unwrap();
        let mut cx = PassCx::new(0);
        assert!(p.run(&mut g, &mut cx).unwrap().is_changed());
        cc_ir::verify::verify(&g).unwrap();
        assert_eq!(g.node_count(), 1);
        let conv = g.node_ids()[0];
        assert_eq!(g.node(conv).output(0), Some(y));
        let w2 = g.const_data(g.node(conv).input(1).unwrap()).unwrap();
        assert_eq!(w2.to_f32().unwrap(), vec![2.0, 4.0]);
        let stats: Vec<String> = cx.stats().iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert!(stats.contains(&"fold.folded=1".to_string()), "{stats:?}");
        assert!(
            stats.contains(&"fold-batchnorm.folded=1".to_string()),
            "{stats:?}"
        );
        assert!(
            stats.contains(&"remove-identity.removed=1".to_string()),
            "{stats:?}"
        );
        assert_eq!(stats.last().unwrap(), "iterations=2");
        // Running again changes nothing.
        let mut cx = PassCx::new(0);
        assert!(!p.run(&mut g, &mut cx).unwrap().is_changed());
    }
}
