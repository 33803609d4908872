//! The canonical, deterministic text printer.
