//! The examples reach the accuracy their docs state, deterministically (fixed seeds).

#[path = "../examples/iris.rs"]
#[allow(dead_code)]
mod iris;

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
