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
use tapegrad::bench_kernels::{Path, gemm, has_avx2, map, set_path};

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
    products(c);
}

/// Tiny products: tapegrad's unrolled loops (`loop`) against ndarray's product
/// (`ndarray`: BLAS with the `blas` feature, else matrixmultiply), f32, on the W0 step's
/// five shapes (`XW`: 150 × 4 · 4 × 2, ..., `XtG`: Xᵀ as a transposed view) and on taller
/// and longer products, up to the loops' limit (m·n·k = 16,384).
fn products(c: &mut Criterion) {
    use ndarray::{Array2, ArrayView2};
    fn view(x: &Array2<f32>, t: bool) -> ArrayView2<'_, f32> {
        if t { x.t() } else { x.view() }
    }
    let m =
        |r: usize, k: usize| Array2::from_shape_fn((r, k), |(i, j)| ((i * 3 + j) % 7) as f32 * 0.1);
    // name, A, B, and whether each is used transposed
    type Case = (String, Array2<f32>, Array2<f32>, bool, bool);
    let mut cases: Vec<Case> = vec![
        ("XW/150x4x2".into(), m(150, 4), m(4, 2), false, false),
        ("HW/150x2x3".into(), m(150, 2), m(2, 3), false, false),
        ("GWt/150x3x2".into(), m(150, 3), m(2, 3), false, true),
        ("HtG/2x150x3".into(), m(150, 2), m(150, 3), true, false),
        ("XtG/4x150x2".into(), m(150, 4), m(150, 2), true, false),
        ("square/4".into(), m(4, 4), m(4, 4), false, false),
    ];
    for rows in [512, 2048] {
        cases.push((
            format!("tall/{rows}x4x2"),
            m(rows, 4),
            m(4, 2),
            false,
            false,
        ));
        cases.push((
            format!("long/4x{rows}x2"),
            m(rows, 4),
            m(rows, 2),
            true,
            false,
        ));
    }
    let mut group = c.benchmark_group("gemm/f32");
    for (name, a, b, ta, tb) in &cases {
        let (a, b) = (view(a, *ta), view(b, *tb));
        let mut out = Array2::zeros((a.nrows(), b.ncols()));
        for (label, small) in [("loop", true), ("ndarray", false)] {
            group.bench_function(BenchmarkId::new(label, name), |bench| {
                bench.iter(|| gemm(small, black_box(a), black_box(b), &mut out))
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(1));
    targets = kernels
}
criterion_main!(benches);
