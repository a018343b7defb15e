//! Elementwise transcendental kernels that vectorize: `exp`, `ln`, `tanh`, `sigmoid`,
//! `softplus`, `erf`, `gelu` (and `gelu`'s derivative), plus the compositions the ops use
//! (`elu`, `silu`, `gelu_tanh`).
//!
//! Each kernel is one branch-free function of one element (range reduction, polynomial,
//! bit manipulation through `to_bits`/`from_bits`, special cases as selects), written once
//! for [`Real`] (`f32` and `f64`), so that LLVM turns a loop over a slice into SIMD code.
//! The loops (`vector::map`, `vector::mul_map`) are instantiated twice on x86-64: for
//! the SSE2 baseline (4 f32 or 2 f64 lanes, multiply and add apart) and, chosen at run
//! time with `is_x86_feature_detected!`, for AVX2 + FMA (8 or 4 lanes, fused
//! multiply-adds). On aarch64 the one instantiation uses NEON and fused multiply-adds.
//! Every path computes, lane by lane, exactly what the scalar evaluation of the same
//! function computes (IEEE operations, no reassociation): the tests compare them bit for
//! bit, and measure the scalar evaluations' error in both forms (with and without FMA).
//!
//! # Accuracy
//!
//! Maximum error in ulps of the result (subnormal results: ulps of the subnormal
//! spacing), measured by `src/kernels/accuracy.rs` over 10⁶ random inputs per kernel,
//! type and form (`TAPEGRAD_KERNEL_SAMPLES=1000000 cargo test --release --lib accuracy`)
//! plus the edges (±0, ±tiny, ±subnormals, ±huge, ±∞, NaN, the thresholds). References:
//! for f32, the f64 functions of std and `libm`; for f64, double-double arithmetic
//! (≈ 106 bits) written in the test, itself checked against mpmath at 50 digits
//! (`tests/data/kernel_reference.txt`, made by `tests/data/make_kernel_reference.py`).
//!
//! | kernel | f32, no FMA | f32, FMA | f64, no FMA | f64, FMA |
//! |--------|-----:|-----:|-----:|-----:|
//! | exp | 0.95 | 0.96 | 0.92 | 0.95 |
//! | ln | 0.79 | 0.79 | 0.83 | 0.83 |
//! | tanh | 2.49 | 2.49 | 2.50 | 2.50 |
//! | sigmoid | 2.15 | 2.15 | 2.10 | 2.10 |
//! | softplus | 1.78 | 1.78 | 1.78 | 1.78 |
//! | erf | 1.47 | 1.56 | 1.84 | 1.87 |
//! | gelu | 3.49 | 3.28 | 3.15 | 2.84 |
//! | gelu′ (ulps of the larger of Φ(x), \|x φ(x)\|) | 2.96 | 2.44 | 3.30 | 3.01 |
//! | elu (α = 1) | 0.83 | 0.85 | 1.05 | 1.10 |
//! | silu | 2.40 | 2.40 | 2.27 | 2.27 |
//! | gelu_tanh, x ≥ −1 | 2.85 | 2.85 | 2.51 | 2.51 |
//! | gelu_tanh, x < −1 (not bounded: see below) | 218.82 | 176.27 | 1628.10 | 1439.22 |
//!
//! `gelu_tanh` left of −1 is limited by its argument: `σ(2u)` has condition number `|2u|`,
//! and `u = √(2/π)(x + 0.044715x³)` is rounded before it (the test holds it to `4 + 3|2u|`).
//!
//! The error of `gelu_grad` near its root (x ≈ −0.7518, where `Φ(x) + xφ(x)` cancels) is
//! absolute: it is measured in ulps of the larger of `Φ(x)` and `|x φ(x)|`.
//!
//! # Special values
//!
//! Exact IEEE results at the edges: `exp(−∞) = 0`, `exp(∞) = ∞`, `ln(0) = −∞`,
//! `ln(x < 0) = NaN`, `ln(∞) = ∞`, `tanh(±∞) = ±1`, `sigmoid(−∞) = 0`, `sigmoid(∞) = 1`,
//! `softplus(−∞) = 0`, `softplus(∞) = ∞`, `erf(±∞) = ±1`, `gelu(−∞) = −0`, `gelu(∞) = ∞`;
//! NaN gives NaN; subnormal inputs and results are handled (`exp` rounds into the
//! subnormals once; `ln` scales subnormal inputs up first).

use super::real::Real;

/// How `a·b + c` is evaluated: apart (two roundings; the SSE2 baseline has no FMA, and
/// `mul_add` without hardware FMA is a slow library call) or fused (one rounding).
pub trait Madd {
    fn madd<F: Real>(a: F, b: F, c: F) -> F;
}

/// `a·b + c` with two roundings.
#[cfg_attr(target_arch = "aarch64", allow(dead_code))]
pub struct Apart;
/// `a·b + c` with one rounding.
pub struct Fused;

impl Madd for Apart {
    #[inline(always)]
    fn madd<F: Real>(a: F, b: F, c: F) -> F {
        a * b + c
    }
}

impl Madd for Fused {
    #[inline(always)]
    fn madd<F: Real>(a: F, b: F, c: F) -> F {
        F::fma(a, b, c)
    }
}

/// The form of the default instantiation: aarch64 always has FMA.
#[cfg(target_arch = "aarch64")]
pub type Native = Fused;
/// The form of the default instantiation: x86-64's baseline (SSE2) has no FMA.
#[cfg(not(target_arch = "aarch64"))]
pub type Native = Apart;

/// `x` where `c`, else `y`: a select, not a branch.
#[inline(always)]
fn select<F: Real>(c: bool, x: F, y: F) -> F {
    if c { x } else { y }
}

/// `max(x, lo)` that keeps NaN.
#[inline(always)]
fn at_least<F: Real>(x: F, lo: F) -> F {
    select(x < lo, lo, x)
}

/// `min(x, hi)` that keeps NaN.
#[inline(always)]
fn at_most<F: Real>(x: F, hi: F) -> F {
    select(x > hi, hi, x)
}

/// `c[0] + x·(c[1] + x·(…))`, Horner's scheme.
#[inline(always)]
fn poly<F: Real, M: Madd>(x: F, c: &[F]) -> F {
    let (last, rest) = c.split_last().expect("a polynomial has coefficients");
    rest.iter().rev().fold(*last, |acc, &k| M::madd(acc, x, k))
}

/// `e^(a + b) = (1 + e)·s₁·s₂` for `a` in `[EXP_LO, EXP_HI]` (or NaN) and `|b|` small
/// beside `a` or 0.
///
/// `n = round((a + b)/ln 2)`, `r = a − n·ln2_hi + b − n·ln2_lo` (the first difference
/// exact: Cody and Waite), `e = eʳ − 1 = r + r² q(r)` with `q` the `EXP_POLY` fit on
/// `|r| ≤ ln2/2`, and `2ⁿ` as two normal factors `s₁ = 2^⌊n/2⌉`, `s₂ = 2^(n − ⌊n/2⌉)`:
/// `((1 + e)·s₁)·s₂` rounds a subnormal result once and overflows to ∞. A factor `f` goes
/// in as `f + f·e` (one rounding fewer than `f·(1 + e)`).
#[inline(always)]
fn exp_reduce<F: Real, M: Madd>(a: F, b: F) -> (F, F, F) {
    let n = M::madd(a + b, F::LOG2_E, F::SHIFT) - F::SHIFT;
    let hi = M::madd(-n, F::LN2_HI, a);
    let r = M::madd(-n, F::LN2_LO, hi + b);
    let q = poly::<F, M>(r, F::EXP_POLY);
    let e = M::madd(r * r, q, r);
    let n1 = (n * F::HALF + F::SHIFT) - F::SHIFT;
    (e, F::pow2(n1), F::pow2(n - n1))
}

/// `eˣ`.
#[inline(always)]
pub fn exp<F: Real, M: Madd>(x: F) -> F {
    let (e, s1, s2) = exp_reduce::<F, M>(at_most(at_least(x, F::EXP_LO), F::EXP_HI), F::ZERO);
    (F::ONE + e) * s1 * s2
}

/// `eˣ − 1` for `x ≤ 0` (positive `x` give a value of no use, without fault).
///
/// `2ⁿ (1 + e_r) − 1 = 2ⁿ e_r + (2ⁿ − 1)` with `e_r = r + r² q(r)` the same polynomial as
/// `exp`'s: for `n = 0`, `r = x` exactly and the result is `e_r`; for `n < 0` the two terms
/// do not cancel (`eˣ − 1 ≤ −0.29`).
#[inline(always)]
fn expm1_neg<F: Real, M: Madd>(x: F) -> F {
    let xc = at_least(x, F::EXPM1_LO);
    let n = M::madd(xc, F::LOG2_E, F::SHIFT) - F::SHIFT;
    let r = M::madd(-n, F::LN2_LO, M::madd(-n, F::LN2_HI, xc));
    let e = M::madd(r * r, poly::<F, M>(r, F::EXP_POLY), r);
    let s = F::pow2(n);
    // x = −0 gives −0
    select(x == F::ZERO, x, M::madd(s, e, s - F::ONE))
}

/// `ln(2ᵏ (1 + f))` for `√2/2 ≤ 1 + f < √2`, fdlibm's evaluation: `s = f/(2 + f)`,
/// `ln(1 + f) = f − (f²/2 − s (f²/2 + R(s²)))`, `R` the `LN_POLY` fit.
#[inline(always)]
fn ln_kf<F: Real, M: Madd>(k: F, f: F) -> F {
    let s = f / (F::TWO + f);
    let z = s * s;
    let r = z * poly::<F, M>(z, F::LN_POLY);
    let hfsq = F::HALF * f * f;
    M::madd(s, hfsq + r, k * F::LN2_LO) - hfsq + f + k * F::LN2_HI
}

/// `ln x` for positive normal finite `x`.
#[inline(always)]
fn ln_normal<F: Real, M: Madd>(x: F) -> F {
    let (k, f) = x.ln_reduce();
    ln_kf::<F, M>(k, f)
}

/// `ln x`.
#[inline(always)]
pub fn ln<F: Real, M: Madd>(x: F) -> F {
    let tiny = x < F::MIN_POSITIVE;
    let (k, f) = select(tiny, x * F::LN_SCALE, x).ln_reduce();
    let r = ln_kf::<F, M>(k - select(tiny, F::LN_SCALE_EXP, F::ZERO), f);
    let r = select(x == F::ZERO, -F::INFINITY, r);
    let r = select(x == F::INFINITY, x, r);
    // NaN and negative inputs: NaN
    select(x >= F::ZERO, r, F::NAN)
}

/// `tanh x = −e/(2 + e)` with `e = expm1(−2|x|)`, the sign of `x`.
#[inline(always)]
pub fn tanh<F: Real, M: Madd>(x: F) -> F {
    let e = expm1_neg::<F, M>(-F::TWO * x.fabs());
    (-e / (e + F::TWO)).with_sign_of(x)
}

/// `σ(x) = 1/(1 + e^−x)` as `1/(1 + e)` for `x ≥ 0` and `e/(1 + e)` for `x < 0`, with
/// `e = e^(−|x|)`: relative accuracy on both sides (`σ(−100)` is not 0 in f32).
#[inline(always)]
pub fn sigmoid<F: Real, M: Madd>(x: F) -> F {
    let e = exp::<F, M>(-x.fabs());
    select(x >= F::ZERO, F::ONE, e) / (F::ONE + e)
}

/// `ln(1 + eˣ) = max(x, 0) + log1p(e)`, `e = e^(−|x|)`, with
/// `log1p(e) = ln u + (e − (u − 1))/u`, `u = 1 + e` rounded (the quotient restores what
/// rounding `u` lost).
#[inline(always)]
pub fn softplus<F: Real, M: Madd>(x: F) -> F {
    let e = exp::<F, M>(-x.fabs());
    let u = F::ONE + e;
    let log1p = ln_normal::<F, M>(u) + (e - (u - F::ONE)) / u;
    select(x > F::ZERO, x, F::ZERO) + log1p
}

/// `m(t) = Φ(−t) e^(t²/2) = Z(u)/(A + B t)` for `t ≥ 0`: `Z` the `PHI_POLY` fit in
/// `u = (t − K)/(t + K)` of Shepherd and Laframboise's bounded form, scaled into
/// `[0.875, 1)`.
#[inline(always)]
fn mills<F: Real, M: Madd>(t: F) -> F {
    let z = poly::<F, M>((t - F::PHI_K) / (t + F::PHI_K), F::PHI_POLY);
    z / M::madd(F::PHI_B, t, F::PHI_A)
}

/// `erf x`: `x + x (P(x²) − 1)` for `|x| ≤ 0.5625`, else `±(1 − erfc|x|)` with
/// `erfc z = 2 e^(−z²) m(√2 z)`.
#[inline(always)]
pub fn erf<F: Real, M: Madd>(x: F) -> F {
    let z = x.fabs();
    let small = M::madd(x, poly::<F, M>(x * x, F::ERF_POLY), x);
    let zc = at_most(z, F::ERF_ONE);
    let (e, s1, s2) = exp_reduce::<F, M>(-(zc * zc), F::ZERO);
    let f = F::TWO * mills::<F, M>(F::SQRT_2 * zc);
    let erfc = M::madd(f, e, f) * s1 * s2;
    select(z <= F::ERF_SPLIT, small, (F::ONE - erfc).with_sign_of(x))
}

/// For `t = min(|x|, PHI_MAX)`: `(t, m(t), e^(−t²/2) = p·s₁·s₂)`, the exponential's argument
/// split as `t_hi²/2` (exact) plus a small rest, so that `e^(−t²/2)` keeps its relative
/// accuracy where it is tiny.
#[inline(always)]
fn phi_parts<F: Real, M: Madd>(x: F) -> (F, F, (F, F, F)) {
    // e^(−t²/2) = (1 + e)·s₁·s₂
    let t = at_most(x.fabs(), F::PHI_MAX);
    let hi = t.split();
    let e = exp_reduce::<F, M>(-(hi * hi) * F::HALF, -((t - hi) * (t + hi)) * F::HALF);
    (t, mills::<F, M>(t), e)
}

/// `gelu(x) = x Φ(x)`: `x Φ(−|x|)` for `x ≤ 0` and `x (1 − Φ(−x))` for `x > 0`, with
/// `Φ(−t) = e^(−t²/2) m(t)`; on the negative side `x·m` is taken before the exponential's
/// scale, so that a subnormal result is rounded once.
///
/// For `|x| ≤ 1/2`, `x/2 + x² G(x²)` instead, `G(x²) = (Φ(x) − ½)/x` the `GELU_POLY` fit
/// (where `m`'s polynomial, at the end of its interval, is less accurate).
#[inline(always)]
pub fn gelu<F: Real, M: Madd>(x: F) -> F {
    let (_, m, (e, s1, s2)) = phi_parts::<F, M>(x);
    let positive = x > F::ZERO;
    let f = select(positive, m, at_least(x, -F::PHI_MAX) * m);
    let q = M::madd(f, e, f) * s1 * s2;
    let x2 = x * x;
    let small = M::madd(x2, poly::<F, M>(x2, F::GELU_POLY), F::HALF * x);
    select(
        x.fabs() <= F::HALF,
        small,
        select(positive, x * (F::ONE - q), q),
    )
}

/// `gelu′(x) = Φ(x) + x φ(x)`: `d = Φ(−t) − t φ(t) = e^(−t²/2) (m(t) − t/√(2π))` for
/// `x = −t ≤ 0`, `1 − d` for `x = t > 0`.
///
/// For `|x| ≤ 1/2`, `½ + x (G(x²) + e^(−x²/2)/√(2π))` instead.
#[inline(always)]
pub fn gelu_grad<F: Real, M: Madd>(x: F) -> F {
    let (t, m, (e, s1, s2)) = phi_parts::<F, M>(x);
    let f = M::madd(-t, F::FRAC_1_SQRT_2PI, m);
    let d = M::madd(f, e, f) * s1 * s2;
    let g = M::madd(
        F::ONE + e,
        F::FRAC_1_SQRT_2PI,
        poly::<F, M>(x * x, F::GELU_POLY),
    );
    let small = M::madd(x, g, F::HALF);
    select(
        x.fabs() <= F::HALF,
        small,
        select(x > F::ZERO, F::ONE - d, d),
    )
}

/// `elu(x) = x` for `x > 0`, `α (eˣ − 1)` otherwise.
#[inline(always)]
pub fn elu<F: Real, M: Madd>(x: F, alpha: F) -> F {
    select(x > F::ZERO, x, alpha * expm1_neg::<F, M>(x))
}

/// `silu(x) = x σ(x)`: `x/(1 + e)` for `x ≥ 0` and `x e/(1 + e)` for `x < 0`, `e = e^(−|x|)`,
/// `x e` taken before the exponential's scale (one rounding into the subnormals); 0 at
/// −∞, the limit.
#[inline(always)]
pub fn silu<F: Real, M: Madd>(x: F) -> F {
    // below EXP_LO·1.1, x·eˣ underflows
    let lo = F::EXP_LO * F::SILU_LO;
    let (em1, s1, s2) = exp_reduce::<F, M>(at_least(-x.fabs(), lo), F::ZERO);
    let e = (F::ONE + em1) * s1 * s2;
    let xc = at_least(x, lo);
    let xe = M::madd(xc, em1, xc) * s1 * s2;
    select(x >= F::ZERO, x, xe) / (F::ONE + e)
}

/// `gelu_tanh(x) = x (1 + tanh u)/2 = x σ(2u)`, `u = √(2/π) (x + 0.044715 x³)`, 0 at −∞.
#[inline(always)]
pub fn gelu_tanh<F: Real, M: Madd>(x: F, c: F, k: F) -> F {
    let u = c * M::madd(k * x, x * x, x);
    at_least(x, F::MIN) * sigmoid::<F, M>(u + u)
}
