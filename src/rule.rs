//! The form of a VJP rule, and what a rule declares it will read.
//!
//! A rule is a pure function of what its op saved and of `G = ∂L/∂Y` for the op's output:
//! it adds `∂L/∂Xₖ` into the gradient slot of every input `k` that needs one, through
//! [`Ctx`](crate::grad::Ctx). Rules compute on plain arrays, accumulating in place.

use ndarray::Array2;

use crate::Float;
use crate::grad::Ctx;
use crate::tape::NodeId;

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

    pub(crate) fn run(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
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
    pub(crate) fn ids(self, node: NodeId, inputs: &[NodeId]) -> impl Iterator<Item = NodeId> + '_ {
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
