//! What the elementwise kernels (`math.rs`) need of `f32` and `f64`: constants, the
//! coefficient tables, and the few operations on the bits, each branch-free and written
//! with operations that SSE2, AVX2 and NEON have for whole vectors (integer add, shift,
//! and, or; no float ↔ 64-bit integer conversion, which x86 has only with AVX-512).

use std::ops::{Add, Div, Mul, Neg, Sub};

use super::coefficients as c;

/// A float type the kernels run on: `f32` or `f64`.
pub trait Real:
    Copy
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    const TWO: Self;
    const HALF: Self;
    const INFINITY: Self;
    const NAN: Self;
    /// The most negative finite value.
    const MIN: Self;
    const MIN_POSITIVE: Self;
    const SQRT_2: Self;
    /// `1/√(2π)`.
    const FRAC_1_SQRT_2PI: Self;
    const LOG2_E: Self;
    /// `ln 2 = LN2_HI + LN2_LO`, `LN2_HI` with trailing zeros so that `n·LN2_HI` is exact
    /// for every `n` the kernels reduce by (fdlibm's splits).
    const LN2_HI: Self;
    const LN2_LO: Self;
    /// `1.5·2^p` (p the mantissa bits): `x + SHIFT − SHIFT` rounds `x` to an integer.
    const SHIFT: Self;
    /// `exp` clamps its argument to `[EXP_LO, EXP_HI]`: below, the result is 0; above, ∞.
    const EXP_LO: Self;
    const EXP_HI: Self;
    /// `silu` holds its argument at `EXP_LO·SILU_LO`, where `x eˣ` underflows.
    const SILU_LO: Self;
    /// `expm1` clamps its argument from below here, where `eˣ − 1` rounds to −1 and `2ⁿ`
    /// is still normal.
    const EXPM1_LO: Self;
    /// `ln` scales subnormal inputs by `2^LN_SCALE` first.
    const LN_SCALE: Self;
    const LN_SCALE_EXP: Self;
    /// `erf` uses `x·P(x²)` up to `ERF_SPLIT`, `1 − erfc` above, and is 1 from `ERF_ONE`.
    const ERF_SPLIT: Self;
    const ERF_ONE: Self;
    /// Beyond `PHI_MAX`, `Φ(−t)` times anything the kernels multiply it by underflows.
    const PHI_MAX: Self;
    const PHI_K: Self;
    const PHI_A: Self;
    const PHI_B: Self;
    const EXP_POLY: &'static [Self];
    const LN_POLY: &'static [Self];
    const ERF_POLY: &'static [Self];
    const PHI_POLY: &'static [Self];
    const GELU_POLY: &'static [Self];

    /// `a·b + c`, fused (one rounding): only called in the FMA instantiations.
    fn fma(a: Self, b: Self, c: Self) -> Self;
    /// `|x|`.
    fn fabs(self) -> Self;
    /// `|self|` with the sign of `sign`.
    fn with_sign_of(self, sign: Self) -> Self;
    /// `2ⁿ` for `n` integer-valued with `|n|` within the normal exponents.
    fn pow2(n: Self) -> Self;
    /// `x` with the low half of its significand cleared: its square is exact.
    fn split(self) -> Self;
    /// For positive normal finite `x`: `(k, f)` with `x = 2ᵏ (1 + f)`, `√2/2 ≤ 1 + f < √2`.
    fn ln_reduce(self) -> (Self, Self);
}

impl Real for f32 {
    const ZERO: f32 = 0.0;
    const ONE: f32 = 1.0;
    const TWO: f32 = 2.0;
    const HALF: f32 = 0.5;
    const INFINITY: f32 = f32::INFINITY;
    const NAN: f32 = f32::NAN;
    const MIN: f32 = f32::MIN;
    const MIN_POSITIVE: f32 = f32::MIN_POSITIVE;
    const SQRT_2: f32 = std::f32::consts::SQRT_2;
    const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = f32::from_bits(0x3f31_7180);
    const LN2_LO: f32 = f32::from_bits(0x3717_f7d1);
    const SHIFT: f32 = 12_582_912.0;
    const EXP_LO: f32 = -104.0;
    const EXP_HI: f32 = 89.0;
    const SILU_LO: f32 = 1.1;
    const EXPM1_LO: f32 = -87.0;
    const LN_SCALE: f32 = 33_554_432.0; // 2^25
    const LN_SCALE_EXP: f32 = 25.0;
    const ERF_SPLIT: f32 = 0.5625;
    const ERF_ONE: f32 = 4.0;
    const PHI_MAX: f32 = 15.0;
    const PHI_K: f32 = c::PHI_F32_K;
    const PHI_A: f32 = c::PHI_F32_A;
    const PHI_B: f32 = c::PHI_F32_B;
    const EXP_POLY: &'static [f32] = &c::EXP_F32;
    const LN_POLY: &'static [f32] = &LN_F32;
    const ERF_POLY: &'static [f32] = &c::ERF_F32;
    const PHI_POLY: &'static [f32] = &c::PHI_F32;
    const GELU_POLY: &'static [f32] = &c::GELU_F32;

    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    fn fabs(self) -> f32 {
        f32::abs(self)
    }
    #[inline(always)]
    fn with_sign_of(self, sign: f32) -> f32 {
        f32::copysign(self, sign)
    }
    #[inline(always)]
    fn pow2(n: f32) -> f32 {
        // the bits of n + SHIFT are those of SHIFT plus n; SHIFT's vanish in the shift
        f32::from_bits((n + Self::SHIFT).to_bits().wrapping_add(127) << 23)
    }
    #[inline(always)]
    fn split(self) -> f32 {
        f32::from_bits(self.to_bits() & 0xffff_f000)
    }
    #[inline(always)]
    fn ln_reduce(self) -> (f32, f32) {
        // musl's logf: the exponent of x·(2/√2)… read off the bits
        let ix = self.to_bits().wrapping_add(0x3f80_0000 - 0x3f35_04f3);
        // k + 2²³ + 127 as a float, without an int → float conversion
        let k = f32::from_bits(0x4b00_0000 | (ix >> 23)) - (8_388_608.0 + 127.0);
        let m = f32::from_bits((ix & 0x007f_ffff) + 0x3f35_04f3);
        (k, m - 1.0)
    }
}

impl Real for f64 {
    const ZERO: f64 = 0.0;
    const ONE: f64 = 1.0;
    const TWO: f64 = 2.0;
    const HALF: f64 = 0.5;
    const INFINITY: f64 = f64::INFINITY;
    const NAN: f64 = f64::NAN;
    const MIN: f64 = f64::MIN;
    const MIN_POSITIVE: f64 = f64::MIN_POSITIVE;
    const SQRT_2: f64 = std::f64::consts::SQRT_2;
    const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
    const LOG2_E: f64 = std::f64::consts::LOG2_E;
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    const EXP_LO: f64 = -746.0;
    const EXP_HI: f64 = 710.0;
    const SILU_LO: f64 = 1.1;
    const EXPM1_LO: f64 = -700.0;
    const LN_SCALE: f64 = 18_014_398_509_481_984.0; // 2^54
    const LN_SCALE_EXP: f64 = 54.0;
    const ERF_SPLIT: f64 = 0.5625;
    const ERF_ONE: f64 = 6.0;
    const PHI_MAX: f64 = 40.0;
    const PHI_K: f64 = c::PHI_F64_K;
    const PHI_A: f64 = c::PHI_F64_A;
    const PHI_B: f64 = c::PHI_F64_B;
    const EXP_POLY: &'static [f64] = &c::EXP_F64;
    const LN_POLY: &'static [f64] = &LN_F64;
    const ERF_POLY: &'static [f64] = &c::ERF_F64;
    const PHI_POLY: &'static [f64] = &c::PHI_F64;
    const GELU_POLY: &'static [f64] = &c::GELU_F64;

    #[inline(always)]
    fn fma(a: f64, b: f64, c: f64) -> f64 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    fn fabs(self) -> f64 {
        f64::abs(self)
    }
    #[inline(always)]
    fn with_sign_of(self, sign: f64) -> f64 {
        f64::copysign(self, sign)
    }
    #[inline(always)]
    fn pow2(n: f64) -> f64 {
        f64::from_bits((n + Self::SHIFT).to_bits().wrapping_add(1023) << 52)
    }
    #[inline(always)]
    fn split(self) -> f64 {
        f64::from_bits(self.to_bits() & 0xffff_ffff_f800_0000)
    }
    #[inline(always)]
    fn ln_reduce(self) -> (f64, f64) {
        // musl's log on the high word, here on all 64 bits (the low word is unchanged)
        let ix = self
            .to_bits()
            .wrapping_add((0x3ff0_0000 - 0x3fe6_a09e) << 32);
        let k =
            f64::from_bits(0x4330_0000_0000_0000 | (ix >> 52)) - (4_503_599_627_370_496.0 + 1023.0);
        let m = f64::from_bits((ix & 0x000f_ffff_ffff_ffff) + (0x3fe6_a09e << 32));
        (k, m - 1.0)
    }
}

/// `R(z) = (ln(1+s) − ln(1−s) − 2s)/s` as a polynomial in `z = s²`, `z·(Lg1 + z·Lg2 + …)`:
/// fdlibm's coefficients (musl's `logf` and `log`, via the `libm` crate), `|error|` below
/// 2⁻³⁴·²⁴ (f32) and 2⁻⁵⁸·⁴⁵ (f64) on `|s| < 0.1716`.
///
/// Copyright (C) 1993 by Sun Microsystems, Inc. All rights reserved. Developed at SunPro,
/// a Sun Microsystems, Inc. business. Permission to use, copy, modify, and distribute this
/// software is freely granted, provided that this notice is preserved.
#[allow(clippy::excessive_precision)]
const LN_F32: [f32; 4] = [
    0.666_666_626_93,
    0.400_009_721_52,
    0.284_987_866_88,
    0.242_790_788_41,
];
#[allow(clippy::excessive_precision)]
const LN_F64: [f64; 7] = [
    6.666_666_666_666_735_130e-01,
    3.999_999_999_940_941_908e-01,
    2.857_142_874_366_239_149e-01,
    2.222_219_843_214_978_396e-01,
    1.818_357_216_161_805_012e-01,
    1.531_383_769_920_937_332e-01,
    1.479_819_860_511_658_591e-01,
];
