//! Softmax along an axis: `softmax`, `log_softmax` and `logsumexp`, stable for any finite
//! input: each lane (a row for `Axis(1)`, a column for `Axis(0)`) is shifted by its
//! maximum inside the op, and no gradient flows through the shift (it cancels).
//!
//! VJPs, with `G = ∂L/∂Y` and `Σ` summing along the axis (keeping it, broadcast back):
//!
//! - `Y = softmax(X)`: `dX = Y ∘ (G − Σ(G ∘ Y))` (saves Y)
//! - `Y = log_softmax(X) = X − logsumexp(X)`: `dX = G − exp(Y) ∘ Σ G` (saves Y)
//! - `Y = logsumexp(X)` (the axis kept with length 1): `dX = G ∘ softmax(X)`, the
//!   softmax recomputed from X (saves X)

use std::panic::Location;

use ndarray::{Array2, ArrayView2, Axis, Zip};

use crate::error::{Error, ErrorKind, Result, allocated, check_size, or_panic};
use crate::grad::Ctx;
use crate::higher::TensorCtx;
use crate::kernels;
use crate::kernels::vector::{Exp, map, scalar};
use crate::rule::{Rule, Saves};
use crate::{Float, Tensor};

/// Row-wise `log softmax(z) = (z − m) − ln Σ exp(z − m)` with `m` the row's maximum: no
/// overflow for any finite logits, and `z − m` is exact where it matters (the largest
/// logits), so equal logits of 10⁷ in f32 still give `−ln C`. A row whose maximum is `−∞`
/// is shifted by 0 instead (its result is NaN, as the math says).
pub(crate) fn log_softmax_rows<F: Float>(z: ArrayView2<'_, F>) -> Array2<F> {
    softmax_rows(z, false).0
}

/// Row-wise `(log softmax(z), softmax(z))`, the second `exp(z − m)/Σ exp(z − m)` when
/// `probs` (else an empty array): the exponentials in one pass of the vector kernel over
/// the whole matrix.
fn softmax_rows<F: Float>(z: ArrayView2<'_, F>, probs: bool) -> (Array2<F>, Array2<F>) {
    let mut out = z.to_owned();
    if out.is_empty() {
        // no row to walk (there may be 2⁴⁰ rows of nothing)
        let probs = out.clone();
        return (out, probs);
    }
    for mut row in out.rows_mut() {
        let m = row.fold(F::neg_infinity(), |m, &v| if v > m { v } else { m });
        let m = if m == F::neg_infinity() { F::zero() } else { m };
        row.mapv_inplace(|v| v - m);
    }
    let mut e = exp_of(out.view());
    Zip::from(out.rows_mut())
        .and(e.rows_mut())
        .for_each(|mut row, mut e| {
            let sum = e.fold(F::zero(), |s, &v| s + v);
            let lse = sum.ln();
            row.mapv_inplace(|v| v - lse);
            if probs {
                e.mapv_inplace(|v| v / sum);
            }
        });
    (out, if probs { e } else { Array2::zeros((0, 0)) })
}

/// `exp` of every element of `x` through the vector kernel, in `x`'s layout.
pub(crate) fn exp_of<F: Float>(x: ArrayView2<'_, F>) -> Array2<F> {
    kernels::map_slices(x, |xs, ys| {
        map(Exp, xs, ys);
        true
    })
    .expect("the kernel runs")
}

/// `softmax` along `axis`.
fn softmax_along<F: Float>(x: ArrayView2<'_, F>, axis: Axis) -> Array2<F> {
    match axis {
        Axis(0) => softmax_rows(x.t(), true).1.reversed_axes(),
        _ => softmax_rows(x, true).1,
    }
}

/// `log_softmax` along `axis`.
fn log_softmax_along<F: Float>(x: ArrayView2<'_, F>, axis: Axis) -> Array2<F> {
    match axis {
        Axis(0) => log_softmax_rows(x.t()).reversed_axes(),
        _ => log_softmax_rows(x),
    }
}

/// `logsumexp` along `axis`, the axis kept with length 1; `None` if the allocation is
/// refused (the result can be larger than the input: the lanes of a huge empty matrix).
fn logsumexp_along<F: Float>(x: ArrayView2<'_, F>, axis: Axis) -> Option<Array2<F>> {
    let rows = match axis {
        Axis(0) => x.t(),
        _ => x,
    };
    let mut out = kernels::try_zeros((rows.nrows(), 1))?;
    if !rows.is_empty() {
        Zip::from(out.rows_mut())
            .and(rows.rows())
            .for_each(|mut o, row| {
                let m = row.fold(F::neg_infinity(), |m, &v| if v > m { v } else { m });
                let shift = if m == F::neg_infinity() { F::zero() } else { m };
                o[0] = shift + row.fold(F::zero(), |s, &v| s + scalar(Exp, v - shift)).ln();
            });
    } else {
        // the sum of nothing is 0, its log −∞
        out.fill(F::neg_infinity());
    }
    Some(match axis {
        Axis(0) => out.reversed_axes(),
        _ => out,
    })
}

/// `Σ` along the axis `a` (0 or 1, the rule's parameter), kept.
fn axis_of<F: Float>(a: F) -> Axis {
    Axis(if a == F::zero() { 0 } else { 1 })
}

/// `dX = Y ∘ (G − Σ(G ∘ Y))`.
fn softmax_backward<F: Float>(a: F, mut g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    if g.is_empty() {
        // no lane to sum (and no 2⁴⁰ sums of nothing to allocate)
        return ctx.accumulate(0, g);
    }
    let y = ctx.output();
    let axis = axis_of(a);
    let s = (&g * &y).sum_axis(axis).insert_axis(axis);
    Zip::from(&mut g)
        .and(&y)
        .and_broadcast(&s)
        .for_each(|g, &y, &s| *g = y * (*g - s));
    ctx.accumulate(0, g);
}

/// `dX = Y ∘ (G − Σ(G ∘ Y))`, recorded.
fn softmax_tensor<'t, F: Float>(
    a: F,
    g: Tensor<'t, F>,
    ctx: &mut TensorCtx<'_, 't, F>,
) -> Result<()> {
    let y = ctx.output();
    let s = g.try_mul(y)?.try_sum_axis(axis_of(a))?;
    ctx.accumulate(0, y.try_mul(g.try_sub(s)?)?)
}

/// `dX = G − exp(Y) ∘ Σ G`.
fn log_softmax_backward<F: Float>(a: F, mut g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    if g.is_empty() {
        return ctx.accumulate(0, g);
    }
    let y = ctx.output();
    let axis = axis_of(a);
    let s = g.sum_axis(axis).insert_axis(axis);
    Zip::from(&mut g)
        .and(&y)
        .and_broadcast(&s)
        .for_each(|g, &y, &s| *g -= scalar(Exp, y) * s);
    ctx.accumulate(0, g);
}

/// `dX = G − exp(Y) ∘ Σ G`, recorded.
fn log_softmax_tensor<'t, F: Float>(
    a: F,
    g: Tensor<'t, F>,
    ctx: &mut TensorCtx<'_, 't, F>,
) -> Result<()> {
    let y = ctx.output();
    let s = g.try_sum_axis(axis_of(a))?;
    ctx.accumulate(0, g.try_sub(y.exp().try_mul(s)?)?)
}

/// `dX = G ∘ softmax(X)`, the softmax computed from X shifted by its maximum (exact at
/// the maximum, where `exp(X − Y)` would carry the rounding of `Y = m + ln Σ`).
fn logsumexp_backward<F: Float>(a: F, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    let mut d = softmax_along(ctx.input(0), axis_of(a));
    Zip::from(&mut d)
        .and_broadcast(&g)
        .for_each(|d, &g| *d = g * *d);
    ctx.accumulate(0, d);
}

/// `dX = G ∘ softmax(X)`, recorded.
fn logsumexp_tensor<'t, F: Float>(
    a: F,
    g: Tensor<'t, F>,
    ctx: &mut TensorCtx<'_, 't, F>,
) -> Result<()> {
    let p = ctx.input(0).try_softmax(axis_of(a))?;
    ctx.accumulate(0, p.try_mul(g)?)
}

/// # Softmax and log-sum-exp
///
/// Along an axis.
impl<'t, F: Float> Tensor<'t, F> {
    fn softmax_op(
        self,
        op: &'static str,
        axis: Axis,
        location: &'static Location<'static>,
    ) -> Result<Tensor<'t, F>> {
        if axis.index() > 1 {
            let kind = ErrorKind::Axis { axis: axis.index() };
            return Err(Error::new(op, kind, location));
        }
        let a = F::cast(axis.index() as f64);
        let tape = self.tape;
        let (shape, saves, rule, y) = match op {
            "softmax" => (
                self.shape,
                Saves::output(),
                Rule::with_param(softmax_backward, softmax_tensor, a),
                tape.read1(self.id, |x| softmax_along(x, axis)),
            ),
            "log_softmax" => (
                self.shape,
                Saves::output(),
                Rule::with_param(log_softmax_backward, log_softmax_tensor, a),
                tape.read1(self.id, |x| log_softmax_along(x, axis)),
            ),
            _ => {
                let shape = match axis {
                    Axis(0) => (1, self.shape.1),
                    _ => (self.shape.0, 1),
                };
                check_size::<F>(op, shape, location)?;
                let y = tape.read1(self.id, |x| logsumexp_along(x, axis));
                (
                    shape,
                    Saves::NONE.input_if(0, true),
                    Rule::with_param(logsumexp_backward, logsumexp_tensor, a),
                    allocated(y, op, shape, location)?,
                )
            }
        };
        let rule = tape.track(&[self]).then_some((saves, rule));
        Ok(tape.record(op, y, shape, &[self], rule, location))
    }

    /// Softmax along `axis`: `Axis(1)` normalises each row, `Axis(0)` each column.
    /// `Y = exp(X − m) / Σ exp(X − m)` with `m` the lane's maximum, so any finite input
    /// works (1000 and −1000 give exactly 1 and 0).
    ///
    /// The derivative: `dX = Y ∘ (G − Σ(G ∘ Y))`, `Σ` along the axis.
    ///
    /// # Panics
    ///
    /// If `axis` is not 0 or 1; see [`Tensor::try_softmax`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::{array, Axis};
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[0.0, 0.0], [1000.0, -1000.0]]);
    /// let y = x.softmax(Axis(1));
    /// assert_eq!(y.value(), array![[0.5, 0.5], [1.0, 0.0]]);
    /// // the derivative of the first probability in the first row
    /// let first = y.mul(tape.constant(array![[1.0, 0.0], [0.0, 0.0]])).sum();
    /// let grads = tape.backward(first).unwrap();
    /// assert_eq!(grads.get(x).unwrap(), &array![[0.25, -0.25], [0.0, 0.0]]);
    /// ```
    #[track_caller]
    pub fn softmax(self, axis: Axis) -> Tensor<'t, F> {
        or_panic(self.try_softmax(axis))
    }

    /// Softmax along `axis`, or an error.
    ///
    /// # Errors
    ///
    /// `Axis` if `axis` is not 0 or 1.
    #[track_caller]
    pub fn try_softmax(self, axis: Axis) -> Result<Tensor<'t, F>> {
        self.softmax_op("softmax", axis, Location::caller())
    }

    /// Log-softmax along `axis`: `Y = X − logsumexp(X)`, each lane shifted by its maximum
    /// inside the op (stable for any finite input; a `−∞` entry gives `−∞`).
    ///
    /// The derivative: `dX = G − exp(Y) ∘ Σ G`, `Σ` along the axis.
    ///
    /// # Panics
    ///
    /// If `axis` is not 0 or 1; see [`Tensor::try_log_softmax`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::{array, Axis};
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[1.0, 1.0, 1.0]]);
    /// let y = x.log_softmax(Axis(1));
    /// assert!((y.value()[[0, 0]] + 3f64.ln()).abs() < 1e-15);
    /// // negative log-likelihood of class 0: the gradient is softmax − onehot
    /// let nll = y.mul(tape.constant(array![[-1.0, 0.0, 0.0]])).sum();
    /// let grads = tape.backward(nll).unwrap();
    /// let g = grads.get(x).unwrap();
    /// assert!((g[[0, 0]] + 2.0 / 3.0).abs() < 1e-15 && (g[[0, 1]] - 1.0 / 3.0).abs() < 1e-15);
    /// ```
    #[track_caller]
    pub fn log_softmax(self, axis: Axis) -> Tensor<'t, F> {
        or_panic(self.try_log_softmax(axis))
    }

    /// Log-softmax along `axis`, or an error.
    ///
    /// # Errors
    ///
    /// `Axis` if `axis` is not 0 or 1.
    #[track_caller]
    pub fn try_log_softmax(self, axis: Axis) -> Result<Tensor<'t, F>> {
        self.softmax_op("log_softmax", axis, Location::caller())
    }

    /// `ln Σ exp(x)` along `axis`, keeping it with length 1 (m × 1 for `Axis(1)`, 1 × n for
    /// `Axis(0)`), computed as `m + ln Σ exp(x − m)` with `m` the lane's maximum. An empty
    /// lane gives `−∞`.
    ///
    /// The derivative: `dX = G ∘ softmax(X)`, G broadcast along the axis (the softmax is
    /// recomputed from X in backward, exact at the maximum).
    ///
    /// # Panics
    ///
    /// If `axis` is not 0 or 1; see [`Tensor::try_logsumexp`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::{array, Axis};
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.param(array![[1000.0, 1000.0]]);
    /// let y = x.logsumexp(Axis(1));
    /// assert_eq!(y.item(), 1000.0 + 2f64.ln());
    /// let grads = tape.backward(y).unwrap();
    /// assert_eq!(grads.get(x).unwrap(), &array![[0.5, 0.5]]);
    /// ```
    #[track_caller]
    pub fn logsumexp(self, axis: Axis) -> Tensor<'t, F> {
        or_panic(self.try_logsumexp(axis))
    }

    /// `ln Σ exp(x)` along `axis`, or an error.
    ///
    /// # Errors
    ///
    /// `Axis` if `axis` is not 0 or 1.
    #[track_caller]
    pub fn try_logsumexp(self, axis: Axis) -> Result<Tensor<'t, F>> {
        self.softmax_op("logsumexp", axis, Location::caller())
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{Axis, array};

    use super::{log_softmax_rows, logsumexp_along};

    #[test]
    fn log_softmax_is_stable() {
        let z = array![[1000.0f32, -1000.0, 0.0], [1.0, 1.0, 1.0]];
        let lp = log_softmax_rows(z.view());
        assert_eq!(lp[[0, 0]], 0.0);
        assert_eq!(lp[[0, 1]], -2000.0);
        assert!((lp[[1, 0]] + 3f32.ln()).abs() < 1e-6);
        let equal = ndarray::Array2::from_elem((1, 3), 1e7f32);
        assert!((log_softmax_rows(equal.view())[[0, 0]] + 3f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn logsumexp_along_both_axes() {
        let x = array![[0.0, 1.0], [2.0, 3.0]];
        let rows = logsumexp_along(x.view(), Axis(1)).unwrap();
        let cols = logsumexp_along(x.view(), Axis(0)).unwrap();
        let lse = |a: f64, b: f64| (a.exp() + b.exp()).ln();
        assert!((rows[[1, 0]] - lse(2.0, 3.0)).abs() < 1e-15);
        assert!((cols[[0, 1]] - lse(1.0, 3.0)).abs() < 1e-15);
        assert_eq!(cols.dim(), (1, 2));
    }
}
