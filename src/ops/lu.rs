//! The pivoted LU factorisation under `inv`, `solve`, `det`, `slogdet` and `logdet`
//! (feature `linalg`): LAPACK's `getrf`, `getrs` and `getri` on buffers allocated
//! fallibly ([`super::lapack`]).

use ndarray::{Array2, ArrayView2};

use super::lapack::{LinalgFloat, data, data_mut, dim, filled, finite, flag, fortran, workspace};
use crate::error::ErrorKind;

/// A pivoted LU factorisation `A = P·L·U` (LAPACK `getrf`), column-major, kept by the
/// rules of `solve`, `det` and `slogdet` so that backward does not factorise again.
pub(crate) struct Lu<F> {
    /// `L` (unit diagonal, not stored) below the diagonal, `U` on and above it.
    lu: Array2<F>,
    /// LAPACK's 1-based row interchanges: row `i` was swapped with row `piv[i] − 1`.
    piv: Vec<i32>,
}

impl<F: LinalgFloat> Lu<F> {
    /// Factorises the square `a`: `NotFinite` if it holds NaN or an infinity, `Singular`
    /// with LAPACK's `info` (the first exactly zero pivot), `TooLarge` / `OutOfMemory` if
    /// its copy cannot be allocated.
    pub(crate) fn new(a: ArrayView2<'_, F>) -> std::result::Result<Self, ErrorKind> {
        let n = a.nrows();
        let mut lu = fortran(a)?;
        finite(&lu)?;
        let mut piv = filled(n, 0, (n, 1))?;
        if n > 0 {
            let (ni, mut info) = (dim(n), 0);
            // SAFETY: `lu` holds n × n elements column-major (lda = n), `piv` n.
            unsafe {
                F::getrf(
                    &ni,
                    &ni,
                    data_mut(&mut lu).as_mut_ptr(),
                    &ni,
                    piv.as_mut_ptr(),
                    &mut info,
                )
            };
            if info > 0 {
                return Err(ErrorKind::Singular {
                    shape: (n, n),
                    info,
                });
            }
            assert_eq!(info, 0, "getrf's arguments are valid");
        }
        Ok(Lu { lu, piv })
    }

    fn n(&self) -> usize {
        self.lu.nrows()
    }

    /// `X = A⁻¹·B`, or `A⁻ᵀ·B` if `transpose` (LAPACK `getrs`), column-major, or
    /// `TooLarge` / `OutOfMemory` for the copy of `B` that becomes `X`.
    pub(crate) fn solve(
        &self,
        b: ArrayView2<'_, F>,
        transpose: bool,
    ) -> std::result::Result<Array2<F>, ErrorKind> {
        let n = self.n();
        let mut x = fortran(b)?;
        if n == 0 || x.ncols() == 0 {
            return Ok(x);
        }
        let (ni, nrhs, mut info) = (dim(n), dim(x.ncols()), 0);
        let trans = flag(if transpose { b'T' } else { b'N' });
        // SAFETY: the factors are n × n (lda = n), `x` n × nrhs (ldb = n), `piv` n.
        unsafe {
            F::getrs(
                &trans,
                &ni,
                &nrhs,
                data(&self.lu).as_ptr(),
                &ni,
                self.piv.as_ptr(),
                data_mut(&mut x).as_mut_ptr(),
                &ni,
                &mut info,
            )
        };
        assert_eq!(info, 0, "getrs's arguments are valid");
        Ok(x)
    }

    /// `A⁻¹` from the factors (LAPACK `getri`), column-major, in a copy of them.
    pub(crate) fn inverse(&self) -> std::result::Result<Array2<F>, ErrorKind> {
        let mut copy = fortran(self.lu.view())?;
        invert(&mut copy, &self.piv)?;
        Ok(copy)
    }

    /// `A⁻¹` in the factors' own buffer.
    pub(crate) fn into_inverse(mut self) -> std::result::Result<Array2<F>, ErrorKind> {
        invert(&mut self.lu, &self.piv)?;
        Ok(self.lu)
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

/// The inverse from the LU factors in `lu`, in place (LAPACK `getri`), with a workspace
/// allocated fallibly.
fn invert<F: LinalgFloat>(lu: &mut Array2<F>, piv: &[i32]) -> std::result::Result<(), ErrorKind> {
    let n = lu.nrows();
    if n == 0 {
        return Ok(());
    }
    let (ni, mut info) = (dim(n), 0);
    let mut query = F::zero();
    // SAFETY: a workspace query (lwork = −1) reads only the sizes.
    unsafe {
        F::getri(
            &ni,
            data_mut(lu).as_mut_ptr(),
            &ni,
            piv.as_ptr(),
            &mut query,
            &-1,
            &mut info,
        )
    };
    let lwork = workspace(query, n);
    let mut work = filled(lwork, F::zero(), (lwork, 1))?;
    // SAFETY: `lu` holds the n × n factors (lda = n), `piv` n, `work` lwork elements.
    unsafe {
        F::getri(
            &ni,
            data_mut(lu).as_mut_ptr(),
            &ni,
            piv.as_ptr(),
            work.as_mut_ptr(),
            &dim(lwork),
            &mut info,
        )
    };
    assert_eq!(info, 0, "getri after a successful getrf");
    Ok(())
}
