//! Ordinary closures that borrow what they capture (a layer, data, targets) work wherever
//! a function is taken: the functional API, the gradient checks and remat blocks, with no
//! clone of the captured data and no `fn` item. The results are checked against closed
//! forms, so this is more than a compile test.

use ndarray::{Array2, array};
use tapegrad::check::{CheckOptions, gradcheck, gradgradcheck, vjp_dot_test};
use tapegrad::functional::{self, func};
use tapegrad::nn::{Linear, Module};
use tapegrad::{Inputs, Tape, Tensor};

fn layer() -> Linear<f64> {
    Linear {
        weight: array![[1.0, -1.0], [0.5, 2.0]],
        bias: Some(array![[0.1, 0.2]]),
    }
}

#[test]
fn checks_take_closures_that_borrow_a_layer() {
    let layer = layer();
    let x = array![[1.0, 2.0], [-1.0, 0.5]];
    let opts = CheckOptions::default();
    gradcheck(
        |xs| layer.forward(xs[0]).unwrap().tanh(),
        &[x.view()],
        &opts,
    )
    .unwrap();
    vjp_dot_test(
        |xs| layer.forward(xs[0]).unwrap().tanh(),
        &[x.view()],
        &opts,
    )
    .unwrap();
    gradgradcheck(
        |xs| layer.forward(xs[0]).unwrap().tanh(),
        &[x.view()],
        &opts,
    )
    .unwrap();
}

/// `f(x) = ½‖x·A − y‖²` with `A` and `y` borrowed: gradient `(x·A − y)·Aᵀ`, Hessian-vector
/// product `v·A·Aᵀ`, Jacobian of `x·A` the Kronecker form, all closed forms.
#[test]
fn the_functional_api_takes_closures_that_borrow_data() {
    let a = array![[2.0, 0.0, 1.0], [1.0, 3.0, -1.0]];
    let y = array![[1.0, -1.0, 0.5]];
    let x = array![[0.3, -0.7]];
    let v = array![[1.0, 2.0]];
    // stored in a `let` to be used five times: `func` gives it the signature
    let loss = func(|xs| {
        let r = xs[0].matmul(xs.constant(&a)).sub(xs.constant(&y));
        r.square().sum().mul_scalar(0.5)
    });
    let r = x.dot(&a) - &y;
    let grad = r.dot(&a.t());
    let hv = v.dot(&a).dot(&a.t());

    let (value, g, h) = functional::hvp_with_grad(loss, &[x.view()], &[v.view()]).unwrap();
    assert!((value - 0.5 * r.iter().map(|e| e * e).sum::<f64>()).abs() < 1e-14);
    assert!((&g[0] - &grad).iter().all(|e| e.abs() < 1e-14));
    assert!((&h[0] - &hv).iter().all(|e| e.abs() < 1e-13));
    let (_, h2) = functional::hvp(loss, &[x.view()], &[v.view()]).unwrap();
    assert_eq!(h2[0], h[0]);
    let hess = functional::hessian(loss, &[x.view()]).unwrap();
    assert!((&hess - &a.dot(&a.t())).iter().all(|e| e.abs() < 1e-13));

    // the linear map x ↦ x·A: vᵀJ = v·Aᵀ for a cotangent v, J·u = u·A
    let (out, vjp) = functional::vjp(
        |xs| xs[0].matmul(xs.constant(&a)),
        &[x.view()],
        array![[1.0, 0.0, 2.0]].view(),
    )
    .unwrap();
    assert_eq!(out, x.dot(&a));
    assert_eq!(vjp[0], array![[1.0, 0.0, 2.0]].dot(&a.t()));
    let (_, ju) =
        functional::jvp(|xs| xs[0].matmul(xs.constant(&a)), &[x.view()], &[v.view()]).unwrap();
    assert!((&ju - &v.dot(&a)).iter().all(|e| e.abs() < 1e-14));
    let jac = functional::jacobian(|xs| xs[0].matmul(xs.constant(&a)), &[x.view()]).unwrap();
    assert_eq!(jac, a.t().to_owned());
}

/// A `fn` item takes `Inputs` too, and one written for a slice works through `|xs| f(&xs)`.
#[test]
fn fn_items_take_inputs_or_a_slice() {
    fn cube<'t>(xs: Inputs<'_, 't, '_, f64>) -> Tensor<'t, f64> {
        xs[0].powi(3).sum()
    }
    fn cube_of_slice<'t>(xs: &[Tensor<'t, f64>]) -> Tensor<'t, f64> {
        xs[0].powi(3).sum()
    }
    let x = array![[1.0, 2.0]];
    let h = functional::hessian(cube, &[x.view()]).unwrap();
    assert_eq!(h, array![[6.0, 0.0], [0.0, 12.0]]);
    let h = functional::hessian(|xs| cube_of_slice(&xs), &[x.view()]).unwrap();
    assert_eq!(h, array![[6.0, 0.0], [0.0, 12.0]]);
}

/// A remat block that borrows data (a target) and gets the layer's weights as inputs: the
/// same gradients as the plain recording.
#[test]
fn remat_blocks_borrow_data() {
    let layer = layer();
    let (x, y) = (
        array![[1.0, 2.0], [-1.0, 0.5]],
        array![[0.0, 1.0], [1.0, 0.0]],
    );
    let bias = layer.bias.as_ref().unwrap();
    let grads_of = |remat: bool| -> Array2<f64> {
        let tape = Tape::new();
        let (wt, bt) = (tape.param(&layer.weight), tape.param(bias));
        let h = tape.constant(&x);
        let loss = if remat {
            tape.remat(&[h, wt, bt], |xs| {
                let out = xs[0].try_linear(xs[1], xs[2])?.tanh();
                Ok(out.try_sub(xs.constant(&y))?.square().sum())
            })
            .unwrap()
        } else {
            layer
                .forward(h)
                .unwrap()
                .tanh()
                .sub(tape.constant(&y))
                .square()
                .sum()
        };
        tape.backward(loss)
            .unwrap()
            .wrt(&layer.weight)
            .unwrap()
            .clone()
    };
    assert_eq!(grads_of(true), grads_of(false));
}
