//! The linear-algebra items of issue 19, each with the test that failed before its fix:
//! second derivatives of `det` at (near-)singular matrices and of the other ops where the
//! matrix is singular to working precision (item 2), subnormal pivots (item 5), working
//! copies and results that cannot be allocated (item 6), and `diag_embed` past the address
//! space (item 8).
//!
//! ```text
//! cargo test --features openblas --test reliability_linalg
//! ```
//!
//! The huge inputs are zero-stride views of one element: they cost no memory, and every
//! allocation they ask for is refused by the system (tens or hundreds of GiB, more than
//! the machine has) or is past what any allocation can hold. No test touches memory it
//! did not need.

use ndarray::{Array2, ArrayView2, ShapeBuilder};
use tapegrad::{ErrorKind, Tape};

/// An n × m view of a single element (all strides 0).
fn zero_stride<F>(x: &[F], shape: (usize, usize)) -> ArrayView2<'_, F> {
    ArrayView2::from_shape(shape.strides((0, 0)), x).unwrap()
}

fn out_of_memory<T>(r: tapegrad::Result<T>, op: &str, shape: (usize, usize), line: u32) {
    let Err(e) = r else {
        panic!("{op}: expected OutOfMemory for {shape:?}")
    };
    assert_eq!(e.kind(), &ErrorKind::OutOfMemory { shape }, "{op}: {e}");
    assert_eq!(e.op(), op, "{e}");
    assert_eq!(e.location().file(), file!(), "{e}");
    assert_eq!(e.location().line(), line, "{e}");
}

/// Resident memory of this process, in bytes (Linux).
#[cfg(target_os = "linux")]
fn resident() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

// ---- 6. trace, diag and diag_embed allocate fallibly and only what they need -------------

#[test]
fn diag_embed_of_a_column_too_large_for_memory_is_out_of_memory() {
    // 10⁵ × 10⁵ f64 is 80 GB
    let v = Array2::<f64>::zeros((100_000, 1));
    let tape = Tape::new();
    let line = line!() + 1;
    let r = tape.param(&v).try_diag_embed();
    out_of_memory(r, "diag_embed", (100_000, 100_000), line);
}

#[test]
fn diag_embed_past_the_address_space_is_too_large_not_a_panic() {
    // (2³³)² elements: ndarray's "Shape too large" panic before
    let one = [1.0f64];
    let tape = Tape::new();
    let v = tape.constant(zero_stride(&one, (1 << 33, 1)));
    let e = v.try_diag_embed().unwrap_err();
    assert_eq!(
        e.kind(),
        &ErrorKind::TooLarge {
            shape: (1 << 33, 1 << 33)
        }
    );
    assert_eq!(e.op(), "diag_embed");
}

#[test]
fn trace_and_diag_backward_of_a_matrix_too_large_for_memory_are_out_of_memory() {
    // the gradient of a 2¹⁶ × 2¹⁶ f64 matrix is 32 GiB: an error naming the op and its
    // line, where the identity built for trace's backward aborted the process
    let n = 1 << 16;
    let one = [1.0f64];
    let tape = Tape::new();
    let a = tape.param(zero_stride(&one, (n, n)));
    let line = line!() + 1;
    let t = a.trace();
    assert_eq!(t.item(), n as f64);
    out_of_memory(tape.backward(t), "trace", (n, n), line);
    let tape = Tape::new();
    let a = tape.param(zero_stride(&one, (n, n)));
    let line = line!() + 1;
    let d = a.diag();
    out_of_memory(tape.backward(d.sum()), "diag", (n, n), line);
}

#[cfg(target_os = "linux")]
#[test]
fn trace_backward_touches_only_the_diagonal() {
    // a 2¹³ × 2¹³ f32 gradient is 256 MiB; its diagonal lies on 2¹³ pages (32 MiB)
    let n = 1 << 13;
    let one = [1.0f32];
    let tape = Tape::new();
    let a = tape.param(zero_stride(&one, (n, n)));
    let before = resident();
    let g = tape.grad(a.trace(), &[a]).unwrap()[0];
    let points = [(0, 0), (7, 7), (n - 1, n - 1), (0, 1), (n - 1, 0), (5, 9)];
    // (read through 1 × 1 views: `value` would copy the whole matrix)
    let recorded: Vec<f32> = points
        .iter()
        .map(|&(i, j)| g.slice(i..i + 1, j..j + 1).item())
        .collect();
    let grads = tape.backward(a.trace().mul_scalar(2.0)).unwrap();
    let grown = resident().saturating_sub(before);
    let computed = grads.get(a).unwrap();
    for (&(i, j), r) in points.iter().zip(recorded) {
        let expected = if i == j { 1.0 } else { 0.0 };
        assert_eq!(r, expected);
        assert_eq!(computed[[i, j]], 2.0 * expected);
    }
    assert!(
        grown < 128 << 20,
        "trace's gradients touched {} MiB",
        grown >> 20
    );
}

#[cfg(feature = "linalg")]
mod linalg {
    use std::f64::consts::LN_2;

    use ndarray::{Array2, array};
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rand_distr::{Distribution, StandardNormal};
    use tapegrad::functional::hvp;
    use tapegrad::{ErrorKind, Tape, Tensor};

    use super::{out_of_memory, zero_stride};

    fn normal(shape: (usize, usize), seed: u64) -> Array2<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        Array2::from_shape_simple_fn(shape, || StandardNormal.sample(&mut rng))
    }

    fn max_abs(a: &Array2<f64>) -> f64 {
        a.iter().fold(0.0, |m, v| m.max(v.abs()))
    }

    fn max_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
        assert_eq!(a.dim(), b.dim());
        a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
    }

    // ---- 2. det's derivatives at (near-)singular matrices: an exact oracle ---------------

    /// The determinant by Laplace expansion along the first row: a polynomial, evaluated
    /// without division.
    fn det_laplace(a: &Array2<f64>) -> f64 {
        let n = a.nrows();
        if n == 0 {
            return 1.0;
        }
        (0..n)
            .map(|j| {
                let sign = if j % 2 == 0 { 1.0 } else { -1.0 };
                sign * a[[0, j]] * det_laplace(&minor(a, 0, j))
            })
            .sum()
    }

    fn minor(a: &Array2<f64>, i: usize, j: usize) -> Array2<f64> {
        let n = a.nrows();
        let rows: Vec<usize> = (0..n).filter(|&k| k != i).collect();
        let cols: Vec<usize> = (0..n).filter(|&k| k != j).collect();
        Array2::from_shape_fn((n - 1, n - 1), |(r, c)| a[[rows[r], cols[c]]])
    }

    /// The cofactor matrix, `∂ det A / ∂A`, by its definition.
    fn cofactors(a: &Array2<f64>) -> Array2<f64> {
        let n = a.nrows();
        Array2::from_shape_fn((n, n), |(i, j)| {
            let sign = if (i + j) % 2 == 0 { 1.0 } else { -1.0 };
            sign * det_laplace(&minor(a, i, j))
        })
    }

    /// `d/dt f(t)` at 0 for `f` a polynomial of degree at most 4 in `t`: the five-point
    /// stencil, exact for such polynomials at any step (here 1).
    fn derivative(f: impl Fn(f64) -> Array2<f64>) -> Array2<f64> {
        (f(-2.0) - f(-1.0) * 8.0 + f(1.0) * 8.0 - f(2.0)) / 12.0
    }

    /// `H[V]`, the derivative of the cofactors along V (det's Hessian applied to V), for
    /// n ≤ 5: the cofactors are of degree n − 1 ≤ 4.
    fn det_hessian(a: &Array2<f64>, v: &Array2<f64>) -> Array2<f64> {
        derivative(|t| cofactors(&(a + &(v * t))))
    }

    /// `T[V, W]`, det's third derivative applied to V and W.
    fn det_third(a: &Array2<f64>, v: &Array2<f64>, w: &Array2<f64>) -> Array2<f64> {
        derivative(|t| det_hessian(&(a + &(w * t)), v))
    }

    /// A product `B·C` of small integer matrices with inner dimension `k`: exactly of
    /// rank k (min(k, n)), as integer arithmetic in f64 is exact.
    fn of_rank(n: usize, k: usize, seed: u64) -> Array2<f64> {
        let small = |v: f64| (v * 0.8).round().clamp(-2.0, 2.0);
        let b = normal((n, k), seed).mapv(small);
        let c = normal((k, n), seed + 1).mapv(small);
        b.dot(&c)
    }

    /// Square matrices of size n, named: random, exactly of rank n − 1 and n − 2, and near
    /// rank n − 1 (perturbations of 1e-9 and 1e-13).
    fn matrices(n: usize, seed: u64) -> Vec<(String, Array2<f64>)> {
        let mut out = vec![("random".to_string(), normal((n, n), seed))];
        let rank1 = of_rank(n, n - 1, seed + 1);
        out.push(("rank n - 1".to_string(), rank1.clone()));
        if n >= 2 {
            out.push(("rank n - 2".to_string(), of_rank(n, n - 2, seed + 3)));
        }
        let p = normal((n, n), seed + 5);
        for eps in [1e-9, 1e-13] {
            out.push((format!("rank n - 1 + {eps:e}"), &rank1 + &(&p * eps)));
        }
        out
    }

    /// Within `tol` of `expected`, relative to `scale` (the size of the terms).
    fn assert_close(got: &Array2<f64>, expected: &Array2<f64>, scale: f64, what: &str) {
        let err = max_diff(got, expected);
        assert!(
            err <= 1e-11 * scale,
            "{what}: off by {err:e} (scale {scale:e})\n{got}\nvs\n{expected}"
        );
    }

    /// The size of det's k-th derivative terms at A along unit-size directions.
    fn scale(a: &Array2<f64>, k: usize) -> f64 {
        let n = a.nrows();
        (1.0 + max_abs(a)).powi(n.saturating_sub(k) as i32) * (n.max(1) as f64).powi(3)
    }

    #[test]
    fn det_second_derivatives_are_exact_at_singular_and_near_singular_matrices() {
        for n in 1..=5 {
            for (name, a) in matrices(n, 10 * n as u64) {
                let v = normal((n, n), 99 + n as u64);
                let expected = det_hessian(&a, &v);
                let what = format!("n = {n}, {name}");
                // forward over reverse: the tensor form, then its array form
                let (_, hv) = hvp(|x| x[0].det(), &[a.view()], &[v.view()])
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_close(&hv[0], &expected, scale(&a, 2), &what);
                // reverse over reverse: the tensor forms only
                let tape = Tape::new();
                let at = tape.param(&a);
                let g = tape.grad(at.det(), &[at]).unwrap()[0];
                assert_close(&g.value(), &cofactors(&a), scale(&a, 1), &what);
                let gv = g.mul(tape.constant(&v)).sum();
                let h = tape
                    .grad(gv, &[at])
                    .unwrap_or_else(|e| panic!("{what}: {e}"))[0];
                assert_close(&h.value(), &expected, scale(&a, 2), &what);
                // and once more: det's third derivative (the array form of the last rule)
                let w = normal((n, n), 7 + n as u64);
                let grads = tape
                    .backward(h.mul(tape.constant(&w)).sum())
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                let third = det_third(&a, &v, &w);
                assert_close(grads.get(at).unwrap(), &third, scale(&a, 3), &what);
            }
        }
    }

    fn repeated<'t>(x: &[Tensor<'t, f64>]) -> Tensor<'t, f64> {
        Tensor::concat_cols(&[x[0], x[0], x[1]]).det()
    }

    fn outer<'t>(x: &[Tensor<'t, f64>]) -> Tensor<'t, f64> {
        x[0].matmul(x[1].t()).det()
    }

    #[test]
    fn det_of_matrices_singular_by_construction_has_zero_derivatives() {
        // det([u u W]) and det(u·vᵀ) are 0 for every u, v, W: so are their gradients and
        // Hessians, where the tensor form g·det·A⁻ᵀ gave numbers of order 1
        for n in 2..=5 {
            let (u, w) = (normal((n, 1), n as u64), normal((n, n - 2), 50 + n as u64));
            let (du, dw) = (normal((n, 1), 60), normal((n, n - 2), 61));
            let (value, hv) = hvp(
                |xs| repeated(&xs),
                &[u.view(), w.view()],
                &[du.view(), dw.view()],
            )
            .unwrap_or_else(|e| panic!("n = {n}: {e}"));
            assert!(value.abs() < 1e-12, "{value}");
            for h in &hv {
                assert!(max_abs(h) < 1e-12, "n = {n}: det([u u W]) has Hessian {h}");
            }
            let v = normal((n, 1), 70 + n as u64);
            let dv = normal((n, 1), 80);
            let (_, hv) = hvp(
                |xs| outer(&xs),
                &[u.view(), v.view()],
                &[du.view(), dv.view()],
            )
            .unwrap_or_else(|e| panic!("n = {n}: {e}"));
            for h in &hv {
                assert!(max_abs(h) < 1e-12, "n = {n}: det(u vᵀ) has Hessian {h}");
            }
            // gradients, by both forms
            let tape = Tape::new();
            let (ut, vt) = (tape.param(&u), tape.param(&v));
            let d = ut.matmul(vt.t()).det();
            let recorded = tape.grad(d, &[ut, vt]).unwrap();
            let grads = tape.backward(d).unwrap();
            for g in [
                recorded[0].value(),
                recorded[1].value(),
                grads.get(ut).unwrap().clone(),
                grads.get(vt).unwrap().clone(),
            ] {
                assert!(max_abs(&g) < 1e-12, "n = {n}: det(u vᵀ) has gradient {g}");
            }
        }
    }

    #[test]
    fn det_derivatives_survive_an_underflowing_or_overflowing_determinant() {
        // det = 2e-400 underflows to 0 and 2e400 overflows, but the cofactors [[d, −c],
        // [−b, a]] are of order 1e±200: det·A⁻ᵀ gave 0 and ∞
        for s in [1e-200, 1e200] {
            let a = array![[2.0, 1.0], [1.0, 1.5]] * s;
            let expected = array![[1.5, -1.0], [-1.0, 2.0]] * s;
            let tape = Tape::new();
            let at = tape.param(&a);
            let grads = tape.backward(at.det()).unwrap();
            let g = grads.get(at).unwrap();
            assert!(max_diff(g, &expected) <= 1e-15 * s, "{s:e}: {g}");
            let tape = Tape::new();
            let at = tape.param(&a);
            let g = tape.grad(at.det(), &[at]).unwrap()[0].value();
            assert!(max_diff(&g, &expected) <= 1e-15 * s, "{s:e}: {g}");
        }
    }

    #[test]
    fn det_third_derivatives_through_tensor_forms_are_exact_or_a_typed_error() {
        // Tape::grad three times: the last rule's tensor form is the closed form through A⁻¹
        // where A is well-conditioned, and a typed error where it is not
        let third_by_grads = |a: &Array2<f64>, v: &Array2<f64>, w: &Array2<f64>| {
            let tape = Tape::new();
            let at = tape.param(a);
            let g = tape.grad(at.det(), &[at]).unwrap()[0];
            let h = tape.grad(g.mul(tape.constant(v)).sum(), &[at]).unwrap()[0];
            let line = line!() + 1;
            let t = tape.grad(h.mul(tape.constant(w)).sum(), &[at]);
            t.map(|t| t[0].value()).map_err(|e| (e, line))
        };
        for n in 1..=5 {
            let (v, w) = (normal((n, n), 1), normal((n, n), 2));
            let a = normal((n, n), 3) + Array2::<f64>::eye(n) * 2.0;
            let t = third_by_grads(&a, &v, &w).unwrap_or_else(|(e, _)| panic!("{e}"));
            assert_close(
                &t,
                &det_third(&a, &v, &w),
                scale(&a, 3),
                &format!("n = {n}"),
            );
        }
        let a = of_rank(4, 3, 5);
        let (v, w) = (normal((4, 4), 1), normal((4, 4), 2));
        let (e, line) = third_by_grads(&a, &v, &w).unwrap_err();
        assert_eq!(e.op(), "det");
        assert_eq!(e.location().line(), line, "{e}");
        assert!(
            matches!(e.kind(), ErrorKind::IllConditioned { shape: (4, 4), .. }),
            "{e}"
        );
    }

    /// `A = L·U` for unit triangular integer `L`, `U`: det A = 1, `A⁻¹ = U⁻¹·L⁻¹` exactly
    /// (integers below 2⁵³), κ₁(A) ≈ 1.1e12; LAPACK's pivoting rounds (the first pivot is
    /// 97).
    fn near_singular() -> (Array2<f64>, Array2<f64>) {
        let l = array![[1.0, 0.0, 0.0], [97.0, 1.0, 0.0], [-89.0, 83.0, 1.0]];
        let u = array![[1.0, -91.0, 79.0], [0.0, 1.0, -73.0], [0.0, 0.0, 1.0]];
        let l_inv = array![[1.0, 0.0, 0.0], [-97.0, 1.0, 0.0], [8140.0, -83.0, 1.0]];
        let u_inv = array![[1.0, 91.0, 6564.0], [0.0, 1.0, 73.0], [0.0, 0.0, 1.0]];
        (l.dot(&u), u_inv.dot(&l_inv))
    }

    /// `‖A‖₁`.
    fn norm1(a: &Array2<f64>) -> f64 {
        a.columns()
            .into_iter()
            .map(|c| c.iter().map(|v| v.abs()).sum::<f64>())
            .fold(0.0, f64::max)
    }

    #[test]
    fn second_derivatives_through_the_inverse_at_a_near_singular_matrix_are_within_conditioning() {
        // slogdet, logdet, inv and solve's derivatives are of the size of powers of A⁻¹:
        // near a singular A they are large and their rounding errors grow with κ(A), as
        // those of A⁻¹ do; checked against the exact inverse, the Hessians are within a
        // small multiple of κ·ε of their terms' size (not O(1) garbage, as det's were)
        let (a, b) = near_singular();
        assert_eq!(a.dot(&b), Array2::<f64>::eye(3));
        let kappa = norm1(&a) * norm1(&b);
        let bt = b.t().to_owned();
        let (v, w) = (normal((3, 3), 1), normal((3, 3), 2));
        let tol = |size: f64| 10.0 * kappa * f64::EPSILON * size;
        let report = |name: &str, err: f64, size: f64| {
            eprintln!(
                "{name}: error / (κ·ε·size) = {:.1e}, relative error {:.1e}",
                err / (kappa * f64::EPSILON * size),
                err / size
            );
        };
        let nb = max_abs(&b);
        // ln |det A|: the Hessian along V is −(A⁻¹·V·A⁻¹)ᵀ
        let expected = -b.dot(&v).dot(&b).t().to_owned();
        let hessians = [
            (
                "slogdet",
                hvp(|x| x[0].slogdet().1, &[a.view()], &[v.view()]),
            ),
            ("logdet", hvp(|x| x[0].logdet(), &[a.view()], &[v.view()])),
        ];
        for (name, result) in hessians {
            let h = result.unwrap().1;
            let err = max_diff(&h[0], &expected);
            let size = 9.0 * nb * nb * max_abs(&v);
            report(name, err, size);
            assert!(
                err <= tol(size),
                "{name}: off by {err:e}, allowed {:e}",
                tol(size)
            );
        }
        // ⟨W, A⁻¹⟩: gradient −A⁻ᵀ·W·A⁻ᵀ, Hessian along V A⁻ᵀVᵀA⁻ᵀWA⁻ᵀ + A⁻ᵀWA⁻ᵀVᵀA⁻ᵀ
        let (_, h) = hvp(
            |x| x[0].inv().mul(x[1]).sum(),
            &[a.view(), w.view()],
            &[v.view(), Array2::zeros((3, 3)).view()],
        )
        .unwrap();
        let vt = v.t();
        let expected =
            bt.dot(&vt).dot(&bt).dot(&w).dot(&bt) + bt.dot(&w).dot(&bt).dot(&vt).dot(&bt);
        let size = 81.0 * nb.powi(3) * max_abs(&v) * max_abs(&w);
        let err = max_diff(&h[0], &expected);
        report("inv", err, size);
        assert!(
            err <= tol(size),
            "inv: off by {err:e}, allowed {:e}",
            tol(size)
        );
        // ⟨W, A⁻¹·c⟩, x = A⁻¹·c: gradient −A⁻ᵀ·W·xᵀ, Hessian along V
        // A⁻ᵀVᵀA⁻ᵀWxᵀ + A⁻ᵀW(A⁻¹Vx)ᵀ
        let (c, w) = (normal((3, 1), 3), normal((3, 1), 4));
        let (_, h) = hvp(
            |x| x[0].solve(x[1]).mul(x[2]).sum(),
            &[a.view(), c.view(), w.view()],
            &[
                v.view(),
                Array2::zeros((3, 1)).view(),
                Array2::zeros((3, 1)).view(),
            ],
        )
        .unwrap();
        let x = b.dot(&c);
        let expected =
            bt.dot(&vt).dot(&bt).dot(&w).dot(&x.t()) + bt.dot(&w).dot(&b.dot(&v).dot(&x).t());
        let size = 81.0 * nb * nb * max_abs(&x) * max_abs(&v) * max_abs(&w);
        let err = max_diff(&h[0], &expected);
        report("solve", err, size);
        assert!(
            err <= tol(size),
            "solve: off by {err:e}, allowed {:e}",
            tol(size)
        );
    }

    // ---- 5. Subnormal pivots -----------------------------------------------------------------

    #[test]
    fn subnormal_pivots_give_the_right_values_not_nan() {
        let inf = f64::INFINITY;
        let tape = Tape::<f64>::new();
        // det = 1e-620 underflows to 0; ln |det| = 2 ln 1e-310; A⁻¹ = 1e310·I overflows
        let a = tape.param(array![[1e-310, 0.0], [0.0, 1e-310]]);
        assert_eq!(a.det().item(), 0.0);
        let (sign, logabs) = a.slogdet();
        assert_eq!(sign.item(), 1.0);
        let expected = 2.0 * 1e-310f64.ln();
        assert!(
            (logabs.item() - expected).abs() < 1e-13,
            "{}",
            logabs.item()
        );
        assert!((expected + 1427.6).abs() < 0.1);
        assert_eq!(a.logdet().item(), logabs.item());
        assert_eq!(a.inv().value(), array![[inf, 0.0], [0.0, inf]]);
        let b = tape.constant(array![[1e-300], [-3e-300]]);
        let x = a.solve(b).value();
        // (1e-310 is stored with 44 bits: the quotients of the stored values)
        let expected = array![[1e-300 / 1e-310], [-3e-300 / 1e-310]];
        assert!(max_diff(&x, &expected) < 1e-5, "{x}");
        // their gradients: the cofactors [[d, 0], [0, a]] are representable; A⁻ᵀ is not
        // (within two of the subnormals' steps, 4.9e-324)
        let grads = tape.backward(a.det()).unwrap();
        let cofactors = array![[1e-310, 0.0], [0.0, 1e-310]];
        assert!(max_diff(grads.get(a).unwrap(), &cofactors) <= 1e-323);
        let tape = Tape::<f64>::new();
        let a = tape.param(array![[1e-310, 0.0], [0.0, 1e-310]]);
        let grads = tape.backward(a.logdet()).unwrap();
        assert_eq!(grads.get(a).unwrap(), &array![[inf, 0.0], [0.0, inf]]);

        // a full matrix of subnormals, 2⁻¹⁰³⁰·[[2, 1], [1, 3]], and one of mixed scales
        let tape = Tape::<f64>::new();
        let t = 2f64.powi(-1030);
        let a = tape.param(array![[2.0, 1.0], [1.0, 3.0]] * t);
        assert_eq!(a.det().item(), 0.0);
        let expected = 5f64.ln() - 2060.0 * LN_2;
        assert!((a.slogdet().1.item() - expected).abs() < 1e-12);
        assert_eq!(
            a.inv().value(),
            array![[inf, -inf], [-inf, inf]],
            "2¹⁰³⁰/5·[[3, −1], [−1, 2]] overflows"
        );
        let x = a.solve(tape.constant(array![[1.0], [2.0]] * t)).value();
        assert!(max_diff(&x, &array![[0.2], [0.6]]) < 1e-15, "{x}");
        let grads = tape.backward(a.det()).unwrap();
        let cofactors = array![[3.0, -1.0], [-1.0, 2.0]] * t;
        assert!(max_diff(grads.get(a).unwrap(), &cofactors) <= 1e-323);

        let tape = Tape::<f64>::new();
        let a = tape.param(array![[1e-310, 0.0], [0.0, 4.0]]);
        assert!((a.det().item() - 4e-310).abs() <= 1e-323);
        assert!((a.logdet().item() - (4e-310f64).ln()).abs() < 1e-12);
        assert_eq!(a.inv().value(), array![[inf, 0.0], [0.0, 0.25]]);
        let x = a.solve(tape.constant(array![[1e-300], [1.0]])).value();
        assert!(
            max_diff(&x, &array![[1e-300 / 1e-310], [0.25]]) < 1e-5,
            "{x}"
        );
        // f32: its subnormals start below 1.2e-38
        let tape = Tape::<f32>::new();
        let a = tape.param(array![[1e-40f32, 0.0], [0.0, 1e-40]]);
        assert_eq!(a.det().item(), 0.0);
        let l = a.slogdet().1.item();
        assert!((l - 2.0 * 1e-40f32.ln()).abs() < 1e-3, "{l}");
        assert_eq!(
            a.inv().value(),
            array![[f32::INFINITY, 0.0], [0.0, f32::INFINITY]]
        );
    }

    /// Solutions that fit, of systems whose matrix is subnormal: `solve` scaled the right-
    /// hand side by `R` (as large as 2¹⁰³⁰) before the solve, which overflowed where the
    /// solution does not; `solve_triangular` divided by subnormal diagonal elements
    /// (OpenBLAS's trsm takes their reciprocals: ∞). Both gave NaN. (Found by the fuzzer's
    /// `linalg` family in strict mode: seeds 1683 and 1290.)
    #[test]
    fn solutions_that_fit_come_out_of_subnormal_systems_not_nan() {
        let t = 2f64.powi(-1030);
        let tape = Tape::<f64>::new();
        // A = 2⁻¹⁰³⁰·[[1.5, 1.5], [1.5, −1.5]], x = [0.9, 0.9]·10³⁰⁸: A·x = [2.7·10³⁰⁸·2⁻¹⁰³⁰, 0]
        let a = tape.param(array![[1.5, 1.5], [1.5, -1.5]] * t);
        let b = tape.constant(array![[0.9e308 * t * 3.0], [0.0]]);
        let x = a.solve(b).value();
        let want = array![[0.9e308], [0.9e308]];
        assert!(
            x.iter()
                .zip(&want)
                .all(|(x, w)| ((x - w) / w).abs() < 1e-14),
            "{x}"
        );
        // T = 2⁻¹⁰³⁰·[[2, 0], [1, 4]], b = 2⁻²⁰·[1, 1]: x = 2¹⁰¹⁰·[1/2, 1/8]
        let tri = tape.param(array![[2.0, 0.0], [1.0, 4.0]] * t);
        let b = tape.constant(array![[1.0], [1.0]] * 2f64.powi(-20));
        let x = tri.solve_triangular(b, true, false).value();
        assert_eq!(x, array![[0.5], [0.125]] * 2f64.powi(1010));
        let xt = tri.solve_triangular(b, true, true).value();
        // Tᵀ = 2⁻¹⁰³⁰·[[2, 1], [0, 4]]: x₂ = 2¹⁰¹⁰/4, x₁ = (2¹⁰¹⁰ − x₂)/2
        let x2 = 2f64.powi(1010) / 4.0;
        assert_eq!(xt, array![[(2f64.powi(1010) - x2) / 2.0], [x2]]);
        // cho_solve with L = T: (T·Tᵀ)⁻¹·b, in two solves, by 2²⁰⁴⁰ in all: overflows
        let c = tri.cho_solve(b).value();
        assert!(c.iter().all(|v| v.is_infinite()), "{c}");
    }

    /// `eigh` of a tiny matrix: its eigenvalues and their gaps fell into the subnormal range
    /// (or their squares did), where the rules divided by gaps that had lost their digits
    /// or vanished: the gradient of a loss of the eigenvectors at a subnormal matrix was
    /// NaN, and its second derivative at a diagonal one of 10⁻¹⁶⁹ too. The derivatives are
    /// those at the matrix scaled by 2ᵏ, scaled back by the powers of two homogeneity says
    /// (a loss of the eigenvectors has degree 0: its gradient scales by 2ᵏ, its second
    /// derivative by 2²ᵏ).
    #[test]
    fn eigh_of_a_tiny_matrix_has_the_derivatives_of_the_matrix_scaled() {
        let b = array![[2.0, 1.0, 0.5], [1.0, 3.0, -0.25], [0.5, -0.25, -1.0]];
        let w = array![[0.3, -1.2, 0.7], [1.1, 0.4, -0.6], [-0.9, 0.2, 1.3]];
        let u = array![[0.5, 0.1, -0.3], [0.1, -0.7, 0.2], [-0.3, 0.2, 0.9]];
        // the gradient and H·u of ⟨W, V∘V⟩ at `a`, with W scaled by `scale`
        let eigh_line = line!() + 4;
        let at = |a: Array2<f64>, scale: f64| {
            let tape = Tape::<f64>::new();
            let x = tape.param(a);
            let (_, v) = x.eigh();
            let loss = v.square().mul(tape.constant(&w * scale)).sum();
            let g = tape.grad(loss, &[x]).unwrap()[0];
            let hu = tape.grad(g.mul(tape.constant(&u)).sum(), &[x]);
            let hu = hu.map(|h| h[0].value());
            let backward = tape.backward(loss).unwrap().get(x).unwrap().clone();
            (backward, g.value(), hu)
        };
        let (g0, r0, h0) = at(b.clone(), 1.0);
        let h0 = h0.unwrap();
        let close = |got: &Array2<f64>, want: &Array2<f64>, what: &str| {
            let big = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let err = max_diff(got, want);
            assert!(err <= 1e-12 * big, "{what}: {got} against {want}");
        };
        // 2⁻¹⁰³⁰·B (subnormal), W·2⁻¹⁰⁰: the gradient is 2⁹³⁰ times B's
        let (g, r, h) = at(&b * 2f64.powi(-1030), 2f64.powi(-100));
        close(&g, &(&g0 * 2f64.powi(930)), "backward at 2⁻¹⁰³⁰·B");
        close(&r, &(&r0 * 2f64.powi(930)), "Tape::grad at 2⁻¹⁰³⁰·B");
        // its H·u, 2¹⁰³⁰·(B's H·u at W·2⁻¹⁰⁰) in the rules' scaled frame, whose cotangent
        // times 2¹⁰³⁰ (no float) met V's zeros as NaN, is a typed error naming eigh
        let e = h.unwrap_err();
        assert_eq!(e.op(), "eigh", "{e}");
        assert_eq!(e.location().line(), eigh_line, "{e}");
        assert_eq!(
            e.kind(),
            &ErrorKind::Subnormal {
                shape: (3, 3),
                exponent: 1029
            },
            "{e}"
        );
        // 2⁻⁶⁰⁰·B, W·2⁻⁷⁰⁰: H·u is 2⁵⁰⁰ times B's
        let (g, _, h) = at(&b * 2f64.powi(-600), 2f64.powi(-700));
        close(&g, &(&g0 * 2f64.powi(-100)), "backward at 2⁻⁶⁰⁰·B");
        close(&h.unwrap(), &(&h0 * 2f64.powi(500)), "H·u at 2⁻⁶⁰⁰·B");

        // the matrices the fuzzer's `linalg` family found (strict mode), where the rules
        // gave NaN: seed 650, a rank-2 matrix of subnormals, whose gradient is 2¹⁰²⁸ times
        // the one at 2¹⁰²⁸·A (up to 1.1·10³⁰⁸); seed 1434, diag(−1.38, 3.75)·10⁻¹⁶⁹, whose
        // H·u is 0 (the gaps' squares underflowed: 0/0)
        let a650 = array![
            [
                1.6541959590477e-311,
                1.68368194358e-312,
                8.566592618088e-311
            ],
            [
                1.68368194358e-312,
                -6.378031116254e-311,
                -1.11826638476596e-310
            ],
            [
                8.566592618088e-311,
                -1.11826638476596e-310,
                -7.38940627682e-312
            ]
        ];
        let w650 = array![
            [0.22874219411581953, 0.759631612812858, 1.3002486490496197],
            [
                0.9381569048154503,
                -0.07406845358121819,
                -0.6849084263020975
            ],
            [-0.8358794201084059, -1.728542763322912, 0.36043899415593533]
        ];
        let grad = |a: &Array2<f64>| {
            let tape = Tape::<f64>::new();
            let x = tape.param(a);
            let loss = x.eigh().1.square().mul(tape.constant(&w650)).sum();
            let recorded = tape.grad(loss, &[x]).unwrap()[0].value();
            (
                tape.backward(loss).unwrap().get(x).unwrap().clone(),
                recorded,
            )
        };
        let (want, _) = grad(&(&a650 * 2f64.powi(1000) * 2f64.powi(28)));
        let want = want.mapv(|v| v * 2f64.powi(1000) * 2f64.powi(28));
        for got in <[Array2<f64>; 2]>::from(grad(&a650)) {
            for (g, w) in got.iter().zip(&want) {
                assert!(!g.is_nan(), "NaN at seed 650's matrix: {got}");
                if w.is_finite() {
                    assert!(
                        (g - w).abs() <= 1e-9 * w.abs().max(1e300),
                        "{got:e} against {want:e} (backward, then Tape::grad)"
                    );
                }
            }
        }
        let w = array![
            [-0.569151920275583, -0.49447512286352824],
            [-1.7530244026119082, -0.2525699116303726]
        ];
        let hu = |a: Array2<f64>| {
            let tape = Tape::<f64>::new();
            let x = tape.param(a);
            let loss = x.eigh().1.square().mul(tape.constant(&w)).sum();
            let g = tape.grad(loss, &[x]).unwrap()[0];
            let u = array![[0.5, 0.1], [0.1, -0.7]];
            tape.grad(g.mul(tape.constant(u)).sum(), &[x]).unwrap()[0].value()
        };
        let a1434 = array![
            [-1.378457434415693e-169, 0.0],
            [0.0, 3.7531217119947215e-169]
        ];
        // at 2⁵⁵⁸·A: 0 on the diagonal, and off it a value that 2¹¹¹⁶ takes past overflow
        let want = hu(&a1434 * 2f64.powi(558)).mapv(|v| v * 2f64.powi(558) * 2f64.powi(558));
        assert_eq!(hu(a1434), want, "H·u at seed 1434's matrix");
    }

    #[test]
    fn a_determinant_that_fits_survives_a_product_that_overflows_on_the_way() {
        // pivots 1e200, 1e200, 1e-200: the running product was ∞ before the last one
        let tape = Tape::<f64>::new();
        let a = tape.param(Array2::from_diag(&ndarray::arr1(&[1e200, 1e200, 1e-200])));
        let d = a.det().item();
        assert!((d / 1e200 - 1.0).abs() < 1e-15, "{d}");
        let b = tape.param(Array2::from_diag(&ndarray::arr1(&[1e-200, 1e-200, 1e200])));
        let d = b.det().item();
        assert!((d / 1e-200 - 1.0).abs() < 1e-15, "{d}");
    }

    #[test]
    fn the_symmetric_part_of_a_matrix_near_the_largest_float_does_not_overflow() {
        // (A + Aᵀ)/2 summed first: 1.5e308 + 1.7e308 = ∞
        let tape = Tape::<f64>::new();
        let a = tape.param(array![[0.0, 1.5e308], [1.7e308, 0.0]]);
        let (lam, _) = a.eigh();
        let lam = lam.value() / 1e308;
        assert!(max_diff(&lam, &array![[-1.6], [1.6]]) < 1e-15, "{lam}");
        let b = tape.param(array![[1.7e308, 1.0e308], [1.2e308, 1.7e308]]);
        let l = b.cholesky().value();
        assert!(l.iter().all(|v| v.is_finite()), "{l}");
        let back = l.dot(&l.t()) / 1e308;
        let expected = array![[1.7, 1.1], [1.1, 1.7]];
        assert!(max_diff(&back, &expected) < 1e-14, "{back}");
    }

    // ---- 6. Working copies and results that cannot be allocated --------------------------------

    #[test]
    fn linear_algebra_on_an_input_too_large_for_memory_is_out_of_memory() {
        // a 2¹⁷ × 2¹⁷ f64 working copy is 128 GiB
        let n = 1 << 17;
        let one = [1.0f64];
        let tape = Tape::new();
        let a = tape.param(zero_stride(&one, (n, n)));
        let b = tape.constant(zero_stride(&one, (n, 1)));
        // (each error names the line of its call: the line above each check)
        let e = a.try_inv();
        out_of_memory(e, "inv", (n, n), line!() - 1);
        let e = a.try_det();
        out_of_memory(e, "det", (n, n), line!() - 1);
        let e = a.try_slogdet();
        out_of_memory(e, "slogdet", (n, n), line!() - 1);
        let e = a.try_logdet();
        out_of_memory(e, "logdet", (n, n), line!() - 1);
        let e = a.try_cholesky();
        out_of_memory(e, "cholesky", (n, n), line!() - 1);
        let e = a.try_eigh();
        out_of_memory(e, "eigh", (n, n + 1), line!() - 1); // [λ V]
        let e = a.try_solve(b);
        out_of_memory(e, "solve", (n, n), line!() - 1);
        let e = a.try_solve_triangular(b, true, false);
        out_of_memory(e, "solve_triangular", (n, n), line!() - 1);
        let e = a.try_cho_solve(b);
        out_of_memory(e, "cho_solve", (n, n), line!() - 1);
    }

    #[test]
    fn a_right_hand_side_too_large_for_memory_is_out_of_memory() {
        // 2 × (2³¹ − 1) f64 is 32 GiB
        let m = i32::MAX as usize;
        let one = [1.0f64];
        let tape = Tape::new();
        let a = tape.param(array![[2.0, 0.0], [1.0, 1.0]]);
        let b = tape.constant(zero_stride(&one, (2, m)));
        let e = a.try_solve(b);
        out_of_memory(e, "solve", (2, m), line!() - 1);
        let e = a.try_solve_triangular(b, true, false);
        out_of_memory(e, "solve_triangular", (2, m), line!() - 1);
        let e = a.try_cho_solve(b);
        out_of_memory(e, "cho_solve", (2, m), line!() - 1);
    }

    #[test]
    fn linear_algebra_past_the_address_space_is_too_large() {
        // (2³¹ − 1)² f64 is more bytes than isize can count: refused before any pass over
        // the input (which took 4.6e18 reads before)
        let n = i32::MAX as usize;
        let one = [1.0f64];
        let tape = Tape::new();
        let a = tape.param(zero_stride(&one, (n, n)));
        let b = tape.constant(zero_stride(&one, (n, 1)));
        let too_large = ErrorKind::TooLarge { shape: (n, n) };
        assert_eq!(a.try_inv().unwrap_err().kind(), &too_large);
        assert_eq!(a.try_det().unwrap_err().kind(), &too_large);
        assert_eq!(a.try_slogdet().unwrap_err().kind(), &too_large);
        assert_eq!(a.try_cholesky().unwrap_err().kind(), &too_large);
        let packed = ErrorKind::TooLarge { shape: (n, n + 1) }; // [λ V]
        assert_eq!(a.try_eigh().unwrap_err().kind(), &packed);
        assert_eq!(a.try_solve(b).unwrap_err().kind(), &too_large);
        assert_eq!(a.try_cho_solve(b).unwrap_err().kind(), &too_large);
    }

    #[test]
    fn the_exact_zero_pivot_of_a_zero_matrix_is_still_singular() {
        // the ops' plain behaviour where the copies fit: a zero matrix is singular
        let zero = [0.0f64];
        let tape = Tape::new();
        let a = tape.param(zero_stride(&zero, (3, 3)));
        assert!(matches!(
            a.try_inv().unwrap_err().kind(),
            ErrorKind::Singular { .. }
        ));
        assert_eq!(a.det().item(), 0.0);
        let grads = tape.backward(a.det()).unwrap();
        assert_eq!(grads.get(a).unwrap(), &Array2::<f64>::zeros((3, 3)));
    }

    /// `A` 4 × 4 with two equal columns, drawn until LU's rounding leaves its last pivot
    /// nonzero (so that the forward ops return numbers, as LAPACK's do).
    fn equal_columns() -> Array2<f64> {
        (0..100)
            .map(|seed| {
                let mut a = normal((4, 4), 700 + seed);
                let u = a.column(0).to_owned();
                a.column_mut(2).assign(&u);
                a
            })
            .find(|a| Tape::new().constant(a.clone()).try_inv().is_ok())
            .expect("a draw whose LU leaves a rounding-size pivot")
    }

    /// A gradient through `A⁻¹` at a matrix singular to working precision is an
    /// `IllConditioned` error naming the op and its line, in both rule forms.
    fn assert_ill<T: std::fmt::Debug>(r: tapegrad::Result<T>, op: &str, line: u32) {
        let e = r.expect_err(op);
        assert_eq!(e.op(), op, "{e}");
        assert_eq!(e.location().line(), line, "{e}");
        assert!(
            matches!(e.kind(), ErrorKind::IllConditioned { shape: (4, 4), .. }),
            "{op}: {e}"
        );
    }

    #[test]
    fn derivatives_through_the_inverse_at_a_matrix_singular_to_working_precision_are_an_error() {
        // before: finite derivatives of order 1e16 (and second derivatives of 1e32), noise
        // from the pivot LU's rounding left where the true one is zero
        let a = equal_columns();
        let b = normal((4, 2), 9);
        // backward, or Tape::grad (the tensor forms), each on a tape of its own
        fn differentiate<'t>(
            tape: &'t Tape<'t, f64>,
            root: Tensor<'t, f64>,
            at: &[Tensor<'t, f64>],
            recorded: bool,
        ) -> tapegrad::Result<()> {
            if recorded {
                tape.grad(root, at).map(drop)
            } else {
                tape.backward(root).map(drop)
            }
        }
        for recorded in [false, true] {
            let tape = Tape::new();
            let x = tape.param(a.clone());
            let (inv, line) = (x.inv().sum(), line!());
            assert!(inv.item().is_finite(), "the forward value is LAPACK's");
            assert_ill(differentiate(&tape, inv, &[x], recorded), "inv", line);
            let tape = Tape::new();
            let (x, y) = (tape.param(a.clone()), tape.param(b.clone()));
            let (solved, line) = (x.solve(y).sum(), line!());
            assert_ill(
                differentiate(&tape, solved, &[x, y], recorded),
                "solve",
                line,
            );
            let tape = Tape::new();
            let x = tape.param(a.clone());
            let (logdet, line) = (x.logdet(), line!());
            assert_ill(differentiate(&tape, logdet, &[x], recorded), "logdet", line);
            let tape = Tape::new();
            let x = tape.param(a.clone());
            let ((_, logabs), line) = (x.slogdet(), line!());
            assert_ill(
                differentiate(&tape, logabs, &[x], recorded),
                "slogdet",
                line,
            );
        }
        // and the second derivatives
        let u = normal((4, 4), 10);
        let e = hvp(|t| t[0].inv().sum(), &[a.view()], &[u.view()]).unwrap_err();
        assert_eq!(e.op(), "inv", "{e}");
        let e = hvp(|t| t[0].slogdet().1, &[a.view()], &[u.view()]).unwrap_err();
        assert_eq!(e.op(), "slogdet", "{e}");
        // det's derivative, the cofactors, exists there and is computed
        let tape = Tape::new();
        let x = tape.param(a);
        assert!(tape.backward(x.det()).is_ok());
    }

    #[test]
    fn a_badly_scaled_matrix_whose_inverse_is_exact_keeps_its_derivatives() {
        // [[1, 1], [0.5, 3]] with its second column scaled by 1e-17: 1/κ₁ ≈ 4e-18 < ε, but
        // with the column scaled back by a power of two it is well conditioned, and
        // A⁻¹ = [[d, −b], [−c, a]] / det is computed to rounding
        let (p, q, r, s) = (1.0, 1e-17, 0.5, 3e-17);
        let a = array![[p, q], [r, s]];
        let det = p * s - q * r;
        let inverse = array![[s, -q], [-r, p]] / det;
        let tape = Tape::new();
        let x = tape.param(a.clone());
        let grads = tape.backward(x.inv().sum()).unwrap();
        // d Σ A⁻¹ = −A⁻ᵀ·1·A⁻ᵀ
        let ones = Array2::<f64>::ones((2, 2));
        let expected = -inverse.t().dot(&ones).dot(&inverse.t());
        let got = grads.get(x).unwrap();
        assert!(
            max_diff(got, &expected) <= 1e-12 * max_abs(&expected),
            "{got} vs {expected}"
        );
        let tape = Tape::new();
        let x = tape.param(a);
        let grads = tape.backward(x.slogdet().1).unwrap();
        let expected = inverse.t().to_owned();
        let got = grads.get(x).unwrap();
        assert!(
            max_diff(got, &expected) <= 1e-12 * max_abs(&expected),
            "{got} vs {expected}"
        );
    }
}
