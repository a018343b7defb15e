//! Fused regression losses. Each returns a 1 × 1 tensor.
//!
//! VJPs, with `g = ∂L/∂loss` (a scalar) and `N` rows, `C` columns:
//!
//! - `mse = Σ (P − T)² / NC`: `dP = 2g (P − T) / NC`, `dT = −dP`. Saves `P − T`, which the
//!   forward computed anyway.

use std::panic::Location;

use ndarray::{Array2, Zip};

use crate::error::{Result, or_panic, shape_error};
use crate::grad::Ctx;
use crate::higher::TensorCtx;
use crate::rule::{Backward, Rule, Saves};
use crate::{Float, Tensor};

/// The scalar loss as a 1 × 1 array.
pub(super) fn scalar<F: Float>(x: F) -> Array2<F> {
    Array2::from_elem((1, 1), x)
}

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
        let location = Location::caller();
        self.same_tape(target, "mse_loss", location)?;
        if self.shape != target.shape {
            let rule = "prediction and target must have the same shape";
            return Err(shape_error(
                "mse_loss",
                self.shape,
                target.shape,
                rule,
                location,
            ));
        }
        let tape = self.tape;
        let scale = F::cast(2.0) / F::cast((self.shape.0 * self.shape.1) as f64);
        let track = tape.track(&[self, target]);
        let forward = tape.read2(self.id, target.id, |p, t| {
            let mut sq = F::zero();
            let diff = Zip::from(&p).and(&t).map_collect(|&p, &t| {
                let d = p - t;
                sq += d * d;
                d
            });
            (sq * scale / F::cast(2.0), diff)
        });
        let (y, rule) = match forward {
            Ok((loss, diff)) => {
                let rule = track.then(|| (Saves::NONE, Rule::boxed(MseBackward { diff, scale })));
                (Ok(scalar(loss)), rule)
            }
            Err(lost) => (Err(lost), None),
        };
        Ok(tape.record("mse_loss", y, (1, 1), &[self, target], rule, location))
    }
}

/// `dP = 2g (P − T) / NC`, `dT = −dP`.
struct MseBackward<F> {
    diff: Array2<F>,
    /// `2 / NC`
    scale: F,
}

impl<F: Float> Backward<F> for MseBackward<F> {
    fn backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
        let a = g[[0, 0]] * self.scale;
        if ctx.needs_grad(0) {
            ctx.accumulate_scaled(0, a, self.diff.view());
        }
        if ctx.needs_grad(1) {
            ctx.accumulate_scaled(1, -a, self.diff.view());
        }
    }

    /// `dP = 2g (P − T) / NC`, `dT = −dP`, recorded from the inputs.
    fn backward_tensor<'t>(&self, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
        let d = ctx.input(0).try_sub(ctx.input(1))?;
        let dp = d.try_mul(g.mul_scalar(self.scale))?;
        if ctx.needs_grad(1) {
            ctx.accumulate(1, dp.neg())?;
        }
        if ctx.needs_grad(0) {
            ctx.accumulate(0, dp)?;
        }
        Ok(())
    }
}
