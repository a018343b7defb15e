//! The slice loops over the elementwise kernels of `math.rs`, and the choice of
//! instantiation at run time.
//!
//! A kernel is a zero-sized (or one-parameter) value of a type implementing [`Kernel`];
//! [`map`] and [`mul_map`] run it over slices. Which instantiation runs
//! is chosen once per process ([`path`]): AVX2 + FMA where the CPU has them (x86-64), else
//! the baseline; the environment variable `TAPEGRAD_KERNELS` (`avx2`, `baseline` or `std`)
//! overrides the choice, and the benches switch it with [`set_path`]. `std` runs the
//! functions of std and `libm` one element at a time (what the ops did before these
//! kernels): a reference for the benches, not a faster path.

use std::sync::atomic::{AtomicU8, Ordering};

use super::math::{self, Madd, Native};
use super::real::Real;

/// An elementwise function of `F` with a branch-free kernel.
pub(crate) trait Kernel<F: Real>: Copy {
    /// The kernel, with `a·b + c` evaluated as `M` says.
    fn apply<M: Madd>(self, x: F) -> F;
    /// The same function from std / `libm`, one element at a time (the `std` path).
    fn std(self, x: F) -> F;
}

/// The instantiation the slice loops run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// std / `libm`, one element at a time (the reference the benches compare with).
    Std = 1,
    /// The kernels for the baseline of the target (SSE2 on x86-64, NEON on aarch64).
    Baseline = 2,
    /// The kernels with AVX2 and FMA (x86-64 CPUs that have them).
    Avx2 = 3,
}

/// The chosen path: 0 until first asked.
static PATH: AtomicU8 = AtomicU8::new(0);

/// Whether this CPU runs the AVX2 + FMA instantiation.
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The path the slice loops run: `TAPEGRAD_KERNELS` if set (`std`, `baseline`, `avx2`;
/// `avx2` on a CPU without it means `baseline`), else the fastest this CPU has.
pub fn path() -> Path {
    match PATH.load(Ordering::Relaxed) {
        1 => Path::Std,
        2 => Path::Baseline,
        3 => Path::Avx2,
        _ => {
            let chosen = match std::env::var("TAPEGRAD_KERNELS").as_deref() {
                Ok("std") => Path::Std,
                Ok("baseline") => Path::Baseline,
                _ if has_avx2() => Path::Avx2,
                _ => Path::Baseline,
            };
            set_path(chosen);
            chosen
        }
    }
}

/// Chooses the path (for the benches and tests); `Avx2` on a CPU without it is `Baseline`.
pub fn set_path(path: Path) {
    let path = if path == Path::Avx2 && !has_avx2() {
        Path::Baseline
    } else {
        path
    };
    PATH.store(path as u8, Ordering::Relaxed);
}

#[inline(always)]
fn map_with<F: Real, K: Kernel<F>, M: Madd>(k: K, x: &[F], y: &mut [F]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = k.apply::<M>(x);
    }
}

#[inline(always)]
fn mul_map_with<F: Real, K: Kernel<F>, M: Madd>(k: K, g: &mut [F], x: &[F]) {
    for (g, &x) in g.iter_mut().zip(x) {
        *g = *g * k.apply::<M>(x);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::math::Fused;
    use super::{Kernel, Real};

    /// # Safety
    ///
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn map<F: Real, K: Kernel<F>>(k: K, x: &[F], y: &mut [F]) {
        super::map_with::<F, K, Fused>(k, x, y);
    }

    /// # Safety
    ///
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn mul_map<F: Real, K: Kernel<F>>(k: K, g: &mut [F], x: &[F]) {
        super::mul_map_with::<F, K, Fused>(k, g, x);
    }
}

/// `y[i] = k(x[i])`.
///
/// # Panics
///
/// If the slices differ in length (a bug of the caller).
pub(crate) fn map<F: Real, K: Kernel<F>>(k: K, x: &[F], y: &mut [F]) {
    map_on(path(), k, x, y);
}

/// [`map`] on the given path (`Avx2` only where [`has_avx2`]).
pub(crate) fn map_on<F: Real, K: Kernel<F>>(path: Path, k: K, x: &[F], y: &mut [F]) {
    assert_eq!(x.len(), y.len(), "map over slices of one length");
    assert!(
        path != Path::Avx2 || has_avx2(),
        "the AVX2 path on a CPU without it"
    );
    match path {
        Path::Std => y.iter_mut().zip(x).for_each(|(y, &x)| *y = k.std(x)),
        // SAFETY: the path is Avx2 only where the CPU has AVX2 and FMA (`set_path`).
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => unsafe { avx2::map(k, x, y) },
        _ => map_with::<F, K, Native>(k, x, y),
    }
}

/// `g[i] *= k(x[i])`.
///
/// # Panics
///
/// If the slices differ in length (a bug of the caller).
pub(crate) fn mul_map<F: Real, K: Kernel<F>>(k: K, g: &mut [F], x: &[F]) {
    assert_eq!(g.len(), x.len(), "mul_map over slices of one length");
    match path() {
        Path::Std => g.iter_mut().zip(x).for_each(|(g, &x)| *g = *g * k.std(x)),
        // SAFETY: as in `map`.
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => unsafe { avx2::mul_map(k, g, x) },
        _ => mul_map_with::<F, K, Native>(k, g, x),
    }
}

/// The kernel of one element, evaluated as `M` says (the tests' entry).
#[cfg(test)]
#[inline(always)]
pub(crate) fn eval<F: Real, K: Kernel<F>, M: Madd>(k: K, x: F) -> F {
    k.apply::<M>(x)
}

/// The kernel of one element as the baseline evaluates it: for code outside the slice
/// loops (a rule's scalar `df`), which LLVM may still vectorize in its own loop.
#[inline(always)]
pub(crate) fn scalar<F: Real, K: Kernel<F>>(k: K, x: F) -> F {
    k.apply::<Native>(x)
}

/// Declares a parameter-free kernel type: its name, the kernel function of `math.rs`,
/// and the std / `libm` form.
macro_rules! kernel {
    ($(#[$doc:meta])* $name:ident, $f:ident, |$x:ident| $std:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default)]
        pub(crate) struct $name;

        impl<F: crate::Float> Kernel<F> for $name {
            #[inline(always)]
            fn apply<M: Madd>(self, x: F) -> F {
                math::$f::<F, M>(x)
            }
            fn std(self, $x: F) -> F {
                $std
            }
        }
    };
}

kernel!(
    /// `eˣ`.
    Exp, exp, |x| x.exp()
);
kernel!(
    /// `ln x`.
    Ln, ln, |x| x.ln()
);
kernel!(
    /// `tanh x`.
    Tanh, tanh, |x| x.tanh()
);
kernel!(
    /// `σ(x) = 1/(1 + e^−x)`.
    Sigmoid, sigmoid, |x| F::one() / (F::one() + (-x).exp())
);
kernel!(
    /// `ln(1 + eˣ)`.
    Softplus, softplus, |x| {
        let positive = if x > F::zero() { x } else { F::zero() };
        positive + (-x.abs()).exp().ln_1p()
    }
);
kernel!(
    /// `erf x`.
    Erf, erf, |x| x.erf()
);
kernel!(
    /// `x Φ(x)`; at −∞ the limit −0 (the product is −∞ · 0).
    Gelu, gelu, |x| {
        if x == F::neg_infinity() {
            return -F::zero();
        }
        x * F::cast(0.5) * (F::one() + (x * F::cast(std::f64::consts::FRAC_1_SQRT_2)).erf())
    }
);
kernel!(
    /// `Φ(x) + x φ(x)`; at ±∞ the limits 1 and 0 (`x φ(x)` is ∞ · 0).
    GeluGrad, gelu_grad, |x| {
        if x.is_infinite() {
            return if x > F::zero() { F::one() } else { F::zero() };
        }
        let cdf = F::cast(0.5) * (F::one() + (x * F::cast(std::f64::consts::FRAC_1_SQRT_2)).erf());
        cdf + x * (F::cast(-0.5) * x * x).exp() * F::cast(0.398_942_280_401_432_7)
    }
);
kernel!(
    /// `x σ(x)`; at −∞ the limit 0 (the quotient is −∞/∞).
    Silu, silu, |x| {
        if x == F::neg_infinity() {
            return F::zero();
        }
        x / (F::one() + (-x).exp())
    }
);

/// `x` for `x > 0`, `α (eˣ − 1)` otherwise.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Elu<F>(pub F);

impl<F: crate::Float> Kernel<F> for Elu<F> {
    #[inline(always)]
    fn apply<M: Madd>(self, x: F) -> F {
        math::elu::<F, M>(x, self.0)
    }
    fn std(self, x: F) -> F {
        if x > F::zero() {
            x
        } else {
            self.0 * x.exp_m1()
        }
    }
}

/// `x (1 + tanh u)/2`, `u = √(2/π) (x + 0.044715 x³)`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GeluTanh;

/// `√(2/π)` and the cubic coefficient of the tanh approximation of gelu.
pub(crate) const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
pub(crate) const GELU_CUBIC: f64 = 0.044_715;

impl<F: crate::Float> Kernel<F> for GeluTanh {
    #[inline(always)]
    fn apply<M: Madd>(self, x: F) -> F {
        math::gelu_tanh::<F, M>(x, F::cast(SQRT_2_OVER_PI), F::cast(GELU_CUBIC))
    }
    fn std(self, x: F) -> F {
        // the limit −0 at −∞ (the product is −∞ · 0)
        if x == F::neg_infinity() {
            return -F::zero();
        }
        let (c, k) = (F::cast(SQRT_2_OVER_PI), F::cast(GELU_CUBIC));
        F::cast(0.5) * x * (F::one() + (c * (x + k * x * x * x)).tanh())
    }
}
