//! [`Inputs`]: what a function given to tapegrad receives, so that it may borrow what it
//! captures.

use std::marker::PhantomData;
use std::ops::Deref;

use crate::{Float, LeafData, Tape, Tensor};

/// The tensors a function receives from the functional API ([`vjp`](super::vjp),
/// [`jvp`](super::jvp), [`hvp`](super::hvp), [`jacobian`](super::jacobian),
/// [`hessian`](super::hessian)), the gradient checks ([`crate::check`]) and
/// rematerialised blocks ([`Tape::remat`]): a slice (borrowed for `'s`) of tensors of a
/// tape `'t`. Index it, iterate it, pass `&xs` where a `&[Tensor]` is wanted.
///
/// `'a` is the lifetime of the data the function borrows: what its closure captures (a
/// model, inputs, targets). The type promises that this data outlives the tape
/// (`'a: 't`), which is what lets an ordinary closure call `layer.forward(xs[0])` on a
/// captured `&layer`, or put a captured `&x` on the tape with no clone
/// ([`Inputs::constant`]), as in JAX and PyTorch:
///
/// ```
/// use ndarray::array;
/// use tapegrad::check::{gradcheck, CheckOptions};
/// use tapegrad::functional;
/// use tapegrad::nn::{Linear, Module};
///
/// let layer = Linear { weight: array![[1.0, -1.0], [0.5, 2.0]], bias: Some(array![[0.1, 0.2]]) };
/// let (x, y) = (array![[1.0, 2.0], [-1.0, 0.5]], array![[0.0, 1.0], [1.0, 0.0]]);
///
/// // the layer's output with respect to its input, checked against finite differences
/// gradcheck(|xs| layer.forward(xs[0]).unwrap().tanh(), &[x.view()], &CheckOptions::default())
///     .unwrap();
/// // the Hessian of a loss in the input along v, the targets borrowed, not cloned
/// let v = array![[1.0, 0.0], [0.0, 0.0]];
/// let (_, hv) = functional::hvp(
///     |xs| layer.forward(xs[0]).unwrap().tanh().sub(xs.constant(&y)).square().sum(),
///     &[x.view()],
///     &[v.view()],
/// )
/// .unwrap();
/// assert_eq!(hv[0].dim(), (2, 2));
/// ```
///
/// A function written as a `fn` item takes the same type:
/// `fn f<'t>(xs: Inputs<'_, 't, '_, f64>) -> Tensor<'t, f64>`.
#[derive(Clone, Copy)]
pub struct Inputs<'s, 't, 'a, F: Float> {
    tape: &'t Tape<'t, F>,
    xs: &'s [Tensor<'t, F>],
    _data: PhantomData<&'t &'a ()>,
}

impl<'s, 't, 'a: 't, F: Float> Inputs<'s, 't, 'a, F> {
    /// `xs`, tensors of `tape`, for a function whose data lives at least as long as the
    /// tape (to call such a function on a tape of your own).
    pub fn new(tape: &'t Tape<'t, F>, xs: &'s [Tensor<'t, F>]) -> Self {
        Inputs {
            tape,
            xs,
            _data: PhantomData,
        }
    }
}

impl<'s, 't, F: Float> Inputs<'s, 't, '_, F> {
    /// The tape the tensors live on.
    pub fn tape(&self) -> &'t Tape<'t, F> {
        self.tape
    }

    /// Data the function borrows (or owns) as a constant of the tape: [`Tape::constant`],
    /// with no copy of borrowed data.
    #[track_caller]
    pub fn constant(&self, data: impl Into<LeafData<'t, F>>) -> Tensor<'t, F> {
        self.tape.constant(data)
    }

    /// The tensors, as a slice.
    pub fn as_slice(&self) -> &'s [Tensor<'t, F>] {
        self.xs
    }
}

impl<'t, F: Float> Deref for Inputs<'_, 't, '_, F> {
    type Target = [Tensor<'t, F>];

    fn deref(&self) -> &[Tensor<'t, F>] {
        self.xs
    }
}

impl<'s, 't, F: Float> IntoIterator for Inputs<'s, 't, '_, F> {
    type Item = &'s Tensor<'t, F>;
    type IntoIter = std::slice::Iter<'s, Tensor<'t, F>>;

    fn into_iter(self) -> Self::IntoIter {
        self.xs.iter()
    }
}

/// `f` as it is: a function of tensors to store in a `let` and pass to several of the
/// functional API's functions, the checks or [`Tape::remat`].
///
/// A closure stored in a `let` does not get the signature these functions need (generic
/// in the tape's lifetime `'t`, its data outliving the tape); written as the argument of
/// `func`, it does, and it may still borrow what it captures.
///
/// ```
/// use ndarray::array;
/// use tapegrad::check::{gradcheck, CheckOptions};
/// use tapegrad::functional::{self, func};
///
/// let w = array![[2.0, 0.0], [1.0, 3.0]];
/// let f = func(|xs| xs[0].matmul(xs.constant(&w)).tanh().sum());
/// gradcheck(&f, &[array![[0.1, 0.2]].view()], &CheckOptions::default()).unwrap();
/// let h = functional::hessian(&f, &[array![[0.1, 0.2]].view()]).unwrap();
/// assert_eq!(h.dim(), (2, 2));
/// ```
pub fn func<'a, F, Fun>(f: Fun) -> Fun
where
    F: Float,
    Fun: for<'s, 't> Fn(Inputs<'s, 't, 'a, F>) -> Tensor<'t, F>,
{
    f
}
