//! Fused losses between predictions and targets of the same shape, each the mean over all
//! `n` elements, as a 1 × 1 tensor.
//!
//! VJPs, with `g = ∂L/∂loss` (a scalar) and `D = P − T`:
//!
//! - `mse = Σ D² / n`: `dP = 2g D / n`, `dT = −dP`. Saves P and T (reads them in one
//!   pass, with no buffer for `D`).
//! - `l1 = Σ |D| / n`: `dP = g sign(D) / n` (0 where `D = 0`), `dT = −dP`. Saves P and T.
//! - `huber(δ) = Σ h(D) / n`, `h(d) = d²/2` for `|d| ≤ δ`, `δ(|d| − δ/2)` beyond:
//!   `dP = g clamp(D, −δ, δ) / n`, `dT = −dP`. Saves P and T.
//! - `bce_with_logits = Σ [max(Z, 0) − Z ∘ T + ln(1 + e^−|Z|)] / n` for logits `Z` and
//!   targets `T` in [0, 1] (stable for any finite logit): `dZ = g (σ(Z) − T) / n`,
//!   `dT = −g Z / n`. Saves Z and T.

use std::panic::Location;

use ndarray::{Array2, ArrayView2, Zip};

use crate::error::{Error, ErrorKind, Result, or_panic, shape_error};
use crate::grad::Ctx;
use crate::higher::TensorCtx;
use crate::rule::{Backward, Rule, Saves};
use crate::{Float, Tensor, kernels};

/// The scalar loss as a 1 × 1 array.
pub(super) fn scalar<F: Float>(x: F) -> Array2<F> {
    let mut a = crate::pool::take_array((1, 1)).expect("a small buffer");
    a[[0, 0]] = x;
    a
}

/// # Losses
///
/// Regression and binary classification, each a 1 × 1 mean.
impl<'t, F: Float> Tensor<'t, F> {
    /// Mean squared error `Σ (P − T)² / NC` between `self` (predictions `P`) and `target`,
    /// both N × C: the mean over all elements, as in the benchmark workloads.
    ///
    /// The derivative: `dP = 2 (P − T) / NC`, `dT = −dP`.
    ///
    /// # Panics
    ///
    /// If the shapes differ or the tapes differ; see [`Tensor::try_mse_loss`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let p = tape.param(array![[1.0, 2.0]]);
    /// let t = tape.constant(array![[0.0, 4.0]]);
    /// let loss = p.mse_loss(t);
    /// assert_eq!(loss.item(), 2.5); // (1 + 4) / 2
    /// let grads = tape.backward(loss).unwrap();
    /// assert_eq!(grads.get(p).unwrap(), &array![[1.0, -2.0]]); // 2 (P − T) / 2
    /// ```
    #[track_caller]
    pub fn mse_loss(self, target: Tensor<'t, F>) -> Tensor<'t, F> {
        or_panic(self.try_mse_loss(target))
    }

    /// Mean squared error, or an error.
    ///
    /// # Errors
    ///
    /// `Shape` if the shapes differ, `ForeignTensor` if the tapes differ.
    #[track_caller]
    pub fn try_mse_loss(self, target: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        let value = |p: ArrayView2<'_, F>, t: ArrayView2<'_, F>| match (p.as_slice(), t.as_slice())
        {
            (Some(p), Some(t)) => p
                .iter()
                .zip(t)
                .fold(F::zero(), |s, (&p, &t)| s + (p - t) * (p - t)),
            _ => Zip::from(&p)
                .and(&t)
                .fold(F::zero(), |s, &p, &t| s + (p - t) * (p - t)),
        };
        let rule = |inv_n| Rule::with_param(mse_backward, mse_tensor, inv_n);
        self.pair_loss(target, "mse_loss", Location::caller(), value, rule)
    }

    /// Records the loss `op` between `self` and `target` (same shape): `value` computes it
    /// from the two values, `rule` builds the VJP from `1/n` when a gradient is needed.
    fn pair_loss(
        self,
        target: Tensor<'t, F>,
        op: &'static str,
        location: &'static Location<'static>,
        value: impl FnOnce(ArrayView2<'_, F>, ArrayView2<'_, F>) -> F,
        rule: impl FnOnce(F) -> Rule<F>,
    ) -> Result<Tensor<'t, F>> {
        self.same_tape(target, op, location)?;
        if self.shape != target.shape {
            let rule = "prediction and target must have the same shape";
            return Err(shape_error(op, self.shape, target.shape, rule, location));
        }
        let tape = self.tape;
        let inv_n = F::one() / F::cast((self.shape.0 * self.shape.1) as f64);
        let y = tape.read2(self.id, target.id, |p, t| scalar(value(p, t) * inv_n));
        let rule = tape.track(&[self, target]).then(|| {
            let saves = Saves::NONE.input_if(0, true).input_if(1, true);
            (saves, rule(inv_n))
        });
        Ok(tape.record(op, y, (1, 1), &[self, target], rule, location))
    }

    /// Mean absolute error `Σ |P − T| / n` between `self` (predictions) and `target`.
    ///
    /// The derivative: `dP = sign(P − T) / n` (0 where they are equal, as PyTorch),
    /// `dT = −dP`.
    ///
    /// # Panics
    ///
    /// If the shapes differ or the tapes differ; see [`Tensor::try_l1_loss`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let p = tape.param(array![[1.0, 2.0]]);
    /// let loss = p.l1_loss(tape.constant(array![[0.0, 4.0]]));
    /// assert_eq!(loss.item(), 1.5); // (1 + 2) / 2
    /// let grads = tape.backward(loss).unwrap();
    /// assert_eq!(grads.get(p).unwrap(), &array![[0.5, -0.5]]);
    /// ```
    #[track_caller]
    pub fn l1_loss(self, target: Tensor<'t, F>) -> Tensor<'t, F> {
        or_panic(self.try_l1_loss(target))
    }

    /// Mean absolute error, or an error.
    ///
    /// # Errors
    ///
    /// `Shape` if the shapes differ, `ForeignTensor` if the tapes differ.
    #[track_caller]
    pub fn try_l1_loss(self, target: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        let value = |p: ArrayView2<'_, F>, t: ArrayView2<'_, F>| {
            Zip::from(&p)
                .and(&t)
                .fold(F::zero(), |s, &p, &t| s + (p - t).abs())
        };
        let rule = |inv_n| Rule::with_param(l1_backward, l1_tensor, inv_n);
        self.pair_loss(target, "l1_loss", Location::caller(), value, rule)
    }

    /// Huber loss `Σ h(P − T) / n` with `h(d) = d²/2` for `|d| ≤ δ` and `δ (|d| − δ/2)`
    /// beyond: quadratic near 0, linear far from it (PyTorch's `huber_loss`).
    ///
    /// The derivative: `dP = clamp(P − T, −δ, δ) / n`, `dT = −dP`.
    ///
    /// # Panics
    ///
    /// If the shapes differ, the tapes differ or `δ` is not positive; see
    /// [`Tensor::try_huber_loss`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let p = tape.param(array![[0.5, 3.0]]);
    /// let loss = p.huber_loss(tape.constant(array![[0.0, 0.0]]), 1.0);
    /// assert_eq!(loss.item(), (0.125 + 2.5) / 2.0);
    /// let grads = tape.backward(loss).unwrap();
    /// assert_eq!(grads.get(p).unwrap(), &array![[0.25, 0.5]]);
    /// ```
    #[track_caller]
    pub fn huber_loss(self, target: Tensor<'t, F>, delta: F) -> Tensor<'t, F> {
        or_panic(self.try_huber_loss(target, delta))
    }

    /// Huber loss, or an error.
    ///
    /// # Errors
    ///
    /// `Shape` if the shapes differ, `ForeignTensor` if the tapes differ, `Parameter` if
    /// `δ` is not positive.
    #[track_caller]
    pub fn try_huber_loss(self, target: Tensor<'t, F>, delta: F) -> Result<Tensor<'t, F>> {
        let location = Location::caller();
        // (NaN is not positive either)
        if delta.is_nan() || delta <= F::zero() {
            let kind = ErrorKind::Parameter {
                name: "delta",
                value: delta.to_string(),
                rule: "must be positive",
            };
            return Err(Error::new("huber_loss", kind, location));
        }
        let value = |p: ArrayView2<'_, F>, t: ArrayView2<'_, F>| {
            Zip::from(&p)
                .and(&t)
                .fold(F::zero(), |s, &p, &t| s + huber(p - t, delta))
        };
        let rule = |inv_n| Rule::boxed(HuberBackward { delta, inv_n });
        self.pair_loss(target, "huber_loss", location, value, rule)
    }

    /// Binary cross-entropy between logits `self` and targets in [0, 1], mean over all
    /// elements: `Σ [max(Z, 0) − Z ∘ T + ln(1 + e^−|Z|)] / n`, which is
    /// `−Σ [T ln σ(Z) + (1 − T) ln(1 − σ(Z))] / n` computed without overflow for any finite
    /// logit (PyTorch's `binary_cross_entropy_with_logits`). At an infinite logit the loss
    /// is its limit: 0 for z = +∞ with t = 1 and for z = −∞ with t = 0, else ±∞.
    ///
    /// The derivative: `dZ = (σ(Z) − T) / n`, `dT = −Z / n`.
    ///
    /// # Panics
    ///
    /// If the shapes differ or the tapes differ; see
    /// [`Tensor::try_bce_with_logits`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let z = tape.param(array![[0.0, 1000.0]]);
    /// let loss = z.bce_with_logits(tape.constant(array![[1.0, 1.0]]));
    /// assert!((loss.item() - 2f64.ln() / 2.0).abs() < 1e-15); // (ln 2 + 0) / 2
    /// let grads = tape.backward(loss).unwrap();
    /// assert_eq!(grads.get(z).unwrap(), &array![[-0.25, 0.0]]);
    /// ```
    #[track_caller]
    pub fn bce_with_logits(self, target: Tensor<'t, F>) -> Tensor<'t, F> {
        or_panic(self.try_bce_with_logits(target))
    }

    /// Binary cross-entropy with logits, or an error.
    ///
    /// # Errors
    ///
    /// `Shape` if the shapes differ, `ForeignTensor` if the tapes differ.
    #[track_caller]
    pub fn try_bce_with_logits(self, target: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        let value = |z: ArrayView2<'_, F>, t: ArrayView2<'_, F>| {
            Zip::from(&z).and(&t).fold(F::zero(), |s, &z, &t| {
                let positive = if z > F::zero() { z } else { F::zero() };
                // each element's term first: max(z, 0) − z t is exact where they cancel.
                // At an infinite z it is |z| (1 − t) for z = +∞ and |z| t for z = −∞: the
                // formula would give ∞ − ∞ or ∞ · 0 where that weight is 0, whose limit is 0
                let linear = if z.is_infinite() {
                    let weight = if z > F::zero() { F::one() - t } else { t };
                    if weight == F::zero() {
                        F::zero()
                    } else {
                        z.abs() * weight
                    }
                } else {
                    positive - z * t
                };
                s + (linear + (-z.abs()).exp().ln_1p())
            })
        };
        let rule = |inv_n| Rule::with_param(bce_backward, bce_tensor, inv_n);
        self.pair_loss(target, "bce_with_logits", Location::caller(), value, rule)
    }
}

/// Huber's `h(d)`.
fn huber<F: Float>(d: F, delta: F) -> F {
    let a = d.abs();
    if a <= delta {
        F::cast(0.5) * d * d
    } else {
        delta * (a - F::cast(0.5) * delta)
    }
}

/// The sign of `d` (0 at 0).
fn sign<F: Float>(d: F) -> F {
    if d > F::zero() {
        F::one()
    } else if d < F::zero() {
        -F::one()
    } else {
        F::zero()
    }
}

/// `dP = g sign(P − T) / n`, `dT = −dP`.
fn l1_backward<F: Float>(inv_n: F, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    let a = g[[0, 0]] * inv_n;
    let d = Zip::from(&ctx.input(0))
        .and(&ctx.input(1))
        .map_collect(|&p, &t| a * sign(p - t));
    if ctx.needs_grad(1) {
        ctx.accumulate_scaled(1, -F::one(), d.view());
    }
    if ctx.needs_grad(0) {
        ctx.accumulate(0, d);
    }
}

/// `dP = g sign(P − T) / n`, `dT = −dP`, the signs as a constant, recorded.
fn l1_tensor<'t, F: Float>(
    inv_n: F,
    g: Tensor<'t, F>,
    ctx: &mut TensorCtx<'_, 't, F>,
) -> Result<()> {
    let (p, t) = (ctx.input(0).try_value()?, ctx.input(1).try_value()?);
    let signs = ctx.constant(Zip::from(&p).and(&t).map_collect(|&p, &t| sign(p - t)));
    let dp = signs.try_mul(g.mul_scalar(inv_n))?;
    if ctx.needs_grad(1) {
        ctx.accumulate(1, dp.neg())?;
    }
    if ctx.needs_grad(0) {
        ctx.accumulate(0, dp)?;
    }
    Ok(())
}

/// `dP = g clamp(P − T, −δ, δ) / n`, `dT = −dP`.
struct HuberBackward<F> {
    delta: F,
    inv_n: F,
}

impl<F: Float> Backward<F> for HuberBackward<F> {
    fn backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
        let (a, delta) = (g[[0, 0]] * self.inv_n, self.delta);
        let d = Zip::from(&ctx.input(0))
            .and(&ctx.input(1))
            .map_collect(|&p, &t| a * (p - t).max(-delta).min(delta));
        if ctx.needs_grad(1) {
            ctx.accumulate_scaled(1, -F::one(), d.view());
        }
        if ctx.needs_grad(0) {
            ctx.accumulate(0, d);
        }
    }

    fn backward_tensor<'t>(&self, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
        let d = ctx.input(0).try_sub(ctx.input(1))?;
        let dp = d
            .clamp(-self.delta, self.delta)
            .try_mul(g.mul_scalar(self.inv_n))?;
        if ctx.needs_grad(1) {
            ctx.accumulate(1, dp.neg())?;
        }
        if ctx.needs_grad(0) {
            ctx.accumulate(0, dp)?;
        }
        Ok(())
    }
}

/// `dZ = g (σ(Z) − T) / n`, `dT = −g Z / n`.
fn bce_backward<F: Float>(inv_n: F, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    let a = g[[0, 0]] * inv_n;
    let z = ctx.input(0);
    if ctx.needs_grad(0) {
        let d = Zip::from(&z)
            .and(&ctx.input(1))
            .map_collect(|&z, &t| a * (F::one() / (F::one() + (-z).exp()) - t));
        ctx.accumulate(0, d);
    }
    if ctx.needs_grad(1) {
        ctx.accumulate_scaled(1, -a, z);
    }
}

/// `dZ = g (σ(Z) − T) / n`, `dT = −g Z / n`, recorded.
fn bce_tensor<'t, F: Float>(
    inv_n: F,
    g: Tensor<'t, F>,
    ctx: &mut TensorCtx<'_, 't, F>,
) -> Result<()> {
    let (z, t) = (ctx.input(0), ctx.input(1));
    let a = g.mul_scalar(inv_n);
    if ctx.needs_grad(0) {
        ctx.accumulate(0, z.sigmoid().try_sub(t)?.try_mul(a)?)?;
    }
    if ctx.needs_grad(1) {
        ctx.accumulate(1, z.try_mul(a)?.neg())?;
    }
    Ok(())
}

/// `dP = 2g (P − T) / n`, `dT = −dP`, in one pass over P and T.
fn mse_backward<F: Float>(inv_n: F, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    let a = F::cast(2.0) * g[[0, 0]] * inv_n;
    let (p, t) = (ctx.input(0), ctx.input(1));
    let d = kernels::zip_broadcast(p, t, p.dim(), |p, t| a * (p - t))
        .expect("a buffer of the inputs' size");
    if ctx.needs_grad(1) {
        ctx.accumulate_scaled(1, -F::one(), d.view());
    }
    if ctx.needs_grad(0) {
        ctx.accumulate(0, d);
    }
    crate::pool::recycle_array(g);
}

/// `dP = 2g (P − T) / n`, `dT = −dP`, recorded from the inputs.
fn mse_tensor<'t, F: Float>(
    inv_n: F,
    g: Tensor<'t, F>,
    ctx: &mut TensorCtx<'_, 't, F>,
) -> Result<()> {
    let d = ctx.input(0).try_sub(ctx.input(1))?;
    let dp = d.try_mul(g.mul_scalar(F::cast(2.0) * inv_n))?;
    if ctx.needs_grad(1) {
        ctx.accumulate(1, dp.neg())?;
    }
    if ctx.needs_grad(0) {
        ctx.accumulate(0, dp)?;
    }
    Ok(())
}
