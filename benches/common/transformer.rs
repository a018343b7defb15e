//! One training step of the transformer of `examples/transformer_digits.rs`, shared by
//! `benches/transformer.rs` and `benches/instructions.rs`.

#![allow(dead_code)]

#[path = "../../examples/transformer_digits.rs"]
#[allow(dead_code)]
pub mod transformer_digits;

use ndarray::Array2;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Uniform};
use tapegrad::Tape;
use tapegrad::optim::{Adam, Optimizer};
pub use transformer_digits::{BATCH, Transformer, tokens};

/// A batch of random "images" and labels (the step's cost does not depend on the data).
pub fn batch() -> (Array2<f32>, Vec<usize>) {
    let mut rng = StdRng::seed_from_u64(1);
    let pixel = Uniform::new(0.0f32, 1.0).unwrap();
    let x = Array2::from_shape_simple_fn((BATCH, 64), || pixel.sample(&mut rng));
    let labels = (0..BATCH).map(|i| i % 10).collect();
    (tokens(&x), labels)
}

/// One training step; returns the loss and the number of ops recorded.
pub fn step(
    model: &mut Transformer,
    opt: &mut Adam<f32>,
    x: &Array2<f32>,
    labels: &[usize],
) -> (f32, usize) {
    let (loss, ops, grads) = {
        let tape = Tape::new();
        let loss = model
            .logits(tape.constant(x))
            .unwrap()
            .softmax_cross_entropy_indices(labels);
        let ops = tape.len();
        (loss.item(), ops, tape.backward(loss).unwrap())
    };
    opt.step(model, &grads).unwrap();
    (loss, ops)
}
