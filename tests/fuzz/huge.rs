//! The `huge` family: ops on inputs whose working copy or result cannot be allocated:
//! zero-stride views (one element, any shape) of 30000 × 30000 and beyond, a 2 × 2²⁹
//! right-hand side, the diagonal matrix of a 10⁵ × 1 or 2³³ × 1 column, `trace`'s
//! derivative of a huge matrix. Each must be `TooLarge` or `OutOfMemory` (or work), never
//! a panic and never an abort.
//!
//! An abort (a refused allocation of Rust's collections) kills the process, so each
//! program runs in a child process (this test binary again, its test `fuzz_child`) under
//! an address-space limit of 4 GiB (`ulimit -v`), where every allocation past it is
//! refused however much memory the machine has; the parent requires the child to pass.

use std::process::Command;
use std::time::{Duration, Instant};

use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tapegrad::{ErrorKind, Tape, Tensor};

use crate::Family;

pub(crate) const FAMILY: Family = Family {
    name: "huge",
    default: 6,
    run,
    describe,
};

fn describe(seed: u64) -> String {
    format!("{:?}", generate(seed))
}

/// The address-space limit of a child, in KiB.
const LIMIT_KIB: u64 = 4 << 20;

#[derive(Clone, Copy, Debug)]
enum Case {
    /// A linear-algebra op on an n × n zero-stride matrix (and an n × 1 right-hand side).
    #[cfg_attr(not(feature = "linalg"), allow(dead_code))]
    Linalg { op: &'static str, n: usize },
    /// `solve` of a 2 × 2 matrix with a 2 × `cols` zero-stride right-hand side.
    #[cfg_attr(not(feature = "linalg"), allow(dead_code))]
    Rhs { cols: usize },
    /// The derivative of `trace` of an n × n zero-stride parameter, by backward or by
    /// `Tape::grad`.
    Trace { n: usize, recorded: bool },
    /// `try_diag_embed` of a `len` × 1 zero-stride column.
    DiagEmbed { len: usize },
    /// `(n × 1)·(1 × n)` of zero-stride operands.
    Outer { n: usize },
    /// `try_broadcast_to` of a 1 × 1 to n × n.
    Broadcast { n: usize },
}

/// The sides of the n × n inputs: up to 2³¹, whose 2⁶² elements a view can still index
/// (2³² × 2³² is past `isize::MAX`, which ndarray refuses before the library sees it).
const SIZES: [usize; 4] = [30_000, 1 << 16, 1 << 20, 1 << 31];

fn generate(seed: u64) -> Case {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = SIZES[rng.random_range(0..SIZES.len())];
    let linalg = cfg!(feature = "linalg");
    let kinds = if linalg { 7 } else { 4 };
    match rng.random_range(0..kinds) {
        0 => Case::Trace {
            n,
            recorded: rng.random_bool(0.5),
        },
        1 => Case::DiagEmbed {
            len: [100_000, 1 << 20, 1 << 33, 1 << 40][rng.random_range(0..4)],
        },
        2 => Case::Outer { n },
        3 => Case::Broadcast { n },
        4 => Case::Rhs {
            cols: [1 << 29, 1 << 30, 1 << 40][rng.random_range(0..3)],
        },
        _ => {
            let ops = [
                "inv",
                "det",
                "slogdet",
                "logdet",
                "cholesky",
                "eigh",
                "solve",
                "solve_triangular",
                "cho_solve",
            ];
            Case::Linalg {
                op: ops[rng.random_range(0..ops.len())],
                n,
            }
        }
    }
}

/// Runs case `seed` in a child process under the address-space limit.
fn run(seed: u64) -> bool {
    let case = generate(seed);
    let exe = std::env::current_exe().expect("the test binary");
    let log = std::env::temp_dir().join(format!(
        "tapegrad-fuzz-child-{}-{seed}.log",
        std::process::id()
    ));
    let file = std::fs::File::create(&log).expect("a log file for the child");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {LIMIT_KIB} && exec \"$0\" \"$@\""))
        .arg(&exe)
        .args(["fuzz_child", "--exact", "--nocapture", "--test-threads=1"])
        .env("TAPEGRAD_FUZZ_CHILD", seed.to_string())
        .env("RUST_BACKTRACE", "0")
        .stdout(file.try_clone().expect("the log file"))
        .stderr(file)
        .spawn()
        .expect("a child process");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("the child's status") {
            break Some(status);
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let tail: String = {
        let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(12)..].join("\n")
    };
    match status {
        None => {
            panic!("{case:?} ran for 120 s (a hang, or an allocation that went through)\n{tail}")
        }
        Some(s) if s.success() => true,
        Some(s) => {
            use std::os::unix::process::ExitStatusExt;
            match s.signal() {
                Some(6) => panic!("{case:?} aborted the process (SIGABRT)\n{tail}"),
                Some(sig) => panic!("{case:?} killed the process (signal {sig})\n{tail}"),
                None => panic!("{case:?} failed in the child ({s})\n{tail}"),
            }
        }
    }
}

/// A zero-stride view of one element as an `r × c` matrix.
fn zero_stride(one: &Array2<f64>, shape: (usize, usize)) -> ndarray::ArrayView2<'_, f64> {
    one.broadcast(shape)
        .expect("a 1 × 1 broadcasts to any shape")
}

/// Whether `r` is a result or a refusal for its size.
fn sized<T>(what: &str, r: tapegrad::Result<T>) {
    if let Err(e) = r {
        assert!(
            matches!(
                e.kind(),
                ErrorKind::TooLarge { .. }
                    | ErrorKind::OutOfMemory { .. }
                    | ErrorKind::Singular { .. }
                    | ErrorKind::NotPositiveDefinite { .. }
                    | ErrorKind::Lapack { .. }
            ),
            "{what}: {e}"
        );
    }
}

/// The child: runs case `seed` (its assertions fail the child's test).
pub(crate) fn child(seed: u64) {
    let case = generate(seed);
    eprintln!("fuzz huge: {case:?}");
    let one = Array2::from_elem((1, 1), 0.5);
    let tape = Tape::<f64>::new();
    match case {
        Case::Trace { n, recorded } => {
            let x = tape.param(zero_stride(&one, (n, n)));
            let y = x.trace();
            if recorded {
                sized("Tape::grad of trace", tape.grad(y, &[x]));
            } else {
                sized("backward of trace", tape.backward(y));
            }
        }
        Case::DiagEmbed { len } => {
            let v = tape.param(zero_stride(&one, (len, 1)));
            sized("diag_embed", v.try_diag_embed());
        }
        Case::Outer { n } => {
            let a = tape.param(zero_stride(&one, (n, 1)));
            let b = tape.param(zero_stride(&one, (1, n)));
            sized("matmul", a.try_matmul(b));
        }
        Case::Broadcast { n } => {
            let a = tape.param(Array2::from_elem((1, 1), 0.5));
            sized("broadcast_to", a.try_broadcast_to((n, n)));
        }
        Case::Rhs { cols } => linalg(
            &tape,
            "solve",
            tape.param(ndarray::array![[2.0, 1.0], [1.0, 3.0]]),
            tape.param(zero_stride(&one, (2, cols))),
        ),
        Case::Linalg { op, n } => {
            let a = tape.param(zero_stride(&one, (n, n)));
            let b = tape.param(zero_stride(&one, (n, 1)));
            linalg(&tape, op, a, b);
        }
    }
}

#[cfg(feature = "linalg")]
fn linalg<'t>(_: &'t Tape<'t, f64>, op: &str, a: Tensor<'t, f64>, b: Tensor<'t, f64>) {
    match op {
        "inv" => sized(op, a.try_inv()),
        "det" => sized(op, a.try_det()),
        "slogdet" => sized(op, a.try_slogdet()),
        "logdet" => sized(op, a.try_logdet()),
        "cholesky" => sized(op, a.try_cholesky()),
        "eigh" => sized(op, a.try_eigh()),
        "solve" => sized(op, a.try_solve(b)),
        "solve_triangular" => sized(op, a.try_solve_triangular(b, true, false)),
        "cho_solve" => sized(op, a.try_cho_solve(b)),
        _ => unreachable!("{op}"),
    }
}

#[cfg(not(feature = "linalg"))]
fn linalg<'t>(_: &'t Tape<'t, f64>, op: &str, _: Tensor<'t, f64>, _: Tensor<'t, f64>) {
    unreachable!("{op} needs the linalg feature")
}
