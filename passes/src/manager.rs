//! The pass manager: runs a pipeline over a graph, verifying, timing and reporting.

use crate::calibration::Calibration;
use crate::error::PassError;
use crate::pass::{Pass, PassCx};
use crate::pipeline::{Pipeline, PipelineEntry};
use crate::report::{PassRecord, Report};
use crate::stats::GraphStats;
use cc_ir::{Executor, Graph};
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

/// After which passes to print the IR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrintAfter {
    /// After every pass.
    All,
    /// After each run of the pass with this name.
    Pass(String),
}

impl PrintAfter {
    fn matches(&self, name: &str) -> bool {
        match self {
            PrintAfter::All => true,
            PrintAfter::Pass(p) => p == name,
        }
    }
}

/// How the manager runs a pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagerOptions {
    /// Run the `canonicalize` pass before the pipeline (default true).
    pub canonicalize: bool,
    /// Run the verifier after each pass.
    pub verify_each: bool,
    /// Print the IR after these passes.
    pub print_ir_after: Option<PrintAfter>,
    /// Seed handed to every pass.
    pub seed: u64,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        ManagerOptions {
            canonicalize: true,
            verify_each: false,
            print_ir_after: None,
            seed: 0,
        }
    }
}

struct Slot {
    name: String,
    canonical: String,
    pass: Box<dyn Pass>,
}

/// Runs passes in order and reports on each.
pub struct PassManager {
    slots: Vec<Slot>,
    opts: ManagerOptions,
    sink: Option<Box<dyn Write>>,
    dumps: Vec<(String, String)>,
    executor: Option<Arc<dyn Executor>>,
    calibration: Option<Arc<Calibration>>,
}

impl PassManager {
    /// A manager for `pipeline` (preceded by `canonicalize` when the options ask for it).
    pub fn new(pipeline: &Pipeline, opts: ManagerOptions) -> Result<PassManager, PassError> {
        let mut entries: Vec<PipelineEntry> = Vec::new();
        if opts.canonicalize {
            entries.push(PipelineEntry::new("canonicalize")?);
        }
        entries.extend(pipeline.entries.iter().cloned());
        let slots = entries
            .iter()
            .map(|e| {
                Ok(Slot {
                    name: e.info.name.to_string(),
                    canonical: e.to_string(),
                    pass: e.create()?,
                })
            })
            .collect::<Result<_, PassError>>()?;
        Ok(PassManager {
            slots,
            opts,
            sink: None,
            dumps: Vec::new(),
            executor: None,
            calibration: None,
        })
    }

    /// Writes IR dumps to `sink` instead of collecting them.
    pub fn with_ir_sink(mut self, sink: Box<dyn Write>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Gives passes an executor to run the model with (calibration, error measurement).
    pub fn with_executor(mut self, executor: Arc<dyn Executor>) -> Self {
        self.executor = Some(executor);
        self
    }

    /// Gives passes calibration data (`--calib`) for activation-aware decisions.
    pub fn with_calibration(mut self, calibration: Arc<Calibration>) -> Self {
        self.calibration = Some(calibration);
        self
    }

    /// The IR dumps collected so far as (pass canonical form, printed graph).
    pub fn ir_dumps(&self) -> &[(String, String)] {
        &self.dumps
    }

    /// The canonical text of everything that runs.
    pub fn pipeline_text(&self) -> String {
        self.slots
            .iter()
            .map(|s| s.canonical.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Runs every pass over `g`.
    pub fn run(&mut self, g: &mut Graph) -> Result<Report, PassError> {
        let mut report = Report {
            pipeline: self.pipeline_text(),
            before: GraphStats::of(g),
            ..Default::default()
        };
        let mut stats = report.before;
        for slot in &mut self.slots {
            let mut cx = PassCx::new(self.opts.seed)
                .with_executor(self.executor.clone())
                .with_calibration(self.calibration.clone());
            let t0 = Instant::now();
            let changed = slot.pass.run(g, &mut cx).map_err(|e| PassError::InPass {
                pass: slot.canonical.clone(),
                source: Box::new(e),
            })?;
            let time_ms = t0.elapsed().as_secs_f64() * 1000.0;
            if changed.is_changed() {
                // Keep sparsity annotations true to the weights the pass left.
                cc_ir::sparsity::refresh(g);
            }
            if self.opts.verify_each {
                cc_ir::verify::verify(g).map_err(|source| PassError::Verify {
                    pass: slot.canonical.clone(),
                    source,
                })?;
            }
            let after = GraphStats::of(g);
            report.passes.push(PassRecord {
                name: slot.name.clone(),
                canonical: slot.canonical.clone(),
                changed: changed.is_changed(),
                time_ms,
                before: stats,
                after,
                stats: cx.take_stats(),
            });
            stats = after;
            if self
                .opts
                .print_ir_after
                .as_ref()
                .is_some_and(|p| p.matches(&slot.name))
            {
                let text = cc_ir::printer::print_graph(g);
                match &mut self.sink {
                    Some(w) => {
                        writeln!(w, "// IR after {}\n{text}", slot.canonical)
                            .map_err(|e| cc_ir::Error::io("IR dump sink", e))?;
                    }
                    None => self.dumps.push((slot.canonical.clone(), text)),
                }
            }
        }
        report.after = stats;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pass::Changed;
    use cc_ir::op::UnaryOp;
    use cc_ir::{Op, Tensor};
    use std::sync::{Arc, Mutex};

    /// x -> Neg(const) -> Identity -> Relu -> y, plus a dead node.
    fn graph() -> Graph {
        let mut g = Graph::new("g");
        let x = g.add_value("x", None).unwrap();
        let c = g
            .add_const("c", Tensor::from_f32(vec![2], vec![1.0, -2.0]).unwrap())
            .unwrap();
        let n = g.add_value("n", None).unwrap();
        let i = g.add_value("i", None).unwrap();
        let y = g.add_value("y", None).unwrap();
        let d = g.add_value("d", None).unwrap();
        g.add_node("neg", Op::Unary(UnaryOp::Neg), vec![Some(c)], vec![Some(n)])
            .unwrap();
        g.add_node("id", Op::Identity, vec![Some(x)], vec![Some(i)])
            .unwrap();
        g.add_node(
            "add",
            Op::Binary(cc_ir::op::BinaryOp::Add),
            vec![Some(i), Some(n)],
            vec![Some(y)],
        )
        .unwrap();
        g.add_node(
            "dead",
            Op::Unary(UnaryOp::Relu),
            vec![Some(x)],
            vec![Some(d)],
        )
        .unwrap();
        g.set_inputs(vec![x]);
        g.set_outputs(vec![y]);
        g
    }

    #[test]
    fn canonicalize_runs_first_and_report_records_figures() {
        let mut g = graph();
        let mut m = PassManager::new(
            &Pipeline::parse("dce").unwrap(),
            ManagerOptions {
                verify_each: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(m.pipeline_text().starts_with("canonicalize"));
        let r = m.run(&mut g).unwrap();
        assert_eq!(r.passes.len(), 2);
        assert_eq!(r.passes[0].name, "canonicalize");
        assert_eq!(r.before.nodes, 4);
        assert_eq!(g.node_count(), 1, "only the Add is left");
        assert_eq!(r.passes[0].after.nodes, 1);
        assert!(r.passes[0].changed);
        assert!(!r.passes[1].changed);
        assert_eq!(r.after, GraphStats::of(&g));
        assert!(r.passes.iter().all(|p| p.time_ms >= 0.0));
        assert!(r.to_table().contains("4->1"));
    }

    #[test]
    fn print_after_collects_or_writes() {
        let mut g = graph();
        let opts = ManagerOptions {
            canonicalize: false,
            print_ir_after: Some(PrintAfter::Pass("remove-identity".into())),
            ..Default::default()
        };
        let p = Pipeline::parse("remove-identity,dce").unwrap();
        let mut m = PassManager::new(&p, opts.clone()).unwrap();
        m.run(&mut g).unwrap();
        assert_eq!(m.ir_dumps().len(), 1);
        assert_eq!(m.ir_dumps()[0].0, "remove-identity");
        assert!(!m.ir_dumps()[0].1.contains("Identity"));

        #[derive(Clone, Default)]
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Shared::default();
        let opts = ManagerOptions {
            print_ir_after: Some(PrintAfter::All),
            ..opts
        };
        let mut m = PassManager::new(&p, opts)
            .unwrap()
            .with_ir_sink(Box::new(buf.clone()));
        m.run(&mut graph()).unwrap();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("// IR after remove-identity"));
        assert!(text.contains("// IR after dce"));
        assert!(m.ir_dumps().is_empty());
    }

    struct Breaker;
    impl Pass for Breaker {
        fn name(&self) -> &str {
            "breaker"
        }
        fn run(&mut self, g: &mut Graph, _: &mut PassCx) -> Result<Changed, PassError> {
            // Make the first node read its own output: a cycle.
            let n = g.node_ids()[0];
            let out = g.node(n).output(0);
            g.set_input(n, 0, out);
            Ok(Changed::YES)
        }
    }

    #[test]
    fn verify_failure_names_the_pass() {
        let mut m = PassManager::new(
            &Pipeline::default(),
            ManagerOptions {
                canonicalize: false,
                verify_each: true,
                ..Default::default()
            },
        )
        .unwrap();
        m.slots.push(Slot {
            name: "breaker".into(),
            canonical: "breaker".into(),
            pass: Box::new(Breaker),
        });
        let e = m.run(&mut graph()).unwrap_err();
        assert!(matches!(e, PassError::Verify { ref pass, .. } if pass == "breaker"));
        assert!(e
            .to_string()
            .starts_with("verification failed after pass breaker"));
    }
}
