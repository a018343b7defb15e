//! Working at the level of a model: a small MLP fitted to a smooth surface, then its
//! gradient checked parameter by parameter, the curvature of its loss along the gradient
//! (a Hessian-vector product with respect to every parameter, by name), the Hessian of its
//! output with respect to its input, and a checkpointed loss, each in the few lines JAX or
//! PyTorch need, with closures that borrow the model and the data.
//!
//! ```text
//! cargo run --release --example model_level
//! ```
//!
//! Every figure is checked against an independent one: the gradient against central
//! finite differences (`gradcheck_model`), `H·v` against finite differences of the
//! gradient along `v`, the input Hessian's symmetry and its product with `v` against
//! `functional::hvp`, and the checkpointed loss's gradient against the plain one.

use std::error::Error;

use ndarray::Array2;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tapegrad::check::{CheckOptions, gradcheck_model};
use tapegrad::functional::{self, Named, func, model_fn, model_hvp};
use tapegrad::nn::{Activation, Init, Module, Parameters, Sequential, mlp};
use tapegrad::optim::{Adam, Optimizer};
use tapegrad::{Tape, Tensor};

/// What the run found (the tests check it).
pub struct Summary {
    /// The training loss after the last step.
    pub loss: f64,
    /// `gradcheck_model`'s largest error, and the parameter it is in.
    pub gradcheck: (f64, String),
    /// `vᵀHv` with `v` the gradient, by `model_hvp`, and the largest relative difference
    /// of `H·v` from finite differences of the gradient.
    pub curvature: (f64, f64),
    /// The input Hessian's largest asymmetry, and its product with a direction against
    /// `functional::hvp`'s.
    pub input_hessian: (f64, f64),
    /// Whether the checkpointed loss's gradients are bitwise the plain ones.
    pub remat_bitwise: bool,
}

/// 32 points of `y = sin(x₀) + x₁² / 2` on [−1.5, 1.5]².
pub fn data() -> (Array2<f64>, Array2<f64>) {
    let x = Array2::from_shape_fn((32, 2), |(i, j)| {
        let t = (i as f64 * if j == 0 { 0.37 } else { 0.61 }).sin();
        1.5 * t
    });
    let y = Array2::from_shape_fn((32, 1), |(i, _)| {
        x[[i, 0]].sin() + 0.5 * x[[i, 1]] * x[[i, 1]]
    });
    (x, y)
}

/// `mse(tanh(x·W₀ + b₀)·W₂ + b₂, y)` of `[x, W₀, b₀, W₂, b₂]`, `y` borrowed.
fn two_layers<'t, 'd: 't>(
    xs: &[Tensor<'t, f64>],
    y: &'d Array2<f64>,
) -> tapegrad::Result<Tensor<'t, f64>> {
    let h = xs[0].try_linear(xs[1], xs[2])?.tanh();
    h.try_linear(xs[3], xs[4])?
        .try_mse_loss(h.tape().constant(y))
}

/// The model's gradient by backward, by name.
fn gradient(model: &Sequential<f64>, x: &Array2<f64>, y: &Array2<f64>) -> Named<f64> {
    let tape = Tape::new();
    let loss = model
        .forward(tape.constant(x))
        .expect("shapes fit")
        .mse_loss(tape.constant(y));
    let grads = tape.backward(loss).expect("a scalar loss");
    model
        .gradients(&grads)
        .into_iter()
        .map(|(name, g)| (name, g.expect("every parameter is used").clone()))
        .collect()
}

pub fn run(steps: usize) -> Result<Summary, Box<dyn Error>> {
    let (x, y) = data();
    let mut rng = StdRng::seed_from_u64(7);
    let mut model = mlp::<f64>(
        &[2, 8, 1],
        Activation::Tanh,
        Activation::Identity,
        Init::Glorot,
        &mut rng,
    );
    let mut adam = Adam::new(0.02);
    let mut last = f64::NAN;
    for _ in 0..steps {
        let tape = Tape::new();
        let loss = model
            .forward(tape.constant(&x))?
            .try_mse_loss(tape.constant(&y))?;
        last = loss.item();
        let grads = tape.backward(loss)?;
        adam.step(&mut model, &grads)?;
    }

    // the loss of a model, borrowing the data: one closure for the check and the HVP
    let loss =
        model_fn(|m: &Sequential<f64>, s| m.forward(s.constant(&x))?.try_mse_loss(s.constant(&y)));
    let report = gradcheck_model(&model, loss, &CheckOptions::default())?;

    // curvature along the gradient, against finite differences of the gradient
    let v = gradient(&model, &x, &y);
    let hv = model_hvp(&model, loss, &v)?;
    let vhv: f64 = v.iter().map(|(n, d)| (d * &hv.hvp[n]).sum()).sum();
    let eps = 1e-6;
    let moved = |sign: f64| {
        let mut m = model.clone();
        m.visit_mut(&mut |name, p| p.scaled_add(sign * eps, &v[name]));
        gradient(&m, &x, &y)
    };
    let (plus, minus) = (moved(1.0), moved(-1.0));
    let mut worst = 0.0f64;
    for (name, h) in &hv.hvp {
        let fd = (&plus[name] - &minus[name]) / (2.0 * eps);
        let scale = fd.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
        worst = worst.max((h - &fd).iter().fold(0.0f64, |m, d| m.max(d.abs())) / scale);
    }

    // the Hessian of the model's output with respect to one input, a closure that borrows
    // the model
    let point = x.slice(ndarray::s![0..1, ..]).to_owned();
    let output = func(|xs| model.forward(xs[0]).expect("2 inputs").sum());
    let h = functional::hessian(output, &[point.view()])?;
    let asymmetry = (&h - &h.t()).iter().fold(0.0f64, |m, d| m.max(d.abs()));
    let u = ndarray::array![[1.0, -2.0]];
    let (_, hu) = functional::hvp(output, &[point.view()], &[u.view()])?;
    let product = (&u.dot(&h) - &hu[0])
        .iter()
        .fold(0.0f64, |m, d| m.max(d.abs()));

    // a checkpointed loss: the layers' weights come in as the block's inputs, the data is
    // borrowed; the gradients are bitwise those of the plain recording
    let params: std::collections::BTreeMap<String, &Array2<f64>> =
        model.parameters().into_iter().collect();
    let names = ["0.weight", "0.bias", "2.weight", "2.bias"];
    let grads_of = |remat: bool| -> Result<Vec<Array2<f64>>, Box<dyn Error>> {
        let tape = Tape::new();
        let ws: Vec<Tensor<'_, f64>> = names.iter().map(|n| tape.param(params[*n])).collect();
        let inputs = [tape.constant(&x), ws[0], ws[1], ws[2], ws[3]];
        let loss = if remat {
            tape.remat(&inputs, |xs| two_layers(&xs, &y))?
        } else {
            two_layers(&inputs, &y)?
        };
        let grads = tape.backward(loss)?;
        Ok(names
            .iter()
            .map(|n| {
                grads
                    .wrt(params[*n])
                    .expect("a parameter's gradient")
                    .clone()
            })
            .collect())
    };
    let remat_bitwise = grads_of(true)? == grads_of(false)?;

    Ok(Summary {
        loss: last,
        gradcheck: (report.max_abs_error, report.worst),
        curvature: (vhv, worst),
        input_hessian: (asymmetry, product),
        remat_bitwise,
    })
}

fn main() -> Result<(), Box<dyn Error>> {
    let s = run(500)?;
    println!("training loss after 500 Adam steps: {:.2e}", s.loss);
    println!(
        "gradcheck_model: largest error {:.1e}, in `{}`",
        s.gradcheck.0, s.gradcheck.1
    );
    println!(
        "curvature along the gradient vᵀHv = {:.4e}; H·v against finite differences of the gradient: {:.1e} relative",
        s.curvature.0, s.curvature.1
    );
    println!(
        "input Hessian: asymmetry {:.1e}, u·H against functional::hvp {:.1e}",
        s.input_hessian.0, s.input_hessian.1
    );
    println!(
        "checkpointed loss: gradients bitwise the plain ones: {}",
        s.remat_bitwise
    );
    Ok(())
}
