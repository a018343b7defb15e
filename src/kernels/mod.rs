//! Kernels: the bottom layer. GEMM with transpose flags and accumulation, the one
//! broadcasting helper pair (`broadcast_shape` forward, `sum_to_shape` backward), and the
//! elementwise transcendental kernels that vectorize (`math.rs`, run over slices by
//! `vector.rs`).
//!
//! This module is the only caller of ndarray's matrix product. Transposed operands arrive
//! here as views (`w.t()`, `x.t()`), never as copies: with the `blas` feature, ndarray
//! (≥ 0.16.1) hands a C- or F-contiguous view to `cblas_?gemm` as a row-major operand with
//! `CblasTrans` where needed, so `G·Wᵀ` and `Xᵀ·G` cost one GEMM call and no copy
//! (`tests/blas_path.rs` proves it with a call-recording `cblas_sgemm`). Views with other
//! strides (a step-2 slice) and products with every dimension ≤ 7 go to matrixmultiply,
//! which reads any strides in place. Without `blas`, every product goes to matrixmultiply.
//! Tiny products (two of m, k, n at most 4, `m·n·k` ≤ 16,384: a narrow layer's) go to
//! neither: unrolled loops (`small.rs`) do them in a fraction of either's cost per call.

use std::mem::MaybeUninit;

use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis, Zip};

use crate::{Float, pool};

#[cfg(test)]
mod accuracy;
mod coefficients;
pub(crate) mod math;
pub(crate) mod real;
pub(crate) mod small;
pub(crate) mod vector;

/// `A·B` in a new array (GEMM with beta = 0), in a recycled buffer where the pool has one.
#[inline]
pub(crate) fn gemm<F: Float>(a: ArrayView2<'_, F>, b: ArrayView2<'_, F>) -> Array2<F> {
    match pool::take_array((a.nrows(), b.ncols())) {
        Some(mut c) => {
            gemm_into(a, b, &mut c);
            c
        }
        None if small::fits(a, b) => {
            let mut c = Array2::zeros((a.nrows(), b.ncols()));
            small::gemm(a, b, false, c.view_mut());
            c
        }
        None => a.dot(&b),
    }
}

/// `f` of every element of `x`, in a new array (a recycled buffer where the pool has one).
#[inline]
pub(crate) fn map<F: Float>(x: ArrayView2<'_, F>, f: impl Fn(F) -> F) -> Array2<F> {
    match pool::take_array(x.dim()) {
        Some(mut y) => {
            zip1(y.view_mut(), x, |y, x| *y = f(x));
            y
        }
        None => x.mapv(f),
    }
}

/// `f(out, x)` for every pair of elements of `out` and `x` (of one shape): one sweep over
/// two slices where both are in standard layout (ndarray's `Zip` pays a set-up that
/// dominates on small arrays), else `Zip`.
#[inline]
pub(crate) fn zip1<F: Float>(
    mut out: ArrayViewMut2<'_, F>,
    x: ArrayView2<'_, F>,
    f: impl Fn(&mut F, F),
) {
    if let (Some(o), Some(xs)) = (out.as_slice_mut(), x.as_slice()) {
        o.iter_mut().zip(xs).for_each(|(o, &x)| f(o, x));
    } else {
        Zip::from(out).and(&x).for_each(|o, &x| f(o, x));
    }
}

/// `f(out, a, b)` for every triple of elements of `out`, `a` and `b` (of one shape), as
/// [`zip1`].
#[inline]
pub(crate) fn zip2<F: Float>(
    mut out: ArrayViewMut2<'_, F>,
    a: ArrayView2<'_, F>,
    b: ArrayView2<'_, F>,
    f: impl Fn(&mut F, F, F),
) {
    if let (Some(o), Some(xs), Some(ys)) = (out.as_slice_mut(), a.as_slice(), b.as_slice()) {
        o.iter_mut()
            .zip(xs.iter().zip(ys))
            .for_each(|(o, (&a, &b))| f(o, a, b));
    } else {
        Zip::from(out)
            .and(&a)
            .and(&b)
            .for_each(|o, &a, &b| f(o, a, b));
    }
}

/// A matrix of `shape` with arbitrary contents, for the caller to overwrite: a recycled
/// buffer where the pool has one, else zeros.
pub(crate) fn pooled<F: Float>(shape: (usize, usize)) -> Array2<F> {
    pool::take_array(shape).unwrap_or_else(|| Array2::zeros(shape))
}

/// `x` through the slice function `run` (a vector kernel), in a new array of `x`'s
/// layout where `x` is contiguous (C or F order); strided views are copied first, so that
/// results do not depend on layout. `None` if `run` declines (returns false).
pub(crate) fn map_slices<F: Float>(
    x: ArrayView2<'_, F>,
    run: impl Fn(&[F], &mut [F]) -> bool,
) -> Option<Array2<F>> {
    let into = |xs: &[F], dim: (usize, usize)| -> Option<Array2<F>> {
        let mut y = pooled(dim);
        run(xs, y.as_slice_mut().expect("a new array is standard")).then_some(y)
    };
    if let Some(xs) = x.as_slice() {
        return into(xs, x.dim());
    }
    if let Some(xs) = x.t().as_slice() {
        return into(xs, x.t().dim()).map(Array2::reversed_axes);
    }
    let c = copy(x);
    into(c.as_slice().expect("a copy is standard"), x.dim())
}

/// A copy of `x` in standard layout (a recycled buffer where the pool has one).
pub(crate) fn copy<F: Float>(x: ArrayView2<'_, F>) -> Array2<F> {
    match pool::take_array(x.dim()) {
        Some(mut y) => {
            zip1(y.view_mut(), x, |y, x| *y = x);
            y
        }
        None => x.to_owned(),
    }
}

/// Room for `len` elements, or `None` if the system refuses the allocation: ops whose
/// result can be larger than their inputs allocate through here, so that a refused
/// allocation is an `OutOfMemory` error instead of an abort.
fn try_vec<F>(len: usize) -> Option<Vec<F>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).ok()?;
    Some(v)
}

/// A zero matrix of `shape`, or `None` if the allocation is refused: a recycled buffer
/// filled with zeros where the pool has one, else zeroed by the allocator (`calloc`),
/// which costs no pass and touches no page until used.
pub(crate) fn try_zeros<F: Float>(shape: (usize, usize)) -> Option<Array2<F>> {
    match pool::take_array(shape) {
        Some(mut z) => {
            z.fill(F::zero());
            Some(z)
        }
        None => calloc(shape),
    }
}

/// A zero matrix of `shape` from the allocator (`calloc`), or `None` if refused. Unlike
/// [`try_zeros`] it takes no recycled buffer: for a matrix that stays mostly zero (a
/// diagonal), whose pages the allocator's zeroing leaves untouched until written.
pub(crate) fn calloc<F: Float>(shape: (usize, usize)) -> Option<Array2<F>> {
    let len = shape.0.checked_mul(shape.1)?;
    if len == 0 {
        return Array2::from_shape_vec(shape, Vec::new()).ok();
    }
    let layout = std::alloc::Layout::array::<F>(len).ok()?;
    // SAFETY: the layout's size is not zero.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<F>();
    if ptr.is_null() {
        return None;
    }
    // SAFETY: allocated by the global allocator with the layout of `len` `F`s, and all
    // bytes zero is the value 0.0 of f32 and f64.
    let v = unsafe { Vec::from_raw_parts(ptr, len, len) };
    Array2::from_shape_vec(shape, v).ok()
}

/// `A·B` in a new array (GEMM with beta = 0), or `None` if the allocation is refused.
pub(crate) fn try_gemm<F: Float>(a: ArrayView2<'_, F>, b: ArrayView2<'_, F>) -> Option<Array2<F>> {
    let shape = (a.nrows(), b.ncols());
    let mut c = match pool::take_array(shape) {
        Some(c) => c,
        None => calloc(shape)?,
    };
    gemm_into(a, b, &mut c);
    Some(c)
}

/// `C = A·B` into an existing buffer (GEMM with beta = 0: C's old contents are not read).
#[inline]
pub(crate) fn gemm_into<F: Float>(a: ArrayView2<'_, F>, b: ArrayView2<'_, F>, c: &mut Array2<F>) {
    if small::fits(a, b) {
        return small::gemm(a, b, false, c.view_mut());
    }
    general_mat_mul(F::one(), &a, &b, F::zero(), c);
}

/// `m` copies of the 1 × n row `b`, stacked: the C that `linear`'s GEMM adds `X·W` to.
/// `None` if the allocation is refused.
pub(crate) fn repeat_row<F: Float>(b: ArrayView2<'_, F>, m: usize) -> Option<Array2<F>> {
    let n = b.ncols();
    if m == 0 || n == 0 {
        // nothing to copy (and no loop over 2⁴⁰ empty rows)
        return try_zeros((m, n));
    }
    let len = m.checked_mul(n)?;
    let mut out = match pool::take::<F>(len) {
        Some(v) => v,
        None => {
            let mut v = try_vec(len)?;
            v.resize(len, F::zero());
            v
        }
    };
    for (o, &x) in out.iter_mut().zip(b.iter()) {
        *o = x;
    }
    if n >= 16 {
        // wide rows: one copy per row
        let (first, rest) = out.split_at_mut(n);
        rest.chunks_exact_mut(n)
            .for_each(|row| row.copy_from_slice(first));
    } else {
        // narrow rows: doubling copies, log₂ m calls of `memcpy` instead of one per row
        let mut filled = n;
        while filled < len {
            let more = filled.min(len - filled);
            out.copy_within(..more, filled);
            filled += more;
        }
    }
    Array2::from_shape_vec((m, n), out).ok()
}

/// `C += A·B` in place (GEMM with beta = 1): how matmul gradients accumulate where a
/// buffer already exists.
#[inline]
pub(crate) fn gemm_acc<F: Float>(a: ArrayView2<'_, F>, b: ArrayView2<'_, F>, c: &mut Array2<F>) {
    if small::fits(a, b) {
        return small::gemm(a, b, true, c.view_mut());
    }
    general_mat_mul(F::one(), &a, &b, F::one(), c);
}

/// The shape two operands broadcast to (numpy's rule in two dimensions: per axis the
/// lengths are equal or one of them is 1), or `None`.
pub(crate) fn broadcast_shape(a: (usize, usize), b: (usize, usize)) -> Option<(usize, usize)> {
    fn axis(x: usize, y: usize) -> Option<usize> {
        match (x, y) {
            _ if x == y => Some(x),
            (1, _) => Some(y),
            (_, 1) => Some(x),
            _ => None,
        }
    }
    Some((axis(a.0, b.0)?, axis(a.1, b.1)?))
}

/// `f(a, b)` elementwise over the broadcast `shape` of `a` and `b`, in one pass.
///
/// The bias case, `a` of the full shape in standard layout and `b` a contiguous 1 × n row,
/// runs as one sweep over `a`'s memory in rows of n: ndarray's general broadcasting
/// iterator costs tens of instructions per row, which dominates for narrow matrices
/// (the 4-2-3 network of the seeds).
///
/// `None` if the allocation is refused (the result can be larger than either input).
pub(crate) fn zip_broadcast<F: Float>(
    a: ArrayView2<'_, F>,
    b: ArrayView2<'_, F>,
    shape: (usize, usize),
    f: impl Fn(F, F) -> F,
) -> Option<Array2<F>> {
    let len = shape.0.checked_mul(shape.1)?;
    if a.dim() == shape && b.dim() == (1, shape.1) && shape.1 > 0 {
        if let (Some(xs), Some(bs)) = (a.as_slice(), b.as_slice()) {
            if let Some(mut out) = pool::take_array(shape) {
                let rows = out.as_slice_mut().expect("a pooled array is standard");
                for (o, x) in rows.chunks_exact_mut(shape.1).zip(xs.chunks_exact(shape.1)) {
                    o.iter_mut()
                        .zip(x.iter().zip(bs))
                        .for_each(|(o, (&x, &b))| *o = f(x, b));
                }
                return Some(out);
            }
            let mut out = try_vec(len)?;
            for row in xs.chunks_exact(shape.1) {
                out.extend(row.iter().zip(bs).map(|(&x, &b)| f(x, b)));
            }
            return Array2::from_shape_vec(shape, out).ok();
        }
    }
    let a = a
        .broadcast(shape)
        .expect("the op checked that the shapes broadcast");
    let b = b
        .broadcast(shape)
        .expect("the op checked that the shapes broadcast");
    if let Some(mut out) = pool::take_array(shape) {
        zip2(out.view_mut(), a, b, |o, a, b| *o = f(a, b));
        return Some(out);
    }
    let mut out = uninit(shape)?;
    Zip::from(&mut out).and(&a).and(&b).for_each(|o, &a, &b| {
        o.write(f(a, b));
    });
    // SAFETY: the Zip above wrote every element of `out`.
    Some(unsafe { out.assume_init() })
}

/// `x` repeated to `shape` (which it broadcasts to), or `None` if the allocation is
/// refused.
pub(crate) fn try_broadcast<F: Float>(
    x: ArrayView2<'_, F>,
    shape: (usize, usize),
) -> Option<Array2<F>> {
    let x = x.broadcast(shape)?;
    let mut out = uninit(shape)?;
    Zip::from(&mut out).and(&x).for_each(|o, &x| {
        o.write(x);
    });
    // SAFETY: the Zip above wrote every element of `out`.
    Some(unsafe { out.assume_init() })
}

/// An uninitialised C-order matrix of `shape`, or `None` if the allocation is refused.
/// The caller writes every element before `assume_init`.
fn uninit<F>(shape: (usize, usize)) -> Option<Array2<MaybeUninit<F>>> {
    let len = shape.0.checked_mul(shape.1)?;
    let mut v: Vec<MaybeUninit<F>> = try_vec(len)?;
    // SAFETY: `MaybeUninit` needs no initialisation, and the capacity is `len`.
    unsafe { v.set_len(len) };
    Array2::from_shape_vec(shape, v).ok()
}

/// Un-broadcasting: sums `g` over the axes where `shape` has length 1 and `g` does not.
/// The VJP of every broadcast (bias gradients are column sums, seed 003).
///
/// `shape` must be one `g` broadcasts from (checked by the op when it recorded).
pub(crate) fn sum_to_shape<F: Float>(g: ArrayView2<'_, F>, shape: (usize, usize)) -> Array2<F> {
    if g.is_empty() {
        return Array2::zeros(shape);
    }
    let (r, c) = g.dim();
    match (shape.0 == 1 && r != 1, shape.1 == 1 && c != 1) {
        (false, false) => copy(g),
        (true, false) => column_sums(g),
        (false, true) => {
            let mut sums = pooled((r, 1));
            for (s, row) in sums.iter_mut().zip(g.rows()) {
                *s = row.sum();
            }
            sums
        }
        (true, true) => {
            let mut total = pooled((1, 1));
            total[[0, 0]] = g.sum();
            total
        }
    }
}

/// `1ᵀ·G` as a 1 × n row: for standard layout one sweep adding rows of n into the sums
/// (ndarray's `sum_axis(Axis(0))` pays its iterator setup once per row).
fn column_sums<F: Float>(g: ArrayView2<'_, F>) -> Array2<F> {
    let c = g.ncols();
    match g.as_slice() {
        Some(xs) if c > 0 => {
            let mut row = pooled((1, c));
            let sums = row.as_slice_mut().expect("a new row is standard");
            sums.fill(F::zero());
            match c {
                1 => narrow_sums::<F, 1>(xs, sums),
                2 => narrow_sums::<F, 2>(xs, sums),
                3 => narrow_sums::<F, 3>(xs, sums),
                4 => narrow_sums::<F, 4>(xs, sums),
                5 => narrow_sums::<F, 5>(xs, sums),
                6 => narrow_sums::<F, 6>(xs, sums),
                7 => narrow_sums::<F, 7>(xs, sums),
                8 => narrow_sums::<F, 8>(xs, sums),
                _ => {
                    for row in xs.chunks_exact(c) {
                        sums.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
                    }
                }
            }
            row
        }
        _ => g.sum_axis(Axis(0)).insert_axis(Axis(0)),
    }
}

/// The column sums of the rows of `C` elements in `xs`, into `sums`, with the row width
/// known at compile time: the loop over a row unrolls into `C` additions to registers
/// (the general loop pays its set-up once per row, which dominates for rows of a few
/// elements: a bias of 2 or 3 outputs).
fn narrow_sums<F: Float, const C: usize>(xs: &[F], sums: &mut [F]) {
    let mut acc = [F::zero(); C];
    for row in xs.chunks_exact(C) {
        for j in 0..C {
            acc[j] += row[j];
        }
    }
    sums.copy_from_slice(&acc);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn broadcast_shapes() {
        assert_eq!(broadcast_shape((3, 4), (1, 4)), Some((3, 4)));
        assert_eq!(broadcast_shape((3, 1), (1, 4)), Some((3, 4)));
        assert_eq!(broadcast_shape((1, 1), (2, 5)), Some((2, 5)));
        assert_eq!(broadcast_shape((3, 4), (2, 4)), None);
        assert_eq!(broadcast_shape((0, 4), (1, 4)), Some((0, 4)));
    }

    #[test]
    fn sum_to_shape_is_column_and_row_sums() {
        let g = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]];
        assert_eq!(sum_to_shape(g.view(), (1, 3)), array![[5.0, 7.0, 9.0]]);
        assert_eq!(sum_to_shape(g.view(), (2, 1)), array![[6.0], [15.0]]);
        assert_eq!(sum_to_shape(g.view(), (1, 1)), array![[21.0]]);
        assert_eq!(sum_to_shape(g.view(), (2, 3)), g);
        assert_eq!(sum_to_shape(g.t(), (1, 2)), array![[6.0, 15.0]]);
    }

    /// Every width of the unrolled column sums (1 to 8) and of the general loop agrees with
    /// ndarray's `sum_axis`; `repeat_row` with ndarray's broadcast, for row counts that are
    /// and are not powers of two.
    #[test]
    fn narrow_column_sums_and_repeated_rows_match_ndarray() {
        for c in 1..=10 {
            for r in [1, 2, 3, 7, 150] {
                let g = Array2::from_shape_fn((r, c), |(i, j)| (i * 31 + j * 7) as f64 * 0.25);
                let want = g.sum_axis(Axis(0)).insert_axis(Axis(0));
                assert_eq!(sum_to_shape(g.view(), (1, c)), want, "{r} × {c}");
                let b = want.view();
                let got = repeat_row(b, r).unwrap();
                assert_eq!(got, b.broadcast((r, c)).unwrap(), "{r} × {c}");
            }
        }
    }

    #[test]
    fn zip_broadcast_matches_ndarray_broadcasting() {
        let x = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]];
        let b = array![[10.0, 20.0, 30.0]];
        let c = array![[100.0], [200.0]];
        let sub = |a: f64, b: f64| a - b;
        let zip = |a, b, shape| zip_broadcast(a, b, shape, sub).unwrap();
        assert_eq!(zip(x.view(), b.view(), (2, 3)), &x - &b);
        assert_eq!(zip(b.view(), x.view(), (2, 3)), &b - &x);
        assert_eq!(zip(x.view(), c.view(), (2, 3)), &x - &c);
        assert_eq!(zip(c.view(), b.view(), (2, 3)), &c - &b);
        assert_eq!(zip(x.t(), c.t(), (3, 2)), &x.t() - &c.t());
        assert_eq!(zip(x.t(), x.t(), (3, 2)), &x.t() - &x.t());
    }

    #[test]
    fn gemm_acc_accumulates_with_beta_one() {
        let a = array![[1.0, 2.0], [3.0, 4.0]];
        let mut c = array![[10.0, 0.0], [0.0, 10.0]];
        // c += aᵀ·a = [[10, 14], [14, 20]]
        gemm_acc(a.t(), a.view(), &mut c);
        assert_eq!(c, array![[20.0, 14.0], [14.0, 30.0]]);
    }
}
