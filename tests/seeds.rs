//! The seeds, executed: the textbook derivations (000 to 004) tapegrad was built to
//! reproduce, each with its formulas written out; the tape must give exactly the
//! gradients they give.

#[path = "../examples/common/mod.rs"]
mod common;

use ndarray::{Array2, array};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};
use tapegrad::{BackwardOptions, Tape};

fn max_abs_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    assert_eq!(a.dim(), b.dim());
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

fn sigmoid(x: &Array2<f64>) -> Array2<f64> {
    x.mapv(|v| 1.0 / (1.0 + (-v).exp()))
}

/// Seed 000: a linear layer `Y = X·W` on two data points, with `G = ∂L/∂Y` given.
/// Per weight, `∂G/∂w₁ = g₁x₁₁ + g₂x₂₁`, `∂G/∂w₂ = g₁x₁₂ + g₂x₂₂` (so `dW = Xᵀ·G`), and
/// `∂/∂xᵢⱼ = gᵢwⱼ` (so `dX = G·Wᵀ`), exactly.
#[test]
fn seed_000_linear_layer_on_two_points() {
    let (x11, x12, x21, x22) = (0.5, -1.25, 2.0, 0.75);
    let (w1, w2) = (1.5, -0.5);
    let (g1, g2) = (0.25, -2.0);
    let x = array![[x11, x12], [x21, x22]];
    let w = array![[w1], [w2]];
    let g = array![[g1], [g2]];

    let tape = Tape::new();
    let (xt, wt) = (tape.param(&x), tape.param(&w));
    let y = xt.matmul(wt);
    let grads = tape
        .backward_with(y, BackwardOptions::new().seed(g.clone()))
        .unwrap();

    let dw = grads.get(wt).unwrap();
    assert_eq!(dw, &array![[g1 * x11 + g2 * x21], [g1 * x12 + g2 * x22]]);
    assert_eq!(dw, &x.t().dot(&g));
    let dx = grads.get(xt).unwrap();
    assert_eq!(dx, &array![[g1 * w1, g1 * w2], [g2 * w1, g2 * w2]]);
    assert_eq!(dx, &g.dot(&w.t()));
}

/// Seeds 001 and 002: the 4-2-3 sigmoid network with mean squared error, on Iris.
///
/// With `L = Σ (O − Y)² / 2N` (N samples), the hand formulas of seed 001 are
/// `O_error = O − Y`, `O_delta = O_error ∘ O ∘ (1 − O)`, `H_error = O_delta·W2ᵀ`,
/// `H_delta = H_error ∘ H ∘ (1 − H)`, `W2update = Hᵀ·O_delta / N`,
/// `W1update = Xᵀ·H_delta / N`. The tape's loss is `mse_loss` (the mean over all N·3
/// elements) times 3/2, which is that `L`.
#[test]
fn seed_001_002_iris_network_matches_the_hand_formulas() {
    let data = common::iris().unwrap();
    let x = common::standardize(&data.x);
    let y = common::one_hot(&data.labels, 3);
    let n = x.nrows() as f64;
    let mut rng = StdRng::seed_from_u64(1);
    let normal = Normal::new(0.0, 0.5).unwrap();
    let w1 = Array2::from_shape_simple_fn((4, 2), || normal.sample(&mut rng));
    let w2 = Array2::from_shape_simple_fn((2, 3), || normal.sample(&mut rng));

    // Through the tape, keeping the gradients of the intermediate tensors.
    let tape = Tape::new();
    let (xt, yt) = (tape.constant(&x), tape.constant(&y));
    let (w1t, w2t) = (tape.param(&w1), tape.param(&w2));
    let h_in = xt.matmul(w1t);
    let h = h_in.sigmoid();
    let o_in = h.matmul(w2t);
    let o = o_in.sigmoid();
    let loss = o.mse_loss(yt).mul_scalar(1.5);
    let opts = BackwardOptions::new()
        .retain_grad(o)
        .retain_grad(o_in)
        .retain_grad(h)
        .retain_grad(h_in);
    let grads = tape.backward_with(loss, opts).unwrap();

    // By hand, in the seed's notation.
    let h_out = sigmoid(&x.dot(&w1));
    let o_out = sigmoid(&h_out.dot(&w2));
    let o_error = &o_out - &y;
    let o_delta = &o_error * &o_out * &(1.0 - &o_out);
    let h_error = o_delta.dot(&w2.t());
    let h_delta = &h_error * &h_out * &(1.0 - &h_out);
    let w2_update = h_out.t().dot(&o_delta) / n;
    let w1_update = x.t().dot(&h_delta) / n;

    let loss_by_hand = o_error.mapv(|e| e * e).sum() / (2.0 * n);
    assert!((loss.item() - loss_by_hand).abs() < 1e-12);
    let checks = [
        ("dL/dO = O_error / N", grads.get(o).unwrap(), &o_error / n),
        (
            "dL/dO_in = O_delta / N",
            grads.get(o_in).unwrap(),
            &o_delta / n,
        ),
        ("dL/dH = H_error / N", grads.get(h).unwrap(), &h_error / n),
        (
            "dL/dH_in = H_delta / N",
            grads.get(h_in).unwrap(),
            &h_delta / n,
        ),
        ("dL/dW2 = W2update", grads.get(w2t).unwrap(), w2_update),
        ("dL/dW1 = W1update", grads.get(w1t).unwrap(), w1_update),
    ];
    for (what, tape_grad, by_hand) in checks {
        let d = max_abs_diff(tape_grad, &by_hand);
        assert!(d <= 1e-12, "{what}: differs by {d:e}");
    }
}

/// Seed 003: a bias gradient is the sum over the batch of `∂L/∂a` (`∇b L = ∇a L` per
/// sample): the column sums of `O_delta / N` for the Iris network's output bias.
#[test]
fn seed_003_bias_gradients_are_column_sums() {
    let data = common::iris().unwrap();
    let x = common::standardize(&data.x);
    let y = common::one_hot(&data.labels, 3);
    let n = x.nrows() as f64;
    let w1 = array![[0.3, -0.2], [0.1, 0.5], [-0.4, 0.2], [0.25, -0.1]];
    let b1 = array![[0.1, -0.1]];
    let w2 = array![[0.5, -0.3, 0.2], [-0.6, 0.4, 0.1]];
    let b2 = array![[0.05, 0.0, -0.05]];

    let tape = Tape::new();
    let (xt, yt) = (tape.constant(&x), tape.constant(&y));
    let (w1t, b1t, w2t, b2t) = (
        tape.param(&w1),
        tape.param(&b1),
        tape.param(&w2),
        tape.param(&b2),
    );
    let a1 = xt.matmul(w1t).add_row(b1t);
    let a2 = a1.sigmoid().matmul(w2t).add_row(b2t);
    let loss = a2.sigmoid().mse_loss(yt).mul_scalar(1.5);
    let opts = BackwardOptions::new().retain_grad(a1).retain_grad(a2);
    let grads = tape.backward_with(loss, opts).unwrap();

    for (a, b) in [(a1, b1t), (a2, b2t)] {
        let column_sums = grads
            .get(a)
            .unwrap()
            .sum_axis(ndarray::Axis(0))
            .insert_axis(ndarray::Axis(0));
        assert!(max_abs_diff(grads.get(b).unwrap(), &column_sums) < 1e-15);
    }
    // and by hand, for the output layer
    let h = sigmoid(&(x.dot(&w1) + &b1));
    let o = sigmoid(&(h.dot(&w2) + &b2));
    let o_delta = (&o - &y) * &o * &(1.0 - &o);
    let db2 = o_delta
        .sum_axis(ndarray::Axis(0))
        .insert_axis(ndarray::Axis(0))
        / n;
    assert!(max_abs_diff(grads.get(b2t).unwrap(), &db2) < 1e-12);
}

/// Seed 004: `f = W3·σ(W2·σ(W1·x))` for a column `x`; the gradient with respect to `W1`
/// against central finite differences and against the chain rule written out:
/// `∂f/∂W1 = [(W2ᵀ·(W3ᵀ ∘ h2 ∘ (1 − h2))) ∘ h1 ∘ (1 − h1)]·xᵀ`.
#[test]
fn seed_004_three_layer_gradient_wrt_first_weights() {
    let x = array![[0.8], [-1.3]];
    let w1 = array![[0.4, -0.7], [1.1, 0.3]];
    let w2 = array![[-0.5, 0.9], [0.6, -1.2]];
    let w3 = array![[1.5, -0.8]];
    let f = |w1: &Array2<f64>| w3.dot(&sigmoid(&w2.dot(&sigmoid(&w1.dot(&x)))))[[0, 0]];

    let tape = Tape::new();
    let w1t = tape.param(&w1);
    let (w2t, w3t, xt) = (tape.constant(&w2), tape.constant(&w3), tape.constant(&x));
    let out = w3t.matmul(w2t.matmul(w1t.matmul(xt).sigmoid()).sigmoid());
    assert!((out.item() - f(&w1)).abs() < 1e-15);
    let grads = tape.backward(out).unwrap();
    let dw1 = grads.get(w1t).unwrap();

    let eps = 1e-6;
    let mut numeric = Array2::zeros((2, 2));
    for ((i, j), d) in numeric.indexed_iter_mut() {
        let (mut plus, mut minus) = (w1.clone(), w1.clone());
        plus[[i, j]] += eps;
        minus[[i, j]] -= eps;
        *d = (f(&plus) - f(&minus)) / (2.0 * eps);
    }
    assert!(max_abs_diff(dw1, &numeric) < 1e-9, "{dw1} vs {numeric}");

    let h1 = sigmoid(&w1.dot(&x));
    let h2 = sigmoid(&w2.dot(&h1));
    let d2 = w3.t().to_owned() * &h2 * &(1.0 - &h2);
    let d1 = w2.t().dot(&d2) * &h1 * &(1.0 - &h1);
    let by_hand = d1.dot(&x.t());
    assert!(max_abs_diff(dw1, &by_hand) < 1e-15, "{dw1} vs {by_hand}");
}
