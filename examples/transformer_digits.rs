//! A transformer classifies the 8 × 8 digits, each image a sequence of 8 row tokens of 8
//! pixels: a learned linear token embedding plus a learned position embedding, one
//! pre-norm transformer block (2-head self-attention and a GELU MLP, each with dropout and
//! a residual connection), a final layer norm, mean pooling over the tokens, and a linear
//! head; softmax cross-entropy, AdamW with a cosine decay of the rate. Every piece is an
//! op or a layer of tapegrad.
//!
//! ```text
//! cargo run --release --example transformer_digits
//! ```
//!
//! Same held-out split as the digits example (359 images); a progress bar while it trains,
//! and the loss and accuracy curves in `target/transformer-digits-training.svg`.

mod common;

use std::error::Error;
use std::path::Path;
use std::time::Instant;

use ndarray::{Array2, Axis};
use plotters::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use tapegrad::nn::{
    Dropout, Embedding, Init, LayerNorm, Linear, Module, MultiHeadAttention, Parameters,
    visit_child, visit_child_mut,
};
use tapegrad::optim::{Adam, Optimizer};
use tapegrad::{Tape, Tensor};

/// Epochs, batch size, learning rate, weight decay, dropout and seed of the run the README
/// and tests describe.
pub const EPOCHS: usize = 20;
pub const BATCH: usize = 32;
pub const LEARNING_RATE: f32 = 0.003;
pub const WEIGHT_DECAY: f32 = 0.01;
pub const DROPOUT: f32 = 0.1;
pub const SEED: u64 = 7;
/// Tokens per image, pixels per token, the model's width and its heads.
pub const TOKENS: usize = 8;
pub const PIXELS: usize = 8;
pub const WIDTH: usize = 32;
pub const HEADS: usize = 2;

/// The model: embeddings, one transformer block, pooling and a linear head.
#[derive(Clone)]
pub struct Transformer {
    embed: Linear<f32>,
    position: Embedding<f32>,
    norm1: LayerNorm<f32>,
    attention: MultiHeadAttention<f32>,
    drop1: Dropout<f32>,
    norm2: LayerNorm<f32>,
    mlp_in: Linear<f32>,
    mlp_out: Linear<f32>,
    drop2: Dropout<f32>,
    norm_out: LayerNorm<f32>,
    head: Linear<f32>,
}

impl Transformer {
    /// A model with weights drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut position = Embedding::new(TOKENS, WIDTH, &mut rng);
        position.weight.mapv_inplace(|v| 0.1 * v);
        Transformer {
            embed: Linear::new(PIXELS, WIDTH, Init::Glorot, &mut rng),
            position,
            norm1: LayerNorm::new(WIDTH),
            attention: MultiHeadAttention::new(WIDTH, HEADS, &mut rng),
            drop1: Dropout::new(DROPOUT, seed + 1),
            norm2: LayerNorm::new(WIDTH),
            mlp_in: Linear::new(WIDTH, 4 * WIDTH, Init::He, &mut rng),
            mlp_out: Linear::new(4 * WIDTH, WIDTH, Init::Glorot, &mut rng),
            drop2: Dropout::new(DROPOUT, seed + 2),
            norm_out: LayerNorm::new(WIDTH),
            head: Linear::new(WIDTH, 10, Init::Glorot, &mut rng),
        }
    }

    /// The logits of `images` images whose rows (8 pixels each) are stacked in `x`:
    /// (images · 8) × 8 in, images × 10 out.
    pub fn logits<'t>(&'t self, x: Tensor<'t, f32>) -> tapegrad::Result<Tensor<'t, f32>> {
        let tape = x.tape();
        let images = x.rows() / TOKENS;
        let positions: Vec<usize> = (0..images).flat_map(|_| 0..TOKENS).collect();
        let h = self
            .embed
            .forward(x)?
            .try_add(self.position.lookup(tape, &positions)?)?;
        let attended = self.attention.attend(self.norm1.forward(h)?, TOKENS)?;
        let h = h.try_add(self.drop1.forward(attended)?)?;
        let hidden = self.mlp_in.forward(self.norm2.forward(h)?)?.gelu();
        let h = h.try_add(self.drop2.forward(self.mlp_out.forward(hidden)?)?)?;
        let h = self.norm_out.forward(h)?;
        // mean pooling over each image's tokens: one GEMM with a constant averaging matrix
        let pool = Array2::from_shape_fn((images, images * TOKENS), |(i, j)| {
            if j / TOKENS == i {
                1.0 / TOKENS as f32
            } else {
                0.0
            }
        });
        let pooled = tape.constant(pool).try_matmul(h)?;
        self.head.forward(pooled)
    }
}

impl Parameters<f32> for Transformer {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Array2<f32>)) {
        visit_child("embed", &self.embed, f);
        visit_child("position", &self.position, f);
        visit_child("norm1", &self.norm1, f);
        visit_child("attention", &self.attention, f);
        visit_child("norm2", &self.norm2, f);
        visit_child("mlp_in", &self.mlp_in, f);
        visit_child("mlp_out", &self.mlp_out, f);
        visit_child("norm_out", &self.norm_out, f);
        visit_child("head", &self.head, f);
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Array2<f32>)) {
        visit_child_mut("embed", &mut self.embed, f);
        visit_child_mut("position", &mut self.position, f);
        visit_child_mut("norm1", &mut self.norm1, f);
        visit_child_mut("attention", &mut self.attention, f);
        visit_child_mut("norm2", &mut self.norm2, f);
        visit_child_mut("mlp_in", &mut self.mlp_in, f);
        visit_child_mut("mlp_out", &mut self.mlp_out, f);
        visit_child_mut("norm_out", &mut self.norm_out, f);
        visit_child_mut("head", &mut self.head, f);
    }
}

impl Module<f32> for Transformer {
    fn forward<'t>(&'t self, x: Tensor<'t, f32>) -> tapegrad::Result<Tensor<'t, f32>> {
        self.logits(x)
    }

    fn set_training(&mut self, training: bool) {
        self.drop1.set_training(training);
        self.drop2.set_training(training);
    }
}

/// Images as stacked row tokens: n × 64 → (n · 8) × 8.
pub fn tokens(x: &Array2<f32>) -> Array2<f32> {
    let n = x.nrows();
    x.as_standard_layout()
        .into_owned()
        .into_shape_with_order((n * TOKENS, PIXELS))
        .expect("64 pixels per image")
}

/// Accuracy of `model` on `x` (images as rows of 64 pixels), in evaluation mode.
pub fn accuracy(model: &Transformer, x: &Array2<f32>, labels: &[usize]) -> tapegrad::Result<f64> {
    let tape = Tape::new();
    let logits = tape.no_grad(|| model.logits(tape.constant(tokens(x))))?;
    Ok(common::accuracy(&logits.value(), labels))
}

/// One epoch's figures.
#[derive(Clone, Copy, Debug)]
pub struct Epoch {
    pub loss: f32,
    pub train_accuracy: f64,
    pub test_accuracy: f64,
}

/// A finished run.
pub struct Run {
    pub curve: Vec<Epoch>,
    pub test_images: usize,
    /// Ops recorded by one training step (forward and loss) of a full batch.
    pub ops_per_step: usize,
}

/// Trains for `epochs` epochs of AdamW on mini-batches; `after_epoch` sees each epoch.
pub fn train(
    epochs: usize,
    seed: u64,
    mut after_epoch: impl FnMut(usize, Epoch),
) -> Result<Run, Box<dyn Error>> {
    let (train, test) = common::digits()?.split(0.2, seed);
    let (x_train, x_test) = (train.x.mapv(|v| v as f32), test.x.mapv(|v| v as f32));
    let mut model = Transformer::new(seed);
    // cosine decay of the rate over the run, to settle at the end
    let steps = (epochs * train.labels.len().div_ceil(BATCH)) as f32;
    let mut opt = Adam::adamw(LEARNING_RATE, WEIGHT_DECAY).schedule(move |step, lr| {
        0.5 * lr * (1.0 + (std::f32::consts::PI * step as f32 / steps).cos())
    });
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..train.labels.len()).collect();
    let mut curve = Vec::with_capacity(epochs);
    let mut ops_per_step = 0;
    for epoch in 1..=epochs {
        model.set_training(true);
        order.shuffle(&mut rng);
        let mut total = 0.0;
        for batch in order.chunks(BATCH) {
            let x = tokens(&x_train.select(Axis(0), batch));
            let labels: Vec<usize> = batch.iter().map(|&i| train.labels[i]).collect();
            let grads = {
                let tape = Tape::new();
                let loss = model
                    .logits(tape.constant(&x))?
                    .try_softmax_cross_entropy_indices(&labels)?;
                if batch.len() == BATCH {
                    ops_per_step = tape.len();
                }
                total += loss.item() * batch.len() as f32;
                tape.backward(loss)?
            };
            opt.step(&mut model, &grads)?;
        }
        model.set_training(false);
        let figures = Epoch {
            loss: total / order.len() as f32,
            train_accuracy: accuracy(&model, &x_train, &train.labels)?,
            test_accuracy: accuracy(&model, &x_test, &test.labels)?,
        };
        after_epoch(epoch, figures);
        curve.push(figures);
    }
    Ok(Run {
        curve,
        test_images: test.labels.len(),
        ops_per_step,
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
        .build_cartesian_2d(1u32..epochs, 50.0f64..100.0)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("accuracy (%)")
        .draw()?;
    for (series, color, label) in [(0, BLUE, "train"), (1, RED, "test (held out)")] {
        let points = curve.iter().enumerate().map(|(i, e)| {
            let a = if series == 0 {
                e.train_accuracy
            } else {
                e.test_accuracy
            };
            (i as u32 + 1, 100.0 * a)
        });
        chart
            .draw_series(LineSeries::new(points, &color))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
    }
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
    println!(
        "Digits as 8 tokens of 8 pixels: a transformer block ({WIDTH} wide, {HEADS} heads, GELU MLP, \
         dropout {DROPOUT}), AdamW, batches of {BATCH}"
    );
    let mut done = 0;
    let run = train(EPOCHS, SEED, |_, e| {
        done += 1;
        common::progress(done, EPOCHS, f64::from(e.loss), e.test_accuracy);
    })?;
    let last = run.curve.last().ok_or("no epochs")?;
    println!(
        "after {EPOCHS} epochs: training accuracy {:.1}%, test accuracy {:.1}% on {} held-out images, \
         {:.1} s ({} ops recorded per training step)",
        100.0 * last.train_accuracy,
        100.0 * last.test_accuracy,
        run.test_images,
        start.elapsed().as_secs_f64(),
        run.ops_per_step
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("transformer-digits-training.svg");
    std::fs::create_dir_all(path.parent().ok_or("no parent")?)?;
    plot(&run.curve, &path)?;
    println!("curves written to {}", path.display());
    Ok(())
}
