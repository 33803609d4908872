//! The CPU backend. At present: [`eval`], a reference evaluator for ops on constant
//! inputs (used by constant folding).

pub mod eval;
