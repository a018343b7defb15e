//! Broadcast adds with a checked shape: `add_row` (a 1 × n bias added to every row) and
//! `add_col` (an m × 1 column added to every column).
//!
//! VJP, with `G = ∂L/∂Y`, for `Y = X + 1·b`:
//!
//! - `dX = G` (moved, no copy)
//! - `db = 1ᵀ·G`, the column sums of G: seed 003's `∇b L = ∇a L`, summed over the batch
//!
//! and for `Y = X + c·1ᵀ`: `dX = G`, `dc = G·1` (row sums). Both share `add`'s rule; the
//! sums are the central un-broadcast ([`crate::kernels`]). They save nothing.

use std::panic::Location;

use crate::error::{Result, or_panic, shape_error};
use crate::ops::elementwise::add_rule;
use crate::{Float, Tensor};

/// # Row and column broadcasts
///
/// A bias row or column added to every row or column.
impl<'t, F: Float> Tensor<'t, F> {
    /// Adds the 1 × n row `b` to every row of `self` (m × n): a layer's bias.
    ///
    /// The derivative: `dX = G`, `db = 1ᵀ·G` (column sums of G, seed 003).
    ///
    /// # Panics
    ///
    /// If `b` is not 1 × n or the tapes differ; see [`Tensor::try_add_row`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let x = array![[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]];
    /// let b = array![[0.5, -0.5]];
    /// let g = array![[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]];
    /// let tape = Tape::new();
    /// let (x_t, b_t, g_t) = (tape.constant(&x), tape.param(&b), tape.constant(&g));
    /// let loss = x_t.add_row(b_t).mul(g_t).sum(); // ∂L/∂(X + b) = G
    /// let grads = tape.backward(loss).unwrap();
    /// assert_eq!(grads.get(b_t).unwrap(), &array![[9.0, 12.0]]); // column sums of G
    /// ```
    #[track_caller]
    pub fn add_row(self, b: Tensor<'t, F>) -> Tensor<'t, F> {
        or_panic(self.try_add_row(b))
    }

    /// Adds a 1 × n row to every row, or an error.
    ///
    /// # Errors
    ///
    /// `Shape` if `b` is not 1 × (columns of `self`), `ForeignTensor` if the tapes differ.
    #[track_caller]
    pub fn try_add_row(self, b: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        let location = Location::caller();
        if b.shape != (1, self.shape.1) {
            let rule = "the row must be 1 × (columns of the input)";
            return Err(shape_error("add_row", self.shape, b.shape, rule, location));
        }
        self.binary(b, "add_row", location, |x, b| x + b, add_rule)
    }

    /// Adds the m × 1 column `c` to every column of `self` (m × n).
    ///
    /// The derivative: `dX = G`, `dc = G·1` (row sums of G).
    ///
    /// # Panics
    ///
    /// If `c` is not m × 1 or the tapes differ; see [`Tensor::try_add_col`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.constant(array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]);
    /// let c = tape.param(array![[10.0], [20.0]]);
    /// let y = x.add_col(c);
    /// assert_eq!(y.value(), array![[11.0, 12.0, 13.0], [24.0, 25.0, 26.0]]);
    /// let grads = tape.backward(y.sum()).unwrap();
    /// assert_eq!(grads.get(c).unwrap(), &array![[3.0], [3.0]]); // row sums of G = 1
    /// ```
    #[track_caller]
    pub fn add_col(self, c: Tensor<'t, F>) -> Tensor<'t, F> {
        or_panic(self.try_add_col(c))
    }

    /// Adds an m × 1 column to every column, or an error.
    ///
    /// # Errors
    ///
    /// `Shape` if `c` is not (rows of `self`) × 1, `ForeignTensor` if the tapes differ.
    #[track_caller]
    pub fn try_add_col(self, c: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        let location = Location::caller();
        if c.shape != (self.shape.0, 1) {
            let rule = "the column must be (rows of the input) × 1";
            return Err(shape_error("add_col", self.shape, c.shape, rule, location));
        }
        self.binary(c, "add_col", location, |x, c| x + c, add_rule)
    }
}

#[cfg(test)]
mod tests {
    use ndarray::array;

    use crate::Tape;

    #[test]
    fn seed_003_bias_gradient_is_column_sums() {
        // a = X·W + b on a batch: ∂L/∂b = Σ over the batch of ∂L/∂a (seed 003, per row).
        let tape = Tape::<f64>::new();
        let x = tape.constant(array![[1.0, 0.0], [0.0, 1.0], [2.0, 3.0]]);
        let w = tape.param(array![[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]);
        let b = tape.param(array![[1.0, 2.0, 3.0]]);
        let g = array![[1.0, -1.0, 0.5], [2.0, 0.0, 0.5], [-3.0, 4.0, 1.0]];
        let a = x.matmul(w).add_row(b);
        let loss = a.mul(tape.constant(&g)).sum();
        let grads = tape.backward(loss).unwrap();
        assert_eq!(grads.get(b).unwrap(), &array![[0.0, 3.0, 2.0]]);
    }
}
