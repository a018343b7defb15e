//! `ode` (cmpad's `an_ode`): `y₀' = x₀`, `yᵢ' = xᵢ·yᵢ₋₁`, `y(0) = 0`, integrated to
//! `t = 2` by `s` classic RK4 steps; the primal is `y(2)`, the gradient that of its last
//! component with respect to `x`, by backward through every step.
//!
//! The state is a 1 × n row; the right-hand side is one product with the state shifted by
//! one (`[1, y₀, …, yₙ₋₂]`, so that the first component is `x₀`).

use ndarray::Array2;
use serde_json::Value;
use tapegrad::{Tape, Tensor};

use crate::input::{count, err, field, flat, numbers};
use crate::runs::{Runs, measure};

/// `f(y) = x ∘ [1, y₀, …, yₙ₋₂]`.
fn rhs<'t>(x: Tensor<'t, f64>, one: Tensor<'t, f64>, y: Tensor<'t, f64>) -> Tensor<'t, f64> {
    let n = y.cols();
    x * Tensor::concat_cols(&[one, y.slice_cols(0..n - 1)])
}

/// One classic RK4 step of size `h` from `y`.
fn step<'t>(x: Tensor<'t, f64>, y: Tensor<'t, f64>, h: f64) -> Tensor<'t, f64> {
    let one = x.tape().scalar(1.0);
    let k1 = rhs(x, one, y);
    let k2 = rhs(x, one, y + k1 * (h / 2.0));
    let k3 = rhs(x, one, y + k2 * (h / 2.0));
    let k4 = rhs(x, one, y + k3 * h);
    y + (k1 + k2 * 2.0 + k3 * 2.0 + k4) * (h / 6.0)
}

/// `y(2)` after `s` RK4 steps from `y = 0`, all on one tape (for the gradient).
fn solve<'t>(tape: &'t Tape<'t, f64>, x: Tensor<'t, f64>, s: usize) -> Tensor<'t, f64> {
    let mut y = tape.constant(Array2::zeros((1, x.cols())));
    for _ in 0..s {
        y = step(x, y, 2.0 / s as f64);
    }
    y
}

/// `y(2)` without a derivative: a tape per step, so that no step's intermediates outlive
/// it (one tape for all steps would hold all of them until it is dropped).
fn solve_primal(x: &Array2<f64>, s: usize) -> Array2<f64> {
    let mut y = Array2::zeros((1, x.ncols()));
    for _ in 0..s {
        let tape = Tape::new();
        y = step(tape.constant(x), tape.constant(&y), 2.0 / s as f64).value();
    }
    y
}

pub fn evaluate(function: &str, input: &Value) -> Result<crate::runs::Evaluated, String> {
    let x = numbers(field(input, "x")?, "x")?;
    let s = count(field(input, "s")?, "s")?;
    let n = x.len();
    if n == 0 || s == 0 {
        return Err("ode needs n ≥ 1 and s ≥ 1".into());
    }
    let x = Array2::from_shape_vec((1, n), x).map_err(|e| e.to_string())?;
    let runs = Runs::of(input);
    match function {
        "primal" => measure(runs, || Ok(solve_primal(&x, s)), |y| flat(&y)),
        "gradient" => measure(
            runs,
            || {
                let tape = Tape::new();
                let xt = tape.param(&x);
                let last = solve(&tape, xt, s).slice_cols(n - 1..n);
                let mut grads = tape.backward(last).map_err(err)?;
                grads.take(xt).ok_or_else(|| "no gradient".to_string())
            },
            |g| flat(&g),
        ),
        _ => Err(crate::protocol::unknown("ode", function)),
    }
}
