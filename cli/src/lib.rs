//! The logic behind `cc-compile run` and `cc-compile eval`, kept out of the binary so
//! tests and `cc-bench` use it too: [`run`] loads and runs a model on the CPU executor,
//! [`eval`] compares an original and a compressed model on a data folder, [`metrics`]
//! holds the figures (errors, cosine, top-1, accuracy, perplexity).

pub mod eval;
pub mod groups;
pub mod metrics;
pub mod run;
