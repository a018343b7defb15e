//! Matrix product `Y = X·W`, and the fused layer `Y = X·W + 1·b`.
//!
//! VJP, with `G = ∂L/∂Y`:
//!
//! - `dX = G·Wᵀ` (needs W: saved only if X requires a gradient)
//! - `dW = Xᵀ·G` (needs X: saved only if W requires a gradient)
//! - `db = 1ᵀ·G`, the column sums of G (`linear` only; saves nothing)
//!
//! `linear` computes `X·W + b` as one GEMM with beta = 1 over the broadcast bias: one
//! buffer and no separate pass, where `matmul` then `add_row` keep two activation-sized
//! buffers until backward.
//!
//! Both products reach GEMM with `Wᵀ` and `Xᵀ` as views (transpose flags, no copy; see
//! [`crate::kernels`]) and accumulate with beta = 1 when the slot already holds a
//! gradient, as when a weight is shared by two layers.

use std::panic::Location;

use ndarray::Array2;

use crate::error::{Result, allocated, check_size, or_panic, shape_error};
use crate::grad::Ctx;
use crate::higher::TensorCtx;
use crate::kernels;
use crate::rule::{Rule, Saves};
use crate::{Float, Tensor};

/// # Matrix products
///
/// GEMM, and the fused dense layer.
impl<'t, F: Float> Tensor<'t, F> {
    /// Matrix product `self · w`: (m × k) · (k × n) → m × n.
    ///
    /// The derivative: `dX = G·Wᵀ`, `dW = Xᵀ·G` (seed 000). The rule saves `W` only if
    /// `X` needs a gradient and `X` only if `W` does.
    ///
    /// *Note:* with the `blas` feature, products with a dimension above 7 of C- or
    /// F-contiguous operands (including transposed views) run as one `cblas_?gemm` call;
    /// otherwise matrixmultiply computes them, reading any strides in place.
    ///
    /// # Panics
    ///
    /// If the inner dimensions differ or the tensors are on different tapes; see
    /// [`Tensor::try_matmul`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let x = array![[1.0, 2.0], [3.0, 4.0]];
    /// let w = array![[1.0], [-1.0]];
    /// let tape = Tape::new();
    /// let (x_t, w_t) = (tape.param(&x), tape.param(&w));
    /// let y = x_t.matmul(w_t); // [[-1], [-1]]
    /// let grads = tape.backward(y.sum()).unwrap();
    /// // G is all ones: dW = Xᵀ·1 = column sums of X, dX = 1·Wᵀ
    /// assert_eq!(grads.get(w_t).unwrap(), &array![[4.0], [6.0]]);
    /// assert_eq!(grads.get(x_t).unwrap(), &array![[1.0, -1.0], [1.0, -1.0]]);
    /// ```
    #[track_caller]
    pub fn matmul(self, w: Tensor<'t, F>) -> Tensor<'t, F> {
        or_panic(self.try_matmul(w))
    }

    /// Matrix product, or a shape error naming both shapes and the caller's line.
    ///
    /// # Errors
    ///
    /// `Shape` if the columns of `self` differ from the rows of `w`, `TooLarge` if the
    /// product's size in bytes overflows `isize`, `OutOfMemory` if the system refuses its
    /// memory, `ForeignTensor` if the tapes differ.
    #[track_caller]
    pub fn try_matmul(self, w: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        let location = Location::caller();
        let (m, n) = self.product_shape(w, "matmul", location)?;
        let tape = self.tape;
        let y = allocated(
            tape.read2(self.id, w.id, kernels::try_gemm),
            "matmul",
            (m, n),
            location,
        )?;
        let rule = tape.track(&[self, w]).then(|| {
            (
                matmul_saves(self, w),
                Rule::new(matmul_backward, matmul_tensor),
            )
        });
        Ok(tape.record("matmul", y, (m, n), &[self, w], rule, location))
    }

    /// The fused layer `self · w + b`: (m × k) · (k × n) plus the 1 × n row `b` added to
    /// every row, computed as one GEMM with beta = 1 over the broadcast bias.
    ///
    /// The derivative: `dX = G·Wᵀ`, `dW = Xᵀ·G`, `db = 1ᵀ·G` (column sums, seed 003). The
    /// same values as `self.matmul(w).add_row(b)`, with one activation-sized buffer and
    /// one pass fewer.
    ///
    /// # Panics
    ///
    /// If the inner dimensions differ, `b` is not 1 × n, or the tapes differ; see
    /// [`Tensor::try_linear`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.constant(array![[1.0, 2.0], [3.0, 4.0]]);
    /// let w = tape.param(array![[1.0], [-1.0]]);
    /// let b = tape.param(array![[0.5]]);
    /// let y = x.linear(w, b);
    /// assert_eq!(y.value(), array![[-0.5], [-0.5]]);
    /// let grads = tape.backward(y.sum()).unwrap();
    /// assert_eq!(grads.get(w).unwrap(), &array![[4.0], [6.0]]); // Xᵀ·1
    /// assert_eq!(grads.get(b).unwrap(), &array![[2.0]]); // 1ᵀ·1
    /// ```
    #[track_caller]
    pub fn linear(self, w: Tensor<'t, F>, b: Tensor<'t, F>) -> Tensor<'t, F> {
        or_panic(self.try_linear(w, b))
    }

    /// The fused layer `X·W + b`, or an error.
    ///
    /// # Errors
    ///
    /// As [`Tensor::try_matmul`], and `Shape` if `b` is not 1 × (columns of `w`).
    #[track_caller]
    pub fn try_linear(self, w: Tensor<'t, F>, b: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        let location = Location::caller();
        let (m, n) = self.product_shape(w, "linear", location)?;
        w.same_tape(b, "linear", location)?;
        if b.shape != (1, n) {
            let rule = "the bias must be 1 × (columns of the weight)";
            return Err(shape_error("linear", w.shape, b.shape, rule, location));
        }
        let tape = self.tape;
        let y = allocated(
            tape.read1(b.id, |b| kernels::repeat_row(b, m)),
            "linear",
            (m, n),
            location,
        )?
        .and_then(|mut y| {
            tape.read2(self.id, w.id, |x, w| kernels::gemm_acc(x, w, &mut y))?;
            Ok(y)
        });
        let rule = tape.track(&[self, w, b]).then(|| {
            (
                matmul_saves(self, w),
                Rule::new(linear_backward, linear_tensor),
            )
        });
        Ok(tape.record("linear", y, (m, n), &[self, w, b], rule, location))
    }

    /// The shape of `self · w`, or the error for `op`.
    fn product_shape(
        self,
        w: Tensor<'t, F>,
        op: &'static str,
        location: &'static Location<'static>,
    ) -> Result<(usize, usize)> {
        self.same_tape(w, op, location)?;
        let ((m, k), (k2, n)) = (self.shape, w.shape);
        if k != k2 {
            let rule = "the columns of the left must equal the rows of the right";
            return Err(shape_error(op, self.shape, w.shape, rule, location));
        }
        check_size::<F>(op, (m, n), location)
    }
}

/// W is read for `dX` only if X needs a gradient, X for `dW` only if W does.
fn matmul_saves<F: Float>(x: Tensor<'_, F>, w: Tensor<'_, F>) -> Saves {
    Saves::NONE
        .input_if(1, x.requires_grad)
        .input_if(0, w.requires_grad)
}

/// `dX = G·Wᵀ`, `dW = Xᵀ·G`.
fn matmul_backward<F: Float>(_: F, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    // the weight's gradient first, then the error passed down (the textbook's order,
    // which `Tape::explain` prints)
    if ctx.needs_grad(1) {
        let x = ctx.input(0);
        ctx.accumulate_gemm(1, x.t(), g.view());
    }
    if ctx.needs_grad(0) {
        let w = ctx.input(1);
        ctx.accumulate_gemm(0, g.view(), w.t());
    }
    crate::pool::give_array(g);
}

/// `dX = G·Wᵀ`, `dW = Xᵀ·G`, recorded.
fn matmul_tensor<'t, F: Float>(
    _: F,
    g: Tensor<'t, F>,
    ctx: &mut TensorCtx<'_, 't, F>,
) -> Result<()> {
    if ctx.needs_grad(0) {
        let w = ctx.input(1);
        ctx.accumulate(0, g.try_matmul(w.t())?)?;
    }
    if ctx.needs_grad(1) {
        let x = ctx.input(0);
        ctx.accumulate(1, x.t().try_matmul(g)?)?;
    }
    Ok(())
}

/// `dX = G·Wᵀ`, `dW = Xᵀ·G` (inputs 0 and 1), and `db = 1ᵀ·G` (input 2).
fn linear_backward<F: Float>(_: F, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    if ctx.needs_grad(2) {
        ctx.accumulate_scaled(2, F::one(), g.view());
    }
    matmul_backward(F::zero(), g, ctx);
}

/// `dX = G·Wᵀ`, `dW = Xᵀ·G`, `db = 1ᵀ·G` (the column sums, by un-broadcasting), recorded.
fn linear_tensor<'t, F: Float>(
    _: F,
    g: Tensor<'t, F>,
    ctx: &mut TensorCtx<'_, 't, F>,
) -> Result<()> {
    if ctx.needs_grad(2) {
        ctx.accumulate(2, g)?;
    }
    matmul_tensor(F::zero(), g, ctx)
}

#[cfg(test)]
mod tests {
    use ndarray::array;

    use crate::Tape;

    #[test]
    fn literal_seed_000() {
        // Y = X·W, with two data points x₁ = (1, 2), x₂ = (3, 4) and w = (w₁, w₂) = (5, 6).
        // With G = (g₁, g₂) = (7, 8):
        //   ∂/∂w₁ = g₁x₁₁ + g₂x₂₁ = 7·1 + 8·3 = 31,  ∂/∂w₂ = g₁x₁₂ + g₂x₂₂ = 7·2 + 8·4 = 46
        //   ∂/∂X = G·Wᵀ = [[7·5, 7·6], [8·5, 8·6]]
        let x = array![[1.0, 2.0], [3.0, 4.0]];
        let w = array![[5.0], [6.0]];
        let tape = Tape::new();
        let (xt, wt) = (tape.param(&x), tape.param(&w));
        let g = tape.constant(array![[7.0], [8.0]]);
        let grads = tape.backward(xt.matmul(wt).mul(g).sum()).unwrap();
        assert_eq!(grads.get(wt).unwrap(), &array![[31.0], [46.0]]);
        assert_eq!(grads.get(xt).unwrap(), &array![[35.0, 42.0], [40.0, 48.0]]);
    }

    #[test]
    fn shared_weight_accumulates_both_paths() {
        // L = sum(X·W) + sum(X·W·W) with W used three times: dW sums every path.
        let x = array![[1.0, -2.0], [0.5, 3.0]];
        let w = array![[0.3, 0.1], [-0.4, 0.2]];
        let tape = Tape::<f64>::new();
        let (xt, wt) = (tape.constant(&x), tape.param(&w));
        let h = xt.matmul(wt);
        let loss = h.sum().add(h.matmul(wt).sum());
        let grads = tape.backward(loss).unwrap();
        // With H = XW: d/dW sum(XW) = Xᵀ·1; sum(H·W) gives Hᵀ·1 through its second operand
        // and Xᵀ·(1·Wᵀ) through H.
        let ones = array![[1.0, 1.0], [1.0, 1.0]];
        let expected = x.t().dot(&ones) + x.t().dot(&ones.dot(&w.t())) + x.dot(&w).t().dot(&ones);
        let got = grads.get(wt).unwrap();
        assert!(
            (got - &expected).iter().all(|d: &f64| d.abs() < 1e-12),
            "{got} vs {expected}"
        );
    }

    #[test]
    fn constant_operand_gets_no_gradient() {
        let tape = Tape::<f64>::new();
        let x = tape.constant(array![[1.0, 2.0]]);
        let w = tape.param(array![[1.0], [1.0]]);
        let grads = tape.backward(x.matmul(w)).unwrap();
        assert!(grads.get(x).is_none());
        assert_eq!(grads.get(w).unwrap(), &array![[1.0], [2.0]]);
    }
}
