//! Train steps of the workloads W0, W1 and W2 (`common/mod.rs`), each measured
//! through the tape and as the hand-written ndarray backprop, in the same group:
//!
//! ```text
//! OPENBLAS_NUM_THREADS=1 cargo bench -p tapegrad-benches --features openblas --bench mlp
//! cargo bench -p tapegrad-benches --bench mlp            # pure Rust: matrixmultiply for both sides
//! ```
//!
//! Groups are named `mlp/step/<workload>`; compare `tape` with `hand`, and for W2
//! `remat` (every layer checkpointed) with `tape`. Set up with ndarray
//! 0.17; the GEMM backend is printed at start.

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::{HandTrainer, Path, TapeTrainer, W0, W1, W2, Workload, setup};
use criterion::{Criterion, criterion_group, criterion_main};

fn step(c: &mut Criterion, w: Workload, samples: usize) {
    let (net, x, y) = setup(w);
    let mut tape = TapeTrainer::new(net.clone());
    let mut hand = HandTrainer::new(net);
    // Warm both paths before measuring either. The first steps of a process pay for the
    // allocator adapting to these buffer sizes (glibc raises its mmap threshold after the
    // first large frees), and criterion measures one function after the other.
    for _ in 0..3 {
        hand.step(&x, &y);
        tape.step(&x, &y);
    }
    let mut group = c.benchmark_group(format!("mlp/step/{}", w.name));
    group.sample_size(samples);
    if samples < 100 {
        group.measurement_time(Duration::from_secs(12));
    }
    group.bench_function("tape", |b| b.iter(|| black_box(tape.step(&x, &y))));
    group.bench_function("hand", |b| b.iter(|| black_box(hand.step(&x, &y))));
    if w.name == W2.name {
        // gradient checkpointing: every layer recomputed during backward
        let (net, ..) = setup(w);
        let mut remat = TapeTrainer::with(net, Path::Remat);
        group.bench_function("remat", |b| b.iter(|| black_box(remat.step(&x, &y))));
    }
    group.finish();
}

fn mlp(c: &mut Criterion) {
    eprintln!(
        "GEMM backend: {}",
        if cfg!(feature = "blas") {
            "BLAS (cblas_sgemm)"
        } else {
            "matrixmultiply (pure Rust)"
        }
    );
    step(c, W0, 100);
    step(c, W1, 100);
    step(c, W2, 10);
}

criterion_group!(benches, mlp);
criterion_main!(benches);
