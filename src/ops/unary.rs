//! The machinery of elementwise functions as `(f, df)` pairs, dfdx style, shared by
//! `activation.rs` and `math.rs`.
//!
//! Each pair says whether `df` reads the output `Y` or the input `X`
//! (`DF_USES_OUTPUT`), and the rule saves exactly that one value. The VJP is always
//! `dX = G ∘ df(·)`: in array form one fused pass ([`Ctx::accumulate_map`]) that writes
//! into G's own buffer when it is the first contribution; in tensor form the same product
//! in recorded ops (`Unary::vjp_tensor`).

use std::panic::Location;

use ndarray::Array2;

use crate::error::Result;
use crate::grad::Ctx;
use crate::higher::TensorCtx;
use crate::rule::{Backward, Rule, Saves};
use crate::{Float, Tensor, kernels};

/// An elementwise function and its derivative, in both rule forms.
pub(super) trait Unary<F: Float>: Copy + 'static {
    /// The op's name in the rule table.
    const NAME: &'static str;
    /// Whether `df` takes the output `y` (true) or the input `x` (false).
    const DF_USES_OUTPUT: bool;
    fn f(self, x: F) -> F;
    fn df(self, x_or_y: F) -> F;
    /// The tensor form of the VJP: `G ∘ df(s)` in recorded ops, `s` being the saved `Y`
    /// or `X` as a tensor.
    fn vjp_tensor<'t>(self, g: Tensor<'t, F>, s: Tensor<'t, F>) -> Result<Tensor<'t, F>>;
    /// The rule to record.
    fn rule(self) -> Rule<F>;
    /// `y[i] = f(x[i])` through a vector kernel (`kernels::vector`), if the function has
    /// one: then `f` is that kernel's scalar form, and the two agree to the kernel's
    /// documented error.
    fn f_slice(self, _x: &[F], _y: &mut [F]) -> bool {
        false
    }
    /// Whether `f_slice` runs a kernel (then the forward takes it on every layout).
    const KERNEL: bool = false;
    /// `g[i] *= df(s[i])` through a vector kernel, if the derivative has one.
    fn vjp_slice(self, _g: &mut [F], _s: &[F]) -> bool {
        false
    }
}

/// `dX = G ∘ df(saved)`, one fused pass in G's buffer (a vector kernel where `df` has one
/// and both are in standard layout).
pub(super) fn unary_vjp<F: Float, U: Unary<F>>(u: U, mut g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    let s = if U::DF_USES_OUTPUT {
        ctx.output()
    } else {
        ctx.input(0)
    };
    if g.dim() == s.dim() {
        if let (Some(gs), Some(ss)) = (g.as_slice_mut(), s.as_slice()) {
            if u.vjp_slice(gs, ss) {
                return ctx.accumulate(0, g);
            }
        }
    }
    ctx.accumulate_map(0, g, s, |g, s| g * u.df(s));
}

/// `dX = G ∘ df(saved)`, recorded.
pub(super) fn unary_vjp_tensor<'t, F: Float, U: Unary<F>>(
    u: U,
    g: Tensor<'t, F>,
    ctx: &mut TensorCtx<'_, 't, F>,
) -> Result<()> {
    let s = if U::DF_USES_OUTPUT {
        ctx.output()
    } else {
        ctx.input(0)
    };
    ctx.accumulate(0, u.vjp_tensor(g, s)?)
}

/// The array form of a parameter-free function `U`.
fn unary_backward<F: Float, U: Unary<F> + Default>(_: F, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    unary_vjp(U::default(), g, ctx);
}

/// The tensor form of a parameter-free function `U`.
fn unary_tensor<'t, F: Float, U: Unary<F> + Default>(
    _: F,
    g: Tensor<'t, F>,
    ctx: &mut TensorCtx<'_, 't, F>,
) -> Result<()> {
    unary_vjp_tensor(U::default(), g, ctx)
}

/// The rule of a parameter-free function `U`.
pub(super) fn plain_rule<F: Float, U: Unary<F> + Default>() -> Rule<F> {
    Rule::new(unary_backward::<F, U>, unary_tensor::<F, U>)
}

/// A function of one scalar parameter, rebuilt from the rule's parameter: its rule is a
/// pair of plain functions too (no allocation).
pub(super) trait WithParam<F: Float>: Unary<F> {
    fn from_param(p: F) -> Self;
}

fn param_backward<F: Float, U: WithParam<F>>(p: F, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    unary_vjp(U::from_param(p), g, ctx);
}

fn param_tensor<'t, F: Float, U: WithParam<F>>(
    p: F,
    g: Tensor<'t, F>,
    ctx: &mut TensorCtx<'_, 't, F>,
) -> Result<()> {
    unary_vjp_tensor(U::from_param(p), g, ctx)
}

/// The rule of a function `U` of one parameter `p`.
pub(super) fn param_rule<F: Float, U: WithParam<F>>(p: F) -> Rule<F> {
    Rule::with_param(param_backward::<F, U>, param_tensor::<F, U>, p)
}

/// The rule of a function `U` that keeps other state (more than one parameter, an
/// integer exponent): an object.
struct UnaryBackward<U>(U);

impl<F: Float, U: Unary<F>> Backward<F> for UnaryBackward<U> {
    fn backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
        unary_vjp(self.0, g, ctx);
    }

    fn backward_tensor<'t>(&self, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
        unary_vjp_tensor(self.0, g, ctx)
    }
}

/// The rule of a function `U` with state.
pub(super) fn boxed_rule<F: Float, U: Unary<F>>(u: U) -> Rule<F> {
    Rule::boxed(UnaryBackward(u))
}

/// `f` of the saved value `s`, as a constant: the masks of piecewise functions (relu's
/// `[Y > 0]`, abs's sign), whose own derivative is 0 wherever it exists.
pub(super) fn constant_of<'t, F: Float>(
    s: Tensor<'t, F>,
    f: impl Fn(F) -> F,
) -> Result<Tensor<'t, F>> {
    Ok(s.tape().constant(s.try_value()?.mapv(f)))
}

impl<'t, F: Float> Tensor<'t, F> {
    /// Records the elementwise function `u` of `self`.
    pub(super) fn unary<U: Unary<F>>(
        self,
        u: U,
        location: &'static Location<'static>,
    ) -> Tensor<'t, F> {
        let tape = self.tape;
        let y = tape.read1(self.id, |x| {
            let fast = U::KERNEL.then(|| kernels::map_slices(x, |xs, ys| u.f_slice(xs, ys)));
            fast.flatten()
                .unwrap_or_else(|| kernels::map(x, |v| u.f(v)))
        });
        let rule = tape.track(&[self]).then(|| {
            let saves = if U::DF_USES_OUTPUT {
                Saves::output()
            } else {
                Saves::NONE.input_if(0, true)
            };
            (saves, u.rule())
        });
        tape.record(U::NAME, y, self.shape, &[self], rule, location)
    }
}
