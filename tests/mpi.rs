//! Data parallelism over MPI for real (feature `mpi`): `examples/digits_mpi.rs` run as one
//! process and as a 2-rank job under `mpirun` ends with the same parameters (to rounding)
//! and the same test accuracy, and every rank of the job with bitwise the same parameters.
//!
//! Needs `mpirun` (Open MPI's: `apt-get install openmpi-bin libopenmpi-dev`); the flags
//! below are Open MPI's. `cargo test --features mpi` builds the example with the tests.

#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::Command;

use ndarray::Array2;
use tapegrad::nn::Parameters;

/// The examples' shared code: the digits network whose checkpoints are compared.
#[path = "../examples/common/mod.rs"]
mod examples_common;

/// The example binary, built beside this test's (target/<profile>/examples/).
fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let path = profile_dir.join("examples").join("digits_mpi");
    assert!(
        path.exists(),
        "{} is missing: `cargo test --features mpi` builds it (with `--test mpi` alone, first `cargo build --features mpi --example digits_mpi`)",
        path.display()
    );
    path
}

/// Runs `command`, returning its standard output; panics with its output if it fails.
fn run(mut command: Command) -> String {
    let out = command.output().expect("the command starts");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{command:?} failed: {}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The value after `prefix` on the line that starts with it.
fn line_value<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line `{prefix}` in:\n{out}"))
}

fn load(path: &Path) -> Vec<Array2<f64>> {
    let mut net = examples_common::digits_network::<f64>(0);
    tapegrad::io::load(&mut net, path).expect("the checkpoint loads");
    net.parameters()
        .into_iter()
        .map(|(_, p)| p.clone())
        .collect()
}

#[test]
fn two_ranks_train_the_digits_mlp_to_the_parameters_of_one_process() {
    let dir = std::env::temp_dir().join(format!("tapegrad-mpi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (one, two) = (dir.join("one.safetensors"), dir.join("two.safetensors"));
    // the example's whole run: 30 epochs of 45 batches
    let epochs = "30";

    let mut single = Command::new(example());
    single.args(["--epochs", epochs, "--out"]).arg(&one);
    let single = run(single);
    assert!(line_value(&single, "digits, ").contains("split over 1 rank(s)"));
    let accuracy = |out: &str| {
        let value = line_value(out, "test accuracy ");
        value.split(' ').next().unwrap().to_string()
    };
    let a = load(&one);
    assert_eq!(a.len(), 4);

    // the default buckets (this network's gradients packed into one message); every
    // gradient reduced in place as its own message; 4 KiB buckets, where each small bias
    // gradient goes out before the large weight gradient that follows it
    for bucket in ["1048576", "0", "4096"] {
        let mut job = Command::new("mpirun");
        job.args(["-np", "2", "--oversubscribe", "--bind-to", "none"])
            .args(["--timeout", "600", "--mca", "btl", "self,vader"])
            .args(["--mca", "btl_vader_single_copy_mechanism", "none"])
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .arg(example())
            .args(["--epochs", epochs, "--bucket-bytes", bucket, "--out"])
            .arg(&two);
        let job = run(job);
        assert!(
            line_value(&job, "digits, ").contains("split over 2 rank(s)"),
            "{job}"
        );
        assert_eq!(
            line_value(&job, "parameters identical on every rank: "),
            "yes"
        );
        assert_eq!(accuracy(&job), accuracy(&single));
        let b = load(&two);
        let mut largest = 0.0f64;
        for (p, q) in a.iter().zip(&b) {
            assert_eq!(p.dim(), q.dim());
            for (x, y) in p.iter().zip(q) {
                largest = largest.max((x - y).abs());
            }
        }
        println!(
            "buckets of {bucket} bytes: largest difference, 2 ranks vs 1 process: {largest:e}"
        );
        assert!(largest < 1e-9, "largest difference {largest:e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
