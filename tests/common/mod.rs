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
    /// A square matrix far from singular: `N/√n + 2I` (eigenvalues within 1 of 2).
    Invertible,
    /// A square matrix of rank n − 1 (zero for n = 1): `det`'s cofactor path.
    RankDeficient,
    /// A symmetric positive definite matrix `X·Xᵀ/n + I`, its eigenvalues apart.
    Spd,
    /// A symmetric matrix with eigenvalues 1, 2, …, n in a random orthonormal basis:
    /// `eigh`'s gradient divides by the gaps, which finite differences need wide.
    Spectrum,
    /// A well-conditioned triangle, either one: a diagonal of |d| in [1, 2] with random
    /// signs, `N/√n` elsewhere (the other triangle too, where the ops must not read it).
    Triangular,
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

/// The names of the public functions in `src/ops/*.rs` (`try_` forms included), by
/// scanning the source, in this build's feature set: how the gradcheck table and the
/// fuzzer make sure no new op slips past them.
pub fn public_fns_of_ops() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ops");
    // the linear-algebra ops exist only with the `linalg` feature
    let linalg = [
        "lapack.rs",
        "lu.rs",
        "cofactor.rs",
        "solve.rs",
        "det.rs",
        "decompose.rs",
    ];
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if file == "mod.rs" || (!cfg!(feature = "linalg") && linalg.contains(&file)) {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            if let Some(rest) = line.trim_start().strip_prefix("pub fn ") {
                let name = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                names.push(name);
            }
        }
    }
    names
}

/// Every case: the ops of every build, and the linear-algebra ops under `linalg`.
pub fn cases() -> Vec<Case> {
    #[allow(unused_mut)]
    let mut cases = base_cases();
    #[cfg(feature = "linalg")]
    cases.extend(linalg_cases());
    cases
}

/// The ops of every build (no LAPACK).
#[rustfmt::skip]
pub fn base_cases() -> Vec<Case> {
    use Domain::*;
    vec![
        Case { op: "matmul", f: |x| x[0].matmul(x[1]), shapes: matmul, domains: &[N, N] },
        Case { op: "matmul", f: |x| x[0].t().matmul(x[1]), shapes: matmul_tn, domains: &[N, N] },
        Case { op: "matmul", f: |x| x[0].matmul(x[0].t()), shapes: one, domains: &[N] },
        Case { op: "linear", f: |x| x[0].linear(x[1], x[2]), shapes: linear, domains: &[N, N, N] },
        Case { op: "remat", f: |x| x[0].tape().remat(&[x[0], x[1], x[2]], |y| Ok(y[0].try_linear(y[1], y[2])?.tanh())).unwrap(), shapes: linear, domains: &[N, N, N] },
        Case { op: "remat", f: |x| { let h = x[0].matmul(x[1]); x[0].tape().remat(&[h, x[1]], |y| Ok(y[0].try_matmul(y[1].t())?.sin())).unwrap() }, shapes: matmul, domains: &[N, N] },
        Case { op: "remat", f: |x| x[0].tape().remat(&[x[0], x[0]], |y| Ok(y[0].try_mul(y[1])?.exp())).unwrap(), shapes: one, domains: &[N] },
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
        Case { op: "trace", f: |x| x[0].trace(), shapes: one, domains: &[N] },
        Case { op: "trace", f: |x| x[0].t().trace().mul(x[0].trace()), shapes: one, domains: &[N] },
        Case { op: "diag", f: |x| x[0].diag(), shapes: one, domains: &[N] },
        Case { op: "diag", f: |x| x[0].t().diag().square(), shapes: one, domains: &[N] },
        Case { op: "diag_embed", f: |x| x[0].diag_embed(), shapes: |r, _| vec![(r, 1)], domains: &[N] },
        Case { op: "diag_embed", f: |x| x[0].diag_embed().square(), shapes: |_, c| vec![(1, c)], domains: &[N] },
        Case { op: "tril", f: |x| x[0].tril(0), shapes: one, domains: &[N] },
        Case { op: "tril", f: |x| x[0].tril(-1).square(), shapes: one, domains: &[N] },
        Case { op: "triu", f: |x| x[0].triu(0), shapes: one, domains: &[N] },
        Case { op: "triu", f: |x| x[0].triu(2).square(), shapes: one, domains: &[N] },
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
        Domain::Normal
        | Domain::Invertible
        | Domain::RankDeficient
        | Domain::Spd
        | Domain::Spectrum
        | Domain::Triangular => StandardNormal.sample(rng),
        Domain::Positive | Domain::Probabilities => rng.random_range(0.5..2.0),
        Domain::AwayFromZero => {
            let m: f64 = rng.random_range(0.2..2.0);
            if rng.random_bool(0.5) { m } else { -m }
        }
    });
    let n = shape.0;
    let scaled = |a: Array2<f64>| a / (n.max(1) as f64).sqrt();
    match domain {
        Domain::Probabilities => {
            for mut r in a.rows_mut() {
                let s = r.sum();
                r /= s;
            }
        }
        Domain::Invertible => {
            a = scaled(a);
            a.diag_mut().mapv_inplace(|d| d + 2.0);
        }
        Domain::RankDeficient => {
            let k = n.saturating_sub(1);
            let b = draw((n, k), Domain::Normal, rng);
            let c = draw((k, n), Domain::Normal, rng);
            a = b.dot(&c);
        }
        Domain::Spd => {
            let x = draw((n, n), Domain::Normal, rng);
            a = x.dot(&x.t()) / (n.max(1) as f64);
            a.diag_mut().mapv_inplace(|d| d + 1.0);
        }
        Domain::Spectrum => {
            // modified Gram–Schmidt on the columns of a normal matrix
            let mut q = a.clone();
            for j in 0..n {
                for i in 0..j {
                    let d = q.column(i).dot(&q.column(j));
                    let qi = q.column(i).to_owned();
                    q.column_mut(j).scaled_add(-d, &qi);
                }
                let norm = q.column(j).dot(&q.column(j)).sqrt();
                q.column_mut(j).mapv_inplace(|v| v / norm);
            }
            let lam =
                Array2::from_shape_fn((n, n), |(i, j)| if i == j { (i + 1) as f64 } else { 0.0 });
            a = q.dot(&lam).dot(&q.t());
        }
        Domain::Triangular => {
            a = scaled(a);
            for d in a.diag_mut() {
                let m: f64 = rng.random_range(1.0..2.0);
                *d = if rng.random_bool(0.5) { m } else { -m };
            }
        }
        _ => {}
    }
    a
}

/// The square side of a linear-algebra case's base shape: the larger side, or 0 for an
/// empty base shape.
fn side(r: usize, c: usize) -> usize {
    if r == 0 || c == 0 { 0 } else { r.max(c) }
}
fn square(r: usize, c: usize) -> Vec<(usize, usize)> {
    let n = side(r, c);
    vec![(n, n)]
}
fn system(r: usize, c: usize) -> Vec<(usize, usize)> {
    let n = side(r, c);
    vec![(n, n), (n, c)]
}
fn gram(r: usize, c: usize) -> Vec<(usize, usize)> {
    let n = side(r, c);
    vec![(n, n + 2)]
}

/// The linear-algebra ops that need LAPACK (feature `linalg`).
#[cfg(feature = "linalg")]
#[rustfmt::skip]
fn linalg_cases() -> Vec<Case> {
    use Domain::*;
    vec![
        Case { op: "inv", f: |x| x[0].inv(), shapes: square, domains: &[Invertible] },
        Case { op: "solve", f: |x| x[0].solve(x[1]), shapes: system, domains: &[Invertible, N] },
        Case { op: "solve", f: |x| x[0].t().solve(x[1]), shapes: system, domains: &[Invertible, N] },
        Case { op: "solve_triangular", f: |x| x[0].solve_triangular(x[1], true, false), shapes: system, domains: &[Triangular, N] },
        Case { op: "solve_triangular", f: |x| x[0].solve_triangular(x[1], true, true), shapes: system, domains: &[Triangular, N] },
        Case { op: "solve_triangular", f: |x| x[0].solve_triangular(x[1], false, false), shapes: system, domains: &[Triangular, N] },
        Case { op: "solve_triangular", f: |x| x[0].solve_triangular(x[1], false, true), shapes: system, domains: &[Triangular, N] },
        Case { op: "cho_solve", f: |x| x[0].cho_solve(x[1]), shapes: system, domains: &[Triangular, N] },
        Case { op: "det", f: |x| x[0].det(), shapes: square, domains: &[Invertible] },
        Case { op: "det", f: |x| x[0].det(), shapes: square, domains: &[RankDeficient] },
        Case { op: "slogdet", f: |x| x[0].slogdet().1, shapes: square, domains: &[Invertible] },
        Case { op: "slogdet", f: |x| { let (s, l) = x[0].slogdet(); l.mul(s) }, shapes: square, domains: &[Triangular] },
        Case { op: "logdet", f: |x| x[0].logdet(), shapes: square, domains: &[Spd] },
        Case { op: "cholesky", f: |x| x[0].cholesky(), shapes: square, domains: &[Spd] },
        Case { op: "cholesky", f: |x| x[0].matmul(x[0].t()).cholesky(), shapes: gram, domains: &[N] },
        Case { op: "cholesky", f: |x| x[0].cholesky().cho_solve(x[1]), shapes: system, domains: &[Spd, N] },
        Case { op: "eigh", f: |x| x[0].eigh().0, shapes: square, domains: &[Spd] },
        Case { op: "eigh", f: |x| x[0].eigh().1.square(), shapes: square, domains: &[Spectrum] },
        Case { op: "eigh", f: |x| { let (l, v) = x[0].eigh(); v.square().matmul(l.sin()) }, shapes: square, domains: &[Spectrum] },
    ]
}

/// Records a graph of ten scalar nodes on which `layout-rs` 0.1.3's Brandes–Köpf placement
/// breaks its own invariant (`edge_fixer.rs:34: assertion failed: loc.x >= leftmost`),
/// found by a seeded search over small random DAGs. Each node's name makes its label's
/// first line the widest, so the boxes' sizes, which decide the placement, do not depend
/// on the line numbers of this file.
pub fn layout_rs_panic_graph<'t>(tape: &'t tapegrad::Tape<'t, f64>) {
    let leaf = || tape.param(Array2::zeros((1, 1)));
    let name = |t: Tensor<'t, f64>, len: usize| t.named(&"x".repeat(len));
    let n0 = name(leaf(), 27);
    let n1 = name(n0.add(n0), 22);
    let n2 = name(n0.tanh(), 37);
    let n3 = name(n0.add(n0), 37);
    let n4 = name(n0.tanh(), 33);
    let n5 = name(n2.mul(n3), 35);
    let _n6 = name(n1.mul(n1), 31);
    let _n7 = name(n5.add(n2), 30);
    let n8 = name(leaf(), 29);
    let _n9 = name(n8.mul(n4), 22);
}

/// Whether `a` and `b` have one shape and agree elementwise to `tol` relative to `b`
/// (absolute near 0).
pub fn close(a: &Array2<f64>, b: &Array2<f64>, tol: f64) -> bool {
    a.dim() == b.dim()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()))
}
