//! The tape as Graphviz DOT (`Tape::to_dot`): one node per tensor with op, shape, caller
//! line and saved values; one edge per input; released values marked after backward.

use ndarray::Array2;
use tapegrad::Tape;

#[test]
fn the_seed_001_network_as_dot() {
    let x = Array2::from_elem((150, 4), 0.5f64);
    let y = Array2::from_elem((150, 3), 0.25f64);
    let w1 = Array2::from_elem((4, 2), 0.1f64);
    let w2 = Array2::from_elem((2, 3), -0.1f64);
    let tape = Tape::new();
    let (xt, w1t, w2t) = (tape.constant(&x), tape.param(&w1), tape.param(&w2));
    let line = line!() + 1;
    let h = xt.matmul(w1t).sigmoid();
    let o = h.matmul(w2t).sigmoid();
    let loss = o.mse_loss(tape.constant(&y));
    let dot = tape.to_dot();
    assert!(
        dot.starts_with("digraph tape {\n") && dot.ends_with("}\n"),
        "{dot}"
    );
    let nodes: Vec<&str> = dot
        .lines()
        .filter(|l| l.contains("[label=\"") && !l.contains("->"))
        .collect();
    let edges: Vec<&str> = dot.lines().filter(|l| l.contains("->")).collect();
    assert_eq!(nodes.len(), tape.len());
    // matmul, sigmoid, matmul, sigmoid, mse_loss: 2 + 1 + 2 + 1 + 2 inputs
    assert_eq!(edges.len(), 8);
    let first_matmul = nodes.iter().find(|l| l.contains("matmul #3")).unwrap();
    assert!(first_matmul.contains(r"150 × 2\n"), "{first_matmul}");
    assert!(
        first_matmul.contains(&format!("tests/inspect.rs:{line}")),
        "{first_matmul}"
    );
    // X is a constant, so the first matmul reads only X (for dW1)
    assert!(first_matmul.contains(r"saves #0"), "{first_matmul}");
    let sigmoid = nodes.iter().find(|l| l.contains("sigmoid #4")).unwrap();
    assert!(sigmoid.contains("saves output"), "{sigmoid}");
    assert!(dot.contains("n3 -> n4 [label=\"0\"]"));
    // parameters are filled, constants dashed
    assert!(
        nodes
            .iter()
            .find(|l| l.starts_with("  n1 "))
            .unwrap()
            .contains("fillcolor")
    );
    assert!(
        nodes
            .iter()
            .find(|l| l.starts_with("  n0 "))
            .unwrap()
            .contains("dashed")
    );
    assert!(!dot.contains("(released)"));
    drop(tape.backward(loss).unwrap());
    let after = tape.to_dot();
    assert!(
        after
            .lines()
            .any(|l| l.contains("sigmoid #4") && l.contains("(released)"))
    );
}

/// `Parameters::without_gradient`: which parameters got no gradient and why, in one call.
#[test]
fn the_report_of_parameters_without_a_gradient_names_each_reason() {
    use ndarray::array;
    use tapegrad::Missing;
    use tapegrad::nn::{Linear, Parameters, Sequential};
    let mut model = Sequential::<f64>::new();
    model.push(Linear {
        weight: array![[1.0], [2.0]],
        bias: Some(array![[0.5]]),
    });
    model.push(Linear {
        weight: array![[3.0]],
        bias: Some(array![[0.1]]),
    });
    model.push(Linear {
        weight: array![[4.0]],
        bias: None,
    });
    let mut ps = Vec::new();
    model.visit(&mut |_, p| ps.push(p));
    let tape = Tape::new();
    let x = tape.constant(array![[1.0, 1.0]]);
    let h = x.linear(tape.param(ps[0]), tape.param(ps[1]));
    // layer 1: the weight goes through detach (cut), the bias in as a constant
    let h = h
        .matmul(tape.param(ps[2]).detach())
        .add(tape.constant(ps[3]));
    // layer 2: a copy of the weight, which the array cannot be found by
    let loss = h.matmul(tape.param(ps[4].clone())).sum();
    let grads = tape.backward(loss).unwrap();
    assert_eq!(
        model.without_gradient(&grads),
        vec![
            ("1.weight".to_string(), Missing::Unreached),
            ("1.bias".to_string(), Missing::Constant),
            ("2.weight".to_string(), Missing::NotOnTape),
        ]
    );
}
