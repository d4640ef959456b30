//! Every engine op on a GPU tensor against the same op on the host: forward values and the gradients
//! of each input, through the engine's own autograd on both devices. Inputs are random, with shapes
//! that are no tile multiples, plus views (transposes, narrows, broadcasts) where the op takes them.
//! Tolerance: 1e-5 relative to max(1, |value|) unless a test states otherwise.
//! Without a GPU each test prints why and returns; REQUIRE_GPU=1 makes that a failure.
#![cfg(feature = "cuda")]

mod autocast;
mod common;
mod elementwise;
mod layers;
mod matmul;
mod models;
mod reduce;
mod select;
