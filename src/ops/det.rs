//! Determinants (feature `linalg`): `det`, `slogdet`, `logdet`, from one LU
//! factorisation (LAPACK `getrf`): `det A = ±∏ᵢ uᵢᵢ`, the sign flipped by each row
//! interchange.
//!
//! VJP, with `g = ∂L/∂y` (Giles 2008, §2.2; PyTorch's `linalg_det_backward` and
//! `slogdet_backward`; JAX's `_det_jvp`, `_slogdet_jvp`):
//!
//! - `y = det A`: `dA = g·adj(A)ᵀ`, the cofactor matrix: `g·y·A⁻ᵀ` where `A` is invertible,
//!   from the forward's LU. At a singular `A` (an exactly zero pivot, or one below
//!   `n·ε` of the largest) it is computed from the SVD `A = U·diag(s)·Vᵀ` as
//!   `det(U)·det(V)·U·diag(∏_{j≠i} sⱼ)·Vᵀ`, defined and exact also at rank n − 1 (PyTorch
//!   does the same). Saves `y` (or `A` and the cofactors, at a singular `A`).
//! - `(s, y) = slogdet A`, `y = ln |det A|`: `dA = g·A⁻ᵀ`, from the forward's LU; the sign
//!   `s` is piecewise constant and has no gradient. At a singular `A` the gradient does not
//!   exist: backward returns `Singular`, naming the op and its line.
//! - `y = logdet A`: `ln det A` (NaN for a negative determinant, as in PyTorch and NumPy),
//!   with `slogdet`'s gradient.
//!
//! The tensor forms are `g·y·inv(A)ᵀ` and `g·inv(A)ᵀ` in recorded ops: differentiable again
//! where `A` is invertible, a `Singular` error from [`Tape::grad`](crate::Tape::grad) at a
//! singular `A`.

use std::panic::Location;

use ndarray::Array2;

use super::lapack::{LinalgFloat, Lu, computed, finite, square, svd};
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

/// The cofactor matrix `adj(A)ᵀ = det(U)·det(V)·U·diag(∏_{j≠i} sⱼ)·Vᵀ` from the SVD, with
/// the products taken without division (exact at a zero singular value).
fn cofactors<F: LinalgFloat>(
    a: ndarray::ArrayView2<'_, F>,
) -> std::result::Result<Array2<F>, ErrorKind> {
    let n = a.nrows();
    let (u, s, vt) = svd(a)?;
    // ∏_{j≠i} sⱼ = (prefix product before i)·(suffix product after i)
    let mut p = vec![F::one(); n];
    let mut acc = F::one();
    for i in 0..n {
        p[i] = acc;
        acc *= s[i];
    }
    acc = F::one();
    for i in (0..n).rev() {
        p[i] *= acc;
        acc *= s[i];
    }
    // det(U)·det(Vᵀ) is ±1: the signs of their LU factorisations
    let sign = |m: &Array2<F>| Lu::new(m.view()).map_or(F::one(), |lu| lu.det().signum());
    let k = sign(&u) * sign(&vt);
    let mut us = u;
    for (mut col, &pi) in us.columns_mut().into_iter().zip(&p) {
        col *= k * pi;
    }
    Ok(us.dot(&vt))
}

impl<F: LinalgFloat> Backward<F> for DetBackward<F> {
    fn backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
        let g = g[[0, 0]];
        match self {
            DetBackward::Lu(lu) => {
                let y = ctx.output()[[0, 0]];
                let mut d = lu.inverse().reversed_axes();
                d *= g * y;
                ctx.accumulate(0, d);
            }
            DetBackward::Cofactors(c) => ctx.accumulate_scaled(0, g, c.view()),
        }
    }

    fn backward_tensor<'t>(&self, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
        let (a, y) = (ctx.input(0), ctx.output());
        let location = ctx.location;
        let inv = a
            .try_inv()
            .map_err(|e| Error::new("det", e.kind().clone(), location))?;
        ctx.accumulate(0, inv.t().try_mul(y.try_mul(g)?)?)
    }
}

/// The rule of `ln |det A|`: the forward's LU.
struct LogDetBackward<F> {
    lu: Lu<F>,
}

impl<F: LinalgFloat> Backward<F> for LogDetBackward<F> {
    fn backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
        let inv = self.lu.inverse();
        ctx.accumulate_scaled(0, g[[0, 0]], inv.t());
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
    /// singular `A` (for its gradient) does not converge.
    #[track_caller]
    pub fn try_det(self) -> Result<Tensor<'t, F>> {
        let location = Location::caller();
        square("det", self.shape, location)?;
        let tape = self.tape;
        let wants = tape.track(&[self]);
        let y = tape.read1(self.id, |a| {
            finite(a)?;
            // the LU gives the value; the rule keeps it where A is safely invertible, and
            // the cofactors from the SVD where it is not
            let (det, lu) = match Lu::new(a) {
                Ok(lu) => (lu.det(), Some(lu)),
                Err(ErrorKind::Singular { .. }) => (F::zero(), None),
                Err(e) => return Err(e),
            };
            let rule = match lu {
                _ if !wants => None,
                Some(lu) if !lu.nearly_singular() => Some(DetBackward::Lu(lu)),
                _ => Some(DetBackward::Cofactors(cofactors(a)?)),
            };
            Ok((det, rule))
        });
        let (y, rule) = match computed(y, "det", location)? {
            Ok((det, rule)) => (Ok(Array2::from_elem((1, 1), det)), rule),
            Err(l) => (Err(l), None),
        };
        // (a result of a released input records no rule: it cannot be differentiated)
        let rule = rule.map(|rule| {
            let saves = match rule {
                DetBackward::Lu(_) => Saves::output(),
                DetBackward::Cofactors(_) => Saves::NONE,
            };
            (saves, Rule::boxed(rule))
        });
        Ok(tape.record("det", y, (1, 1), &[self], rule, location))
    }

    /// The sign and the logarithm of the absolute value of the determinant, each a 1 × 1
    /// tensor: `(s, ln |det A|)` with `det A = s·e^y`, `s` ∈ {−1, 0, 1} (LAPACK `getrf`).
    /// Neither overflows where `det` would.
    ///
    /// The derivative: `dA = g·A⁻ᵀ` for `ln |det A|`, from the forward's LU; the sign has
    /// none. At a singular `A` the value is `(0, −∞)` and the gradient does not exist:
    /// backward returns a `Singular` error naming `slogdet` and this call's line.
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
    /// `NotSquare`; `NotFinite` if `A` holds NaN or an infinity.
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
    /// returns a `Singular` error.
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
        let y = tape.read1(self.id, |a| {
            finite(a)?;
            match Lu::new(a) {
                Ok(lu) => {
                    let (s, l) = lu.sign_log_abs();
                    Ok((s, l, Ok(lu)))
                }
                Err(e @ ErrorKind::Singular { .. }) => Ok((F::zero(), F::neg_infinity(), Err(e))),
                Err(e) => Err(e),
            }
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
        // at a singular A the gradient does not exist: an error if one reaches the rule
        // (a result of a released input records no rule: it cannot be differentiated)
        let rule = lu.filter(|_| tape.track(&[self])).map(|lu| match lu {
            Ok(lu) => (Saves::NONE, Rule::boxed(LogDetBackward { lu })),
            Err(kind) => {
                let e = Error::new(op, kind, location);
                (Saves::NONE, Rule::Undefined(Box::new(e)))
            }
        });
        Ok((
            sign,
            tape.record(op, value, (1, 1), &[self], rule, location),
        ))
    }
}
