//! Arithmetic with a scalar: `neg`, `add_scalar`, `mul_scalar`, `scalar_div`, and the
//! operators `-x`, `x + s`, `x - s`, `x * s`, `x / s`, `s / x`.
//!
//! The first three are `Y = α·X + β` elementwise, with VJP `dX = α·G` (saves nothing):
//! `neg` is `α = −1`, `add_scalar(s)` is `β = s`, `mul_scalar(s)` is `α = s`.
//! `scalar_div(s)` is `Y = s / X`, with VJP `dX = −(G / X) ∘ Y` (saves X and Y; `s / X²`
//! would overflow where the quotient does not).

use std::ops::{Add, Div, Mul, Neg, Sub};
use std::panic::Location;

use ndarray::{Array2, Zip};

use crate::error::Result;
use crate::grad::Ctx;
use crate::higher::TensorCtx;
use crate::rule::{Rule, Saves};
use crate::{Float, Tensor, kernels};

// `neg` is also `std::ops::Neg` (below); the named method is the documented form.
#[allow(clippy::should_implement_trait)]
/// # Scalar arithmetic
///
/// With a scalar; also `-x`, `x + s`, `x - s`, `x * s`, `x / s`, `s / x`.
impl<'t, F: Float> Tensor<'t, F> {
    /// Records `Y = α·X + β` elementwise, with VJP `dX = α·G`.
    fn affine(
        self,
        op: &'static str,
        alpha: F,
        beta: F,
        location: &'static Location<'static>,
    ) -> Tensor<'t, F> {
        let tape = self.tape;
        let y = tape.read1(self.id, |x| kernels::map(x, |v| alpha * v + beta));
        let rule = tape.track(&[self]).then(|| {
            (
                Saves::NONE,
                Rule::with_param(scale_backward, scale_tensor, alpha),
            )
        });
        tape.record(op, y, self.shape, &[self], rule, location)
    }

    /// Negation `−self`. The derivative: `dX = −G`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[1.0, -2.0]]);
    /// assert_eq!(x.neg().value(), array![[-1.0, 2.0]]);
    /// let grads = tape.backward(x.neg().sum()).unwrap();
    /// assert_eq!(grads.get(x).unwrap(), &array![[-1.0, -1.0]]);
    /// ```
    #[track_caller]
    pub fn neg(self) -> Tensor<'t, F> {
        self.affine("neg", -F::one(), F::zero(), Location::caller())
    }

    /// `self + s` for a scalar `s`. The derivative: `dX = G`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[1.0, 2.0]]);
    /// assert_eq!(x.add_scalar(0.5).value(), array![[1.5, 2.5]]);
    /// let grads = tape.backward(x.add_scalar(0.5).sum()).unwrap();
    /// assert_eq!(grads.get(x).unwrap(), &array![[1.0, 1.0]]);
    /// ```
    #[track_caller]
    pub fn add_scalar(self, s: F) -> Tensor<'t, F> {
        self.affine("add_scalar", F::one(), s, Location::caller())
    }

    /// `s · self` for a scalar `s`. The derivative: `dX = s·G`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[1.0, 2.0]]);
    /// let grads = tape.backward(x.mul_scalar(3.0).sum()).unwrap();
    /// assert_eq!(grads.get(x).unwrap(), &array![[3.0, 3.0]]);
    /// ```
    #[track_caller]
    pub fn mul_scalar(self, s: F) -> Tensor<'t, F> {
        self.affine("mul_scalar", s, F::zero(), Location::caller())
    }

    /// The scalar `s` divided by `self`, elementwise: `s / x` (±∞ at ±0; also the operator
    /// `s / x`). The derivative is `−s/x² = −y/x`: the rule saves `X` and `Y` and computes
    /// `dX = −(G / X) ∘ Y`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[2.0, 4.0]]);
    /// let y = x.scalar_div(8.0); // or 8.0 / x
    /// assert_eq!(y.value(), array![[4.0, 2.0]]);
    /// let grads = tape.backward(y.sum()).unwrap();
    /// assert_eq!(grads.get(x).unwrap(), &array![[-2.0, -0.5]]); // −8 / x²
    /// ```
    #[track_caller]
    pub fn scalar_div(self, s: F) -> Tensor<'t, F> {
        let tape = self.tape;
        let y = tape.read1(self.id, |x| kernels::map(x, |v| s / v));
        let rule = tape.track(&[self]).then(|| {
            let saves = Saves::output().input_if(0, true);
            (saves, Rule::new(scalar_div_backward, scalar_div_tensor))
        });
        tape.record(
            "scalar_div",
            y,
            self.shape,
            &[self],
            rule,
            Location::caller(),
        )
    }
}

/// `dX = −(G / X) ∘ Y`.
fn scalar_div_backward<F: Float>(_: F, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    let (x, y) = (ctx.input(0), ctx.output());
    let d = Zip::from(&g)
        .and(&x)
        .and(&y)
        .map_collect(|&g, &x, &y| -(g / x) * y);
    ctx.accumulate(0, d);
}

/// `dX = −(G / X) ∘ Y`, recorded.
fn scalar_div_tensor<'t, F: Float>(
    _: F,
    g: Tensor<'t, F>,
    ctx: &mut TensorCtx<'_, 't, F>,
) -> Result<()> {
    let d = g.try_div(ctx.input(0))?.try_mul(ctx.output())?.neg();
    ctx.accumulate(0, d)
}

/// `dX = α·G`, computed in G's buffer.
fn scale_backward<F: Float>(alpha: F, mut g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    if alpha != F::one() {
        g.mapv_inplace(|v| alpha * v);
    }
    ctx.accumulate(0, g);
}

/// `dX = α·G`, recorded.
fn scale_tensor<'t, F: Float>(
    alpha: F,
    g: Tensor<'t, F>,
    ctx: &mut TensorCtx<'_, 't, F>,
) -> Result<()> {
    let d = if alpha == F::one() {
        g
    } else {
        g.mul_scalar(alpha)
    };
    ctx.accumulate(0, d)
}

/// `-x`: [`Tensor::neg`].
impl<'t, F: Float> Neg for Tensor<'t, F> {
    type Output = Tensor<'t, F>;
    #[track_caller]
    fn neg(self) -> Tensor<'t, F> {
        Tensor::neg(self)
    }
}

/// `x + s`: [`Tensor::add_scalar`].
impl<'t, F: Float> Add<F> for Tensor<'t, F> {
    type Output = Tensor<'t, F>;
    #[track_caller]
    fn add(self, s: F) -> Tensor<'t, F> {
        self.add_scalar(s)
    }
}

/// `x - s`: [`Tensor::add_scalar`] with `−s`.
impl<'t, F: Float> Sub<F> for Tensor<'t, F> {
    type Output = Tensor<'t, F>;
    #[track_caller]
    fn sub(self, s: F) -> Tensor<'t, F> {
        self.add_scalar(-s)
    }
}

/// `x * s`: [`Tensor::mul_scalar`].
impl<'t, F: Float> Mul<F> for Tensor<'t, F> {
    type Output = Tensor<'t, F>;
    #[track_caller]
    fn mul(self, s: F) -> Tensor<'t, F> {
        self.mul_scalar(s)
    }
}

/// `x / s`: [`Tensor::mul_scalar`] with `1/s`.
impl<'t, F: Float> Div<F> for Tensor<'t, F> {
    type Output = Tensor<'t, F>;
    #[track_caller]
    fn div(self, s: F) -> Tensor<'t, F> {
        self.mul_scalar(F::one() / s)
    }
}

macro_rules! scalar_over_tensor {
    ($f:ty) => {
        /// `s / x`: [`Tensor::scalar_div`].
        impl<'t> Div<Tensor<'t, $f>> for $f {
            type Output = Tensor<'t, $f>;
            #[track_caller]
            fn div(self, x: Tensor<'t, $f>) -> Tensor<'t, $f> {
                x.scalar_div(self)
            }
        }
    };
}

scalar_over_tensor!(f32);
scalar_over_tensor!(f64);
