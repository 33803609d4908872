//! cc-passes.
