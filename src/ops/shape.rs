//! Shape ops: transpose, as a view; `reshape`, a view where the input is contiguous;
//! `broadcast_to`; `concat_rows` and `concat_cols`. None saves anything.
//!
//! - `Y = Xᵀ` shares X's storage with the axes swapped: no copy, and a transposed operand
//!   reaches GEMM as a transpose flag. VJP: `dX = Gᵀ`, G's own buffer with its axes
//!   swapped, so backward copies nothing either.
//! - `Y = reshape(X, (r, c))` reads X's elements in row-major order (as
//!   `ndarray::into_shape_with_order`). VJP: `dX = reshape(G, shape of X)`.
//! - `Y = broadcast_to(X, shape)` repeats a 1 × n row, an m × 1 column or a 1 × 1 scalar
//!   to `shape`. VJP: `dX = sum_to(G)`, the central un-broadcast.
//! - `Y = [X₁; X₂; ...]` (`concat_rows`) stacks the inputs' rows, `[X₁ X₂ ...]`
//!   (`concat_cols`) their columns. VJP: `dXₖ` is G's block of rows (columns) of `Xₖ`.

use std::panic::Location;

use ndarray::{Array2, Axis};

use crate::error::{Error, ErrorKind, Result, allocated, check_size, or_panic, shape_error};
use crate::grad::Ctx;
use crate::higher::TensorCtx;
use crate::kernels::{self, broadcast_shape};
use crate::rule::{Rule, Saves};
use crate::tape::ViewMap;
use crate::{Float, Tensor};

/// `dX = Gᵀ`.
fn transpose_backward<F: Float>(_: F, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    ctx.accumulate(0, g.reversed_axes());
}

/// `dX = Gᵀ`, recorded.
fn transpose_tensor<'t, F: Float>(
    _: F,
    g: Tensor<'t, F>,
    ctx: &mut TensorCtx<'_, 't, F>,
) -> Result<()> {
    ctx.accumulate(0, g.t())
}

/// `dX = sum_to(G)` (the accumulation un-broadcasts).
fn broadcast_backward<F: Float>(_: F, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    ctx.accumulate(0, g);
}

/// `dX = sum_to(G)`, recorded.
fn broadcast_tensor<'t, F: Float>(
    _: F,
    g: Tensor<'t, F>,
    ctx: &mut TensorCtx<'_, 't, F>,
) -> Result<()> {
    ctx.accumulate(0, g)
}

/// `dX = reshape(G, shape of X)`.
fn reshape_backward<F: Float>(_: F, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    let shape = ctx.input_shape(0);
    let g = g.as_standard_layout().into_owned();
    ctx.accumulate(
        0,
        g.into_shape_with_order(shape)
            .expect("the same number of elements"),
    );
}

/// `dX = reshape(G, shape of X)`, recorded.
fn reshape_tensor<'t, F: Float>(
    _: F,
    g: Tensor<'t, F>,
    ctx: &mut TensorCtx<'_, 't, F>,
) -> Result<()> {
    let shape = ctx.input(0).shape();
    ctx.accumulate(0, g.try_reshape(shape)?)
}

/// `dXₖ = Gₖ`, the block of rows (parameter 0) or columns (1) of input `k`.
fn concat_backward<F: Float>(axis: F, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    let axis = Axis(if axis == F::zero() { 0 } else { 1 });
    let mut start = 0;
    for k in 0..ctx.inputs.len() {
        let len = ctx.nodes[ctx.inputs[k]].shape_along(axis);
        if ctx.needs_grad(k) {
            let block = g.slice_axis(axis, ndarray::Slice::from(start..start + len));
            ctx.accumulate_scaled(k, F::one(), block);
        }
        start += len;
    }
}

/// `dXₖ = Gₖ`, recorded as slices of G.
fn concat_tensor<'t, F: Float>(
    axis: F,
    g: Tensor<'t, F>,
    ctx: &mut TensorCtx<'_, 't, F>,
) -> Result<()> {
    let rows = axis == F::zero();
    let mut start = 0;
    for k in 0..ctx.inputs() {
        let (r, c) = ctx.input(k).shape();
        let len = if rows { r } else { c };
        if ctx.needs_grad(k) {
            let block = if rows {
                g.try_slice(start..start + len, ..)?
            } else {
                g.try_slice(.., start..start + len)?
            };
            ctx.accumulate(k, block)?;
        }
        start += len;
    }
    Ok(())
}

/// # Shape
///
/// Transpose, broadcast, reshape, concatenate.
impl<'t, F: Float> Tensor<'t, F> {
    /// The transpose `Xᵀ` (n × m for an m × n tensor), a view of the same storage.
    /// The derivative: `dX = Gᵀ`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let x = array![[1.0, 2.0, 3.0]];
    /// let tape = Tape::new();
    /// let x_t = tape.param(&x);
    /// let gram = x_t.t().matmul(x_t); // Xᵀ·X, 3 × 3, no copy of X
    /// assert_eq!(gram.shape(), (3, 3));
    /// let grads = tape.backward(gram.sum()).unwrap();
    /// // d/dX sum(XᵀX) = X·(1 + 1ᵀ) = 2·(Σx)·1ᵀ for a single row: 2·6 = 12
    /// assert_eq!(grads.get(x_t).unwrap(), &array![[12.0, 12.0, 12.0]]);
    /// ```
    #[track_caller]
    pub fn t(self) -> Tensor<'t, F> {
        let rule = self
            .tape
            .track(&[self])
            .then(|| (Saves::NONE, Rule::new(transpose_backward, transpose_tensor)));
        self.tape.record_alias(
            "t",
            self,
            ViewMap::whole(self.shape, true),
            false,
            rule,
            Location::caller(),
        )
    }

    /// `self` repeated to `shape`: a 1 × n row down the rows, an m × 1 column along the
    /// columns, a 1 × 1 scalar everywhere (numpy's `broadcast_to`, as a new array). The
    /// derivative: `dX = sum_to(G)`, the sums over the repeated axes.
    ///
    /// # Panics
    ///
    /// If `self` does not broadcast to `shape`; see [`Tensor::try_broadcast_to`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let b = tape.param(array![[1.0, 2.0]]);
    /// let y = b.broadcast_to((3, 2));
    /// assert_eq!(y.value(), array![[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]]);
    /// let grads = tape.backward(y.sum()).unwrap();
    /// assert_eq!(grads.get(b).unwrap(), &array![[3.0, 3.0]]); // summed over the rows
    /// ```
    #[track_caller]
    pub fn broadcast_to(self, shape: (usize, usize)) -> Tensor<'t, F> {
        or_panic(self.try_broadcast_to(shape))
    }

    /// `self` repeated to `shape`, or an error.
    ///
    /// # Errors
    ///
    /// `Shape` if `self` does not broadcast to `shape` (each dimension must equal the
    /// target's, or be 1); `TooLarge` or `OutOfMemory` if the result does not fit.
    #[track_caller]
    pub fn try_broadcast_to(self, shape: (usize, usize)) -> Result<Tensor<'t, F>> {
        let location = Location::caller();
        if broadcast_shape(self.shape, shape) != Some(shape) {
            let rule = "each dimension must equal the target's, or be 1";
            return Err(shape_error(
                "broadcast_to",
                self.shape,
                shape,
                rule,
                location,
            ));
        }
        check_size::<F>("broadcast_to", shape, location)?;
        let tape = self.tape;
        let y = tape.read1(self.id, |x| kernels::try_broadcast(x, shape));
        let y = allocated(y, "broadcast_to", shape, location)?;
        let rule = tape
            .track(&[self])
            .then(|| (Saves::NONE, Rule::new(broadcast_backward, broadcast_tensor)));
        Ok(tape.record("broadcast_to", y, shape, &[self], rule, location))
    }

    /// `self`'s elements in row-major order as an `r × c` matrix (as
    /// `ndarray::into_shape_with_order`): a view of the same storage when `self` is
    /// contiguous in row-major order, a copy otherwise.
    ///
    /// The derivative: `dX = reshape(G, shape of X)`.
    ///
    /// # Panics
    ///
    /// If `r × c` differs from the number of elements; see [`Tensor::try_reshape`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]);
    /// let y = x.reshape((3, 2));
    /// assert_eq!(y.value(), array![[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]);
    /// let w = tape.constant(array![[1.0, 0.0], [0.0, 0.0], [0.0, 10.0]]);
    /// let grads = tape.backward(y.mul(w).sum()).unwrap();
    /// assert_eq!(grads.get(x).unwrap(), &array![[1.0, 0.0, 0.0], [0.0, 0.0, 10.0]]);
    /// ```
    #[track_caller]
    pub fn reshape(self, shape: (usize, usize)) -> Tensor<'t, F> {
        or_panic(self.try_reshape(shape))
    }

    /// `self` reshaped to `shape`, or an error.
    ///
    /// # Errors
    ///
    /// `Shape` if `shape` has another number of elements than `self`.
    #[track_caller]
    pub fn try_reshape(self, shape: (usize, usize)) -> Result<Tensor<'t, F>> {
        let location = Location::caller();
        let (r, c) = self.shape;
        if shape.0.checked_mul(shape.1) != Some(r * c) {
            let rule = "the number of elements must stay the same";
            return Err(shape_error("reshape", self.shape, shape, rule, location));
        }
        let tape = self.tape;
        let rule = || {
            tape.track(&[self])
                .then(|| (Saves::NONE, Rule::new(reshape_backward, reshape_tensor)))
        };
        let contiguous = tape.read1(self.id, |x| x.is_standard_layout());
        if contiguous == Ok(true) {
            let map = ViewMap::Reshaped { shape };
            return Ok(tape.record_alias("reshape", self, map, false, rule(), location));
        }
        let y = tape.read1(self.id, |x| {
            let x = x.as_standard_layout().into_owned();
            x.into_shape_with_order(shape)
                .expect("the same number of elements")
        });
        Ok(tape.record("reshape", y, shape, &[self], rule(), location))
    }

    /// The rows of `tensors` stacked, in order (`[X₁; X₂; ...]`, numpy's `vstack`): all
    /// must have the same number of columns.
    ///
    /// The derivative: each input gets its block of G's rows.
    ///
    /// # Panics
    ///
    /// If `tensors` is empty, the column counts differ or the tapes differ; see
    /// [`Tensor::try_concat_rows`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::{Tape, Tensor};
    ///
    /// let tape = Tape::new();
    /// let a = tape.param(array![[1.0, 2.0]]);
    /// let b = tape.param(array![[3.0, 4.0], [5.0, 6.0]]);
    /// let y = Tensor::concat_rows(&[a, b]);
    /// assert_eq!(y.value(), array![[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]);
    /// let w = tape.constant(array![[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]);
    /// let grads = tape.backward(y.mul(w).sum()).unwrap();
    /// assert_eq!(grads.get(b).unwrap(), &array![[2.0, 2.0], [3.0, 3.0]]);
    /// ```
    #[track_caller]
    pub fn concat_rows(tensors: &[Tensor<'t, F>]) -> Tensor<'t, F> {
        or_panic(Self::try_concat_rows(tensors))
    }

    /// The rows of `tensors` stacked, or an error.
    ///
    /// # Errors
    ///
    /// `Empty` for no tensors, `Shape` if the column counts differ, `ForeignTensor` if the
    /// tapes differ, `TooLarge` or `OutOfMemory` if the result does not fit.
    #[track_caller]
    pub fn try_concat_rows(tensors: &[Tensor<'t, F>]) -> Result<Tensor<'t, F>> {
        Self::concat(tensors, Axis(0), Location::caller())
    }

    /// The columns of `tensors` side by side, in order (`[X₁ X₂ ...]`, numpy's `hstack`):
    /// all must have the same number of rows.
    ///
    /// The derivative: each input gets its block of G's columns.
    ///
    /// # Panics
    ///
    /// If `tensors` is empty, the row counts differ or the tapes differ; see
    /// [`Tensor::try_concat_cols`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::{Tape, Tensor};
    ///
    /// let tape = Tape::new();
    /// let a = tape.param(array![[1.0], [2.0]]);
    /// let b = tape.param(array![[3.0, 4.0], [5.0, 6.0]]);
    /// let y = Tensor::concat_cols(&[a, b]);
    /// assert_eq!(y.value(), array![[1.0, 3.0, 4.0], [2.0, 5.0, 6.0]]);
    /// let grads = tape.backward(y.sum()).unwrap();
    /// assert_eq!(grads.get(a).unwrap(), &array![[1.0], [1.0]]);
    /// ```
    #[track_caller]
    pub fn concat_cols(tensors: &[Tensor<'t, F>]) -> Tensor<'t, F> {
        or_panic(Self::try_concat_cols(tensors))
    }

    /// The columns of `tensors` side by side, or an error.
    ///
    /// # Errors
    ///
    /// As [`Tensor::try_concat_rows`], for the row counts.
    #[track_caller]
    pub fn try_concat_cols(tensors: &[Tensor<'t, F>]) -> Result<Tensor<'t, F>> {
        Self::concat(tensors, Axis(1), Location::caller())
    }

    fn concat(
        tensors: &[Tensor<'t, F>],
        axis: Axis,
        location: &'static Location<'static>,
    ) -> Result<Tensor<'t, F>> {
        let op = if axis == Axis(0) {
            "concat_rows"
        } else {
            "concat_cols"
        };
        let Some(&first) = tensors.first() else {
            return Err(Error::new(op, ErrorKind::Empty { shape: (0, 0) }, location));
        };
        let other = |s: (usize, usize)| if axis == Axis(0) { s.1 } else { s.0 };
        let mut total = 0usize;
        for t in tensors {
            first.same_tape(*t, op, location)?;
            if other(t.shape) != other(first.shape) {
                let rule = if axis == Axis(0) {
                    "every input must have the same number of columns"
                } else {
                    "every input must have the same number of rows"
                };
                return Err(shape_error(op, first.shape, t.shape, rule, location));
            }
            // saturated: past `isize::MAX` (the longest an axis may be) it is refused below
            total = total.saturating_add(if axis == Axis(0) {
                t.shape.0
            } else {
                t.shape.1
            });
        }
        let shape = if axis == Axis(0) {
            (total, first.shape.1)
        } else {
            (first.shape.0, total)
        };
        if total > isize::MAX as usize {
            return Err(Error::new(op, ErrorKind::TooLarge { shape }, location));
        }
        check_size::<F>(op, shape, location)?;
        let tape = first.tape;
        let y = {
            let inner = tape.inner();
            let mut out = kernels::try_zeros(shape);
            let mut start = 0;
            let mut lost = None;
            for t in tensors {
                let len = if axis == Axis(0) {
                    t.shape.0
                } else {
                    t.shape.1
                };
                match (crate::tape::view_of(&inner.values, t.id), out.as_mut()) {
                    (Ok(v), Some(out)) => out
                        .slice_axis_mut(axis, ndarray::Slice::from(start..start + len))
                        .assign(&v),
                    (Err(l), _) => lost = Some(l),
                    (Ok(_), None) => {}
                }
                start += len;
            }
            match lost {
                Some(l) => Err(l),
                None => Ok(out),
            }
        };
        let y = allocated(y, op, shape, location)?;
        let code = F::cast(axis.index() as f64);
        let rule = tape.track(tensors).then(|| {
            (
                Saves::NONE,
                Rule::with_param(concat_backward, concat_tensor, code),
            )
        });
        Ok(tape.record(op, y, shape, tensors, rule, location))
    }
}
