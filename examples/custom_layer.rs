//! A layer of your own, composed from ops: a gated linear unit
//! `GLU(X) = (X·W + b) ∘ σ(X·V + c)`. Deriving `Parameters` (names) and implementing
//! `Module` (forward) is all it takes to use it with `Sequential`, the optimizers, gradient
//! read-out by name and checkpoints. It learns the product `y = x₀·x₁`, which a single
//! linear layer cannot represent, then goes through a safetensors checkpoint.
//!
//! ```text
//! cargo run --release --example custom_layer
//! ```

use std::error::Error;

use ndarray::Array2;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tapegrad::nn::{Init, Linear, Module, Parameters, Sequential};
use tapegrad::optim::{Adam, Optimizer};
use tapegrad::{Float, Result, Tape, Tensor, io};

/// The gated linear unit: a value path and a gate path, multiplied. Its parameters,
/// named by the derive after the fields: `value.weight`, `value.bias`, `gate.weight`,
/// `gate.bias`.
#[derive(Clone, Parameters)]
pub struct Glu<F> {
    pub value: Linear<F>,
    pub gate: Linear<F>,
}

impl<F: Float> Glu<F> {
    pub fn new(inputs: usize, outputs: usize, rng: &mut StdRng) -> Self {
        Glu {
            value: Linear::new(inputs, outputs, Init::Glorot, rng),
            gate: Linear::new(inputs, outputs, Init::Glorot, rng),
        }
    }
}

/// No derivative written here: the tape records the ops and their rules.
impl<F: Float> Module<F> for Glu<F> {
    fn forward<'t>(&'t self, x: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        self.value
            .forward(x)?
            .try_mul(self.gate.forward(x)?.sigmoid())
    }
}

/// `x` on a 9 × 9 grid over [−1, 1]², and `y = x₀·x₁`.
pub fn data() -> (Array2<f64>, Array2<f64>) {
    let x = Array2::from_shape_fn((81, 2), |(i, j)| {
        let k = if j == 0 { i / 9 } else { i % 9 };
        k as f64 / 4.0 - 1.0
    });
    let y = Array2::from_shape_fn((81, 1), |(i, _)| x[[i, 0]] * x[[i, 1]]);
    (x, y)
}

/// GLU(2 → 16) then a linear read-out.
pub fn network(seed: u64) -> Sequential<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    Sequential::new()
        .with(Glu::new(2, 16, &mut rng))
        .with(Linear::new(16, 1, Init::Glorot, &mut rng))
}

/// The mean squared error of `net` on the grid.
pub fn loss(net: &Sequential<f64>) -> Result<f64> {
    let (x, y) = data();
    let tape = Tape::new();
    Ok(net
        .forward(tape.constant(&x))?
        .try_mse_loss(tape.constant(&y))?
        .item())
}

/// Trains with Adam; returns the network and the loss before and after.
pub fn train(
    steps: usize,
    seed: u64,
) -> std::result::Result<(Sequential<f64>, f64, f64), Box<dyn Error>> {
    let (x, y) = data();
    let mut net = network(seed);
    let before = loss(&net)?;
    let mut opt = Adam::new(0.02);
    for _ in 0..steps {
        let tape = Tape::new();
        let l = net
            .forward(tape.constant(&x))?
            .try_mse_loss(tape.constant(&y))?;
        let grads = tape.backward(l)?;
        opt.step(&mut net, &grads)?;
    }
    let after = loss(&net)?;
    Ok((net, before, after))
}

fn main() -> std::result::Result<(), Box<dyn Error>> {
    let (net, before, after) = train(1500, 11)?;
    println!("GLU network on y = x0·x1: loss {before:.4} → {after:.2e}");
    println!("parameters:");
    for (name, p) in net.parameters() {
        println!("  {name:<16} {:?}", p.dim());
    }

    // gradients by name, with no bookkeeping
    let (x, y) = data();
    let tape = Tape::new();
    let l = net
        .forward(tape.constant(&x))?
        .try_mse_loss(tape.constant(&y))?;
    let grads = tape.backward(l)?;
    let norms: Vec<String> = net
        .gradients(&grads)
        .into_iter()
        .map(|(name, g)| {
            format!(
                "{name} {:.1e}",
                g.map_or(0.0, |g| g.mapv(|v| v * v).sum().sqrt())
            )
        })
        .collect();
    println!("gradient norms at the end: {}", norms.join(", "));

    // a checkpoint round trip
    let path = std::env::temp_dir().join("tapegrad-glu.safetensors");
    io::save(&net, &path)?;
    let mut restored = network(99);
    io::load(&mut restored, &path)?;
    println!(
        "restored from {}: loss {:.2e}",
        path.display(),
        loss(&restored)?
    );
    Ok(())
}
