//! Tape overhead: a chain of 100 tiny ops (1 × 8), forward and backward, where the tape's
//! bookkeeping rather than arithmetic dominates; beside it the same chain computed and
//! differentiated by hand with the same array operations.
//!
//! ```text
//! cargo bench -p tapegrad-benches --bench tape
//! ```
//!
//! `(tape − hand) / 100` is the tape's cost per recorded op and its rule.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ndarray::{Array2, Zip};
use tapegrad::Tape;

/// Blocks of 4 ops: `h ← 0.5 · tanh(h ∘ a + 0.1)`; 25 blocks make the 100 ops.
const BLOCKS: usize = 25;

fn tape_chain(x: &Array2<f32>, a: &Array2<f32>) -> Array2<f32> {
    let tape = Tape::new();
    let at = tape.param(a);
    let mut h = tape.constant(x);
    for _ in 0..BLOCKS {
        h = h.mul(at).add_scalar(0.1).tanh().mul_scalar(0.5);
    }
    let grads = tape.backward(h.sum()).unwrap();
    grads.wrt(a).unwrap().clone()
}

fn hand_chain(x: &Array2<f32>, a: &Array2<f32>) -> Array2<f32> {
    // forward, keeping what the backward pass reads: each block's input and tanh output
    let mut inputs = Vec::with_capacity(BLOCKS);
    let mut tanhs = Vec::with_capacity(BLOCKS);
    let mut h = x.clone();
    for _ in 0..BLOCKS {
        let m = &h * a;
        let p = m.mapv(|v| v + 0.1);
        let t = p.mapv(f32::tanh);
        let next = t.mapv(|v| 0.5 * v);
        inputs.push(h);
        tanhs.push(t);
        h = next;
    }
    let _loss = h.sum();
    // backward
    let mut g = Array2::<f32>::ones(h.dim());
    let mut da = Array2::<f32>::zeros(a.dim());
    for (input, t) in inputs.iter().zip(&tanhs).rev() {
        g.mapv_inplace(|v| 0.5 * v);
        Zip::from(&mut g).and(t).for_each(|g, &t| *g *= 1.0 - t * t);
        da += &(&g * input);
        g = &g * a;
    }
    da
}

fn overhead(c: &mut Criterion) {
    let x = Array2::from_shape_fn((1, 8), |(_, j)| j as f32 / 8.0);
    let a = Array2::from_shape_fn((1, 8), |(_, j)| 1.0 - j as f32 / 16.0);
    assert!(
        (tape_chain(&x, &a) - hand_chain(&x, &a))
            .iter()
            .all(|d| d.abs() < 1e-5)
    );
    let mut group = c.benchmark_group("tape/overhead/chain-100-ops-1x8");
    group.bench_function("tape", |b| b.iter(|| black_box(tape_chain(&x, &a))));
    group.bench_function("hand", |b| b.iter(|| black_box(hand_chain(&x, &a))));
    group.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
