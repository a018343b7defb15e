//! Dropout: `Y = X ∘ M / (1 − p)`, each element of the mask `M` kept (1) with probability
//! `1 − p` and dropped (0) with probability `p`, drawn from the caller's generator, so a
//! seeded generator gives the same masks run after run. The scaling keeps the expected
//! value: `E[Y] = X`. (`nn::Dropout` turns it off outside training.)
//!
//! VJP, with `G = ∂L/∂Y`: `dX = G ∘ M / (1 − p)`, the same mask. Saves the scaled mask
//! (owned). The tensor form multiplies by it as a constant.

use std::panic::Location;

use ndarray::Array2;
use rand::{Rng, RngExt};

use crate::error::{Error, ErrorKind, Result, or_panic};
use crate::grad::Ctx;
use crate::higher::TensorCtx;
use crate::rule::{Backward, Rule, Saves};
use crate::{Float, Tensor};

/// `dX = G ∘ S`, `S = M / (1 − p)`.
struct DropoutBackward<F> {
    scaled_mask: Array2<F>,
}

impl<F: Float> Backward<F> for DropoutBackward<F> {
    fn backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
        ctx.accumulate_map(0, g, self.scaled_mask.view(), |g, s| g * s);
    }

    fn backward_tensor<'t>(&self, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
        let s = ctx.constant(self.scaled_mask.clone());
        ctx.accumulate(0, g.try_mul(s)?)
    }
}

/// # Dropout
impl<'t, F: Float> Tensor<'t, F> {
    /// Dropout with probability `p`: each element zeroed with probability `p`, the others
    /// scaled by `1 / (1 − p)`, the mask drawn from `rng` (one draw per element, row-major).
    /// `p = 0` is the identity; `p = 1` gives zeros.
    ///
    /// The derivative: `dX = G ∘ M / (1 − p)`, through the same mask.
    ///
    /// # Panics
    ///
    /// If `p` is not in [0, 1]; see [`Tensor::try_dropout`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::Array2;
    /// use rand::SeedableRng;
    /// use tapegrad::Tape;
    ///
    /// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    /// let tape = Tape::new();
    /// let x = tape.param(Array2::<f64>::ones((2, 4)));
    /// let y = x.dropout(0.5, &mut rng);
    /// // every element is 0 or 1 / (1 − 0.5) = 2
    /// let value = y.value();
    /// assert!(value.iter().all(|&v| v == 0.0 || v == 2.0));
    /// let grads = tape.backward(y.sum()).unwrap();
    /// assert_eq!(grads.get(x).unwrap(), &value); // the same mask, scaled
    /// ```
    #[track_caller]
    pub fn dropout<R: Rng + ?Sized>(self, p: F, rng: &mut R) -> Tensor<'t, F> {
        or_panic(self.try_dropout(p, rng))
    }

    /// Dropout with probability `p`, or an error.
    ///
    /// # Errors
    ///
    /// `Parameter` if `p` is not in [0, 1].
    #[track_caller]
    pub fn try_dropout<R: Rng + ?Sized>(self, p: F, rng: &mut R) -> Result<Tensor<'t, F>> {
        let location = Location::caller();
        if p.is_nan() || p < F::zero() || p > F::one() {
            let kind = ErrorKind::Parameter {
                name: "p",
                value: p.to_string(),
                rule: "must be a probability, in [0, 1]",
            };
            return Err(Error::new("dropout", kind, location));
        }
        let keep = F::one() - p;
        let scale = if keep > F::zero() {
            F::one() / keep
        } else {
            F::zero()
        };
        let keep = keep.as_f64();
        let scaled_mask = Array2::from_shape_simple_fn(self.shape, || {
            if rng.random_bool(keep) {
                scale
            } else {
                F::zero()
            }
        });
        let tape = self.tape;
        let y = tape.read1(self.id, |x| &x * &scaled_mask);
        let rule = tape
            .track(&[self])
            .then(|| (Saves::NONE, Rule::boxed(DropoutBackward { scaled_mask })));
        Ok(tape.record("dropout", y, self.shape, &[self], rule, location))
    }
}
