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
#[derive(Clone, Copy)]
pub struct Tensor<'t, F: Float> {
    pub(crate) tape: &'t Tape<'t, F>,
    pub(crate) id: NodeId,
    pub(crate) shape: (usize, usize),
    pub(crate) requires_grad: bool,
}

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
