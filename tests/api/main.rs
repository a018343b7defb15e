//! The library's tests of its public API, one module per subject, in one test binary
//! (one link and one copy of the library's generic code instead of thirteen: a fresh
//! `cargo test` compiles in far less time; `tests/reliability.rs`, whose panic-hook test
//! needs a binary of its own, stays apart). `cargo test --test api tape::` runs one
//! module's tests.

#[path = "../common/mod.rs"]
mod common;

mod closures;
mod custom;
mod errors;
mod higher;
mod inspect;
mod layers;
mod model_derivatives;
mod nn;
mod optim;
mod parallel;
mod remat;
mod tape;
mod torch_checkpoint;
