//! The accuracy of the elementwise kernels, in ulps, against references of higher
//! precision: for f32, the f64 functions of std and `libm` (errors below 2⁻²⁸ f32 ulps);
//! for f64, double-double arithmetic ([`dd`], ≈ 106 bits), itself checked against mpmath.
//!
//! Every kernel is measured in both forms of `a·b + c` (apart, as the SSE2 baseline runs
//! it, and fused, as the AVX2 + FMA and aarch64 paths run it), whatever the CPU: the slice
//! loops compute bit for bit what these scalar evaluations compute (`paths_match_scalar`).
//!
//! `cargo test --lib accuracy` draws 20,000 inputs per kernel, type and form;
//! `TAPEGRAD_KERNEL_SAMPLES=1000000 cargo test --release --lib accuracy -- --nocapture`
//! draws a million and prints the table of `math.rs`.

mod dd;

use dd::{Dd, Scaled};

use super::math::{Apart, Fused, Madd};
use super::real::Real;
use super::vector::{self, Kernel, Path};
use super::vector::{Elu, Erf, Exp, Gelu, GeluGrad, GeluTanh, Ln, Sigmoid, Silu, Softplus, Tanh};
use super::vector::{GELU_CUBIC, SQRT_2_OVER_PI};

/// The bound every kernel keeps (the issue's), in ulps.
const BOUND: f64 = 4.0;

fn samples() -> usize {
    std::env::var("TAPEGRAD_KERNEL_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// SplitMix64: a small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Where a kernel's inputs are drawn: uniform on `[lo, hi]`, or `±2^u` with `u` uniform on
/// `[lo, hi]` (both signs unless `positive`).
#[derive(Clone, Copy)]
enum Range {
    Uniform(f64, f64),
    Log(f64, f64),
}

/// A kernel under test: its references and where its inputs are drawn.
struct Spec {
    name: &'static str,
    /// The f32 kernel's reference, computed in f64: (value, magnitude the ulp is taken
    /// of) — the value itself except for `gelu_grad`.
    f32_ref: fn(f64) -> (f64, f64),
    f64_ref: fn(Dd) -> (Scaled, Scaled),
    ranges32: &'static [Range],
    ranges64: &'static [Range],
    positive: bool,
    /// Edges below this are left out.
    min: f64,
}

/// `⌊log₂ |v|⌋`, or a very negative number for 0.
fn ilogb(v: f64) -> i32 {
    if v == 0.0 || !v.is_finite() {
        return -100_000;
    }
    let e = ((v.abs().to_bits() >> 52) & 0x7ff) as i32;
    if e == 0 {
        v.abs().log2().floor() as i32
    } else {
        e - 1023
    }
}

/// `v·2ᵏ` for any `k` (in steps that neither overflow nor underflow on the way).
fn ldexp(mut v: f64, mut k: i32) -> f64 {
    while k > 500 {
        v *= 2f64.powi(500);
        k -= 500;
    }
    while k < -500 {
        v *= 2f64.powi(-500);
        k += 500;
    }
    v * 2f64.powi(k)
}

/// The error of an f32 result `y` in ulps of `base` (f32 spacing, subnormal below 2⁻¹²⁶),
/// against the reference `r`.
fn ulps_f32(y: f32, r: f64, base: f64) -> f64 {
    if r.is_nan() {
        return if y.is_nan() { 0.0 } else { f64::INFINITY };
    }
    if r.abs() >= 2f64.powi(128) || r.is_infinite() {
        // the correctly rounded result overflows
        return if y == r.signum() as f32 * f32::INFINITY {
            0.0
        } else {
            f64::INFINITY
        };
    }
    if y.is_nan() {
        return f64::INFINITY;
    }
    let y = if y.is_infinite() {
        f64::from(y.signum()) * 2f64.powi(128)
    } else {
        f64::from(y)
    };
    let e = ilogb(base).max(-126) - 23;
    (y - r).abs() / 2f64.powi(e)
}

/// The error of an f64 result `y` in ulps of `base` (f64 spacing, subnormal below 2⁻¹⁰²²),
/// against the reference `r`.
fn ulps_f64(y: f64, r: Scaled, base: Scaled) -> f64 {
    if r.m.hi.is_nan() {
        return if y.is_nan() { 0.0 } else { f64::INFINITY };
    }
    let e_ref = ilogb(base.m.hi) + base.k;
    if r.m.hi.is_infinite() {
        return if y == r.m.hi { 0.0 } else { f64::INFINITY };
    }
    if ilogb(r.m.hi) + r.k >= 1024 {
        return if y == r.m.hi.signum() * f64::INFINITY {
            0.0
        } else {
            f64::INFINITY
        };
    }
    if y.is_nan() {
        return f64::INFINITY;
    }
    let ulp = e_ref.max(-1022) - 52;
    let (ys, k) = if y.is_infinite() {
        (y.signum(), 1024 - r.k)
    } else {
        (y, -r.k)
    };
    // y·2^−r.k − m, exactly enough: both are close where it matters
    let diff = Dd::new(ldexp(ys, k)) - r.m;
    ldexp(diff.to_f64().abs(), r.k - ulp)
}

/// The largest error of `k` over `xs`, and where.
fn worst<F: Real, K: Kernel<F>, M: Madd>(k: K, xs: &[F], err: impl Fn(F, F) -> f64) -> (f64, F) {
    let mut max = (0.0, F::ZERO);
    for &x in xs {
        let e = err(x, vector::eval::<F, K, M>(k, x));
        if e > max.0 || e.is_nan() {
            max = (if e.is_nan() { f64::INFINITY } else { e }, x);
        }
    }
    max
}

/// Random inputs for `spec` (`f32`: rounded), then the edges.
fn inputs(spec: &Spec, ranges: &[Range], n: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng(seed);
    let mut xs = Vec::with_capacity(n);
    for i in 0..n {
        let x = match ranges[i % ranges.len()] {
            Range::Uniform(lo, hi) => lo + (hi - lo) * rng.unit(),
            Range::Log(lo, hi) => {
                let m = 2f64.powf(lo + (hi - lo) * rng.unit());
                if spec.positive || rng.next() & 1 == 0 {
                    m
                } else {
                    -m
                }
            }
        };
        xs.push(x);
    }
    xs
}

fn edges<F: Real + crate::Float + FromBitsAny>() -> Vec<F> {
    let tiny = F::min_positive_value();
    let sub = tiny * F::cast(0.25);
    let least = F::from_bits_any(1);
    let mut e = vec![
        F::zero(),
        F::cast(1e-30),
        tiny,
        sub,
        least,
        F::one(),
        F::cast(0.5625),
        F::cast(4.0),
        F::cast(6.0),
        F::cast(14.5),
        F::cast(40.0),
        F::cast(88.72),
        F::cast(89.0),
        F::cast(103.9),
        F::cast(104.0),
        F::cast(709.78),
        F::cast(710.0),
        F::cast(745.1),
        F::cast(746.0),
        F::cast(1e30),
        F::max_value(),
        F::infinity(),
    ];
    let neg: Vec<F> = e.iter().map(|&v| -v).collect();
    e.extend(neg);
    e.push(F::nan());
    e
}

/// `F` from the bits of an integer (the least subnormal is bits 1 for both types).
trait FromBitsAny {
    fn from_bits_any(b: u64) -> Self;
}
impl FromBitsAny for f32 {
    fn from_bits_any(b: u64) -> f32 {
        f32::from_bits(b as u32)
    }
}
impl FromBitsAny for f64 {
    fn from_bits_any(b: u64) -> f64 {
        f64::from_bits(b)
    }
}

/// Measures `k` on f32 and f64, both forms; returns the four maxima.
fn measure<K: Kernel<f32> + Kernel<f64>>(k: K, spec: &Spec) -> [f64; 4] {
    let n = samples();
    let mut x32: Vec<f32> = inputs(spec, spec.ranges32, n, 1)
        .iter()
        .map(|&v| v as f32)
        .collect();
    // ±∞ are checked for their exact limits by `special_values`
    let edge =
        |x: f64| x.is_finite() && x >= spec.min && (!spec.positive || x >= 0.0) || x.is_nan();
    x32.extend(edges::<f32>().into_iter().filter(|&x| edge(f64::from(x))));
    let mut x64 = inputs(spec, spec.ranges64, n, 2);
    x64.extend(edges::<f64>().into_iter().filter(|&x| edge(x)));
    let e32 = |x: f32, y: f32| {
        let (r, base) = (spec.f32_ref)(f64::from(x));
        ulps_f32(y, r, base)
    };
    let e64 = |x: f64, y: f64| {
        let (r, base) = (spec.f64_ref)(Dd::new(x));
        ulps_f64(y, r, base)
    };
    let results = [
        worst::<f32, K, Apart>(k, &x32, e32),
        worst::<f32, K, Fused>(k, &x32, e32),
    ];
    let results64 = [
        worst::<f64, K, Apart>(k, &x64, e64),
        worst::<f64, K, Fused>(k, &x64, e64),
    ];
    eprintln!(
        "| {} | {:.2} (x = {:e}) | {:.2} (x = {:e}) | {:.2} (x = {:e}) | {:.2} (x = {:e}) |",
        spec.name,
        results[0].0,
        results[0].1,
        results[1].0,
        results[1].1,
        results64[0].0,
        results64[0].1,
        results64[1].0,
        results64[1].1
    );
    [results[0].0, results[1].0, results64[0].0, results64[1].0]
}

fn plain(r: f64) -> (f64, f64) {
    (r, r)
}

fn plain64(r: Scaled) -> (Scaled, Scaled) {
    (r, r)
}

fn sigmoid64(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        x.exp() / (1.0 + x.exp())
    }
}

fn phi64(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

const EXP: Spec = Spec {
    name: "exp",
    f32_ref: |x| plain(x.exp()),
    f64_ref: |x| plain64(dd::exp(x)),
    ranges32: &[Range::Uniform(-110.0, 95.0), Range::Log(-30.0, 7.0)],
    ranges64: &[Range::Uniform(-750.0, 715.0), Range::Log(-60.0, 10.0)],
    positive: false,
    min: f64::NEG_INFINITY,
};

const LN: Spec = Spec {
    name: "ln",
    f32_ref: |x| plain(x.ln()),
    f64_ref: |x| plain64(Scaled::plain(dd::ln(x))),
    ranges32: &[Range::Log(-149.0, 128.0), Range::Uniform(0.5, 2.0)],
    ranges64: &[Range::Log(-1074.0, 1024.0), Range::Uniform(0.5, 2.0)],
    positive: true,
    min: f64::NEG_INFINITY,
};

const TANH: Spec = Spec {
    name: "tanh",
    f32_ref: |x| plain(x.tanh()),
    f64_ref: |x| plain64(Scaled::plain(dd::tanh(x))),
    ranges32: &[Range::Uniform(-10.0, 10.0), Range::Log(-40.0, 4.0)],
    ranges64: &[Range::Uniform(-20.0, 20.0), Range::Log(-70.0, 5.0)],
    positive: false,
    min: f64::NEG_INFINITY,
};

const SIGMOID: Spec = Spec {
    name: "sigmoid",
    f32_ref: |x| plain(sigmoid64(x)),
    f64_ref: |x| plain64(dd::sigmoid(x)),
    ranges32: &[Range::Uniform(-110.0, 20.0), Range::Log(-30.0, 7.0)],
    ranges64: &[Range::Uniform(-750.0, 40.0), Range::Log(-60.0, 10.0)],
    positive: false,
    min: f64::NEG_INFINITY,
};

const SOFTPLUS: Spec = Spec {
    name: "softplus",
    f32_ref: |x| plain(x.max(0.0) + (-x.abs()).exp().ln_1p()),
    f64_ref: |x| plain64(dd::softplus(x)),
    ranges32: &[Range::Uniform(-110.0, 30.0), Range::Log(-30.0, 7.0)],
    ranges64: &[Range::Uniform(-750.0, 50.0), Range::Log(-60.0, 10.0)],
    positive: false,
    min: f64::NEG_INFINITY,
};

const ERF: Spec = Spec {
    name: "erf",
    f32_ref: |x| plain(libm::erf(x)),
    f64_ref: |x| plain64(dd::erf(x)),
    ranges32: &[Range::Uniform(-5.0, 5.0), Range::Log(-30.0, 3.0)],
    ranges64: &[Range::Uniform(-7.0, 7.0), Range::Log(-60.0, 3.0)],
    positive: false,
    min: f64::NEG_INFINITY,
};

const GELU: Spec = Spec {
    name: "gelu",
    f32_ref: |x| plain(x * phi64(x)),
    f64_ref: |x| plain64(dd::gelu(x)),
    ranges32: &[Range::Uniform(-16.0, 8.0), Range::Log(-30.0, 4.0)],
    ranges64: &[Range::Uniform(-40.0, 10.0), Range::Log(-60.0, 5.5)],
    positive: false,
    min: f64::NEG_INFINITY,
};

const GELU_GRAD: Spec = Spec {
    name: "gelu_grad",
    f32_ref: |x| {
        let (p, d) = (phi64(x), x * (-0.5 * x * x).exp() * 0.398_942_280_401_432_7);
        (p + d, p.abs().max(d.abs()))
    },
    f64_ref: |x| {
        let (p, d) = dd::gelu_grad_terms(x);
        dd::sum_and_larger(p, d)
    },
    ranges32: &[Range::Uniform(-16.0, 8.0), Range::Log(-30.0, 4.0)],
    ranges64: &[Range::Uniform(-40.0, 10.0), Range::Log(-60.0, 5.5)],
    positive: false,
    min: f64::NEG_INFINITY,
};

const ELU: Spec = Spec {
    name: "elu (α = 1)",
    f32_ref: |x| plain(if x > 0.0 { x } else { x.exp_m1() }),
    f64_ref: |x| plain64(dd::elu(x)),
    ranges32: &[Range::Uniform(-20.0, 5.0), Range::Log(-40.0, 7.0)],
    ranges64: &[Range::Uniform(-40.0, 5.0), Range::Log(-70.0, 10.0)],
    positive: false,
    min: f64::NEG_INFINITY,
};

const SILU: Spec = Spec {
    name: "silu",
    f32_ref: |x| plain(x * sigmoid64(x)),
    f64_ref: |x| plain64(dd::silu(x)),
    ranges32: &[Range::Uniform(-110.0, 20.0), Range::Log(-30.0, 7.0)],
    ranges64: &[Range::Uniform(-750.0, 40.0), Range::Log(-60.0, 10.0)],
    positive: false,
    min: f64::NEG_INFINITY,
};

/// `gelu_tanh` for `x ≥ −1`: further left its error grows as `|2u|` ulps, the condition
/// number of `σ` at `2u` times the rounding of `u` (`gelu_tanh_far_left` prints it).
const GELU_TANH_NEAR: Spec = Spec {
    name: "gelu_tanh (x ≥ −1)",
    f32_ref: |x| {
        let (c, k) = (
            f64::from(SQRT_2_OVER_PI as f32),
            f64::from(GELU_CUBIC as f32),
        );
        plain(x * sigmoid64(2.0 * c * (x + k * x * x * x)))
    },
    f64_ref: |x| plain64(dd::gelu_tanh(x, SQRT_2_OVER_PI, GELU_CUBIC)),
    ranges32: &[Range::Uniform(-1.0, 8.0), Range::Log(-30.0, 0.0)],
    ranges64: &[Range::Uniform(-1.0, 10.0), Range::Log(-60.0, 0.0)],
    positive: false,
    min: -1.0,
};

/// `gelu_tanh` over `[−25, −1]`, where the rounding of `u` dominates (printed, and held
/// to `4 + 3|2u|` ulps at the worst point).
#[test]
fn gelu_tanh_far_left() {
    let spec = Spec {
        name: "gelu_tanh (x < −1)",
        ranges32: &[Range::Uniform(-12.0, -1.0)],
        ranges64: &[Range::Uniform(-25.0, -1.0)],
        min: f64::NEG_INFINITY,
        ..GELU_TANH_NEAR
    };
    let worst = measure(GeluTanh, &spec);
    // the largest |2u| over each range
    let u = |x: f64| 2.0 * SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x).abs();
    assert!(worst[0].max(worst[1]) <= 4.0 + 3.0 * u(12.0));
    assert!(worst[2].max(worst[3]) <= 4.0 + 3.0 * u(25.0));
}

/// `elu` with α = 1, for both types.
#[derive(Clone, Copy)]
struct EluOne;

impl<F: crate::Float> Kernel<F> for EluOne {
    fn apply<M: Madd>(self, x: F) -> F {
        Elu(F::one()).apply::<M>(x)
    }
    fn std(self, x: F) -> F {
        Elu(F::one()).std(x)
    }
}

#[test]
fn exp_and_ln_within_bound() {
    for e in measure(Exp, &EXP).into_iter().chain(measure(Ln, &LN)) {
        assert!(e <= BOUND, "{e} ulps");
    }
}

#[test]
fn tanh_sigmoid_softplus_within_bound() {
    let all = [
        measure(Tanh, &TANH),
        measure(Sigmoid, &SIGMOID),
        measure(Softplus, &SOFTPLUS),
    ];
    for e in all.into_iter().flatten() {
        assert!(e <= BOUND, "{e} ulps");
    }
}

#[test]
fn erf_and_gelu_within_bound() {
    let all = [
        measure(Erf, &ERF),
        measure(Gelu, &GELU),
        measure(GeluGrad, &GELU_GRAD),
    ];
    for e in all.into_iter().flatten() {
        assert!(e <= BOUND, "{e} ulps");
    }
}

#[test]
fn compositions_within_bound() {
    let all = [
        measure(EluOne, &ELU),
        measure(Silu, &SILU),
        measure(GeluTanh, &GELU_TANH_NEAR),
    ];
    for e in all.into_iter().flatten() {
        assert!(e <= BOUND, "{e} ulps");
    }
}

/// The kernels are called the same in every path: the slice loops on this machine give,
/// bit for bit, the scalar evaluations that the accuracy tests measure.
#[test]
fn paths_match_scalar() {
    fn check<F: Real + crate::Float + FromBitsAny, K: Kernel<F>>(k: K) {
        let spec_x: Vec<F> = (0..3000)
            .map(|i| F::cast((f64::from(i) - 1500.0) * 0.037))
            .chain(edges::<F>())
            .collect();
        let same = |a: F, b: F| a == b || (a.is_nan() && b.is_nan());
        for (path, fused) in [
            (Path::Baseline, cfg!(target_arch = "aarch64")),
            (Path::Avx2, true),
        ] {
            if path == Path::Avx2 && !vector::has_avx2() {
                continue;
            }
            let mut y = vec![F::zero(); spec_x.len()];
            vector::map_on(path, k, &spec_x, &mut y);
            for (&x, &y) in spec_x.iter().zip(&y) {
                let s = if fused {
                    vector::eval::<F, K, Fused>(k, x)
                } else {
                    vector::eval::<F, K, Apart>(k, x)
                };
                assert!(same(y, s), "{path:?} at {x}: {y} ≠ {s}");
            }
        }
    }
    check::<f32, _>(Exp);
    check::<f64, _>(Exp);
    check::<f32, _>(Ln);
    check::<f64, _>(Ln);
    check::<f32, _>(Tanh);
    check::<f64, _>(Tanh);
    check::<f32, _>(Sigmoid);
    check::<f64, _>(Sigmoid);
    check::<f32, _>(Softplus);
    check::<f64, _>(Softplus);
    check::<f32, _>(Erf);
    check::<f64, _>(Erf);
    check::<f32, _>(Gelu);
    check::<f64, _>(Gelu);
    check::<f32, _>(GeluGrad);
    check::<f64, _>(GeluGrad);
    check::<f32, _>(Silu);
    check::<f64, _>(Silu);
    check::<f32, _>(Elu(1.5f32));
    check::<f64, _>(Elu(1.5f64));
    check::<f32, _>(GeluTanh);
    check::<f64, _>(GeluTanh);
}

/// The exact IEEE results at the edges, in every form and on every path of this machine.
#[test]
fn special_values() {
    fn check<F: Real + crate::Float + FromBitsAny>() {
        let (inf, nan, zero) = (F::infinity(), F::nan(), F::zero());
        let least = F::from_bits_any(1);
        let cases: Vec<(&str, Vec<(F, F)>)> = vec![
            (
                "exp",
                vec![
                    (-inf, zero),
                    (inf, inf),
                    (zero, F::one()),
                    (-zero, F::one()),
                ],
            ),
            (
                "ln",
                vec![
                    (zero, -inf),
                    (-zero, -inf),
                    (-F::one(), nan),
                    (-inf, nan),
                    (inf, inf),
                    (F::one(), zero),
                ],
            ),
            (
                "tanh",
                vec![
                    (inf, F::one()),
                    (-inf, -F::one()),
                    (zero, zero),
                    (least, least),
                    (-least, -least),
                ],
            ),
            (
                "sigmoid",
                vec![(-inf, zero), (inf, F::one()), (zero, F::cast(0.5))],
            ),
            (
                "softplus",
                vec![(-inf, zero), (inf, inf), (zero, F::cast(2f64.ln()))],
            ),
            (
                "erf",
                vec![(inf, F::one()), (-inf, -F::one()), (zero, zero)],
            ),
            ("gelu", vec![(inf, inf), (-inf, zero), (zero, zero)]),
            (
                "gelu_grad",
                vec![(inf, F::one()), (-inf, zero), (zero, F::cast(0.5))],
            ),
            ("silu", vec![(inf, inf), (-inf, zero), (zero, zero)]),
            ("gelu_tanh", vec![(inf, inf), (-inf, zero), (zero, zero)]),
        ];
        for (name, pairs) in cases {
            for (x, want) in pairs.into_iter().chain([(nan, nan)]) {
                for got in run(name, x) {
                    let ok = if want.is_nan() {
                        got.is_nan()
                    } else {
                        got == want
                    };
                    assert!(ok, "{name}({x}) = {got}, not {want}");
                }
            }
        }
        // signs of zero
        for got in run("tanh", -zero).into_iter().chain(run("erf", -zero)) {
            assert!(got == zero && got.is_sign_negative(), "−0 keeps its sign");
        }
        for got in run("ln", least) {
            assert!(got.is_finite() && got < zero, "ln of a subnormal");
        }
    }
    /// The kernel `name` of `x`: apart, fused, and through the slices of this machine.
    fn run<F: Real + crate::Float>(name: &str, x: F) -> Vec<F> {
        fn all<F: Real + crate::Float, K: Kernel<F>>(k: K, x: F) -> Vec<F> {
            let mut out = vec![
                vector::eval::<F, K, Apart>(k, x),
                vector::eval::<F, K, Fused>(k, x),
            ];
            let mut y = [F::zero()];
            vector::map_on(Path::Baseline, k, &[x], &mut y);
            out.push(y[0]);
            if vector::has_avx2() {
                vector::map_on(Path::Avx2, k, &[x], &mut y);
                out.push(y[0]);
            }
            out
        }
        match name {
            "exp" => all(Exp, x),
            "ln" => all(Ln, x),
            "tanh" => all(Tanh, x),
            "sigmoid" => all(Sigmoid, x),
            "softplus" => all(Softplus, x),
            "erf" => all(Erf, x),
            "gelu" => all(Gelu, x),
            "gelu_grad" => all(GeluGrad, x),
            "silu" => all(Silu, x),
            "gelu_tanh" => all(GeluTanh, x),
            _ => unreachable!(),
        }
    }
    check::<f32>();
    check::<f64>();
}

/// The double-double references agree with mpmath at 50 digits to 2⁻⁸⁵ (relative) at every point of
/// `tests/data/kernel_reference.txt` (made by `tests/data/make_kernel_reference.py`).
#[test]
fn reference_matches_mpmath() {
    /// Python's `float.hex()`: `[-]0x1.<13 hex digits>p<exp>` (or `0x0.0p+0`).
    fn parse_hex(s: &str) -> f64 {
        let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
        let s = s.strip_prefix("0x").expect("0x");
        let (mant, exp) = s.split_once('p').expect("p");
        let (int, frac) = mant.split_once('.').expect(".");
        let bits = u64::from_str_radix(frac, 16).expect("hex digits");
        let v = (f64::from(u32::from_str_radix(int, 16).expect("hex"))
            + bits as f64 / 16f64.powi(frac.len() as i32))
            * 2f64.powi(exp.parse::<i32>().expect("exponent").clamp(-1022, 1023));
        let e: i32 = exp.parse().expect("exponent");
        let v = if e < -1022 { ldexp(v, e + 1022) } else { v };
        if neg { -v } else { v }
    }
    /// A decimal in [1, 2) (or 0) to double-double, from its first 36 digits.
    fn parse_decimal(s: &str) -> Dd {
        let digits: String = s.chars().filter(char::is_ascii_digit).take(36).collect();
        let n: u128 = digits.parse().expect("digits");
        let to_dd = |n: u128| {
            let hi = n as f64;
            let rest = n as i128 - hi as i128;
            Dd::new(hi) + Dd::new(rest as f64)
        };
        to_dd(n) / to_dd(10u128.pow(digits.len() as u32 - 1))
    }
    let text = include_str!("../../tests/data/kernel_reference.txt");
    let mut checked = 0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let x = Dd::new(parse_hex(f[1]));
        let (m, k) = (parse_decimal(f[2]), f[3].parse::<i32>().expect("k"));
        let got = match f[0] {
            "exp" => dd::exp(x),
            "ln" => Scaled::plain(dd::ln(x)),
            "tanh" => Scaled::plain(dd::tanh(x)),
            "sigmoid" => dd::sigmoid(x),
            "softplus" => dd::softplus(x),
            "erf" => dd::erf(x),
            "gelu" => dd::gelu(x),
            "phi" => dd::phi(x),
            "density" => dd::gelu_grad_terms(x).1,
            "elu" => dd::elu(x),
            "silu" => dd::silu(x),
            other => panic!("unknown {other}"),
        };
        let sign = if f[2].starts_with('-') { -1.0 } else { 1.0 };
        let want = m * sign;
        if want.hi == 0.0 {
            assert_eq!(got.m.hi, 0.0, "{line}");
            checked += 1;
            continue;
        }
        let got_m = got.m.scale(got.k - k);
        let err = ((got_m - want) / want).to_f64().abs();
        assert!(
            err < 2f64.powi(-85),
            "{line}: double-double gives {got:?}, off by {err:e}"
        );
        checked += 1;
    }
    assert!(checked > 100);
}
