//! The LSTM of ADBench/GradBench (diagonal weights, 14-wide cells) on a short text, one
//! gradient per call: thousands of ops on 1 × 14 rows, where the tape's per-op cost is
//! all there is. Shared by `benches/tape.rs` and `benches/instructions.rs`.

#![allow(dead_code)]

use ndarray::{Array2, s};
use tapegrad::Tape;

/// Bits per character (the cell width).
pub const B: usize = 14;

/// Parameters and a text: `main` holds per layer a row of weights and a row of biases
/// (forget, input, output, change gates, B each), `extra` the input weights, output
/// weights and output biases, `state` per layer the hidden and cell rows, `text` one row
/// of 0/1 bits per character.
pub struct Lstm {
    pub main: Array2<f64>,
    pub extra: Array2<f64>,
    pub state: Array2<f64>,
    pub text: Array2<f64>,
}

impl Lstm {
    /// `layers` layers on `chars` characters, from a fixed pattern.
    pub fn new(layers: usize, chars: usize) -> Self {
        let f = |i: usize, j: usize, s: usize| ((i * 31 + j * 17 + s) % 97) as f64 / 97.0;
        Lstm {
            main: Array2::from_shape_fn((2 * layers, 4 * B), |(i, j)| f(i, j, 1)),
            extra: Array2::from_shape_fn((3, B), |(i, j)| f(i, j, 2)),
            state: Array2::from_shape_fn((2 * layers, B), |(i, j)| f(i, j, 3)),
            text: Array2::from_shape_fn((chars, B), |(i, j)| {
                ((i * 7 + j * 3) % 5 < 2) as u8 as f64
            }),
        }
    }

    /// The loss and its gradient (as the sum of every element of the gradients of
    /// `main` and `extra`, to be used), and the number of tensors recorded.
    pub fn loss_and_gradient(&self) -> (f64, f64, usize) {
        let tape = Tape::new();
        let (main, extra) = (tape.param(&self.main), tape.param(&self.extra));
        let layers = self.main.nrows() / 2;
        // each gate's weights and biases, sliced once (views of `main`)
        let gates: Vec<Vec<_>> = (0..2 * layers)
            .map(|row| {
                (0..4)
                    .map(|k| main.slice(row..row + 1, k * B..(k + 1) * B))
                    .collect()
            })
            .collect();
        let gate = |row: usize, k: usize| gates[row][k];
        let mut hidden: Vec<_> = (0..layers)
            .map(|i| tape.constant(self.state.slice(s![2 * i..2 * i + 1, ..])))
            .collect();
        let mut cell: Vec<_> = (0..layers)
            .map(|i| tape.constant(self.state.slice(s![2 * i + 1..2 * i + 2, ..])))
            .collect();
        let (in_w, out_w, out_b) = (
            extra.slice_rows(0..1),
            extra.slice_rows(1..2),
            extra.slice_rows(2..3),
        );
        let chars = self.text.nrows();
        let mut total = tape.scalar(0.0);
        for t in 0..chars - 1 {
            let mut y = tape.constant(self.text.slice(s![t..t + 1, ..])).mul(in_w);
            for i in 0..layers {
                let (w, b) = (2 * i, 2 * i + 1);
                let forget = y.mul(gate(w, 0)).add(gate(b, 0)).sigmoid();
                let input = hidden[i].mul(gate(w, 1)).add(gate(b, 1)).sigmoid();
                let output = y.mul(gate(w, 2)).add(gate(b, 2)).sigmoid();
                let change = hidden[i].mul(gate(w, 3)).add(gate(b, 3)).tanh();
                cell[i] = cell[i].mul(forget).add(input.mul(change));
                hidden[i] = output.mul(cell[i].tanh());
                y = hidden[i];
            }
            let pred = y.mul(out_w).add(out_b);
            let lse = pred.exp().sum().add_scalar(2.0).log();
            let next = tape.constant(self.text.slice(s![t + 1..t + 2, ..]));
            total = total.add(next.mul(pred.sub(lse)).sum());
        }
        let loss = total.mul_scalar(-1.0 / ((chars - 1) * B) as f64);
        let nodes = tape.len();
        let grads = tape.backward(loss).expect("a scalar loss");
        let g = grads.wrt(&self.main).unwrap().sum() + grads.wrt(&self.extra).unwrap().sum();
        (loss.item(), g, nodes)
    }
}
