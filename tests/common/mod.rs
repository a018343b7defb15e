//! The table of op cases shared by the gradient checks and the non-finite input tests:
//! every public op, as a function of its inputs, with input shapes and value domains.

#![allow(dead_code)]

use ndarray::{Array2, Axis};
use rand::RngExt;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};
use tapegrad::Tensor;

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
fn matmul_tn(r: usize, c: usize) -> Vec<(usize, usize)> {
    vec![(c, r), (c, r + 1)]
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
