//! Data parallelism in one process (`tapegrad::parallel`) and the `Gradients` arithmetic
//! it rests on: the sharded gradient equals the one-tape gradient of the whole batch to
//! 1e-12 in f64, for any number of shards, and is bitwise the same from run to run and
//! whatever the number of threads.

use ndarray::{Array2, array, s};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};
use tapegrad::nn::{Linear, Module, Parameters, Sequential, Tanh};
use tapegrad::parallel::DataParallel;
use tapegrad::{BackwardOptions, ErrorKind, Gradients, Tape};

fn normal(shape: (usize, usize), rng: &mut StdRng) -> Array2<f64> {
    Array2::from_shape_simple_fn(shape, || StandardNormal.sample(rng))
}

/// A 5-8-3 tanh network, 37 rows of data (not a multiple of any shard count tried).
fn setup() -> (Sequential<f64>, Array2<f64>, Array2<f64>) {
    let mut rng = StdRng::seed_from_u64(5);
    let mut model = Sequential::new();
    model.push(Linear {
        weight: normal((5, 8), &mut rng) * 0.5,
        bias: Some(normal((1, 8), &mut rng) * 0.1),
    });
    model.push(Tanh);
    model.push(Linear {
        weight: normal((8, 3), &mut rng) * 0.5,
        bias: Some(normal((1, 3), &mut rng) * 0.1),
    });
    (model, normal((37, 5), &mut rng), normal((37, 3), &mut rng))
}

fn full_batch(model: &Sequential<f64>, x: &Array2<f64>, y: &Array2<f64>) -> (f64, Gradients<f64>) {
    let tape = Tape::new();
    let loss = model
        .forward(tape.constant(x))
        .unwrap()
        .mse_loss(tape.constant(y));
    (loss.item(), tape.backward(loss).unwrap())
}

fn sharded(
    dp: &mut DataParallel<f64>,
    model: &Sequential<f64>,
    x: &Array2<f64>,
    y: &Array2<f64>,
) -> (f64, Vec<Array2<f64>>) {
    let (loss, grads) = dp
        .step(x.nrows(), |rows, reuse| {
            let tape = Tape::new();
            let out = model.forward(tape.constant(x.slice(s![rows.clone(), ..])))?;
            let loss = out.mse_loss(tape.constant(y.slice(s![rows, ..])));
            let opts = BackwardOptions::new().reuse(reuse);
            Ok((loss.item(), tape.backward_with(loss, opts)?))
        })
        .unwrap();
    let mut out = Vec::new();
    model.visit(&mut |_, p| out.push(grads.wrt(p).unwrap().clone()));
    (loss, out)
}

#[test]
fn sharded_gradients_equal_the_full_batch_gradient() {
    let (model, x, y) = setup();
    let (full_loss, full) = full_batch(&model, &x, &y);
    let mut expected = Vec::new();
    model.visit(&mut |_, p| expected.push(full.wrt(p).unwrap().clone()));
    for shards in [1, 2, 3, 4, 5, 37, 40] {
        let mut dp = DataParallel::new(shards);
        // twice: the second step reuses every buffer
        for _ in 0..2 {
            let (loss, grads) = sharded(&mut dp, &model, &x, &y);
            assert!(
                (loss - full_loss).abs() <= 1e-12 * full_loss,
                "{shards} shards: loss"
            );
            for (g, e) in grads.iter().zip(&expected) {
                let scale = e.iter().fold(0f64, |m, v| m.max(v.abs()));
                let worst = g.iter().zip(e).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
                assert!(
                    worst <= 1e-12 * scale,
                    "{shards} shards: off by {worst} (scale {scale})"
                );
            }
        }
    }
}

#[test]
fn sharded_gradients_are_bitwise_reproducible_whatever_the_thread_count() {
    let (model, x, y) = setup();
    let bits = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut dp = DataParallel::new(3);
            let (loss, grads) = sharded(&mut dp, &model, &x, &y);
            let mut all = vec![loss.to_bits()];
            all.extend(grads.iter().flatten().map(|v| v.to_bits()));
            all
        })
    };
    let reference = bits(1);
    for threads in [1, 2, 3, 4] {
        for _ in 0..3 {
            assert_eq!(bits(threads), reference, "{threads} threads");
        }
    }
}

#[test]
fn shard_errors_come_back_in_shard_order() {
    let mut dp = DataParallel::<f64>::new(3);
    let e = dp
        .step(9, |rows, _| {
            let tape = Tape::new();
            let x = tape.param(Array2::ones((rows.len(), 2)));
            if rows.start > 0 {
                // shards 1 and 2 fail, with different shapes: shard 1's error is returned
                return Err(x
                    .try_matmul(tape.constant(Array2::ones((rows.start, 1))))
                    .unwrap_err());
            }
            Ok((0.0, tape.backward(x.sum())?))
        })
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Shape { rhs: (3, 1), .. }),
        "{e}"
    );
}

#[test]
fn gradients_add_scale_and_expose_their_buffers() {
    let (w, v) = (array![[1.0, 2.0]], array![[3.0], [4.0]]);
    let grads = |s: f64| {
        let tape = Tape::new();
        let (wt, vt) = (tape.param(&w), tape.param(&v));
        tape.backward(wt.matmul(vt).sum().mul_scalar(s)).unwrap()
    };
    let mut g = grads(1.0); // dw = vᵀ, dv = wᵀ
    g.add_scaled(2.0, &grads(0.5)).unwrap();
    assert_eq!(g.wrt(&w).unwrap(), &array![[6.0, 8.0]]);
    assert_eq!(g.wrt(&v).unwrap(), &array![[2.0], [4.0]]);
    g.scale(0.5);
    assert_eq!(g.wrt(&w).unwrap(), &array![[3.0, 4.0]]);
    g.assign_scaled(-1.0, &grads(1.0)).unwrap();
    assert_eq!(g.wrt(&v).unwrap(), &array![[-1.0], [-2.0]]);
    for b in g.params_mut() {
        b.fill(7.0);
    }
    assert_eq!(g.wrt(&w).unwrap(), &array![[7.0, 7.0]]);
    assert_eq!(g.params_mut().count(), 2);
}

#[test]
fn a_transposed_parameter_is_found_scaled_by_either_array() {
    let w = array![[1.0, 2.0], [3.0, 4.0]];
    let wt_owned = w.t().as_standard_layout().into_owned();
    let tape = Tape::new();
    // the transposed view on the tape: `wrt(&w)` finds a copy
    let loss = tape.param(w.t()).square().sum();
    let mut g = tape.backward(loss).unwrap();
    g.scale(0.5);
    assert_eq!(g.wrt(&w.t()).unwrap(), &wt_owned);
    assert_eq!(g.wrt(&w).unwrap(), &w);
}

#[test]
fn gradients_of_other_parameters_do_not_combine() {
    let (w, u) = (array![[1.0, 2.0]], array![[1.0, 2.0]]);
    let of = |p: &Array2<f64>| {
        let tape = Tape::new();
        tape.backward(tape.param(p).sum()).unwrap()
    };
    let mut g = of(&w);
    let e = g.add_scaled(1.0, &of(&u)).unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Unmatched { shape: (1, 2) });
    assert_eq!(
        g.wrt(&w).unwrap(),
        &array![[1.0, 1.0]],
        "unchanged after the error"
    );
    // a retained intermediate has no array to be matched by
    let tape = Tape::new();
    let h = tape.param(&w).mul_scalar(2.0);
    let r = tape
        .backward_with(h.sum(), BackwardOptions::new().retain_grad(h))
        .unwrap();
    assert!(matches!(
        g.add_scaled(1.0, &r).unwrap_err().kind(),
        ErrorKind::Unmatched { .. }
    ));
}

#[test]
fn an_empty_batch_is_an_error_even_after_a_step() {
    let (model, x, y) = setup();
    let mut dp = DataParallel::new(2);
    sharded(&mut dp, &model, &x, &y);
    let e = dp
        .step(0, |_, _| unreachable!("no shard has rows"))
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Empty { .. }), "{e}");
}
