//! Errors are values: every shape-combining op's `try_` form returns an error naming the
//! op, both shapes and the caller's line; the panicking forms say the same; backward and
//! value reads fail with typed errors; NaN and infinities propagate without a panic.

use crate::common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use ndarray::{Array2, Axis};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tapegrad::{BackwardOptions, Error, ErrorKind, Result, Tape, Tensor};

fn zeros(r: usize, c: usize) -> Array2<f64> {
    Array2::zeros((r, c))
}

/// `result` is a `Shape` error from `op` for `lhs` and `rhs`, raised at `line` of this file.
#[track_caller]
fn assert_shape_error(
    result: Result<Tensor<'_, f64>>,
    op: &str,
    lhs: (usize, usize),
    rhs: (usize, usize),
    line: u32,
) {
    let err = result.expect_err("shapes do not fit");
    assert_eq!(err.op(), op);
    match err.kind() {
        ErrorKind::Shape { lhs: l, rhs: r, .. } => assert_eq!((*l, *r), (lhs, rhs), "{err}"),
        other => panic!("{op}: expected a shape error, got {other:?}"),
    }
    assert_eq!(
        (err.location().file(), err.location().line()),
        (file!(), line),
        "{err}"
    );
    let text = err.to_string();
    let shapes = format!("inputs {} × {} and {} × {}", lhs.0, lhs.1, rhs.0, rhs.1);
    assert!(
        text.starts_with(&format!("{op}: {shapes} are not compatible (")),
        "{text}"
    );
    assert!(
        text.ends_with(&format!(
            "called at {}:{line}:{}",
            file!(),
            err.location().column()
        )),
        "{text}"
    );
}

#[test]
fn every_shape_combining_op_names_the_op_both_shapes_and_the_line() {
    let tape = Tape::new();
    let a = tape.constant(zeros(3, 4));
    let b = tape.param(zeros(5, 2));
    let c = tape.param(zeros(2, 4));
    let x = (3, 4);
    #[rustfmt::skip]
    let cases = [
        ("matmul", a.try_matmul(b), x, b.shape(), line!()),
        ("linear", a.try_linear(b, tape.param(zeros(1, 2))), x, b.shape(), line!()),
        ("linear", tape.param(zeros(3, 5)).try_linear(b, tape.param(zeros(1, 3))), b.shape(), (1, 3), line!()),
        ("add", a.try_add(b), x, b.shape(), line!()),
        ("add", a.try_add(c), x, c.shape(), line!()),
        ("sub", a.try_sub(c), x, c.shape(), line!()),
        ("mul", a.try_mul(b), x, b.shape(), line!()),
        ("div", a.try_div(c), x, c.shape(), line!()),
        ("add_row", a.try_add_row(tape.param(zeros(1, 5))), x, (1, 5), line!()),
        ("add_row", a.try_add_row(tape.param(zeros(4, 1))), x, (4, 1), line!()),
        ("add_col", a.try_add_col(tape.param(zeros(4, 1))), x, (4, 1), line!()),
        ("add_col", a.try_add_col(tape.param(zeros(1, 3))), x, (1, 3), line!()),
        ("mse_loss", a.try_mse_loss(c), x, c.shape(), line!()),
        ("softmax_cross_entropy", a.try_softmax_cross_entropy(b), x, b.shape(), line!()),
    ];
    for (op, result, lhs, rhs, line) in cases {
        assert_shape_error(result, op, lhs, rhs, line);
    }
    // the tape recorded nothing for the failed ops
    assert_eq!(tape.len(), 10);
}

#[test]
fn class_indices_are_checked() {
    let tape = Tape::<f32>::new();
    let z = tape.param(Array2::zeros((3, 4)));
    let err = z.try_softmax_cross_entropy_indices(&[0, 1]).unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::TargetCount {
            rows: 3,
            targets: 2
        }
    );
    let err = z.try_softmax_cross_entropy_indices(&[0, 4, 1]).unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::ClassIndex {
            row: 1,
            index: 4,
            classes: 4
        }
    );
    assert!(
        err.to_string()
            .contains("row 1: class index 4 is out of range for 4 classes")
    );
    assert!(z.try_softmax_cross_entropy_indices(&[3, 0, 2]).is_ok());
}

#[test]
fn axes_beyond_columns_are_errors() {
    let tape = Tape::<f64>::new();
    let x = tape.param(zeros(2, 3));
    assert_eq!(
        x.try_sum_axis(Axis(2)).unwrap_err().kind(),
        &ErrorKind::Axis { axis: 2 }
    );
    assert_eq!(x.try_mean_axis(Axis(7)).unwrap_err().op(), "mean_axis");
}

#[test]
fn tensors_of_different_tapes_do_not_mix() {
    let (t1, t2) = (Tape::<f64>::new(), Tape::<f64>::new());
    let a = t1.param(zeros(2, 2));
    let b = t2.param(zeros(2, 2));
    let results = [
        a.try_matmul(b),
        a.try_linear(b, t2.param(zeros(1, 2))),
        a.try_add(b),
        a.try_sub(b),
        a.try_mul(b),
        a.try_div(b),
        a.try_add_row(t2.param(zeros(1, 2))),
        a.try_add_col(t2.param(zeros(2, 1))),
        a.try_mse_loss(b),
        a.try_softmax_cross_entropy(b),
    ];
    for r in results {
        assert_eq!(r.unwrap_err().kind(), &ErrorKind::ForeignTensor);
    }
    let loss = b.sum();
    assert_eq!(
        t1.backward(loss).unwrap_err().kind(),
        &ErrorKind::ForeignTensor
    );
    // gradients of one tape do not answer for another tape's tensors
    let grads = t2.backward(loss).unwrap();
    assert!(grads.get(b).is_some());
    assert!(grads.get(a).is_none());
}

#[test]
fn backward_errors_are_typed() {
    let tape = Tape::<f64>::new();
    let w = tape.param(zeros(2, 3));
    let y = w.exp();
    let err = tape.backward(y).unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::NotScalar { shape: (2, 3) });
    let err = tape
        .backward_with(y, BackwardOptions::new().seed(zeros(3, 2)))
        .unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::SeedShape {
            root: (2, 3),
            seed: (3, 2)
        }
    );
    let constant = tape.constant(zeros(1, 1)).exp();
    assert_eq!(
        tape.backward(constant).unwrap_err().kind(),
        &ErrorKind::NoGradient
    );

    let loss = y.sum();
    let first_line = line!() + 1;
    tape.backward(loss).unwrap();
    let err = tape.backward(loss).unwrap_err();
    match err.kind() {
        ErrorKind::BackwardTwice { first } => assert_eq!(first.line(), first_line),
        other => panic!("expected BackwardTwice, got {other:?}"),
    }
    assert!(err.to_string().contains("retain_graph"), "{err}");
}

#[test]
fn reading_a_released_value_is_an_error_naming_its_producer() {
    let tape = Tape::<f64>::new();
    let w = tape.param(Array2::from_elem((2, 2), 0.5));
    let h = w.sigmoid();
    let loss = h.sum();
    tape.backward(loss).unwrap();
    let err: Error = h.try_value().unwrap_err();
    match err.kind() {
        ErrorKind::Released { producer, .. } => assert_eq!(*producer, "sigmoid"),
        other => panic!("expected Released, got {other:?}"),
    }
    // An op on a released value records a released result: no panic, and the error
    // surfaces when the result is read.
    let z = h.exp();
    assert!(matches!(
        z.try_value().unwrap_err().kind(),
        ErrorKind::Released {
            producer: "sigmoid",
            ..
        }
    ));
    // leaves and the root stay readable
    assert_eq!(w.value(), Array2::from_elem((2, 2), 0.5));
    assert!((loss.item() - 4.0 / (1.0 + (-0.5f64).exp())).abs() < 1e-15);
    assert_eq!(
        h.try_item().unwrap_err().kind(),
        &ErrorKind::NotScalar { shape: (2, 2) }
    );
}

/// Runs `f`, which must panic, and returns the panic message.
fn panic_message(f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("must panic");
    payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn panicking_forms_report_the_same_error_at_the_callers_line() {
    let tape = Tape::<f64>::new();
    let a = tape.param(zeros(3, 4));
    let b = tape.param(zeros(5, 2));
    let here = |line: u32| format!("called at {}:{line}:", file!());

    let line = line!() + 2;
    let msg = panic_message(|| {
        let _ = a.matmul(b);
    });
    assert!(
        msg.starts_with("matmul: inputs 3 × 4 and 5 × 2 are not compatible"),
        "{msg}"
    );
    assert!(msg.contains(&here(line)), "{msg}");

    let line = line!() + 2;
    let msg = panic_message(|| {
        let _ = a + b;
    });
    assert!(msg.starts_with("add: inputs 3 × 4 and 5 × 2"), "{msg}");
    assert!(msg.contains(&here(line)), "{msg}");

    for msg in [
        panic_message(|| {
            let _ = a - b;
        }),
        panic_message(|| {
            let _ = a * b;
        }),
        panic_message(|| {
            let _ = a / b;
        }),
        panic_message(|| {
            let _ = a.add_row(b);
        }),
        panic_message(|| {
            let _ = a.add_col(b);
        }),
        panic_message(|| {
            let _ = a.mse_loss(b);
        }),
        panic_message(|| {
            let _ = a.softmax_cross_entropy(b);
        }),
        panic_message(|| {
            let _ = a.softmax_cross_entropy_indices(&[9]);
        }),
        panic_message(|| {
            let _ = a.sum_axis(Axis(3));
        }),
        panic_message(|| {
            let _ = a.item();
        }),
    ] {
        assert!(msg.contains(&format!("called at {}:", file!())), "{msg}");
    }
}

#[test]
fn non_finite_inputs_propagate_through_every_op_without_a_panic() {
    let mut rng = StdRng::seed_from_u64(3);
    // the linear-algebra ops refuse non-finite matrices with `NotFinite` (tests/linalg.rs)
    for case in common::base_cases() {
        let shapes = (case.shapes)(3, 5);
        let mut inputs: Vec<Array2<f64>> = shapes
            .iter()
            .zip(case.domains)
            .map(|(&s, &d)| common::draw(s, d, &mut rng))
            .collect();
        for x in &mut inputs {
            let (r, c) = x.dim();
            x[[0, 0]] = f64::NAN;
            x[[r - 1, c - 1]] = f64::INFINITY;
        }
        let tape = Tape::new();
        let xs: Vec<_> = inputs.iter().map(|x| tape.param(x)).collect();
        let y = (case.f)(&xs);
        let value = y.value();
        // ops that select some elements may leave the NaN out
        let selects = [
            "slice",
            "slice_rows",
            "slice_cols",
            "gather_rows",
            "dropout",
            "where_",
            "nll_loss",
            "tril",
            "triu",
        ];
        assert!(
            selects.contains(&case.op) || value.iter().any(|v| v.is_nan()),
            "{}: NaN did not reach the output {value}",
            case.op
        );
        let seed = Array2::ones(y.shape());
        let grads = tape
            .backward_with(y, BackwardOptions::new().seed(seed))
            .unwrap();
        for x in &xs {
            assert_eq!(grads.get(*x).unwrap().dim(), x.shape(), "{}", case.op);
        }
    }
}

/// `Linear 4→3, Tanh, Linear 5→2`: the third layer does not fit the second's output.
fn misfit_model() -> tapegrad::nn::Sequential<f64> {
    use tapegrad::nn::{Init, Linear, Sequential, Tanh};
    let mut rng = StdRng::seed_from_u64(5);
    Sequential::new()
        .with(Linear::new(4, 3, Init::Glorot, &mut rng))
        .with(Tanh)
        .with(Linear::new(5, 2, Init::Glorot, &mut rng))
}

/// An op that fails inside a `Sequential` keeps its op, kind and location, and gains the
/// layer (position, type, parameters) and the line that called the model.
#[test]
fn an_error_inside_a_sequential_names_the_layer_and_the_callers_line() {
    use tapegrad::nn::Module;
    let model = misfit_model();
    let tape = Tape::new();
    let x = tape.constant(zeros(8, 4));
    let line = line!() + 1;
    let err = model.forward(x).unwrap_err();
    assert_eq!(err.op(), "linear");
    assert!(
        matches!(
            err.kind(),
            ErrorKind::Shape {
                lhs: (8, 3),
                rhs: (5, 2),
                ..
            }
        ),
        "{err}"
    );
    assert!(err.location().file().ends_with("linear.rs"), "{err}");
    let layer = err.in_layer().expect("raised inside a layer");
    assert_eq!(layer.path, "2");
    assert_eq!(layer.layer, "Linear");
    assert_eq!(layer.parameters, ["2.weight", "2.bias"]);
    assert_eq!(layer.container, "Sequential");
    assert_eq!(
        (layer.called_at.file(), layer.called_at.line()),
        (file!(), line)
    );
    assert_eq!(err.call_site(), layer.called_at);
    let text = err.to_string();
    assert!(
        text.ends_with(&format!(
            ", in layer 2 (Linear, parameters 2.weight, 2.bias) of the Sequential called at {}:{line}:{}",
            file!(),
            layer.called_at.column()
        )),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1);
    // the panicking form says the same
    let panic = catch_unwind(AssertUnwindSafe(|| model.forward(x).unwrap())).unwrap_err();
    let message = panic.downcast_ref::<String>().expect("a formatted message");
    assert!(message.contains("in layer 2 (Linear"), "{message}");
}

/// Nested containers join the path and the parameter names from the outermost in; the
/// call site is the outermost call. Through a trait object Rust reports the container's
/// own source line instead (the documented limit), and the path is the same.
#[test]
fn nested_containers_join_the_layer_path() {
    use tapegrad::nn::{Init, Linear, Module, MultiHeadAttention, Sequential, Tanh};
    let mut rng = StdRng::seed_from_u64(6);
    let inner = Sequential::new().with(Tanh).with(misfit_model());
    let model = Sequential::new()
        .with(Linear::<f64>::new(4, 4, Init::Glorot, &mut rng))
        .with(inner);
    let tape = Tape::new();
    let x = tape.constant(zeros(2, 4));
    let line = line!() + 1;
    let err = model.forward(x).unwrap_err();
    let layer = err.in_layer().unwrap();
    assert_eq!(layer.path, "1.1.2");
    assert_eq!(layer.layer, "Linear");
    assert_eq!(layer.parameters, ["1.1.2.weight", "1.1.2.bias"]);
    assert_eq!(err.call_site().line(), line, "{err}");

    let dynamic: &dyn Module<f64> = &model;
    let err = dynamic.forward(x).unwrap_err();
    assert_eq!(err.in_layer().unwrap().path, "1.1.2");
    assert!(err.call_site().file().ends_with("sequential.rs"), "{err}");

    // a generic caller is a static call: its line is the call site
    fn run<'t, M: Module<f64>>(m: &'t M, x: Tensor<'t, f64>) -> Result<Tensor<'t, f64>> {
        m.forward(x)
    }
    let err = run(&model, x).unwrap_err();
    assert_eq!(err.call_site().file(), file!());

    // the attention layers name their projections
    let attention = MultiHeadAttention::<f64>::new(4, 2, &mut rng);
    let line = line!() + 1;
    let err = attention.forward(tape.constant(zeros(3, 5))).unwrap_err();
    let layer = err.in_layer().unwrap();
    assert_eq!(
        (layer.path.as_str(), layer.container),
        ("q", "MultiHeadAttention")
    );
    assert_eq!(err.call_site().line(), line, "{err}");

    // an op outside any layer has no layer, and its call site is its location
    let err = x.try_matmul(tape.constant(zeros(3, 3))).unwrap_err();
    assert!(err.in_layer().is_none());
    assert_eq!(err.call_site(), err.location());
}

/// Class indices passed as a column to the one-hot cross-entropy: the shape error
/// suggests `softmax_cross_entropy_indices`; a column that is not class indices does not.
#[test]
fn class_indices_given_to_the_one_hot_cross_entropy_suggest_the_indices_form() {
    let tape = Tape::new();
    let logits = tape.param(zeros(3, 4));
    let indices = tape.constant(ndarray::array![[0.0], [3.0], [1.0]]);
    let err = logits.try_softmax_cross_entropy(indices).unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::Shape {
            lhs: (3, 4),
            rhs: (3, 1),
            ..
        }
    ));
    assert!(
        err.to_string().contains("softmax_cross_entropy_indices"),
        "{err}"
    );
    // not integers, negative, or not one per row: no such hint
    for column in [
        ndarray::array![[0.5], [3.0], [1.0]],
        ndarray::array![[0.0], [-1.0], [1.0]],
    ] {
        let err = logits
            .try_softmax_cross_entropy(tape.constant(column))
            .unwrap_err();
        assert!(!err.to_string().contains("_indices"), "{err}");
    }
    let err = logits
        .try_softmax_cross_entropy(tape.constant(zeros(2, 1)))
        .unwrap_err();
    assert!(!err.to_string().contains("_indices"), "{err}");
}
