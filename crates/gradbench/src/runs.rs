//! GradBench's timing convention: run at least `min_runs` times and until the runs add up
//! to `min_seconds`; one `evaluate` timing per run, of the computation alone.

use std::time::Instant;

use serde_json::Value;

/// An evaluation's output (any one run's) and the nanoseconds of every run.
pub struct Evaluated {
    pub output: Value,
    pub timings: Vec<u64>,
}

/// How often to run: the input's `min_runs` (default 1) and `min_seconds` (default 1).
#[derive(Clone, Copy, Debug)]
pub struct Runs {
    pub min_runs: usize,
    pub min_seconds: f64,
}

impl Runs {
    /// The counts in `input`, with GradBench's defaults.
    pub fn of(input: &Value) -> Runs {
        let min_runs = input.get("min_runs").and_then(Value::as_u64).unwrap_or(1);
        let min_seconds = input.get("min_seconds").and_then(Value::as_f64);
        Runs {
            min_runs: usize::try_from(min_runs).unwrap_or(usize::MAX).max(1),
            min_seconds: min_seconds.unwrap_or(1.0),
        }
    }

    /// Exactly once (hello's bare-number inputs carry no counts).
    pub const ONCE: Runs = Runs {
        min_runs: 1,
        min_seconds: 0.0,
    };
}

/// Runs `f` as `runs` asks, timing each call; then turns the last run's result into JSON
/// with `output` (untimed).
pub fn measure<T>(
    runs: Runs,
    mut f: impl FnMut() -> Result<T, String>,
    output: impl FnOnce(T) -> Value,
) -> Result<Evaluated, String> {
    let mut timings = Vec::new();
    let mut elapsed = 0.0;
    let mut last = None;
    while timings.len() < runs.min_runs || elapsed < runs.min_seconds {
        let start = Instant::now();
        let result = f()?;
        let ns = start.elapsed().as_nanos();
        timings.push(u64::try_from(ns).unwrap_or(u64::MAX));
        elapsed += ns as f64 * 1e-9;
        // the previous run's result is dropped here, outside the timed region
        last = Some(result);
    }
    let last = last.expect("at least one run");
    Ok(Evaluated {
        output: output(last),
        timings,
    })
}
