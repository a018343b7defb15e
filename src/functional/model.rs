//! Derivatives with respect to a model's parameters: [`model_hvp`] and [`model_jvp`].

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::panic::Location;

use ndarray::Array2;

use crate::error::{Error, ErrorKind, Result};
use crate::nn::Parameters;
use crate::{Float, LeafData, Tape, Tensor};

/// Arrays by parameter name (the names of [`Parameters::parameters`]): the directions
/// given to [`model_hvp`] and [`model_jvp`], and the gradients and products they return.
pub type Named<F> = BTreeMap<String, Array2<F>>;

/// What a function of a model receives beside the model: the tape its tensors live on.
///
/// `'a` is the lifetime of the data the function borrows (what its closure captures:
/// inputs, targets, masks). The type promises that this data outlives the tape (`'a: 't`),
/// so a captured `&x` goes on the tape as it is, with no clone:
/// `scope.constant(&x)`.
#[derive(Clone, Copy)]
pub struct Scope<'t, 'a, F: Float> {
    tape: &'t Tape<'t, F>,
    _data: PhantomData<&'t &'a ()>,
}

impl<'t, 'a: 't, F: Float> Scope<'t, 'a, F> {
    /// A scope on `tape`, for data that lives at least as long (to call a function of a
    /// model on a tape of your own).
    pub fn new(tape: &'t Tape<'t, F>) -> Self {
        Scope {
            tape,
            _data: PhantomData,
        }
    }
}

impl<'t, 'a, F: Float> Scope<'t, 'a, F> {
    /// The tape.
    pub fn tape(&self) -> &'t Tape<'t, F> {
        self.tape
    }

    /// Data borrowed for `'a` (or owned) as a constant of the tape: [`Tape::constant`].
    #[track_caller]
    pub fn constant(&self, data: impl Into<LeafData<'t, F>>) -> Tensor<'t, F> {
        self.tape.constant(data)
    }
}

/// `f` as it is: a function of a model to store in a `let` and pass to several of
/// [`model_hvp`], [`model_jvp`] and [`gradcheck_model`](crate::check::gradcheck_model).
///
/// A closure stored in a `let` does not get the signature these functions need (generic
/// in the tape's lifetime `'t`, with its data outliving the tape); written as the
/// argument of `model_fn`, it does, so it may still borrow what it captures.
///
/// ```
/// use ndarray::array;
/// use tapegrad::check::{gradcheck_model, CheckOptions};
/// use tapegrad::functional::{model_fn, model_hvp, Named};
/// use tapegrad::nn::{Linear, Module};
///
/// let model = Linear { weight: array![[1.0], [2.0]], bias: None };
/// let (x, y) = (array![[1.0, 2.0]], array![[4.0]]);
/// let loss = model_fn(|m: &Linear<f64>, s| {
///     Ok(m.forward(s.constant(&x))?.try_sub(s.constant(&y))?.square().sum())
/// });
/// gradcheck_model(&model, &loss, &CheckOptions::default()).unwrap();
/// let v: Named<f64> = [("weight".to_string(), array![[1.0], [0.0]])].into_iter().collect();
/// assert_eq!(model_hvp(&model, &loss, &v).unwrap().hvp["weight"], array![[2.0], [4.0]]);
/// ```
pub fn model_fn<'a, F, M, L>(f: L) -> L
where
    F: Float,
    M: ?Sized,
    L: for<'t> Fn(&'t M, Scope<'t, 'a, F>) -> Result<Tensor<'t, F>>,
{
    f
}

/// The parameters of a model on a tape, by name, and a function of the model recorded.
pub(crate) type Recorded<'t, F> = (Vec<(String, Tensor<'t, F>)>, Tensor<'t, F>);

/// Every parameter of `model` on `tape` (by name, in the model's order), then `f` of the
/// model recorded on it. The model's forward pass borrows the same arrays, so it finds the
/// same leaves.
pub(crate) fn record<'t, 'a: 't, F, M, L>(
    tape: &'t Tape<'t, F>,
    model: &'t M,
    f: &L,
) -> Result<Recorded<'t, F>>
where
    F: Float,
    M: Parameters<F> + ?Sized,
    L: for<'s> Fn(&'s M, Scope<'s, 'a, F>) -> Result<Tensor<'s, F>>,
{
    let mut ps = Vec::new();
    model.visit(&mut |name, p| ps.push((name.to_string(), tape.param(p))));
    let y = f(model, Scope::new(tape))?;
    Ok((ps, y))
}

/// `Direction` unless `given` holds one array of the right shape for each parameter of
/// `model`, and nothing else.
fn check_direction<F: Float, M: Parameters<F> + ?Sized>(
    op: &'static str,
    model: &M,
    given: &Named<F>,
    location: &'static Location<'static>,
) -> Result<()> {
    let mut error = None;
    let mut seen = 0;
    model.visit(&mut |name, p| {
        if error.is_some() {
            return;
        }
        match given.get(name) {
            Some(d) if d.dim() == p.dim() => seen += 1,
            d => {
                error = Some(ErrorKind::Direction {
                    name: name.to_string(),
                    expected: Some(p.dim()),
                    given: d.map(|d| d.dim()),
                })
            }
        }
    });
    if error.is_none() && seen != given.len() {
        let names: Vec<(String, &Array2<F>)> = model.parameters();
        if let Some((name, d)) = given
            .iter()
            .find(|(n, _)| !names.iter().any(|(m, _)| m == *n))
        {
            error = Some(ErrorKind::Direction {
                name: name.clone(),
                expected: None,
                given: Some(d.dim()),
            });
        }
    }
    match error {
        Some(kind) => Err(Error::new(op, kind, location)),
        None => Ok(()),
    }
}

/// `Σₖ ⟨gₖ, dₖ⟩` over the tensors `gs` that depend on a parameter, with `dₖ` the direction
/// of parameter `k`; `None` when none does.
fn directional<'t, F: Float>(
    tape: &'t Tape<'t, F>,
    gs: &[Tensor<'t, F>],
    ps: &[(String, Tensor<'t, F>)],
    d: &'t Named<F>,
) -> Result<Option<Tensor<'t, F>>> {
    let mut s: Option<Tensor<'t, F>> = None;
    for (g, (name, _)) in gs.iter().zip(ps) {
        if !g.requires_grad() {
            continue;
        }
        let term = g.try_mul(tape.constant(&d[name]))?.sum();
        s = Some(match s {
            Some(s) => s.try_add(term)?,
            None => term,
        });
    }
    Ok(s)
}

/// The value, gradient and Hessian-vector product of a scalar loss of a model, with
/// respect to all its parameters: what [`model_hvp`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelHvp<F: Float> {
    /// The loss.
    pub value: F,
    /// `∇L`, by parameter name.
    pub gradient: Named<F>,
    /// `H·v`, by parameter name.
    pub hvp: Named<F>,
}

/// The value, gradient and Hessian-vector product `H·v` of the scalar `loss` of `model`
/// with respect to every parameter of the model, `v` given by parameter name. Forward over
/// reverse, as [`hvp`](super::hvp): exact to rounding.
///
/// `loss` gets the model and a [`Scope`]; it may borrow anything it captures (data,
/// targets) onto the tape with [`Scope::constant`], without a clone. It must compute with
/// the model it is given (its parameters are the ones differentiated).
///
/// ```
/// use ndarray::array;
/// use tapegrad::functional::{model_hvp, Named};
/// use tapegrad::nn::{Linear, Module, Parameters};
///
/// let model = Linear { weight: array![[1.0], [2.0]], bias: Some(array![[0.5]]) };
/// let (x, y) = (array![[1.0, 2.0], [3.0, -1.0]], array![[1.0], [0.0]]);
/// // L = Σ (x·W + b − y)²: H = 2·[x 1]ᵀ[x 1]
/// let v: Named<f64> = model.parameters().into_iter()
///     .map(|(name, p)| (name, p.map(|_| 1.0)))
///     .collect();
/// let r = model_hvp(&model, |m, s| {
///     Ok(m.forward(s.constant(&x))?.try_sub(s.constant(&y))?.square().sum())
/// }, &v).unwrap();
/// // residuals x·W + b − y = [4.5, 1.5]; x·v_W + v_b = [4, 3]
/// assert_eq!(r.value, 4.5 * 4.5 + 1.5 * 1.5);
/// assert_eq!(r.gradient["bias"], array![[2.0 * (4.5 + 1.5)]]);
/// assert_eq!(r.hvp["weight"], array![[2.0 * (1.0 * 4.0 + 3.0 * 3.0)], [2.0 * (2.0 * 4.0 - 1.0 * 3.0)]]);
/// assert_eq!(r.hvp["bias"], array![[2.0 * (4.0 + 3.0)]]);
/// ```
///
/// # Errors
///
/// `Direction` if `v` lacks a parameter of the model, names one it does not have, or has
/// one of another shape; `NotScalar` if the loss is not 1 × 1; any error the loss returns.
///
/// # Panics
///
/// If `loss` panics (the panic is not caught).
#[track_caller]
pub fn model_hvp<'a, F, M, L>(model: &M, loss: L, v: &Named<F>) -> Result<ModelHvp<F>>
where
    F: Float,
    M: Parameters<F> + ?Sized,
    L: for<'t> Fn(&'t M, Scope<'t, 'a, F>) -> Result<Tensor<'t, F>>,
{
    let location = Location::caller();
    check_direction("model_hvp", model, v, location)?;
    let tape = Tape::new();
    let (ps, y) = record(&tape, model, &loss)?;
    let value = y.try_item()?;
    let zeros = || -> Named<F> {
        ps.iter()
            .map(|(n, p)| (n.clone(), Array2::zeros(p.shape())))
            .collect()
    };
    if !y.requires_grad() {
        return Ok(ModelHvp {
            value,
            gradient: zeros(),
            hvp: zeros(),
        });
    }
    let tensors: Vec<Tensor<'_, F>> = ps.iter().map(|(_, p)| *p).collect();
    let gs = tape.grad(y, &tensors)?;
    let mut gradient = Named::new();
    for (g, (name, _)) in gs.iter().zip(&ps) {
        gradient.insert(name.clone(), g.try_value()?);
    }
    let hvp = match directional(&tape, &gs, &ps, v)? {
        Some(s) if s.requires_grad() => {
            let grads = tape.backward(s)?;
            ps.iter()
                .map(|(n, p)| {
                    let h = grads.get(*p).cloned();
                    (n.clone(), h.unwrap_or_else(|| Array2::zeros(p.shape())))
                })
                .collect()
        }
        // the gradient does not depend on the parameters: H = 0
        _ => zeros(),
    };
    Ok(ModelHvp {
        value,
        gradient,
        hvp,
    })
}

/// `f(model)` and the Jacobian-vector product `J·u = Σₖ (∂f/∂θₖ)·uₖ` with respect to every
/// parameter `θₖ` of `model`, the tangent `u` given by parameter name. `f` may return any
/// shape (a model's output, a loss). By the double-VJP trick, as [`jvp`](super::jvp).
///
/// `f` gets the model and a [`Scope`], as in [`model_hvp`].
///
/// ```
/// use ndarray::array;
/// use tapegrad::functional::{model_jvp, Named};
/// use tapegrad::nn::{Linear, Module};
///
/// let model = Linear { weight: array![[1.0], [2.0]], bias: Some(array![[0.5]]) };
/// let x = array![[1.0, 2.0], [3.0, -1.0]];
/// // the output x·W + b is linear in (W, b): J·u = x·u_W + u_b
/// let u: Named<f64> = [
///     ("weight".to_string(), array![[1.0], [0.0]]),
///     ("bias".to_string(), array![[10.0]]),
/// ].into_iter().collect();
/// let (y, ju) = model_jvp(&model, |m, s| m.forward(s.constant(&x)), &u).unwrap();
/// assert_eq!(y, array![[5.5], [1.5]]);
/// assert_eq!(ju, array![[11.0], [13.0]]);
/// ```
///
/// # Errors
///
/// `Direction` if `u` lacks a parameter of the model, names one it does not have, or has
/// one of another shape; any error `f` returns.
///
/// # Panics
///
/// If `f` panics (the panic is not caught).
#[track_caller]
pub fn model_jvp<'a, F, M, L>(model: &M, f: L, u: &Named<F>) -> Result<(Array2<F>, Array2<F>)>
where
    F: Float,
    M: Parameters<F> + ?Sized,
    L: for<'t> Fn(&'t M, Scope<'t, 'a, F>) -> Result<Tensor<'t, F>>,
{
    let location = Location::caller();
    check_direction("model_jvp", model, u, location)?;
    let tape = Tape::new();
    let (ps, y) = record(&tape, model, &f)?;
    let value = y.try_value()?;
    if !y.requires_grad() {
        return Ok((value, Array2::zeros(y.shape())));
    }
    // any value of the cotangent works: the recorded VJP is linear in it
    let w = tape.param(Array2::zeros(y.shape()));
    let tensors: Vec<Tensor<'_, F>> = ps.iter().map(|(_, p)| *p).collect();
    let vjps = tape.grad_seeded(y, w, &tensors)?;
    let ju = match directional(&tape, &vjps, &ps, u)? {
        Some(s) if s.requires_grad() => tape.grad(s, &[w])?[0].try_value()?,
        _ => Array2::zeros(y.shape()),
    };
    Ok((value, ju))
}
