//! Indexing: `slice` (rows and columns, ranges with steps: a view, no copy) and
//! `gather_rows` (an embedding lookup), with their adjoints `embed` and `scatter_rows`
//! (crate-internal: the tensor forms of the first two's rules).
//!
//! VJPs, with `G = ∂L/∂Y`:
//!
//! - `Y = X[rows, cols]`: `dX[rows, cols] += G`, the rest untouched (added in place into
//!   the gradient's buffer). Saves nothing.
//! - `Y = X[idx, :]` (`Yᵢ = X_{idxᵢ}`): `dX_{idxᵢ} += Gᵢ` for every `i`, a scatter-add, so
//!   a row gathered twice gets both rows of G. Saves the indices.
//!
//! `embed` (zeros with G placed at `[rows, cols]`) and `scatter_rows` are linear; the VJP
//! of each is the other's forward, so the pairs differentiate to any order.

use std::ops::{Range, RangeFrom, RangeFull, RangeInclusive, RangeTo, RangeToInclusive};
use std::panic::Location;

use ndarray::{Array2, Axis, Zip};

use crate::error::{Error, ErrorKind, Result, allocated, check_size, or_panic};
use crate::grad::Ctx;
use crate::higher::TensorCtx;
use crate::kernels;
use crate::rule::{Backward, Rule, Saves};
use crate::tape::{Lane, ViewMap, slice_lanes};
use crate::{Float, Tensor};

/// Rows or columns to select: a range with a step, made from any `usize` range (`2..5`,
/// `1..`, `..3`, `..`, `0..=4`) and [`Span::step`].
///
/// ```
/// use tapegrad::ops::Span;
///
/// let every_other = Span::from(..).step(2);
/// let middle = Span::from(1..4);
/// # let _ = (every_other, middle);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    start: usize,
    /// `None`: to the end.
    end: Option<usize>,
    step: usize,
}

impl Span {
    /// Every `step`-th index of the range, from its start.
    pub fn step(mut self, step: usize) -> Self {
        self.step = step;
        self
    }

    /// The lane of an axis of length `len`, or the error for `op` on `axis`.
    fn lane(
        self,
        len: usize,
        axis: usize,
        op: &'static str,
        location: &'static Location<'static>,
    ) -> Result<Lane> {
        let end = self.end.unwrap_or(len);
        if self.step == 0 || self.start > end || end > len {
            let kind = ErrorKind::Slice {
                axis,
                start: self.start,
                end,
                step: self.step,
                len,
            };
            return Err(Error::new(op, kind, location));
        }
        Ok(Lane {
            start: self.start,
            len: (end - self.start).div_ceil(self.step),
            step: self.step,
        })
    }
}

macro_rules! span_from {
    ($range:ty, |$r:ident| $start:expr, $end:expr) => {
        impl From<$range> for Span {
            fn from($r: $range) -> Self {
                Span {
                    start: $start,
                    end: $end,
                    step: 1,
                }
            }
        }
    };
}

span_from!(Range<usize>, |r| r.start, Some(r.end));
span_from!(RangeFrom<usize>, |r| r.start, None);
span_from!(RangeTo<usize>, |r| 0, Some(r.end));
span_from!(RangeFull, |_r| 0, None);
span_from!(RangeInclusive<usize>, |r| *r.start(), Some(r.end() + 1));
span_from!(RangeToInclusive<usize>, |r| 0, Some(r.end + 1));

/// The rule of `slice`: `dX[rows, cols] += G`, the lanes read from the view the slice
/// recorded (a plain function: no rule object per slice).
fn slice_backward<F: Float>(_: F, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    let (rows, cols) = slice_lanes(ctx.values, ctx.output, ctx.inputs[0], ctx.input_shape(0));
    ctx.accumulate_region(0, rows, cols, g.view());
    crate::pool::recycle_array(g);
}

/// `dX = embed(G)`: `G` in the rows and columns the slice took, zeros elsewhere; recorded.
fn slice_tensor<'t, F: Float>(
    _: F,
    g: Tensor<'t, F>,
    ctx: &mut TensorCtx<'_, 't, F>,
) -> Result<()> {
    let (rows, cols) = ctx.slice_lanes(0);
    let shape = ctx.input(0).shape();
    ctx.accumulate(0, g.embed(rows, cols, shape)?)
}

/// The rule of `embed`: `dG = G'[rows, cols]`.
struct EmbedBackward {
    rows: Lane,
    cols: Lane,
}

impl<F: Float> Backward<F> for EmbedBackward {
    fn backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
        let region = ViewMap::Strided {
            rows: self.rows,
            cols: self.cols,
            transposed: false,
        }
        .apply(g.view());
        ctx.accumulate_scaled(0, F::one(), region);
        crate::pool::recycle_array(g);
    }

    fn backward_tensor<'t>(&self, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
        ctx.accumulate(0, g.slice_lanes(self.rows, self.cols, Location::caller()))
    }
}

/// The rule of `gather_rows`: `dX_{idxᵢ} += Gᵢ`.
struct GatherBackward {
    indices: Vec<usize>,
}

impl<F: Float> Backward<F> for GatherBackward {
    fn backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
        ctx.accumulate_rows(0, &self.indices, g.view());
        crate::pool::recycle_array(g);
    }

    fn backward_tensor<'t>(&self, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
        let rows = ctx.input(0).rows();
        ctx.accumulate(0, g.scatter_rows(&self.indices, rows)?)
    }
}

/// The rule of `scatter_rows`: `dGᵢ = G'_{idxᵢ}`.
struct ScatterBackward {
    indices: Vec<usize>,
}

impl<F: Float> Backward<F> for ScatterBackward {
    fn backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
        ctx.accumulate(0, g.select(Axis(0), &self.indices));
    }

    fn backward_tensor<'t>(&self, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
        ctx.accumulate(0, g.try_gather_rows(&self.indices)?)
    }
}

/// # Indexing
///
/// Slices and gathered rows.
impl<'t, F: Float> Tensor<'t, F> {
    /// The view `self[rows, cols]`, recorded with the rule of `slice`.
    fn slice_lanes(
        self,
        rows: Lane,
        cols: Lane,
        location: &'static Location<'static>,
    ) -> Tensor<'t, F> {
        let map = ViewMap::Strided {
            rows,
            cols,
            transposed: false,
        };
        let rule = self
            .tape
            .track(&[self])
            .then(|| (Saves::NONE, Rule::new(slice_backward, slice_tensor)));
        self.tape
            .record_alias("slice", self, map, false, rule, location)
    }

    /// The rows `rows` and columns `cols` of `self`, each a range with an optional step
    /// ([`Span`]): a view of the same storage, no copy.
    ///
    /// The derivative: `dX[rows, cols] = G`, zero elsewhere (added in place into the
    /// gradient's buffer).
    ///
    /// # Panics
    ///
    /// If a range is out of bounds or a step is 0; see [`Tensor::try_slice`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    /// use tapegrad::ops::Span;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]);
    /// let y = x.slice(1.., Span::from(..).step(2));
    /// assert_eq!(y.value(), array![[4.0, 6.0], [7.0, 9.0]]);
    /// let grads = tape.backward(y.sum()).unwrap();
    /// assert_eq!(grads.get(x).unwrap(), &array![[0.0, 0.0, 0.0], [1.0, 0.0, 1.0], [1.0, 0.0, 1.0]]);
    /// ```
    #[track_caller]
    pub fn slice(self, rows: impl Into<Span>, cols: impl Into<Span>) -> Tensor<'t, F> {
        or_panic(self.try_slice(rows, cols))
    }

    /// The rows `rows` and columns `cols` of `self`, or an error.
    ///
    /// # Errors
    ///
    /// `Slice` if a range ends past the axis, starts after its end, or has step 0.
    #[track_caller]
    pub fn try_slice(self, rows: impl Into<Span>, cols: impl Into<Span>) -> Result<Tensor<'t, F>> {
        let location = Location::caller();
        let rows = rows.into().lane(self.shape.0, 0, "slice", location)?;
        let cols = cols.into().lane(self.shape.1, 1, "slice", location)?;
        Ok(self.slice_lanes(rows, cols, location))
    }

    /// The rows `rows` of `self` (all columns): [`Tensor::slice`] with `..` for columns.
    ///
    /// # Panics
    ///
    /// As [`Tensor::slice`].
    #[track_caller]
    pub fn slice_rows(self, rows: impl Into<Span>) -> Tensor<'t, F> {
        or_panic(self.try_slice(rows, ..))
    }

    /// The columns `cols` of `self` (all rows): [`Tensor::slice`] with `..` for rows.
    ///
    /// # Panics
    ///
    /// As [`Tensor::slice`].
    #[track_caller]
    pub fn slice_cols(self, cols: impl Into<Span>) -> Tensor<'t, F> {
        or_panic(self.try_slice(.., cols))
    }

    /// Zeros of `shape` with `self` at `[rows, cols]`: the adjoint of a slice.
    pub(crate) fn embed(
        self,
        rows: Lane,
        cols: Lane,
        shape: (usize, usize),
    ) -> Result<Tensor<'t, F>> {
        let location = Location::caller();
        let tape = self.tape;
        let y = tape.read1(self.id, |g| {
            let mut out = kernels::try_zeros(shape)?;
            let mut region = out.view_mut();
            region.slice_axis_inplace(Axis(0), rows.slice());
            region.slice_axis_inplace(Axis(1), cols.slice());
            region.assign(&g);
            Some(out)
        });
        let y = allocated(y, "embed", shape, location)?;
        let rule = tape
            .track(&[self])
            .then(|| (Saves::NONE, Rule::boxed(EmbedBackward { rows, cols })));
        Ok(tape.record("embed", y, shape, &[self], rule, location))
    }

    /// The rows of `self` at `indices`, in order, repeats allowed: `Yᵢ = X_{indices[i]}`
    /// (an embedding lookup: one row per token of a table with one row per word).
    ///
    /// The derivative is a scatter-add, `dX_{indices[i]} += Gᵢ`: a row gathered twice gets
    /// the sum of both gradients.
    ///
    /// # Panics
    ///
    /// If an index is out of range; see [`Tensor::try_gather_rows`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let table = tape.param(array![[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]);
    /// let y = table.gather_rows(&[2, 0, 2]);
    /// assert_eq!(y.value(), array![[5.0, 6.0], [1.0, 2.0], [5.0, 6.0]]);
    /// let grads = tape.backward(y.sum()).unwrap();
    /// assert_eq!(grads.get(table).unwrap(), &array![[1.0, 1.0], [0.0, 0.0], [2.0, 2.0]]);
    /// ```
    #[track_caller]
    pub fn gather_rows(self, indices: &[usize]) -> Tensor<'t, F> {
        or_panic(self.try_gather_rows(indices))
    }

    /// The rows of `self` at `indices`, or an error.
    ///
    /// # Errors
    ///
    /// `Index` if an index is not below the number of rows; `TooLarge` or `OutOfMemory` if
    /// the result does not fit.
    #[track_caller]
    pub fn try_gather_rows(self, indices: &[usize]) -> Result<Tensor<'t, F>> {
        let location = Location::caller();
        let op = "gather_rows";
        let (rows, cols) = self.shape;
        if let Some((position, &index)) = indices.iter().enumerate().find(|(_, i)| **i >= rows) {
            let kind = ErrorKind::Index {
                position,
                index,
                len: rows,
            };
            return Err(Error::new(op, kind, location));
        }
        let shape = check_size::<F>(op, (indices.len(), cols), location)?;
        let tape = self.tape;
        let y = tape.read1(self.id, |x| {
            let mut out = kernels::try_zeros(shape)?;
            if cols > 0 {
                Zip::from(out.rows_mut())
                    .and(&ndarray::ArrayView1::from(indices))
                    .for_each(|mut o, &i| o.assign(&x.row(i)));
            }
            Some(out)
        });
        let y = allocated(y, op, shape, location)?;
        let rule = tape.track(&[self]).then(|| {
            let rule = GatherBackward {
                indices: indices.to_vec(),
            };
            (Saves::NONE, Rule::boxed(rule))
        });
        Ok(tape.record(op, y, shape, &[self], rule, location))
    }

    /// `rows` rows of zeros with row `i` of `self` added into row `indices[i]`: the adjoint
    /// of `gather_rows`.
    pub(crate) fn scatter_rows(self, indices: &[usize], rows: usize) -> Result<Tensor<'t, F>> {
        let location = Location::caller();
        let shape = (rows, self.shape.1);
        let tape = self.tape;
        let y = tape.read1(self.id, |g| {
            let mut out = kernels::try_zeros(shape)?;
            for (i, &r) in indices.iter().enumerate() {
                let mut row = out.row_mut(r);
                row += &g.row(i);
            }
            Some(out)
        });
        let y = allocated(y, "scatter_rows", shape, location)?;
        let rule = tape.track(&[self]).then(|| {
            let rule = ScatterBackward {
                indices: indices.to_vec(),
            };
            (Saves::NONE, Rule::boxed(rule))
        });
        Ok(tape.record("scatter_rows", y, shape, &[self], rule, location))
    }
}
