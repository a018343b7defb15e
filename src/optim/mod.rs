//! Optimizers over a model's [`Parameters`]: [`Sgd`] (momentum, Nesterov, weight decay),
//! [`Adam`] and AdamW ([`Adam::adamw`]); gradient-norm clipping ([`clip_grad_norm`]); a
//! learning-rate schedule hook (`schedule` on each optimizer).
//!
//! An optimizer walks the model's parameters in their fixed order, finds each one's
//! gradient by the array itself ([`Gradients::wrt`]) and updates it in place, with one
//! fused pass per parameter. A parameter without a gradient (it was not on the tape) is
//! left alone. The updates follow PyTorch's `torch.optim` to the letter; the tests check
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
mod sgd;

pub use adam::Adam;
pub use sgd::Sgd;

use std::fmt;

use ndarray::Array2;

use crate::nn::Parameters;
use crate::{Float, Gradients};

/// Updates a model's parameters from their gradients.
pub trait Optimizer<F: Float> {
    /// One update of every parameter of `model` that has a gradient in `grads`.
    ///
    /// # Errors
    ///
    /// [`OptimError::ModelChanged`] if the model's parameters are not the ones (by name and
    /// shape, in order) this optimizer's state was made for; nothing is updated then.
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
}

/// The learning rate for a step, from the step's index (0 for the first) and the base
/// learning rate.
pub type Schedule<F> = Box<dyn Fn(usize, F) -> F + Send + Sync>;

/// Why an optimizer step failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OptimError {
    /// The model's parameters differ (in name, shape or number) from the ones the
    /// optimizer's state was made for.
    ModelChanged {
        /// The first parameter that differs.
        name: String,
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
        }
    }
}

impl std::error::Error for OptimError {}

/// What every optimizer keeps: the learning rate and its schedule, the step count, and
/// per-parameter state (momentum buffers, moments) in the model's parameter order.
struct Core<F> {
    lr: F,
    schedule: Option<Schedule<F>>,
    steps: usize,
    params: Vec<ParamState<F>>,
}

struct ParamState<F> {
    name: String,
    shape: (usize, usize),
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
            params: Vec::new(),
        }
    }

    /// One step: checks the model against the state (making the state, with `buffers` zero
    /// buffers per parameter, on the first step), then calls `update(lr, p, g, state)` for
    /// each parameter with a gradient, `lr` being this step's scheduled rate.
    fn step(
        &mut self,
        model: &mut dyn Parameters<F>,
        grads: &Gradients<F>,
        buffers: usize,
        mut update: impl FnMut(F, &mut Array2<F>, &Array2<F>, &mut ParamState<F>),
    ) -> Result<(), OptimError> {
        let mut shapes = Vec::new();
        model.visit(&mut |name, p| shapes.push((name.to_string(), p.dim())));
        if self.params.is_empty() {
            self.params = shapes
                .iter()
                .map(|(name, shape)| ParamState {
                    name: name.clone(),
                    shape: *shape,
                    buffers: (0..buffers).map(|_| Array2::zeros(*shape)).collect(),
                    steps: 0,
                })
                .collect();
        }
        let changed = |name: &str| {
            Err(OptimError::ModelChanged {
                name: name.to_string(),
            })
        };
        if shapes.len() != self.params.len() {
            let name = shapes
                .get(self.params.len())
                .or(shapes.last())
                .map_or("", |s| s.0.as_str());
            return changed(name);
        }
        for ((name, shape), state) in shapes.iter().zip(&self.params) {
            if *name != state.name || *shape != state.shape {
                return changed(name);
            }
        }
        let lr = self
            .schedule
            .as_ref()
            .map_or(self.lr, |s| s(self.steps, self.lr));
        let mut states = self.params.iter_mut();
        model.visit_mut(&mut |_, p| {
            let state = states.next().expect("checked: one state per parameter");
            if let Some(g) = grads.wrt(&*p) {
                state.steps += 1;
                update(lr, p, g, state);
            }
        });
        self.steps += 1;
        Ok(())
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
pub fn clip_grad_norm<F: Float>(
    model: &dyn Parameters<F>,
    grads: &mut Gradients<F>,
    max_norm: F,
) -> F {
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
    norm
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
