//! The table of op cases shared by the gradient checks and the non-finite input tests:
//! every public op, as a function of its inputs, with input shapes and value domains.

#![allow(dead_code)]

use ndarray::{Array2, Axis};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use tapegrad::Tensor;
use tapegrad::ops::Span;

pub type OpFn = for<'t> fn(&[Tensor<'t, f64>]) -> Tensor<'t, f64>;

/// Where an input's values are drawn from (JAX's `rng_factory`).
#[derive(Clone, Copy, Debug)]
pub enum Domain {
    /// Standard normal.
    Normal,
    /// Uniform in [0.5, 2]: log, sqrt, denominators, negative powers.
    Positive,
    /// |x| uniform in [0.2, 2], random sign: away from relu's kink.
    AwayFromZero,
    /// Positive rows summing to 1: cross-entropy targets.
    Probabilities,
}

/// The input shapes of a case, from a base shape (r, c).
pub type Shapes = fn(usize, usize) -> Vec<(usize, usize)>;

pub struct Case {
    pub op: &'static str,
    pub f: OpFn,
    pub shapes: Shapes,
    pub domains: &'static [Domain],
}

const N: Domain = Domain::Normal;

fn one(r: usize, c: usize) -> Vec<(usize, usize)> {
    vec![(r, c)]
}
fn same(r: usize, c: usize) -> Vec<(usize, usize)> {
    vec![(r, c), (r, c)]
}
fn row(r: usize, c: usize) -> Vec<(usize, usize)> {
    vec![(r, c), (1, c)]
}
fn col(r: usize, c: usize) -> Vec<(usize, usize)> {
    vec![(r, c), (r, 1)]
}
fn scalar_rhs(r: usize, c: usize) -> Vec<(usize, usize)> {
    vec![(r, c), (1, 1)]
}
fn row_lhs(r: usize, c: usize) -> Vec<(usize, usize)> {
    vec![(1, c), (r, c)]
}
fn outer(r: usize, c: usize) -> Vec<(usize, usize)> {
    vec![(r, 1), (1, c)]
}
fn matmul(r: usize, c: usize) -> Vec<(usize, usize)> {
    vec![(r, c), (c, r + 2)]
}
fn linear(r: usize, c: usize) -> Vec<(usize, usize)> {
    vec![(r, c), (c, r + 2), (1, r + 2)]
}
fn norm(r: usize, c: usize) -> Vec<(usize, usize)> {
    vec![(r, c), (1, c), (1, c)]
}
fn matmul_tn(r: usize, c: usize) -> Vec<(usize, usize)> {
    vec![(c, r), (c, r + 1)]
}

/// A fixed mask: true where the row and column indices add up to an even number.
fn checkerboard((r, c): (usize, usize)) -> Array2<bool> {
    Array2::from_shape_fn((r, c), |(i, j)| (i + j) % 2 == 0)
}

fn indices(r: usize, c: usize) -> Vec<usize> {
    (0..r).map(|i| (3 * i + 1) % c).collect()
}

#[rustfmt::skip]
pub fn cases() -> Vec<Case> {
    use Domain::*;
    vec![
        Case { op: "matmul", f: |x| x[0].matmul(x[1]), shapes: matmul, domains: &[N, N] },
        Case { op: "matmul", f: |x| x[0].t().matmul(x[1]), shapes: matmul_tn, domains: &[N, N] },
        Case { op: "matmul", f: |x| x[0].matmul(x[0].t()), shapes: one, domains: &[N] },
        Case { op: "linear", f: |x| x[0].linear(x[1], x[2]), shapes: linear, domains: &[N, N, N] },
        Case { op: "add", f: |x| x[0].add(x[1]), shapes: same, domains: &[N, N] },
        Case { op: "add", f: |x| x[0].add(x[1]), shapes: row_lhs, domains: &[N, N] },
        Case { op: "add", f: |x| x[0].add(x[1]), shapes: scalar_rhs, domains: &[N, N] },
        Case { op: "add", f: |x| x[0].add(x[1]), shapes: outer, domains: &[N, N] },
        Case { op: "sub", f: |x| x[0].sub(x[1]), shapes: same, domains: &[N, N] },
        Case { op: "sub", f: |x| x[0].sub(x[1]), shapes: col, domains: &[N, N] },
        Case { op: "mul", f: |x| x[0].mul(x[1]), shapes: same, domains: &[N, N] },
        Case { op: "mul", f: |x| x[0].mul(x[1]), shapes: row, domains: &[N, N] },
        Case { op: "mul", f: |x| x[0].mul(x[0]), shapes: one, domains: &[N] },
        Case { op: "div", f: |x| x[0].div(x[1]), shapes: same, domains: &[N, Positive] },
        Case { op: "div", f: |x| x[0].div(x[1]), shapes: col, domains: &[N, Positive] },
        Case { op: "neg", f: |x| x[0].neg(), shapes: one, domains: &[N] },
        Case { op: "add_scalar", f: |x| x[0].add_scalar(0.75), shapes: one, domains: &[N] },
        Case { op: "mul_scalar", f: |x| x[0].mul_scalar(-1.25), shapes: one, domains: &[N] },
        Case { op: "add_row", f: |x| x[0].add_row(x[1]), shapes: row, domains: &[N, N] },
        Case { op: "add_col", f: |x| x[0].add_col(x[1]), shapes: col, domains: &[N, N] },
        Case { op: "sum", f: |x| x[0].sum(), shapes: one, domains: &[N] },
        Case { op: "mean", f: |x| x[0].mean(), shapes: one, domains: &[N] },
        Case { op: "sum_axis", f: |x| x[0].sum_axis(Axis(0)), shapes: one, domains: &[N] },
        Case { op: "sum_axis", f: |x| x[0].sum_axis(Axis(1)), shapes: one, domains: &[N] },
        Case { op: "mean_axis", f: |x| x[0].mean_axis(Axis(0)), shapes: one, domains: &[N] },
        Case { op: "mean_axis", f: |x| x[0].mean_axis(Axis(1)), shapes: one, domains: &[N] },
        Case { op: "t", f: |x| x[0].t(), shapes: one, domains: &[N] },
        Case { op: "t", f: |x| x[0].t().t().add(x[0]).t(), shapes: one, domains: &[N] },
        Case { op: "sigmoid", f: |x| x[0].sigmoid(), shapes: one, domains: &[N] },
        Case { op: "tanh", f: |x| x[0].tanh(), shapes: one, domains: &[N] },
        Case { op: "relu", f: |x| x[0].relu(), shapes: one, domains: &[AwayFromZero] },
        Case { op: "exp", f: |x| x[0].exp(), shapes: one, domains: &[N] },
        Case { op: "log", f: |x| x[0].log(), shapes: one, domains: &[Positive] },
        Case { op: "sqrt", f: |x| x[0].sqrt(), shapes: one, domains: &[Positive] },
        Case { op: "square", f: |x| x[0].square(), shapes: one, domains: &[N] },
        Case { op: "powi", f: |x| x[0].powi(3), shapes: one, domains: &[N] },
        Case { op: "powi", f: |x| x[0].powi(-2), shapes: one, domains: &[Positive] },
        Case { op: "powf", f: |x| x[0].powf(1.7), shapes: one, domains: &[Positive] },
        Case { op: "powf", f: |x| x[0].powf(-0.5), shapes: one, domains: &[Positive] },
        Case { op: "broadcast_to", f: |x| x[0].broadcast_to((x[1].rows(), x[0].cols())), shapes: row_lhs, domains: &[N, N] },
        Case { op: "broadcast_to", f: |x| x[1].broadcast_to(x[0].shape()).mul(x[0]), shapes: scalar_rhs, domains: &[N, N] },
        Case { op: "broadcast_to", f: |x| x[1].broadcast_to(x[0].shape()).mul(x[0]), shapes: col, domains: &[N, N] },
        Case { op: "softmax", f: |x| x[0].softmax(Axis(1)), shapes: one, domains: &[N] },
        Case { op: "softmax", f: |x| x[0].softmax(Axis(0)), shapes: one, domains: &[N] },
        Case { op: "log_softmax", f: |x| x[0].log_softmax(Axis(1)), shapes: one, domains: &[N] },
        Case { op: "log_softmax", f: |x| x[0].log_softmax(Axis(0)), shapes: one, domains: &[N] },
        Case { op: "logsumexp", f: |x| x[0].logsumexp(Axis(1)), shapes: one, domains: &[N] },
        Case { op: "logsumexp", f: |x| x[0].logsumexp(Axis(0)), shapes: one, domains: &[N] },
        Case { op: "leaky_relu", f: |x| x[0].leaky_relu(0.1), shapes: one, domains: &[AwayFromZero] },
        Case { op: "elu", f: |x| x[0].elu(1.3), shapes: one, domains: &[AwayFromZero] },
        Case { op: "gelu", f: |x| x[0].gelu(), shapes: one, domains: &[N] },
        Case { op: "gelu_tanh", f: |x| x[0].gelu_tanh(), shapes: one, domains: &[N] },
        Case { op: "softplus", f: |x| x[0].softplus(), shapes: one, domains: &[N] },
        Case { op: "silu", f: |x| x[0].silu(), shapes: one, domains: &[N] },
        Case { op: "recip", f: |x| x[0].recip(), shapes: one, domains: &[Positive] },
        Case { op: "abs", f: |x| x[0].abs(), shapes: one, domains: &[AwayFromZero] },
        Case { op: "sin", f: |x| x[0].sin(), shapes: one, domains: &[N] },
        Case { op: "cos", f: |x| x[0].cos(), shapes: one, domains: &[N] },
        Case { op: "erf", f: |x| x[0].erf(), shapes: one, domains: &[N] },
        Case { op: "clamp", f: |x| x[0].clamp(-0.5, 0.7), shapes: one, domains: &[N] },
        Case { op: "scalar_div", f: |x| x[0].scalar_div(1.5), shapes: one, domains: &[Positive] },
        Case { op: "scalar_div", f: |x| 2.0 / x[0], shapes: one, domains: &[Positive] },
        Case { op: "maximum", f: |x| x[0].maximum(x[1]), shapes: same, domains: &[N, N] },
        Case { op: "maximum", f: |x| x[0].maximum(x[1]), shapes: row, domains: &[N, N] },
        Case { op: "maximum", f: |x| x[0].maximum(x[0]).mul(x[0]), shapes: one, domains: &[N] },
        Case { op: "minimum", f: |x| x[0].minimum(x[1]), shapes: same, domains: &[N, N] },
        Case { op: "minimum", f: |x| x[0].minimum(x[1]), shapes: scalar_rhs, domains: &[N, N] },
        Case { op: "where_", f: |x| Tensor::where_(checkerboard(x[0].shape()).view(), x[0], x[1]), shapes: same, domains: &[N, N] },
        Case { op: "where_", f: |x| Tensor::where_(checkerboard(x[0].shape()).view(), x[0], x[1]), shapes: col, domains: &[N, N] },
        Case { op: "max", f: |x| x[0].max(), shapes: one, domains: &[N] },
        Case { op: "min", f: |x| x[0].min(), shapes: one, domains: &[N] },
        Case { op: "max_axis", f: |x| x[0].max_axis(Axis(0)), shapes: one, domains: &[N] },
        Case { op: "max_axis", f: |x| x[0].max_axis(Axis(1)), shapes: one, domains: &[N] },
        Case { op: "min_axis", f: |x| x[0].min_axis(Axis(1)), shapes: one, domains: &[N] },
        Case { op: "slice", f: |x| { let r = x[0].rows(); x[0].slice(r / 2.., Span::from(..).step(2)) }, shapes: one, domains: &[N] },
        Case { op: "slice", f: |x| x[0].t().slice(Span::from(..).step(3), ..), shapes: one, domains: &[N] },
        Case { op: "slice_rows", f: |x| { let r = x[0].rows(); x[0].slice_rows(..r.div_ceil(2)) }, shapes: one, domains: &[N] },
        Case { op: "slice_cols", f: |x| { let c = x[0].cols(); x[0].slice_cols(c / 2..) }, shapes: one, domains: &[N] },
        Case { op: "gather_rows", f: |x| { let r = x[0].rows(); x[0].gather_rows(&indices(2 * r + 1, r)) }, shapes: one, domains: &[N] },
        Case { op: "reshape", f: |x| { let (r, c) = x[0].shape(); x[0].reshape((c, r)) }, shapes: one, domains: &[N] },
        Case { op: "reshape", f: |x| { let (r, c) = x[0].shape(); x[0].t().reshape((r, c)) }, shapes: one, domains: &[N] },
        Case { op: "concat_rows", f: |x| Tensor::concat_rows(&[x[0], x[1], x[0]]), shapes: same, domains: &[N, N] },
        Case { op: "concat_cols", f: |x| Tensor::concat_cols(&[x[1], x[0]]), shapes: col, domains: &[N, N] },
        Case { op: "l1_loss", f: |x| x[0].l1_loss(x[1]), shapes: same, domains: &[N, N] },
        Case { op: "huber_loss", f: |x| x[0].huber_loss(x[1], 1.0), shapes: same, domains: &[N, N] },
        Case { op: "bce_with_logits", f: |x| x[0].bce_with_logits(x[1]), shapes: same, domains: &[N, Probabilities] },
        Case { op: "nll_loss", f: |x| x[0].nll_loss(&indices(x[0].rows(), x[0].cols())), shapes: one, domains: &[N] },
        Case { op: "layer_norm", f: |x| x[0].layer_norm(x[1], x[2], 1e-5), shapes: norm, domains: &[N, N, N] },
        Case { op: "layer_norm", f: |x| x[0].layer_norm(x[1], x[2], 0.5), shapes: norm, domains: &[N, N, N] },
        Case { op: "dropout", f: |x| x[0].dropout(0.3, &mut StdRng::seed_from_u64(5)), shapes: one, domains: &[N] },
        Case { op: "mse_loss", f: |x| x[0].mse_loss(x[1]), shapes: same, domains: &[N, N] },
        Case { op: "softmax_cross_entropy", f: |x| x[0].softmax_cross_entropy(x[1]), shapes: same, domains: &[N, Probabilities] },
        Case {
            op: "softmax_cross_entropy_indices",
            f: |x| x[0].softmax_cross_entropy_indices(&indices(x[0].rows(), x[0].cols())),
            shapes: one,
            domains: &[N],
        },
    ]
}

/// Base shapes (r, c): 1 × 1, 1 × n, n × 1, odd sizes, and one above 7 in every
/// dimension so that matmuls take the BLAS path under the `blas` feature.
pub const SHAPES: [(usize, usize); 6] = [(1, 1), (1, 5), (4, 1), (3, 5), (7, 2), (9, 11)];

pub fn draw(shape: (usize, usize), domain: Domain, rng: &mut StdRng) -> Array2<f64> {
    let mut a = Array2::from_shape_simple_fn(shape, || match domain {
        Domain::Normal => StandardNormal.sample(rng),
        Domain::Positive | Domain::Probabilities => rng.random_range(0.5..2.0),
        Domain::AwayFromZero => {
            let m: f64 = rng.random_range(0.2..2.0);
            if rng.random_bool(0.5) { m } else { -m }
        }
    });
    if let Domain::Probabilities = domain {
        for mut r in a.rows_mut() {
            let s = r.sum();
            r /= s;
        }
    }
    a
}
