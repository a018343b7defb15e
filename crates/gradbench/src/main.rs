//! tapegrad as a [GradBench](https://github.com/gradbench/gradbench) tool.
//!
//! GradBench's evals talk to a tool over JSON lines: one message per line on stdin, one
//! response per line on stdout (`start`, `define`, `evaluate`, `analysis`). This program
//! implements every eval, one module each, with every derivative computed by tapegrad:
//! first order by the tape's backward, Jacobian-vector products and nested derivatives by
//! backward recorded on the tape ([`tapegrad::Tape::grad`]).
//!
//! ```text
//! tapegrad-gradbench [--threads N]
//! ```
//!
//! Each `evaluate` runs its function at least `min_runs` times and until the runs add up to
//! `min_seconds`, and reports one `evaluate` timing per run: the computation only, from the
//! prepared input (arrays) to the output (arrays), not the JSON on either side. One thread
//! by default, as GradBench asks; `--threads N` lets OpenBLAS (feature `openblas`) use N.
//!
//! With `TAPEGRAD_GRADBENCH_PROFILE=1` in the environment, every `evaluate` is also profiled
//! by op (`tapegrad::inspect::profile`) and the table printed to stderr: the ops' time, and
//! the tape's own (recording, backward bookkeeping).

mod ba;
mod det;
mod gd;
mod gmm;
mod hello;
mod ht;
mod input;
mod kmeans;
mod llsq;
mod lse;
mod lstm;
mod ode;
mod particle;
mod protocol;
mod runs;
mod saddle;

use std::io::{self, BufRead, Write};

fn main() {
    let threads = match parse_threads(std::env::args().skip(1)) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("tapegrad-gradbench: {e}\nusage: tapegrad-gradbench [--threads N]");
            std::process::exit(2);
        }
    };
    set_threads(threads);
    let stdin = io::stdin();
    let mut stdout = io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let response = protocol::respond(&line);
        if writeln!(stdout, "{response}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break; // the eval is gone
        }
    }
}

/// The thread count from the command line: `--threads N`, 1 by default.
fn parse_threads(mut args: impl Iterator<Item = String>) -> Result<usize, String> {
    let mut threads = 1;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--threads" => {
                let n = args.next().ok_or("--threads needs a number")?;
                threads = n
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or(format!("--threads {n}: not a positive number"))?;
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(threads)
}

#[cfg(feature = "openblas")]
fn set_threads(n: usize) {
    unsafe extern "C" {
        fn openblas_set_num_threads(num_threads: std::ffi::c_int);
    }
    let n = std::ffi::c_int::try_from(n).unwrap_or(std::ffi::c_int::MAX);
    // SAFETY: OpenBLAS's documented setter, called before any BLAS call runs.
    unsafe { openblas_set_num_threads(n) }
}

/// Without OpenBLAS everything runs on the calling thread (matrixmultiply's GEMM is
/// single-threaded here), whatever `--threads` says.
#[cfg(not(feature = "openblas"))]
fn set_threads(_n: usize) {}
