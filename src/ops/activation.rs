//! Activation functions: `sigmoid`, `tanh`, `relu`.
//!
//! Each is an elementwise `(f, df)` pair (`unary.rs`); the rule saves the one value `df`
//! reads, and the VJP is `dX = G ∘ df(·)`:
//!
//! | op | f | df | reads |
//! |----|---|----|-------|
//! | sigmoid | `1 / (1 + e⁻ˣ)` | `y (1 − y)` | Y |
//! | tanh | `tanh x` | `1 − y²` | Y |
//! | relu | `max(x, 0)` | `[y > 0]` | Y |

use std::panic::Location;

use crate::error::Result;
use crate::rule::Rule;
use crate::{Float, Tensor};

use super::unary::{Unary, plain_rule};

impl<'t, F: Float> Tensor<'t, F> {
    /// The logistic function `σ(x) = 1 / (1 + e⁻ˣ)`, elementwise.
    ///
    /// The derivative is `σ(x)(1 − σ(x))`, so the rule saves the output `Y` and computes
    /// `dX = G ∘ Y ∘ (1 − Y)` (seed 001's `O_delta` and `H_delta`).
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[0.0]]);
    /// let y = x.sigmoid();
    /// assert_eq!(y.item(), 0.5);
    /// let grads = tape.backward(y).unwrap();
    /// assert_eq!(grads.get(x).unwrap()[[0, 0]], 0.25); // 0.5 · (1 − 0.5)
    /// ```
    #[track_caller]
    pub fn sigmoid(self) -> Tensor<'t, F> {
        self.unary(Sigmoid, Location::caller())
    }

    /// Hyperbolic tangent, elementwise. The derivative is `1 − tanh²(x)`: the rule saves
    /// `Y` and computes `dX = G ∘ (1 − Y²)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[0.0]]);
    /// let grads = tape.backward(x.tanh()).unwrap();
    /// assert_eq!(grads.get(x).unwrap()[[0, 0]], 1.0);
    /// ```
    #[track_caller]
    pub fn tanh(self) -> Tensor<'t, F> {
        self.unary(Tanh, Location::caller())
    }

    /// Rectified linear unit `max(x, 0)`, elementwise (NaN stays NaN). The derivative is
    /// 1 where `x > 0` and 0 elsewhere (0 at `x = 0`, as PyTorch): `dX = G ∘ [Y > 0]`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[-1.0, 2.0]]);
    /// assert_eq!(x.relu().value(), array![[0.0, 2.0]]);
    /// let grads = tape.backward(x.relu().sum()).unwrap();
    /// assert_eq!(grads.get(x).unwrap(), &array![[0.0, 1.0]]);
    /// ```
    #[track_caller]
    pub fn relu(self) -> Tensor<'t, F> {
        self.unary(Relu, Location::caller())
    }
}

#[derive(Clone, Copy, Default)]
struct Sigmoid;

impl<F: Float> Unary<F> for Sigmoid {
    fn rule(self) -> Rule<F> {
        plain_rule::<F, Self>()
    }
    fn vjp_tensor<'t>(self, g: Tensor<'t, F>, s: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        // Y − Y² = Y (1 − Y)
        g.try_mul(s.try_sub(s.square())?)
    }
    const NAME: &'static str = "sigmoid";
    const DF_USES_OUTPUT: bool = true;
    fn f(self, x: F) -> F {
        // Stable as written: for very negative x, e⁻ˣ overflows to +∞ and 1/(1 + ∞) is
        // exactly 0, never NaN. No branch, so the pass stays as fast as the hand-written one.
        F::one() / (F::one() + (-x).exp())
    }
    fn df(self, y: F) -> F {
        y * (F::one() - y)
    }
}

#[derive(Clone, Copy, Default)]
struct Tanh;

impl<F: Float> Unary<F> for Tanh {
    fn rule(self) -> Rule<F> {
        plain_rule::<F, Self>()
    }
    fn vjp_tensor<'t>(self, g: Tensor<'t, F>, s: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        // G − G ∘ Y²
        g.try_sub(g.try_mul(s.square())?)
    }
    const NAME: &'static str = "tanh";
    const DF_USES_OUTPUT: bool = true;
    fn f(self, x: F) -> F {
        x.tanh()
    }
    fn df(self, y: F) -> F {
        F::one() - y * y
    }
}

#[derive(Clone, Copy, Default)]
struct Relu;

impl<F: Float> Unary<F> for Relu {
    fn rule(self) -> Rule<F> {
        plain_rule::<F, Self>()
    }
    fn vjp_tensor<'t>(self, g: Tensor<'t, F>, s: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        // the step [Y > 0] has derivative 0 wherever it has one: a constant mask
        let mask = s
            .try_value()?
            .mapv(|y| if y > F::zero() { F::one() } else { F::zero() });
        g.try_mul(s.tape().constant(mask))
    }
    const NAME: &'static str = "relu";
    const DF_USES_OUTPUT: bool = true;
    fn f(self, x: F) -> F {
        // not `x.max(0)`, which turns NaN into 0
        if x < F::zero() { F::zero() } else { x }
    }
    fn df(self, y: F) -> F {
        if y > F::zero() { F::one() } else { F::zero() }
    }
}

#[cfg(test)]
mod tests {
    use ndarray::array;

    use crate::Tape;

    #[test]
    fn sigmoid_is_stable_for_large_inputs() {
        let tape = Tape::<f32>::new();
        let y = tape
            .constant(array![[-1000.0f32, 1000.0, 0.0]])
            .sigmoid()
            .value();
        assert_eq!(y, array![[0.0, 1.0, 0.5]]);
    }
}
