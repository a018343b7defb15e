//! Paired ratios of tape steps to the hand-written step (`common::HandTrainer`, which
//! allocates nothing in a steady step), and for tiny shapes (W0) to the fused-loop floor
//! (`common::FloorTrainer`: plain loops over slices, no ndarray call), robust to a loaded
//! machine: in each round the tape path and the baseline run the same number of steps
//! back to back (in alternating order), the round gives one ratio of their times, and the
//! figure is the median of the rounds.
//! Page faults per steady step (minor faults of the process, from `/proc/self/stat`, so
//! BLAS threads count too) are printed beside each ratio.
//!
//! ```text
//! OPENBLAS_NUM_THREADS=1 cargo bench -p tapegrad-benches --features openblas --bench paired
//! OPENBLAS_NUM_THREADS=2 cargo bench -p tapegrad-benches --features openblas --bench paired
//! cargo bench -p tapegrad-benches --features openblas --bench paired -- W1 W2    # some workloads only
//! ```
//!
//! Paths: `plain` (`sigmoid(h.matmul(w) + b)`, a new `Gradients` every step), `linear`
//! (the fused op), `reuse` (`linear` with last step's gradients handed to backward), `nn`
//! (`nn::Sequential` + `optim::Sgd` + reuse), `remat` (`reuse` with every layer a
//! `Tape::remat` block: gradient checkpointing). W3 is the matmul VJP alone: `sum` writes the
//! loss as `sum(Y ∘ G)`, `seed` hands `G` to backward as the seed (borrowed), against three
//! GEMMs into kept buffers.

mod common;

use std::hint::black_box;

use common::{
    FloorTrainer, HandTrainer, NnTrainer, Path, TapeTrainer, W0, W1, W2, Workload,
    seconds_per_call, setup,
};
use ndarray::Array2;
use ndarray::linalg::general_mat_mul;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};
use tapegrad::{BackwardOptions, Tape};

const ROUNDS: usize = 21;

/// Minor page faults of this process so far.
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // the fields after the command name (which is in parentheses and may hold spaces)
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    rest.split_whitespace()
        .nth(7)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The median over rounds of time(tape) / time(hand), the tape's time per step, and its
/// page faults per step (over all rounds).
fn paired(steps: usize, tape: &mut dyn FnMut(), hand: &mut dyn FnMut()) -> (f64, f64, f64) {
    for _ in 0..3 {
        tape();
        hand();
    }
    let mut ratios = Vec::with_capacity(ROUNDS);
    let (mut faults, mut tape_time) = (0, 0.0);
    let mut timed_tape = || {
        let before = minor_faults();
        let t = seconds_per_call(steps, tape);
        faults += minor_faults() - before;
        tape_time += t;
        t
    };
    for round in 0..ROUNDS {
        let (t, h) = if round % 2 == 0 {
            let t = timed_tape();
            (t, seconds_per_call(steps, hand))
        } else {
            let h = seconds_per_call(steps, hand);
            (timed_tape(), h)
        };
        ratios.push(t / h);
    }
    ratios.sort_by(f64::total_cmp);
    let n = (ROUNDS * steps) as f64;
    (
        ratios[ROUNDS / 2],
        tape_time / ROUNDS as f64,
        faults as f64 / n,
    )
}

fn report(workload: &str, path: &str, (ratio, per_step, faults): (f64, f64, f64)) {
    println!(
        "{workload:<4} {path:<7} tape / hand {ratio:6.3}   {:9.1} µs per step   {faults:8.1} page faults per step",
        per_step * 1e6
    );
}

fn mlp(name: &str, w: Workload, steps: usize) {
    let (net, x, y) = setup(w);
    let mut hand = HandTrainer::new(net.clone());
    // the baseline's own faults: with every buffer kept, none in a steady step
    let mut hand_step = || {
        black_box(hand.step(&x, &y));
    };
    for (label, path) in [
        ("plain", Path::Plain),
        ("linear", Path::Linear),
        ("reuse", Path::Reuse),
        ("remat", Path::Remat),
    ] {
        let mut t = TapeTrainer::with(net.clone(), path);
        let r = paired(
            steps,
            &mut || {
                black_box(t.step(&x, &y));
            },
            &mut hand_step,
        );
        report(name, label, r);
    }
    let mut t = NnTrainer::new(net.clone());
    let r = paired(
        steps,
        &mut || {
            black_box(t.step(&x, &y));
        },
        &mut hand_step,
    );
    report(name, "nn", r);
    if w.sizes.iter().all(|&n| n <= 16) {
        // tiny shapes: the fused-loop floor (`common::FloorTrainer`) against the hand
        // step, and the fastest tape path against the floor
        let mut floor = FloorTrainer::new(net.clone());
        let mut floor_step = || {
            black_box(floor.step(&x, &y));
        };
        let (ratio, per_step, _) = paired(steps, &mut floor_step, &mut hand_step);
        println!(
            "{name:<4} floor   floor / hand {ratio:6.3}   {:9.1} µs per step",
            per_step * 1e6
        );
        for (label, path) in [("linear", Path::Linear), ("reuse", Path::Reuse)] {
            let mut t = TapeTrainer::with(net.clone(), path);
            let (ratio, _, _) = paired(
                steps,
                &mut || {
                    black_box(t.step(&x, &y));
                },
                &mut floor_step,
            );
            println!("{name:<4} {label:<7} tape / floor {ratio:6.3}");
        }
    }
    let before = minor_faults();
    let per_step = seconds_per_call(steps * 4, &mut hand_step);
    let faults = (minor_faults() - before) as f64 / (steps * 4) as f64;
    println!(
        "{name:<4} hand    {:30.1} µs per step   {faults:8.1} page faults per step",
        per_step * 1e6
    );
}

fn w3(steps: usize) {
    let mut rng = StdRng::seed_from_u64(3);
    let mut normal = |s: (usize, usize)| {
        Array2::<f32>::from_shape_simple_fn(s, || StandardNormal.sample(&mut rng))
    };
    let (x, w, g) = (
        normal((512, 1024)),
        normal((1024, 1024)),
        normal((512, 1024)),
    );
    let (mut y, mut dx, mut dw) = (
        Array2::zeros((512, 1024)),
        Array2::zeros((512, 1024)),
        Array2::zeros((1024, 1024)),
    );
    let mut hand = || {
        general_mat_mul(1.0, &x, &w, 0.0, &mut y);
        general_mat_mul(1.0, &g, &w.t(), 0.0, &mut dx);
        general_mat_mul(1.0, &x.t(), &g, 0.0, &mut dw);
        black_box((&y, &dx, &dw));
    };
    let mut sum = || {
        let tape = Tape::new();
        let (xt, wt) = (tape.param(&x), tape.param(&w));
        let loss = (xt.matmul(wt) * tape.constant(&g)).sum();
        black_box(tape.backward(loss).unwrap());
    };
    report("W3", "sum", paired(steps, &mut sum, &mut hand));
    let mut seed = || {
        let tape = Tape::new();
        let (xt, wt) = (tape.param(&x), tape.param(&w));
        let y = xt.matmul(wt);
        black_box(
            tape.backward_with(y, BackwardOptions::new().seed(&g))
                .unwrap(),
        );
    };
    report("W3", "seed", paired(steps, &mut seed, &mut hand));
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |w: &str| args.is_empty() || args.iter().any(|a| a == w);
    println!(
        "OPENBLAS_NUM_THREADS={}, GEMM: {}; median of {ROUNDS} paired rounds",
        std::env::var("OPENBLAS_NUM_THREADS").unwrap_or_else(|_| "unset".into()),
        if cfg!(feature = "blas") {
            "BLAS"
        } else {
            "matrixmultiply"
        }
    );
    if wanted("W0") {
        mlp("W0", W0, 2000);
    }
    if wanted("W1") {
        mlp("W1", W1, 20);
    }
    if wanted("W2") {
        mlp("W2", W2, 2);
    }
    if wanted("W3") {
        w3(3);
    }
}
