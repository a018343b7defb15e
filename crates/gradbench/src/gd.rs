//! What `particle` and `saddle` share: GradBench's gradient-descent solver (upstream's
//! `cpp/gradbench/gd.hpp`, step for step), and derivatives in either mode recorded on a
//! tape so that an outer derivative can differentiate through them.
//!
//! tapegrad is a reverse-mode library: forward mode ("f") is the Jacobian-vector product
//! by the double-VJP trick, as [`tapegrad::functional::jvp`] does it, but recorded on the
//! caller's tape instead of a tape of its own, so that it nests.

use ndarray::Array2;
use tapegrad::{BackwardOptions, Tape, Tensor};

use crate::input::err;

/// How a derivative is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Reverse mode: the gradient by backward.
    Reverse,
    /// Forward mode: one Jacobian-vector product per input direction.
    Forward,
}

impl Mode {
    /// The (outer, inner) modes of a function name `ff`, `fr`, `rf` or `rr`.
    pub fn pair(function: &str) -> Option<(Mode, Mode)> {
        let mode = |c| match c {
            'f' => Some(Mode::Forward),
            'r' => Some(Mode::Reverse),
            _ => None,
        };
        let mut chars = function.chars();
        let pair = (mode(chars.next()?)?, mode(chars.next()?)?);
        chars.next().is_none().then_some(pair)
    }
}

/// `x` itself if derivatives can be taken with respect to it; else (it depends on nothing
/// differentiable) the same value as a new independent leaf.
pub fn variable<'t>(x: Tensor<'t, f64>) -> Tensor<'t, f64> {
    if x.requires_grad() {
        x
    } else {
        x.tape().param(x.value())
    }
}

/// The gradient of the scalar `y` with respect to `x` (1 × n), recorded on the tape so that
/// it can be differentiated again: reverse mode by [`Tape::grad`], forward mode as n
/// Jacobian-vector products with the unit vectors (the VJP with a variable cotangent `c`,
/// then each of its components differentiated with respect to `c`).
pub fn gradient<'t>(
    y: Tensor<'t, f64>,
    x: Tensor<'t, f64>,
    mode: Mode,
) -> Result<Tensor<'t, f64>, String> {
    let tape = y.tape();
    match mode {
        Mode::Reverse => Ok(tape.grad(y, &[x]).map_err(err)?[0]),
        Mode::Forward => {
            let c = tape.param(Array2::zeros((1, 1)));
            let vjp = tape.grad_seeded(y, c, &[x]).map_err(err)?[0];
            let columns = (0..x.cols())
                .map(|k| Ok(tape.grad(vjp.slice_cols(k..k + 1), &[c]).map_err(err)?[0]))
                .collect::<Result<Vec<_>, String>>()?;
            Ok(Tensor::concat_cols(&columns))
        }
    }
}

/// The gradient of the scalar `y` with respect to `x` (1 × n) as numbers, the outermost
/// derivative: reverse mode by one backward, forward mode by the VJP recorded with a
/// variable cotangent and one backward per direction.
pub fn gradient_value<'t>(
    tape: &'t Tape<'t, f64>,
    y: Tensor<'t, f64>,
    x: Tensor<'t, f64>,
    mode: Mode,
) -> Result<Vec<f64>, String> {
    match mode {
        Mode::Reverse => {
            let grads = tape.backward(y).map_err(err)?;
            Ok(grads.get(x).ok_or("no gradient")?.iter().copied().collect())
        }
        Mode::Forward => {
            let c = tape.param(Array2::zeros((1, 1)));
            let vjp = tape.grad_seeded(y, c, &[x]).map_err(err)?[0];
            (0..x.cols())
                .map(|k| {
                    let opts = BackwardOptions::new().retain_graph(k + 1 < x.cols());
                    let grads = tape
                        .backward_with(vjp.slice_cols(k..k + 1), opts)
                        .map_err(err)?;
                    Ok(grads.get(c).ok_or("no derivative")?[[0, 0]])
                })
                .collect()
        }
    }
}

fn magnitude(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn distance(u: &[f64], v: &[f64]) -> f64 {
    u.iter()
        .zip(v)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        .sqrt()
}

/// GradBench's argmin by gradient descent on numbers (`multivariate_argmin`): step `η`
/// from 1e-5, doubled after 10 accepted steps, halved after a rejected one; stop when the
/// gradient or the step is below 1e-5.
pub fn argmin(
    mut objective: impl FnMut(&[f64]) -> Result<f64, String>,
    mut gradient: impl FnMut(&[f64]) -> Result<Vec<f64>, String>,
    start: &[f64],
) -> Result<Vec<f64>, String> {
    let mut x = start.to_vec();
    let mut fx = objective(&x)?;
    let mut gx = gradient(&x)?;
    let (mut i, mut eta) = (0, 1e-5);
    loop {
        if magnitude(&gx) <= 1e-5 {
            return Ok(x);
        } else if i == 10 {
            eta *= 2.0;
            i = 0;
        } else {
            let next: Vec<f64> = x.iter().zip(&gx).map(|(x, g)| x - eta * g).collect();
            if distance(&x, &next) <= 1e-5 {
                return Ok(x);
            }
            let f_next = objective(&next)?;
            if f_next < fx {
                x = next;
                fx = f_next;
                gx = gradient(&x)?;
                i += 1;
            } else {
                eta /= 2.0;
                i = 0;
            }
        }
    }
}

/// The same solver on tensors of a tape, so that the result is a function of whatever
/// `f` depends on (an outer derivative differentiates through every step). The control
/// flow reads the values; the iterates, values and gradients are recorded.
pub fn argmin_recorded<'t>(
    f: &dyn Fn(Tensor<'t, f64>) -> Tensor<'t, f64>,
    mode: Mode,
    start: Tensor<'t, f64>,
) -> Result<Tensor<'t, f64>, String> {
    let grad = |x: Tensor<'t, f64>| {
        let x = variable(x);
        gradient(f(x), x, mode)
    };
    let values = |t: Tensor<'t, f64>| t.value().iter().copied().collect::<Vec<f64>>();
    let mut x = start;
    let mut fx = f(x);
    let mut gx = grad(x)?;
    let (mut i, mut eta) = (0, 1e-5);
    loop {
        if magnitude(&values(gx)) <= 1e-5 {
            return Ok(x);
        } else if i == 10 {
            eta *= 2.0;
            i = 0;
        } else {
            let next = x - gx * eta;
            if distance(&values(x), &values(next)) <= 1e-5 {
                return Ok(x);
            }
            let f_next = f(next);
            if f_next.item() < fx.item() {
                x = next;
                fx = f_next;
                gx = grad(x)?;
                i += 1;
            } else {
                eta /= 2.0;
                i = 0;
            }
        }
    }
}
