//! `kmeans`: the cost `Σᵢ minⱼ ‖pᵢ − cⱼ‖²` and the Newton direction `J ⊘ diag(H)`, with `J`
//! its gradient with respect to the centroids and `H` its Hessian, which is diagonal.
//!
//! All squared distances at once, `‖p‖² + ‖c‖²ᵀ − 2 P·Cᵀ` (n × k, one GEMM), the minimum
//! along each row, the sum. `J` is the gradient recorded on the tape ([`Tape::grad`]);
//! `diag(H) = H·1` is backward through it from `Σ J` (the Hessian-vector product with a
//! vector of ones, forward over reverse), on the same tape.

use ndarray::{Array2, Axis};
use serde_json::Value;
use tapegrad::{Tape, Tensor};

use crate::input::{err, field, matrix, rows};
use crate::runs::{Runs, measure};

/// The k-means cost of `points` (n × d, constant) with `centroids` (k × d).
fn cost<'t>(points: Tensor<'t, f64>, centroids: Tensor<'t, f64>) -> Tensor<'t, f64> {
    let p2 = points.square().sum_axis(Axis(1)); // n × 1
    let c2 = centroids.square().sum_axis(Axis(1)).t(); // 1 × k
    let dists = points
        .matmul(centroids.t())
        .mul_scalar(-2.0)
        .add_col(p2)
        .add_row(c2);
    dists.min_axis(Axis(1)).sum()
}

/// `J ⊘ diag(H)`.
fn direction(points: &Array2<f64>, centroids: &Array2<f64>) -> Result<Array2<f64>, String> {
    let tape = Tape::new();
    let c = tape.param(centroids);
    let f = cost(tape.constant(points), c);
    let j = tape.grad(f, &[c]).map_err(err)?[0];
    let j_value = j.value();
    let mut grads = tape.backward(j.sum()).map_err(err)?;
    let h = grads.take(c).ok_or("no Hessian-vector product")?;
    Ok(j_value / h)
}

pub fn evaluate(function: &str, input: &Value) -> Result<crate::runs::Evaluated, String> {
    let points = matrix(field(input, "points")?, "points", None)?;
    let centroids = matrix(
        field(input, "centroids")?,
        "centroids",
        Some(points.ncols()),
    )?;
    if points.nrows() == 0 || centroids.nrows() == 0 {
        return Err("kmeans needs points and centroids".into());
    }
    let runs = Runs::of(input);
    match function {
        "cost" => measure(
            runs,
            || {
                let tape = Tape::new();
                Ok(cost(tape.constant(&points), tape.constant(&centroids)).item())
            },
            Value::from,
        ),
        "dir" => measure(runs, || direction(&points, &centroids), |d| rows(&d)),
        _ => Err(crate::protocol::unknown("kmeans", function)),
    }
}
