//! Stochastic gradient descent, with momentum, Nesterov momentum and weight decay.

use ndarray::Zip;

use super::{Core, OptimError, Optimizer, OptimizerState};
use crate::nn::Parameters;
use crate::{Float, Gradients};

/// SGD as `torch.optim.SGD` (dampening 0). With gradient `g`, learning rate `lr`, weight
/// decay `λ` and momentum `μ`, for each parameter `p`:
///
/// ```text
/// d = g + λ·p
/// b = μ·b + d                 (b starts at 0, so b = d on the first step)
/// d = d + μ·b  (Nesterov)  or  d = b  (classic momentum)
/// p = p − lr·d
/// ```
pub struct Sgd<F> {
    core: Core<F>,
    momentum: F,
    nesterov: bool,
    weight_decay: F,
}

impl<F: Float> Sgd<F> {
    /// Plain gradient descent with learning rate `lr`.
    pub fn new(lr: F) -> Self {
        Sgd {
            core: Core::new(lr),
            momentum: F::zero(),
            nesterov: false,
            weight_decay: F::zero(),
        }
    }

    /// Momentum `μ` (0 to turn it off).
    pub fn momentum(mut self, momentum: F) -> Self {
        self.momentum = momentum;
        self
    }

    /// Nesterov momentum (needs a nonzero momentum to have an effect).
    pub fn nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }

    /// L2 weight decay `λ`, added to the gradient.
    pub fn weight_decay(mut self, weight_decay: F) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// Freezes the parameters of these names: they are not updated and need no gradient
    /// (fine-tuning part of a model). Without this, a parameter with no gradient is an
    /// error ([`Optimizer::step`]).
    pub fn freeze<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.core.freeze(names);
        self
    }

    /// A learning-rate schedule: before step `i` (from 0) the rate is `schedule(i, lr)`.
    pub fn schedule(mut self, schedule: impl Fn(usize, F) -> F + Send + Sync + 'static) -> Self {
        self.core.schedule = Some(Box::new(schedule));
        self
    }
}

impl<F: Float> Optimizer<F> for Sgd<F> {
    fn step(
        &mut self,
        model: &mut dyn Parameters<F>,
        grads: &Gradients<F>,
    ) -> Result<(), OptimError> {
        let (mu, wd, nesterov) = (self.momentum, self.weight_decay, self.nesterov);
        let buffers = usize::from(mu != F::zero());
        self.core.step(model, grads, buffers, |lr, p, g, state| {
            match state.buffers.first_mut() {
                None => Zip::from(p)
                    .and(g)
                    .for_each(|p, &g| *p -= lr * (g + wd * *p)),
                Some(b) => Zip::from(p).and(g).and(b).for_each(|p, &g, b| {
                    let d = g + wd * *p;
                    *b = mu * *b + d;
                    let d = if nesterov { d + mu * *b } else { *b };
                    *p -= lr * d;
                }),
            }
        })
    }

    fn learning_rate(&self) -> F {
        self.core.lr
    }

    fn set_learning_rate(&mut self, lr: F) {
        self.core.lr = lr;
    }

    fn steps(&self) -> usize {
        self.core.steps
    }

    fn state(&self) -> OptimizerState<F> {
        self.core.state("sgd")
    }

    fn load_state(&mut self, state: OptimizerState<F>) -> Result<(), OptimError> {
        self.core
            .load_state("sgd", usize::from(self.momentum != F::zero()), state)
    }
}
