//! `ht`: hand tracking (ADBench): the residuals between observed points and a skinned hand
//! mesh posed by 26 parameters `theta` (and, in the "complicated" variant, barycentric
//! coordinates `us` of each point on its mesh triangle), and their Jacobian
//! (`3·npts × (2 + 26)`: the two `us` columns, each residual against its own point's `u`,
//! then `theta`).
//!
//! The residuals as matrices: bones are rows (each bone's 4 × 4 matrix a row of 16), and
//! per-bone products are batched products of those rows ([`bmm`]); the parent chain runs
//! one level of the hierarchy at a time; skinning is one GEMM of the stacked 3 × 4 bone
//! transforms with the weighted rest positions (`(4·bones) × vertices`); the points'
//! residuals are an `npts × 3` matrix of gathered vertices.
//!
//! The Jacobian is forward mode, one column per input direction, by the double-VJP trick on
//! one tape: the vector-Jacobian product `Jᵀw` recorded once with a variable cotangent `w`
//! ([`Tape::grad_seeded`]), then for each direction the gradient of its component with
//! respect to `w`, by backward. The two `us` directions are all points' first (second)
//! coordinate at once, since each residual depends on its own point's coordinates only.

use ndarray::Array2;
use serde_json::Value;
use tapegrad::{BackwardOptions, Tape, Tensor};

use crate::input::{counts, err, field, matrix, numbers, rows};
use crate::runs::{Runs, measure};

struct Model {
    parents: Vec<Option<usize>>,
    base_relatives: Array2<f64>, // bones × 16, row-major 4 × 4 per bone
    inverse_base_absolutes: Array2<f64>, // bones × 16
    base_positions: Array2<f64>, // vertices × 4 (homogeneous)
    weights: Array2<f64>,        // vertices × bones
    triangles: Vec<[usize; 3]>,
    is_mirrored: bool,
}

struct Input {
    theta: Array2<f64>, // 26 × 1
    model: Model,
    correspondences: Vec<usize>,
    points: Array2<f64>,     // npts × 3
    us: Option<Array2<f64>>, // npts × 2 ("complicated")
}

/// Bones × 16 from a list of 4 × 4 nested matrices.
fn matrices(v: &Value, what: &str) -> Result<Array2<f64>, String> {
    let list = v.as_array().ok_or_else(|| format!("{what}: not a list"))?;
    let mut out = Array2::zeros((list.len(), 16));
    for (b, m) in list.iter().enumerate() {
        let m = matrix(m, what, Some(4))?;
        if m.nrows() != 4 {
            return Err(format!("{what}: not 4 × 4"));
        }
        out.row_mut(b).assign(
            &Array2::from_shape_vec((1, 16), m.iter().copied().collect())
                .map_err(|e| e.to_string())?
                .row(0),
        );
    }
    Ok(out)
}

fn read(input: &Value) -> Result<Input, String> {
    let theta = numbers(field(input, "theta")?, "theta")?;
    if theta.len() != 26 {
        return Err("ht: theta needs 26 numbers".into());
    }
    let data = field(input, "data")?;
    let model = field(data, "model")?;
    let parents = field(model, "parents")?
        .as_array()
        .ok_or("parents: not a list")?
        .iter()
        .map(|p| match p.as_i64() {
            Some(-1) => Ok(None),
            Some(p) if p >= 0 => Ok(Some(p as usize)),
            _ => Err("parents: not −1 or an index".to_string()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bones = parents.len();
    let triangles = field(model, "triangles")?
        .as_array()
        .ok_or("triangles: not a list")?
        .iter()
        .map(|t| {
            let t = counts(t, "triangles")?;
            <[usize; 3]>::try_from(t).map_err(|_| "triangles: not 3 vertices".to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let model = Model {
        base_relatives: matrices(field(model, "base_relatives")?, "base_relatives")?,
        inverse_base_absolutes: matrices(
            field(model, "inverse_base_absolutes")?,
            "inverse_base_absolutes",
        )?,
        base_positions: matrix(field(model, "base_positions")?, "base_positions", Some(4))?,
        weights: matrix(field(model, "weights")?, "weights", Some(bones))?,
        triangles,
        is_mirrored: field(model, "is_mirrored")?.as_bool().unwrap_or(false),
        parents,
    };
    let correspondences = counts(field(data, "correspondences")?, "correspondences")?;
    let points = matrix(field(data, "points")?, "points", Some(3))?;
    let us = match input.get("us").and_then(Value::as_array) {
        Some(u) if !u.is_empty() => Some(matrix(field(input, "us")?, "us", Some(2))?),
        _ => None,
    };
    let npts = correspondences.len();
    let vertices = model.base_positions.nrows();
    let bad_parent = model
        .parents
        .iter()
        .enumerate()
        .any(|(b, p)| p.is_some_and(|p| p >= b));
    let bad_index = match &us {
        Some(u) => {
            u.nrows() != npts
                || correspondences.iter().any(|&c| {
                    c >= model.triangles.len() || model.triangles[c].iter().any(|&v| v >= vertices)
                })
        }
        None => correspondences.iter().any(|&c| c >= vertices),
    };
    if bones == 0
        || model.base_relatives.nrows() != bones
        || model.inverse_base_absolutes.nrows() != bones
        || model.weights.nrows() != vertices
        || points.nrows() != npts
        || bad_parent
        || bad_index
    {
        return Err("ht: inconsistent model or data".into());
    }
    Ok(Input {
        theta: Array2::from_shape_vec((26, 1), theta).map_err(|e| e.to_string())?,
        model,
        correspondences,
        points,
        us,
    })
}

/// A constant 0/1 matrix with ones at `at`.
fn ones_at(shape: (usize, usize), at: impl IntoIterator<Item = (usize, usize)>) -> Array2<f64> {
    let mut a = Array2::zeros(shape);
    for i in at {
        a[i] = 1.0;
    }
    a
}

/// Batched products: row `b` of `a` is an `m × k` matrix and row `b` of `c` a `k × n`
/// one (each row-major); row `b` of the result is their `m × n` product. Three GEMMs with
/// constant 0/1 matrices (spreading both operands to every `(i, j, l)`, then summing over
/// `l`) and one elementwise product.
fn bmm<'t>(
    a: Tensor<'t, f64>,
    c: Tensor<'t, f64>,
    m: usize,
    k: usize,
    n: usize,
) -> Tensor<'t, f64> {
    let tape = a.tape();
    let ijl = || (0..m).flat_map(move |i| (0..n).flat_map(move |j| (0..k).map(move |l| (i, j, l))));
    let spread_a = ones_at(
        (m * k, m * n * k),
        ijl().enumerate().map(|(p, (i, _, l))| (i * k + l, p)),
    );
    let spread_c = ones_at(
        (k * n, m * n * k),
        ijl().enumerate().map(|(p, (_, j, l))| (l * n + j, p)),
    );
    let sum = ones_at(
        (m * n * k, m * n),
        ijl().enumerate().map(|(p, (i, j, _))| (p, i * n + j)),
    );
    let product = a.matmul(tape.constant(spread_a)) * c.matmul(tape.constant(spread_c));
    product.matmul(tape.constant(sum))
}

/// The pose parameter (row, column) of `theta` index, as the reference lays them out:
/// column 0 global rotation, 1 scale (all 1), 2 translation, bone `b` at column `b + 3`
/// (five fingers of three bones: the first with two angles, the others one).
fn pose_of_theta() -> Vec<((usize, usize), usize)> {
    let mut at = Vec::new();
    for r in 0..3 {
        at.push(((r, 0), r));
        at.push(((r, 2), 3 + r));
    }
    let (mut i_theta, mut col) = (6, 5);
    for _finger in 0..5 {
        for bone in 2..=4 {
            at.push(((0, col), i_theta));
            i_theta += 1;
            if bone == 2 {
                at.push(((1, col), i_theta));
                i_theta += 1;
            }
            col += 1;
        }
        col += 1;
    }
    at
}

/// The posed positions (3 × `vertices.len()`) of the mesh vertices `vertices`, for `theta`
/// (26 × 1).
fn vertex_positions<'t>(
    model: &'t Model,
    theta: Tensor<'t, f64>,
    vertices: &[usize],
) -> Tensor<'t, f64> {
    let tape = theta.tape();
    let bones = model.parents.len();
    // each bone's Euler angles (bones × 3: x, z, y), gathered from [theta; 0]
    let source = Tensor::concat_rows(&[theta, tape.scalar(0.0)]);
    let mut index = vec![26; bones * 3];
    for ((r, c), t) in pose_of_theta() {
        if c >= 3 && c - 3 < bones {
            index[(c - 3) * 3 + r] = t;
        }
    }
    let angles = source.gather_rows(&index).reshape((bones, 3));
    // Rx, Ry, Rz (bones × 9 each) from the cosines and sines, then R = Rz·Ry·Rx
    let cs = Tensor::concat_cols(&[angles.cos(), angles.sin()]); // cx cz cy sx sz sy
    let (cx, cz, cy, sx, sz, sy) = (0, 1, 2, 3, 4, 5);
    let mut place = Array2::zeros((6, 27));
    let mut fixed = Array2::zeros((1, 27));
    let entries: [(usize, usize, f64); 12] = [
        (cx, 4, 1.0),
        (cx, 8, 1.0),
        (sx, 5, -1.0),
        (sx, 7, 1.0), // Rx
        (cy, 9, 1.0),
        (cy, 17, 1.0),
        (sy, 11, 1.0),
        (sy, 15, -1.0), // Ry
        (cz, 18, 1.0),
        (cz, 22, 1.0),
        (sz, 19, -1.0),
        (sz, 21, 1.0), // Rz
    ];
    for (from, to, sign) in entries {
        place[[from, to]] = sign;
    }
    for ones in [0, 13, 26] {
        fixed[[0, ones]] = 1.0;
    }
    let rxyz = cs
        .matmul(tape.constant(place))
        .add_row(tape.constant(fixed));
    let (rx, ry, rz) = (
        rxyz.slice_cols(0..9),
        rxyz.slice_cols(9..18),
        rxyz.slice_cols(18..27),
    );
    let rot = bmm(bmm(rz, ry, 3, 3, 3), rx, 3, 3, 3);
    // relatives = base_relatives · [[R, 0], [0, 1]]
    let embed = ones_at((9, 16), (0..9).map(|e| (e, (e / 3) * 4 + e % 3)));
    let corner = ones_at((1, 16), [(0, 15)]);
    let posed = rot
        .matmul(tape.constant(embed))
        .add_row(tape.constant(corner));
    let relatives = bmm(tape.constant(&model.base_relatives), posed, 4, 4, 4);
    // absolutes down the hierarchy, one level at a time
    let mut depth = vec![0usize; bones];
    for b in 0..bones {
        depth[b] = model.parents[b].map_or(0, |p| depth[p] + 1);
    }
    let roots: Vec<usize> = (0..bones).filter(|&b| depth[b] == 0).collect();
    let mut row_of = vec![usize::MAX; bones];
    for (r, &b) in roots.iter().enumerate() {
        row_of[b] = r;
    }
    let mut known = relatives.gather_rows(&roots);
    let mut rows_known = roots.len();
    for level in 1..=depth.iter().copied().max().unwrap_or(0) {
        let members: Vec<usize> = (0..bones).filter(|&b| depth[b] == level).collect();
        let parent_rows: Vec<usize> = members
            .iter()
            .map(|&b| row_of[model.parents[b].expect("below the roots")])
            .collect();
        let next = bmm(
            known.gather_rows(&parent_rows),
            relatives.gather_rows(&members),
            4,
            4,
            4,
        );
        known = Tensor::concat_rows(&[known, next]);
        for &b in &members {
            row_of[b] = rows_known;
            rows_known += 1;
        }
    }
    let absolutes = known.gather_rows(&row_of);
    // the top 3 × 4 of each bone's transform, absolutes · inverse base absolutes
    let inverse = tape.constant(&model.inverse_base_absolutes);
    let transforms = bmm(absolutes.slice_cols(0..12), inverse, 3, 4, 4); // bones × 12
    // skinning: Σ_b T_b · (rest ∘ w_b) as one GEMM, (3 × 4·bones) · (4·bones × vertices)
    let mut stacked = transforms.t().reshape((3, 4 * bones)); // column (k, b)
    let mut weighted = Array2::zeros((4 * bones, vertices.len()));
    for (j, &v) in vertices.iter().enumerate() {
        let (rest, w) = (model.base_positions.row(v), model.weights.row(v));
        for k in 0..4 {
            for b in 0..bones {
                weighted[[k * bones + b, j]] = rest[k] * w[b];
            }
        }
    }
    if model.is_mirrored {
        stacked = stacked * tape.constant(ndarray::array![[-1.0], [1.0], [1.0]]);
    }
    // the global rotation (angle-axis theta[0..3]; the scale column is all ones) and
    // translation theta[3..6]
    let axis = theta.slice_rows(0..3);
    let norm = axis.square().sum().sqrt();
    let global = if norm.item() < 1e-4 {
        tape.constant(Array2::eye(3))
    } else {
        let n = axis / norm;
        let (c, s) = (norm.cos(), norm.sin());
        let signed = Tensor::concat_rows(&[n, -n, tape.scalar(0.0)]); // x y z −x −y −z 0
        let cross = signed
            .gather_rows(&[6, 5, 1, 2, 6, 3, 4, 0, 6])
            .reshape((3, 3));
        tape.constant(Array2::eye(3)) * c + n.matmul(n.t()) * (-c + 1.0) + cross * s
    };
    global
        .matmul(stacked)
        .matmul(tape.constant(weighted))
        .add_col(theta.slice_rows(3..6))
}

/// The residuals (npts × 3, row-major as the reference's flat array). Only the vertices
/// the points refer to are posed.
fn residuals<'t>(
    input: &'t Input,
    theta: Tensor<'t, f64>,
    us: Option<Tensor<'t, f64>>,
) -> Tensor<'t, f64> {
    let tape = theta.tape();
    // each point's vertex (simple) or triangle corners (complicated), then the vertices
    // used, each once, and where each point's vertices are among them
    let corners: Vec<Vec<usize>> = match us {
        None => vec![input.correspondences.clone()],
        Some(_) => (0..3)
            .map(|k| {
                let corner = |&c: &usize| input.model.triangles[c][k];
                input.correspondences.iter().map(corner).collect()
            })
            .collect(),
    };
    let mut position = vec![usize::MAX; input.model.base_positions.nrows()];
    let mut used = Vec::new();
    for &v in corners.iter().flatten() {
        if position[v] == usize::MAX {
            position[v] = used.len();
            used.push(v);
        }
    }
    let at = vertex_positions(&input.model, theta, &used).t(); // used vertices × 3
    let corner = |k: usize| -> Vec<usize> { corners[k].iter().map(|&v| position[v]).collect() };
    let points = tape.constant(&input.points);
    match us {
        None => points - at.gather_rows(&corner(0)),
        Some(u) => {
            let (u0, u1) = (u.slice_cols(0..1), u.slice_cols(1..2));
            let hand = at.gather_rows(&corner(0)) * u0
                + at.gather_rows(&corner(1)) * u1
                + at.gather_rows(&corner(2)) * (-u0 - u1 + 1.0);
            points - hand
        }
    }
}

/// The Jacobian, `3·npts × (2 + 26)` ("complicated") or `3·npts × 26`.
fn jacobian(input: &Input) -> Result<Array2<f64>, String> {
    let tape = Tape::new();
    let theta = tape.param(&input.theta);
    let us = input.us.as_ref().map(|u| tape.param(u));
    let y = residuals(input, theta, us);
    let npts = y.rows();
    // Jᵀw, recorded with a variable cotangent w
    let w = tape.param(Array2::zeros(y.shape()));
    let mut wrt = vec![theta];
    wrt.extend(us);
    let vjp = tape.grad_seeded(y, w, &wrt).map_err(err)?;
    // one scalar per direction: each u column summed over points, then theta's 26
    let mut directions = Vec::new();
    if let Some(du) = vjp.get(1) {
        directions.push(du.slice_cols(0..1).sum());
        directions.push(du.slice_cols(1..2).sum());
    }
    directions.extend((0..26).map(|k| vjp[0].slice_rows(k..k + 1)));
    let mut jac = Array2::zeros((3 * npts, directions.len()));
    let last = directions.len() - 1;
    for (col, &d) in directions.iter().enumerate() {
        let opts = BackwardOptions::new().retain_graph(col < last);
        let mut grads = tape.backward_with(d, opts).map_err(err)?;
        let jw = grads.take(w).ok_or("no Jacobian column")?;
        jac.column_mut(col).assign(
            &jw.into_shape_with_order(3 * npts)
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(jac)
}

pub fn evaluate(function: &str, input: &Value) -> Result<crate::runs::Evaluated, String> {
    let inp = read(input)?;
    let runs = Runs::of(input);
    match function {
        "objective" => measure(
            runs,
            || {
                let tape = Tape::new();
                let us = inp.us.as_ref().map(|u| tape.constant(u));
                Ok(residuals(&inp, tape.constant(&inp.theta), us).value())
            },
            |r| Value::from(r.iter().copied().collect::<Vec<f64>>()),
        ),
        "jacobian" => measure(runs, || jacobian(&inp), |j| rows(&j)),
        _ => Err(crate::protocol::unknown("ht", function)),
    }
}
