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
use std::ptr::NonNull;

use ndarray::Array2;

use crate::Float;

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

/// Recycled vectors (a tape's node list, backward's slots) a pool holds at most.
const MAX_VECS: usize = 64;

/// The memory of a vector whose elements were dropped, kept for a vector of a type of the
/// same size and alignment.
struct RawVec {
    ptr: NonNull<u8>,
    /// In elements of `size` bytes.
    capacity: usize,
    size: usize,
    align: usize,
}

impl RawVec {
    fn bytes(&self) -> usize {
        self.capacity * self.size
    }

    fn free(self) {
        // SAFETY: allocated by the global allocator as a `Vec` of `capacity` elements of
        // this size and alignment, which is this layout; its elements were dropped.
        unsafe {
            let layout = std::alloc::Layout::from_size_align_unchecked(self.bytes(), self.align);
            std::alloc::dealloc(self.ptr.as_ptr(), layout);
        }
    }
}

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

/// An empty vector with the memory of one this thread recycled, of a type of the same
/// size and alignment (a tape's node list, backward's slots), or a new one.
pub(crate) fn take_vec<T>() -> Vec<T> {
    let (size, align) = (std::mem::size_of::<T>(), std::mem::align_of::<T>());
    if size == 0 {
        return Vec::new();
    }
    let found = POOLS
        .try_with(|p| {
            let mut p = p.borrow_mut();
            let i = p
                .vecs
                .iter()
                .rposition(|v| v.size == size && v.align == align)?;
            let v = p.vecs.swap_remove(i);
            p.bytes -= v.bytes();
            Some(v)
        })
        .ok()
        .flatten();
    match found {
        // SAFETY: the memory of a `Vec` of `capacity` elements of this size and alignment
        // (so deallocating it as a `Vec<T>` uses its layout), holding no element.
        Some(v) => unsafe { Vec::from_raw_parts(v.ptr.as_ptr().cast::<T>(), 0, v.capacity) },
        None => Vec::new(),
    }
}

/// Drops the elements of `v` and keeps its memory for [`take_vec`] (or frees it, when the
/// pool is full).
pub(crate) fn give_vec<T>(mut v: Vec<T>) {
    v.clear();
    let (size, align) = (std::mem::size_of::<T>(), std::mem::align_of::<T>());
    if size == 0 || v.capacity() == 0 {
        return;
    }
    let bytes = v.capacity() * size;
    let _ = POOLS.try_with(|p| {
        let Ok(mut p) = p.try_borrow_mut() else {
            return;
        };
        if p.bytes + bytes > p.limit || p.vecs.len() >= MAX_VECS {
            return;
        }
        let mut v = std::mem::ManuallyDrop::new(std::mem::take(&mut v));
        p.bytes += bytes;
        p.vecs.push(RawVec {
            ptr: NonNull::new(v.as_mut_ptr().cast::<u8>()).expect("an allocated vector"),
            capacity: v.capacity(),
            size,
            align,
        });
    });
}

/// A vector whose memory goes back to this thread's pool when it is dropped (after its
/// elements are): the lists a tape and its backward pass keep, so that a steady training
/// loop allocates none of them.
pub(crate) struct Recycled<T>(pub(crate) Vec<T>);

impl<T> Recycled<T> {
    /// An empty vector, with room for at least `n` elements unless that cannot be
    /// allocated (the capacity is a hint).
    pub(crate) fn with_capacity(n: usize) -> Self {
        let mut v = take_vec();
        let _ = v.try_reserve(n);
        Recycled(v)
    }
}

impl<T> Default for Recycled<T> {
    fn default() -> Self {
        Recycled(take_vec())
    }
}

impl<T> Drop for Recycled<T> {
    fn drop(&mut self) {
        give_vec(std::mem::take(&mut self.0));
    }
}

impl<T> std::ops::Deref for Recycled<T> {
    type Target = Vec<T>;
    fn deref(&self) -> &Vec<T> {
        &self.0
    }
}

impl<T> std::ops::DerefMut for Recycled<T> {
    fn deref_mut(&mut self) -> &mut Vec<T> {
        &mut self.0
    }
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
    fn buffers_are_taken_best_fit_and_small_ones_by_class() {
        trim();
        // 100 elements go to the class of 64 to 127, which serves requests of up to 64
        give_array(Array2::<f64>::zeros((10, 10)));
        assert_eq!(stats().buffers, 1);
        let misses = stats().misses;
        let v = take::<f64>(65).unwrap();
        assert_eq!(
            (v.len(), v.capacity(), stats().misses),
            (65, 128, misses + 1)
        );
        let v = take::<f64>(64).unwrap();
        assert_eq!((v.len(), v.capacity(), stats().buffers), (64, 100, 0));
        trim();
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

    /// A recycled vector comes back empty, with its memory, for a type of the same size
    /// and alignment; the element it held was dropped when it was given.
    #[test]
    fn vectors_are_recycled_empty() {
        trim();
        let rc = std::rc::Rc::new(());
        let mut v: Vec<std::rc::Rc<()>> = Vec::with_capacity(40);
        v.push(rc.clone());
        let ptr = v.as_ptr() as usize;
        give_vec(v);
        assert_eq!(std::rc::Rc::strong_count(&rc), 1, "the element was dropped");
        let w: Vec<usize> = take_vec();
        assert_eq!((w.len(), w.capacity(), w.as_ptr() as usize), (0, 40, ptr));
        let u: Vec<u8> = take_vec();
        assert_eq!(u.capacity(), 0, "no vector of that size was kept");
        give_vec(w);
        assert_eq!(stats().buffers, 1);
        trim();
        assert_eq!(stats().buffers, 0);
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
