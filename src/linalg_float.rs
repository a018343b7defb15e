//! [`LinalgFloat`]: the element types of the linear-algebra ops (feature `linalg`), and
//! the LAPACK routines they call for each, through the declarations of `lapack-sys`. The
//! safe layer over them is `ops::lapack`.

use std::ffi::c_char;

use crate::Float;

/// The element types of the linear-algebra ops: `f32` and `f64` (LAPACK's `s` and `d`
/// routines), sealed like [`Float`].
///
/// Its methods are the LAPACK routines the ops call (lapack-sys's declarations); they are
/// not part of the API.
#[allow(clippy::missing_safety_doc, clippy::too_many_arguments)]
pub trait LinalgFloat: Float {
    #[doc(hidden)]
    unsafe fn getrf(
        m: *const i32,
        n: *const i32,
        a: *mut Self,
        lda: *const i32,
        ipiv: *mut i32,
        info: *mut i32,
    );
    #[doc(hidden)]
    unsafe fn getrs(
        trans: *const c_char,
        n: *const i32,
        nrhs: *const i32,
        a: *const Self,
        lda: *const i32,
        ipiv: *const i32,
        b: *mut Self,
        ldb: *const i32,
        info: *mut i32,
    );
    #[doc(hidden)]
    unsafe fn getri(
        n: *const i32,
        a: *mut Self,
        lda: *const i32,
        ipiv: *const i32,
        work: *mut Self,
        lwork: *const i32,
        info: *mut i32,
    );
    #[doc(hidden)]
    unsafe fn gecon(
        norm: *const c_char,
        n: *const i32,
        a: *const Self,
        lda: *const i32,
        anorm: *const Self,
        rcond: *mut Self,
        work: *mut Self,
        iwork: *mut i32,
        info: *mut i32,
    );
    #[doc(hidden)]
    unsafe fn trtrs(
        uplo: *const c_char,
        trans: *const c_char,
        diag: *const c_char,
        n: *const i32,
        nrhs: *const i32,
        a: *const Self,
        lda: *const i32,
        b: *mut Self,
        ldb: *const i32,
        info: *mut i32,
    );
    #[doc(hidden)]
    unsafe fn potrf(
        uplo: *const c_char,
        n: *const i32,
        a: *mut Self,
        lda: *const i32,
        info: *mut i32,
    );
    #[doc(hidden)]
    unsafe fn syev(
        jobz: *const c_char,
        uplo: *const c_char,
        n: *const i32,
        a: *mut Self,
        lda: *const i32,
        w: *mut Self,
        work: *mut Self,
        lwork: *const i32,
        info: *mut i32,
    );
    #[doc(hidden)]
    unsafe fn gesvd(
        jobu: *const c_char,
        jobvt: *const c_char,
        m: *const i32,
        n: *const i32,
        a: *mut Self,
        lda: *const i32,
        s: *mut Self,
        u: *mut Self,
        ldu: *const i32,
        vt: *mut Self,
        ldvt: *const i32,
        work: *mut Self,
        lwork: *const i32,
        info: *mut i32,
    );
}

macro_rules! linalg_float {
    ($t:ty, $getrf:ident, $getrs:ident, $getri:ident, $gecon:ident, $trtrs:ident, $potrf:ident, $syev:ident, $gesvd:ident) => {
        impl LinalgFloat for $t {
            unsafe fn getrf(
                m: *const i32,
                n: *const i32,
                a: *mut Self,
                lda: *const i32,
                ipiv: *mut i32,
                info: *mut i32,
            ) {
                unsafe { lapack_sys::$getrf(m, n, a, lda, ipiv, info) }
            }
            unsafe fn getrs(
                trans: *const c_char,
                n: *const i32,
                nrhs: *const i32,
                a: *const Self,
                lda: *const i32,
                ipiv: *const i32,
                b: *mut Self,
                ldb: *const i32,
                info: *mut i32,
            ) {
                unsafe { lapack_sys::$getrs(trans, n, nrhs, a, lda, ipiv, b, ldb, info) }
            }
            unsafe fn getri(
                n: *const i32,
                a: *mut Self,
                lda: *const i32,
                ipiv: *const i32,
                work: *mut Self,
                lwork: *const i32,
                info: *mut i32,
            ) {
                unsafe { lapack_sys::$getri(n, a, lda, ipiv, work, lwork, info) }
            }
            unsafe fn gecon(
                norm: *const c_char,
                n: *const i32,
                a: *const Self,
                lda: *const i32,
                anorm: *const Self,
                rcond: *mut Self,
                work: *mut Self,
                iwork: *mut i32,
                info: *mut i32,
            ) {
                unsafe { lapack_sys::$gecon(norm, n, a, lda, anorm, rcond, work, iwork, info) }
            }
            unsafe fn trtrs(
                uplo: *const c_char,
                trans: *const c_char,
                diag: *const c_char,
                n: *const i32,
                nrhs: *const i32,
                a: *const Self,
                lda: *const i32,
                b: *mut Self,
                ldb: *const i32,
                info: *mut i32,
            ) {
                unsafe { lapack_sys::$trtrs(uplo, trans, diag, n, nrhs, a, lda, b, ldb, info) }
            }
            unsafe fn potrf(
                uplo: *const c_char,
                n: *const i32,
                a: *mut Self,
                lda: *const i32,
                info: *mut i32,
            ) {
                unsafe { lapack_sys::$potrf(uplo, n, a, lda, info) }
            }
            unsafe fn syev(
                jobz: *const c_char,
                uplo: *const c_char,
                n: *const i32,
                a: *mut Self,
                lda: *const i32,
                w: *mut Self,
                work: *mut Self,
                lwork: *const i32,
                info: *mut i32,
            ) {
                unsafe { lapack_sys::$syev(jobz, uplo, n, a, lda, w, work, lwork, info) }
            }
            unsafe fn gesvd(
                jobu: *const c_char,
                jobvt: *const c_char,
                m: *const i32,
                n: *const i32,
                a: *mut Self,
                lda: *const i32,
                s: *mut Self,
                u: *mut Self,
                ldu: *const i32,
                vt: *mut Self,
                ldvt: *const i32,
                work: *mut Self,
                lwork: *const i32,
                info: *mut i32,
            ) {
                unsafe {
                    lapack_sys::$gesvd(
                        jobu, jobvt, m, n, a, lda, s, u, ldu, vt, ldvt, work, lwork, info,
                    )
                }
            }
        }
    };
}

linalg_float!(
    f32, sgetrf_, sgetrs_, sgetri_, sgecon_, strtrs_, spotrf_, ssyev_, sgesvd_
);
linalg_float!(
    f64, dgetrf_, dgetrs_, dgetri_, dgecon_, dtrtrs_, dpotrf_, dsyev_, dgesvd_
);
