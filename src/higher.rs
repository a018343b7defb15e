//! Higher-order derivatives: backward recorded on the tape.
//!
//! [`Tape::grad`] replays the tape in reverse like first-order backward, but runs each
//! rule's tensor form ([`crate::rule`]): `G` is a tensor, the rule's inputs and output
//! are the tensors of the tape, and every contribution is computed by recorded ops. The
//! gradients it returns are therefore tensors of the same tape, functions of the inputs
//! like any other: compose them, put them in a loss, and differentiate again (a gradient
//! penalty, a Hessian-vector product, a third derivative).
//!
//! Only nodes between the root and the tensors asked about are visited (a node whose
//! inputs depend on none of them contributes nothing). The pass keeps every value and
//! rule (it records new nodes that read them), so it can run any number of times and be
//! followed by first-order backward.

use std::panic::Location;

use ndarray::{Array2, Axis};

use crate::error::{Error, ErrorKind, Result};
use crate::tape::NodeId;
use crate::{Float, Tape, Tensor};

/// What a rule's tensor form sees: its inputs and output as tensors of the tape, and the
/// gradient slots (tensors) of its inputs, addressed by input position `k`.
pub(crate) struct TensorCtx<'a, 't, F: Float> {
    tape: &'t Tape<'t, F>,
    inputs: &'a [NodeId],
    output: NodeId,
    /// Whether each node depends on a tensor the pass differentiates with respect to.
    needed: &'a [bool],
    slots: &'a mut [Option<Tensor<'t, F>>],
    /// Where `Tape::grad` was called, for errors.
    pub(crate) location: &'static Location<'static>,
}

impl<'t, F: Float> TensorCtx<'_, 't, F> {
    /// Whether input `k` needs a gradient in this pass.
    pub(crate) fn needs_grad(&self, k: usize) -> bool {
        self.needed[self.inputs[k]]
    }

    /// The tape the rule records on.
    pub(crate) fn tape(&self) -> &'t Tape<'t, F> {
        self.tape
    }

    /// The number of inputs.
    pub(crate) fn inputs(&self) -> usize {
        self.inputs.len()
    }

    /// Input `k`, as a tensor.
    pub(crate) fn input(&self, k: usize) -> Tensor<'t, F> {
        self.tape.tensor(self.inputs[k])
    }

    /// The op's output, as a tensor.
    pub(crate) fn output(&self) -> Tensor<'t, F> {
        self.tape.tensor(self.output)
    }

    /// The rows and columns of input `k` that the op's output, a slice of it, views.
    pub(crate) fn slice_lanes(&self, k: usize) -> (crate::tape::Lane, crate::tape::Lane) {
        let inner = self.tape.inner();
        let shape = inner.nodes[self.inputs[k]].shape;
        crate::tape::slice_lanes(&inner.values, self.output, self.inputs[k], shape)
    }

    /// Where the op was recorded (the caller's line of its forward).
    pub(crate) fn recorded_at(&self) -> &'static Location<'static> {
        self.tape.inner().nodes[self.output].location
    }

    /// A constant (a mask, a one-hot matrix): no gradient flows into it.
    #[track_caller]
    pub(crate) fn constant(&self, a: Array2<F>) -> Tensor<'t, F> {
        self.tape.constant(a)
    }

    /// `dXₖ += d`. `d` may have the output's broadcast shape; it is summed down to the
    /// input's shape with recorded ops.
    pub(crate) fn accumulate(&mut self, k: usize, d: Tensor<'t, F>) -> Result<()> {
        let id = self.inputs[k];
        let shape = self.tape.tensor(id).shape();
        let d = sum_to(d, shape)?;
        self.slots[id] = Some(match self.slots[id].take() {
            Some(s) => s.try_add(d)?,
            None => d,
        });
        Ok(())
    }
}

/// `t` summed over the axes where `shape` has length 1 and `t` does not: the tensor form
/// of un-broadcasting.
pub(crate) fn sum_to<'t, F: Float>(
    t: Tensor<'t, F>,
    shape: (usize, usize),
) -> Result<Tensor<'t, F>> {
    let mut t = t;
    if shape.0 == 1 && t.rows() != 1 {
        t = t.try_sum_axis(Axis(0))?;
    }
    if shape.1 == 1 && t.cols() != 1 {
        t = t.try_sum_axis(Axis(1))?;
    }
    Ok(t)
}

impl<'t, F: Float> Tape<'t, F> {
    /// The gradients of the scalar (1 × 1) `y` with respect to each of `xs`, as tensors of
    /// this tape: backward itself recorded, so that the gradients can be composed and
    /// differentiated again, to any order (PyTorch's `create_graph=True`, JAX's `grad`).
    ///
    /// `xs` may be leaves or intermediate tensors. A tensor `y` does not depend on gets
    /// zeros. The tape keeps everything (as with `retain_graph`): `grad` can run again,
    /// and first-order [`Tape::backward`] can follow, through the recorded gradients too.
    ///
    /// # Examples
    ///
    /// The second derivative of `x³` is `6x`:
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[2.0]]);
    /// let y = x.powi(3);
    /// let dy = tape.grad(y, &[x]).unwrap()[0]; // 3x² = 12, a tensor of the tape
    /// assert_eq!(dy.item(), 12.0);
    /// let d2y = tape.grad(dy, &[x]).unwrap()[0]; // 6x = 12
    /// assert_eq!(d2y.item(), 12.0);
    /// let d3y = tape.grad(d2y, &[x]).unwrap()[0]; // 6
    /// assert_eq!(d3y.item(), 6.0);
    /// ```
    ///
    /// # Errors
    ///
    /// `NotScalar` if `y` is not 1 × 1 (see [`Tape::grad_seeded`]), `ForeignTensor` if a
    /// tensor is from another tape, `BackwardTwice` if a backward without `retain_graph`
    /// already released this tape's values, `NotDifferentiable` if the path crosses an op
    /// whose rule has no tensor form.
    #[track_caller]
    pub fn grad(&'t self, y: Tensor<'t, F>, xs: &[Tensor<'t, F>]) -> Result<Vec<Tensor<'t, F>>> {
        let location = Location::caller();
        if y.shape != (1, 1) {
            let kind = ErrorKind::NotScalar { shape: y.shape };
            return Err(Error::new("grad", kind, location));
        }
        let seed = self.scalar(F::one());
        self.grad_pass(y, seed, xs, location)
            .map(|ds| self.zeros_where_unreached(ds, xs))
    }

    /// The vector-Jacobian product of `y` with `seed` (a tensor of `y`'s shape) with
    /// respect to each of `xs`, recorded like [`Tape::grad`]. The seed may itself depend
    /// on tensors that require a gradient: the result is linear in it, which is how a
    /// Jacobian-vector product is computed by two reverse passes
    /// ([`functional::jvp`](crate::functional::jvp)).
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[1.0, 2.0]]);
    /// let y = x.square(); // elementwise: the Jacobian is diag(2x)
    /// let v = tape.constant(array![[10.0, 100.0]]);
    /// let vjp = tape.grad_seeded(y, v, &[x]).unwrap()[0];
    /// assert_eq!(vjp.value(), array![[20.0, 400.0]]);
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Tape::grad`], and `SeedShape` if `seed` does not have `y`'s shape.
    #[track_caller]
    pub fn grad_seeded(
        &'t self,
        y: Tensor<'t, F>,
        seed: Tensor<'t, F>,
        xs: &[Tensor<'t, F>],
    ) -> Result<Vec<Tensor<'t, F>>> {
        let location = Location::caller();
        if seed.shape != y.shape {
            let kind = ErrorKind::SeedShape {
                root: y.shape,
                seed: seed.shape,
            };
            return Err(Error::new("grad", kind, location));
        }
        self.grad_pass(y, seed, xs, location)
            .map(|ds| self.zeros_where_unreached(ds, xs))
    }

    /// [`Tape::grad_seeded`] with `None` for an `x` that `y` does not depend on (where
    /// the public form gives zeros): a rule that back-propagates through a block of ops
    /// passes nothing on for such an input, as the block written out would.
    #[track_caller]
    pub(crate) fn grad_seeded_reached(
        &'t self,
        y: Tensor<'t, F>,
        seed: Tensor<'t, F>,
        xs: &[Tensor<'t, F>],
    ) -> Result<Vec<Option<Tensor<'t, F>>>> {
        self.grad_pass(y, seed, xs, Location::caller())
    }

    /// The gradients of a pass, zeros of `x`'s shape where none reached `x`.
    fn zeros_where_unreached(
        &'t self,
        ds: Vec<Option<Tensor<'t, F>>>,
        xs: &[Tensor<'t, F>],
    ) -> Vec<Tensor<'t, F>> {
        xs.iter()
            .zip(ds)
            .map(|(x, g)| g.unwrap_or_else(|| self.constant(Array2::zeros(x.shape))))
            .collect()
    }

    fn grad_pass(
        &'t self,
        y: Tensor<'t, F>,
        seed: Tensor<'t, F>,
        xs: &[Tensor<'t, F>],
        location: &'static Location<'static>,
    ) -> Result<Vec<Option<Tensor<'t, F>>>> {
        let fail = |kind| Err(Error::new("grad", kind, location));
        let ours = |t: &Tensor<'t, F>| std::ptr::eq(t.tape, self);
        if !ours(&y) || !ours(&seed) || !xs.iter().all(ours) {
            return fail(ErrorKind::ForeignTensor);
        }
        if let Some(consumed) = self.inner().consumed {
            return Err(consumed.error("grad", location));
        }
        let n = y.id + 1;
        // which nodes depend on one of `xs`: only they can pass a gradient on
        let mut needed = vec![false; n];
        {
            let inner = self.inner();
            for x in xs.iter().filter(|x| x.id < n) {
                needed[x.id] = true;
            }
            for (id, node) in inner.nodes[..n].iter().enumerate() {
                if !needed[id] && node.rule.is_some() {
                    needed[id] = inner.inputs_of(node).iter().any(|&i| needed[i]);
                }
            }
        }
        let mut slots: Vec<Option<Tensor<'t, F>>> = vec![None; n];
        slots[y.id] = Some(seed);
        let mut found: Vec<Option<Tensor<'t, F>>> = vec![None; xs.len()];
        let mut inputs = Vec::new();
        for id in (0..n).rev() {
            if !needed[id] {
                continue;
            }
            let Some(g) = slots[id].take() else { continue };
            for (k, x) in xs.iter().enumerate() {
                if x.id == id {
                    found[k] = Some(g);
                }
            }
            let rule = {
                let inner = self.inner();
                let node = &inner.nodes[id];
                inputs.clear();
                inputs.extend_from_slice(inner.inputs_of(node));
                node.rule.as_ref().map(|r| r.tensor_form())
            };
            let Some(rule) = rule else { continue };
            if !inputs.iter().any(|&i| needed[i]) {
                continue;
            }
            let mut ctx = TensorCtx {
                tape: self,
                inputs: &inputs,
                output: id,
                needed: &needed,
                slots: &mut slots,
                location,
            };
            rule.run(g, &mut ctx)?;
        }
        Ok(found)
    }
}
