//! Backward frees as it goes: a counting global allocator watches the bytes live during
//! backward over a deep network, and what is left afterwards.
//!
//! One test in this binary: the allocator counts every thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use ndarray::Array2;
use tapegrad::{BackwardOptions, Tape};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
        PEAK.fetch_max(live, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const DEPTH: usize = 24;
const N: usize = 128;
/// Bytes of one N × N f64 buffer.
const BUF: usize = N * N * 8;

/// Live bytes before backward, peak during it, live after it (gradients dropped), for a
/// chain of DEPTH layers `h = tanh(h·W)` with one shared N × N weight.
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
