//! The engine's promises: sums over fan-out, no work for constants, release of the graph,
//! retain_graph, no_grad, detach, gradient look-up, f32 and f64.

use ndarray::{Array2, array};
use tapegrad::{BackwardOptions, ErrorKind, Tape, Tensor};

fn close(a: &Array2<f64>, b: &Array2<f64>, tol: f64) -> bool {
    a.dim() == b.dim() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
}

#[test]
fn a_value_used_several_times_receives_the_sum_of_all_paths() {
    // L = Σ x∘x + Σ 2x + Σ σ(x)  ⇒  dL/dx = 2x + 2 + σ(x)(1 − σ(x))
    let x: Array2<f64> = array![[0.5, -1.5], [2.0, 0.25]];
    let tape = Tape::new();
    let xt = tape.param(&x);
    let loss = xt
        .mul(xt)
        .sum()
        .add(xt.mul_scalar(2.0).sum())
        .add(xt.sigmoid().sum());
    let grads = tape.backward(loss).unwrap();
    let s = x.mapv(|v| 1.0 / (1.0 + (-v).exp()));
    let expected = &x * 2.0 + 2.0 + &s * &(1.0 - &s);
    assert!(close(grads.get(xt).unwrap(), &expected, 1e-15));
}

#[test]
fn constants_record_no_rule_and_save_nothing() {
    let tape = Tape::<f64>::new();
    let x = tape.constant(Array2::ones((4, 3)));
    let w = tape.param(Array2::ones((3, 2)));
    let h = x.sigmoid().exp().sum_axis(ndarray::Axis(0));
    assert!(!h.requires_grad());
    assert_eq!(tape.stats().rules, 0);
    let y = x.matmul(w).sigmoid();
    assert!(y.requires_grad());
    assert_eq!(tape.stats().rules, 2);
    let grads = tape.backward(y.sum()).unwrap();
    assert_eq!(grads.len(), 1, "only the parameter has a gradient");
    assert!(grads.get(x).is_none());
}

#[test]
fn backward_releases_the_graph_unless_retained() {
    let w = array![[0.1, 0.2], [0.3, 0.4]];
    let x = array![[1.0, 2.0], [3.0, 4.0]];

    let tape = Tape::new();
    let (wt, xt) = (tape.param(&w), tape.param(x.clone()));
    let h = xt.matmul(wt).sigmoid();
    let loss = h.square().mean();
    let before = tape.stats();
    assert_eq!(before.rules, 4);
    let grads = tape.backward(loss).unwrap();
    let after = tape.stats();
    assert_eq!(after.rules, 0, "every rule is dropped once run");
    // the owned leaf x and the root stay; matmul, sigmoid and square results are released
    assert_eq!(after.owned_values, 2);
    assert_eq!(after.owned_bytes, (4 + 1) * 8);
    assert!(h.try_value().is_err());
    assert_eq!(xt.value(), x);
    assert!(matches!(
        tape.backward(loss).unwrap_err().kind(),
        ErrorKind::BackwardTwice { .. }
    ));

    // retained: everything stays and a second pass gives the same gradients
    let tape = Tape::new();
    let (wt, xt) = (tape.param(&w), tape.param(x.clone()));
    let h = xt.matmul(wt).sigmoid();
    let loss = h.square().mean();
    let first = tape
        .backward_with(loss, BackwardOptions::new().retain_graph(true))
        .unwrap();
    assert_eq!(tape.stats(), before);
    assert!(h.try_value().is_ok());
    let second = tape.backward(loss).unwrap();
    assert_eq!(first.get(wt), second.get(wt));
    assert_eq!(first.get(wt), grads.wrt(&w));
}

#[test]
fn no_grad_records_without_rules_and_restores_recording() {
    let w: Array2<f64> = array![[1.0, -2.0]];
    let tape = Tape::new();
    let wt = tape.param(&w);
    let (y, inner_param) = tape.no_grad(|| (wt.square().exp(), tape.param(&w)));
    assert!(!y.requires_grad() && !inner_param.requires_grad());
    assert_eq!(tape.stats().rules, 0);
    assert!(tape.is_grad_enabled());
    let z = wt.square();
    assert!(z.requires_grad());
    // a no-grad value used later is a constant: the gradient flows only through z
    let grads = tape.backward(z.mul(y).sum()).unwrap();
    let expected = &w.mapv(|v| (v * v).exp()) * &(&w * 2.0);
    assert!(close(grads.get(wt).unwrap(), &expected, 1e-12));
}

#[test]
fn detach_cuts_the_graph_and_shares_storage() {
    let tape = Tape::new();
    let x = tape.param(array![[2.0, 3.0]]);
    let h = x.square();
    let d = h.detach();
    assert_eq!(d.value(), array![[4.0, 9.0]]);
    assert!(!d.requires_grad());
    let owned = tape.stats().owned_values;
    let _ = h.detach().t().detach();
    assert_eq!(
        tape.stats().owned_values,
        owned,
        "detach and t copy nothing"
    );
    // L = Σ h + Σ d  ⇒  dL/dx = 2x (through h only)
    let grads = tape.backward(h.sum().add(d.sum())).unwrap();
    assert_eq!(grads.get(x).unwrap(), &array![[4.0, 6.0]]);
    assert!(grads.get(d).is_none());
}

#[test]
fn unreached_parameters_get_zero_gradients_and_wrt_finds_borrowed_ones() {
    let (a, b) = (array![[1.0, 2.0]], array![[3.0], [4.0]]);
    let tape = Tape::new();
    let (at, bt) = (tape.param(&a), tape.param(&b));
    let grads = tape.backward(at.sum()).unwrap();
    assert_eq!(grads.get(bt).unwrap(), &Array2::<f64>::zeros((2, 1)));
    assert_eq!(grads.wrt(&b).unwrap(), &Array2::<f64>::zeros((2, 1)));
    assert_eq!(grads.wrt(&a).unwrap(), &array![[1.0, 1.0]]);
    // a different array with equal contents is not a parameter
    assert!(grads.wrt(&a.clone()).is_none());
    // a view of the same storage with other strides is not the same parameter
    assert!(grads.wrt(&b.t()).is_none());
}

#[test]
fn a_parameter_given_as_a_transposed_view_gets_its_gradient_in_that_shape() {
    let storage = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]];
    let tape = Tape::new();
    let w = tape.param(storage.t()); // 3 × 2
    let x = tape.constant(array![[1.0, 1.0, 1.0]]);
    let grads = tape.backward(x.matmul(w).sum()).unwrap();
    assert_eq!(
        grads.get(w).unwrap(),
        &array![[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]
    );
    assert!(grads.wrt(&storage.t()).is_some());
}

#[test]
fn f32_and_f64_tapes_agree() {
    let x = array![[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]];
    let w = array![[0.3, -0.2], [0.1, 0.4], [-0.5, 0.6]];
    let run64 = {
        let tape = Tape::<f64>::new();
        let wt = tape.param(&w);
        let loss = tape
            .constant(&x)
            .matmul(wt)
            .tanh()
            .softmax_cross_entropy_indices(&[1, 0]);
        tape.backward(loss).unwrap().get(wt).unwrap().clone()
    };
    let (x32, w32) = (x.mapv(|v| v as f32), w.mapv(|v| v as f32));
    let tape = Tape::<f32>::new();
    let wt = tape.param(&w32);
    let loss = tape
        .constant(&x32)
        .matmul(wt)
        .tanh()
        .softmax_cross_entropy_indices(&[1, 0]);
    let run32 = tape
        .backward(loss)
        .unwrap()
        .get(wt)
        .unwrap()
        .mapv(f64::from);
    assert!(close(&run32, &run64, 1e-6));
}

#[test]
fn a_one_dimensional_bias_goes_on_the_tape_as_a_row() {
    let b = ndarray::arr1(&[1.0, 2.0, 3.0]);
    let tape = Tape::new();
    let bt = tape.param(&b);
    assert_eq!(bt.shape(), (1, 3));
    let y = tape.constant(Array2::<f64>::zeros((2, 3))).add_row(bt);
    let grads = tape.backward(y.sum()).unwrap();
    assert_eq!(grads.get(bt).unwrap(), &array![[2.0, 2.0, 2.0]]);
}

#[test]
fn gradients_outlive_the_tape_and_are_send_and_sync() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    let w = array![[1.0f32]];
    let grads = {
        let tape = Tape::new();
        let wt = tape.param(&w);
        tape.backward(wt.exp()).unwrap()
    };
    send_sync(&grads);
    assert_eq!(grads.wrt(&w).unwrap()[[0, 0]], 1f32.exp());
}

#[test]
fn reused_gradient_buffers_are_overwritten_in_place() {
    let w = array![[0.5, -1.0], [2.0, 0.25], [1.0, 1.0]];
    let b = array![[0.1, 0.2]];
    let unused = array![[7.0]];
    let x = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]];
    let step = |previous: Option<tapegrad::Gradients<f64>>, scale: f64| {
        let tape = Tape::new();
        let (wt, bt, _) = (tape.param(&w), tape.param(&b), tape.param(&unused));
        let loss = tape
            .constant(&x)
            .matmul(wt)
            .add_row(bt)
            .tanh()
            .sum()
            .mul_scalar(scale);
        let opts = match previous {
            Some(p) => BackwardOptions::new().reuse(p),
            None => BackwardOptions::new(),
        };
        tape.backward_with(loss, opts).unwrap()
    };
    let first = step(None, 1.0);
    let (dw_ptr, expected_dw) = (
        first.wrt(&w).unwrap().as_ptr(),
        first.wrt(&w).unwrap() * 3.0,
    );
    let expected_db = first.wrt(&b).unwrap() * 3.0;
    let unused_ptr = first.wrt(&unused).unwrap().as_ptr();
    // A different loss: the buffers are overwritten (not added to) with the new gradients.
    let second = step(Some(first), 3.0);
    assert_eq!(
        second.wrt(&w).unwrap().as_ptr(),
        dw_ptr,
        "dW was written into last step's buffer"
    );
    assert!(close(second.wrt(&w).unwrap(), &expected_dw, 1e-12));
    assert!(close(second.wrt(&b).unwrap(), &expected_db, 1e-12));
    assert_eq!(second.wrt(&unused).unwrap().as_ptr(), unused_ptr);
    assert_eq!(second.wrt(&unused).unwrap(), &array![[0.0]]);
}

#[test]
fn buffers_of_other_parameters_are_not_reused() {
    let (w, v) = (array![[1.0, 2.0]], array![[1.0, 2.0, 3.0]]);
    let first = {
        let tape = Tape::new();
        let wt = tape.param(&w);
        tape.backward(wt.square().sum()).unwrap()
    };
    let tape = Tape::new();
    let vt = tape.param(&v);
    let grads = tape
        .backward_with(vt.sum(), BackwardOptions::new().reuse(first))
        .unwrap();
    assert_eq!(grads.get(vt).unwrap(), &array![[1.0, 1.0, 1.0]]);
    assert!(grads.wrt(&w).is_none());
}

/// A custom op whose VJP panics.
struct Bomb;

impl tapegrad::custom::CustomOp<f64> for Bomb {
    fn name(&self) -> &'static str {
        "bomb"
    }
    fn output_shape(&self, s: &[(usize, usize)]) -> Result<(usize, usize), &'static str> {
        Ok(s[0])
    }
    fn forward(&self, x: &[ndarray::ArrayView2<'_, f64>]) -> Array2<f64> {
        x[0].to_owned()
    }
    fn vjp(
        &self,
        _: ndarray::ArrayView2<'_, f64>,
        _: &tapegrad::custom::Saved<'_, f64>,
        _: &mut tapegrad::custom::Grads<'_, f64>,
    ) {
        panic!("the user's VJP panics");
    }
}

/// Issue 19, item 3: a rule that panics during backward takes the pass down with it (the
/// panic reaches the caller); the tape then refuses a second pass with a typed error,
/// instead of running it over dropped rules and returning zeros. Both for a custom VJP and
/// for a rematerialised block that panics when it runs again.
#[test]
fn backward_after_a_panicking_rule_is_an_error_not_zeros() {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    let w = array![[1.0, 2.0], [3.0, 4.0]];
    let tape = Tape::new();
    let wt = tape.param(&w);
    let loss = tapegrad::custom::apply(Bomb, &[wt.square()]).sum();
    assert!(catch_unwind(AssertUnwindSafe(|| tape.backward(loss))).is_err());
    let again = tape.backward(loss);
    assert!(
        matches!(
            again.as_ref().map(|_| ()).unwrap_err().kind(),
            ErrorKind::Interrupted { .. }
        ),
        "{again:?}"
    );
    assert!(tape.grad(loss, &[wt]).is_err());

    // the block borrows its counter (declared before the tape, so it outlives it)
    let calls = std::cell::Cell::new(0);
    let tape = Tape::new();
    let wt = tape.param(&w);
    let loss = tape
        .remat(&[wt], |x| {
            calls.set(calls.get() + 1);
            assert!(calls.get() < 2, "the block panics when it runs again");
            Ok(x[0].tanh())
        })
        .unwrap()
        .sum();
    assert!(catch_unwind(AssertUnwindSafe(|| tape.backward(loss))).is_err());
    assert!(tape.backward(loss).is_err());
}

/// Tapes recycle their lists and buffers through the thread's pool, whose buffers come
/// back holding whatever their last user left. A step that ends in an error (in the
/// forward or in backward) or in a panic inside a rule (caught) leaves nothing stale
/// behind: the next step's loss and gradients are bitwise those of the same step run on
/// an empty pool.
#[test]
fn a_step_after_an_error_or_a_panic_in_a_rule_gives_the_same_gradients() {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use tapegrad::pool;

    let x = Array2::from_shape_fn((6, 4), |(i, j)| ((i * 4 + j) as f64 * 0.37).sin());
    let y = Array2::from_shape_fn((6, 3), |(i, j)| ((i + 2 * j) as f64 * 0.21).cos());
    let w1 = Array2::from_shape_fn((4, 5), |(i, j)| ((i * 5 + j) as f64 * 0.13).cos());
    let b1 = Array2::from_shape_fn((1, 5), |(_, j)| j as f64 * 0.1 - 0.2);
    let w2 = Array2::from_shape_fn((5, 3), |(i, j)| ((i * 3 + j) as f64 * 0.29).sin());
    let step = || {
        let tape = Tape::new();
        let (w1t, b1t, w2t) = (tape.param(&w1), tape.param(&b1), tape.param(&w2));
        let h = tape.constant(&x).linear(w1t, b1t).tanh();
        let loss = h.matmul(w2t).sigmoid().mse_loss(tape.constant(&y));
        let grads = tape.backward(loss).unwrap();
        let value = loss.item();
        // the loss and every gradient element, as bits
        let bits: Vec<u64> = [w1t, b1t, w2t]
            .iter()
            .flat_map(|&p| grads.get(p).unwrap().iter().map(|v| v.to_bits()))
            .collect();
        (value.to_bits(), bits)
    };
    pool::trim();
    let reference = step();

    // an error in the forward, after values were recorded
    {
        let tape = Tape::new();
        let h = tape.param(&x).tanh().mul_scalar(3.0);
        assert!(h.try_matmul(tape.param(&y)).is_err());
    }
    assert_eq!(step(), reference, "after a forward error");
    // an error in backward: a root that is not a scalar
    {
        let tape = Tape::new();
        let h = tape.param(&x).sigmoid().mul_scalar(7.0);
        assert!(tape.backward(h).is_err());
    }
    assert_eq!(step(), reference, "after a backward error");
    // a panic in a rule during backward (a remat block that panics when run again)
    {
        let calls = std::cell::Cell::new(0);
        let tape = Tape::new();
        let wt = tape.param(&w1);
        let h = tape.constant(&x).matmul(wt).exp();
        let loss = tape
            .remat(&[h], |v| {
                calls.set(calls.get() + 1);
                assert!(calls.get() < 2, "the block panics when it runs again");
                Ok(v[0].tanh().mul_scalar(5.0))
            })
            .unwrap()
            .sum();
        assert!(catch_unwind(AssertUnwindSafe(|| tape.backward(loss))).is_err());
        assert_eq!(calls.get(), 2);
    }
    assert_eq!(step(), reference, "after a panic in a rule");
    pool::trim();
}

/// `where_` selects its gradient: the side not taken gets exactly 0, also where the
/// gradient that reaches the choice is infinite (`sqrt` at 0 of the side taken), in
/// backward and in the recorded rule (`Tape::grad`). (The mask was a multiplier: ∞·0 =
/// NaN in the gradient of the input not taken.)
#[test]
fn where_gives_the_side_not_taken_zero_even_past_an_infinite_gradient() {
    let tape = Tape::new();
    let a = tape.param(array![[4.0, 9.0]]);
    let b = tape.param(array![[0.0, 1.0]]);
    let mask = array![[false, true]];
    let loss = Tensor::where_(mask.view(), a, b).sqrt().sum();
    let recorded = tape.grad(loss, &[a, b]).unwrap();
    let (ra, rb) = (recorded[0].value(), recorded[1].value());
    let grads = tape.backward(loss).unwrap();
    for (ga, gb) in [
        (grads.get(a).unwrap().clone(), grads.get(b).unwrap().clone()),
        (ra, rb),
    ] {
        // a: only its second element is taken, d√9 = 1/6; b: its first, d√0 = ∞
        assert_eq!(ga, array![[0.0, 1.0 / 6.0]]);
        assert_eq!(gb, array![[f64::INFINITY, 0.0]]);
    }
}
