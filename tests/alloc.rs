//! Memory, with a counting global allocator: backward frees values and gradients as it
//! consumes them; the hand-written baseline of the benches and the tape agree; a
//! steady-state W1 step makes the same bounded number of allocations every time and
//! nothing grows over 10,000 steps; the peak of a W2 step, against parameters + saved
//! activations + gradients.
//!
//! The tests run one at a time (`SERIAL`): the allocator counts every thread.

#[path = "../benches/common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use common::{HandTrainer, TapeTrainer, W0, W1, W2, setup};
use ndarray::Array2;
use tapegrad::{BackwardOptions, Tape};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static SERIAL: Mutex<()> = Mutex::new(());

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        let live = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
        PEAK.fetch_max(live, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        let live = LIVE.fetch_add(new_size, Relaxed) + new_size;
        LIVE.fetch_sub(layout.size(), Relaxed);
        PEAK.fetch_max(live, Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The baseline the benches compare against computes the same step as the tape.
#[test]
fn hand_written_and_tape_steps_agree() {
    let _serial = serial();
    for w in [W0, W1] {
        let (net, x, y) = setup(w);
        let (mut a, mut b) = (TapeTrainer::new(net.clone()), HandTrainer::new(net));
        for _ in 0..3 {
            let (la, lb) = (a.step(&x, &y), b.step(&x, &y));
            assert!(
                (la - lb).abs() <= 1e-6 * lb.abs(),
                "{}: loss {la} vs {lb}",
                w.name
            );
        }
        let (a, b) = (&a.net, &b.net);
        for (p, q) in a.ws.iter().chain(&a.bs).zip(b.ws.iter().chain(&b.bs)) {
            let worst = p.iter().zip(q).fold(0f32, |m, (u, v)| m.max((u - v).abs()));
            assert!(worst < 1e-5, "{}: parameters differ by {worst}", w.name);
        }
    }
}

/// The most allocations a steady-state W1 train step may make. Measured: 24 with the
/// `openblas` feature (the tape's three vectors; per layer the `linear` and `sigmoid`
/// outputs; the MSE loss, its rule and saved difference; backward's slots, pending-read
/// counts, reused buffers and seed; the bias and input gradients; the result), 32 without
/// it (matrixmultiply allocates its packing buffer in each of the 8 GEMM calls). Weight
/// gradients are written into last step's buffers.
const W1_STEP_ALLOCATIONS: usize = 40;

#[test]
fn steady_state_w1_steps_allocate_a_bounded_number_of_buffers_and_nothing_grows() {
    let _serial = serial();
    let (net, x, y) = setup(W1);
    let mut trainer = TapeTrainer::new(net);
    for _ in 0..10 {
        trainer.step(&x, &y);
    }
    let mut count = || {
        let before = ALLOCS.load(Relaxed);
        trainer.step(&x, &y);
        ALLOCS.load(Relaxed) - before
    };
    let per_step = count();
    eprintln!("a steady-state W1 step makes {per_step} allocations");
    assert!(
        per_step <= W1_STEP_ALLOCATIONS,
        "{per_step} allocations per step"
    );
    let live = LIVE.load(Relaxed);
    for step in 0..10_000 {
        let n = count();
        assert_eq!(
            n, per_step,
            "step {step} made {n} allocations, not {per_step}"
        );
    }
    assert_eq!(
        LIVE.load(Relaxed),
        live,
        "live bytes grew over 10,000 steps"
    );
}

/// The peak bytes of a W2 step, against what any backprop must hold: parameters, the
/// activations the rules save, and one gradient per parameter.
#[test]
fn w2_step_peak_memory() {
    let _serial = serial();
    let (net, x, y) = setup(W2);
    let f = std::mem::size_of::<f32>();
    let params: usize = net.ws.iter().chain(&net.bs).map(|p| p.len() * f).sum();
    let mut trainer = TapeTrainer::new(net);
    let grads = params;
    // saved by the rules: each layer's sigmoid output (read by its own rule and the next
    // matmul's), and the loss's difference; the input is the caller's
    let saved: usize = W2.sizes[1..]
        .iter()
        .map(|n| W2.batch * n * f)
        .sum::<usize>()
        + y.len() * f;
    let data = (x.len() + y.len()) * f;
    trainer.step(&x, &y);
    // live now: parameters, data, and the gradients kept for the next step
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    trainer.step(&x, &y);
    let peak = PEAK.load(Relaxed) - base + params + grads + data;
    let floor = params + saved + grads + data;
    let mb = |b: usize| b as f64 / 1e6;
    eprintln!(
        "W2 step peak {:.1} MB = {:.3} × (parameters {:.1} + saved activations {:.1} + gradients {:.1} + data {:.1} MB)",
        mb(peak),
        peak as f64 / floor as f64,
        mb(params),
        mb(saved),
        mb(grads),
        mb(data)
    );
    assert!(peak as f64 <= 1.25 * floor as f64);
}

const DEPTH: usize = 24;
const N: usize = 128;
/// Bytes of one N × N f64 buffer.
const BUF: usize = N * N * 8;

/// Live bytes before backward, peak during it, live after it (gradients dropped), for a
/// chain of DEPTH layers `h = tanh(h·W)` with one shared N × N weight: backward frees as
/// it goes.
fn measure(retain: bool) -> (usize, usize, usize) {
    let w = Array2::from_shape_fn((N, N), |(i, j)| {
        ((i * 7 + j * 3) % 11) as f64 / 110.0 - 0.05
    });
    let x = Array2::from_shape_fn((N, N), |(i, j)| ((i + 2 * j) % 5) as f64 - 2.0);
    let tape = Tape::new();
    let wt = tape.param(&w);
    let mut h = tape.constant(&x);
    for _ in 0..DEPTH {
        h = h.matmul(wt).tanh();
    }
    let loss = h.mean();
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    let grads = tape
        .backward_with(loss, BackwardOptions::new().retain_graph(retain))
        .unwrap();
    let peak = PEAK.load(Relaxed);
    assert_eq!(grads.len(), 1);
    drop(grads);
    (before, peak, LIVE.load(Relaxed))
}

#[test]
fn backward_frees_values_and_gradients_as_they_are_consumed() {
    let _serial = serial();
    let (before, peak, after) = measure(false);
    eprintln!("release: before {before} peak {peak} after {after} (BUF {BUF})");
    // The forward holds 2·DEPTH values (each matmul and tanh result) of BUF bytes.
    assert!(before >= 2 * DEPTH * BUF);
    // During backward at most a few gradient buffers are alive beyond the values: dW,
    // the gradient being consumed and the one being produced (plus GEMM packing space
    // under matrixmultiply). Keeping every intermediate gradient would need DEPTH more.
    let extra = peak - before;
    assert!(
        extra <= 5 * BUF,
        "backward needed {} extra buffers",
        extra as f64 / BUF as f64
    );
    // Afterwards the values are gone: what remains is about nothing.
    assert!(
        after + (2 * DEPTH - 1) * BUF <= before,
        "released {} buffers",
        (before - after) / BUF
    );

    // With retain_graph every value stays, and the gradients are still freed as consumed.
    let (before, peak, after) = measure(true);
    eprintln!("retain: before {before} peak {peak} after {after} (BUF {BUF})");
    assert!(peak - before <= 5 * BUF);
    assert!(after + BUF >= before, "retained graph lost values");
}
