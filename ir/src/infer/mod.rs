//! Shape and type inference for typed ops.
