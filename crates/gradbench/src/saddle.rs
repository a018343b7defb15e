//! `saddle`: `min_x max_y f(x, y)` for `f(x, y) = (x₁² + x₂²) − (y₁² + y₂²)` by gradient
//! descent inside gradient descent (Pearlmutter and Siskind): the outer objective is the
//! inner maximum, so its derivative differentiates through every step of the inner solver
//! and the inner derivatives it takes: nested AD, on one tape per evaluation. Then the
//! argmax over `y` at the optimal `x`, with the outer mode. `ff`, `fr`, `rf`, `rr` name
//! the modes of the outer and inner derivatives.

use ndarray::Array2;
use serde_json::Value;
use tapegrad::{Tape, Tensor};

use crate::gd::{Mode, argmin, argmin_recorded, gradient_value};
use crate::input::{field, numbers};
use crate::runs::{Runs, measure};

/// `f(x, y)` for 1 × 2 rows.
fn f<'t>(x: Tensor<'t, f64>, y: Tensor<'t, f64>) -> Tensor<'t, f64> {
    x.square().sum() - y.square().sum()
}

/// `max_y f(x, y)` by the argmin of `−f` from `start`, recorded.
fn inner_max<'t>(
    x: Tensor<'t, f64>,
    start: &[f64],
    inner: Mode,
) -> Result<Tensor<'t, f64>, String> {
    let tape = x.tape();
    let y0 =
        tape.constant(Array2::from_shape_vec((1, 2), start.to_vec()).map_err(|e| e.to_string())?);
    let y = argmin_recorded(&|y| -f(x, y), inner, y0)?;
    Ok(f(x, y))
}

fn row<'t>(tape: &'t Tape<'t, f64>, v: &[f64], param: bool) -> Tensor<'t, f64> {
    let a = Array2::from_shape_vec((1, v.len()), v.to_vec()).expect("a row");
    if param {
        tape.param(a)
    } else {
        tape.constant(a)
    }
}

/// `(x, y)` of the saddle point found from `start`.
fn solve(start: &[f64], outer: Mode, inner: Mode) -> Result<Vec<f64>, String> {
    // 1. x = argmin_x max_y f(x, y), the outer derivative through the inner solver
    let objective = |x: &[f64]| {
        let tape = Tape::new();
        Ok(inner_max(row(&tape, x, false), start, inner)?.item())
    };
    let derivative = |x: &[f64]| {
        let tape = Tape::new();
        let xt = row(&tape, x, true);
        let m = inner_max(xt, start, inner)?;
        gradient_value(&tape, m, xt, outer)
    };
    let x = argmin(objective, derivative, start)?;
    // 2. y = argmax_y f(x, y), not nested, with the outer mode
    let minus_f = |y: &[f64]| {
        let tape = Tape::new();
        Ok(-f(row(&tape, &x, false), row(&tape, y, false)).item())
    };
    let minus_df = |y: &[f64]| {
        let tape = Tape::new();
        let yt = row(&tape, y, true);
        gradient_value(&tape, -f(row(&tape, &x, false), yt), yt, outer)
    };
    let y = argmin(minus_f, minus_df, start)?;
    Ok([x, y].concat())
}

pub fn evaluate(function: &str, input: &Value) -> Result<crate::runs::Evaluated, String> {
    let start = numbers(field(input, "start")?, "start")?;
    if start.len() != 2 {
        return Err("saddle: start needs 2 numbers".into());
    }
    let (outer, inner) =
        Mode::pair(function).ok_or_else(|| crate::protocol::unknown("saddle", function))?;
    measure(Runs::of(input), || solve(&start, outer, inner), Value::from)
}
