//! The LAPACK layer under the linear-algebra ops (feature `linalg`): ndarray-linalg's
//! routines (its `lax` layer, which keeps LAPACK's `info`) on column-major copies, with
//! failures turned into typed errors.
//!
//! Every routine works on a column-major (F-order) copy of its operand, made once: LAPACK
//! overwrites its input, and the tape's values (views, transposes, step-2 slices) stay
//! untouched. Results come back column-major; tapegrad's ops read any layout.

use std::panic::Location;

use lax::error::Error as LaxError;
use ndarray::{Array2, ArrayView2, ShapeBuilder};
use ndarray_linalg::{Diag, Lapack, MatrixLayout, UPLO};

use crate::Float;
use crate::error::{Error, ErrorKind, Result};

/// The element types of the linear-algebra ops: `f32` and `f64` (LAPACK's `s` and `d`
/// routines), sealed like [`Float`].
///
/// Its methods are the LAPACK routines the ops call, through ndarray-linalg; they are not
/// part of the API (ndarray-linalg's own traits stay out of a user's generic code, where
/// their `abs` or `sqrt` would clash with [`Float`]'s).
pub trait LinalgFloat: Float {
    #[doc(hidden)]
    fn lapack_lu(l: MatrixLayout, a: &mut [Self]) -> LaxResult<Vec<i32>>;
    #[doc(hidden)]
    fn lapack_inv(l: MatrixLayout, a: &mut [Self], piv: &[i32]) -> LaxResult<()>;
    #[doc(hidden)]
    fn lapack_trtrs(
        al: MatrixLayout,
        bl: MatrixLayout,
        uplo: UPLO,
        diag: Diag,
        a: &[Self],
        b: &mut [Self],
    ) -> LaxResult<()>;
    #[doc(hidden)]
    fn lapack_potrf(l: MatrixLayout, uplo: UPLO, a: &mut [Self]) -> LaxResult<()>;
    #[doc(hidden)]
    fn lapack_syev(l: MatrixLayout, uplo: UPLO, a: &mut [Self]) -> LaxResult<Vec<Self>>;
    #[doc(hidden)]
    #[allow(clippy::type_complexity)]
    fn lapack_gesvd(
        l: MatrixLayout,
        a: &mut [Self],
    ) -> LaxResult<(Vec<Self>, Option<Vec<Self>>, Option<Vec<Self>>)>;
}

type LaxResult<T> = std::result::Result<T, LaxError>;

macro_rules! linalg_float {
    ($t:ty) => {
        impl LinalgFloat for $t {
            fn lapack_lu(l: MatrixLayout, a: &mut [Self]) -> LaxResult<Vec<i32>> {
                <$t as Lapack>::lu(l, a)
            }
            fn lapack_inv(l: MatrixLayout, a: &mut [Self], piv: &[i32]) -> LaxResult<()> {
                <$t as Lapack>::inv(l, a, &piv.to_vec())
            }
            fn lapack_trtrs(
                al: MatrixLayout,
                bl: MatrixLayout,
                uplo: UPLO,
                diag: Diag,
                a: &[Self],
                b: &mut [Self],
            ) -> LaxResult<()> {
                <$t as Lapack>::solve_triangular(al, bl, uplo, diag, a, b)
            }
            fn lapack_potrf(l: MatrixLayout, uplo: UPLO, a: &mut [Self]) -> LaxResult<()> {
                <$t as Lapack>::cholesky(l, uplo, a)
            }
            fn lapack_syev(l: MatrixLayout, uplo: UPLO, a: &mut [Self]) -> LaxResult<Vec<Self>> {
                <$t as Lapack>::eigh(true, l, uplo, a)
            }
            fn lapack_gesvd(
                l: MatrixLayout,
                a: &mut [Self],
            ) -> LaxResult<(Vec<Self>, Option<Vec<Self>>, Option<Vec<Self>>)> {
                let out = <$t as Lapack>::svd(l, true, true, a)?;
                Ok((out.s, out.u, out.vt))
            }
        }
    };
}

linalg_float!(f32);
linalg_float!(f64);

/// A column-major copy of `a`.
pub(crate) fn fortran<F: Float>(a: ArrayView2<'_, F>) -> Array2<F> {
    let mut b = Array2::zeros(a.raw_dim().f());
    b.assign(&a);
    b
}

/// The LAPACK layout of an F-order `rows × cols` buffer.
fn layout(rows: usize, cols: usize) -> MatrixLayout {
    MatrixLayout::F {
        col: cols as i32,
        lda: rows as i32,
    }
}

fn data<F>(a: &Array2<F>) -> &[F] {
    a.as_slice_memory_order()
        .expect("an owned column-major buffer")
}

fn data_mut<F>(a: &mut Array2<F>) -> &mut [F] {
    a.as_slice_memory_order_mut()
        .expect("an owned column-major buffer")
}

/// LAPACK's `info` in a `lax` error.
fn info(e: &LaxError) -> i32 {
    match *e {
        LaxError::LapackComputationalFailure { return_code }
        | LaxError::LapackInvalidValue { return_code } => return_code,
        LaxError::InvalidShape => 0,
    }
}

/// The square size of `shape`, or `NotSquare` (or `TooLarge` when LAPACK's 32-bit
/// integers cannot hold it).
pub(crate) fn square(
    op: &'static str,
    shape: (usize, usize),
    location: &'static Location<'static>,
) -> Result<usize> {
    if shape.0 != shape.1 {
        return Err(Error::new(op, ErrorKind::NotSquare { shape }, location));
    }
    fits_lapack(op, shape, location)?;
    Ok(shape.0)
}

/// `TooLarge` when a dimension of `shape` does not fit LAPACK's 32-bit integers.
pub(crate) fn fits_lapack(
    op: &'static str,
    shape: (usize, usize),
    location: &'static Location<'static>,
) -> Result<()> {
    if shape.0 > i32::MAX as usize || shape.1 > i32::MAX as usize {
        return Err(Error::new(op, ErrorKind::TooLarge { shape }, location));
    }
    Ok(())
}

/// `NotFinite` unless every element of `a` is finite.
pub(crate) fn finite<F: Float>(a: ArrayView2<'_, F>) -> std::result::Result<(), ErrorKind> {
    if a.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(ErrorKind::NotFinite { shape: a.dim() })
    }
}

/// `NotFinite` unless every element of `a`'s lower (or upper) triangle is finite: the
/// other triangle is not read.
pub(crate) fn finite_triangle<F: Float>(
    a: ArrayView2<'_, F>,
    lower: bool,
) -> std::result::Result<(), ErrorKind> {
    let read = |(i, j): (usize, usize)| if lower { j <= i } else { j >= i };
    if a.indexed_iter().all(|(ij, v)| !read(ij) || v.is_finite()) {
        Ok(())
    } else {
        Err(ErrorKind::NotFinite { shape: a.dim() })
    }
}

/// The value an op computed, with a LAPACK failure turned into the error for `op` (the
/// outer `Err(lost)` is a released input; see `Tape::record`).
pub(crate) fn computed<T, L>(
    value: std::result::Result<std::result::Result<T, ErrorKind>, L>,
    op: &'static str,
    location: &'static Location<'static>,
) -> Result<std::result::Result<T, L>> {
    match value {
        Ok(Ok(t)) => Ok(Ok(t)),
        Ok(Err(kind)) => Err(Error::new(op, kind, location)),
        Err(lost) => Ok(Err(lost)),
    }
}

/// A pivoted LU factorisation `A = P·L·U` (LAPACK `getrf`), column-major, kept by the
/// rules of `solve`, `det` and `slogdet` so that backward does not factorise again.
pub(crate) struct Lu<F> {
    /// `L` (unit diagonal, not stored) below the diagonal, `U` on and above it.
    lu: Array2<F>,
    /// LAPACK's 1-based row interchanges: row `i` was swapped with row `piv[i] − 1`.
    piv: Vec<i32>,
}

impl<F: LinalgFloat> Lu<F> {
    /// Factorises the square `a`, or `Singular` with LAPACK's `info` (the first exactly
    /// zero pivot).
    pub(crate) fn new(a: ArrayView2<'_, F>) -> std::result::Result<Self, ErrorKind> {
        let n = a.nrows();
        let mut lu = fortran(a);
        let piv = if n == 0 {
            Vec::new()
        } else {
            F::lapack_lu(layout(n, n), data_mut(&mut lu)).map_err(|e| ErrorKind::Singular {
                shape: (n, n),
                info: info(&e),
            })?
        };
        Ok(Lu { lu, piv })
    }

    fn n(&self) -> usize {
        self.lu.nrows()
    }

    /// Applies the row interchanges to `b`: forward (`Pᵀ·b`) or backward (`P·b`).
    fn permute(&self, b: &mut Array2<F>, forward: bool) {
        let swap = |b: &mut Array2<F>, i: usize| {
            let j = (self.piv[i] - 1) as usize;
            if i != j {
                for c in 0..b.ncols() {
                    b.swap([i, c], [j, c]);
                }
            }
        };
        if forward {
            (0..self.piv.len()).for_each(|i| swap(b, i));
        } else {
            (0..self.piv.len()).rev().for_each(|i| swap(b, i));
        }
    }

    /// `X = A⁻¹·B`, or `A⁻ᵀ·B` if `transpose` (LAPACK `getrs`: the interchanges and two
    /// triangular solves, BLAS-3), column-major.
    pub(crate) fn solve(&self, b: ArrayView2<'_, F>, transpose: bool) -> Array2<F> {
        let n = self.n();
        let mut x = fortran(b);
        if n == 0 || x.ncols() == 0 {
            return x;
        }
        let lu = data(&self.lu);
        // the same buffer read row-major is (LU)ᵀ: Uᵀ lower, Lᵀ unit upper
        let (a, at) = (
            layout(n, n),
            MatrixLayout::C {
                row: n as i32,
                lda: n as i32,
            },
        );
        let bl = layout(n, x.ncols());
        let solve = |al, uplo, diag, x: &mut Array2<F>| {
            F::lapack_trtrs(al, bl, uplo, diag, lu, data_mut(x))
                .expect("a nonzero pivot: the LU succeeded");
        };
        if transpose {
            // Aᵀ = Uᵀ·Lᵀ·Pᵀ
            solve(at, UPLO::Lower, Diag::NonUnit, &mut x);
            solve(at, UPLO::Upper, Diag::Unit, &mut x);
            self.permute(&mut x, false);
        } else {
            self.permute(&mut x, true);
            solve(a, UPLO::Lower, Diag::Unit, &mut x);
            solve(a, UPLO::Upper, Diag::NonUnit, &mut x);
        }
        x
    }

    /// `A⁻¹` from the factors (LAPACK `getri`), column-major.
    pub(crate) fn inverse(&self) -> Array2<F> {
        let n = self.n();
        let mut inv = self.lu.clone();
        if n > 0 {
            F::lapack_inv(layout(n, n), data_mut(&mut inv), &self.piv)
                .expect("a nonzero pivot: the LU succeeded");
        }
        inv
    }

    /// `(sign det A, ln |det A|)`: the product of `U`'s diagonal, its sign flipped by
    /// every row interchange.
    pub(crate) fn sign_log_abs(&self) -> (F, F) {
        let mut sign = F::one();
        let mut log = F::zero();
        for (i, &u) in self.lu.diag().iter().enumerate() {
            if self.piv[i] as usize != i + 1 {
                sign = -sign;
            }
            if u < F::zero() {
                sign = -sign;
            }
            log += u.abs().ln();
        }
        (sign, log)
    }

    /// `det A`: the product of `U`'s diagonal, with the interchanges' sign.
    pub(crate) fn det(&self) -> F {
        let mut det = F::one();
        for (i, &u) in self.lu.diag().iter().enumerate() {
            det *= if self.piv[i] as usize != i + 1 { -u } else { u };
        }
        det
    }

    /// Whether `U` has a pivot below `n·ε` times its largest: singular to working
    /// precision, where `det A · A⁻ᵀ` loses its accuracy.
    pub(crate) fn nearly_singular(&self) -> bool {
        let d = self.lu.diag();
        let max = d.iter().fold(F::zero(), |m, v| m.max(v.abs()));
        let tol = max * F::epsilon() * F::cast(self.n() as f64);
        d.iter().any(|v| v.abs() <= tol)
    }
}

/// `X = op(A)⁻¹·B` for the triangle of `a` (`lower` or upper; the other triangle is not
/// read), `op(A) = Aᵀ` if `transpose`, with a unit diagonal if `unit` (LAPACK `trtrs`,
/// BLAS-3 `trsm` inside), column-major. `Singular` if a diagonal element is zero.
pub(crate) fn triangular_solve<F: LinalgFloat>(
    a: ArrayView2<'_, F>,
    lower: bool,
    transpose: bool,
    unit: bool,
    b: ArrayView2<'_, F>,
) -> std::result::Result<Array2<F>, ErrorKind> {
    let n = a.nrows();
    let mut x = fortran(b);
    if n == 0 || x.ncols() == 0 {
        return Ok(x);
    }
    // op(A)'s triangle, copied column-major: the transpose swaps the triangles
    let (op_a, lower) = if transpose {
        (fortran(a.t()), !lower)
    } else {
        (fortran(a), lower)
    };
    let uplo = if lower { UPLO::Lower } else { UPLO::Upper };
    let diag = if unit { Diag::Unit } else { Diag::NonUnit };
    let bl = layout(n, x.ncols());
    F::lapack_trtrs(layout(n, n), bl, uplo, diag, data(&op_a), data_mut(&mut x)).map_err(|e| {
        ErrorKind::Singular {
            shape: (n, n),
            info: info(&e),
        }
    })?;
    Ok(x)
}

/// The lower Cholesky factor `L` of `(A + Aᵀ)/2` (LAPACK `potrf`), zeros above the
/// diagonal, column-major; `NotPositiveDefinite` with LAPACK's `info` otherwise.
pub(crate) fn cholesky<F: LinalgFloat>(
    a: ArrayView2<'_, F>,
) -> std::result::Result<Array2<F>, ErrorKind> {
    let n = a.nrows();
    let mut l = symmetric(a);
    if n == 0 {
        return Ok(l);
    }
    F::lapack_potrf(layout(n, n), UPLO::Lower, data_mut(&mut l)).map_err(|e| {
        ErrorKind::NotPositiveDefinite {
            shape: (n, n),
            info: info(&e),
        }
    })?;
    crate::ops::diag::triangle_inplace(&mut l, 0, true);
    Ok(l)
}

/// `(A + Aᵀ)/2`, column-major (exactly `A` where `A` is symmetric).
fn symmetric<F: Float>(a: ArrayView2<'_, F>) -> Array2<F> {
    let half = F::cast(0.5);
    let mut s = Array2::zeros(a.raw_dim().f());
    ndarray::Zip::from(&mut s)
        .and(a)
        .and(a.t())
        .for_each(|s, &x, &y| *s = (x + y) * half);
    s
}

/// Eigenvalues (ascending) and eigenvectors (the columns, column-major) of `(A + Aᵀ)/2`
/// (LAPACK `syev`); `Lapack { routine: "syev", info }` if the iteration does not converge.
pub(crate) fn eigh<F: LinalgFloat>(
    a: ArrayView2<'_, F>,
) -> std::result::Result<(Vec<F>, Array2<F>), ErrorKind> {
    let n = a.nrows();
    let mut v = symmetric(a);
    if n == 0 {
        return Ok((Vec::new(), v));
    }
    let w = F::lapack_syev(layout(n, n), UPLO::Lower, data_mut(&mut v)).map_err(|e| {
        ErrorKind::Lapack {
            routine: "syev",
            info: info(&e),
        }
    })?;
    Ok((w, v))
}

/// The factors of a singular value decomposition: `U`, the singular values, `Vᵀ`.
type Svd<F> = (Array2<F>, Vec<F>, Array2<F>);

/// `(U, s, Vᵀ)` of the square `a` (LAPACK `gesvd`), column-major, singular values in
/// descending order.
pub(crate) fn svd<F: LinalgFloat>(a: ArrayView2<'_, F>) -> std::result::Result<Svd<F>, ErrorKind> {
    let n = a.nrows();
    let mut buf = fortran(a);
    if n == 0 {
        return Ok((buf.clone(), Vec::new(), buf));
    }
    let (s, u, vt) =
        F::lapack_gesvd(layout(n, n), data_mut(&mut buf)).map_err(|e| ErrorKind::Lapack {
            routine: "gesvd",
            info: info(&e),
        })?;
    let square = |v: Option<Vec<F>>| {
        Array2::from_shape_vec((n, n).f(), v.expect("asked for")).expect("n × n")
    };
    Ok((square(u), s, square(vt)))
}
