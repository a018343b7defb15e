//! The `checkpoint` family: a valid safetensors file of a random model (names with dots,
//! Unicode, empty; shapes with 0; `f32` or `f64`), then one to three mutations of it:
//! bytes flipped, overwritten, cut, added, moved; the header's length changed; the JSON
//! header edited (dtypes, shapes, offsets, tensors added, removed or renamed, offsets
//! chained over tensors of up to 2⁶¹ bytes so that their sum overflows). Every mutation
//! loads `Ok` (and then round-trips) or is a `CheckpointError`, through `io::from_bytes`,
//! `io::read_matrices` and `io::load` of a file; never a panic, in debug builds too. Now
//! and then the file is read from `/dev/zero`, a named pipe, a directory, or a path that
//! does not exist.
//!
//! Each parameter also says how PyTorch would store it (`TorchLayout`, drawn at random):
//! the model written as a PyTorch state dict (transposed where it says so, rows as
//! vectors, with `format: pt` or no metadata) loads back exactly through
//! `io::from_torch_bytes` or is a layout error where a square parameter's layout is
//! unknown; through `io::from_bytes` it never loads other values than the model's (never
//! silently transposed). The mutated files go through `io::from_torch_bytes` too.

use std::io::Write;

use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Map, Value, json};
use tapegrad::Float;
use tapegrad::io::{self, CheckpointError};
use tapegrad::nn::{Parameters, TorchLayout};

use crate::oracle::{randn, same_bits};
use crate::{Family, catch, message};

pub(crate) const FAMILY: Family = Family {
    name: "checkpoint",
    default: 300,
    run,
    describe,
};

fn describe(seed: u64) -> String {
    let (model, mutations, special) = generate(seed);
    format!("{model:?}\nmutations: {mutations:?}\nspecial file: {special:?}")
}

/// A model of named parameters, in visit order, with how PyTorch would store each one
/// and whether its PyTorch file says `format: pt`.
#[derive(Clone, Debug)]
struct Model<F> {
    params: Vec<(String, Array2<F>)>,
    layouts: Vec<TorchLayout>,
    pt: bool,
}

impl<F: Float> Parameters<F> for Model<F> {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Array2<F>)) {
        for (n, p) in &self.params {
            f(n, p);
        }
    }
    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Array2<F>)) {
        for (n, p) in &mut self.params {
            f(n, p);
        }
    }
    fn visit_torch_layout(&self, f: &mut dyn FnMut(&str, TorchLayout)) {
        for ((n, _), l) in self.params.iter().zip(&self.layouts) {
            f(n, *l);
        }
    }
}

#[derive(Clone, Debug)]
enum Mutation {
    /// `bytes[at] ^= mask`
    Flip { at: usize, mask: u8 },
    /// `bytes[at] = value`
    Set { at: usize, value: u8 },
    /// Keep the first `len` bytes.
    Truncate { len: usize },
    /// Append bytes.
    Extend { bytes: Vec<u8> },
    /// Remove `len` bytes at `at`.
    Delete { at: usize, len: usize },
    /// Copy `len` bytes from `from` over `to`.
    Copy { from: usize, to: usize, len: usize },
    /// Set the header's length (the first 8 bytes) to `len`.
    HeaderLength { len: u64 },
    /// An edit of the JSON header (the header's length follows it unless `stale`).
    Header { edit: Edit, stale: bool },
}

#[derive(Clone, Debug)]
enum Edit {
    Dtype {
        tensor: usize,
        dtype: &'static str,
    },
    Shape {
        tensor: usize,
        shape: Vec<u64>,
    },
    Offsets {
        tensor: usize,
        offsets: [u64; 2],
    },
    /// Tensors added, of the dtype and shape given, with offsets chained after the last.
    Add {
        count: usize,
        dtype: &'static str,
        shape: Vec<u64>,
    },
    Remove {
        tensor: usize,
    },
    Rename {
        tensor: usize,
        name: String,
    },
    Metadata {
        value: Value,
    },
    /// Offsets rewritten to chain, each tensor as long as its dtype and shape say.
    Chain,
    /// The whole header replaced.
    Replace {
        json: String,
    },
}

#[derive(Clone, Copy, Debug)]
enum Special {
    DevZero,
    Pipe,
    Directory,
    Missing,
}

const DTYPES: [&str; 12] = [
    "F64", "F32", "F16", "BF16", "I64", "I32", "U8", "BOOL", "F8_E4M3", "F4", "X", "",
];

const HUGE: [u64; 7] = [
    0,
    1,
    1 << 31,
    (1 << 61) - 1,
    1 << 62,
    u64::MAX / 2,
    u64::MAX,
];

fn name(rng: &mut StdRng, i: usize) -> String {
    match rng.random_range(0..8) {
        0 => format!("{i}.weight"),
        1 => format!("layer{i}.ß.偏置"),
        2 => format!("p{i}\"q\\\n"),
        3 => format!("{}{i}", "x".repeat(rng.random_range(0..300))),
        4 if i == 0 => String::new(),
        5 => "__metadata__".to_string(),
        _ => format!("w{i}"),
    }
}

fn generate(seed: u64) -> (Model<f64>, Vec<Mutation>, Option<Special>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let dims = [0, 1, 2, 3];
    let params = (0..rng.random_range(1..=4))
        .map(|i| {
            let shape = (dims[rng.random_range(0..4)], dims[rng.random_range(0..4)]);
            (name(&mut rng, i), randn(shape, &mut rng))
        })
        .collect();
    let mut model = Model {
        params,
        layouts: Vec::new(),
        pt: false,
    };
    let byte = |rng: &mut StdRng| rng.random_range(0..=255u8);
    // positions: mostly in the header, which is where a parser can go wrong
    let at = |rng: &mut StdRng| {
        if rng.random_bool(0.7) {
            rng.random_range(0..200)
        } else {
            rng.random_range(0..4096)
        }
    };
    let mutations = (0..rng.random_range(1..=3))
        .map(|_| match rng.random_range(0..12) {
            0 => Mutation::Flip {
                at: at(&mut rng),
                mask: 1 << rng.random_range(0..8),
            },
            1 => Mutation::Set {
                at: at(&mut rng),
                value: byte(&mut rng),
            },
            2 => Mutation::Truncate { len: at(&mut rng) },
            3 => Mutation::Extend {
                bytes: (0..rng.random_range(1..16))
                    .map(|_| byte(&mut rng))
                    .collect(),
            },
            4 => Mutation::Delete {
                at: at(&mut rng),
                len: rng.random_range(1..16),
            },
            5 => Mutation::Copy {
                from: at(&mut rng),
                to: at(&mut rng),
                len: rng.random_range(1..16),
            },
            6 => Mutation::HeaderLength {
                len: [0, 7, 8, 100_000_001, u64::MAX, rng.random_range(0..400)]
                    [rng.random_range(0..6)],
            },
            _ => {
                let tensor = rng.random_range(0..4);
                let edit = match rng.random_range(0..10) {
                    0 => Edit::Dtype {
                        tensor,
                        dtype: DTYPES[rng.random_range(0..DTYPES.len())],
                    },
                    1 => Edit::Shape {
                        tensor,
                        shape: (0..rng.random_range(0..4))
                            .map(|_| {
                                [0, 1, 2, 3, 1 << 31, (1 << 61) - 1, u64::MAX]
                                    [rng.random_range(0..7)]
                            })
                            .collect(),
                    },
                    2 => Edit::Offsets {
                        tensor,
                        offsets: [
                            HUGE[rng.random_range(0..HUGE.len())],
                            HUGE[rng.random_range(0..HUGE.len())],
                        ],
                    },
                    3 | 4 => Edit::Add {
                        count: [1, 2, 8, 9, 16][rng.random_range(0..5)],
                        dtype: ["U8", "F64", "F4", "BOOL"][rng.random_range(0..4)],
                        shape: match rng.random_range(0..3) {
                            0 | 1 => vec![(1 << 61) - 1],
                            _ => vec![rng.random_range(0..4)],
                        },
                    },
                    5 => Edit::Remove { tensor },
                    6 => Edit::Rename {
                        tensor,
                        name: name(&mut rng, tensor),
                    },
                    7 => Edit::Metadata {
                        value: [json!(null), json!(1), json!({"a": [1, 2]}), json!("x")]
                            [rng.random_range(0..4)]
                        .clone(),
                    },
                    8 => Edit::Chain,
                    _ => Edit::Replace {
                        json: [
                            "",
                            "[]",
                            "{",
                            "null",
                            "{\"a\":{}}",
                            "{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}",
                        ][rng.random_range(0..6)]
                        .to_string(),
                    },
                };
                Mutation::Header {
                    edit,
                    stale: rng.random_bool(0.15),
                }
            }
        })
        .collect();
    let special = rng.random_bool(0.06).then(|| {
        [
            Special::DevZero,
            Special::Pipe,
            Special::Directory,
            Special::Missing,
        ][rng.random_range(0..4)]
    });
    // drawn last, so that the seeds of the families before them still give their files
    let layouts = [
        TorchLayout::Same,
        TorchLayout::Transposed,
        TorchLayout::Unknown,
    ];
    model.layouts = (0..model.params.len())
        .map(|_| layouts[rng.random_range(0..3)])
        .collect();
    model.pt = rng.random_bool(0.5);
    (model, mutations, special)
}

/// The model as PyTorch would write it: each parameter transposed where its layout says
/// so, a row as a vector every other time, `format: pt` in the metadata if `model.pt`.
fn torch_file<F: Float>(model: &Model<F>) -> Vec<u8> {
    let mut header = Map::new();
    if model.pt {
        header.insert("__metadata__".into(), json!({"format": "pt"}));
    }
    let mut data = Vec::new();
    for (i, ((name, p), layout)) in model.params.iter().zip(&model.layouts).enumerate() {
        let (r, c) = p.dim();
        let (shape, stored) = match layout {
            TorchLayout::Transposed => (vec![c, r], p.t().to_owned()),
            _ if r == 1 && i % 2 == 0 => (vec![c], p.clone()),
            _ => (vec![r, c], p.clone()),
        };
        let begin = data.len();
        stored.iter().for_each(|v| v.write_le(&mut data));
        let dtype = if std::mem::size_of::<F>() == 4 {
            "F32"
        } else {
            "F64"
        };
        header.insert(
            name.clone(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [begin, data.len()]}),
        );
    }
    let header = serde_json::to_vec(&Value::Object(header)).expect("JSON");
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header);
    bytes.extend(data);
    bytes
}

/// The PyTorch form of the model through both loaders (see the module's docs).
fn check_torch<F: Float>(model: &Model<F>, fresh: &dyn Fn() -> Model<F>) {
    let bytes = torch_file(model);
    let unknown_square =
        model.params.iter().zip(&model.layouts).any(|((_, p), l)| {
            *l == TorchLayout::Unknown && p.nrows() == p.ncols() && p.nrows() > 1
        });
    let mut target = fresh();
    match catch(|| io::from_torch_bytes(&mut target, &bytes)) {
        Ok(Ok(())) => {
            assert!(
                !unknown_square,
                "io::from_torch_bytes guessed a square layout"
            );
            assert!(
                same_as(&target, model),
                "io::from_torch_bytes loaded other values"
            );
        }
        Ok(Err(CheckpointError::Layout(_))) if unknown_square => {
            assert!(
                same_as(&target, &fresh()),
                "io::from_torch_bytes failed but changed the model"
            );
        }
        Ok(Err(e)) => panic!("io::from_torch_bytes of the model's PyTorch file: {e}"),
        Err(e) => panic!("io::from_torch_bytes panicked: {}", message(&*e)),
    }
    let mut target = fresh();
    match catch(|| io::from_bytes(&mut target, &bytes)) {
        Ok(Ok(())) => {
            assert!(
                !model.pt,
                "io::from_bytes loaded a file that says `format: pt`"
            );
            assert!(
                same_as(&target, model),
                "io::from_bytes loaded a PyTorch file with other values (transposed?)"
            );
        }
        Ok(Err(_)) => {
            assert!(
                same_as(&target, &fresh()),
                "io::from_bytes failed but changed the model"
            );
        }
        Err(e) => panic!("io::from_bytes panicked: {}", message(&*e)),
    }
}

/// Whether two models hold the same bits.
fn same_as<F: Float>(a: &Model<F>, b: &Model<F>) -> bool {
    a.params
        .iter()
        .zip(&b.params)
        .all(|((_, x), (_, y))| same_bits(x, y))
}

/// The header of a safetensors file as JSON, and the data after it.
fn split(bytes: &[u8]) -> Option<(Map<String, Value>, Vec<u8>)> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header = bytes.get(8..8usize.checked_add(n)?)?;
    let map = serde_json::from_slice::<Value>(header)
        .ok()?
        .as_object()?
        .clone();
    Some((map, bytes[8 + n..].to_vec()))
}

fn join(header: &str, data: &[u8], stale: Option<u64>) -> Vec<u8> {
    let len = stale.unwrap_or(header.len() as u64);
    let mut out = len.to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// The tensors of a header (not `__metadata__`), in offset order.
fn tensors(map: &Map<String, Value>) -> Vec<String> {
    let mut names: Vec<(u64, String)> = map
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| (v["data_offsets"][0].as_u64().unwrap_or(0), k.clone()))
        .collect();
    names.sort();
    names.into_iter().map(|(_, k)| k).collect()
}

fn bits(dtype: &str) -> u64 {
    match dtype {
        "F64" | "I64" | "U64" => 64,
        "F32" | "I32" | "U32" => 32,
        "F16" | "BF16" | "I16" | "U16" => 16,
        "F4" => 4,
        _ => 8,
    }
}

fn edit(bytes: &[u8], edit: &Edit, stale: bool) -> Vec<u8> {
    let Some((mut map, data)) = split(bytes) else {
        return bytes.to_vec();
    };
    let names = tensors(&map);
    let pick = |t: usize| names.get(t % names.len().max(1)).cloned();
    match edit {
        Edit::Dtype { tensor, dtype } => {
            if let Some(n) = pick(*tensor) {
                set(&mut map, &n, "dtype", json!(dtype));
            }
        }
        Edit::Shape { tensor, shape } => {
            if let Some(n) = pick(*tensor) {
                set(&mut map, &n, "shape", json!(shape));
            }
        }
        Edit::Offsets { tensor, offsets } => {
            if let Some(n) = pick(*tensor) {
                set(&mut map, &n, "data_offsets", json!(offsets));
            }
        }
        Edit::Add {
            count,
            dtype,
            shape,
        } => {
            for i in 0..*count {
                map.insert(
                    format!("added{i}"),
                    json!({"dtype": dtype, "shape": shape, "data_offsets": [0, 0]}),
                );
            }
            chain(&mut map, &names);
        }
        Edit::Remove { tensor } => {
            if let Some(n) = pick(*tensor) {
                map.remove(&n);
            }
        }
        Edit::Rename { tensor, name } => {
            if let Some(n) = pick(*tensor) {
                if let Some(v) = map.remove(&n) {
                    map.insert(name.clone(), v);
                }
            }
        }
        Edit::Metadata { value } => {
            map.insert("__metadata__".into(), value.clone());
        }
        Edit::Chain => chain(&mut map, &names),
        Edit::Replace { json } => {
            let stale = stale.then_some(0);
            return join(json, &data, stale);
        }
    }
    let header = Value::Object(map).to_string();
    let stale = stale.then(|| header.len() as u64 + 1);
    join(&header, &data, stale)
}

/// Sets `key` of tensor `n`'s entry, if the entry is an object.
fn set(map: &mut Map<String, Value>, n: &str, key: &str, v: Value) {
    if let Some(Value::Object(entry)) = map.get_mut(n) {
        entry.insert(key.to_string(), v);
    }
}

/// Rewrites the offsets to chain: the tensors in `first` (offset order), then the others,
/// each as long as its dtype and shape say (wrapping, as a careless writer would).
fn chain(map: &mut Map<String, Value>, first: &[String]) {
    let mut order: Vec<String> = first.to_vec();
    let mut rest: Vec<String> = map
        .keys()
        .filter(|k| *k != "__metadata__" && !first.contains(k))
        .cloned()
        .collect();
    rest.sort();
    order.extend(rest);
    let mut start = 0u64;
    for n in order {
        let t = &map[&n];
        if !t.is_object() {
            continue;
        }
        let elems = t["shape"].as_array().map_or(1u64, |s| {
            s.iter()
                .fold(1u64, |p, d| p.wrapping_mul(d.as_u64().unwrap_or(0)))
        });
        let len = elems.wrapping_mul(bits(t["dtype"].as_str().unwrap_or(""))) / 8;
        let end = start.wrapping_add(len);
        set(map, &n, "data_offsets", json!([start, end]));
        start = end;
    }
}

fn mutate(bytes: &[u8], m: &Mutation) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let n = b.len();
    match m {
        Mutation::Flip { at, mask } => {
            if n > 0 {
                b[at % n] ^= mask;
            }
        }
        Mutation::Set { at, value } => {
            if n > 0 {
                b[at % n] = *value;
            }
        }
        Mutation::Truncate { len } => b.truncate(*len % (n + 1)),
        Mutation::Extend { bytes } => b.extend_from_slice(bytes),
        Mutation::Delete { at, len } => {
            let at = at % (n + 1);
            b.drain(at..(at + len).min(n));
        }
        Mutation::Copy { from, to, len } => {
            if n > 0 {
                let (from, to) = (from % n, to % n);
                let len = (*len).min(n - from).min(n - to);
                let piece = b[from..from + len].to_vec();
                b[to..to + len].copy_from_slice(&piece);
            }
        }
        Mutation::HeaderLength { len } => {
            if n >= 8 {
                b[..8].copy_from_slice(&len.to_le_bytes());
            }
        }
        Mutation::Header { edit: e, stale } => return edit(&b, e, *stale),
    }
    b
}

fn run(seed: u64) -> bool {
    let (model, mutations, special) = generate(seed);
    if seed % 2 == 0 {
        check(&model, &mutations, special);
    } else {
        let model = Model {
            params: model
                .params
                .iter()
                .map(|(n, p)| (n.clone(), p.mapv(|v| v as f32)))
                .collect(),
            layouts: model.layouts.clone(),
            pt: model.pt,
        };
        check(&model, &mutations, special);
    }
    true
}

fn check<F: Float>(model: &Model<F>, mutations: &[Mutation], special: Option<Special>) {
    let names: Vec<&String> = model.params.iter().map(|(n, _)| n).collect();
    let duplicate = names
        .iter()
        .enumerate()
        .any(|(i, n)| names[..i].contains(n));
    let bytes = match io::to_bytes(model) {
        Ok(b) => b,
        Err(e) => {
            let reserved = names.iter().any(|n| *n == "__metadata__");
            assert!(duplicate || reserved, "to_bytes: {e}");
            return;
        }
    };
    let mut bad = bytes.clone();
    for m in mutations {
        bad = mutate(&bad, m);
    }
    let fresh = || Model {
        params: model
            .params
            .iter()
            .map(|(n, p)| (n.clone(), Array2::<F>::zeros(p.dim())))
            .collect(),
        ..model.clone()
    };
    check_torch(model, &fresh);
    // from memory
    let mut target = fresh();
    match catch(|| io::from_bytes(&mut target, &bad)) {
        Ok(Ok(())) => {
            // loaded: it round-trips
            let again = io::to_bytes(&target).expect("a loaded model saves");
            let mut back = fresh();
            io::from_bytes(&mut back, &again).expect("a saved model loads");
            for ((_, a), (_, b)) in back.params.iter().zip(&target.params) {
                assert!(same_bits(a, b), "a loaded checkpoint does not round-trip");
            }
        }
        Ok(Err(_)) => {
            // unchanged on error
            for ((_, a), (_, b)) in target.params.iter().zip(&fresh().params) {
                assert!(
                    same_bits(a, b),
                    "io::from_bytes failed but changed the model"
                );
            }
        }
        Err(e) => panic!("io::from_bytes panicked: {}", message(&*e)),
    }
    if let Err(e) = catch(|| io::read_matrices::<F>(&bad)) {
        panic!("io::read_matrices panicked: {}", message(&*e));
    }
    let mut target = fresh();
    match catch(|| io::from_torch_bytes(&mut target, &bad)) {
        Ok(Ok(())) => {}
        Ok(Err(_)) => assert!(
            same_as(&target, &fresh()),
            "io::from_torch_bytes failed but changed the model"
        ),
        Err(e) => panic!("io::from_torch_bytes panicked: {}", message(&*e)),
    }
    // from a file
    let dir = std::env::temp_dir().join(format!("tapegrad-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let path = dir.join(format!("{:?}.safetensors", std::thread::current().id()));
    std::fs::write(&path, &bad).expect("the mutated file");
    if let Err(e) = catch(|| io::load(&mut fresh(), &path)) {
        panic!("io::load panicked: {}", message(&*e));
    }
    let _ = std::fs::remove_file(&path);
    // from a special file
    let Some(special) = special else { return };
    let path = match special {
        Special::DevZero => std::path::PathBuf::from("/dev/zero"),
        Special::Directory => dir.clone(),
        Special::Missing => dir.join("missing.safetensors"),
        Special::Pipe => {
            let pipe = dir.join(format!("{:?}.pipe", std::thread::current().id()));
            let _ = std::fs::remove_file(&pipe);
            let made = std::process::Command::new("mkfifo").arg(&pipe).status();
            if !made.is_ok_and(|s| s.success()) {
                return; // no mkfifo here
            }
            let (writer, bytes) = (pipe.clone(), bad.clone());
            std::thread::spawn(move || {
                if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&writer) {
                    let _ = f.write_all(&bytes);
                }
            });
            pipe
        }
    };
    let r = catch(|| io::load(&mut fresh(), &path));
    if let Special::Pipe = special {
        // a reader that never opened the pipe leaves the writer blocked on open: free it
        // (opening for reading without blocking, O_NONBLOCK)
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(0o4000)
            .open(&path);
        let _ = std::fs::remove_file(&path);
    }
    match r {
        Ok(Ok(())) => assert!(
            matches!(special, Special::Pipe),
            "io::load of {special:?} succeeded"
        ),
        Ok(Err(_)) => {}
        Err(e) => panic!("io::load of {special:?} panicked: {}", message(&*e)),
    }
}
