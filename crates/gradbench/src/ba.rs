//! `ba`: bundle adjustment's reprojection and weight residuals (ADBench) and their sparse
//! Jacobian, in the reference's CSR layout (only its first 30 entries and the last are
//! sent, but all of it is computed).
//!
//! The eval's single camera, point, weight and feature are replicated into `n` cameras,
//! `m` points and `p` observations (`obs[i] = (i mod n, i mod m)`), as the reference does
//! before timing; nothing exploits the replication. Observations are columns: each run
//! gathers a copy of its camera (11 × p) and point (3 × p) per observation, and every step
//! of the projection is one op on rows of length p. Since observation `i`'s residuals
//! depend only on its own copies, the gradients of all observations' first residual with
//! respect to the copies are column `i`'s Jacobian row, for every `i` at once: the sparse
//! Jacobian is two backward passes (seeds `[1; 0]` and `[0; 1]`) plus one for the weight
//! residuals.

use ndarray::{Array2, Axis, s};
use serde_json::{Value, json};
use tapegrad::{BackwardOptions, Tape, Tensor};

use crate::input::{count, err, field, number, numbers};
use crate::runs::{Runs, measure};

const NCAM: usize = 11;

/// The replicated problem, as the reference builds it.
struct Input {
    n: usize,
    m: usize,
    p: usize,
    cams: Array2<f64>,    // n × 11
    points: Array2<f64>,  // m × 3
    weights: Array2<f64>, // 1 × p
    feats: Array2<f64>,   // 2 × p (a column per observation)
    obs: Vec<(usize, usize)>,
}

fn read(input: &Value) -> Result<Input, String> {
    let n = count(field(input, "n")?, "n")?;
    let m = count(field(input, "m")?, "m")?;
    let p = count(field(input, "p")?, "p")?;
    let cam = numbers(field(input, "cam")?, "cam")?;
    let x = numbers(field(input, "x")?, "x")?;
    let w = number(field(input, "w")?, "w")?;
    let feat = numbers(field(input, "feat")?, "feat")?;
    if n == 0 || m == 0 || p == 0 || cam.len() != NCAM || x.len() != 3 || feat.len() != 2 {
        return Err("ba: needs n, m, p ≥ 1, 11 camera, 3 point and 2 feature numbers".into());
    }
    Ok(Input {
        n,
        m,
        p,
        cams: Array2::from_shape_fn((n, NCAM), |(_, j)| cam[j]),
        points: Array2::from_shape_fn((m, 3), |(_, j)| x[j]),
        weights: Array2::from_elem((1, p), w),
        feats: Array2::from_shape_fn((2, p), |(j, _)| feat[j]),
        obs: (0..p).map(|i| (i % n, i % m)).collect(),
    })
}

/// Each observation's copy of its camera (11 × p) and point (3 × p).
fn gather(input: &Input) -> (Array2<f64>, Array2<f64>) {
    let mut cams = Array2::zeros((NCAM, input.p));
    let mut points = Array2::zeros((3, input.p));
    for (i, &(c, x)) in input.obs.iter().enumerate() {
        cams.column_mut(i).assign(&input.cams.row(c));
        points.column_mut(i).assign(&input.points.row(x));
    }
    (cams, points)
}

/// `a × b` for 3 × p columns of vectors.
fn cross<'t>(a: Tensor<'t, f64>, b: Tensor<'t, f64>) -> Tensor<'t, f64> {
    let (yzx, zxy) = ([1, 2, 0], [2, 0, 1]);
    a.gather_rows(&yzx) * b.gather_rows(&zxy) - a.gather_rows(&zxy) * b.gather_rows(&yzx)
}

/// Rodrigues' rotation of the points `pt` by the angle-axis vectors `rot` (both 3 × p),
/// with the reference's first-order form where the angle is exactly 0.
fn rodrigues<'t>(rot: Tensor<'t, f64>, pt: Tensor<'t, f64>) -> Tensor<'t, f64> {
    let tape = rot.tape();
    let sqtheta = rot.square().sum_axis(Axis(0)); // 1 × p
    let nonzero = sqtheta.value().mapv(|v| v != 0.0);
    let small = || pt + cross(rot, pt);
    if !nonzero.iter().any(|&b| b) {
        return small();
    }
    let all = nonzero.iter().all(|&b| b);
    // where the angle is 0 the general form is computed at angle 1 and discarded, so that
    // its 0/0 sends no NaN into the gradient
    let safe = if all {
        sqtheta
    } else {
        Tensor::where_(nonzero.view(), sqtheta, tape.constant(Array2::ones((1, 1))))
    };
    let theta = safe.sqrt();
    let (cos, sin) = (theta.cos(), theta.sin());
    let w = rot / theta;
    let tmp = (w * pt).sum_axis(Axis(0)) * (-cos + 1.0);
    let general = pt * cos + cross(w, pt) * sin + w * tmp;
    if all {
        general
    } else {
        Tensor::where_(nonzero.view(), general, small())
    }
}

/// The reprojection residuals (2 × p) of the per-observation copies `cams` (11 × p) and
/// `points` (3 × p), with weights `w` (1 × p).
fn reprojection<'t>(
    cams: Tensor<'t, f64>,
    points: Tensor<'t, f64>,
    w: Tensor<'t, f64>,
    feats: Tensor<'t, f64>,
) -> Tensor<'t, f64> {
    let rows = |r: std::ops::Range<usize>| cams.slice_rows(r);
    let xcam = rodrigues(rows(0..3), points - rows(3..6));
    let proj = xcam.slice_rows(0..2) / xcam.slice_rows(2..3);
    let rsq = proj.square().sum_axis(Axis(0));
    let distortion = rows(9..10) * rsq + rows(10..11) * rsq.square() + 1.0;
    let proj = proj * distortion * rows(6..7) + rows(7..9);
    w * (proj - feats)
}

/// `1 − w²`.
fn weight_error<'t>(w: Tensor<'t, f64>) -> Tensor<'t, f64> {
    -w.square() + 1.0
}

/// The Jacobian in the reference's CSR form: row starts, columns, values.
struct Sparse {
    rows: Vec<u32>,
    cols: Vec<u32>,
    vals: Vec<f64>,
}

fn jacobian(input: &Input) -> Result<Sparse, String> {
    let (n, m, p) = (input.n, input.m, input.p);
    let (cam_copies, point_copies) = gather(input);
    let tape = Tape::new();
    let (cams, points) = (tape.param(&cam_copies), tape.param(&point_copies));
    let w = tape.param(&input.weights);
    let residuals = reprojection(cams, points, w, tape.constant(&input.feats));
    let werr = weight_error(w);
    // every pass but the last keeps the tape for the next
    let opts = BackwardOptions::new()
        .seed(Array2::ones((1, p)))
        .retain_graph(true);
    let dw = tape
        .backward_with(werr, opts)
        .map_err(err)?
        .take(w)
        .ok_or("no gradient")?;
    let mut blocks = Vec::with_capacity(2);
    for r in 0..2 {
        let mut seed = Array2::zeros((2, p));
        seed.row_mut(r).fill(1.0);
        let opts = BackwardOptions::new().seed(seed).retain_graph(r == 0);
        let mut g = tape.backward_with(residuals, opts).map_err(err)?;
        let mut take = |t| g.take(t).ok_or_else(|| "no gradient".to_string());
        blocks.push((take(cams)?, take(points)?, take(w)?));
    }
    // CSR, as the reference assembles it: per observation two rows of 11 + 3 + 1 entries,
    // then one row per weight
    let nnz = 2 * (NCAM + 4) * p + p;
    let mut sparse = Sparse {
        rows: Vec::with_capacity(3 * p + 1),
        cols: Vec::with_capacity(nnz),
        vals: Vec::with_capacity(nnz),
    };
    let col = |c: usize| u32::try_from(c).map_err(|_| "ba: too many columns".to_string());
    sparse.rows.push(0);
    let (point_at, w_at) = (NCAM * n, NCAM * n + 3 * m);
    for (i, &(c, x)) in input.obs.iter().enumerate() {
        for (dcam, dpoint, dweight) in &blocks {
            let last = *sparse.rows.last().expect("rows start with 0");
            sparse.rows.push(last + (NCAM + 4) as u32);
            for j in 0..NCAM {
                sparse.cols.push(col(NCAM * c + j)?);
                sparse.vals.push(dcam[[j, i]]);
            }
            for j in 0..3 {
                sparse.cols.push(col(point_at + 3 * x + j)?);
                sparse.vals.push(dpoint[[j, i]]);
            }
            sparse.cols.push(col(w_at + i)?);
            sparse.vals.push(dweight[[0, i]]);
        }
    }
    for i in 0..p {
        let last = *sparse.rows.last().expect("rows start with 0");
        sparse.rows.push(last + 1);
        sparse.cols.push(col(w_at + i)?);
        sparse.vals.push(dw[[0, i]]);
    }
    Ok(sparse)
}

/// The first 30 entries and the last, of each array (what the eval compares).
fn summary<T: Copy + Into<Value>>(v: &[T]) -> Value {
    let mut out: Vec<Value> = v.iter().take(30).map(|&x| x.into()).collect();
    if let Some(&last) = v.last() {
        out.push(last.into());
    }
    Value::from(out)
}

pub fn evaluate(function: &str, input: &Value) -> Result<crate::runs::Evaluated, String> {
    let inp = read(input)?;
    let runs = Runs::of(input);
    match function {
        "objective" => measure(
            runs,
            || {
                let (cam_copies, point_copies) = gather(&inp);
                let tape = Tape::new();
                let w = tape.constant(&inp.weights);
                let (cams, points) = (tape.constant(&cam_copies), tape.constant(&point_copies));
                let err = reprojection(cams, points, w, tape.constant(&inp.feats)).value();
                Ok((err, weight_error(w).value()))
            },
            |(err, werr)| {
                json!({
                    "reproj_error": {"elements": err.slice(s![.., 0]).to_vec(), "repeated": inp.p},
                    "w_err": {"element": werr[[0, 0]], "repeated": inp.p},
                })
            },
        ),
        "jacobian" => measure(
            runs,
            || jacobian(&inp),
            |j| json!({"rows": summary(&j.rows), "cols": summary(&j.cols), "vals": summary(&j.vals)}),
        ),
        _ => Err(crate::protocol::unknown("ba", function)),
    }
}
