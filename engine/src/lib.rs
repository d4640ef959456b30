//! The tensor engine.
pub mod cpu;
