//! The [`Pass`] trait and the context a pass runs in.

use crate::calibration::Calibration;
use crate::error::PassError;
use cc_ir::{Executor, Graph};
use std::fmt;
use std::sync::Arc;

/// Whether a pass changed the graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changed(pub bool);

impl Changed {
    /// The graph changed.
    pub const YES: Changed = Changed(true);
    /// The graph is unchanged.
    pub const NO: Changed = Changed(false);
    /// True when the graph changed.
    pub fn is_changed(self) -> bool {
        self.0
    }
}

impl std::ops::BitOr for Changed {
    type Output = Changed;
    fn bitor(self, rhs: Changed) -> Changed {
        Changed(self.0 || rhs.0)
    }
}

impl std::ops::BitOrAssign for Changed {
    fn bitor_assign(&mut self, rhs: Changed) {
        self.0 |= rhs.0;
    }
}

/// One statistic a pass reports.
#[derive(Clone, Debug, PartialEq)]
pub enum Stat {
    /// A count or other integer.
    Int(i64),
    /// A measurement.
    Float(f64),
    /// Free text.
    Text(String),
}

impl fmt::Display for Stat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stat::Int(v) => write!(f, "{v}"),
            Stat::Float(v) => write!(f, "{v}"),
            Stat::Text(s) => f.write_str(s),
        }
    }
}

macro_rules! stat_from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Stat {
            fn from(v: $t) -> Stat {
                Stat::Int(i64::try_from(v).unwrap_or(i64::MAX))
            }
        }
    )*};
}
stat_from_int!(i32, i64, u32, u64, usize);

impl From<f64> for Stat {
    fn from(v: f64) -> Stat {
        Stat::Float(v)
    }
}
impl From<f32> for Stat {
    fn from(v: f32) -> Stat {
        Stat::Float(f64::from(v))
    }
}
impl From<&str> for Stat {
    fn from(v: &str) -> Stat {
        Stat::Text(v.to_string())
    }
}
impl From<String> for Stat {
    fn from(v: String) -> Stat {
        Stat::Text(v)
    }
}

/// What a pass sees besides the graph: its statistics sink and the pipeline's seed.
#[derive(Clone, Default)]
pub struct PassCx {
    seed: u64,
    stats: Vec<(String, Stat)>,
    executor: Option<Arc<dyn Executor>>,
    calibration: Option<Arc<Calibration>>,
}

impl fmt::Debug for PassCx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassCx")
            .field("seed", &self.seed)
            .field("stats", &self.stats)
            .field("executor", &self.executor.is_some())
            .field("calibration", &self.calibration.as_ref().map(|c| &c.source))
            .finish()
    }
}

impl PassCx {
    /// A context with this seed, no statistics and no executor.
    pub fn new(seed: u64) -> Self {
        PassCx {
            seed,
            stats: Vec::new(),
            executor: None,
            calibration: None,
        }
    }
    /// The same context with an executor that passes may use to run the model
    /// (calibration, error measurement).
    pub fn with_executor(mut self, executor: Option<Arc<dyn Executor>>) -> Self {
        self.executor = executor;
        self
    }
    /// The executor, for passes that need to run the model.
    pub fn executor(&self) -> Result<&dyn Executor, PassError> {
        self.executor.as_deref().ok_or_else(|| {
            PassError::Ir(cc_ir::Error::unsupported(
                "this pass needs to run the model but no executor was provided",
            ))
        })
    }
    /// The same context with calibration data (`--calib`) for data-aware passes.
    pub fn with_calibration(mut self, calibration: Option<Arc<Calibration>>) -> Self {
        self.calibration = calibration;
        self
    }
    /// The calibration data, if any was given.
    pub fn calibration(&self) -> Option<&Calibration> {
        self.calibration.as_deref()
    }
    /// A fresh context for a sub-pass: same seed, executor and calibration data, no
    /// statistics.
    pub fn child(&self) -> PassCx {
        PassCx::new(self.seed)
            .with_executor(self.executor.clone())
            .with_calibration(self.calibration.clone())
    }
    /// The seed for passes that make random choices.
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// Records a statistic; a key recorded again keeps its position and takes the new value.
    pub fn stat(&mut self, key: &str, value: impl Into<Stat>) {
        let value = value.into();
        match self.stats.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.stats.push((key.to_string(), value)),
        }
    }
    /// Adds `delta` to an integer statistic (created at 0).
    pub fn add(&mut self, key: &str, delta: i64) {
        match self.stats.iter_mut().find(|(k, _)| k == key) {
            Some((_, Stat::Int(v))) => *v += delta,
            Some((_, v)) => *v = Stat::Int(delta),
            None => self.stats.push((key.to_string(), Stat::Int(delta))),
        }
    }
    /// The statistics recorded so far, in recording order.
    pub fn stats(&self) -> &[(String, Stat)] {
        &self.stats
    }
    /// Takes the statistics out, leaving none.
    pub fn take_stats(&mut self) -> Vec<(String, Stat)> {
        std::mem::take(&mut self.stats)
    }
}

/// A graph transformation.
pub trait Pass {
    /// The registered name of the pass.
    fn name(&self) -> &str;
    /// Transforms `g`, recording statistics in `cx`.
    fn run(&mut self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError>;
}

#[cfg(test)]
mod tests {

    struct Echo;
    impl Executor for Echo {
        fn run(&self, _g: &Graph, inputs: &[cc_ir::Tensor]) -> cc_ir::Result<Vec<cc_ir::Tensor>> {
            Ok(inputs.to_vec())
        }
    }

    #[test]
    fn executor_is_optional_and_reaches_child_contexts() {
        let cx = PassCx::new(7);
        let err = cx
            .executor()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("no executor"), "{err}");
        let cx = PassCx::new(7).with_executor(Some(Arc::new(Echo)));
        assert!(cx.calibration().is_none());
        let cx = cx.with_calibration(Some(Arc::new(Calibration::new("c.pb", vec![]))));
        let child = cx.child();
        assert_eq!(child.seed(), 7);
        assert_eq!(child.calibration().map(|c| c.source.as_str()), Some("c.pb"));
        let t = cc_ir::Tensor::scalar_f32(2.0);
        let out = child
            .executor()
            .unwrap()
            .run(&Graph::new("g"), std::slice::from_ref(&t))
            .unwrap();
        assert_eq!(out, vec![t]);
    }

    use super::*;

    #[test]
    fn stats_keep_order_and_accumulate() {
        let mut cx = PassCx::new(7);
        cx.stat("b", 1usize);
        cx.stat("a", 2.5);
        cx.add("b", 3);
        cx.add("c", 1);
        cx.stat("a", "x");
        let keys: Vec<_> = cx.stats().iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(keys, vec!["b=4", "a=x", "c=1"]);
        assert_eq!(cx.seed(), 7);
        assert_eq!(cx.take_stats().len(), 3);
        assert!(cx.stats().is_empty());
    }

    #[test]
    fn changed_combines() {
        assert!((Changed::NO | Changed::YES).is_changed());
        let mut c = Changed::NO;
        c |= Changed::NO;
        assert!(!c.is_changed());
    }
}
