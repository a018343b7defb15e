//! The examples reach the accuracy their docs state, deterministically (fixed seeds).
//!
//! Each example is a standalone program with its own `mod common;`, so the data loaders are
//! compiled once per example here.

#![allow(clippy::duplicate_mod)]

#[cfg(feature = "derive")]
#[path = "../examples/custom_layer.rs"]
#[allow(dead_code)]
mod custom_layer;
#[path = "../examples/custom_op.rs"]
#[allow(dead_code)]
mod custom_op;
#[path = "../examples/digits.rs"]
#[allow(dead_code)]
mod digits;
#[cfg(feature = "linalg")]
#[path = "../examples/gp_co2.rs"]
#[allow(dead_code)]
mod gp_co2;
#[path = "../examples/gradient_penalty.rs"]
#[allow(dead_code)]
mod gradient_penalty;
#[path = "../examples/iris.rs"]
#[allow(dead_code)]
mod iris;
#[path = "../examples/model_level.rs"]
#[allow(dead_code)]
mod model_level;
#[path = "../examples/newton.rs"]
#[allow(dead_code)]
mod newton;
#[path = "../examples/transformer_digits.rs"]
#[allow(dead_code)]
mod transformer_digits;
#[path = "../examples/xor.rs"]
#[allow(dead_code)]
mod xor;

#[test]
fn iris_reaches_95_percent_training_accuracy() {
    let mut curve = Vec::new();
    let outcome = iris::train(
        iris::EPOCHS,
        iris::LEARNING_RATE,
        iris::SEED,
        500,
        |_, loss, _| curve.push(loss),
    )
    .expect("iris.csv loads");
    assert!(
        outcome.accuracy >= 0.95,
        "training accuracy {:.3}",
        outcome.accuracy
    );
    assert!(
        curve.windows(2).all(|w| w[1] < w[0]),
        "the loss must fall at every report: {curve:?}"
    );
}

/// `iris --explain` explains the training step itself: its forward, written out with the
/// seed's names, gives the loss `train` reports at epoch 1, bit for bit.
#[test]
fn the_explained_iris_step_is_the_training_step() {
    let (x, y, _) = iris::inputs().unwrap();
    let (loss, explanation, dot, svg) =
        iris::explain_step(&iris::network(iris::SEED), &x, &y).unwrap();
    let mut first = None;
    iris::train(1, iris::LEARNING_RATE, iris::SEED, 1, |_, l, _| {
        first.get_or_insert(l);
    })
    .unwrap();
    assert_eq!(Some(loss), first);
    let eqs: Vec<&str> = explanation
        .lines
        .iter()
        .map(|l| l.equation.as_str())
        .collect();
    assert_eq!(eqs[3], "dW2 = Hᵀ · O_delta");
    assert_eq!(eqs.len(), 8);
    assert!(dot.contains("W2 = leaf") && svg.contains("W2 = leaf"));
}

#[test]
fn digits_reaches_95_percent_test_accuracy_on_held_out_images() {
    let run = digits::train(digits::EPOCHS, digits::SEED, |_, _| {}).expect("digits.csv.gz loads");
    let last = run.curve.last().unwrap();
    assert_eq!(run.test_images, 359);
    assert!(
        last.test_accuracy >= 0.95,
        "test accuracy {:.3}",
        last.test_accuracy
    );
    assert!(run.curve[0].loss > 3.0 * last.loss);
    // the same seed gives the same run
    let again = digits::train(2, digits::SEED, |_, _| {}).unwrap();
    assert_eq!(again.curve[1].loss, run.curve[1].loss);
}

#[test]
fn xor_is_learned() {
    let (net, loss) = xor::train(xor::STEPS, xor::SEED).unwrap();
    assert!(loss < 1e-3, "loss {loss}");
    let (_, targets) = xor::data();
    let out = xor::predict(&net).unwrap();
    for (o, t) in out.iter().zip(targets.iter()) {
        assert!((o - t).abs() < 0.1, "{out} vs {targets}");
    }
}

#[cfg(feature = "derive")]
#[test]
fn the_custom_layer_learns_a_product() {
    let (net, before, after) = custom_layer::train(1500, 11).unwrap();
    assert!(after < 1e-3 * before, "loss {before} → {after}");
    let bytes = tapegrad::io::to_bytes(&net).unwrap();
    let mut restored = custom_layer::network(99);
    tapegrad::io::from_bytes(&mut restored, &bytes).unwrap();
    assert_eq!(custom_layer::loss(&restored).unwrap(), after);
}

#[test]
fn newton_cg_reaches_the_tolerance_in_a_few_iterations() {
    let prob = newton::problem().expect("digits.csv.gz loads");
    let run = newton::newton_cg(&prob, 30);
    let last = *run.norms.last().unwrap();
    assert!(
        last < newton::TOLERANCE,
        "‖∇f‖ = {last:e} after {} iterations",
        run.norms.len()
    );
    assert!(
        run.norms.len() <= 15,
        "{} outer iterations",
        run.norms.len()
    );
    assert!(newton::accuracy(&run.params, &prob.x_test, &prob.test_labels) > 0.95);
    // gradient descent with as many gradients as Newton-CG used gradients and
    // Hessian-vector products together is still far from the minimum
    let budget = run.norms.len() + run.hessian_vector_products;
    let gd = newton::gradient_descent(&prob, budget, std::time::Duration::from_secs(3600));
    assert!(*gd.norms.last().unwrap() > 1e3 * newton::TOLERANCE);
}

#[test]
fn the_gradient_penalty_makes_the_fit_smoother() {
    let plain =
        gradient_penalty::train(0.0, gradient_penalty::STEPS, gradient_penalty::SEED).unwrap();
    let penalised =
        gradient_penalty::train(0.1, gradient_penalty::STEPS, gradient_penalty::SEED).unwrap();
    assert!(
        penalised.penalty < 0.2 * plain.penalty,
        "mean ‖∂f/∂x‖²: {} with the penalty, {} without",
        penalised.penalty,
        plain.penalty
    );
    assert!(
        penalised.mse < 0.2,
        "the penalised network still fits: {}",
        penalised.mse
    );
    assert!(penalised.curve.last().unwrap() < &(0.3 * penalised.curve[0]));
}

#[test]
fn the_custom_ops_pass_their_gradient_checks() {
    use ndarray::array;
    use tapegrad::check::{CheckOptions, gradcheck, gradgradcheck};
    let x = array![[0.5, -1.0, 2.0], [1.5, 0.3, -30.0]];
    let w = array![[0.2, -0.4], [1.0, 0.1], [-0.3, 0.8]];
    let opts = CheckOptions::default();
    gradcheck(
        |xs| custom_op::softplus_layer(&xs),
        &[x.view(), w.view()],
        &opts,
    )
    .unwrap();
    gradgradcheck(
        |xs| custom_op::softplus_layer(&xs),
        &[x.view(), w.view()],
        &opts,
    )
    .unwrap();
    gradcheck(|xs| custom_op::ln_gamma_of_square(&xs), &[x.view()], &opts).unwrap();
    assert!(gradgradcheck(|xs| custom_op::ln_gamma_of_square(&xs), &[x.view()], &opts).is_err());
}

#[test]
fn the_transformer_reaches_97_percent_on_held_out_digits() {
    let run = transformer_digits::train(
        transformer_digits::EPOCHS,
        transformer_digits::SEED,
        |_, _| {},
    )
    .expect("digits.csv.gz loads");
    let last = run.curve.last().unwrap();
    assert_eq!(run.test_images, 359);
    assert!(
        last.test_accuracy >= 0.97,
        "test accuracy {:.3}",
        last.test_accuracy
    );
    assert!(run.curve[0].loss > 5.0 * last.loss);
}

/// scikit-learn's numbers for the CO2 Gaussian process (`tests/data/gp_co2_sklearn.txt`,
/// written by `tests/data/make_gp_fixture.py`), by name.
#[cfg(feature = "linalg")]
fn gp_fixture() -> std::collections::HashMap<String, Vec<f64>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/gp_co2_sklearn.txt");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next()?.to_string();
            let values: Vec<f64> = parts.filter_map(|v| v.parse().ok()).collect();
            Some((name, values))
        })
        .collect()
}

#[cfg(feature = "linalg")]
#[test]
fn gp_co2_preprocessing_matches_scikit_learns_example() {
    let fx = gp_fixture();
    let data = gp_co2::load().unwrap();
    let n = data.x.nrows();
    assert_eq!(n as f64, fx["n"][0]);
    assert!((data.y_mean - fx["y_mean"][0]).abs() <= 1e-12 * fx["y_mean"][0]);
    let (x, y) = (data.x.column(0), data.y.column(0));
    for i in 0..3 {
        assert_eq!(x[i], fx["x_head"][i]);
        assert_eq!(x[n - 3 + i], fx["x_tail"][i]);
        assert!((y[i] + data.y_mean - fx["y_head"][i]).abs() < 1e-12);
        assert!((y[n - 3 + i] + data.y_mean - fx["y_tail"][i]).abs() < 1e-12);
    }
}

#[cfg(feature = "linalg")]
#[test]
fn gp_co2_log_marginal_likelihood_and_gradient_match_scikit_learn() {
    // 1e-8 relative: K + 1e-10·I has a condition number near 1.2e8, so two correct f64
    // implementations agree to ~2e-10 relative in the value and ~5e-8 absolute in the
    // gradient (the fixture script's notes)
    let fx = gp_fixture();
    let data = gp_co2::load().unwrap();
    let gp = gp_co2::Gp::initial();
    for (a, b) in gp.theta.iter().zip(&fx["theta_init"]) {
        assert!((a - b).abs() < 1e-15, "theta {a} vs {b}");
    }
    let (lml, grad) = gp_co2::lml_and_gradient(&gp.theta, &data).unwrap();
    let want = fx["lml_init"][0];
    assert!((lml - want).abs() <= 1e-8 * want.abs(), "{lml} vs {want}");
    eprintln!(
        "LML {lml} vs {want}: relative difference {:.1e}",
        ((lml - want) / want).abs()
    );
    let want = &fx["grad_init"];
    let scale = want.iter().fold(0.0f64, |m, g| m.max(g.abs()));
    let worst = grad
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    eprintln!(
        "gradient: largest difference {worst:.1e}, relative to its largest element {:.1e}",
        worst / scale
    );
    for (k, (a, b)) in grad.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-8 * scale,
            "d LML / d {}: {a} vs scikit-learn's {b}",
            gp_co2::THETA_NAMES[k]
        );
    }
}

#[cfg(feature = "linalg")]
#[test]
fn gp_co2_fit_reaches_scikit_learns_optimum() {
    let fx = gp_fixture();
    let data = gp_co2::load().unwrap();
    let run = gp_co2::fit(&data, |_, _| {}).unwrap();
    let (lml, _) = gp_co2::lml_and_gradient(&run.gp.theta, &data).unwrap();
    let best = fx["lml_fit"][0];
    assert!(
        (lml - best).abs() < 0.1,
        "fitted {lml}, scikit-learn {best}"
    );
    assert!(
        run.curve.iter().all(|&v| v <= lml + 1e-9),
        "the fit keeps the best point"
    );
    // the same kernel, to scikit-learn's printed precision
    let theta_fit = ndarray::Array2::from_shape_vec((1, 11), fx["theta_fit"].clone()).unwrap();
    assert_eq!(
        gp_co2::kernel_string(&run.gp.theta),
        gp_co2::kernel_string(&theta_fit)
    );
    // and a forecast that continues the trend: 2030 above the last observation
    let xs = ndarray::Array2::from_elem((1, 1), 2030.5);
    let (mean, std) = gp_co2::predict(&run.gp.theta, &data, &xs).unwrap();
    assert!(mean[0] > 371.0 && std[0] > 0.0, "{mean:?} ± {std:?}");
}

#[cfg(feature = "linalg")]
#[test]
fn gp_co2_prints_kernels_as_scikit_learn_does() {
    assert_eq!(gp_co2::g3(44.8123), "44.8");
    assert_eq!(gp_co2::g3(2500.0), "2.5e+03");
    assert_eq!(gp_co2::g3(0.0367), "0.0367");
    assert_eq!(gp_co2::g3(1.0), "1");
    assert_eq!(gp_co2::g3(0.00001234), "1.23e-05");
    assert_eq!(gp_co2::g3(999.7), "1e+03");
    let initial = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/gp_co2_sklearn.txt"
    ))
    .unwrap();
    let line = initial
        .lines()
        .find(|l| l.starts_with("# initial kernel: "))
        .unwrap();
    assert_eq!(
        gp_co2::kernel_string(&gp_co2::Gp::initial().theta),
        line.trim_start_matches("# initial kernel: ")
    );
}

/// The model-level example's figures, each against its independent check.
#[test]
fn model_level_derivatives_agree_with_their_checks() {
    let s = model_level::run(500).unwrap();
    assert!(s.loss < 2e-3, "training loss {}", s.loss);
    assert!(s.gradcheck.0 < 1e-8, "gradcheck_model: {:?}", s.gradcheck);
    assert!(s.curvature.0 > 0.0, "vᵀHv = {}", s.curvature.0);
    assert!(
        s.curvature.1 < 1e-5,
        "H·v vs finite differences: {}",
        s.curvature.1
    );
    assert!(
        s.input_hessian.0 < 1e-12 && s.input_hessian.1 < 1e-12,
        "{:?}",
        s.input_hessian
    );
    assert!(s.remat_bitwise);
}
