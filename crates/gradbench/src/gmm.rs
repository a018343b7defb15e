//! `gmm`: the log-posterior of a Gaussian mixture with a Wishart prior on the precisions
//! (ADBench's objective with GradBench's corrections), and its gradient with respect to
//! `alpha`, `mu`, `q` and `l` by backward.
//!
//! Batched over points and components: the K lower-triangular factors `Q_k` (diagonal
//! `exp q_k`, below it `l_k` column by column) are stacked into one `KD × D` matrix
//! gathered from `[exp q; l; 0]`, so that `Q_k (x_i − μ_k)` for every point and component
//! is one GEMM, `X·Qᵀ` (N × KD), minus the row of `Q_k μ_k`. Squared norms per component
//! are row sums of the reshaped `NK × D` matrix; then a logsumexp over components per point.

use ndarray::{Array2, Axis};
use serde_json::{Value, json};
use tapegrad::{Tape, Tensor};

use crate::input::{count, err, field, matrix, number, rows};
use crate::runs::{Runs, measure};

/// An input in arrays.
struct Input {
    x: Array2<f64>,
    alpha: Array2<f64>,
    mu: Array2<f64>,
    q: Array2<f64>,
    l: Array2<f64>,
    m: f64,
    gamma: f64,
}

fn read(input: &Value) -> Result<Input, String> {
    let d = count(field(input, "d")?, "d")?;
    let k = count(field(input, "k")?, "k")?;
    let n = count(field(input, "n")?, "n")?;
    let x = matrix(field(input, "x")?, "x", Some(d))?;
    let mu = matrix(field(input, "mu")?, "mu", Some(d))?;
    let q = matrix(field(input, "q")?, "q", Some(d))?;
    let l = matrix(field(input, "l")?, "l", Some(d * d.saturating_sub(1) / 2))?;
    let alpha = crate::input::numbers(field(input, "alpha")?, "alpha")?;
    if x.nrows() != n || mu.nrows() != k || q.nrows() != k || l.nrows() != k || alpha.len() != k {
        return Err("gmm: array sizes do not match d, k, n".into());
    }
    Ok(Input {
        x,
        alpha: Array2::from_shape_vec((1, k), alpha).map_err(|e| e.to_string())?,
        mu,
        q,
        l,
        m: number(field(input, "m")?, "m")?,
        gamma: number(field(input, "gamma")?, "gamma")?,
    })
}

/// `ln Γ_d(a) = d(d−1)/4 · ln π + Σⱼ₌₁..d ln Γ(a + (1 − j)/2)`.
fn log_gamma_distrib(a: f64, d: usize) -> f64 {
    let mut out = 0.25 * (d * d.saturating_sub(1)) as f64 * std::f64::consts::PI.ln();
    for j in 1..=d {
        out += libm::lgamma(a + 0.5 * (1.0 - j as f64));
    }
    out
}

/// Where each entry of the stacked factors comes from in `[exp q (KD); l (KL); 0]`.
fn factor_index(k: usize, d: usize) -> Vec<usize> {
    let ltri = d * d.saturating_sub(1) / 2;
    let (l_at, zero) = (k * d, k * d + k * ltri);
    let mut index = vec![zero; k * d * d];
    for c in 0..k {
        for i in 0..d {
            index[(c * d + i) * d + i] = c * d + i;
        }
        let mut next = 0;
        for j in 0..d {
            for i in j + 1..d {
                index[(c * d + i) * d + j] = l_at + c * ltri + next;
                next += 1;
            }
        }
    }
    index
}

/// The log-posterior; `alpha`, `mu`, `q`, `l` are tensors (parameters or constants).
fn objective<'t>(
    input: &Input,
    x: Tensor<'t, f64>,
    [alpha, mu, q, l]: [Tensor<'t, f64>; 4],
) -> Tensor<'t, f64> {
    let tape = x.tape();
    let (n, d) = input.x.dim();
    let k = input.mu.nrows();
    let ltri = d * d.saturating_sub(1) / 2;
    let exp_q = q.exp();
    let zero = tape.scalar(0.0);
    let source = Tensor::concat_rows(&[exp_q.reshape((k * d, 1)), l.reshape((k * ltri, 1)), zero]);
    let factors = source.gather_rows(&factor_index(k, d)).reshape((k * d, d)); // row (k, i) = Q_k[i, :]
    // Q_k μ_k as a row (1 × KD)
    let mu_rows: Vec<usize> = (0..k * d).map(|r| r / d).collect();
    let q_mu = (factors * mu.gather_rows(&mu_rows))
        .sum_axis(Axis(1))
        .reshape((1, k * d));
    let centred = x.matmul(factors.t()) - q_mu; // N × KD: Q_k (x_i − μ_k)
    let sq = centred
        .square()
        .reshape((n * k, d))
        .sum_axis(Axis(1))
        .reshape((n, k));
    let sum_q = q.sum_axis(Axis(1)).reshape((1, k));
    let main = sq.mul_scalar(-0.5).add_row(alpha + sum_q);
    let slse = main.logsumexp(Axis(1)).sum();
    let lse_alpha = alpha.logsumexp(Axis(1));
    // the Wishart prior: −½γ² Σ_k ‖Q_k‖²_F + m Σ q + K·C
    let (m, gamma) = (input.m, input.gamma);
    let frobenius = exp_q.square().sum() + l.square().sum();
    let dof = d as f64 + m + 1.0;
    let c = dof * d as f64 * (gamma.ln() - 0.5 * 2f64.ln()) - log_gamma_distrib(0.5 * dof, d);
    let constant = -(n as f64) * d as f64 * 0.5 * (2.0 * std::f64::consts::PI).ln();
    let prior = frobenius.mul_scalar(-0.5 * gamma * gamma) + sum_q.sum().mul_scalar(m);
    slse - lse_alpha.mul_scalar(n as f64) + prior + (constant + k as f64 * c)
}

pub fn evaluate(function: &str, input: &Value) -> Result<crate::runs::Evaluated, String> {
    let inp = read(input)?;
    let runs = Runs::of(input);
    match function {
        "objective" => measure(
            runs,
            || {
                let tape = Tape::new();
                let theta = [&inp.alpha, &inp.mu, &inp.q, &inp.l].map(|a| tape.constant(a));
                Ok(objective(&inp, tape.constant(&inp.x), theta).item())
            },
            Value::from,
        ),
        "jacobian" => measure(
            runs,
            || {
                let tape = Tape::new();
                let theta = [&inp.alpha, &inp.mu, &inp.q, &inp.l].map(|a| tape.param(a));
                let f = objective(&inp, tape.constant(&inp.x), theta);
                let mut grads = tape.backward(f).map_err(err)?;
                let mut take = |t| grads.take(t).ok_or_else(|| "no gradient".to_string());
                Ok([
                    take(theta[0])?,
                    take(theta[1])?,
                    take(theta[2])?,
                    take(theta[3])?,
                ])
            },
            |[alpha, mu, q, l]| json!({"alpha": alpha.row(0).to_vec(), "mu": rows(&mu), "q": rows(&q), "l": rows(&l)}),
        ),
        _ => Err(crate::protocol::unknown("gmm", function)),
    }
}
