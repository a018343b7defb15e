//! The examples reach the accuracy their docs state, deterministically (fixed seeds).
//!
//! Each example is a standalone program with its own `mod common;`, so the data loaders are
//! compiled once per example here.

#![allow(clippy::duplicate_mod)]

#[path = "../examples/custom_layer.rs"]
#[allow(dead_code)]
mod custom_layer;
#[path = "../examples/custom_op.rs"]
#[allow(dead_code)]
mod custom_op;
#[path = "../examples/digits.rs"]
#[allow(dead_code)]
mod digits;
#[path = "../examples/gradient_penalty.rs"]
#[allow(dead_code)]
mod gradient_penalty;
#[path = "../examples/iris.rs"]
#[allow(dead_code)]
mod iris;
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
    gradcheck(custom_op::softplus_layer, &[x.view(), w.view()], &opts).unwrap();
    gradgradcheck(custom_op::softplus_layer, &[x.view(), w.view()], &opts).unwrap();
    gradcheck(custom_op::ln_gamma_of_square, &[x.view()], &opts).unwrap();
    assert!(gradgradcheck(custom_op::ln_gamma_of_square, &[x.view()], &opts).is_err());
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
