//! Double-double arithmetic (≈ 106 bits; Dekker, and the QD library's algorithms) and
//! the reference functions for the f64 kernels, with results scaled by a power of two so
//! that tiny results keep their precision: a [`Scaled`] `(m, k)` stands for `m·2ᵏ`.
//!
//! The references are checked against mpmath at 50 digits by `reference_matches_mpmath`
//! (the fixture `tests/data/kernel_reference.txt`).

use std::ops::{Add, Div, Mul, Neg, Sub};

/// `hi + lo`, `|lo| ≤ ulp(hi)/2`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dd {
    pub hi: f64,
    pub lo: f64,
}

fn two_sum(a: f64, b: f64) -> Dd {
    let s = a + b;
    let bb = s - a;
    Dd {
        hi: s,
        lo: (a - (s - bb)) + (b - bb),
    }
}

fn quick_two_sum(a: f64, b: f64) -> Dd {
    let s = a + b;
    Dd {
        hi: s,
        lo: b - (s - a),
    }
}

fn split(a: f64) -> (f64, f64) {
    let t = 134_217_729.0 * a;
    let hi = t - (t - a);
    (hi, a - hi)
}

fn two_prod(a: f64, b: f64) -> Dd {
    let p = a * b;
    let (ah, al) = split(a);
    let (bh, bl) = split(b);
    Dd {
        hi: p,
        lo: ((ah * bh - p) + ah * bl + al * bh) + al * bl,
    }
}

impl Dd {
    pub const fn new(x: f64) -> Dd {
        Dd { hi: x, lo: 0.0 }
    }

    pub fn to_f64(self) -> f64 {
        self.hi + self.lo
    }

    /// `self·2ᵏ`, in steps that neither overflow nor underflow on the way.
    pub fn scale(self, k: i32) -> Dd {
        let (mut d, mut k) = (self, k);
        while k != 0 {
            let step = k.clamp(-500, 500);
            let s = 2f64.powi(step);
            d = Dd {
                hi: d.hi * s,
                lo: d.lo * s,
            };
            k -= step;
        }
        d
    }

    pub fn abs(self) -> Dd {
        if self.hi < 0.0 { -self } else { self }
    }

    pub fn sqrt(self) -> Dd {
        let x = self.hi.sqrt();
        let r = self - two_prod(x, x);
        quick_two_sum(x, r.hi / (2.0 * x))
    }
}

impl Add for Dd {
    type Output = Dd;
    fn add(self, b: Dd) -> Dd {
        let s = two_sum(self.hi, b.hi);
        let t = two_sum(self.lo, b.lo);
        let s = quick_two_sum(s.hi, s.lo + t.hi);
        quick_two_sum(s.hi, s.lo + t.lo)
    }
}

impl Neg for Dd {
    type Output = Dd;
    fn neg(self) -> Dd {
        Dd {
            hi: -self.hi,
            lo: -self.lo,
        }
    }
}

impl Sub for Dd {
    type Output = Dd;
    fn sub(self, b: Dd) -> Dd {
        self + -b
    }
}

impl Mul for Dd {
    type Output = Dd;
    fn mul(self, b: Dd) -> Dd {
        let p = two_prod(self.hi, b.hi);
        quick_two_sum(p.hi, p.lo + (self.hi * b.lo + self.lo * b.hi))
    }
}

impl Mul<f64> for Dd {
    type Output = Dd;
    fn mul(self, b: f64) -> Dd {
        let p = two_prod(self.hi, b);
        quick_two_sum(p.hi, p.lo + self.lo * b)
    }
}

impl Div for Dd {
    type Output = Dd;
    fn div(self, b: Dd) -> Dd {
        let q1 = self.hi / b.hi;
        let r = self - b * q1;
        let q2 = r.hi / b.hi;
        let r = r - b * q2;
        let q3 = r.hi / b.hi;
        quick_two_sum(q1, q2) + Dd::new(q3)
    }
}

/// π (QD's `dd_real::_pi`).
pub const PI: Dd = Dd {
    hi: std::f64::consts::PI,
    lo: 1.224_646_799_147_353_2e-16,
};
/// ln 2 (QD's `dd_real::_log2`).
pub const LN2: Dd = Dd {
    hi: std::f64::consts::LN_2,
    lo: 2.319_046_813_846_299_6e-17,
};

/// `m·2ᵏ`.
#[derive(Clone, Copy, Debug)]
pub struct Scaled {
    pub m: Dd,
    pub k: i32,
}

impl Scaled {
    pub fn plain(m: Dd) -> Scaled {
        Scaled { m, k: 0 }
    }
    /// The value as a double-double, for values within the normal range.
    pub fn value(self) -> Dd {
        self.m.scale(self.k)
    }
    fn mul(self, b: Dd) -> Scaled {
        Scaled {
            m: self.m * b,
            k: self.k,
        }
    }
}

/// `eˣ` as `(e^r, n)`, `x = n ln2 + r` (`x` held in `[−5000, 5000]`, far past the
/// range of f64).
pub fn exp(x: Dd) -> Scaled {
    let x = if x.hi < -5000.0 {
        Dd::new(-5000.0)
    } else if x.hi > 5000.0 {
        Dd::new(5000.0)
    } else {
        x
    };
    let n = (x.hi / LN2.hi).round();
    let r = (x - LN2 * n).scale(-10);
    // e^r − 1 by Taylor's series (|r| < 2^−11: 12 terms are past 2^−130)
    let mut term = r;
    let mut em1 = r;
    for i in 2..=14 {
        term = term * r / Dd::new(f64::from(i));
        em1 = em1 + term;
    }
    // (1 + e)² − 1 = 2e + e², ten times
    for _ in 0..10 {
        em1 = em1 * 2.0 + em1 * em1;
    }
    Scaled {
        m: Dd::new(1.0) + em1,
        k: n as i32,
    }
}

/// `eˣ − 1` for `x ≤ 0`.
pub fn expm1(x: Dd) -> Dd {
    if x.hi.abs() < 1e-5 {
        // x + x²/2 + x³/6 + x⁴/24 + x⁵/120: the next term is below 2^−110 relative
        let mut term = x;
        let mut s = x;
        for i in 2..=6 {
            term = term * x / Dd::new(f64::from(i));
            s = s + term;
        }
        return s;
    }
    exp(x).value() - Dd::new(1.0)
}

/// `ln x` for positive finite `x`: `x = 2ᵉ x′` with `x′` in [1, 2), and two Newton steps
/// on `eʸ = x′` from `ln x′.hi`.
pub fn ln(x: Dd) -> Dd {
    if !(x.hi > 0.0 && x.hi.is_finite()) {
        return Dd::new(x.hi.ln());
    }
    let e = x.hi.log2().floor() as i32;
    LN2 * f64::from(e) + ln_near_one(x.scale(-e))
}

fn ln_near_one(x: Dd) -> Dd {
    let mut y = Dd::new(x.hi.ln());
    for _ in 0..2 {
        let e = exp(-y);
        y = y + (x * e.m).scale(e.k) - Dd::new(1.0);
    }
    y
}

/// `tanh x`.
pub fn tanh(x: Dd) -> Dd {
    let a = x.abs();
    let t = if a.hi < 1e-5 {
        // x − x³/3 + 2x⁵/15 − 17x⁷/315
        let z = a * a;
        a * (Dd::new(1.0) - z * (Dd::new(1.0) / Dd::new(3.0))
            + z * z * (Dd::new(2.0) / Dd::new(15.0))
            - z * z * z * (Dd::new(17.0) / Dd::new(315.0)))
    } else if a.hi > 40.0 {
        Dd::new(1.0)
    } else {
        let e = exp(a * 2.0).value();
        (e - Dd::new(1.0)) / (e + Dd::new(1.0))
    };
    if x.hi < 0.0 { -t } else { t }
}

/// `σ(x)`.
pub fn sigmoid(x: Dd) -> Scaled {
    if x.hi >= 0.0 {
        let e = exp(-x);
        let e = if e.k < -1000 { Dd::new(0.0) } else { e.value() };
        Scaled::plain(Dd::new(1.0) / (Dd::new(1.0) + e))
    } else {
        // eˣ/(1 + eˣ)
        let e = exp(x);
        let d = if e.k < -1000 {
            Dd::new(1.0)
        } else {
            Dd::new(1.0) + e.value()
        };
        Scaled { m: e.m / d, k: e.k }
    }
}

/// `ln(1 + eˣ)`.
pub fn softplus(x: Dd) -> Scaled {
    let e = exp(-x.abs());
    let log1p = if e.k < -10 {
        // y − y²/2 + y³/3 − …, y = e.m·2^k < 2^−9: 14 terms
        let y = e.value();
        let mut s = Dd::new(0.0);
        for i in (1..=14).rev() {
            s = Dd::new(1.0) / Dd::new(f64::from(i)) - y * s;
        }
        Scaled { m: e.m * s, k: e.k }
    } else {
        Scaled::plain(ln(Dd::new(1.0) + e.value()))
    };
    if x.hi > 0.0 {
        Scaled::plain(x + log1p.value())
    } else {
        log1p
    }
}

/// `erf x / x · √π/2 · e^(x²)` = `Σ 2ⁿ x²ⁿ/(2n+1)!!`, for `|x| ≤ 3`.
fn erf_series(x: Dd) -> Dd {
    let z = x * x * 2.0;
    let mut term = Dd::new(1.0);
    let mut sum = term;
    let mut n = 1.0;
    while term.hi > 1e-34 * sum.hi {
        term = term * z / Dd::new(2.0 * n + 1.0);
        sum = sum + term;
        n += 1.0;
    }
    sum
}

/// `2/√π`.
fn two_over_sqrt_pi() -> Dd {
    Dd::new(2.0) / PI.sqrt()
}

/// `erfc z` for `z ≥ 3` by its continued fraction, `e^(−z²)/√π · 1/(z + ½/(z + 1/(z + …)))`.
fn erfc_cf(z: Dd) -> Scaled {
    let mut f = z;
    for k in (1..=600).rev() {
        f = z + Dd::new(f64::from(k) * 0.5) / f;
    }
    exp(-(z * z)).mul(Dd::new(1.0) / (f * PI.sqrt()))
}

/// `erf x`.
pub fn erf(x: Dd) -> Scaled {
    let a = x.abs();
    if a.hi > 30.0 {
        return Scaled::plain(Dd::new(x.hi.signum()));
    }
    if a.hi < 3.0 {
        // x·(2/√π) e^(−x²) S, x scaled up for subnormal x
        let e = exp(-(a * a));
        let v = x.scale(600) * two_over_sqrt_pi() * erf_series(a) * e.m;
        Scaled { m: v, k: e.k - 600 }
    } else {
        let v = Dd::new(1.0) - erfc_cf(a).value();
        Scaled::plain(if x.hi < 0.0 { -v } else { v })
    }
}

/// `Φ(x) = erfc(−x/√2)/2`.
pub fn phi(x: Dd) -> Scaled {
    let z = -x / Dd::new(2.0).sqrt();
    if z.hi < 3.0 {
        // (1 + erf(−z))/2
        let e = erf(-z).value();
        Scaled::plain((Dd::new(1.0) + e) * 0.5)
    } else {
        let c = erfc_cf(z);
        Scaled {
            m: c.m * 0.5,
            k: c.k,
        }
    }
}

/// A value far below the least subnormal, of the sign of `s`.
fn underflow(s: f64) -> Scaled {
    Scaled {
        m: Dd::new(s.signum()),
        k: -100_000,
    }
}

/// `x Φ(x)`.
pub fn gelu(x: Dd) -> Scaled {
    if x.hi > 45.0 {
        return Scaled::plain(x);
    }
    if x.hi < -45.0 {
        return underflow(-1.0);
    }
    phi(x).mul(x)
}

/// `(Φ(x), x φ(x))`, `φ(x) = e^(−x²/2)/√(2π)`.
pub fn gelu_grad_terms(x: Dd) -> (Scaled, Scaled) {
    if x.hi > 45.0 {
        return (Scaled::plain(Dd::new(1.0)), underflow(1.0));
    }
    if x.hi < -45.0 {
        return (underflow(1.0), underflow(-1.0));
    }
    let density = exp(-(x * x) * 0.5).mul(x / (PI * 2.0).sqrt());
    (phi(x), density)
}

/// `eˣ − 1` for `x ≤ 0`, `x` above.
pub fn elu(x: Dd) -> Scaled {
    Scaled::plain(if x.hi > 0.0 { x } else { expm1(x) })
}

/// `x σ(x)`.
pub fn silu(x: Dd) -> Scaled {
    if x.hi > 45.0 {
        return Scaled::plain(x);
    }
    if x.hi < -1e300 {
        return underflow(-1.0);
    }
    sigmoid(x).mul(x)
}

/// `x σ(2u)`, `u = √(2/π) (x + 0.044715 x³)` with the constants as the f64 kernel has them.
pub fn gelu_tanh(x: Dd, c: f64, k: f64) -> Scaled {
    if x.hi.abs() > 1e100 {
        return if x.hi > 0.0 {
            Scaled::plain(x)
        } else {
            underflow(-1.0)
        };
    }
    let u = (x + x * x * x * k) * c;
    sigmoid(u * 2.0).mul(x)
}

/// `(a + b, the larger of |a| and |b|)`.
pub fn sum_and_larger(a: Scaled, b: Scaled) -> (Scaled, Scaled) {
    let k = a.k.max(b.k);
    let (ma, mb) = (a.m.scale(a.k - k), b.m.scale(b.k - k));
    let larger = if ma.abs().hi > mb.abs().hi { ma } else { mb };
    (Scaled { m: ma + mb, k }, Scaled { m: larger.abs(), k })
}
