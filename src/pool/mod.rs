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
//! buffer larger than the limit is freed as usual. [`trim`] empties it.
//!
//! Small buffers (below [`MIN_BYTES`]) are pooled too, by size class (powers of two), and
//! so are the lists a tape and its backward pass keep (nodes, values, gradient slots):
//! a steady training step of a small model (thousands of ops on a few elements each)
//! then allocates nothing at all, where `malloc` and `free` would cost about as much as
//! the arithmetic.
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

mod vecs;

use vecs::RawVec;
pub(crate) use vecs::{Recycled, give_vec, take_vec};

/// Buffers of at least this many bytes are pooled by size (best fit); smaller ones by
/// size class (powers of two).
pub const MIN_BYTES: usize = 64 * 1024;

/// The default bound of one thread's pool, in bytes.
pub const DEFAULT_LIMIT: usize = 256 << 20;

/// Large buffers a pool holds at most, whatever their size (a bound on a look-up's cost).
const MAX_BUFFERS: usize = 64;

/// Size classes of small buffers: class `c` holds buffers of capacity in `[2ᶜ, 2ᶜ⁺¹)`
/// elements, and serves requests of at most `2ᶜ`. Every buffer below [`MIN_BYTES`] has a
/// class (2¹⁴ f32 or 2¹³ f64 elements are 64 KiB).
const CLASSES: usize = 15;

/// Small buffers one class holds at most (a tape of a few thousand small ops releases
/// that many at once, and the next step wants them all back).
const MAX_PER_CLASS: usize = 1 << 14;

/// One thread's pooled buffers, per element type.
#[doc(hidden)]
pub struct Pools {
    f32: Vec<Vec<f32>>,
    f64: Vec<Vec<f64>>,
    small_f32: [Vec<Vec<f32>>; CLASSES],
    small_f64: [Vec<Vec<f64>>; CLASSES],
    vecs: Vec<RawVec>,
    bytes: usize,
    limit: usize,
    hits: u64,
    misses: u64,
}

impl Pools {
    /// Frees everything held.
    fn clear(&mut self) {
        self.f32 = Vec::new();
        self.f64 = Vec::new();
        self.small_f32 = Default::default();
        self.small_f64 = Default::default();
        self.vecs.drain(..).for_each(RawVec::free);
        self.bytes = 0;
    }

    /// Frees held buffers until at most `bytes` are held: large ones first (oldest
    /// first), then small ones, then vectors.
    fn shrink_to(&mut self, bytes: usize) {
        while self.bytes > bytes {
            if let Some(v) = (!self.f32.is_empty()).then(|| self.f32.remove(0)) {
                self.bytes -= v.capacity() * 4;
            } else if let Some(v) = (!self.f64.is_empty()).then(|| self.f64.remove(0)) {
                self.bytes -= v.capacity() * 8;
            } else if let Some(v) = self.small_f32.iter_mut().rev().find_map(Vec::pop) {
                self.bytes -= v.capacity() * 4;
            } else if let Some(v) = self.small_f64.iter_mut().rev().find_map(Vec::pop) {
                self.bytes -= v.capacity() * 8;
            } else if let Some(v) = self.vecs.pop() {
                self.bytes -= v.bytes();
                v.free();
            } else {
                self.bytes = 0;
            }
        }
    }
}

impl Drop for Pools {
    fn drop(&mut self) {
        self.vecs.drain(..).for_each(RawVec::free);
    }
}

/// The pool of one element type, within a thread's [`Pools`].
#[doc(hidden)]
pub trait Pooled: Sized {
    fn buffers(pools: &mut Pools) -> &mut Vec<Vec<Self>>;
    fn classes(pools: &mut Pools) -> &mut [Vec<Vec<Self>>; CLASSES];
}

impl Pooled for f32 {
    fn buffers(pools: &mut Pools) -> &mut Vec<Vec<f32>> {
        &mut pools.f32
    }
    fn classes(pools: &mut Pools) -> &mut [Vec<Vec<f32>>; CLASSES] {
        &mut pools.small_f32
    }
}

impl Pooled for f64 {
    fn buffers(pools: &mut Pools) -> &mut Vec<Vec<f64>> {
        &mut pools.f64
    }
    fn classes(pools: &mut Pools) -> &mut [Vec<Vec<f64>>; CLASSES] {
        &mut pools.small_f64
    }
}

thread_local! {
    static POOLS: RefCell<Pools> = const {
        RefCell::new(Pools {
            f32: Vec::new(),
            f64: Vec::new(),
            small_f32: [const { Vec::new() }; CLASSES],
            small_f64: [const { Vec::new() }; CLASSES],
            vecs: Vec::new(),
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
    /// Buffers held (large and small, and recycled vectors).
    pub buffers: usize,
    /// Bytes held (capacities).
    pub bytes: usize,
    /// Requests served from the pool since the thread started.
    pub hits: u64,
    /// Requests that found no buffer and went to the allocator.
    pub misses: u64,
}

/// This thread's pool: buffers and bytes held, hits and misses.
pub fn stats() -> PoolStats {
    POOLS
        .try_with(|p| {
            let p = p.borrow();
            let small = |c: &[Vec<Vec<f32>>]| c.iter().map(Vec::len).sum::<usize>();
            let small64 = |c: &[Vec<Vec<f64>>]| c.iter().map(Vec::len).sum::<usize>();
            PoolStats {
                buffers: p.f32.len()
                    + p.f64.len()
                    + small(&p.small_f32)
                    + small64(&p.small_f64)
                    + p.vecs.len(),
                bytes: p.bytes,
                hits: p.hits,
                misses: p.misses,
            }
        })
        .unwrap_or_default()
}

/// Frees every buffer in this thread's pool (after training, or before measuring memory).
pub fn trim() {
    let _ = POOLS.try_with(|p| p.borrow_mut().clear());
}

/// Bounds this thread's pool to `bytes` (0 turns pooling off), freeing buffers beyond it.
pub fn set_limit(bytes: usize) {
    let _ = POOLS.try_with(|p| {
        let mut p = p.borrow_mut();
        p.limit = bytes;
        p.shrink_to(bytes);
    });
}

/// Whether a buffer of `len` elements of `F` is pooled by size (else by class).
#[inline]
fn large<F>(len: usize) -> bool {
    len.saturating_mul(std::mem::size_of::<F>()) >= MIN_BYTES
}

/// The class serving requests of `len` (≥ 1) elements: ⌈log₂ len⌉.
#[inline]
fn class_of_request(len: usize) -> usize {
    (usize::BITS - (len - 1).leading_zeros()) as usize
}

/// The class a buffer of `capacity` (≥ 1) elements goes to: ⌊log₂ capacity⌋.
#[inline]
fn class_of_capacity(capacity: usize) -> usize {
    (usize::BITS - 1 - capacity.leading_zeros()) as usize
}

/// A buffer of exactly `len` elements, holding whatever its last user left in it (every
/// element initialised, none meaningful). Large sizes: from the pool (best fit among
/// buffers with room for `len` and at most twice it), or `None`. Small sizes: always a
/// buffer, from its class or, on a miss, a new one with room for the whole class (so that
/// it comes back to the class it serves).
pub(crate) fn take<F: Float>(len: usize) -> Option<Vec<F>> {
    if len == 0 {
        return None;
    }
    if !large::<F>(len) {
        return Some(take_small(len));
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

/// A small buffer of `len` (≥ 1) elements: from its class, or new.
fn take_small<F: Float>(len: usize) -> Vec<F> {
    let class = class_of_request(len);
    let found = POOLS
        .try_with(|p| {
            let mut p = p.borrow_mut();
            let p = &mut *p;
            match F::classes(p)[class].pop() {
                Some(v) => {
                    p.bytes -= v.capacity() * std::mem::size_of::<F>();
                    p.hits += 1;
                    Some(v)
                }
                None => {
                    p.misses += 1;
                    None
                }
            }
        })
        .ok()
        .flatten();
    let mut v = found.unwrap_or_else(|| Vec::with_capacity(1 << class));
    // the values past the old length were never written: fill them
    v.resize(len, F::zero());
    v.truncate(len);
    v
}

/// Hands a buffer to the pool (or frees it, when the pool is full).
pub(crate) fn give<F: Float>(v: Vec<F>) {
    let capacity = v.capacity();
    if capacity == 0 {
        return;
    }
    let bytes = capacity * std::mem::size_of::<F>();
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
        if !large::<F>(capacity) {
            let room = p.bytes + bytes <= p.limit;
            let class = &mut F::classes(p)[class_of_capacity(capacity)];
            if room && class.len() < MAX_PER_CLASS {
                class.push(v);
                p.bytes += bytes;
            }
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
    give(a.into_raw_vec_and_offset().0);
}

/// Hands a small array's buffer to the pool and frees a large one: for buffers a backward
/// pass is done with, whose large sizes the next take would not fit anyway. Keeping them
/// would hold a whole pass's gradients at once and raise the peak of memory-saving
/// schedules ([`Tape::remat`](crate::Tape::remat)) to the plain pass's.
pub(crate) fn recycle_array<F: Float>(a: Array2<F>) {
    let v = a.into_raw_vec_and_offset().0;
    if !large::<F>(v.capacity()) {
        give(v);
    }
}

/// An array of `shape` from the pool, its contents arbitrary (every element initialised):
/// the caller overwrites all of it. `None` for an empty shape, or a large one that nothing
/// in the pool fits (small ones always get a buffer).
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
mod tests;
