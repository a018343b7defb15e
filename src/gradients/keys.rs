//! How a parameter's gradient is found by the array itself: borrowed leaves are keyed by
//! their storage ([`ViewKey`]), and a tape's parameter leaves are listed by it ([`Params`]).

use ndarray::{ArrayView2, Ix2, RawArrayView};

use crate::pool::Recycled;

use crate::tape::NodeId;

/// Identifies a borrowed leaf by its storage, so [`Gradients::wrt`](super::Gradients::wrt) can find the gradient
/// of a model's parameter from the array itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ViewKey {
    ptr: usize,
    shape: (usize, usize),
    strides: [isize; 2],
}

impl ViewKey {
    pub(crate) fn of<F>(v: &ArrayView2<'_, F>) -> Self {
        let s = v.strides();
        ViewKey {
            ptr: v.as_ptr() as usize,
            shape: v.dim(),
            strides: [s[0], s[1]],
        }
    }

    /// The key of a borrowed leaf's raw view.
    pub(crate) fn of_raw<F>(v: &RawArrayView<F, Ix2>) -> Self {
        let s = v.strides();
        ViewKey {
            ptr: v.as_ptr() as usize,
            shape: v.dim(),
            strides: [s[0], s[1]],
        }
    }

    /// The key of the transposed view of the same storage.
    pub(crate) fn transposed(self) -> Self {
        ViewKey {
            ptr: self.ptr,
            shape: (self.shape.1, self.shape.0),
            strides: [self.strides[1], self.strides[0]],
        }
    }

    /// Whether the view has the strides of a row-major array of its shape, `[c, 1]`, as
    /// every owned `Array2` has (the transposed view of a 1 × n row is not one).
    pub(super) fn is_standard(self) -> bool {
        self.strides == [self.shape.1 as isize, 1]
    }

    /// Whether the view has no element.
    pub(super) fn is_empty(self) -> bool {
        self.shape.0 == 0 || self.shape.1 == 0
    }

    /// The bytes `[start, end)` the view's elements occupy (empty for an empty view).
    fn bytes(self, elem: usize) -> (usize, usize) {
        let (r, c) = self.shape;
        if r == 0 || c == 0 {
            return (self.ptr, self.ptr);
        }
        let reach = |len: usize, stride: isize| {
            let d = (len as isize - 1) * stride;
            (d.min(0), d.max(0))
        };
        let (lo0, hi0) = reach(r, self.strides[0]);
        let (lo1, hi1) = reach(c, self.strides[1]);
        let e = elem as isize;
        let start = self.ptr as isize + (lo0 + lo1) * e;
        let end = self.ptr as isize + (hi0 + hi1 + 1) * e;
        (start as usize, end as usize)
    }
}

/// The borrowed leaves of a tape that require a gradient, by storage: what makes a
/// parameter one leaf however often it goes on the tape, and what [`Gradients::wrt`](super::Gradients::wrt)
/// finds gradients by.
#[derive(Default)]
pub(crate) struct Params {
    leaves: Recycled<ParamLeaf>,
    /// Transposed views of those leaves that also went on the tape.
    pub(super) transposed: Recycled<(ViewKey, NodeId)>,
}

struct ParamLeaf {
    key: ViewKey,
    id: NodeId,
    /// The storage overlaps another parameter's, given as a different view (a slice).
    overlaps: bool,
}

impl Params {
    /// How many parameters are on the tape.
    pub(crate) fn len(&self) -> usize {
        self.leaves.len()
    }

    /// The leaf already holding `key`'s storage, and whether `key` is its transpose (which
    /// is then remembered, so that the transposed view finds the gradient too).
    pub(crate) fn find(&mut self, key: ViewKey) -> Option<(NodeId, bool)> {
        let (id, transposed) = self.leaves.iter().find_map(|p| {
            if p.key == key {
                Some((p.id, false))
            } else if p.key.transposed() == key {
                Some((p.id, true))
            } else {
                None
            }
        })?;
        if transposed && !self.transposed.contains(&(key, id)) {
            self.transposed.push((key, id));
        }
        Some((id, transposed))
    }

    /// Adds the leaf `id` holding `key`'s storage of `elem`-byte elements, marking it and
    /// every parameter whose storage it overlaps.
    pub(crate) fn insert(&mut self, key: ViewKey, id: NodeId, elem: usize) {
        let (start, end) = key.bytes(elem);
        let mut overlaps = false;
        for p in self.leaves.iter_mut() {
            let (s, e) = p.key.bytes(elem);
            if start < e && s < end {
                p.overlaps = true;
                overlaps = true;
            }
        }
        self.leaves.push(ParamLeaf { key, id, overlaps });
    }

    pub(super) fn overlaps(&self, id: NodeId) -> bool {
        self.leaves.iter().any(|p| p.id == id && p.overlaps)
    }
}
