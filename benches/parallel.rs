//! Data parallelism in one process (`tapegrad::parallel::DataParallel`): W1 and W2 train
//! steps over 2 shards on 2 threads against the single-tape step on 1 thread, both with
//! BLAS at 1 thread, in paired rounds (median of per-round ratios).
//!
//! ```text
//! OPENBLAS_NUM_THREADS=1 RAYON_NUM_THREADS=2 cargo bench -p tapegrad-benches --features openblas --bench parallel
//! ```

mod common;

use std::hint::black_box;

use common::{Mlp, TapeTrainer, W1, W2, Workload, seconds_per_call, setup};
use ndarray::{Array2, s};
use tapegrad::parallel::DataParallel;
use tapegrad::{BackwardOptions, Tape};

/// A train step of the workload over `shards` shards.
struct Sharded {
    net: Mlp,
    dp: DataParallel<f32>,
}

impl Sharded {
    fn step(&mut self, x: &Array2<f32>, y: &Array2<f32>) -> f32 {
        let net = &self.net;
        let (loss, grads) = self
            .dp
            .step(x.nrows(), |rows, reuse| {
                let tape = Tape::new();
                let loss =
                    net.linear_loss(&tape, x.slice(s![rows.clone(), ..]), y.slice(s![rows, ..]));
                let opts = BackwardOptions::new().reuse(reuse);
                Ok((loss.item(), tape.backward_with(loss, opts)?))
            })
            .expect("shapes fit");
        self.net.sgd(grads);
        loss
    }
}

fn run(w: Workload, steps: usize, rounds: usize) {
    let (net, x, y) = setup(w);
    let mut one = TapeTrainer::new(net.clone());
    let sharded = |shards| Sharded {
        net: net.clone(),
        dp: DataParallel::new(shards),
    };
    let (mut dp1, mut dp2) = (sharded(1), sharded(2));
    let mut f_one = || {
        black_box(one.step(&x, &y));
    };
    let mut f_dp1 = || {
        black_box(dp1.step(&x, &y));
    };
    let mut f_dp2 = || {
        black_box(dp2.step(&x, &y));
    };
    for _ in 0..2 {
        f_one();
        f_dp1();
        f_dp2();
    }
    let (mut r1, mut r2, mut t) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let a = seconds_per_call(steps, &mut f_one);
        let b = seconds_per_call(steps, &mut f_dp1);
        let c = seconds_per_call(steps, &mut f_dp2);
        r1.push(b / a);
        r2.push(a / c);
        t.push((a, c));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (o, s2) = (median(&mut r1), median(&mut r2));
    let (a, c) = t[t.len() / 2];
    println!(
        "{}: 1 tape {:.2} ms; 2 shards on 2 threads {:.2} ms: speed-up {s2:.2}; 1 shard through DataParallel / plain {o:.3}",
        w.name,
        a * 1e3,
        c * 1e3
    );
}

fn main() {
    println!(
        "OPENBLAS_NUM_THREADS={}, rayon threads {}",
        std::env::var("OPENBLAS_NUM_THREADS").unwrap_or_else(|_| "unset".into()),
        rayon::current_num_threads()
    );
    run(W1, 20, 11);
    run(W2, 2, 7);
}
