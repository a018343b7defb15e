//! The `model` family: derivatives and checks with respect to a model's parameters
//! (`functional::model_hvp`, `model_jvp`, `check::gradcheck_model`) on random small
//! multilayer perceptrons (the empty one included), with every legal and illegal use of a
//! direction (missing, extra or wrong-shaped parameters, NaN), inputs of a wrong or empty
//! shape, and a loss that panics.
//!
//! Invariants: a legal call succeeds, and its `H·v` and `J·u` agree with central
//! differences of first-order backward (and the model gradcheck passes) where the inputs
//! are finite; an illegal direction is `ErrorKind::Direction`; a wrong input is a typed
//! error; a NaN direction gives a result, never a panic; an injected panic reaches the
//! caller as it is.

use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tapegrad::check::{CheckError, CheckOptions, gradcheck_model};
use tapegrad::functional::{Named, model_hvp, model_jvp};
use tapegrad::nn::{Activation, Init, Module, Parameters, Sequential, mlp};
use tapegrad::{ErrorKind, Result, Tape, Tensor};

use crate::oracle::randn;
use crate::{Family, catch, inject, injected, message};

pub(crate) const FAMILY: Family = Family {
    name: "model",
    default: 60,
    run,
    describe,
};

/// How the direction given is made.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Direction {
    Legal,
    Missing,
    Extra,
    WrongShape,
    NaN,
}

/// What the loss does.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Loss {
    Legal,
    /// The input has one column too many: the first layer's matmul fails.
    WrongInput,
    /// No rows.
    EmptyBatch,
    Panics,
}

#[derive(Debug)]
struct Program {
    sizes: Vec<usize>,
    hidden: Activation,
    batch: usize,
    direction: Direction,
    loss: Loss,
    model_seed: u64,
}

fn generate(seed: u64) -> Program {
    let mut rng = StdRng::seed_from_u64(seed);
    let layers = rng.random_range(0..4);
    let sizes = (0..=layers).map(|_| rng.random_range(1..5)).collect();
    let hidden =
        [Activation::Tanh, Activation::Sigmoid, Activation::Identity][rng.random_range(0..3)];
    let direction = [
        Direction::Legal,
        Direction::Legal,
        Direction::Missing,
        Direction::Extra,
        Direction::WrongShape,
        Direction::NaN,
    ][rng.random_range(0..6)];
    let loss = [
        Loss::Legal,
        Loss::Legal,
        Loss::Legal,
        Loss::WrongInput,
        Loss::EmptyBatch,
        Loss::Panics,
    ][rng.random_range(0..6)];
    Program {
        sizes,
        hidden,
        batch: rng.random_range(1..4),
        direction,
        loss,
        model_seed: rng.random(),
    }
}

fn describe(seed: u64) -> String {
    format!("{:?}", generate(seed))
}

/// `Σ (model(x) − y)² / 2`, or the program's illegal variant of it.
fn loss<'t>(
    p: &Program,
    m: &'t Sequential<f64>,
    x: &'t Array2<f64>,
    y: &'t Array2<f64>,
    tape: &'t Tape<'t, f64>,
) -> Result<Tensor<'t, f64>> {
    if p.loss == Loss::Panics {
        inject();
    }
    let r = m.forward(tape.constant(x))?.try_sub(tape.constant(y))?;
    Ok(r.square().sum().mul_scalar(0.5))
}

/// The gradient of the loss by first-order backward, by name.
fn gradient(p: &Program, m: &Sequential<f64>, x: &Array2<f64>, y: &Array2<f64>) -> Named<f64> {
    let tape = Tape::new();
    let l = loss(p, m, x, y, &tape).expect("a legal loss");
    let grads = tape.backward(l).expect("backward of a legal loss");
    m.gradients(&grads)
        .into_iter()
        .map(|(n, g)| (n, g.expect("every parameter of an mlp is reached").clone()))
        .collect()
}

fn moved(m: &Sequential<f64>, d: &Named<f64>, t: f64) -> Sequential<f64> {
    let mut m = m.clone();
    m.visit_mut(&mut |name, p| p.scaled_add(t, &d[name]));
    m
}

fn near(a: &Array2<f64>, b: &Array2<f64>, tol: f64) -> bool {
    a.dim() == b.dim()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()))
}

fn run(seed: u64) -> bool {
    let p = generate(seed);
    let mut rng = StdRng::seed_from_u64(p.model_seed);
    let model = mlp::<f64>(
        &p.sizes,
        p.hidden,
        Activation::Identity,
        Init::Glorot,
        &mut rng,
    );
    let (ins, outs) = (p.sizes[0], *p.sizes.last().unwrap());
    let batch = if p.loss == Loss::EmptyBatch {
        0
    } else {
        p.batch
    };
    let cols = if p.loss == Loss::WrongInput {
        ins + 1
    } else {
        ins
    };
    let x = randn((batch, cols), &mut rng);
    let y = randn((batch, outs), &mut rng);
    let mut d: Named<f64> = model
        .parameters()
        .into_iter()
        .map(|(n, a)| (n, randn(a.dim(), &mut rng)))
        .collect();
    let first = d.keys().next().cloned();
    match (p.direction, &first) {
        (Direction::Missing, Some(name)) => {
            d.remove(name);
        }
        (Direction::Extra, _) => {
            d.insert("no.such".into(), Array2::zeros((1, 1)));
        }
        (Direction::WrongShape, Some(name)) => {
            let (r, c) = d[name].dim();
            d.insert(name.clone(), Array2::zeros((c + 1, r)));
        }
        (Direction::NaN, Some(name)) => {
            d.get_mut(name).unwrap()[[0, 0]] = f64::NAN;
        }
        _ => {}
    }
    let bad_direction = matches!(
        (p.direction, &first),
        (Direction::Extra, _) | (Direction::Missing | Direction::WrongShape, Some(_))
    );
    // a wrong input fails the loss: in the first layer, or (in the empty model) against
    // the target, unless that is one column and broadcasts
    let bad_input = p.loss == Loss::WrongInput && (p.sizes.len() > 1 || outs != 1);
    let empty = model.parameter_count() == 0;

    let hvp = catch(|| model_hvp(&model, |m, s| loss(&p, m, &x, &y, s.tape()), &d));
    let jvp = catch(|| model_jvp(&model, |m, s| m.forward(s.constant(&x)), &d));
    let check = catch(|| {
        gradcheck_model(
            &model,
            |m, s| loss(&p, m, &x, &y, s.tape()),
            &CheckOptions::default(),
        )
    });
    if p.loss == Loss::Panics {
        // the direction is checked before the loss runs, and a model without parameters
        // is refused before it runs
        let expected = [(hvp.err(), !bad_direction), (check.err(), !empty)];
        for (e, runs) in expected {
            match e {
                Some(e) if injected(&*e) => assert!(runs, "the loss ran on an illegal call"),
                Some(e) => panic!("a panic other than the injected one: {}", message(&*e)),
                None => assert!(!runs, "the injected panic did not reach the caller"),
            }
        }
        return false;
    }
    let hvp = hvp.unwrap_or_else(|e| panic!("model_hvp panicked: {}", message(&*e)));
    let jvp = jvp.unwrap_or_else(|e| panic!("model_jvp panicked: {}", message(&*e)));
    let check = check.unwrap_or_else(|e| panic!("gradcheck_model panicked: {}", message(&*e)));
    if bad_direction {
        for r in [hvp.map(|_| ()), jvp.map(|_| ())] {
            let e = r.expect_err("an illegal direction was accepted");
            assert!(matches!(e.kind(), ErrorKind::Direction { .. }), "{e}");
        }
        return false;
    }
    let jvp_input_fails = p.loss == Loss::WrongInput && p.sizes.len() > 1;
    match jvp {
        Err(e) => assert!(jvp_input_fails, "model_jvp failed on a legal call: {e}"),
        Ok(_) => assert!(!jvp_input_fails, "model_jvp accepted a wrong input"),
    }
    if bad_input {
        assert!(hvp.is_err(), "model_hvp accepted a wrong input");
        assert!(
            matches!(
                check,
                Err(CheckError::Tape(_)) | Err(CheckError::NoParameters)
            ),
            "{check:?}"
        );
        return false;
    }
    let r = hvp.unwrap_or_else(|e| panic!("model_hvp failed on a legal call: {e}"));
    if empty {
        assert_eq!(check, Err(CheckError::NoParameters));
        return false;
    }
    if p.direction == Direction::NaN || batch == 0 {
        return false; // nothing to compare with, and no panic
    }
    check.unwrap_or_else(|e| panic!("the model gradcheck failed: {e}"));
    let eps = 1e-5;
    let (plus, minus) = (
        gradient(&p, &moved(&model, &d, eps), &x, &y),
        gradient(&p, &moved(&model, &d, -eps), &x, &y),
    );
    for (name, hv) in &r.hvp {
        let numeric = (&plus[name] - &minus[name]) / (2.0 * eps);
        assert!(near(hv, &numeric, 1e-5), "H·v of {name}: {hv} vs {numeric}");
    }
    let g = gradient(&p, &model, &x, &y);
    for (name, g) in &g {
        assert!(near(&r.gradient[name], g, 1e-12), "gradient of {name}");
    }
    true
}
