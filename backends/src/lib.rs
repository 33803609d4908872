//! cc-backends: code generators and executors for the cc-compile IR.
//!
//! For now this holds the constant evaluator ([`cpu::eval`]) the canonicalization passes
//! use to fold constant and shape subgraphs.

pub mod cpu;
