//! Elementary functions: `exp`, `log`, `sqrt`, `square`, `powi`, `powf`.
//!
//! Each is an elementwise `(f, df)` pair (`unary.rs`); the rule saves the one value `df`
//! reads, and the VJP is `dX = G ∘ df(·)`:
//!
//! | op | f | df | reads |
//! |----|---|----|-------|
//! | exp | `eˣ` | `y` | Y |
//! | log | `ln x` | `1 / x` | X |
//! | sqrt | `√x` | `1 / 2y` | Y |
//! | square | `x²` | `2x` | X |
//! | powi(n) | `xⁿ` | `n xⁿ⁻¹` | X |
//! | powf(p) | `xᵖ` | `p xᵖ⁻¹` | X |

use std::panic::Location;

use ndarray::Array2;

use crate::error::Result;
use crate::grad::Ctx;
use crate::higher::TensorCtx;
use crate::rule::{Backward, Rule};
use crate::{Float, Tensor};

use super::unary::{Unary, plain_rule, unary_vjp, unary_vjp_tensor};

/// The rule of `powi(n)`, which keeps its exponent.
struct PowiBackward(i32);

impl<F: Float> Backward<F> for PowiBackward {
    fn backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
        unary_vjp(Powi(self.0), g, ctx);
    }

    fn backward_tensor<'t>(&self, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
        unary_vjp_tensor(Powi(self.0), g, ctx)
    }
}

/// The array form of `powf(p)`, `p` being the rule's parameter.
fn powf_backward<F: Float>(p: F, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    unary_vjp(Powf(p), g, ctx);
}

/// The tensor form of `powf(p)`.
fn powf_tensor<'t, F: Float>(p: F, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
    unary_vjp_tensor(Powf(p), g, ctx)
}

impl<'t, F: Float> Tensor<'t, F> {
    /// `eˣ`, elementwise. The derivative is `eˣ` itself: the rule saves `Y`, `dX = G ∘ Y`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[0.0]]);
    /// let grads = tape.backward(x.exp()).unwrap();
    /// assert_eq!(grads.get(x).unwrap()[[0, 0]], 1.0);
    /// ```
    #[track_caller]
    pub fn exp(self) -> Tensor<'t, F> {
        self.unary(Exp, Location::caller())
    }

    /// Natural logarithm, elementwise (NaN for negative inputs, −∞ at 0). The derivative is
    /// `1 / x`: the rule saves `X`, `dX = G / X`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[4.0]]);
    /// let grads = tape.backward(x.log()).unwrap();
    /// assert_eq!(grads.get(x).unwrap()[[0, 0]], 0.25);
    /// ```
    #[track_caller]
    pub fn log(self) -> Tensor<'t, F> {
        self.unary(Log, Location::caller())
    }

    /// Square root, elementwise (NaN for negative inputs). The derivative is `1 / (2√x)`:
    /// the rule saves `Y`, `dX = G / 2Y`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[4.0]]);
    /// let grads = tape.backward(x.sqrt()).unwrap();
    /// assert_eq!(grads.get(x).unwrap()[[0, 0]], 0.25); // 1 / (2·2)
    /// ```
    #[track_caller]
    pub fn sqrt(self) -> Tensor<'t, F> {
        self.unary(Sqrt, Location::caller())
    }

    /// `x²`, elementwise. The derivative is `2x`: the rule saves `X`, `dX = 2 G ∘ X`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[3.0, -1.0]]);
    /// let grads = tape.backward(x.square().sum()).unwrap();
    /// assert_eq!(grads.get(x).unwrap(), &array![[6.0, -2.0]]);
    /// ```
    #[track_caller]
    pub fn square(self) -> Tensor<'t, F> {
        self.unary(Square, Location::caller())
    }

    /// `xⁿ` for an integer `n`, elementwise. The derivative is `n xⁿ⁻¹`: the rule saves
    /// `X`, `dX = n G ∘ Xⁿ⁻¹`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[2.0]]);
    /// let y = x.powi(3);
    /// assert_eq!(y.item(), 8.0);
    /// let grads = tape.backward(y).unwrap();
    /// assert_eq!(grads.get(x).unwrap()[[0, 0]], 12.0); // 3 · 2²
    /// ```
    #[track_caller]
    pub fn powi(self, n: i32) -> Tensor<'t, F> {
        self.unary(Powi(n), Location::caller())
    }

    /// `xᵖ` for a real exponent `p`, elementwise (NaN for negative `x` and a fractional
    /// `p`, as `f64::powf`). The derivative is `p xᵖ⁻¹` (0 for `p = 0`): the rule saves
    /// `X`, `dX = p G ∘ Xᵖ⁻¹`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[4.0]]);
    /// let y = x.powf(1.5);
    /// assert_eq!(y.item(), 8.0);
    /// let grads = tape.backward(y).unwrap();
    /// assert_eq!(grads.get(x).unwrap()[[0, 0]], 3.0); // 1.5 · 4^0.5
    /// ```
    #[track_caller]
    pub fn powf(self, p: F) -> Tensor<'t, F> {
        self.unary(Powf(p), Location::caller())
    }
}

#[derive(Clone, Copy, Default)]
struct Exp;

impl<F: Float> Unary<F> for Exp {
    fn rule(self) -> Rule<F> {
        plain_rule::<F, Self>()
    }
    fn vjp_tensor<'t>(self, g: Tensor<'t, F>, s: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        g.try_mul(s)
    }
    const NAME: &'static str = "exp";
    const DF_USES_OUTPUT: bool = true;
    fn f(self, x: F) -> F {
        x.exp()
    }
    fn df(self, y: F) -> F {
        y
    }
}

#[derive(Clone, Copy, Default)]
struct Log;

impl<F: Float> Unary<F> for Log {
    fn rule(self) -> Rule<F> {
        plain_rule::<F, Self>()
    }
    fn vjp_tensor<'t>(self, g: Tensor<'t, F>, s: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        // `X + 0` turns −0 into +0, as the array form does
        g.try_div(s.add_scalar(F::zero()))
    }
    const NAME: &'static str = "log";
    const DF_USES_OUTPUT: bool = false;
    fn f(self, x: F) -> F {
        x.ln()
    }
    fn df(self, x: F) -> F {
        // `x + 0` turns −0 into +0: the derivative at ±0 is +∞, as PyTorch gives
        (x + F::zero()).recip()
    }
}

#[derive(Clone, Copy, Default)]
struct Sqrt;

impl<F: Float> Unary<F> for Sqrt {
    fn rule(self) -> Rule<F> {
        plain_rule::<F, Self>()
    }
    fn vjp_tensor<'t>(self, g: Tensor<'t, F>, s: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        // `2Y` is computed as 2Y + 0, which turns −0 into +0, as the array form does
        g.try_div(s.mul_scalar(F::cast(2.0)))
    }
    const NAME: &'static str = "sqrt";
    const DF_USES_OUTPUT: bool = true;
    fn f(self, x: F) -> F {
        x.sqrt()
    }
    fn df(self, y: F) -> F {
        // `y + 0` turns −0 (√−0) into +0: the derivative at ±0 is +∞, as PyTorch gives
        F::cast(0.5) / (y + F::zero())
    }
}

#[derive(Clone, Copy, Default)]
struct Square;

impl<F: Float> Unary<F> for Square {
    fn rule(self) -> Rule<F> {
        plain_rule::<F, Self>()
    }
    fn vjp_tensor<'t>(self, g: Tensor<'t, F>, s: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        Ok(g.try_mul(s)?.mul_scalar(F::cast(2.0)))
    }
    const NAME: &'static str = "square";
    const DF_USES_OUTPUT: bool = false;
    fn f(self, x: F) -> F {
        x * x
    }
    fn df(self, x: F) -> F {
        x + x
    }
}

#[derive(Clone, Copy)]
struct Powi(i32);

impl<F: Float> Unary<F> for Powi {
    fn rule(self) -> Rule<F> {
        Rule::boxed(PowiBackward(self.0))
    }
    fn vjp_tensor<'t>(self, g: Tensor<'t, F>, x: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        let n = self.0;
        let power = match n.checked_sub(1) {
            _ if n == 0 => return Ok(g.mul_scalar(F::zero())),
            Some(k) => x.powi(k),
            // n = i32::MIN: n − 1 does not fit in i32
            None => x.powf(F::cast(f64::from(n) - 1.0)),
        };
        Ok(g.try_mul(power)?.mul_scalar(F::cast(f64::from(n))))
    }
    const NAME: &'static str = "powi";
    const DF_USES_OUTPUT: bool = false;
    fn f(self, x: F) -> F {
        x.powi(self.0)
    }
    fn df(self, x: F) -> F {
        let n = self.0;
        match n.checked_sub(1) {
            _ if n == 0 => F::zero(),
            Some(k) => F::cast(f64::from(n)) * x.powi(k),
            // n = i32::MIN: n − 1 does not fit in i32
            None => F::cast(f64::from(n)) * x.powf(F::cast(f64::from(n) - 1.0)),
        }
    }
}

#[derive(Clone, Copy)]
struct Powf<F>(F);

impl<F: Float> Unary<F> for Powf<F> {
    fn rule(self) -> Rule<F> {
        Rule::with_param(powf_backward, powf_tensor, self.0)
    }
    fn vjp_tensor<'t>(self, g: Tensor<'t, F>, x: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        let p = self.0;
        if p == F::zero() {
            return Ok(g.mul_scalar(F::zero()));
        }
        Ok(g.try_mul(x.powf(p - F::one()))?.mul_scalar(p))
    }
    const NAME: &'static str = "powf";
    const DF_USES_OUTPUT: bool = false;
    fn f(self, x: F) -> F {
        x.powf(self.0)
    }
    fn df(self, x: F) -> F {
        let p = self.0;
        if p == F::zero() {
            F::zero()
        } else {
            p * x.powf(p - F::one())
        }
    }
}

#[cfg(test)]
mod tests {
    use ndarray::array;

    use crate::Tape;

    #[test]
    fn chained_rules_multiply() {
        // y = exp(2·log x) = x²  ⇒  dy/dx = 2x
        let tape = Tape::<f64>::new();
        let x = tape.param(array![[1.5, 3.0]]);
        let grads = tape.backward(x.log().mul_scalar(2.0).exp().sum()).unwrap();
        let g = grads.get(x).unwrap();
        assert!((g[[0, 0]] - 3.0).abs() < 1e-12 && (g[[0, 1]] - 6.0).abs() < 1e-12);
    }

    #[test]
    fn powi_zero_has_zero_gradient() {
        let tape = Tape::<f64>::new();
        let x = tape.param(array![[0.0, 2.0]]);
        let grads = tape.backward(x.powi(0).sum()).unwrap();
        assert_eq!(grads.get(x).unwrap(), &array![[0.0, 0.0]]);
    }
}
