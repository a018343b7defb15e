//! Linear systems (feature `linalg`): `inv`, `solve`, `solve_triangular`, `cho_solve`.
//!
//! VJP, with `G = ∂L/∂Y` (Giles 2008, "An extended collection of matrix derivative
//! results", §2.2–2.3; PyTorch's `linalg_solve_backward`, `linalg_solve_triangular_backward`
//! and `cholesky_solve_backward`; JAX's `_solve` and `_cho_solve`):
//!
//! - `Y = A⁻¹`: `dA = −Yᵀ·G·Yᵀ`. Saves `Y`.
//! - `X = A⁻¹·B`: `dB = A⁻ᵀ·G`, `dA = −dB·Xᵀ`. The rule keeps the forward's LU and solves
//!   `Aᵀ` with it (no second factorisation); saves `X`.
//!
//!   Both derivatives exist only where `A` is invertible. Where it is singular to working
//!   precision (LAPACK's estimate of `1/κ₁(A)` at most ε, also with `A`'s rows and columns
//!   scaled by powers of two), every digit of them would be rounding noise: two equal
//!   columns leave LU a pivot of order ε·‖A‖ instead of 0, and derivatives of order 10¹⁶
//!   (10³² for the second). There the forward returns LAPACK's numbers, as NumPy and
//!   PyTorch do, and the rule is an `IllConditioned` error naming the op and its line.
//! - `op(A)·X = B`, `A` triangular, `op(A) = A` or `Aᵀ`: `dB = op(A)⁻ᵀ·G`, and
//!   `dA = −tri(dB·Xᵀ)` (or `−tri(X·dBᵀ)` for `Aᵀ`), projected on `A`'s triangle: the other
//!   triangle is never read, so its gradient is zero. Saves `A`, `X`.
//! - `X = (L·Lᵀ)⁻¹·B`, `L` lower: `dB = (L·Lᵀ)⁻¹·G`, `dL = −tril((dB·Xᵀ + X·dBᵀ)·L)` (JAX's
//!   convention; PyTorch's omits the `tril`, which only `L`'s unread upper triangle sees).
//!   Saves `L`, `X`.
//!
//! The tensor forms write the same formulas with the recorded ops (a transposed solve is
//! `solve(Aᵀ, G)`, which factorises `Aᵀ` again: it is the differentiable form).

use std::panic::Location;

use ndarray::Array2;

use super::lapack::{LinalgFloat, Lu, computed, square, triangular_solve, triangular_solves};
use crate::error::{Result, or_panic, shape_error};
use crate::grad::Ctx;
use crate::higher::TensorCtx;
use crate::kernels::gemm;
use crate::ops::diag::triangle_inplace;
use crate::rule::{Backward, Rule, Saves};
use crate::tape::view_of;
use crate::{Float, Tensor};

/// `dA = −Yᵀ·G·Yᵀ`.
fn inv_backward<F: Float>(_: F, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    let y = ctx.output();
    let mut gy = gemm(g.view(), y.t());
    gy.mapv_inplace(|v| -v);
    ctx.accumulate_gemm(0, y.t(), gy.view());
}

/// `dA = −Yᵀ·G·Yᵀ`, recorded.
fn inv_tensor<'t, F: Float>(_: F, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
    let y = ctx.output();
    ctx.accumulate(0, y.t().try_matmul(g)?.try_matmul(y.t())?.neg())
}

/// The rule of `solve`: the forward's LU of `A`.
struct SolveBackward<F> {
    lu: Lu<F>,
}

impl<F: LinalgFloat> Backward<F> for SolveBackward<F> {
    fn backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
        or_panic(self.try_backward(g, ctx));
    }

    /// (`OutOfMemory` if the copy of `G` that becomes `dB` is refused.)
    fn try_backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) -> Result<()> {
        let mut db = self.lu.solve(g.view(), true).map_err(|k| ctx.error(k))?;
        if ctx.needs_grad(0) {
            let x = ctx.output();
            db.mapv_inplace(|v| -v);
            ctx.accumulate_gemm(0, db.view(), x.t());
            db.mapv_inplace(|v| -v);
        }
        if ctx.needs_grad(1) {
            ctx.accumulate(1, db);
        }
        Ok(())
    }

    fn backward_tensor<'t>(&self, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
        let db = ctx.input(0).t().try_solve(g)?;
        if ctx.needs_grad(0) {
            let x = ctx.output();
            ctx.accumulate(0, db.try_matmul(x.t())?.neg())?;
        }
        if ctx.needs_grad(1) {
            ctx.accumulate(1, db)?;
        }
        Ok(())
    }
}

/// The rule of `solve_triangular`.
struct TriangularBackward {
    lower: bool,
    transpose: bool,
}

impl<F: LinalgFloat> Backward<F> for TriangularBackward {
    fn backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
        or_panic(self.try_backward(g, ctx));
    }

    /// (`OutOfMemory` if a copy is refused; the diagonal is nonzero: the forward solve
    /// succeeded.)
    fn try_backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) -> Result<()> {
        let a = ctx.input(0);
        let db = triangular_solve(a, self.lower, !self.transpose, false, g.view())
            .map_err(|k| ctx.error(k))?;
        if ctx.needs_grad(0) {
            let x = ctx.output();
            let mut da = if self.transpose {
                gemm(x, db.t())
            } else {
                gemm(db.view(), x.t())
            };
            da.mapv_inplace(|v| -v);
            triangle_inplace(&mut da, 0, self.lower);
            ctx.accumulate(0, da);
        }
        if ctx.needs_grad(1) {
            ctx.accumulate(1, db);
        }
        Ok(())
    }

    fn backward_tensor<'t>(&self, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
        let a = ctx.input(0);
        let db = a.try_solve_triangular(g, self.lower, !self.transpose)?;
        if ctx.needs_grad(0) {
            let x = ctx.output();
            let da = if self.transpose {
                x.try_matmul(db.t())?
            } else {
                db.try_matmul(x.t())?
            };
            let da = if self.lower { da.tril(0) } else { da.triu(0) };
            ctx.accumulate(0, da.neg())?;
        }
        if ctx.needs_grad(1) {
            ctx.accumulate(1, db)?;
        }
        Ok(())
    }
}

/// `(L·Lᵀ)⁻¹·B`: two triangular solves (`L`, then `Lᵀ`).
fn cho_solve_array<F: LinalgFloat>(
    l: ndarray::ArrayView2<'_, F>,
    b: ndarray::ArrayView2<'_, F>,
) -> std::result::Result<Array2<F>, crate::ErrorKind> {
    triangular_solves(l, true, &[false, true], false, b)
}

/// The rule of `cho_solve`.
struct ChoSolveBackward;

impl<F: LinalgFloat> Backward<F> for ChoSolveBackward {
    fn backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
        or_panic(self.try_backward(g, ctx));
    }

    /// `dB = (L·Lᵀ)⁻¹·G`, `dL = −tril((dB·Xᵀ + X·dBᵀ)·L)` (`OutOfMemory` if a copy is
    /// refused; the diagonal is nonzero: the forward succeeded).
    fn try_backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) -> Result<()> {
        let l = ctx.input(0);
        let db = cho_solve_array(l, g.view()).map_err(|k| ctx.error(k))?;
        if ctx.needs_grad(0) {
            let x = ctx.output();
            let mut s = gemm(db.view(), x.t());
            let st = s.t().to_owned();
            s += &st;
            // only L's lower triangle is the factor (the other is not read)
            let mut lower = l.to_owned();
            triangle_inplace(&mut lower, 0, true);
            let mut dl = gemm(s.view(), lower.view());
            dl.mapv_inplace(|v| -v);
            triangle_inplace(&mut dl, 0, true);
            ctx.accumulate(0, dl);
        }
        if ctx.needs_grad(1) {
            ctx.accumulate(1, db);
        }
        Ok(())
    }

    fn backward_tensor<'t>(&self, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
        cho_solve_tensor(F::zero(), g, ctx)
    }
}

/// `dB = cho_solve(L, G)`, `dL = −tril((dB·Xᵀ + X·dBᵀ)·L)`, recorded.
fn cho_solve_tensor<'t, F: LinalgFloat>(
    _: F,
    g: Tensor<'t, F>,
    ctx: &mut TensorCtx<'_, 't, F>,
) -> Result<()> {
    let l = ctx.input(0);
    let db = l.try_cho_solve(g)?;
    if ctx.needs_grad(0) {
        let x = ctx.output();
        let s = db.try_matmul(x.t())?;
        let s = s.try_add(s.t())?;
        ctx.accumulate(0, s.try_matmul(l.tril(0))?.tril(0).neg())?;
    }
    if ctx.needs_grad(1) {
        ctx.accumulate(1, db)?;
    }
    Ok(())
}

/// # Linear algebra: inverses and solves
///
/// Feature `linalg`.
impl<'t, F: LinalgFloat> Tensor<'t, F> {
    /// The inverse `A⁻¹` of a square matrix (LAPACK `getrf` and `getri`). Prefer
    /// [`Tensor::solve`] to multiplying by an inverse: it is faster and more accurate.
    ///
    /// The derivative: `dA = −Yᵀ·G·Yᵀ` with `Y = A⁻¹` (Giles 2008). Where `A` is singular
    /// to working precision (LAPACK's estimate of `1/κ₁(A)` at most ε, also with its rows
    /// and columns scaled by powers of two), the value is LAPACK's and the derivative an
    /// `IllConditioned` error naming `inv` and this call's line: computed, it would be noise.
    ///
    /// *Needs the `linalg` feature and a LAPACK provider (the `openblas` feature has one).*
    ///
    /// # Panics
    ///
    /// If `A` is not square, singular, or holds NaN; see [`Tensor::try_inv`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let a = tape.param(array![[2.0, 0.0], [0.0, 4.0]]);
    /// assert_eq!(a.inv().value(), array![[0.5, 0.0], [0.0, 0.25]]);
    /// // d tr(A⁻¹) = −A⁻ᵀ·A⁻ᵀ
    /// let grads = tape.backward(a.inv().trace()).unwrap();
    /// assert_eq!(grads.get(a).unwrap(), &array![[-0.25, 0.0], [0.0, -0.0625]]);
    /// ```
    #[track_caller]
    pub fn inv(self) -> Tensor<'t, F> {
        or_panic(self.try_inv())
    }

    /// The inverse, or an error.
    ///
    /// # Errors
    ///
    /// `NotSquare`; `Singular` with LAPACK's `info` (the first exactly zero pivot);
    /// `NotFinite` if `A` holds NaN or an infinity; `TooLarge` or `OutOfMemory` if the
    /// working copy of `A` (which becomes the result) cannot be allocated.
    #[track_caller]
    pub fn try_inv(self) -> Result<Tensor<'t, F>> {
        let location = Location::caller();
        let n = square("inv", self.shape, location)?;
        let tape = self.tape;
        let tracked = tape.track(&[self]);
        let y = tape.read1(self.id, |a| {
            let (lu, ill) = Lu::for_derivative(a, tracked)?;
            Ok((lu.into_inverse()?, ill))
        });
        let (y, ill) = match computed(y, "inv", location)? {
            Ok((y, ill)) => (Ok(y), ill),
            Err(l) => (Err(l), None),
        };
        // (at a matrix singular to working precision, the derivative is an error)
        let rule = tracked.then(|| match ill {
            Some(kind) => (Saves::NONE, Rule::undefined("inv", kind, location)),
            None => (Saves::output(), Rule::new(inv_backward, inv_tensor)),
        });
        Ok(tape.record("inv", y, (n, n), &[self], rule, location))
    }

    /// The solution `X` of `A·X = B`, for a square `A` and `B` with any number of
    /// columns (right-hand sides), without forming `A⁻¹` (LAPACK `getrf`, then `getrs`'s
    /// interchanges and triangular solves).
    ///
    /// The derivative: `dB = A⁻ᵀ·G`, `dA = −dB·Xᵀ` (Giles 2008; PyTorch's
    /// `linalg_solve_backward`). Backward solves with the LU the forward computed. Where `A`
    /// is singular to working precision, the derivative is an `IllConditioned` error (as
    /// [`Tensor::inv`]'s).
    ///
    /// *Needs the `linalg` feature and a LAPACK provider.*
    ///
    /// # Panics
    ///
    /// If `A` is not square, its rows differ from `B`'s, `A` is singular, or `A` holds
    /// NaN; see [`Tensor::try_solve`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let a = tape.param(array![[3.0, 1.0], [1.0, 2.0]]);
    /// let b = tape.param(array![[9.0, 1.0], [8.0, 2.0]]);
    /// let x = a.solve(b); // A·X = B
    /// let ax = a.matmul(x).value();
    /// assert!((ax - array![[9.0, 1.0], [8.0, 2.0]]).iter().all(|d: &f64| d.abs() < 1e-12));
    /// ```
    #[track_caller]
    pub fn solve(self, b: Tensor<'t, F>) -> Tensor<'t, F> {
        or_panic(self.try_solve(b))
    }

    /// The solution of `A·X = B`, or an error.
    ///
    /// # Errors
    ///
    /// `NotSquare` if `A` is not square; `Shape` if `B`'s rows differ from `A`'s;
    /// `Singular` with LAPACK's `info`; `NotFinite` if `A` holds NaN or an infinity (in
    /// `B` they propagate to `X`, as through any op); `ForeignTensor` if the tapes differ;
    /// `TooLarge` or `OutOfMemory` if the copy of `A` or of `B` (which becomes `X`) cannot
    /// be allocated.
    #[track_caller]
    pub fn try_solve(self, b: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        let location = Location::caller();
        let n = self.system("solve", b, location)?;
        let tape = self.tape;
        let tracked = tape.track(&[self, b]);
        let inner = tape.inner();
        let solved = match (
            view_of(&inner.values, self.id),
            view_of(&inner.values, b.id),
        ) {
            (Ok(a), Ok(bv)) => Ok((|| {
                let (lu, ill) = Lu::for_derivative(a, tracked)?;
                Ok((lu.solve(bv, false)?, lu, ill))
            })()),
            (Err(l), _) | (_, Err(l)) => Err(l),
        };
        drop(inner);
        let (y, lu) = match computed(solved, "solve", location)? {
            Ok((x, lu, ill)) => (Ok(x), Some((lu, ill))),
            Err(l) => (Err(l), None),
        };
        // (at a matrix singular to working precision, the derivative is an error)
        let rule = lu.filter(|_| tracked).map(|(lu, ill)| match ill {
            Some(kind) => (Saves::NONE, Rule::undefined("solve", kind, location)),
            None => {
                let saves = Saves::NONE.output_if(self.requires_grad);
                (saves, Rule::boxed(SolveBackward { lu }))
            }
        });
        Ok(tape.record("solve", y, (n, b.shape.1), &[self, b], rule, location))
    }

    /// The solution `X` of `A·X = B` (or `Aᵀ·X = B` if `transpose`) for a triangular `A`:
    /// its lower triangle if `lower`, else its upper; the other triangle is not read
    /// (LAPACK `trtrs`).
    ///
    /// The derivative: `dB = op(A)⁻ᵀ·G`; `dA = −tri(dB·Xᵀ)`, or `−tri(X·dBᵀ)` for
    /// `transpose`, where `tri` keeps `A`'s triangle: the gradient lies on the triangle,
    /// as in JAX and PyTorch (the other triangle does not affect `X`).
    ///
    /// *Needs the `linalg` feature and a LAPACK provider.*
    ///
    /// # Panics
    ///
    /// If `A` is not square, the rows differ, a diagonal element is zero, or `A` holds
    /// NaN; see [`Tensor::try_solve_triangular`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let l = tape.param(array![[2.0, 99.0], [1.0, 4.0]]); // the 99 is not read
    /// let b = tape.constant(array![[2.0], [9.0]]);
    /// assert_eq!(l.solve_triangular(b, true, false).value(), array![[1.0], [2.0]]);
    /// let grads = tape.backward(l.solve_triangular(b, true, false).sum()).unwrap();
    /// assert_eq!(grads.get(l).unwrap()[[0, 1]], 0.0);
    /// ```
    #[track_caller]
    pub fn solve_triangular(self, b: Tensor<'t, F>, lower: bool, transpose: bool) -> Tensor<'t, F> {
        or_panic(self.try_solve_triangular(b, lower, transpose))
    }

    /// The solution of a triangular system, or an error.
    ///
    /// # Errors
    ///
    /// `NotSquare`; `Shape` if `B`'s rows differ from `A`'s; `Singular` with the index of
    /// the zero on the diagonal as `info`; `NotFinite` if `A`'s triangle holds NaN or an
    /// infinity; `ForeignTensor`; `TooLarge` or `OutOfMemory` if the copy of `B` (which
    /// becomes `X`), or of `A` where it is not contiguous, cannot be allocated.
    #[track_caller]
    pub fn try_solve_triangular(
        self,
        b: Tensor<'t, F>,
        lower: bool,
        transpose: bool,
    ) -> Result<Tensor<'t, F>> {
        let location = Location::caller();
        let op = "solve_triangular";
        let n = self.system(op, b, location)?;
        let tape = self.tape;
        let y = tape.read2(self.id, b.id, |a, bv| {
            triangular_solve(a, lower, transpose, false, bv)
        });
        let y = computed(y, op, location)?;
        let rule = tape.track(&[self, b]).then(|| {
            let saves = Saves::NONE.input_if(0, true).output_if(self.requires_grad);
            (saves, Rule::boxed(TriangularBackward { lower, transpose }))
        });
        Ok(tape.record(op, y, (n, b.shape.1), &[self, b], rule, location))
    }

    /// The solution `X` of `(L·Lᵀ)·X = B` from the lower Cholesky factor `L` (only its
    /// lower triangle is read): two triangular solves, as SciPy's `cho_solve`.
    ///
    /// The derivative: `dB = (L·Lᵀ)⁻¹·G`, `dL = −tril((dB·Xᵀ + X·dBᵀ)·L)` (JAX's
    /// convention: on `L`'s triangle).
    ///
    /// *Needs the `linalg` feature and a LAPACK provider.*
    ///
    /// # Panics
    ///
    /// If `L` is not square, the rows differ, `L` has a zero on its diagonal, or `L`
    /// holds NaN; see [`Tensor::try_cho_solve`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let a = tape.constant(array![[4.0, 2.0], [2.0, 3.0]]);
    /// let b = tape.constant(array![[6.0], [5.0]]);
    /// let x = a.cholesky().cho_solve(b); // A·X = B
    /// assert!((x.value() - array![[1.0], [1.0]]).iter().all(|d: &f64| d.abs() < 1e-12));
    /// ```
    #[track_caller]
    pub fn cho_solve(self, b: Tensor<'t, F>) -> Tensor<'t, F> {
        or_panic(self.try_cho_solve(b))
    }

    /// The solution of `(L·Lᵀ)·X = B`, or an error.
    ///
    /// # Errors
    ///
    /// As [`Tensor::try_solve_triangular`].
    #[track_caller]
    pub fn try_cho_solve(self, b: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        let location = Location::caller();
        let op = "cho_solve";
        let n = self.system(op, b, location)?;
        let tape = self.tape;
        let y = tape.read2(self.id, b.id, cho_solve_array);
        let y = computed(y, op, location)?;
        let rule = tape.track(&[self, b]).then(|| {
            let saves = Saves::NONE.input_if(0, true).output_if(self.requires_grad);
            (saves, Rule::boxed(ChoSolveBackward))
        });
        Ok(tape.record(op, y, (n, b.shape.1), &[self, b], rule, location))
    }

    /// The size of the system `self·X = b`: `self` square, `b` with as many rows.
    fn system(
        self,
        op: &'static str,
        b: Tensor<'t, F>,
        location: &'static Location<'static>,
    ) -> Result<usize> {
        self.same_tape(b, op, location)?;
        let n = square(op, self.shape, location)?;
        if b.shape.0 != n {
            let rule = "the right-hand side must have as many rows as the square matrix";
            return Err(shape_error(op, self.shape, b.shape, rule, location));
        }
        super::lapack::fits_lapack(op, b.shape, location)?;
        Ok(n)
    }
}
