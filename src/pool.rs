//! Buffer recycling: a per-thread pool of released buffers that the next op draws from.
//!
//! A training loop builds a new tape every step, and every step allocates and frees the
//! same large buffers (activations, gradients). glibc's `malloc` hands buffers this size
//! back to the kernel when they are freed (`munmap`, or trimming the heap), and the next
//! step faults every page back in: hundreds to thousands of page faults per step, up to
//! 1.6× the step's time. So tapegrad keeps them instead: buffers of at least
//! [`MIN_BYTES`] that a tape releases (values freed by backward, a dropped tape's values,
//! consumed gradients, a dropped [`Gradients`](crate::Gradients)) go to a pool owned by
//! the thread, and ops that need a buffer of that size take one from it. Nothing is
//! configured: the obvious loop (a new tape per step, no options) allocates no large
//! buffer in a steady step.
//!
//! The pool is bounded: 256 MiB ([`DEFAULT_LIMIT`], changed with [`set_limit`]) and 64
//! buffers per element type and thread; to make room it frees its oldest buffers, and a
//! buffer larger than the limit is freed as usual. [`trim`] empties it. Small buffers are
//! not pooled: `malloc` serves them from its arenas without a system call.
//!
//! ```
//! use ndarray::Array2;
//! use tapegrad::{pool, Tape};
//!
//! let w = Array2::<f32>::ones((256, 256));
//! for _ in 0..3 {
//!     let tape = Tape::new();
//!     let loss = tape.param(&w).tanh().sum();
//!     let _grads = tape.backward(loss).unwrap();
//! }
//! assert!(pool::stats().bytes > 0); // released buffers wait for the next step
//! pool::trim();
//! assert_eq!(pool::stats().bytes, 0);
//! ```

use std::cell::RefCell;

use ndarray::Array2;

use crate::Float;

/// Buffers smaller than this many bytes are not pooled.
pub const MIN_BYTES: usize = 64 * 1024;

/// The default bound of one thread's pool, in bytes.
pub const DEFAULT_LIMIT: usize = 256 << 20;

/// Buffers a pool holds at most, whatever their size (a bound on a look-up's cost).
const MAX_BUFFERS: usize = 64;

/// One thread's pooled buffers, per element type.
#[doc(hidden)]
pub struct Pools {
    f32: Vec<Vec<f32>>,
    f64: Vec<Vec<f64>>,
    bytes: usize,
    limit: usize,
    hits: u64,
    misses: u64,
}

/// The pool of one element type, within a thread's [`Pools`].
#[doc(hidden)]
pub trait Pooled: Sized {
    fn buffers(pools: &mut Pools) -> &mut Vec<Vec<Self>>;
}

impl Pooled for f32 {
    fn buffers(pools: &mut Pools) -> &mut Vec<Vec<f32>> {
        &mut pools.f32
    }
}

impl Pooled for f64 {
    fn buffers(pools: &mut Pools) -> &mut Vec<Vec<f64>> {
        &mut pools.f64
    }
}

thread_local! {
    static POOLS: RefCell<Pools> = const {
        RefCell::new(Pools {
            f32: Vec::new(),
            f64: Vec::new(),
            bytes: 0,
            limit: DEFAULT_LIMIT,
            hits: 0,
            misses: 0,
        })
    };
}

/// What this thread's pool holds and how often it served a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers held.
    pub buffers: usize,
    /// Bytes held (capacities).
    pub bytes: usize,
    /// Requests served from the pool since the thread started.
    pub hits: u64,
    /// Requests of pooled size that found no buffer and went to the allocator.
    pub misses: u64,
}

/// This thread's pool: buffers and bytes held, hits and misses.
pub fn stats() -> PoolStats {
    POOLS
        .try_with(|p| {
            let p = p.borrow();
            PoolStats {
                buffers: p.f32.len() + p.f64.len(),
                bytes: p.bytes,
                hits: p.hits,
                misses: p.misses,
            }
        })
        .unwrap_or_default()
}

/// Frees every buffer in this thread's pool (after training, or before measuring memory).
pub fn trim() {
    let _ = POOLS.try_with(|p| {
        let mut p = p.borrow_mut();
        p.f32 = Vec::new();
        p.f64 = Vec::new();
        p.bytes = 0;
    });
}

/// Bounds this thread's pool to `bytes` (0 turns pooling off), freeing buffers beyond it.
pub fn set_limit(bytes: usize) {
    let _ = POOLS.try_with(|p| {
        let mut p = p.borrow_mut();
        p.limit = bytes;
        while p.bytes > bytes {
            if let Some(v) = p.f32.pop() {
                p.bytes -= v.capacity() * 4;
            } else if let Some(v) = p.f64.pop() {
                p.bytes -= v.capacity() * 8;
            } else {
                p.bytes = 0;
            }
        }
    });
}

/// Whether a buffer of `len` elements of `F` is pooled.
#[inline]
fn pooled<F>(len: usize) -> bool {
    len.saturating_mul(std::mem::size_of::<F>()) >= MIN_BYTES
}

/// A buffer of exactly `len` elements from the pool, holding whatever its last user left
/// in it (every element initialised, none meaningful); `None` if the size is not pooled
/// or no buffer fits. Best fit among buffers with room for `len` and at most twice it.
pub(crate) fn take<F: Float>(len: usize) -> Option<Vec<F>> {
    if !pooled::<F>(len) {
        return None;
    }
    POOLS
        .try_with(|p| {
            let mut p = p.borrow_mut();
            let p = &mut *p;
            let buffers = F::buffers(p);
            let mut best: Option<(usize, usize)> = None;
            for (i, b) in buffers.iter().enumerate() {
                let cap = b.capacity();
                if cap >= len && cap / 2 <= len && best.is_none_or(|(_, c)| cap < c) {
                    best = Some((i, cap));
                    if cap == len {
                        break;
                    }
                }
            }
            match best {
                Some((i, cap)) => {
                    let mut v = buffers.remove(i);
                    p.bytes -= cap * std::mem::size_of::<F>();
                    p.hits += 1;
                    // the values past the old length were never written: fill them
                    v.resize(len, F::zero());
                    v.truncate(len);
                    Some(v)
                }
                None => {
                    p.misses += 1;
                    None
                }
            }
        })
        .ok()
        .flatten()
}

/// Hands a buffer to the pool (or frees it, when it is small or the pool is full).
pub(crate) fn give<F: Float>(v: Vec<F>) {
    let bytes = v.capacity() * std::mem::size_of::<F>();
    if !pooled::<F>(v.capacity()) {
        return;
    }
    let _ = POOLS.try_with(|p| {
        // a pool borrowed further up this thread's stack cannot happen (no callback runs
        // while it is borrowed), but never panic on a drop path
        let Ok(mut p) = p.try_borrow_mut() else {
            return;
        };
        let p = &mut *p;
        if bytes > p.limit {
            return;
        }
        // make room by freeing the oldest buffers: sizes a program stopped using leave
        while p.bytes + bytes > p.limit || F::buffers(p).len() >= MAX_BUFFERS {
            if F::buffers(p).is_empty() {
                // the room is held by the other element type's buffers
                return;
            }
            let old = F::buffers(p).remove(0);
            p.bytes -= old.capacity() * std::mem::size_of::<F>();
        }
        p.bytes += bytes;
        F::buffers(p).push(v);
    });
}

/// Hands an array's buffer to the pool.
pub(crate) fn give_array<F: Float>(a: Array2<F>) {
    if pooled::<F>(a.len()) {
        give(a.into_raw_vec_and_offset().0);
    }
}

/// An array of `shape` from the pool, its contents arbitrary (every element initialised):
/// the caller overwrites all of it. `None` if the size is not pooled or nothing fits.
pub(crate) fn take_array<F: Float>(shape: (usize, usize)) -> Option<Array2<F>> {
    let len = shape.0.checked_mul(shape.1)?;
    let v = take::<F>(len)?;
    Array2::from_shape_vec(shape, v).ok()
}

/// An owned array that hands its buffer to this thread's pool when dropped: a tape's
/// values (what backward releases and a dropped tape frees) and arrays rules keep.
pub(crate) struct Buffer<F: Float>(pub(crate) Array2<F>);

impl<F: Float> Drop for Buffer<F> {
    fn drop(&mut self) {
        give_array(std::mem::replace(&mut self.0, Array2::zeros((0, 0))));
    }
}

impl<F: Float> std::ops::Deref for Buffer<F> {
    type Target = Array2<F>;
    fn deref(&self) -> &Array2<F> {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tape;

    /// A pooled-size f64 matrix filled with NaN, handed to the pool.
    fn give_nans(shape: (usize, usize)) {
        give_array(Array2::<f64>::from_elem(shape, f64::NAN));
    }

    #[test]
    fn buffers_are_taken_best_fit_and_small_ones_are_not_pooled() {
        trim();
        give_array(Array2::<f64>::zeros((10, 10)));
        assert_eq!(stats().buffers, 0, "800 bytes are not pooled");
        give_nans((100, 100));
        give_nans((100, 120));
        give_nans((100, 300));
        assert_eq!(stats().buffers, 3);
        let v = take::<f64>(100 * 110).unwrap();
        assert_eq!((v.len(), v.capacity()), (11_000, 12_000));
        assert!(take::<f64>(100 * 100).is_some());
        // more than twice the size asked for is not a fit
        assert!(take::<f64>(100 * 140).is_none());
        assert!(
            take::<f32>(100 * 300).is_none(),
            "pools are per element type"
        );
        trim();
        assert_eq!(
            stats(),
            PoolStats {
                hits: stats().hits,
                misses: stats().misses,
                ..Default::default()
            }
        );
    }

    #[test]
    fn the_limit_frees_the_oldest_buffers() {
        trim();
        let bytes = 100 * 100 * 8;
        set_limit(2 * bytes);
        give_nans((100, 100));
        give_nans((100, 100));
        give_nans((100, 100));
        assert_eq!(stats().buffers, 2);
        assert_eq!(stats().bytes, 2 * bytes);
        set_limit(0);
        assert_eq!(stats().bytes, 0);
        give_nans((100, 100));
        assert_eq!(stats().buffers, 0, "a zero limit turns pooling off");
        set_limit(DEFAULT_LIMIT);
    }

    #[test]
    fn recycled_buffers_never_leak_their_old_values() {
        trim();
        let (m, k, n) = (128, 64, 96);
        let a = Array2::from_shape_fn((m, k), |(i, j)| (i * 3 + j) as f64 % 7.0 - 3.0);
        let b = Array2::from_shape_fn((k, n), |(i, j)| (i + 5 * j) as f64 % 5.0 - 2.0);
        let expected = a.dot(&b);
        for _ in 0..3 {
            give_nans((m, n));
        }
        assert_eq!(crate::kernels::gemm(a.view(), b.view()), expected);
        assert_eq!(
            crate::kernels::try_zeros::<f64>((m, n)).unwrap(),
            Array2::<f64>::zeros((m, n))
        );
        // an empty inner dimension: the product is zeros, not the buffer's NaN
        let (e1, e2) = (Array2::<f64>::zeros((m, 0)), Array2::<f64>::zeros((0, n)));
        let empty = crate::kernels::gemm(e1.view(), e2.view());
        assert_eq!(empty, Array2::<f64>::zeros((m, n)));
        // through a tape: a gradient computed in recycled buffers equals a fresh one
        let w = Array2::from_shape_fn((k, n), |(i, j)| ((i * j) % 11) as f64 / 10.0);
        let grad = || {
            let tape = Tape::new();
            let x = tape.constant(&a);
            let loss = x.matmul(tape.param(&w)).tanh().sum();
            tape.backward(loss).unwrap().wrt(&w).unwrap().clone()
        };
        trim();
        set_limit(0);
        let fresh = grad();
        set_limit(DEFAULT_LIMIT);
        for _ in 0..8 {
            give_nans((m, n));
            give_nans((k, n));
        }
        assert_eq!(grad(), fresh);
        assert!(stats().hits > 0);
        trim();
    }
}
