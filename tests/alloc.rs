//! Memory, with a counting global allocator: backward frees values and gradients as it
//! consumes them; the hand-written baseline of the benches and the tape agree; a
//! steady-state W1 step makes the same bounded number of allocations every time and
//! nothing grows over 1,000 steps; the peak of a W2 step, against parameters + saved
//! activations + gradients.
//!
//! The allocator counts per thread: each test measures only what its own thread
//! allocates, so nothing the test runner's other threads do (its "has been running for
//! over 60 seconds" message, other tests) can change a count, however loaded the machine.

#[path = "../benches/common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::{
    FloorTrainer, HandTrainer, NnTrainer, Path, TapeTrainer, W0, W1, W2, Workload, setup,
};
use ndarray::Array2;
use tapegrad::{BackwardOptions, Tape, pool};

struct Counting;

thread_local! {
    /// Allocations made by this thread.
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
    /// Allocations of at least `pool::MIN_BYTES` made by this thread.
    static LARGE: Cell<usize> = const { Cell::new(0) };
    /// Bytes allocated minus bytes freed by this thread.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    /// The largest `LIVE` seen since the last reset.
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// Adds `bytes` to this thread's live bytes (and counts an allocation if `alloc`). The
/// cells are const-initialised and have no destructor, so touching them allocates nothing
/// and works at any point of a thread's life; `try_with` covers its very end.
fn count(bytes: isize, alloc: bool) {
    let _ = ALLOCS.try_with(|a| a.set(a.get() + usize::from(alloc)));
    let large = alloc && bytes >= tapegrad::pool::MIN_BYTES as isize;
    let _ = LARGE.try_with(|a| a.set(a.get() + usize::from(large)));
    let _ = LIVE.try_with(|l| {
        let live = l.get() + bytes;
        l.set(live);
        let _ = PEAK.try_with(|p| p.set(p.get().max(live)));
    });
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize, true);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize), false);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize, true);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// This thread's allocations so far.
fn allocs() -> usize {
    ALLOCS.with(Cell::get)
}

/// This thread's allocations of pooled size so far.
fn large_allocs() -> usize {
    LARGE.with(Cell::get)
}

/// This thread's live bytes.
fn live() -> isize {
    LIVE.with(Cell::get)
}

/// This thread's peak live bytes since [`reset_peak`].
fn peak() -> isize {
    PEAK.with(Cell::get)
}

fn reset_peak() {
    PEAK.with(|p| p.set(live()));
}

/// What `counter` counts over 3 steps, after 3 that warm up the pool and the buffers.
fn over_3_steady_steps(counter: fn() -> usize, step: &mut dyn FnMut()) -> usize {
    for _ in 0..3 {
        step();
    }
    let before = counter();
    for _ in 0..3 {
        step();
    }
    counter() - before
}

/// The baselines the benches compare against (the hand-written ndarray step and the
/// fused-loop floor) compute the same step as the tape, to rounding.
#[test]
fn hand_written_floor_and_tape_steps_agree() {
    for w in [W0, W1] {
        let (net, x, y) = setup(w);
        let mut a = TapeTrainer::new(net.clone());
        let mut b = HandTrainer::new(net.clone());
        let mut c = FloorTrainer::new(net);
        for _ in 0..3 {
            let (la, lb, lc) = (a.step(&x, &y), b.step(&x, &y), c.step(&x, &y));
            for (l, by) in [(la, "tape"), (lc, "floor")] {
                assert!(
                    (l - lb).abs() <= 1e-6 * lb.abs(),
                    "{}: loss {l} ({by}) vs {lb} (hand)",
                    w.name
                );
            }
        }
        for (other, by) in [(&a.net, "tape"), (&c.net, "floor")] {
            let b = &b.net;
            for (p, q) in other
                .ws
                .iter()
                .chain(&other.bs)
                .zip(b.ws.iter().chain(&b.bs))
            {
                let worst = p.iter().zip(q).fold(0f32, |m, (u, v)| m.max((u - v).abs()));
                assert!(
                    worst < 1e-5,
                    "{}: {by} parameters differ by {worst}",
                    w.name
                );
            }
        }
    }
}

/// The most allocations a steady-state W1 train step may make: none with the `openblas`
/// feature (the tape's lists, its values, backward's slots and the gradients all come
/// from the thread's pool, and weight gradients are written into last step's buffers);
/// without it, the packing buffer matrixmultiply allocates in each of the 8 GEMM calls.
const W1_STEP_ALLOCATIONS: usize = if cfg!(feature = "blas") { 0 } else { 8 };

#[test]
fn steady_state_w1_steps_allocate_a_bounded_number_of_buffers_and_nothing_grows() {
    let (net, x, y) = setup(W1);
    let mut trainer = TapeTrainer::new(net);
    for _ in 0..10 {
        trainer.step(&x, &y);
    }
    let mut count = || {
        let before = allocs();
        trainer.step(&x, &y);
        allocs() - before
    };
    let per_step = count();
    eprintln!("a steady-state W1 step makes {per_step} allocations");
    // (the bound is 0 with BLAS, where `<=` is `==`)
    #[allow(clippy::absurd_extreme_comparisons)]
    let within = per_step <= W1_STEP_ALLOCATIONS;
    assert!(within, "{per_step} allocations per step");
    let live_before = live();
    for step in 0..1_000 {
        let n = count();
        assert_eq!(
            n, per_step,
            "step {step} made {n} allocations, not {per_step}"
        );
    }
    assert_eq!(live(), live_before, "live bytes grew over 1,000 steps");
}

/// Small work allocates nothing: a steady W0 step through the tape (a new tape every step,
/// on every path) makes no more allocations than the hand-written step, which keeps all
/// its buffers. That is none with OpenBLAS: the tape's lists, its values and the
/// gradients come from the thread's pool. Without it, matrixmultiply allocates a packing
/// buffer inside each GEMM call, on both sides alike.
#[test]
fn steady_w0_steps_allocate_no_more_than_the_hand_written_step() {
    let per_3_steps = |step: &mut dyn FnMut()| over_3_steady_steps(allocs, step);
    let (net, x, y) = setup(W0);
    let mut hand = HandTrainer::new(net.clone());
    let by_hand = per_3_steps(&mut || {
        hand.step(&x, &y);
    });
    if cfg!(feature = "blas") {
        assert_eq!(by_hand, 0, "the hand-written step allocates nothing");
    }
    let mut floor = FloorTrainer::new(net.clone());
    let by_floor = per_3_steps(&mut || {
        floor.step(&x, &y);
    });
    assert_eq!(by_floor, 0, "the fused-loop floor allocates nothing");
    for path in [Path::Plain, Path::Linear, Path::Reuse] {
        let mut trainer = TapeTrainer::with(net.clone(), path);
        let by_tape = per_3_steps(&mut || {
            trainer.step(&x, &y);
        });
        eprintln!("W0 {path:?}: {by_tape} allocations in 3 steps, by hand {by_hand}");
        assert!(
            by_tape <= by_hand,
            "W0 {path:?}: {by_tape} allocations in 3 steps, by hand {by_hand}"
        );
    }
}

/// The obvious loop (a new tape every step, the bias added by a plain `add`, gradients
/// dropped every step, no option) takes every large buffer of a steady step from the
/// pool: it makes no more allocations of pooled size than the hand-written step, which
/// keeps all its buffers. (That is none with OpenBLAS; without it, matrixmultiply
/// allocates its packing buffer inside some GEMM calls, on both sides alike.)
#[test]
fn steady_steps_of_the_obvious_loop_allocate_no_large_buffer() {
    let large_per_3_steps = |step: &mut dyn FnMut()| over_3_steady_steps(large_allocs, step);
    for w in [W1, W2] {
        let (net, x, y) = setup(w);
        let mut hand = HandTrainer::new(net.clone());
        let gemm = large_per_3_steps(&mut || {
            hand.step(&x, &y);
        });
        if cfg!(feature = "blas") {
            assert_eq!(gemm, 0, "the hand-written step allocates nothing");
        }
        for path in [Path::Plain, Path::Linear, Path::Reuse] {
            let mut trainer = TapeTrainer::with(net.clone(), path);
            let large = large_per_3_steps(&mut || {
                trainer.step(&x, &y);
            });
            assert_eq!(
                large, gemm,
                "{} {path:?}: {large} large allocations in 3 steps, by hand {gemm}",
                w.name
            );
        }
    }
    pool::trim();
}

/// A step through `nn::Sequential` and `optim::Sgd` allocates no more than the same step
/// written with tape ops: walking the model's named parameters (three times per optimizer
/// step) formats no name into a new `String`.
#[test]
fn nn_and_optim_steps_allocate_no_more_than_plain_tape_steps() {
    for w in [W0, W1] {
        let (net, x, y) = setup(w);
        let mut tape = TapeTrainer::new(net.clone());
        let mut nn = NnTrainer::new(net);
        let per_step = |step: &mut dyn FnMut()| {
            for _ in 0..3 {
                step();
            }
            let before = allocs();
            step();
            allocs() - before
        };
        let by_tape = per_step(&mut || {
            tape.step(&x, &y);
        });
        let by_nn = per_step(&mut || {
            nn.step(&x, &y);
        });
        eprintln!(
            "{}: {by_tape} allocations per tape step, {by_nn} per nn + optim step",
            w.name
        );
        assert!(by_nn <= by_tape, "{}: nn {by_nn} > tape {by_tape}", w.name);
    }
}

/// The peak bytes of a W2 step, against what any backprop must hold: parameters, the
/// activations the rules save, and one gradient per parameter.
#[test]
fn w2_step_peak_memory() {
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
    // live now: parameters, data, and the gradients kept for the next step (the pool is
    // emptied, so that the step's buffers count at their full size)
    pool::trim();
    let base = live();
    reset_peak();
    trainer.step(&x, &y);
    let peak = (peak() - base) as usize + params + grads + data;
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

/// Eight sigmoid layers of 512, batch 256: deep enough for checkpointing to pay (with
/// W2's three layers, recomputing the widest layer in backward holds as much as the plain
/// pass does).
const DEEP: Workload = Workload {
    name: "deep-512x8-b256",
    sizes: &[512; 9],
    batch: 256,
};

/// Gradient checkpointing (every layer a `Tape::remat` block): the tape holds only the
/// layer boundaries after the forward, the step's peak is lower than the plain step's,
/// and the gradients are bitwise the plain step's (so are the updated weights).
#[test]
fn remat_keeps_the_boundaries_and_gives_bitwise_the_same_gradients() {
    let (net, x, y) = setup(DEEP);
    let f = std::mem::size_of::<f32>();
    // what a forward leaves on the tape
    let held = |remat: bool| {
        let tape = Tape::new();
        let mut h = tape.constant(&x);
        for (w, b) in net.ws.iter().zip(&net.bs) {
            let (w, b) = (tape.param(w), tape.param(b));
            h = if remat {
                tape.remat(&[h, w, b], |xs| common::layer(&xs)).unwrap()
            } else {
                h.linear(w, b).sigmoid()
            };
        }
        tape.stats().owned_bytes
    };
    let boundaries: usize = DEEP.sizes[1..].iter().map(|n| DEEP.batch * n * f).sum();
    let (plain_held, remat_held) = (held(false), held(true));
    assert_eq!(remat_held, boundaries, "remat keeps the layer outputs only");
    assert_eq!(
        plain_held,
        2 * boundaries,
        "plain keeps X·W + b and its sigmoid"
    );

    let peak_of = |trainer: &mut TapeTrainer| {
        pool::trim();
        let base = live();
        reset_peak();
        trainer.step(&x, &y);
        (peak() - base) as usize
    };
    let mut plain = TapeTrainer::with(net.clone(), Path::Reuse);
    let mut remat = TapeTrainer::with(net.clone(), Path::Remat);
    for step in 0..2 {
        let (p, r) = (peak_of(&mut plain), peak_of(&mut remat));
        eprintln!(
            "{} step {step}: peak above the step's start {:.1} MB plain, {:.1} MB remat ({:.3}); tape after forward {:.1} vs {:.1} MB",
            DEEP.name,
            p as f64 / 1e6,
            r as f64 / 1e6,
            r as f64 / p as f64,
            plain_held as f64 / 1e6,
            remat_held as f64 / 1e6
        );
        assert!(r < p, "remat peak {r} ≥ plain peak {p}");
        for (a, b) in plain
            .net
            .ws
            .iter()
            .chain(&plain.net.bs)
            .zip(remat.net.ws.iter().chain(&remat.net.bs))
        {
            assert!(
                a.iter().zip(b).all(|(u, v)| u.to_bits() == v.to_bits()),
                "step {step}: remat's update differs from the plain step's"
            );
        }
    }
    pool::trim();
}

const DEPTH: usize = 24;
const N: usize = 128;
/// Bytes of one N × N f64 buffer.
const BUF: usize = N * N * 8;

/// Live bytes before backward, peak during it, live after it (gradients dropped), for a
/// chain of DEPTH layers `h = tanh(h·W)` with one shared N × N weight: backward frees as
/// it goes.
fn measure(retain: bool) -> (usize, usize, usize) {
    pool::trim();
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
    let before = live();
    reset_peak();
    let grads = tape
        .backward_with(loss, BackwardOptions::new().retain_graph(retain))
        .unwrap();
    let peak = peak();
    assert_eq!(grads.len(), 1);
    drop(grads);
    // what the program holds: buffers waiting in the pool are free for the next step
    let after = live() - pool::stats().bytes as isize;
    (before as usize, peak as usize, after as usize)
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

/// The counts are this thread's own: another thread allocating while a step is measured
/// changes nothing (the runner's "running for over 60 seconds" message once did).
#[test]
fn allocations_of_other_threads_are_not_counted() {
    use std::sync::{Arc, Barrier};
    let (start, end) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
    let (s, e) = (start.clone(), end.clone());
    let busy = std::thread::spawn(move || {
        s.wait();
        let before = allocs();
        for i in 0..10_000 {
            drop(std::hint::black_box(vec![i; 64]));
        }
        let made = allocs() - before;
        e.wait();
        made
    });
    let before = allocs();
    start.wait();
    end.wait();
    let here = allocs() - before;
    let there = busy.join().unwrap();
    assert_eq!(here, 0, "this thread allocated nothing meanwhile");
    assert_eq!(there, 10_000, "the other thread counted its own");
}

/// `io::load` reads a checkpoint's header first: a file holding more than its header
/// declares (here 32 MB of junk after a 5 KB checkpoint) is refused before its data is
/// read, so the refusal costs no buffer of the file's size.
#[test]
fn a_checkpoint_is_refused_before_its_data_is_read() {
    use tapegrad::io;
    let model = tapegrad::nn::Linear {
        weight: Array2::<f32>::zeros((32, 32)),
        bias: None,
    };
    let mut bytes = io::to_bytes(&model).unwrap();
    bytes.extend(std::iter::repeat_n(0u8, 32 << 20));
    let path =
        std::env::temp_dir().join(format!("tapegrad-junk-{}.safetensors", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    drop(bytes);
    let mut target = model.clone();
    let base = live();
    reset_peak();
    let err = io::load(&mut target, &path).unwrap_err();
    let extra = peak() - base;
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(err, io::CheckpointError::Format(_)), "{err}");
    assert!(extra < 1 << 20, "refusing the file allocated {extra} bytes");
}
