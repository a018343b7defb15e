//! Data loading, and the digits network, shared by the examples and the tests
//! (`#[path]`-included by the tests).

#![allow(dead_code)]

use std::path::Path;

use ndarray::{Array2, Axis};

/// A data set: one sample per row of `x`, its class in `labels`.
pub struct Dataset {
    pub x: Array2<f64>,
    pub labels: Vec<usize>,
    pub classes: usize,
}

/// One line of progress for epoch `done` of `epochs`, rewritten in place on a terminal
/// (standard error), ended after the last epoch.
pub fn progress(done: usize, epochs: usize, loss: f64, test_accuracy: f64) {
    use std::io::Write;
    let width = 40 * done / epochs.max(1);
    let bar: String = "#".repeat(width) + &"-".repeat(40 - width);
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "\r{bar} epoch {done}/{epochs}  loss {loss:.4}  test accuracy {:.1}%",
        100.0 * test_accuracy
    );
    if done >= epochs {
        let _ = writeln!(err);
    }
    let _ = err.flush();
}

fn data_file(name: &str) -> std::path::PathBuf {
    // the repository's root: this package's, or its parent for the benches' package
    // (benches/Cargo.toml), which includes this file too
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = match manifest.parent() {
        Some(parent) if !manifest.join("examples").is_dir() => parent,
        _ => manifest,
    };
    root.join("examples").join("data").join(name)
}

/// Fisher's Iris (UCI, CC BY 4.0): 150 samples, 4 features, 3 classes. The first line of
/// the file is a header (`150,4,setosa,versicolor,virginica`).
pub fn iris() -> Result<Dataset, Box<dyn std::error::Error>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(data_file("iris.csv"))?;
    let (mut values, mut labels) = (Vec::new(), Vec::new());
    for record in reader.records() {
        let record = record?;
        for field in record.iter().take(4) {
            values.push(field.trim().parse::<f64>()?);
        }
        labels.push(
            record
                .get(4)
                .ok_or("iris.csv: a row has no label")?
                .trim()
                .parse()?,
        );
    }
    let x = Array2::from_shape_vec((labels.len(), 4), values)?;
    Ok(Dataset {
        x,
        labels,
        classes: 3,
    })
}

/// Optical recognition of handwritten digits (UCI, CC BY 4.0): 1797 images of 8 × 8
/// pixels (0..16), ten classes. Each gzip-compressed CSV row is 64 pixels, then the label.
pub fn digits() -> Result<Dataset, Box<dyn std::error::Error>> {
    let file = std::fs::File::open(data_file("digits.csv.gz"))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(flate2::read::GzDecoder::new(file));
    let (mut values, mut labels) = (Vec::new(), Vec::new());
    for record in reader.records() {
        let record = record?;
        if record.len() != 65 {
            return Err(format!("digits.csv.gz: a row has {} fields, not 65", record.len()).into());
        }
        for field in record.iter().take(64) {
            values.push(field.trim().parse::<f64>()? / 16.0);
        }
        labels.push(record[64].trim().parse()?);
    }
    let x = Array2::from_shape_vec((labels.len(), 64), values)?;
    Ok(Dataset {
        x,
        labels,
        classes: 10,
    })
}

impl Dataset {
    /// A seeded shuffle split into (train, test), `test_fraction` of the rows held out.
    pub fn split(&self, test_fraction: f64, seed: u64) -> (Dataset, Dataset) {
        use rand::SeedableRng;
        use rand::seq::SliceRandom;
        let mut order: Vec<usize> = (0..self.labels.len()).collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        let n_test = (self.labels.len() as f64 * test_fraction).round() as usize;
        let (test, train) = order.split_at(n_test);
        let take = |rows: &[usize]| Dataset {
            x: self.x.select(Axis(0), rows),
            labels: rows.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes,
        };
        (take(train), take(test))
    }
}

/// Each column scaled to mean 0 and standard deviation 1.
pub fn standardize(x: &Array2<f64>) -> Array2<f64> {
    let mean = x.mean_axis(Axis(0)).expect("at least one row");
    let std = x
        .std_axis(Axis(0), 0.0)
        .mapv(|s| if s > 0.0 { s } else { 1.0 });
    (x - &mean) / &std
}

/// One row per label, 1 in the label's column.
pub fn one_hot(labels: &[usize], classes: usize) -> Array2<f64> {
    let mut y = Array2::zeros((labels.len(), classes));
    for (i, &c) in labels.iter().enumerate() {
        y[[i, c]] = 1.0;
    }
    y
}

/// Fraction of rows whose largest output is in the label's column.
pub fn accuracy<F: PartialOrd + Copy>(out: &Array2<F>, labels: &[usize]) -> f64 {
    let hits = out
        .rows()
        .into_iter()
        .zip(labels)
        .filter(|(row, label)| {
            let best = (0..row.len()).fold(0, |b, j| if row[j] > row[b] { j } else { b });
            best == **label
        })
        .count();
    hits as f64 / labels.len() as f64
}

/// The digits network: 64 → 64 relu → 10 logits, He-initialised from `seed`
/// (`digits.rs` in f32, `digits_mpi.rs` in f64).
pub fn digits_network<F: tapegrad::Float>(seed: u64) -> tapegrad::nn::Sequential<F> {
    use rand::SeedableRng;
    use tapegrad::nn::{Activation, Init, mlp};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    mlp(
        &[64, 64, 10],
        Activation::Relu,
        Activation::Identity,
        Init::He,
        &mut rng,
    )
}

/// Accuracy of `model` on `x`, with gradients off.
pub fn model_accuracy<F: tapegrad::Float>(
    model: &dyn tapegrad::nn::Module<F>,
    x: &Array2<F>,
    labels: &[usize],
) -> tapegrad::Result<f64> {
    let tape = tapegrad::Tape::new();
    let logits = tape.no_grad(|| model.forward(tape.constant(x)))?;
    Ok(accuracy(&logits.value(), labels))
}
