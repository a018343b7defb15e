//! The `optim` family: optimizers on a strictly convex model of a few named parameters,
//! `f(x) = Σᵢ (½ aᵢ∘xᵢ² − bᵢ∘xᵢ) + c·(Σ x)²`, whose `visit_mut` lists the parameters in
//! another order than `visit` (or the same), with faults injected into what the objective
//! returns: NaN or ∞ (at the start, or in a region), a gradient replaced by one of another
//! shape (through `Gradients::wrt_mut`).
//!
//! - L-BFGS: without fault, the result (by name) is the same for a model whose visitors
//!   disagree as for one whose visitors agree, and it is the minimum; with NaN, a report of
//!   `converged: true` has a finite value at a point where the objective is finite; a
//!   wrong-shaped gradient anywhere is an error.
//! - SGD and Adam (with `eps` 0 too): a step from finite parameters and gradients leaves
//!   finite parameters, SGD's is `x − lr·g` by name; a wrong-shaped gradient is an error.
//! - `clip_grad_norm`: each gradient is scaled by one factor in [0, 1], to a total norm of
//!   at most `max_norm` (a negative `max_norm` may panic, documented, but never turns a
//!   gradient around).
//! - An optimizer's state through its file (`io::optimizer_to_bytes`,
//!   `io::optimizer_from_bytes`, `Optimizer::load_state`): a resumed Adam or SGD with
//!   momentum takes bitwise the step the original takes (the visitors may disagree); a
//!   corrupted or cut file loads or is an error that leaves the optimizer as it was; another
//!   kind of optimizer refuses the file.

use std::cell::Cell;

use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tapegrad::io;
use tapegrad::nn::Parameters;
use tapegrad::optim::{Adam, Lbfgs, Optimizer, Sgd, clip_grad_norm};
use tapegrad::{Gradients, Tape};

use crate::oracle::randn;
use crate::{Family, catch, message};

pub(crate) const FAMILY: Family = Family {
    name: "optim",
    default: 100,
    run,
    describe,
};

fn describe(seed: u64) -> String {
    format!("{:?}", generate(seed))
}

/// A model whose `visit_mut` walks its parameters in `order` (`visit` in index order).
#[derive(Clone, Debug)]
struct Model {
    params: Vec<Array2<f64>>,
    names: Vec<String>,
    order: Vec<usize>,
}

impl Parameters<f64> for Model {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Array2<f64>)) {
        for (name, p) in self.names.iter().zip(&self.params) {
            f(name, p);
        }
    }
    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Array2<f64>)) {
        let Model {
            params,
            names,
            order,
        } = self;
        let mut slots: Vec<Option<&'a mut Array2<f64>>> = params.iter_mut().map(Some).collect();
        for &i in order.iter() {
            f(&names[i], slots[i].take().expect("a permutation"));
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    Nothing,
    /// NaN in the value and/or the gradient at the starting point.
    NanAtStart {
        value: bool,
        gradient: bool,
    },
    /// NaN (or +∞) in the value and/or gradient wherever `x₀[0] > t`.
    Region {
        t: f64,
        infinite: bool,
        gradient: bool,
    },
    /// At evaluation `at`, parameter `which`'s gradient replaced by one of another shape.
    Shape {
        at: usize,
        which: usize,
        transposed: bool,
    },
}

#[derive(Clone, Debug)]
struct Program {
    start: Vec<Array2<f64>>,
    a: Vec<Array2<f64>>,
    b: Vec<Array2<f64>>,
    c: f64,
    order: Vec<usize>,
    fault: Fault,
    zero_grad: bool,
    lr: f64,
    eps: f64,
    max_norm: f64,
}

fn generate(seed: u64) -> Program {
    let mut rng = StdRng::seed_from_u64(seed);
    let k = rng.random_range(1..=4);
    let dims = [1, 2, 3];
    let shapes: Vec<(usize, usize)> = (0..k)
        .map(|_| (dims[rng.random_range(0..3)], dims[rng.random_range(0..3)]))
        .collect();
    let start = shapes.iter().map(|&s| randn(s, &mut rng)).collect();
    let a: Vec<Array2<f64>> = shapes
        .iter()
        .map(|&s| Array2::from_shape_simple_fn(s, || rng.random_range(0.5..2.0)))
        .collect();
    let b: Vec<Array2<f64>> = shapes.iter().map(|&s| randn(s, &mut rng)).collect();
    // a zero gradient for the steps (Adam's 0/0 with eps 0)
    let zero_grad = rng.random_bool(0.3);
    let c = [0.0, 0.1][rng.random_range(0..2)];
    let mut order: Vec<usize> = (0..k).collect();
    if rng.random_bool(0.7) {
        for i in (1..k).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
    }
    let fault = match rng.random_range(0..10) {
        0..4 => Fault::Nothing,
        4 | 5 => Fault::NanAtStart {
            value: rng.random_bool(0.5),
            gradient: rng.random_bool(0.7),
        },
        6 | 7 => Fault::Region {
            t: rng.random_range(-0.5..1.5),
            infinite: rng.random_bool(0.3),
            gradient: rng.random_bool(0.5),
        },
        _ => Fault::Shape {
            at: rng.random_range(0..4),
            which: rng.random_range(0..k),
            transposed: rng.random_bool(0.5),
        },
    };
    Program {
        start,
        a,
        b,
        c,
        order,
        fault,
        zero_grad,
        lr: [0.1, 0.01][rng.random_range(0..2)],
        eps: [1e-8, 0.0][rng.random_range(0..2)],
        max_norm: [1.0, 1e-3, 0.0, -1.0][rng.random_range(0..4)],
    }
}

impl Program {
    fn model(&self, order: &[usize]) -> Model {
        Model {
            params: self.start.clone(),
            names: (0..self.start.len()).map(|i| format!("w{i}")).collect(),
            order: order.to_vec(),
        }
    }

    /// The objective at the model's parameters, with its fault; `evaluation` counts calls,
    /// `reshaped` records a wrong-shaped gradient handed out.
    fn objective(
        &self,
        model: &Model,
        evaluation: &Cell<usize>,
        reshaped: &Cell<bool>,
    ) -> Result<(f64, Gradients<f64>), tapegrad::Error> {
        let at = evaluation.get();
        evaluation.set(at.wrapping_add(1));
        let tape = Tape::new();
        let xs: Vec<_> = model.params.iter().map(|p| tape.param(p)).collect();
        let mut f = tape.scalar(0.0);
        let mut total = tape.scalar(0.0);
        for ((x, a), b) in xs.iter().zip(&self.a).zip(&self.b) {
            let term = x
                .square()
                .try_mul(tape.constant(a))?
                .mul_scalar(0.5)
                .try_sub(x.try_mul(tape.constant(b))?)?
                .sum();
            f = f.try_add(term)?;
            total = total.try_add(x.sum())?;
        }
        let f = f.try_add(total.square().mul_scalar(self.c))?;
        let mut value = f.item();
        let mut grads = tape.backward(f)?;
        let poison = |grads: &mut Gradients<f64>, v: f64| {
            for p in &model.params {
                if let Some(g) = grads.wrt_mut(p) {
                    g.fill(v);
                }
            }
        };
        match self.fault {
            Fault::Nothing => {}
            Fault::NanAtStart { value: v, gradient } => {
                let at_start = model
                    .params
                    .iter()
                    .zip(&self.start)
                    .all(|(p, s)| p.iter().zip(s).all(|(x, y)| x.to_bits() == y.to_bits()));
                if at_start {
                    if v {
                        value = f64::NAN;
                    }
                    if gradient {
                        poison(&mut grads, f64::NAN);
                    }
                }
            }
            Fault::Region {
                t,
                infinite,
                gradient,
            } => {
                if model.params[0][[0, 0]] > t {
                    value = if infinite { f64::INFINITY } else { f64::NAN };
                    if gradient {
                        poison(&mut grads, f64::NAN);
                    }
                }
            }
            Fault::Shape {
                at: when,
                which,
                transposed,
            } => {
                if at == when {
                    let p = &model.params[which];
                    let (r, c) = p.dim();
                    let shape = if transposed && r != c {
                        (c, r)
                    } else {
                        (r + 1, c)
                    };
                    *grads.wrt_mut(p).expect("every parameter has a gradient") =
                        Array2::zeros(shape);
                    reshaped.set(true);
                }
            }
        }
        Ok((value, grads))
    }

    /// The exact minimum (without fault).
    fn minimum(&self) -> Vec<Array2<f64>> {
        // aᵢxᵢ − bᵢ + 2cS = 0 with S = Σ x: S = Σ(b/a) / (1 + 2c·Σ(1/a))
        let sum_ba: f64 = self.a.iter().zip(&self.b).map(|(a, b)| (b / a).sum()).sum();
        let sum_1a: f64 = self.a.iter().map(|a| a.mapv(|v| 1.0 / v).sum()).sum();
        let s = sum_ba / (1.0 + 2.0 * self.c * sum_1a);
        self.a
            .iter()
            .zip(&self.b)
            .map(|(a, b)| (b - 2.0 * self.c * s) / a)
            .collect()
    }
}

fn run(seed: u64) -> bool {
    let p = generate(seed);
    crate::all(vec![
        Box::new(|| lbfgs(&p)),
        Box::new(|| steps(&p)),
        Box::new(|| state(&p)),
    ]);
    true
}

/// An optimizer's state through its file (see the module's docs).
fn state(p: &Program) {
    if p.fault != Fault::Nothing {
        return;
    }
    let mut model = p.model(&p.order);
    let (evaluation, reshaped) = (Cell::new(usize::MAX), Cell::new(false));
    let Ok((_, grads)) = p.objective(&model, &evaluation, &reshaped) else {
        return;
    };
    let same = |a: &[Array2<f64>], b: &[Array2<f64>]| {
        a.iter().zip(b).all(|(x, y)| {
            x.iter()
                .zip(y)
                .all(|(u, v)| u.to_bits() == v.to_bits() || u.is_nan() && v.is_nan())
        })
    };
    type Make = fn(f64) -> Box<dyn Optimizer<f64>>;
    let kinds: [Make; 2] = [
        |lr| Box::new(Adam::new(lr)),
        |lr| Box::new(Sgd::new(lr).momentum(0.9)),
    ];
    let mut files = Vec::new();
    for (k, make) in kinds.iter().enumerate() {
        let mut original = make(p.lr);
        // a step, so that there is state (moments, step counts, velocities)
        if original.step(&mut model, &grads).is_err() {
            return;
        }
        let bytes = io::optimizer_to_bytes(&*original).expect("an optimizer's state saves");
        let mut resumed = make(p.lr);
        io::optimizer_from_bytes(&mut *resumed, &bytes).expect("its own state loads");
        // (the optimizers find the gradients by the arrays: the model's own storage is
        // stepped, and put back in place between them)
        let at = model.params.clone();
        let restore = |model: &mut Model| {
            for (x, x0) in model.params.iter_mut().zip(&at) {
                x.assign(x0);
            }
        };
        original.step(&mut model, &grads).expect("a second step");
        let by_original = model.params.clone();
        restore(&mut model);
        resumed.step(&mut model, &grads).expect("the resumed step");
        assert!(
            same(&model.params, &by_original),
            "optimizer {k}: the resumed step gives {:?}, the original {by_original:?} (visit_mut \
             order {:?})",
            model.params,
            p.order
        );
        restore(&mut model);
        // a corrupted file, a cut one: loaded, or an error that changes nothing
        let bits = p.lr.to_bits() as usize;
        let mut flipped = bytes.clone();
        flipped[bits % bytes.len()] ^= 1 << (bits % 8);
        for bad in [&flipped[..], &bytes[..bytes.len() / 2]] {
            let mut fresh = make(p.lr);
            let before = io::optimizer_to_bytes(&*fresh).expect("a fresh state saves");
            match catch(|| io::optimizer_from_bytes(&mut *fresh, bad)) {
                Ok(Ok(())) => {}
                Ok(Err(_)) => assert_eq!(
                    io::optimizer_to_bytes(&*fresh).expect("saves"),
                    before,
                    "optimizer {k}: a refused file changed the state"
                ),
                Err(e) => panic!("io::optimizer_from_bytes panicked: {}", message(&*e)),
            }
        }
        files.push(bytes);
    }
    // each kind refuses the other's file
    for (k, make) in kinds.iter().enumerate() {
        let mut other = make(p.lr);
        let r = io::optimizer_from_bytes(&mut *other, &files[1 - k]);
        assert!(r.is_err(), "optimizer {k} loaded the other kind's state");
    }
}

fn lbfgs(p: &Program) {
    let agree: Vec<usize> = (0..p.start.len()).collect();
    let mut results = Vec::new();
    for order in [&agree, &p.order] {
        let mut model = p.model(order);
        let (evaluations, reshaped) = (Cell::new(0), Cell::new(false));
        let report = catch(|| {
            Lbfgs::new().minimize(&mut model, |m| p.objective(m, &evaluations, &reshaped))
        });
        let report = match report {
            Ok(r) => r,
            Err(e) => panic!(
                "L-BFGS (visit_mut order {order:?}) panicked: {}",
                message(&*e)
            ),
        };
        if reshaped.get() {
            assert!(
                report.is_err(),
                "L-BFGS accepted a gradient of another shape than its parameter: {report:?}"
            );
            continue;
        }
        let report = match report {
            Ok(r) => r,
            Err(e) => {
                // the objective's value is NaN at the start: an error is fine
                assert!(
                    p.fault != Fault::Nothing,
                    "L-BFGS failed without a fault: {e}"
                );
                continue;
            }
        };
        if report.converged {
            assert!(
                report.value.is_finite(),
                "L-BFGS reports convergence with the value {} ({report:?}, fault {:?})",
                report.value,
                p.fault
            );
            // the objective at the point it stopped is finite, gradient included
            let (f, g) = p
                .objective(&model, &Cell::new(usize::MAX), &Cell::new(false))
                .expect("the objective");
            let finite_gradient = model
                .params
                .iter()
                .all(|x| g.wrt(x).is_some_and(|g| g.iter().all(|v| v.is_finite())));
            assert!(
                f.is_finite() && finite_gradient,
                "L-BFGS reports convergence at a point where the objective is {f} (gradient \
                 finite: {finite_gradient}; {report:?}, fault {:?})",
                p.fault
            );
        }
        if p.fault == Fault::Nothing {
            assert!(
                report.converged,
                "L-BFGS did not converge on a convex quadratic (visit_mut order {order:?}, \
                 visit in index order): {report:?}"
            );
            results.push(model.params.clone());
        }
    }
    if let [consistent, disagreeing] = &results[..] {
        let exact = p.minimum();
        for (i, ((x, y), m)) in consistent.iter().zip(disagreeing).zip(&exact).enumerate() {
            // L-BFGS stops on its gradient tolerance: on an ill-conditioned quadratic the
            // distance to the minimum is that over the smallest curvature (up to ~1e-4
            // here), so the minimum is checked loosely and the two visit orders tightly:
            // matching parameters by name, they take the same steps
            let scale = 1.0 + m.iter().fold(0.0f64, |s, v| s.max(v.abs()));
            let off = |a: &Array2<f64>| (a - m).iter().fold(0.0f64, |s, v| s.max(v.abs()));
            let apart = (x - y).iter().fold(0.0f64, |s, v| s.max(v.abs()));
            assert!(
                off(x) <= 1e-3 * scale,
                "L-BFGS left w{i} = {x}, the minimum is {m} (visitors in the same order)"
            );
            assert!(
                apart <= 1e-9 * scale,
                "L-BFGS left w{i} = {y} for a model whose visit_mut lists the parameters in \
                 the order {:?}; the same model in visit order gives {x} (the minimum is {m})",
                p.order
            );
        }
    }
}

/// SGD, Adam and gradient clipping on the gradients at the start.
fn steps(p: &Program) {
    let mut model = p.model(&p.order);
    let reshaped = Cell::new(false);
    // (a wrong shape at the first evaluation only: this is the first)
    let evaluation = Cell::new(if matches!(p.fault, Fault::Shape { .. }) {
        0
    } else {
        usize::MAX
    });
    let Ok((_, mut grads)) = p.objective(&model, &evaluation, &reshaped) else {
        return;
    };
    if p.zero_grad {
        if let Some(g) = grads.wrt_mut(&model.params[0]) {
            g.fill(0.0);
        }
    }
    let before = model.params.clone();
    let finite = |m: &Model| m.params.iter().all(|x| x.iter().all(|v| v.is_finite()));
    let gradients: Vec<Option<Array2<f64>>> =
        model.params.iter().map(|x| grads.wrt(x).cloned()).collect();
    let gradients_finite = gradients
        .iter()
        .all(|g| g.as_ref().is_none_or(|g| g.iter().all(|v| v.is_finite())));
    let parameters_finite = finite(&model);
    // (the optimizers find the gradients by the arrays: the model's own storage is stepped,
    // and put back between them)
    let restore = |model: &mut Model| {
        for (x, x0) in model.params.iter_mut().zip(&before) {
            x.assign(x0);
        }
    };
    // SGD: x − lr·g, by name
    let r = catch(|| Sgd::new(p.lr).step(&mut model, &grads));
    let r = r.unwrap_or_else(|e| panic!("Sgd::step panicked: {}", message(&*e)));
    if reshaped.get() {
        assert!(
            r.is_err(),
            "Sgd accepted a gradient of another shape: {r:?}"
        );
    } else {
        r.expect("an SGD step with every gradient");
        for (i, ((x, x0), g)) in model.params.iter().zip(&before).zip(&gradients).enumerate() {
            let g = g.as_ref().expect("a gradient");
            let expected = x0 - &(g * p.lr);
            assert!(
                x.iter()
                    .zip(&expected)
                    .all(|(a, b)| a.to_bits() == b.to_bits() || a.is_nan() && b.is_nan()),
                "Sgd updated w{i} to {x}, x − lr·g is {expected} (visit_mut order {:?})",
                p.order
            );
        }
    }
    restore(&mut model);
    // Adam: finite in, finite out
    let r = catch(|| Adam::new(p.lr).eps(p.eps).step(&mut model, &grads));
    let r = r.unwrap_or_else(|e| panic!("Adam::step panicked: {}", message(&*e)));
    match r {
        Ok(()) => {
            assert!(!reshaped.get(), "Adam accepted a gradient of another shape");
            if parameters_finite && gradients_finite {
                assert!(
                    finite(&model),
                    "Adam (eps {}) made finite parameters {before:?} and gradients \
                     {gradients:?} into {:?}",
                    p.eps,
                    model.params
                );
            }
        }
        Err(e) => assert!(reshaped.get() || p.eps == 0.0, "Adam failed: {e}"),
    }
    restore(&mut model);
    // clip_grad_norm: one factor in [0, 1] for every gradient
    if reshaped.get() || !gradients_finite {
        return;
    }
    let mut clipped = grads.clone();
    let r = catch(|| clip_grad_norm(&model, &mut clipped, p.max_norm));
    let norm = match r {
        Ok(n) => n,
        Err(e) if p.max_norm < 0.0 => {
            let _ = e; // a documented panic for a negative max_norm
            return;
        }
        Err(e) => panic!("clip_grad_norm panicked: {}", message(&*e)),
    };
    let mut total = 0.0;
    for (i, x) in model.params.iter().enumerate() {
        let (before, after) = (grads.wrt(x).unwrap(), clipped.wrt(x).unwrap());
        for (b, a) in before.iter().zip(after) {
            assert!(
                a * b >= 0.0 && a.abs() <= b.abs() * (1.0 + 1e-12),
                "clip_grad_norm (max_norm {}) turned the gradient of w{i} from {before} into \
                 {after}",
                p.max_norm
            );
        }
        total += after.iter().map(|v| v * v).sum::<f64>();
    }
    let bound = p.max_norm.max(0.0);
    assert!(
        norm <= bound || total.sqrt() <= bound * (1.0 + 1e-6) + 1e-12,
        "clip_grad_norm (max_norm {}) left a norm of {} (it was {norm})",
        p.max_norm,
        total.sqrt()
    );
}
