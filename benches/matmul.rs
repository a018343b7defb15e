//! The matmul rule alone (workload W3 of the README's "Performance"), and the proof that a
//! transposed view reaches GEMM as fast as a pre-transposed owned copy.
//!
//! ```text
//! OPENBLAS_NUM_THREADS=1 cargo bench -p tapegrad-benches --features openblas --bench matmul
//! ```
//!
//! - `matmul/vjp/X512x1024-W1024x1024`: `Y = X·W`, then `dX = G·Wᵀ`, `dW = Xᵀ·G` for a given
//!   upstream `G` (512 × 1024), through the tape (`tape`) and by hand (`hand`). Throughput
//!   is in FLOP: three GEMMs of 2·512·1024·1024.
//! - `matmul/fwd/nt/512` and `matmul/fwd/tn/512`: `X·Wᵀ` and `Xᵀ·W` on the tape with the
//!   transpose as a view (`view`) or as an owned, pre-transposed copy (`owned`).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ndarray::Array2;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};
use tapegrad::{BackwardOptions, Tape};

fn normal(shape: (usize, usize), rng: &mut StdRng) -> Array2<f32> {
    Array2::from_shape_simple_fn(shape, || StandardNormal.sample(rng))
}

fn vjp(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(3);
    let (m, k, n) = (512, 1024, 1024);
    let x = normal((m, k), &mut rng);
    let w = normal((k, n), &mut rng);
    let g = normal((m, n), &mut rng);
    let mut group = c.benchmark_group("matmul/vjp/X512x1024-W1024x1024");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(3 * 2 * (m * k * n) as u64));
    // Both sides start from an owned G made outside the timing (the tape moves it in as
    // the seed) and drop their results inside it.
    group.bench_function("tape", |b| {
        b.iter_batched(
            || g.clone(),
            |g| {
                let tape = Tape::new();
                let (xt, wt) = (tape.param(&x), tape.param(&w));
                let y = xt.matmul(wt);
                black_box(
                    tape.backward_with(y, BackwardOptions::new().seed(g))
                        .unwrap(),
                );
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("hand", |b| {
        b.iter_batched(
            || g.clone(),
            |g| {
                let y = x.dot(&w);
                let dx = g.dot(&w.t());
                let dw = x.t().dot(&g);
                black_box((y, dx, dw));
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn transposed_views(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(4);
    let s = 512;
    let x = normal((s, s), &mut rng);
    let w = normal((s, s), &mut rng);
    let w_t = w.t().as_standard_layout().into_owned();
    let x_t = x.t().as_standard_layout().into_owned();
    for (layout, view, owned) in [("nt", false, &w_t), ("tn", true, &x_t)] {
        let mut group = c.benchmark_group(format!("matmul/fwd/{layout}/{s}"));
        group.throughput(Throughput::Elements(2 * (s * s * s) as u64));
        group.bench_function("view", |b| {
            b.iter(|| {
                let tape = Tape::new();
                let (xt, wt) = (tape.constant(&x), tape.constant(&w));
                // X·Wᵀ or Xᵀ·W, the transpose a view of the caller's array
                let y = if view {
                    xt.t().matmul(wt)
                } else {
                    xt.matmul(wt.t())
                };
                black_box(y.shape())
            })
        });
        group.bench_function("owned", |b| {
            b.iter(|| {
                let tape = Tape::new();
                let y = if view {
                    tape.constant(owned).matmul(tape.constant(&w))
                } else {
                    tape.constant(&x).matmul(tape.constant(owned))
                };
                black_box(y.shape())
            })
        });
        group.finish();
    }
}

criterion_group!(benches, vjp, transposed_views);
criterion_main!(benches);
