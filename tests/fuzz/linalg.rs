//! The `linalg` family: one linear-algebra op at a matrix drawn to be hard: exactly
//! singular (two equal columns, `u·vᵀ`, rank n − 1, a zero row), near-singular (those plus
//! `δ·N`, δ down to 10⁻¹²), diagonal, symmetric, positive definite, triangular; then scaled
//! by a power of two into the subnormal range, to tiny, huge or near-overflow entries.
//!
//! The oracle for the scaled matrix `A` is the same op at `Ã = 2ᵏ·A`, normalised (a power
//! of two scales exactly): every op is homogeneous (`det` of degree n, `inv` −1, `logdet`
//! up to the additive `n·k·ln 2`, ...), so value, gradient and `H·u` at `A` are those at
//! `Ã` times a power of two. Where that reference is not NaN, the op at `A` must not be
//! NaN; where it is in range and the matrix is not ill-conditioned, it must agree. At `Ã`
//! the loss `⟨W, op(Ã)⟩` is checked at first order (backward, `Tape::grad`) and second
//! order (`Tape::grad` twice) against central differences, with steps scaled to the
//! matrix's smallest singular value where the default step is too coarse (and no oracle
//! where two steps disagree). Errors must be typed, never a panic.

use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tapegrad::{ErrorKind, Tape, Tensor};

use crate::Family;
use crate::oracle::{agree, central, close_within, dot, randn};

pub(crate) const FAMILY: Family = Family {
    name: "linalg",
    default: 300,
    run,
    describe,
};

fn describe(seed: u64) -> String {
    format!("{:?}", generate(seed))
}

/// How an op's value scales with the matrix: `op(2⁻ᵏ·Ã) = 2^(−k·d)·op(Ã)`, or (`Log`)
/// `op(Ã) − n·k·ln 2` (whose derivatives scale as those of degree 0).
#[derive(Clone, Copy, Debug)]
enum Scaling {
    Degree(i32),
    /// Half the degree: `cholesky` (k is even).
    Half(i32),
    Log,
}

struct LinalgOp {
    name: &'static str,
    f: for<'t> fn(Tensor<'t, f64>, Tensor<'t, f64>) -> tapegrad::Result<Tensor<'t, f64>>,
    scaling: fn(usize) -> Scaling,
    /// The matrix the op wants (symmetric for `eigh`, ...).
    shape: Want,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Want {
    Any,
    Symmetric,
    Triangular,
}

#[rustfmt::skip]
fn ops() -> Vec<LinalgOp> {
    use Scaling::*;
    vec![
        LinalgOp { name: "det", f: |a, _| a.try_det(), scaling: |n| Degree(n as i32), shape: Want::Any },
        LinalgOp { name: "slogdet", f: |a, _| a.try_slogdet().map(|(_, l)| l), scaling: |_| Log, shape: Want::Any },
        LinalgOp { name: "slogdet", f: |a, _| a.try_slogdet().map(|(s, _)| s), scaling: |_| Degree(0), shape: Want::Any },
        LinalgOp { name: "logdet", f: |a, _| a.try_logdet(), scaling: |_| Log, shape: Want::Any },
        LinalgOp { name: "inv", f: |a, _| a.try_inv(), scaling: |_| Degree(-1), shape: Want::Any },
        LinalgOp { name: "solve", f: |a, b| a.try_solve(b), scaling: |_| Degree(-1), shape: Want::Any },
        LinalgOp { name: "solve_triangular", f: |a, b| a.try_solve_triangular(b, true, false), scaling: |_| Degree(-1), shape: Want::Triangular },
        LinalgOp { name: "solve_triangular", f: |a, b| a.try_solve_triangular(b, false, true), scaling: |_| Degree(-1), shape: Want::Triangular },
        LinalgOp { name: "cho_solve", f: |a, b| a.try_cho_solve(b), scaling: |_| Degree(-2), shape: Want::Triangular },
        LinalgOp { name: "cholesky", f: |a, _| a.try_cholesky(), scaling: |_| Half(1), shape: Want::Symmetric },
        LinalgOp { name: "eigh", f: |a, _| a.try_eigh().map(|(l, _)| l), scaling: |_| Degree(1), shape: Want::Symmetric },
        LinalgOp { name: "eigh", f: |a, _| a.try_eigh().map(|(_, v)| v.square()), scaling: |_| Degree(0), shape: Want::Symmetric },
    ]
}

/// The structure of the matrix before it is perturbed and scaled.
#[derive(Clone, Copy, Debug)]
enum Structure {
    Normal,
    /// `N + 2I`
    Invertible,
    /// Two equal columns.
    EqualColumns,
    /// `u·vᵀ`
    RankOne,
    /// `B·C`, `B` n × (n − 1)
    RankDeficient,
    ZeroRow,
    Diagonal,
    /// `X·Xᵀ + I`
    PositiveDefinite,
    /// `X·Xᵀ` of `X` n × (n − 1): positive semidefinite, singular
    Semidefinite,
}

#[derive(Clone, Debug)]
struct Program {
    op: usize,
    structure: Structure,
    /// `δ` of the perturbation `δ·N` (0: none).
    delta: f64,
    /// The power of two the matrix is scaled by.
    exponent: i32,
    a: Array2<f64>,
    b: Array2<f64>,
    w: Array2<f64>,
}

fn generate(seed: u64) -> Program {
    let mut rng = StdRng::seed_from_u64(seed);
    let ops = ops();
    let op = rng.random_range(0..ops.len());
    let n = rng.random_range(1..=4);
    let structures = [
        Structure::Normal,
        Structure::Invertible,
        Structure::EqualColumns,
        Structure::RankOne,
        Structure::RankDeficient,
        Structure::ZeroRow,
        Structure::Diagonal,
        Structure::PositiveDefinite,
        Structure::Semidefinite,
    ];
    let structure = structures[rng.random_range(0..structures.len())];
    let mut a = match structure {
        Structure::Normal => randn((n, n), &mut rng),
        Structure::Invertible => randn((n, n), &mut rng) + &(Array2::<f64>::eye(n) * 2.0),
        Structure::EqualColumns => {
            let mut a = randn((n, n), &mut rng);
            if n > 1 {
                let col = a.column(0).to_owned();
                a.column_mut(n - 1).assign(&col);
            } else {
                a[[0, 0]] = 0.0;
            }
            a
        }
        Structure::RankOne => randn((n, 1), &mut rng).dot(&randn((1, n), &mut rng)),
        Structure::RankDeficient => randn((n, n - 1), &mut rng).dot(&randn((n - 1, n), &mut rng)),
        Structure::ZeroRow => {
            let mut a = randn((n, n), &mut rng);
            a.row_mut(rng.random_range(0..n)).fill(0.0);
            a
        }
        Structure::Diagonal => {
            let d = randn((n, 1), &mut rng);
            Array2::from_shape_fn((n, n), |(i, j)| if i == j { d[[i, 0]] } else { 0.0 })
        }
        Structure::PositiveDefinite => {
            let x = randn((n, n), &mut rng);
            x.dot(&x.t()) + &Array2::<f64>::eye(n)
        }
        Structure::Semidefinite => {
            let x = randn((n, n - 1), &mut rng);
            x.dot(&x.t())
        }
    };
    let delta = [0.0, 0.0, 1e-3, 1e-6, 1e-9, 1e-12][rng.random_range(0..6)];
    if delta != 0.0 {
        a += &(randn((n, n), &mut rng) * delta);
    }
    match ops[op].shape {
        Want::Any => {}
        Want::Symmetric => a = (&a + &a.t()) * 0.5,
        Want::Triangular => {
            // a lower triangle (solve_triangular reads one triangle; cho_solve the lower)
            for i in 0..n {
                for j in i + 1..n {
                    a[[i, j]] = if rng.random_bool(0.5) { 0.0 } else { a[[i, j]] };
                }
            }
        }
    }
    // the scale: none, subnormal, tiny, huge, near overflow (even, for cholesky's √)
    let exponent = [0, 0, 0, -1040, -1030, -560, 500, 1000][rng.random_range(0..8)];
    let a = a.mapv(|v| scale(v, exponent));
    let m = rng.random_range(1..=3);
    let b = randn((n, m), &mut rng);
    let w_shape = match ops[op].name {
        "det" | "slogdet" | "logdet" => (1, 1),
        "solve" | "solve_triangular" | "cho_solve" => (n, m),
        "eigh" if op_is_eigenvalues(op) => (n, 1),
        _ => (n, n),
    };
    let w = randn(w_shape, &mut rng);
    Program {
        op,
        structure,
        delta,
        exponent,
        a,
        b,
        w,
    }
}

fn op_is_eigenvalues(op: usize) -> bool {
    ops()[op].name == "eigh" && ops()[..op].iter().all(|o| o.name != "eigh")
}

/// `v·2ᵉ`, rounded once at the end of the range (2ᵉ itself may not be representable).
fn scale(mut v: f64, mut e: i32) -> f64 {
    while e > 1000 && v.is_finite() && v != 0.0 {
        v *= 2f64.powi(1000);
        e -= 1000;
    }
    while e < -1000 && v.is_finite() && v != 0.0 {
        v *= 2f64.powi(-1000);
        e += 1000;
    }
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    v * 2f64.powi(e)
}

/// The eigenvalues of a small symmetric matrix (cyclic Jacobi), for step sizes and
/// conditioning: independent of the ops under test.
fn symmetric_eigenvalues(m: &Array2<f64>) -> Vec<f64> {
    let n = m.nrows();
    let mut a = m.clone();
    for _ in 0..60 {
        let mut off = 0.0;
        for p in 0..n {
            for q in p + 1..n {
                off += a[[p, q]] * a[[p, q]];
                if a[[p, q]] == 0.0 {
                    continue;
                }
                let theta = (a[[q, q]] - a[[p, p]]) / (2.0 * a[[p, q]]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (x, y) = (a[[k, p]], a[[k, q]]);
                    a[[k, p]] = c * x - s * y;
                    a[[k, q]] = s * x + c * y;
                }
                for k in 0..n {
                    let (x, y) = (a[[p, k]], a[[q, k]]);
                    a[[p, k]] = c * x - s * y;
                    a[[q, k]] = s * x + c * y;
                }
            }
        }
        if off < 1e-300 {
            break;
        }
    }
    (0..n).map(|i| a[[i, i]]).collect()
}

/// The extreme singular values of `a`.
fn singular_range(a: &Array2<f64>) -> (f64, f64) {
    let l = symmetric_eigenvalues(&a.t().dot(a));
    let min = l
        .iter()
        .fold(f64::INFINITY, |m, &v| m.min(v))
        .max(0.0)
        .sqrt();
    let max = l.iter().fold(0.0f64, |m, &v| m.max(v)).sqrt();
    (min, max)
}

/// What the op gives at a matrix: the loss `⟨W, op(A)⟩`'s value, op's value, the gradient
/// by backward and by `Tape::grad`, and `H·u` by `Tape::grad` twice (each `None` where
/// it is an error, which must be typed).
struct At {
    value: Option<Array2<f64>>,
    grad: Option<Array2<f64>>,
    recorded: Option<Array2<f64>>,
    hu: Option<Array2<f64>>,
}

/// Whether a linear-algebra error is one of the typed refusals of a matrix.
fn refusal(e: &tapegrad::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Singular { .. }
            | ErrorKind::IllConditioned { .. }
            | ErrorKind::Subnormal { .. }
            | ErrorKind::NotPositiveDefinite { .. }
            | ErrorKind::NotFinite { .. }
            | ErrorKind::Lapack { .. }
            | ErrorKind::TooLarge { .. }
            | ErrorKind::OutOfMemory { .. }
    )
}

fn typed<T>(what: &str, r: tapegrad::Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) if refusal(&e) => None,
        Err(e) => panic!("{what}: an error that is no refusal of the matrix: {e}"),
    }
}

fn at(p: &Program, a: &Array2<f64>, u: &Array2<f64>) -> At {
    let op = &ops()[p.op];
    let tape = Tape::new();
    let x = tape.param(a);
    let b = tape.constant(&p.b);
    let y = typed(op.name, (op.f)(x, b));
    let Some(y) = y else {
        return At {
            value: None,
            grad: None,
            recorded: None,
            hu: None,
        };
    };
    let value = Some(y.value());
    let loss = y
        .try_mul(tape.constant(&p.w))
        .expect("W has the op's shape")
        .sum();
    let recorded = typed("Tape::grad", tape.grad(loss, &[x])).map(|g| g[0]);
    let hu = recorded.and_then(|g| {
        let phi = g.try_mul(tape.constant(u)).expect("same shape").sum();
        typed("Tape::grad twice", tape.grad(phi, &[x])).map(|h| h[0].value())
    });
    let recorded = recorded.map(|g| g.value());
    // (slogdet's sign depends on nothing: no gradient to take)
    let grad = match tape.backward(loss) {
        Err(e) if e.kind() == &ErrorKind::NoGradient => Some(Array2::zeros(a.dim())),
        r => typed("backward", r).map(|g| g.get(x).unwrap().clone()),
    };
    At {
        value,
        grad,
        recorded,
        hu,
    }
}

fn run(seed: u64) -> bool {
    let p = generate(seed);
    let op = &ops()[p.op];
    let n = p.a.nrows();
    // Ã = 2ᵏ·A with its largest entry in [1/2, 1) (k even, for cholesky's √)
    let largest = p.a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let k = if largest == 0.0 || !largest.is_finite() {
        0
    } else {
        let e = -(largest.log2().floor() as i32) - 1;
        e - e.rem_euclid(2)
    };
    let normal = p.a.mapv(|v| scale(v, k));
    let mut rng = StdRng::seed_from_u64(seed ^ 0x11a);
    let u = randn((n, n), &mut rng);
    let v = randn((n, n), &mut rng);
    let reference = at(&p, &normal, &u);
    let here = if k == 0 { None } else { Some(at(&p, &p.a, &u)) };
    let (smin, smax) = singular_range(&normal);
    // the reference, moved back to A's scale: value, gradient, H·u
    let n_i = n as i32;
    // the power of two that moves the reference's derivative of `order` to A's scale: d/dA
    // of a function of degree d has degree d − 1, the second derivative d − 2
    let power = |order: i32| match (op.scaling)(n) {
        Scaling::Degree(d) => -k * (d - order),
        Scaling::Half(d) => -(k / 2) * d + k * order,
        Scaling::Log => k * order,
    };
    let back = |x: &Array2<f64>, order: i32| -> Array2<f64> {
        let shift = match ((op.scaling)(n), order) {
            (Scaling::Log, 0) => -(n_i as f64) * k as f64 * std::f64::consts::LN_2,
            _ => 0.0,
        };
        x.mapv(|v| scale(v, power(order)) + shift)
    };
    // the distance to where the op is singular (the smallest singular value; for eigh the
    // smallest gap between eigenvalues); det is a polynomial
    let reach = match op.name {
        "det" => 1.0,
        "eigh" => {
            let mut l = symmetric_eigenvalues(&normal);
            l.sort_by(f64::total_cmp);
            l.windows(2).fold(1.0f64, |m, w| m.min(w[1] - w[0]))
        }
        _ => smin,
    };
    // eigh's eigenvectors are right to ε·‖Ã‖/gap (absolutely) in any backward-stable
    // solver, so that two of them (the one at A, scaled by LAPACK, and the one at Ã) give
    // eigenvector derivatives that differ by that over the gap again: an absolute floor for
    // the comparison at Ã's scale (‖Ã‖ < n, |W| and |u| below 6)
    let eigh_rounding = |order: i32| -> f64 {
        if op.name != "eigh" {
            return 0.0;
        }
        let eps = 64.0 * f64::EPSILON * n as f64;
        eps * 6f64.powi(order.min(2)) / reach.powi(order + 1)
    };
    let scaled = || {
        if let Some(here) = &here {
            // conditioning and the subnormal range cost accuracy (and eigh scales a matrix
            // out of range itself, which rounds); NaN is never right
            let tol = match op.name {
                _ if p.exponent <= -1000 => f64::INFINITY,
                "eigh" if reach > 1e-3 => 1e-6,
                "eigh" => f64::INFINITY,
                _ if smin > 1e-6 * smax => 1e-8,
                _ => f64::INFINITY,
            };
            let pairs = [
                ("value", &here.value, &reference.value, 0),
                ("gradient", &here.grad, &reference.grad, 1),
                ("H·u", &here.hu, &reference.hu, 2),
            ];
            // the reference means something only where the matrix is not singular to
            // working precision for the op: at eigenvalues apart by rounding only, or a
            // singular matrix, NaN is an answer the docs allow (a repeated eigenvalue, a
            // singular matrix) and the reference's finite value is rounding noise (its
            // sign, for logdet). (`singular_range` takes the roots of AᵀA's eigenvalues,
            // so that it resolves smin down to about √ε·smax only: 10⁻⁶ keeps clear of it.)
            let posed = match op.name {
                "det" => true,
                "eigh" => reach > 1e-12,
                _ => smin > 1e-6 * smax,
            };
            for (what, got, want, order) in pairs {
                let (Some(got), Some(want)) = (got, want) else {
                    continue;
                };
                let floor = scale(eigh_rounding(order), power(order));
                let want = back(want, order);
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        !g.is_nan() || !w.is_finite() || !posed,
                        "{}: the {what} at A is NaN where the same op at 2^{k}·A gives {w:e} (A = {})",
                        op.name,
                        p.a
                    );
                }
                // in range: neither the reference nor the result under- or overflowed
                let in_range = want
                    .iter()
                    .chain(got.iter())
                    .all(|v| v.is_finite() && (*v == 0.0 || v.abs() > 1e-290 && v.abs() < 1e290));
                if in_range && tol.is_finite() {
                    assert!(
                        close_within(got, &want, tol, floor),
                        "{}: the {what} at A is {got}, the same op at 2^{k}·A gives {want} (A = {})",
                        op.name,
                        p.a
                    );
                }
            }
        }
    };
    let singular = || {
        // at a matrix that is exactly singular in floating point (two equal columns, a zero
        // row), inv, solve, logdet and log|det| have no derivative: the gradient (both rule
        // forms) and H·u are an error or not finite, never a finite number (finite
        // differences cannot tell it there; LU's rounding can leave a pivot of order ε)
        let exactly_singular = matches!(p.structure, Structure::EqualColumns | Structure::ZeroRow)
            && p.delta == 0.0
            && op.shape == Want::Any;
        let undefined_there = matches!(op.name, "inv" | "solve" | "logdet")
            || matches!((op.name, (op.scaling)(n)), ("slogdet", Scaling::Log));
        if exactly_singular && undefined_there {
            let derivatives = [
                ("gradient", &reference.grad),
                ("gradient by Tape::grad", &reference.recorded),
                ("second derivative", &reference.hu),
            ];
            for (what, d) in derivatives {
                if let Some(d) = d {
                    assert!(
                        !d.iter().all(|v| v.is_finite()),
                        "{}: a finite {what} {d} at the singular matrix {normal}",
                        op.name
                    );
                }
            }
        }
    };
    let derivatives = || -> bool {
        // at Ã: Tape::grad against backward, both orders against central differences
        let (Some(grad), Some(_)) = (&reference.grad, &reference.value) else {
            return false;
        };
        // (the two forms round differently, by up to the condition number squared)
        // (cho_solve solves with L·Lᵀ: its condition number is L's squared)
        let condition = match op.name {
            "cho_solve" => (smax / smin).powi(2),
            _ => smax / smin,
        };
        let tol = (1e-13 * condition * condition).max(1e-8);
        if let (Some(recorded), true) = (&reference.recorded, tol < 1e-2) {
            assert!(
                close_within(recorded, grad, tol, 0.0) || !grad.iter().all(|v| v.is_finite()),
                "{}: Tape::grad gives {recorded}, backward {grad}",
                op.name
            );
        }
        if !grad.iter().all(|g| g.is_finite()) {
            return false;
        }
        let loss_at = |m: &Array2<f64>| -> Option<f64> {
            let tape = Tape::new();
            let y = (op.f)(tape.constant(m), tape.constant(&p.b)).ok()?;
            Some(dot(&y.value(), &p.w))
        };
        let grad_at = |m: &Array2<f64>| -> Option<Array2<f64>> {
            let tape = Tape::new();
            let x = tape.param(m);
            let y = (op.f)(x, tape.constant(&p.b)).ok()?;
            let loss = y.try_mul(tape.constant(&p.w)).ok()?.sum();
            tape.backward(loss).ok()?.get(x).cloned()
        };
        let moved = |eps: f64| &normal + &(&v * eps);
        // the step: within the distance to where the op is singular (two steps far beyond it
        // can agree on a wrong slope)
        let steps = [(1e-3 * reach).min(1e-4)];
        // the values differ from the exact ones by about ε·κ, which the step divides
        let fd_tol = (1e-5f64).max(1e6 * f64::EPSILON * smax.max(1.0) / reach);
        if steps[0] < 1e-12 || fd_tol > 1e-3 {
            return false;
        }
        let mut compared = false;
        let first: f64 = dot(grad, &v);
        if let Some(fd) = steps
            .iter()
            .find_map(|&h| central(h, &mut |e| loss_at(&moved(e))))
        {
            agree(&format!("{}: first order", op.name), first, fd, fd_tol);
            compared = true;
        }
        if let Some(hu) = &reference.hu {
            let second = dot(hu, &v);
            if second.is_finite() {
                if let Some(fd) = steps
                    .iter()
                    .find_map(|&h| central(h, &mut |e| grad_at(&moved(e)).map(|g| dot(&g, &u))))
                {
                    // the rules of the second order round by up to the condition number
                    // squared, as the two forms of the first order do (above): seeds
                    // 80541, 138795, 282253 agree with finite differences to 2·10⁻⁵ to
                    // 6·10⁻⁵ at condition numbers of 10⁴ to 10⁵, stable under the step
                    agree(
                        &format!("{}: second order (Tape::grad twice) at {normal}", op.name),
                        second,
                        fd,
                        fd_tol.max(tol),
                    );
                    compared = true;
                }
            }
        }
        compared
    };
    let compared = std::cell::Cell::new(false);
    crate::all(vec![
        Box::new(scaled),
        Box::new(singular),
        Box::new(|| compared.set(derivatives())),
    ]);
    compared.get()
}
