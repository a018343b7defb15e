//! Gradient checkpointing (rematerialisation): a block of ops whose intermediates are not
//! kept for backward but recomputed when backward reaches the block ([`Tape::remat`]).
//!
//! PyTorch calls it `torch.utils.checkpoint`, JAX `jax.remat` / `jax.checkpoint`. The
//! block's forward runs on a tape of its own with no rule recorded, and only its result
//! goes on the main tape, as one node whose rule reads the block's inputs. When backward
//! reaches that node, the rule runs the block again on a fresh tape, this time with its
//! inputs as leaves, and back-propagates the upstream gradient through it: the same ops
//! on the same values in the same order, so the gradients are bitwise those of the plain
//! forward. Memory: the main tape holds the block boundaries; one block's intermediates
//! live at a time, during its backward. Cost: one more forward of each block.

use std::panic::Location;
use std::ptr::NonNull;

use ndarray::Array2;

use crate::error::{Error, ErrorKind, Result};
use crate::functional::Inputs;
use crate::grad::Ctx;
use crate::higher::TensorCtx;
use crate::rule::{Backward, Rule, Saves};
use crate::tape::{NodeId, view_of};
use crate::{BackwardOptions, Float, Tape, Tensor};

/// A block, borrowing data for `'a`.
type Block<'a, F> = dyn for<'s, 'u> Fn(Inputs<'s, 'u, 'a, F>) -> Result<Tensor<'u, F>> + 'a;

/// A block as the rule keeps it: its data's lifetime erased ([`Remat::new`]).
type Erased<F> = Block<'static, F>;

impl<'t, F: Float> Tape<'t, F> {
    /// Records `f(inputs)` as one node whose intermediates are recomputed during backward
    /// instead of kept (gradient checkpointing; PyTorch's `torch.utils.checkpoint`, JAX's
    /// `remat`). The tensors of the tape the block reads are its `inputs` (any number);
    /// it may borrow anything else it needs (a model, data) for as long as the tape lives,
    /// and must compute the same thing each time it is called.
    ///
    /// The gradients are bitwise those of writing `f(inputs)` out on the tape, at the cost
    /// of running `f` twice; the tape keeps only the block's inputs and output. The
    /// result is differentiable to any order ([`Tape::grad`] re-runs the block on this
    /// tape).
    ///
    /// The block is a closure that borrows what it captures (so it is `Copy`: capture a
    /// reference to owned data, not the data), or a `fn`:
    ///
    /// ```
    /// use ndarray::Array2;
    /// use tapegrad::{Inputs, Result, Tape, Tensor};
    ///
    /// fn layer<'t>(xs: Inputs<'_, 't, '_, f64>) -> Result<Tensor<'t, f64>> {
    ///     Ok(xs[0].try_linear(xs[1], xs[2])?.tanh())
    /// }
    ///
    /// let x = Array2::from_shape_fn((4, 3), |(i, j)| (i + j) as f64 / 10.0);
    /// let w = Array2::from_shape_fn((3, 3), |(i, j)| (i * j) as f64 / 10.0 - 0.2);
    /// let b = Array2::from_elem((1, 3), 0.1);
    /// let target = Array2::from_elem((4, 3), 0.5);
    ///
    /// let tape = Tape::new();
    /// let (wt, bt) = (tape.param(&w), tape.param(&b));
    /// let h = tape.remat(&[tape.constant(&x), wt, bt], layer).unwrap();
    /// // a closure: the weights come in as inputs, the target it borrows (no clone)
    /// let loss = tape
    ///     .remat(&[h, wt, bt], |xs| {
    ///         Ok(xs[0].try_linear(xs[1], xs[2])?.tanh().try_sub(xs.constant(&target))?.square().sum())
    ///     })
    ///     .unwrap();
    /// let grads = tape.backward(loss).unwrap();
    ///
    /// let plain = Tape::new();
    /// let (wp, bp) = (plain.param(&w), plain.param(&b));
    /// let h = plain.constant(&x).linear(wp, bp).tanh().linear(wp, bp).tanh();
    /// let loss = h.sub(plain.constant(&target)).square().sum();
    /// let expected = plain.backward(loss).unwrap();
    /// assert_eq!(grads.wrt(&w), expected.wrt(&w)); // bitwise
    /// assert_eq!(grads.wrt(&b), expected.wrt(&b));
    /// ```
    ///
    /// A parameter is an input: a block that puts one on its own tape (`tape.param`, a
    /// layer's forward) is refused with an error, since that parameter's gradient would
    /// stay on the block's tape. Pass the weights in `inputs` (as `w` and `b` above) and
    /// compute with them there.
    ///
    /// # Errors
    ///
    /// `ForeignTensor` for an input from another tape; `Parameter` for a block that puts a
    /// parameter on its own tape; any error of `f`.
    #[doc(alias = "checkpoint")]
    #[track_caller]
    pub fn remat<'a, B>(&'t self, inputs: &[Tensor<'t, F>], f: B) -> Result<Tensor<'t, F>>
    where
        'a: 't,
        B: for<'s, 'u> Fn(Inputs<'s, 'u, 'a, F>) -> Result<Tensor<'u, F>> + Copy + 'a,
    {
        let location = Location::caller();
        if inputs.iter().any(|t| !std::ptr::eq(t.tape, self)) {
            return Err(Error::new("remat", ErrorKind::ForeignTensor, location));
        }
        let value: std::result::Result<Result<Array2<F>>, NodeId> = {
            let inner = self.inner.borrow();
            let views: std::result::Result<Vec<_>, NodeId> = inputs
                .iter()
                .map(|t| view_of(&inner.values, t.id))
                .collect();
            views.map(|views| {
                let block = Tape::unobserved();
                let xs: Vec<Tensor<'_, F>> = views.into_iter().map(|v| block.constant(v)).collect();
                let y = f(Inputs::new(&block, &xs))?;
                let params = block.inner.borrow().params.len();
                if params > 0 {
                    return Err(hidden_parameters(params, location));
                }
                Ok(block.take_value(y))
            })
        };
        let value = match value {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => return Err(e),
            Err(lost) => Err(lost),
        };
        let shape = match &value {
            Ok(v) => v.dim(),
            // an input was released: run the block on zeros of the inputs' shapes for
            // its output's shape (the value stays released)
            Err(_) => {
                let block = Tape::unobserved();
                let xs: Vec<Tensor<'_, F>> = inputs
                    .iter()
                    .map(|t| block.constant(Array2::zeros(t.shape)))
                    .collect();
                f(Inputs::new(&block, &xs))?.shape
            }
        };
        let rule = self
            .track(inputs)
            .then(|| (Saves::all_inputs(inputs.len()), Rule::boxed(Remat::new(f))));
        Ok(self.record("remat", value, shape, inputs, rule, location))
    }
}

/// The error for a block that put `n` parameters on its own tape (`tape.param`, a layer's
/// forward): their gradients would stay on the block's tape, so the main tape's would be
/// missing, silently.
fn hidden_parameters(n: usize, location: &'static Location<'static>) -> Error {
    let kind = ErrorKind::Parameter {
        name: "f",
        value: format!("a block that puts {n} parameter(s) on its own tape"),
        rule: "a block reads what it differentiates as its inputs: pass each parameter \
               (a layer's weights) in `inputs` and use it from there (on the block's own tape \
               it would get no gradient); data the block only reads goes on as constants",
    };
    Error::new("remat", kind, location)
}

/// The rule of a block: run it again and back-propagate through it.
struct Remat<F: Float> {
    /// The block, boxed, with the lifetime of the data it borrows erased: a rule must be
    /// `'static` to sit on the tape, while the block borrows data for `'a` (which outlives
    /// the tape).
    block: NonNull<Erased<F>>,
}

impl<F: Float> Remat<F> {
    fn new<'a, B>(f: B) -> Self
    where
        B: for<'s, 'u> Fn(Inputs<'s, 'u, 'a, F>) -> Result<Tensor<'u, F>> + Copy + 'a,
    {
        let boxed: Box<Block<'a, F>> = Box::new(f);
        let raw = Box::into_raw(boxed);
        // SAFETY: only the lifetime `'a` changes (to `'static`), so the fat pointer's
        // layout and vtable are the same. What makes the erasure sound:
        // - the block is called only by this rule, which only the tape's backward and
        //   `Tape::grad` run, and they run while the tape is used, that is within its
        //   lifetime `'t`, which `'a` outlives: the data the block borrows is alive;
        // - dropping it (when the tape drops its rules, maybe after `'a` ended) runs no
        //   code of the block: `B: Copy` has no drop glue, so only the box's memory is
        //   freed.
        let erased: *mut Erased<F> = unsafe { std::mem::transmute(raw) };
        Remat {
            block: NonNull::new(erased).expect("a box is not null"),
        }
    }

    /// Runs the block on `xs`, tensors of `tape`.
    fn run<'u>(&self, tape: &'u Tape<'u, F>, xs: &[Tensor<'u, F>]) -> Result<Tensor<'u, F>> {
        // SAFETY: the box lives until `self` drops it; see `new` for its data.
        let block = unsafe { self.block.as_ref() };
        block(Inputs::new(tape, xs))
    }
}

impl<F: Float> Drop for Remat<F> {
    fn drop(&mut self) {
        // SAFETY: made by `Box::into_raw` in `new`, dropped once, here.
        drop(unsafe { Box::from_raw(self.block.as_ptr()) });
    }
}

impl<F: Float> Backward<F> for Remat<F> {
    fn backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
        crate::error::or_panic(self.try_backward(g, ctx));
    }

    /// Runs the block on a fresh tape with the saved inputs as leaves (a gradient where
    /// the main tape wants one), and backward from its output with seed `G`.
    fn try_backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) -> Result<()> {
        let n = ctx.inputs();
        let block = Tape::unobserved();
        let xs: Vec<Tensor<'_, F>> = (0..n)
            .map(|k| block.leaf(ctx.input(k), ctx.needs_grad(k)))
            .collect();
        let y = self.run(&block, &xs)?;
        if !y.requires_grad {
            // the block's result depends on no input that wants a gradient (it ignores
            // them, or cuts the graph inside): nothing flows back
            return Ok(());
        }
        // the main tape's buffers for its inputs' gradients, if it was handed any (`reuse`)
        let mut spare: Vec<Option<Array2<F>>> = Vec::new();
        for (k, x) in xs.iter().enumerate() {
            if let Some(buffer) = ctx.spare(k) {
                if spare.len() <= x.id {
                    spare.resize_with(x.id + 1, || None);
                }
                spare[x.id] = Some(buffer);
            }
        }
        let opts = BackwardOptions::new().seed(g).spare(spare);
        let mut grads = block.backward_with(y, opts)?;
        for (k, x) in xs.iter().enumerate() {
            if ctx.needs_grad(k) {
                // an input given twice is (unless empty) one leaf of the block's tape: its
                // gradient, summed over both uses, is taken once; one the output does not
                // depend on gets nothing, as in `backward_tensor`
                if let Some(d) = grads.take_reached(*x) {
                    ctx.accumulate(k, d);
                }
            }
        }
        Ok(())
    }

    /// Re-runs the block on the main tape, on a fresh identity of each input (so that the
    /// inner pass stops at the block's boundary), and records its VJP there.
    fn backward_tensor<'t>(&self, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
        let n = ctx.inputs();
        let tape = ctx.tape();
        let inputs: Vec<Tensor<'t, F>> = (0..n).map(|k| ctx.input(k)).collect();
        // recorded even inside `no_grad`: the VJP is found through these rules
        let (xs, y) = tape.with_grad_enabled(true, || {
            let xs: Vec<Tensor<'t, F>> = inputs.iter().map(|x| x.mul_scalar(F::one())).collect();
            self.run(tape, &xs).map(|y| (xs, y))
        })?;
        // an input the block's output does not depend on gets nothing (not zeros: a zero
        // would still meet the NaN of a derivative upstream, which the ops written out
        // never do)
        let ds = tape.grad_seeded_reached(y, g, &xs)?;
        for (k, d) in ds.into_iter().enumerate() {
            if let Some(d) = d.filter(|_| ctx.needs_grad(k)) {
                ctx.accumulate(k, d)?;
            }
        }
        Ok(())
    }
}
