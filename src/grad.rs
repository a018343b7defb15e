//! Gradients: the slots rules accumulate into during backward ([`Ctx`]), and what
//! backward returns ([`Gradients`]).
//!
//! Gradients accumulate, never overwrite: the first contribution to a slot is moved in
//! (no zero fill, no copy), later ones are added in place, and matmul contributions go
//! straight into an existing buffer through GEMM with beta = 1. Un-broadcasting happens
//! here, once, for every op ([`crate::kernels::sum_to_shape`]).

use ndarray::{Array2, ArrayBase, ArrayView2, Data, Ix2, Zip};

use crate::kernels::{broadcast_shape, gemm, gemm_acc, gemm_into, sum_to_shape};
use crate::tape::{Node, NodeId, Value, view_of};
use crate::{Float, Tensor};

/// What a rule sees during backward: the values it saved and the gradient slots of its
/// inputs, addressed by input position `k`.
pub(crate) struct Ctx<'a, 't, F> {
    pub(crate) nodes: &'a [Node<F>],
    pub(crate) values: &'a [Value<'t, F>],
    pub(crate) inputs: &'a [NodeId],
    pub(crate) output: NodeId,
    pub(crate) slots: &'a mut [Option<Array2<F>>],
    /// Buffers of an earlier step's gradients, by node id, to write first contributions
    /// into instead of allocating (`BackwardOptions::reuse`). Empty when none were given.
    pub(crate) spare: &'a mut [Option<Array2<F>>],
}

impl<'a, F: Float> Ctx<'a, '_, F> {
    /// Whether input `k` wants a gradient; a rule skips the work for inputs that do not.
    pub(crate) fn needs_grad(&self, k: usize) -> bool {
        self.nodes[self.inputs[k]].requires_grad
    }

    /// The value of input `k`. The op must have saved it ([`crate::tape::Saves`]).
    pub(crate) fn input(&self, k: usize) -> ArrayView2<'a, F> {
        self.saved(self.inputs[k])
    }

    /// The op's own output. The op must have saved it.
    pub(crate) fn output(&self) -> ArrayView2<'a, F> {
        self.saved(self.output)
    }

    fn saved(&self, id: NodeId) -> ArrayView2<'a, F> {
        let values: &'a [Value<'_, F>] = self.values;
        match view_of(values, id) {
            Ok(v) => v,
            Err(_) => panic!(
                "tapegrad bug: the rule of `{}` read the value of node {id}, which it did not save",
                self.nodes[self.output].op
            ),
        }
    }

    fn slot(&mut self, k: usize) -> (&mut Option<Array2<F>>, (usize, usize)) {
        let id = self.inputs[k];
        (&mut self.slots[id], self.nodes[id].shape)
    }

    /// A spare buffer for input `k`'s first contribution, if one was handed in and the
    /// slot is still empty.
    fn spare(&mut self, k: usize) -> Option<Array2<F>> {
        let id = self.inputs[k];
        match self.slots[id] {
            None => self.spare.get_mut(id).and_then(Option::take),
            Some(_) => None,
        }
    }

    /// `dXₖ += d`, moving `d` in when it is the first contribution. `d` may have the
    /// output's broadcast shape; it is summed down to the input's shape.
    pub(crate) fn accumulate(&mut self, k: usize, d: Array2<F>) {
        let (slot, shape) = self.slot(k);
        let d = if d.dim() == shape {
            d
        } else {
            sum_to_shape(d.view(), shape)
        };
        match slot {
            Some(s) => *s += &d,
            None => *slot = Some(d),
        }
    }

    /// `dXₖ += α·d`. `d` may be smaller than the input (a 1 × 1 or 1 × n gradient of a
    /// reduction, broadcast up) or larger (the output of a broadcasting op, summed down).
    pub(crate) fn accumulate_scaled(&mut self, k: usize, alpha: F, d: ArrayView2<'_, F>) {
        let shape = self.nodes[self.inputs[k]].shape;
        if d.dim() != shape && broadcast_shape(d.dim(), shape) != Some(shape) {
            let (slot, _) = self.slot(k);
            let mut d = sum_to_shape(d, shape);
            match slot {
                Some(s) => s.scaled_add(alpha, &d),
                None => {
                    if alpha != F::one() {
                        d.mapv_inplace(|v| alpha * v);
                    }
                    *slot = Some(d);
                }
            }
            return;
        }
        let spare = self.spare(k);
        let (slot, shape) = self.slot(k);
        match (slot, spare) {
            (Some(s), _) => s.scaled_add(alpha, &d),
            (slot @ None, Some(mut buf)) => {
                Zip::from(&mut buf)
                    .and_broadcast(&d)
                    .for_each(|b, &d| *b = alpha * d);
                *slot = Some(buf);
            }
            (slot @ None, None) => {
                let d = d.broadcast(shape).expect("checked above");
                *slot = Some(if alpha == F::one() {
                    d.to_owned()
                } else {
                    d.mapv(|v| alpha * v)
                });
            }
        }
    }

    /// `dXₖ += A·B`: GEMM with beta = 1 into the existing buffer; for the first
    /// contribution, beta = 0 into a spare buffer, or a new product.
    pub(crate) fn accumulate_gemm(&mut self, k: usize, a: ArrayView2<'_, F>, b: ArrayView2<'_, F>) {
        let spare = self.spare(k);
        let (slot, _) = self.slot(k);
        match (slot, spare) {
            (Some(c), _) => gemm_acc(a, b, c),
            (slot @ None, Some(mut c)) => {
                gemm_into(a, b, &mut c);
                *slot = Some(c);
            }
            (slot @ None, None) => *slot = Some(gemm(a, b)),
        }
    }

    /// `dXₖ += f(G, S)` elementwise in one fused pass, consuming `G`: `S` is a saved value
    /// that broadcasts to `G`'s shape. The first contribution is computed in place in `G`'s
    /// buffer and moved in; a contribution of the output's broadcast shape is summed down.
    pub(crate) fn accumulate_map(
        &mut self,
        k: usize,
        g: Array2<F>,
        s: ArrayView2<'_, F>,
        f: impl Fn(F, F) -> F,
    ) {
        self.accumulate_zip(k, Grad::Owned(g), s, f);
    }

    /// As [`Ctx::accumulate_map`], leaving `G` to the caller (for a rule that still needs
    /// it for another input).
    pub(crate) fn accumulate_map_view(
        &mut self,
        k: usize,
        g: ArrayView2<'_, F>,
        s: ArrayView2<'_, F>,
        f: impl Fn(F, F) -> F,
    ) {
        self.accumulate_zip(k, Grad::View(g), s, f);
    }

    fn accumulate_zip(
        &mut self,
        k: usize,
        g: Grad<'_, F>,
        s: ArrayView2<'_, F>,
        f: impl Fn(F, F) -> F,
    ) {
        let shape = self.nodes[self.inputs[k]].shape;
        let dim = g.view().dim();
        let s = s
            .broadcast(dim)
            .expect("a saved operand broadcasts to the output");
        if dim != shape {
            let d = Zip::from(&g.view()).and(&s).map_collect(|&g, &s| f(g, s));
            return self.accumulate(k, d);
        }
        let spare = match g {
            Grad::View(_) => self.spare(k),
            Grad::Owned(_) => None,
        };
        let (slot, _) = self.slot(k);
        match (slot, g) {
            (Some(d), g) => Zip::from(d)
                .and(&g.view())
                .and(&s)
                .for_each(|d, &g, &s| *d += f(g, s)),
            (slot @ None, Grad::Owned(mut g)) => {
                Zip::from(&mut g).and(&s).for_each(|g, &s| *g = f(*g, s));
                *slot = Some(g);
            }
            (slot @ None, Grad::View(g)) => {
                *slot = Some(match spare {
                    Some(mut d) => {
                        Zip::from(&mut d)
                            .and(&g)
                            .and(&s)
                            .for_each(|d, &g, &s| *d = f(g, s));
                        d
                    }
                    None => Zip::from(&g).and(&s).map_collect(|&g, &s| f(g, s)),
                })
            }
        }
    }
}

/// An upstream gradient a helper may consume or only read.
enum Grad<'a, F> {
    Owned(Array2<F>),
    View(ArrayView2<'a, F>),
}

impl<F> Grad<'_, F> {
    fn view(&self) -> ArrayView2<'_, F> {
        match self {
            Grad::Owned(g) => g.view(),
            Grad::View(g) => g.view(),
        }
    }
}

/// Identifies a borrowed leaf by its storage, so [`Gradients::wrt`] can find the gradient
/// of a model's parameter from the array itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ViewKey {
    ptr: usize,
    shape: (usize, usize),
    strides: [isize; 2],
}

impl ViewKey {
    fn of<F>(v: &ArrayView2<'_, F>) -> Self {
        let s = v.strides();
        ViewKey {
            ptr: v.as_ptr() as usize,
            shape: v.dim(),
            strides: [s[0], s[1]],
        }
    }
}

/// The gradients a backward pass returns: one array per leaf that requires a gradient,
/// with the leaf's shape (a leaf the root does not depend on gets zeros), and one per
/// tensor named with [`BackwardOptions::retain_grad`](crate::BackwardOptions::retain_grad).
///
/// Owned data with no reference to the tape: `Send + Sync`, and free to outlive it.
#[derive(Clone, Debug)]
pub struct Gradients<F> {
    tape: u64,
    /// Sorted by node id.
    entries: Vec<(NodeId, Option<ViewKey>, Array2<F>)>,
}

impl<F: Float> Gradients<F> {
    pub(crate) fn collect(
        tape: u64,
        nodes: &[Node<F>],
        values: &[Value<'_, F>],
        mut slots: Vec<Option<Array2<F>>>,
        mut spare: Vec<Option<Array2<F>>>,
        kept: Vec<(NodeId, Array2<F>)>,
    ) -> Self {
        let mut entries: Vec<_> = nodes
            .iter()
            .enumerate()
            .filter(|(_, node)| node.leaf && node.requires_grad)
            .map(|(id, node)| {
                let grad = slots.get_mut(id).and_then(Option::take).or_else(|| {
                    // an unreached parameter whose old buffer was handed in: zeros, in place
                    let mut g = spare.get_mut(id).and_then(Option::take)?;
                    g.fill(F::zero());
                    Some(g)
                });
                let key = match &values[id] {
                    Value::Borrowed(v) => Some(ViewKey::of(v)),
                    _ => None,
                };
                (id, key, grad.unwrap_or_else(|| Array2::zeros(node.shape)))
            })
            .collect();
        entries.extend(kept.into_iter().map(|(id, g)| (id, None, g)));
        entries.sort_by_key(|e| e.0);
        Gradients { tape, entries }
    }

    /// Hands this step's buffers to the next backward pass: for every borrowed parameter
    /// leaf of the new tape with the same storage and shape as one here, its old buffer,
    /// by node id. Buffers whose parameter is gone are dropped.
    pub(crate) fn into_spare(
        self,
        nodes: &[Node<F>],
        values: &[Value<'_, F>],
        n: usize,
    ) -> Vec<Option<Array2<F>>> {
        let mut spare: Vec<Option<Array2<F>>> = Vec::with_capacity(n);
        spare.resize_with(n, || None);
        let mut entries = self.entries;
        for (id, node) in nodes[..n].iter().enumerate() {
            if let (true, Value::Borrowed(v)) = (node.leaf && node.requires_grad, &values[id]) {
                let key = ViewKey::of(v);
                if let Some(i) = entries.iter().position(|e| e.1 == Some(key)) {
                    let buffer = entries.swap_remove(i).2;
                    if buffer.dim() == node.shape {
                        spare[id] = Some(buffer);
                    }
                }
            }
        }
        spare
    }

    fn index(&self, t: Tensor<'_, F>) -> Option<usize> {
        if t.tape.id() != self.tape {
            return None;
        }
        self.entries.binary_search_by_key(&t.id, |e| e.0).ok()
    }

    /// The gradient of `t`, or `None` if `t` is neither a leaf requiring a gradient nor a
    /// tensor named with `retain_grad`, on the tape these gradients came from.
    pub fn get(&self, t: Tensor<'_, F>) -> Option<&Array2<F>> {
        self.index(t).map(|i| &self.entries[i].2)
    }

    /// Moves the gradient of `t` out (a later `get` returns `None`).
    pub fn take(&mut self, t: Tensor<'_, F>) -> Option<Array2<F>> {
        self.index(t).map(|i| self.entries.remove(i).2)
    }

    /// The gradient of the parameter whose data is `array`, when `array` went on the tape
    /// borrowed with [`Tape::param`](crate::Tape::param). Optimizers and checkpoints use
    /// this to find a model's gradients without keeping the tensor handles.
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let w = array![[1.0, 2.0], [3.0, 4.0]];
    /// let tape = Tape::new();
    /// let loss = tape.param(&w).square().sum();
    /// let grads = tape.backward(loss).unwrap();
    /// assert_eq!(grads.wrt(&w).unwrap(), &(&w * 2.0));
    /// ```
    pub fn wrt<S: Data<Elem = F>>(&self, array: &ArrayBase<S, Ix2>) -> Option<&Array2<F>> {
        let key = ViewKey::of(&array.view());
        self.entries.iter().find(|e| e.1 == Some(key)).map(|e| &e.2)
    }

    /// The gradient of the parameter whose data is `array`, mutably (to clip or scale
    /// it before an update); see [`Gradients::wrt`].
    pub fn wrt_mut<S: Data<Elem = F>>(
        &mut self,
        array: &ArrayBase<S, Ix2>,
    ) -> Option<&mut Array2<F>> {
        let key = ViewKey::of(&array.view());
        self.entries
            .iter_mut()
            .find(|e| e.1 == Some(key))
            .map(|e| &mut e.2)
    }

    /// Number of gradients held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no gradient is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The gradients in the order their leaves were created.
    pub fn iter(&self) -> impl Iterator<Item = &Array2<F>> {
        self.entries.iter().map(|e| &e.2)
    }
}
