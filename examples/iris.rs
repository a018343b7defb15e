//! Seed 001 made executable: the 4-2-3 sigmoid network, trained on Iris with mean squared
//! error and plain full-batch gradient descent, every gradient from the tape.
//!
//! ```text
//! cargo run --release --example iris
//! cargo run --release --example iris -- --explain   # first print the backward pass's equations
//! ```
//!
//! The network: 4 standardized inputs, 2 hidden sigmoid units, 3 sigmoid outputs (one per
//! class), biases on both layers; loss = mean over all elements of (out − one_hot)².
//!
//! Writes the training curve to `target/iris-curves.svg`, and beside it one step's tape as
//! Graphviz DOT (`target/iris-tape.dot`) and as SVG drawn in Rust (`target/iris-tape.svg`).
//! `--explain` prints that step's backward pass as the equations of seed 001
//! (`O_delta = O_error ∘ O ∘ (1 − O)`, `dW2 = Hᵀ · O_delta  [2×150 · 150×3 → 2×3]`, ...).

mod common;

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::Array2;
use plotters::prelude::*;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tapegrad::inspect::Explanation;
use tapegrad::nn::{Activation, Init, Module, Parameters, Sequential, mlp};
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

/// Iris as the network sees it: standardized inputs `x`, one-hot targets `y`, the labels.
pub type Inputs = (Array2<f32>, Array2<f32>, Vec<usize>);

/// Loads [`Inputs`].
pub fn inputs() -> Result<Inputs, Box<dyn Error>> {
    let data = common::iris()?;
    let x = common::standardize(&data.x).mapv(|v| v as f32);
    let y = common::one_hot(&data.labels, data.classes).mapv(|v| v as f32);
    Ok((x, y, data.labels))
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
    let (x, y, labels) = inputs()?;
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
                accuracy: common::accuracy(&out.value(), &labels),
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

/// One training step of the network written out with the seed's names (`X`, `W1`, `b1`,
/// `H`, `W2`, `b2`, `O`, `Y`): its backward pass as equations, and its tape as DOT and SVG.
/// The same ops as `net.forward` (the `linear` layer, then the sigmoid), so the same loss.
pub fn explain_step(
    net: &Sequential<f32>,
    x: &Array2<f32>,
    y: &Array2<f32>,
) -> Result<(f32, Explanation, String, String), Box<dyn Error>> {
    let mut params = Vec::new();
    net.visit(&mut |_, p| params.push(p));
    let [w1, b1, w2, b2] = params[..] else {
        return Err("the seed network has two layers with biases".into());
    };
    let tape = Tape::new();
    let p = |a, name| tape.param(a).named(name);
    let x_t = tape.constant(x).named("X");
    let h = x_t
        .try_linear(p(w1, "W1"), p(b1, "b1"))?
        .sigmoid()
        .named("H");
    let o = h.try_linear(p(w2, "W2"), p(b2, "b2"))?.sigmoid().named("O");
    let loss = o.try_mse_loss(tape.constant(y).named("Y"))?;
    Ok((
        loss.item(),
        tape.explain(loss)?,
        tape.to_dot(),
        tape.to_svg()?,
    ))
}

/// The loss and training accuracy at each report.
fn plot(curve: &[(usize, f32, f64)], path: &Path) -> Result<(), Box<dyn Error>> {
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(500);
    let last = curve.last().map_or(1, |c| c.0);
    let top = curve.iter().map(|c| c.1).fold(0.0f32, f32::max) * 1.05;
    let mut chart = ChartBuilder::on(&left)
        .caption("training loss (mean squared error)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(1..last, 0f32..top)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("loss")
        .draw()?;
    chart.draw_series(LineSeries::new(curve.iter().map(|c| (c.0, c.1)), &BLUE))?;
    let mut chart = ChartBuilder::on(&right)
        .caption("training accuracy", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(1..last, 0f64..100.0)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("accuracy (%)")
        .draw()?;
    let percent = curve.iter().map(|c| (c.0, 100.0 * c.2));
    chart.draw_series(LineSeries::new(percent, &BLUE))?;
    root.present()?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let start = Instant::now();
    let explain = std::env::args().any(|a| a == "--explain");
    println!("Iris, 4-2-3 sigmoid network, mean squared error, full-batch gradient descent");
    let (x, y, _) = inputs()?;
    let (_, explanation, dot, svg) = explain_step(&network(SEED), &x, &y)?;
    if explain {
        println!("\nthe backward pass of the first step (G = ∂L/∂L = 1):\n{explanation}");
    }
    let mut curve = Vec::new();
    let outcome = train(EPOCHS, LEARNING_RATE, SEED, 500, |epoch, loss, acc| {
        println!(
            "epoch {epoch:>5}  loss {loss:.5}  training accuracy {:.1}%",
            100.0 * acc
        );
        curve.push((epoch, loss, acc));
    })?;
    println!(
        "reached {:.1}% training accuracy in {:.2} s",
        100.0 * outcome.accuracy,
        start.elapsed().as_secs_f64()
    );
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&dir)?;
    plot(&curve, &dir.join("iris-curves.svg"))?;
    std::fs::write(dir.join("iris-tape.dot"), dot)?;
    std::fs::write(dir.join("iris-tape.svg"), svg)?;
    println!(
        "curves written to {}, one step's tape to {} and {}",
        dir.join("iris-curves.svg").display(),
        dir.join("iris-tape.dot").display(),
        dir.join("iris-tape.svg").display()
    );
    Ok(())
}
