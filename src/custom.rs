//! Ops of your own, with their own derivative (PyTorch's `autograd.Function`, JAX's
//! `custom_vjp`).
//!
//! Implement [`CustomOp`]: the output's shape, the forward on ndarray views, what the VJP
//! reads, and the VJP on arrays; optionally the VJP in tensor ops too. [`apply`] records
//! the op like a built-in one: a `try_` form ([`try_apply`]) with typed shape errors
//! naming the op and the caller's line, the values it reads kept until its VJP has run
//! and released after, `retain_graph`, gradients accumulated into existing buffers, and
//! [`check::gradcheck`](crate::check::gradcheck) to test it.
//!
//! The VJP on arrays is first order: backward uses it, and so does [`Tape::grad`](crate::Tape::grad) for the
//! first derivative, but a second derivative through it is a `NotDifferentiable` error
//! naming the op. A VJP written in tensor ops as well ([`CustomOp::vjp_tensor`]) can be
//! differentiated again, to any order, like the built-in rules.
//!
//! ```
//! use ndarray::{Array2, ArrayView2};
//! use tapegrad::custom::{self, CustomOp, Grads, Reads, Saved, TensorGrads};
//! use tapegrad::{Tape, Tensor};
//!
//! /// `ln(1 + eˣ)`, stable for large inputs, with `d/dx = σ(x)`.
//! struct Softplus;
//!
//! impl CustomOp<f64> for Softplus {
//!     fn name(&self) -> &'static str {
//!         "softplus"
//!     }
//!     fn output_shape(&self, inputs: &[(usize, usize)]) -> Result<(usize, usize), &'static str> {
//!         Ok(inputs[0])
//!     }
//!     fn forward(&self, x: &[ArrayView2<'_, f64>]) -> Array2<f64> {
//!         x[0].mapv(|v| v.max(0.0) + (-v.abs()).exp().ln_1p())
//!     }
//!     fn reads(&self) -> Reads {
//!         Reads::nothing().input(0)
//!     }
//!     fn vjp(&self, g: ArrayView2<'_, f64>, saved: &Saved<'_, f64>, grads: &mut Grads<'_, f64>) {
//!         let x = saved.input(0).expect("declared in reads");
//!         grads.add(0, &g * &x.mapv(|v| 1.0 / (1.0 + (-v).exp())));
//!     }
//!     fn vjp_tensor<'t>(&self, g: Tensor<'t, f64>, grads: &mut TensorGrads<'_, '_, 't, f64>)
//!         -> Option<tapegrad::Result<()>> {
//!         let d = g.try_mul(grads.input(0).sigmoid());
//!         Some(d.and_then(|d| grads.add(0, d)))
//!     }
//! }
//!
//! let tape = Tape::new();
//! let x = tape.param(ndarray::array![[0.0, 1000.0]]);
//! let y = custom::apply(Softplus, &[x]);
//! assert_eq!(y.value(), ndarray::array![[2f64.ln(), 1000.0]]);
//! let dy = tape.grad(y.sum(), &[x]).unwrap()[0]; // σ(x), a tensor
//! let d2y = tape.grad(dy.sum(), &[x]).unwrap()[0]; // σ(x)(1 − σ(x)): second order
//! assert_eq!(d2y.value()[[0, 0]], 0.25);
//! ```

use std::panic::Location;
use std::rc::Rc;

use ndarray::{Array2, ArrayView2};

use crate::error::{Error, ErrorKind, Result, check_size, or_panic, shape_error};
use crate::grad::Ctx;
use crate::higher::TensorCtx;
use crate::kernels::broadcast_shape;
use crate::rule::{Backward, Rule, Saves};
use crate::{Float, Tensor};

/// An op of your own: its forward and its vector-Jacobian product. See the
/// [module docs](self).
pub trait CustomOp<F: Float>: 'static {
    /// The op's name, for errors and the tape's record (`"softplus"`).
    fn name(&self) -> &'static str;

    /// The output's shape for inputs of these shapes, or what is wrong with them (in words,
    /// as in the op's docs: "the inputs must have the same shape"): that becomes a
    /// `Shape` error naming the op, the first two shapes and the caller's line.
    ///
    /// # Errors
    ///
    /// The requirement the shapes do not meet.
    fn output_shape(
        &self,
        inputs: &[(usize, usize)],
    ) -> std::result::Result<(usize, usize), &'static str>;

    /// The forward: the output from the inputs' values (views with any strides). It must
    /// have the shape [`CustomOp::output_shape`] gave.
    fn forward(&self, inputs: &[ArrayView2<'_, F>]) -> Array2<F>;

    /// The values [`CustomOp::vjp`] reads: they stay on the tape (without a copy) until it
    /// has run, then are released. By default, every input (of the first seven).
    fn reads(&self) -> Reads {
        Reads::all_inputs()
    }

    /// The VJP on arrays, first order: given `G = ∂L/∂Y` and the values declared in
    /// [`CustomOp::reads`], add `∂L/∂Xₖ` for each input `k` that needs one
    /// ([`Grads::needs`]) through [`Grads::add`].
    fn vjp(&self, g: ArrayView2<'_, F>, saved: &Saved<'_, F>, grads: &mut Grads<'_, F>);

    /// The VJP in tensor ops, for derivatives of any order: given `G` as a tensor, add each
    /// input's contribution, computed from `G` and the op's inputs and output as tensors
    /// ([`TensorGrads::input`], [`TensorGrads::output`]), through [`TensorGrads::add`].
    /// `None` (the default) means there is none: the op is first order only.
    fn vjp_tensor<'t>(
        &self,
        g: Tensor<'t, F>,
        grads: &mut TensorGrads<'_, '_, 't, F>,
    ) -> Option<Result<()>> {
        let _ = (g, grads);
        None
    }
}

/// What a custom op's VJP reads: some of its inputs and/or its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reads {
    inputs: u8,
    output: bool,
}

impl Reads {
    /// Nothing (a linear op whose VJP needs only `G`).
    pub fn nothing() -> Self {
        Reads {
            inputs: 0,
            output: false,
        }
    }

    /// Every input (of the first seven).
    pub fn all_inputs() -> Self {
        Reads {
            inputs: 0x7f,
            output: false,
        }
    }

    /// Also input `k` (inputs 0 to 6 can be read).
    ///
    /// # Panics
    ///
    /// If `k > 6`.
    pub fn input(mut self, k: usize) -> Self {
        assert!(k < 7, "a custom op's VJP can read inputs 0 to 6");
        self.inputs |= 1 << k;
        self
    }

    /// Also the op's output.
    pub fn output(mut self) -> Self {
        self.output = true;
        self
    }

    fn saves(self, inputs: usize) -> Saves {
        let mut s = Saves::NONE.output_if(self.output);
        for k in 0..inputs.min(7) {
            s = s.input_if(k, self.inputs & (1 << k) != 0);
        }
        s
    }
}

/// The values a custom op's VJP declared it reads ([`CustomOp::reads`]).
pub struct Saved<'a, F> {
    inputs: Vec<Option<ArrayView2<'a, F>>>,
    output: Option<ArrayView2<'a, F>>,
}

impl<'a, F> Saved<'a, F> {
    /// Input `k`'s value, if the VJP declared it reads it.
    pub fn input(&self, k: usize) -> Option<ArrayView2<'a, F>> {
        self.inputs.get(k).copied().flatten()
    }

    /// The output's value, if the VJP declared it reads it.
    pub fn output(&self) -> Option<ArrayView2<'a, F>> {
        self.output
    }
}

/// Where a custom op's VJP on arrays adds its gradients.
pub struct Grads<'c, F: Float> {
    sink: Sink<'c, F>,
    /// The inputs' shapes and the output's, which every contribution is checked against.
    shapes: &'c [(usize, usize)],
    output: (usize, usize),
    /// The first contribution that did not fit: backward returns it as the op's error
    /// once the VJP has returned.
    misfit: Option<ErrorKind>,
}

enum Sink<'c, F: Float> {
    /// First-order backward: into the gradient slots.
    Slots(&'c mut dyn AddTo<F>),
    /// `Tape::grad` through a first-order op: collected (summed down to each input's
    /// shape), to be recorded.
    Collect(&'c mut Vec<Option<Array2<F>>>, &'c [bool]),
}

/// The first-order accumulation, behind a trait object (its lifetimes stay inside).
trait AddTo<F: Float> {
    fn needs(&self, k: usize) -> bool;
    fn add(&mut self, k: usize, d: Array2<F>);
}

impl<F: Float> AddTo<F> for Ctx<'_, '_, F> {
    fn needs(&self, k: usize) -> bool {
        self.needs_grad(k)
    }
    fn add(&mut self, k: usize, d: Array2<F>) {
        self.accumulate(k, d);
    }
}

/// Why contribution `d` (of shape `given`) cannot go to input `k`: it must have the
/// input's shape, or the output's when the input broadcasts to it. `None` if it fits.
fn misfit(
    shapes: &[(usize, usize)],
    output: (usize, usize),
    k: usize,
    given: (usize, usize),
) -> Option<ErrorKind> {
    let expected = shapes.get(k).copied();
    let fits = expected.is_some_and(|shape| {
        given == shape || (given == output && broadcast_shape(shape, output) == Some(output))
    });
    (!fits).then_some(ErrorKind::Contribution {
        input: k,
        inputs: shapes.len(),
        expected,
        output,
        given,
    })
}

impl<F: Float> Grads<'_, F> {
    /// Whether input `k` needs a gradient: skip the work for those that do not.
    pub fn needs(&self, k: usize) -> bool {
        match &self.sink {
            Sink::Slots(ctx) => k < self.shapes.len() && ctx.needs(k),
            Sink::Collect(_, needs) => needs.get(k).copied().unwrap_or(false),
        }
    }

    /// `dXₖ += d`: added in place into the gradient's existing buffer (or moved in as
    /// the first contribution). Several contributions to one input are summed.
    ///
    /// `d` has input `k`'s shape, or the op's output shape when input `k` broadcasts to
    /// it (it is then summed down: a bias's gradient from the output's). Any other shape,
    /// or an input the op does not have, is not added: backward (and
    /// [`Tape::grad`](crate::Tape::grad)) then fails with
    /// [`ErrorKind::Contribution`], naming the op, the
    /// input and both shapes.
    pub fn add(&mut self, k: usize, d: Array2<F>) {
        if let Some(kind) = misfit(self.shapes, self.output, k, d.dim()) {
            self.misfit.get_or_insert(kind);
            return;
        }
        if !self.needs(k) {
            return;
        }
        match &mut self.sink {
            Sink::Slots(ctx) => ctx.add(k, d),
            Sink::Collect(out, _) => {
                let shape = self.shapes[k];
                let d = if d.dim() == shape {
                    d
                } else {
                    crate::kernels::sum_to_shape(d.view(), shape)
                };
                out[k] = Some(match out[k].take() {
                    Some(s) => s + &d,
                    None => d,
                })
            }
        }
    }
}

/// Where a custom op's VJP in tensor ops reads its values and adds its gradients.
pub struct TensorGrads<'c, 'a, 't, F: Float> {
    ctx: &'c mut TensorCtx<'a, 't, F>,
    /// The op's name, for errors.
    name: &'static str,
}

impl<'t, F: Float> TensorGrads<'_, '_, 't, F> {
    /// Whether input `k` needs a gradient.
    pub fn needs(&self, k: usize) -> bool {
        k < self.ctx.inputs() && self.ctx.needs_grad(k)
    }

    /// Input `k`, as a tensor of the tape.
    ///
    /// # Panics
    ///
    /// If the op has no input `k`.
    pub fn input(&self, k: usize) -> Tensor<'t, F> {
        self.ctx.input(k)
    }

    /// The op's output, as a tensor of the tape.
    pub fn output(&self) -> Tensor<'t, F> {
        self.ctx.output()
    }

    /// A constant on the tape (a mask): no gradient flows into it.
    pub fn constant(&self, a: Array2<F>) -> Tensor<'t, F> {
        self.ctx.constant(a)
    }

    /// `dXₖ += d`, recorded. As in [`Grads::add`], `d` has input `k`'s shape, or the
    /// op's output shape when input `k` broadcasts to it (it is then summed down).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Contribution`] for a `d` of any other
    /// shape or an input the op does not have, naming the op and the line that recorded
    /// it; `ForeignTensor` for a `d` from another tape.
    pub fn add(&mut self, k: usize, d: Tensor<'t, F>) -> Result<()> {
        let output = self.ctx.output().shape();
        let shapes: Vec<(usize, usize)> = (0..self.ctx.inputs())
            .map(|i| self.ctx.input(i).shape())
            .collect();
        if let Some(kind) = misfit(&shapes, output, k, d.shape()) {
            return Err(Error::new(self.name, kind, self.ctx.recorded_at()));
        }
        if !std::ptr::eq(d.tape(), self.ctx.tape()) {
            return Err(Error::new(
                self.name,
                ErrorKind::ForeignTensor,
                self.ctx.location,
            ));
        }
        if self.needs(k) {
            self.ctx.accumulate(k, d)?;
        }
        Ok(())
    }
}

/// The recorded rule of a custom op.
struct CustomRule<O> {
    op: Rc<O>,
}

impl<F: Float, O: CustomOp<F>> Backward<F> for CustomRule<O> {
    fn is_custom(&self) -> bool {
        true
    }

    fn backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
        // (backward calls `try_backward`; this form drops a misfit's error)
        let _ = self.try_backward(g, ctx);
    }

    fn try_backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) -> Result<()> {
        let reads = self.op.reads();
        let saved = Saved {
            inputs: (0..ctx.inputs.len())
                .map(|k| (k < 7 && reads.inputs & (1 << k) != 0).then(|| ctx.input(k)))
                .collect(),
            output: reads.output.then(|| ctx.output()),
        };
        let shapes: Vec<(usize, usize)> = (0..ctx.inputs()).map(|k| ctx.input_shape(k)).collect();
        let node = &ctx.nodes[ctx.output];
        let (output, location) = (node.shape, node.location);
        let mut grads = Grads {
            sink: Sink::Slots(ctx),
            shapes: &shapes,
            output,
            misfit: None,
        };
        self.op.vjp(g.view(), &saved, &mut grads);
        match grads.misfit {
            Some(kind) => Err(Error::new(self.op.name(), kind, location)),
            None => Ok(()),
        }
    }

    fn backward_tensor<'t>(&self, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
        let name = self.op.name();
        let tensor_form = self.op.vjp_tensor(g, &mut TensorGrads { ctx, name });
        if let Some(done) = tensor_form {
            return done;
        }
        // First order only: the VJP on arrays gives the values; each contribution is
        // recorded as a result of G and the op's inputs whose rule refuses a gradient.
        let n = ctx.inputs();
        let inputs: Vec<Tensor<'t, F>> = (0..n).map(|k| ctx.input(k)).collect();
        let values = inputs
            .iter()
            .map(|t| t.try_value())
            .collect::<Result<Vec<_>>>()?;
        let (output, g_value) = (ctx.output().try_value()?, g.try_value()?);
        let reads = self.op.reads();
        let saved = Saved {
            inputs: values
                .iter()
                .enumerate()
                .map(|(k, v)| (k < 7 && reads.inputs & (1 << k) != 0).then(|| v.view()))
                .collect(),
            output: reads.output.then(|| output.view()),
        };
        let needs: Vec<bool> = (0..n).map(|k| ctx.needs_grad(k)).collect();
        let shapes: Vec<(usize, usize)> = inputs.iter().map(|t| t.shape()).collect();
        let mut out = vec![None; n];
        let mut grads = Grads {
            sink: Sink::Collect(&mut out, &needs),
            shapes: &shapes,
            output: output.dim(),
            misfit: None,
        };
        self.op.vjp(g_value.view(), &saved, &mut grads);
        if let Some(kind) = grads.misfit {
            return Err(Error::new(name, kind, ctx.recorded_at()));
        }
        let tape = g.tape();
        let mut operands = vec![g];
        operands.extend(&inputs);
        for (k, d) in out.into_iter().enumerate() {
            if let Some(d) = d {
                let shape = d.dim();
                let rule = tape
                    .track(&operands)
                    .then(|| (Saves::NONE, Rule::FirstOrderOnly(name)));
                let t = tape.record(name, Ok(d), shape, &operands, rule, ctx.location);
                ctx.accumulate(k, t)?;
            }
        }
        Ok(())
    }
}

/// Records the custom op `op` on `inputs`: see the [module docs](self).
///
/// # Panics
///
/// As [`try_apply`] fails.
#[track_caller]
pub fn apply<'t, F: Float, O: CustomOp<F>>(op: O, inputs: &[Tensor<'t, F>]) -> Tensor<'t, F> {
    or_panic(try_apply(op, inputs))
}

/// Records the custom op `op` on `inputs`, or an error.
///
/// # Errors
///
/// `Empty` for no inputs, `ForeignTensor` if they are on different tapes, `Shape` if
/// [`CustomOp::output_shape`] refuses them (or the forward returns another shape than it
/// gave), `TooLarge` if the output's size does not fit; each naming the op and the
/// caller's line.
#[track_caller]
pub fn try_apply<'t, F: Float, O: CustomOp<F>>(
    op: O,
    inputs: &[Tensor<'t, F>],
) -> Result<Tensor<'t, F>> {
    let location = Location::caller();
    let name = op.name();
    let Some(&first) = inputs.first() else {
        return Err(Error::new(
            name,
            ErrorKind::Empty { shape: (0, 0) },
            location,
        ));
    };
    for t in inputs {
        first.same_tape(*t, name, location)?;
    }
    let shapes: Vec<(usize, usize)> = inputs.iter().map(|t| t.shape()).collect();
    let second = shapes.get(1).copied().unwrap_or(shapes[0]);
    let shape = op
        .output_shape(&shapes)
        .map_err(|rule| shape_error(name, shapes[0], second, rule, location))?;
    check_size::<F>(name, shape, location)?;
    let tape = first.tape();
    let y = {
        let inner = tape.inner();
        let views: std::result::Result<Vec<_>, _> = inputs
            .iter()
            .map(|t| crate::tape::view_of(&inner.values, t.id))
            .collect();
        views.map(|views| op.forward(&views))
    };
    if let Ok(y) = &y {
        if y.dim() != shape {
            let rule = "the forward's result must have the shape output_shape gave";
            return Err(shape_error(name, shape, y.dim(), rule, location));
        }
    }
    let rule = tape.track(inputs).then(|| {
        let saves = op.reads().saves(inputs.len());
        (saves, Rule::boxed(CustomRule { op: Rc::new(op) }))
    });
    Ok(tape.record(name, y, shape, inputs, rule, location))
}
