//! Kernels: the bottom layer. GEMM with transpose flags and accumulation, and the one
//! broadcasting helper pair (`broadcast_shape` forward, `sum_to_shape` backward).
//!
//! This module is the only caller of ndarray's matrix product. Transposed operands arrive
//! here as views (`w.t()`, `x.t()`), never as copies: with the `blas` feature, ndarray
//! (≥ 0.16.1) hands a C- or F-contiguous view to `cblas_?gemm` as a row-major operand with
//! `CblasTrans` where needed, so `G·Wᵀ` and `Xᵀ·G` cost one GEMM call and no copy
//! (`tests/blas_path.rs` proves it with a call-recording `cblas_sgemm`). Views with other
//! strides (a step-2 slice) and products with every dimension ≤ 7 go to matrixmultiply,
//! which reads any strides in place. Without `blas`, every product goes to matrixmultiply.

use std::mem::MaybeUninit;

use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, Axis, Zip};

use crate::{Float, pool};

/// `A·B` in a new array (GEMM with beta = 0), in a recycled buffer where the pool has one.
#[inline]
pub(crate) fn gemm<F: Float>(a: ArrayView2<'_, F>, b: ArrayView2<'_, F>) -> Array2<F> {
    match pool::take_array((a.nrows(), b.ncols())) {
        Some(mut c) => {
            gemm_into(a, b, &mut c);
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
            Zip::from(&mut y).and(&x).for_each(|y, &x| *y = f(x));
            y
        }
        None => x.mapv(f),
    }
}

/// A copy of `x` in standard layout (a recycled buffer where the pool has one).
pub(crate) fn copy<F: Float>(x: ArrayView2<'_, F>) -> Array2<F> {
    match pool::take_array(x.dim()) {
        Some(mut y) => {
            y.assign(&x);
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
    if let Some(mut out) = pool::take_array((m, n)) {
        out.assign(&b.broadcast((m, n))?);
        return Some(out);
    }
    let mut out = try_vec(m.checked_mul(n)?)?;
    match b.as_slice() {
        Some(row) => (0..m).for_each(|_| out.extend_from_slice(row)),
        None => (0..m).for_each(|_| out.extend(b.iter().copied())),
    }
    Array2::from_shape_vec((m, n), out).ok()
}

/// `C += A·B` in place (GEMM with beta = 1): how matmul gradients accumulate where a
/// buffer already exists.
#[inline]
pub(crate) fn gemm_acc<F: Float>(a: ArrayView2<'_, F>, b: ArrayView2<'_, F>, c: &mut Array2<F>) {
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
        Zip::from(&mut out)
            .and(&a)
            .and(&b)
            .for_each(|o, &a, &b| *o = f(a, b));
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
        (false, true) => g.sum_axis(Axis(1)).insert_axis(Axis(1)),
        (true, true) => Array2::from_elem((1, 1), g.sum()),
    }
}

/// `1ᵀ·G` as a 1 × n row: for standard layout one sweep adding rows of n into the sums
/// (ndarray's `sum_axis(Axis(0))` pays its iterator setup once per row).
fn column_sums<F: Float>(g: ArrayView2<'_, F>) -> Array2<F> {
    let c = g.ncols();
    match g.as_slice() {
        Some(xs) if c > 0 => {
            let mut sums = vec![F::zero(); c];
            for row in xs.chunks_exact(c) {
                sums.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
            }
            Array2::from_shape_vec((1, c), sums).expect("one sum per column")
        }
        _ => g.sum_axis(Axis(0)).insert_axis(Axis(0)),
    }
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
