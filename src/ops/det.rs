//! Determinants (feature `linalg`): `det`, `slogdet`, `logdet`, from one LU
//! factorisation (LAPACK `getrf`): `det A = ±∏ᵢ uᵢᵢ`, the sign flipped by each row
//! interchange, the product kept as a mantissa and a power of two so that it over- or
//! underflows only where the result does; at a subnormal pivot, from the LU of `A` with
//! its rows and columns scaled by powers of two (`super::lu`).
//!
//! VJP, with `g = ∂L/∂y` (Giles 2008, §2.2; PyTorch's `linalg_det_backward` and
//! `slogdet_backward`; JAX's `_det_jvp`, `_slogdet_jvp`):
//!
//! - `y = det A`: `dA = g·adj(A)ᵀ`, the cofactor matrix: `g·det(A)·A⁻ᵀ` where `A` is
//!   invertible, from the forward's LU, each element scaled by its power of two once (so
//!   that the cofactors of `1e-200·I₂` are 1e-200, where `det A = 1e-400` is 0). Where
//!   `A` is singular or ill-conditioned (an exactly zero pivot, or LAPACK's estimate of
//!   `1/κ₁(A)` at most ε^¼) it is computed from the SVD `A = U·diag(s)·Vᵀ` as
//!   `det(U)·det(V)·U·diag(∏_{j≠i} sⱼ)·Vᵀ`, defined and exact also at rank n − 1 (PyTorch
//!   does the same). Saves nothing (it owns the LU, or the cofactors).
//! - `(s, y) = slogdet A`, `y = ln |det A|`: `dA = g·A⁻ᵀ`, from the forward's LU; the sign
//!   `s` is piecewise constant and has no gradient. At a singular `A` the gradient does not
//!   exist: backward returns `Singular`, naming the op and its line; at one singular to
//!   working precision (LAPACK's estimate of `1/κ₁(A)` at most ε, also with its rows and
//!   columns scaled by powers of two), `IllConditioned`, as `inv`'s.
//! - `y = logdet A`: `ln det A` (NaN for a negative determinant, as in PyTorch and NumPy),
//!   with `slogdet`'s gradient.
//!
//! The tensor forms: `det`'s is `cofactor(A)·g`, the cofactors recorded as an op of their
//! own whose derivatives (det's Hessian and third derivative) are computed in the frame of
//! the SVD, exact at every rank ([`super::cofactor`]; `g·y·inv(A)ᵀ`, used before, gave
//! numbers of order 1 for the Hessian of `det(u·vᵀ)`, which is 0). `slogdet`'s and
//! `logdet`'s are `g·inv(A)ᵀ` in recorded ops: differentiable again where `A` is
//! invertible, a `Singular` error from [`Tape::grad`](crate::Tape::grad) at a singular `A`.

use std::panic::Location;

use ndarray::Array2;

use super::cofactor::{cofactors_svd, record_cofactor, well_conditioned};
use super::lapack::{LinalgFloat, Lu, computed, fortran, square};
use crate::Tensor;
use crate::error::{Error, ErrorKind, Result, or_panic};
use crate::grad::Ctx;
use crate::higher::TensorCtx;
use crate::rule::{Backward, Rule, Saves};

/// What `det`'s rule keeps: the LU of an invertible `A`, or the cofactor matrix of a
/// singular one.
enum DetBackward<F> {
    Lu(Lu<F>),
    Cofactors(Array2<F>),
}

impl<F: LinalgFloat> Backward<F> for DetBackward<F> {
    fn backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
        or_panic(self.try_backward(g, ctx));
    }

    /// (`OutOfMemory` if the inverse's buffer is refused.)
    fn try_backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) -> Result<()> {
        let g = g[[0, 0]];
        match self {
            DetBackward::Lu(lu) => {
                let mut d = lu.cofactors().map_err(|k| ctx.error(k))?;
                d *= g;
                ctx.accumulate(0, d);
            }
            DetBackward::Cofactors(c) => ctx.accumulate_scaled(0, g, c.view()),
        }
        Ok(())
    }

    /// `g·cofactor(A)`, the cofactors recorded as an op whose derivatives are exact at
    /// every rank ([`super::cofactor`]).
    fn backward_tensor<'t>(&self, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
        let location = ctx.location;
        let c = match self {
            DetBackward::Lu(lu) => lu.cofactors(),
            DetBackward::Cofactors(c) => fortran(c.view()),
        }
        .map_err(|kind| Error::new("det", kind, location))?;
        let c = record_cofactor(ctx.input(0), c, location);
        ctx.accumulate(0, c.try_mul(g)?)
    }
}

/// The rule of `ln |det A|`: the forward's LU.
struct LogDetBackward<F> {
    lu: Lu<F>,
}

impl<F: LinalgFloat> Backward<F> for LogDetBackward<F> {
    fn backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
        or_panic(self.try_backward(g, ctx));
    }

    /// (`OutOfMemory` if the inverse's buffer is refused.)
    fn try_backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) -> Result<()> {
        let inv = self.lu.inverse().map_err(|k| ctx.error(k))?;
        ctx.accumulate_scaled(0, g[[0, 0]], inv.t());
        Ok(())
    }

    fn backward_tensor<'t>(&self, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
        let a = ctx.input(0);
        ctx.accumulate(0, a.try_inv()?.t().try_mul(g)?)
    }
}

/// # Linear algebra: determinants
///
/// Feature `linalg`.
impl<'t, F: LinalgFloat> Tensor<'t, F> {
    /// The determinant of a square matrix, as a 1 × 1 tensor (LAPACK `getrf`). For large
    /// or ill-conditioned matrices prefer [`Tensor::slogdet`]: the determinant itself
    /// overflows and underflows easily.
    ///
    /// The derivative: `dA = g·adj(A)ᵀ`, the cofactor matrix: `g·det(A)·A⁻ᵀ` from the
    /// forward's LU, and from the SVD where `A` is singular (there the gradient is still
    /// defined: at rank n − 1 it is not zero).
    ///
    /// *Needs the `linalg` feature and a LAPACK provider.*
    ///
    /// # Panics
    ///
    /// If `A` is not square or holds NaN; see [`Tensor::try_det`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let a = tape.param(array![[1.0, 2.0], [2.0, 4.0]]); // singular
    /// let d = a.det();
    /// assert_eq!(d.item(), 0.0);
    /// let grads = tape.backward(d).unwrap();
    /// // the cofactor matrix [[d, −c], [−b, a]]
    /// let expected = array![[4.0, -2.0], [-2.0, 1.0]];
    /// assert!((grads.get(a).unwrap() - expected).iter().all(|e: &f64| e.abs() < 1e-12));
    /// ```
    #[track_caller]
    pub fn det(self) -> Tensor<'t, F> {
        or_panic(self.try_det())
    }

    /// The determinant, or an error.
    ///
    /// # Errors
    ///
    /// `NotSquare`; `NotFinite` if `A` holds NaN or an infinity; `Lapack` if the SVD of a
    /// singular `A` (for its gradient) does not converge; `TooLarge` or `OutOfMemory` if a
    /// working copy cannot be allocated.
    #[track_caller]
    pub fn try_det(self) -> Result<Tensor<'t, F>> {
        let location = Location::caller();
        square("det", self.shape, location)?;
        let tape = self.tape;
        let wants = tape.track(&[self]);
        let y = tape.read1(self.id, |a| {
            // the LU gives the value; the rule keeps it where A is safely invertible, and
            // the cofactors from the SVD where it is not
            let lu = if wants { Lu::with_norm(a) } else { Lu::new(a) };
            let (det, lu) = match lu {
                Ok(lu) => (lu.det(), Some(lu)),
                Err(ErrorKind::Singular { .. }) => (F::zero(), None),
                Err(e) => return Err(e),
            };
            let rule = match lu {
                _ if !wants => None,
                Some(lu) if lu.rcond()? > well_conditioned() => Some(DetBackward::Lu(lu)),
                _ => Some(DetBackward::Cofactors(cofactors_svd(a)?)),
            };
            Ok((det, rule))
        });
        let (y, rule) = match computed(y, "det", location)? {
            Ok((det, rule)) => (Ok(Array2::from_elem((1, 1), det)), rule),
            Err(l) => (Err(l), None),
        };
        // (a result of a released input records no rule: it cannot be differentiated)
        let rule = rule.map(|rule| (Saves::NONE, Rule::boxed(rule)));
        Ok(tape.record("det", y, (1, 1), &[self], rule, location))
    }

    /// The sign and the logarithm of the absolute value of the determinant, each a 1 × 1
    /// tensor: `(s, ln |det A|)` with `det A = s·e^y`, `s` ∈ {−1, 0, 1} (LAPACK `getrf`).
    /// Neither overflows where `det` would.
    ///
    /// The derivative: `dA = g·A⁻ᵀ` for `ln |det A|`, from the forward's LU; the sign has
    /// none. At a singular `A` the value is `(0, −∞)` and the gradient does not exist:
    /// backward returns a `Singular` error naming `slogdet` and this call's line; at one
    /// singular to working precision (see [`Tensor::inv`]), an `IllConditioned` error.
    ///
    /// *Needs the `linalg` feature and a LAPACK provider.*
    ///
    /// # Panics
    ///
    /// If `A` is not square or holds NaN; see [`Tensor::try_slogdet`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let a = tape.param(array![[0.0, 2.0], [3.0, 0.0]]); // det = −6
    /// let (sign, logabs) = a.slogdet();
    /// assert_eq!(sign.item(), -1.0);
    /// assert!((logabs.item() - 6f64.ln()).abs() < 1e-15);
    /// ```
    #[track_caller]
    pub fn slogdet(self) -> (Tensor<'t, F>, Tensor<'t, F>) {
        or_panic(self.try_slogdet())
    }

    /// The sign and log-absolute-determinant, or an error.
    ///
    /// # Errors
    ///
    /// `NotSquare`; `NotFinite` if `A` holds NaN or an infinity; `TooLarge` or
    /// `OutOfMemory` if the working copy of `A` cannot be allocated.
    #[track_caller]
    pub fn try_slogdet(self) -> Result<(Tensor<'t, F>, Tensor<'t, F>)> {
        let location = Location::caller();
        let (sign, logabs) = self.log_det("slogdet", location)?;
        let tape = self.tape;
        let sign = sign.map(|s| Array2::from_elem((1, 1), s));
        Ok((
            tape.record("slogdet", sign, (1, 1), &[self], None, location),
            logabs,
        ))
    }

    /// The natural logarithm of the determinant, as a 1 × 1 tensor: NaN if the
    /// determinant is negative, −∞ if it is zero (as PyTorch's and NumPy's `logdet`). For
    /// a positive definite matrix, `2·Σ ln diag(cholesky(A))` is cheaper.
    ///
    /// The derivative: `dA = g·A⁻ᵀ`, from the forward's LU; at a singular `A` backward
    /// returns a `Singular` error, at one singular to working precision an
    /// `IllConditioned` error (as [`Tensor::slogdet`]).
    ///
    /// *Needs the `linalg` feature and a LAPACK provider.*
    ///
    /// # Panics
    ///
    /// If `A` is not square or holds NaN; see [`Tensor::try_logdet`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let a = tape.param(array![[2.0, 1.0], [1.0, 2.0]]); // det = 3
    /// assert!((a.logdet().item() - 3f64.ln()).abs() < 1e-15);
    /// let grads = tape.backward(a.logdet()).unwrap(); // A⁻ᵀ = [[2, −1], [−1, 2]] / 3
    /// let expected = ndarray::array![[2.0, -1.0], [-1.0, 2.0]] / 3.0;
    /// assert!((grads.get(a).unwrap() - expected).iter().all(|e: &f64| e.abs() < 1e-15));
    /// ```
    #[track_caller]
    pub fn logdet(self) -> Tensor<'t, F> {
        or_panic(self.try_logdet())
    }

    /// The logarithm of the determinant, or an error.
    ///
    /// # Errors
    ///
    /// As [`Tensor::try_slogdet`].
    #[track_caller]
    pub fn try_logdet(self) -> Result<Tensor<'t, F>> {
        Ok(self.log_det("logdet", Location::caller())?.1)
    }

    /// The sign (as a value) and `ln |det A|` (recorded as `op`, `ln det A` for `logdet`).
    #[allow(clippy::type_complexity)]
    fn log_det(
        self,
        op: &'static str,
        location: &'static Location<'static>,
    ) -> Result<(std::result::Result<F, crate::tape::NodeId>, Tensor<'t, F>)> {
        square(op, self.shape, location)?;
        let tape = self.tape;
        let tracked = tape.track(&[self]);
        let y = tape.read1(self.id, |a| match Lu::for_derivative(a, tracked) {
            Ok((lu, ill)) => {
                let (s, l) = lu.sign_log_abs();
                Ok((s, l, ill.map_or(Ok(lu), Err)))
            }
            Err(e @ ErrorKind::Singular { .. }) => Ok((F::zero(), F::neg_infinity(), Err(e))),
            Err(e) => Err(e),
        });
        let (sign, value, lu) = match computed(y, op, location)? {
            Ok((s, l, lu)) => {
                let l = if op == "logdet" && s < F::zero() {
                    F::nan()
                } else {
                    l
                };
                (Ok(s), Ok(Array2::from_elem((1, 1), l)), Some(lu))
            }
            Err(lost) => (Err(lost), Err(lost), None),
        };
        // at a singular A (or one singular to working precision) the gradient does not
        // exist: an error if one reaches the rule (a result of a released input records no
        // rule: it cannot be differentiated)
        let rule = lu.filter(|_| tracked).map(|lu| match lu {
            Ok(lu) => (Saves::NONE, Rule::boxed(LogDetBackward { lu })),
            Err(kind) => (Saves::NONE, Rule::undefined(op, kind, location)),
        });
        Ok((
            sign,
            tape.record(op, value, (1, 1), &[self], rule, location),
        ))
    }
}
