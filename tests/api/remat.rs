//! Gradient checkpointing (`Tape::remat`) beyond the table-driven gradchecks: errors, a
//! block whose input was released, a parameter shared by blocks, and second derivatives
//! through blocks against the plain recording.

use ndarray::{Array2, array};
use tapegrad::{BackwardOptions, ErrorKind, Result, Tape, Tensor};

fn block<'s>(xs: &[Tensor<'s, f64>]) -> Result<Tensor<'s, f64>> {
    Ok(xs[0].try_matmul(xs[1])?.tanh())
}

/// `n` layers `tanh(h·w)` sharing `w`, each a rematerialised block or recorded plainly.
fn layers<'s>(
    mut h: Tensor<'s, f64>,
    w: Tensor<'s, f64>,
    n: usize,
    remat: bool,
) -> Tensor<'s, f64> {
    for _ in 0..n {
        h = if remat {
            h.tape().remat(&[h, w], |xs| block(&xs)).unwrap()
        } else {
            h.matmul(w).tanh()
        };
    }
    h
}

#[test]
fn errors_are_typed() {
    let tape = Tape::new();
    let x = tape.param(array![[1.0, 2.0]]);
    let other = Tape::new();
    let y = other.param(array![[1.0]]);
    let e = tape.remat(&[x, y], |xs| Ok(xs[0])).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::ForeignTensor), "{e}");

    // an error inside the block is the block's op's own error, at the block's line
    let e = tape.remat(&[x, x], |xs| block(&xs)).unwrap_err();
    assert_eq!(e.op(), "matmul");
    assert!(matches!(e.kind(), ErrorKind::Shape { .. }), "{e}");
}

#[test]
fn a_parameter_shared_by_blocks_gets_the_sum_of_its_uses() {
    let w = array![[0.3, -0.2], [0.1, 0.5]];
    let x = array![[1.0, 2.0], [-1.0, 0.5], [0.2, 0.1]];
    let grad = |remat: bool| {
        let tape = Tape::new();
        let wt = tape.param(&w);
        let h = layers(tape.constant(&x), wt, 3, remat);
        tape.backward(h.sum()).unwrap().wrt(&w).unwrap().clone()
    };
    assert_eq!(grad(true), grad(false));
}

#[test]
fn retained_graphs_and_reused_buffers_give_the_same_gradients() {
    let w = array![[0.3, -0.2], [0.1, 0.5]];
    let x = array![[1.0, 2.0], [-1.0, 0.5]];
    let tape = Tape::new();
    let wt = tape.param(&w);
    let h = tape
        .remat(&[tape.constant(&x), wt], |xs| block(&xs))
        .unwrap();
    let loss = tape.remat(&[h, wt], |xs| block(&xs)).unwrap().sum();
    let first = tape
        .backward_with(loss, BackwardOptions::new().retain_graph(true))
        .unwrap();
    let expected = first.wrt(&w).unwrap().clone();
    let second = tape
        .backward_with(loss, BackwardOptions::new().reuse(first))
        .unwrap();
    assert_eq!(second.wrt(&w).unwrap(), &expected);
}

#[test]
fn second_derivatives_through_blocks_equal_the_plain_recording() {
    let w = array![[0.3, -0.2], [0.1, 0.5]];
    let x = array![[1.0, 2.0], [-1.0, 0.5]];
    let v = array![[1.0, -1.0], [0.5, 2.0]];
    let hvp = |remat: bool| -> Array2<f64> {
        let tape = Tape::new();
        let wt = tape.param(&w);
        let h = layers(tape.constant(&x), wt, 2, remat);
        let g = tape.grad(h.square().sum(), &[wt]).unwrap()[0];
        let gv = g.mul(tape.constant(&v)).sum();
        tape.backward(gv).unwrap().wrt(&w).unwrap().clone()
    };
    let (a, b) = (hvp(true), hvp(false));
    for (p, q) in a.iter().zip(&b) {
        assert!((p - q).abs() <= 1e-14 * q.abs().max(1.0), "{a} vs {b}");
    }
}

#[test]
fn a_block_on_a_released_input_reports_the_release_when_read() {
    let tape = Tape::new();
    let w = tape.param(array![[0.5]]);
    let e = w.exp();
    drop(tape.backward(e.square().sum()).unwrap());
    // backward released `e`'s value; a block on it records a released value of the
    // right shape, and reading it names the op that produced `e`
    let z = tape.remat(&[e, w], |xs| xs[0].try_mul(xs[1])).unwrap();
    assert_eq!(z.shape(), (1, 1));
    let err = z.try_value().unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::Released {
                producer: "exp",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_block_whose_result_needs_no_gradient_passes_none_back() {
    let w = array![[0.5, -1.0]];
    let grads = |remat: bool| {
        let tape = Tape::new();
        let (x, wt) = (tape.constant(array![[1.0, 2.0]]), tape.param(&w));
        // the block ignores its parameter input
        let h = if remat {
            tape.remat(&[x, wt], |xs| Ok(xs[0].tanh())).unwrap()
        } else {
            x.tanh()
        };
        let loss = h.sum().add(wt.sum());
        tape.backward(loss).unwrap().wrt(&w).unwrap().clone()
    };
    assert_eq!(grads(true), array![[1.0, 1.0]]);
    assert_eq!(grads(true), grads(false));
}

#[test]
fn recorded_gradients_through_a_block_are_right_inside_no_grad() {
    let w = array![[0.3, -0.2], [0.1, 0.5]];
    let x = array![[1.0, 2.0], [-1.0, 0.5]];
    let grad = |remat: bool| {
        let tape = Tape::new();
        let wt = tape.param(&w);
        let h = if remat {
            tape.remat(&[tape.constant(&x), wt], |xs| block(&xs))
                .unwrap()
        } else {
            tape.constant(&x).matmul(wt).tanh()
        };
        let loss = h.square().sum();
        tape.no_grad(|| tape.grad(loss, &[wt]).unwrap()[0].value())
    };
    let (a, b) = (grad(true), grad(false));
    assert!(b.iter().any(|v| *v != 0.0));
    for (p, q) in a.iter().zip(&b) {
        assert!((p - q).abs() <= 1e-14, "{a} vs {b}");
    }
}

/// An input the block's output does not depend on gets no gradient from the block, as
/// when the block is written out: not a zero that then meets a NaN derivative upstream
/// (here `tanh` at NaN), which would give NaN where the plain recording gives 0.
#[test]
fn an_input_the_block_ignores_gets_nothing_not_a_zero() {
    let (x, w) = (array![[f64::NAN, 0.5]], array![[2.0, -1.0]]);
    fn ignores<'s>(xs: &[Tensor<'s, f64>]) -> Result<Tensor<'s, f64>> {
        Ok(xs[1].square())
    }
    for remat in [false, true] {
        let tape = Tape::new();
        let (xt, wt) = (tape.param(&x), tape.param(&w));
        let a = xt.tanh();
        let y = if remat {
            tape.remat(&[a, wt], |xs| ignores(&xs)).unwrap()
        } else {
            ignores(&[a, wt]).unwrap()
        };
        let loss = y.sum();
        let recorded = tape.grad(loss, &[xt, wt]).unwrap();
        assert_eq!(recorded[0].value(), array![[0.0, 0.0]], "remat {remat}");
        assert_eq!(recorded[1].value(), array![[4.0, -2.0]], "remat {remat}");
        let grads = tape.backward(loss).unwrap();
        assert_eq!(grads.wrt(&x).unwrap(), array![[0.0, 0.0]], "remat {remat}");
        assert_eq!(grads.wrt(&w).unwrap(), array![[4.0, -2.0]], "remat {remat}");
    }
}

/// A block of any number of inputs (once at most 7; here 20) that borrows data it reads
/// beside them: the gradients are those of the plain recording, by backward and by
/// `Tape::grad`. A block that puts a parameter on its own tape (a layer's forward) is an
/// error: that parameter's gradient would be lost.
#[test]
fn blocks_take_any_number_of_inputs_and_borrow_what_they_capture() {
    use tapegrad::nn::Linear;
    let ws: Vec<Array2<f64>> = (0..18)
        .map(|k| Array2::from_shape_fn((1, 3), |(_, j)| 0.1 * (k as f64) - 0.05 * j as f64))
        .collect();
    let head = Linear {
        weight: array![[0.5, -1.0], [0.25, 2.0], [1.5, 0.0]],
        bias: Some(array![[0.1, -0.2]]),
    };
    let target = array![[1.0, -1.0]];
    // Σₖ tanh(wₖ) then the head, against the target: twelve inputs, a borrowed layer and
    // borrowed data
    // the head's weights are inputs of the block (the last two); the target is borrowed
    fn f<'t, 'h: 't>(xs: &[Tensor<'t, f64>], target: &'h Array2<f64>) -> Result<Tensor<'t, f64>> {
        let n = xs.len() - 2;
        let mut h = xs[0].tanh();
        for x in &xs[1..n] {
            h = h.try_add(x.tanh())?;
        }
        let y = h.try_linear(xs[n], xs[n + 1])?;
        Ok(y.try_sub(h.tape().constant(target))?.square().sum())
    }
    let run = |remat: bool| {
        let tape = Tape::new();
        let mut xs: Vec<Tensor<'_, f64>> = ws.iter().map(|w| tape.param(w)).collect();
        xs.push(tape.param(&head.weight));
        xs.push(tape.param(head.bias.as_ref().unwrap()));
        let loss = if remat {
            tape.remat(&xs, |inputs| f(&inputs, &target)).unwrap()
        } else {
            f(&xs, &target).unwrap()
        };
        let recorded: Vec<Array2<f64>> = tape
            .grad(loss, &xs)
            .unwrap()
            .iter()
            .map(|g| g.value())
            .collect();
        let grads = tape.backward(loss).unwrap();
        let by_backward: Vec<Array2<f64>> =
            ws.iter().map(|w| grads.wrt(w).unwrap().clone()).collect();
        (recorded, by_backward)
    };
    let (plain_grad, plain_backward) = run(false);
    let (remat_grad, remat_backward) = run(true);
    assert_eq!(
        remat_backward, plain_backward,
        "backward through a 20-input block"
    );
    for (a, b) in remat_grad.iter().zip(&plain_grad) {
        for (p, q) in a.iter().zip(b) {
            assert!((p - q).abs() <= 1e-14 * (1.0 + q.abs()), "{a} vs {b}");
        }
    }
    assert!(plain_backward.iter().all(|g| g.iter().any(|v| *v != 0.0)));
}

#[test]
fn a_block_that_puts_a_parameter_on_its_own_tape_is_refused() {
    use tapegrad::nn::{Linear, Module};
    let head = Linear {
        weight: array![[1.0, 2.0]],
        bias: None,
    };
    let tape = Tape::new();
    let x = tape.param(array![[1.0], [2.0]]);
    let e = tape.remat(&[x], |xs| head.forward(xs[0])).unwrap_err();
    assert_eq!(e.op(), "remat");
    assert!(
        matches!(e.kind(), ErrorKind::Parameter { name: "f", .. }),
        "{e}"
    );
    assert!(e.to_string().contains("inputs"), "{e}");
}
