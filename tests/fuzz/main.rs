//! A fuzz harness over the public API: seeded random programs, each run under
//! `catch_unwind`, checked against invariants and, where the math allows, against central
//! finite differences.
//!
//! A program is a list of instructions over a pool of arrays: leaves (borrowed, transposed,
//! step-2 slices of other storage, owned copies, constants, parameters made inside
//! `no_grad`), every public op through its `try_` form with operands chosen to fit most of
//! the time (and not always), `detach`, `t`, ops inside `no_grad`, gradients recorded with
//! `Tape::grad` (so later ops and the finite differences go through second derivatives),
//! tensors from a second tape. Shapes include 0 and 1 and empty matrices with a dimension of 2⁴⁰; values include
//! NaN and infinities. Then backward (from a scalar or with a seed, retaining the graph
//! or not, reusing an earlier step's buffers), a second backward, value reads after
//! backward, an optimizer step and a checkpoint round trip.
//!
//! Invariants: no panic; errors only where the input is wrong (and then typed);
//! gradients of every leaf in its shape; a retained graph gives the same gradients twice;
//! reused buffers give the same gradients; and for finite f64 programs the gradient of every
//! array, summed over every way it went on the tape, matches central differences in a
//! random direction (skipped where two step sizes disagree: a kink or a tie).
//!
//! ```text
//! cargo test --test fuzz                                      # 300 programs
//! TAPEGRAD_FUZZ_PROGRAMS=1000000 cargo test --release --test fuzz -- --nocapture
//! TAPEGRAD_FUZZ_SEED=1234 cargo test --test fuzz -- --nocapture  # replay one program
//! TAPEGRAD_FUZZ_SEED=1234 TAPEGRAD_FUZZ_TRACE=1 cargo test --test fuzz -- --nocapture
//! ```

#[path = "../common/mod.rs"]
mod common;
mod programs;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use programs::{fuzz_one, generate, ops};

/// Runs programs `first..first + count`, each under `catch_unwind`; a panic (or a failed
/// invariant) reports the seed and the program. A watchdog turns a hang into a report.
fn fuzz(first: u64, count: u64) -> (u64, u64) {
    static CURRENT: AtomicU64 = AtomicU64::new(u64::MAX);
    static DONE: AtomicU64 = AtomicU64::new(0);
    std::thread::spawn(|| {
        let mut last = (u64::MAX, 0);
        loop {
            // generous on purpose: no program of this harness takes a second when correct
            std::thread::sleep(Duration::from_secs(300));
            let now = (
                CURRENT.load(Ordering::Relaxed),
                DONE.load(Ordering::Relaxed),
            );
            if now == last && now.0 != u64::MAX {
                eprintln!(
                    "fuzz: program {} made no progress for 300 s (a hang); replay it with \
                     TAPEGRAD_FUZZ_SEED={} cargo test --test fuzz -- --nocapture\n{:?}",
                    now.0,
                    now.0,
                    generate(now.0, ops::<f64>().len())
                );
                std::process::abort();
            }
            last = now;
        }
    });
    let mut compared = 0;
    for seed in first..first + count {
        CURRENT.store(seed, Ordering::Relaxed);
        let r = catch_unwind(AssertUnwindSafe(|| fuzz_one(seed)));
        match r {
            Ok(c) => compared += u64::from(c),
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!(
                    "fuzz program {seed} failed: {msg}\nreplay: TAPEGRAD_FUZZ_SEED={seed} cargo \
                     test --test fuzz -- --nocapture\n{:?}",
                    generate(seed, ops::<f64>().len())
                );
            }
        }
        DONE.fetch_add(1, Ordering::Relaxed);
    }
    CURRENT.store(u64::MAX, Ordering::Relaxed);
    (count, compared)
}

#[test]
fn random_programs_keep_every_invariant() {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let (first, count) = match (env("TAPEGRAD_FUZZ_SEED"), env("TAPEGRAD_FUZZ_PROGRAMS")) {
        (Some(seed), _) => {
            eprintln!("{:?}", generate(seed, ops::<f64>().len()));
            (seed, 1)
        }
        (None, Some(n)) => (0, n),
        (None, None) => (0, 300),
    };
    let (ran, compared) = fuzz(first, count);
    eprintln!(
        "fuzz: {ran} programs from seed {first} without a failure; {compared} gradients compared \
         with finite differences"
    );
    assert!(
        count < 50 || compared * 10 > count,
        "too few programs reached the gradient check"
    );
}

/// The op list above covers every public op of `src/ops` (as the gradcheck table does).
#[test]
fn the_fuzzer_knows_every_op() {
    let names: Vec<&str> = ops::<f64>().iter().map(|o| o.name).collect();
    let mut missing = Vec::new();
    for name in common::public_fns_of_ops() {
        let base = name.strip_prefix("try_").unwrap_or(&name).to_string();
        let not_an_op = base == "step"; // Span's builder
        if !not_an_op && !names.contains(&base.as_str()) && !missing.contains(&base) {
            missing.push(base);
        }
    }
    assert!(
        missing.is_empty(),
        "ops the fuzzer does not run: {missing:?}"
    );
}
