//! The public custom-op API gets the treatment of a built-in op: typed errors naming it
//! and the caller's line, values released after use, `retain_graph`, accumulation of
//! several uses, gradient checks of both orders, and a clear error where it is first order
//! only.

#[path = "../../examples/custom_op.rs"]
#[allow(dead_code)]
mod custom_op;

use custom_op::{LnGamma, Softplus};
use ndarray::{Array2, ArrayView2, array};
use tapegrad::check::{CheckOptions, gradcheck, gradgradcheck};
use tapegrad::custom::{self, CustomOp, Grads, Reads, Saved};
use tapegrad::{BackwardOptions, ErrorKind, Tape, Tensor};

fn close(a: &Array2<f64>, b: &Array2<f64>) -> bool {
    a.dim() == b.dim()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-13 * (1.0 + y.abs()))
}

#[test]
fn a_custom_softplus_agrees_with_the_built_in_one_to_second_order() {
    let x = array![[0.5, -1.0, 2.0], [1.5, 0.3, -30.0]];
    let tape = Tape::new();
    let (a, b) = (tape.param(&x), tape.param(x.clone()));
    let mine = custom::apply(Softplus, &[a]);
    let theirs = b.softplus();
    assert!(close(&mine.value(), &theirs.value()));
    let (ga, gb) = (
        tape.grad(mine.square().sum(), &[a]).unwrap()[0],
        tape.grad(theirs.square().sum(), &[b]).unwrap()[0],
    );
    assert!(close(&ga.value(), &gb.value()));
    let grads = tape.backward(ga.sum().add(gb.sum().neg())).unwrap();
    assert!(close(
        grads.get(a).unwrap(),
        &grads.get(b).unwrap().mapv(|v| -v)
    ));
    let opts = CheckOptions::default();
    let w = x.t().to_owned();
    gradcheck(
        |xs| custom_op::softplus_layer(&xs),
        &[x.view(), w.view()],
        &opts,
    )
    .unwrap();
    gradgradcheck(
        |xs| custom_op::softplus_layer(&xs),
        &[x.view(), w.view()],
        &opts,
    )
    .unwrap();
    // the same array twice is one parameter: the check says so instead of comparing
    let err = gradcheck(
        |xs| custom_op::softplus_layer(&xs),
        &[x.view(), x.t()],
        &opts,
    )
    .unwrap_err();
    assert!(err.to_string().contains("shares its storage"), "{err}");
}

#[test]
fn a_first_order_custom_op_gives_first_derivatives_and_refuses_second_ones() {
    let x = array![[0.5, -1.0, 2.0]];
    gradcheck(
        |xs| custom_op::ln_gamma_of_square(&xs),
        &[x.view()],
        &CheckOptions::default(),
    )
    .unwrap();
    let tape = Tape::new();
    let xt = tape.param(&x);
    let f = custom_op::ln_gamma_of_square(&[xt]);
    // the first derivative by Tape::grad is right (the VJP on arrays gave it) ...
    let g = tape.grad(f, &[xt]).unwrap()[0].value();
    let by_backward = {
        let tape = Tape::new();
        let xt = tape.param(&x);
        tape.backward(custom_op::ln_gamma_of_square(&[xt]))
            .unwrap()
            .get(xt)
            .unwrap()
            .clone()
    };
    assert!(close(&g, &by_backward));
    // ... and a second one is an error naming the op, from grad as from backward
    let dfdx = tape.grad(f, &[xt]).unwrap()[0];
    let err = tape.grad(dfdx.sum(), &[xt]).unwrap_err();
    assert_eq!(
        (err.op(), err.kind()),
        ("ln_gamma", &ErrorKind::NotDifferentiable)
    );
    let err = tape.backward(dfdx.sum()).unwrap_err();
    assert_eq!(
        (err.op(), err.kind()),
        ("ln_gamma", &ErrorKind::NotDifferentiable)
    );
    assert!(err.to_string().contains("vjp_tensor"), "{err}");
}

/// `a ∘ b`, reading only what each gradient needs.
struct Product;

impl CustomOp<f64> for Product {
    fn name(&self) -> &'static str {
        "product"
    }
    fn output_shape(&self, s: &[(usize, usize)]) -> Result<(usize, usize), &'static str> {
        if s.len() == 2 && s[0] == s[1] {
            Ok(s[0])
        } else {
            Err("the two inputs must have the same shape")
        }
    }
    fn forward(&self, x: &[ArrayView2<'_, f64>]) -> Array2<f64> {
        &x[0] * &x[1]
    }
    fn vjp(&self, g: ArrayView2<'_, f64>, saved: &Saved<'_, f64>, grads: &mut Grads<'_, f64>) {
        if grads.needs(0) {
            grads.add(0, &g * &saved.input(1).unwrap());
        }
        if grads.needs(1) {
            grads.add(1, &g * &saved.input(0).unwrap());
        }
    }
}

#[test]
fn custom_op_errors_are_typed_and_name_the_op_and_the_line() {
    let tape = Tape::<f64>::new();
    let (a, b) = (
        tape.param(Array2::zeros((2, 3))),
        tape.param(Array2::zeros((3, 2))),
    );
    let line = line!() + 1;
    let err = custom::try_apply(Product, &[a, b]).unwrap_err();
    assert_eq!(err.op(), "product");
    assert!(matches!(
        err.kind(),
        ErrorKind::Shape {
            lhs: (2, 3),
            rhs: (3, 2),
            ..
        }
    ));
    assert_eq!(err.location().line(), line);
    assert!(
        err.to_string()
            .contains("the two inputs must have the same shape")
    );
    let err = custom::try_apply::<f64, _>(Product, &[]).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Empty { .. }));
    let other = Tape::new();
    let c = other.param(Array2::zeros((2, 3)));
    assert_eq!(
        custom::try_apply(Product, &[a, c]).unwrap_err().kind(),
        &ErrorKind::ForeignTensor
    );

    /// An op whose forward breaks its own promise about the shape.
    struct Liar;
    impl CustomOp<f64> for Liar {
        fn name(&self) -> &'static str {
            "liar"
        }
        fn output_shape(&self, s: &[(usize, usize)]) -> Result<(usize, usize), &'static str> {
            Ok(s[0])
        }
        fn forward(&self, _: &[ArrayView2<'_, f64>]) -> Array2<f64> {
            Array2::zeros((1, 1))
        }
        fn vjp(&self, _: ArrayView2<'_, f64>, _: &Saved<'_, f64>, _: &mut Grads<'_, f64>) {}
    }
    let err = custom::try_apply(Liar, &[a]).unwrap_err();
    assert!(
        err.to_string()
            .contains("the forward's result must have the shape"),
        "{err}"
    );
}

#[test]
fn custom_ops_release_what_they_read_retain_graphs_and_accumulate() {
    let (x, y) = (array![[1.0, 2.0]], array![[3.0, -4.0]]);
    let tape = Tape::new();
    let (a, b) = (tape.param(&x), tape.param(&y));
    let h = a.exp(); // an intermediate the op reads
    let p = custom::apply(Product, &[h, b]);
    let q = custom::apply(Product, &[a, a]); // a used twice by one op, and again below
    let loss = p.sum().add(q.sum()).add(a.sum());
    let grads = tape
        .backward_with(loss, BackwardOptions::new().retain_graph(true))
        .unwrap();
    // d/da = eᵃ ∘ b + 2a + 1, d/db = eᵃ
    let ea = x.mapv(f64::exp);
    assert!(close(grads.get(a).unwrap(), &(&ea * &y + &x * 2.0 + 1.0)));
    assert!(close(grads.get(b).unwrap(), &ea));
    // retained: the same again; then released
    let again = tape.backward(loss).unwrap();
    assert_eq!(again.get(a), grads.get(a));
    assert!(h.try_value().is_err(), "the value the op read was released");
    assert!(tape.stats().rules == 0);
}

/// `x` with only its output read (`Reads::nothing().output()`), and a VJP that leaves the
/// broadcasting to `Grads::add`.
struct ScaledRow;

impl CustomOp<f64> for ScaledRow {
    fn name(&self) -> &'static str {
        "scaled_row"
    }
    fn output_shape(&self, s: &[(usize, usize)]) -> Result<(usize, usize), &'static str> {
        Ok((3, s[0].1))
    }
    fn forward(&self, x: &[ArrayView2<'_, f64>]) -> Array2<f64> {
        x[0].broadcast((3, x[0].ncols())).unwrap().mapv(|v| 2.0 * v)
    }
    fn reads(&self) -> Reads {
        Reads::nothing().output()
    }
    fn vjp(&self, g: ArrayView2<'_, f64>, saved: &Saved<'_, f64>, grads: &mut Grads<'_, f64>) {
        assert!(saved.output().is_some() && saved.input(0).is_none());
        grads.add(0, g.mapv(|v| 2.0 * v)); // 3 × n, summed down to the 1 × n input
    }
}

#[test]
fn a_custom_op_gradient_of_the_output_shape_is_summed_to_the_input() {
    let tape = Tape::new();
    let x = tape.param(array![[1.0, -1.0]]);
    let grads = tape.backward(custom::apply(ScaledRow, &[x]).sum()).unwrap();
    assert_eq!(grads.get(x).unwrap(), &array![[6.0, 6.0]]);
}

fn used_in_a_composition<'t>(p: &[Tensor<'t, f64>]) -> Tensor<'t, f64> {
    custom::apply(Product, &[p[0].tanh(), p[1]]).mul(p[0]).sum()
}

#[test]
fn gradcheck_passes_on_compositions_with_custom_ops() {
    let (x, y) = (
        array![[0.5, -1.0], [2.0, 0.1]],
        array![[1.5, 0.3], [-0.7, 2.0]],
    );
    gradcheck(
        |xs| used_in_a_composition(&xs),
        &[x.view(), y.view()],
        &CheckOptions::default(),
    )
    .unwrap();
    let _ = LnGamma;
}

/// Explain mode names a custom op's VJP by the op's name, even when that name is a
/// built-in's with another number of inputs (no built-in equation, no panic).
#[test]
fn explain_names_a_custom_ops_vjp_even_under_a_built_in_name() {
    struct Imposter;
    impl CustomOp<f64> for Imposter {
        fn name(&self) -> &'static str {
            "linear"
        }
        fn output_shape(&self, s: &[(usize, usize)]) -> Result<(usize, usize), &'static str> {
            Ok(s[0])
        }
        fn forward(&self, x: &[ArrayView2<'_, f64>]) -> Array2<f64> {
            x[0].to_owned()
        }
        fn vjp(&self, g: ArrayView2<'_, f64>, _: &Saved<'_, f64>, grads: &mut Grads<'_, f64>) {
            grads.add(0, g.to_owned());
        }
    }
    let tape = Tape::new();
    let x = tape.param(array![[1.0, 2.0]]).named("X");
    let y = custom::apply(Imposter, &[x]);
    let lines = tape.explain(y.sum()).unwrap().lines;
    let eqs: Vec<&str> = lines.iter().map(|l| l.equation.as_str()).collect();
    assert_eq!(
        eqs,
        ["dT1 = broadcast(G)", "dX = vjp_linear(dT1) for input 0"]
    );
}

// ---- Issue 19: contributions summed in both rule forms, and refused when they do not fit --

/// `y = x + b + b²` with `b` a 1 × n row broadcast over the rows of the m × n `x`: the VJP
/// adds to `b` twice, once of the output's shape (`G`, summed down) and once of `b`'s own
/// (`2b ∘ 1ᵀG`). Both contributions count, in backward and in `Tape::grad`.
struct RowPlusSquare;

impl CustomOp<f64> for RowPlusSquare {
    fn name(&self) -> &'static str {
        "row_plus_square"
    }
    fn output_shape(&self, s: &[(usize, usize)]) -> Result<(usize, usize), &'static str> {
        if s.len() == 2 && s[1] == (1, s[0].1) {
            Ok(s[0])
        } else {
            Err("the second input must be a row as wide as the first")
        }
    }
    fn forward(&self, x: &[ArrayView2<'_, f64>]) -> Array2<f64> {
        &x[0] + &x[1].mapv(|b| b + b * b)
    }
    fn vjp(&self, g: ArrayView2<'_, f64>, saved: &Saved<'_, f64>, grads: &mut Grads<'_, f64>) {
        grads.add(0, g.to_owned());
        grads.add(1, g.to_owned()); // m × n: summed down to the row
        let b = saved.input(1).unwrap();
        let colsum = g.sum_axis(ndarray::Axis(0)).insert_axis(ndarray::Axis(0));
        grads.add(1, &b.mapv(|v| 2.0 * v) * &colsum); // 1 × n
    }
}

#[test]
fn tape_grad_sums_custom_contributions_of_different_shapes() {
    let (x, b) = (
        array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
        array![[0.5, -1.0, 2.0]],
    );
    // L = Σ (x + b + b²)², G = 2y; dL/db = 1ᵀG ∘ (1 + 2b)
    let y = &x + &b.mapv(|v| v + v * v);
    let want = (&y * 2.0)
        .sum_axis(ndarray::Axis(0))
        .insert_axis(ndarray::Axis(0))
        * &b.mapv(|v| 1.0 + 2.0 * v);
    let tape = Tape::new();
    let (xt, bt) = (tape.param(&x), tape.param(&b));
    let loss = custom::apply(RowPlusSquare, &[xt, bt]).square().sum();
    let recorded = tape.grad(loss, &[bt]).unwrap()[0].value();
    assert!(
        close(&recorded, &want),
        "Tape::grad {recorded} against {want}"
    );
    let grads = tape.backward(loss).unwrap();
    assert!(close(grads.get(bt).unwrap(), &want));
}

/// A custom op whose VJP adds `d` to input `k`, whatever their shapes.
struct Adds {
    k: usize,
    d: (usize, usize),
}

impl CustomOp<f64> for Adds {
    fn name(&self) -> &'static str {
        "adds"
    }
    fn output_shape(&self, s: &[(usize, usize)]) -> Result<(usize, usize), &'static str> {
        Ok(s[0])
    }
    fn forward(&self, x: &[ArrayView2<'_, f64>]) -> Array2<f64> {
        x[0].to_owned()
    }
    fn vjp(&self, _: ArrayView2<'_, f64>, _: &Saved<'_, f64>, grads: &mut Grads<'_, f64>) {
        grads.add(self.k, Array2::ones(self.d));
    }
}

/// A contribution that is neither the input's shape nor the output's (to which the input
/// broadcasts), or one for an input the op does not have, is a typed error naming the op,
/// the input and both shapes, in backward and in `Tape::grad`: never zero-filled,
/// broadcast or a panic.
#[test]
fn a_custom_contribution_that_does_not_fit_is_a_typed_error() {
    let x = Array2::<f64>::zeros((2, 3));
    for (k, d) in [
        (0, (0, 0)),
        (0, (1, 1)),
        (0, (2, 1)),
        (0, (1, 3)),
        (0, (3, 2)),
        (1, (2, 3)),
    ] {
        let tape = Tape::new();
        let xt = tape.param(&x);
        let line = line!() + 1;
        let loss = custom::apply(Adds { k, d }, &[xt]).sum();
        for err in [
            tape.grad(loss, &[xt]).map(|_| ()).unwrap_err(),
            tape.backward(loss).map(|_| ()).unwrap_err(),
        ] {
            assert_eq!(err.op(), "adds", "{err}");
            assert_eq!(err.location().line(), line, "{err}");
            assert!(
                matches!(err.kind(), ErrorKind::Contribution { input, given, .. }
                    if *input == k && *given == d),
                "{k} {d:?}: {err}"
            );
        }
    }
    // the input's shape, and the output's when the input broadcasts to it, are fine
    let tape = Tape::new();
    let xt = tape.param(&x);
    let grads = tape.backward(custom::apply(Adds { k: 0, d: (2, 3) }, &[xt]).sum());
    assert_eq!(
        grads.unwrap().get(xt).unwrap(),
        &Array2::<f64>::ones((2, 3))
    );
}
