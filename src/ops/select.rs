//! Selection between two tensors: elementwise `maximum` and `minimum` (broadcasting like
//! `add`), and `where_(mask, a, b)`.
//!
//! VJPs, with `G = ∂L/∂Y` (summed back to each operand's shape by un-broadcasting):
//!
//! - `Y = maximum(A, B)`: `dA = G ∘ [A > B]`, `dB = G ∘ [B > A]`, and where `A = B` each
//!   gets `G / 2` (ties share the gradient equally: JAX's convention, and PyTorch's for
//!   `amax`). Saves A and B. `minimum` is the same with the comparisons turned.
//! - `Y = where_(M, A, B)` (`M` boolean): `dA = where_(M, G, 0)`, `dB = where_(M, 0, G)`:
//!   selected, so that the side not taken gets exactly 0 where `G` is ±∞ or NaN (`G ∘ M`
//!   would be NaN there). Saves the mask.
//!
//! The tensor forms multiply `G` by the same weights as constants: the weights are
//! piecewise constant, so their own derivative is 0 wherever it exists.

use std::panic::Location;

use ndarray::{Array2, ArrayView2, Zip};

use crate::error::{Error, ErrorKind, Result, allocated, check_size, or_panic, shape_error};
use crate::grad::Ctx;
use crate::higher::TensorCtx;
use crate::kernels::{self, broadcast_shape};
use crate::rule::{Backward, Rule, Saves};
use crate::{Float, Tensor};

/// The share of `G` that `a` gets in `maximum(a, b)` (`larger`) or `minimum(a, b)`.
fn share<F: Float>(a: F, b: F, larger: bool) -> F {
    let wins = if larger { a > b } else { a < b };
    if wins {
        F::one()
    } else if a == b {
        F::cast(0.5)
    } else {
        F::zero()
    }
}

/// `maximum(a, b)` (`larger`) or `minimum(a, b)` of two elements; NaN if either is NaN.
fn pick<F: Float>(a: F, b: F, larger: bool) -> F {
    if a.is_nan() || b.is_nan() {
        return a + b;
    }
    let b_wins = if larger { b > a } else { b < a };
    if b_wins { b } else { a }
}

/// The weights of `G` for input 0 of `maximum` / `minimum`, over the output's shape; input
/// 1 gets `1 − w`.
fn weights<F: Float>(
    ctx_a: ArrayView2<'_, F>,
    ctx_b: ArrayView2<'_, F>,
    shape: (usize, usize),
    larger: bool,
) -> Array2<F> {
    let a = ctx_a.broadcast(shape).expect("the op checked the shapes");
    let b = ctx_b.broadcast(shape).expect("the op checked the shapes");
    Zip::from(&a)
        .and(&b)
        .map_collect(|&a, &b| share(a, b, larger))
}

/// `dA = G ∘ w`, `dB = G ∘ (1 − w)`; the rule's parameter is 1 for maximum, 0 for minimum.
fn extremum_backward<F: Float>(larger: F, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    let w = weights(ctx.input(0), ctx.input(1), g.dim(), larger == F::one());
    if ctx.needs_grad(1) {
        ctx.accumulate_map_view(1, g.view(), w.view(), |g, w| g * (F::one() - w));
    }
    if ctx.needs_grad(0) {
        ctx.accumulate_map(0, g, w.view(), |g, w| g * w);
    }
}

/// `dA = G ∘ w`, `dB = G ∘ (1 − w)` with the weights as constants, recorded.
fn extremum_tensor<'t, F: Float>(
    larger: F,
    g: Tensor<'t, F>,
    ctx: &mut TensorCtx<'_, 't, F>,
) -> Result<()> {
    let (a, b) = (ctx.input(0).try_value()?, ctx.input(1).try_value()?);
    let w = weights(a.view(), b.view(), g.shape(), larger == F::one());
    if ctx.needs_grad(1) {
        let rest = ctx.constant(w.mapv(|w| F::one() - w));
        ctx.accumulate(1, g.try_mul(rest)?)?;
    }
    if ctx.needs_grad(0) {
        ctx.accumulate(0, g.try_mul(ctx.constant(w))?)?;
    }
    Ok(())
}

/// `dA = G ∘ M`, `dB = G ∘ (1 − M)`, `M` as 1 and 0 over the output's shape.
struct WhereBackward<F> {
    mask: Array2<F>,
}

impl<F: Float> Backward<F> for WhereBackward<F> {
    fn backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
        // selected, not multiplied by the mask: the side not taken gets exactly 0, also
        // where `g` is ±∞ or NaN (as PyTorch's `where(c, g, 0)`)
        let zero = F::zero();
        if ctx.needs_grad(1) {
            ctx.accumulate_map_view(1, g.view(), self.mask.view(), |g, m| {
                if m == zero { g } else { zero }
            });
        }
        if ctx.needs_grad(0) {
            ctx.accumulate_map(
                0,
                g,
                self.mask.view(),
                |g, m| if m == zero { zero } else { g },
            );
        }
    }

    fn backward_tensor<'t>(&self, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
        let mask = self.mask.mapv(|m| m != F::zero());
        let zero = ctx.constant(Array2::zeros((1, 1)));
        if ctx.needs_grad(1) {
            let rest = mask.mapv(|m| !m);
            ctx.accumulate(1, Tensor::try_where_(rest.view(), g, zero)?)?;
        }
        if ctx.needs_grad(0) {
            ctx.accumulate(0, Tensor::try_where_(mask.view(), g, zero)?)?;
        }
        Ok(())
    }
}

/// # Selection
///
/// Elementwise maxima, minima and choice.
impl<'t, F: Float> Tensor<'t, F> {
    fn extremum(
        self,
        other: Tensor<'t, F>,
        op: &'static str,
        larger: bool,
        location: &'static Location<'static>,
    ) -> Result<Tensor<'t, F>> {
        let saves = Saves::NONE.input_if(0, true).input_if(1, true);
        let param = if larger { F::one() } else { F::zero() };
        let rule = move || {
            (
                saves,
                Rule::with_param(extremum_backward, extremum_tensor, param),
            )
        };
        self.binary(other, op, location, move |a, b| pick(a, b, larger), rule)
    }

    /// The elementwise maximum of `self` and `other`, broadcasting like [`Tensor::add`]
    /// (NaN if either is NaN).
    ///
    /// The derivative goes to the larger operand; where they are equal, each gets half
    /// (JAX's convention).
    ///
    /// # Panics
    ///
    /// If the shapes do not broadcast or the tapes differ; see [`Tensor::try_maximum`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let a = tape.param(array![[1.0, 5.0, 2.0]]);
    /// let b = tape.param(array![[3.0, 4.0, 2.0]]);
    /// let y = a.maximum(b);
    /// assert_eq!(y.value(), array![[3.0, 5.0, 2.0]]);
    /// let grads = tape.backward(y.sum()).unwrap();
    /// assert_eq!(grads.get(a).unwrap(), &array![[0.0, 1.0, 0.5]]);
    /// assert_eq!(grads.get(b).unwrap(), &array![[1.0, 0.0, 0.5]]);
    /// ```
    #[track_caller]
    pub fn maximum(self, other: Tensor<'t, F>) -> Tensor<'t, F> {
        or_panic(self.try_maximum(other))
    }

    /// The elementwise maximum, or an error.
    ///
    /// # Errors
    ///
    /// `Shape` if the shapes do not broadcast, `ForeignTensor` if the tapes differ.
    #[track_caller]
    pub fn try_maximum(self, other: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        self.extremum(other, "maximum", true, Location::caller())
    }

    /// The elementwise minimum of `self` and `other`, broadcasting like [`Tensor::add`]
    /// (NaN if either is NaN). The derivative goes to the smaller operand; where they are
    /// equal, each gets half.
    ///
    /// # Panics
    ///
    /// If the shapes do not broadcast or the tapes differ; see [`Tensor::try_minimum`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let a = tape.param(array![[1.0, 5.0]]);
    /// let zero = tape.constant(array![[2.0]]); // broadcast
    /// let y = a.minimum(zero);
    /// assert_eq!(y.value(), array![[1.0, 2.0]]);
    /// let grads = tape.backward(y.sum()).unwrap();
    /// assert_eq!(grads.get(a).unwrap(), &array![[1.0, 0.0]]);
    /// ```
    #[track_caller]
    pub fn minimum(self, other: Tensor<'t, F>) -> Tensor<'t, F> {
        or_panic(self.try_minimum(other))
    }

    /// The elementwise minimum, or an error.
    ///
    /// # Errors
    ///
    /// `Shape` if the shapes do not broadcast, `ForeignTensor` if the tapes differ.
    #[track_caller]
    pub fn try_minimum(self, other: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        self.extremum(other, "minimum", false, Location::caller())
    }

    /// `a` where `mask` holds and `b` elsewhere, elementwise; the mask, `a` and `b`
    /// broadcast together like the operands of [`Tensor::add`].
    ///
    /// The derivative: `dA = G ∘ M`, `dB = G ∘ ¬M` (summed to each operand's shape). No
    /// gradient flows into the mask.
    ///
    /// # Panics
    ///
    /// If the shapes do not broadcast or the tapes differ; see [`Tensor::try_where_`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::{Tape, Tensor};
    ///
    /// let tape = Tape::new();
    /// let a = tape.param(array![[1.0, 2.0, 3.0]]);
    /// let b = tape.param(array![[10.0]]);
    /// let mask = array![[true, false, true]];
    /// let y = Tensor::where_(mask.view(), a, b);
    /// assert_eq!(y.value(), array![[1.0, 10.0, 3.0]]);
    /// let grads = tape.backward(y.sum()).unwrap();
    /// assert_eq!(grads.get(a).unwrap(), &array![[1.0, 0.0, 1.0]]);
    /// assert_eq!(grads.get(b).unwrap(), &array![[1.0]]);
    /// ```
    #[track_caller]
    pub fn where_(mask: ArrayView2<'_, bool>, a: Tensor<'t, F>, b: Tensor<'t, F>) -> Tensor<'t, F> {
        or_panic(Self::try_where_(mask, a, b))
    }

    /// `a` where `mask` holds and `b` elsewhere, or an error.
    ///
    /// # Errors
    ///
    /// `Shape` if the mask, `a` and `b` do not broadcast together, `ForeignTensor` if the
    /// tapes differ, `TooLarge` or `OutOfMemory` if the result does not fit.
    #[track_caller]
    pub fn try_where_(
        mask: ArrayView2<'_, bool>,
        a: Tensor<'t, F>,
        b: Tensor<'t, F>,
    ) -> Result<Tensor<'t, F>> {
        let location = Location::caller();
        let op = "where_";
        a.same_tape(b, op, location)?;
        let rule = "each dimension must be equal, or 1 on one side (broadcasting)";
        let Some(ab) = broadcast_shape(a.shape, b.shape) else {
            return Err(shape_error(op, a.shape, b.shape, rule, location));
        };
        let Some(shape) = broadcast_shape(mask.dim(), ab) else {
            return Err(shape_error(op, mask.dim(), ab, rule, location));
        };
        check_size::<F>(op, shape, location)?;
        let m = mask
            .broadcast(shape)
            .ok_or_else(|| Error::new(op, ErrorKind::TooLarge { shape }, location))?
            .mapv(|m| if m { F::one() } else { F::zero() });
        let tape = a.tape;
        let y = tape.read2(a.id, b.id, |av, bv| {
            let mut y = kernels::try_broadcast(av, shape)?;
            let other = bv.broadcast(shape)?;
            Zip::from(&mut y).and(&other).and(&m).for_each(|y, &b, &m| {
                if m == F::zero() {
                    *y = b;
                }
            });
            Some(y)
        });
        let y = allocated(y, op, shape, location)?;
        let rule = tape
            .track(&[a, b])
            .then(|| (Saves::NONE, Rule::boxed(WhereBackward { mask: m })));
        Ok(tape.record(op, y, shape, &[a, b], rule, location))
    }
}
