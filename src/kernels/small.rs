//! Tiny products as unrolled loops: where two of `m`, `k`, `n` are at most 4, the fixed
//! cost of a BLAS or matrixmultiply call (argument checks, dispatch, packing the operands
//! into panels, the micro-kernel's edges) is several times the arithmetic. The products of
//! a 4-2-3 network with batch 150 (seed 001) have 900 to 1,200 multiply-adds each.
//!
//! Two forms, each with its two small dimensions known at compile time (16 instances of
//! each), so that the loops over them unroll into registers:
//!
//! - rows (`k, n ≤ 4`, `m` long: `X·W`, `G·Wᵀ`): `B` in registers, each row of `C` from a
//!   row of `A`;
//! - outer products (`m, n ≤ 4`, `k` long: `Xᵀ·G`): `C` in registers, the sum over `p` of
//!   column `p` of `A` times row `p` of `B`.
//!
//! Both read any strides in place (transposed views included) and sum each element of
//! `C` over `p` in order from zero, as a textbook dot product: deterministic, and the same
//! on every machine and thread count.

use ndarray::{ArrayView2, ArrayViewMut2};

use crate::Float;

/// The most multiply-adds (`m·n·k`) a product runs through the loops; above it, BLAS or
/// matrixmultiply. Measured (`cargo bench -p tapegrad-benches --features openblas --bench
/// kernels -- gemm`, the README's Performance section): the loops stay ahead of OpenBLAS
/// on tall and long products up to this size and beyond.
pub(crate) const MAX_WORK: usize = 1 << 14;

/// The largest small dimension.
const SMALL: usize = 4;

/// Whether the product of `a` (m × k) and `b` (k × n) runs through [`gemm`]: nothing is
/// empty, `n ≤ 4` and `k ≤ 4` or `m ≤ 4`, and `m·n·k ≤` [`MAX_WORK`].
#[inline]
pub(crate) fn fits(a: ArrayView2<'_, impl Sized>, b: ArrayView2<'_, impl Sized>) -> bool {
    let (m, k) = a.dim();
    let n = b.ncols();
    m > 0
        && k > 0
        && (1..=SMALL).contains(&n)
        && (k <= SMALL || m <= SMALL)
        && m.saturating_mul(k).saturating_mul(n) <= MAX_WORK
}

/// Strides and first elements of `A`, `B` and `C`.
#[derive(Clone, Copy)]
struct Operands<F> {
    a: *const F,
    ra: isize,
    ca: isize,
    b: *const F,
    rb: isize,
    cb: isize,
    c: *mut F,
    rc: isize,
    cc: isize,
    accumulate: bool,
}

/// One by one, the 16 instances of a form for two small dimensions `x` and `y`.
macro_rules! by_size {
    ($form:ident, $x:expr, $y:expr, $args:tt) => {
        match ($x, $y) {
            (1, 1) => $form::<F, 1, 1> $args,
            (1, 2) => $form::<F, 1, 2> $args,
            (1, 3) => $form::<F, 1, 3> $args,
            (1, 4) => $form::<F, 1, 4> $args,
            (2, 1) => $form::<F, 2, 1> $args,
            (2, 2) => $form::<F, 2, 2> $args,
            (2, 3) => $form::<F, 2, 3> $args,
            (2, 4) => $form::<F, 2, 4> $args,
            (3, 1) => $form::<F, 3, 1> $args,
            (3, 2) => $form::<F, 3, 2> $args,
            (3, 3) => $form::<F, 3, 3> $args,
            (3, 4) => $form::<F, 3, 4> $args,
            (4, 1) => $form::<F, 4, 1> $args,
            (4, 2) => $form::<F, 4, 2> $args,
            (4, 3) => $form::<F, 4, 3> $args,
            (4, 4) => $form::<F, 4, 4> $args,
            _ => unreachable!("`fits` bounds both by 4"),
        }
    };
}

/// `C = A·B` (`accumulate`: `C += A·B`). With `accumulate` false `C`'s old contents are
/// not read (they may be anything).
///
/// # Panics
///
/// If the shapes disagree (`A` m × k, `B` k × n, `C` m × n) or [`fits`] does not hold.
pub(crate) fn gemm<F: Float>(
    a: ArrayView2<'_, F>,
    b: ArrayView2<'_, F>,
    accumulate: bool,
    mut c: ArrayViewMut2<'_, F>,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    assert!(
        b.nrows() == k && c.dim() == (m, n) && fits(a, b),
        "a product of {:?} and {:?} into {:?}",
        a.dim(),
        b.dim(),
        c.dim()
    );
    let ops = Operands {
        a: a.as_ptr(),
        ra: a.strides()[0],
        ca: a.strides()[1],
        b: b.as_ptr(),
        rb: b.strides()[0],
        cb: b.strides()[1],
        c: c.as_mut_ptr(),
        rc: c.strides()[0],
        cc: c.strides()[1],
        accumulate,
    };
    // SAFETY: the pointers and strides are those of the three views, whose shapes were
    // checked above: every element the forms read or write, (i, p) of A, (p, j) of B and
    // (i, j) of C for i < m, p < k, j < n, lies in its view; `c` is borrowed mutably,
    // so nothing else reads or writes C meanwhile.
    unsafe {
        if k <= SMALL {
            by_size!(rows, k, n, (m, ops))
        } else {
            by_size!(outer, m, n, (k, ops))
        }
    }
}

/// Each row of `C` from a row of `A` (K elements) and `B` (K × N) held in registers.
///
/// # Safety
///
/// `ops` describes an m × K `A`, a K × N `B` and an m × N `C` (see [`gemm`]).
unsafe fn rows<F: Float, const K: usize, const N: usize>(m: usize, ops: Operands<F>) {
    let mut w = [[F::zero(); N]; K];
    for (p, row) in w.iter_mut().enumerate() {
        for (j, w) in row.iter_mut().enumerate() {
            // SAFETY: (p, j) lies in B.
            *w = unsafe { *ops.b.offset(p as isize * ops.rb + j as isize * ops.cb) };
        }
    }
    for i in 0..m as isize {
        let mut s = [F::zero(); N];
        for (p, w) in w.iter().enumerate() {
            // SAFETY: (i, p) lies in A.
            let x = unsafe { *ops.a.offset(i * ops.ra + p as isize * ops.ca) };
            for (s, &w) in s.iter_mut().zip(w) {
                *s += x * w;
            }
        }
        for (j, &s) in s.iter().enumerate() {
            // SAFETY: (i, j) lies in C.
            let out = unsafe { &mut *ops.c.offset(i * ops.rc + j as isize * ops.cc) };
            *out = if ops.accumulate { *out + s } else { s };
        }
    }
}

/// `C` (M × N, held in registers) as the sum over `p` of column `p` of `A` times row `p`
/// of `B`.
///
/// # Safety
///
/// `ops` describes an M × k `A`, a k × N `B` and an M × N `C` (see [`gemm`]).
unsafe fn outer<F: Float, const M: usize, const N: usize>(k: usize, ops: Operands<F>) {
    let mut s = [[F::zero(); N]; M];
    for p in 0..k as isize {
        let mut x = [F::zero(); M];
        for (i, x) in x.iter_mut().enumerate() {
            // SAFETY: (i, p) lies in A.
            *x = unsafe { *ops.a.offset(i as isize * ops.ra + p * ops.ca) };
        }
        let mut y = [F::zero(); N];
        for (j, y) in y.iter_mut().enumerate() {
            // SAFETY: (p, j) lies in B.
            *y = unsafe { *ops.b.offset(p * ops.rb + j as isize * ops.cb) };
        }
        for (s, &x) in s.iter_mut().zip(&x) {
            for (s, &y) in s.iter_mut().zip(&y) {
                *s += x * y;
            }
        }
    }
    for (i, s) in s.iter().enumerate() {
        for (j, &s) in s.iter().enumerate() {
            // SAFETY: (i, j) lies in C.
            let out = unsafe { &mut *ops.c.offset(i as isize * ops.rc + j as isize * ops.cc) };
            *out = if ops.accumulate { *out + s } else { s };
        }
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{Array2, ShapeBuilder, s};

    use super::*;

    fn matrix(shape: (usize, usize), seed: f64) -> Array2<f64> {
        Array2::from_shape_fn(shape, |(i, j)| ((i * 7 + j * 3) as f64 * seed).sin())
    }

    /// Every instance of both forms, in every layout (C order, F order, transposed views,
    /// step-2 slices, a broadcast zero-stride row), against ndarray's product, with beta 0
    /// (into a buffer of NaN, which must not be read) and 1 (into a transposed view).
    #[test]
    fn the_loops_agree_with_ndarray_in_every_layout() {
        let mut shapes = vec![];
        for x in 1..=4 {
            for n in 1..=4 {
                shapes.push((150, x, n)); // rows
                shapes.push((x, 150, n)); // outer products
                shapes.push((x, 1, n));
            }
        }
        for (m, k, n) in shapes {
            assert!(fits(
                Array2::<f64>::zeros((m, k)).view(),
                Array2::<f64>::zeros((k, n)).view()
            ));
            let a_c = matrix((m, k), 0.3);
            let mut a_f = Array2::zeros((m, k).f());
            a_f.assign(&a_c);
            let wide = matrix((2 * m, 2 * k), 0.3);
            let a_step = wide.slice(s![..;2, ..;2]);
            let b_c = matrix((k, n), 0.7);
            let b_t = matrix((n, k), 0.7);
            let row = matrix((1, n), 0.9);
            let b_bcast = row.broadcast((k, n)).unwrap();
            for a in [a_c.view(), a_f.view(), a_step] {
                for b in [b_c.view(), b_t.t(), b_bcast] {
                    let want = a.dot(&b);
                    let mut c = Array2::from_elem((m, n), f64::NAN);
                    gemm(a, b, false, c.view_mut());
                    let close = |x: f64, y: f64| (x - y).abs() < 1e-12;
                    assert!(
                        c.iter().zip(&want).all(|(&x, &y)| close(x, y)),
                        "{m} × {k} × {n}"
                    );
                    let mut acc = Array2::from_elem((n, m), 1.0);
                    gemm(a, b, true, acc.view_mut().reversed_axes());
                    let acc = acc.t();
                    assert!(acc.iter().zip(&want).all(|(&x, &y)| close(x, y + 1.0)));
                }
            }
        }
    }

    #[test]
    fn only_small_products_fit() {
        let fit = |m, k, n| {
            fits(
                Array2::<f32>::zeros((m, k)).view(),
                Array2::<f32>::zeros((k, n)).view(),
            )
        };
        assert!(fit(150, 4, 2) && fit(4, 150, 2) && fit(2, 150, 3) && fit(1, 1, 1));
        assert!(!fit(5, 5, 2) && !fit(150, 4, 5) && !fit(0, 4, 2) && !fit(3, 0, 2));
        assert!(!fit(MAX_WORK, 4, 2) && fit(MAX_WORK / 8, 4, 2));
    }

    #[test]
    #[should_panic(expected = "a product of")]
    fn disagreeing_shapes_are_refused() {
        let a = Array2::<f64>::zeros((2, 3));
        let mut c = Array2::<f64>::zeros((2, 2));
        gemm(a.view(), a.view(), false, c.view_mut());
    }
}
