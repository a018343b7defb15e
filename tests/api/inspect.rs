//! Seeing what a tape does (`tapegrad::inspect`): the graph as DOT and SVG, explain mode,
//! anomaly detection, the profile, the report of what got no gradient.

use crate::common;

use ndarray::Array2;
use tapegrad::inspect::SVG_MAX_NODES;
use tapegrad::{ErrorKind, Tape, Tensor};

/// Seed 001's data and weights on Iris's shapes: X (150 × 4), Y (150 × 3), W1 (4 × 2),
/// W2 (2 × 3).
fn seed_001() -> [Array2<f64>; 4] {
    [
        Array2::from_elem((150, 4), 0.5),
        Array2::from_elem((150, 3), 0.25),
        Array2::from_elem((4, 2), 0.1),
        Array2::from_elem((2, 3), -0.1),
    ]
}

#[test]
fn the_seed_001_network_as_dot() {
    let [x, y, w1, w2] = seed_001();
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
        first_matmul.contains(&format!("tests/api/inspect.rs:{line}")),
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

/// Explain mode on seed 000: `Y = X·W` on two data points, `G = ∂L/∂Y` given.
#[test]
fn explain_reads_seed_000_line_by_line() {
    let x = ndarray::array![[1.0, 2.0], [3.0, 4.0]];
    let w = ndarray::array![[0.5], [-1.0]];
    let tape = Tape::new();
    let line = line!() + 1;
    let y = tape.param(&x).named("X").matmul(tape.param(&w).named("W"));
    let lines = tape.explain(y).unwrap().lines;
    let got: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l.equation.as_str(), l.shapes.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("dW = Xᵀ · G", "2×2 · 2×1 → 2×1"),
            ("dX = G · Wᵀ", "2×1 · 1×2 → 2×2"),
        ]
    );
    for l in &lines {
        assert_eq!((l.op, l.location.line()), ("matmul", line));
        assert!(l.location.file().ends_with("inspect.rs"));
    }
}

/// The seed 001 network on Iris's shapes: 150 points, 4 inputs, 2 hidden and 3 output
/// sigmoid units. Backward from `G = ∂L/∂O` reads as the seed derives it, then with the
/// mean squared error as the root.
#[test]
fn explain_reads_seed_001_line_by_line() {
    let [x, y, w1, w2] = seed_001();
    let tape = Tape::new();
    let xt = tape.constant(&x).named("X");
    let (w1t, w2t) = (tape.param(&w1).named("W1"), tape.param(&w2).named("W2"));
    let first = line!() + 1;
    let h = xt.matmul(w1t).sigmoid().named("H");
    let o = h.matmul(w2t).sigmoid().named("O");
    let loss = o.mse_loss(tape.constant(&y).named("Y"));
    let lines = |root| {
        let e = tape.explain(root).unwrap();
        e.lines
            .iter()
            .map(|l| {
                format!(
                    "{}  [{}]  {}:{}",
                    l.equation,
                    l.shapes,
                    l.op,
                    l.location.line() - first
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        lines(o),
        [
            "O_delta = G ∘ O ∘ (1 − O)  [150×3]  sigmoid:1",
            "dW2 = Hᵀ · O_delta  [2×150 · 150×3 → 2×3]  matmul:1",
            "H_error = O_delta · W2ᵀ  [150×3 · 3×2 → 150×2]  matmul:1",
            "H_delta = H_error ∘ H ∘ (1 − H)  [150×2]  sigmoid:0",
            "dW1 = Xᵀ · H_delta  [4×150 · 150×2 → 4×2]  matmul:0",
        ]
    );
    let with_loss = lines(loss);
    assert_eq!(
        with_loss[0],
        "O_error = G·2(O − Y) / 450  [150×3]  mse_loss:2"
    );
    assert_eq!(
        with_loss[1],
        "O_delta = O_error ∘ O ∘ (1 − O)  [150×3]  sigmoid:1"
    );
    assert_eq!(with_loss.len(), 6);
    // Display: one line per equation, columns aligned, op and caller's line at the end
    let shown = tape.explain(loss).unwrap().to_string();
    assert_eq!(shown.lines().count(), 6);
    assert!(
        shown
            .lines()
            .nth(2)
            .unwrap()
            .contains(&format!("matmul at tests/api/inspect.rs:{}", first + 1))
    );
    // after a backward that released the graph there is nothing left to explain
    tape.backward(loss).unwrap();
    assert!(matches!(
        tape.explain(loss).unwrap_err().kind(),
        tapegrad::ErrorKind::BackwardTwice { .. }
    ));
}

/// A fused layer's bias is the column sum (seed 003); a value used twice gets `+=`;
/// unnamed tensors get generated names.
#[test]
fn explain_shows_bias_column_sums_fan_out_and_generated_names() {
    let tape = Tape::new();
    let x = tape.constant(Array2::from_elem((5, 3), 1.0f64)).named("X");
    let w = tape.param(Array2::from_elem((3, 2), 1.0f64)).named("W");
    let b = tape.param(Array2::from_elem((1, 2), 1.0f64)).named("b");
    let z = x.linear(w, b); // unnamed: T3
    let loss = z.mul(z).sum(); // z used twice
    let eqs: Vec<String> = tape
        .explain(loss)
        .unwrap()
        .lines
        .into_iter()
        .map(|l| format!("{} [{}]", l.equation, l.shapes))
        .collect();
    assert_eq!(
        eqs,
        [
            "dT4 = broadcast(G) [5×2]",
            "dT3 = dT4 ∘ T3 [5×2]",
            "dT3 += dT4 ∘ T3 [5×2]",
            "db = 1ᵀ · dT3 [1×5 · 5×2 → 1×2]",
            "dW = Xᵀ · dT3 [3×5 · 5×2 → 3×2]",
        ]
    );
    assert_eq!(z.name(), None);
    assert_eq!(w.name().as_deref(), Some("W"));
}

/// Every op of the gradcheck table has its equation (none falls back to the generic
/// `vjp_<op>` form), so explain mode cannot silently lag behind a new op.
#[test]
fn every_op_has_an_equation_in_explain_mode() {
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(5);
    let mut seen = std::collections::BTreeSet::new();
    for case in common::cases() {
        let inputs: Vec<Array2<f64>> = (case.shapes)(3, 3)
            .iter()
            .zip(case.domains)
            .map(|(&s, &d)| common::draw(s, d, &mut rng))
            .collect();
        let tape = Tape::new();
        let xs: Vec<_> = inputs.iter().map(|x| tape.param(x.view())).collect();
        let y = (case.f)(&xs);
        let explanation = tape.explain(y).unwrap();
        assert!(!explanation.lines.is_empty(), "{}", case.op);
        for l in &explanation.lines {
            assert!(
                !l.equation.contains("vjp_"),
                "{} has no equation: {}",
                case.op,
                l.equation
            );
            seen.insert(l.op);
        }
    }
    assert!(seen.len() >= 60, "{seen:?}");
}

/// Names appear in the DOT and SVG exports; the SVG is drawn without Graphviz.
#[test]
fn the_graph_as_svg_with_names() {
    let tape = Tape::<f64>::new();
    assert!(tape.to_svg().unwrap().contains("<svg"));
    let x = tape.constant(Array2::from_elem((4, 3), 0.5)).named("X");
    let w = tape.param(Array2::from_elem((3, 2), 0.5)).named("W<1>");
    let h = x.matmul(w).tanh().named("H");
    let _loss = h.sum();
    let dot = tape.to_dot();
    assert!(dot.contains(r"H = tanh #3\n4 × 2"), "{dot}");
    let svg = tape.to_svg().unwrap();
    assert!(svg.trim_end().ends_with("</svg>"));
    for text in [
        "H = tanh #3",
        "X = leaf #0",
        "W&lt;1&gt; = leaf #1",
        "sum #4",
        "4 × 2",
    ] {
        assert!(svg.contains(text), "{text} missing from the SVG");
    }
    // one box per node
    assert!(svg.matches("<rect").count() >= tape.len());
}

/// `to_svg` refuses a graph of one node more than `SVG_MAX_NODES` at once, before any
/// layout, with an error that says to use `to_dot`; it draws one of `SVG_MAX_NODES`.
#[test]
fn to_svg_refuses_a_graph_just_past_the_node_limit() {
    let tape = Tape::<f64>::new();
    let mut h = tape.param(Array2::from_elem((1, 1), 0.5));
    while tape.len() < SVG_MAX_NODES {
        h = h.tanh();
    }
    assert!(tape.to_svg().unwrap().contains("tanh #999"));
    let _ = h.tanh();
    let err = tape.to_svg().unwrap_err();
    assert_eq!(err.op(), "to_svg");
    assert!(
        matches!(err.kind(), ErrorKind::DrawingTooLarge { nodes, .. } if *nodes == SVG_MAX_NODES + 1),
        "{err}"
    );
    assert!(err.to_string().contains("Tape::to_dot"), "{err}");
}

/// Graphs well under the node limit whose layered drawing `layout-rs` would take long over
/// are refused too: a weight shared by every layer of a chain (each of its edges bends
/// once per layer it crosses; 100 nodes took 16 s to lay out) and one very wide layer (a
/// concatenation of 300 tensors took over 5 s).
#[test]
fn to_svg_refuses_small_graphs_whose_drawing_is_large() {
    let tape = Tape::<f64>::new();
    let w = tape.param(Array2::from_elem((3, 3), 0.1));
    let mut h = tape.constant(Array2::from_elem((2, 3), 0.5));
    while tape.len() < 100 {
        h = h.matmul(w).tanh().add(h);
    }
    let err = tape.to_svg().unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::DrawingTooLarge { nodes: 101, .. }),
        "{err}"
    );
    assert!(tape.to_dot().contains("n100"));

    let tape = Tape::<f64>::new();
    let xs: Vec<_> = (0..300)
        .map(|_| tape.param(Array2::zeros((1, 1))))
        .collect();
    let _ = Tensor::concat_rows(&xs);
    let err = tape.to_svg().unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::DrawingTooLarge { nodes: 301, .. }),
        "{err}"
    );

    // a chain of 700 ops sharing nothing is drawn
    let tape = Tape::<f64>::new();
    let mut h = tape.constant(Array2::from_elem((2, 3), 0.5));
    while tape.len() < 700 {
        h = h.matmul(tape.param(Array2::from_elem((3, 3), 0.1))).tanh();
    }
    assert!(tape.to_svg().is_ok());
}

/// A small graph on which `layout-rs`'s placement panics is drawn all the same (with its
/// simple placement), and the tape is usable afterwards.
#[test]
fn to_svg_draws_a_graph_on_which_layout_rs_panics() {
    let tape = Tape::new();
    common::layout_rs_panic_graph(&tape);
    let svg = tape.to_svg().unwrap();
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.matches("<rect").count() >= tape.len());
    // nothing is left borrowed or poisoned
    let x = tape.param(Array2::from_elem((1, 1), 2.0));
    let grads = tape.backward(x.square().sum()).unwrap();
    assert_eq!(grads.get(x).unwrap()[[0, 0]], 4.0);
    assert!(tape.to_svg().unwrap().contains("square"));
}

/// Control characters in a name are written as escapes: the SVG stays well-formed XML.
#[test]
fn to_svg_escapes_control_characters_in_names() {
    let tape = Tape::<f64>::new();
    let _ = tape
        .param(Array2::zeros((1, 1)))
        .named("a\u{1}b\u{0}c\u{1b}[0m\u{ffff}\td");
    let svg = tape.to_svg().unwrap();
    let bad = svg.chars().find(|&c| {
        (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{fffe}' | '\u{ffff}')
    });
    assert_eq!(bad, None, "a character XML does not allow");
    assert!(svg.contains(r"a\u{1}b\u{0}c\u{1b}[0m\u{ffff}"), "{svg}");
}

/// Explain mode prints names of any length: the columns are padded by hand, not by a
/// format width (which must fit in 16 bits).
#[test]
fn explain_prints_names_longer_than_a_format_width() {
    let tape = Tape::<f64>::new();
    let long = "W".repeat(70_000);
    let w = tape.param(Array2::from_elem((2, 2), 0.5)).named(&long);
    let h = tape.param(Array2::from_elem((2, 2), 0.5)).named("H");
    let loss = w.matmul(h).sum();
    let text = tape.explain(loss).unwrap().to_string();
    assert_eq!(text.lines().count(), 3, "{}", &text[..200]);
    assert!(text.contains(&format!("d{long} = ")));
    // the columns still line up: every line's `[` at the same character
    let columns: Vec<usize> = text
        .lines()
        .map(|l| l.chars().position(|c| c == '[').unwrap())
        .collect();
    assert!(columns.iter().all(|&c| c == columns[0]), "{columns:?}");
}

/// Anomaly detection names the first op that made NaN or infinity from finite operands:
/// in the forward pass (ln 0 = −∞; the NaN that follows is not blamed on later ops) ...
#[test]
fn anomaly_detection_names_the_op_that_made_a_non_finite_value() {
    use tapegrad::{AnomalySite, ErrorKind, NonFinite};
    let x = ndarray::array![[1.0f64, 0.0, 2.0]];
    let tape = Tape::new();
    tape.detect_anomaly(true);
    let xt = tape.param(&x);
    let line = line!() + 1;
    let l = xt.log();
    let nan = l.mul(tape.constant(ndarray::array![[0.0, 0.0, 0.0]])); // −∞ · 0 = NaN
    let loss = nan.sum();
    let err = tape.anomaly().expect("ln 0 is −∞");
    assert_eq!((err.op(), err.location().line()), ("log", line));
    assert_eq!(
        err.kind(),
        &ErrorKind::Anomaly {
            site: AnomalySite::Forward,
            shape: (1, 3),
            position: (0, 1),
            value: NonFinite::NegInfinity,
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "log: anomaly in the forward pass: the result (1 × 3) holds -inf at [0, 1], \
             computed from finite inputs, called at tests/api/inspect.rs:{line}:{}",
            err.location().column()
        )
    );
    // backward refuses to run on it
    assert_eq!(tape.backward(loss).unwrap_err(), err);
}

/// ... and in the backward pass: √x is finite at 0 but its gradient G / 2√x is not.
#[test]
fn anomaly_detection_names_the_rule_that_made_a_non_finite_gradient() {
    use tapegrad::{AnomalySite, ErrorKind, NonFinite};
    let x = ndarray::array![[4.0f64, 0.0], [1.0, 9.0]];
    let w = ndarray::array![[1.0f64], [1.0]];
    let tape = Tape::new();
    tape.detect_anomaly(true);
    let line = line!() + 1;
    let r = tape.param(&x).sqrt();
    let loss = r.matmul(tape.param(&w)).sum();
    assert!(tape.anomaly().is_none());
    let err = tape.backward(loss).unwrap_err();
    assert_eq!((err.op(), err.location().line()), ("sqrt", line));
    assert_eq!(
        err.kind(),
        &ErrorKind::Anomaly {
            site: AnomalySite::Gradient { input: 0 },
            shape: (2, 2),
            position: (0, 1),
            value: NonFinite::Infinity,
        }
    );
    assert!(
        err.to_string()
            .contains("the rule's gradient for input 0 (2 × 2) holds +inf at [0, 1]")
    );
    // off (the default): the infinity flows into the gradient silently
    let tape = Tape::new();
    let xt = tape.param(&x);
    let loss = xt.sqrt().matmul(tape.param(&w)).sum();
    let grads = tape.backward(loss).unwrap();
    assert!(grads.get(xt).unwrap()[[0, 1]].is_infinite());
    // NaN data put on the tape is reported at the leaf, and a NaN seed at backward
    let tape = Tape::new();
    tape.detect_anomaly(true);
    let bad = tape.constant(ndarray::array![[f64::NAN]]);
    let err = tape.anomaly().unwrap();
    assert_eq!(err.op(), "leaf");
    assert!(matches!(
        err.kind(),
        ErrorKind::Anomaly {
            site: AnomalySite::Leaf,
            ..
        }
    ));
    assert!(err.to_string().starts_with(
        "leaf: anomaly in the data put on the tape (1 × 1) holds NaN at [0, 0], called at"
    ));
    let _ = bad;
    let tape = Tape::new();
    tape.detect_anomaly(true);
    let y = tape.param(&w).tanh();
    let seed = ndarray::array![[1.0], [f64::NAN]];
    let err = tape
        .backward_with(y, tapegrad::BackwardOptions::new().seed(seed))
        .unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::Anomaly {
            site: AnomalySite::Seed,
            position: (1, 0),
            ..
        }
    ));
}

/// The profile counts calls and bytes per op and call site, forward and backward; only
/// tapes created while profiling report. (Times are not asserted: they depend on load.)
#[test]
fn the_profile_counts_calls_and_bytes_per_call_site() {
    use tapegrad::inspect::profile;
    let x = Array2::from_elem((32, 16), 0.5f64);
    let w = Array2::from_elem((16, 8), 0.1f64);
    let before = Tape::new(); // not profiled
    let _ = before.param(&w).sum();
    profile::start();
    let line = line!() + 4;
    for _ in 0..3 {
        let tape = Tape::new();
        let xt = tape.constant(&x);
        let h = xt.matmul(tape.param(&w)).tanh();
        let loss = h.sum();
        tape.backward(loss).unwrap();
    }
    let _ = before.param(&w).mean(); // an old tape: still not profiled
    let p = profile::finish();
    let site = |op: &str| {
        p.sites
            .iter()
            .find(|s| s.op == op)
            .unwrap_or_else(|| panic!("{op}: {p}"))
    };
    let matmul = site("matmul");
    assert_eq!(matmul.location.unwrap().line(), line);
    assert_eq!((matmul.forward_calls, matmul.backward_calls), (3, 3));
    assert_eq!(matmul.forward_bytes, 3 * 32 * 8 * 8);
    // the rule creates dW (16 × 8) once per pass; X is a constant
    assert_eq!(matmul.backward_bytes, 3 * 16 * 8 * 8);
    let tanh = site("tanh");
    assert_eq!(
        (tanh.forward_calls, tanh.backward_calls, tanh.backward_bytes),
        (3, 3, 3 * 32 * 8 * 8)
    );
    assert_eq!(site("sum").forward_calls, 3);
    assert!(p.sites.iter().all(|s| s.op != "mean"));
    assert_eq!(p.backward_passes, 3);
    // 3 steps × (2 leaves + matmul + tanh + sum)
    assert_eq!(p.records, 15);
    let by_op = p.by_op();
    assert_eq!(
        by_op.iter().find(|s| s.op == "leaf").unwrap().forward_calls,
        6
    );
    assert!(by_op.iter().all(|s| s.location.is_none()));
    let table = p.to_string();
    assert!(
        table.contains("by call site:")
            && table.contains("by op:")
            && table.contains("tape overhead")
    );
    assert!(
        table.contains(&format!("tests/api/inspect.rs:{line}")),
        "{table}"
    );
    // finished: new tapes are not profiled
    let after = Tape::new();
    let _ = after.param(&w).sum();
    assert_eq!(profile::finish().records, 0);
}

/// A rematerialised block is profiled as its own op: the ops inside it, run again in
/// backward on tapes of their own, are not counted a second time.
#[test]
fn the_profile_counts_a_rematerialised_block_once() {
    use tapegrad::inspect::profile;
    let (x, w) = (
        Array2::from_elem((8, 4), 0.5f64),
        Array2::from_elem((4, 4), 0.1f64),
    );
    profile::start();
    let tape = Tape::new();
    let (xt, wt) = (tape.constant(&x), tape.param(&w));
    let y = tape
        .remat(&[xt, wt], |v| Ok(v[0].try_matmul(v[1])?.tanh()))
        .unwrap();
    tape.backward(y.sum()).unwrap();
    let p = profile::finish();
    let ops: Vec<&str> = p.by_op().iter().map(|s| s.op).collect();
    assert!(ops.contains(&"remat") && ops.contains(&"sum"), "{ops:?}");
    assert!(
        !ops.contains(&"tanh") && !ops.contains(&"matmul"),
        "{ops:?}"
    );
    assert_eq!(p.backward_passes, 1);
}

/// The profile attributes the ops a container's layers record to those layers: the two
/// `linear` ops of a two-layer model share a line of tapegrad's source but not a layer,
/// forward and backward; nested layers get their path.
#[test]
fn the_profile_tells_layers_apart() {
    use rand::SeedableRng;
    use tapegrad::inspect::profile;
    use tapegrad::nn::{Activation, Init, Module, Sequential, Tanh, mlp};
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let model = Sequential::new()
        .with(mlp::<f64>(
            &[4, 3, 2],
            Activation::Tanh,
            Activation::Identity,
            Init::Glorot,
            &mut rng,
        ))
        .with(Tanh);
    let x = Array2::from_elem((5, 4), 0.5);
    profile::start();
    for _ in 0..2 {
        let tape = Tape::new();
        let y = model.forward(tape.constant(&x)).unwrap();
        tape.backward(y.sum()).unwrap();
    }
    let p = profile::finish();
    let linear: Vec<_> = p.sites.iter().filter(|s| s.op == "linear").collect();
    assert_eq!(linear.len(), 2, "{p}");
    let mut layers: Vec<_> = linear.iter().map(|s| s.layer.clone().unwrap()).collect();
    layers.sort();
    assert_eq!(
        layers,
        [("0.0".to_string(), "Linear"), ("0.2".to_string(), "Linear")]
    );
    assert_eq!(linear[0].location, linear[1].location);
    for s in &linear {
        assert_eq!((s.forward_calls, s.backward_calls), (2, 2), "{p}");
    }
    let tanh: Vec<_> = p.sites.iter().filter(|s| s.op == "tanh").collect();
    let mut tanh_layers: Vec<_> = tanh.iter().map(|s| s.layer.clone().unwrap().0).collect();
    tanh_layers.sort();
    assert_eq!(tanh_layers, ["0.1", "1"]);
    // the sum is outside any layer
    let sum = p.sites.iter().find(|s| s.op == "sum").unwrap();
    assert_eq!(sum.layer, None);
    let by_layer = p.by_layer();
    assert_eq!(by_layer.len(), 5, "{p}"); // 0.0, 0.1, 0.2, 1 and none
    let first = by_layer
        .iter()
        .find(|s| s.layer == Some(("0.0".to_string(), "Linear")))
        .unwrap();
    // its two leaves and the linear op, twice
    assert_eq!(first.forward_calls, 6);
    let table = p.to_string();
    assert!(
        table.contains("0.2 (Linear)") && table.contains("by layer:"),
        "{table}"
    );
}
