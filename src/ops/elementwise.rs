//! Elementwise arithmetic between tensors: `add`, `sub`, `mul`, `div` with numpy
//! broadcasting in two dimensions; the operators `+ - * /` as panicking shorthands.
//! (Arithmetic with a scalar is in `scalar.rs`.)
//!
//! VJPs, with `G = ∂L/∂Y` (broadcast gradients are summed back by `Ctx`, once for all ops):
//!
//! - `Y = A + B`: `dA = G`, `dB = G` (saves nothing)
//! - `Y = A − B`: `dA = G`, `dB = −G` (saves nothing)
//! - `Y = A ∘ B`: `dA = G ∘ B`, `dB = G ∘ A` (saves each operand only for the other)
//! - `Y = A / B`: `dA = G / B`, `dB = −(G / B) ∘ Y` (saves B, and Y if B needs a
//!   gradient; `A / B²` would overflow or underflow where the quotient does not)

use std::ops::{Add, Div, Mul, Sub};
use std::panic::Location;

use ndarray::{Array2, Zip};

use crate::error::{Result, allocated, check_size, or_panic, shape_error};
use crate::grad::Ctx;
use crate::higher::TensorCtx;
use crate::kernels::{broadcast_shape, zip_broadcast};
use crate::rule::{Rule, Saves};
use crate::{Float, Tensor};

const BROADCAST: &str = "each dimension must be equal, or 1 on one side (broadcasting)";

// `add`, `sub`, `mul`, `div` and `neg` are also the `std::ops` traits (below); the named
// methods are the documented forms beside their `try_` siblings.
#[allow(clippy::should_implement_trait)]
/// # Arithmetic
///
/// Elementwise, with broadcasting; also the operators `+ - * /`.
impl<'t, F: Float> Tensor<'t, F> {
    /// Records the binary op `op` on `self` and `other` after checking that their shapes
    /// broadcast; `f` computes each element, `rule` builds the VJP (called only when a
    /// gradient is needed).
    pub(crate) fn binary(
        self,
        other: Tensor<'t, F>,
        op: &'static str,
        location: &'static Location<'static>,
        f: impl Fn(F, F) -> F,
        rule: impl FnOnce() -> (Saves, Rule<F>),
    ) -> Result<Tensor<'t, F>> {
        self.same_tape(other, op, location)?;
        let Some(shape) = broadcast_shape(self.shape, other.shape) else {
            return Err(shape_error(
                op,
                self.shape,
                other.shape,
                BROADCAST,
                location,
            ));
        };
        check_size::<F>(op, shape, location)?;
        let tape = self.tape;
        let y = tape.read2(self.id, other.id, |a, b| zip_broadcast(a, b, shape, f));
        let y = allocated(y, op, shape, location)?;
        let rule = tape.track(&[self, other]).then(rule);
        Ok(tape.record(op, y, shape, &[self, other], rule, location))
    }

    /// Elementwise sum `self + other`, broadcasting 1 × n rows, m × 1 columns and 1 × 1
    /// scalars. The derivative: `dA = G`, `dB = G`, each summed to its operand's shape.
    ///
    /// # Panics
    ///
    /// If the shapes do not broadcast or the tapes differ; see [`Tensor::try_add`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let a = tape.param(array![[1.0, 2.0], [3.0, 4.0]]);
    /// let b = tape.param(array![[10.0, 20.0]]); // broadcast over rows
    /// let y = a.add(b); // or a + b
    /// assert_eq!(y.value(), array![[11.0, 22.0], [13.0, 24.0]]);
    /// let grads = tape.backward(y.sum()).unwrap();
    /// assert_eq!(grads.get(b).unwrap(), &array![[2.0, 2.0]]); // summed over the rows
    /// ```
    #[track_caller]
    pub fn add(self, other: Tensor<'t, F>) -> Tensor<'t, F> {
        or_panic(self.try_add(other))
    }

    /// Elementwise sum, or an error.
    ///
    /// # Errors
    ///
    /// `Shape` if the shapes do not broadcast, `ForeignTensor` if the tapes differ.
    #[track_caller]
    pub fn try_add(self, other: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        self.binary(other, "add", Location::caller(), |a, b| a + b, add_rule)
    }

    /// Elementwise difference `self − other`, broadcasting like [`Tensor::add`].
    /// The derivative: `dA = G`, `dB = −G`.
    ///
    /// # Panics
    ///
    /// If the shapes do not broadcast or the tapes differ; see [`Tensor::try_sub`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let a = tape.param(array![[5.0, 7.0]]);
    /// let b = tape.param(array![[1.0, 2.0]]);
    /// let grads = tape.backward(a.sub(b).sum()).unwrap();
    /// assert_eq!(grads.get(b).unwrap(), &array![[-1.0, -1.0]]);
    /// ```
    #[track_caller]
    pub fn sub(self, other: Tensor<'t, F>) -> Tensor<'t, F> {
        or_panic(self.try_sub(other))
    }

    /// Elementwise difference, or an error.
    ///
    /// # Errors
    ///
    /// `Shape` if the shapes do not broadcast, `ForeignTensor` if the tapes differ.
    #[track_caller]
    pub fn try_sub(self, other: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        let rule = || (Saves::NONE, Rule::new(sub_backward, sub_tensor));
        self.binary(other, "sub", Location::caller(), |a, b| a - b, rule)
    }

    /// Elementwise (Hadamard) product `self ∘ other`, broadcasting like [`Tensor::add`].
    /// The derivative: `dA = G ∘ B`, `dB = G ∘ A`.
    ///
    /// # Panics
    ///
    /// If the shapes do not broadcast or the tapes differ; see [`Tensor::try_mul`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let a = tape.param(array![[2.0, 3.0]]);
    /// let b = tape.param(array![[5.0, 7.0]]);
    /// let grads = tape.backward(a.mul(b).sum()).unwrap();
    /// assert_eq!(grads.get(a).unwrap(), &array![[5.0, 7.0]]);
    /// assert_eq!(grads.get(b).unwrap(), &array![[2.0, 3.0]]);
    /// ```
    #[track_caller]
    pub fn mul(self, other: Tensor<'t, F>) -> Tensor<'t, F> {
        or_panic(self.try_mul(other))
    }

    /// Elementwise product, or an error.
    ///
    /// # Errors
    ///
    /// `Shape` if the shapes do not broadcast, `ForeignTensor` if the tapes differ.
    #[track_caller]
    pub fn try_mul(self, other: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        let saves = Saves::NONE
            .input_if(1, self.requires_grad)
            .input_if(0, other.requires_grad);
        let rule = || (saves, Rule::new(mul_backward, mul_tensor));
        self.binary(other, "mul", Location::caller(), |a, b| a * b, rule)
    }

    /// Elementwise quotient `self / other`, broadcasting like [`Tensor::add`].
    /// The derivative: `dA = G / B`, `dB = −G ∘ A / B²`, computed as `−(G / B) ∘ Y` from
    /// the output `Y = A / B`, which neither overflows nor underflows where the quotient
    /// itself is finite (`B²` of 10²⁰ overflows f32). Division by zero gives ±∞ or NaN,
    /// never a panic.
    ///
    /// # Panics
    ///
    /// If the shapes do not broadcast or the tapes differ; see [`Tensor::try_div`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let a = tape.param(array![[6.0]]);
    /// let b = tape.param(array![[2.0]]);
    /// let grads = tape.backward(a.div(b)).unwrap();
    /// assert_eq!(grads.get(a).unwrap()[[0, 0]], 0.5); // 1 / b
    /// assert_eq!(grads.get(b).unwrap()[[0, 0]], -1.5); // −a / b²
    /// ```
    #[track_caller]
    pub fn div(self, other: Tensor<'t, F>) -> Tensor<'t, F> {
        or_panic(self.try_div(other))
    }

    /// Elementwise quotient, or an error.
    ///
    /// # Errors
    ///
    /// `Shape` if the shapes do not broadcast, `ForeignTensor` if the tapes differ.
    #[track_caller]
    pub fn try_div(self, other: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        let saves = Saves::NONE.input_if(1, true).output_if(other.requires_grad);
        let rule = || (saves, Rule::new(div_backward, div_tensor));
        self.binary(other, "div", Location::caller(), |a, b| a / b, rule)
    }
}

/// The rule of `add`, shared with `add_row` and `add_col`.
pub(crate) fn add_rule<F: Float>() -> (Saves, Rule<F>) {
    (Saves::NONE, Rule::new(add_backward, add_tensor))
}

/// `dA = G`, `dB = G`, recorded (un-broadcast by the accumulation).
fn add_tensor<'t, F: Float>(_: F, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
    for k in 0..2 {
        if ctx.needs_grad(k) {
            ctx.accumulate(k, g)?;
        }
    }
    Ok(())
}

/// `dA = G`, `dB = −G`, recorded.
fn sub_tensor<'t, F: Float>(_: F, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
    if ctx.needs_grad(0) {
        ctx.accumulate(0, g)?;
    }
    if ctx.needs_grad(1) {
        ctx.accumulate(1, g.neg())?;
    }
    Ok(())
}

/// `dA = G ∘ B`, `dB = G ∘ A`, recorded.
fn mul_tensor<'t, F: Float>(_: F, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
    if ctx.needs_grad(0) {
        ctx.accumulate(0, g.try_mul(ctx.input(1))?)?;
    }
    if ctx.needs_grad(1) {
        ctx.accumulate(1, g.try_mul(ctx.input(0))?)?;
    }
    Ok(())
}

/// `dA = G / B`, `dB = −(G / B) ∘ Y`, recorded.
fn div_tensor<'t, F: Float>(_: F, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
    let q = g.try_div(ctx.input(1))?;
    if ctx.needs_grad(1) {
        ctx.accumulate(1, q.try_mul(ctx.output())?.neg())?;
    }
    if ctx.needs_grad(0) {
        ctx.accumulate(0, q)?;
    }
    Ok(())
}

/// `dA = G`, `dB = G`: G moves into one slot, the other gets a copy (or its sum over the
/// broadcast axis: the bias gradient of `add_row`).
fn add_backward<F: Float>(_: F, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    match (ctx.needs_grad(0), ctx.needs_grad(1)) {
        (true, true) => {
            ctx.accumulate_scaled(1, F::one(), g.view());
            ctx.accumulate(0, g);
        }
        (true, false) => ctx.accumulate(0, g),
        (false, true) => ctx.accumulate(1, g),
        (false, false) => {}
    }
}

/// `dA = G`, `dB = −G`.
fn sub_backward<F: Float>(_: F, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    if ctx.needs_grad(1) {
        ctx.accumulate_scaled(1, -F::one(), g.view());
    }
    if ctx.needs_grad(0) {
        ctx.accumulate(0, g);
    }
}

/// `dA = G ∘ B`, `dB = G ∘ A`, each one fused pass; G's buffer serves the last.
fn mul_backward<F: Float>(_: F, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    if ctx.needs_grad(1) {
        let a = ctx.input(0);
        if !ctx.needs_grad(0) {
            return ctx.accumulate_map(1, g, a, |g, a| g * a);
        }
        ctx.accumulate_map_view(1, g.view(), a, |g, a| g * a);
    }
    if ctx.needs_grad(0) {
        let b = ctx.input(1);
        ctx.accumulate_map(0, g, b, |g, b| g * b);
    }
}

/// `dA = G / B`, `dB = −(G / B) ∘ Y`.
fn div_backward<F: Float>(_: F, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    let b = ctx.input(1);
    if ctx.needs_grad(1) {
        let y = ctx.output();
        let d = Zip::from(&g)
            .and(&y)
            .and_broadcast(&b)
            .map_collect(|&g, &y, &b| -(g / b) * y);
        ctx.accumulate(1, d);
    }
    if ctx.needs_grad(0) {
        ctx.accumulate_map(0, g, b, |g, b| g / b);
    }
}

macro_rules! binary_operator {
    ($trait:ident, $method:ident, $name:literal) => {
        #[doc = concat!("`a ", $name, " b`: the panicking shorthand of [`Tensor::", stringify!($method), "`].")]
        ///
        /// # Panics
        ///
        /// If the shapes do not broadcast or the tapes differ.
        impl<'t, F: Float> $trait for Tensor<'t, F> {
            type Output = Tensor<'t, F>;
            #[track_caller]
            fn $method(self, rhs: Tensor<'t, F>) -> Tensor<'t, F> {
                Tensor::$method(self, rhs)
            }
        }
    };
}

binary_operator!(Add, add, "+");
binary_operator!(Sub, sub, "-");
binary_operator!(Mul, mul, "*");
binary_operator!(Div, div, "/");

#[cfg(test)]
mod tests {
    use ndarray::array;

    use crate::Tape;

    #[test]
    fn operators_match_methods() {
        let tape = Tape::<f64>::new();
        let a = tape.param(array![[1.0, 2.0], [3.0, 4.0]]);
        let b = tape.constant(array![[2.0, 4.0]]);
        assert_eq!((a + b).value(), a.add(b).value());
        assert_eq!((a - b).value(), array![[-1.0, -2.0], [1.0, 0.0]]);
        assert_eq!((a * b).value(), array![[2.0, 8.0], [6.0, 16.0]]);
        assert_eq!((a / b).value(), array![[0.5, 0.5], [1.5, 1.0]]);
        assert_eq!((-a).value(), array![[-1.0, -2.0], [-3.0, -4.0]]);
        assert_eq!(
            (a * 2.0 + 1.0 - 0.5).value(),
            array![[2.5, 4.5], [6.5, 8.5]]
        );
        assert_eq!((a / 2.0).value(), array![[0.5, 1.0], [1.5, 2.0]]);
    }

    #[test]
    fn literal_mul_and_div_rules() {
        // y = sum(a ∘ b / c): dy/da = b/c, dy/db = a/c, dy/dc = −a∘b/c²
        let tape = Tape::<f64>::new();
        let a = tape.param(array![[2.0, -1.0]]);
        let b = tape.param(array![[3.0, 4.0]]);
        let c = tape.param(array![[0.5, 2.0]]);
        let grads = tape.backward(a.mul(b).div(c).sum()).unwrap();
        assert_eq!(grads.get(a).unwrap(), &array![[6.0, 2.0]]);
        assert_eq!(grads.get(b).unwrap(), &array![[4.0, -0.5]]);
        assert_eq!(grads.get(c).unwrap(), &array![[-24.0, 1.0]]);
    }

    #[test]
    fn same_tensor_on_both_sides() {
        // y = sum(x ∘ x + x − x): dy/dx = 2x
        let tape = Tape::<f64>::new();
        let x = tape.param(array![[1.5, -2.0]]);
        let grads = tape.backward((x * x + x - x).sum()).unwrap();
        assert_eq!(grads.get(x).unwrap(), &array![[3.0, -4.0]]);
    }
}
