//! Optimizers over a model's [`Parameters`]: [`Sgd`] (momentum, Nesterov, weight decay),
//! [`Adam`] and AdamW ([`Adam::adamw`]); [`Lbfgs`] for full-batch problems (it evaluates
//! the objective itself); gradient-norm clipping ([`clip_grad_norm`], [`try_clip_grad_norm`]); a
//! learning-rate schedule hook (`schedule` on each optimizer).
//!
//! An optimizer walks the model's parameters in their fixed order, finds each one's
//! gradient by the array itself ([`Gradients::wrt`]) and updates it in place, with one
//! fused pass per parameter. Every parameter must have a gradient: one without (it was
//! not on the tape, or went on it as a copy) is an error naming it, and nothing is
//! updated. To leave parameters alone on purpose, freeze them by name (`freeze` on each
//! optimizer). The updates follow PyTorch's `torch.optim` to the letter; the tests check
//! them against updates computed by hand.
//!
//! ```
//! use ndarray::array;
//! use tapegrad::nn::{Linear, Module};
//! use tapegrad::optim::{Optimizer, Sgd};
//! use tapegrad::Tape;
//!
//! let mut model = Linear { weight: array![[1.0], [-1.0]], bias: Some(array![[0.0]]) };
//! let mut opt = Sgd::new(0.1).momentum(0.9);
//! for _ in 0..3 {
//!     let grads = {
//!         let tape = Tape::new();
//!         let y = model.forward(tape.constant(array![[1.0, 2.0]])).unwrap();
//!         tape.backward(y.square().sum()).unwrap()
//!     };
//!     opt.step(&mut model, &grads).unwrap();
//! }
//! assert_eq!(opt.steps(), 3);
//! ```

mod adam;
mod lbfgs;
mod sgd;

pub use adam::Adam;
pub use lbfgs::{Lbfgs, LbfgsError, LbfgsReport};
pub use sgd::Sgd;

use std::fmt;

use ndarray::Array2;

use crate::nn::Parameters;
use crate::{Float, Gradients, Missing};

/// Updates a model's parameters from their gradients.
pub trait Optimizer<F: Float> {
    /// One update of every parameter of `model` from its gradient in `grads`. Every
    /// parameter must have a gradient there, except those frozen on purpose (`freeze` on
    /// each optimizer): a parameter without one is an error, never skipped silently.
    ///
    /// # Errors
    ///
    /// [`OptimError::NoGradient`] for a parameter (not frozen) without a gradient, with
    /// the reason; [`OptimError::GradientShape`] for a gradient of the wrong shape;
    /// [`OptimError::ModelChanged`] if the model's parameters are not the ones (by name and
    /// shape, in order) this optimizer's state was made for; [`OptimError::UnknownParameter`]
    /// if a frozen name is not a parameter of the model. Nothing is updated then.
    fn step(
        &mut self,
        model: &mut dyn Parameters<F>,
        grads: &Gradients<F>,
    ) -> Result<(), OptimError>;

    /// The base learning rate.
    fn learning_rate(&self) -> F;

    /// Sets the base learning rate.
    fn set_learning_rate(&mut self, lr: F);

    /// Number of steps taken.
    fn steps(&self) -> usize;

    /// A copy of the state a resumed run needs: the base learning rate, the step counts
    /// and the per-parameter buffers (momentum, Adam's moments). Save it with
    /// [`crate::io::save_optimizer`].
    fn state(&self) -> OptimizerState<F>;

    /// Replaces this optimizer's state by `state` (from [`Optimizer::state`] or
    /// [`crate::io::load_optimizer`]). The hyperparameters (β, momentum, weight decay,
    /// schedule, frozen names) stay this optimizer's own; the next step checks the state
    /// against the model as every step does.
    ///
    /// # Errors
    ///
    /// [`OptimError::InvalidArgument`] if the state is another optimizer's (another kind,
    /// or another number of buffers per parameter, as SGD with and without momentum), or
    /// a buffer's shape is not its parameter's; [`OptimError::UnknownParameter`] if a
    /// frozen name is not among the state's parameters. The state is unchanged on error.
    fn load_state(&mut self, state: OptimizerState<F>) -> Result<(), OptimError>;
}

/// An optimizer's state, from [`Optimizer::state`]: its kind (`"sgd"`, `"adam"`), base
/// learning rate, step count, and per parameter its name, shape, update count and
/// buffers, in the model's order (empty before the first step).
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState<F> {
    /// The optimizer's kind: `"sgd"` or `"adam"`.
    pub kind: String,
    /// The base learning rate.
    pub lr: F,
    /// Steps taken.
    pub steps: usize,
    /// Per parameter, in the model's order.
    pub params: Vec<ParamRecord<F>>,
}

/// One parameter's part of an [`OptimizerState`].
#[derive(Clone, Debug, PartialEq)]
pub struct ParamRecord<F> {
    /// The parameter's name.
    pub name: String,
    /// The parameter's shape.
    pub shape: (usize, usize),
    /// Updates applied to it (Adam's bias correction counts per parameter).
    pub steps: u64,
    /// Its buffers, each of its shape: SGD's momentum buffer (none without momentum),
    /// Adam's first and second moments.
    pub buffers: Vec<Array2<F>>,
}

/// The learning rate for a step, from the step's index (0 for the first) and the base
/// learning rate.
pub type Schedule<F> = Box<dyn Fn(usize, F) -> F + Send + Sync>;

/// Why an optimizer step failed. Nothing was updated.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OptimError {
    /// The model's parameters differ (in name, shape or number) from the ones the
    /// optimizer's state was made for.
    ModelChanged {
        /// The first parameter that differs.
        name: String,
    },
    /// A parameter has no gradient in the gradients given, and is not frozen.
    NoGradient {
        /// The parameter's name.
        name: String,
        /// Why the gradients hold none for it.
        reason: Missing,
    },
    /// A parameter's gradient does not have the parameter's shape (it was replaced through
    /// [`Gradients::wrt_mut`]).
    GradientShape {
        /// The parameter's name.
        name: String,
        /// The parameter's shape.
        expected: (usize, usize),
        /// The gradient's shape.
        found: (usize, usize),
    },
    /// A name given to `freeze` is not a parameter of the model.
    UnknownParameter {
        /// The name.
        name: String,
    },
    /// An argument outside its domain (a negative or NaN max norm to
    /// [`try_clip_grad_norm`]).
    InvalidArgument {
        /// What is wrong, with the value.
        message: String,
    },
}

impl fmt::Display for OptimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptimError::ModelChanged { name } => write!(
                f,
                "parameter `{name}` is not the one the optimizer's state was made for \
                 (the model changed since the first step; make a new optimizer)"
            ),
            OptimError::NoGradient { name, reason } => write!(
                f,
                "parameter `{name}` has no gradient: {reason}; nothing was updated \
                 (freeze it with the optimizer's `freeze` if that is intended)"
            ),
            OptimError::GradientShape {
                name,
                expected: (r, c),
                found: (gr, gc),
            } => write!(
                f,
                "the gradient of `{name}` is {gr} × {gc}, the parameter is {r} × {c}; \
                 nothing was updated"
            ),
            OptimError::UnknownParameter { name } => {
                write!(f, "`{name}` was frozen but the model has no such parameter")
            }
            OptimError::InvalidArgument { message } => write!(f, "{message}"),
        }
    }
}

impl fmt::Debug for OptimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for OptimError {}

/// What every optimizer keeps: the learning rate and its schedule, the step count, the
/// frozen parameters, and per-parameter state (momentum buffers, moments) in the model's
/// parameter order.
struct Core<F> {
    lr: F,
    schedule: Option<Schedule<F>>,
    steps: usize,
    frozen: Vec<String>,
    params: Vec<ParamState<F>>,
}

struct ParamState<F> {
    name: String,
    shape: (usize, usize),
    frozen: bool,
    buffers: Vec<Array2<F>>,
    /// Updates applied to this parameter (Adam's bias correction counts per parameter).
    steps: u64,
}

impl<F: Float> Core<F> {
    fn new(lr: F) -> Self {
        Core {
            lr,
            schedule: None,
            steps: 0,
            frozen: Vec::new(),
            params: Vec::new(),
        }
    }

    /// Marks parameters as frozen: neither updated nor required to have a gradient.
    fn freeze<S: Into<String>>(&mut self, names: impl IntoIterator<Item = S>) {
        self.frozen.extend(names.into_iter().map(Into::into));
        for state in &mut self.params {
            state.frozen = self.frozen.contains(&state.name);
        }
    }

    /// One step: checks the model against the state (making the state, with `buffers` zero
    /// buffers per parameter, on the first step) and every gradient, then calls
    /// `update(lr, p, g, state)` for each parameter that is not frozen, `lr` being this
    /// step's scheduled rate. Both passes walk the model with `visit_mut`, so a model whose
    /// `visit` lists its parameters in another order is still updated correctly.
    fn step(
        &mut self,
        model: &mut dyn Parameters<F>,
        grads: &Gradients<F>,
        buffers: usize,
        mut update: impl FnMut(F, &mut Array2<F>, &Array2<F>, &mut ParamState<F>),
    ) -> Result<(), OptimError> {
        if self.params.is_empty() {
            let frozen = &self.frozen;
            let mut params = Vec::new();
            model.visit_mut(&mut |name, p| {
                params.push(ParamState {
                    name: name.to_string(),
                    shape: p.dim(),
                    frozen: frozen.iter().any(|f| f == name),
                    buffers: (0..buffers).map(|_| Array2::zeros(p.dim())).collect(),
                    steps: 0,
                });
            });
            if let Some(name) = frozen
                .iter()
                .find(|f| !params.iter().any(|p| &p.name == *f))
            {
                return Err(OptimError::UnknownParameter { name: name.clone() });
            }
            self.params = params;
        }
        let mut error = None;
        let mut count = 0;
        let states = &self.params;
        model.visit_mut(&mut |name, p| {
            if error.is_some() {
                return;
            }
            error = check(states.get(count), name, p, grads);
            count += 1;
        });
        if error.is_none() && count != self.params.len() {
            let name = self.params.get(count).map_or("", |s| s.name.as_str());
            error = Some(OptimError::ModelChanged {
                name: name.to_string(),
            });
        }
        if let Some(error) = error {
            return Err(error);
        }
        let lr = self
            .schedule
            .as_ref()
            .map_or(self.lr, |s| s(self.steps, self.lr));
        let mut states = self.params.iter_mut();
        model.visit_mut(&mut |_, p| {
            let state = states.next().expect("checked: one state per parameter");
            if !state.frozen {
                let g = grads
                    .wrt(&*p)
                    .expect("checked: every parameter has a gradient");
                state.steps += 1;
                update(lr, p, g, state);
            }
        });
        self.steps += 1;
        Ok(())
    }
}

impl<F: Float> Core<F> {
    fn state(&self, kind: &str) -> OptimizerState<F> {
        OptimizerState {
            kind: kind.to_string(),
            lr: self.lr,
            steps: self.steps,
            params: self
                .params
                .iter()
                .map(|p| ParamRecord {
                    name: p.name.clone(),
                    shape: p.shape,
                    steps: p.steps,
                    buffers: p.buffers.clone(),
                })
                .collect(),
        }
    }

    /// Takes `state` after checking it is one of `kind` with `buffers` buffers per
    /// parameter (of its shape) and holds every frozen name.
    fn load_state(
        &mut self,
        kind: &str,
        buffers: usize,
        state: OptimizerState<F>,
    ) -> Result<(), OptimError> {
        let invalid = |message: String| Err(OptimError::InvalidArgument { message });
        if state.kind != kind {
            return invalid(format!(
                "the state is of an optimizer `{}`, this one is `{kind}`",
                state.kind
            ));
        }
        for p in &state.params {
            if p.buffers.len() != buffers {
                return invalid(format!(
                    "parameter `{}` has {} buffers in the state, this optimizer keeps \
                     {buffers} (momentum on in one, off in the other?)",
                    p.name,
                    p.buffers.len()
                ));
            }
            if let Some(b) = p.buffers.iter().find(|b| b.dim() != p.shape) {
                return invalid(format!(
                    "a buffer of `{}` is {:?}, the parameter is {:?}",
                    p.name,
                    b.dim(),
                    p.shape
                ));
            }
        }
        if !state.params.is_empty()
            && let Some(name) = self
                .frozen
                .iter()
                .find(|f| !state.params.iter().any(|p| &p.name == *f))
        {
            return Err(OptimError::UnknownParameter { name: name.clone() });
        }
        let frozen = &self.frozen;
        self.lr = state.lr;
        self.steps = state.steps;
        self.params = state
            .params
            .into_iter()
            .map(|p| ParamState {
                frozen: frozen.contains(&p.name),
                name: p.name,
                shape: p.shape,
                buffers: p.buffers,
                steps: p.steps,
            })
            .collect();
        Ok(())
    }
}

/// Checks parameter `name` (value `p`) against its state and its gradient.
fn check<F: Float>(
    state: Option<&ParamState<F>>,
    name: &str,
    p: &Array2<F>,
    grads: &Gradients<F>,
) -> Option<OptimError> {
    let changed = || OptimError::ModelChanged {
        name: name.to_string(),
    };
    let state = match state {
        Some(s) if s.name == name && s.shape == p.dim() => s,
        _ => return Some(changed()),
    };
    if state.frozen {
        return None;
    }
    match grads.wrt(p) {
        Some(g) if g.dim() == p.dim() => None,
        Some(g) => Some(OptimError::GradientShape {
            name: name.to_string(),
            expected: p.dim(),
            found: g.dim(),
        }),
        None => Some(OptimError::NoGradient {
            name: name.to_string(),
            // `wrt` found no entry, so there is a reason
            reason: grads.reason(p).unwrap_or(Missing::NotOnTape),
        }),
    }
}

/// Scales the gradients of `model`'s parameters in `grads` so that their total L2 norm
/// is at most `max_norm`, and returns the norm before clipping (PyTorch's
/// `clip_grad_norm_`: the factor is `max_norm / (norm + 1e-6)`, applied only when below 1).
///
/// ```
/// use ndarray::array;
/// use tapegrad::nn::Linear;
/// use tapegrad::optim::clip_grad_norm;
/// use tapegrad::Tape;
///
/// let model = Linear { weight: array![[3.0f64, 4.0]], bias: None };
/// let mut grads = {
///     let tape = Tape::new();
///     let w = tape.param(&model.weight);
///     tape.backward(w.square().sum().mul_scalar(0.5)).unwrap() // gradient = w = (3, 4)
/// };
/// let norm = clip_grad_norm(&model, &mut grads, 1.0);
/// assert_eq!(norm, 5.0);
/// let g = grads.wrt(&model.weight).unwrap();
/// assert!((g[[0, 0]] - 0.6).abs() < 1e-6 && (g[[0, 1]] - 0.8).abs() < 1e-6);
/// ```
///
/// # Panics
///
/// If `max_norm` is negative or NaN (a negative factor would reverse the gradients); see
/// [`try_clip_grad_norm`].
#[track_caller]
pub fn clip_grad_norm<F: Float>(
    model: &dyn Parameters<F>,
    grads: &mut Gradients<F>,
    max_norm: F,
) -> F {
    match try_clip_grad_norm(model, grads, max_norm) {
        Ok(norm) => norm,
        Err(e) => panic!("clip_grad_norm: {e}"),
    }
}

/// [`clip_grad_norm`], or an error for a max norm outside `[0, +∞]`.
///
/// # Errors
///
/// [`OptimError::InvalidArgument`] if `max_norm` is negative or NaN; the gradients are
/// unchanged.
pub fn try_clip_grad_norm<F: Float>(
    model: &dyn Parameters<F>,
    grads: &mut Gradients<F>,
    max_norm: F,
) -> Result<F, OptimError> {
    if max_norm.is_nan() || max_norm < F::zero() {
        return Err(OptimError::InvalidArgument {
            message: format!("the max norm must be at least 0 (not NaN), not {max_norm:?}"),
        });
    }
    let mut sum = F::zero();
    model.visit(&mut |_, p| {
        if let Some(g) = grads.wrt(p) {
            sum += g.iter().fold(F::zero(), |s, &v| s + v * v);
        }
    });
    let norm = sum.sqrt();
    let coef = max_norm / (norm + F::cast(1e-6));
    if coef < F::one() {
        model.visit(&mut |_, p| {
            if let Some(g) = grads.wrt_mut(p) {
                g.mapv_inplace(|v| v * coef);
            }
        });
    }
    Ok(norm)
}

/// A step decay schedule: the base rate times `gamma` once every `every` steps.
///
/// ```
/// use tapegrad::optim::step_decay;
///
/// let s = step_decay(10, 0.5);
/// assert_eq!((s(0, 1.0), s(9, 1.0), s(10, 1.0), s(25, 1.0)), (1.0, 1.0, 0.5, 0.25));
/// ```
pub fn step_decay<F: Float>(every: usize, gamma: F) -> impl Fn(usize, F) -> F + Send + Sync {
    move |step, base| base * gamma.powi((step / every.max(1)) as i32)
}
