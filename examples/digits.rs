//! Handwritten digits (8 × 8 images, 10 classes): a 64-64-10 relu network trained with
//! softmax cross-entropy and Adam on mini-batches, evaluated on a held-out test split.
//!
//! ```text
//! cargo run --release --example digits
//! cargo run --release --example digits -- --profile   # and print where the time went, per op
//! ```
//!
//! Shows a progress bar while it trains and writes the loss and accuracy curves to
//! `target/digits-training.svg`. With `--profile`, prints the per-op profile of the whole
//! run ([`tapegrad::inspect::profile`]): forward and backward time, calls and bytes by call
//! site and by op, and the tape's own overhead.

mod common;

use std::error::Error;
use std::path::Path;
use std::time::Instant;

use common::Dataset;
use ndarray::Axis;
use plotters::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use tapegrad::inspect::profile;
use tapegrad::nn::Module;
use tapegrad::optim::{Adam, Optimizer};
use tapegrad::{BackwardOptions, Tape};

/// Epochs, batch size, learning rate and seed of the run the README and tests describe.
pub const EPOCHS: usize = 30;
pub const BATCH: usize = 32;
pub const LEARNING_RATE: f32 = 0.003;
pub const SEED: u64 = 7;

/// One epoch's figures.
#[derive(Clone, Copy, Debug)]
pub struct Epoch {
    /// Mean training loss over the epoch's batches.
    pub loss: f32,
    pub train_accuracy: f64,
    pub test_accuracy: f64,
}

/// A finished run: the figures of every epoch, and the size of the test split.
pub struct Run {
    pub curve: Vec<Epoch>,
    pub test_images: usize,
}

/// Trains `epochs` epochs of mini-batch Adam; `after_epoch` sees each epoch's figures.
pub fn train(
    epochs: usize,
    seed: u64,
    mut after_epoch: impl FnMut(usize, Epoch),
) -> Result<Run, Box<dyn Error>> {
    let (train, test): (Dataset, Dataset) = common::digits()?.split(0.2, seed);
    let (x_train, x_test) = (train.x.mapv(|v| v as f32), test.x.mapv(|v| v as f32));
    let mut net = common::digits_network::<f32>(seed);
    let mut opt = Adam::new(LEARNING_RATE);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..train.labels.len()).collect();
    let mut grads = None;
    let mut curve = Vec::with_capacity(epochs);
    for epoch in 1..=epochs {
        order.shuffle(&mut rng);
        let mut total = 0.0;
        for batch in order.chunks(BATCH) {
            let x = x_train.select(Axis(0), batch);
            let labels: Vec<usize> = batch.iter().map(|&i| train.labels[i]).collect();
            let tape = Tape::new();
            let loss = net
                .forward(tape.constant(&x))?
                .try_softmax_cross_entropy_indices(&labels)?;
            total += loss.item() * batch.len() as f32;
            let opts = grads
                .take()
                .map_or_else(BackwardOptions::new, |g| BackwardOptions::new().reuse(g));
            let step = tape.backward_with(loss, opts)?;
            opt.step(&mut net, &step)?;
            grads = Some(step);
        }
        let figures = Epoch {
            loss: total / order.len() as f32,
            train_accuracy: common::model_accuracy(&net, &x_train, &train.labels)?,
            test_accuracy: common::model_accuracy(&net, &x_test, &test.labels)?,
        };
        after_epoch(epoch, figures);
        curve.push(figures);
    }
    Ok(Run {
        curve,
        test_images: test.labels.len(),
    })
}

/// Loss and accuracy curves, side by side, as an SVG image.
fn plot(curve: &[Epoch], path: &Path) -> Result<(), Box<dyn Error>> {
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(500);
    let epochs = curve.len() as u32;

    let max_loss = curve.iter().map(|e| e.loss).fold(0.0f32, f32::max) * 1.05;
    let mut chart = ChartBuilder::on(&left)
        .caption("training loss (cross-entropy)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(1u32..epochs, 0f32..max_loss)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("loss")
        .draw()?;
    let points = curve
        .iter()
        .enumerate()
        .map(|(i, e)| (i as u32 + 1, e.loss));
    chart.draw_series(LineSeries::new(points, &BLUE))?;

    let mut chart = ChartBuilder::on(&right)
        .caption("accuracy", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(1u32..epochs, 80.0f64..100.0)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("accuracy (%)")
        .draw()?;
    let train = curve
        .iter()
        .enumerate()
        .map(|(i, e)| (i as u32 + 1, 100.0 * e.train_accuracy));
    chart
        .draw_series(LineSeries::new(train, &BLUE))?
        .label("train")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
    let test = curve
        .iter()
        .enumerate()
        .map(|(i, e)| (i as u32 + 1, 100.0 * e.test_accuracy));
    chart
        .draw_series(LineSeries::new(test, &RED))?
        .label("test (held out)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let start = Instant::now();
    let profiling = std::env::args().any(|a| a == "--profile");
    println!("Digits: 64-64-10 relu network, softmax cross-entropy, Adam, batches of {BATCH}");
    if profiling {
        profile::start();
    }
    let mut done = 0;
    let run = train(EPOCHS, SEED, |_, e| {
        done += 1;
        common::progress(done, EPOCHS, f64::from(e.loss), e.test_accuracy);
    })?;
    if profiling {
        println!("{}", profile::finish());
    }
    let last = run.curve.last().ok_or("no epochs")?;
    println!(
        "after {EPOCHS} epochs: training accuracy {:.1}%, test accuracy {:.1}% on {} held-out images, {:.2} s",
        100.0 * last.train_accuracy,
        100.0 * last.test_accuracy,
        run.test_images,
        start.elapsed().as_secs_f64()
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("digits-training.svg");
    std::fs::create_dir_all(path.parent().ok_or("no parent")?)?;
    plot(&run.curve, &path)?;
    println!("curves written to {}", path.display());
    Ok(())
}
