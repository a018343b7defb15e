//! `kmeans`: the cost `Σᵢ minⱼ ‖pᵢ − cⱼ‖²` and the Newton direction `J ⊘ diag(H)`, with `J`
//! its gradient with respect to the centroids and `H` its Hessian, which is diagonal.
//!
//! The cost is written as the squared distance of each point to its nearest centroid:
//! the nearest centroids come from all squared distances at once (`‖c‖²ᵀ − 2 P·Cᵀ`, n × k,
//! one GEMM; `‖p‖²` does not change a row's argmin), a choice with no derivative, as the
//! minimum's is a choice of branch; then the distances to the chosen centroids, gathered
//! (n × d). That is the minimum's value, with the minimum's derivative wherever it has one
//! (not at exact ties). `J` is the gradient recorded on the tape ([`Tape::grad`]); `diag(H)
//! = H·1` is backward through it from `Σ J` (the Hessian-vector product with a vector of
//! ones, forward over reverse), on the same tape.

use ndarray::{Array2, Axis};
use serde_json::Value;
use tapegrad::{Tape, Tensor};

use crate::input::{err, field, matrix, rows};
use crate::runs::{Runs, measure};

/// The nearest centroid of each point (ties: the first): the row argmins of
/// `‖c‖²ᵀ − 2 P·Cᵀ`, as one GEMM `[P 1]·[−2C ‖c‖²]ᵀ`.
fn nearest<'t>(points: Tensor<'t, f64>, centroids: Tensor<'t, f64>) -> Vec<usize> {
    let tape = points.tape();
    let (points, centroids) = (points.detach(), centroids.detach());
    let ones = tape.constant(Array2::ones((points.rows(), 1)));
    let c2 = centroids.square().sum_axis(Axis(1)); // k × 1
    let left = Tensor::concat_cols(&[points, ones]);
    let right = Tensor::concat_cols(&[centroids.mul_scalar(-2.0), c2]);
    left.matmul(right.t()).argmin(Axis(1))
}

/// The k-means cost of `points` (n × d, constant) with `centroids` (k × d).
fn cost<'t>(points: Tensor<'t, f64>, centroids: Tensor<'t, f64>) -> Tensor<'t, f64> {
    let assigned = centroids.gather_rows(&nearest(points, centroids));
    (points - assigned).square().sum()
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
