//! A fuzz harness over the public API: seeded random programs in several families, each
//! program run under `catch_unwind` and checked against invariants and, where the math
//! allows, against central finite differences.
//!
//! | family | module | what a program is |
//! |--------|--------|-------------------|
//! | `programs` | `programs.rs` | instructions over every public op (and two custom ops), leaves of every kind, `Tape::grad` recorded mid-program, backward, optimizer steps, a checkpoint round trip; `Tape::grad` compared with backward, and second order (`Tape::grad` twice, `functional::hvp` and `jvp`) against finite differences of the gradient wherever the first order is |
//! | `custom` | `rules.rs` | custom ops with every legal and illegal VJP: several contributions per input, broadcast shapes, none for some input, NaN, wrong shapes, a nonexistent input, a panic; array form only or with a tensor form |
//! | `remat` | `rules.rs` | remat blocks, nested, holding custom ops, panicking when run again in backward |
//! | `linalg` | `linalg.rs` | `det`, `slogdet`, `logdet`, `inv`, `solve`, ... at singular, near-singular, subnormal and huge matrices, first and second order (`--features openblas`) |
//! | `huge` | `huge.rs` | linear algebra and growing ops on inputs whose working copy cannot be allocated, each in a child process under an address-space limit (an abort kills a process) |
//! | `optim` | `optim.rs` | L-BFGS, SGD, Adam and gradient clipping on models whose visitors disagree in order, with NaN, wrong-shaped gradients and bad hyperparameters |
//! | `model` | `model.rs` | `model_hvp`, `model_jvp` and `gradcheck_model` of random small MLPs (the empty one too) with directions missing a parameter, naming an extra one, wrong-shaped or NaN, wrong and empty inputs, a panicking loss; against finite differences of backward |
//! | `checkpoint` | `checkpoint.rs` | mutations of a valid safetensors file (bytes and header), special files; the model as a PyTorch state dict through `io::from_torch_bytes` and `io::from_bytes` |
//! | `inspect` | `inspect.rs` | `to_dot`, `to_svg` (well-formed XML) and `explain` of random graphs with hostile names |
//!
//! Each `programs` program runs on one of the paths of the elementwise kernels (AVX2 +
//! FMA, the baseline, the scalar std loop: `tapegrad::bench_kernels`), in turn.
//!
//! Invariants: no panic but the ones a program injects (and those propagate); errors only
//! where the input is wrong (and then typed); the families' own invariants in their
//! modules.
//!
//! ```text
//! cargo test --test fuzz                       # every family, a few hundred programs
//! TAPEGRAD_FUZZ_PROGRAMS=1000000 cargo test --release --features openblas --test fuzz -- --nocapture
//! TAPEGRAD_FUZZ_FAMILY=custom cargo test --test fuzz -- --nocapture   # one family (or a,b)
//! TAPEGRAD_FUZZ_FAMILY=custom TAPEGRAD_FUZZ_SEED=1234 cargo test --test fuzz -- --nocapture
//! TAPEGRAD_FUZZ_FAMILY=programs TAPEGRAD_FUZZ_SEED=1234 TAPEGRAD_FUZZ_TRACE=1 cargo test --test fuzz -- --nocapture
//! TAPEGRAD_FUZZ_KEEP_GOING=1 ...               # report every failing program, not the first
//! ```
//!
//! `TAPEGRAD_FUZZ_PROGRAMS` is the number of programs of the `programs` family; the other
//! families run in proportion to their default counts (so `huge`, which starts a process
//! per program, runs 1 for every 50). `TAPEGRAD_FUZZ_FIRST` moves the first seed.

#[path = "../common/mod.rs"]
mod common;

mod checkpoint;
mod huge;
mod inspect;
#[cfg(feature = "linalg")]
mod linalg;
mod model;
mod optim;
mod oracle;
mod programs;
mod rules;

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The payload of the panics that programs inject into user code (a custom VJP, a remat
/// block): they must reach the caller of backward as they are. Any other panic is a
/// failure.
#[derive(Debug)]
pub(crate) struct Injected;

/// Panics with [`Injected`].
pub(crate) fn inject() -> ! {
    std::panic::panic_any(Injected)
}

/// Whether a caught panic is an injected one.
pub(crate) fn injected(e: &(dyn std::any::Any + Send)) -> bool {
    e.is::<Injected>()
}

/// A caught panic's message, with where it was raised.
pub(crate) fn message(e: &(dyn std::any::Any + Send)) -> String {
    let text = e
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| format!("{e:?}"));
    match LAST_PANIC.with(|l| l.borrow_mut().take()) {
        Some(at) => format!("{text} (panicked at {at})"),
        None => text,
    }
}

thread_local! {
    /// Where this thread last panicked (set by the hook, read by [`message`]).
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A panic hook that stays silent for injected panics and remembers where others were
/// raised; it prints them as the default hook does, unless `TAPEGRAD_FUZZ_KEEP_GOING`
/// (then the report has them).
fn install_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().is::<Injected>() {
                return;
            }
            if let Some(l) = info.location() {
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(l.to_string()));
            }
            if !keep_going() {
                previous(info);
            }
        }));
    });
}

/// Catches a panic of `f`, as `catch_unwind` does, with the hook installed.
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    install_hook();
    catch_unwind(AssertUnwindSafe(f))
}

/// Between the failures of one program's independent checks ([`all`]).
const AND: &str = "\n-- and --\n";

/// Runs every check, also after one fails, and panics with all their failures: a
/// program's independent checks each report their defect.
pub(crate) fn all(checks: Vec<Box<dyn FnOnce() + '_>>) {
    let failures: Vec<String> = checks
        .into_iter()
        .filter_map(|c| catch(c).err().map(|e| message(&*e)))
        .collect();
    if !failures.is_empty() {
        panic!("{}", failures.join(AND));
    }
}

/// An environment variable as a number.
fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok())
}

fn keep_going() -> bool {
    std::env::var_os("TAPEGRAD_FUZZ_KEEP_GOING").is_some()
}

/// Whether to print every step of a replayed program (`TAPEGRAD_FUZZ_TRACE=1`).
pub(crate) fn trace() -> bool {
    std::env::var_os("TAPEGRAD_FUZZ_TRACE").is_some()
}

/// A family of programs: its name (for `TAPEGRAD_FUZZ_FAMILY`), the programs of a default
/// run, how to run program `seed` (returning whether an oracle compared it), and how to
/// describe it for a report.
pub(crate) struct Family {
    pub(crate) name: &'static str,
    pub(crate) default: u64,
    pub(crate) run: fn(u64) -> bool,
    pub(crate) describe: fn(u64) -> String,
}

/// The programs of the `programs` family in a default run: the others scale with it.
const BASE: u64 = 300;

/// Runs the family's programs (or the one of `TAPEGRAD_FUZZ_SEED`), unless
/// `TAPEGRAD_FUZZ_FAMILY` names other families. Returns the programs run and compared.
fn fuzz(family: &Family) -> (u64, u64) {
    if let Ok(wanted) = std::env::var("TAPEGRAD_FUZZ_FAMILY") {
        if !wanted.split(',').any(|w| w.trim() == family.name) {
            eprintln!(
                "fuzz {}: skipped (TAPEGRAD_FUZZ_FAMILY={wanted})",
                family.name
            );
            return (0, 0);
        }
    }
    let first = env("TAPEGRAD_FUZZ_FIRST").unwrap_or(0);
    let (first, count) = match (env("TAPEGRAD_FUZZ_SEED"), env("TAPEGRAD_FUZZ_PROGRAMS")) {
        (Some(seed), _) => {
            eprintln!(
                "fuzz {} program {seed}: {}",
                family.name,
                (family.describe)(seed)
            );
            (seed, 1)
        }
        (None, Some(n)) => (first, (n * family.default).div_ceil(BASE)),
        (None, None) => (first, family.default),
    };
    // a watchdog turns a hang into a report
    let current = Arc::new(AtomicU64::new(u64::MAX));
    let done = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicU64::new(0));
    {
        let (current, done, finished) = (current.clone(), done.clone(), finished.clone());
        let (name, describe) = (family.name, family.describe);
        std::thread::spawn(move || {
            let mut last = (u64::MAX, 0);
            while finished.load(Ordering::Relaxed) == 0 {
                // generous on purpose: no program of this harness takes a second when correct
                std::thread::sleep(Duration::from_secs(300));
                let now = (
                    current.load(Ordering::Relaxed),
                    done.load(Ordering::Relaxed),
                );
                if now == last && now.0 != u64::MAX && finished.load(Ordering::Relaxed) == 0 {
                    eprintln!(
                        "fuzz {name}: program {} made no progress for 300 s (a hang); replay it \
                         with TAPEGRAD_FUZZ_FAMILY={name} TAPEGRAD_FUZZ_SEED={} cargo test \
                         --test fuzz -- --nocapture\n{}",
                        now.0,
                        now.0,
                        describe(now.0)
                    );
                    std::process::abort();
                }
                last = now;
            }
        });
    }
    let mut compared = 0;
    let mut failures = Vec::new();
    for seed in first..first + count {
        current.store(seed, Ordering::Relaxed);
        match catch(|| (family.run)(seed)) {
            Ok(c) => compared += u64::from(c),
            Err(e) => {
                let msg = message(&*e);
                let replay = format!(
                    "replay: TAPEGRAD_FUZZ_FAMILY={} TAPEGRAD_FUZZ_SEED={seed} cargo test --test \
                     fuzz -- --nocapture",
                    family.name
                );
                if keep_going() {
                    for part in msg.split(AND) {
                        let line = part.lines().next().unwrap_or("");
                        eprintln!("fuzz {} program {seed} failed: {line}", family.name);
                    }
                    failures.push(seed);
                } else {
                    finished.store(1, Ordering::Relaxed);
                    panic!(
                        "fuzz {} program {seed} failed: {msg}\n{replay}\n{}",
                        family.name,
                        (family.describe)(seed)
                    );
                }
            }
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    finished.store(1, Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "fuzz {}: {} of {count} programs failed: {failures:?}",
        family.name,
        failures.len()
    );
    eprintln!(
        "fuzz {}: {count} programs from seed {first} without a failure; {compared} compared \
         with an oracle",
        family.name
    );
    (count, compared)
}

#[test]
fn random_programs_keep_every_invariant() {
    let (count, compared) = fuzz(&programs::FAMILY);
    assert!(
        count < 50 || compared * 10 > count,
        "too few programs reached the gradient check"
    );
}

#[test]
fn custom_ops_keep_every_invariant() {
    fuzz(&rules::CUSTOM);
}

#[test]
fn remat_blocks_keep_every_invariant() {
    fuzz(&rules::REMAT);
}

#[cfg(feature = "linalg")]
#[test]
fn linear_algebra_keeps_every_invariant() {
    let (count, compared) = fuzz(&linalg::FAMILY);
    assert!(
        count < 50 || compared * 4 > count,
        "too few programs reached the finite differences"
    );
}

#[test]
fn huge_inputs_never_abort() {
    fuzz(&huge::FAMILY);
}

/// The child process of the `huge` family: runs the case `TAPEGRAD_FUZZ_CHILD` names (and
/// nothing without it).
#[test]
fn fuzz_child() {
    if let Some(seed) = env("TAPEGRAD_FUZZ_CHILD") {
        huge::child(seed);
    }
}

#[test]
fn optimizers_keep_every_invariant() {
    fuzz(&optim::FAMILY);
}

#[test]
fn model_derivatives_keep_every_invariant() {
    fuzz(&model::FAMILY);
}

#[test]
fn checkpoints_load_or_fail_cleanly() {
    fuzz(&checkpoint::FAMILY);
}

#[test]
fn inspection_keeps_every_invariant() {
    fuzz(&inspect::FAMILY);
}

/// The op list of the `programs` family covers every public op of `src/ops` (as the
/// gradcheck table does).
#[test]
fn the_fuzzer_knows_every_op() {
    let names: Vec<&str> = programs::ops::<f64>().iter().map(|o| o.name).collect();
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
