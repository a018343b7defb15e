//! Two ops of your own through the public custom-op API (`tapegrad::custom`), each checked
//! against finite differences:
//!
//! - a numerically stable softplus, `ln(1 + eˣ) = max(x, 0) + ln(1 + e^−|x|)`, with its VJP
//!   on arrays (for first-order speed) and in tensor ops (so it differentiates again);
//! - `ln Γ(x)` from an external crate (`special`), whose derivative is the digamma function
//!   `ψ(x)`, also from that crate: a VJP on arrays only, so first order only, and a
//!   second derivative through it says so with an error.
//!
//! ```text
//! cargo run --release --example custom_op
//! ```

use ndarray::{Array2, ArrayView2, array};
use special::Gamma;
use tapegrad::check::{CheckOptions, gradcheck, gradgradcheck};
use tapegrad::custom::{self, CustomOp, Grads, Reads, Saved, TensorGrads};
use tapegrad::{ErrorKind, Tape, Tensor};

/// `ln(1 + eˣ)`, stable for any input; `d/dx = σ(x)`.
pub struct Softplus;

impl CustomOp<f64> for Softplus {
    fn name(&self) -> &'static str {
        "softplus"
    }

    fn output_shape(&self, inputs: &[(usize, usize)]) -> Result<(usize, usize), &'static str> {
        match inputs {
            [x] => Ok(*x),
            _ => Err("softplus takes one input"),
        }
    }

    fn forward(&self, x: &[ArrayView2<'_, f64>]) -> Array2<f64> {
        x[0].mapv(|v| v.max(0.0) + (-v.abs()).exp().ln_1p())
    }

    fn reads(&self) -> Reads {
        Reads::nothing().input(0)
    }

    /// `dX = G ∘ σ(X)`, one pass on arrays.
    fn vjp(&self, g: ArrayView2<'_, f64>, saved: &Saved<'_, f64>, grads: &mut Grads<'_, f64>) {
        let x = saved.input(0).expect("declared in reads");
        let mut d = g.to_owned();
        d.zip_mut_with(&x, |d, &x| *d /= 1.0 + (-x).exp());
        grads.add(0, d);
    }

    /// `dX = G ∘ σ(X)` in tensor ops: differentiable again.
    fn vjp_tensor<'t>(
        &self,
        g: Tensor<'t, f64>,
        grads: &mut TensorGrads<'_, '_, 't, f64>,
    ) -> Option<tapegrad::Result<()>> {
        let x = grads.input(0);
        Some(g.try_mul(x.sigmoid()).and_then(|d| grads.add(0, d)))
    }
}

/// `ln Γ(x)` for `x > 0`, by the `special` crate; `d/dx = ψ(x)`, the digamma function.
pub struct LnGamma;

impl CustomOp<f64> for LnGamma {
    fn name(&self) -> &'static str {
        "ln_gamma"
    }

    fn output_shape(&self, inputs: &[(usize, usize)]) -> Result<(usize, usize), &'static str> {
        match inputs {
            [x] => Ok(*x),
            _ => Err("ln_gamma takes one input"),
        }
    }

    fn forward(&self, x: &[ArrayView2<'_, f64>]) -> Array2<f64> {
        x[0].mapv(|v| Gamma::ln_gamma(v).0)
    }

    /// `dX = G ∘ ψ(X)`: on arrays only (ψ is not a tensor op), so first order only.
    fn vjp(&self, g: ArrayView2<'_, f64>, saved: &Saved<'_, f64>, grads: &mut Grads<'_, f64>) {
        let x = saved.input(0).expect("reads every input by default");
        grads.add(0, &g * &x.mapv(Gamma::digamma));
    }
}

/// `Σ softplus(x·w)`: the custom op inside a composition.
pub fn softplus_layer<'t>(p: &[Tensor<'t, f64>]) -> Tensor<'t, f64> {
    custom::apply(Softplus, &[p[0].matmul(p[1])]).sum()
}

/// `Σ ln Γ(x²+ 1)`.
pub fn ln_gamma_of_square<'t>(p: &[Tensor<'t, f64>]) -> Tensor<'t, f64> {
    custom::apply(LnGamma, &[p[0].square().add_scalar(1.0)]).sum()
}

fn main() {
    let x = array![[0.5, -1.0, 2.0], [1.5, 0.3, -30.0]];
    let w = array![[0.2, -0.4], [1.0, 0.1], [-0.3, 0.8]];
    let opts = CheckOptions::default();

    let first =
        gradcheck(|xs| softplus_layer(&xs), &[x.view(), w.view()], &opts).expect("softplus");
    let second =
        gradgradcheck(|xs| softplus_layer(&xs), &[x.view(), w.view()], &opts).expect("softplus");
    println!(
        "softplus: gradient matches finite differences ({} elements, largest error {:.1e}); \
         second derivatives too ({} comparisons)",
        first.comparisons, first.max_abs_error, second.comparisons
    );
    let tape = Tape::new();
    let big = tape.param(array![[1000.0, -1000.0]]);
    let y = custom::apply(Softplus, &[big]);
    println!("softplus([1000, −1000]) = {} (stable)", y.value());

    let check = gradcheck(|xs| ln_gamma_of_square(&xs), &[x.view()], &opts).expect("ln_gamma");
    println!(
        "ln Γ: gradient (digamma) matches finite differences ({} elements, largest error {:.1e})",
        check.comparisons, check.max_abs_error
    );
    let tape = Tape::new();
    let xt = tape.param(&x);
    let f = ln_gamma_of_square(&[xt]);
    let dfdx = tape.grad(f, &[xt]).expect("the first derivative works")[0];
    println!("d/dx Σ ln Γ(x² + 1) = {}", dfdx.value());
    let err = tape.backward(dfdx.sum()).unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::NotDifferentiable);
    println!("its second derivative: {err}");
}
