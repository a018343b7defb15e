//! Truncated Newton (Newton-CG) on L2-regularised softmax regression over the 8 × 8
//! digits, with Hessian-vector products from the tape, next to gradient descent on the
//! same problem.
//!
//! ```text
//! cargo run --release --example newton
//! ```
//!
//! The problem: `f(W, b) = CE(X·W + b, y) + λ/2 (‖W‖² + ‖b‖²)`, the mean softmax
//! cross-entropy over the training images (64 pixels in [0, 1], 10 classes) with
//! λ = 10⁻³, in f64. It is strictly convex, so both methods reach the same minimum; the
//! question is how fast the gradient norm falls below 10⁻⁶.
//!
//! Newton-CG solves `H·p = −∇f` approximately by conjugate gradients, where each `H·v`
//! is one backward pass through the gradient recorded on the tape ([`Tape::grad`]): the
//! forward pass and the recorded gradient are built once per outer iteration, and every
//! CG step adds `⟨∇f, v⟩` to that tape and runs backward from it. A backtracking
//! (Armijo) line search on `f` keeps each step a descent. Gradient descent uses the same
//! line search along `−∇f`.

mod common;

use std::error::Error;
use std::time::{Duration, Instant};

use ndarray::{Array2, Zip};
use tapegrad::{BackwardOptions, Tape, Tensor};

/// The L2 weight λ.
pub const LAMBDA: f64 = 1e-3;
/// The gradient norm both methods aim for.
pub const TOLERANCE: f64 = 1e-6;
/// The split seed, as in the digits example.
pub const SEED: u64 = 7;

/// The training images (pixels / 16), their labels, and the held-out images.
pub struct Problem {
    pub x: Array2<f64>,
    pub labels: Vec<usize>,
    pub x_test: Array2<f64>,
    pub test_labels: Vec<usize>,
}

/// The digits, split 80 / 20 with the digits example's seed.
pub fn problem() -> Result<Problem, Box<dyn Error>> {
    let (train, test) = common::digits()?.split(0.2, SEED);
    Ok(Problem {
        x: train.x,
        labels: train.labels,
        x_test: test.x,
        test_labels: test.labels,
    })
}

/// `f(W, b)` on a tape: the mean cross-entropy plus the L2 term.
fn objective<'t>(p: &'t Problem, w: Tensor<'t, f64>, b: Tensor<'t, f64>) -> Tensor<'t, f64> {
    let tape = w.tape();
    let logits = tape.constant(&p.x).linear(w, b);
    let l2 = w
        .square()
        .sum()
        .add(b.square().sum())
        .mul_scalar(0.5 * LAMBDA);
    logits.softmax_cross_entropy_indices(&p.labels).add(l2)
}

/// The parameters `(W, b)` as one vector space: `a + s·d` and inner products.
#[derive(Clone)]
pub struct Params {
    pub w: Array2<f64>,
    pub b: Array2<f64>,
}

impl Params {
    fn zeros() -> Self {
        Params {
            w: Array2::zeros((64, 10)),
            b: Array2::zeros((1, 10)),
        }
    }
    fn dot(&self, o: &Params) -> f64 {
        (&self.w * &o.w).sum() + (&self.b * &o.b).sum()
    }
    fn norm(&self) -> f64 {
        self.dot(self).sqrt()
    }
    /// `self + s·d`
    fn plus(&self, s: f64, d: &Params) -> Params {
        Params {
            w: &self.w + &(&d.w * s),
            b: &self.b + &(&d.b * s),
        }
    }
    fn scaled(&self, s: f64) -> Params {
        Params {
            w: &self.w * s,
            b: &self.b * s,
        }
    }
}

/// `f` at `p`, without gradients.
fn value(prob: &Problem, p: &Params) -> f64 {
    let tape = Tape::new();
    tape.no_grad(|| objective(prob, tape.constant(&p.w), tape.constant(&p.b)).item())
}

/// `f` and `∇f` at `p`, by first-order backward.
fn value_and_gradient(prob: &Problem, p: &Params) -> (f64, Params) {
    let tape = Tape::new();
    let (w, b) = (tape.param(&p.w), tape.param(&p.b));
    let f = objective(prob, w, b);
    let grads = tape.backward(f).expect("a scalar objective");
    let g = Params {
        w: grads.get(w).unwrap().clone(),
        b: grads.get(b).unwrap().clone(),
    };
    (f.item(), g)
}

/// Backtracking (Armijo) line search from `p` along the descent direction `d`.
fn line_search(prob: &Problem, p: &Params, f: f64, g: &Params, d: &Params) -> Params {
    let slope = g.dot(d);
    let mut t = 1.0;
    loop {
        let q = p.plus(t, d);
        if value(prob, &q) <= f + 1e-4 * t * slope || t < 1e-12 {
            return q;
        }
        t *= 0.5;
    }
}

/// One method's run: the gradient norm after each iteration, and the time taken.
pub struct Trace {
    pub norms: Vec<f64>,
    pub hessian_vector_products: usize,
    pub seconds: f64,
    pub params: Params,
}

/// Newton-CG until `‖∇f‖ < TOLERANCE` (at most `max_outer` iterations).
pub fn newton_cg(prob: &Problem, max_outer: usize) -> Trace {
    let start = Instant::now();
    let mut p = Params::zeros();
    let mut norms = Vec::new();
    let mut hvps = 0;
    for _ in 0..max_outer {
        // the forward pass and the gradient, recorded once for every H·v of this iteration
        let tape = Tape::new();
        let (w, b) = (tape.param(&p.w), tape.param(&p.b));
        let f_t = objective(prob, w, b);
        let gs = tape.grad(f_t, &[w, b]).expect("a scalar objective");
        let g = Params {
            w: gs[0].value(),
            b: gs[1].value(),
        };
        let f = f_t.item();
        let norm = g.norm();
        norms.push(norm);
        if norm < TOLERANCE {
            break;
        }
        let hv = |v: &Params| -> Params {
            let s = gs[0]
                .mul(tape.constant(v.w.clone()))
                .sum()
                .add(gs[1].mul(tape.constant(v.b.clone())).sum());
            let grads = tape
                .backward_with(s, BackwardOptions::new().retain_graph(true))
                .expect("a scalar");
            Params {
                w: grads.get(w).unwrap().clone(),
                b: grads.get(b).unwrap().clone(),
            }
        };
        // CG on H·d = −g, to the relative tolerance min(0.5, √‖g‖) (Eisenstat–Walker)
        let eta = 0.5f64.min(norm.sqrt());
        let mut d = Params::zeros();
        let mut r = g.scaled(-1.0);
        let mut s = r.clone();
        let mut rr = r.dot(&r);
        for _ in 0..200 {
            let hs = hv(&s);
            hvps += 1;
            let curvature = s.dot(&hs);
            if curvature <= 0.0 {
                break;
            }
            let alpha = rr / curvature;
            d = d.plus(alpha, &s);
            r = r.plus(-alpha, &hs);
            let rr_next = r.dot(&r);
            if rr_next.sqrt() <= eta * norm {
                break;
            }
            s = r.plus(rr_next / rr, &s);
            rr = rr_next;
        }
        if d.norm() == 0.0 {
            d = g.scaled(-1.0);
        }
        p = line_search(prob, &p, f, &g, &d);
    }
    Trace {
        norms,
        hessian_vector_products: hvps,
        seconds: start.elapsed().as_secs_f64(),
        params: p,
    }
}

/// Gradient descent with the same line search, until `‖∇f‖ < TOLERANCE`, at most
/// `max_iterations` iterations or `budget` of time.
pub fn gradient_descent(prob: &Problem, max_iterations: usize, budget: Duration) -> Trace {
    let start = Instant::now();
    let mut p = Params::zeros();
    let mut norms = Vec::new();
    // start from the step the last line search accepted, growing it a little each time
    let mut step = 1.0f64;
    for _ in 0..max_iterations {
        let (f, g) = value_and_gradient(prob, &p);
        let norm = g.norm();
        norms.push(norm);
        if norm < TOLERANCE || start.elapsed() > budget {
            break;
        }
        let slope = -norm * norm;
        let mut t = step * 2.0;
        loop {
            let q = p.plus(-t, &g);
            if value(prob, &q) <= f + 1e-4 * t * slope || t < 1e-12 {
                p = q;
                break;
            }
            t *= 0.5;
        }
        step = t;
    }
    Trace {
        norms,
        hessian_vector_products: 0,
        seconds: start.elapsed().as_secs_f64(),
        params: p,
    }
}

/// Fraction of `x`'s rows classified right by `p`.
pub fn accuracy(p: &Params, x: &Array2<f64>, labels: &[usize]) -> f64 {
    let logits = x.dot(&p.w) + &p.b;
    common::accuracy(&logits, labels)
}

/// The largest difference between the parameters of two runs.
pub fn max_difference(a: &Params, b: &Params) -> f64 {
    let d = |x: &Array2<f64>, y: &Array2<f64>| {
        Zip::from(x)
            .and(y)
            .fold(0.0f64, |m, &u, &v| m.max((u - v).abs()))
    };
    d(&a.w, &b.w).max(d(&a.b, &b.b))
}

fn main() -> Result<(), Box<dyn Error>> {
    let prob = problem()?;
    println!(
        "L2-regularised softmax regression on the digits: {} training images, 64 → 10, λ = {LAMBDA}",
        prob.labels.len()
    );
    println!("\nNewton-CG (Hessian-vector products by backward through the recorded gradient):");
    let newton = newton_cg(&prob, 50);
    for (i, n) in newton.norms.iter().enumerate() {
        println!("  iteration {i:2}: ‖∇f‖ = {n:.3e}");
    }
    println!(
        "  {} outer iterations, {} Hessian-vector products, {:.3} s; f = {:.8}, test accuracy {:.1}%",
        newton.norms.len() - 1,
        newton.hessian_vector_products,
        newton.seconds,
        value(&prob, &newton.params),
        100.0 * accuracy(&newton.params, &prob.x_test, &prob.test_labels)
    );
    println!("\ngradient descent (Armijo line search), up to 60 s:");
    let gd = gradient_descent(&prob, 1_000_000, Duration::from_secs(60));
    for (i, n) in gd.norms.iter().enumerate() {
        if i.is_power_of_two() || i + 1 == gd.norms.len() {
            println!("  iteration {i:6}: ‖∇f‖ = {n:.3e}");
        }
    }
    let reached = gd.norms.last().is_some_and(|&n| n < TOLERANCE);
    println!(
        "  {} iterations, {:.3} s, ‖∇f‖ {} {TOLERANCE:e}; f = {:.8}",
        gd.norms.len() - 1,
        gd.seconds,
        if reached { "<" } else { "still ≥" },
        value(&prob, &gd.params)
    );
    println!(
        "\nNewton-CG reached ‖∇f‖ < {TOLERANCE:e} in {:.3} s; gradient descent {}",
        newton.seconds,
        if reached {
            format!(
                "in {:.3} s ({:.0}× longer)",
                gd.seconds,
                gd.seconds / newton.seconds
            )
        } else {
            format!("did not within {:.0} s", gd.seconds)
        }
    );
    Ok(())
}
