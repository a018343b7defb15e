//! Gaussian-process regression on the Mauna Loa CO2 series, its kernel's 11
//! hyperparameters fitted by maximising the log marginal likelihood through the tape:
//! Cholesky, a triangular solve and the log-determinant, all differentiated.
//!
//! ```text
//! cargo run --release --features openblas --example gp_co2
//! ```
//!
//! It follows scikit-learn's example "Forecasting of CO2 level on Mona Loa dataset using
//! Gaussian process regression" (`plot_gpr_co2.py`): monthly means of the weekly series in
//! `examples/data/co2.csv` (months without data are left out), `x = year + month/12`, `y`
//! in ppm minus its mean, and the kernel
//!
//! ```text
//! 50²·RBF(50) + 2²·RBF(100)·ExpSineSquared(length 1, period 1 fixed)
//!   + 0.5²·RationalQuadratic(length 1, α 1) + 0.1²·RBF(0.1) + White(0.1²)
//! ```
//!
//! with every hyperparameter but the period learned as its logarithm, in scikit-learn's
//! order (`THETA_NAMES`). The log marginal likelihood of `y` under `K + 10⁻¹⁰·I` (the
//! jitter scikit-learn adds) is `−½·zᵀz − Σ ln diag L − (n/2)·ln 2π` with `K = L·Lᵀ` and
//! `L·z = y`. L-BFGS (`tapegrad::optim::Lbfgs`) maximises it, as scikit-learn's L-BFGS-B does; the example prints it before and
//! after with the fitted kernel in scikit-learn's notation, extrapolates to 2030, and
//! writes the data, the mean and the ±2σ band to `target/gp-co2.svg`.
//!
//! `tests/examples.rs` checks the log marginal likelihood and its gradient at the initial
//! hyperparameters against scikit-learn's (`tests/data/gp_co2_sklearn.txt`, written by
//! `tests/data/make_gp_fixture.py`), and the fitted one against scikit-learn's optimum.

use std::error::Error;
use std::f64::consts::PI;
use std::path::Path;
use std::time::Instant;

use ndarray::{Array2, Axis};
use plotters::prelude::*;
use tapegrad::nn::Parameters;
use tapegrad::optim::{Lbfgs, LbfgsReport};
use tapegrad::{Tape, Tensor};

/// The kernel's free hyperparameters, in scikit-learn's `kernel.theta` order.
pub const THETA_NAMES: [&str; 11] = [
    "k1__k1__k1__k1__constant_value",
    "k1__k1__k1__k2__length_scale",
    "k1__k1__k2__k1__k1__constant_value",
    "k1__k1__k2__k1__k2__length_scale",
    "k1__k1__k2__k2__length_scale",
    "k1__k2__k1__constant_value",
    "k1__k2__k2__alpha",
    "k1__k2__k2__length_scale",
    "k2__k1__k1__constant_value",
    "k2__k1__k2__length_scale",
    "k2__k2__noise_level",
];

/// The initial hyperparameters (before their logarithm), in `THETA_NAMES` order.
pub const INITIAL: [f64; 11] = [
    2500.0, 50.0, 4.0, 100.0, 1.0, 0.25, 1.0, 1.0, 0.01, 0.1, 0.01,
];

/// The most L-BFGS iterations (each one line search of one or a few evaluations).
pub const MAX_ITERATIONS: usize = 200;

/// scikit-learn's `alpha`, added to the diagonal of the training covariance.
const JITTER: f64 = 1e-10;

/// The training data: monthly means, `x` and the centred `y` as n × 1 columns.
pub struct Data {
    pub x: Array2<f64>,
    pub y: Array2<f64>,
    pub y_mean: f64,
}

/// Loads `examples/data/co2.csv` (`date,co2`, weekly, YYYYMMDD): drops weeks without a
/// value, averages the rest per calendar month, in date order.
pub fn load() -> Result<Data, Box<dyn Error>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/co2.csv");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text.lines();
    if lines.next() != Some("date,co2") {
        return Err("co2.csv: expected the header `date,co2`".into());
    }
    // (year, month) → (sum, count), months in file order (the file is in date order)
    let mut months: Vec<((u32, u32), f64, usize)> = Vec::new();
    for line in lines {
        let (date, co2) = line
            .split_once(',')
            .ok_or("co2.csv: a line without a comma")?;
        if co2.is_empty() {
            continue;
        }
        let key = (date[0..4].parse()?, date[4..6].parse()?);
        let v: f64 = co2.parse()?;
        match months.last_mut() {
            Some((k, sum, count)) if *k == key => {
                *sum += v;
                *count += 1;
            }
            _ => months.push((key, v, 1)),
        }
    }
    let n = months.len();
    let x = Array2::from_shape_fn((n, 1), |(i, _)| {
        let (year, month) = months[i].0;
        f64::from(year) + f64::from(month) / 12.0
    });
    let y: Vec<f64> = months.iter().map(|(_, s, c)| s / *c as f64).collect();
    let y_mean = pairwise_sum(&y) / n as f64;
    let y = Array2::from_shape_fn((n, 1), |(i, _)| y[i] - y_mean);
    Ok(Data { x, y, y_mean })
}

/// NumPy's pairwise summation (blocks of 128 unrolled by 8), so that the mean matches
/// scikit-learn's to the last bit.
fn pairwise_sum(v: &[f64]) -> f64 {
    if v.len() < 8 {
        v.iter().sum()
    } else if v.len() <= 128 {
        let mut r = [0.0; 8];
        r.copy_from_slice(&v[..8]);
        let mut i = 8;
        while i + 8 <= v.len() {
            for (k, r) in r.iter_mut().enumerate() {
                *r += v[i + k];
            }
            i += 8;
        }
        let mut s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        s += v[i..].iter().sum::<f64>();
        s
    } else {
        let half = (v.len() / 2) / 8 * 8;
        pairwise_sum(&v[..half]) + pairwise_sum(&v[half..])
    }
}

/// The hyperparameters as a model: one 1 × 11 row, `θ = ln` of each.
pub struct Gp {
    pub theta: Array2<f64>,
}

impl Gp {
    pub fn initial() -> Self {
        Gp {
            theta: Array2::from_shape_fn((1, 11), |(_, k)| INITIAL[k].ln()),
        }
    }
}

impl Parameters<f64> for Gp {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Array2<f64>)) {
        f("theta", &self.theta);
    }
    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Array2<f64>)) {
        f("theta", &mut self.theta);
    }
}

/// `K(x₁, x₂)` for the 1 × 11 `theta` on the tape, without the white noise.
fn covariance<'t>(
    theta: Tensor<'t, f64>,
    x1: &Array2<f64>,
    x2: &Array2<f64>,
) -> tapegrad::Result<Tensor<'t, f64>> {
    let tape = theta.tape();
    let h = |k: usize| theta.try_slice(.., k..k + 1).map(|t| t.exp());
    // d² and the fixed-period sin²(π d): constants
    let d = &x1.view() - &x2.t();
    let d2 = tape.constant(d.mapv(|v| v * v));
    let s2 = tape.constant(d.mapv(|v| (PI * v).sin().powi(2)));
    // c·exp(−d²/(2l²)), the scale −1/(2l²) a 1 × 1 tensor broadcast over d²
    let rbf = |c: Tensor<'t, f64>, l: Tensor<'t, f64>| -> tapegrad::Result<Tensor<'t, f64>> {
        let scale = l.square().recip().mul_scalar(-0.5);
        d2.try_mul(scale)?.exp().try_mul(c)
    };
    let long = rbf(h(0)?, h(1)?)?;
    let periodic = s2.try_mul(h(4)?.square().recip().mul_scalar(-2.0))?.exp();
    let seasonal = rbf(h(2)?, h(3)?)?.try_mul(periodic)?;
    // c·(1 + d²/(2αl²))^(−α) = c·exp(−α·ln(1 + d²/(2αl²)))
    let (alpha, l4) = (h(6)?, h(7)?);
    let inner = d2
        .try_mul(alpha.try_mul(l4.square())?.mul_scalar(2.0).recip())?
        .add_scalar(1.0)
        .log();
    let irregular = inner.try_mul(alpha.neg())?.exp().try_mul(h(5)?)?;
    let noise = rbf(h(8)?, h(9)?)?;
    long.try_add(seasonal)?.try_add(irregular)?.try_add(noise)
}

/// `K + (σ²_white + 10⁻¹⁰)·I` at the training points.
fn training_covariance<'t>(
    theta: Tensor<'t, f64>,
    x: &Array2<f64>,
) -> tapegrad::Result<Tensor<'t, f64>> {
    let n = x.nrows();
    let eye = theta.tape().constant(Array2::eye(n));
    let white = theta.try_slice(.., 10..11)?.exp().add_scalar(JITTER);
    covariance(theta, x, x)?.try_add(eye.try_mul(white)?)
}

/// The log marginal likelihood `−½·zᵀz − Σ ln diag L − (n/2)·ln 2π`, `L·z = y`, as a
/// 1 × 1 tensor of `theta`'s tape.
pub fn log_marginal_likelihood<'t>(
    theta: Tensor<'t, f64>,
    data: &'t Data,
) -> tapegrad::Result<Tensor<'t, f64>> {
    let n = data.x.nrows() as f64;
    let l = training_covariance(theta, &data.x)?.try_cholesky()?;
    let z = l.try_solve_triangular(theta.tape().constant(&data.y), true, false)?;
    let fit = z.square().sum().mul_scalar(-0.5);
    let log_det = l.try_diag()?.log().sum();
    Ok(fit.try_sub(log_det)?.add_scalar(-0.5 * n * (2.0 * PI).ln()))
}

/// The log marginal likelihood at `theta` and its gradient with respect to `theta`.
pub fn lml_and_gradient(
    theta: &Array2<f64>,
    data: &Data,
) -> Result<(f64, Array2<f64>), Box<dyn Error>> {
    let tape = Tape::new();
    let t = tape.param(theta);
    let lml = log_marginal_likelihood(t, data)?;
    let value = lml.try_item()?;
    let grads = tape.backward(lml)?;
    Ok((value, grads.try_get(t)?.clone()))
}

/// The fit: the hyperparameters, the log marginal likelihood at each evaluation, and
/// L-BFGS's report.
pub struct Fit {
    pub gp: Gp,
    pub curve: Vec<f64>,
    pub report: LbfgsReport<f64>,
}

/// Maximises the log marginal likelihood (minimises `−LML`) with L-BFGS from the initial
/// hyperparameters, as scikit-learn does with SciPy's L-BFGS-B. `report` sees each
/// evaluation's log marginal likelihood.
pub fn fit(data: &Data, mut report: impl FnMut(usize, f64)) -> Result<Fit, Box<dyn Error>> {
    let mut gp = Gp::initial();
    let mut curve = Vec::new();
    let lbfgs = Lbfgs::new()
        .max_iterations(MAX_ITERATIONS)
        .tolerance_change(1e-9);
    let result = lbfgs.minimize(&mut gp, |gp| {
        let tape = Tape::new();
        let theta = tape.param(&gp.theta);
        let lml = log_marginal_likelihood(theta, data)?;
        curve.push(lml.try_item()?);
        report(curve.len(), curve[curve.len() - 1]);
        Ok::<_, tapegrad::Error>((-lml.try_item()?, tape.backward(lml.neg())?))
    })?;
    Ok(Fit {
        gp,
        curve,
        report: result,
    })
}

/// The predictive mean (in ppm) and standard deviation (of a new noisy observation, as
/// scikit-learn's `predict(return_std=True)`) at the n × 1 points `xs`.
pub fn predict(
    theta: &Array2<f64>,
    data: &Data,
    xs: &Array2<f64>,
) -> Result<(Vec<f64>, Vec<f64>), Box<dyn Error>> {
    let tape = Tape::new();
    let t = tape.constant(theta);
    let l = training_covariance(t, &data.x)?.try_cholesky()?;
    let alpha = l.try_cho_solve(tape.constant(&data.y))?; // K⁻¹·y
    let cross = covariance(t, &data.x, xs)?; // K(X, xs)
    let mean = cross.t().try_matmul(alpha)?.add_scalar(data.y_mean).value();
    // var = k(x, x) + σ²_white − ‖L⁻¹·k(X, x)‖²; k(x, x) is the sum of the constants
    let v = l.try_solve_triangular(cross, true, false)?;
    let explained = v.square().try_sum_axis(Axis(0))?.value();
    let h: Vec<f64> = theta.iter().map(|v| v.exp()).collect();
    let prior = h[0] + h[2] + h[5] + h[8] + h[10];
    let std = explained
        .iter()
        .map(|e| (prior - e).max(0.0).sqrt())
        .collect();
    Ok((mean.column(0).to_vec(), std))
}

/// A number as Python's `'{:.3g}'.format(x)`, as scikit-learn prints kernels.
pub fn g3(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let exp = x.abs().log10().floor() as i32;
    // the exponent after rounding to 3 significant digits
    let rounded: f64 = format!("{x:.2e}").parse().unwrap_or(x);
    let exp = if rounded.abs() >= 10f64.powi(exp + 1) {
        exp + 1
    } else {
        exp
    };
    let strip = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if !(-4..3).contains(&exp) {
        let s = format!("{x:.2e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let e: i32 = e.parse().unwrap_or(0);
        format!(
            "{}e{}{:02}",
            strip(m.to_string()),
            if e < 0 { '-' } else { '+' },
            e.abs()
        )
    } else {
        let decimals = (2 - exp).max(0) as usize;
        strip(format!("{x:.decimals$}"))
    }
}

/// The kernel at `theta`, in scikit-learn's notation.
pub fn kernel_string(theta: &Array2<f64>) -> String {
    let h: Vec<f64> = theta.iter().map(|v| v.exp()).collect();
    format!(
        "{}**2 * RBF(length_scale={}) + {}**2 * RBF(length_scale={}) * ExpSineSquared(length_scale={}, periodicity=1) + {}**2 * RationalQuadratic(alpha={}, length_scale={}) + {}**2 * RBF(length_scale={}) + WhiteKernel(noise_level={})",
        g3(h[0].sqrt()),
        g3(h[1]),
        g3(h[2].sqrt()),
        g3(h[3]),
        g3(h[4]),
        g3(h[5].sqrt()),
        g3(h[6]),
        g3(h[7]),
        g3(h[8].sqrt()),
        g3(h[9]),
        g3(h[10]),
    )
}

/// The data, the predictive mean and its ±2σ band, as an SVG.
fn plot(
    data: &Data,
    xs: &Array2<f64>,
    mean: &[f64],
    std: &[f64],
    path: &Path,
) -> Result<(), Box<dyn Error>> {
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let (lo, hi) = mean
        .iter()
        .zip(std)
        .fold((f64::MAX, f64::MIN), |(lo, hi), (m, s)| {
            (lo.min(m - 2.0 * s), hi.max(m + 2.0 * s))
        });
    let x0 = data.x[[0, 0]];
    let x1 = xs[[xs.nrows() - 1, 0]];
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Mauna Loa CO2: GP fit and forecast to 2030 (±2σ)",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(x0..x1, (lo - 2.0)..(hi + 2.0))?;
    chart
        .configure_mesh()
        .x_desc("year")
        .x_label_formatter(&|year| format!("{year:.0}"))
        .y_desc("CO2 (ppm)")
        .draw()?;
    let xs: Vec<f64> = xs.column(0).to_vec();
    let band: Vec<(f64, f64)> = xs
        .iter()
        .zip(mean.iter().zip(std))
        .map(|(&x, (m, s))| (x, m + 2.0 * s))
        .chain(
            xs.iter()
                .zip(mean.iter().zip(std))
                .rev()
                .map(|(&x, (m, s))| (x, m - 2.0 * s)),
        )
        .collect();
    chart.draw_series(std::iter::once(Polygon::new(band, BLUE.mix(0.2).filled())))?;
    chart
        .draw_series(LineSeries::new(
            data.x
                .iter()
                .zip(data.y.iter())
                .map(|(&x, &y)| (x, y + data.y_mean)),
            BLACK.stroke_width(1),
        ))?
        .label("monthly mean")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK));
    chart
        .draw_series(LineSeries::new(
            xs.iter().copied().zip(mean.iter().copied()),
            BLUE.stroke_width(2),
        ))?
        .label("GP mean")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE));
    chart
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let data = load()?;
    println!(
        "{} monthly means, {} to {}, mean {:.3} ppm",
        data.x.nrows(),
        data.x[[0, 0]],
        data.x[[data.x.nrows() - 1, 0]],
        data.y_mean
    );
    let initial = Gp::initial();
    let (lml0, _) = lml_and_gradient(&initial.theta, &data)?;
    println!("initial: {}", kernel_string(&initial.theta));
    println!("log marginal likelihood at the initial hyperparameters: {lml0:.3}");
    let start = Instant::now();
    let run = fit(&data, |evaluation, lml| {
        if evaluation % 20 == 0 {
            println!("  evaluation {evaluation:3}: log marginal likelihood {lml:.3}");
        }
    })?;
    let seconds = start.elapsed().as_secs_f64();
    let (lml, _) = lml_and_gradient(&run.gp.theta, &data)?;
    println!("fitted:  {}", kernel_string(&run.gp.theta));
    println!(
        "log marginal likelihood after {} L-BFGS iterations ({} evaluations): {lml:.3} ({seconds:.1} s)",
        run.report.iterations, run.report.evaluations
    );
    // monthly from the first month to December 2030 (x = 2030 + 12/12)
    let first = data.x[[0, 0]];
    let m = ((2031.0 - first) * 12.0).round() as usize + 1;
    let xs = Array2::from_shape_fn((m, 1), |(i, _)| first + i as f64 / 12.0);
    let (mean, std) = predict(&run.gp.theta, &data, &xs)?;
    println!(
        "forecast for December 2030: {:.1} ± {:.1} ppm (2σ)",
        mean[m - 1],
        2.0 * std[m - 1]
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("gp-co2.svg");
    std::fs::create_dir_all(path.parent().ok_or("no parent")?)?;
    plot(&data, &xs, &mean, &std, &path)?;
    println!("fit and forecast written to {}", path.display());
    Ok(())
}
