//! Elementwise functions as `(f, df)` pairs, dfdx style: `sigmoid`, `tanh`, `relu`, `exp`,
//! `log`, `sqrt`, `square`, `powi`, `powf`.
//!
//! Each pair says whether `df` reads the output `Y` or the input `X`
//! (`DF_USES_OUTPUT`), and the rule saves exactly that one value. The VJP is always
//! `dX = G ∘ df(·)`, one fused pass ([`Ctx::accumulate_map`]) that writes into G's own
//! buffer when it is the first contribution:
//!
//! | op | f | df | reads |
//! |----|---|----|-------|
//! | sigmoid | `1 / (1 + e⁻ˣ)` | `y (1 − y)` | Y |
//! | tanh | `tanh x` | `1 − y²` | Y |
//! | relu | `max(x, 0)` | `[y > 0]` | Y |
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
use crate::rule::{Backward, Rule, Saves};
use crate::{Float, Tensor};

/// An elementwise function and its derivative, in both rule forms.
trait Unary<F: Float>: Copy + 'static {
    /// The op's name in the rule table.
    const NAME: &'static str;
    /// Whether `df` takes the output `y` (true) or the input `x` (false).
    const DF_USES_OUTPUT: bool;
    fn f(self, x: F) -> F;
    fn df(self, x_or_y: F) -> F;
    /// The tensor form of the VJP: `G ∘ df(s)` in recorded ops, `s` being the saved `Y`
    /// or `X` as a tensor.
    fn vjp_tensor<'t>(self, g: Tensor<'t, F>, s: Tensor<'t, F>) -> Result<Tensor<'t, F>>;
    /// The rule to record.
    fn rule(self) -> Rule<F>;
}

/// `dX = G ∘ df(saved)`, one fused pass in G's buffer.
fn unary_vjp<F: Float, U: Unary<F>>(u: U, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    let s = if U::DF_USES_OUTPUT {
        ctx.output()
    } else {
        ctx.input(0)
    };
    ctx.accumulate_map(0, g, s, |g, s| g * u.df(s));
}

/// `dX = G ∘ df(saved)`, recorded.
fn unary_vjp_tensor<'t, F: Float, U: Unary<F>>(
    u: U,
    g: Tensor<'t, F>,
    ctx: &mut TensorCtx<'_, 't, F>,
) -> Result<()> {
    let s = if U::DF_USES_OUTPUT {
        ctx.output()
    } else {
        ctx.input(0)
    };
    ctx.accumulate(0, u.vjp_tensor(g, s)?)
}

/// The array form of a parameter-free function `U`.
fn unary_backward<F: Float, U: Unary<F> + Default>(_: F, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    unary_vjp(U::default(), g, ctx);
}

/// The tensor form of a parameter-free function `U`.
fn unary_tensor<'t, F: Float, U: Unary<F> + Default>(
    _: F,
    g: Tensor<'t, F>,
    ctx: &mut TensorCtx<'_, 't, F>,
) -> Result<()> {
    unary_vjp_tensor(U::default(), g, ctx)
}

/// The rule of a parameter-free function `U`.
fn plain_rule<F: Float, U: Unary<F> + Default>() -> Rule<F> {
    Rule::new(unary_backward::<F, U>, unary_tensor::<F, U>)
}

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
    fn unary<U: Unary<F>>(self, u: U, location: &'static Location<'static>) -> Tensor<'t, F> {
        let tape = self.tape;
        let y = tape.read1(self.id, |x| x.mapv(|v| u.f(v)));
        let rule = tape.track(&[self]).then(|| {
            let saves = if U::DF_USES_OUTPUT {
                Saves::output()
            } else {
                Saves::NONE.input_if(0, true)
            };
            (saves, u.rule())
        });
        tape.record(U::NAME, y, self.shape, &[self], rule, location)
    }

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
    fn sigmoid_is_stable_for_large_inputs() {
        let tape = Tape::<f32>::new();
        let y = tape
            .constant(array![[-1000.0f32, 1000.0, 0.0]])
            .sigmoid()
            .value();
        assert_eq!(y, array![[0.0, 1.0, 0.5]]);
    }

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
