//! Shape ops: transpose, as a view, and `broadcast_to`.
//!
//! `Y = Xᵀ` shares X's storage with the axes swapped: no copy, and a transposed operand
//! reaches GEMM as a transpose flag. VJP: `dX = Gᵀ`, which is G's own buffer with its axes
//! swapped (an F-order array), so backward copies nothing either. Saves nothing.
//!
//! `Y = broadcast_to(X, shape)` repeats a 1 × n row, an m × 1 column or a 1 × 1 scalar to
//! `shape`. VJP: `dX = sum_to(G)`, the central un-broadcast. Saves nothing.

use std::panic::Location;

use ndarray::Array2;

use crate::error::{Result, allocated, check_size, or_panic, shape_error};
use crate::grad::Ctx;
use crate::higher::TensorCtx;
use crate::kernels::{self, broadcast_shape};
use crate::rule::{Rule, Saves};
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
        self.tape
            .record_alias("t", self, true, false, rule, Location::caller())
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
}
