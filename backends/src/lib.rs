//! cc-backends.
