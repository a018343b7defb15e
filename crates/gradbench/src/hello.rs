//! `hello`: `square(x) = x²` and its derivative `double(x) = 2x`, the protocol's smoke
//! test. Inputs are bare numbers, run once.

use ndarray::Array2;
use serde_json::Value;
use tapegrad::Tape;

use crate::input::{err, number};
use crate::runs::{Evaluated, Runs, measure};

pub fn evaluate(function: &str, input: &Value) -> Result<Evaluated, String> {
    let x = Array2::from_elem((1, 1), number(input, "hello input")?);
    match function {
        "square" => measure(
            Runs::ONCE,
            || {
                let tape = Tape::new();
                Ok(tape.constant(&x).square().item())
            },
            Value::from,
        ),
        "double" => measure(
            Runs::ONCE,
            || {
                let tape = Tape::new();
                let xt = tape.param(&x);
                let grads = tape.backward(xt.square()).map_err(err)?;
                Ok(grads.get(xt).ok_or("no gradient")?[[0, 0]])
            },
            Value::from,
        ),
        _ => Err(crate::protocol::unknown("hello", function)),
    }
}
