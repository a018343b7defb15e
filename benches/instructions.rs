//! Train steps of one workload for an instruction count: `valgrind --tool=callgrind` runs
//! this binary, which does nothing else (no criterion, no timing), so instruction counts
//! of the tape and of the hand-written step compare without noise from the machine's load.
//!
//! ```text
//! benches/callgrind.sh            # W0 and W1, tape / nn / hand, per step and ratios
//! ```
//!
//! By hand: `instructions <W0|W1|W2> <tape|plain|linear|nn|hand|floor> <steps>` runs one warm-up step and
//! then `steps` steps; the difference of two counts (say 20 and 10 steps) divided by the
//! difference in steps is the count of one steady-state step, without the set-up. Run by
//! `cargo bench` (which passes `--bench`), it prints this usage and exits.

#[path = "common/cell.rs"]
mod cell;
mod common;
#[path = "common/transformer.rs"]
mod transformer;

use std::hint::black_box;

use common::{FloorTrainer, HandTrainer, NnTrainer, Path, TapeTrainer, W0, W1, W2, setup};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: instructions <W0|W1|W2> <tape|plain|linear|nn|hand|floor> <steps>, or transformer <steps>, or lstm <steps>";
    if args.len() == 2 && args[0] == "lstm" {
        // the GradBench LSTM's gradient, 2 layers, 16 characters: 1,200 ops of 1 × 14
        let steps: usize = args[1].parse().expect(usage);
        let lstm = cell::Lstm::new(2, 16);
        for _ in 0..=steps {
            black_box(lstm.loss_and_gradient());
        }
        return;
    }
    if args.len() == 2 && args[0] == "transformer" {
        let steps: usize = args[1].parse().expect(usage);
        let (x, labels) = transformer::batch();
        let mut model = transformer::transformer_digits::Transformer::new(7);
        let mut opt = tapegrad::optim::Adam::adamw(1e-3, 0.01);
        for _ in 0..=steps {
            black_box(transformer::step(&mut model, &mut opt, &x, &labels));
        }
        return;
    }
    if args.len() != 3 {
        eprintln!("{usage} (see benches/callgrind.sh)");
        return;
    }
    let workload = match args[0].as_str() {
        "W0" => W0,
        "W1" => W1,
        "W2" => W2,
        other => panic!("unknown workload {other}; {usage}"),
    };
    let steps: usize = args[2].parse().expect(usage);
    let (net, x, y) = setup(workload);
    let mut step: Box<dyn FnMut() -> f32> = match args[1].as_str() {
        "tape" => {
            let mut t = TapeTrainer::new(net);
            Box::new(move || t.step(&x, &y))
        }
        "plain" => {
            let mut t = TapeTrainer::with(net, Path::Plain);
            Box::new(move || t.step(&x, &y))
        }
        "linear" => {
            let mut t = TapeTrainer::with(net, Path::Linear);
            Box::new(move || t.step(&x, &y))
        }
        "nn" => {
            let mut t = NnTrainer::new(net);
            Box::new(move || t.step(&x, &y))
        }
        "hand" => {
            let mut t = HandTrainer::new(net);
            Box::new(move || t.step(&x, &y))
        }
        "floor" => {
            let mut t = FloorTrainer::new(net);
            Box::new(move || t.step(&x, &y))
        }
        other => panic!("unknown trainer {other}; {usage}"),
    };
    black_box(step());
    for _ in 0..steps {
        black_box(step());
    }
}
