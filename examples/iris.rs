//! Seed 001 made executable: the 4-2-3 sigmoid network, trained on Iris with mean squared
//! error and plain full-batch gradient descent, every gradient from the tape.
//!
//! ```text
//! cargo run --release --example iris
//! ```
//!
//! The network: 4 standardized inputs, 2 hidden sigmoid units, 3 sigmoid outputs (one per
//! class), biases on both layers; loss = mean over all elements of (out − one_hot)².

mod common;

use std::error::Error;
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tapegrad::nn::{Activation, Init, Module, Sequential, mlp};
use tapegrad::optim::{Optimizer, Sgd};
use tapegrad::{BackwardOptions, Tape};

/// Epochs, learning rate and seed of the run the README and the tests describe.
pub const EPOCHS: usize = 5000;
pub const LEARNING_RATE: f32 = 5.0;
pub const SEED: u64 = 42;

/// The seed network: `σ(σ(X·W1 + b1)·W2 + b2)`, Glorot-initialised from `seed`.
pub fn network(seed: u64) -> Sequential<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    mlp(
        &[4, 2, 3],
        Activation::Sigmoid,
        Activation::Sigmoid,
        Init::Glorot,
        &mut rng,
    )
}

/// Where training ended.
pub struct Outcome {
    pub loss: f32,
    pub accuracy: f64,
}

/// Trains for `epochs` full-batch steps with learning rate `lr`; `report` sees
/// (epoch, loss, training accuracy) at epoch 1, every `every` epochs and at the last,
/// measured before that epoch's update.
pub fn train(
    epochs: usize,
    lr: f32,
    seed: u64,
    every: usize,
    mut report: impl FnMut(usize, f32, f64),
) -> Result<Outcome, Box<dyn Error>> {
    let data = common::iris()?;
    let x = common::standardize(&data.x).mapv(|v| v as f32);
    let y = common::one_hot(&data.labels, data.classes).mapv(|v| v as f32);
    let mut net = network(seed);
    let mut opt = Sgd::new(lr);
    let mut outcome = Outcome {
        loss: f32::NAN,
        accuracy: 0.0,
    };
    let mut grads = None;
    for epoch in 1..=epochs {
        let tape = Tape::new();
        let out = net.forward(tape.constant(&x))?;
        let loss = out.try_mse_loss(tape.constant(&y))?;
        if epoch == 1 || epoch % every == 0 || epoch == epochs {
            outcome = Outcome {
                loss: loss.item(),
                accuracy: common::accuracy(&out.value(), &data.labels),
            };
            report(epoch, outcome.loss, outcome.accuracy);
        }
        // last step's gradient buffers are written over, not reallocated
        let opts = grads
            .take()
            .map_or_else(BackwardOptions::new, |g| BackwardOptions::new().reuse(g));
        let step_grads = tape.backward_with(loss, opts)?;
        opt.step(&mut net, &step_grads)?;
        grads = Some(step_grads);
    }
    Ok(outcome)
}

fn main() -> Result<(), Box<dyn Error>> {
    let start = Instant::now();
    println!("Iris, 4-2-3 sigmoid network, mean squared error, full-batch gradient descent");
    let outcome = train(EPOCHS, LEARNING_RATE, SEED, 500, |epoch, loss, acc| {
        println!(
            "epoch {epoch:>5}  loss {loss:.5}  training accuracy {:.1}%",
            100.0 * acc
        );
    })?;
    println!(
        "reached {:.1}% training accuracy in {:.2} s",
        100.0 * outcome.accuracy,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
