//! The gradient check of a loss with respect to every parameter of a model.

use ndarray::Array2;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{CheckError, CheckOptions, dot, normal};
use crate::functional::Scope;
use crate::nn::Parameters;
use crate::{BackwardOptions, Result, Tape, Tensor};

/// What a passing [`gradcheck_model`] measured.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelCheckReport {
    /// Number of gradient elements compared.
    pub comparisons: usize,
    /// The largest `|analytic − numeric|` over all parameters.
    pub max_abs_error: f64,
    /// Each parameter's name and its largest `|analytic − numeric|`, in the model's order.
    pub per_parameter: Vec<(String, f64)>,
    /// The parameter with the largest error (the first of them on a tie).
    pub worst: String,
}

/// Checks every element of the gradient of `loss` with respect to every parameter of
/// `model` against central finite differences, in `f64`, and reports the error of each
/// parameter by name.
///
/// `loss` gets the model (a copy of `model` with one element moved, for the finite
/// differences) and a [`Scope`]; it may borrow anything it captures onto the tape with
/// [`Scope::constant`], without a clone. As [`gradcheck`](super::gradcheck) it may return
/// any shape: the check differentiates `⟨V, loss⟩` for a fixed random `V`. Two forwards
/// per parameter element: for small models.
///
/// ```
/// use ndarray::array;
/// use rand::SeedableRng;
/// use tapegrad::check::{gradcheck_model, CheckOptions};
/// use tapegrad::nn::{mlp, Activation, Init, Module};
///
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let model = mlp::<f64>(&[2, 3, 1], Activation::Tanh, Activation::Sigmoid, Init::Glorot, &mut rng);
/// let (x, y) = (array![[0.5, -1.0], [2.0, 0.1]], array![[1.0], [0.0]]);
/// let report = gradcheck_model(&model, |m, s| {
///     Ok(m.forward(s.constant(&x))?.try_sub(s.constant(&y))?.square().mean())
/// }, &CheckOptions::default()).unwrap();
/// assert_eq!(report.comparisons, 2 * 3 + 3 + 3 + 1);
/// assert!(report.per_parameter.iter().any(|(name, _)| *name == report.worst));
/// ```
///
/// # Errors
///
/// [`CheckError::ParameterMismatch`] for the first element outside the tolerance (a NaN
/// gradient or loss included); [`CheckError::NoParameters`] if the model has no parameter
/// element; [`CheckError::Tape`] if the loss, or backward, fails.
///
/// # Panics
///
/// If `loss` panics (the panic is not caught).
pub fn gradcheck_model<'a, M, L>(
    model: &M,
    loss: L,
    opts: &CheckOptions,
) -> std::result::Result<ModelCheckReport, CheckError>
where
    M: Parameters<f64> + Clone,
    L: for<'t> Fn(&'t M, Scope<'t, 'a, f64>) -> Result<Tensor<'t, f64>>,
{
    if model.parameter_count() == 0 {
        return Err(CheckError::NoParameters);
    }
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let (v, analytic) = {
        let tape = Tape::new();
        let (ps, y) = crate::functional::model::record(&tape, model, &loss)?;
        let v = normal(y.shape(), &mut rng);
        let grads = if y.requires_grad() {
            Some(tape.backward_with(y, BackwardOptions::new().seed(v.clone()))?)
        } else {
            None // the loss ignores the parameters: the gradient is zero
        };
        let analytic: Vec<(String, Array2<f64>)> = ps
            .iter()
            .map(|(name, p)| {
                let g = grads.as_ref().and_then(|g| g.get(*p)).cloned();
                (name.clone(), g.unwrap_or_else(|| Array2::zeros(p.shape())))
            })
            .collect();
        (v, analytic)
    };
    let forward = |m: &M| -> std::result::Result<f64, CheckError> {
        let tape = Tape::new();
        let y = loss(m, Scope::new(&tape))?;
        Ok(dot(&v, &y.try_value()?))
    };
    let mut m = model.clone();
    let mut report = ModelCheckReport {
        comparisons: 0,
        max_abs_error: 0.0,
        per_parameter: Vec::new(),
        worst: String::new(),
    };
    let mut worst = -1.0;
    for (k, (name, a)) in analytic.iter().enumerate() {
        let mut max = 0.0_f64;
        for index in ndarray::indices(a.dim()) {
            let x0 = nth(&mut m, k, |p| p[index]);
            nth(&mut m, k, |p| p[index] = x0 + opts.eps);
            let plus = forward(&m)?;
            nth(&mut m, k, |p| p[index] = x0 - opts.eps);
            let minus = forward(&m)?;
            nth(&mut m, k, |p| p[index] = x0);
            let numeric = (plus - minus) / (2.0 * opts.eps);
            let err = (a[index] - numeric).abs();
            if err.is_nan() || err > opts.atol + opts.rtol * numeric.abs() {
                return Err(CheckError::ParameterMismatch {
                    name: name.clone(),
                    index,
                    analytic: a[index],
                    numeric,
                });
            }
            report.comparisons += 1;
            max = max.max(err);
        }
        if max > worst {
            worst = max;
            report.worst = name.clone();
        }
        report.max_abs_error = report.max_abs_error.max(max);
        report.per_parameter.push((name.clone(), max));
    }
    Ok(report)
}

/// `f` of the `k`-th parameter of `model`, mutably.
fn nth<M: Parameters<f64>, R>(model: &mut M, k: usize, f: impl FnOnce(&mut Array2<f64>) -> R) -> R {
    let mut f = Some(f);
    let mut out = None;
    let mut i = 0;
    model.visit_mut(&mut |_, p| {
        if i == k {
            if let Some(f) = f.take() {
                out = Some(f(p));
            }
        }
        i += 1;
    });
    out.expect("the model's visitors list the same parameters each time")
}
