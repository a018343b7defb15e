//! Transpose, as a view.
//!
//! `Y = Xᵀ` shares X's storage with the axes swapped: no copy, and a transposed operand
//! reaches GEMM as a transpose flag. VJP: `dX = Gᵀ`, which is G's own buffer with its axes
//! swapped (an F-order array), so backward copies nothing either. Saves nothing.

use std::panic::Location;

use ndarray::Array2;

use crate::grad::Ctx;
use crate::rule::{Rule, Saves};
use crate::{Float, Tensor};

/// `dX = Gᵀ`.
fn transpose_backward<F: Float>(_: F, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    ctx.accumulate(0, g.reversed_axes());
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
            .then(|| (Saves::NONE, Rule::func(transpose_backward)));
        self.tape
            .record_alias("t", self, true, false, rule, Location::caller())
    }
}
