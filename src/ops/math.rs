//! Elementary functions: `exp`, `log`, `sqrt`, `square`, `powi`, `powf`, `recip`, `abs`,
//! `sin`, `cos`, `erf`, `clamp`.
//!
//! Each is an elementwise `(f, df)` pair (`unary.rs`); the rule saves the one value `df`
//! reads, and the VJP is `dX = G ∘ df(·)`. `abs` and `clamp` take PyTorch's derivative at
//! their joints (shown in brackets); their tensor forms multiply by that choice as a
//! constant mask, whose own derivative is 0.
//!
//! | op | f | df | reads |
//! |----|---|----|-------|
//! | exp | `eˣ` | `y` | Y |
//! | log | `ln x` | `1 / x` | X |
//! | sqrt | `√x` | `1 / 2y` | Y |
//! | square | `x²` | `2x` | X |
//! | powi(n) | `xⁿ` | `n xⁿ⁻¹` | X |
//! | powf(p) | `xᵖ` | `p xᵖ⁻¹` | X |
//! | recip | `1 / x` | `−y²` | Y |
//! | abs | `|x|` | `sign x` (0 at 0) | X |
//! | sin | `sin x` | `cos x` | X |
//! | cos | `cos x` | `−sin x` | X |
//! | erf | `2/√π ∫₀ˣ e^(−t²) dt` | `2/√π e^(−x²)` | X |
//! | clamp(lo, hi) | `min(max(x, lo), hi)` | `[lo ≤ x ≤ hi]` (1 at the bounds) | X |

use std::panic::Location;

use crate::error::Result;
use crate::kernels::vector::{self as vk, map, scalar};
use crate::rule::Rule;
use crate::{Float, Tensor};

use super::unary::{Unary, WithParam, boxed_rule, constant_of, param_rule, plain_rule};

/// # Elementwise math
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

    /// `1 / x`, elementwise (±∞ at ±0). The derivative is `−1/x² = −y²`: the rule saves
    /// `Y`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[2.0]]);
    /// let grads = tape.backward(x.recip()).unwrap();
    /// assert_eq!(grads.get(x).unwrap()[[0, 0]], -0.25);
    /// ```
    #[track_caller]
    pub fn recip(self) -> Tensor<'t, F> {
        self.unary(Recip, Location::caller())
    }

    /// `|x|`, elementwise. The derivative is the sign of `x`, 0 at 0 (PyTorch's choice).
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[-2.0, 0.0, 3.0]]);
    /// let grads = tape.backward(x.abs().sum()).unwrap();
    /// assert_eq!(grads.get(x).unwrap(), &array![[-1.0, 0.0, 1.0]]);
    /// ```
    #[track_caller]
    pub fn abs(self) -> Tensor<'t, F> {
        self.unary(Abs, Location::caller())
    }

    /// `sin x`, elementwise. The derivative is `cos x`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[0.0]]);
    /// let grads = tape.backward(x.sin()).unwrap();
    /// assert_eq!(grads.get(x).unwrap()[[0, 0]], 1.0);
    /// ```
    #[track_caller]
    pub fn sin(self) -> Tensor<'t, F> {
        self.unary(Sin, Location::caller())
    }

    /// `cos x`, elementwise. The derivative is `−sin x`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[0.0]]);
    /// let grads = tape.backward(x.cos()).unwrap();
    /// assert_eq!(grads.get(x).unwrap()[[0, 0]], 0.0);
    /// ```
    #[track_caller]
    pub fn cos(self) -> Tensor<'t, F> {
        self.unary(Cos, Location::caller())
    }

    /// The error function `erf(x) = 2/√π ∫₀ˣ e^(−t²) dt`, elementwise (libm's). The
    /// derivative is `2/√π e^(−x²)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[0.0]]);
    /// let grads = tape.backward(x.erf()).unwrap();
    /// assert!((grads.get(x).unwrap()[[0, 0]] - 2.0 / std::f64::consts::PI.sqrt()).abs() < 1e-15);
    /// ```
    #[track_caller]
    pub fn erf(self) -> Tensor<'t, F> {
        self.unary(Erf, Location::caller())
    }

    /// `x` limited to `[lo, hi]` elementwise: `min(max(x, lo), hi)` (NaN stays NaN). The
    /// derivative is 1 where `lo ≤ x ≤ hi` (the bounds included, as PyTorch) and 0
    /// elsewhere.
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[-2.0, 0.5, 3.0]]);
    /// let y = x.clamp(-1.0, 1.0);
    /// assert_eq!(y.value(), array![[-1.0, 0.5, 1.0]]);
    /// let grads = tape.backward(y.sum()).unwrap();
    /// assert_eq!(grads.get(x).unwrap(), &array![[0.0, 1.0, 0.0]]);
    /// ```
    #[track_caller]
    pub fn clamp(self, lo: F, hi: F) -> Tensor<'t, F> {
        self.unary(Clamp { lo, hi }, Location::caller())
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
    const KERNEL: bool = true;
    fn f(self, x: F) -> F {
        scalar(vk::Exp, x)
    }
    fn f_slice(self, x: &[F], y: &mut [F]) -> bool {
        map(vk::Exp, x, y);
        true
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
    const KERNEL: bool = true;
    fn f(self, x: F) -> F {
        scalar(vk::Ln, x)
    }
    fn f_slice(self, x: &[F], y: &mut [F]) -> bool {
        map(vk::Ln, x, y);
        true
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
        boxed_rule(self)
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

impl<F: Float> WithParam<F> for Powf<F> {
    fn from_param(p: F) -> Self {
        Powf(p)
    }
}

impl<F: Float> Unary<F> for Powf<F> {
    fn rule(self) -> Rule<F> {
        param_rule::<F, Self>(self.0)
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

#[derive(Clone, Copy, Default)]
struct Recip;

impl<F: Float> Unary<F> for Recip {
    fn rule(self) -> Rule<F> {
        plain_rule::<F, Self>()
    }
    fn vjp_tensor<'t>(self, g: Tensor<'t, F>, y: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        Ok(g.try_mul(y.square())?.neg())
    }
    const NAME: &'static str = "recip";
    const DF_USES_OUTPUT: bool = true;
    fn f(self, x: F) -> F {
        x.recip()
    }
    fn df(self, y: F) -> F {
        -(y * y)
    }
}

#[derive(Clone, Copy, Default)]
struct Abs;

/// The sign of `x`: −1, 0 or 1 (0 at ±0, NaN for NaN).
fn sign<F: Float>(x: F) -> F {
    if x > F::zero() {
        F::one()
    } else if x < F::zero() {
        -F::one()
    } else {
        x * F::zero()
    }
}

impl<F: Float> Unary<F> for Abs {
    fn rule(self) -> Rule<F> {
        plain_rule::<F, Self>()
    }
    fn vjp_tensor<'t>(self, g: Tensor<'t, F>, x: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        g.try_mul(constant_of(x, sign)?)
    }
    const NAME: &'static str = "abs";
    const DF_USES_OUTPUT: bool = false;
    fn f(self, x: F) -> F {
        x.abs()
    }
    fn df(self, x: F) -> F {
        sign(x)
    }
}

#[derive(Clone, Copy, Default)]
struct Sin;

impl<F: Float> Unary<F> for Sin {
    fn rule(self) -> Rule<F> {
        plain_rule::<F, Self>()
    }
    fn vjp_tensor<'t>(self, g: Tensor<'t, F>, x: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        g.try_mul(x.cos())
    }
    const NAME: &'static str = "sin";
    const DF_USES_OUTPUT: bool = false;
    fn f(self, x: F) -> F {
        x.sin()
    }
    fn df(self, x: F) -> F {
        x.cos()
    }
}

#[derive(Clone, Copy, Default)]
struct Cos;

impl<F: Float> Unary<F> for Cos {
    fn rule(self) -> Rule<F> {
        plain_rule::<F, Self>()
    }
    fn vjp_tensor<'t>(self, g: Tensor<'t, F>, x: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        Ok(g.try_mul(x.sin())?.neg())
    }
    const NAME: &'static str = "cos";
    const DF_USES_OUTPUT: bool = false;
    fn f(self, x: F) -> F {
        x.cos()
    }
    fn df(self, x: F) -> F {
        -x.sin()
    }
}

/// `2/√π`.
const FRAC_2_SQRT_PI: f64 = std::f64::consts::FRAC_2_SQRT_PI;

#[derive(Clone, Copy, Default)]
struct Erf;

impl<F: Float> Unary<F> for Erf {
    fn rule(self) -> Rule<F> {
        plain_rule::<F, Self>()
    }
    fn vjp_tensor<'t>(self, g: Tensor<'t, F>, x: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        let density = x.square().neg().exp().mul_scalar(F::cast(FRAC_2_SQRT_PI));
        g.try_mul(density)
    }
    const NAME: &'static str = "erf";
    const DF_USES_OUTPUT: bool = false;
    const KERNEL: bool = true;
    fn f(self, x: F) -> F {
        scalar(vk::Erf, x)
    }
    fn df(self, x: F) -> F {
        F::cast(FRAC_2_SQRT_PI) * scalar(vk::Exp, -(x * x))
    }
    fn f_slice(self, x: &[F], y: &mut [F]) -> bool {
        map(vk::Erf, x, y);
        true
    }
}

#[derive(Clone, Copy)]
struct Clamp<F> {
    lo: F,
    hi: F,
}

impl<F: Float> Unary<F> for Clamp<F> {
    fn rule(self) -> Rule<F> {
        boxed_rule(self)
    }
    fn vjp_tensor<'t>(self, g: Tensor<'t, F>, x: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        g.try_mul(constant_of(x, |x| self.df(x))?)
    }
    const NAME: &'static str = "clamp";
    const DF_USES_OUTPUT: bool = false;
    fn f(self, x: F) -> F {
        // comparisons that keep NaN (max and min would drop it)
        if x < self.lo {
            self.lo
        } else if x > self.hi {
            self.hi
        } else {
            x
        }
    }
    fn df(self, x: F) -> F {
        if x >= self.lo && x <= self.hi {
            F::one()
        } else {
            F::zero()
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
