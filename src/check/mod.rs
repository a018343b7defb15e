//! Gradient checking, for the built-in ops and for your own compositions.
//!
//! A gradient is right when an independent oracle agrees. Two are here, both in `f64`
//! (finite differences need the precision):
//!
//! - [`gradcheck`]: central finite differences, element by element. `f` may return any
//!   shape: the check differentiates `L = ⟨V, f(X)⟩` for a fixed random `V`, so it covers
//!   the full vector-Jacobian product. Two forwards per input element: for small shapes.
//! - [`gradgradcheck`]: second order. The gradient recorded on the tape (the rules'
//!   tensor forms) against first-order backward (their array forms); Hessian-vector
//!   products against central differences of the gradient; and the Hessian's symmetry.
//! - [`gradcheck_model`]: [`gradcheck`] of a loss with respect to every parameter of a
//!   model ([`Parameters`](crate::nn::Parameters)), by name, reporting the worst one.
//! - [`vjp_dot_test`]: JAX's projection test. For random directions `U` and cotangent `V`,
//!   `⟨V, (f(X + εU) − f(X − εU)) / 2ε⟩ ≈ Σₖ ⟨VJPₖ(V), Uₖ⟩`. Two forwards in all: for large
//!   shapes.
//!
//! `f` receives the inputs as tensors on a fresh tape (parameters for the analytic pass,
//! constants for the finite differences) and returns a tensor on that tape. The analytic
//! pass sees the inputs exactly as given, strides included, so transposed views and
//! step-2 slices exercise the ops' non-contiguous paths.
//!
//! ```
//! use ndarray::array;
//! use tapegrad::{Inputs, Tensor};
//! use tapegrad::check::{gradcheck, vjp_dot_test, CheckOptions};
//!
//! // Your composition, as a function of its inputs.
//! fn layer<'t>(xs: Inputs<'_, 't, '_, f64>) -> Tensor<'t, f64> {
//!     xs[0].matmul(xs[1]).tanh()
//! }
//!
//! let x = array![[0.5, -1.0, 2.0], [1.5, 0.3, -0.7]];
//! let w = array![[0.2, -0.4], [1.0, 0.1], [-0.3, 0.8]];
//! let opts = CheckOptions::default();
//! gradcheck(layer, &[x.view(), w.view()], &opts).unwrap();
//! vjp_dot_test(layer, &[x.view(), w.view()], &opts).unwrap();
//!
//! // or a closure, which may borrow what it captures (a layer, a bias): no clone
//! let b = array![[0.1, -0.1]];
//! gradcheck(|xs| xs[0].matmul(xs[1]).add(xs.constant(&b)).tanh(), &[x.view(), w.view()], &opts)
//!     .unwrap();
//! ```
//!
//! Every function these checks (and [`crate::functional`]) take gets its tensors as
//! [`Inputs`]: index it like a slice; a `fn` written for a `&[Tensor]` is
//! passed as `|xs| f(&xs)`; a closure stored in a `let` first goes through
//! [`functional::func`](crate::functional::func).

use std::fmt;

use ndarray::{Array2, ArrayView2, Zip};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

use crate::functional::Inputs;
use crate::{BackwardOptions, Error, Tape, Tensor};

mod model;
mod second;

pub use model::{ModelCheckReport, gradcheck_model};
pub use second::gradgradcheck;

/// Step and tolerances. An analytic value `a` passes against the oracle's `n` when
/// `|a − n| ≤ atol + rtol·|n|` (PyTorch's `gradcheck` defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct CheckOptions {
    /// Finite-difference step.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance.
    pub rtol: f64,
    /// Seed of the random cotangent and directions, so that failures reproduce.
    pub seed: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            eps: 1e-6,
            atol: 1e-5,
            rtol: 1e-3,
            seed: 0,
        }
    }
}

/// What a passing check measured.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckReport {
    /// Number of comparisons made (gradient elements, or 1 for the dot-product test).
    pub comparisons: usize,
    /// The largest `|analytic − numeric|` seen.
    pub max_abs_error: f64,
}

/// Why a check failed.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum CheckError {
    /// Backward, or reading the result, failed.
    Tape(Error),
    /// An analytic gradient element disagrees with its finite difference.
    Mismatch {
        /// Which input.
        input: usize,
        /// Which element (row, column).
        index: (usize, usize),
        /// The gradient from backward.
        analytic: f64,
        /// The central difference.
        numeric: f64,
    },
    /// The dot-product test failed: `⟨V, J·U⟩` (lhs, from finite differences) differs from
    /// `⟨VJP(V), U⟩` (rhs, from backward).
    DotProduct {
        /// `⟨V, (f(X + εU) − f(X − εU)) / 2ε⟩`
        lhs: f64,
        /// `Σₖ ⟨VJPₖ(V), Uₖ⟩`
        rhs: f64,
    },
    /// Input `input` shares its storage with another input (the same array, or its
    /// transpose): a parameter is one leaf of the tape however often it is given, so the
    /// inputs of a check must be distinct arrays.
    AliasedInputs {
        /// Which input.
        input: usize,
    },
    /// The gradient from the rules' tensor forms ([`Tape::grad`]) differs from the one
    /// from their array forms (first-order backward).
    FormsDiffer {
        /// Which input.
        input: usize,
        /// Which element (row, column).
        index: (usize, usize),
        /// By first-order backward.
        array_form: f64,
        /// By the recorded backward.
        tensor_form: f64,
    },
    /// An element of a Hessian-vector product disagrees with central differences of the
    /// gradient.
    HessianMismatch {
        /// Which input.
        input: usize,
        /// Which element (row, column).
        index: (usize, usize),
        /// `(H·U)` by backward through the recorded gradient.
        analytic: f64,
        /// `(∇L(X + εU) − ∇L(X − εU)) / 2ε`
        numeric: f64,
    },
    /// An element of the gradient with respect to a model's parameter disagrees with its
    /// finite difference ([`gradcheck_model`]).
    ParameterMismatch {
        /// The parameter's name.
        name: String,
        /// Which element (row, column).
        index: (usize, usize),
        /// The gradient from backward.
        analytic: f64,
        /// The central difference.
        numeric: f64,
    },
    /// The model has no parameter element: a check of it would compare nothing.
    NoParameters,
    /// `⟨W, H·U⟩ ≠ ⟨U, H·W⟩`: the Hessian is not symmetric.
    Asymmetric {
        /// `⟨W, H·U⟩`
        whu: f64,
        /// `⟨U, H·W⟩`
        uhw: f64,
    },
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Tape(e) => write!(f, "gradient check could not run: {e}"),
            CheckError::Mismatch {
                input,
                index,
                analytic,
                numeric,
            } => write!(
                f,
                "gradient of input {input} at {index:?}: backward gives {analytic:e}, \
                 finite differences give {numeric:e}"
            ),
            CheckError::ParameterMismatch {
                name,
                index,
                analytic,
                numeric,
            } => write!(
                f,
                "gradient of parameter \"{name}\" at {index:?}: backward gives {analytic:e}, \
                 finite differences give {numeric:e}"
            ),
            CheckError::NoParameters => f.write_str(
                "the model has no parameters to check (does its Parameters::visit list them?)",
            ),
            CheckError::DotProduct { lhs, rhs } => write!(
                f,
                "dot-product test: <V, J·U> = {lhs:e} by finite differences, \
                 <VJP(V), U> = {rhs:e} by backward"
            ),
            CheckError::AliasedInputs { input } => write!(
                f,
                "input {input} shares its storage with another input; pass distinct arrays \
                 (a parameter is one leaf of the tape however often it is given)"
            ),
            CheckError::FormsDiffer {
                input,
                index,
                array_form,
                tensor_form,
            } => write!(
                f,
                "gradient of input {input} at {index:?}: the array forms of the rules give \
                 {array_form:e}, their tensor forms {tensor_form:e}"
            ),
            CheckError::HessianMismatch {
                input,
                index,
                analytic,
                numeric,
            } => write!(
                f,
                "Hessian-vector product, input {input} at {index:?}: backward through the \
                 gradient gives {analytic:e}, finite differences of the gradient {numeric:e}"
            ),
            CheckError::Asymmetric { whu, uhw } => write!(
                f,
                "the Hessian is not symmetric: <W, H·U> = {whu:e}, <U, H·W> = {uhw:e}"
            ),
        }
    }
}

impl std::error::Error for CheckError {}

impl From<Error> for CheckError {
    fn from(e: Error) -> Self {
        CheckError::Tape(e)
    }
}

/// Checks every element of the gradient of `f` at `inputs` against central finite
/// differences. See the [module docs](self).
///
/// # Errors
///
/// [`CheckError::Mismatch`] for the first element outside the tolerance;
/// [`CheckError::Tape`] if recording or backward fails.
pub fn gradcheck<'a, Fun>(
    f: Fun,
    inputs: &[ArrayView2<'_, f64>],
    opts: &CheckOptions,
) -> Result<CheckReport, CheckError>
where
    Fun: for<'s, 't> Fn(Inputs<'s, 't, 'a, f64>) -> Tensor<'t, f64>,
{
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let (v, analytic) = vjp(&f, inputs, &mut rng)?;
    let mut xs: Vec<Array2<f64>> = inputs.iter().map(|x| x.to_owned()).collect();
    let mut report = CheckReport {
        comparisons: 0,
        max_abs_error: 0.0,
    };
    for k in 0..xs.len() {
        for index in ndarray::indices(xs[k].dim()) {
            let x0 = xs[k][index];
            xs[k][index] = x0 + opts.eps;
            let plus = dot(&v, &forward(&f, &xs)?);
            xs[k][index] = x0 - opts.eps;
            let minus = dot(&v, &forward(&f, &xs)?);
            xs[k][index] = x0;
            let numeric = (plus - minus) / (2.0 * opts.eps);
            let a = analytic[k][index];
            let err = (a - numeric).abs();
            if err.is_nan() || err > opts.atol + opts.rtol * numeric.abs() {
                return Err(CheckError::Mismatch {
                    input: k,
                    index,
                    analytic: a,
                    numeric,
                });
            }
            report.comparisons += 1;
            report.max_abs_error = report.max_abs_error.max(err);
        }
    }
    Ok(report)
}

/// The dot-product (random projection) test of the VJP of `f` at `inputs`. See the
/// [module docs](self).
///
/// # Errors
///
/// [`CheckError::DotProduct`] if the two sides differ by more than
/// `atol + rtol·max(|lhs|, |rhs|)`; [`CheckError::Tape`] if recording or backward fails.
pub fn vjp_dot_test<'a, Fun>(
    f: Fun,
    inputs: &[ArrayView2<'_, f64>],
    opts: &CheckOptions,
) -> Result<CheckReport, CheckError>
where
    Fun: for<'s, 't> Fn(Inputs<'s, 't, 'a, f64>) -> Tensor<'t, f64>,
{
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let (v, analytic) = vjp(&f, inputs, &mut rng)?;
    let us: Vec<Array2<f64>> = inputs.iter().map(|x| normal(x.dim(), &mut rng)).collect();
    let shifted = |sign: f64| -> Vec<Array2<f64>> {
        inputs
            .iter()
            .zip(&us)
            .map(|(x, u)| x + &(u * (sign * opts.eps)))
            .collect()
    };
    let plus = forward(&f, &shifted(1.0))?;
    let minus = forward(&f, &shifted(-1.0))?;
    let lhs = dot(&v, &((plus - minus) / (2.0 * opts.eps)));
    let rhs: f64 = analytic.iter().zip(&us).map(|(g, u)| dot(g, u)).sum();
    let err = (lhs - rhs).abs();
    if err.is_nan() || err > opts.atol + opts.rtol * lhs.abs().max(rhs.abs()) {
        return Err(CheckError::DotProduct { lhs, rhs });
    }
    Ok(CheckReport {
        comparisons: 1,
        max_abs_error: err,
    })
}

/// A standard normal matrix.
pub(super) fn normal(shape: (usize, usize), rng: &mut StdRng) -> Array2<f64> {
    Array2::from_shape_simple_fn(shape, || StandardNormal.sample(rng))
}

pub(super) fn dot(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    Zip::from(a).and(b).fold(0.0, |s, &a, &b| s + a * b)
}

/// A random cotangent `V` for `f`'s output and the VJP of every input, by backward on the
/// inputs as given (their own strides).
pub(super) fn vjp<'a, Fun>(
    f: &Fun,
    inputs: &[ArrayView2<'_, f64>],
    rng: &mut StdRng,
) -> Result<(Array2<f64>, Vec<Array2<f64>>), CheckError>
where
    Fun: for<'s, 't> Fn(Inputs<'s, 't, 'a, f64>) -> Tensor<'t, f64>,
{
    let v = normal(output_shape(f, inputs), rng);
    let gs = vjp_at(f, inputs, &v)?;
    Ok((v, gs))
}

/// Views of `arrays`.
pub(super) fn views(arrays: &[Array2<f64>]) -> Vec<ArrayView2<'_, f64>> {
    arrays.iter().map(|x| x.view()).collect()
}

/// The shape of `f`'s output at `inputs`.
pub(super) fn output_shape<'a, Fun>(f: &Fun, inputs: &[ArrayView2<'_, f64>]) -> (usize, usize)
where
    Fun: for<'s, 't> Fn(Inputs<'s, 't, 'a, f64>) -> Tensor<'t, f64>,
{
    let tape = Tape::new();
    let xs: Vec<Tensor<'_, f64>> = inputs.iter().map(|x| tape.constant(x.view())).collect();
    f(Inputs::new(&tape, &xs)).shape()
}

/// The VJP of every input of `f` at `inputs` with cotangent `v`, by first-order backward
/// (the array forms of the rules).
pub(super) fn vjp_at<'a, Fun>(
    f: &Fun,
    inputs: &[ArrayView2<'_, f64>],
    v: &Array2<f64>,
) -> Result<Vec<Array2<f64>>, CheckError>
where
    Fun: for<'s, 't> Fn(Inputs<'s, 't, 'a, f64>) -> Tensor<'t, f64>,
{
    let tape = Tape::new();
    let xs: Vec<Tensor<'_, f64>> = inputs.iter().map(|x| tape.param(x.view())).collect();
    let y = f(Inputs::new(&tape, &xs));
    if !y.requires_grad() {
        // `f` ignores its inputs: the gradient is zero.
        return Ok(inputs.iter().map(|x| Array2::zeros(x.dim())).collect());
    }
    let grads = tape.backward_with(y, BackwardOptions::new().seed(v.clone()))?;
    of_inputs(&grads, &xs)
}

/// The gradient of each input, or `AliasedInputs` for an input that is not a leaf of its
/// own (a view of another input's storage goes on the tape as that input).
pub(super) fn of_inputs(
    grads: &crate::Gradients<f64>,
    xs: &[Tensor<'_, f64>],
) -> Result<Vec<Array2<f64>>, CheckError> {
    xs.iter()
        .enumerate()
        .map(|(k, x)| match grads.get(*x) {
            Some(g) if x.op() == "leaf" => Ok(g.clone()),
            _ => Err(CheckError::AliasedInputs { input: k }),
        })
        .collect()
}

/// `f` at `inputs`, given as constants. (Not inside `no_grad`: a function that computes a
/// gradient itself, such as a gradient penalty with `Tape::grad`, needs its own rules.)
pub(super) fn forward<'a, Fun>(f: &Fun, inputs: &[Array2<f64>]) -> Result<Array2<f64>, CheckError>
where
    Fun: for<'s, 't> Fn(Inputs<'s, 't, 'a, f64>) -> Tensor<'t, f64>,
{
    let tape = Tape::new();
    let xs: Vec<Tensor<'_, f64>> = inputs.iter().map(|x| tape.constant(x)).collect();
    let y = f(Inputs::new(&tape, &xs));
    Ok(y.try_value()?)
}
