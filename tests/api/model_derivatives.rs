//! Derivatives and checks with respect to a model's parameters (`check::gradcheck_model`,
//! `functional::model_hvp`, `model_jvp`, `hvp_with_grad`), each against an independent
//! oracle: central finite differences in f64 of first-order backward, or closed forms.
//! The losses are closures that borrow the model, the data and the targets (no clone).

use crate::common;

use common::close;

use ndarray::{Array2, array};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tapegrad::check::{CheckError, CheckOptions, gradcheck_model};
use tapegrad::functional::{self, Named, model_fn, model_hvp, model_jvp};
use tapegrad::nn::{Activation, Init, Linear, Module, Parameters, Sequential, mlp};
use tapegrad::{ErrorKind, Result, Tape, Tensor};

fn model() -> Sequential<f64> {
    let mut rng = StdRng::seed_from_u64(7);
    mlp(
        &[3, 4, 2],
        Activation::Tanh,
        Activation::Identity,
        Init::Glorot,
        &mut rng,
    )
}

fn data() -> (Array2<f64>, Array2<f64>) {
    let x = array![[0.5, -1.0, 2.0], [1.5, 0.3, -0.7], [-0.2, 0.8, 0.1]];
    let y = array![[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]];
    (x, y)
}

/// `mean((model(x) − y)²)`: the loss every test differentiates, as a function item (the
/// oracles call it on perturbed copies).
fn mse<'t>(
    m: &'t Sequential<f64>,
    x: &'t Array2<f64>,
    y: &'t Array2<f64>,
    tape: &'t Tape<'t, f64>,
) -> Result<Tensor<'t, f64>> {
    Ok(m.forward(tape.constant(x))?
        .try_sub(tape.constant(y))?
        .square()
        .mean())
}

/// A direction for every parameter, by name (a fixed pattern in (−1, 1) that `seed` moves).
fn direction(m: &Sequential<f64>, seed: u64) -> Named<f64> {
    let mut k = seed as f64;
    m.parameters()
        .into_iter()
        .map(|(name, p)| {
            let d = Array2::from_shape_simple_fn(p.dim(), || {
                k += 1.0;
                (k * 1.7).sin()
            });
            (name, d)
        })
        .collect()
}

/// A copy of `m` with every parameter moved by `t·d[name]`.
fn moved(m: &Sequential<f64>, d: &Named<f64>, t: f64) -> Sequential<f64> {
    let mut m = m.clone();
    m.visit_mut(&mut |name, p| p.scaled_add(t, &d[name]));
    m
}

/// The gradient of `mse` by first-order backward, by name.
fn gradient(m: &Sequential<f64>, x: &Array2<f64>, y: &Array2<f64>) -> Named<f64> {
    let tape = Tape::new();
    let loss = mse(m, x, y, &tape).unwrap();
    let grads = tape.backward(loss).unwrap();
    m.gradients(&grads)
        .into_iter()
        .map(|(n, g)| (n, g.unwrap().clone()))
        .collect()
}

#[test]
fn model_hvp_matches_finite_differences_of_the_gradient() {
    let (m, (x, y)) = (model(), data());
    let v = direction(&m, 1);
    let r = model_hvp(&m, |m, s| mse(m, &x, &y, s.tape()), &v).unwrap();
    // the value and the gradient against first-order backward
    let tape = Tape::new();
    assert_eq!(r.value, mse(&m, &x, &y, &tape).unwrap().item());
    let g = gradient(&m, &x, &y);
    assert_eq!(
        r.gradient.keys().collect::<Vec<_>>(),
        g.keys().collect::<Vec<_>>()
    );
    for (name, g) in &g {
        assert!(close(&r.gradient[name], g, 1e-12), "gradient of {name}");
    }
    // H·v against (∇L(θ + εv) − ∇L(θ − εv)) / 2ε
    let eps = 1e-5;
    let (plus, minus) = (
        gradient(&moved(&m, &v, eps), &x, &y),
        gradient(&moved(&m, &v, -eps), &x, &y),
    );
    for (name, hv) in &r.hvp {
        let numeric = (&plus[name] - &minus[name]) / (2.0 * eps);
        assert!(
            close(hv, &numeric, 1e-6),
            "H·v of {name}: {hv} vs {numeric}"
        );
    }
    assert!(
        r.hvp.values().any(|h| h.iter().any(|&e| e.abs() > 1e-3)),
        "a trivial H·v"
    );
}

#[test]
fn model_hvp_of_least_squares_is_the_closed_form() {
    // L = Σ (x·W + b − y)²: H·v = 2·[x 1]ᵀ([x 1]·[v_W; v_b]), exactly
    let model = Linear {
        weight: array![[0.3], [-1.2], [2.0]],
        bias: Some(array![[0.1]]),
    };
    let x = array![
        [1.0, 2.0, 0.5],
        [3.0, -1.0, 1.0],
        [0.0, 1.0, -2.0],
        [1.0, 1.0, 1.0]
    ];
    let y = array![[1.0], [0.0], [2.0], [-1.0]];
    let v: Named<f64> = [
        ("weight".to_string(), array![[1.0], [0.5], [-2.0]]),
        ("bias".to_string(), array![[3.0]]),
    ]
    .into_iter()
    .collect();
    let r = model_hvp(
        &model,
        |m, s| {
            Ok(m.forward(s.constant(&x))?
                .try_sub(s.constant(&y))?
                .square()
                .sum())
        },
        &v,
    )
    .unwrap();
    let xv = x.dot(&v["weight"]) + v["bias"][[0, 0]];
    let residual = x.dot(&model.weight) + 0.1 - &y;
    assert_eq!(r.value, residual.iter().map(|e| e * e).sum::<f64>());
    assert!(close(&r.hvp["weight"], &(2.0 * x.t().dot(&xv)), 1e-14));
    assert!(close(&r.hvp["bias"], &array![[2.0 * xv.sum()]], 1e-14));
    assert!(close(
        &r.gradient["weight"],
        &(2.0 * x.t().dot(&residual)),
        1e-14
    ));
}

#[test]
fn model_jvp_matches_finite_differences_of_the_output() {
    let (m, (x, _)) = (model(), data());
    let u = direction(&m, 2);
    let (out, ju) = model_jvp(&m, |m, s| m.forward(s.constant(&x)), &u).unwrap();
    let forward = |m: &Sequential<f64>| {
        let tape = Tape::new();
        m.forward(tape.constant(&x)).unwrap().value()
    };
    assert_eq!(out, forward(&m));
    let eps = 1e-6;
    let numeric = (forward(&moved(&m, &u, eps)) - forward(&moved(&m, &u, -eps))) / (2.0 * eps);
    assert!(close(&ju, &numeric, 1e-6), "{ju} vs {numeric}");
    assert!(ju.iter().any(|e| e.abs() > 1e-3));
}

#[test]
fn gradcheck_model_passes_and_names_the_worst_parameter() {
    let (m, (x, y)) = (model(), data());
    let report = gradcheck_model(
        &m,
        |m, s| mse(m, &x, &y, s.tape()),
        &CheckOptions::default(),
    )
    .unwrap();
    assert_eq!(report.comparisons, m.parameter_count());
    let names: Vec<String> = m.parameters().into_iter().map(|(n, _)| n).collect();
    let reported: Vec<String> = report
        .per_parameter
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    assert_eq!(reported, names);
    let (worst, err) =
        report.per_parameter.iter().fold(
            ("", -1.0),
            |w, (n, e)| if *e > w.1 { (n.as_str(), *e) } else { w },
        );
    assert_eq!(report.worst, worst);
    assert_eq!(report.max_abs_error, err);
}

#[test]
fn gradcheck_model_finds_a_parameter_the_loss_uses_without_its_gradient() {
    // the bias also enters as a constant: backward misses that term, finite differences do not
    let model = Linear {
        weight: array![[0.3], [-1.2]],
        bias: Some(array![[0.7]]),
    };
    let x = array![[1.0, 2.0], [3.0, -1.0]];
    let err = gradcheck_model(
        &model,
        |m, s| {
            let out = m.forward(s.constant(&x))?.sum();
            out.try_add(s.constant(m.bias.as_ref().unwrap()).square())
        },
        &CheckOptions::default(),
    )
    .unwrap_err();
    match err {
        CheckError::ParameterMismatch { name, index, .. } => {
            assert_eq!((name.as_str(), index), ("bias", (0, 0)));
        }
        e => panic!("expected a mismatch, got {e}"),
    }
}

#[test]
fn illegal_directions_are_typed_errors() {
    let (m, (x, y)) = (model(), data());
    let good = direction(&m, 3);
    let run = |v: &Named<f64>| model_hvp(&m, |m, s| mse(m, &x, &y, s.tape()), v).map(|_| ());
    let jvp = |v: &Named<f64>| model_jvp(&m, |m, s| m.forward(s.constant(&x)), v).map(|_| ());
    let kind = |r: Result<()>| r.unwrap_err().kind().clone();

    let mut missing = good.clone();
    missing.remove("2.bias");
    let want = ErrorKind::Direction {
        name: "2.bias".into(),
        expected: Some((1, 2)),
        given: None,
    };
    assert_eq!(kind(run(&missing)), want);
    assert_eq!(kind(jvp(&missing)), want);

    let mut extra = good.clone();
    extra.insert("3.weight".into(), Array2::zeros((2, 2)));
    let want = ErrorKind::Direction {
        name: "3.weight".into(),
        expected: None,
        given: Some((2, 2)),
    };
    assert_eq!(kind(run(&extra)), want);
    assert_eq!(kind(jvp(&extra)), want);

    let mut wrong = good.clone();
    wrong.insert("0.weight".into(), Array2::zeros((4, 3)));
    let want = ErrorKind::Direction {
        name: "0.weight".into(),
        expected: Some((3, 4)),
        given: Some((4, 3)),
    };
    assert_eq!(kind(run(&wrong)), want);
    assert_eq!(kind(jvp(&wrong)), want);
    assert!(run(&wrong).unwrap_err().to_string().contains("0.weight"));

    // a loss that is not a scalar, and a loss that fails
    let v = good.clone();
    let not_scalar = model_hvp(&m, |m, s| m.forward(s.constant(&x)), &v).unwrap_err();
    assert!(matches!(not_scalar.kind(), ErrorKind::NotScalar { .. }));
    let bad_x = array![[1.0, 2.0]];
    let shape = model_hvp(&m, |m, s| Ok(m.forward(s.constant(&bad_x))?.sum()), &v).unwrap_err();
    assert!(matches!(shape.kind(), ErrorKind::Shape { .. }));
    let checked = gradcheck_model(
        &m,
        |m, s| Ok(m.forward(s.constant(&bad_x))?.sum()),
        &CheckOptions::default(),
    );
    assert!(matches!(checked, Err(CheckError::Tape(_))));
}

#[test]
fn nan_directions_give_nan_products_and_leave_the_gradient_alone() {
    let (m, (x, y)) = (model(), data());
    let mut v = direction(&m, 4);
    v.get_mut("0.bias").unwrap()[[0, 1]] = f64::NAN;
    let r = model_hvp(&m, |m, s| mse(m, &x, &y, s.tape()), &v).unwrap();
    assert!(r.value.is_finite());
    assert!(r.gradient.values().all(|g| g.iter().all(|e| e.is_finite())));
    assert!(r.hvp["0.bias"].iter().any(|e| e.is_nan()));
    let (out, ju) = model_jvp(&m, |m, s| m.forward(s.constant(&x)), &v).unwrap();
    assert!(out.iter().all(|e| e.is_finite()));
    assert!(ju.iter().any(|e| e.is_nan()));
}

#[test]
fn a_nan_loss_fails_the_model_gradcheck() {
    let (m, (x, _)) = (model(), data());
    let nan = array![[f64::NAN, 0.0], [0.0, 0.0], [0.0, 0.0]];
    let r = gradcheck_model(
        &m,
        |m, s| {
            Ok(m.forward(s.constant(&x))?
                .try_sub(s.constant(&nan))?
                .square()
                .mean())
        },
        &CheckOptions::default(),
    );
    assert!(
        matches!(r, Err(CheckError::ParameterMismatch { .. })),
        "{r:?}"
    );
}

#[test]
fn an_empty_model() {
    let m = Sequential::<f64>::new();
    let x = array![[1.0, 2.0]];
    let r = gradcheck_model(
        &m,
        |m, s| Ok(m.forward(s.constant(&x))?.sum()),
        &CheckOptions::default(),
    );
    assert_eq!(r, Err(CheckError::NoParameters));
    let r = model_hvp(
        &m,
        |m, s| Ok(m.forward(s.constant(&x))?.square().sum()),
        &Named::new(),
    )
    .unwrap();
    assert_eq!((r.value, r.gradient.len(), r.hvp.len()), (5.0, 0, 0));
    let (out, ju) = model_jvp(&m, |m, s| m.forward(s.constant(&x)), &Named::new()).unwrap();
    assert_eq!((out, ju), (x.clone(), Array2::zeros((1, 2))));
    let extra: Named<f64> = [("w".to_string(), array![[1.0]])].into_iter().collect();
    assert!(model_hvp(&m, |m, s| Ok(m.forward(s.constant(&x))?.sum()), &extra).is_err());
}

#[test]
#[should_panic(expected = "user code")]
fn a_panicking_loss_propagates() {
    let m = model();
    let v = direction(&m, 5);
    let _ = model_hvp(
        &m,
        |_, _| -> Result<Tensor<'_, f64>> { panic!("user code") },
        &v,
    );
}

#[test]
fn hvp_with_grad_is_the_closed_form() {
    // f(a, b) = Σ a²·b: ∇a = 2ab, ∇b = a², H·(va, vb) = (2b·va + 2a·vb, 2a·va)
    let (a, b) = (array![[1.0, -2.0]], array![[3.0, 0.5]]);
    let (va, vb) = (array![[0.5, 1.0]], array![[-1.0, 2.0]]);
    let (value, grad, hv) = functional::hvp_with_grad(
        |x| x[0].square().mul(x[1]).sum(),
        &[a.view(), b.view()],
        &[va.view(), vb.view()],
    )
    .unwrap();
    assert_eq!(value, 3.0 + 2.0);
    assert_eq!(grad[0], 2.0 * &a * &b);
    assert_eq!(grad[1], &a * &a);
    assert_eq!(hv[0], 2.0 * &b * &va + 2.0 * &a * &vb);
    assert_eq!(hv[1], 2.0 * &a * &va);
    let (v2, hv2) = functional::hvp(
        |x| x[0].square().mul(x[1]).sum(),
        &[a.view(), b.view()],
        &[va.view(), vb.view()],
    )
    .unwrap();
    assert_eq!((v2, hv2), (value, hv));
    let wrong = functional::hvp_with_grad(|x| x[0].sum(), &[a.view()], &[vb.t()]).unwrap_err();
    assert!(matches!(wrong.kind(), ErrorKind::Shape { .. }));
}

#[test]
fn a_loss_stored_in_a_let_serves_every_function() {
    let (m, (x, y)) = (model(), data());
    let loss = model_fn(|m: &Sequential<f64>, s| mse(m, &x, &y, s.tape()));
    let output = model_fn(|m: &Sequential<f64>, s| m.forward(s.constant(&x)));
    let v = direction(&m, 6);
    let a = model_hvp(&m, loss, &v).unwrap();
    let b = model_hvp(&m, |m, s| mse(m, &x, &y, s.tape()), &v).unwrap();
    assert_eq!(a, b);
    gradcheck_model(&m, loss, &CheckOptions::default()).unwrap();
    let (out, _) = model_jvp(&m, output, &v).unwrap();
    assert_eq!(out.dim(), (3, 2));
}
