//! The Wengert list: nodes in creation order, each with its value, its inputs and its VJP
//! rule. Backward, which replays them in reverse, is in `backward.rs`.

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::{Array2, ArrayBase, ArrayView2, Axis, Data, Ix1, Ix2, RawArrayView};

use crate::error::{Error, ErrorKind};
use crate::gradients::{Params, ViewKey};
use crate::pool::{Buffer, Recycled};
use crate::rule::{Rule, Saves};
use crate::{Float, Tensor};

mod view;
pub(crate) use view::{Lane, ViewMap, slice_lanes, source, view_of};

/// Index of a node on its tape.
pub(crate) type NodeId = usize;

/// Where a node's value lives.
///
/// No lifetime: a borrowed leaf is kept as a raw view, valid for the tape's lifetime `'t`
/// (a leaf borrows its data for `'t`, [`Tape::leaf`]), so that the list of values is a
/// [`Recycled`] vector whose memory the next tape reuses (a type with a lifetime could
/// not be handed back when the tape drops).
pub(crate) enum Value<F: Float> {
    /// Computed by an op, or moved in by the user. Its buffer goes to the thread's pool
    /// when the value is released or the tape dropped ([`Buffer`]).
    Owned(Buffer<F>),
    /// Borrowed from the caller (a model's parameters) for the tape's lifetime: no copy.
    /// Read it through [`Value::borrowed`].
    Borrowed(RawArrayView<F, Ix2>),
    /// A view of another node's value (which may itself be a view): `t`, `detach`, slices
    /// and reshapes of contiguous values cost no copy.
    Alias { of: NodeId, map: ViewMap },
    /// Released by a backward pass: the value of the node given (this one, or for a result
    /// computed after backward from a released input, that input's source).
    Released(NodeId),
}

/// What a tape records for every tensor.
pub(crate) struct Node<F: Float> {
    pub(crate) op: &'static str,
    pub(crate) location: &'static Location<'static>,
    pub(crate) shape: (usize, usize),
    /// Range into `Inner::input_ids`.
    pub(crate) inputs: (u32, u32),
    pub(crate) requires_grad: bool,
    pub(crate) leaf: bool,
    pub(crate) saves: Saves,
    pub(crate) rule: Option<Rule<F>>,
}

pub(crate) struct Inner<'t, F: Float> {
    pub(crate) nodes: Recycled<Node<F>>,
    pub(crate) values: Recycled<Value<F>>,
    pub(crate) input_ids: Recycled<NodeId>,
    /// The data borrowed leaves view, for `'t`.
    pub(crate) borrows: PhantomData<&'t F>,
    /// Borrowed leaves that require a gradient, by storage: a parameter put on the tape
    /// again is the same leaf ([`Tape::param`]).
    pub(crate) params: Params,
    /// Set by a backward pass that did not retain the graph.
    pub(crate) consumed: Option<Consumed>,
    /// What naming and the observation modes keep ([`crate::inspect`]); allocated on
    /// first use, so a tape that uses none of them carries one null pointer.
    pub(crate) observed: Option<Box<Observed>>,
}

/// Why a tape refuses another backward pass (or `Tape::grad`, or `explain`).
#[derive(Clone, Copy)]
pub(crate) enum Consumed {
    /// A pass that did not retain the graph ran (or failed) there: it released the values
    /// and rules it used.
    By(&'static Location<'static>),
    /// A pass called there stopped when the rule of this op panicked: the rules it had
    /// run are gone.
    Interrupted(&'static Location<'static>, &'static str),
}

impl Consumed {
    /// The error for `op`, called at `location`, on a tape consumed this way.
    pub(crate) fn error(self, op: &'static str, location: &'static Location<'static>) -> Error {
        let kind = match self {
            Consumed::By(first) => ErrorKind::BackwardTwice { first },
            Consumed::Interrupted(first, op) => ErrorKind::Interrupted { first, op },
        };
        Error::new(op, kind, location)
    }
}

/// Tensor names and the observation modes' state.
#[derive(Default)]
pub(crate) struct Observed {
    /// Names given to tensors ([`Tensor::named`]), latest last.
    pub(crate) names: Vec<(NodeId, Box<str>)>,
    /// The first NaN or infinity anomaly detection found in the forward pass.
    pub(crate) anomaly: Option<Error>,
    /// When profiling, the end of the last record (the start of the next op's time).
    pub(crate) last_record: Option<std::time::Instant>,
    /// When profiling, the layer whose forward pass runs now (0: none), as the profile
    /// numbers layers ([`crate::nn::forward_child`]).
    pub(crate) layer: u32,
    /// When profiling, the layer of every node recorded inside one, by node id (ascending).
    pub(crate) node_layers: Vec<(NodeId, u32)>,
}

impl Observed {
    /// The layer node `id` was recorded in (0: none).
    pub(crate) fn layer_of(&self, id: NodeId) -> u32 {
        match self.node_layers.binary_search_by_key(&id, |&(n, _)| n) {
            Ok(i) => self.node_layers[i].1,
            Err(_) => 0,
        }
    }
}

impl<F: Float> Value<F> {
    /// The view of a borrowed leaf, for as long as `self` is borrowed.
    pub(crate) fn borrowed(&self) -> Option<ArrayView2<'_, F>> {
        match self {
            // SAFETY: a borrowed leaf's data is borrowed for the tape's lifetime `'t`
            // (`LeafData<'t, F>`), and a value is only read through its tape, which cannot
            // be used after `'t` ends: the view lives no longer than the tape's borrow.
            Value::Borrowed(raw) => Some(unsafe { (*raw).deref_into_view() }),
            _ => None,
        }
    }
}

impl<F: Float> Node<F> {
    /// The node's length along `axis`.
    pub(crate) fn shape_along(&self, axis: Axis) -> usize {
        if axis == Axis(0) {
            self.shape.0
        } else {
            self.shape.1
        }
    }
}

impl<F: Float> Inner<'_, F> {
    /// The names given to tensors, latest last.
    pub(crate) fn names(&self) -> &[(NodeId, Box<str>)] {
        self.observed.as_ref().map_or(&[], |o| &o.names)
    }

    /// The observation state, allocated if this is its first use.
    pub(crate) fn observed(&mut self) -> &mut Observed {
        self.observed.get_or_insert_with(Box::default)
    }

    /// The input ids of `node`.
    pub(crate) fn inputs_of(&self, node: &Node<F>) -> &[NodeId] {
        &self.input_ids[node.inputs.0 as usize..node.inputs.1 as usize]
    }

    /// The error for reading node `id`, whose value (or whose source's) was released as
    /// `lost`'s ([`view_of`]).
    pub(crate) fn released(
        &self,
        id: NodeId,
        lost: NodeId,
        location: &'static Location<'static>,
    ) -> Error {
        let node = &self.nodes[lost];
        let kind = ErrorKind::Released {
            producer: node.op,
            created_at: node.location,
        };
        Error::new(self.nodes[id].op, kind, location)
    }
}

static NEXT_TAPE: AtomicU64 = AtomicU64::new(0);

/// A tape: records tensor operations as they run, then replays their VJP rules in reverse.
///
/// A tape lives for one step. Leaves borrow their data for the tape's lifetime `'t`
/// ([`Tape::param`], [`Tape::constant`]), so a model's parameters go on the tape without a
/// copy. Tensors are small `Copy` handles into the tape ([`Tensor`]).
///
/// # Examples
///
/// ```
/// use ndarray::array;
/// use tapegrad::Tape;
///
/// let w = array![[0.5, -1.0], [2.0, 0.25]];
/// let x = array![[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]];
///
/// let tape = Tape::new();
/// let w_t = tape.param(&w); // borrowed: no copy
/// let x_t = tape.constant(&x); // no gradient wanted
/// let loss = x_t.matmul(w_t).sigmoid().mean();
/// let grads = tape.backward(loss).unwrap();
/// assert_eq!(grads.get(w_t).unwrap().dim(), (2, 2));
/// assert!(grads.get(x_t).is_none());
/// ```
pub struct Tape<'t, F: Float> {
    pub(crate) inner: RefCell<Inner<'t, F>>,
    grad_enabled: Cell<bool>,
    /// Observation modes switched on ([`crate::inspect`]'s `ANOMALY`, `PROFILE`): 0 in
    /// normal use, and then recording and backward take their plain path.
    pub(crate) modes: Cell<u8>,
    id: u64,
}

impl<F: Float> Default for Tape<'_, F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: Float> std::fmt::Debug for Tape<'_, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tape")
            .field("id", &self.id)
            .field("len", &self.len())
            .finish()
    }
}

/// What a tape holds, for memory accounting ([`Tape::stats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TapeStats {
    /// Tensors recorded.
    pub nodes: usize,
    /// Values the tape owns (op results and moved-in leaves), not counting borrowed leaves,
    /// views (transposes, detached tensors) and released values.
    pub owned_values: usize,
    /// Bytes of those values.
    pub owned_bytes: usize,
    /// VJP rules still held.
    pub rules: usize,
}

/// Data a leaf tensor can be made from: an owned matrix (moved onto the tape) or a borrowed
/// one (no copy). A 1-D array becomes a 1 × n row, the shape of a bias.
pub struct LeafData<'t, F: Float>(Value<F>, PhantomData<&'t F>);

impl<'t, F: Float> LeafData<'t, F> {
    fn borrowed(v: ArrayView2<'t, F>) -> Self {
        LeafData(Value::Borrowed(v.raw_view()), PhantomData)
    }
}

impl<'t, F: Float> From<Array2<F>> for LeafData<'t, F> {
    fn from(a: Array2<F>) -> Self {
        LeafData(Value::Owned(Buffer(a)), PhantomData)
    }
}

impl<'t, F: Float> From<ArrayView2<'t, F>> for LeafData<'t, F> {
    fn from(v: ArrayView2<'t, F>) -> Self {
        LeafData::borrowed(v)
    }
}

impl<'t, F: Float, S: Data<Elem = F>> From<&'t ArrayBase<S, Ix2>> for LeafData<'t, F> {
    fn from(a: &'t ArrayBase<S, Ix2>) -> Self {
        LeafData::borrowed(a.view())
    }
}

impl<'t, F: Float, S: Data<Elem = F>> From<&'t ArrayBase<S, Ix1>> for LeafData<'t, F> {
    fn from(a: &'t ArrayBase<S, Ix1>) -> Self {
        LeafData::borrowed(a.view().insert_axis(Axis(0)))
    }
}

impl<'t, F: Float> Tape<'t, F> {
    /// An empty tape, recording with gradients enabled, with room for 128 tensors before
    /// it grows.
    pub fn new() -> Self {
        Self::with_capacity(128)
    }

    /// An empty tape with room for `nodes` tensors before it grows. The capacity is a
    /// hint: one that cannot be allocated (`usize::MAX`) is ignored, never a panic.
    pub fn with_capacity(nodes: usize) -> Self {
        Tape {
            inner: RefCell::new(Inner {
                nodes: Recycled::with_capacity(nodes),
                values: Recycled::with_capacity(nodes),
                input_ids: Recycled::with_capacity(nodes.saturating_mul(2)),
                borrows: PhantomData,
                params: Params::default(),
                consumed: None,
                observed: None,
            }),
            grad_enabled: Cell::new(true),
            modes: Cell::new(crate::inspect::profile::modes_for_new_tape()),
            id: NEXT_TAPE.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// A leaf that requires a gradient (a parameter). Borrowed data is not copied; its
    /// gradient can also be found by the array itself, [`Gradients::wrt`](crate::Gradients::wrt).
    ///
    /// A parameter is one leaf however often it goes on the tape: borrowing an array that
    /// is already a parameter of this tape (the same storage, shape and strides) returns
    /// the same tensor, and its transpose returns that tensor's [`Tensor::t`]. So a layer
    /// applied twice, or weights tied between two uses, get the sum of the gradients of
    /// every use. Owned data (`tape.param(w.clone())`) is a new leaf each time, which
    /// [`Gradients::wrt`](crate::Gradients::wrt) cannot find by the original array.
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let w = array![[2.0]];
    /// let tape = Tape::new();
    /// let x = tape.constant(array![[3.0]]);
    /// // the same weight applied twice: y = (x·w)·w, dy/dw = 2·x·w = 12
    /// let y = x.matmul(tape.param(&w)).matmul(tape.param(&w));
    /// let grads = tape.backward(y).unwrap();
    /// assert_eq!(grads.wrt(&w).unwrap()[[0, 0]], 12.0);
    /// ```
    #[track_caller]
    pub fn param(&'t self, data: impl Into<LeafData<'t, F>>) -> Tensor<'t, F> {
        self.leaf(data, true)
    }

    /// A leaf that needs no gradient (inputs, targets). Costs no backward work.
    #[track_caller]
    pub fn constant(&'t self, data: impl Into<LeafData<'t, F>>) -> Tensor<'t, F> {
        self.leaf(data, false)
    }

    /// A 1 × 1 constant.
    #[track_caller]
    pub fn scalar(&'t self, x: F) -> Tensor<'t, F> {
        self.leaf(Array2::from_elem((1, 1), x), false)
    }

    /// A leaf, with or without a gradient. Inside [`Tape::no_grad`] no leaf requires one.
    #[track_caller]
    pub fn leaf(&'t self, data: impl Into<LeafData<'t, F>>, requires_grad: bool) -> Tensor<'t, F> {
        let value = data.into().0;
        let shape = match &value {
            Value::Owned(a) => a.0.dim(),
            Value::Borrowed(v) => v.dim(),
            Value::Alias { .. } | Value::Released(_) => unreachable!("leaf data is an array"),
        };
        let requires_grad = requires_grad && self.grad_enabled.get();
        let key = match &value {
            Value::Borrowed(v) if requires_grad => Some(ViewKey::of_raw(v)),
            _ => None,
        };
        // (an empty view holds no storage to share: it is always a new leaf)
        if let Some(key) = key.filter(|_| shape.0 > 0 && shape.1 > 0) {
            let found = self.inner.borrow_mut().params.find(key);
            match found {
                Some((id, false)) => return self.tensor(id),
                Some((id, true)) => return self.tensor(id).t(),
                None => {}
            }
        }
        let t = self.push(
            "leaf",
            value,
            shape,
            &[],
            None,
            requires_grad,
            Location::caller(),
        );
        if let Some(key) = key {
            let elem = std::mem::size_of::<F>();
            self.inner.borrow_mut().params.insert(key, t.id, elem);
        }
        t
    }

    /// The handle of node `id`.
    pub(crate) fn tensor(&'t self, id: NodeId) -> Tensor<'t, F> {
        let inner = self.inner.borrow();
        let node = &inner.nodes[id];
        Tensor {
            tape: self,
            id,
            shape: node.shape,
            requires_grad: node.requires_grad,
        }
    }

    /// Runs `f` with recording of gradients switched off: ops inside record no rule and save
    /// nothing, and their results require no gradient (PyTorch's `torch.no_grad`).
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let w = array![[1.0, 2.0]];
    /// let tape = Tape::new();
    /// let w_t = tape.param(&w);
    /// let y = tape.no_grad(|| w_t.square().sum());
    /// assert!(!y.requires_grad());
    /// ```
    pub fn no_grad<R>(&self, f: impl FnOnce() -> R) -> R {
        self.with_grad_enabled(false, f)
    }

    /// Runs `f` with recording switched on or off, restoring the setting afterwards.
    pub(crate) fn with_grad_enabled<R>(&self, enabled: bool, f: impl FnOnce() -> R) -> R {
        struct Restore<'a>(&'a Cell<bool>, bool);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                self.0.set(self.1);
            }
        }
        let _restore = Restore(&self.grad_enabled, self.grad_enabled.replace(enabled));
        f()
    }

    /// Whether ops record rules now (false inside [`Tape::no_grad`]).
    pub fn is_grad_enabled(&self) -> bool {
        self.grad_enabled.get()
    }

    /// Number of tensors recorded.
    pub fn len(&self) -> usize {
        self.inner.borrow().nodes.len()
    }

    /// Whether nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the tape holds now: owned values and their bytes, and rules. After a backward
    /// without `retain_graph`, only leaves, the root and values no rule needed that were
    /// recorded after the root remain.
    pub fn stats(&self) -> TapeStats {
        let inner = self.inner.borrow();
        let owned = inner.values.iter().filter_map(|v| match v {
            Value::Owned(a) => Some(a.0.len()),
            _ => None,
        });
        let (owned_values, elements) = owned.fold((0, 0), |(n, e), len| (n + 1, e + len));
        TapeStats {
            nodes: inner.nodes.len(),
            owned_values,
            owned_bytes: elements * std::mem::size_of::<F>(),
            rules: inner.nodes.iter().filter(|n| n.rule.is_some()).count(),
        }
    }

    /// The id that ties tensors and gradients to this tape.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn inner(&self) -> std::cell::Ref<'_, Inner<'t, F>> {
        self.inner.borrow()
    }

    /// Whether an op on `inputs` must record a rule: gradients are on and some input
    /// requires one. When false the op records no rule and saves nothing.
    pub(crate) fn track(&self, inputs: &[Tensor<'t, F>]) -> bool {
        self.grad_enabled.get() && inputs.iter().any(|t| t.requires_grad)
    }

    /// Moves the value of `t` out of the tape (which must not read it again), or copies it
    /// when `t` is a view or a leaf.
    pub(crate) fn take_value(&self, t: Tensor<'_, F>) -> Array2<F> {
        let mut inner = self.inner.borrow_mut();
        let leaf = inner.nodes[t.id].leaf;
        if let (Value::Owned(b), false) = (&mut inner.values[t.id], leaf) {
            return std::mem::replace(&mut b.0, Array2::zeros((0, 0)));
        }
        let view = view_of(&inner.values, t.id).expect("a value the block just computed");
        crate::kernels::copy(view)
    }

    /// Runs `f` on the value of `a`, or returns `Err(lost)` if it was released.
    pub(crate) fn read1<R>(
        &self,
        a: NodeId,
        f: impl FnOnce(ArrayView2<'_, F>) -> R,
    ) -> std::result::Result<R, NodeId> {
        let inner = self.inner.borrow();
        Ok(f(view_of(&inner.values, a)?))
    }

    /// Runs `f` on the values of `a` and `b`, or returns `Err(lost)` if one was released.
    pub(crate) fn read2<R>(
        &self,
        a: NodeId,
        b: NodeId,
        f: impl FnOnce(ArrayView2<'_, F>, ArrayView2<'_, F>) -> R,
    ) -> std::result::Result<R, NodeId> {
        let inner = self.inner.borrow();
        Ok(f(view_of(&inner.values, a)?, view_of(&inner.values, b)?))
    }

    /// Records an op's result. `value` is `Err(lost)` when an input was released: the
    /// result is then released too, and reading it reports `lost`. `rule` is `Some` exactly
    /// when [`Tape::track`] said so.
    pub(crate) fn record(
        &'t self,
        op: &'static str,
        value: std::result::Result<Array2<F>, NodeId>,
        shape: (usize, usize),
        inputs: &[Tensor<'t, F>],
        rule: Option<(Saves, Rule<F>)>,
        location: &'static Location<'static>,
    ) -> Tensor<'t, F> {
        let value = value.map_or_else(Value::Released, |a| Value::Owned(Buffer(a)));
        let requires_grad = rule.is_some();
        self.push(op, value, shape, inputs, rule, requires_grad, location)
    }

    /// Records a result that views the value of `of` through `map` (a transpose, a slice,
    /// a reshape): no copy. A `detached` result is a new leaf: it records no input, so no
    /// gradient flows back through it.
    pub(crate) fn record_alias(
        &'t self,
        op: &'static str,
        of: Tensor<'t, F>,
        map: ViewMap,
        detached: bool,
        rule: Option<(Saves, Rule<F>)>,
        location: &'static Location<'static>,
    ) -> Tensor<'t, F> {
        // The whole of a strided view, transposed or not, is that view of its source
        // transposed or not: aliases of transposes stay one step from their storage.
        let value = match (&self.inner.borrow().values[of.id], map) {
            (
                &Value::Alias {
                    of: source,
                    map:
                        ViewMap::Strided {
                            rows,
                            cols,
                            transposed,
                        },
                },
                ViewMap::Strided { transposed: t, .. },
            ) if map == ViewMap::whole(of.shape, t) => Value::Alias {
                of: source,
                map: ViewMap::Strided {
                    rows,
                    cols,
                    transposed: transposed != t,
                },
            },
            _ => Value::Alias { of: of.id, map },
        };
        let inputs: &[Tensor<'t, F>] = if detached { &[] } else { &[of] };
        let requires_grad = rule.is_some();
        self.push(
            op,
            value,
            map.shape(),
            inputs,
            rule,
            requires_grad,
            location,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &'t self,
        op: &'static str,
        value: Value<F>,
        shape: (usize, usize),
        inputs: &[Tensor<'t, F>],
        rule: Option<(Saves, Rule<F>)>,
        requires_grad: bool,
        location: &'static Location<'static>,
    ) -> Tensor<'t, F> {
        let stamp = self.stamp();
        let mut inner = self.inner.borrow_mut();
        let id = inner.nodes.len();
        let start = inner.input_ids.len() as u32;
        inner.input_ids.extend(inputs.iter().map(|t| t.id));
        let (saves, rule) = match rule {
            Some((saves, rule)) => (saves, Some(rule)),
            None => (Saves::NONE, None),
        };
        inner.nodes.push(Node {
            op,
            location,
            shape,
            inputs: (start, start + inputs.len() as u32),
            requires_grad,
            leaf: inputs.is_empty(),
            saves,
            rule,
        });
        inner.values.push(value);
        drop(inner);
        if self.modes.get() != 0 {
            self.observe_record(id, stamp);
        }
        Tensor {
            tape: self,
            id,
            shape,
            requires_grad,
        }
    }
}
