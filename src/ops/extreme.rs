//! Extreme values: `max` and `min` over all elements (1 × 1) or along an axis (kept with
//! length 1), and `argmax` / `argmin` along an axis (indices, no gradient).
//!
//! VJP, with `G = ∂L/∂Y`: the gradient of each lane goes to the elements equal to its
//! extreme, shared equally between ties (JAX's convention, and PyTorch's for `amax`):
//! `dX = G ∘ [X = Y] / (number of ties in the lane)`, G broadcast back along the axis.
//! Saves X and Y. The tensor form multiplies the broadcast G by the same weights as a
//! constant (they are piecewise constant).
//!
//! NaN propagates: a lane holding a NaN has NaN for its extreme (and gets no gradient),
//! and `argmax` / `argmin` give the first NaN's index, as NumPy does. An empty lane's max
//! is −∞ and its min +∞; its arg-extreme is an error.

use std::panic::Location;

use ndarray::{Array2, ArrayView1, ArrayView2, Axis, Zip};

use crate::error::{Error, ErrorKind, Result, allocated, check_size, or_panic};
use crate::grad::Ctx;
use crate::higher::TensorCtx;
use crate::kernels;
use crate::rule::{Rule, Saves};
use crate::{Float, Tensor};

/// The extreme of a lane (`larger`: the maximum), NaN if it holds one, ∓∞ if empty.
fn extreme<F: Float>(lane: ArrayView1<'_, F>, larger: bool) -> F {
    let start = if larger {
        F::neg_infinity()
    } else {
        F::infinity()
    };
    lane.fold(start, |m, &v| {
        if m.is_nan() || v.is_nan() {
            m + v
        } else if (larger && v > m) || (!larger && v < m) {
            v
        } else {
            m
        }
    })
}

/// The index of a lane's first extreme (or first NaN).
fn arg_extreme<F: Float>(lane: ArrayView1<'_, F>, larger: bool) -> usize {
    let mut best = 0;
    for (i, &v) in lane.iter().enumerate() {
        let b = lane[best];
        if b.is_nan() {
            break;
        }
        if v.is_nan() || (larger && v > b) || (!larger && v < b) {
            best = i;
        }
    }
    best
}

/// The extreme's rule: `dX = G ∘ W` with the tie-sharing weights `W`. The parameter says
/// which axis the op reduced (0, 1, or 2 for all).
fn extreme_backward<F: Float>(axis: F, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    let (x, y) = (ctx.input(0), ctx.output());
    let w = tie_weights(x, y, axis_of(axis));
    let d = Zip::from(&w)
        .and_broadcast(&g)
        .map_collect(|&w, &g| if w == F::zero() { F::zero() } else { g * w });
    ctx.accumulate(0, d);
}

/// `dX = broadcast(G) ∘ W`, recorded.
fn extreme_tensor<'t, F: Float>(
    axis: F,
    g: Tensor<'t, F>,
    ctx: &mut TensorCtx<'_, 't, F>,
) -> Result<()> {
    let (x, y) = (ctx.input(0), ctx.output());
    let w = tie_weights(x.try_value()?.view(), y.try_value()?.view(), axis_of(axis));
    let shape = x.shape();
    ctx.accumulate(0, g.try_broadcast_to(shape)?.try_mul(ctx.constant(w))?)
}

/// The reduced axis from a rule's parameter (2 for all elements).
fn axis_of<F: Float>(a: F) -> Option<Axis> {
    match a.as_f64() as usize {
        0 => Some(Axis(0)),
        1 => Some(Axis(1)),
        _ => None,
    }
}

/// `[X = Y] / ties` per lane, over X's shape.
fn tie_weights<F: Float>(
    x: ArrayView2<'_, F>,
    y: ArrayView2<'_, F>,
    axis: Option<Axis>,
) -> Array2<F> {
    let yb = y.broadcast(x.dim()).expect("Y is X's shape reduced");
    let mut w = Zip::from(&x)
        .and(&yb)
        .map_collect(|&x, &y| if x == y { F::one() } else { F::zero() });
    if w.is_empty() {
        return w;
    }
    let ties = match axis {
        None => Array2::from_elem((1, 1), w.sum()),
        Some(a) => w.sum_axis(a).insert_axis(a),
    };
    Zip::from(&mut w).and_broadcast(&ties).for_each(|w, &n| {
        if *w != F::zero() {
            *w /= n;
        }
    });
    w
}

/// # Maxima and minima
///
/// Of the whole matrix or along an axis, and their positions.
impl<'t, F: Float> Tensor<'t, F> {
    fn extreme(
        self,
        op: &'static str,
        axis: Option<Axis>,
        larger: bool,
        location: &'static Location<'static>,
    ) -> Result<Tensor<'t, F>> {
        if let Some(a) = axis.filter(|a| a.index() > 1) {
            return Err(Error::new(
                op,
                ErrorKind::Axis { axis: a.index() },
                location,
            ));
        }
        let (m, n) = self.shape;
        let shape = match axis {
            None => (1, 1),
            Some(Axis(0)) => (1, n),
            Some(_) => (m, 1),
        };
        check_size::<F>(op, shape, location)?;
        let tape = self.tape;
        let y = tape.read1(self.id, |x| match axis {
            None => {
                let all = x.iter().copied().collect::<ndarray::Array1<F>>();
                Some(Array2::from_elem((1, 1), extreme(all.view(), larger)))
            }
            Some(a) => {
                let empty = if larger {
                    F::neg_infinity()
                } else {
                    F::infinity()
                };
                let mut out = kernels::try_zeros(shape)?;
                if x.len_of(a) == 0 {
                    out.fill(empty);
                } else {
                    Zip::from(&mut out.view_mut().remove_axis(a))
                        .and(x.lanes(a))
                        .for_each(|o, lane| *o = extreme(lane, larger));
                }
                Some(out)
            }
        });
        let y = allocated(y, op, shape, location)?;
        let code = F::cast(axis.map_or(2.0, |a| a.index() as f64));
        let rule = tape.track(&[self]).then(|| {
            let saves = Saves::output().input_if(0, true);
            (
                saves,
                Rule::with_param(extreme_backward, extreme_tensor, code),
            )
        });
        Ok(tape.record(op, y, shape, &[self], rule, location))
    }

    /// The largest element, as a 1 × 1 tensor (NaN if any element is NaN, −∞ if empty).
    ///
    /// The derivative goes to the largest element; ties share it equally.
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[1.0, 4.0], [4.0, 2.0]]);
    /// let y = x.max();
    /// assert_eq!(y.item(), 4.0);
    /// let grads = tape.backward(y).unwrap();
    /// assert_eq!(grads.get(x).unwrap(), &array![[0.0, 0.5], [0.5, 0.0]]);
    /// ```
    #[track_caller]
    pub fn max(self) -> Tensor<'t, F> {
        or_panic(self.extreme("max", None, true, Location::caller()))
    }

    /// The smallest element, as a 1 × 1 tensor (NaN if any element is NaN, +∞ if empty).
    /// The derivative goes to the smallest element; ties share it equally.
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[1.0, 4.0]]);
    /// let grads = tape.backward(x.min()).unwrap();
    /// assert_eq!(grads.get(x).unwrap(), &array![[1.0, 0.0]]);
    /// ```
    #[track_caller]
    pub fn min(self) -> Tensor<'t, F> {
        or_panic(self.extreme("min", None, false, Location::caller()))
    }

    /// The largest element of each lane along `axis`, keeping it (1 × n for `Axis(0)`,
    /// m × 1 for `Axis(1)`). The derivative goes to each lane's largest element; ties
    /// share it equally.
    ///
    /// # Panics
    ///
    /// If `axis` is not 0 or 1; see [`Tensor::try_max_axis`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::{array, Axis};
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[1.0, 4.0], [3.0, 2.0]]);
    /// let y = x.max_axis(Axis(1));
    /// assert_eq!(y.value(), array![[4.0], [3.0]]);
    /// let grads = tape.backward(y.sum()).unwrap();
    /// assert_eq!(grads.get(x).unwrap(), &array![[0.0, 1.0], [1.0, 0.0]]);
    /// ```
    #[track_caller]
    pub fn max_axis(self, axis: Axis) -> Tensor<'t, F> {
        or_panic(self.try_max_axis(axis))
    }

    /// The largest element of each lane along `axis`, or an error.
    ///
    /// # Errors
    ///
    /// `Axis` if `axis` is not 0 or 1; `TooLarge` or `OutOfMemory` if the result does not
    /// fit.
    #[track_caller]
    pub fn try_max_axis(self, axis: Axis) -> Result<Tensor<'t, F>> {
        self.extreme("max_axis", Some(axis), true, Location::caller())
    }

    /// The smallest element of each lane along `axis`, keeping it. The derivative goes to
    /// each lane's smallest element; ties share it equally.
    ///
    /// # Panics
    ///
    /// If `axis` is not 0 or 1; see [`Tensor::try_min_axis`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::{array, Axis};
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[1.0, 4.0], [3.0, 2.0]]);
    /// assert_eq!(x.min_axis(Axis(0)).value(), array![[1.0, 2.0]]);
    /// ```
    #[track_caller]
    pub fn min_axis(self, axis: Axis) -> Tensor<'t, F> {
        or_panic(self.try_min_axis(axis))
    }

    /// The smallest element of each lane along `axis`, or an error.
    ///
    /// # Errors
    ///
    /// As [`Tensor::try_max_axis`].
    #[track_caller]
    pub fn try_min_axis(self, axis: Axis) -> Result<Tensor<'t, F>> {
        self.extreme("min_axis", Some(axis), false, Location::caller())
    }

    fn arg_extreme(
        self,
        op: &'static str,
        axis: Axis,
        larger: bool,
        location: &'static Location<'static>,
    ) -> Result<Vec<usize>> {
        if axis.index() > 1 {
            return Err(Error::new(
                op,
                ErrorKind::Axis { axis: axis.index() },
                location,
            ));
        }
        if self.shape.0 == 0 || self.shape.1 == 0 {
            let kind = ErrorKind::Empty { shape: self.shape };
            return Err(Error::new(op, kind, location));
        }
        let inner = self.tape.inner();
        let x = crate::tape::view_of(&inner.values, self.id)
            .map_err(|lost| inner.released(self.id, lost, location))?;
        Ok(x.lanes(axis)
            .into_iter()
            .map(|lane| arg_extreme(lane, larger))
            .collect())
    }

    /// The index of the largest element of each lane along `axis` (one per column for
    /// `Axis(0)`, one per row for `Axis(1)`): the first, among ties; the first NaN, if
    /// any. Indices have no gradient.
    ///
    /// # Panics
    ///
    /// As [`Tensor::try_argmax`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::{array, Axis};
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let logits = tape.constant(array![[0.1, 2.0, -1.0], [3.0, 0.0, 3.0]]);
    /// assert_eq!(logits.argmax(Axis(1)), vec![1, 0]);
    /// assert_eq!(logits.argmax(Axis(0)), vec![1, 0, 1]);
    /// ```
    #[track_caller]
    pub fn argmax(self, axis: Axis) -> Vec<usize> {
        or_panic(self.try_argmax(axis))
    }

    /// The index of the largest element of each lane, or an error.
    ///
    /// # Errors
    ///
    /// `Axis` if `axis` is not 0 or 1, `Empty` if the tensor has no element, `Released`
    /// if backward released its value.
    #[track_caller]
    pub fn try_argmax(self, axis: Axis) -> Result<Vec<usize>> {
        self.arg_extreme("argmax", axis, true, Location::caller())
    }

    /// The index of the smallest element of each lane along `axis`; see
    /// [`Tensor::argmax`].
    ///
    /// # Panics
    ///
    /// As [`Tensor::try_argmin`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::{array, Axis};
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.constant(array![[0.1, 2.0, -1.0]]);
    /// assert_eq!(x.argmin(Axis(1)), vec![2]);
    /// ```
    #[track_caller]
    pub fn argmin(self, axis: Axis) -> Vec<usize> {
        or_panic(self.try_argmin(axis))
    }

    /// The index of the smallest element of each lane, or an error.
    ///
    /// # Errors
    ///
    /// As [`Tensor::try_argmax`].
    #[track_caller]
    pub fn try_argmin(self, axis: Axis) -> Result<Vec<usize>> {
        self.arg_extreme("argmin", axis, false, Location::caller())
    }
}
