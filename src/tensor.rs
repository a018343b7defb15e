//! `Tensor`: a small `Copy` handle to a value on a tape. No math lives here; the ops are
//! in [`crate::ops`], one file per family.

use std::fmt;
use std::panic::Location;

use ndarray::Array2;

use crate::Float;
use crate::error::{Error, ErrorKind, Result, or_panic};
use crate::tape::{NodeId, Tape, ViewMap, view_of};

/// A matrix on a [`Tape`]: the handle every op takes and returns.
///
/// A `Tensor` is `Copy` (a reference to its tape, an index, the shape), so composing ops
/// reads like the math, `x.matmul(w).add_row(b).sigmoid()`, with no `.clone()`. All
/// tensors are matrices; a scalar is 1 × 1, a vector 1 × n or n × 1.
///
/// # The ops, by family
///
/// Each family has its own section further down this page, headed by its name (and its
/// own file in `src/ops/`). Every op that can fail on its input
/// (shapes, indices, tapes) also has a `try_` form that returns the error instead of
/// panicking (`try_matmul` beside `matmul`); the rule of each op's derivative is in the
/// rule table of [`crate::ops`].
///
/// | family | ops |
/// |--------|-----|
/// | The handle | [`tape`](Tensor::tape), [`shape`](Tensor::shape), [`rows`](Tensor::rows), [`cols`](Tensor::cols), [`requires_grad`](Tensor::requires_grad), [`op`](Tensor::op), [`value`](Tensor::value), [`item`](Tensor::item), [`detach`](Tensor::detach) |
/// | Arithmetic | [`add`](Tensor::add), [`sub`](Tensor::sub), [`mul`](Tensor::mul), [`div`](Tensor::div) |
/// | Scalar arithmetic | [`neg`](Tensor::neg), [`add_scalar`](Tensor::add_scalar), [`mul_scalar`](Tensor::mul_scalar), [`scalar_div`](Tensor::scalar_div) |
/// | Row and column broadcasts | [`add_row`](Tensor::add_row), [`add_col`](Tensor::add_col) |
/// | Matrix products | [`matmul`](Tensor::matmul), [`linear`](Tensor::linear) |
/// | Elementwise math | [`exp`](Tensor::exp), [`log`](Tensor::log), [`sqrt`](Tensor::sqrt), [`square`](Tensor::square), [`powi`](Tensor::powi), [`powf`](Tensor::powf), [`recip`](Tensor::recip), [`abs`](Tensor::abs), [`sin`](Tensor::sin), [`cos`](Tensor::cos), [`erf`](Tensor::erf), [`clamp`](Tensor::clamp) |
/// | Activations | [`sigmoid`](Tensor::sigmoid), [`tanh`](Tensor::tanh), [`relu`](Tensor::relu), [`leaky_relu`](Tensor::leaky_relu), [`elu`](Tensor::elu), [`gelu`](Tensor::gelu), [`gelu_tanh`](Tensor::gelu_tanh), [`softplus`](Tensor::softplus), [`silu`](Tensor::silu) |
/// | Selection | [`maximum`](Tensor::maximum), [`minimum`](Tensor::minimum), [`where_`](Tensor::where_) |
/// | Sums and means | [`sum`](Tensor::sum), [`mean`](Tensor::mean), [`sum_axis`](Tensor::sum_axis), [`mean_axis`](Tensor::mean_axis) |
/// | Maxima and minima | [`max`](Tensor::max), [`min`](Tensor::min), [`max_axis`](Tensor::max_axis), [`min_axis`](Tensor::min_axis), [`argmax`](Tensor::argmax), [`argmin`](Tensor::argmin) |
/// | Softmax and log-sum-exp | [`softmax`](Tensor::softmax), [`log_softmax`](Tensor::log_softmax), [`logsumexp`](Tensor::logsumexp) |
/// | Shape | [`t`](Tensor::t), [`broadcast_to`](Tensor::broadcast_to), [`reshape`](Tensor::reshape), [`concat_rows`](Tensor::concat_rows), [`concat_cols`](Tensor::concat_cols) |
/// | Indexing | [`slice`](Tensor::slice), [`slice_rows`](Tensor::slice_rows), [`slice_cols`](Tensor::slice_cols), [`gather_rows`](Tensor::gather_rows) |
/// | Diagonals and triangles | [`trace`](Tensor::trace), [`diag`](Tensor::diag), [`diag_embed`](Tensor::diag_embed), [`tril`](Tensor::tril), [`triu`](Tensor::triu) |
/// | Losses | [`mse_loss`](Tensor::mse_loss), [`l1_loss`](Tensor::l1_loss), [`huber_loss`](Tensor::huber_loss), [`bce_with_logits`](Tensor::bce_with_logits) |
/// | Cross-entropy | [`nll_loss`](Tensor::nll_loss), [`softmax_cross_entropy`](Tensor::softmax_cross_entropy), [`softmax_cross_entropy_indices`](Tensor::softmax_cross_entropy_indices) |
/// | Normalisation | [`layer_norm`](Tensor::layer_norm) |
/// | Dropout | [`dropout`](Tensor::dropout) |
/// | Linear algebra: inverses and solves | `inv`, `solve`, `solve_triangular`, `cho_solve` |
/// | Linear algebra: determinants | `det`, `slogdet`, `logdet` |
/// | Linear algebra: decompositions | `cholesky`, `eigh` |
/// | Names | [`named`](Tensor::named), [`name`](Tensor::name) |
///
/// # Operators
///
/// The arithmetic operators are shorthands of the named methods, and like them they
/// panic where the `try_` form returns an error (shapes that do not broadcast, tensors of
/// two tapes). `s` is a scalar of the tensor's float type.
///
/// | operator | method | |
/// |----------|--------|-|
/// | `a + b`, `a - b` | [`add`](Tensor::add), [`sub`](Tensor::sub) | elementwise, broadcasting |
/// | `a * b`, `a / b` | [`mul`](Tensor::mul), [`div`](Tensor::div) | elementwise (not a matrix product: that is [`matmul`](Tensor::matmul)), broadcasting |
/// | `-a` | [`neg`](Tensor::neg) | |
/// | `a + s`, `a - s` | [`add_scalar`](Tensor::add_scalar) | |
/// | `a * s`, `a / s` | [`mul_scalar`](Tensor::mul_scalar) | |
/// | `s / a` | [`scalar_div`](Tensor::scalar_div) | for `f32` and `f64` |
///
/// A scalar on the left of `+`, `-` or `*` is not an operator: write `a + s`, or
/// `a * s`, with the tensor first.
///
/// ```
/// use ndarray::array;
/// use tapegrad::Tape;
///
/// let tape = Tape::new();
/// let a = tape.param(array![[1.0, 2.0], [3.0, 4.0]]);
/// let b = tape.constant(array![[2.0, 4.0]]); // a row: broadcast over a's rows
/// let y = (a * b - a / b) * 0.5 + 1.0;
/// assert_eq!(y.value(), a.mul(b).sub(a.div(b)).mul_scalar(0.5).add_scalar(1.0).value());
/// assert_eq!((1.0_f64 / a).value(), array![[1.0, 0.5], [1.0 / 3.0, 0.25]]);
/// ```
#[derive(Clone, Copy)]
pub struct Tensor<'t, F: Float> {
    pub(crate) tape: &'t Tape<'t, F>,
    pub(crate) id: NodeId,
    pub(crate) shape: (usize, usize),
    pub(crate) requires_grad: bool,
}

/// # The handle
///
/// Shape, value and tape.
impl<'t, F: Float> Tensor<'t, F> {
    /// The tape this tensor lives on (to put a layer's parameters on the same tape).
    pub fn tape(&self) -> &'t Tape<'t, F> {
        self.tape
    }

    /// (rows, columns).
    pub fn shape(&self) -> (usize, usize) {
        self.shape
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.shape.0
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.shape.1
    }

    /// Whether backward will compute a gradient through this tensor.
    pub fn requires_grad(&self) -> bool {
        self.requires_grad
    }

    /// The op that produced this tensor (`"leaf"` for parameters and constants).
    pub fn op(&self) -> &'static str {
        self.tape.inner().nodes[self.id].op
    }

    /// A copy of the value.
    ///
    /// # Panics
    ///
    /// If the value was released by a backward pass that did not retain the graph; see
    /// [`Tensor::try_value`].
    #[track_caller]
    pub fn value(&self) -> Array2<F> {
        or_panic(self.try_value())
    }

    /// A copy of the value, or an error if backward released it. Leaves and the root of a
    /// backward pass are never released.
    ///
    /// # Errors
    ///
    /// `Released`, naming the op that produced the value.
    #[track_caller]
    pub fn try_value(&self) -> Result<Array2<F>> {
        let inner = self.tape.inner();
        match view_of(&inner.values, self.id) {
            Ok(v) => Ok(v.to_owned()),
            Err(lost) => Err(inner.released(self.id, lost, Location::caller())),
        }
    }

    /// The single element of a 1 × 1 tensor (a loss).
    ///
    /// # Panics
    ///
    /// If the tensor is not 1 × 1 or its value was released; see [`Tensor::try_item`].
    #[track_caller]
    pub fn item(&self) -> F {
        or_panic(self.try_item())
    }

    /// The single element of a 1 × 1 tensor.
    ///
    /// # Errors
    ///
    /// `NotScalar` if the tensor is not 1 × 1, `Released` if its value was released.
    #[track_caller]
    pub fn try_item(&self) -> Result<F> {
        let location = Location::caller();
        if self.shape != (1, 1) {
            return Err(Error::new(
                "item",
                ErrorKind::NotScalar { shape: self.shape },
                location,
            ));
        }
        let inner = self.tape.inner();
        match view_of(&inner.values, self.id) {
            Ok(v) => Ok(v[[0, 0]]),
            Err(lost) => Err(inner.released(self.id, lost, location)),
        }
    }

    /// The same value as a new leaf that requires no gradient: backward does not flow
    /// through it. Shares the storage (no copy).
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let w = array![[3.0]];
    /// let tape = Tape::new();
    /// let w_t = tape.param(&w);
    /// // y = w · stop_gradient(w): dy/dw = w, not 2w
    /// let y = w_t.mul(w_t.detach());
    /// let grads = tape.backward(y).unwrap();
    /// assert_eq!(grads.get(w_t).unwrap()[[0, 0]], 3.0);
    /// ```
    #[track_caller]
    pub fn detach(self) -> Tensor<'t, F> {
        self.tape.record_alias(
            "detach",
            self,
            ViewMap::whole(self.shape, false),
            true,
            None,
            Location::caller(),
        )
    }

    /// Checks that `other` is on the same tape, for the op `op`.
    pub(crate) fn same_tape(
        self,
        other: Tensor<'t, F>,
        op: &'static str,
        location: &'static Location<'static>,
    ) -> Result<()> {
        if std::ptr::eq(self.tape, other.tape) {
            Ok(())
        } else {
            Err(Error::new(op, ErrorKind::ForeignTensor, location))
        }
    }
}

impl<F: Float> fmt::Debug for Tensor<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensor")
            .field("id", &self.id)
            .field("op", &self.op())
            .field("shape", &self.shape)
            .field("requires_grad", &self.requires_grad)
            .finish()
    }
}
