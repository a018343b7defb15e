//! Cross-entropy losses: softmax cross-entropy from one-hot (or probability) targets or
//! from class indices. Each returns a 1 × 1 tensor.
//!
//! VJPs, with `g = ∂L/∂loss` (a scalar) and `N` rows, `C` columns:
//!
//! - `ce = −Σᵢ Σⱼ Tᵢⱼ log softmax(Z)ᵢⱼ / N`: `dZ = g (softmax(Z) ∘ rowsum(T) − T) / N`
//!   (`= g (softmax(Z) − T) / N` for one-hot rows), `dT = −g log softmax(Z) / N`. Saves
//!   `log softmax(Z)`, and `T` if `Z` needs a gradient.
//! - `ce` from indices `y`: `dZ = g (softmax(Z) − onehot(y)) / N`. Saves `softmax(Z)`.
//!
//! `log softmax` is computed per row as `(z − m) − ln Σ exp(z − m)` with `m = max(z)`: no
//! overflow for any finite logits (1000 and −1000 give exact probabilities 1 and 0; equal
//! f32 logits of 10⁶ give exactly `ln C`), a `−∞` logit gives probability 0 (and a zero
//! target there contributes 0, not `0 · −∞`), and NaN logits give a NaN loss rather than
//! a panic.

use std::panic::Location;

use ndarray::{Array2, Axis, Zip};

use crate::error::{Error, ErrorKind, Result, or_panic, shape_error};
use crate::grad::Ctx;
use crate::higher::TensorCtx;
use crate::kernels::vector as vk;
use crate::ops::softmax::{exp_of, log_softmax_rows};
use crate::rule::{Backward, Rule, Saves};
use crate::{Float, Tensor};

use super::loss::scalar;

/// # Cross-entropy
///
/// Softmax cross-entropy, from one-hot targets or class indices.
impl<'t, F: Float> Tensor<'t, F> {
    /// `TargetCount` unless there is one class index per row, `ClassIndex` unless each is
    /// below the number of columns.
    fn check_classes(
        self,
        classes: &[usize],
        op: &'static str,
        location: &'static Location<'static>,
    ) -> Result<()> {
        let (rows, cols) = self.shape;
        if classes.len() != rows {
            let kind = ErrorKind::TargetCount {
                rows,
                targets: classes.len(),
            };
            return Err(Error::new(op, kind, location));
        }
        if let Some((row, &index)) = classes.iter().enumerate().find(|(_, c)| **c >= cols) {
            let kind = ErrorKind::ClassIndex {
                row,
                index,
                classes: cols,
            };
            return Err(Error::new(op, kind, location));
        }
        Ok(())
    }

    /// Whether `targets`, given to the one-hot cross-entropy with logits `self`, look
    /// like class indices: one column of whole numbers from 0 up, a row per row of logits
    /// of more than one class.
    fn looks_like_class_indices(self, targets: Tensor<'t, F>) -> bool {
        let ((rows, classes), column) = (self.shape, targets.shape);
        column == (rows, 1)
            && classes > 1
            && self
                .tape
                .read1(targets.id, |t| {
                    t.iter()
                        .all(|&v| v >= F::zero() && v.fract() == F::zero() && v.is_finite())
                })
                .unwrap_or(false)
    }

    /// Negative log-likelihood of class indices from log-probabilities `self` (N × C, for
    /// example the output of [`Tensor::log_softmax`]): `−Σᵢ X[i, yᵢ] / N`.
    ///
    /// The derivative: `dX = −onehot(y) / N`.
    ///
    /// # Panics
    ///
    /// As [`Tensor::softmax_cross_entropy_indices`]; see [`Tensor::try_nll_loss`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::{array, Axis};
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let z = tape.param(array![[0.0, 0.0], [0.0, 0.0]]);
    /// let loss = z.log_softmax(Axis(1)).nll_loss(&[0, 1]);
    /// assert!((loss.item() - 2f64.ln()).abs() < 1e-15);
    /// let grads = tape.backward(loss).unwrap();
    /// assert_eq!(grads.get(z).unwrap(), &array![[-0.25, 0.25], [0.25, -0.25]]);
    /// ```
    #[track_caller]
    pub fn nll_loss(self, classes: &[usize]) -> Tensor<'t, F> {
        or_panic(self.try_nll_loss(classes))
    }

    /// Negative log-likelihood of class indices, or an error.
    ///
    /// # Errors
    ///
    /// `TargetCount` if `classes.len()` differs from the number of rows, `ClassIndex` if an
    /// index is not below the number of columns.
    #[track_caller]
    pub fn try_nll_loss(self, classes: &[usize]) -> Result<Tensor<'t, F>> {
        let location = Location::caller();
        let op = "nll_loss";
        self.check_classes(classes, op, location)?;
        let tape = self.tape;
        let inv_n = F::one() / F::cast(self.shape.0 as f64);
        let y = tape.read1(self.id, |x| {
            let total = classes
                .iter()
                .enumerate()
                .fold(F::zero(), |s, (i, &c)| s + x[[i, c]]);
            scalar(-total * inv_n)
        });
        let rule = tape.track(&[self]).then(|| {
            let rule = NllBackward {
                classes: classes.to_vec(),
                inv_n,
            };
            (Saves::NONE, Rule::boxed(rule))
        });
        Ok(tape.record(op, y, (1, 1), &[self], rule, location))
    }

    /// Softmax cross-entropy between logits `self` (N × C) and `targets` (N × C one-hot
    /// rows, or any class probabilities): `−Σᵢⱼ Tᵢⱼ log softmax(Z)ᵢⱼ / N`, the mean over
    /// rows. Fused and stable for large logits.
    ///
    /// The derivative: `dZ = (softmax(Z) − T) / N` for rows of `T` summing to 1 (in
    /// general `(softmax(Z) ∘ rowsum(T) − T) / N`); `dT = −log softmax(Z) / N`.
    ///
    /// # Panics
    ///
    /// If the shapes differ or the tapes differ; see
    /// [`Tensor::try_softmax_cross_entropy`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let z = tape.param(array![[0.0, 0.0], [1000.0, -1000.0]]);
    /// let t = tape.constant(array![[1.0, 0.0], [1.0, 0.0]]);
    /// let loss = z.softmax_cross_entropy(t);
    /// assert!((loss.item() - 2f64.ln() / 2.0).abs() < 1e-15); // (ln 2 + 0) / 2
    /// let grads = tape.backward(loss).unwrap();
    /// assert_eq!(grads.get(z).unwrap(), &array![[-0.25, 0.25], [0.0, 0.0]]);
    /// ```
    #[track_caller]
    pub fn softmax_cross_entropy(self, targets: Tensor<'t, F>) -> Tensor<'t, F> {
        or_panic(self.try_softmax_cross_entropy(targets))
    }

    /// Softmax cross-entropy from one-hot or probability targets, or an error.
    ///
    /// # Errors
    ///
    /// `Shape` if the shapes differ (when the targets are a column of class indices, its
    /// message points to [`Tensor::try_softmax_cross_entropy_indices`]), `ForeignTensor`
    /// if the tapes differ.
    #[track_caller]
    pub fn try_softmax_cross_entropy(self, targets: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        let location = Location::caller();
        let op = "softmax_cross_entropy";
        self.same_tape(targets, op, location)?;
        if self.shape != targets.shape {
            let rule = if self.looks_like_class_indices(targets) {
                "logits and targets must have the same shape; the targets are a column of \
                 class indices, which softmax_cross_entropy_indices takes (as a &[usize])"
            } else {
                "logits and targets must have the same shape"
            };
            return Err(shape_error(op, self.shape, targets.shape, rule, location));
        }
        let tape = self.tape;
        let inv_n = F::one() / F::cast(self.shape.0 as f64);
        let track = tape.track(&[self, targets]);
        let forward = tape.read2(self.id, targets.id, |z, t| {
            let logp = log_softmax_rows(z);
            // a zero target contributes nothing, also where log p is −∞ (0 · −∞ is NaN)
            let total = Zip::from(&logp).and(&t).fold(F::zero(), |s, &lp, &t| {
                if t == F::zero() { s } else { s + t * lp }
            });
            (-total * inv_n, logp)
        });
        let (y, rule) = match forward {
            Ok((loss, logp)) => {
                let rule = track.then(|| {
                    let saves = Saves::NONE.input_if(1, self.requires_grad);
                    let rule = SoftmaxCrossEntropyBackward { logp, inv_n };
                    (saves, Rule::boxed(rule))
                });
                (Ok(scalar(loss)), rule)
            }
            Err(lost) => (Err(lost), None),
        };
        Ok(tape.record(op, y, (1, 1), &[self, targets], rule, location))
    }

    /// Softmax cross-entropy between logits `self` (N × C) and class indices `classes`
    /// (N of them, each below C): `−Σᵢ log softmax(Z)[i, yᵢ] / N`.
    ///
    /// The derivative: `dZ = (softmax(Z) − onehot(y)) / N`.
    ///
    /// # Panics
    ///
    /// If `classes` does not have one index per row or an index is out of range; see
    /// [`Tensor::try_softmax_cross_entropy_indices`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let z = tape.param(array![[0.0, 0.0], [0.0, 0.0]]);
    /// let loss = z.softmax_cross_entropy_indices(&[0, 1]);
    /// assert!((loss.item() - 2f64.ln()).abs() < 1e-15);
    /// let grads = tape.backward(loss).unwrap();
    /// assert_eq!(grads.get(z).unwrap(), &array![[-0.25, 0.25], [0.25, -0.25]]);
    /// ```
    #[track_caller]
    pub fn softmax_cross_entropy_indices(self, classes: &[usize]) -> Tensor<'t, F> {
        or_panic(self.try_softmax_cross_entropy_indices(classes))
    }

    /// Softmax cross-entropy from class indices, or an error.
    ///
    /// # Errors
    ///
    /// `TargetCount` if `classes.len()` differs from the number of rows, `ClassIndex` if an
    /// index is not below the number of columns.
    #[track_caller]
    pub fn try_softmax_cross_entropy_indices(self, classes: &[usize]) -> Result<Tensor<'t, F>> {
        let location = Location::caller();
        let op = "softmax_cross_entropy_indices";
        let rows = self.shape.0;
        self.check_classes(classes, op, location)?;
        let tape = self.tape;
        let inv_n = F::one() / F::cast(rows as f64);
        let track = tape.track(&[self]);
        let forward = tape.read1(self.id, |z| {
            let logp = log_softmax_rows(z);
            let total = classes
                .iter()
                .enumerate()
                .fold(F::zero(), |s, (i, &c)| s + logp[[i, c]]);
            (-total * inv_n, logp)
        });
        let (y, rule) = match forward {
            Ok((loss, logp)) => {
                let rule = track.then(|| {
                    let probs = exp_of(logp.view());
                    let rule = IndexCrossEntropyBackward {
                        probs,
                        classes: classes.to_vec(),
                        inv_n,
                    };
                    (Saves::NONE, Rule::boxed(rule))
                });
                (Ok(scalar(loss)), rule)
            }
            Err(lost) => (Err(lost), None),
        };
        Ok(tape.record(op, y, (1, 1), &[self], rule, location))
    }
}

/// `dZ = g (softmax(Z) ∘ rowsum(T) − T) / N`, `dT = −g log softmax(Z) / N`.
struct SoftmaxCrossEntropyBackward<F> {
    logp: Array2<F>,
    inv_n: F,
}

impl<F: Float> Backward<F> for SoftmaxCrossEntropyBackward<F> {
    fn backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
        let a = g[[0, 0]] * self.inv_n;
        if ctx.needs_grad(0) {
            let t = ctx.input(1);
            let mut dz = Array2::zeros(self.logp.dim());
            // (no row to walk when empty: there may be 2⁴⁰ rows of nothing)
            if !dz.is_empty() {
                Zip::from(dz.rows_mut())
                    .and(self.logp.rows())
                    .and(t.rows())
                    .for_each(|mut dz, lp, t| {
                        let mass = t.sum();
                        Zip::from(&mut dz)
                            .and(&lp)
                            .and(&t)
                            .for_each(|d, &lp, &t| *d = a * (vk::scalar(vk::Exp, lp) * mass - t));
                    });
            }
            ctx.accumulate(0, dz);
        }
        if ctx.needs_grad(1) {
            ctx.accumulate_scaled(1, -a, self.logp.view());
        }
    }

    /// `dZ = g (softmax(Z) ∘ rowsum(T) − T) / N`, `dT = −g log softmax(Z) / N`, recorded
    /// from the inputs.
    fn backward_tensor<'t>(&self, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
        let (z, t) = (ctx.input(0), ctx.input(1));
        let a = g.mul_scalar(self.inv_n);
        let logp = z.try_log_softmax(Axis(1))?;
        if ctx.needs_grad(0) {
            let mass = t.try_sum_axis(Axis(1))?;
            let dz = logp.exp().try_mul(mass)?.try_sub(t)?.try_mul(a)?;
            ctx.accumulate(0, dz)?;
        }
        if ctx.needs_grad(1) {
            ctx.accumulate(1, logp.try_mul(a)?.neg())?;
        }
        Ok(())
    }
}

/// `dZ = g (softmax(Z) − onehot(y)) / N`.
struct IndexCrossEntropyBackward<F> {
    probs: Array2<F>,
    classes: Vec<usize>,
    inv_n: F,
}

impl<F: Float> Backward<F> for IndexCrossEntropyBackward<F> {
    fn backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
        let a = g[[0, 0]] * self.inv_n;
        let mut dz = self.probs.mapv(|p| a * p);
        for (i, &c) in self.classes.iter().enumerate() {
            dz[[i, c]] -= a;
        }
        ctx.accumulate(0, dz);
    }

    /// `dZ = g (softmax(Z) − onehot(y)) / N`, recorded from the input.
    fn backward_tensor<'t>(&self, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
        let z = ctx.input(0);
        let mut onehot = Array2::zeros(z.shape());
        for (i, &c) in self.classes.iter().enumerate() {
            onehot[[i, c]] = F::one();
        }
        let p = z.try_softmax(Axis(1))?;
        let dz = p
            .try_sub(ctx.constant(onehot))?
            .try_mul(g.mul_scalar(self.inv_n))?;
        ctx.accumulate(0, dz)
    }
}

/// `dX = −g onehot(y) / N`.
struct NllBackward<F> {
    classes: Vec<usize>,
    inv_n: F,
}

impl<F: Float> NllBackward<F> {
    /// `−onehot(y) / N` in the input's shape.
    fn weights(&self, shape: (usize, usize)) -> Array2<F> {
        let mut w = Array2::zeros(shape);
        for (i, &c) in self.classes.iter().enumerate() {
            w[[i, c]] = -self.inv_n;
        }
        w
    }
}

impl<F: Float> Backward<F> for NllBackward<F> {
    fn backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
        let shape = ctx.input_shape(0);
        let g = g[[0, 0]];
        ctx.accumulate(0, self.weights(shape).mapv(|w| w * g));
    }

    fn backward_tensor<'t>(&self, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
        let w = ctx.constant(self.weights(ctx.input(0).shape()));
        ctx.accumulate(0, w.try_mul(g)?)
    }
}

#[cfg(test)]
mod tests {
    use ndarray::array;

    use crate::Tape;

    #[test]
    fn indices_and_one_hot_agree() {
        let z = array![[0.3, -1.2, 2.0], [1.5, 0.1, -0.4]];
        let tape = Tape::<f64>::new();
        let (a, b) = (tape.param(&z), tape.param(&z));
        let onehot = tape.constant(array![[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]);
        let l1 = a.softmax_cross_entropy(onehot);
        let l2 = b.softmax_cross_entropy_indices(&[2, 0]);
        assert!((l1.item() - l2.item()).abs() < 1e-15);
        let grads = tape.backward(l1.add(l2)).unwrap();
        let (ga, gb) = (grads.get(a).unwrap(), grads.get(b).unwrap());
        assert!((ga - gb).iter().all(|d| d.abs() < 1e-15));
    }
}
