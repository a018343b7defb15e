//! The elementwise kernels (`src/kernels/math.rs`) against the scalar std / `libm` loop
//! they replace, per element, at 4096 and 65536 elements, f32 and f64:
//!
//! ```text
//! cargo bench -p tapegrad-benches --bench kernels                 # every kernel
//! cargo bench -p tapegrad-benches --bench kernels -- gelu/f32     # some
//! ```
//!
//! `std` is the loop the ops ran before (one call of std or `libm` per element),
//! `baseline` the kernels as SSE2 (x86-64) or NEON (aarch64) run them, `avx2` with
//! AVX2 + FMA, where the CPU has them. Inputs are uniform on a range where each function
//! does its work (no constant tails).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tapegrad::Float;
use tapegrad::bench_kernels::{Path, has_avx2, map, set_path};

const KERNELS: [(&str, f64, f64); 8] = [
    ("exp", -20.0, 20.0),
    ("ln", 1e-3, 1e3),
    ("tanh", -5.0, 5.0),
    ("sigmoid", -10.0, 10.0),
    ("softplus", -10.0, 10.0),
    ("erf", -4.0, 4.0),
    ("gelu", -6.0, 6.0),
    ("gelu_grad", -6.0, 6.0),
];

fn run<F: Float>(c: &mut Criterion, ty: &str) {
    let mut paths = vec![("std", Path::Std), ("baseline", Path::Baseline)];
    if has_avx2() {
        paths.push(("avx2", Path::Avx2));
    }
    for (name, lo, hi) in KERNELS {
        let mut group = c.benchmark_group(format!("{name}/{ty}"));
        for n in [4096usize, 65536] {
            let x: Vec<F> = (0..n)
                .map(|i| F::cast(lo + (hi - lo) * ((i * 7919) % n) as f64 / n as f64))
                .collect();
            let mut y = vec![F::zero(); n];
            group.throughput(Throughput::Elements(n as u64));
            for &(label, path) in &paths {
                set_path(path);
                group.bench_with_input(BenchmarkId::new(label, n), &x, |b, x| {
                    b.iter(|| map(name, black_box(x), &mut y))
                });
            }
        }
        group.finish();
    }
    set_path(if has_avx2() {
        Path::Avx2
    } else {
        Path::Baseline
    });
}

fn kernels(c: &mut Criterion) {
    run::<f32>(c, "f32");
    run::<f64>(c, "f64");
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(1));
    targets = kernels
}
criterion_main!(benches);
