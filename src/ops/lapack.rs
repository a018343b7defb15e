//! The LAPACK layer under the linear-algebra ops (feature `linalg`): LAPACK's routines
//! called through `lapack-sys` on buffers tapegrad allocates itself, with failures turned
//! into typed errors.
//!
//! LAPACK overwrites its input, so every routine works on a column-major (F-order) copy of
//! its operand, made once: the tape's values (views, transposes, step-2 slices) stay
//! untouched. A triangular solve reads a contiguous triangle in place (a C-order one as
//! the transpose of its transpose). Results come back column-major; tapegrad's ops read
//! any layout.
//!
//! Every copy, result and workspace is allocated fallibly: a size past what any
//! allocation can hold is `TooLarge`, a refused allocation `OutOfMemory`, never an abort.
//! Inputs are checked for NaN and infinities on the copy, after its allocation, so that an
//! input too large for memory (a zero-stride view) is refused before it is read.

use std::ffi::c_char;
use std::mem::MaybeUninit;
use std::panic::Location;

use ndarray::{Array2, ArrayView2, ShapeBuilder, Zip};

use crate::Float;
use crate::error::{Error, ErrorKind, Result};

pub(crate) use super::lu::Lu;
pub use crate::linalg_float::LinalgFloat;

/// A LAPACK flag.
pub(super) fn flag(c: u8) -> c_char {
    c as c_char
}

/// A dimension for LAPACK (the ops checked that every dimension fits its 32-bit integers).
pub(super) fn dim(n: usize) -> i32 {
    i32::try_from(n).expect("the op checked that the dimension fits LAPACK's integers")
}

/// `len` copies of `x` for an array of `shape`, or `TooLarge` / `OutOfMemory` for it.
pub(super) fn filled<T: Copy>(
    len: usize,
    x: T,
    shape: (usize, usize),
) -> std::result::Result<Vec<T>, ErrorKind> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| ErrorKind::OutOfMemory { shape })?;
    v.resize(len, x);
    Ok(v)
}

/// The elements of an F-order array of `shape`, uninitialised, or `TooLarge` (more bytes
/// than `isize` counts) / `OutOfMemory` (refused by the system).
fn uninit_f<F>(shape: (usize, usize)) -> std::result::Result<Array2<MaybeUninit<F>>, ErrorKind> {
    let len = shape
        .0
        .checked_mul(shape.1)
        .filter(|&n| {
            n.checked_mul(size_of::<F>())
                .is_some_and(|b| b <= isize::MAX as usize)
        })
        .ok_or(ErrorKind::TooLarge { shape })?;
    let mut v: Vec<MaybeUninit<F>> = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| ErrorKind::OutOfMemory { shape })?;
    // SAFETY: `MaybeUninit` needs no initialisation, and the capacity is `len`.
    unsafe { v.set_len(len) };
    Ok(Array2::from_shape_vec(shape.f(), v).expect("len elements"))
}

/// A column-major copy of `a`, or `TooLarge` / `OutOfMemory`.
pub(crate) fn fortran<F: Float>(a: ArrayView2<'_, F>) -> std::result::Result<Array2<F>, ErrorKind> {
    let mut b = uninit_f(a.dim())?;
    Zip::from(&mut b).and(a).for_each(|b, &a| {
        b.write(a);
    });
    // SAFETY: the Zip above wrote every element.
    Ok(unsafe { b.assume_init() })
}

/// `(A + Aᵀ)/2`, column-major (exactly `A` where `A` is symmetric; halves first, so that
/// it does not overflow), or `TooLarge` / `OutOfMemory`.
fn symmetric<F: Float>(a: ArrayView2<'_, F>) -> std::result::Result<Array2<F>, ErrorKind> {
    let half = F::cast(0.5);
    let mut s = uninit_f(a.dim())?;
    Zip::from(&mut s).and(a).and(a.t()).for_each(|s, &x, &y| {
        s.write(if x == y { x } else { x * half + y * half });
    });
    // SAFETY: the Zip above wrote every element.
    Ok(unsafe { s.assume_init() })
}

pub(super) fn data<F>(a: &Array2<F>) -> &[F] {
    a.as_slice_memory_order()
        .expect("an owned column-major buffer")
}

pub(super) fn data_mut<F>(a: &mut Array2<F>) -> &mut [F] {
    a.as_slice_memory_order_mut()
        .expect("an owned column-major buffer")
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
pub(super) fn finite<F: Float>(a: &Array2<F>) -> std::result::Result<(), ErrorKind> {
    if data(a).iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(ErrorKind::NotFinite { shape: a.dim() })
    }
}

/// `NotFinite` unless every element of the lower (or upper) triangle of the column-major
/// n × n `a` is finite: the other triangle is not read.
fn finite_triangle<F: Float>(a: &[F], n: usize, lower: bool) -> std::result::Result<(), ErrorKind> {
    let column = |j: usize| {
        let col = &a[j * n..(j + 1) * n];
        if lower { &col[j..] } else { &col[..=j] }
    };
    if (0..n).all(|j| column(j).iter().all(|v| v.is_finite())) {
        Ok(())
    } else {
        Err(ErrorKind::NotFinite { shape: (n, n) })
    }
}

/// `IllConditioned` for an n × n matrix whose reciprocal condition number estimate
/// `rcond` is at most `bound`.
pub(crate) fn ill_conditioned<F: Float>(n: usize, rcond: F, bound: F) -> ErrorKind {
    ErrorKind::IllConditioned {
        shape: (n, n),
        rcond: format!("{:.2e}", rcond.as_f64()),
        bound: format!("{:.2e}", bound.as_f64()),
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

/// The workspace size a LAPACK query (`lwork = −1`) returned in `w`, at least `min`.
pub(super) fn workspace<F: Float>(w: F, min: usize) -> usize {
    (w.as_f64() as usize).max(min).max(1)
}

/// The column-major data of a square `a` read in place, and whether it is `a`'s
/// transpose (`a` in C order): `None` unless `a` is contiguous.
fn in_place<'a, F>(a: ArrayView2<'a, F>) -> Option<(&'a [F], bool)> {
    let n = a.nrows();
    let data = a.to_slice_memory_order()?;
    let strides = a.strides();
    if n <= 1 || strides == [1, n as isize] {
        Some((data, false))
    } else if strides == [n as isize, 1] {
        Some((data, true))
    } else {
        None
    }
}

/// `X = op(A)⁻¹·B` for the triangle of `a` (`lower` or upper; the other triangle is not
/// read), `op(A) = Aᵀ` if `transpose`, with a unit diagonal if `unit` (LAPACK `trtrs`,
/// BLAS-3 `trsm` inside), column-major, for each `transpose` of `solves` in turn (two for
/// `cho_solve`). `A` is read in place where it is contiguous, else copied. `Singular` if a
/// diagonal element is zero; `NotFinite` if the triangle holds NaN or an infinity.
pub(crate) fn triangular_solves<F: LinalgFloat>(
    a: ArrayView2<'_, F>,
    lower: bool,
    solves: &[bool],
    unit: bool,
    b: ArrayView2<'_, F>,
) -> std::result::Result<Array2<F>, ErrorKind> {
    let n = a.nrows();
    let copy;
    // a C-order A read as F order is Aᵀ: the other triangle, the other op
    let (data, transposed) = match in_place(a) {
        Some(d) => d,
        None => {
            copy = fortran(a)?;
            (data(&copy), false)
        }
    };
    let lower = lower != transposed;
    finite_triangle(data, n, lower)?;
    let mut x = fortran(b)?;
    if n == 0 || x.ncols() == 0 {
        return Ok(x);
    }
    // a triangle of tiny entries (below 2⁻⁵¹¹ in f64, subnormal ones among them) is solved as
    // 2ˢ·T with its largest entry in [1, 2), exactly, and X scaled by 2^(s·solves) after,
    // once: the partial results of trsm (bᵢ/tᵢᵢ, ...) overflowed where X does not, and
    // ∞ − ∞ made NaN (a unit diagonal is not scaled with the rest: not for it)
    let tiny = (!unit).then(|| tiny_exponent(data, n, lower)).flatten();
    let scaled_copy;
    let data = match tiny {
        Some(s) => {
            scaled_copy = data.iter().map(|&v| scale_by(v, s)).collect::<Vec<F>>();
            &scaled_copy[..]
        }
        None => data,
    };
    let (ni, nrhs, mut info) = (dim(n), dim(x.ncols()), 0);
    let uplo = flag(if lower { b'L' } else { b'U' });
    let diag = flag(if unit { b'U' } else { b'N' });
    for &transpose in solves {
        let trans = flag(if transpose != transposed { b'T' } else { b'N' });
        // SAFETY: `data` holds n × n elements column-major (lda = n), `x` n × nrhs.
        unsafe {
            F::trtrs(
                &uplo,
                &trans,
                &diag,
                &ni,
                &nrhs,
                data.as_ptr(),
                &ni,
                data_mut(&mut x).as_mut_ptr(),
                &ni,
                &mut info,
            )
        };
        if info > 0 {
            return Err(ErrorKind::Singular {
                shape: (n, n),
                info,
            });
        }
        assert_eq!(info, 0, "trtrs's arguments are valid");
    }
    if let Some(s) = tiny {
        let e = s * solves.len() as i32;
        x.mapv_inplace(|v| scale_by(v, e));
    }
    Ok(x)
}

/// `x·2^e`, rounded once (exact unless the result over- or underflows).
pub(crate) fn scale_by<F: Float>(x: F, e: i32) -> F {
    F::cast(libm::scalbn(x.as_f64(), e))
}

/// For a triangle (column-major n × n `data`, `lower` or upper) whose largest entry is
/// nonzero and below √(smallest normal) (2⁻⁵¹¹ in f64, 2⁻⁶³ in f32: products of two
/// entries underflow): the power of two that brings it into [1, 2).
fn tiny_exponent<F: Float>(data: &[F], n: usize, lower: bool) -> Option<i32> {
    let mut big = F::zero();
    for j in 0..n {
        let rows = if lower { j..n } else { 0..j + 1 };
        for v in &data[j * n + rows.start..j * n + rows.end] {
            big = big.max(v.abs());
        }
    }
    (big != F::zero() && big < F::min_positive_value().sqrt()).then(|| -libm::ilogb(big.as_f64()))
}

/// `X = op(A)⁻¹·B` for the triangle of `a`: one [`triangular_solves`].
pub(crate) fn triangular_solve<F: LinalgFloat>(
    a: ArrayView2<'_, F>,
    lower: bool,
    transpose: bool,
    unit: bool,
    b: ArrayView2<'_, F>,
) -> std::result::Result<Array2<F>, ErrorKind> {
    triangular_solves(a, lower, &[transpose], unit, b)
}

/// The lower Cholesky factor `L` of `(A + Aᵀ)/2` (LAPACK `potrf`), zeros above the
/// diagonal, column-major; `NotPositiveDefinite` with LAPACK's `info` otherwise.
pub(crate) fn cholesky<F: LinalgFloat>(
    a: ArrayView2<'_, F>,
) -> std::result::Result<Array2<F>, ErrorKind> {
    let n = a.nrows();
    let mut l = symmetric(a)?;
    finite(&l)?;
    if n == 0 {
        return Ok(l);
    }
    let (ni, mut info) = (dim(n), 0);
    // SAFETY: `l` holds n × n elements column-major (lda = n).
    unsafe {
        F::potrf(
            &flag(b'L'),
            &ni,
            data_mut(&mut l).as_mut_ptr(),
            &ni,
            &mut info,
        )
    };
    if info > 0 {
        return Err(ErrorKind::NotPositiveDefinite {
            shape: (n, n),
            info,
        });
    }
    assert_eq!(info, 0, "potrf's arguments are valid");
    crate::ops::diag::triangle_inplace(&mut l, 0, true);
    Ok(l)
}

/// What [`eigh_packed`] computed on a tiny matrix, scaled: `2ˢ·A` with its largest
/// entry in [1, 2), and the eigenvalues `λ̃ = 2ˢ·λ` of that, which `λ` may have lost
/// digits of (subnormal) or all of them (0).
pub(crate) struct EighScale<F> {
    pub(crate) exponent: i32,
    pub(crate) scaled: Vec<F>,
}

/// The eigenvalues (ascending) and eigenvectors of `(A + Aᵀ)/2` (LAPACK `syev`), packed
/// as the n × (n + 1) column-major `[λ V]`: the eigenvectors are computed in place in
/// the last n columns. `Lapack { routine: "syev", info }` if the iteration does not
/// converge.
///
/// A tiny matrix (largest entry nonzero and below √(smallest normal), 2⁻⁵¹¹ in f64) is
/// decomposed as `2ˢ·A`, exactly: `syev` scales it itself, by a factor that is no power
/// of two, and its eigenvalues and their gaps, the rule's denominators, fall into the
/// subnormal range, where they lose digits or vanish (and the rule's `K/(λⱼ − λᵢ)`
/// overflows). The scaled eigenvalues come back for the rule.
pub(crate) fn eigh_packed<F: LinalgFloat>(
    a: ArrayView2<'_, F>,
) -> std::result::Result<(Array2<F>, Option<EighScale<F>>), ErrorKind> {
    let n = a.nrows();
    let mut packed = uninit_f((n, n + 1))?;
    packed.column_mut(0).fill(MaybeUninit::new(F::zero()));
    let half = F::cast(0.5);
    Zip::from(packed.slice_mut(ndarray::s![.., 1..]))
        .and(a)
        .and(a.t())
        .for_each(|s, &x, &y| {
            s.write(if x == y { x } else { x * half + y * half });
        });
    // SAFETY: the fill and the Zip above wrote every element.
    let mut packed = unsafe { packed.assume_init() };
    if !data(&packed)[n..].iter().all(|v| v.is_finite()) {
        return Err(ErrorKind::NotFinite { shape: (n, n) });
    }
    if n == 0 {
        return Ok((packed, None));
    }
    let tiny = tiny_exponent(&data(&packed)[n..], n, true);
    if let Some(e) = tiny {
        data_mut(&mut packed)[n..]
            .iter_mut()
            .for_each(|v| *v = scale_by(*v, e));
    }
    let mut w = filled(n, F::zero(), (n, 1))?;
    let (ni, mut info) = (dim(n), 0);
    let (jobz, uplo) = (flag(b'V'), flag(b'L'));
    let v = &mut data_mut(&mut packed)[n..];
    let mut query = F::zero();
    // SAFETY: a workspace query (lwork = −1) reads only the sizes.
    unsafe {
        F::syev(
            &jobz,
            &uplo,
            &ni,
            v.as_mut_ptr(),
            &ni,
            w.as_mut_ptr(),
            &mut query,
            &-1,
            &mut info,
        )
    };
    let lwork = workspace(query, 3 * n);
    let mut work = filled(lwork, F::zero(), (lwork, 1))?;
    // SAFETY: `v` holds n × n elements column-major (lda = n), `w` n, `work` lwork.
    unsafe {
        F::syev(
            &jobz,
            &uplo,
            &ni,
            v.as_mut_ptr(),
            &ni,
            w.as_mut_ptr(),
            work.as_mut_ptr(),
            &dim(lwork),
            &mut info,
        )
    };
    if info > 0 {
        return Err(ErrorKind::Lapack {
            routine: "syev",
            info,
        });
    }
    assert_eq!(info, 0, "syev's arguments are valid");
    let e = tiny.unwrap_or(0);
    packed
        .column_mut(0)
        .iter_mut()
        .zip(&w)
        .for_each(|(p, &w)| *p = scale_by(w, -e));
    let scale = tiny.map(|exponent| EighScale {
        exponent,
        scaled: w,
    });
    Ok((packed, scale))
}

/// The factors of a singular value decomposition: `U`, the singular values, `Vᵀ`.
type Svd<F> = (Array2<F>, Vec<F>, Array2<F>);

/// `(U, s, Vᵀ)` of the square `a` (LAPACK `gesvd`), column-major, singular values in
/// descending order.
pub(crate) fn svd<F: LinalgFloat>(a: ArrayView2<'_, F>) -> std::result::Result<Svd<F>, ErrorKind> {
    let n = a.nrows();
    let mut buf = fortran(a)?;
    finite(&buf)?;
    let zeros = || -> std::result::Result<Array2<F>, ErrorKind> {
        let v = filled(n * n, F::zero(), (n, n))?;
        Ok(Array2::from_shape_vec((n, n).f(), v).expect("n × n"))
    };
    let (mut u, mut vt) = (zeros()?, zeros()?);
    let mut s = filled(n, F::zero(), (n, 1))?;
    if n == 0 {
        return Ok((u, s, vt));
    }
    let (ni, mut info) = (dim(n), 0);
    let all = flag(b'A');
    let mut query = F::zero();
    // SAFETY: a workspace query (lwork = −1) reads only the sizes.
    unsafe {
        F::gesvd(
            &all,
            &all,
            &ni,
            &ni,
            data_mut(&mut buf).as_mut_ptr(),
            &ni,
            s.as_mut_ptr(),
            data_mut(&mut u).as_mut_ptr(),
            &ni,
            data_mut(&mut vt).as_mut_ptr(),
            &ni,
            &mut query,
            &-1,
            &mut info,
        )
    };
    let lwork = workspace(query, 5 * n);
    let mut work = filled(lwork, F::zero(), (lwork, 1))?;
    // SAFETY: `buf`, `u` and `vt` hold n × n elements column-major (leading dimension n),
    // `s` n, `work` lwork.
    unsafe {
        F::gesvd(
            &all,
            &all,
            &ni,
            &ni,
            data_mut(&mut buf).as_mut_ptr(),
            &ni,
            s.as_mut_ptr(),
            data_mut(&mut u).as_mut_ptr(),
            &ni,
            data_mut(&mut vt).as_mut_ptr(),
            &ni,
            work.as_mut_ptr(),
            &dim(lwork),
            &mut info,
        )
    };
    if info > 0 {
        return Err(ErrorKind::Lapack {
            routine: "gesvd",
            info,
        });
    }
    assert_eq!(info, 0, "gesvd's arguments are valid");
    Ok((u, s, vt))
}
