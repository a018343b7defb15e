//! The Wengert list: nodes in creation order, and `backward`, which replays them in reverse.
//!
//! Creation order is a topological order (an op can only take tensors that already exist),
//! so backward needs no sort, no hash map and no visited set: it walks `nodes` from the
//! root down to 0, hands each rule the gradient of its output and lets the rule add its
//! contributions into the gradient slots of its inputs ([`Ctx`](crate::grad::Ctx)).
//!
//! A rule reads the values it needs straight from the tape: an op declares at record time
//! which of its inputs (and whether its output) its rule will read ([`Saves`]), so saving
//! never copies. Without `retain_graph`, backward releases each value as soon as the last
//! rule that reads it has run, frees every gradient slot as it is consumed, and drops each
//! rule (and whatever it owns) after running it.

use std::cell::{Cell, RefCell};
use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::{Array2, ArrayBase, ArrayView2, Axis, Data, Ix1, Ix2};

use crate::error::{Error, ErrorKind, Result};
use crate::grad::{Ctx, Gradients, Params, ViewKey};
use crate::{Float, Tensor};

/// Index of a node on its tape.
pub(crate) type NodeId = usize;

/// A VJP rule that owns saved state (the fused losses' intermediates): given
/// `G = ∂L/∂Y` for the node's output, add `∂L/∂Xₖ` into the gradient slot of every input
/// `k` that needs one (through `ctx`).
///
/// A rule is a pure function of what it saved and `G` (it takes `&self`), which is what
/// makes `retain_graph` possible and keeps the door open for recording rules themselves
/// (higher order). Rules here compute on plain arrays: first order only.
pub(crate) trait Backward<F: Float> {
    fn backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>);
}

/// The signature of a rule without owned state: `(param, G, ctx)`, where `param` is the
/// op's one scalar (the `s` of `mul_scalar`, the `1/n` of `mean`; unused by most).
pub(crate) type RuleFn<F> = fn(F, Array2<F>, &mut Ctx<'_, '_, F>);

/// A recorded VJP rule. Most rules are plain functions of one scalar parameter: no
/// allocation and no virtual call per op, which is most of what a tiny op costs. Rules
/// that own saved arrays are boxed.
pub(crate) enum Rule<F> {
    Fn(RuleFn<F>, F),
    Boxed(Box<dyn Backward<F>>),
}

impl<F: Float> Rule<F> {
    /// A rule that is a plain function.
    pub(crate) fn func(f: RuleFn<F>) -> Self {
        Rule::Fn(f, F::zero())
    }

    fn run(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
        match self {
            Rule::Fn(f, param) => f(*param, g, ctx),
            Rule::Boxed(rule) => rule.backward(g, ctx),
        }
    }
}

/// Which values a rule will read during backward: inputs by position (bits 0..7) and the
/// op's own output (bit 7). The engine keeps exactly these alive until the rule has run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Saves(u8);

impl Saves {
    const OUTPUT: u8 = 1 << 7;

    /// Saves nothing (add, sum, transpose).
    pub(crate) const NONE: Saves = Saves(0);

    /// Saves the op's output (sigmoid, tanh, exp, ...).
    pub(crate) const fn output() -> Saves {
        Saves(Self::OUTPUT)
    }

    /// Also saves the op's output when `cond` holds.
    pub(crate) const fn output_if(self, cond: bool) -> Saves {
        if cond {
            Saves(self.0 | Self::OUTPUT)
        } else {
            self
        }
    }

    /// Also saves input `k` when `cond` holds (matmul saves X only if W needs a gradient).
    pub(crate) const fn input_if(self, k: usize, cond: bool) -> Saves {
        assert!(k < 7, "a rule can save at most inputs 0..7");
        if cond { Saves(self.0 | (1 << k)) } else { self }
    }

    /// The node ids saved, given the node and its inputs.
    fn ids(self, node: NodeId, inputs: &[NodeId]) -> impl Iterator<Item = NodeId> + '_ {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let k = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some(if k == 7 { node } else { inputs[k] })
        })
    }
}

/// Where a node's value lives.
pub(crate) enum Value<'t, F> {
    /// Computed by an op, or moved in by the user.
    Owned(Array2<F>),
    /// Borrowed from the caller (a model's parameters): no copy.
    Borrowed(ArrayView2<'t, F>),
    /// The storage of another node, possibly transposed: `transpose` and `detach` cost no
    /// copy. `of` is never itself an alias.
    Alias { of: NodeId, transposed: bool },
    /// Released by a backward pass: the value of the node given (this one, or for a result
    /// computed after backward from a released input, that input's source).
    Released(NodeId),
}

/// What a tape records for every tensor.
pub(crate) struct Node<F> {
    pub(crate) op: &'static str,
    pub(crate) location: &'static Location<'static>,
    pub(crate) shape: (usize, usize),
    /// Range into `Inner::input_ids`.
    inputs: (u32, u32),
    pub(crate) requires_grad: bool,
    pub(crate) leaf: bool,
    saves: Saves,
    rule: Option<Rule<F>>,
}

pub(crate) struct Inner<'t, F> {
    pub(crate) nodes: Vec<Node<F>>,
    pub(crate) values: Vec<Value<'t, F>>,
    input_ids: Vec<NodeId>,
    /// Borrowed leaves that require a gradient, by storage: a parameter put on the tape
    /// again is the same leaf ([`Tape::param`]).
    params: Params,
    /// Set by a backward pass that did not retain the graph.
    consumed: Option<&'static Location<'static>>,
}

impl<F> Inner<'_, F> {
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

/// The view of node `id`'s value, or `Err(lost)` if it was released, `lost` being the node
/// whose value backward released.
pub(crate) fn view_of<'a, F>(
    values: &'a [Value<'_, F>],
    id: NodeId,
) -> std::result::Result<ArrayView2<'a, F>, NodeId> {
    let plain = |v: &'a Value<'_, F>, id: NodeId| match v {
        Value::Owned(a) => Ok(a.view()),
        Value::Borrowed(v) => Ok(v.view()),
        Value::Released(lost) => Err(*lost),
        Value::Alias { .. } => Err(id),
    };
    match &values[id] {
        Value::Alias { of, transposed } => {
            let v = plain(&values[*of], *of)?;
            Ok(if *transposed { v.reversed_axes() } else { v })
        }
        v => plain(v, id),
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
    inner: RefCell<Inner<'t, F>>,
    grad_enabled: Cell<bool>,
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

/// Options for [`Tape::backward_with`].
#[derive(Clone, Debug)]
pub struct BackwardOptions<F> {
    retain_graph: bool,
    seed: Option<Array2<F>>,
    /// Non-leaf tensors whose gradient the caller wants: (tape id, node id).
    keep: Vec<(u64, NodeId)>,
    /// An earlier step's gradients, whose buffers this pass writes into.
    reuse: Option<Gradients<F>>,
}

impl<F> Default for BackwardOptions<F> {
    fn default() -> Self {
        BackwardOptions {
            retain_graph: false,
            seed: None,
            keep: Vec::new(),
            reuse: None,
        }
    }
}

impl<F> BackwardOptions<F> {
    /// The defaults: seed `∂L/∂L = 1` for a 1 × 1 root, release the graph as it is consumed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keep every value and rule, so that backward can run again on the same tape.
    pub fn retain_graph(mut self, retain: bool) -> Self {
        self.retain_graph = retain;
        self
    }

    /// Start from `seed = ∂L/∂root` instead of 1: backward from a non-scalar root computes
    /// the vector-Jacobian product with `seed`. It must have the root's shape.
    pub fn seed(mut self, seed: Array2<F>) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Also return the gradient of the intermediate tensor `t` (PyTorch's `retain_grad`):
    /// `∂L/∂t` is copied out when backward reaches `t`, and [`Gradients::get`] finds it.
    /// Leaves need no such request.
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::{BackwardOptions, Tape};
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[1.0, 2.0]]);
    /// let h = x.mul_scalar(3.0);
    /// let loss = h.square().sum();
    /// let grads = tape.backward_with(loss, BackwardOptions::new().retain_grad(h)).unwrap();
    /// assert_eq!(grads.get(h).unwrap(), &array![[6.0, 12.0]]); // 2h
    /// ```
    pub fn retain_grad(mut self, t: Tensor<'_, F>) -> Self
    where
        F: Float,
    {
        self.keep.push((t.tape.id(), t.id));
        self
    }

    /// Write the parameters' gradients into the buffers of `previous` (an earlier step's
    /// [`Gradients`]) instead of allocating new ones: a matmul's weight gradient becomes
    /// one GEMM with beta = 0 into last step's buffer. Buffers are matched to parameters
    /// by storage and shape ([`Gradients::wrt`]); the values are overwritten, never added
    /// to. Training loops that keep their gradients from one step to the next allocate no
    /// parameter-sized buffer after the first step.
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::{BackwardOptions, Tape};
    ///
    /// let w = array![[1.0, 2.0], [3.0, 4.0]];
    /// let mut grads = None;
    /// for _ in 0..3 {
    ///     let tape = Tape::new();
    ///     let loss = tape.constant(array![[1.0, -1.0]]).matmul(tape.param(&w)).sum();
    ///     let opts = match grads.take() {
    ///         Some(previous) => BackwardOptions::new().reuse(previous),
    ///         None => BackwardOptions::new(),
    ///     };
    ///     grads = Some(tape.backward_with(loss, opts).unwrap());
    /// }
    /// assert_eq!(grads.unwrap().wrt(&w).unwrap(), &array![[1.0, 1.0], [-1.0, -1.0]]);
    /// ```
    pub fn reuse(mut self, previous: Gradients<F>) -> Self {
        self.reuse = Some(previous);
        self
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
pub struct LeafData<'t, F>(Value<'t, F>);

impl<'t, F> From<Array2<F>> for LeafData<'t, F> {
    fn from(a: Array2<F>) -> Self {
        LeafData(Value::Owned(a))
    }
}

impl<'t, F> From<ArrayView2<'t, F>> for LeafData<'t, F> {
    fn from(v: ArrayView2<'t, F>) -> Self {
        LeafData(Value::Borrowed(v))
    }
}

impl<'t, F, S: Data<Elem = F>> From<&'t ArrayBase<S, Ix2>> for LeafData<'t, F> {
    fn from(a: &'t ArrayBase<S, Ix2>) -> Self {
        LeafData(Value::Borrowed(a.view()))
    }
}

impl<'t, F, S: Data<Elem = F>> From<&'t ArrayBase<S, Ix1>> for LeafData<'t, F> {
    fn from(a: &'t ArrayBase<S, Ix1>) -> Self {
        LeafData(Value::Borrowed(a.view().insert_axis(Axis(0))))
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
        fn vec<T>(n: usize) -> Vec<T> {
            let mut v = Vec::new();
            let _ = v.try_reserve_exact(n);
            v
        }
        Tape {
            inner: RefCell::new(Inner {
                nodes: vec(nodes),
                values: vec(nodes),
                input_ids: vec(nodes.saturating_mul(2)),
                params: Params::with_capacity(8),
                consumed: None,
            }),
            grad_enabled: Cell::new(true),
            id: NEXT_TAPE.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// A leaf that requires a gradient (a parameter). Borrowed data is not copied; its
    /// gradient can also be found by the array itself, [`Gradients::wrt`].
    ///
    /// A parameter is one leaf however often it goes on the tape: borrowing an array that
    /// is already a parameter of this tape (the same storage, shape and strides) returns
    /// the same tensor, and its transpose returns that tensor's [`Tensor::t`]. So a layer
    /// applied twice, or weights tied between two uses, get the sum of the gradients of
    /// every use. Owned data (`tape.param(w.clone())`) is a new leaf each time, which
    /// [`Gradients::wrt`] cannot find by the original array.
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
            Value::Owned(a) => a.dim(),
            Value::Borrowed(v) => v.dim(),
            Value::Alias { .. } | Value::Released(_) => unreachable!("leaf data is an array"),
        };
        let requires_grad = requires_grad && self.grad_enabled.get();
        let key = match &value {
            Value::Borrowed(v) if requires_grad => Some(ViewKey::of(v)),
            _ => None,
        };
        if let Some(key) = key {
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
        struct Restore<'a>(&'a Cell<bool>, bool);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                self.0.set(self.1);
            }
        }
        let _restore = Restore(&self.grad_enabled, self.grad_enabled.replace(false));
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
            Value::Owned(a) => Some(a.len()),
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

    /// Backward from a scalar (1 × 1) loss: the gradient of `loss` with respect to every
    /// leaf that requires one. Releases the graph as it goes (see [`BackwardOptions`] to
    /// keep it, or to start from a non-scalar root with an explicit seed).
    ///
    /// A value used by several ops receives the sum of the gradients along every path.
    ///
    /// # Errors
    ///
    /// `NotScalar` if `loss` is not 1 × 1, `NoGradient` if it depends on no tensor that
    /// requires a gradient, `BackwardTwice` if a backward without `retain_graph` already ran
    /// on this tape, `ForeignTensor` if `loss` is from another tape.
    #[track_caller]
    pub fn backward(&self, loss: Tensor<'t, F>) -> Result<Gradients<F>> {
        self.backward_with(loss, BackwardOptions::new())
    }

    /// Backward with options: an explicit seed `∂L/∂root`, and/or `retain_graph`.
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::{BackwardOptions, Tape};
    ///
    /// // Seed 000: Y = X·W on two data points, G = ∂L/∂Y given.
    /// let x = array![[1.0, 2.0], [3.0, 4.0]];
    /// let w = array![[0.5], [-1.0]];
    /// let g = array![[0.1], [0.2]];
    /// let tape = Tape::new();
    /// let (x_t, w_t) = (tape.param(&x), tape.param(&w));
    /// let y = x_t.matmul(w_t);
    /// let opts = BackwardOptions::new().seed(g.clone()).retain_graph(true);
    /// let grads = tape.backward_with(y, opts).unwrap();
    /// assert_eq!(grads.get(w_t).unwrap(), &x.t().dot(&g)); // dW = Xᵀ·G
    /// assert_eq!(grads.get(x_t).unwrap(), &g.dot(&w.t())); // dX = G·Wᵀ
    /// // retained: a second pass gives the same gradients
    /// let again = tape.backward_with(y, BackwardOptions::new().seed(g)).unwrap();
    /// assert_eq!(again.get(w_t), grads.get(w_t));
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Tape::backward`], and `SeedShape` if the seed does not have the root's shape.
    #[track_caller]
    pub fn backward_with(
        &self,
        root: Tensor<'t, F>,
        opts: BackwardOptions<F>,
    ) -> Result<Gradients<F>> {
        let location = Location::caller();
        let fail = |kind| Err(Error::new("backward", kind, location));
        if !std::ptr::eq(root.tape, self) {
            return fail(ErrorKind::ForeignTensor);
        }
        let seed = match opts.seed {
            Some(seed) if seed.dim() != root.shape => {
                return fail(ErrorKind::SeedShape {
                    root: root.shape,
                    seed: seed.dim(),
                });
            }
            Some(seed) => seed,
            None if root.shape != (1, 1) => {
                return fail(ErrorKind::NotScalar { shape: root.shape });
            }
            None => Array2::ones((1, 1)),
        };
        let mut inner = self.inner.borrow_mut();
        let Inner {
            nodes,
            values,
            input_ids,
            consumed,
            params,
            ..
        } = &mut *inner;
        if let Some(first) = *consumed {
            return fail(ErrorKind::BackwardTwice { first });
        }
        if !root.requires_grad {
            return fail(ErrorKind::NoGradient);
        }
        let retain = opts.retain_graph;
        // the root stays readable after backward, also when it is a view of another node
        let root_source = source(values, root.id);
        let keep: Vec<NodeId> = opts
            .keep
            .iter()
            .filter(|k| k.0 == self.id)
            .map(|k| k.1)
            .collect();
        let mut kept = Vec::new();
        let n = root.id + 1;
        let mut slots: Vec<Option<Array2<F>>> = Vec::with_capacity(n);
        slots.resize_with(n, || None);
        slots[root.id] = Some(seed);
        let mut spare = match opts.reuse {
            Some(previous) => previous.into_spare(nodes, values, n),
            None => Vec::new(),
        };
        let inputs_of = |node: &Node<F>| &input_ids[node.inputs.0 as usize..node.inputs.1 as usize];

        // How many rules still have to read each value; values no rule reads go now.
        let mut uses = Vec::new();
        if !retain {
            uses.resize(n, 0u32);
            for (id, node) in nodes[..n]
                .iter()
                .enumerate()
                .filter(|(_, node)| node.rule.is_some())
            {
                for s in node.saves.ids(id, inputs_of(node)) {
                    uses[source(values, s)] += 1;
                }
            }
            for id in 0..n {
                release_if_unused(nodes, values, &uses, id, root_source);
            }
        }

        for id in (0..n).rev() {
            if nodes[id].rule.is_none() {
                continue;
            }
            let g = slots[id].take();
            if let Some(g) = &g {
                if keep.contains(&id) {
                    kept.push((id, g.clone()));
                }
            }
            let owned_rule = if retain { None } else { nodes[id].rule.take() };
            if let Some(g) = g {
                let rule = match &owned_rule {
                    Some(rule) => rule,
                    None => nodes[id].rule.as_ref().expect("checked above"),
                };
                let mut ctx = Ctx {
                    nodes,
                    values,
                    inputs: inputs_of(&nodes[id]),
                    output: id,
                    slots: &mut slots,
                    spare: &mut spare,
                };
                rule.run(g, &mut ctx);
            }
            if let Some(rule) = owned_rule {
                drop(rule);
                for s in nodes[id].saves.ids(id, inputs_of(&nodes[id])) {
                    let s = source(values, s);
                    uses[s] -= 1;
                    release_if_unused(nodes, values, &uses, s, root_source);
                }
            }
        }
        if !retain {
            *consumed = Some(location);
        }
        Ok(Gradients::collect(
            self.id, nodes, values, slots, spare, kept, params,
        ))
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
        let value = value.map_or_else(Value::Released, Value::Owned);
        let requires_grad = rule.is_some();
        self.push(op, value, shape, inputs, rule, requires_grad, location)
    }

    /// Records a result that shares the storage of `of`, transposed or not. A `detached`
    /// result is a new leaf: it records no input, so no gradient flows back through it.
    pub(crate) fn record_alias(
        &'t self,
        op: &'static str,
        of: Tensor<'t, F>,
        transposed: bool,
        detached: bool,
        rule: Option<(Saves, Rule<F>)>,
        location: &'static Location<'static>,
    ) -> Tensor<'t, F> {
        let value = match self.inner.borrow().values[of.id] {
            Value::Alias { of, transposed: t } => Value::Alias {
                of,
                transposed: t != transposed,
            },
            _ => Value::Alias {
                of: of.id,
                transposed,
            },
        };
        let (r, c) = of.shape;
        let shape = if transposed { (c, r) } else { (r, c) };
        let inputs: &[Tensor<'t, F>] = if detached { &[] } else { &[of] };
        let requires_grad = rule.is_some();
        self.push(op, value, shape, inputs, rule, requires_grad, location)
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &'t self,
        op: &'static str,
        value: Value<'t, F>,
        shape: (usize, usize),
        inputs: &[Tensor<'t, F>],
        rule: Option<(Saves, Rule<F>)>,
        requires_grad: bool,
        location: &'static Location<'static>,
    ) -> Tensor<'t, F> {
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
        Tensor {
            tape: self,
            id,
            shape,
            requires_grad,
        }
    }
}

/// The node whose storage `id`'s value is (itself, unless `id` is an alias).
fn source<F>(values: &[Value<'_, F>], id: NodeId) -> NodeId {
    match values[id] {
        Value::Alias { of, .. } => of,
        _ => id,
    }
}

/// Releases an owned intermediate value that no pending rule reads. Leaves (the caller's
/// data) and the root's storage (the loss, read after backward) stay.
fn release_if_unused<F>(
    nodes: &[Node<F>],
    values: &mut [Value<'_, F>],
    uses: &[u32],
    id: NodeId,
    root_source: NodeId,
) {
    if uses[id] == 0 && id != root_source && !nodes[id].leaf {
        if let Value::Owned(_) = values[id] {
            values[id] = Value::Released(id);
        }
    }
}
