//! Data loading shared by the examples and the tests (`#[path]`-included by the tests).

#![allow(dead_code)]

use std::path::Path;

use ndarray::{Array2, Axis};

/// A data set: one sample per row of `x`, its class in `labels`.
pub struct Dataset {
    pub x: Array2<f64>,
    pub labels: Vec<usize>,
    pub classes: usize,
}

fn data_file(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join("data")
        .join(name)
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
