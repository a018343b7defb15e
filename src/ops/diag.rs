//! Diagonals and triangles: `trace`, `diag`, `diag_embed`, `tril`, `triu`. Linear maps
//! that need no LAPACK, so they are in every build.
//!
//! VJP, with `G = ∂L/∂Y` (PyTorch's `trace_backward`, `diagonal_backward`, and
//! `derivatives.yaml` for `diag_embed`, `tril`, `triu`):
//!
//! - `y = tr A = Σᵢ aᵢᵢ` (1 × 1): `dA = g·I` (the identity of A's shape);
//! - `y = diag(A)`, the diagonal as a column: `dA = diag_embed(G)`, zeros off the diagonal;
//! - `Y = diag_embed(v)`, `v` on the diagonal of a square matrix: `dv = diag(G)`;
//! - `Y = tril(A, k)` (`triu(A, k)`), zeros above (below) the k-th diagonal: `dA = tril(G, k)`
//!   (`triu(G, k)`).
//!
//! None saves anything. For a rectangular m × n matrix, the diagonal has min(m, n)
//! elements; diagonal `k` is the one `k` places above the main one (below for `k < 0`), as
//! in NumPy.
//!
//! The gradients of `trace` and `diag` and the result of `diag_embed` are zero off the
//! diagonal: a new one comes zeroed from the allocator (`calloc`) and only its diagonal is
//! written, so the pages off the diagonal cost no memory until used; where the system
//! refuses even that, the op (or backward) returns `OutOfMemory`, never an abort.

use std::panic::Location;

use ndarray::{Array2, Axis};

use crate::error::{Error, ErrorKind, Result, allocated, check_size, or_panic};
use crate::grad::Ctx;
use crate::higher::TensorCtx;
use crate::kernels;
use crate::rule::{Backward, Rule, Saves};
use crate::tape::Lane;
use crate::{Float, Tensor};

/// `A` with the elements outside the triangle (`lower`: on or below diagonal `k`;
/// otherwise on or above it) set to zero, in place.
pub(crate) fn triangle_inplace<F: Float>(a: &mut Array2<F>, k: isize, lower: bool) {
    for ((i, j), v) in a.indexed_iter_mut() {
        let d = j as isize - i as isize;
        if (lower && d > k) || (!lower && d < k) {
            *v = F::zero();
        }
    }
}

/// The rule of `trace`: `dA = g·I`, `g` added to the diagonal (the identity is never
/// built: a new gradient buffer comes zeroed from the allocator, and only its diagonal is
/// touched).
struct TraceBackward;

impl<F: Float> Backward<F> for TraceBackward {
    fn backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
        or_panic(self.try_backward(g, ctx));
    }

    fn try_backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) -> Result<()> {
        ctx.try_accumulate_diag(0, g.row(0))
    }

    /// `dA = g·I` as `diag_embed(g·1)`, padded with zeros to A's shape, recorded.
    fn backward_tensor<'t>(&self, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
        let shape = ctx.input(0).shape();
        let k = shape.0.min(shape.1);
        let d = g.try_broadcast_to((k, 1))?.try_diag_embed()?;
        ctx.accumulate(0, pad(d, shape)?)
    }
}

/// The k × k `d` in the top left corner of zeros of `shape` (`d` itself if it has it).
fn pad<'t, F: Float>(d: Tensor<'t, F>, shape: (usize, usize)) -> Result<Tensor<'t, F>> {
    let k = d.rows();
    if shape == (k, k) {
        return Ok(d);
    }
    d.embed(Lane::all(k), Lane::all(k), shape)
}

/// The rule of `diag`: `dA = diag_embed(G)`, zeros off the diagonal (in A's shape; never
/// touched in a new buffer).
struct DiagBackward;

impl<F: Float> Backward<F> for DiagBackward {
    fn backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
        or_panic(self.try_backward(g, ctx));
    }

    fn try_backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) -> Result<()> {
        ctx.try_accumulate_diag(0, g.column(0))
    }

    /// `dA = diag_embed(G)`, padded with zeros to A's shape, recorded.
    fn backward_tensor<'t>(&self, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
        let shape = ctx.input(0).shape();
        ctx.accumulate(0, pad(g.try_diag_embed()?, shape)?)
    }
}

/// `dv = diag(G)`, as a row if `v` is one.
fn diag_embed_backward<F: Float>(_: F, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    let shape = ctx.input_shape(0);
    let d = g.diag().to_owned();
    let d = if shape.0 == 1 && shape.1 != 1 {
        d.insert_axis(Axis(0))
    } else {
        d.insert_axis(Axis(1))
    };
    ctx.accumulate(0, d);
}

/// `dv = diag(G)`, recorded.
fn diag_embed_tensor<'t, F: Float>(
    _: F,
    g: Tensor<'t, F>,
    ctx: &mut TensorCtx<'_, 't, F>,
) -> Result<()> {
    let shape = ctx.input(0).shape();
    let d = g.try_diag()?;
    ctx.accumulate(
        0,
        if shape.0 == 1 && shape.1 != 1 {
            d.t()
        } else {
            d
        },
    )
}

/// The rule of `tril` (`lower`) and `triu`: `dA = tril(G, k)` (`triu(G, k)`).
struct Triangle {
    k: isize,
    lower: bool,
}

impl<F: Float> Backward<F> for Triangle {
    fn backward(&self, mut g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
        triangle_inplace(&mut g, self.k, self.lower);
        ctx.accumulate(0, g);
    }

    fn backward_tensor<'t>(&self, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
        let d = if self.lower {
            g.tril(self.k)
        } else {
            g.triu(self.k)
        };
        ctx.accumulate(0, d)
    }
}

/// # Diagonals and triangles
impl<'t, F: Float> Tensor<'t, F> {
    /// The trace `Σᵢ aᵢᵢ`, the sum of the main diagonal, as a 1 × 1 tensor (of a
    /// rectangular matrix too: its min(m, n) diagonal elements).
    ///
    /// The derivative: `dA = g·I` (`g` added to the diagonal; no identity is built).
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let a = tape.param(array![[1.0, 2.0], [3.0, 4.0]]);
    /// assert_eq!(a.trace().item(), 5.0);
    /// let grads = tape.backward(a.trace()).unwrap();
    /// assert_eq!(grads.get(a).unwrap(), &array![[1.0, 0.0], [0.0, 1.0]]);
    /// ```
    #[track_caller]
    pub fn trace(self) -> Tensor<'t, F> {
        let tape = self.tape;
        let y = tape.read1(self.id, |a| Array2::from_elem((1, 1), a.diag().sum()));
        let rule = tape
            .track(&[self])
            .then(|| (Saves::NONE, Rule::boxed(TraceBackward)));
        tape.record("trace", y, (1, 1), &[self], rule, Location::caller())
    }

    /// The main diagonal as a column: min(m, n) × 1.
    ///
    /// The derivative: `dA = diag_embed(G)` (zeros off the diagonal).
    ///
    /// # Panics
    ///
    /// If the system refuses the memory for the diagonal; see [`Tensor::try_diag`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let a = tape.param(array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]);
    /// assert_eq!(a.diag().value(), array![[1.0], [5.0]]);
    /// ```
    #[track_caller]
    pub fn diag(self) -> Tensor<'t, F> {
        or_panic(self.try_diag())
    }

    /// The main diagonal as a column, or an error.
    ///
    /// # Errors
    ///
    /// `OutOfMemory` if the system refuses the memory for it (the diagonal of a
    /// zero-stride view can be longer than memory).
    #[track_caller]
    pub fn try_diag(self) -> Result<Tensor<'t, F>> {
        let location = Location::caller();
        let (m, n) = self.shape;
        let k = m.min(n);
        let tape = self.tape;
        let y = tape.read1(self.id, |a| {
            let mut d = kernels::try_zeros((k, 1))?;
            d.column_mut(0).assign(&a.diag());
            Some(d)
        });
        let y = allocated(y, "diag", (k, 1), location)?;
        let rule = tape
            .track(&[self])
            .then(|| (Saves::NONE, Rule::boxed(DiagBackward)));
        Ok(tape.record("diag", y, (k, 1), &[self], rule, location))
    }

    /// The square matrix with the k × 1 column (or 1 × k row) `self` on its diagonal and
    /// zeros elsewhere: k × k.
    ///
    /// The derivative: `dv = diag(G)`, in `v`'s shape.
    ///
    /// # Panics
    ///
    /// If `self` is neither a row nor a column, or the k × k result cannot be allocated;
    /// see [`Tensor::try_diag_embed`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let v = tape.param(array![[2.0], [3.0]]);
    /// assert_eq!(v.diag_embed().value(), array![[2.0, 0.0], [0.0, 3.0]]);
    /// ```
    #[track_caller]
    pub fn diag_embed(self) -> Tensor<'t, F> {
        or_panic(self.try_diag_embed())
    }

    /// The diagonal matrix of a row or column, or an error.
    ///
    /// # Errors
    ///
    /// `Shape` if `self` is neither 1 × k nor k × 1; `TooLarge` if a k × k matrix has
    /// more bytes than any allocation can hold; `OutOfMemory` if the system refuses the
    /// memory for it. (A new matrix comes zeroed from the allocator and only its diagonal
    /// is written: the pages off the diagonal cost no memory until used.)
    #[track_caller]
    pub fn try_diag_embed(self) -> Result<Tensor<'t, F>> {
        let location = Location::caller();
        let (m, n) = self.shape;
        if m != 1 && n != 1 {
            let kind = ErrorKind::Shape {
                lhs: self.shape,
                rhs: (m.max(n), 1),
                rule: "diag_embed needs a row or a column",
            };
            return Err(Error::new("diag_embed", kind, location));
        }
        let k = if m == 1 { n } else { m };
        let shape = check_size::<F>("diag_embed", (k, k), location)?;
        let tape = self.tape;
        let y = tape.read1(self.id, |v| {
            // zeros from the allocator: only the diagonal's pages are touched
            let mut d = kernels::calloc(shape)?;
            d.diag_mut()
                .iter_mut()
                .zip(v.iter())
                .for_each(|(d, &v)| *d = v);
            Some(d)
        });
        let y = allocated(y, "diag_embed", shape, location)?;
        let rule = tape.track(&[self]).then(|| {
            (
                Saves::NONE,
                Rule::new(diag_embed_backward, diag_embed_tensor),
            )
        });
        Ok(tape.record("diag_embed", y, (k, k), &[self], rule, location))
    }

    /// The lower triangle: the elements on and below diagonal `k` (`0` the main diagonal,
    /// `-1` the one below it), zeros above, as NumPy's `tril`.
    ///
    /// The derivative: `dA = tril(G, k)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let a = tape.param(array![[1.0, 2.0], [3.0, 4.0]]);
    /// assert_eq!(a.tril(0).value(), array![[1.0, 0.0], [3.0, 4.0]]);
    /// assert_eq!(a.tril(-1).value(), array![[0.0, 0.0], [3.0, 0.0]]);
    /// ```
    #[track_caller]
    pub fn tril(self, k: isize) -> Tensor<'t, F> {
        self.triangle("tril", k, true, Location::caller())
    }

    /// The upper triangle: the elements on and above diagonal `k`, zeros below, as
    /// NumPy's `triu`.
    ///
    /// The derivative: `dA = triu(G, k)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let a = tape.param(array![[1.0, 2.0], [3.0, 4.0]]);
    /// assert_eq!(a.triu(1).value(), array![[0.0, 2.0], [0.0, 0.0]]);
    /// ```
    #[track_caller]
    pub fn triu(self, k: isize) -> Tensor<'t, F> {
        self.triangle("triu", k, false, Location::caller())
    }

    fn triangle(
        self,
        op: &'static str,
        k: isize,
        lower: bool,
        location: &'static Location<'static>,
    ) -> Tensor<'t, F> {
        let tape = self.tape;
        let y = tape.read1(self.id, |a| {
            let mut y = a.to_owned();
            triangle_inplace(&mut y, k, lower);
            y
        });
        let rule = tape
            .track(&[self])
            .then(|| (Saves::NONE, Rule::boxed(Triangle { k, lower })));
        tape.record(op, y, self.shape, &[self], rule, location)
    }
}
