//! XOR, the classic problem a single linear layer cannot solve: a 2-4-1 network with a
//! tanh hidden layer and a sigmoid output, mean squared error, SGD with momentum.
//!
//! ```text
//! cargo run --release --example xor
//! ```

use std::error::Error;

use ndarray::{Array2, array};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tapegrad::Tape;
use tapegrad::nn::{Activation, Init, Module, Sequential, mlp};
use tapegrad::optim::{Optimizer, Sgd};

pub const STEPS: usize = 2000;
pub const SEED: u64 = 3;

/// The four inputs and their XOR.
pub fn data() -> (Array2<f64>, Array2<f64>) {
    (
        array![[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]],
        array![[0.0], [1.0], [1.0], [0.0]],
    )
}

/// Trains the network for `steps` full-batch steps and returns it with its final loss.
pub fn train(steps: usize, seed: u64) -> Result<(Sequential<f64>, f64), Box<dyn Error>> {
    let (x, y) = data();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut net = mlp(
        &[2, 4, 1],
        Activation::Tanh,
        Activation::Sigmoid,
        Init::Glorot,
        &mut rng,
    );
    let mut opt = Sgd::new(0.5).momentum(0.9);
    let mut last = f64::NAN;
    for _ in 0..steps {
        let tape = Tape::new();
        let loss = net
            .forward(tape.constant(&x))?
            .try_mse_loss(tape.constant(&y))?;
        last = loss.item();
        let grads = tape.backward(loss)?;
        opt.step(&mut net, &grads)?;
    }
    Ok((net, last))
}

/// The network's outputs for the four inputs.
pub fn predict(net: &Sequential<f64>) -> Result<Array2<f64>, Box<dyn Error>> {
    let tape = Tape::new();
    Ok(net.forward(tape.constant(data().0))?.value())
}

fn main() -> Result<(), Box<dyn Error>> {
    let (net, loss) = train(STEPS, SEED)?;
    println!("XOR after {STEPS} steps, loss {loss:.2e}");
    let (x, y) = data();
    for ((input, target), out) in x
        .rows()
        .into_iter()
        .zip(y.iter())
        .zip(predict(&net)?.iter())
    {
        println!(
            "  {} xor {} = {target}   network: {out:.3}",
            input[0], input[1]
        );
    }
    Ok(())
}
