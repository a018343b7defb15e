//! `llsq` (cmpad's `llsq_obj`): `½ Σᵢ (sᵢ − Σⱼ xⱼ tᵢʲ)²` with `tᵢ = −1 + 2i/(n − 1)` and
//! `sᵢ = sign tᵢ`, as one matrix product: `½ ‖s − T·x‖²` with the Vandermonde matrix
//! `Tᵢⱼ = tᵢʲ` (n × m). Building `T` and `s` is part of every timed run, as the
//! reference computes `tᵢ` and its powers inside its loop.

use ndarray::Array2;
use serde_json::Value;
use tapegrad::{Tape, Tensor};

use crate::input::{count, err, field, flat, numbers};
use crate::runs::{Runs, measure};

/// `T` (n × m) and `s` (n × 1).
fn design(n: usize, m: usize) -> (Array2<f64>, Array2<f64>) {
    let mut t = Array2::zeros((n, m));
    let mut s = Array2::zeros((n, 1));
    let denom = n as f64 - 1.0;
    for (i, mut row) in t.rows_mut().into_iter().enumerate() {
        let ti = -1.0 + i as f64 * 2.0 / denom;
        s[[i, 0]] = if ti > 0.0 {
            1.0
        } else if ti < 0.0 {
            -1.0
        } else {
            0.0
        };
        let mut p = 1.0;
        for v in row.iter_mut() {
            *v = p;
            p *= ti;
        }
    }
    (t, s)
}

/// `½ ‖s − T·x‖²` for x an m × 1 column.
fn objective<'t>(t: Tensor<'t, f64>, s: Tensor<'t, f64>, x: Tensor<'t, f64>) -> Tensor<'t, f64> {
    (s - t.matmul(x)).square().sum() * 0.5
}

pub fn evaluate(function: &str, input: &Value) -> Result<crate::runs::Evaluated, String> {
    let x = numbers(field(input, "x")?, "x")?;
    let n = count(field(input, "n")?, "n")?;
    let m = x.len();
    let x = Array2::from_shape_vec((m, 1), x).map_err(|e| e.to_string())?;
    let runs = Runs::of(input);
    match function {
        "primal" => measure(
            runs,
            || {
                let (t, s) = design(n, m);
                let tape = Tape::new();
                let y = objective(tape.constant(t), tape.constant(s), tape.constant(&x));
                Ok(y.item())
            },
            Value::from,
        ),
        "gradient" => measure(
            runs,
            || {
                let (t, s) = design(n, m);
                let tape = Tape::new();
                let xt = tape.param(&x);
                let y = objective(tape.constant(t), tape.constant(s), xt);
                let mut grads = tape.backward(y).map_err(err)?;
                grads.take(xt).ok_or_else(|| "no gradient".to_string())
            },
            |g| flat(&g),
        ),
        _ => Err(crate::protocol::unknown("llsq", function)),
    }
}
