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
use std::rc::Rc;

use ndarray::Array2;

use crate::error::{Error, ErrorKind, Result};
use crate::grad::Ctx;
use crate::higher::TensorCtx;
use crate::rule::{Backward, Rule, Saves};
use crate::tape::{NodeId, view_of};
use crate::{BackwardOptions, Float, Tape, Tensor};

/// The most inputs a rematerialised block takes ([`Tape::remat`]).
pub const MAX_INPUTS: usize = 7;

/// A block: a function of its input tensors on any tape.
type Block<F> = dyn for<'s> Fn(&[Tensor<'s, F>]) -> Result<Tensor<'s, F>>;

impl<'t, F: Float> Tape<'t, F> {
    /// Records `f(inputs)` as one node whose intermediates are recomputed during backward
    /// instead of kept (gradient checkpointing; PyTorch's `torch.utils.checkpoint`, JAX's
    /// `remat`). Every tensor the block reads, parameters included, is one of `inputs`
    /// (at most [`MAX_INPUTS`]); the block is a function of them alone (`'static`: it
    /// captures no borrowed data) and must compute the same thing each time it is called.
    ///
    /// The gradients are bitwise those of writing `f(inputs)` out on the tape, at the cost
    /// of running `f` twice; the tape keeps only the block's inputs and output. The
    /// result is differentiable to any order ([`Tape::grad`] re-runs the block on this
    /// tape).
    ///
    /// The block is a closure written at the call, or a `fn` (a closure stored in a
    /// variable first does not get the signature for any tape that the call needs):
    ///
    /// ```
    /// use ndarray::Array2;
    /// use tapegrad::{Result, Tape, Tensor};
    ///
    /// fn layer<'s>(xs: &[Tensor<'s, f64>]) -> Result<Tensor<'s, f64>> {
    ///     Ok(xs[0].try_linear(xs[1], xs[2])?.tanh())
    /// }
    ///
    /// let x = Array2::from_shape_fn((4, 3), |(i, j)| (i + j) as f64 / 10.0);
    /// let w = Array2::from_shape_fn((3, 3), |(i, j)| (i * j) as f64 / 10.0 - 0.2);
    /// let b = Array2::from_elem((1, 3), 0.1);
    ///
    /// let tape = Tape::new();
    /// let (wt, bt) = (tape.param(&w), tape.param(&b));
    /// let h = tape.remat(&[tape.constant(&x), wt, bt], layer).unwrap();
    /// let h = tape.remat(&[h, wt, bt], |xs| Ok(xs[0].try_linear(xs[1], xs[2])?.tanh())).unwrap();
    /// let grads = tape.backward(h.sum()).unwrap();
    ///
    /// let plain = Tape::new();
    /// let (wp, bp) = (plain.param(&w), plain.param(&b));
    /// let h = plain.constant(&x).linear(wp, bp).tanh().linear(wp, bp).tanh();
    /// let expected = plain.backward(h.sum()).unwrap();
    /// assert_eq!(grads.wrt(&w), expected.wrt(&w)); // bitwise
    /// assert_eq!(grads.wrt(&b), expected.wrt(&b));
    /// ```
    ///
    /// # Errors
    ///
    /// `Parameter` for more than [`MAX_INPUTS`] inputs, `ForeignTensor` for an input from
    /// another tape, and any error of `f`.
    #[doc(alias = "checkpoint")]
    #[track_caller]
    pub fn remat<B>(&'t self, inputs: &[Tensor<'t, F>], f: B) -> Result<Tensor<'t, F>>
    where
        B: for<'s> Fn(&[Tensor<'s, F>]) -> Result<Tensor<'s, F>> + 'static,
    {
        let location = Location::caller();
        if inputs.len() > MAX_INPUTS {
            let kind = ErrorKind::Parameter {
                name: "inputs",
                value: inputs.len().to_string(),
                rule: "a block takes at most 7 tensors",
            };
            return Err(Error::new("remat", kind, location));
        }
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
                f(&xs).map(|y| block.take_value(y))
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
                f(&xs)?.shape
            }
        };
        let rule = self.track(inputs).then(|| {
            let saves = (0..inputs.len()).fold(Saves::NONE, |s, k| s.input_if(k, true));
            let block: Rc<Block<F>> = Rc::new(f);
            (saves, Rule::boxed(Remat { block }))
        });
        Ok(self.record("remat", value, shape, inputs, rule, location))
    }
}

/// The rule of a block: run it again and back-propagate through it.
struct Remat<F: Float> {
    block: Rc<Block<F>>,
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
        let y = (self.block)(&xs)?;
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
            (self.block)(&xs).map(|y| (xs, y))
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
