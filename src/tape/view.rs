//! How a value is seen: views of other values (transposes, slices with steps, reshapes)
//! and the look-ups that follow them to their storage.

use ndarray::{ArrayView2, Axis};

use super::{NodeId, Value};
use crate::Float;

/// A range of rows or columns of a value, with a step: the `len` indices
/// `start, start + step, ...`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lane {
    pub(crate) start: usize,
    pub(crate) len: usize,
    pub(crate) step: usize,
}

impl Lane {
    /// Every index of an axis of length `n`.
    pub(crate) fn all(n: usize) -> Self {
        Lane {
            start: 0,
            len: n,
            step: 1,
        }
    }

    /// The slice of an axis it selects.
    pub(crate) fn slice(self) -> ndarray::Slice {
        let end = self.start + self.len.saturating_sub(1) * self.step + usize::from(self.len > 0);
        ndarray::Slice::new(self.start as isize, Some(end as isize), self.step as isize)
    }
}

/// How an alias views its source's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ViewMap {
    /// The rows and columns given, then transposed or not.
    Strided {
        rows: Lane,
        cols: Lane,
        transposed: bool,
    },
    /// The source's elements in row-major order, as a matrix of `shape` (the source is
    /// in standard layout).
    Reshaped { shape: (usize, usize) },
}

impl ViewMap {
    /// The whole of a value of `shape`, transposed or not.
    pub(crate) fn whole(shape: (usize, usize), transposed: bool) -> Self {
        ViewMap::Strided {
            rows: Lane::all(shape.0),
            cols: Lane::all(shape.1),
            transposed,
        }
    }

    /// `v` seen through the map.
    pub(crate) fn apply<'a, F>(self, v: ArrayView2<'a, F>) -> ArrayView2<'a, F> {
        match self {
            ViewMap::Strided {
                rows,
                cols,
                transposed,
            } => {
                let mut v = v;
                v.slice_axis_inplace(Axis(0), rows.slice());
                v.slice_axis_inplace(Axis(1), cols.slice());
                if transposed { v.reversed_axes() } else { v }
            }
            ViewMap::Reshaped { shape } => v
                .into_shape_with_order(shape)
                .expect("a reshape alias views a value in standard layout"),
        }
    }

    /// The shape of the view of a value of shape `shape`.
    pub(crate) fn shape(self) -> (usize, usize) {
        match self {
            ViewMap::Strided {
                rows,
                cols,
                transposed: false,
            } => (rows.len, cols.len),
            ViewMap::Strided { rows, cols, .. } => (cols.len, rows.len),
            ViewMap::Reshaped { shape } => shape,
        }
    }
}

/// The view of node `id`'s value, or `Err(lost)` if it was released, `lost` being the node
/// whose value backward released.
pub(crate) fn view_of<'a, F: Float>(
    values: &'a [Value<F>],
    id: NodeId,
) -> std::result::Result<ArrayView2<'a, F>, NodeId> {
    match &values[id] {
        Value::Owned(a) => Ok(a.0.view()),
        v @ Value::Borrowed(_) => Ok(v.borrowed().expect("a borrowed value")),
        Value::Released(lost) => Err(*lost),
        Value::Alias { of, map } => Ok(map.apply(view_of(values, *of)?)),
    }
}

/// The rows and columns of node `of` (of shape `shape`) that node `id`, a slice of it,
/// views: the lanes `id` recorded, or every row and column where the slice covered the
/// whole of a view and was recorded as that view's own map instead (`record_alias`).
pub(crate) fn slice_lanes<F: Float>(
    values: &[Value<F>],
    id: NodeId,
    of: NodeId,
    shape: (usize, usize),
) -> (Lane, Lane) {
    match values[id] {
        Value::Alias {
            of: source,
            map:
                ViewMap::Strided {
                    rows,
                    cols,
                    transposed: false,
                },
        } if source == of => (rows, cols),
        _ => (Lane::all(shape.0), Lane::all(shape.1)),
    }
}

/// The node whose storage `id`'s value is (itself, unless `id` is a view).
pub(crate) fn source<F: Float>(values: &[Value<F>], id: NodeId) -> NodeId {
    let mut id = id;
    while let Value::Alias { of, .. } = values[id] {
        id = of;
    }
    id
}
