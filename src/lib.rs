//! Reverse-mode automatic differentiation at matrix level, on [ndarray].
//!
//! A [`Tape`] records tensor operations as they run. Every op registers its
//! vector-Jacobian product (VJP) rule as it runs: for `Y = X·W` the rule is `dX = G·Wᵀ`,
//! `dW = Xᵀ·G`; for `Y = σ(X)` it is `dX = G ∘ Y ∘ (1 − Y)`. [`Tape::backward`] walks the
//! tape from the newest entry to the oldest, hands each rule the gradient of its output,
//! and adds what the rule returns into the gradients of that entry's inputs, summing where
//! a value fans out. Gradients come back as ndarray arrays ([`Gradients`]).
//!
//! # A training step
//!
//! The 4-2-3 sigmoid network of the seeds, one step of gradient descent:
//!
//! ```
//! use ndarray::{array, Array2};
//! use tapegrad::Tape;
//!
//! let x = array![[5.1, 3.5, 1.4, 0.2], [6.3, 3.3, 6.0, 2.5]]; // 2 samples, 4 features
//! let y = array![[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]; // one-hot targets
//! let mut w1 = Array2::from_elem((4, 2), 0.1);
//! let mut b1 = Array2::zeros((1, 2));
//! let mut w2 = Array2::from_elem((2, 3), -0.1);
//! let mut b2 = Array2::zeros((1, 3));
//!
//! let grads = {
//!     let tape = Tape::new();
//!     let (x, y) = (tape.constant(&x), tape.constant(&y));
//!     let (w1_t, b1_t, w2_t, b2_t) = (tape.param(&w1), tape.param(&b1), tape.param(&w2), tape.param(&b2));
//!     let h = x.matmul(w1_t).add_row(b1_t).sigmoid();
//!     let out = h.matmul(w2_t).add_row(b2_t).sigmoid();
//!     let loss = out.mse_loss(y);
//!     tape.backward(loss).unwrap()
//! };
//! // The tape is gone; the gradients are plain arrays, found by the parameters themselves.
//! for p in [&mut w1, &mut b1, &mut w2, &mut b2] {
//!     let g = grads.wrt(p).unwrap();
//!     p.scaled_add(-0.5, g);
//! }
//! ```
//!
//! Parameters go on the tape borrowed (no copy); [`Gradients::wrt`] finds a parameter's
//! gradient from the array itself.
//!
//! # What the engine guarantees
//!
//! - Ops are recorded in creation order, which is a topological order: backward is one
//!   reverse loop, with no sort and no hash map ([`tape`](crate::Tape)).
//! - A value used several times receives the sum of all paths. A parameter is one leaf
//!   however often it goes on the tape: [`Tape::param`] on an array already on the tape
//!   (or on its transpose) returns the same leaf, so a layer applied twice or tied weights
//!   get the sum over every use, and [`Gradients::wrt`] finds it by the array.
//! - Nothing is skipped silently: [`Gradients::try_wrt`] and [`Gradients::try_get`] say
//!   why a tensor or array has no gradient ([`Missing`]), and an optimizer step with a
//!   parameter that has none is an error naming it, unless frozen on purpose.
//! - Leaves that need no gradient ([`Tape::constant`]) cost no backward work: rules skip
//!   them, and an op whose inputs need no gradient records no rule and saves nothing.
//! - Each rule saves only what it needs, without copying (the rule table in [`ops`]).
//!   Backward releases each saved value, each gradient slot and each rule as soon as it is
//!   consumed. A second backward on the same tape returns an error, unless the first
//!   passed [`BackwardOptions::retain_graph`].
//! - [`Tape::no_grad`] records without rules; [`Tensor::detach`] cuts the graph.
//! - Errors are values: every op that combines shapes has a `try_` form returning an
//!   [`Error`] that names the op, both shapes and the caller's line; the short form panics
//!   with that message and says so. NaN and infinities propagate; no op panics on them.
//!   A result whose size does not fit in memory's address space is `TooLarge`, one the
//!   system refuses is `OutOfMemory` (for every op whose result can be larger than its
//!   inputs); empty matrices, whatever their other dimension, cost nothing. A fuzz harness
//!   (`tests/fuzz/`) runs random programs over the whole API to keep it so.
//! - Derivatives of any order. Every rule exists in two forms: an array form that
//!   first-order backward runs (plain arrays, in place: the fast path the benchmarks
//!   measure) and a tensor form, the same formula in recorded ops, that [`Tape::grad`]
//!   runs. The gradients `grad` returns are tensors of the tape: put them in a loss and
//!   differentiate again (a gradient penalty), or differentiate them along a direction
//!   (a Hessian-vector product). [`functional`] has `vjp`, `jvp` (forward mode by two
//!   reverse passes), `hvp`, `jacobian` and `hessian`.
//! - Memory: buffers that a tape releases go to a per-thread [`pool`] that the next step's
//!   ops draw from, so the obvious loop (a new tape every step) faults no page in a steady
//!   step; [`Tape::remat`] recomputes a block's intermediates during backward instead of
//!   keeping them (gradient checkpointing), with bitwise the same gradients.
//! - Both cores: [`parallel::DataParallel`] runs shards of a batch on their own tapes in
//!   parallel and reduces their gradients in a fixed order (deterministic); [`Gradients`]
//!   can be added and scaled parameter by parameter.
//!
//! # Higher order
//!
//! ```
//! use ndarray::array;
//! use tapegrad::Tape;
//!
//! // f(x, w) = Σ tanh(x·w); a penalty on ‖∂f/∂x‖² trained through the recorded gradient
//! let (x, w) = (array![[0.5, -1.0]], array![[0.3], [0.8]]);
//! let tape = Tape::new();
//! let (xt, wt) = (tape.param(&x), tape.param(&w));
//! let f = xt.matmul(wt).tanh().sum();
//! let dfdx = tape.grad(f, &[xt]).unwrap()[0]; // a tensor: (1 − tanh²)·wᵀ
//! let penalty = dfdx.square().sum();
//! let grads = tape.backward(penalty).unwrap(); // differentiates through the gradient
//! assert_eq!(grads.wrt(&w).unwrap().dim(), (2, 1));
//! ```
//!
//! # Use it in your crate
//!
//! tapegrad re-exports the two crates its API speaks, [`ndarray`] (arrays in and out)
//! and [`rand`] (the seeded generators layers are initialised from), so a program needs
//! no version of its own that could differ from tapegrad's:
//!
//! ```
//! use tapegrad::ndarray::Array2;
//! use tapegrad::rand::rngs::StdRng;
//! use tapegrad::rand::{RngExt, SeedableRng}; // `RngExt` holds `random` in rand 0.10
//! use tapegrad::nn::{Init, Linear, Module};
//! use tapegrad::Tape;
//!
//! let mut rng = StdRng::seed_from_u64(1);
//! let layer = Linear::<f64>::new(2, 1, Init::Glorot, &mut rng);
//! let x: Array2<f64> = Array2::from_shape_fn((3, 2), |_| rng.random::<f64>());
//! let tape = Tape::new();
//! let y = layer.forward(tape.constant(&x)).unwrap();
//! assert_eq!(y.shape(), (3, 1));
//! ```
//!
//! In a debug build tapegrad and ndarray are compiled without optimisation, and a
//! training loop runs more than ten times slower. These lines in your `Cargo.toml`
//! optimise the dependencies alone, in every debug build:
//!
//! ```toml
//! [profile.dev.package."*"]
//! opt-level = 3
//! ```
//!
//! A layer of your own derives [`trait@nn::Parameters`] (its parameters by name, and the layers
//! [`nn::Module::set_training`] reaches) and implements [`nn::Module`] (its forward pass).
//!
//! # Feature flags
//!
//! - default: pure Rust. GEMM through ndarray's matrixmultiply; no system library.
//! - `derive` (default): `#[derive(Parameters)]` for layers of your own
//!   ([`trait@nn::Parameters`]), from the workspace's `tapegrad-derive` crate.
//! - `blas`: GEMM through BLAS (ndarray's `blas` feature). The final program chooses the
//!   provider (for example with `blas-src`), as ndarray asks of libraries.
//! - `linalg`: the linear-algebra ops (`inv`, `solve`, `solve_triangular`, `cho_solve`,
//!   `det`, `slogdet`, `logdet`, `cholesky`, `eigh`) on tensors of `LinalgFloat` (`f32`,
//!   `f64`), on LAPACK through the declarations of `lapack-sys`. Like `blas`, it links no
//!   LAPACK: the final program chooses the provider (`openblas` does). Without it these ops do not exist; `trace`,
//!   `diag`, `diag_embed`, `tril` and `triu` are in every build.
//! - `openblas`: `blas` and `linalg` plus the system OpenBLAS (which has LAPACK) through
//!   `openblas-src` (`system`), for end programs, the examples, the benches and CI. Needs
//!   `libopenblas-dev` (Debian, Ubuntu) or `openblas` (Homebrew); `build.rs` stops with
//!   that message when it is missing.
//! - `mpi`: data parallelism across processes and machines on the system MPI
//!   (`parallel::mpi`, through the `mpi` crate). Needs the MPI development files and
//!   libclang: `libopenmpi-dev openmpi-bin libclang-dev pkg-config` on Debian and Ubuntu.
//!
//! # Module map, bottom to top
//!
//! | layer | where | holds |
//! |-------|-------|-------|
//! | kernels | `kernels/` | GEMM with transpose flags and beta = 1, broadcast / un-broadcast |
//! | tape | [`Tape`], [`Tensor`], [`Gradients`] | nodes in creation order; first-order backward on arrays; backward recorded on the tape ([`Tape::grad`]) |
//! | ops | [`ops`] | one file per family, each forward beside its VJP rule; the rule table |
//! | memory | [`pool`], [`Tape::remat`] | recycled buffers; gradient checkpointing |
//! | nn, optim | [`nn`], [`optim`] | layers composed from ops, parameters by name; SGD, Adam, AdamW, L-BFGS |
//! | parallel | [`parallel`] | data parallelism across cores (rayon) and across processes and machines (MPI, feature `mpi`) |
//! | extension | [`custom`] | ops of your own, with their VJP on arrays and in tensor ops |
//! | inspection | [`inspect`] | explain mode, the graph as DOT and SVG, anomaly detection, the per-op profile |
//! | tools | [`check`], [`functional`], [`io`] | gradient checking (first and second order); derivatives of functions; safetensors checkpoints |
//!
//! [ndarray]: https://docs.rs/ndarray

#![warn(missing_docs)]
#![doc(test(attr(deny(warnings))))]

// Links the system OpenBLAS (its build script emits the `-lopenblas` flag).
#[cfg(feature = "openblas")]
extern crate openblas_src as _;

mod backward;
pub mod check;
pub mod custom;
mod error;
mod float;
pub mod functional;
mod grad;
mod gradients;
mod higher;
pub mod inspect;
pub mod io;
mod kernels;
#[cfg(feature = "linalg")]
mod linalg_float;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod parallel;
pub mod pool;
mod rule;
mod tape;
mod tensor;

/// Switches for the benches: which instantiation of the elementwise kernels runs, and the
/// kernels over slices by name. Not part of the API (no semver promise).
#[doc(hidden)]
pub mod bench_kernels {
    pub use crate::kernels::vector::{Path, has_avx2, path, set_path};

    /// The kernels by name, for the benches: `exp`, `ln`, `tanh`, `sigmoid`, `softplus`,
    /// `erf`, `gelu`, `gelu_grad`; `y[i] = f(x[i])` on the current [`path`].
    ///
    /// # Panics
    ///
    /// On another name, or slices of different lengths.
    pub fn map<F: crate::Float>(name: &str, x: &[F], y: &mut [F]) {
        use crate::kernels::vector::{self as v, map};
        match name {
            "exp" => map(v::Exp, x, y),
            "ln" => map(v::Ln, x, y),
            "tanh" => map(v::Tanh, x, y),
            "sigmoid" => map(v::Sigmoid, x, y),
            "softplus" => map(v::Softplus, x, y),
            "erf" => map(v::Erf, x, y),
            "gelu" => map(v::Gelu, x, y),
            "gelu_grad" => map(v::GeluGrad, x, y),
            other => panic!("no kernel {other}"),
        }
    }

    /// `C = A·B` through the unrolled loops tapegrad uses for tiny products (`small`
    /// true) or through ndarray's product (BLAS or matrixmultiply): for the benches that
    /// measure one against the other.
    ///
    /// # Panics
    ///
    /// If the shapes disagree, or `small` is asked of a product the loops do not take
    /// (two of m, k, n at most 4, n among them, and `m·n·k` ≤ 16,384).
    pub fn gemm<F: crate::Float>(
        small: bool,
        a: ndarray::ArrayView2<'_, F>,
        b: ndarray::ArrayView2<'_, F>,
        c: &mut ndarray::Array2<F>,
    ) {
        if small {
            crate::kernels::small::gemm(a, b, false, c.view_mut());
        } else {
            ndarray::linalg::general_mat_mul(F::one(), &a, &b, F::zero(), c);
        }
    }
}

/// The `ndarray` tapegrad is built on (0.17): arrays go in and gradients come out as its
/// `Array2`. Use it through this path so that the versions cannot differ.
pub use ndarray;
/// The `rand` tapegrad is built on (0.10): layers draw their initial weights from its
/// generators ([`nn::Linear::new`]). Use it through this path so that the versions cannot
/// differ.
pub use rand;

pub use backward::BackwardOptions;
pub use error::{AnomalySite, Error, ErrorKind, InLayer, NonFinite, Result};
pub use float::Float;
pub use functional::Inputs;
pub use gradients::{Gradients, Missing};
#[cfg(feature = "linalg")]
pub use ops::LinalgFloat;
pub use tape::{LeafData, Tape, TapeStats};
pub use tensor::Tensor;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
