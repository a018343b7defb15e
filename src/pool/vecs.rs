//! Recycled vectors: the memory of a tape's lists (nodes, values, inputs) and of
//! backward's (slots, pending reads), kept for the next list of a type of the same size
//! and alignment.

use std::ptr::NonNull;

use super::POOLS;

/// Recycled vectors (a tape's node list, backward's slots) a pool holds at most.
const MAX_VECS: usize = 64;

/// The memory of a vector whose elements were dropped, kept for a vector of a type of the
/// same size and alignment.
pub(super) struct RawVec {
    ptr: NonNull<u8>,
    /// In elements of `size` bytes.
    capacity: usize,
    size: usize,
    align: usize,
}

impl RawVec {
    pub(super) fn bytes(&self) -> usize {
        self.capacity * self.size
    }

    pub(super) fn free(self) {
        // SAFETY: allocated by the global allocator as a `Vec` of `capacity` elements of
        // this size and alignment, which is this layout; its elements were dropped.
        unsafe {
            let layout = std::alloc::Layout::from_size_align_unchecked(self.bytes(), self.align);
            std::alloc::dealloc(self.ptr.as_ptr(), layout);
        }
    }
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
