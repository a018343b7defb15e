//! `particle`: a charged particle's path under two fixed charges, one of them at
//! `(10, 10 − w)`; find the control `w` that makes it cross the x-axis at the origin
//! (Pearlmutter and Siskind). The path is Euler's method with the force `−∇ₓp(x; w)` (an
//! inner derivative, taken at every step), and `w` is found by gradient descent on the
//! squared crossing position, whose derivative differentiates through every inner one:
//! nested AD, on one tape per evaluation. `ff`, `fr`, `rf`, `rr` name the modes of the
//! outer (argmin) and inner (force) derivatives.

use ndarray::array;
use serde_json::Value;
use tapegrad::{Tape, Tensor};

use crate::gd::{Mode, argmin, gradient, gradient_value, variable};
use crate::input::{field, number};
use crate::runs::{Runs, measure};

const DT: f64 = 0.1;

/// `p(x; w) = 1/‖x − (10, 10 − w)‖ + 1/‖x − (10, 0)‖` for x a 1 × 2 row.
fn potential<'t>(x: Tensor<'t, f64>, w: Tensor<'t, f64>) -> Tensor<'t, f64> {
    let tape = x.tape();
    let movable = Tensor::concat_cols(&[tape.scalar(10.0), -w + 10.0]);
    let fixed = tape.constant(array![[10.0, 0.0]]);
    let distance = |c: Tensor<'t, f64>| (x - c).square().sum().sqrt();
    distance(movable).recip() + distance(fixed).recip()
}

/// The squared x-coordinate where the path crosses the x-axis, as a function of `w`.
/// With `nested` false (no derivative of the result will be taken), each step's position
/// is a fresh leaf, so the tape holds no chain through the steps.
fn crossing<'t>(w: Tensor<'t, f64>, inner: Mode, nested: bool) -> Result<Tensor<'t, f64>, String> {
    let tape = w.tape();
    let mut x = tape.constant(array![[0.0, 8.0]]);
    let mut v = tape.constant(array![[0.75, 0.0]]);
    for _ in 0..1_000_000 {
        let at = if nested {
            variable(x)
        } else {
            tape.param(x.value())
        };
        let force = gradient(potential(at, w), at, inner)?;
        let (x_next, v_next) = (at + v * DT, v - force * DT);
        if x_next.value()[[0, 1]] < 0.0 {
            x = at;
            break;
        }
        (x, v) = (x_next, v_next);
    }
    let (x1, x2) = (x.slice_cols(0..1), x.slice_cols(1..2));
    let (v1, v2) = (v.slice_cols(0..1), v.slice_cols(1..2));
    let dt_final = -x2 / v2;
    Ok((x1 + dt_final * v1).square())
}

/// The final `w` of the argmin from `w0`.
fn solve(w0: f64, outer: Mode, inner: Mode) -> Result<f64, String> {
    let objective = |w: &[f64]| {
        let tape = Tape::new();
        Ok(crossing(tape.scalar(w[0]), inner, false)?.item())
    };
    let derivative = |w: &[f64]| {
        let tape = Tape::new();
        let wt = tape.param(array![[w[0]]]);
        let y = crossing(wt, inner, true)?;
        gradient_value(&tape, y, wt, outer)
    };
    Ok(argmin(objective, derivative, &[w0])?[0])
}

pub fn evaluate(function: &str, input: &Value) -> Result<crate::runs::Evaluated, String> {
    let w0 = number(field(input, "w")?, "w")?;
    let (outer, inner) =
        Mode::pair(function).ok_or_else(|| crate::protocol::unknown("particle", function))?;
    measure(Runs::of(input), || solve(w0, outer, inner), Value::from)
}
