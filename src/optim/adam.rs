//! Adam and AdamW.

use ndarray::Zip;

use super::{Core, OptimError, Optimizer, OptimizerState};
use crate::nn::Parameters;
use crate::{Float, Gradients};

/// Adam as `torch.optim.Adam`, or AdamW (`torch.optim.AdamW`) with decoupled weight
/// decay. With gradient `g`, step `t` (per parameter, from 1), for each parameter `p`:
///
/// ```text
/// g = g + λ·p                          (Adam with weight decay λ)
/// p = p − lr·λ·p                       (AdamW instead: decoupled)
/// m = β₁·m + (1 − β₁)·g
/// v = β₂·v + (1 − β₂)·g²
/// p = p − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)
/// ```
///
/// Where `m = 0` the update is 0, also with ε = 0 (where the quotient would be 0/0).
pub struct Adam<F> {
    core: Core<F>,
    beta1: F,
    beta2: F,
    eps: F,
    weight_decay: F,
    decoupled: bool,
}

impl<F: Float> Adam<F> {
    /// Adam with learning rate `lr` and PyTorch's defaults: β = (0.9, 0.999), ε = 1e-8,
    /// no weight decay.
    pub fn new(lr: F) -> Self {
        Adam {
            core: Core::new(lr),
            beta1: F::cast(0.9),
            beta2: F::cast(0.999),
            eps: F::cast(1e-8),
            weight_decay: F::zero(),
            decoupled: false,
        }
    }

    /// AdamW: Adam with decoupled weight decay `weight_decay` (PyTorch's default is 0.01).
    pub fn adamw(lr: F, weight_decay: F) -> Self {
        Adam {
            weight_decay,
            decoupled: true,
            ..Self::new(lr)
        }
    }

    /// The moment decay rates (β₁, β₂).
    pub fn betas(mut self, beta1: F, beta2: F) -> Self {
        self.beta1 = beta1;
        self.beta2 = beta2;
        self
    }

    /// The denominator's ε.
    pub fn eps(mut self, eps: F) -> Self {
        self.eps = eps;
        self
    }

    /// Weight decay `λ`: added to the gradient (Adam), or decoupled (AdamW).
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

impl<F: Float> Optimizer<F> for Adam<F> {
    fn step(
        &mut self,
        model: &mut dyn Parameters<F>,
        grads: &Gradients<F>,
    ) -> Result<(), OptimError> {
        let (b1, b2, eps, wd, decoupled) = (
            self.beta1,
            self.beta2,
            self.eps,
            self.weight_decay,
            self.decoupled,
        );
        let one = F::one();
        self.core.step(model, grads, 2, |lr, p, g, state| {
            let t = i32::try_from(state.steps).unwrap_or(i32::MAX);
            let step_size = lr / (one - b1.powi(t));
            let bias2 = (one - b2.powi(t)).sqrt();
            let (m, v) = state.buffers.split_at_mut(1);
            Zip::from(p)
                .and(g)
                .and(&mut m[0])
                .and(&mut v[0])
                .for_each(|p, &g, m, v| {
                    let g = if decoupled {
                        *p -= lr * wd * *p;
                        g
                    } else {
                        g + wd * *p
                    };
                    *m = b1 * *m + (one - b1) * g;
                    *v = b2 * *v + (one - b2) * g * g;
                    // m = 0 while every gradient so far was 0: the update is 0 (its
                    // limit), also when v = 0 and ε = 0 make the quotient 0/0
                    if *m != F::zero() {
                        *p -= step_size * *m / (v.sqrt() / bias2 + eps);
                    }
                });
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
        self.core.state("adam")
    }

    fn load_state(&mut self, state: OptimizerState<F>) -> Result<(), OptimError> {
        self.core.load_state("adam", 2, state)
    }
}
