//! What the families compare against: central differences at two step sizes (no oracle
//! where they disagree), and comparisons of arrays to rounding or to the bit.

use ndarray::Array2;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};
use tapegrad::Float;

/// A standard normal array.
pub(crate) fn randn(shape: (usize, usize), rng: &mut StdRng) -> Array2<f64> {
    Array2::from_shape_simple_fn(shape, || {
        let v: f64 = StandardNormal.sample(rng);
        v
    })
}

/// `Σ a ∘ b` in f64.
pub(crate) fn dot<F: Float>(a: &Array2<F>, b: &Array2<f64>) -> f64 {
    a.iter().zip(b).map(|(x, y)| x.as_f64() * y).sum()
}

/// Whether `a` and `b` have the same shape and elements equal to the bit.
pub(crate) fn same_bits<F: Float>(a: &Array2<F>, b: &Array2<F>) -> bool {
    a.dim() == b.dim()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.as_f64().to_bits() == y.as_f64().to_bits())
}

/// Whether `a` and `b` have the same shape, NaN in the same places, the same infinities,
/// and finite elements within `tol` times the larger array's largest finite element
/// (normwise: values computed by different formulas round differently) or within `floor`
/// of each other (the rounding of the terms a gradient sums, where they cancel to a
/// result much smaller than themselves).
pub(crate) fn close_within<F: Float>(a: &Array2<F>, b: &Array2<F>, tol: f64, floor: f64) -> bool {
    if a.dim() != b.dim() {
        return false;
    }
    let scale = a
        .iter()
        .chain(b.iter())
        .map(|v| v.as_f64().abs())
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    a.iter().zip(b).all(|(x, y)| {
        let (x, y) = (x.as_f64(), y.as_f64());
        if x.is_nan() || y.is_nan() {
            x.is_nan() && y.is_nan()
        } else if x.is_infinite() || y.is_infinite() {
            x == y
        } else {
            (x - y).abs() <= (tol * scale.max(f64::MIN_POSITIVE)).max(floor)
        }
    })
}

/// The derivative of `f` at 0 by central differences at steps `h` and `h / 10`: `None`
/// where either fails, is not finite, or the two disagree (a kink, a tie, a step that
/// changes the path, or a function too steep for `h`).
///
/// Where they agree, their Richardson extrapolation `(100·fine − coarse)/99`: the error of
/// a central difference is `c·h²` to leading order, which the two steps let it cancel (at
/// a nearly singular matrix `c` is large, and the fine step alone is off by up to 10⁻⁴
/// relative, which the two steps accept).
pub(crate) fn central(h: f64, f: &mut dyn FnMut(f64) -> Option<f64>) -> Option<f64> {
    let mut at = |eps: f64| -> Option<f64> { Some((f(eps)? - f(-eps)?) / (2.0 * eps)) };
    let (coarse, fine) = (at(h)?, at(h / 10.0)?);
    let scale = 1.0 + coarse.abs().max(fine.abs());
    if !(coarse.is_finite() && fine.is_finite()) || (coarse - fine).abs() > 1e-4 * scale {
        return None;
    }
    Some(fine + (fine - coarse) / 99.0)
}

/// Panics with `what` unless `analytic` is within `tol` (relative to 1 + |numeric|) of
/// `numeric`.
pub(crate) fn agree(what: &str, analytic: f64, numeric: f64, tol: f64) {
    assert!(
        (analytic - numeric).abs() <= tol * (1.0 + numeric.abs()),
        "{what}: the rules give {analytic:e} along the direction, finite differences \
         {numeric:e}"
    );
}
