//! One training step of the transformer of `examples/transformer_digits.rs` (a batch of 32
//! digits as 8 tokens each: forward, cross-entropy, backward, AdamW), to see what
//! composing many small ops costs:
//!
//! ```text
//! OPENBLAS_NUM_THREADS=1 cargo bench -p tapegrad-benches --features openblas --bench transformer
//! ```
//!
//! It prints the number of ops a step records; `benches/callgrind.sh` gives the tape's own
//! share of a step's instructions. The step is measured twice in the one run: with the
//! vector kernels (`…/step/digits-b32/1`, `/2`) and with the scalar std / `libm` loops they
//! replaced (`…/step-std/digits-b32/1`, `/2`: the kernels' `std` path), in alternating order.

#[path = "common/transformer.rs"]
mod transformer;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tapegrad::bench_kernels::{Path, path, set_path};
use tapegrad::optim::Adam;
use transformer::transformer_digits::Transformer;
use transformer::{batch, step};

fn bench(c: &mut Criterion) {
    let (x, labels) = batch();
    let mut model = Transformer::new(7);
    let mut opt = Adam::adamw(1e-3, 0.01);
    let (_, ops) = step(&mut model, &mut opt, &x, &labels);
    eprintln!("one training step of the transformer records {ops} ops");
    let fast = path();
    let rounds = [("step", fast), ("step-std", Path::Std)];
    for (round, (name, p)) in rounds.iter().chain(&rounds).enumerate() {
        set_path(*p);
        c.bench_function(
            &format!("transformer/{name}/digits-b32/{}", round / 2 + 1),
            |b| b.iter(|| black_box(step(&mut model, &mut opt, &x, &labels))),
        );
    }
    set_path(fast);
}

criterion_group!(benches, bench);
criterion_main!(benches);
