//! The digits MLP (64 → 64 relu → 10, softmax cross-entropy, Adam, batches of 32) trained
//! data-parallel over MPI ranks: each rank takes its share of every batch, gradients are
//! summed over the ranks during backward, and every rank takes the same step. In f64, so
//! that the run can be compared with one process on the full batches.
//!
//! ```text
//! cargo build --release --features mpi --example digits_mpi
//! mpirun -np 2 target/release/examples/digits_mpi             # 2 ranks (as root: --allow-run-as-root;
//!                                                             #   more ranks than cores: --oversubscribe)
//! target/release/examples/digits_mpi                          # 1 process, the same program
//! ```
//!
//! Options: `--epochs N` (30), `--out PATH` (the checkpoint rank 0 writes;
//! `target/digits-mpi-<ranks>.safetensors` by default), `--bucket-bytes N` (the reduction's
//! bucket size: 0 sends every gradient in place as its own message; the default packs this
//! small network's gradients into one). Rank 0 prints the test accuracy and
//! checks that every rank ends with bitwise the same parameters.
//! `tests/mpi.rs` runs it on 1 and on 2 ranks and compares the two checkpoints.

mod common;

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use mpi::collective::SystemOperation;
use mpi::traits::*;
use ndarray::Axis;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use tapegrad::Tape;
use tapegrad::nn::{Module, Parameters};
use tapegrad::optim::{Adam, Optimizer};
use tapegrad::parallel::mpi::Distributed;

const BATCH: usize = 32;
const LEARNING_RATE: f64 = 0.003;
const SEED: u64 = 7;

fn main() -> Result<(), Box<dyn Error>> {
    let universe = mpi::initialize().ok_or("MPI was already initialised")?;
    let world = universe.world();
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let epochs: usize = arg("--epochs").map_or(Ok(30), |s| s.parse())?;
    let bucket =
        arg("--bucket-bytes").map_or(Ok(tapegrad::parallel::mpi::BUCKET_BYTES), |s| s.parse())?;
    let mut dist = Distributed::<f64, _>::new(&world)?.bucket_bytes(bucket);
    let out = arg("--out").map_or_else(
        || {
            let name = format!("digits-mpi-{}.safetensors", dist.size());
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target")
                .join(name)
        },
        PathBuf::from,
    );

    let (train, test) = common::digits()?.split(0.2, SEED);
    // every rank draws its own initial weights; the broadcast makes them rank 0's
    let mut net = common::digits_network::<f64>(SEED + dist.rank() as u64);
    dist.broadcast(&mut net)?;
    if dist.is_root() {
        println!(
            "digits, 64-64-10 relu, Adam, batches of {BATCH} split over {} rank(s), {epochs} epochs",
            dist.size()
        );
    }

    let start = Instant::now();
    let mut opt = Adam::new(LEARNING_RATE);
    // the same shuffle on every rank
    let mut order_rng = StdRng::seed_from_u64(SEED);
    let mut order: Vec<usize> = (0..train.labels.len()).collect();
    let mut grads = None;
    for epoch in 1..=epochs {
        order.shuffle(&mut order_rng);
        let mut total = 0.0;
        for batch in order.chunks(BATCH) {
            let mine = &batch[dist.shard(batch.len())];
            let x = train.x.select(Axis(0), mine);
            let labels: Vec<usize> = mine.iter().map(|&i| train.labels[i]).collect();
            let tape = Tape::new();
            let loss = net
                .forward(tape.constant(&x))?
                .try_softmax_cross_entropy_indices(&labels)?;
            let share = dist.share(batch.len());
            total += share * loss.item() * batch.len() as f64;
            let step = dist.backward(loss, share, grads.take())?;
            opt.step(&mut net, &step)?;
            grads = Some(step);
        }
        let mut loss = 0.0;
        world.all_reduce_into(&total, &mut loss, SystemOperation::sum());
        if dist.is_root() && (epoch % 5 == 0 || epoch == epochs) {
            println!(
                "epoch {epoch:>3}  loss {:.5}  test accuracy {:.1}%",
                loss / order.len() as f64,
                100.0 * common::model_accuracy(&net, &test.x, &test.labels)?
            );
        }
    }
    let seconds = start.elapsed().as_secs_f64();

    // every rank holds the same parameters: the elementwise max and min over ranks agree
    let mut same = true;
    net.visit(&mut |_, p| {
        let mine: Vec<f64> = p.iter().copied().collect();
        let (mut hi, mut lo) = (vec![0.0f64; mine.len()], vec![0.0f64; mine.len()]);
        world.all_reduce_into(&mine[..], &mut hi[..], SystemOperation::max());
        world.all_reduce_into(&mine[..], &mut lo[..], SystemOperation::min());
        same &= hi.iter().zip(&lo).all(|(h, l)| h.to_bits() == l.to_bits());
    });
    dist.save(&net, &out)?;
    if dist.is_root() {
        println!(
            "test accuracy {:.2}% on {} held-out images; {:.2} s on {} rank(s)",
            100.0 * common::model_accuracy(&net, &test.x, &test.labels)?,
            test.labels.len(),
            seconds,
            dist.size()
        );
        println!(
            "parameters identical on every rank: {}",
            if same { "yes" } else { "NO" }
        );
        println!("checkpoint written to {}", out.display());
    }
    if !same {
        return Err("the ranks' parameters differ".into());
    }
    Ok(())
}
