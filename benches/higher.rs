//! The cost of a Hessian-vector product against a gradient, on workload W1
//! (784-256-256-10 sigmoid MLP, batch 128, mean squared error; `common/mod.rs`),
//! in the same criterion group:
//!
//! ```text
//! OPENBLAS_NUM_THREADS=1 cargo bench -p tapegrad-benches --features openblas --bench higher
//! ```
//!
//! `gradient` is one forward pass and first-order backward, the gradient of every weight
//! and bias. `hvp` is `H·v` for every parameter: the forward pass, the gradient recorded
//! on the tape (`Tape::grad`), `⟨∇f, v⟩`, and first-order backward through it. The cheap
//! gradient principle bounds the ratio near 4–5; the target is ≤ 4.

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::{Mlp, W1, setup};
use criterion::{Criterion, criterion_group, criterion_main};
use ndarray::Array2;
use tapegrad::{Tape, Tensor};

/// The workload's loss on `tape`, with the parameters borrowed as leaves.
fn loss<'t>(
    tape: &'t Tape<'t, f32>,
    net: &'t Mlp,
    x: &'t Array2<f32>,
    y: &'t Array2<f32>,
) -> (Vec<Tensor<'t, f32>>, Tensor<'t, f32>) {
    let mut params = Vec::new();
    let mut h = tape.constant(x);
    for (w, b) in net.ws.iter().zip(&net.bs) {
        let (w, b) = (tape.param(w), tape.param(b));
        params.extend([w, b]);
        h = h.linear(w, b).sigmoid();
    }
    (params, h.mse_loss(tape.constant(y)))
}

fn gradient(net: &Mlp, x: &Array2<f32>, y: &Array2<f32>) -> f32 {
    let tape = Tape::new();
    let (_, l) = loss(&tape, net, x, y);
    let grads = tape.backward(l).unwrap();
    grads.iter().map(|g| g[[0, 0]]).sum()
}

fn hvp(net: &Mlp, v: &[Array2<f32>], x: &Array2<f32>, y: &Array2<f32>) -> f32 {
    let tape = Tape::new();
    let (params, l) = loss(&tape, net, x, y);
    let gs = tape.grad(l, &params).unwrap();
    let mut s = gs[0].mul(tape.constant(&v[0])).sum();
    for (g, v) in gs.iter().zip(v).skip(1) {
        s = s.add(g.mul(tape.constant(v)).sum());
    }
    let hv = tape.backward(s).unwrap();
    params.iter().map(|p| hv.get(*p).unwrap()[[0, 0]]).sum()
}

fn bench(c: &mut Criterion) {
    let (net, x, y) = setup(W1);
    let v: Vec<Array2<f32>> = net
        .ws
        .iter()
        .zip(&net.bs)
        .flat_map(|(w, b)| [w.mapv(|a| a.sin()), b.mapv(|a| a.cos())])
        .collect();
    for _ in 0..3 {
        black_box(gradient(&net, &x, &y));
        black_box(hvp(&net, &v, &x, &y));
    }
    let mut group = c.benchmark_group(format!("higher/{}", W1.name));
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("gradient", |b| b.iter(|| black_box(gradient(&net, &x, &y))));
    group.bench_function("hvp", |b| b.iter(|| black_box(hvp(&net, &v, &x, &y))));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
