//! Limited-memory BFGS with a strong-Wolfe line search (Nocedal & Wright, "Numerical
//! Optimization", 2nd ed.: Algorithm 7.4, the two-loop recursion, and Algorithms 3.5 and
//! 3.6, the line search with cubic interpolation), for full-batch problems: a Gaussian
//! process's hyperparameters, a small model fitted to all its data.

use std::fmt;

use ndarray::Array2;

use crate::nn::Parameters;
use crate::optim::OptimError;
use crate::{Float, Gradients};

/// Limited-memory BFGS: minimises a function of a model's parameters, given its value and
/// gradients, evaluating it as often as its line search needs (unlike the step-based
/// [`Optimizer`](crate::optim::Optimizer)s, it calls the objective itself, as PyTorch's
/// `LBFGS.step(closure)` and SciPy's `minimize(method="L-BFGS-B")` do).
///
/// ```
/// use ndarray::array;
/// use tapegrad::nn::Parameters;
/// use tapegrad::optim::Lbfgs;
/// use tapegrad::Tape;
///
/// // the Rosenbrock function, minimum 0 at (1, 1)
/// struct P(ndarray::Array2<f64>);
/// impl Parameters<f64> for P {
///     fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, &'a ndarray::Array2<f64>)) { f("x", &self.0) }
///     fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut ndarray::Array2<f64>)) { f("x", &mut self.0) }
/// }
/// let mut p = P(array![[-1.2, 1.0]]);
/// let report = Lbfgs::new()
///     .minimize(&mut p, |p| {
///         let tape = Tape::new();
///         let x = tape.param(&p.0);
///         let (a, b) = (x.slice_cols(..1), x.slice_cols(1..));
///         let f = a.add_scalar(-1.0).square().add(b.sub(a.square()).square().mul_scalar(100.0));
///         Ok::<_, tapegrad::Error>((f.item(), tape.backward(f)?))
///     })
///     .unwrap();
/// assert!(report.converged);
/// assert!((p.0[[0, 0]] - 1.0).abs() < 1e-6 && (p.0[[0, 1]] - 1.0).abs() < 1e-6);
/// ```
#[derive(Clone, Debug)]
pub struct Lbfgs<F> {
    history: usize,
    max_iterations: usize,
    tolerance_grad: F,
    tolerance_change: F,
}

/// How a minimisation ended.
#[derive(Clone, Debug, PartialEq)]
pub struct LbfgsReport<F> {
    /// The objective at the parameters left in the model.
    pub value: F,
    /// Iterations (line searches) run.
    pub iterations: usize,
    /// Evaluations of the objective.
    pub evaluations: usize,
    /// Whether a tolerance was met (otherwise the iterations ran out, or the line search
    /// found no decrease).
    pub converged: bool,
}

/// Why a minimisation stopped without a result. The model holds the best parameters
/// found so far.
#[derive(Clone, PartialEq)]
pub enum LbfgsError<E> {
    /// The objective failed at the starting point (failures during a line search count as
    /// +∞ and shorten the step).
    Objective(E),
    /// A parameter has no gradient in what the objective returned, or one of another
    /// shape, or the model's parameters changed (in name or shape) during the run.
    Gradient(OptimError),
    /// The objective's value or gradient is NaN or infinite at the starting point: there
    /// is nowhere to go from there (in a line search such a point only shortens the step).
    NotFinite {
        /// The value there.
        value: String,
        /// How many elements of the gradient are not finite.
        gradient: usize,
    },
}

impl<E: fmt::Display> fmt::Display for LbfgsError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LbfgsError::Objective(e) => write!(f, "L-BFGS: the objective failed: {e}"),
            LbfgsError::Gradient(e) => write!(f, "L-BFGS: {e}"),
            LbfgsError::NotFinite { value, gradient } => write!(
                f,
                "L-BFGS: at the starting point the objective is {value} and {gradient} \
                 element(s) of its gradient are not finite"
            ),
        }
    }
}

impl<E: fmt::Display> fmt::Debug for LbfgsError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<E: fmt::Display> std::error::Error for LbfgsError<E> {}

impl<F: Float> Default for Lbfgs<F> {
    fn default() -> Self {
        Self::new()
    }
}

/// A point of the search: parameters, value, gradient.
struct Point<F> {
    x: Vec<F>,
    f: F,
    g: Vec<F>,
}

fn dot<F: Float>(a: &[F], b: &[F]) -> F {
    a.iter().zip(b).fold(F::zero(), |s, (&a, &b)| s + a * b)
}

/// The largest |aᵢ|, NaN if any element is NaN (so that no tolerance is met by it).
fn max_abs<F: Float>(a: &[F]) -> F {
    a.iter().fold(
        F::zero(),
        |m, v| if v.is_nan() { *v } else { m.max(v.abs()) },
    )
}

/// The minimiser of the cubic through `(a, fa, da)` and `(b, fb, db)`, kept inside the
/// middle 80% of the interval (bisection when the cubic has none there): Nocedal & Wright
/// eq. 3.59, safeguarded.
fn cubic<F: Float>(a: F, fa: F, da: F, b: F, fb: F, db: F) -> F {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    let margin = (hi - lo) * F::cast(0.1);
    let d1 = da + db - F::cast(3.0) * (fa - fb) / (a - b);
    let disc = d1 * d1 - da * db;
    if disc >= F::zero() {
        let d2 = disc.sqrt() * (b - a).signum();
        let t = b - (b - a) * ((db + d2 - d1) / (db - da + F::cast(2.0) * d2));
        if t.is_finite() && t >= lo + margin && t <= hi - margin {
            return t;
        }
    }
    (lo + hi) * F::cast(0.5)
}

impl<F: Float> Lbfgs<F> {
    /// Ten correction pairs, at most 100 iterations, stopping when the gradient's largest
    /// element is below 10⁻⁷ or an iteration changes the value or the parameters by less
    /// than 10⁻⁹ (PyTorch's `LBFGS` tolerances).
    pub fn new() -> Self {
        Lbfgs {
            history: 10,
            max_iterations: 100,
            tolerance_grad: F::cast(1e-7),
            tolerance_change: F::cast(1e-9),
        }
    }

    /// The number of correction pairs kept (at least 1).
    pub fn history(mut self, pairs: usize) -> Self {
        self.history = pairs.max(1);
        self
    }

    /// The most iterations (line searches).
    pub fn max_iterations(mut self, iterations: usize) -> Self {
        self.max_iterations = iterations;
        self
    }

    /// Stop when the gradient's largest element is at most this.
    pub fn tolerance_grad(mut self, tol: F) -> Self {
        self.tolerance_grad = tol;
        self
    }

    /// Stop when an iteration changes the value, or every parameter, by at most this.
    pub fn tolerance_change(mut self, tol: F) -> Self {
        self.tolerance_change = tol;
        self
    }

    /// Minimises `objective`, which returns the value at the model's current parameters
    /// and the gradients of a backward pass from it (found by parameter, as optimizers
    /// find them). Leaves the best parameters found in the model.
    ///
    /// Parameters are read and written by name (through [`Parameters::visit_mut`]), so
    /// a model whose `visit` lists them in another order is minimised all the same.
    ///
    /// # Errors
    ///
    /// [`LbfgsError::Objective`] if the objective fails at the starting point;
    /// [`LbfgsError::NotFinite`] if its value or gradient is not finite there;
    /// [`LbfgsError::Gradient`] if a parameter has no gradient in what it returned, or one
    /// of another shape.
    pub fn minimize<M, E>(
        &self,
        model: &mut M,
        mut objective: impl FnMut(&M) -> Result<(F, Gradients<F>), E>,
    ) -> Result<LbfgsReport<F>, LbfgsError<E>>
    where
        M: Parameters<F> + ?Sized,
    {
        let evaluations = std::cell::Cell::new(0);
        let (x0, layout) = read(model);
        // evaluates at `x` (written into the model)
        let mut eval = |model: &mut M, x: &[F]| -> Result<(F, Vec<F>), LbfgsError<E>> {
            write(model, &layout, x)?;
            evaluations.set(evaluations.get() + 1);
            let (f, grads) = objective(model).map_err(LbfgsError::Objective)?;
            Ok((f, gather(model, &layout, &grads)?))
        };
        let (f0, g0) = eval(model, &x0)?;
        let bad = g0.iter().filter(|g| !g.is_finite()).count();
        if !f0.is_finite() || bad > 0 {
            return Err(LbfgsError::NotFinite {
                value: format!("{f0:?}"),
                gradient: bad,
            });
        }
        let mut at = Point {
            x: x0,
            f: f0,
            g: g0,
        };
        let mut pairs: Vec<(Vec<F>, Vec<F>, F)> = Vec::new(); // (s, y, 1/yᵀs)
        let mut converged = max_abs(&at.g) <= self.tolerance_grad;
        let mut iterations = 0;
        while !converged && iterations < self.max_iterations {
            iterations += 1;
            let mut d = direction(&at.g, &pairs);
            let mut slope = dot(&at.g, &d);
            if slope >= F::zero() || slope.is_nan() {
                // not a descent direction (rounding): restart from the gradient
                pairs.clear();
                d = at.g.iter().map(|&g| -g).collect();
                slope = dot(&at.g, &d);
            }
            // the first step scaled so that it moves the parameters by about 1
            let t0 = if pairs.is_empty() {
                F::one().min(F::one() / at.g.iter().fold(F::zero(), |s, g| s + g.abs()))
            } else {
                F::one()
            };
            let found = self.line_search(model, &mut eval, &at, &d, slope, t0)?;
            let Some(next) = found else { break };
            let s: Vec<F> = next.x.iter().zip(&at.x).map(|(&a, &b)| a - b).collect();
            let y: Vec<F> = next.g.iter().zip(&at.g).map(|(&a, &b)| a - b).collect();
            let ys = dot(&y, &s);
            if ys > F::epsilon() * dot(&y, &y) {
                if pairs.len() == self.history {
                    pairs.remove(0);
                }
                pairs.push((s.clone(), y, F::one() / ys));
            }
            let change = (next.f - at.f).abs();
            at = next;
            converged = max_abs(&at.g) <= self.tolerance_grad
                || change <= self.tolerance_change
                || max_abs(&s) <= self.tolerance_change;
        }
        write(model, &layout, &at.x)?;
        Ok(LbfgsReport {
            value: at.f,
            iterations,
            evaluations: evaluations.get(),
            converged,
        })
    }

    /// A step along `d` satisfying the strong Wolfe conditions (c₁ = 10⁻⁴, c₂ = 0.9), or
    /// the best point seen if 25 evaluations find none; `None` if nothing decreased.
    #[allow(clippy::type_complexity)]
    fn line_search<M: ?Sized, E>(
        &self,
        model: &mut M,
        eval: &mut impl FnMut(&mut M, &[F]) -> Result<(F, Vec<F>), LbfgsError<E>>,
        at: &Point<F>,
        d: &[F],
        slope: F,
        t0: F,
    ) -> Result<Option<Point<F>>, LbfgsError<E>> {
        let (c1, c2) = (F::cast(1e-4), F::cast(0.9));
        let mut try_at = |t: F| -> Result<(Point<F>, F), LbfgsError<E>> {
            let x: Vec<F> = at.x.iter().zip(d).map(|(&x, &d)| x + t * d).collect();
            Ok(match eval(model, &x) {
                Ok((f, g)) if f.is_finite() && g.iter().all(|g| g.is_finite()) => {
                    let dphi = dot(&g, d);
                    (Point { x, f, g }, dphi)
                }
                // a failed or non-finite evaluation (value or gradient): too far
                Ok(_) | Err(LbfgsError::Objective(_)) => (
                    Point {
                        x,
                        f: F::infinity(),
                        g: vec![F::nan(); d.len()],
                    },
                    F::nan(),
                ),
                Err(e) => return Err(e),
            })
        };
        let armijo = |t: F, f: F| f <= at.f + c1 * t * slope;
        let curvature = |dphi: F| dphi.abs() <= -c2 * slope;
        // the bracketing phase (Algorithm 3.5)
        let (mut lo, mut flo, mut dlo) = (F::zero(), at.f, slope);
        let mut t = t0;
        let mut best: Option<Point<F>> = None;
        let keep = |p: Point<F>, best: &mut Option<Point<F>>| {
            if p.f < best.as_ref().map_or(at.f, |b| b.f) {
                *best = Some(p);
            }
        };
        let mut evals = 0;
        let (mut hi, mut fhi, mut dhi);
        loop {
            let (p, dphi) = try_at(t)?;
            evals += 1;
            let f = p.f;
            if !armijo(t, f) || (evals > 1 && f >= flo) {
                (hi, fhi, dhi) = (t, f, dphi);
                keep(p, &mut best);
                break;
            }
            if curvature(dphi) {
                return Ok(Some(p));
            }
            if dphi >= F::zero() {
                (hi, fhi, dhi) = (lo, flo, dlo);
                (lo, flo, dlo) = (t, f, dphi);
                keep(p, &mut best);
                break;
            }
            (lo, flo, dlo) = (t, f, dphi);
            keep(p, &mut best);
            if evals >= 25 {
                return Ok(best);
            }
            t *= F::cast(2.0);
        }
        // the zoom phase (Algorithm 3.6)
        while evals < 25 && (hi - lo).abs() * max_abs(d) > self.tolerance_change {
            t = if fhi.is_finite() && dhi.is_finite() {
                cubic(lo, flo, dlo, hi, fhi, dhi)
            } else {
                (lo + hi) * F::cast(0.5)
            };
            let (p, dphi) = try_at(t)?;
            evals += 1;
            let f = p.f;
            if !armijo(t, f) || f >= flo {
                (hi, fhi, dhi) = (t, f, dphi);
                keep(p, &mut best);
            } else {
                if curvature(dphi) {
                    return Ok(Some(p));
                }
                if dphi * (hi - lo) >= F::zero() {
                    (hi, fhi, dhi) = (lo, flo, dlo);
                }
                (lo, flo, dlo) = (t, f, dphi);
                keep(p, &mut best);
            }
        }
        Ok(best)
    }
}

/// `−H·g` by the two-loop recursion, `H₀ = (sᵀy / yᵀy)·I` from the newest pair.
fn direction<F: Float>(g: &[F], pairs: &[(Vec<F>, Vec<F>, F)]) -> Vec<F> {
    let mut q: Vec<F> = g.to_vec();
    let mut alphas = Vec::with_capacity(pairs.len());
    for (s, y, rho) in pairs.iter().rev() {
        let a = *rho * dot(s, &q);
        q.iter_mut().zip(y).for_each(|(q, &y)| *q -= a * y);
        alphas.push(a);
    }
    if let Some((_, y, rho)) = pairs.last() {
        let gamma = F::one() / (*rho * dot(y, y));
        q.iter_mut().for_each(|q| *q *= gamma);
    }
    for ((s, y, rho), a) in pairs.iter().zip(alphas.into_iter().rev()) {
        let b = *rho * dot(y, &q);
        q.iter_mut().zip(s).for_each(|(q, &s)| *q += (a - b) * s);
    }
    q.iter_mut().for_each(|q| *q = -*q);
    q
}

/// Where each parameter lives in the flattened vector: name, shape and offset, in the
/// order of [`Parameters::visit_mut`].
type Layout = Vec<(String, (usize, usize), usize)>;

/// The model's parameters, flattened in `visit_mut` order, and where each one lives.
fn read<F: Float, M: Parameters<F> + ?Sized>(model: &mut M) -> (Vec<F>, Layout) {
    let (mut x, mut layout) = (Vec::new(), Vec::new());
    model.visit_mut(&mut |name, p| {
        layout.push((name.to_string(), p.dim(), x.len()));
        x.extend(p.iter().copied());
    });
    (x, layout)
}

/// Calls `f` with every parameter and its slice of the flattened vector, in `visit_mut`
/// order, checked against its name and shape when the run began.
fn each<F: Float, M: Parameters<F> + ?Sized>(
    model: &mut M,
    layout: &Layout,
    mut f: impl FnMut(&str, &mut Array2<F>, std::ops::Range<usize>) -> Option<OptimError>,
) -> Result<(), OptimError> {
    let mut error = None;
    let mut seen = 0;
    model.visit_mut(&mut |name, p| {
        if error.is_some() {
            return;
        }
        error = match layout.get(seen) {
            Some((n, shape, at)) if n == name && *shape == p.dim() => {
                f(name, p, *at..*at + p.len())
            }
            _ => Some(OptimError::ModelChanged {
                name: name.to_string(),
            }),
        };
        seen += 1;
    });
    match error {
        None if seen != layout.len() => Err(OptimError::ModelChanged {
            name: layout.get(seen).map_or(String::new(), |l| l.0.clone()),
        }),
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// Writes `x` back into the model's parameters.
fn write<F: Float, M: Parameters<F> + ?Sized, E>(
    model: &mut M,
    layout: &Layout,
    x: &[F],
) -> Result<(), LbfgsError<E>> {
    each(model, layout, |_, p, range| {
        p.iter_mut().zip(&x[range]).for_each(|(p, &v)| *p = v);
        None
    })
    .map_err(LbfgsError::Gradient)
}

/// The gradients of the model's parameters, flattened as the parameters are.
fn gather<F: Float, M: Parameters<F> + ?Sized, E>(
    model: &mut M,
    layout: &Layout,
    grads: &Gradients<F>,
) -> Result<Vec<F>, LbfgsError<E>> {
    let total = layout.last().map_or(0, |(_, (r, c), at)| at + r * c);
    let mut g = vec![F::zero(); total];
    each(model, layout, |name, p, range| match grads.wrt(&*p) {
        Some(d) if d.dim() == p.dim() => {
            g[range].iter_mut().zip(d).for_each(|(g, &d)| *g = d);
            None
        }
        Some(d) => Some(OptimError::GradientShape {
            name: name.to_string(),
            expected: p.dim(),
            found: d.dim(),
        }),
        None => Some(OptimError::NoGradient {
            name: name.to_string(),
            // `wrt` found no entry, so there is a reason
            reason: grads.reason(&*p).unwrap_or(crate::Missing::NotOnTape),
        }),
    })
    .map_err(LbfgsError::Gradient)?;
    Ok(g)
}
