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

use ndarray::Array2;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};
use tapegrad::{Gradients, Tensor};

/// The network's parameters: plain arrays, owned by the model.
pub struct Net {
    pub w1: Array2<f32>,
    pub b1: Array2<f32>,
    pub w2: Array2<f32>,
    pub b2: Array2<f32>,
}

impl Net {
    /// Weights drawn from N(0, 1/fan_in) with a fixed seed, biases zero.
    pub fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut init = |rows: usize, cols: usize| {
            let normal = Normal::new(0.0, (1.0 / rows as f32).sqrt()).expect("positive std");
            Array2::from_shape_simple_fn((rows, cols), || normal.sample(&mut rng))
        };
        Net {
            w1: init(4, 2),
            b1: Array2::zeros((1, 2)),
            w2: init(2, 3),
            b2: Array2::zeros((1, 3)),
        }
    }

    /// `σ(σ(X·W1 + b1)·W2 + b2)`, with the parameters borrowed onto `x`'s tape.
    pub fn forward<'t>(&'t self, x: Tensor<'t, f32>) -> Tensor<'t, f32> {
        let tape = x.tape();
        let (w1, b1) = (tape.param(&self.w1), tape.param(&self.b1));
        let (w2, b2) = (tape.param(&self.w2), tape.param(&self.b2));
        let h = x.matmul(w1).add_row(b1).sigmoid();
        h.matmul(w2).add_row(b2).sigmoid()
    }

    /// `p -= lr · ∂L/∂p` for every parameter.
    pub fn step(&mut self, grads: &Gradients<f32>, lr: f32) {
        for p in [&mut self.w1, &mut self.b1, &mut self.w2, &mut self.b2] {
            let g = grads.wrt(p).expect("every parameter was on the tape");
            p.scaled_add(-lr, g);
        }
    }
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
    let mut net = Net::new(seed);
    let mut outcome = Outcome {
        loss: f32::NAN,
        accuracy: 0.0,
    };
    for epoch in 1..=epochs {
        let tape = tapegrad::Tape::new();
        let out = net.forward(tape.constant(&x));
        let loss = out.mse_loss(tape.constant(&y));
        if epoch == 1 || epoch % every == 0 || epoch == epochs {
            outcome = Outcome {
                loss: loss.item(),
                accuracy: common::accuracy(&out.value(), &data.labels),
            };
            report(epoch, outcome.loss, outcome.accuracy);
        }
        let grads = tape.backward(loss)?;
        net.step(&grads, lr);
    }
    Ok(outcome)
}

/// Epochs, learning rate and seed of the run the README and the tests describe.
pub const EPOCHS: usize = 5000;
pub const LEARNING_RATE: f32 = 5.0;
pub const SEED: u64 = 42;

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
