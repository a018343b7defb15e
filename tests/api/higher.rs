//! Higher-order derivatives against closed forms: `Tape::grad` to third order, Hessians
//! of a quadratic form and of softmax cross-entropy, Hessian-, Jacobian- and
//! vector-Jacobian products against the full matrices and against closed forms, and a
//! gradient penalty checked by finite differences.

use crate::common;

use common::close;

use ndarray::{Array2, array};
use tapegrad::check::{CheckOptions, gradcheck, gradgradcheck};
use tapegrad::{BackwardOptions, ErrorKind, Tape, Tensor, functional};

#[test]
fn derivatives_of_sigmoid_to_third_order() {
    // σ' = σ(1 − σ), σ'' = σ'(1 − 2σ), σ''' = σ''(1 − 2σ) − 2σ'²
    let x: Array2<f64> = array![[-1.5, 0.0, 0.7, 3.0]];
    let s = x.mapv(|v| 1.0 / (1.0 + (-v).exp()));
    let d1 = &s * &(1.0 - &s);
    let d2 = &d1 * &(1.0 - 2.0 * &s);
    let d3 = &d2 * &(1.0 - 2.0 * &s) - 2.0 * &d1 * &d1;
    let tape = Tape::new();
    let xt = tape.param(&x);
    let g1 = tape.grad(xt.sigmoid().sum(), &[xt]).unwrap()[0];
    let g2 = tape.grad(g1.sum(), &[xt]).unwrap()[0];
    let g3 = tape.grad(g2.sum(), &[xt]).unwrap()[0];
    assert!(close(&g1.value(), &d1, 1e-15));
    assert!(close(&g2.value(), &d2, 1e-14));
    assert!(close(&g3.value(), &d3, 1e-14));
    // and first-order backward through the recorded second derivative agrees
    let grads = tape.backward(g2.sum()).unwrap();
    assert!(close(grads.get(xt).unwrap(), &d3, 1e-14));
}

fn quadratic_form<'t>(x: &[Tensor<'t, f64>]) -> Tensor<'t, f64> {
    let a = x[0]
        .tape()
        .constant(array![[2.0, -1.0, 0.5], [3.0, 1.0, 0.0], [-2.0, 4.0, 1.5]]);
    x[0].t().matmul(a.matmul(x[0]))
}

#[test]
fn the_hessian_of_a_quadratic_form_is_a_plus_a_transpose() {
    let a = array![[2.0, -1.0, 0.5], [3.0, 1.0, 0.0], [-2.0, 4.0, 1.5]];
    let x = array![[0.3], [-1.2], [2.0]];
    let h = functional::hessian(|xs| quadratic_form(&xs), &[x.view()]).unwrap();
    assert_eq!(
        h,
        &a + &a.t(),
        "exact: the second derivative of a quadratic"
    );
    // H·v by one pass, against the full matrix
    let v = array![[1.0], [2.0], [-0.5]];
    let (value, hv) = functional::hvp(|xs| quadratic_form(&xs), &[x.view()], &[v.view()]).unwrap();
    assert!((value - x.t().dot(&a.dot(&x))[[0, 0]]).abs() < 1e-14);
    assert!(close(&hv[0], &(&a + &a.t()).dot(&v), 1e-14));
}

fn cross_entropy<'t>(z: &[Tensor<'t, f64>]) -> Tensor<'t, f64> {
    z[0].softmax_cross_entropy_indices(&[2])
}

fn cross_entropy_one_hot<'t>(z: &[Tensor<'t, f64>]) -> Tensor<'t, f64> {
    let t = z[0].tape().constant(array![[0.0, 0.0, 1.0, 0.0]]);
    z[0].softmax_cross_entropy(t)
}

fn log_softmax_nll<'t>(z: &[Tensor<'t, f64>]) -> Tensor<'t, f64> {
    let t = z[0].tape().constant(array![[0.0, 0.0, -1.0, 0.0]]);
    z[0].log_softmax(ndarray::Axis(1)).mul(t).sum()
}

#[test]
fn the_hessian_of_softmax_cross_entropy_is_diag_p_minus_p_p_transpose() {
    let z = array![[0.5, -1.0, 2.0, 0.1]];
    let e = z.mapv(f64::exp);
    let p = &e / e.sum();
    let expected = Array2::from_diag(&p.row(0)) - p.t().dot(&p);
    for f in [cross_entropy, cross_entropy_one_hot, log_softmax_nll] {
        let h = functional::hessian(|xs| f(&xs), &[z.view()]).unwrap();
        assert!(close(&h, &expected, 1e-14), "{h} vs {expected}");
    }
}

fn layer<'t>(x: &[Tensor<'t, f64>]) -> Tensor<'t, f64> {
    x[0].matmul(x[1]).tanh()
}

#[test]
fn jacobian_vector_products_match_the_jacobian_and_the_closed_form() {
    let x = array![[0.5, -1.0, 2.0], [1.5, 0.3, -0.7]];
    let w = array![[0.2, -0.4], [1.0, 0.1], [-0.3, 0.8]];
    let (u, uw) = (
        array![[1.0, 0.5, -1.0], [0.0, 2.0, 1.0]],
        array![[0.3, 0.1], [-0.2, 0.4], [1.0, -1.0]],
    );
    let (y, ju) = functional::jvp(
        |xs| layer(&xs),
        &[x.view(), w.view()],
        &[u.view(), uw.view()],
    )
    .unwrap();
    // d tanh(XW) = (1 − Y²) ∘ (U·W + X·U_W)
    let expected = (1.0 - &y * &y) * (u.dot(&w) + x.dot(&uw));
    assert!(close(&ju, &expected, 1e-14), "{ju} vs {expected}");
    // the same from the full Jacobian (rows: y row-major; columns: x then w row-major)
    let j = functional::jacobian(|xs| layer(&xs), &[x.view(), w.view()]).unwrap();
    let flat: Vec<f64> = u.iter().chain(uw.iter()).copied().collect();
    let tangent = Array2::from_shape_vec((flat.len(), 1), flat).unwrap();
    let from_j = j.dot(&tangent).into_shape_with_order((2, 2)).unwrap();
    assert!(close(&from_j, &ju, 1e-14));
    // vector-Jacobian products are the Jacobian's transpose
    let v = array![[1.0, -2.0], [0.5, 3.0]];
    let (_, vjp) = functional::vjp(|xs| layer(&xs), &[x.view(), w.view()], v.view()).unwrap();
    let vflat = Array2::from_shape_vec((1, 4), v.iter().copied().collect()).unwrap();
    let vj = vflat.dot(&j);
    let got: Vec<f64> = vjp[0].iter().chain(vjp[1].iter()).copied().collect();
    for (a, b) in got.iter().zip(vj.iter()) {
        assert!((a - b).abs() < 1e-14);
    }
}

#[test]
fn hessian_vector_products_match_the_hessian_for_several_inputs() {
    fn f<'t>(x: &[Tensor<'t, f64>]) -> Tensor<'t, f64> {
        x[0].matmul(x[1]).sigmoid().mul(x[0].matmul(x[1])).sum()
    }
    let a = array![[0.5, -1.0], [1.5, 0.3]];
    let b = array![[0.2, -0.4], [1.0, 0.1]];
    let h = functional::hessian(|xs| f(&xs), &[a.view(), b.view()]).unwrap();
    assert!(close(&h, &h.t().to_owned(), 1e-13), "symmetric");
    let (va, vb) = (
        array![[1.0, 0.0], [-1.0, 2.0]],
        array![[0.5, 0.5], [0.0, -1.0]],
    );
    let (_, hv) =
        functional::hvp(|xs| f(&xs), &[a.view(), b.view()], &[va.view(), vb.view()]).unwrap();
    let v: Vec<f64> = va.iter().chain(vb.iter()).copied().collect();
    let hv_full = h.dot(&Array2::from_shape_vec((8, 1), v).unwrap());
    let got: Vec<f64> = hv[0].iter().chain(hv[1].iter()).copied().collect();
    for (x, y) in got.iter().zip(hv_full.iter()) {
        assert!((x - y).abs() < 1e-13 * (1.0 + y.abs()), "{x} vs {y}");
    }
}

/// `λ · mean ‖∂f/∂x‖²` of a small tanh network, as a function of its weights: its
/// gradient (by first-order backward through the recorded input gradient) against finite
/// differences, and its own second derivatives against finite differences of that.
fn penalty<'t>(p: &[Tensor<'t, f64>]) -> Tensor<'t, f64> {
    let tape = p[0].tape();
    let x = tape.param(array![[0.5, -1.0], [1.5, 0.3], [-0.2, 0.8]]);
    let f = x.matmul(p[0]).tanh().matmul(p[1]);
    let dfdx = tape.grad(f.sum(), &[x]).unwrap()[0];
    dfdx.square().mean().add(f.square().mean())
}

#[test]
fn a_gradient_penalty_is_differentiated_right() {
    let w1 = array![[0.3, -0.5, 0.8], [1.1, 0.2, -0.4]];
    let w2 = array![[0.7], [-1.2], [0.5]];
    let opts = CheckOptions::default();
    gradcheck(|xs| penalty(&xs), &[w1.view(), w2.view()], &opts).unwrap();
    // third derivatives of the network, through the recorded first
    gradgradcheck(|xs| penalty(&xs), &[w1.view(), w2.view()], &opts).unwrap();
}

#[test]
fn grad_with_respect_to_intermediates_and_its_errors() {
    let tape = Tape::new();
    let x = tape.param(array![[1.0, 2.0]]);
    let h = x.square();
    let y = h.sum().mul_scalar(3.0);
    let gs = tape.grad(y, &[h, x]).unwrap();
    assert_eq!(gs[0].value(), array![[3.0, 3.0]]);
    assert_eq!(gs[1].value(), array![[6.0, 12.0]]);
    // a tensor y does not depend on gets zeros
    let other = tape.param(array![[5.0]]);
    assert_eq!(tape.grad(y, &[other]).unwrap()[0].value(), array![[0.0]]);
    // errors
    assert_eq!(
        tape.grad(h, &[x]).unwrap_err().kind(),
        &ErrorKind::NotScalar { shape: (1, 2) }
    );
    let elsewhere = Tape::new();
    let z = elsewhere.param(array![[1.0]]);
    assert_eq!(
        tape.grad(y, &[z]).unwrap_err().kind(),
        &ErrorKind::ForeignTensor
    );
    // after a retained backward it still works; after a releasing one it is an error
    tape.backward_with(y, BackwardOptions::new().retain_graph(true))
        .unwrap();
    assert!(tape.grad(y, &[x]).is_ok());
    tape.backward(y).unwrap();
    assert!(matches!(
        tape.grad(y, &[x]).unwrap_err().kind(),
        ErrorKind::BackwardTwice { .. }
    ));
}

#[test]
fn functional_errors_are_typed() {
    let x = array![[1.0, 2.0]];
    let err = functional::hvp(
        |xs| quadratic_form_row(&xs),
        &[x.view()],
        &[array![[1.0]].view()],
    )
    .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Shape { .. }), "{err}");
    let err = functional::hessian(|xs| layer_one(&xs), &[x.view()]).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::NotScalar { .. }), "{err}");
    let err = functional::vjp(|xs| layer_one(&xs), &[x.view()], array![[1.0]].view()).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::SeedShape { .. }), "{err}");
}

fn quadratic_form_row<'t>(x: &[Tensor<'t, f64>]) -> Tensor<'t, f64> {
    x[0].square().sum()
}

fn layer_one<'t>(x: &[Tensor<'t, f64>]) -> Tensor<'t, f64> {
    x[0].tanh()
}

#[test]
fn f32_higher_order_works_too() {
    let tape = Tape::<f32>::new();
    let x = tape.param(array![[2.0f32]]);
    let g = tape.grad(x.powi(4), &[x]).unwrap()[0]; // 4x³ = 32
    let h = tape.grad(g, &[x]).unwrap()[0]; // 12x² = 48
    assert_eq!((g.item(), h.item()), (32.0, 48.0));
}
