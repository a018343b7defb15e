//! Layers: what they compute, how they name and share their parameters, their
//! initialisation, and a user-defined layer working with everything.

use ndarray::{Array2, Axis, array};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tapegrad::nn::{
    Activation, Init, Linear, Module, Parameters, Relu, Sequential, Sigmoid, Tanh, mlp,
    visit_child, visit_child_mut,
};
use tapegrad::optim::{Adam, Optimizer, Sgd};
use tapegrad::{Gradients, Tape, Tensor, io};

#[test]
fn models_and_optimizers_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Linear<f32>>();
    send_sync::<Sequential<f64>>();
    send_sync::<Relu>();
    send_sync::<Gated>();
    send_sync::<Sgd<f32>>();
    send_sync::<Adam<f64>>();
    send_sync::<Gradients<f32>>();
}

#[test]
fn linear_computes_x_w_plus_b_and_its_gradients() {
    let layer = Linear {
        weight: array![[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]],
        bias: Some(array![[0.5, -0.5]]),
    };
    let x = array![[1.0, 0.0, -1.0], [2.0, 1.0, 0.0]];
    let tape = Tape::new();
    let y = layer.forward(tape.constant(&x)).unwrap();
    assert_eq!(
        y.value(),
        x.dot(&layer.weight) + layer.bias.as_ref().unwrap()
    );
    let grads = tape.backward(y.sum()).unwrap();
    let named = layer.gradients(&grads);
    assert_eq!(named[0].0, "weight");
    assert_eq!(named[0].1.unwrap(), &x.t().dot(&Array2::ones((2, 2))));
    assert_eq!(named[1].0, "bias");
    assert_eq!(named[1].1.unwrap(), &array![[2.0, 2.0]]);
}

#[test]
fn the_forward_pass_borrows_parameters_instead_of_copying_them() {
    let mut rng = StdRng::seed_from_u64(0);
    let net = mlp::<f64>(
        &[64, 128, 10],
        Activation::Relu,
        Activation::Identity,
        Init::He,
        &mut rng,
    );
    let tape = Tape::new();
    let x = tape.constant(Array2::zeros((1, 64)));
    let before = tape.stats().owned_bytes;
    net.forward(x).unwrap();
    // the tape owns only the activations (linear and relu outputs, 1 × 128; logits,
    // 1 × 10), no parameter
    let owned = tape.stats().owned_bytes - before;
    assert_eq!(owned, (128 * 2 + 10) * 8);
    assert!(owned < net.parameter_count());
}

#[test]
fn sequential_names_parameters_by_position() {
    let mut rng = StdRng::seed_from_u64(1);
    let net = Sequential::new()
        .with(Linear::<f32>::new(4, 3, Init::Glorot, &mut rng))
        .with(Tanh)
        .with(Linear::<f32>::without_bias(3, 2, Init::Glorot, &mut rng))
        .with(Sigmoid);
    let names: Vec<String> = net.parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["0.weight", "0.bias", "2.weight"]);
    assert_eq!(net.parameter_count(), 4 * 3 + 3 + 3 * 2);
    assert_eq!(net.len(), 4);
}

#[test]
fn a_wrong_input_width_is_an_error_from_every_layer() {
    let mut rng = StdRng::seed_from_u64(2);
    let net = mlp::<f32>(
        &[3, 5, 2],
        Activation::Relu,
        Activation::Identity,
        Init::He,
        &mut rng,
    );
    let tape = Tape::new();
    let err = net
        .forward(tape.constant(Array2::zeros((4, 7))))
        .unwrap_err();
    assert_eq!(err.op(), "linear");
    assert!(err.to_string().contains("4 × 7 and 3 × 5"), "{err}");
}

#[test]
fn glorot_and_he_draw_the_documented_distributions_reproducibly() {
    let (fan_in, fan_out) = (400, 600);
    let glorot = Linear::<f64>::new(fan_in, fan_out, Init::Glorot, &mut StdRng::seed_from_u64(3));
    let a = (6.0 / (fan_in + fan_out) as f64).sqrt();
    assert!(glorot.weight.iter().all(|w| w.abs() <= a));
    // U(−a, a) has variance a²/3
    let var = glorot.weight.mapv(|w| w * w).mean().unwrap();
    assert!((var / (a * a / 3.0) - 1.0).abs() < 0.02, "variance {var}");
    assert_eq!(
        glorot.bias.as_ref().unwrap(),
        &Array2::<f64>::zeros((1, fan_out))
    );

    let he = Linear::<f64>::new(fan_in, fan_out, Init::He, &mut StdRng::seed_from_u64(3));
    let std = he.weight.mapv(|w| w * w).mean().unwrap().sqrt();
    assert!(
        (std / (2.0 / fan_in as f64).sqrt() - 1.0).abs() < 0.02,
        "std {std}"
    );
    assert!(
        he.weight
            .mean_axis(Axis(0))
            .unwrap()
            .iter()
            .all(|m| m.abs() < 0.02)
    );

    let again = Linear::<f64>::new(fan_in, fan_out, Init::He, &mut StdRng::seed_from_u64(3));
    assert_eq!(again, he, "a seeded generator gives the same weights");
}

/// A layer of one's own, composed from ops: a gated linear unit
/// `(X·W + b) ∘ σ(X·V + c)`.
#[derive(Clone)]
struct Gated {
    value: Linear<f64>,
    gate: Linear<f64>,
}

impl Parameters<f64> for Gated {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Array2<f64>)) {
        visit_child("value", &self.value, f);
        visit_child("gate", &self.gate, f);
    }
    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Array2<f64>)) {
        visit_child_mut("value", &mut self.value, f);
        visit_child_mut("gate", &mut self.gate, f);
    }
}

impl Module<f64> for Gated {
    fn forward<'t>(&'t self, x: Tensor<'t, f64>) -> tapegrad::Result<Tensor<'t, f64>> {
        self.value
            .forward(x)?
            .try_mul(self.gate.forward(x)?.sigmoid())
    }
}

#[test]
fn a_user_defined_layer_works_with_sequential_optimizers_and_checkpoints() {
    let mut rng = StdRng::seed_from_u64(4);
    let gated = Gated {
        value: Linear::new(2, 8, Init::Glorot, &mut rng),
        gate: Linear::new(2, 8, Init::Glorot, &mut rng),
    };
    let mut net = Sequential::new()
        .with(gated)
        .with(Linear::new(8, 1, Init::Glorot, &mut rng));
    let names: Vec<String> = net.parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "0.value.weight",
            "0.value.bias",
            "0.gate.weight",
            "0.gate.bias",
            "1.weight",
            "1.bias"
        ]
    );

    // learn y = x₀·x₁ on a grid
    let x = Array2::from_shape_fn((25, 2), |(i, j)| {
        if j == 0 {
            (i / 5) as f64 / 2.0 - 1.0
        } else {
            (i % 5) as f64 / 2.0 - 1.0
        }
    });
    let y = Array2::from_shape_fn((25, 1), |(i, _)| x[[i, 0]] * x[[i, 1]]);
    let mut opt = Adam::new(0.02);
    let loss_of = |net: &Sequential<f64>| {
        let tape = Tape::new();
        net.forward(tape.constant(&x))
            .unwrap()
            .mse_loss(tape.constant(&y))
            .item()
    };
    let start = loss_of(&net);
    for _ in 0..300 {
        let grads = {
            let tape = Tape::new();
            let loss = net
                .forward(tape.constant(&x))
                .unwrap()
                .mse_loss(tape.constant(&y));
            tape.backward(loss).unwrap()
        };
        opt.step(&mut net, &grads).unwrap();
    }
    let end = loss_of(&net);
    assert!(end < 0.1 * start, "loss {start} → {end}");

    // checkpoint round trip of the custom layer
    let bytes = io::to_bytes(&net).unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let mut other = Sequential::new()
        .with(Gated {
            value: Linear::new(2, 8, Init::He, &mut rng),
            gate: Linear::new(2, 8, Init::He, &mut rng),
        })
        .with(Linear::new(8, 1, Init::He, &mut rng));
    io::from_bytes(&mut other, &bytes).unwrap();
    assert_eq!(loss_of(&other), end);
}

/// A `Sequential` clones layer by layer: the copy computes the same (its dropout draws
/// the same masks), owns its parameters (a step on it leaves the original alone), and a
/// boxed layer clones too.
#[test]
fn sequential_and_boxed_layers_clone() {
    use tapegrad::nn::Dropout;
    let mut rng = StdRng::seed_from_u64(8);
    let original = Sequential::new()
        .with(Linear::<f64>::new(2, 8, Init::Glorot, &mut rng))
        .with(Dropout::new(0.5, 9))
        .with(Gated {
            value: Linear::new(8, 3, Init::Glorot, &mut rng),
            gate: Linear::new(8, 3, Init::Glorot, &mut rng),
        });
    let x = Array2::from_shape_fn((4, 2), |(i, j)| (i + 2 * j) as f64 - 2.0);
    let output = |net: &Sequential<f64>| {
        let tape = Tape::new();
        net.forward(tape.constant(&x)).unwrap().value()
    };
    let _ = output(&original); // the dropout draws a mask
    let mut copy = original.clone();
    assert_eq!(copy.len(), 3);
    let (a, b) = (original.parameters(), copy.parameters());
    assert_eq!(a.len(), b.len());
    for ((name_a, pa), (name_b, pb)) in a.iter().zip(&b) {
        assert_eq!((name_a, *pa), (name_b, *pb));
        assert_ne!(pa.as_ptr(), pb.as_ptr(), "{name_a} is shared");
    }
    // the copy's dropout goes on from the same generator state
    assert_eq!(output(&original), output(&copy));
    assert_eq!(output(&original), output(&copy));

    let grads = {
        let tape = Tape::new();
        let loss = copy.forward(tape.constant(&x)).unwrap().square().sum();
        tape.backward(loss).unwrap()
    };
    let before: Vec<Array2<f64>> = original
        .parameters()
        .into_iter()
        .map(|(_, p)| p.clone())
        .collect();
    Sgd::new(0.1).step(&mut copy, &grads).unwrap();
    let after: Vec<Array2<f64>> = original
        .parameters()
        .into_iter()
        .map(|(_, p)| p.clone())
        .collect();
    assert_eq!(before, after, "a step on the copy changed the original");
    assert_ne!(copy.parameters()[0].1, original.parameters()[0].1);

    let boxed: Box<dyn Module<f64>> = Box::new(Linear::<f64>::new(2, 2, Init::He, &mut rng));
    let twin = boxed.clone();
    assert_eq!(boxed.parameters()[0].1, twin.parameters()[0].1);
    assert_eq!(twin.name(), "Linear");
}
