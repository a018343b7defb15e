//! The pivoted LU factorisation under `inv`, `solve`, `det`, `slogdet` and `logdet`
//! (feature `linalg`): LAPACK's `getrf`, `getrs` and `getri` on buffers allocated
//! fallibly ([`super::lapack`]).
//!
//! A pivot that is subnormal (or not finite) makes `getrf` scale the column below it by
//! `1/u`, which overflows: `0·∞` fills the factors with NaN (`diag(1e-310, 1e-310)`). Where
//! the plain factorisation has such a pivot (or an exactly zero one), `A` is factorised
//! again with its rows and columns scaled by powers of two, `A' = R·A·C` (largest element
//! of each row, then of each column, in [1, 2): LAPACK's `geequb`), which is exact. The
//! results are scaled back, also exactly, except where they over- or underflow: `det` of
//! `diag(1e-310, 1e-310)` is 1e-620, which is 0; its inverse holds 1e310, which is ∞;
//! `ln |det|` is −1427.6. Only a pivot that stays zero or subnormal in `A'` (singular to
//! working precision by some 300 orders of magnitude) is `Singular`. A plain factorisation
//! with normal pivots, the usual case, costs one look at the n pivots more.
//!
//! Determinants are accumulated as a mantissa and a power of two, so that a product of
//! pivots that over- or underflows on the way does not decide the result.

use ndarray::{Array2, ArrayView2};

use super::lapack::{
    LinalgFloat, data, data_mut, dim, filled, finite, flag, fortran, ill_conditioned, scale_by,
    workspace,
};
use crate::Float;
use crate::error::ErrorKind;

/// A pivoted LU factorisation `A' = P·L·U` (LAPACK `getrf`) of `A' = R·A·C`, column-major,
/// kept by the rules of `solve`, `det` and `slogdet` so that backward does not factorise
/// again. `R` and `C` are the identity unless `A`'s plain factorisation failed.
pub(crate) struct Lu<F> {
    /// `L` (unit diagonal, not stored) below the diagonal, `U` on and above it.
    lu: Array2<F>,
    /// LAPACK's 1-based row interchanges: row `i` was swapped with row `piv[i] − 1`.
    piv: Vec<i32>,
    /// The exponents of `R = diag(2^rᵢ)` and `C = diag(2^cⱼ)`, if not the identity.
    scale: Option<(Vec<i32>, Vec<i32>)>,
    /// `‖A'‖₁`, if asked for ([`Lu::with_norm`]): what LAPACK's condition estimate needs.
    norm: Option<F>,
}

/// The exponent of `x`'s leading bit, `⌊log₂ |x|⌋`, for `x ≠ 0` (subnormals too).
fn exponent<F: Float>(x: F) -> i32 {
    libm::ilogb(x.as_f64())
}

/// Whether `getrf` divided by every pivot of `lu` without overflow: each is finite and
/// either zero (not divided by) or normal.
fn safe_pivots<F: Float>(lu: &Array2<F>) -> Option<usize> {
    lu.diag()
        .iter()
        .position(|&u| !u.is_finite() || (u != F::zero() && u.abs() < F::min_positive_value()))
}

/// Factorises the n × n `lu` in place: LAPACK's `info` (0, or the first exactly zero
/// pivot).
fn getrf<F: LinalgFloat>(lu: &mut Array2<F>, piv: &mut [i32]) -> i32 {
    let n = lu.nrows();
    if n == 0 {
        return 0;
    }
    let (ni, mut info) = (dim(n), 0);
    // SAFETY: `lu` holds n × n elements column-major (lda = n), `piv` n.
    unsafe {
        F::getrf(
            &ni,
            &ni,
            data_mut(lu).as_mut_ptr(),
            &ni,
            piv.as_mut_ptr(),
            &mut info,
        )
    };
    assert!(info >= 0, "getrf's arguments are valid");
    info
}

/// Fills `out` (column-major, n × n) with `R·A·C`, powers of two that bring the largest
/// element of each row, then of each column, into [1, 2); returns their exponents. Rows
/// and columns of zeros are not scaled.
fn equilibrate<F: Float>(a: ArrayView2<'_, F>, out: &mut Array2<F>) -> (Vec<i32>, Vec<i32>) {
    out.assign(&a);
    let big = |v: ndarray::ArrayView1<'_, F>| v.iter().fold(F::zero(), |m, x| m.max(x.abs()));
    let power = |m: F| if m == F::zero() { 0 } else { -exponent(m) };
    let r: Vec<i32> = out.rows().into_iter().map(|row| power(big(row))).collect();
    for (mut row, &e) in out.rows_mut().into_iter().zip(&r) {
        row.mapv_inplace(|x| scale_by(x, e));
    }
    let c: Vec<i32> = out
        .columns()
        .into_iter()
        .map(|col| power(big(col)))
        .collect();
    for (mut col, &e) in out.columns_mut().into_iter().zip(&c) {
        col.mapv_inplace(|x| scale_by(x, e));
    }
    (r, c)
}

/// The largest column sum of absolute values, `‖A‖₁`, of the column-major `a`.
fn one_norm<F: Float>(a: &Array2<F>) -> F {
    a.columns()
        .into_iter()
        .map(|c| c.iter().fold(F::zero(), |s, v| s + v.abs()))
        .fold(F::zero(), F::max)
}

impl<F: LinalgFloat> Lu<F> {
    /// Factorises the square `a`: `NotFinite` if it holds NaN or an infinity, `Singular`
    /// with LAPACK's `info` (the first pivot that is zero, or subnormal after scaling),
    /// `TooLarge` / `OutOfMemory` if its copy cannot be allocated.
    pub(crate) fn new(a: ArrayView2<'_, F>) -> std::result::Result<Self, ErrorKind> {
        Self::factor(a, false)
    }

    /// `A`'s LU for an op whose derivative goes through `A⁻¹` (`inv`, `solve`, `slogdet`,
    /// `logdet`), and, where that derivative is asked for (`tracked`) and `A` is singular
    /// to working precision ([`Lu::singular_to_working_precision`]), the `IllConditioned`
    /// error (bound ε) that the op's rule is instead of a number.
    pub(crate) fn for_derivative(
        a: ArrayView2<'_, F>,
        tracked: bool,
    ) -> std::result::Result<(Self, Option<ErrorKind>), ErrorKind> {
        if !tracked {
            return Ok((Self::new(a)?, None));
        }
        let lu = Self::with_norm(a)?;
        let ill = lu.singular_to_working_precision(a)?;
        let ill = ill.map(|rcond| ill_conditioned(a.nrows(), rcond, F::epsilon()));
        Ok((lu, ill))
    }

    /// As [`Lu::new`], keeping `‖A'‖₁` for [`Lu::rcond`] (one more pass over the copy).
    pub(crate) fn with_norm(a: ArrayView2<'_, F>) -> std::result::Result<Self, ErrorKind> {
        Self::factor(a, true)
    }

    fn factor(a: ArrayView2<'_, F>, norm: bool) -> std::result::Result<Self, ErrorKind> {
        let n = a.nrows();
        let mut lu = fortran(a)?;
        finite(&lu)?;
        let mut piv = filled(n, 0, (n, 1))?;
        let plain = norm.then(|| one_norm(&lu));
        if getrf(&mut lu, &mut piv) == 0 && safe_pivots(&lu).is_none() {
            return Ok(Lu {
                lu,
                piv,
                scale: None,
                norm: plain,
            });
        }
        // a zero, subnormal or infinite pivot: again, on R·A·C
        Self::equilibrated(a, lu, piv, norm)
    }

    /// The LU of `A' = R·A·C` (powers of two: [`equilibrate`]) in the buffers `lu` (n × n,
    /// column-major) and `piv` (n), whatever they held; `Singular` if a pivot is zero or
    /// subnormal even so.
    fn equilibrated(
        a: ArrayView2<'_, F>,
        mut lu: Array2<F>,
        mut piv: Vec<i32>,
        norm: bool,
    ) -> std::result::Result<Self, ErrorKind> {
        let n = a.nrows();
        let scale = equilibrate(a, &mut lu);
        let norm = norm.then(|| one_norm(&lu));
        let info = getrf(&mut lu, &mut piv);
        let info = match safe_pivots(&lu) {
            Some(k) if info == 0 || (k as i32) < info - 1 => k as i32 + 1,
            _ => info,
        };
        if info > 0 {
            return Err(ErrorKind::Singular {
                shape: (n, n),
                info,
            });
        }
        Ok(Lu {
            lu,
            piv,
            scale: Some(scale),
            norm,
        })
    }

    /// LAPACK's estimate (`gecon`) of the reciprocal condition number `1/κ₁(A')` of the
    /// factorised matrix, in [0, 1]: about the relative distance to the nearest singular
    /// matrix, and what rounding errors of order ε are amplified by (ε/rcond) in `A'⁻¹`
    /// and everything computed from it. Needs [`Lu::with_norm`].
    pub(crate) fn rcond(&self) -> std::result::Result<F, ErrorKind> {
        let n = self.n();
        let norm = self.norm.expect("Lu::with_norm keeps the norm");
        if n == 0 {
            return Ok(F::one());
        }
        let mut work = filled(4 * n, F::zero(), (4 * n, 1))?;
        let mut iwork = filled(n, 0, (n, 1))?;
        let (ni, mut info, mut rcond) = (dim(n), 0, F::zero());
        // SAFETY: the factors are n × n (lda = n), `work` 4n elements, `iwork` n.
        unsafe {
            F::gecon(
                &flag(b'1'),
                &ni,
                data(&self.lu).as_ptr(),
                &ni,
                &norm,
                &mut rcond,
                work.as_mut_ptr(),
                iwork.as_mut_ptr(),
                &mut info,
            )
        };
        assert_eq!(info, 0, "gecon's arguments are valid");
        Ok(rcond)
    }

    /// `Some(rcond)` where `A` (the factorised matrix, given again as `a`) is singular to
    /// working precision, so that a derivative through `A⁻¹` would be rounding noise:
    /// LAPACK's estimate of `1/κ₁` is at most ε, also with `A`'s rows and columns scaled by
    /// powers of two (a badly scaled matrix such as `diag(1, 1e-300)`, whose inverse is
    /// exact, passes). A matrix with two equal columns, which LU's rounding can leave with
    /// a pivot of order ε instead of zero, does not. Needs [`Lu::with_norm`]; a well
    /// conditioned `A` costs the estimate (O(n²)), a badly scaled one a second
    /// factorisation.
    pub(crate) fn singular_to_working_precision(
        &self,
        a: ArrayView2<'_, F>,
    ) -> std::result::Result<Option<F>, ErrorKind> {
        // (NaN, which no finite matrix gives, counts as ill)
        let ill = |rcond: F| (rcond.is_nan() || rcond <= F::epsilon()).then_some(rcond);
        let rcond = self.rcond()?;
        if ill(rcond).is_none() || self.scale.is_some() {
            return Ok(ill(rcond));
        }
        let n = self.n();
        match Self::equilibrated(a, fortran(a)?, filled(n, 0, (n, 1))?, true) {
            Ok(scaled) => Ok(ill(scaled.rcond()?)),
            Err(ErrorKind::Singular { .. }) => Ok(Some(F::zero())),
            Err(e) => Err(e),
        }
    }

    fn n(&self) -> usize {
        self.lu.nrows()
    }

    /// `X = A⁻¹·B`, or `A⁻ᵀ·B` if `transpose` (LAPACK `getrs`), column-major, or
    /// `TooLarge` / `OutOfMemory` for the copy of `B` that becomes `X`. With the scalings,
    /// `A⁻¹ = C·A'⁻¹·R` and `A⁻ᵀ = R·A'⁻ᵀ·C`.
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
        // (the scaling applied before the solve, and after)
        let (before, after) = match &self.scale {
            Some((r, c)) if transpose => (Some(c), Some(r)),
            Some((r, c)) => (Some(r), Some(c)),
            None => (None, None),
        };
        let scale_rows = |x: &mut Array2<F>, e: Option<&Vec<i32>>, shift: i32| {
            if let Some(e) = e {
                for (mut row, &e) in x.rows_mut().into_iter().zip(e) {
                    row.mapv_inplace(|v| scale_by(v, e + shift));
                }
            }
        };
        // R·B can overflow where X does not (R scales the rows of a tiny A up by as much as
        // 2¹⁰⁷⁴), and B can be tiny itself: B is scaled by 2^(rᵢ + shift) before the
        // solve, the shift bringing its largest element into [1, 2), and X by
        // 2^(cⱼ − shift) after, so that X overflows only where its true value does
        let shift = before.map_or(0, |e| {
            let top = e.iter().copied().max().unwrap_or(0);
            let largest = x
                .rows()
                .into_iter()
                .zip(e)
                .flat_map(|(row, &e)| row.into_iter().map(move |&v| scale_by(v, e - top)))
                .fold(F::zero(), |m, v| m.max(v.abs()));
            let to_one = if largest > F::zero() && largest.is_finite() {
                -libm::ilogb(largest.as_f64())
            } else {
                0
            };
            to_one - top
        });
        scale_rows(&mut x, before, shift);
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
        scale_rows(&mut x, after, -shift);
        Ok(x)
    }

    /// `A⁻¹` from the factors (LAPACK `getri`), column-major, in a copy of them.
    pub(crate) fn inverse(&self) -> std::result::Result<Array2<F>, ErrorKind> {
        let mut copy = fortran(self.lu.view())?;
        self.invert(&mut copy)?;
        self.unscale_inverse(&mut copy);
        Ok(copy)
    }

    /// `A⁻¹` in the factors' own buffer.
    pub(crate) fn into_inverse(mut self) -> std::result::Result<Array2<F>, ErrorKind> {
        let mut lu = std::mem::take(&mut self.lu);
        self.invert(&mut lu)?;
        self.unscale_inverse(&mut lu);
        Ok(lu)
    }

    /// `(A⁻¹)ᵢⱼ = 2^(cᵢ + rⱼ)·(A'⁻¹)ᵢⱼ`, in place.
    fn unscale_inverse(&self, inv: &mut Array2<F>) {
        if let Some((r, c)) = &self.scale {
            for ((i, j), v) in inv.indexed_iter_mut() {
                *v = scale_by(*v, c[i] + r[j]);
            }
        }
    }

    /// `A'⁻¹` from the factors in `lu`, in place (LAPACK `getri`, with a workspace
    /// allocated fallibly).
    fn invert(&self, lu: &mut Array2<F>) -> std::result::Result<(), ErrorKind> {
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
                self.piv.as_ptr(),
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
                self.piv.as_ptr(),
                work.as_mut_ptr(),
                &dim(lwork),
                &mut info,
            )
        };
        assert_eq!(info, 0, "getri after a successful getrf");
        Ok(())
    }

    /// The sign of `det A'` (the pivots' and the interchanges'; `R` and `C` are positive).
    fn sign(&self) -> F {
        let mut sign = F::one();
        for (i, &u) in self.lu.diag().iter().enumerate() {
            if (self.piv[i] as usize != i + 1) != (u < F::zero()) {
                sign = -sign;
            }
        }
        sign
    }

    /// `-(Σ rᵢ + Σ cⱼ)`: `det A = det A' · 2^this`.
    fn det_exponent(&self) -> i32 {
        self.scale.as_ref().map_or(0, |(r, c)| {
            let sum = |e: &[i32]| e.iter().map(|&e| i64::from(e)).sum::<i64>();
            // (clamped: past ±2²⁰ any result over- or underflows alike)
            -(sum(r) + sum(c)).clamp(-(1 << 20), 1 << 20) as i32
        })
    }

    /// `|det A'|` as `m·2^e`, `m` in [0.5, 1) (or 0): the product of the pivots without
    /// overflow or underflow on the way.
    fn det_parts(&self) -> (F, i32) {
        let (mut m, mut e) = (1.0f64, 0i32);
        for &u in self.lu.diag() {
            let (f, k) = libm::frexp(m * u.abs().as_f64());
            m = f;
            e = e.saturating_add(k);
        }
        (F::cast(m), e)
    }

    /// `(sign det A, ln |det A|)`: the product of `U`'s diagonal, its sign flipped by
    /// every row interchange, and the scalings' powers of two.
    pub(crate) fn sign_log_abs(&self) -> (F, F) {
        let log = self
            .lu
            .diag()
            .iter()
            .fold(0.0f64, |l, &u| l + u.abs().as_f64().ln());
        let log = log + f64::from(self.det_exponent()) * std::f64::consts::LN_2;
        (self.sign(), F::cast(log))
    }

    /// `det A`, rounded once from the exact product (0 or ±∞ only where it under- or
    /// overflows).
    pub(crate) fn det(&self) -> F {
        let (m, e) = self.det_parts();
        self.sign() * scale_by(m, e.saturating_add(self.det_exponent()))
    }

    /// The cofactor matrix `det A · A⁻ᵀ`, each element `m·(A'⁻¹)ⱼᵢ` (`m` the mantissa of
    /// `det A'`) scaled by its power of two once: right where `det A` under- or overflows
    /// but the cofactors do not (`det` of `1e-200·I₂` is 1e-400, which is 0; its cofactors
    /// are 1e-200). Accurate where `A` is well-conditioned: its error grows with `κ(A)`.
    pub(crate) fn cofactors(&self) -> std::result::Result<Array2<F>, ErrorKind> {
        let mut inv = fortran(self.lu.view())?;
        self.invert(&mut inv)?;
        let (m, e) = self.det_parts();
        let (sign, e) = (self.sign(), e.saturating_add(self.det_exponent()));
        // element (p, q) of A'⁻¹ is (q, p) of the result, whose power of two is c_p + r_q
        for ((p, q), v) in inv.indexed_iter_mut() {
            let k = self.scale.as_ref().map_or(0, |(r, c)| c[p] + r[q]);
            *v = sign * scale_by(m * *v, e.saturating_add(k));
        }
        Ok(inv.reversed_axes())
    }
}
