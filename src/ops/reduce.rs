//! Reductions: `sum` and `mean` over all elements (1 × 1) or along one axis (the axis is
//! kept with length 1: 1 × n for axis 0, m × 1 for axis 1).
//!
//! VJP, with `G = ∂L/∂Y`: `dX = c·G` broadcast back to X's shape, with `c = 1` for sums
//! and `1 / (number of elements reduced)` for means. The rule saves nothing: the shape is
//! on the tape. An empty mean is NaN (0 / 0), as in NumPy.

use std::panic::Location;

use ndarray::{Array2, Axis};

use crate::error::{Error, ErrorKind, Result, allocated, check_size, or_panic};
use crate::grad::Ctx;
use crate::higher::TensorCtx;
use crate::kernels;
use crate::rule::{Rule, Saves};
use crate::{Float, Tensor};

/// `dX = c·G`, broadcast.
fn reduce_backward<F: Float>(c: F, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    ctx.accumulate_scaled(0, c, g.view());
    crate::pool::recycle_array(g);
}

/// `dX = c·G`, broadcast, recorded.
fn reduce_tensor<'t, F: Float>(
    c: F,
    g: Tensor<'t, F>,
    ctx: &mut TensorCtx<'_, 't, F>,
) -> Result<()> {
    let d = if c == F::one() { g } else { g.mul_scalar(c) };
    let shape = ctx.input(0).shape();
    ctx.accumulate(0, d.try_broadcast_to(shape)?)
}

/// # Sums and means
///
/// Of the whole matrix or along an axis.
impl<'t, F: Float> Tensor<'t, F> {
    fn reduce(
        self,
        op: &'static str,
        axis: Option<Axis>,
        mean: bool,
        location: &'static Location<'static>,
    ) -> Result<Tensor<'t, F>> {
        let (m, n) = self.shape;
        let (shape, count) = match axis {
            None => ((1, 1), m.saturating_mul(n)),
            Some(Axis(0)) => ((1, n), m),
            Some(_) => ((m, 1), n),
        };
        let c = if mean {
            F::one() / F::cast(count as f64)
        } else {
            F::one()
        };
        let tape = self.tape;
        let y = tape.read1(self.id, |x| {
            let s = match axis {
                None => {
                    let mut total = kernels::pooled((1, 1));
                    total[[0, 0]] = x.sum();
                    total
                }
                // An empty input sums to zeros without walking its (maybe 2⁴⁰) empty
                // lanes; the zeros themselves can be larger than the input.
                Some(_) if x.is_empty() => kernels::try_zeros(shape)?,
                Some(a) => x.sum_axis(a).insert_axis(a),
            };
            Some(if mean { s * c } else { s })
        });
        let y = allocated(y, op, shape, location)?;
        let rule = tape.track(&[self]).then(|| {
            (
                Saves::NONE,
                Rule::with_param(reduce_backward, reduce_tensor, c),
            )
        });
        Ok(tape.record(op, y, shape, &[self], rule, location))
    }

    /// The shape of a reduction along `axis` (0 or 1), the axis kept with length 1.
    fn reduced_shape(self, axis: Axis) -> (usize, usize) {
        match axis {
            Axis(0) => (1, self.shape.1),
            _ => (self.shape.0, 1),
        }
    }

    fn check_axis(
        axis: Axis,
        op: &'static str,
        location: &'static Location<'static>,
    ) -> Result<()> {
        if axis.index() < 2 {
            Ok(())
        } else {
            Err(Error::new(
                op,
                ErrorKind::Axis { axis: axis.index() },
                location,
            ))
        }
    }

    /// Sum of all elements, as a 1 × 1 tensor. The derivative: `dX = G` everywhere.
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[1.0, 2.0], [3.0, 4.0]]);
    /// assert_eq!(x.sum().item(), 10.0);
    /// let grads = tape.backward(x.sum()).unwrap();
    /// assert_eq!(grads.get(x).unwrap(), &array![[1.0, 1.0], [1.0, 1.0]]);
    /// ```
    #[track_caller]
    pub fn sum(self) -> Tensor<'t, F> {
        or_panic(self.reduce("sum", None, false, Location::caller()))
    }

    /// Mean of all elements, as a 1 × 1 tensor. The derivative: `dX = G / mn` everywhere.
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[1.0, 2.0], [3.0, 4.0]]);
    /// assert_eq!(x.mean().item(), 2.5);
    /// let grads = tape.backward(x.mean()).unwrap();
    /// assert_eq!(grads.get(x).unwrap(), &array![[0.25, 0.25], [0.25, 0.25]]);
    /// ```
    #[track_caller]
    pub fn mean(self) -> Tensor<'t, F> {
        or_panic(self.reduce("mean", None, true, Location::caller()))
    }

    /// Sum along `axis`, keeping it: `Axis(0)` gives the 1 × n column sums, `Axis(1)` the
    /// m × 1 row sums. The derivative: `dX = G` broadcast along `axis`.
    ///
    /// # Panics
    ///
    /// If `axis` is not 0 or 1; see [`Tensor::try_sum_axis`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::{array, Axis};
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[1.0, 2.0], [3.0, 4.0]]);
    /// assert_eq!(x.sum_axis(Axis(0)).value(), array![[4.0, 6.0]]);
    /// let w = tape.constant(array![[1.0], [10.0]]);
    /// let grads = tape.backward(x.sum_axis(Axis(1)).mul(w).sum()).unwrap();
    /// assert_eq!(grads.get(x).unwrap(), &array![[1.0, 1.0], [10.0, 10.0]]);
    /// ```
    #[track_caller]
    pub fn sum_axis(self, axis: Axis) -> Tensor<'t, F> {
        or_panic(self.try_sum_axis(axis))
    }

    /// Sum along `axis`, or an error.
    ///
    /// # Errors
    ///
    /// `Axis` if `axis` is not 0 or 1, `TooLarge` or `OutOfMemory` if the result (the sums
    /// of the empty lanes of a huge empty matrix) does not fit.
    #[track_caller]
    pub fn try_sum_axis(self, axis: Axis) -> Result<Tensor<'t, F>> {
        let location = Location::caller();
        Self::check_axis(axis, "sum_axis", location)?;
        check_size::<F>("sum_axis", self.reduced_shape(axis), location)?;
        self.reduce("sum_axis", Some(axis), false, location)
    }

    /// Mean along `axis`, keeping it (1 × n for `Axis(0)`, m × 1 for `Axis(1)`). The
    /// derivative: `dX = G / len(axis)` broadcast along `axis`.
    ///
    /// # Panics
    ///
    /// If `axis` is not 0 or 1; see [`Tensor::try_mean_axis`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::{array, Axis};
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[1.0, 2.0], [3.0, 4.0]]);
    /// assert_eq!(x.mean_axis(Axis(0)).value(), array![[2.0, 3.0]]);
    /// let grads = tape.backward(x.mean_axis(Axis(0)).sum()).unwrap();
    /// assert_eq!(grads.get(x).unwrap(), &array![[0.5, 0.5], [0.5, 0.5]]);
    /// ```
    #[track_caller]
    pub fn mean_axis(self, axis: Axis) -> Tensor<'t, F> {
        or_panic(self.try_mean_axis(axis))
    }

    /// Mean along `axis`, or an error.
    ///
    /// # Errors
    ///
    /// As [`Tensor::try_sum_axis`].
    #[track_caller]
    pub fn try_mean_axis(self, axis: Axis) -> Result<Tensor<'t, F>> {
        let location = Location::caller();
        Self::check_axis(axis, "mean_axis", location)?;
        check_size::<F>("mean_axis", self.reduced_shape(axis), location)?;
        self.reduce("mean_axis", Some(axis), true, location)
    }
}
