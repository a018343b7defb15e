//! The layers of issue 10: the fused layer norm against its composition, attention
//! against finite differences and against attending sequence by sequence, embeddings and
//! dropout in training and evaluation.

use crate::common;

use common::close;

use ndarray::{Array2, Axis, array};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};
use tapegrad::check::{CheckOptions, gradcheck, gradgradcheck};
use tapegrad::nn::{
    Dropout, Embedding, Init, LayerNorm, Linear, Module, MultiHeadAttention, Parameters,
    SelfAttention, Sequential,
};
use tapegrad::{Tape, Tensor};

fn normal(shape: (usize, usize), seed: u64) -> Array2<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    Array2::from_shape_simple_fn(shape, || StandardNormal.sample(&mut rng))
}

/// Layer norm written with seven ops: the composition the fused op replaces.
fn composed<'t>(
    x: Tensor<'t, f64>,
    gamma: Tensor<'t, f64>,
    beta: Tensor<'t, f64>,
    eps: f64,
) -> Tensor<'t, f64> {
    let centred = x.sub(x.mean_axis(Axis(1)));
    let var = centred.square().mean_axis(Axis(1));
    centred.div(var.add_scalar(eps).sqrt()).mul(gamma).add(beta)
}

#[test]
fn the_fused_layer_norm_equals_its_composition_in_value_and_gradients() {
    let (x, gamma, beta) = (normal((5, 7), 1), normal((1, 7), 2), normal((1, 7), 3));
    let g = normal((5, 7), 4);
    let run = |fused: bool| {
        let tape = Tape::new();
        let (xt, gt, bt) = (tape.param(&x), tape.param(&gamma), tape.param(&beta));
        let y = if fused {
            xt.layer_norm(gt, bt, 1e-5)
        } else {
            composed(xt, gt, bt, 1e-5)
        };
        let value = y.value();
        let grads = tape.backward(y.mul(tape.constant(&g)).sum()).unwrap();
        let d = [xt, gt, bt].map(|t| grads.get(t).unwrap().clone());
        (value, d)
    };
    let ((yf, df), (yc, dc)) = (run(true), run(false));
    assert!(close(&yf, &yc, 1e-12));
    for (a, b) in df.iter().zip(&dc) {
        assert!(close(a, b, 1e-11), "{a} vs {b}");
    }
    // and the fused op's second derivatives against finite differences
    fn f<'t>(p: &[Tensor<'t, f64>]) -> Tensor<'t, f64> {
        p[0].layer_norm(p[1], p[2], 1e-5).sigmoid().sum()
    }
    let opts = CheckOptions::default();
    gradgradcheck(|xs| f(&xs), &[x.view(), gamma.view(), beta.view()], &opts).unwrap();
    // the layer is the op with γ = 1, β = 0 to start
    let layer = LayerNorm::<f64>::new(7);
    let tape = Tape::new();
    let y = layer.forward(tape.constant(&x)).unwrap();
    let plain = {
        let t2 = Tape::new();
        t2.constant(&x)
            .layer_norm(
                t2.constant(Array2::ones((1, 7))),
                t2.constant(Array2::zeros((1, 7))),
                1e-5,
            )
            .value()
    };
    assert_eq!(y.value(), plain);
}

/// `f(w) = ⟨attention(x), c⟩` by central differences in every weight of `layer`.
fn numeric_gradients(
    layer: &MultiHeadAttention<f64>,
    x: &Array2<f64>,
    c: &Array2<f64>,
) -> Vec<Array2<f64>> {
    let value = |l: &MultiHeadAttention<f64>| {
        let tape = Tape::new();
        (l.forward(tape.constant(x)).unwrap().value() * c).sum()
    };
    let nudge = |l: &mut MultiHeadAttention<f64>, p: usize, idx: (usize, usize), delta: f64| {
        let mut k = 0;
        l.visit_mut(&mut |_, a| {
            if k == p {
                a[idx] += delta;
            }
            k += 1;
        });
    };
    let mut out = Vec::new();
    for (p, (_, a)) in layer.parameters().into_iter().enumerate() {
        let mut l = layer.clone();
        let mut g = Array2::zeros(a.dim());
        for idx in ndarray::indices(a.dim()) {
            nudge(&mut l, p, idx, 1e-6);
            let plus = value(&l);
            nudge(&mut l, p, idx, -2e-6);
            let minus = value(&l);
            nudge(&mut l, p, idx, 1e-6);
            g[idx] = (plus - minus) / 2e-6;
        }
        out.push(g);
    }
    out
}

#[test]
fn multi_head_attention_has_the_gradients_of_finite_differences() {
    let mut rng = StdRng::seed_from_u64(5);
    let layer = MultiHeadAttention::<f64>::new(6, 2, &mut rng);
    let (x, c) = (normal((4, 6), 6), normal((4, 6), 7));
    let tape = Tape::new();
    let y = layer.forward(tape.constant(&x)).unwrap();
    let grads = tape.backward(y.mul(tape.constant(&c)).sum()).unwrap();
    let numeric = numeric_gradients(&layer, &x, &c);
    for ((name, p), n) in layer.parameters().into_iter().zip(&numeric) {
        let g = grads.try_wrt(p).unwrap();
        assert!(close(g, n, 1e-6), "{name}: {g} vs {n}");
    }
    // with respect to the tokens, to second order (the checked function runs on tapes of
    // any lifetime, so the layer it borrows must outlive them all: a static)
    static LAYER: std::sync::OnceLock<MultiHeadAttention<f64>> = std::sync::OnceLock::new();
    fn f<'t>(xs: &[Tensor<'t, f64>]) -> Tensor<'t, f64> {
        LAYER.get().unwrap().forward(xs[0]).unwrap().tanh().sum()
    }
    LAYER.set(layer).unwrap();
    gradcheck(|xs| f(&xs), &[x.view()], &CheckOptions::default()).unwrap();
    gradgradcheck(|xs| f(&xs), &[x.view()], &CheckOptions::default()).unwrap();
}

#[test]
fn attending_to_stacked_sequences_is_attending_to_each() {
    let mut rng = StdRng::seed_from_u64(8);
    let layer = MultiHeadAttention::<f64>::new(8, 4, &mut rng);
    let x = normal((15, 8), 9); // three sequences of five tokens
    let tape = Tape::new();
    let all = layer.attend(tape.constant(&x), 5).unwrap().value();
    for s in 0..3 {
        let one = layer
            .forward(tape.constant(x.slice(ndarray::s![5 * s..5 * s + 5, ..])))
            .unwrap();
        let part = all.slice(ndarray::s![5 * s..5 * s + 5, ..]).to_owned();
        assert!(close(&one.value(), &part, 1e-13));
    }
    assert!(
        layer.attend(tape.constant(&x), 4).is_err(),
        "15 rows are not sequences of 4"
    );
}

#[test]
fn single_head_attention_is_softmax_of_scaled_scores_times_values() {
    let mut rng = StdRng::seed_from_u64(10);
    let layer = SelfAttention::<f64>::new(3, 2, &mut rng);
    let x = normal((4, 3), 11);
    let tape = Tape::new();
    let y = layer.forward(tape.constant(&x)).unwrap().value();
    // by hand with ndarray
    let proj = |l: &Linear<f64>| x.dot(&l.weight) + l.bias.as_ref().unwrap();
    let (q, k, v) = (proj(&layer.0.q), proj(&layer.0.k), proj(&layer.0.v));
    let mut s = q.dot(&k.t()) / 2f64.sqrt();
    for mut row in s.rows_mut() {
        let m = row.fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        row.mapv_inplace(|v| (v - m).exp());
        let total = row.sum();
        row /= total;
    }
    let out = s.dot(&v).dot(&layer.0.o.weight) + layer.0.o.bias.as_ref().unwrap();
    assert!(close(&y, &out, 1e-13));
    let names: Vec<String> = layer.parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "q.weight", "q.bias", "k.weight", "k.bias", "v.weight", "v.bias", "o.weight", "o.bias"
        ]
    );
}

#[test]
fn embeddings_sum_the_gradients_of_repeated_rows() {
    let mut rng = StdRng::seed_from_u64(12);
    let table = Embedding::<f64>::new(5, 3, &mut rng);
    let tape = Tape::new();
    let rows = table.lookup(&tape, &[4, 0, 4, 4]).unwrap();
    assert_eq!(rows.value().row(0), table.weight.row(4));
    let grads = tape.backward(rows.sum()).unwrap();
    let g = grads.wrt(&table.weight).unwrap();
    assert_eq!(g.column(0).to_vec(), vec![1.0, 0.0, 0.0, 0.0, 3.0]);
    assert!(table.lookup(&tape, &[5]).is_err());
}

#[test]
fn dropout_drops_in_training_only_and_sequential_passes_the_switch_on() {
    let x = Array2::<f64>::ones((20, 20));
    let mut net = Sequential::new()
        .with(Linear {
            weight: Array2::eye(20),
            bias: None,
        })
        .with(Dropout::new(0.25, 3));
    let dropped = |net: &Sequential<f64>| {
        let tape = Tape::new();
        net.forward(tape.constant(&x))
            .unwrap()
            .value()
            .iter()
            .filter(|&&v| v == 0.0)
            .count()
    };
    let (first, second) = (dropped(&net), dropped(&net));
    assert!(
        first > 50 && first < 150,
        "{first} of 400 dropped at p = 0.25"
    );
    assert_ne!(first, second, "a new mask each step");
    net.set_training(false);
    assert_eq!(dropped(&net), 0);
    net.set_training(true);
    assert!(dropped(&net) > 0);
    // the same seed gives the same masks
    let again = Sequential::new()
        .with(Linear {
            weight: Array2::eye(20),
            bias: None,
        })
        .with(Dropout::new(0.25, 3));
    assert_eq!(dropped(&again), first);
    let _ = Linear::<f64>::new(2, 2, Init::He, &mut StdRng::seed_from_u64(0));
    let _ = array![[0.0]];
}
