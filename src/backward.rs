//! First-order backward: replays the tape in reverse on plain arrays.
//!
//! Creation order is a topological order (an op can only take tensors that already exist),
//! so backward needs no sort, no hash map and no visited set: it walks the nodes from the
//! root down to 0, hands each rule the gradient of its output and lets the rule add its
//! contributions into the gradient slots of its inputs ([`Ctx`](crate::grad::Ctx)).
//!
//! A rule reads the values it needs straight from the tape: an op declares at record time
//! which of its inputs (and whether its output) its rule will read
//! ([`Saves`](crate::rule::Saves)), so saving never copies. Without `retain_graph`,
//! backward releases each value as soon as the last rule that reads it has run, frees
//! every gradient slot as it is consumed, and drops each rule (and whatever it owns) after
//! running it.

use std::panic::Location;
use std::time::{Duration, Instant};

use ndarray::{Array2, CowArray, Ix2};

use crate::error::{Error, ErrorKind, Result};
use crate::grad::Ctx;
use crate::gradients::Gradients;
use crate::pool::{self, Recycled};
use crate::tape::{Consumed, Inner, Node, NodeId, Value, source};
use crate::{Float, Tape, Tensor, inspect, kernels};

/// Options for [`Tape::backward_with`]. The lifetime is that of a borrowed seed.
#[derive(Clone, Debug)]
pub struct BackwardOptions<'a, F: Float> {
    retain_graph: bool,
    seed: Option<CowArray<'a, F, Ix2>>,
    /// Non-leaf tensors whose gradient the caller wants: (tape id, node id).
    keep: Vec<(u64, NodeId)>,
    /// An earlier step's gradients, whose buffers this pass writes into.
    reuse: Option<Gradients<F>>,
    /// Buffers by node id to write first contributions into (a rematerialised block
    /// hands down the main tape's spare buffers of its inputs).
    spare: Vec<Option<Array2<F>>>,
}

impl<F: Float> Default for BackwardOptions<'_, F> {
    fn default() -> Self {
        BackwardOptions {
            retain_graph: false,
            seed: None,
            keep: Vec::new(),
            reuse: None,
            spare: Vec::new(),
        }
    }
}

impl<'a, F: Float> BackwardOptions<'a, F> {
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
    ///
    /// The seed is an owned array (moved in, not copied), or a borrowed one (`&g`,
    /// `g.view()`): a fixed upstream gradient used at every step then needs no clone by
    /// the caller; backward copies it once per pass into a recycled buffer (see
    /// [`crate::pool`]), since the root's rule consumes its gradient.
    pub fn seed(mut self, seed: impl Into<CowArray<'a, F, Ix2>>) -> Self {
        self.seed = Some(seed.into());
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
    pub fn retain_grad(mut self, t: Tensor<'_, F>) -> Self {
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
    ///
    /// It takes a `Gradients` or an `Option` of one (`None` on the first step):
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
    ///     let opts = BackwardOptions::new().reuse(grads.take());
    ///     grads = Some(tape.backward_with(loss, opts).unwrap());
    /// }
    /// assert_eq!(grads.unwrap().wrt(&w).unwrap(), &array![[1.0, 1.0], [-1.0, -1.0]]);
    /// ```
    ///
    /// Since every tape recycles released buffers ([`crate::pool`]), a loop without `reuse`
    /// pays no page faults either; `reuse` still saves the pool look-up and lets the weight
    /// gradient's GEMM write straight into last step's buffer.
    pub fn reuse(mut self, previous: impl Into<Option<Gradients<F>>>) -> Self {
        self.reuse = previous.into();
        self
    }

    /// Buffers by node id for first contributions (unused with `reuse`).
    pub(crate) fn spare(mut self, spare: Vec<Option<Array2<F>>>) -> Self {
        self.spare = spare;
        self
    }
}

impl<'t, F: Float> Tape<'t, F> {
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
    /// on this tape, `Interrupted` if one stopped when a rule panicked, `ForeignTensor` if
    /// `loss` is from another tape; and the errors of the rules themselves (`Contribution`
    /// for a custom op's VJP whose contribution does not fit its input).
    ///
    /// # Panics
    ///
    /// Only if a rule panics (a custom op's VJP, a rematerialised block's code): the panic
    /// reaches the caller, and the tape then refuses further passes with `Interrupted`
    /// (unless this one retained the graph).
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
        opts: BackwardOptions<'_, F>,
    ) -> Result<Gradients<F>> {
        self.backward_hooked(root, opts, None, Location::caller())
    }

    /// [`Tape::backward_with`], telling `hook` about every leaf gradient as soon as it is
    /// final ([`LeafHook`]).
    pub(crate) fn backward_hooked(
        &self,
        root: Tensor<'t, F>,
        opts: BackwardOptions<'_, F>,
        hook: Option<&mut dyn LeafHook<F>>,
        location: &'static Location<'static>,
    ) -> Result<Gradients<F>> {
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
            // an owned seed moves in; a borrowed one is copied (the root's rule consumes it)
            Some(seed) if seed.is_owned() => seed.into_owned(),
            Some(seed) => kernels::copy(seed.view()),
            None if root.shape != (1, 1) => {
                return fail(ErrorKind::NotScalar { shape: root.shape });
            }
            None => {
                let mut one = pool::take_array((1, 1)).expect("a small buffer");
                one[[0, 0]] = F::one();
                one
            }
        };
        let mut inner = self.inner.borrow_mut();
        let Inner {
            nodes,
            values,
            input_ids,
            consumed,
            params,
            observed,
            ..
        } = &mut *inner;
        if let Some(consumed) = *consumed {
            return Err(consumed.error("backward", location));
        }
        if !root.requires_grad {
            return fail(ErrorKind::NoGradient);
        }
        // anomaly detection and profiling (crate::inspect); 0 in normal use
        let modes = self.modes.get();
        if modes & inspect::ANOMALY != 0 {
            if let Some(e) = observed.as_ref().and_then(|o| o.anomaly.clone()) {
                return Err(e);
            }
            inspect::check_seed(&seed, location)?;
        }
        let pass_start = (modes & inspect::PROFILE != 0).then(Instant::now);
        let mut rules_time = Duration::ZERO;
        let retain = opts.retain_graph;
        // the root stays readable after backward, also when it is a view of another node
        let root_source = source(values, root.id);
        let keep: Vec<NodeId> = opts
            .keep
            .iter()
            .filter(|k| k.0 == self.id())
            .map(|k| k.1)
            .collect();
        let mut kept = Vec::new();
        let n = root.id + 1;
        // (lists recycled from the last pass: a steady loop allocates none of them)
        let mut slots: Recycled<Option<Array2<F>>> = Recycled::default();
        slots.resize_with(n, || None);
        slots[root.id] = Some(seed);
        let mut spare = match opts.reuse {
            Some(previous) => previous.into_spare(nodes, values, n),
            None => opts.spare,
        };
        // declared after the slots: dropped before them, also when a rule panics
        let mut hook = Finish(hook);
        // a rule that panics leaves the tape refusing later passes (its rules are gone)
        let mut unwind = Unwind {
            consumed,
            at: location,
            op: "",
            armed: !retain,
        };
        let inputs_of = |node: &Node<F>| &input_ids[node.inputs.0 as usize..node.inputs.1 as usize];

        // How many rules still have to read each value; values no rule reads go now.
        let mut uses: Recycled<u32> = Recycled::default();
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

        // With a hook: the last rule (the lowest node id) that adds to each leaf gradient.
        let mut last_use = Vec::new();
        if hook.0.is_some() {
            last_use.resize(n, usize::MAX);
            for (id, node) in nodes[..n].iter().enumerate().rev() {
                if node.rule.is_some() {
                    for &i in inputs_of(node) {
                        if nodes[i].leaf && nodes[i].requires_grad {
                            last_use[i] = id;
                        }
                    }
                }
            }
        }

        let outcome: Result<()> = 'pass: {
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
                unwind.op = nodes[id].op;
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
                        tape: std::marker::PhantomData,
                    };
                    let ran = if modes == 0 {
                        rule.run(g, &mut ctx, location)
                    } else {
                        let observed = observed.as_deref();
                        inspect::run_observed(
                            modes,
                            rule,
                            g,
                            &mut ctx,
                            location,
                            observed,
                            &mut rules_time,
                        )
                    };
                    if let Err(e) = ran {
                        break 'pass Err(e);
                    }
                }
                if let Some(rule) = owned_rule {
                    drop(rule);
                    for s in nodes[id].saves.ids(id, inputs_of(&nodes[id])) {
                        let s = source(values, s);
                        uses[s] -= 1;
                        release_if_unused(nodes, values, &uses, s, root_source);
                    }
                }
                if let Some(hook) = hook.0.as_deref_mut() {
                    hook.tick();
                    for &i in inputs_of(&nodes[id]) {
                        if last_use[i] == id {
                            last_use[i] = usize::MAX;
                            if let Some(g) = slots[i].as_mut() {
                                hook.ready(g);
                            }
                        }
                    }
                }
            }
            // a root that is itself a leaf (no rule feeds it) has its seed as gradient
            if let (Some(hook), true) = (hook.0.as_deref_mut(), nodes[root.id].leaf) {
                if let Some(g) = slots[root.id].as_mut() {
                    hook.ready(g);
                }
            }
            Ok(())
        };
        // work started on the gradient buffers ends before they are read or freed
        drop(hook);
        if !retain {
            // (also after an error: values this pass released cannot be read by a later one)
            *unwind.consumed = Some(Consumed::By(location));
        }
        drop(unwind);
        outcome?;
        let grads = Gradients::collect(self.id(), nodes, values, slots, spare, kept, params);
        if let Some(start) = pass_start {
            inspect::profile::backward_pass(start.elapsed(), rules_time);
        }
        Ok(grads)
    }
}

/// What backward tells about leaf gradients as they become final
/// ([`Tape::backward_hooked`]): a collective can start reducing a gradient while backward
/// goes on with the rest of the graph.
pub(crate) trait LeafHook<F: Float> {
    /// A leaf's gradient is final: no rule will add to it any more. Its buffer is neither
    /// read nor freed before [`LeafHook::finish`] returns.
    fn ready(&mut self, grad: &mut Array2<F>);

    /// A rule has run: a chance to let work in flight progress.
    fn tick(&mut self) {}

    /// Backward is done with the graph (or failed, or a rule panicked): called once the
    /// pass has begun, on every path, before the gradients are collected or dropped.
    fn finish(&mut self);
}

/// Calls the hook's [`LeafHook::finish`] when dropped.
struct Finish<'h, F: Float>(Option<&'h mut dyn LeafHook<F>>);

impl<F: Float> Drop for Finish<'_, F> {
    fn drop(&mut self) {
        if let Some(hook) = self.0.take() {
            hook.finish();
        }
    }
}

/// Marks the tape [`Consumed::Interrupted`] when dropped while a rule's panic unwinds
/// through a pass that was consuming the graph.
struct Unwind<'a> {
    consumed: &'a mut Option<Consumed>,
    at: &'static Location<'static>,
    /// The op whose rule runs now.
    op: &'static str,
    armed: bool,
}

impl Drop for Unwind<'_> {
    fn drop(&mut self) {
        if self.armed && std::thread::panicking() {
            *self.consumed = Some(Consumed::Interrupted(self.at, self.op));
        }
    }
}

/// Releases an owned intermediate value that no pending rule reads. Leaves (the caller's
/// data) and the root's storage (the loss, read after backward) stay.
fn release_if_unused<F: Float>(
    nodes: &[Node<F>],
    values: &mut [Value<F>],
    uses: &[u32],
    id: NodeId,
    root_source: NodeId,
) {
    if uses[id] == 0 && id != root_source && !nodes[id].leaf {
        if let Value::Owned(_) = values[id] {
            // the buffer goes to the pool
            values[id] = Value::Released(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::panic::Location;

    use ndarray::{Array2, array};

    use super::LeafHook;
    use crate::{BackwardOptions, Tape};

    /// Copies every gradient it is told is final, and counts the calls.
    #[derive(Default)]
    struct Record {
        ready: Vec<Array2<f64>>,
        ticks: usize,
        finished: usize,
    }

    impl LeafHook<f64> for Record {
        fn ready(&mut self, grad: &mut Array2<f64>) {
            assert_eq!(self.finished, 0);
            self.ready.push(grad.clone());
        }
        fn tick(&mut self) {
            self.ticks += 1;
        }
        fn finish(&mut self) {
            self.finished += 1;
        }
    }

    /// A leaf gradient is announced once, after its last contribution: `w` is used at the
    /// top and at the bottom of the graph, `b` once, the constant never.
    #[test]
    fn leaf_gradients_are_announced_once_when_final() {
        let (w, b) = (array![[0.5, -1.0], [2.0, 0.25]], array![[0.1, 0.2]]);
        let tape = Tape::new();
        let (wt, bt) = (tape.param(&w), tape.param(&b));
        let x = tape.constant(array![[1.0, 2.0], [3.0, 4.0]]);
        let h = x.matmul(wt).add_row(bt).tanh();
        let loss = h.matmul(wt).mul(h).sum();
        let mut hook = Record::default();
        let grads = tape
            .backward_hooked(
                loss,
                BackwardOptions::new(),
                Some(&mut hook),
                Location::caller(),
            )
            .unwrap();
        assert_eq!(hook.finished, 1);
        assert_eq!(hook.ticks, 6); // one per rule: matmul, add_row, tanh, matmul, mul, sum
        assert_eq!(hook.ready.len(), 2);
        // in the order they became final: b (at add_row), then w (at the first matmul)
        assert_eq!(&hook.ready[0], grads.get(bt).unwrap());
        assert_eq!(&hook.ready[1], grads.get(wt).unwrap());
    }

    /// `finish` runs when backward fails too (here: anomaly detection stops it), before
    /// the gradient buffers are dropped.
    #[test]
    fn finish_is_called_when_backward_fails() {
        let x = array![[0.0, 4.0]];
        let tape = Tape::new();
        tape.detect_anomaly(true);
        let loss = tape.param(&x).sqrt().sum();
        let mut hook = Record::default();
        let result = tape.backward_hooked(
            loss,
            BackwardOptions::new(),
            Some(&mut hook),
            Location::caller(),
        );
        assert!(result.is_err());
        assert_eq!((hook.finished, hook.ready.len()), (1, 0));
    }
}
