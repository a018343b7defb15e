//! The form of a VJP rule, and what a rule declares it will read.
//!
//! Every rule comes in two forms, side by side in each op's file:
//!
//! - the **array form** (`vjp`): given `G = ∂L/∂Y` as an array, it adds `∂L/∂Xₖ` into the
//!   gradient slot of every input `k` that needs one, through [`Ctx`]: plain arrays,
//!   fused passes, GEMM with beta = 1, in place. First-order backward runs only this form,
//!   so its speed is untouched by higher order.
//! - the **tensor form** (`vjp_tensor`): the same formula written in tensor ops, given `G`
//!   as a [`Tensor`] and the op's inputs and output as tensors of the same tape
//!   ([`TensorCtx`]). [`Tape::grad`](crate::Tape::grad) runs this form, so the gradients
//!   it returns are themselves recorded and can be differentiated again, to any order.
//!
//! The two forms are independent implementations of one formula: the gradient checks run
//! both and require equal results (`tests/gradcheck.rs`).

use std::panic::Location;
use std::rc::Rc;

use ndarray::Array2;

use crate::Float;
use crate::error::{Error, ErrorKind, Result};
use crate::grad::Ctx;
use crate::higher::TensorCtx;
use crate::tape::NodeId;
use crate::tensor::Tensor;

/// A rule that owns saved state (the fused losses' intermediates, `powi`'s exponent), in
/// both forms. A rule is a pure function of what it saved and `G` (it takes `&self`),
/// which is what makes `retain_graph` and the tensor form possible.
pub(crate) trait Backward<F: Float> {
    /// The array form: adds each input's contribution through `ctx`.
    fn backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>);

    /// The array form, for a rule that can fail (one that runs user code again, like a
    /// rematerialised block). What backward calls; by default [`Backward::backward`].
    fn try_backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) -> Result<()> {
        self.backward(g, ctx);
        Ok(())
    }

    /// The tensor form: adds each input's contribution, as a tensor, through `ctx`.
    fn backward_tensor<'t>(&self, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()>;

    /// Whether this is a custom op's rule ([`crate::custom`]), whose name is the user's:
    /// explain mode then names its VJP instead of a built-in's equation.
    fn is_custom(&self) -> bool {
        false
    }
}

/// The array form of a rule without owned state: `(param, G, ctx)`, where `param` is the
/// op's one scalar (the `s` of `mul_scalar`, the `1/n` of `mean`; unused by most).
pub(crate) type RuleFn<F> = fn(F, Array2<F>, &mut Ctx<'_, '_, F>);

/// The tensor form of a rule without owned state: `(param, G, ctx)`.
pub(crate) type TensorRuleFn<F> =
    for<'a, 't> fn(F, Tensor<'t, F>, &mut TensorCtx<'a, 't, F>) -> Result<()>;

/// A recorded VJP rule. Most rules are a pair of plain functions of one scalar parameter:
/// no allocation and no virtual call per op, which is most of what a tiny op costs. Rules
/// that own saved arrays are reference-counted objects.
pub(crate) enum Rule<F: Float> {
    Fn {
        vjp: RuleFn<F>,
        tensor: TensorRuleFn<F>,
        param: F,
    },
    Boxed(Rc<dyn Backward<F>>),
    /// The result of a first-order-only VJP computed by `Tape::grad` (a custom op whose
    /// VJP is written on arrays): a gradient reaching it is an error naming the op.
    FirstOrderOnly(&'static str),
    /// A gradient that does not exist at the point where the op was called (`slogdet` of a
    /// singular matrix; `inv`'s at a matrix singular to working precision): a gradient
    /// reaching it is this error, naming the op and its line.
    #[cfg_attr(not(feature = "linalg"), allow(dead_code))]
    Undefined(Box<Error>),
}

impl<F: Float> Rule<F> {
    /// A rule given by its two forms, without a parameter.
    pub(crate) fn new(vjp: RuleFn<F>, tensor: TensorRuleFn<F>) -> Self {
        Self::with_param(vjp, tensor, F::zero())
    }

    /// A rule given by its two forms and the op's scalar parameter.
    pub(crate) fn with_param(vjp: RuleFn<F>, tensor: TensorRuleFn<F>, param: F) -> Self {
        Rule::Fn { vjp, tensor, param }
    }

    /// The rule of a gradient that does not exist where `op` was called (at `location`):
    /// a gradient reaching it is the error `kind`, naming both.
    #[cfg_attr(not(feature = "linalg"), allow(dead_code))]
    pub(crate) fn undefined(
        op: &'static str,
        kind: ErrorKind,
        location: &'static Location<'static>,
    ) -> Self {
        Rule::Undefined(Box::new(Error::new(op, kind, location)))
    }

    /// A rule that owns state.
    pub(crate) fn boxed(rule: impl Backward<F> + 'static) -> Self {
        Rule::Boxed(Rc::new(rule))
    }

    /// Runs the array form.
    ///
    /// # Errors
    ///
    /// `NotDifferentiable` for a first-order-only result (at `location`, where backward
    /// was called); the recorded error of an undefined gradient.
    pub(crate) fn run(
        &self,
        g: Array2<F>,
        ctx: &mut Ctx<'_, '_, F>,
        location: &'static Location<'static>,
    ) -> Result<()> {
        match self {
            Rule::Fn { vjp, param, .. } => vjp(*param, g, ctx),
            Rule::Boxed(rule) => rule.try_backward(g, ctx)?,
            Rule::FirstOrderOnly(op) => {
                return Err(Error::new(op, ErrorKind::NotDifferentiable, location));
            }
            Rule::Undefined(e) => return Err((**e).clone()),
        }
        Ok(())
    }

    /// A handle on the tensor form that does not borrow the tape (the tensor form records
    /// on the tape while it runs).
    pub(crate) fn tensor_form(&self) -> TensorRule<F> {
        match self {
            Rule::Fn { tensor, param, .. } => TensorRule::Fn(*tensor, *param),
            Rule::Boxed(rule) => TensorRule::Boxed(Rc::clone(rule)),
            Rule::FirstOrderOnly(op) => TensorRule::FirstOrderOnly(op),
            Rule::Undefined(e) => TensorRule::Undefined((**e).clone()),
        }
    }
}

/// The tensor form of a recorded rule, detached from the tape ([`Rule::tensor_form`]).
pub(crate) enum TensorRule<F: Float> {
    Fn(TensorRuleFn<F>, F),
    Boxed(Rc<dyn Backward<F>>),
    FirstOrderOnly(&'static str),
    Undefined(Error),
}

impl<F: Float> TensorRule<F> {
    /// Runs the tensor form.
    pub(crate) fn run<'t>(&self, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
        match self {
            TensorRule::Fn(f, param) => f(*param, g, ctx),
            TensorRule::Boxed(rule) => rule.backward_tensor(g, ctx),
            TensorRule::FirstOrderOnly(op) => {
                Err(Error::new(op, ErrorKind::NotDifferentiable, ctx.location))
            }
            TensorRule::Undefined(e) => Err(e.clone()),
        }
    }
}

/// Which values a rule will read during backward: inputs by position (bits 0..14), every
/// input (bit 14: a rematerialised block, whatever its number of inputs) and the op's own
/// output (bit 15). The engine keeps exactly these alive until the rule has run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Saves(u16);

impl Saves {
    /// The inputs that can be saved one by one.
    pub(crate) const INPUTS: usize = 14;
    const ALL_INPUTS: u16 = 1 << 14;
    const OUTPUT: u16 = 1 << 15;

    /// Saves nothing (add, sum, transpose).
    pub(crate) const NONE: Saves = Saves(0);

    /// Saves the op's output (sigmoid, tanh, exp, ...).
    pub(crate) const fn output() -> Saves {
        Saves(Self::OUTPUT)
    }

    /// Saves every input of `n`, however many.
    pub(crate) const fn all_inputs(n: usize) -> Saves {
        if n <= Self::INPUTS {
            // one bit each, as any rule's
            Saves(((1u32 << n) - 1) as u16)
        } else {
            Saves(Self::ALL_INPUTS)
        }
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
        assert!(
            k < Self::INPUTS,
            "a rule can save at most inputs 0..14 one by one"
        );
        if cond { Saves(self.0 | (1 << k)) } else { self }
    }

    /// The node ids saved, given the node and its inputs.
    pub(crate) fn ids(self, node: NodeId, inputs: &[NodeId]) -> impl Iterator<Item = NodeId> + '_ {
        let mut bits = self.0 & !Self::ALL_INPUTS;
        // every input, after the bits (a block of more inputs than there are bits)
        let mut rest: &[NodeId] = if self.0 & Self::ALL_INPUTS != 0 {
            inputs
        } else {
            &[]
        };
        std::iter::from_fn(move || {
            if bits != 0 {
                let k = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                return Some(if k == 15 { node } else { inputs[k] });
            }
            let (&first, tail) = rest.split_first()?;
            rest = tail;
            Some(first)
        })
    }
}
