//! The examples reach the accuracy their docs state, deterministically (fixed seeds).
//!
//! Each example is a standalone program with its own `mod common;`, so the data loaders are
//! compiled once per example here.

#![allow(clippy::duplicate_mod)]

#[path = "../examples/custom_layer.rs"]
#[allow(dead_code)]
mod custom_layer;
#[path = "../examples/digits.rs"]
#[allow(dead_code)]
mod digits;
#[path = "../examples/iris.rs"]
#[allow(dead_code)]
mod iris;
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
