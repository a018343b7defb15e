//! Each linear-algebra op's VJP against its forward, at n = 64, 256 and 1024, in the same
//! criterion group (`linalg/<op>`, benches `forward/n` and `vjp/n`):
//!
//! ```text
//! cargo bench -p tapegrad-benches --features openblas --bench linalg
//! ```
//!
//! `forward` records the op on a new tape: the LAPACK call and the copy it works on.
//! `vjp` is first-order backward from the op's output with a fixed cotangent `G` (the
//! forward recorded once, outside the loop, with `retain_graph`): the rule alone, plus
//! the gradient buffers it returns. The right-hand sides of `solve`, `solve_triangular`
//! and `cho_solve` are n × n (n systems), the harder case for the VJP: with one column the
//! forward's factorisation dominates and the VJP costs O(n²).
//!
//! Targets (issue 11): `inv` and `solve` VJPs ≤ 2× their forward, `cholesky` ≤ 3×,
//! `slogdet` ≤ 1.2×. In f64, the type of scientific use (the GP example).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ndarray::Array2;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};
use tapegrad::{BackwardOptions, Tape, Tensor};

fn normal(shape: (usize, usize), seed: u64) -> Array2<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    Array2::from_shape_simple_fn(shape, || StandardNormal.sample(&mut rng))
}

/// `I + N/(10√n)`: eigenvalues within 0.1 of 1, so the determinant stays finite at
/// n = 1024 and every solve is well conditioned.
fn near_identity(n: usize, seed: u64) -> Array2<f64> {
    let mut a = normal((n, n), seed) / (10.0 * (n as f64).sqrt());
    a.diag_mut().mapv_inplace(|d| d + 1.0);
    a
}

/// `X·Xᵀ/n + I`.
fn spd(n: usize, seed: u64) -> Array2<f64> {
    let x = normal((n, n), seed);
    let mut a = x.dot(&x.t()) / n as f64;
    a.diag_mut().mapv_inplace(|d| d + 1.0);
    a
}

/// A lower triangle with a unit diagonal and small entries below it.
fn lower(n: usize, seed: u64) -> Array2<f64> {
    let mut l = near_identity(n, seed);
    for ((i, j), v) in l.indexed_iter_mut() {
        if j > i {
            *v = 0.0;
        }
    }
    l
}

/// One op of one or two inputs, benched forward and backward at every size.
fn pair(
    c: &mut Criterion,
    name: &str,
    make: impl Fn(usize) -> (Array2<f64>, Array2<f64>),
    op: for<'t> fn(Tensor<'t, f64>, Tensor<'t, f64>) -> Tensor<'t, f64>,
) {
    let mut group = c.benchmark_group(format!("linalg/{name}"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for n in [64, 256, 1024] {
        let (a, b) = make(n);
        group.bench_with_input(BenchmarkId::new("forward", n), &n, |bench, _| {
            bench.iter(|| {
                let tape = Tape::new();
                let y = op(tape.param(&a), tape.param(&b));
                black_box(y.shape());
            })
        });
        let tape = Tape::new();
        let y = op(tape.param(&a), tape.param(&b));
        let g = normal(y.shape(), 7);
        let opts = BackwardOptions::new().seed(g).retain_graph(true);
        group.bench_with_input(BenchmarkId::new("vjp", n), &n, |bench, _| {
            bench.iter(|| black_box(tape.backward_with(y, opts.clone()).unwrap()))
        });
    }
    group.finish();
}

fn bench(c: &mut Criterion) {
    let square = |f: fn(usize, u64) -> Array2<f64>| move |n: usize| (f(n, 1), normal((n, n), 2));
    pair(c, "inv", square(near_identity), |a, _| a.inv());
    pair(c, "solve", square(near_identity), |a, b| a.solve(b));
    pair(c, "solve_triangular", square(lower), |a, b| {
        a.solve_triangular(b, true, false)
    });
    pair(c, "cho_solve", square(lower), |a, b| a.cho_solve(b));
    pair(c, "det", square(near_identity), |a, _| a.det());
    pair(c, "slogdet", square(near_identity), |a, _| a.slogdet().1);
    pair(c, "cholesky", square(spd), |a, _| a.cholesky());
    // backward from V: eigh's rule, after the slice's (an n × (n + 1) copy)
    pair(c, "eigh", square(spd), |a, _| a.eigh().1);
}

criterion_group!(benches, bench);
criterion_main!(benches);
