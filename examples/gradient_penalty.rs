//! A gradient penalty: a small MLP fitted to noisy samples of a smooth curve, with the
//! penalty `λ · mean ‖∂f/∂x‖²` on the network's input gradient (input-gradient
//! regularisation, the penalty of WGAN-GP), trained by backpropagating through that
//! gradient.
//!
//! ```text
//! cargo run --release --example gradient_penalty
//! ```
//!
//! The input gradient of every sample is one recorded backward pass,
//! `tape.grad(f.sum(), &[x])` (each row of the output depends on its own row of `x`
//! only), so the penalty is an ordinary tensor of the tape and the loss's gradient with
//! respect to the weights runs through it. The same network trained without the penalty
//! fits the noise with a steeper function; the penalty trades a little training error
//! for a much smaller input gradient.

mod common;

use std::error::Error;

use ndarray::Array2;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};
use tapegrad::nn::{Activation, Init, Module, Sequential, mlp};
use tapegrad::optim::{Adam, Optimizer};
use tapegrad::{Tape, Tensor};

/// Samples, steps, learning rate and seed of the run the tests check.
pub const SAMPLES: usize = 64;
pub const STEPS: usize = 1500;
pub const LEARNING_RATE: f64 = 0.01;
pub const SEED: u64 = 5;

/// `x` in [−2, 2] and `y = sin(1.5 x) + noise` (σ = 0.3).
pub fn data(seed: u64) -> (Array2<f64>, Array2<f64>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let noise = Normal::new(0.0, 0.3).expect("a finite σ");
    let x = Array2::from_shape_fn((SAMPLES, 1), |(i, _)| {
        -2.0 + 4.0 * i as f64 / (SAMPLES - 1) as f64
    });
    let y = x.mapv(|v| (1.5 * v).sin() + noise.sample(&mut rng));
    (x, y)
}

/// The network: 1 → 32 tanh → 32 tanh → 1.
pub fn network(seed: u64) -> Sequential<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    mlp(
        &[1, 32, 32, 1],
        Activation::Tanh,
        Activation::Identity,
        Init::Glorot,
        &mut rng,
    )
}

/// The mean squared error and the mean squared input gradient of `net` on `x`, as
/// tensors of `x`'s tape: the gradient is recorded, so both can be differentiated.
pub fn fit_and_penalty<'t>(
    net: &'t Sequential<f64>,
    x: Tensor<'t, f64>,
    y: Tensor<'t, f64>,
) -> tapegrad::Result<(Tensor<'t, f64>, Tensor<'t, f64>)> {
    let tape = x.tape();
    let f = net.forward(x)?;
    let dfdx = tape.grad(f.sum(), &[x])?[0]; // one row per sample
    Ok((f.try_mse_loss(y)?, dfdx.square().mean()))
}

/// A finished run: the final fit and penalty, and the curve of the training objective.
pub struct Run {
    pub net: Sequential<f64>,
    pub mse: f64,
    pub penalty: f64,
    pub curve: Vec<f64>,
}

/// Trains with Adam on `mse + λ · penalty`.
pub fn train(lambda: f64, steps: usize, seed: u64) -> Result<Run, Box<dyn Error>> {
    let (x, y) = data(seed);
    let mut net = network(seed);
    let mut opt = Adam::new(LEARNING_RATE);
    let mut curve = Vec::with_capacity(steps);
    for _ in 0..steps {
        let grads = {
            let tape = Tape::new();
            // x needs a gradient (the penalty is about ∂f/∂x); nothing updates it
            let (xt, yt) = (tape.param(&x), tape.constant(&y));
            let (mse, penalty) = fit_and_penalty(&net, xt, yt)?;
            let objective = mse.try_add(penalty.mul_scalar(lambda))?;
            curve.push(objective.item());
            tape.backward(objective)?
        };
        opt.step(&mut net, &grads)?;
    }
    let tape = Tape::new();
    let (mse, penalty) = fit_and_penalty(&net, tape.param(&x), tape.constant(&y))?;
    Ok(Run {
        mse: mse.item(),
        penalty: penalty.item(),
        net,
        curve,
    })
}

fn main() -> Result<(), Box<dyn Error>> {
    println!("1-32-32-1 tanh MLP on {SAMPLES} noisy samples of sin(1.5x), Adam, {STEPS} steps");
    for lambda in [0.0, 0.1] {
        let run = train(lambda, STEPS, SEED)?;
        println!(
            "  λ = {lambda:<4}: objective {:.4} → {:.4}; mean squared error {:.4}, mean ‖∂f/∂x‖² {:.3}",
            run.curve[0],
            run.curve.last().copied().unwrap_or(f64::NAN),
            run.mse,
            run.penalty
        );
    }
    println!(
        "(the penalised network is smoother: a smaller input gradient for a little more error)"
    );
    Ok(())
}
