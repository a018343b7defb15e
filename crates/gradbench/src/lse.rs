//! `lse`: `LSE(x) = m + ln Σᵢ exp(xᵢ − m)`, `m = max x`, written from the primitives
//! (max, exp, sum, log) as the eval asks, and its gradient by backward.
//!
//! The maximum is a constant, as a user writing the stable form makes it: `m` only shifts
//! the exponents, and the gradient through it is `(1 − Σ softmax) = 0` in exact arithmetic.

use ndarray::Array2;
use serde_json::Value;
use tapegrad::{Tape, Tensor};

use crate::input::{err, field, flat, numbers};
use crate::runs::{Runs, measure};

/// `m + ln Σ exp(x − m)` of a 1 × n row.
fn lse<'t>(x: Tensor<'t, f64>) -> Tensor<'t, f64> {
    let m = x.max().item();
    (x - m).exp().sum().log() + m
}

pub fn evaluate(function: &str, input: &Value) -> Result<crate::runs::Evaluated, String> {
    let x = numbers(field(input, "x")?, "x")?;
    let x = Array2::from_shape_vec((1, x.len()), x).map_err(|e| e.to_string())?;
    let runs = Runs::of(input);
    match function {
        "primal" => measure(
            runs,
            || {
                let tape = Tape::new();
                Ok(lse(tape.constant(&x)).item())
            },
            Value::from,
        ),
        "gradient" => measure(
            runs,
            || {
                let tape = Tape::new();
                let xt = tape.param(&x);
                let mut grads = tape.backward(lse(xt)).map_err(err)?;
                grads.take(xt).ok_or_else(|| "no gradient".to_string())
            },
            |g| flat(&g),
        ),
        _ => Err(crate::protocol::unknown("lse", function)),
    }
}
