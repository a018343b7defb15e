//! `lstm`: ADBench's LSTM (diagonal weights) loss over a character sequence and its
//! gradient with respect to `main_params` and `extra_params`, by backward.
//!
//! A layer's step reads the input only through the forget and output gates, and its own
//! hidden state through the input gate and the candidate. So the model runs layer by layer
//! (as cuDNN runs a stacked LSTM): each layer's forget and output gates for the whole
//! sequence are two batched ops on the `(C − 1) × B` matrix of its inputs, and only the
//! recurrence is a loop over characters, on 1 × B rows. The outputs and the loss are
//! batched again. Every element is computed by the reference's formulas; only the order
//! in which independent elements are computed differs.

use ndarray::{Array2, Axis};
use serde_json::Value;
use tapegrad::{Tape, Tensor};

use crate::input::{err, field, matrix};
use crate::runs::{Runs, measure};

struct Input {
    main: Array2<f64>,
    extra: Array2<f64>,
    state: Array2<f64>,
    sequence: Array2<f64>,
}

fn read(input: &Value) -> Result<Input, String> {
    let main = matrix(field(input, "main_params")?, "main_params", None)?;
    let b = main.ncols() / 4;
    let extra = matrix(field(input, "extra_params")?, "extra_params", Some(b))?;
    let state = matrix(field(input, "state")?, "state", Some(b))?;
    let sequence = matrix(field(input, "sequence")?, "sequence", Some(b))?;
    let layers = main.nrows() / 2;
    if b == 0
        || main.ncols() != 4 * b
        || main.nrows() != 2 * layers
        || layers == 0
        || extra.nrows() != 3
        || state.nrows() != 2 * layers
        || sequence.nrows() < 2
    {
        return Err("lstm: inconsistent shapes".into());
    }
    Ok(Input {
        main,
        extra,
        state,
        sequence,
    })
}

/// The loss; `main` (2L × 4B) and `extra` (3 × B) are tensors.
fn objective<'t>(
    input: &'t Input,
    main: Tensor<'t, f64>,
    extra: Tensor<'t, f64>,
) -> Tensor<'t, f64> {
    let tape = main.tape();
    let b = input.main.ncols() / 4;
    let layers = input.main.nrows() / 2;
    let steps = input.sequence.nrows() - 1;
    let sequence = tape.constant(&input.sequence);
    let state = tape.constant(&input.state);
    let gate = |row: usize, g: usize| main.slice(row..row + 1, g * b..(g + 1) * b);
    let (in_weight, out_weight, out_bias) = (
        extra.slice_rows(0..1),
        extra.slice_rows(1..2),
        extra.slice_rows(2..3),
    );
    // each layer's input for every step: (C − 1) × B
    let mut x = sequence.slice_rows(0..steps) * in_weight;
    for i in 0..layers {
        let (w, bias) = (2 * i, 2 * i + 1);
        let forget = (x * gate(w, 0) + gate(bias, 0)).sigmoid();
        let outgate = (x * gate(w, 2) + gate(bias, 2)).sigmoid();
        let (wi, bi, wc, bc) = (gate(w, 1), gate(bias, 1), gate(w, 3), gate(bias, 3));
        let mut h = state.slice_rows(2 * i..2 * i + 1);
        let mut c = state.slice_rows(2 * i + 1..2 * i + 2);
        let mut hidden = Vec::with_capacity(steps);
        for t in 0..steps {
            let ingate = (h * wi + bi).sigmoid();
            let change = (h * wc + bc).tanh();
            c = c * forget.slice_rows(t..t + 1) + ingate * change;
            h = outgate.slice_rows(t..t + 1) * c.tanh();
            hidden.push(h);
        }
        x = Tensor::concat_rows(&hidden);
    }
    let ypred = x * out_weight + out_bias;
    let lse = (ypred.exp().sum_axis(Axis(1)) + 2.0).log(); // (sic) no shift, "+ 2"
    let total = (sequence.slice_rows(1..steps + 1) * (ypred - lse)).sum();
    total * (-1.0 / (steps * b) as f64)
}

pub fn evaluate(function: &str, input: &Value) -> Result<crate::runs::Evaluated, String> {
    let inp = read(input)?;
    let runs = Runs::of(input);
    match function {
        "objective" => measure(
            runs,
            || {
                let tape = Tape::new();
                let y = objective(&inp, tape.constant(&inp.main), tape.constant(&inp.extra));
                Ok(y.item())
            },
            Value::from,
        ),
        "jacobian" => measure(
            runs,
            || {
                let tape = Tape::new();
                let (main, extra) = (tape.param(&inp.main), tape.param(&inp.extra));
                let mut grads = tape.backward(objective(&inp, main, extra)).map_err(err)?;
                let dm = grads.take(main).ok_or("no gradient")?;
                let de = grads.take(extra).ok_or("no gradient")?;
                Ok(dm.iter().chain(de.iter()).copied().collect::<Vec<f64>>())
            },
            Value::from,
        ),
        _ => Err(crate::protocol::unknown("lstm", function)),
    }
}
