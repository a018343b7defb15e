//! Activation functions: `sigmoid`, `tanh`, `relu`, `leaky_relu`, `elu`, `gelu`,
//! `gelu_tanh`, `softplus`, `silu`.
//!
//! Each is an elementwise `(f, df)` pair (`unary.rs`); the rule saves the one value `df`
//! reads, and the VJP is `dX = G ∘ df(·)`. Piecewise functions take the derivative of the
//! piece `x` is in, with PyTorch's choice at the joint (shown in brackets); their tensor
//! forms multiply by that choice as a constant mask, whose own derivative is 0.
//!
//! | op | f | df | reads |
//! |----|---|----|-------|
//! | sigmoid | `1 / (1 + e⁻ˣ)` | `y (1 − y)` | Y |
//! | tanh | `tanh x` | `1 − y²` | Y |
//! | relu | `max(x, 0)` | `[y > 0]` | Y |
//! | leaky_relu(α) | `x` for `x > 0`, else `αx` | `1` for `x > 0`, else `α` (α at 0) | X |
//! | elu(α) | `x` for `x > 0`, else `α(eˣ − 1)` | `1` for `y > 0`, else `y + α` | Y |
//! | gelu | `x Φ(x)`, `Φ(x) = (1 + erf(x/√2)) / 2` | `Φ(x) + x φ(x)`, `φ` the normal density | X |
//! | gelu_tanh | `x (1 + tanh u) / 2`, `u = √(2/π)(x + 0.044715 x³)` | `(1 + t)/2 + x (1 − t²) u′ / 2`, `t = tanh u` | X |
//! | softplus | `ln(1 + eˣ)` as `max(x, 0) + ln(1 + e^−|x|)` | `σ(x)` | X |
//! | silu | `x σ(x)` | `σ(x) (1 + x (1 − σ(x)))` | X |

use std::panic::Location;

use crate::error::Result;
use crate::kernels::vector::{self as vk, map, mul_map, scalar};
use crate::rule::Rule;
use crate::{Float, Tensor};

use super::unary::{Unary, WithParam, constant_of, param_rule, plain_rule};

/// # Activations
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

    /// Leaky rectified linear unit: `x` for `x > 0`, `αx` otherwise. The derivative is 1
    /// for `x > 0` and `α` otherwise (`α` at 0, as PyTorch).
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[-2.0, 3.0]]);
    /// let y = x.leaky_relu(0.1);
    /// assert_eq!(y.value(), array![[-0.2, 3.0]]);
    /// let grads = tape.backward(y.sum()).unwrap();
    /// assert_eq!(grads.get(x).unwrap(), &array![[0.1, 1.0]]);
    /// ```
    #[track_caller]
    pub fn leaky_relu(self, alpha: F) -> Tensor<'t, F> {
        self.unary(LeakyRelu(alpha), Location::caller())
    }

    /// Exponential linear unit: `x` for `x > 0`, `α(eˣ − 1)` otherwise. The derivative is
    /// 1 for `x > 0` and `α eˣ = y + α` otherwise: the rule saves `Y`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[0.0, 2.0]]);
    /// let y = x.elu(1.0);
    /// assert_eq!(y.value(), array![[0.0, 2.0]]);
    /// let grads = tape.backward(y.sum()).unwrap();
    /// assert_eq!(grads.get(x).unwrap(), &array![[1.0, 1.0]]); // α e⁰ = 1, and 1
    /// ```
    #[track_caller]
    pub fn elu(self, alpha: F) -> Tensor<'t, F> {
        self.unary(Elu(alpha), Location::caller())
    }

    /// Gaussian error linear unit, exact form: `x Φ(x)` with `Φ` the standard normal
    /// distribution function, `Φ(x) = (1 + erf(x/√2)) / 2`. The derivative is
    /// `Φ(x) + x φ(x)` with `φ(x) = e^(−x²/2) / √(2π)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[0.0]]);
    /// let grads = tape.backward(x.gelu()).unwrap();
    /// assert_eq!(grads.get(x).unwrap()[[0, 0]], 0.5); // Φ(0)
    /// ```
    #[track_caller]
    pub fn gelu(self) -> Tensor<'t, F> {
        self.unary(Gelu, Location::caller())
    }

    /// Gaussian error linear unit, tanh approximation (GPT-2's):
    /// `x (1 + tanh u) / 2` with `u = √(2/π) (x + 0.044715 x³)`. The derivative is
    /// `(1 + t) / 2 + x (1 − t²) u′(x) / 2` with `t = tanh u`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[1.0f64]]);
    /// let y = x.gelu_tanh();
    /// assert!((y.item() - 0.841192).abs() < 1e-6);
    /// ```
    #[track_caller]
    pub fn gelu_tanh(self) -> Tensor<'t, F> {
        self.unary(GeluTanh, Location::caller())
    }

    /// `ln(1 + eˣ)`, computed as `max(x, 0) + ln(1 + e^(−|x|))`: no overflow for large
    /// inputs (softplus(1000) = 1000). The derivative is the logistic function `σ(x)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[1000.0, 0.0]]);
    /// let y = x.softplus();
    /// assert_eq!(y.value(), array![[1000.0, 2f64.ln()]]);
    /// let grads = tape.backward(y.sum()).unwrap();
    /// assert_eq!(grads.get(x).unwrap(), &array![[1.0, 0.5]]);
    /// ```
    #[track_caller]
    pub fn softplus(self) -> Tensor<'t, F> {
        self.unary(Softplus, Location::caller())
    }

    /// Sigmoid linear unit (swish): `x σ(x)`. The derivative is `σ(x) (1 + x (1 − σ(x)))`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[0.0]]);
    /// let grads = tape.backward(x.silu()).unwrap();
    /// assert_eq!(grads.get(x).unwrap()[[0, 0]], 0.5);
    /// ```
    #[track_caller]
    pub fn silu(self) -> Tensor<'t, F> {
        self.unary(Silu, Location::caller())
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
    const KERNEL: bool = true;
    fn f(self, x: F) -> F {
        // the vector kernel's scalar form: 1/(1 + e^−|x|) or e^−|x|/(1 + e^−|x|), exact
        // limits, no branch
        scalar(vk::Sigmoid, x)
    }
    fn f_slice(self, x: &[F], y: &mut [F]) -> bool {
        map(vk::Sigmoid, x, y);
        true
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
    const KERNEL: bool = true;
    fn f(self, x: F) -> F {
        scalar(vk::Tanh, x)
    }
    fn f_slice(self, x: &[F], y: &mut [F]) -> bool {
        map(vk::Tanh, x, y);
        true
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
        g.try_mul(constant_of(s, |y| {
            if y > F::zero() { F::one() } else { F::zero() }
        })?)
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

#[derive(Clone, Copy)]
struct LeakyRelu<F>(F);

impl<F: Float> WithParam<F> for LeakyRelu<F> {
    fn from_param(alpha: F) -> Self {
        LeakyRelu(alpha)
    }
}

impl<F: Float> Unary<F> for LeakyRelu<F> {
    fn rule(self) -> Rule<F> {
        param_rule::<F, Self>(self.0)
    }
    fn vjp_tensor<'t>(self, g: Tensor<'t, F>, x: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        g.try_mul(constant_of(x, |x| self.df(x))?)
    }
    const NAME: &'static str = "leaky_relu";
    const DF_USES_OUTPUT: bool = false;
    fn f(self, x: F) -> F {
        if x > F::zero() { x } else { self.0 * x }
    }
    fn df(self, x: F) -> F {
        if x > F::zero() { F::one() } else { self.0 }
    }
}

#[derive(Clone, Copy)]
struct Elu<F>(F);

impl<F: Float> WithParam<F> for Elu<F> {
    fn from_param(alpha: F) -> Self {
        Elu(alpha)
    }
}

impl<F: Float> Unary<F> for Elu<F> {
    fn rule(self) -> Rule<F> {
        param_rule::<F, Self>(self.0)
    }
    fn vjp_tensor<'t>(self, g: Tensor<'t, F>, y: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        // positive: 1 (a constant); negative: Y + α, which depends on X again
        let positive = constant_of(y, |y| if y > F::zero() { F::one() } else { F::zero() })?;
        let negative = constant_of(y, |y| if y > F::zero() { F::zero() } else { F::one() })?;
        let d = y.add_scalar(self.0).try_mul(negative)?.try_add(positive)?;
        g.try_mul(d)
    }
    const NAME: &'static str = "elu";
    const DF_USES_OUTPUT: bool = true;
    const KERNEL: bool = true;
    fn f(self, x: F) -> F {
        scalar(vk::Elu(self.0), x)
    }
    fn f_slice(self, x: &[F], y: &mut [F]) -> bool {
        map(vk::Elu(self.0), x, y);
        true
    }
    fn df(self, y: F) -> F {
        if y > F::zero() { F::one() } else { y + self.0 }
    }
}

/// `1/√2` and `1/√(2π)`.
const FRAC_1_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;
const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

#[derive(Clone, Copy, Default)]
struct Gelu;

impl<F: Float> Unary<F> for Gelu {
    fn rule(self) -> Rule<F> {
        plain_rule::<F, Self>()
    }
    fn vjp_tensor<'t>(self, g: Tensor<'t, F>, x: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        // Φ(x) + x φ(x)
        let phi_cdf = x
            .mul_scalar(F::cast(FRAC_1_SQRT_2))
            .erf()
            .add_scalar(F::one())
            .mul_scalar(F::cast(0.5));
        let density = x
            .square()
            .mul_scalar(F::cast(-0.5))
            .exp()
            .mul_scalar(F::cast(FRAC_1_SQRT_2PI));
        g.try_mul(phi_cdf.try_add(x.try_mul(density)?)?)
    }
    const NAME: &'static str = "gelu";
    const DF_USES_OUTPUT: bool = false;
    const KERNEL: bool = true;
    fn f(self, x: F) -> F {
        scalar(vk::Gelu, x)
    }
    fn df(self, x: F) -> F {
        scalar(vk::GeluGrad, x)
    }
    fn f_slice(self, x: &[F], y: &mut [F]) -> bool {
        map(vk::Gelu, x, y);
        true
    }
    fn vjp_slice(self, g: &mut [F], x: &[F]) -> bool {
        mul_map(vk::GeluGrad, g, x);
        true
    }
}

/// `√(2/π)` and the cubic coefficient of the tanh approximation of gelu.
const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_CUBIC: f64 = 0.044_715;
/// Where gelu_tanh's tensor-form VJP clamps x in its second term (see there).
const GELU_TANH_CLAMP: f64 = 10.0;

#[derive(Clone, Copy, Default)]
struct GeluTanh;

impl GeluTanh {
    /// `u(x)` and `u′(x)`.
    fn u<F: Float>(x: F) -> (F, F) {
        let (c, k) = (F::cast(SQRT_2_OVER_PI), F::cast(GELU_CUBIC));
        (
            c * (x + k * x * x * x),
            c * (F::one() + F::cast(3.0) * k * x * x),
        )
    }
}

impl<F: Float> Unary<F> for GeluTanh {
    fn rule(self) -> Rule<F> {
        plain_rule::<F, Self>()
    }
    fn vjp_tensor<'t>(self, g: Tensor<'t, F>, x: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        let (c, k) = (F::cast(SQRT_2_OVER_PI), F::cast(GELU_CUBIC));
        let x2 = x.square();
        let t = x
            .try_add(x2.try_mul(x)?.mul_scalar(k))?
            .mul_scalar(c)
            .tanh();
        // (1 + t)/2 + x (1 − t²) u′ / 2, with x clamped to ±10 in the factors x and u′:
        // past 10, 1 − t² is below 10⁻³⁷ and the term below rounding, and unclamped x u′
        // overflows to ∞ where 1 − t² is 0 (∞ · 0 = NaN at large |x|)
        let xc = x.clamp(F::cast(-GELU_TANH_CLAMP), F::cast(GELU_TANH_CLAMP));
        let du = xc.square().mul_scalar(F::cast(3.0) * k * c).add_scalar(c);
        let first = t.add_scalar(F::one()).mul_scalar(F::cast(0.5));
        let second = xc
            .try_mul(t.square().neg().add_scalar(F::one()))?
            .try_mul(du)?
            .mul_scalar(F::cast(0.5));
        g.try_mul(first.try_add(second)?)
    }
    const NAME: &'static str = "gelu_tanh";
    const DF_USES_OUTPUT: bool = false;
    const KERNEL: bool = true;
    fn f(self, x: F) -> F {
        // x σ(2u): (1 + tanh u)/2 without its cancellation for negative u
        scalar(vk::GeluTanh, x)
    }
    fn f_slice(self, x: &[F], y: &mut [F]) -> bool {
        map(vk::GeluTanh, x, y);
        true
    }
    fn df(self, x: F) -> F {
        let (u, du) = Self::u(x);
        let t = u.tanh();
        // where tanh u rounds to ±1, x (1 − t²) u′ is below rounding (1 − t² ≈ 4e^−2|u|):
        // dropping it gives the limits 1 and 0 at ±∞, where the formula is ∞ · 0
        if t * t == F::one() {
            return F::cast(0.5) * (F::one() + t);
        }
        F::cast(0.5) * (F::one() + t) + F::cast(0.5) * x * (F::one() - t * t) * du
    }
}

#[derive(Clone, Copy, Default)]
struct Softplus;

impl<F: Float> Unary<F> for Softplus {
    fn rule(self) -> Rule<F> {
        plain_rule::<F, Self>()
    }
    fn vjp_tensor<'t>(self, g: Tensor<'t, F>, x: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        g.try_mul(x.sigmoid())
    }
    const NAME: &'static str = "softplus";
    const DF_USES_OUTPUT: bool = false;
    const KERNEL: bool = true;
    fn f(self, x: F) -> F {
        // max(x, 0) + log1p(e^−|x|)
        scalar(vk::Softplus, x)
    }
    fn df(self, x: F) -> F {
        scalar(vk::Sigmoid, x)
    }
    fn f_slice(self, x: &[F], y: &mut [F]) -> bool {
        map(vk::Softplus, x, y);
        true
    }
    fn vjp_slice(self, g: &mut [F], x: &[F]) -> bool {
        mul_map(vk::Sigmoid, g, x);
        true
    }
}

#[derive(Clone, Copy, Default)]
struct Silu;

impl<F: Float> Unary<F> for Silu {
    fn rule(self) -> Rule<F> {
        plain_rule::<F, Self>()
    }
    fn vjp_tensor<'t>(self, g: Tensor<'t, F>, x: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        // σ + x (σ − σ²)
        let s = x.sigmoid();
        g.try_mul(s.try_add(x.try_mul(s.try_sub(s.square())?)?)?)
    }
    const NAME: &'static str = "silu";
    const DF_USES_OUTPUT: bool = false;
    const KERNEL: bool = true;
    fn f_slice(self, x: &[F], y: &mut [F]) -> bool {
        // x σ(x), 0 at −∞ (the kernel's own limit)
        map(vk::Silu, x, y);
        true
    }
    fn f(self, x: F) -> F {
        // the limit at −∞ is 0 (the quotient is −∞/∞)
        if x == F::neg_infinity() {
            return F::zero();
        }
        x / (F::one() + (-x).exp())
    }
    fn df(self, x: F) -> F {
        // the limits at ±∞ are 1 and 0 (the formula is 0·∞ there)
        if x.is_infinite() {
            return if x > F::zero() { F::one() } else { F::zero() };
        }
        let s = F::one() / (F::one() + (-x).exp());
        s * (F::one() + x * (F::one() - s))
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
