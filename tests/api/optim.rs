//! Optimizers against updates computed by hand, step by step, for a quadratic loss whose
//! gradient is known in closed form: `L = ½ Σ c ∘ p²`, so `∂L/∂p = c ∘ p`.

use ndarray::{Array2, array};
use tapegrad::nn::{Linear, Parameters};
use tapegrad::optim::{
    Adam, Lbfgs, LbfgsError, OptimError, Optimizer, Sgd, clip_grad_norm, step_decay,
};
use tapegrad::{Gradients, Tape};

const C: [f64; 2] = [1.0, -3.0];

/// A model with one 1 × 2 parameter.
fn model(p: [f64; 2]) -> Linear<f64> {
    Linear {
        weight: array![[p[0], p[1]]],
        bias: None,
    }
}

fn params(m: &Linear<f64>) -> [f64; 2] {
    [m.weight[[0, 0]], m.weight[[0, 1]]]
}

/// The gradient of `L = ½ Σ c ∘ p²` through the tape.
fn grads(m: &Linear<f64>) -> Gradients<f64> {
    let tape = Tape::new();
    let p = tape.param(&m.weight);
    let c = tape.constant(array![[C[0], C[1]]]);
    tape.backward(p.square().mul(c).sum().mul_scalar(0.5))
        .unwrap()
}

/// Runs `steps` steps of `opt` from `p0`; returns the parameters after each step.
fn run(opt: &mut dyn Optimizer<f64>, p0: [f64; 2], steps: usize) -> Vec<[f64; 2]> {
    let mut m = model(p0);
    (0..steps)
        .map(|_| {
            let g = grads(&m);
            opt.step(&mut m, &g).unwrap();
            params(&m)
        })
        .collect()
}

fn assert_close(got: &[[f64; 2]], want: &[[f64; 2]]) {
    for (step, (g, w)) in got.iter().zip(want).enumerate() {
        for k in 0..2 {
            assert!(
                (g[k] - w[k]).abs() <= 1e-12 * (1.0 + w[k].abs()),
                "step {step}: {g:?} vs {w:?}"
            );
        }
    }
}

/// SGD by hand, one scalar at a time, following torch.optim.SGD's documentation.
fn sgd_by_hand(
    p0: [f64; 2],
    lr: f64,
    mu: f64,
    nesterov: bool,
    wd: f64,
    steps: usize,
) -> Vec<[f64; 2]> {
    let (mut p, mut b) = (p0, [0.0; 2]);
    let mut out = Vec::new();
    for t in 0..steps {
        for k in 0..2 {
            let mut d = C[k] * p[k] + wd * p[k];
            if mu != 0.0 {
                b[k] = if t == 0 { d } else { mu * b[k] + d };
                d = if nesterov { d + mu * b[k] } else { b[k] };
            }
            p[k] -= lr * d;
        }
        out.push(p);
    }
    out
}

#[test]
fn plain_sgd_matches_the_hand_update() {
    // p = (1, 1), g = (1, −3): p₁ = (1 − 0.1, 1 + 0.3)
    let got = run(&mut Sgd::new(0.1), [1.0, 1.0], 4);
    assert_close(&got[..1], &[[0.9, 1.3]]);
    assert_close(&got, &sgd_by_hand([1.0, 1.0], 0.1, 0.0, false, 0.0, 4));
}

#[test]
fn sgd_with_momentum_matches_the_hand_update() {
    // step 1: b = g = (1, −3), p = (0.9, 1.3); step 2: g = (0.9, −3.9),
    // b = 0.9·(1, −3) + (0.9, −3.9) = (1.8, −6.6), p = (0.9 − 0.18, 1.3 + 0.66)
    let got = run(&mut Sgd::new(0.1).momentum(0.9), [1.0, 1.0], 5);
    assert_close(&got[..2], &[[0.9, 1.3], [0.72, 1.96]]);
    assert_close(&got, &sgd_by_hand([1.0, 1.0], 0.1, 0.9, false, 0.0, 5));
}

#[test]
fn sgd_with_nesterov_and_weight_decay_matches_the_hand_update() {
    let mut opt = Sgd::new(0.05)
        .momentum(0.8)
        .nesterov(true)
        .weight_decay(0.1);
    let got = run(&mut opt, [0.5, -2.0], 5);
    assert_close(&got, &sgd_by_hand([0.5, -2.0], 0.05, 0.8, true, 0.1, 5));
}

/// Adam / AdamW by hand, following torch.optim.Adam and torch.optim.AdamW.
fn adam_by_hand(p0: [f64; 2], lr: f64, wd: f64, decoupled: bool, steps: usize) -> Vec<[f64; 2]> {
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
    let (mut p, mut m, mut v) = (p0, [0.0; 2], [0.0; 2]);
    let mut out = Vec::new();
    for t in 1..=steps as i32 {
        for k in 0..2 {
            let mut g = C[k] * p[k];
            if decoupled {
                p[k] *= 1.0 - lr * wd;
            } else {
                g += wd * p[k];
            }
            m[k] = b1 * m[k] + (1.0 - b1) * g;
            v[k] = b2 * v[k] + (1.0 - b2) * g * g;
            let m_hat = m[k] / (1.0 - b1.powi(t));
            let v_hat = v[k] / (1.0 - b2.powi(t));
            p[k] -= lr * m_hat / (v_hat.sqrt() + eps);
        }
        out.push(p);
    }
    out
}

#[test]
fn adam_matches_the_hand_update() {
    // The first Adam step moves each parameter by lr·g/(|g| + ε): about lr against the
    // gradient's sign.
    let got = run(&mut Adam::new(0.01), [1.0, 1.0], 6);
    assert!(
        (got[0][0] - 0.99).abs() < 1e-9 && (got[0][1] - 1.01).abs() < 1e-9,
        "{:?}",
        got[0]
    );
    assert_close(&got, &adam_by_hand([1.0, 1.0], 0.01, 0.0, false, 6));
    let got = run(&mut Adam::new(0.01).weight_decay(0.5), [1.0, -1.0], 6);
    assert_close(&got, &adam_by_hand([1.0, -1.0], 0.01, 0.5, false, 6));
}

#[test]
fn adamw_matches_the_hand_update() {
    let got = run(&mut Adam::adamw(0.01, 0.1), [2.0, -1.0], 6);
    assert_close(&got, &adam_by_hand([2.0, -1.0], 0.01, 0.1, true, 6));
    // decoupled decay differs from L2 decay
    let l2 = run(&mut Adam::new(0.01).weight_decay(0.1), [2.0, -1.0], 6);
    assert!((got[5][0] - l2[5][0]).abs() > 1e-6);
}

#[test]
fn a_schedule_sets_the_rate_of_each_step() {
    // lr 0.1 halved every 2 steps: 0.1, 0.1, 0.05, 0.05
    let mut opt = Sgd::new(0.1).schedule(step_decay(2, 0.5));
    let got = run(&mut opt, [1.0, 1.0], 4);
    let mut p = [1.0, 1.0];
    let mut want = Vec::new();
    for lr in [0.1, 0.1, 0.05, 0.05] {
        for k in 0..2 {
            p[k] -= lr * C[k] * p[k];
        }
        want.push(p);
    }
    assert_close(&got, &want);
    assert_eq!(
        opt.learning_rate(),
        0.1,
        "the schedule leaves the base rate alone"
    );
    // any closure works as a schedule: warm-up over 3 steps
    let mut warm =
        Adam::new(0.3).schedule(|step, base: f64| base * ((step + 1) as f64 / 3.0).min(1.0));
    run(&mut warm, [1.0, 1.0], 4);
    assert_eq!(warm.steps(), 4);
}

#[test]
fn clipping_scales_the_gradients_to_the_max_norm() {
    // g = c ∘ p = (3, −4) at p = (3, 4/3): norm 5
    let m = model([3.0, 4.0 / 3.0]);
    let mut g = grads(&m);
    let norm = clip_grad_norm(&m, &mut g, 2.5);
    assert!((norm - 5.0).abs() < 1e-12);
    let clipped = g.wrt(&m.weight).unwrap();
    let factor = 2.5 / (5.0 + 1e-6);
    assert!(
        (clipped[[0, 0]] - 3.0 * factor).abs() < 1e-12
            && (clipped[[0, 1]] + 4.0 * factor).abs() < 1e-12
    );
    // below the max norm nothing changes
    let mut g = grads(&m);
    clip_grad_norm(&m, &mut g, 10.0);
    assert_eq!(g.wrt(&m.weight).unwrap(), &array![[3.0, -4.0]]);
}

#[test]
fn parameters_without_gradients_are_errors_unless_frozen_and_changed_models_are_errors() {
    let mut m = Linear {
        weight: array![[1.0, 1.0]],
        bias: Some(array![[5.0]]),
    };
    let g = grads(&model([1.0, 1.0])); // gradients of another model's parameter
    let mut opt = Sgd::new(0.1);
    let err = opt.step(&mut m, &g).unwrap_err();
    assert!(
        matches!(&err, OptimError::NoGradient { name, .. } if name == "weight"),
        "{err}"
    );
    assert_eq!(m.weight, array![[1.0, 1.0]]);
    assert_eq!(m.bias.as_ref().unwrap(), &array![[5.0]]);
    // frozen on purpose, they are left alone
    let mut opt = Sgd::new(0.1).freeze(["weight", "bias"]);
    opt.step(&mut m, &g).unwrap();
    assert_eq!(m.weight, array![[1.0, 1.0]]);
    assert_eq!(m.bias.as_ref().unwrap(), &array![[5.0]]);

    let mut adam = Adam::new(0.1).freeze(["weight", "bias"]);
    adam.step(&mut m, &g).unwrap();
    let mut other = Linear {
        weight: Array2::zeros((2, 2)),
        bias: None,
    };
    let err = adam.step(&mut other, &g).unwrap_err();
    assert_eq!(
        err,
        OptimError::ModelChanged {
            name: "weight".into()
        }
    );
    assert!(err.to_string().contains("make a new optimizer"));
    assert_eq!(other.parameters()[0].1, &Array2::<f64>::zeros((2, 2)));
    // plain SGD keeps no buffers, and still checks names and shapes
    let mut reshaped = Linear {
        weight: Array2::zeros((2, 1)),
        bias: Some(array![[5.0]]),
    };
    let err = opt.step(&mut reshaped, &g).unwrap_err();
    assert_eq!(
        err,
        OptimError::ModelChanged {
            name: "weight".into()
        }
    );
}

/// `f(x) = ½·xᵀ·A·x − bᵀ·x` for a symmetric positive definite A: minimum at `A⁻¹·b`.
fn quadratic_minimum(
    history: usize,
) -> (Array2<f64>, Array2<f64>, tapegrad::optim::LbfgsReport<f64>) {
    let a = array![
        [4.0, 1.0, 0.0, 0.5],
        [1.0, 3.0, 0.5, 0.0],
        [0.0, 0.5, 2.0, 0.3],
        [0.5, 0.0, 0.3, 1.0]
    ];
    let b = array![[1.0, -2.0, 0.5, 3.0]];
    let mut m = model([0.0, 0.0]);
    m.weight = Array2::zeros((1, 4));
    let report = Lbfgs::new()
        .history(history)
        .tolerance_grad(1e-12)
        .tolerance_change(0.0)
        .minimize(&mut m, |m| {
            let tape = Tape::new();
            let x = tape.param(&m.weight);
            let f = x
                .matmul(tape.constant(&a))
                .matmul(x.t())
                .mul_scalar(0.5)
                .sub(x.matmul(tape.constant(b.t())));
            Ok::<_, tapegrad::Error>((f.item(), tape.backward(f)?))
        })
        .unwrap();
    // the minimum, by solving A·x = b with Gaussian elimination by hand
    let mut aug = ndarray::concatenate![ndarray::Axis(1), a.clone(), b.t().to_owned()];
    for c in 0..4 {
        let d = aug[[c, c]];
        aug.row_mut(c).mapv_inplace(|v| v / d);
        for r in (0..4).filter(|&r| r != c) {
            let f = aug[[r, c]];
            let row = aug.row(c).to_owned();
            aug.row_mut(r).scaled_add(-f, &row);
        }
    }
    let expected = aug.column(4).to_owned().insert_axis(ndarray::Axis(0));
    (m.weight, expected, report)
}

#[test]
fn lbfgs_finds_the_minimum_of_a_quadratic_in_a_few_iterations() {
    let (x, expected, report) = quadratic_minimum(10);
    assert!(report.converged, "{report:?}");
    assert!(report.iterations <= 15, "{report:?}");
    for (a, b) in x.iter().zip(&expected) {
        assert!((a - b).abs() < 1e-9, "{x} vs {expected}");
    }
    // one correction pair is a weaker model of the Hessian: slower, same answer
    let (x, expected, report) = quadratic_minimum(1);
    assert!(report.converged, "{report:?}");
    for (a, b) in x.iter().zip(&expected) {
        assert!((a - b).abs() < 1e-7, "{x} vs {expected}");
    }
}

#[test]
fn lbfgs_shortens_steps_where_the_objective_fails_and_reports_other_failures() {
    // (x − 3)², undefined (an error) beyond x = 3.5: the first steps overshoot into the
    // failing region and are cut back
    let mut m = model([0.0, 0.0]);
    let report = Lbfgs::new()
        .minimize(&mut m, |m| {
            let tape = Tape::new();
            let w = tape.param(&m.weight);
            if m.weight.iter().any(|&v| v > 3.5) {
                return Err(tapegrad::ErrorKind::NoGradient.to_string());
            }
            let f = w.add_scalar(-3.0).square().sum();
            Ok((f.item(), tape.backward(f).map_err(|e| e.to_string())?))
        })
        .unwrap();
    assert!(report.converged, "{report:?}");
    assert!(
        m.weight.iter().all(|v| (v - 3.0).abs() < 1e-6),
        "{}",
        m.weight
    );
    // a failure at the starting point is returned
    let mut m = model([0.0, 0.0]);
    let err = Lbfgs::new()
        .minimize(&mut m, |_| Err::<(f64, Gradients<f64>), _>("no value here"))
        .unwrap_err();
    assert_eq!(err, LbfgsError::Objective("no value here"));
    // a parameter without a gradient is named
    let mut m = model([1.0, 2.0]);
    m.bias = Some(array![[0.0]]);
    let err = Lbfgs::new()
        .minimize(&mut m, |m| {
            let tape = Tape::new();
            let f = tape.param(&m.weight).sum();
            Ok::<_, tapegrad::Error>((f.item(), tape.backward(f)?))
        })
        .unwrap_err();
    assert!(
        matches!(&err, LbfgsError::Gradient(OptimError::NoGradient { name, .. }) if name == "bias"),
        "{err}"
    );
}

// ---- Issue 19, item 4: L-BFGS matches parameters by name and refuses what it cannot use --

/// Two parameters listed in one order by `visit` and in the other by `visit_mut`.
#[derive(Clone, Debug, PartialEq)]
struct Crossed {
    a: ndarray::Array2<f64>,
    b: ndarray::Array2<f64>,
    swap: bool,
}

impl tapegrad::nn::Parameters<f64> for Crossed {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, &'a ndarray::Array2<f64>)) {
        f("a", &self.a);
        f("b", &self.b);
    }
    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut ndarray::Array2<f64>)) {
        if self.swap {
            f("b", &mut self.b);
            f("a", &mut self.a);
        } else {
            f("a", &mut self.a);
            f("b", &mut self.b);
        }
    }
}

/// f(a, b) = Σ (a − 1)² + 10 Σ (b + 2)², a 1 × 2 and b 1 × 3: the minimum is a = 1, b = −2.
fn crossed_objective(m: &Crossed) -> tapegrad::Result<(f64, Gradients<f64>)> {
    let tape = Tape::new();
    let (a, b) = (tape.param(&m.a), tape.param(&m.b));
    let f = a
        .add_scalar(-1.0)
        .square()
        .sum()
        .add(b.add_scalar(2.0).square().sum().mul_scalar(10.0));
    Ok((f.item(), tape.backward(f)?))
}

#[test]
fn lbfgs_matches_parameters_by_name_whatever_the_visit_order() {
    let start = |swap| Crossed {
        a: ndarray::array![[0.3, -0.7]],
        b: ndarray::array![[0.1, 0.2, 0.3]],
        swap,
    };
    let (mut straight, mut crossed) = (start(false), start(true));
    let r1 = tapegrad::optim::Lbfgs::new()
        .minimize(&mut straight, crossed_objective)
        .unwrap();
    let r2 = tapegrad::optim::Lbfgs::new()
        .minimize(&mut crossed, crossed_objective)
        .unwrap();
    assert!(r1.converged && r2.converged, "{r1:?} {r2:?}");
    // the same run, but for the order of the sums in the dot products
    for (x, y) in straight
        .a
        .iter()
        .chain(&straight.b)
        .zip(crossed.a.iter().chain(&crossed.b))
    {
        assert!((x - y).abs() < 1e-12, "{x} against {y}");
    }
    assert!(
        crossed.a.iter().all(|v| (v - 1.0).abs() < 1e-6),
        "{:?}",
        crossed.a
    );
    assert!(
        crossed.b.iter().all(|v| (v + 2.0).abs() < 1e-6),
        "{:?}",
        crossed.b
    );
}

#[test]
fn lbfgs_never_reports_convergence_on_non_finite_values_or_gradients() {
    use tapegrad::optim::{Lbfgs, LbfgsError};
    let mut m = Crossed {
        a: ndarray::array![[f64::NAN, 0.0]],
        b: ndarray::array![[0.0, 0.0, 0.0]],
        swap: false,
    };
    match Lbfgs::new().minimize(&mut m, crossed_objective) {
        Err(LbfgsError::NotFinite { .. }) => {}
        other => panic!("NaN at the start: {other:?}"),
    }
    // a finite value with a NaN gradient
    let mut m = Crossed {
        a: ndarray::array![[0.0, 0.0]],
        ..m
    };
    let nan_gradient = |m: &Crossed| {
        let (f, mut g) = crossed_objective(m)?;
        g.wrt_mut(&m.b).unwrap()[[0, 1]] = f64::NAN;
        Ok::<_, tapegrad::Error>((f, g))
    };
    match Lbfgs::new().minimize(&mut m, nan_gradient) {
        Err(LbfgsError::NotFinite { .. }) => {}
        other => panic!("NaN gradient at the start: {other:?}"),
    }
}

#[test]
fn lbfgs_refuses_a_gradient_of_another_shape() {
    use tapegrad::optim::{Lbfgs, LbfgsError};
    let mut m = Crossed {
        a: ndarray::array![[0.0, 0.0]],
        b: ndarray::array![[0.0, 0.0, 0.0]],
        swap: false,
    };
    let short = |m: &Crossed| {
        let (f, mut g) = crossed_objective(m)?;
        *g.wrt_mut(&m.b).unwrap() = ndarray::Array2::zeros((1, 1));
        Ok::<_, tapegrad::Error>((f, g))
    };
    match Lbfgs::new().minimize(&mut m, short) {
        Err(LbfgsError::Gradient(OptimError::GradientShape {
            name,
            expected,
            found,
        })) => {
            assert_eq!((name.as_str(), expected, found), ("b", (1, 3), (1, 1)));
        }
        other => panic!("{other:?}"),
    }
}
