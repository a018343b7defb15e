//! Checkpoints in safetensors: bit-exact round trips in f32 and f64, files written by
//! Python's safetensors (tests/data/make_fixtures.py), files read by it
//! (tests/data/check_checkpoint.py), typed errors for bad files, and no panic on any of
//! thousands of random corruptions.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use ndarray::{Array2, array};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tapegrad::io::{self, CheckpointError};
use tapegrad::nn::{Activation, Init, Linear, Module, Parameters, Sequential, mlp};
use tapegrad::{Float, Tape};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// The fixture's architecture, with random weights.
fn model<F: Float>(seed: u64) -> Sequential<F> {
    let mut rng = StdRng::seed_from_u64(seed);
    mlp(
        &[3, 4, 2],
        Activation::Tanh,
        Activation::Identity,
        Init::Glorot,
        &mut rng,
    )
}

fn values<F: Float>(m: &dyn Parameters<F>) -> Vec<(String, Array2<F>)> {
    m.parameters()
        .into_iter()
        .map(|(n, p)| (n, p.clone()))
        .collect()
}

fn bits<F: Float>(m: &dyn Parameters<F>) -> Vec<u8> {
    io::to_bytes(m).unwrap()
}

#[test]
fn round_trips_are_bit_exact_in_f32_and_f64() {
    fn check<F: Float>(special: [F; 6]) {
        let mut a = model::<F>(1);
        // special values too: ±0, ±∞, NaN, a subnormal
        a.visit_mut(&mut |name, p| {
            if name == "0.bias" {
                p.iter_mut().zip(special).for_each(|(x, s)| *x = s);
            }
        });
        let bytes = io::to_bytes(&a).unwrap();
        let mut b = model::<F>(2);
        assert_ne!(bits(&b), bytes);
        io::from_bytes(&mut b, &bytes).unwrap();
        assert_eq!(bits(&b), bytes, "the loaded model writes the same bytes");
        for ((na, pa), (nb, pb)) in values(&a).iter().zip(values(&b).iter()) {
            assert_eq!(na, nb);
            let same = pa
                .iter()
                .zip(pb)
                .all(|(x, y)| x.as_f64().to_bits() == y.as_f64().to_bits());
            assert!(same, "{na} differs");
        }
    }
    check::<f32>([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e-40]);
    check::<f64>([
        0.0,
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        1e-310,
    ]);

    // and through a file
    let dir = std::env::temp_dir().join(format!("tapegrad-roundtrip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = model::<f64>(3);
    io::save(&a, dir.join("m.safetensors")).unwrap();
    let mut b = model::<f64>(4);
    io::load(&mut b, dir.join("m.safetensors")).unwrap();
    assert_eq!(bits(&a), bits(&b));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_file_written_by_python_loads_and_computes_what_numpy_computed() {
    let expected =
        io::read_matrices::<f64>(&std::fs::read(data("mlp_3_4_2_expected.safetensors")).unwrap())
            .unwrap();
    let (x, y) = (&expected["x"], &expected["y"]);

    let mut m64 = model::<f64>(5);
    io::load(&mut m64, data("mlp_3_4_2_f64.safetensors")).unwrap();
    let tape = Tape::new();
    let out = m64.forward(tape.constant(x)).unwrap().value();
    let worst = (&out - y).iter().fold(0f64, |m, d| m.max(d.abs()));
    assert!(worst < 1e-15, "f64 output differs from numpy's by {worst}");

    let mut m32 = model::<f32>(6);
    io::load(&mut m32, data("mlp_3_4_2_f32.safetensors")).unwrap();
    let tape = Tape::new();
    let out = m32
        .forward(tape.constant(x.mapv(|v| v as f32)))
        .unwrap()
        .value();
    let worst = (&out.mapv(f64::from) - y)
        .iter()
        .fold(0f64, |m, d| m.max(d.abs()));
    assert!(worst < 1e-6, "f32 output differs from numpy's by {worst}");

    // the values are the ones the script wrote: 0.5·sin(0.7·i + k) for parameter k
    let w0 = &m64.parameters()[0].1;
    assert_eq!(w0[[0, 1]], 0.5 * (0.7f64).sin());
}

#[test]
fn a_file_written_here_loads_in_python() {
    let mut m = model::<f32>(7);
    io::load(&mut m, data("mlp_3_4_2_f32.safetensors")).unwrap();
    let path = std::env::temp_dir().join(format!(
        "tapegrad-for-python-{}.safetensors",
        std::process::id()
    ));
    io::save(&m, &path).unwrap();
    let python = std::env::var("TAPEGRAD_PYTHON").unwrap_or_else(|_| "python3".into());
    let run = std::process::Command::new(&python)
        .arg(data("check_checkpoint.py"))
        .arg(&path)
        .arg(data("mlp_3_4_2_f32.safetensors"))
        .output();
    std::fs::remove_file(&path).unwrap();
    let required = std::env::var_os("TAPEGRAD_REQUIRE_PYTHON").is_some();
    match run {
        Ok(out) if out.status.success() => {}
        Ok(out)
            if !required && String::from_utf8_lossy(&out.stderr).contains("No module named") =>
        {
            eprintln!(
                "skipped: Python's safetensors is not installed (set TAPEGRAD_REQUIRE_PYTHON=1 to require it)"
            );
        }
        Err(e) if !required => eprintln!("skipped: {python} not found ({e})"),
        Ok(out) => panic!(
            "Python could not read the file:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("{python} not found: {e}"),
    }
}

#[test]
fn bad_files_are_typed_errors_and_leave_the_model_unchanged() {
    let good = bits(&model::<f32>(8));
    let mut m = model::<f32>(9);
    let before = bits(&m);

    let truncated = io::from_bytes(&mut m, &good[..good.len() - 3]).unwrap_err();
    assert!(
        matches!(truncated, CheckpointError::Format(_)),
        "{truncated}"
    );
    let empty = io::from_bytes(&mut m, &[]).unwrap_err();
    assert!(matches!(empty, CheckpointError::Format(_)));

    let f64_file = bits(&model::<f64>(8));
    match io::from_bytes(&mut m, &f64_file).unwrap_err() {
        CheckpointError::WrongDtype {
            name,
            expected,
            found,
        } => {
            assert_eq!(
                (name.as_str(), expected.as_str(), found.as_str()),
                ("0.weight", "F32", "F64")
            );
        }
        other => panic!("expected WrongDtype, got {other}"),
    }

    let mut wider = Sequential::new().with(Linear::<f32>::new(
        3,
        5,
        Init::Glorot,
        &mut StdRng::seed_from_u64(0),
    ));
    match io::from_bytes(&mut wider, &good).unwrap_err() {
        CheckpointError::WrongShape {
            name,
            expected,
            found,
        } => {
            assert_eq!(
                (name.as_str(), expected, found),
                ("0.weight", vec![3, 5], vec![3, 4])
            );
        }
        other => panic!("expected WrongShape, got {other}"),
    }

    let first_layer_only = {
        let full = model::<f32>(8);
        let layer = Linear {
            weight: full.parameters()[0].1.clone(),
            bias: Some(full.parameters()[1].1.clone()),
        };
        bits(&Sequential::new().with(layer))
    };
    match io::from_bytes(&mut m, &first_layer_only).unwrap_err() {
        CheckpointError::MissingTensor { name } => assert_eq!(name, "2.weight"),
        other => panic!("expected MissingTensor, got {other}"),
    }
    let mut small = Sequential::new().with(Linear::<f32>::new(
        3,
        4,
        Init::He,
        &mut StdRng::seed_from_u64(0),
    ));
    match io::from_bytes(&mut small, &good).unwrap_err() {
        CheckpointError::UnexpectedTensor { name } => assert!(name.starts_with("2."), "{name}"),
        other => panic!("expected UnexpectedTensor, got {other}"),
    }
    assert_eq!(bits(&m), before, "a failed load changed the model");
    assert!(matches!(
        io::load(&mut m, "/nonexistent/model.safetensors"),
        Err(CheckpointError::Io(_))
    ));
}

#[test]
fn random_corruptions_never_panic() {
    let good = bits(&model::<f64>(10));
    let pristine = model::<f64>(11);
    let mut rng = StdRng::seed_from_u64(12);
    let (mut loaded, mut rejected) = (0, 0);
    for trial in 0..5000 {
        let mut bytes = good.clone();
        match trial % 5 {
            // flip a few bytes anywhere
            0 => {
                for _ in 0..rng.random_range(1..4) {
                    let i = rng.random_range(0..bytes.len());
                    bytes[i] ^= 1 << rng.random_range(0..8);
                }
            }
            // corrupt the header (the JSON) specifically
            1 => {
                let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
                let i = rng.random_range(8..header);
                bytes[i] = rng.random();
            }
            // truncate
            2 => bytes.truncate(rng.random_range(0..bytes.len())),
            // a random header length
            3 => bytes[..8].copy_from_slice(&rng.random::<u64>().to_le_bytes()),
            // random garbage appended or inserted
            _ => {
                let at = rng.random_range(0..bytes.len());
                let junk: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
                bytes.splice(at..at, junk);
            }
        }
        let mut m = model::<f64>(11);
        let result = catch_unwind(AssertUnwindSafe(|| io::from_bytes(&mut m, &bytes)));
        match result {
            Ok(Ok(())) => loaded += 1,
            Ok(Err(_)) => {
                rejected += 1;
                assert_eq!(
                    bits(&m),
                    bits(&pristine),
                    "trial {trial}: a failed load changed the model"
                );
            }
            Err(_) => panic!("trial {trial}: loading a corrupted file panicked"),
        }
    }
    // flips inside the data are valid files with other values; everything else is rejected
    assert!(
        rejected > 3000 && loaded > 0,
        "{rejected} rejected, {loaded} loaded"
    );
}

#[test]
fn duplicate_parameter_names_are_an_error() {
    struct Twice(Linear<f32>, Linear<f32>);
    impl Parameters<f32> for Twice {
        fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Array2<f32>)) {
            self.0.visit(f);
            self.1.visit(f);
        }
        fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Array2<f32>)) {
            self.0.visit_mut(f);
            self.1.visit_mut(f);
        }
    }
    let layer = Linear {
        weight: array![[1.0f32]],
        bias: None,
    };
    let mut twice = Twice(layer.clone(), layer);
    assert!(matches!(
        io::to_bytes(&twice),
        Err(CheckpointError::DuplicateName { .. })
    ));
    let one = bits(&Linear {
        weight: array![[2.0f32]],
        bias: None,
    });
    assert!(matches!(
        io::from_bytes(&mut twice, &one),
        Err(CheckpointError::DuplicateName { .. })
    ));
}

/// A parameter named as safetensors' metadata would make a file that cannot be read back
/// (found by the fuzzer's checkpoint family): it is refused when saving.
#[test]
fn a_parameter_named_like_the_metadata_is_refused_when_saving() {
    struct Named(Array2<f64>);
    impl Parameters<f64> for Named {
        fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Array2<f64>)) {
            f("__metadata__", &self.0);
        }
        fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Array2<f64>)) {
            f("__metadata__", &mut self.0);
        }
    }
    let e = io::to_bytes(&Named(array![[1.0]])).unwrap_err();
    assert!(
        matches!(&e, CheckpointError::ReservedName { name } if name == "__metadata__"),
        "{e}"
    );
}

/// Lies in the header, loaded from a file through `io::load` (which reads the header
/// before the data): header lengths off by a little or a lot, data offsets and shapes
/// edited. Never a panic, and a refused file leaves the model as it was.
#[test]
fn header_lies_through_load_never_panic() {
    let good = bits(&model::<f32>(20));
    let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(good[8..8 + n].to_vec()).unwrap();
    let pristine = bits(&model::<f32>(21));
    let dir = std::env::temp_dir().join(format!("tapegrad-lies-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.safetensors");
    let mut rng = StdRng::seed_from_u64(22);
    let (mut loaded, mut rejected) = (0, 0);
    for trial in 0..600 {
        let bytes = match trial % 3 {
            // the header length: near the truth, or anything
            0 => {
                let mut b = good.clone();
                let lie = match rng.random_range(0..4) {
                    0 => n as u64 + rng.random_range(1..64),
                    1 => (n as u64).saturating_sub(rng.random_range(1..64)),
                    2 => good.len() as u64 + rng.random_range(0..1u64 << 40),
                    _ => rng.random(),
                };
                b[..8].copy_from_slice(&lie.to_le_bytes());
                b
            }
            // a number in the JSON (offsets, shapes) replaced by another
            _ => {
                let digits: Vec<usize> = header
                    .char_indices()
                    .filter(|(_, c)| c.is_ascii_digit())
                    .map(|(i, _)| i)
                    .collect();
                let at = digits[rng.random_range(0..digits.len())];
                let mut lied = header.clone();
                let replacement = match rng.random_range(0..3) {
                    0 => rng.random_range(0..10u64).to_string(),
                    1 => rng.random_range(0..100_000u64).to_string(),
                    _ => u64::MAX.to_string(),
                };
                lied.replace_range(at..at + 1, &replacement);
                let mut b = (lied.len() as u64).to_le_bytes().to_vec();
                b.extend(lied.as_bytes());
                b.extend(&good[8 + n..]);
                b
            }
        };
        std::fs::write(&path, &bytes).unwrap();
        let mut m = model::<f32>(21);
        match catch_unwind(AssertUnwindSafe(|| io::load(&mut m, &path))) {
            Ok(Ok(())) => loaded += 1,
            Ok(Err(_)) => {
                rejected += 1;
                assert_eq!(
                    bits(&m),
                    pristine,
                    "trial {trial}: a refused file changed the model"
                );
            }
            Err(_) => panic!("trial {trial}: loading a lying header panicked"),
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(rejected > 300, "{rejected} rejected, {loaded} loaded");
}

// ---- issue 19: devices, pipes, directories and crafted headers ----

/// A temporary directory of this test's own.
fn scratch(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tapegrad-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A safetensors file of `tensors` (name, dtype, shape, data offsets), whatever they say,
/// followed by `data` bytes of data.
fn crafted(tensors: &[(String, &str, Vec<u64>, [u64; 2])], data: usize) -> Vec<u8> {
    let entries: Vec<String> = tensors
        .iter()
        .map(|(name, dtype, shape, [b, e])| {
            format!(r#""{name}":{{"dtype":"{dtype}","shape":{shape:?},"data_offsets":[{b},{e}]}}"#)
        })
        .collect();
    let header = format!("{{{}}}", entries.join(","));
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.resize(bytes.len() + data, 0);
    bytes
}

/// Eight tensors whose sizes agree with their shapes and whose offsets are contiguous, but
/// whose data adds up to 2⁶⁴ − 8 bytes: safetensors 0.8 adds the header's length to that
/// without checking (an overflow panic in debug and test builds). A format error, from
/// bytes and from a file.
#[test]
fn a_header_declaring_nearly_2_pow_64_bytes_is_a_format_error() {
    let size = (1u64 << 61) - 1;
    let tensors: Vec<_> = (0..8)
        .map(|k| {
            (
                format!("t{k}"),
                "U8",
                vec![size],
                [k * size, (k + 1) * size],
            )
        })
        .collect();
    let bytes = crafted(&tensors, 16);
    let mut m = model::<f32>(30);
    let before = bits(&m);
    let err = catch_unwind(AssertUnwindSafe(|| io::from_bytes(&mut m, &bytes)))
        .expect("from_bytes panicked")
        .unwrap_err();
    assert!(matches!(err, CheckpointError::Format(_)), "{err}");
    let dir = scratch("huge-offsets");
    let path = dir.join("m.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    let err = catch_unwind(AssertUnwindSafe(|| io::load(&mut m, &path)))
        .expect("load panicked")
        .unwrap_err();
    assert!(matches!(err, CheckpointError::Format(_)), "{err}");
    assert_eq!(bits(&m), before);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Thousands of seeded tensor tables written over a valid file's: bit flips and byte
/// edits, truncations, header lengths, and tables whose offsets, shapes and dtypes are
/// edited (off by one, overlapping, out of order, gaps, huge and consistent, huge and
/// overflowing). Every load, from bytes and (one in eight) from a file, is `Ok` or a
/// `CheckpointError`, never a panic, and a refused load leaves the model as it was.
#[test]
fn seeded_mutations_of_a_checkpoint_never_panic() {
    let good = bits(&model::<f32>(31));
    let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let data_len = good.len() - 8 - n;
    let pristine = bits(&model::<f32>(32));
    // the valid table: (name, dtype, shape, offsets) of each tensor, in offset order
    let table: Vec<(String, &str, Vec<u64>, [u64; 2])> = {
        let header: serde_json::Value = serde_json::from_slice(&good[8..8 + n]).unwrap();
        let mut t: Vec<_> = header
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| *k != "__metadata__")
            .map(|(k, v)| {
                let shape = v["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap());
                let o = &v["data_offsets"];
                let offsets = [o[0].as_u64().unwrap(), o[1].as_u64().unwrap()];
                (k.clone(), "F32", shape.collect(), offsets)
            })
            .collect();
        t.sort_by_key(|e| e.3);
        t
    };
    // the table written back holds the same model
    let mut m = model::<f32>(32);
    let mut rebuilt = crafted(&table, 0);
    rebuilt.extend(&good[8 + n..]);
    io::from_bytes(&mut m, &rebuilt).unwrap();
    assert_eq!(bits(&m), good);
    let dir = scratch("mutations");
    let path = dir.join("m.safetensors");
    let mut rng = StdRng::seed_from_u64(33);
    let big = |rng: &mut StdRng| match rng.random_range(0..4) {
        0 => u64::MAX - rng.random_range(0..16),
        1 => (1u64 << 61) - rng.random_range(0..4),
        2 => 1u64 << rng.random_range(32..64),
        _ => rng.random_range(0..1 << 20),
    };
    let (mut loaded, mut refused) = (0, 0);
    for trial in 0..6000 {
        let bytes = match trial % 6 {
            // flip bits anywhere
            0 => {
                let mut b = good.clone();
                for _ in 0..rng.random_range(1..4) {
                    let i = rng.random_range(0..b.len());
                    b[i] ^= 1 << rng.random_range(0..8);
                }
                b
            }
            // cut short
            1 => good[..rng.random_range(0..good.len())].to_vec(),
            // another header length
            2 => {
                let mut b = good.clone();
                let lie = match rng.random_range(0..3) {
                    0 => (n as u64)
                        .wrapping_add(rng.random_range(0..16))
                        .wrapping_sub(8),
                    1 => rng.random_range(0..200),
                    _ => rng.random(),
                };
                b[..8].copy_from_slice(&lie.to_le_bytes());
                b
            }
            // one offset or dimension edited
            3 => {
                let mut t = table.clone();
                let k = rng.random_range(0..t.len());
                match rng.random_range(0..4) {
                    0 => t[k].3[0] = big(&mut rng),
                    1 => t[k].3[1] = big(&mut rng),
                    2 => {
                        let d = rng.random_range(0..t[k].2.len());
                        t[k].2[d] = big(&mut rng);
                    }
                    _ => t[k].3[rng.random_range(0..2)] ^= 1 << rng.random_range(0..64),
                }
                crafted(&t, data_len)
            }
            // tensors overlapping, out of order, doubled, or with a gap
            4 => {
                let mut t = table.clone();
                let (i, j) = (rng.random_range(0..t.len()), rng.random_range(0..t.len()));
                match rng.random_range(0..4) {
                    0 => t[i].3 = t[j].3,
                    1 => t.swap(i, j),
                    2 => {
                        let mut copy = t[i].clone();
                        copy.0.push_str(".copy");
                        t.push(copy);
                    }
                    _ => {
                        for e in &mut t[i..] {
                            e.3 = [e.3[0] + 4, e.3[1] + 4];
                        }
                    }
                }
                let extra = rng.random_range(0..2) * 4;
                crafted(&t, data_len + extra)
            }
            // a table of huge tensors whose sizes agree with their shapes (the sum
            // overflowing, or not), in one dtype or another
            _ => {
                let count = rng.random_range(1..12u64);
                let dtype = ["U8", "F4", "F16", "F32", "F64", "BOOL"][rng.random_range(0..6)];
                let bits_of = |d: &str| match d {
                    "U8" | "BOOL" => 8u64,
                    "F4" => 4,
                    "F16" => 16,
                    "F32" => 32,
                    _ => 64,
                };
                let elements = big(&mut rng) / bits_of(dtype);
                let size = elements.checked_mul(bits_of(dtype)).map_or(0, |b| b / 8);
                let t: Vec<_> = (0..count)
                    .map(|k| {
                        let b = k.wrapping_mul(size);
                        (
                            format!("t{k}"),
                            dtype,
                            vec![elements],
                            [b, b.wrapping_add(size)],
                        )
                    })
                    .collect();
                crafted(&t, rng.random_range(0..64))
            }
        };
        let mut m = model::<f32>(32);
        let through_file = trial % 8 == 0;
        let result = catch_unwind(AssertUnwindSafe(|| {
            if through_file {
                std::fs::write(&path, &bytes).unwrap();
                io::load(&mut m, &path)
            } else {
                io::from_bytes(&mut m, &bytes)
            }
        }));
        match result {
            Ok(Ok(())) => loaded += 1,
            Ok(Err(_)) => {
                refused += 1;
                assert_eq!(
                    bits(&m),
                    pristine,
                    "trial {trial}: a refused load changed the model"
                );
            }
            Err(_) => panic!("trial {trial}: loading a mutated checkpoint panicked"),
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
    assert!(
        refused > 4000 && loaded > 0,
        "{refused} refused, {loaded} loaded"
    );
}

/// A directory is an I/O error that says so, not "a file of 4096 bytes".
#[test]
fn loading_a_directory_is_an_io_error() {
    let dir = scratch("a-directory");
    let mut m = model::<f32>(34);
    match io::load(&mut m, &dir) {
        Err(CheckpointError::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::IsADirectory, "{e}")
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// `/dev/zero` (no length, endless zeros): a format error at once, from the 8 bytes of
/// its header length (0: an empty header), without reading on.
#[cfg(target_os = "linux")]
#[test]
fn loading_dev_zero_is_a_format_error() {
    let mut m = model::<f32>(35);
    let err = catch_unwind(AssertUnwindSafe(|| io::load(&mut m, "/dev/zero")))
        .expect("load panicked")
        .unwrap_err();
    assert!(matches!(err, CheckpointError::Format(_)), "{err}");
}

/// A named pipe is read as a stream: a checkpoint written into it loads, and the load
/// returns once it has the bytes the header declares, while the writer still holds the
/// pipe open; a stream that ends early is a format error.
#[cfg(unix)]
#[test]
fn loading_from_a_named_pipe_reads_the_stream() {
    use std::io::Write;
    let dir = scratch("fifo");
    let fifo = dir.join("pipe");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("skipped: mkfifo is not available");
        return;
    }
    let source = model::<f32>(36);
    let good = bits(&source);
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let writer = {
        let (fifo, good) = (fifo.clone(), good.clone());
        std::thread::spawn(move || {
            let mut pipe = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            pipe.write_all(&good).unwrap();
            pipe.flush().unwrap();
            // hold the pipe open until the load is done (or long enough to tell)
            wait.recv_timeout(std::time::Duration::from_secs(20))
                .is_ok()
        })
    };
    let mut m = model::<f32>(37);
    let loaded = io::load(&mut m, &fifo);
    let _ = done.send(());
    assert!(
        writer.join().unwrap(),
        "the load waited for the writer to close the pipe"
    );
    loaded.unwrap();
    assert_eq!(bits(&m), good);

    // a stream that stops short
    let writer = {
        let (fifo, cut) = (fifo.clone(), good[..good.len() - 5].to_vec());
        std::thread::spawn(move || {
            let mut pipe = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            pipe.write_all(&cut).unwrap();
        })
    };
    let mut m = model::<f32>(38);
    let before = bits(&m);
    let err = io::load(&mut m, &fifo).unwrap_err();
    writer.join().unwrap();
    assert!(matches!(err, CheckpointError::Format(_)), "{err}");
    assert_eq!(bits(&m), before);
    std::fs::remove_dir_all(dir).unwrap();
}

// ---- issue 19 item 10: optimizer state beside the model ----

/// One step of `opt` on `m` for the loss ‖m(x)‖² at a fixed input.
fn train_step(m: &mut Sequential<f32>, opt: &mut dyn tapegrad::optim::Optimizer<f32>) {
    let x = Array2::from_shape_fn((4, 3), |(i, j)| (i as f32 - j as f32) * 0.25);
    let grads = {
        let tape = Tape::new();
        let y = m.forward(tape.constant(x)).unwrap();
        tape.backward(y.square().sum()).unwrap()
    };
    opt.step(m, &grads).unwrap();
}

/// A run interrupted after three steps and resumed from the model's and the optimizer's
/// files makes the same parameters, bit for bit, as the run that went on; resumed from
/// the model alone (a fresh optimizer: what could be done before) it does not.
#[test]
fn a_resumed_run_is_the_run_that_was_interrupted() {
    use tapegrad::optim::{Adam, Optimizer, Sgd};
    type Make = fn() -> Box<dyn Optimizer<f32>>;
    let makers: [Make; 2] = [
        || Box::new(Adam::new(0.01)),
        || Box::new(Sgd::new(0.05).momentum(0.9).nesterov(true)),
    ];
    let dir = scratch("resume");
    for make in makers {
        let mut m = model::<f32>(40);
        let mut opt = make();
        for _ in 0..3 {
            train_step(&mut m, &mut *opt);
        }
        io::save(&m, dir.join("m.safetensors")).unwrap();
        io::save_optimizer(&*opt, dir.join("opt.safetensors")).unwrap();
        for _ in 0..3 {
            train_step(&mut m, &mut *opt);
        }

        let mut resumed = model::<f32>(41);
        io::load(&mut resumed, dir.join("m.safetensors")).unwrap();
        let mut opt2 = make();
        io::load_optimizer(&mut *opt2, dir.join("opt.safetensors")).unwrap();
        assert_eq!(opt2.steps(), 3);
        for _ in 0..3 {
            train_step(&mut resumed, &mut *opt2);
        }
        assert_eq!(bits(&resumed), bits(&m));
        assert_eq!(opt2.state(), opt.state());

        let mut fresh = model::<f32>(41);
        io::load(&mut fresh, dir.join("m.safetensors")).unwrap();
        let mut opt3 = make();
        for _ in 0..3 {
            train_step(&mut fresh, &mut *opt3);
        }
        assert_ne!(bits(&fresh), bits(&m), "the state made no difference");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// A state loads only into an optimizer of its kind and configuration, from a file that
/// is an optimizer's state; on error the optimizer is as it was.
#[test]
fn an_optimizer_state_loads_only_where_it_fits() {
    use tapegrad::optim::{Adam, Optimizer, Sgd};
    let mut m = model::<f32>(42);
    let mut adam = Adam::new(0.01);
    train_step(&mut m, &mut adam);
    let adam_bytes = io::optimizer_to_bytes(&adam).unwrap();
    let mut sgd = Sgd::new(0.1).momentum(0.9);
    train_step(&mut m, &mut sgd);
    let sgd_bytes = io::optimizer_to_bytes(&sgd).unwrap();
    // the bytes depend on the state alone (the metadata once came out in a hash map's
    // random order: two keys, two orders)
    for _ in 0..20 {
        assert_eq!(io::optimizer_to_bytes(&adam).unwrap(), adam_bytes);
        assert_eq!(io::to_bytes(&m).unwrap(), io::to_bytes(&m).unwrap());
    }

    // another kind, another configuration
    let mut other = Sgd::<f32>::new(0.1).momentum(0.9);
    let before = other.state();
    let err = io::optimizer_from_bytes(&mut other, &adam_bytes).unwrap_err();
    assert!(matches!(err, CheckpointError::Optimizer(_)), "{err}");
    assert_eq!(other.state(), before);
    let mut plain = Sgd::<f32>::new(0.1);
    let err = io::optimizer_from_bytes(&mut plain, &sgd_bytes).unwrap_err();
    assert!(matches!(err, CheckpointError::Optimizer(_)), "{err}");
    // a frozen name the state does not have
    let mut frozen = Adam::<f32>::new(0.01).freeze(["nope"]);
    let err = io::optimizer_from_bytes(&mut frozen, &adam_bytes).unwrap_err();
    assert!(matches!(err, CheckpointError::Optimizer(_)), "{err}");
    // a model's file is not an optimizer's, and the dtype must be the optimizer's
    let err = io::optimizer_from_bytes(&mut Adam::<f32>::new(0.01), &bits(&m)).unwrap_err();
    assert!(matches!(err, CheckpointError::Format(_)), "{err}");
    let err = io::optimizer_from_bytes(&mut Adam::<f64>::new(0.01), &adam_bytes).unwrap_err();
    assert!(matches!(err, CheckpointError::WrongDtype { .. }), "{err}");
    // an optimizer that has not stepped round-trips too
    let fresh = io::optimizer_to_bytes(&Adam::<f32>::new(0.5)).unwrap();
    let mut loaded = Adam::<f32>::new(0.01);
    io::optimizer_from_bytes(&mut loaded, &fresh).unwrap();
    assert_eq!(loaded.learning_rate(), 0.5);
    // corrupted files are errors, never panics, and leave the optimizer alone
    let mut rng = StdRng::seed_from_u64(43);
    for _ in 0..2000 {
        let mut b = adam_bytes.clone();
        if rng.random_range(0..2) == 0 {
            b.truncate(rng.random_range(0..b.len()));
        } else {
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..b.len());
                b[i] ^= 1 << rng.random_range(0..8);
            }
        }
        let mut target = Adam::<f32>::new(0.01);
        let result = catch_unwind(AssertUnwindSafe(|| {
            io::optimizer_from_bytes(&mut target, &b)
        }))
        .expect("loading a corrupted optimizer state panicked");
        if result.is_err() {
            assert_eq!(target.state(), Adam::<f32>::new(0.01).state());
        }
    }
}

/// An empty matrix with a huge dimension (2⁶³ − 1 × 0, 0 bytes) round-trips: the header
/// check counts elements before bits, as safetensors does (it counted bits first and took
/// 64 × (2⁶³ − 1) for an overflow).
#[test]
fn an_empty_matrix_with_a_huge_dimension_round_trips() {
    #[derive(tapegrad::nn::Parameters)]
    struct Empty {
        w: Array2<f64>,
    }
    let huge = i64::MAX as usize;
    let saved = Empty {
        w: Array2::zeros((huge, 0)),
    };
    let bytes = io::to_bytes(&saved).unwrap();
    let mut loaded = Empty {
        w: Array2::zeros((huge, 0)),
    };
    io::from_bytes(&mut loaded, &bytes).unwrap();
    assert_eq!(loaded.w.dim(), (huge, 0));
    let read = io::read_matrices::<f64>(&bytes).unwrap();
    assert_eq!(read["w"].dim(), (huge, 0));
}
