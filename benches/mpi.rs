//! Data parallelism over MPI ranks (`tapegrad::parallel::mpi`): the W2 train step on 1 and
//! on 2 ranks, each rank with one BLAS thread, and the time of one allreduce of W2's
//! 33.6 MB of gradients. Run by `benches/mpi.sh` (which builds this and starts it under
//! `mpirun -np 1` and `-np 2`):
//!
//! ```text
//! benches/mpi.sh
//! ```
//!
//! `TAPEGRAD_W2_ROWS=n` uses the first `n` rows of the batch instead of 256 (for the cost
//! model's fit of step time against shard size).
//!
//! Rank 0 prints, for the W2 batch of 256 split over the ranks: the median time of a whole
//! step (forward, backward with the reduction overlapped, SGD update); of the same step
//! without any reduction (the compute alone, a lower bound); and of a blocking in-place
//! allreduce of the step's gradients alone.

mod common;

use std::time::Instant;

use common::{Mlp, W2, setup};
use mpi::traits::*;
use ndarray::{Array2, s};
use tapegrad::parallel::mpi::Distributed;
use tapegrad::{BackwardOptions, Gradients, Tape};

/// One W2 step on this rank's rows: with the reduction (`dist`), or compute only.
fn step(
    net: &mut Mlp,
    x: &Array2<f32>,
    y: &Array2<f32>,
    dist: Option<&mut Distributed<'_, f32, mpi::topology::SimpleCommunicator>>,
    size: usize,
    rank: usize,
    grads: &mut Option<Gradients<f32>>,
) {
    let rows = tapegrad::parallel::shard_ranges(x.nrows(), size)[rank].clone();
    let share = rows.len() as f32 / x.nrows() as f32;
    let tape = Tape::new();
    let loss = net.linear_loss(&tape, x.slice(s![rows.clone(), ..]), y.slice(s![rows, ..]));
    let g = match dist {
        Some(dist) => dist.backward(loss, share, grads.take()),
        None => {
            let opts = BackwardOptions::new()
                .seed(Array2::from_elem((1, 1), share))
                .reuse(grads.take());
            tape.backward_with(loss, opts)
        }
    }
    .expect("W2 runs");
    net.sgd(&g);
    *grads = Some(g);
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let universe = mpi::initialize().expect("MPI initialises once");
    let world = universe.world();
    let (rank, size) = (world.rank() as usize, world.size() as usize);
    let mut dist = Distributed::<f32, _>::new(&world).expect("Open MPI or MPICH");
    let (mut net, x, y) = setup(W2);
    let rows = std::env::var("TAPEGRAD_W2_ROWS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .map_or(x.nrows(), |n| n.clamp(1, x.nrows()));
    let (x, y) = (
        x.slice(s![..rows, ..]).to_owned(),
        y.slice(s![..rows, ..]).to_owned(),
    );
    let rounds = 15;
    let mut grads = None;
    // each round: a step with the reduction, a step of compute only, an allreduce alone;
    // the ranks start each timed piece together (a barrier)
    let (mut full, mut compute, mut reduce) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds + 2 {
        world.barrier();
        let t = Instant::now();
        step(&mut net, &x, &y, Some(&mut dist), size, rank, &mut grads);
        let t_full = t.elapsed().as_secs_f64();
        world.barrier();
        let t = Instant::now();
        step(&mut net, &x, &y, None, size, rank, &mut grads);
        let t_compute = t.elapsed().as_secs_f64();
        let g = grads.as_mut().expect("a step ran");
        world.barrier();
        let t = Instant::now();
        dist.allreduce(g).expect("allreduce");
        let t_reduce = t.elapsed().as_secs_f64();
        if round >= 2 {
            full.push(t_full);
            compute.push(t_compute);
            reduce.push(t_reduce);
        }
    }
    let bytes: usize = grads
        .as_mut()
        .unwrap()
        .params_mut()
        .map(|g| g.len() * 4)
        .sum();
    if rank == 0 {
        println!(
            "W2, batch {rows} on {size} rank(s), {} rows each: step {:.1} ms, compute alone {:.1} ms, allreduce of {:.1} MB alone {:.2} ms (medians of {rounds})",
            rows / size,
            1e3 * median(full),
            1e3 * median(compute),
            bytes as f64 / 1e6,
            1e3 * median(reduce),
        );
    }
}
