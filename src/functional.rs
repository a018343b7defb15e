//! Derivatives of functions, in the spirit of JAX's `vjp`, `jvp`, `hessian` and PyTorch's
//! `torch.autograd.functional`: each takes a function of tensors and the arrays to
//! evaluate it at, and returns plain arrays. All are exact to rounding: they run the
//! rules (first order by backward, second order by backward through [`Tape::grad`]), never
//! finite differences.
//!
//! A function takes the inputs as tensors of a fresh tape ([`Inputs`]: index it like a
//! slice) and returns a tensor of it. It may be a `fn`, or a closure that borrows what it
//! captures (a layer, data, targets: `xs.constant(&y)` puts a captured `&y` on the tape
//! with no clone); a closure stored in a `let` goes through [`func`] first, a `fn`
//! written for a `&[Tensor]` is passed as `|xs| f(&xs)`:
//!
//! ```
//! use ndarray::array;
//! use tapegrad::{functional, Inputs, Tensor};
//!
//! // f(x) = Σ x³: gradient 3x², Hessian diag(6x)
//! fn cube<'t>(x: Inputs<'_, 't, '_, f64>) -> Tensor<'t, f64> {
//!     x[0].powi(3).sum()
//! }
//! let x = array![[1.0, 2.0]];
//! let (value, hv) = functional::hvp(cube, &[x.view()], &[array![[1.0, 1.0]].view()]).unwrap();
//! assert_eq!(value, 9.0);
//! assert_eq!(hv[0], array![[6.0, 12.0]]);
//! let h = functional::hessian(cube, &[x.view()]).unwrap();
//! assert_eq!(h, array![[6.0, 0.0], [0.0, 12.0]]);
//! ```
//!
//! | function | computes | cost |
//! |----------|----------|------|
//! | [`vjp`] | `f(x)` and `vᵀJ` for a cotangent `v` | one forward, one backward |
//! | [`jvp`] | `f(x)` and `J·u` for tangents `u` (forward mode by the double-VJP trick) | one forward, two reverse passes |
//! | [`hvp`] | `f(x)` and `H·v` for a scalar `f` (forward over reverse: backward through the recorded gradient) | about 3–4 gradients |
//! | [`hvp_with_grad`] | `f(x)`, `∇f(x)` and `H·v`: the gradient comes free with the HVP | as `hvp` |
//! | [`model_hvp`] | a model's loss, its gradient and `H·v`, by parameter name | as `hvp` |
//! | [`model_jvp`] | `f(model)` and `J·u` with respect to the model's parameters, by name | as `jvp` |
//! | [`jacobian`] | the full Jacobian, one backward per output element | for small outputs |
//! | [`hessian`] | the full Hessian, one backward per input element | for small inputs |
//!
//! Matrices are flattened in row-major order, inputs one after the other: the Jacobian of
//! an m × n output with respect to inputs of `k₁`, `k₂`, ... elements is
//! `mn × (k₁ + k₂ + ...)`.
//!
//! # Functions of a model
//!
//! [`model_hvp`], [`model_jvp`] and [`check::gradcheck_model`](crate::check::gradcheck_model)
//! differentiate with respect to every parameter of a model
//! ([`Parameters`](crate::nn::Parameters)), by name. Their function gets the model and a
//! [`Scope`], and borrows whatever it captures (inputs, targets) onto the tape, with no
//! clone:
//!
//! ```
//! use ndarray::array;
//! use tapegrad::functional::{model_hvp, Named};
//! use tapegrad::nn::{Linear, Module, Parameters};
//!
//! let model = Linear { weight: array![[1.0], [2.0]], bias: Some(array![[0.0]]) };
//! let (x, y) = (array![[1.0, 2.0], [0.5, -1.0]], array![[1.0], [0.0]]);
//! let v: Named<f64> = model.parameters().into_iter().map(|(n, p)| (n, p.map(|_| 1.0))).collect();
//! let r = model_hvp(&model, |m, s| {
//!     Ok(m.forward(s.constant(&x))?.try_sub(s.constant(&y))?.square().mean())
//! }, &v).unwrap();
//! assert_eq!(r.gradient.len(), 2); // the gradient comes with H·v
//! ```
//!
//! The Jacobian-vector product uses the double-VJP trick: with a cotangent `w` that is
//! itself a variable, the recorded VJP `g(w) = Jᵀw` is linear in `w`, and its gradient
//! with respect to `w` along `u` is `J·u`. Every op has a tensor form of its rule, so this
//! works through any composition, at the price of a second reverse pass instead of a
//! dedicated forward mode.

use std::panic::Location;

use ndarray::{Array2, ArrayView2};

mod inputs;
pub(crate) mod model;

pub use inputs::{Inputs, func};
pub use model::{ModelHvp, Named, Scope, model_fn, model_hvp, model_jvp};

use crate::error::{Error, ErrorKind, Result, shape_error};
use crate::{BackwardOptions, Float, Tape, Tensor};

/// `inputs` put on `tape` as parameters.
fn params<'t, F: Float>(tape: &'t Tape<'t, F>, inputs: &[ArrayView2<'t, F>]) -> Vec<Tensor<'t, F>> {
    inputs.iter().map(|x| tape.param(*x)).collect()
}

/// `Shape` unless each array of `given` has the shape of the matching input.
fn check_shapes<F>(
    op: &'static str,
    inputs: &[ArrayView2<'_, F>],
    given: &[ArrayView2<'_, F>],
    location: &'static Location<'static>,
) -> Result<()> {
    let rule = "one array per input, each of the input's shape";
    if inputs.len() != given.len() {
        let counts = ((inputs.len(), 0), (given.len(), 0));
        return Err(shape_error(op, counts.0, counts.1, rule, location));
    }
    for (x, g) in inputs.iter().zip(given) {
        if x.dim() != g.dim() {
            return Err(shape_error(op, x.dim(), g.dim(), rule, location));
        }
    }
    Ok(())
}

/// The gradient of each input in `grads` (zeros where the output does not depend on it).
fn of_inputs<F: Float>(grads: &crate::Gradients<F>, xs: &[Tensor<'_, F>]) -> Vec<Array2<F>> {
    xs.iter()
        .map(|x| {
            grads
                .get(*x)
                .cloned()
                .unwrap_or_else(|| Array2::zeros(x.shape()))
        })
        .collect()
}

/// `f(x)` and the vector-Jacobian product `vᵀJ` for each input: the gradient of
/// `⟨v, f(x)⟩`, by one backward pass.
///
/// ```
/// use ndarray::array;
/// use tapegrad::{functional, Inputs, Tensor};
///
/// fn f<'t>(x: Inputs<'_, 't, '_, f64>) -> Tensor<'t, f64> {
///     x[0].matmul(x[1])
/// }
/// let (a, b) = (array![[1.0, 2.0]], array![[3.0], [4.0]]);
/// let (y, vjp) = functional::vjp(f, &[a.view(), b.view()], array![[10.0]].view()).unwrap();
/// assert_eq!(y, array![[11.0]]);
/// assert_eq!(vjp[0], array![[30.0, 40.0]]); // v·bᵀ
/// assert_eq!(vjp[1], array![[10.0], [20.0]]); // aᵀ·v
/// ```
///
/// # Errors
///
/// `SeedShape` if `v` does not have `f`'s output shape.
#[track_caller]
pub fn vjp<'a, F: Float, Fun>(
    f: Fun,
    inputs: &[ArrayView2<'_, F>],
    v: ArrayView2<'_, F>,
) -> Result<(Array2<F>, Vec<Array2<F>>)>
where
    Fun: for<'s, 't> Fn(Inputs<'s, 't, 'a, F>) -> Tensor<'t, F>,
{
    let location = Location::caller();
    let tape = Tape::new();
    let xs = params(&tape, inputs);
    let y = f(Inputs::new(&tape, &xs));
    let value = y.try_value()?;
    if y.shape() != v.dim() {
        let kind = ErrorKind::SeedShape {
            root: y.shape(),
            seed: v.dim(),
        };
        return Err(Error::new("vjp", kind, location));
    }
    if !y.requires_grad() {
        return Ok((value, xs.iter().map(|x| Array2::zeros(x.shape())).collect()));
    }
    let grads = tape.backward_with(y, BackwardOptions::new().seed(v.to_owned()))?;
    Ok((value, of_inputs(&grads, &xs)))
}

/// `f(x)` and the Jacobian-vector product `J·u = Σₖ (∂f/∂xₖ)·uₖ` (forward mode), by the
/// double-VJP trick: the VJP `Jᵀw` recorded with a variable cotangent `w`, then its
/// gradient along `u` with respect to `w`.
///
/// ```
/// use ndarray::array;
/// use tapegrad::{functional, Inputs, Tensor};
///
/// fn f<'t>(x: Inputs<'_, 't, '_, f64>) -> Tensor<'t, f64> {
///     x[0].square() // elementwise: J = diag(2x)
/// }
/// let x = array![[1.0, -3.0]];
/// let (y, ju) = functional::jvp(f, &[x.view()], &[array![[1.0, 0.5]].view()]).unwrap();
/// assert_eq!(y, array![[1.0, 9.0]]);
/// assert_eq!(ju, array![[2.0, -3.0]]);
/// ```
///
/// # Errors
///
/// `Shape` if the tangents do not match the inputs in number and shape.
#[track_caller]
pub fn jvp<'a, F: Float, Fun>(
    f: Fun,
    inputs: &[ArrayView2<'_, F>],
    tangents: &[ArrayView2<'_, F>],
) -> Result<(Array2<F>, Array2<F>)>
where
    Fun: for<'s, 't> Fn(Inputs<'s, 't, 'a, F>) -> Tensor<'t, F>,
{
    let location = Location::caller();
    check_shapes("jvp", inputs, tangents, location)?;
    let tape = Tape::new();
    let xs = params(&tape, inputs);
    let y = f(Inputs::new(&tape, &xs));
    let value = y.try_value()?;
    if !y.requires_grad() {
        return Ok((value, Array2::zeros(y.shape())));
    }
    // any value of the cotangent works: the recorded VJP is linear in it
    let w = tape.param(Array2::zeros(y.shape()));
    let vjps = tape.grad_seeded(y, w, &xs)?;
    let mut s: Option<Tensor<'_, F>> = None;
    for (g, u) in vjps.iter().zip(tangents) {
        let term = g.try_mul(tape.constant(*u))?.sum();
        s = Some(match s {
            Some(s) => s.try_add(term)?,
            None => term,
        });
    }
    let ju = match s {
        Some(s) if s.requires_grad() => tape.grad(s, &[w])?[0].try_value()?,
        _ => Array2::zeros(y.shape()),
    };
    Ok((value, ju))
}

/// The value of the scalar `f` and the Hessian-vector product `H·v` for each input
/// (`v` holds one array per input): forward over reverse, by first-order backward through
/// the gradient recorded with [`Tape::grad`]. Costs a small constant times a gradient.
///
/// See the [module docs](self) for an example.
///
/// # Errors
///
/// `NotScalar` if `f` is not 1 × 1; `Shape` if `v` does not match the inputs.
#[track_caller]
pub fn hvp<'a, F: Float, Fun>(
    f: Fun,
    inputs: &[ArrayView2<'_, F>],
    v: &[ArrayView2<'_, F>],
) -> Result<(F, Vec<Array2<F>>)>
where
    Fun: for<'s, 't> Fn(Inputs<'s, 't, 'a, F>) -> Tensor<'t, F>,
{
    let (value, _, hv) = hvp_with_grad(f, inputs, v)?;
    Ok((value, hv))
}

/// The value of the scalar `f`, its gradient, and the Hessian-vector product `H·v`, for
/// each input: [`hvp`] with the gradient it computes on the way.
///
/// ```
/// use ndarray::array;
/// use tapegrad::functional;
///
/// // f(x) = Σ x³: gradient 3x², H·v = 6x ∘ v
/// let x = array![[1.0, 2.0]];
/// let (value, grad, hv) =
///     functional::hvp_with_grad(|x| x[0].powi(3).sum(), &[x.view()], &[array![[1.0, 0.5]].view()])
///         .unwrap();
/// assert_eq!(value, 9.0);
/// assert_eq!(grad[0], array![[3.0, 12.0]]);
/// assert_eq!(hv[0], array![[6.0, 6.0]]);
/// ```
///
/// # Errors
///
/// `NotScalar` if `f` is not 1 × 1; `Shape` if `v` does not match the inputs.
#[track_caller]
#[allow(clippy::type_complexity)] // (value, gradient, H·v), as `hvp`'s pair
pub fn hvp_with_grad<'a, F: Float, Fun>(
    f: Fun,
    inputs: &[ArrayView2<'_, F>],
    v: &[ArrayView2<'_, F>],
) -> Result<(F, Vec<Array2<F>>, Vec<Array2<F>>)>
where
    Fun: for<'s, 't> Fn(Inputs<'s, 't, 'a, F>) -> Tensor<'t, F>,
{
    let location = Location::caller();
    check_shapes("hvp", inputs, v, location)?;
    let tape = Tape::new();
    let xs = params(&tape, inputs);
    let y = f(Inputs::new(&tape, &xs));
    let value = y.try_item()?;
    let zeros = || xs.iter().map(|x| Array2::zeros(x.shape())).collect();
    if !y.requires_grad() {
        return Ok((value, zeros(), zeros()));
    }
    let gs = tape.grad(y, &xs)?;
    let grad = gs
        .iter()
        .map(|g| g.try_value())
        .collect::<Result<Vec<_>>>()?;
    let mut s: Option<Tensor<'_, F>> = None;
    for (g, d) in gs.iter().zip(v) {
        let term = g.try_mul(tape.constant(*d))?.sum();
        s = Some(match s {
            Some(s) => s.try_add(term)?,
            None => term,
        });
    }
    match s {
        Some(s) if s.requires_grad() => {
            let grads = tape.backward(s)?;
            Ok((value, grad, of_inputs(&grads, &xs)))
        }
        // the gradient does not depend on the inputs: H = 0
        _ => Ok((value, grad, zeros())),
    }
}

/// The Jacobian of `f` at `inputs`: one row per element of the output, one column per
/// element of the inputs (each flattened row-major, inputs one after the other), by one
/// backward per output element. For small outputs.
///
/// ```
/// use ndarray::array;
/// use tapegrad::{functional, Inputs, Tensor};
///
/// fn f<'t>(x: Inputs<'_, 't, '_, f64>) -> Tensor<'t, f64> {
///     x[0].matmul(x[1]) // (1 × 2)·(2 × 1): df/dx = wᵀ, df/dw = xᵀ
/// }
/// let j = functional::jacobian(f, &[array![[1.0, 2.0]].view(), array![[3.0], [4.0]].view()]).unwrap();
/// assert_eq!(j, array![[3.0, 4.0, 1.0, 2.0]]);
/// ```
///
/// # Errors
///
/// Only those of backward (none for a well-formed `f`).
pub fn jacobian<'a, F: Float, Fun>(f: Fun, inputs: &[ArrayView2<'_, F>]) -> Result<Array2<F>>
where
    Fun: for<'s, 't> Fn(Inputs<'s, 't, 'a, F>) -> Tensor<'t, F>,
{
    let tape = Tape::new();
    let xs = params(&tape, inputs);
    let y = f(Inputs::new(&tape, &xs));
    let n: usize = inputs.iter().map(|x| x.len()).sum();
    let (r, c) = y.shape();
    let mut jac = Array2::zeros((r * c, n));
    if !y.requires_grad() {
        return Ok(jac);
    }
    for (row, index) in ndarray::indices((r, c)).into_iter().enumerate() {
        let mut seed = Array2::zeros((r, c));
        seed[index] = F::one();
        let opts = BackwardOptions::new().seed(seed).retain_graph(true);
        let grads = tape.backward_with(y, opts)?;
        let flat = of_inputs(&grads, &xs)
            .into_iter()
            .flat_map(|g| g.iter().copied().collect::<Vec<_>>());
        jac.row_mut(row)
            .iter_mut()
            .zip(flat)
            .for_each(|(j, g)| *j = g);
    }
    Ok(jac)
}

/// The Hessian of the scalar `f` at `inputs`: `N × N` for `N` elements in all (flattened
/// row-major, inputs one after the other), by one backward through the recorded gradient
/// per element. For small inputs.
///
/// See the [module docs](self) for an example.
///
/// # Errors
///
/// `NotScalar` if `f` is not 1 × 1.
#[track_caller]
pub fn hessian<'a, F: Float, Fun>(f: Fun, inputs: &[ArrayView2<'_, F>]) -> Result<Array2<F>>
where
    Fun: for<'s, 't> Fn(Inputs<'s, 't, 'a, F>) -> Tensor<'t, F>,
{
    let tape = Tape::new();
    let xs = params(&tape, inputs);
    let y = f(Inputs::new(&tape, &xs));
    y.try_item()?;
    let n: usize = inputs.iter().map(|x| x.len()).sum();
    let mut h = Array2::zeros((n, n));
    if !y.requires_grad() {
        return Ok(h);
    }
    let gs = tape.grad(y, &xs)?;
    let mut row = 0;
    for g in &gs {
        for index in ndarray::indices(g.shape()) {
            if g.requires_grad() {
                let mut seed = Array2::zeros(g.shape());
                seed[index] = F::one();
                let opts = BackwardOptions::new().seed(seed).retain_graph(true);
                let grads = tape.backward_with(*g, opts)?;
                let flat = of_inputs(&grads, &xs)
                    .into_iter()
                    .flat_map(|d| d.iter().copied().collect::<Vec<_>>());
                h.row_mut(row)
                    .iter_mut()
                    .zip(flat)
                    .for_each(|(h, d)| *h = d);
            }
            row += 1;
        }
    }
    Ok(h)
}
