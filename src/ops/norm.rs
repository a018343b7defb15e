//! Layer normalisation of each row, as one fused op: forward and backward each one pass
//! over the rows, as PyTorch's kernel does (the composition of mean, subtraction, variance,
//! square root, division, scaling and shift records seven ops and keeps their results).
//!
//! Forward, per row `x` of n features: `μ = mean(x)`, `σ² = mean((x − μ)²)` (biased),
//! `r = 1 / √(σ² + ε)`, `x̂ = (x − μ) r`, `y = x̂ ∘ γ + β` with `γ`, `β` 1 × n rows.
//!
//! VJP, with `G = ∂L/∂Y` and `ĝ = G ∘ γ`, per row:
//! `dx = r (ĝ − mean(ĝ) − x̂ ∘ mean(ĝ ∘ x̂))`; and summed over the rows,
//! `dγ = Σ G ∘ x̂`, `dβ = Σ G`. Saves `x̂` and `r` (owned) and `γ`.
//!
//! The tensor form recomputes `x̂` and `r` from X with recorded ops and writes the same
//! formula in them, so the op differentiates to any order.

use std::panic::Location;

use ndarray::{Array2, Axis, Zip};

use crate::error::{Error, ErrorKind, Result, or_panic, shape_error};
use crate::grad::Ctx;
use crate::higher::TensorCtx;
use crate::rule::{Backward, Rule, Saves};
use crate::{Float, Tensor};

/// `x̂` and `r` of every row.
fn normalise<F: Float>(x: ndarray::ArrayView2<'_, F>, eps: F) -> (Array2<F>, Array2<F>) {
    let (m, n) = x.dim();
    let mut xhat = x.to_owned();
    if n == 0 || m == 0 {
        // no row has a feature: nothing reads `r` (and 2⁴⁰ empty rows have no room for it)
        return (xhat, Array2::zeros((0, 1)));
    }
    let mut rstd = Array2::zeros((m, 1));
    let inv_n = F::one() / F::cast(n as f64);
    Zip::from(xhat.rows_mut())
        .and(rstd.rows_mut())
        .for_each(|mut row, mut r| {
            let mu = row.sum() * inv_n;
            let var = row.fold(F::zero(), |s, &v| s + (v - mu) * (v - mu)) * inv_n;
            let inv = F::one() / (var + eps).sqrt();
            row.mapv_inplace(|v| (v - mu) * inv);
            r[0] = inv;
        });
    (xhat, rstd)
}

/// The rule of `layer_norm`.
struct LayerNormBackward<F> {
    xhat: Array2<F>,
    rstd: Array2<F>,
    eps: F,
}

impl<F: Float> Backward<F> for LayerNormBackward<F> {
    fn backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
        let gamma = ctx.input(1);
        if ctx.needs_grad(2) {
            ctx.accumulate_scaled(2, F::one(), g.view());
        }
        if ctx.needs_grad(1) {
            // (column sums that skip the 2⁴⁰ empty rows of an empty input)
            let d = crate::kernels::sum_to_shape((&g * &self.xhat).view(), (1, g.ncols()));
            ctx.accumulate(1, d);
        }
        if ctx.needs_grad(0) {
            let n = self.xhat.ncols();
            let mut dx = g;
            if n > 0 && dx.nrows() > 0 {
                let inv_n = F::one() / F::cast(n as f64);
                Zip::from(dx.rows_mut())
                    .and(self.xhat.rows())
                    .and(self.rstd.rows())
                    .for_each(|mut d, xh, r| {
                        // ĝ = G ∘ γ; mean(ĝ), mean(ĝ ∘ x̂)
                        let (mut sg, mut sgx) = (F::zero(), F::zero());
                        Zip::from(&mut d)
                            .and(&xh)
                            .and(gamma.row(0))
                            .for_each(|d, &xh, &gm| {
                                *d *= gm;
                                sg += *d;
                                sgx += *d * xh;
                            });
                        let (mg, mgx, r) = (sg * inv_n, sgx * inv_n, r[0]);
                        Zip::from(&mut d)
                            .and(&xh)
                            .for_each(|d, &xh| *d = r * (*d - mg - xh * mgx));
                    });
            }
            ctx.accumulate(0, dx);
        }
    }

    fn backward_tensor<'t>(&self, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
        let (x, gamma) = (ctx.input(0), ctx.input(1));
        let xc = x.try_sub(x.try_mean_axis(Axis(1))?)?;
        let var = xc.square().try_mean_axis(Axis(1))?;
        let rstd = var.add_scalar(self.eps).sqrt().recip();
        let xhat = xc.try_mul(rstd)?;
        if ctx.needs_grad(2) {
            ctx.accumulate(2, g)?;
        }
        if ctx.needs_grad(1) {
            ctx.accumulate(1, g.try_mul(xhat)?.try_sum_axis(Axis(0))?)?;
        }
        if ctx.needs_grad(0) {
            let gh = g.try_mul(gamma)?;
            let centred = gh.try_sub(gh.try_mean_axis(Axis(1))?)?;
            let along = xhat.try_mul(gh.try_mul(xhat)?.try_mean_axis(Axis(1))?)?;
            ctx.accumulate(0, centred.try_sub(along)?.try_mul(rstd)?)?;
        }
        Ok(())
    }
}

/// # Normalisation
impl<'t, F: Float> Tensor<'t, F> {
    /// Layer normalisation of each row (the features of one token or sample), then an
    /// affine map: `y = (x − μ) / √(σ² + ε) ∘ γ + β`, with the row's mean `μ` and biased
    /// variance `σ²`, and the 1 × n rows `gamma` and `beta`. One fused op, forward and
    /// backward (see [`crate::nn::LayerNorm`] for the layer).
    ///
    /// The derivative, with `x̂` the normalised row, `r = 1/√(σ² + ε)` and `ĝ = G ∘ γ`:
    /// `dx = r (ĝ − mean(ĝ) − x̂ ∘ mean(ĝ ∘ x̂))`, `dγ = Σ G ∘ x̂`, `dβ = Σ G` (sums over
    /// the rows).
    ///
    /// # Panics
    ///
    /// If `gamma` or `beta` is not 1 × n, `eps` is not positive, or the tapes differ; see
    /// [`Tensor::try_layer_norm`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[1.0, 2.0, 3.0]]);
    /// let (gamma, beta) = (tape.param(array![[1.0, 1.0, 1.0]]), tape.param(array![[0.0, 0.0, 0.0]]));
    /// let y = x.layer_norm(gamma, beta, 0.0);
    /// let expected = [-1.5f64.sqrt(), 0.0, 1.5f64.sqrt()]; // (x − 2) / √(2/3)
    /// for (a, b) in y.value().iter().zip(expected) {
    ///     assert!((a - b).abs() < 1e-12);
    /// }
    /// ```
    #[track_caller]
    pub fn layer_norm(self, gamma: Tensor<'t, F>, beta: Tensor<'t, F>, eps: F) -> Tensor<'t, F> {
        or_panic(self.try_layer_norm(gamma, beta, eps))
    }

    /// Layer normalisation of each row, or an error.
    ///
    /// # Errors
    ///
    /// `Shape` if `gamma` or `beta` is not 1 × (columns of `self`), `Parameter` if `eps` is
    /// negative or NaN, `ForeignTensor` if the tapes differ.
    #[track_caller]
    pub fn try_layer_norm(
        self,
        gamma: Tensor<'t, F>,
        beta: Tensor<'t, F>,
        eps: F,
    ) -> Result<Tensor<'t, F>> {
        let location = Location::caller();
        let op = "layer_norm";
        self.same_tape(gamma, op, location)?;
        self.same_tape(beta, op, location)?;
        let row = (1, self.shape.1);
        for p in [gamma, beta] {
            if p.shape != row {
                let rule = "gamma and beta must be 1 × (columns of the input)";
                return Err(shape_error(op, self.shape, p.shape, rule, location));
            }
        }
        if eps.is_nan() || eps < F::zero() {
            let kind = ErrorKind::Parameter {
                name: "eps",
                value: eps.to_string(),
                rule: "must not be negative",
            };
            return Err(Error::new(op, kind, location));
        }
        let tape = self.tape;
        let inner = tape.inner();
        let views = (
            crate::tape::view_of(&inner.values, self.id),
            crate::tape::view_of(&inner.values, gamma.id),
            crate::tape::view_of(&inner.values, beta.id),
        );
        let (y, state) = match views {
            (Ok(x), Ok(g), Ok(b)) => {
                let (xhat, rstd) = normalise(x, eps);
                let mut y = xhat.clone();
                // (an empty input has nothing to shift, but may have 2⁴⁰ empty rows)
                if !y.is_empty() {
                    Zip::from(y.rows_mut()).for_each(|mut row| {
                        Zip::from(&mut row)
                            .and(g.row(0))
                            .and(b.row(0))
                            .for_each(|v, &g, &b| *v = *v * g + b)
                    });
                }
                (Ok(y), Some((xhat, rstd)))
            }
            (Err(l), _, _) | (_, Err(l), _) | (_, _, Err(l)) => (Err(l), None),
        };
        drop(inner);
        // (a result of a released input records no rule: it cannot be differentiated)
        let rule = state
            .filter(|_| tape.track(&[self, gamma, beta]))
            .map(|(xhat, rstd)| {
                let saves = Saves::NONE.input_if(1, true);
                (saves, Rule::boxed(LayerNormBackward { xhat, rstd, eps }))
            });
        Ok(tape.record(op, y, self.shape, &[self, gamma, beta], rule, location))
    }
}
