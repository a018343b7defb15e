//! What backward returns ([`Gradients`]), found by tensor or by the parameter's array
//! (`keys.rs`), and its arithmetic for reductions over shards (`arith.rs`).

mod arith;
mod keys;

pub(crate) use keys::{Params, ViewKey};

use std::panic::Location;

use ndarray::{Array2, ArrayBase, Data, Ix2};

use crate::error::{Error, ErrorKind, Result};
use crate::pool::Recycled;
use crate::tape::{Node, NodeId, Value};
use crate::{Float, Tensor, pool};

/// Why [`Gradients`] holds no gradient for a tensor or an array
/// ([`Gradients::try_get`], [`Gradients::try_wrt`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Missing {
    /// A constant: made with [`Tape::constant`](crate::Tape::constant), or with
    /// [`Tape::param`](crate::Tape::param) inside [`Tape::no_grad`](crate::Tape::no_grad).
    Constant,
    /// The result of [`Tensor::detach`]: a leaf that requires no gradient.
    Detached,
    /// An intermediate result, whose gradient backward does not keep unless asked to with
    /// [`BackwardOptions::retain_grad`](crate::BackwardOptions::retain_grad).
    Intermediate,
    /// The tensor is from another tape than the one these gradients came from.
    OtherTape,
    /// No leaf of the tape borrows this array. A parameter put on the tape by value
    /// (`tape.param(w.clone())`) is a copy that the array cannot be found by: pass `&w`.
    NotOnTape,
    /// The array's storage overlaps that of another parameter on the tape, given as a
    /// different view (a slice of it, say): its gradient would miss the other's share, so
    /// none is given. Put one view on the tape and slice it with tensor ops instead.
    Overlapping,
    /// The gradient was moved out with [`Gradients::take`].
    Taken,
    /// On the tape and requiring a gradient, but the root does not depend on it: its
    /// gradient is zeros ([`Gradients::reason`]; `wrt` and `get` give the zeros).
    Unreached,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Missing::Constant => {
                "it is a constant (Tape::constant, or Tape::param inside Tape::no_grad)"
            }
            Missing::Detached => "it is the result of detach, which cuts the graph",
            Missing::Intermediate => {
                "it is an intermediate result; ask for it with BackwardOptions::retain_grad"
            }
            Missing::OtherTape => "it belongs to another tape than these gradients",
            Missing::NotOnTape => {
                "no leaf of the tape borrows this array (a parameter put on the tape by \
                 value, such as tape.param(w.clone()), cannot be found by the array: pass &w)"
            }
            Missing::Overlapping => {
                "its storage overlaps another parameter view on the same tape, so its \
                 gradient would be incomplete (put one view on the tape and slice it there)"
            }
            Missing::Taken => "it was moved out with Gradients::take",
            Missing::Unreached => {
                "the loss does not depend on it (it is on the tape, but no op between it and \
                 the loss used it), so its gradient is zeros"
            }
        })
    }
}

/// Where [`Gradients::find`] found a parameter's gradient.
#[derive(Clone, Copy)]
enum Found {
    Entry(usize),
    Transposed(usize),
}

/// One gradient: of a leaf that requires one, or of a tensor named with `retain_grad`.
#[derive(Clone, Debug)]
struct Entry<F: Float> {
    id: NodeId,
    /// The storage of a borrowed parameter, for [`Gradients::wrt`]; `None` for owned leaves,
    /// retained intermediates and parameters whose storage overlaps another's.
    key: Option<ViewKey>,
    grad: Array2<F>,
    /// Whether backward reached the leaf from the root (else `grad` is zeros).
    reached: bool,
    /// A leaf's gradient (not a retained intermediate's).
    leaf: bool,
}

/// The gradients a backward pass returns: one array per leaf that requires a gradient,
/// with the leaf's shape (a leaf the root does not depend on gets zeros), and one per
/// tensor named with [`BackwardOptions::retain_grad`](crate::BackwardOptions::retain_grad).
///
/// A parameter is one leaf however often it is put on the tape: [`Tape::param`] on an
/// array already on the tape returns the same tensor, so the gradient is the sum over
/// every use (a layer applied twice, tied weights).
///
/// Owned data with no reference to the tape: `Send + Sync`, and free to outlive it.
///
/// [`Tape::param`]: crate::Tape::param
#[derive(Clone, Debug)]
pub struct Gradients<F: Float> {
    tape: u64,
    /// Sorted by node id.
    entries: Vec<Entry<F>>,
    /// Borrowed storage with no entry, and why: constants, and parameters whose storage
    /// overlaps another parameter's.
    absent: Vec<(ViewKey, Missing)>,
    /// The transposed views of parameters that also went on the tape, with the gradient in
    /// their orientation (a copy), so that either array finds it.
    transposed: Vec<(ViewKey, Array2<F>)>,
}

/// A dropped `Gradients` hands its buffers to this thread's pool ([`crate::pool`]): the
/// next step's gradients reuse them.
impl<F: Float> Drop for Gradients<F> {
    fn drop(&mut self) {
        for e in self.entries.drain(..) {
            pool::give_array(e.grad);
        }
        for (_, g) in self.transposed.drain(..) {
            pool::give_array(g);
        }
        pool::give_vec(std::mem::take(&mut self.entries));
        pool::give_vec(std::mem::take(&mut self.absent));
        pool::give_vec(std::mem::take(&mut self.transposed));
    }
}

impl<F: Float> Gradients<F> {
    /// Gathers the result of a backward pass: `slots` holds the accumulated gradients by
    /// node id, `spare` the unused buffers of an earlier step, `params` the borrowed
    /// parameter leaves.
    pub(crate) fn collect(
        tape: u64,
        nodes: &[Node<F>],
        values: &[Value<F>],
        mut slots: Recycled<Option<Array2<F>>>,
        mut spare: Vec<Option<Array2<F>>>,
        kept: Vec<(NodeId, Array2<F>)>,
        params: &Params,
    ) -> Self {
        let mut absent = pool::take_vec();
        let wanted = nodes.iter().filter(|n| n.leaf && n.requires_grad).count();
        let mut entries: Vec<Entry<F>> = pool::take_vec();
        entries.reserve(wanted + kept.len());
        for (id, node) in nodes.iter().enumerate().filter(|(_, n)| n.leaf) {
            let key = match &values[id] {
                Value::Borrowed(v) => Some(ViewKey::of_raw(v)),
                _ => None,
            };
            if !node.requires_grad {
                if let Some(key) = key {
                    absent.push((key, Missing::Constant));
                }
                continue;
            }
            let reached = slots.get(id).is_some_and(Option::is_some);
            let grad = slots.get_mut(id).and_then(Option::take).or_else(|| {
                // an unreached parameter whose old buffer was handed in: zeros, in place
                let mut g = spare.get_mut(id).and_then(Option::take)?;
                g.fill(F::zero());
                Some(g)
            });
            let grad = grad.unwrap_or_else(|| Array2::zeros(node.shape));
            // A parameter overlapping another parameter view gets no key: `wrt` never
            // gives a gradient that misses the other view's share.
            let key = match key {
                Some(key) if params.overlaps(id) => {
                    absent.push((key, Missing::Overlapping));
                    None
                }
                key => key,
            };
            entries.push(Entry {
                id,
                key,
                grad,
                reached,
                leaf: true,
            });
        }
        // A parameter that went on the tape transposed is also found by its own array:
        // where both orientations were used, and wherever the transposed view is a
        // row-major array (`tape.param(w.t())`, looked up as `wrt(&w)` by an optimizer).
        let mut transposed = pool::take_vec();
        transposed.extend(entries.iter().filter_map(|e| {
            let own = e.key?;
            let key = own.transposed();
            let wanted = params.transposed.contains(&(key, e.id))
                || own.is_empty()
                || (!own.is_standard() && key.is_standard());
            wanted.then(|| (key, e.grad.t().as_standard_layout().into_owned()))
        }));
        entries.extend(kept.into_iter().map(|(id, grad)| Entry {
            id,
            key: None,
            grad,
            reached: true,
            leaf: false,
        }));
        entries.sort_by_key(|e| e.id);
        for buffer in slots.drain(..).chain(spare.drain(..)).flatten() {
            pool::give_array(buffer);
        }
        pool::give_vec(spare);
        Gradients {
            tape,
            entries,
            absent,
            transposed,
        }
    }

    /// Hands this step's buffers to the next backward pass: for every borrowed parameter
    /// leaf of the new tape with the same storage and shape as one here, its old buffer,
    /// by node id. Buffers whose parameter is gone are dropped.
    pub(crate) fn into_spare(
        mut self,
        nodes: &[Node<F>],
        values: &[Value<F>],
        n: usize,
    ) -> Vec<Option<Array2<F>>> {
        let mut spare: Vec<Option<Array2<F>>> = pool::take_vec();
        spare.resize_with(n, || None);
        let mut entries = std::mem::take(&mut self.entries);
        for (id, node) in nodes[..n].iter().enumerate() {
            if let (true, Value::Borrowed(v)) = (node.leaf && node.requires_grad, &values[id]) {
                let key = ViewKey::of_raw(v);
                if let Some(i) = entries.iter().position(|e| e.key == Some(key)) {
                    let buffer = entries.swap_remove(i).grad;
                    if buffer.dim() == node.shape {
                        spare[id] = Some(buffer);
                    }
                }
            }
        }
        for e in entries.drain(..) {
            pool::give_array(e.grad);
        }
        pool::give_vec(entries);
        spare
    }

    fn index(&self, t: Tensor<'_, F>) -> Option<usize> {
        if t.tape.id() != self.tape {
            return None;
        }
        self.entries.binary_search_by_key(&t.id, |e| e.id).ok()
    }

    /// The gradient of `t`, or `None` if `t` is neither a leaf requiring a gradient nor a
    /// tensor named with `retain_grad`, on the tape these gradients came from;
    /// [`Gradients::try_get`] says why.
    pub fn get(&self, t: Tensor<'_, F>) -> Option<&Array2<F>> {
        self.index(t).map(|i| &self.entries[i].grad)
    }

    /// The gradient of `t`, or an error saying why there is none ([`Missing`]).
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::{ErrorKind, Missing, Tape};
    ///
    /// let tape = Tape::new();
    /// let x = tape.constant(array![[1.0, 2.0]]);
    /// let w = tape.param(array![[3.0, 4.0]]);
    /// let h = x.mul(w);
    /// let grads = tape.backward(h.sum()).unwrap();
    /// assert_eq!(grads.try_get(w).unwrap(), &array![[1.0, 2.0]]);
    /// let err = grads.try_get(h).unwrap_err();
    /// assert_eq!(err.kind(), &ErrorKind::Missing(Missing::Intermediate));
    /// assert_eq!(grads.try_get(x).unwrap_err().kind(), &ErrorKind::Missing(Missing::Constant));
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Missing`](crate::ErrorKind::Missing) with the reason.
    #[track_caller]
    pub fn try_get(&self, t: Tensor<'_, F>) -> Result<&Array2<F>> {
        let location = Location::caller();
        if let Some(g) = self.get(t) {
            return Ok(g);
        }
        let reason = if t.tape.id() != self.tape {
            Missing::OtherTape
        } else {
            let inner = t.tape.inner();
            let node = &inner.nodes[t.id];
            match (node.leaf, node.requires_grad) {
                (true, true) => Missing::Taken,
                (true, false) if node.op == "detach" => Missing::Detached,
                (true, false) => Missing::Constant,
                (false, _) => Missing::Intermediate,
            }
        };
        Err(Error::new("get", ErrorKind::Missing(reason), location))
    }

    /// Moves the gradient of `t` out (a later `get` returns `None`).
    pub fn take(&mut self, t: Tensor<'_, F>) -> Option<Array2<F>> {
        self.index(t).map(|i| self.entries.remove(i).grad)
    }

    /// [`Gradients::take`], `None` also for a leaf backward did not reach (whose gradient
    /// is zeros).
    pub(crate) fn take_reached(&mut self, t: Tensor<'_, F>) -> Option<Array2<F>> {
        let i = self.index(t)?;
        let entry = self.entries.remove(i);
        entry.reached.then_some(entry.grad)
    }

    /// Where the gradient of the parameter stored as `array` is: an entry, or the
    /// transposed copy of one.
    fn find<S: Data<Elem = F>>(&self, array: &ArrayBase<S, Ix2>) -> Option<Found> {
        let key = ViewKey::of(&array.view());
        if let Some(i) = self.entries.iter().position(|e| e.key == Some(key)) {
            return Some(Found::Entry(i));
        }
        self.transposed
            .iter()
            .position(|t| t.0 == key)
            .map(Found::Transposed)
    }

    fn found(&self, at: Found) -> &Array2<F> {
        match at {
            Found::Entry(i) => &self.entries[i].grad,
            Found::Transposed(i) => &self.transposed[i].1,
        }
    }

    /// The gradient of the parameter whose data is `array`, when `array` went on the tape
    /// borrowed with [`Tape::param`](crate::Tape::param). Optimizers and checkpoints use
    /// this to find a model's gradients without keeping the tensor handles. `None` when
    /// there is none; [`Gradients::try_wrt`] says why.
    ///
    /// A parameter that went on the tape transposed (`tape.param(w.t())`) is found by its
    /// row-major array `&w` too, with the gradient transposed to `w`'s shape.
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
        self.find(array).map(|at| self.found(at))
    }

    /// The gradient of the parameter whose data is `array`, or an error saying why there
    /// is none: the array went on the tape as a constant, was copied onto it
    /// (`tape.param(w.clone())`), or overlaps another parameter view ([`Missing`]).
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::{ErrorKind, Missing, Tape};
    ///
    /// let w = array![[1.0, 2.0]];
    /// let tape = Tape::new();
    /// let loss = tape.param(w.clone()).square().sum(); // a copy: not found by &w
    /// let grads = tape.backward(loss).unwrap();
    /// let err = grads.try_wrt(&w).unwrap_err();
    /// assert_eq!(err.kind(), &ErrorKind::Missing(Missing::NotOnTape));
    /// assert!(err.to_string().contains("pass &w"));
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Missing`](crate::ErrorKind::Missing) with the reason.
    #[track_caller]
    pub fn try_wrt<S: Data<Elem = F>>(&self, array: &ArrayBase<S, Ix2>) -> Result<&Array2<F>> {
        match self.find(array) {
            Some(at) => Ok(self.found(at)),
            None => Err(self.missing(array, Location::caller())),
        }
    }

    /// Why `array` has no gradient here.
    pub(crate) fn missing<S: Data<Elem = F>>(
        &self,
        array: &ArrayBase<S, Ix2>,
        location: &'static Location<'static>,
    ) -> Error {
        let reason = self.absent_reason(ViewKey::of(&array.view()));
        Error::new("wrt", ErrorKind::Missing(reason), location)
    }

    /// Why storage `key`, which has no gradient entry, has none.
    fn absent_reason(&self, key: ViewKey) -> Missing {
        self.absent
            .iter()
            .find(|a| a.0 == key)
            .map_or(Missing::NotOnTape, |a| a.1)
    }

    /// The gradient of the parameter whose data is `array`, mutably (to clip or scale
    /// it before an update); see [`Gradients::wrt`].
    pub fn wrt_mut<S: Data<Elem = F>>(
        &mut self,
        array: &ArrayBase<S, Ix2>,
    ) -> Option<&mut Array2<F>> {
        match self.find(array)? {
            Found::Entry(i) => Some(&mut self.entries[i].grad),
            Found::Transposed(i) => Some(&mut self.transposed[i].1),
        }
    }

    /// Why the parameter stored as `array` got no gradient from this backward pass, or
    /// `None` if it got one: `Unreached` when it was on the tape but the root does not
    /// depend on it (`wrt` gives zeros then), and the reasons of [`Gradients::try_wrt`]
    /// otherwise. [`Parameters::without_gradient`](crate::nn::Parameters::without_gradient)
    /// asks it of every parameter of a model.
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::{Missing, Tape};
    ///
    /// let (w, unused, c) = (array![[1.0]], array![[2.0]], array![[3.0]]);
    /// let tape = Tape::new();
    /// let (wt, _) = (tape.param(&w), tape.param(&unused));
    /// let loss = wt.mul(tape.constant(&c)).sum();
    /// let grads = tape.backward(loss).unwrap();
    /// assert_eq!(grads.reason(&w), None);
    /// assert_eq!(grads.reason(&unused), Some(Missing::Unreached));
    /// assert_eq!(grads.reason(&c), Some(Missing::Constant));
    /// assert_eq!(grads.reason(&array![[4.0]]), Some(Missing::NotOnTape));
    /// ```
    pub fn reason<S: Data<Elem = F>>(&self, array: &ArrayBase<S, Ix2>) -> Option<Missing> {
        let entry = match self.find(array) {
            Some(Found::Entry(i)) => &self.entries[i],
            Some(Found::Transposed(i)) => {
                let own = Some(self.transposed[i].0.transposed());
                self.entries.iter().find(|e| e.key == own)?
            }
            None => return Some(self.absent_reason(ViewKey::of(&array.view()))),
        };
        (!entry.reached).then_some(Missing::Unreached)
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
        self.entries.iter().map(|e| &e.grad)
    }
}
