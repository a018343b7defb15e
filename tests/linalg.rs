//! The linear-algebra ops (feature `linalg`) beyond the gradcheck table: their errors,
//! closed forms, the cofactor gradient of `det` at a singular matrix, `eigh` at repeated
//! eigenvalues, the blocked Cholesky backward across several blocks, and f32.
//!
//! ```text
//! cargo test --features openblas --test linalg
//! ```

#![cfg(feature = "linalg")]

use ndarray::{Array2, array};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};
use tapegrad::check::{CheckOptions, vjp_dot_test};
use tapegrad::functional::hvp;
use tapegrad::{BackwardOptions, ErrorKind, Tape};

fn normal(shape: (usize, usize), seed: u64) -> Array2<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    Array2::from_shape_simple_fn(shape, || StandardNormal.sample(&mut rng))
}

/// A symmetric positive definite matrix, `X·Xᵀ/n + I`.
fn spd(n: usize, seed: u64) -> Array2<f64> {
    let x = normal((n, n), seed);
    let mut a = x.dot(&x.t()) / n as f64;
    a.diag_mut().mapv_inplace(|d| d + 1.0);
    a
}

fn max_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    assert_eq!(a.dim(), b.dim());
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

/// The inverse by Gauss–Jordan elimination with partial pivoting: an oracle that shares
/// nothing with LAPACK.
fn gauss_jordan_inverse(a: &Array2<f64>) -> Array2<f64> {
    let n = a.nrows();
    let mut m = ndarray::concatenate![ndarray::Axis(1), a.clone(), Array2::eye(n)];
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| m[[i, c]].abs().total_cmp(&m[[j, c]].abs()))
            .unwrap();
        for k in 0..2 * n {
            m.swap([c, k], [p, k]);
        }
        let d = m[[c, c]];
        m.row_mut(c).mapv_inplace(|v| v / d);
        for r in (0..n).filter(|&r| r != c) {
            let f = m[[r, c]];
            let row = m.row(c).to_owned();
            m.row_mut(r).scaled_add(-f, &row);
        }
    }
    m.slice(ndarray::s![.., n..]).to_owned()
}

#[test]
fn every_op_names_a_non_square_input() {
    let tape = Tape::<f64>::new();
    let a = tape.param(Array2::ones((2, 3)));
    let b = tape.constant(Array2::ones((2, 1)));
    let line = line!() + 2;
    let errors = [
        a.try_inv().err(),
        a.try_solve(b).err(),
        a.try_solve_triangular(b, true, false).err(),
        a.try_cho_solve(b).err(),
        a.try_det().err(),
        a.try_slogdet().err(),
        a.try_logdet().err(),
        a.try_cholesky().err(),
        a.try_eigh().err(),
    ];
    let ops = [
        "inv",
        "solve",
        "solve_triangular",
        "cho_solve",
        "det",
        "slogdet",
        "logdet",
        "cholesky",
        "eigh",
    ];
    for (e, op) in errors.into_iter().zip(ops) {
        let e = e.unwrap_or_else(|| panic!("{op} accepted a 2 × 3 matrix"));
        assert_eq!(e.op(), op);
        assert_eq!(e.kind(), &ErrorKind::NotSquare { shape: (2, 3) }, "{op}");
        assert_eq!(e.location().file(), file!());
        assert!((line..line + 9).contains(&e.location().line()), "{op}: {e}");
        assert!(
            e.to_string().contains("needs a square matrix, got 2 × 3"),
            "{e}"
        );
    }
}

#[test]
fn a_right_hand_side_of_the_wrong_height_is_a_shape_error() {
    let tape = Tape::<f64>::new();
    let a = tape.param(Array2::eye(3));
    let b = tape.constant(Array2::ones((2, 4)));
    for e in [
        a.try_solve(b).unwrap_err(),
        a.try_solve_triangular(b, false, true).unwrap_err(),
        a.try_cho_solve(b).unwrap_err(),
    ] {
        assert!(
            matches!(
                e.kind(),
                ErrorKind::Shape {
                    lhs: (3, 3),
                    rhs: (2, 4),
                    ..
                }
            ),
            "{e}"
        );
    }
}

#[test]
fn a_singular_matrix_is_an_error_with_lapacks_info() {
    let tape = Tape::<f64>::new();
    // the second column is twice the first: getrf finds U[2, 2] = 0
    let a = tape.param(array![[1.0, 2.0, 0.0], [2.0, 4.0, 1.0], [3.0, 6.0, 5.0]]);
    let b = tape.constant(Array2::ones((3, 2)));
    let line = line!() + 1;
    let e = a.try_inv().unwrap_err();
    assert_eq!(e.op(), "inv");
    assert_eq!(e.location().line(), line);
    let ErrorKind::Singular { shape, info } = *e.kind() else {
        panic!("{e}")
    };
    assert_eq!(shape, (3, 3));
    assert!(info >= 2, "getrf's info names the zero pivot: {info}");
    assert!(e.to_string().contains("is singular (LAPACK info ="), "{e}");
    let e = a.try_solve(b).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Singular { .. }), "{e}");
    // a zero on a triangle's diagonal: trtrs's info is its (1-based) index
    let l = tape.param(array![[1.0, 0.0], [5.0, 0.0]]);
    let e = l
        .try_solve_triangular(b.slice_rows(..2), true, false)
        .unwrap_err();
    assert_eq!(
        e.kind(),
        &ErrorKind::Singular {
            shape: (2, 2),
            info: 2
        }
    );
    let e = l.try_cho_solve(b.slice_rows(..2)).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Singular { info: 2, .. }),
        "{e}"
    );
}

#[test]
fn a_matrix_that_is_not_positive_definite_is_an_error_with_lapacks_info() {
    let tape = Tape::<f64>::new();
    // leading minors 1, 1·1 − 2·2 = −3: the second is not positive
    let a = tape.param(array![[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
    let e = a.try_cholesky().unwrap_err();
    assert_eq!(e.op(), "cholesky");
    assert_eq!(
        e.kind(),
        &ErrorKind::NotPositiveDefinite {
            shape: (3, 3),
            info: 2
        }
    );
    assert!(e.to_string().contains("leading minor of order 2"), "{e}");
}

#[test]
fn nan_or_infinity_in_the_matrix_is_an_error_not_garbage() {
    let tape = Tape::<f64>::new();
    let mut m = spd(4, 1);
    m[[2, 1]] = f64::NAN;
    let a = tape.param(&m);
    let mut inf = spd(4, 2);
    inf[[0, 0]] = f64::INFINITY;
    let a_inf = tape.param(&inf);
    let b = tape.constant(Array2::ones((4, 1)));
    for e in [
        a.try_inv().unwrap_err(),
        a.try_solve(b).unwrap_err(),
        a.try_solve_triangular(b, true, false).unwrap_err(),
        a.try_cho_solve(b).unwrap_err(),
        a.try_det().unwrap_err(),
        a.try_slogdet().unwrap_err(),
        a.try_logdet().unwrap_err(),
        a.try_cholesky().unwrap_err(),
        a.try_eigh().unwrap_err(),
        a_inf.try_inv().unwrap_err(),
        a_inf.try_cholesky().unwrap_err(),
    ] {
        assert_eq!(e.kind(), &ErrorKind::NotFinite { shape: (4, 4) }, "{e}");
    }
    // the unread triangle of a triangular solve may hold anything
    let upper_nan = tape.param(array![[1.0, f64::NAN], [2.0, 4.0]]);
    let x = upper_nan.solve_triangular(tape.constant(array![[1.0], [6.0]]), true, false);
    assert_eq!(x.value(), array![[1.0], [1.0]]);
}

#[test]
fn inv_and_solve_agree_with_an_independent_inverse() {
    let a = normal((6, 6), 3) + Array2::<f64>::eye(6) * 3.0;
    let b = normal((6, 4), 4);
    let oracle = gauss_jordan_inverse(&a);
    let tape = Tape::new();
    let (at, bt) = (tape.param(&a), tape.param(&b));
    assert!(max_diff(&at.inv().value(), &oracle) < 1e-13);
    assert!(max_diff(&at.solve(bt).value(), &oracle.dot(&b)) < 1e-13);
    // Aᵀ·X = B through the transposed view
    assert!(max_diff(&at.t().solve(bt).value(), &oracle.t().dot(&b)) < 1e-13);
}

#[test]
fn the_gradient_of_log_det_is_the_inverse_transpose() {
    // d ln|det A| = tr(A⁻¹ dA): the gradient is A⁻ᵀ (Giles 2008), by slogdet and logdet
    let a = spd(5, 5) + normal((5, 5), 6) * 0.1; // not symmetric, positive determinant
    let expected = gauss_jordan_inverse(&a).reversed_axes();
    let tape = Tape::new();
    let at = tape.param(&a);
    let grads = tape.backward(at.logdet()).unwrap();
    assert!(max_diff(grads.get(at).unwrap(), &expected) < 1e-13);
    let tape = Tape::new();
    let at = tape.param(&a);
    let grads = tape.backward(at.slogdet().1).unwrap();
    assert!(max_diff(grads.get(at).unwrap(), &expected) < 1e-13);
    // det: d det A = det A · A⁻ᵀ
    let tape = Tape::new();
    let at = tape.param(&a);
    let d = at.det();
    let grads = tape.backward(d).unwrap();
    assert!(max_diff(grads.get(at).unwrap(), &(&expected * d.item())) < 1e-12);
}

#[test]
fn the_second_derivative_of_log_det_is_a_closed_form() {
    // ∇ ln det A = A⁻ᵀ, and its derivative along V is −A⁻ᵀ·Vᵀ·A⁻ᵀ
    let a = spd(4, 7);
    let v = normal((4, 4), 8);
    let (_, hv) = hvp(|x| x[0].logdet(), &[a.view()], &[v.view()]).unwrap();
    let ai = gauss_jordan_inverse(&a).reversed_axes();
    let expected = -ai.dot(&v.t()).dot(&ai);
    assert!(
        max_diff(&hv[0], &expected) < 1e-12,
        "{} vs {expected}",
        hv[0]
    );
}

/// The cofactor matrix of a 3 × 3 matrix, by its definition.
fn cofactors3(a: &Array2<f64>) -> Array2<f64> {
    Array2::from_shape_fn((3, 3), |(i, j)| {
        let r: Vec<usize> = (0..3).filter(|&k| k != i).collect();
        let c: Vec<usize> = (0..3).filter(|&k| k != j).collect();
        let minor = a[[r[0], c[0]]] * a[[r[1], c[1]]] - a[[r[0], c[1]]] * a[[r[1], c[0]]];
        if (i + j) % 2 == 0 { minor } else { -minor }
    })
}

#[test]
fn det_at_a_singular_matrix_has_the_cofactor_matrix_as_its_gradient() {
    // rank 2: the third row is the sum of the first two
    let a = array![[1.0, 2.0, 3.0], [4.0, -1.0, 0.5], [5.0, 1.0, 3.5]];
    let expected = cofactors3(&a);
    assert!(
        expected.iter().any(|c| c.abs() > 1.0),
        "not the zero matrix"
    );
    let tape = Tape::new();
    let at = tape.param(&a);
    let d = at.det();
    assert!(d.item().abs() < 1e-12);
    let grads = tape.backward(d).unwrap();
    assert!(
        max_diff(grads.get(at).unwrap(), &expected) < 1e-12,
        "{} vs {expected}",
        grads.get(at).unwrap()
    );
    // rank 1 (n − 2): the cofactors are all zero
    let b = array![[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [-1.0, -2.0, -3.0]];
    let tape = Tape::new();
    let bt = tape.param(&b);
    let grads = tape.backward(bt.det()).unwrap();
    assert!(grads.get(bt).unwrap().iter().all(|g: &f64| g.abs() < 1e-12));
    // an exactly singular matrix (an exact zero pivot) and a nearly singular one agree
    // with the same formula
    let tape = Tape::new();
    let z = tape.param(array![[0.0, 0.0], [0.0, 3.0]]);
    let grads = tape.backward(z.det()).unwrap();
    assert_eq!(grads.get(z).unwrap(), &array![[3.0, 0.0], [0.0, 0.0]]);
}

#[test]
fn det_differentiated_twice_at_a_singular_matrix_is_exact() {
    // (it was a `Singular` error: det's tensor form went through inv(A)) for 2 × 2, the
    // cofactors [[d, −c], [−b, a]] are linear, so det's Hessian along W is W's cofactors
    let tape = Tape::new();
    let a = tape.param(array![[1.0, 2.0], [2.0, 4.0]]);
    let g = tape.grad(a.det(), &[a]).unwrap()[0];
    let err = (g.value() - array![[4.0, -2.0], [-2.0, 1.0]]).mapv(f64::abs);
    assert!(err.iter().all(|&e| e < 1e-12), "{}", g.value());
    let w = tape.constant(array![[1.0, 2.0], [3.0, 5.0]]);
    let h = tape.grad(g.mul(w).sum(), &[a]).unwrap()[0];
    let err = (h.value() - array![[5.0, -3.0], [-2.0, 1.0]]).mapv(f64::abs);
    assert!(err.iter().all(|&e| e < 1e-12), "{}", h.value());
}

#[test]
fn slogdet_at_a_singular_matrix_has_a_value_and_its_gradient_is_an_error() {
    let tape = Tape::new();
    let a = tape.param(array![[1.0, 2.0], [2.0, 4.0]]);
    let line = line!() + 1;
    let (sign, logabs) = a.slogdet();
    assert_eq!(sign.item(), 0.0);
    assert_eq!(logabs.item(), f64::NEG_INFINITY);
    let e = tape.backward(logabs).unwrap_err();
    assert_eq!(e.op(), "slogdet");
    assert_eq!(e.location().line(), line, "the line of the op");
    assert!(
        matches!(e.kind(), ErrorKind::Singular { shape: (2, 2), .. }),
        "{e}"
    );
    // logdet: NaN for a negative determinant, with log |det|'s gradient
    let tape = Tape::<f64>::new();
    let a = tape.param(array![[0.0, 2.0], [3.0, 0.0]]);
    assert!(a.logdet().item().is_nan());
    assert_eq!(a.slogdet().0.item(), -1.0);
}

#[test]
fn the_sign_of_slogdet_has_no_gradient() {
    let tape = Tape::new();
    let a = tape.param(array![[2.0, 1.0], [1.0, 3.0]]);
    let (sign, _) = a.slogdet();
    assert!(!sign.requires_grad());
    let e = tape.backward(sign).unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::NoGradient);
}

/// The zeros above the diagonal of a Cholesky factor are not functions of `A`: a loss that
/// reaches them with an infinite derivative (`sqrt` at 0) leaves `A`'s gradient finite, in
/// the recorded rule (`Tape::grad`, so `hvp`) as in backward. (The recorded rule multiplied
/// the ∞ by L's zeros: NaN; found by the fuzzer's `programs` family, seed 328083.)
#[test]
fn cholesky_ignores_what_reaches_the_zeros_above_its_diagonal_in_both_rule_forms() {
    let tape = Tape::new();
    let a = tape.param(array![[4.0, 2.0], [2.0, 5.0]]);
    let loss = a.cholesky().sqrt().sum();
    let recorded = tape.grad(loss, &[a]).unwrap()[0].value();
    let grads = tape.backward(loss).unwrap();
    let backward = grads.get(a).unwrap();
    // L = [[2, 0], [1, 2]]; by hand: d/dA of √l₀₀ + √l₁₀ + √l₁₁
    let l = |a: &Array2<f64>| {
        let l00 = a[[0, 0]].sqrt();
        let l10 = (a[[1, 0]] + a[[0, 1]]) / 2.0 / l00;
        let l11 = (a[[1, 1]] - l10 * l10).sqrt();
        l00.sqrt() + l10.sqrt() + l11.sqrt()
    };
    let x = array![[4.0, 2.0], [2.0, 5.0]];
    let h = 1e-6;
    for (i, j) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
        let mut e = Array2::zeros((2, 2));
        e[[i, j]] = h;
        let fd = (l(&(&x + &e)) - l(&(&x - &e))) / (2.0 * h);
        assert!(
            (backward[[i, j]] - fd).abs() < 1e-8,
            "{backward} vs {fd} at {i},{j}"
        );
        assert!(
            (recorded[[i, j]] - fd).abs() < 1e-8,
            "{recorded} vs {fd} at {i},{j}"
        );
    }
}

#[test]
fn eigh_at_repeated_eigenvalues_keeps_the_eigenvalue_gradient_finite() {
    // A = I + 2·e₃e₃ᵀ: eigenvalues 1, 1, 3; the sum of the eigenvalues is the trace, whose
    // gradient is I, defined although two eigenvalues are equal
    let a = array![[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]];
    let tape = Tape::new();
    let at = tape.param(&a);
    let (lam, v) = at.eigh();
    assert_eq!(lam.value(), array![[1.0], [1.0], [3.0]]);
    let grads = tape
        .backward_with(lam.sum(), BackwardOptions::new().retain_graph(true))
        .unwrap();
    assert!(max_diff(grads.get(at).unwrap(), &Array2::eye(3)) < 1e-15);
    // the projector on the eigenspace of 3 does not see how V splits the eigenspace of 1
    let p = v.slice_cols(2..).matmul(v.slice_cols(2..).t()).sum();
    let grads = tape.backward(p).unwrap();
    assert!(grads.get(at).unwrap().iter().all(|g| g.is_finite()));
    // one eigenvector inside the repeated eigenspace: undefined, and not silently finite
    let tape = Tape::new();
    let at = tape.param(&a);
    let (_, v) = at.eigh();
    let e0 = v
        .slice_cols(..1)
        .mul(tape.constant(array![[1.0], [2.0], [0.0]]))
        .sum();
    let grads = tape.backward(e0).unwrap();
    assert!(
        grads.get(at).unwrap().iter().any(|g| !g.is_finite()),
        "{}",
        grads.get(at).unwrap()
    );
}

#[test]
fn eigh_reconstructs_its_input_with_orthonormal_eigenvectors() {
    let a = spd(8, 9);
    let tape = Tape::new();
    let at = tape.param(&a);
    let (lam, v) = at.eigh();
    let back = v.matmul(lam.diag_embed()).matmul(v.t()).value();
    assert!(max_diff(&back, &a) < 1e-13);
    let vv = v.t().matmul(v).value();
    assert!(max_diff(&vv, &Array2::eye(8)) < 1e-14);
}

#[test]
fn the_blocked_cholesky_backward_agrees_with_the_symbolic_form_across_blocks() {
    // 150 = two blocks of 64 and a ragged one of 22: first-order backward runs Murray's
    // blocked algorithm, `Tape::grad` the symbolic form
    for n in [63, 64, 65, 150] {
        let a = spd(n, n as u64);
        let w = normal((n, n), 100 + n as u64);
        let tape = Tape::new();
        let at = tape.param(&a);
        let loss = at.cholesky().mul(tape.constant(&w)).sum();
        let symbolic = tape.grad(loss, &[at]).unwrap()[0].value();
        let grads = tape.backward(loss).unwrap();
        let blocked = grads.get(at).unwrap();
        let scale = symbolic.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(
            max_diff(blocked, &symbolic) < 1e-12 * scale,
            "n = {n}: {}",
            max_diff(blocked, &symbolic)
        );
        assert!(max_diff(blocked, &blocked.t().to_owned()) < 1e-12 * scale);
    }
    // and against finite differences, by the dot-product test
    let a = spd(150, 3);
    let opts = CheckOptions {
        rtol: 1e-6,
        ..CheckOptions::default()
    };
    vjp_dot_test(|x| x[0].cholesky(), &[a.view()], &opts).unwrap();
}

#[test]
fn cholesky_then_cho_solve_and_log_determinant_give_the_gaussian_likelihood_terms() {
    let a = spd(6, 11);
    let b = normal((6, 2), 12);
    let tape = Tape::new();
    let (at, bt) = (tape.param(&a), tape.param(&b));
    let l = at.cholesky();
    assert!(max_diff(&l.matmul(l.t()).value(), &a) < 1e-13);
    let x = l.cho_solve(bt);
    assert!(max_diff(&x.value(), &gauss_jordan_inverse(&a).dot(&b)) < 1e-13);
    let logdet = l.diag().log().sum().mul_scalar(2.0);
    assert!((logdet.item() - at.logdet().item()).abs() < 1e-13);
}

#[test]
fn the_ops_run_in_f32() {
    let a64 = spd(5, 13);
    let b64 = normal((5, 3), 14);
    let a = a64.mapv(|v| v as f32);
    let b = b64.mapv(|v| v as f32);
    let tape = Tape::<f32>::new();
    let (at, bt) = (tape.param(&a), tape.param(&b));
    let loss = at
        .solve(bt)
        .sum()
        .add(at.inv().trace())
        .add(at.logdet())
        .add(at.det())
        .add(at.cholesky().cho_solve(bt).sum())
        .add(at.eigh().0.sum())
        .add(at.cholesky().solve_triangular(bt, true, true).sum());
    let grads = tape.backward(loss).unwrap();
    let tape64 = Tape::<f64>::new();
    let (a2, b2) = (tape64.param(&a64), tape64.param(&b64));
    let loss64 = a2
        .solve(b2)
        .sum()
        .add(a2.inv().trace())
        .add(a2.logdet())
        .add(a2.det())
        .add(a2.cholesky().cho_solve(b2).sum())
        .add(a2.eigh().0.sum())
        .add(a2.cholesky().solve_triangular(b2, true, true).sum());
    let grads64 = tape64.backward(loss64).unwrap();
    assert!((loss.item() as f64 - loss64.item()).abs() < 1e-3 * loss64.item().abs());
    for (g, g64) in [(at, a2), (bt, b2)]
        .iter()
        .map(|(t, t64)| (grads.get(*t).unwrap(), grads64.get(*t64).unwrap()))
    {
        let err = max_diff(&g.mapv(f64::from), g64);
        let scale = g64.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(err < 1e-4 * scale, "{err} vs {scale}");
    }
}

#[test]
fn empty_matrices_have_empty_results() {
    let tape = Tape::<f64>::new();
    let a = tape.param(Array2::zeros((0, 0)));
    let b = tape.param(Array2::zeros((0, 3)));
    assert_eq!(a.inv().shape(), (0, 0));
    assert_eq!(a.solve(b).shape(), (0, 3));
    assert_eq!(a.det().item(), 1.0);
    assert_eq!(a.slogdet().1.item(), 0.0);
    assert_eq!(a.cholesky().shape(), (0, 0));
    assert_eq!(a.eigh().0.shape(), (0, 1));
    let loss = a.det().add(a.solve(b).sum()).add(a.logdet());
    let grads = tape.backward(loss).unwrap();
    assert_eq!(grads.get(a).unwrap().dim(), (0, 0));
    assert_eq!(grads.get(b).unwrap().dim(), (0, 3));
}
