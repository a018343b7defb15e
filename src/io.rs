//! Checkpoints in [safetensors](https://github.com/huggingface/safetensors), the format
//! PyTorch and Hugging Face use: save and load a model's [`Parameters`] by name.
//!
//! Each parameter is one tensor named as [`Parameters::visit`] names it (`"0.weight"`),
//! with its 2-D shape, in row-major order, as `F32` or `F64`. The round trip is bit-exact.
//! Files written by Python's `safetensors` load here and the reverse
//! (`tests/data/make_fixtures.py`, `tests/data/check_checkpoint.py`).
//!
//! Loading is strict and all-or-nothing: every parameter must be in the file with the
//! model's dtype and shape, and nothing else may be; on any error the model is unchanged.
//! Truncated or corrupted files are errors, never panics.
//!
//! An optimizer's state (momentum buffers, Adam's moments, step counts, learning rate)
//! goes in a file of its own beside the model's ([`save_optimizer`], [`load_optimizer`]),
//! so that a resumed run is the run that was interrupted.
//!
//! ```
//! use ndarray::array;
//! use tapegrad::io;
//! use tapegrad::nn::Linear;
//!
//! let model = Linear { weight: array![[1.5f32, -2.0]], bias: Some(array![[0.25, 0.0]]) };
//! let bytes = io::to_bytes(&model).unwrap();
//! let mut other = Linear { weight: array![[0.0f32, 0.0]], bias: Some(array![[0.0, 0.0]]) };
//! io::from_bytes(&mut other, &bytes).unwrap();
//! assert_eq!(other, model);
//! // a model of another shape does not load
//! let mut wrong = Linear { weight: array![[0.0f32], [0.0]], bias: None };
//! assert!(io::from_bytes(&mut wrong, &bytes).is_err());
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use ndarray::Array2;
use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorView, View};

use crate::Float;
use crate::nn::Parameters;
use crate::optim::{OptimError, Optimizer, OptimizerState, ParamRecord};

/// Why a checkpoint could not be written or read.
#[non_exhaustive]
pub enum CheckpointError {
    /// Reading or writing the file failed.
    Io(std::io::Error),
    /// The bytes are not a valid safetensors file (truncated, corrupted header, offsets
    /// that do not fit the data, ...).
    Format(String),
    /// Two parameters of the model have the same name.
    DuplicateName {
        /// The name.
        name: String,
    },
    /// A parameter of the model is not in the file.
    MissingTensor {
        /// The parameter's name.
        name: String,
    },
    /// The file holds a tensor the model has no parameter for.
    UnexpectedTensor {
        /// The tensor's name.
        name: String,
    },
    /// A tensor's element type is not the model's.
    WrongDtype {
        /// The tensor's name.
        name: String,
        /// The model's type (`"F32"` or `"F64"`).
        expected: String,
        /// The file's type.
        found: String,
    },
    /// A tensor's shape is not the parameter's.
    WrongShape {
        /// The tensor's name.
        name: String,
        /// The parameter's shape.
        expected: Vec<usize>,
        /// The file's shape.
        found: Vec<usize>,
    },
    /// The optimizer refused the state in the file (another kind of optimizer, or
    /// another configuration).
    Optimizer(OptimError),
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointError::Io(e) => write!(f, "checkpoint I/O: {e}"),
            CheckpointError::Format(e) => write!(f, "not a valid safetensors file: {e}"),
            CheckpointError::DuplicateName { name } => {
                write!(f, "two parameters are named `{name}`")
            }
            CheckpointError::MissingTensor { name } => {
                write!(f, "parameter `{name}` is not in the checkpoint")
            }
            CheckpointError::UnexpectedTensor { name } => {
                write!(
                    f,
                    "the checkpoint holds `{name}`, which the model does not have"
                )
            }
            CheckpointError::WrongDtype {
                name,
                expected,
                found,
            } => {
                write!(
                    f,
                    "`{name}` is {found} in the checkpoint, the model needs {expected}"
                )
            }
            CheckpointError::WrongShape {
                name,
                expected,
                found,
            } => {
                write!(
                    f,
                    "`{name}` has shape {found:?} in the checkpoint, the model needs {expected:?}"
                )
            }
            CheckpointError::Optimizer(e) => write!(f, "the optimizer refused the state: {e}"),
        }
    }
}

impl fmt::Debug for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for CheckpointError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CheckpointError::Io(e) => Some(e),
            CheckpointError::Optimizer(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for CheckpointError {
    fn from(e: std::io::Error) -> Self {
        CheckpointError::Io(e)
    }
}

fn format_error(e: SafeTensorError) -> CheckpointError {
    CheckpointError::Format(e.to_string())
}

/// The safetensors type of `F`.
fn dtype<F: Float>() -> Dtype {
    if std::mem::size_of::<F>() == 4 {
        Dtype::F32
    } else {
        Dtype::F64
    }
}

/// `WrongDtype` unless the file's tensor `name` holds `F`s.
fn check_dtype<F: Float>(name: &str, tensor: &TensorView<'_>) -> Result<(), CheckpointError> {
    if tensor.dtype() == dtype::<F>() {
        return Ok(());
    }
    Err(CheckpointError::WrongDtype {
        name: name.to_string(),
        expected: dtype::<F>().to_string(),
        found: tensor.dtype().to_string(),
    })
}

/// The `F`s of little-endian `bytes`, in order.
fn decode<F: Float>(bytes: &[u8]) -> impl Iterator<Item = F> + '_ {
    bytes.chunks_exact(std::mem::size_of::<F>()).map(F::read_le)
}

/// One parameter, ready to serialize: its row-major little-endian bytes.
struct Tensor {
    dtype: Dtype,
    shape: [usize; 2],
    bytes: Vec<u8>,
}

impl View for &Tensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// The model's parameters as a safetensors file, in memory.
///
/// # Errors
///
/// [`CheckpointError::DuplicateName`] if two parameters share a name.
pub fn to_bytes<F: Float>(model: &dyn Parameters<F>) -> Result<Vec<u8>, CheckpointError> {
    let mut tensors = BTreeMap::new();
    let mut duplicate = None;
    model.visit(&mut |name, p| {
        let mut bytes = Vec::with_capacity(p.len() * std::mem::size_of::<F>());
        p.iter().for_each(|&x| x.write_le(&mut bytes));
        let (r, c) = p.dim();
        let tensor = Tensor {
            dtype: dtype::<F>(),
            shape: [r, c],
            bytes,
        };
        if tensors.insert(name.to_string(), tensor).is_some() {
            duplicate.get_or_insert_with(|| name.to_string());
        }
    });
    if let Some(name) = duplicate {
        return Err(CheckpointError::DuplicateName { name });
    }
    let metadata = [("producer".to_string(), "tapegrad".to_string())]
        .into_iter()
        .collect();
    safetensors::tensor::serialize(tensors.iter(), Some(metadata)).map_err(format_error)
}

/// Writes the model's parameters to a safetensors file at `path`, atomically: the bytes go
/// to a temporary file in the same directory, which is flushed to disk and then renamed
/// over `path`. A save that fails or is interrupted leaves the previous file at `path`
/// intact (and no temporary file, unless the process itself dies).
///
/// # Errors
///
/// As [`to_bytes`], and [`CheckpointError::Io`] if the file cannot be written.
pub fn save<F: Float>(
    model: &dyn Parameters<F>,
    path: impl AsRef<Path>,
) -> Result<(), CheckpointError> {
    let bytes = to_bytes(model)?;
    write_atomically(path.as_ref(), &bytes)?;
    Ok(())
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, and renames it to `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file")
    })?;
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}-{n}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Sets the model's parameters from a safetensors file in memory: all of them, or none.
///
/// # Errors
///
/// [`CheckpointError::Format`] for bytes that are not a valid safetensors file;
/// `MissingTensor`, `UnexpectedTensor`, `WrongDtype` or `WrongShape` when the file does not
/// hold exactly the model's parameters; `DuplicateName` for a model with two parameters of
/// one name. The model is unchanged on error.
pub fn from_bytes<F: Float>(
    model: &mut dyn Parameters<F>,
    bytes: &[u8],
) -> Result<(), CheckpointError> {
    let file = deserialize(bytes)?;
    // Both passes walk the model with `visit_mut` and match tensors by name, so a model
    // whose `visit` and `visit_mut` list parameters in different orders still loads right.
    let mut params: Vec<(String, (usize, usize))> = Vec::new();
    model.visit_mut(&mut |name, p| params.push((name.to_string(), p.dim())));
    let mut data: BTreeMap<&str, &[u8]> = BTreeMap::new();
    for (name, (r, c)) in &params {
        if data.contains_key(name.as_str()) {
            return Err(CheckpointError::DuplicateName { name: name.clone() });
        }
        let tensor = match file.tensor(name) {
            Ok(t) => t,
            Err(SafeTensorError::TensorNotFound(_)) => {
                return Err(CheckpointError::MissingTensor { name: name.clone() });
            }
            Err(e) => return Err(format_error(e)),
        };
        check_dtype::<F>(name, &tensor)?;
        if tensor.shape() != [*r, *c] {
            let (expected, found) = (vec![*r, *c], tensor.shape().to_vec());
            return Err(CheckpointError::WrongShape {
                name: name.clone(),
                expected,
                found,
            });
        }
        if tensor.data().len() != r * c * std::mem::size_of::<F>() {
            return Err(CheckpointError::Format(format!(
                "`{name}` has the wrong number of bytes"
            )));
        }
        data.insert(name, tensor.data());
    }
    if let Some(extra) = file.names().into_iter().find(|n| !data.contains_key(n)) {
        return Err(CheckpointError::UnexpectedTensor {
            name: extra.to_string(),
        });
    }
    model.visit_mut(&mut |name, p| {
        let bytes = data[name];
        p.iter_mut()
            .zip(decode::<F>(bytes))
            .for_each(|(x, v)| *x = v);
    });
    Ok(())
}

/// Sets the model's parameters from the safetensors file at `path`: all of them, or none.
///
/// The header is read and checked before the data: a file that declares more than it
/// holds is refused without reading on. A named pipe or a device, which has no length, is
/// read as a stream up to the end its header declares and no further (the writer may keep
/// the pipe open); opening a pipe waits for its writer, as any reader of a pipe does.
///
/// # Errors
///
/// As [`from_bytes`], and [`CheckpointError::Io`] if the file cannot be read (a
/// directory is `IsADirectory`).
pub fn load<F: Float>(
    model: &mut dyn Parameters<F>,
    path: impl AsRef<Path>,
) -> Result<(), CheckpointError> {
    let bytes = read_checked(path.as_ref())?;
    from_bytes(model, &bytes)
}

/// safetensors' own limit on the header's length.
const MAX_HEADER: u64 = 100_000_000;

/// The bytes as safetensors reads them, once [`check_file`] found them well formed.
fn deserialize(bytes: &[u8]) -> Result<SafeTensors<'_>, CheckpointError> {
    check_file(bytes)?;
    SafeTensors::deserialize(bytes).map_err(format_error)
}

/// Checks a whole safetensors file in memory: the header's length, the header
/// ([`check_header`]), and that the data is exactly as long as the header declares.
fn check_file(bytes: &[u8]) -> Result<(), CheckpointError> {
    let Some(prefix) = bytes.first_chunk::<8>() else {
        return Err(CheckpointError::Format(format!(
            "{} bytes are too few for the 8-byte header length",
            bytes.len()
        )));
    };
    let n = u64::from_le_bytes(*prefix);
    let rest = (bytes.len() - 8) as u64;
    if n > MAX_HEADER || n > rest {
        return Err(CheckpointError::Format(format!(
            "the header declares {n} bytes, the file holds {}",
            bytes.len()
        )));
    }
    let data = check_header(&bytes[8..8 + n as usize])?;
    if data != rest - n {
        return Err(CheckpointError::Format(format!(
            "the header declares {data} bytes of data, the file holds {}",
            rest - n
        )));
    }
    Ok(())
}

/// Checks a safetensors header (the JSON after the length) as the format requires, with
/// checked arithmetic, and returns the length of the data it declares. Every tensor's
/// dtype is known, its shape's product times the dtype's size is whole bytes and is its
/// data's length (`end − begin`, with `begin ≤ end`), and the tensors, sorted by offset,
/// tile the data from 0 without gap or overlap. safetensors 0.8 checks most of this, but
/// adds the declared data length to the header's without checking: a header declaring
/// nearly 2⁶⁴ bytes made it panic in builds with overflow checks.
fn check_header(header: &[u8]) -> Result<u64, CheckpointError> {
    let bad = |what: String| CheckpointError::Format(format!("invalid header: {what}"));
    let json: serde_json::Value = serde_json::from_slice(header).map_err(|e| bad(e.to_string()))?;
    let tensors = json
        .as_object()
        .ok_or_else(|| bad("not a JSON object".into()))?;
    let mut spans = Vec::with_capacity(tensors.len());
    for (name, info) in tensors {
        if name == "__metadata__" {
            continue;
        }
        let field = |key: &str| {
            info.get(key)
                .ok_or_else(|| bad(format!("`{name}` has no `{key}`")))
        };
        let numbers = |key: &str| -> Result<Vec<u64>, CheckpointError> {
            let list = field(key)?.as_array();
            list.and_then(|l| l.iter().map(serde_json::Value::as_u64).collect())
                .ok_or_else(|| bad(format!("`{name}`'s `{key}` is not a list of integers")))
        };
        let dtype: Dtype = serde_json::from_value(field("dtype")?.clone())
            .map_err(|e| bad(format!("`{name}`'s dtype: {e}")))?;
        let shape = numbers("shape")?;
        let &[begin, end] = &numbers("data_offsets")?[..] else {
            return Err(bad(format!("`{name}` needs two data offsets")));
        };
        // elements first, then bits, as safetensors counts them: an empty tensor with a
        // huge dimension ([2⁶³ − 1, 0]) is 0 bytes, not an overflow
        let bits = shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .and_then(|n| n.checked_mul(dtype.bitsize() as u64))
            .filter(|bits| bits % 8 == 0)
            .ok_or_else(|| {
                bad(format!(
                    "`{name}`'s shape {shape:?} is not a whole number of bytes"
                ))
            })?;
        if end.checked_sub(begin) != Some(bits / 8) {
            return Err(bad(format!(
                "`{name}` has offsets {begin}..{end} for {} bytes",
                bits / 8
            )));
        }
        spans.push((begin, end, name));
    }
    spans.sort_unstable();
    let mut at = 0;
    for (begin, end, name) in spans {
        if begin != at {
            return Err(bad(format!(
                "`{name}` starts at {begin}, the data before it ends at {at}"
            )));
        }
        at = end;
    }
    Ok(at)
}

/// Reads a safetensors file after checking, from its header alone, that it holds what
/// the header declares: a header length or tensor sizes beyond the file's length are
/// refused before the data is read or its buffer allocated. A file without a length (a
/// named pipe, a device) is read as a stream up to the end its header declares.
fn read_checked(path: &Path) -> Result<Vec<u8>, CheckpointError> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let metadata = file.metadata()?;
    // a directory is an error of the read below (`IsADirectory`), not a file of 4096 bytes
    let len = metadata.is_file().then_some(metadata.len());
    let mut bytes = Vec::with_capacity(8);
    (&mut file).take(8).read_to_end(&mut bytes)?;
    let Some(&prefix) = bytes.first_chunk::<8>() else {
        return Err(CheckpointError::Format(format!(
            "the file holds {} bytes, too few for the 8-byte header length",
            bytes.len()
        )));
    };
    let n = u64::from_le_bytes(prefix);
    if n > MAX_HEADER || len.is_some_and(|len| n > len.saturating_sub(8)) {
        let holds = len.map_or_else(String::new, |len| format!(", the file holds {len}"));
        return Err(CheckpointError::Format(format!(
            "the header declares {n} bytes{holds}"
        )));
    }
    bytes.reserve_exact(n as usize);
    (&mut file).take(n).read_to_end(&mut bytes)?;
    if bytes.len() as u64 != 8 + n {
        return Err(CheckpointError::Format(format!(
            "the file ends inside its header of {n} bytes"
        )));
    }
    let data = check_header(&bytes[8..])?;
    let declared = data.saturating_add(8 + n);
    match len {
        Some(len) if declared != len => {
            return Err(CheckpointError::Format(format!(
                "the header declares {declared} bytes in all, the file holds {len}"
            )));
        }
        Some(_) => bytes.reserve_exact(data as usize),
        // a stream: read what the header declares, and no further (its writer may hold it
        // open); the buffer grows as the data comes
        None => {}
    }
    file.take(data).read_to_end(&mut bytes)?;
    if bytes.len() as u64 != declared {
        return Err(CheckpointError::Format(format!(
            "the header declares {declared} bytes in all, the file ended after {}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// The tensors of a safetensors file as `F` matrices, by name (for data written by other
/// tools, such as expected outputs). 1-D tensors become 1 × n rows.
///
/// # Errors
///
/// As [`from_bytes`] for invalid bytes; `WrongDtype` for a tensor that is not `F`;
/// `WrongShape` for a tensor of more than two dimensions.
pub fn read_matrices<F: Float>(
    bytes: &[u8],
) -> Result<BTreeMap<String, Array2<F>>, CheckpointError> {
    let file = deserialize(bytes)?;
    let mut out = BTreeMap::new();
    for (name, tensor) in file.tensors() {
        check_dtype::<F>(&name, &tensor)?;
        let shape = match *tensor.shape() {
            [n] => (1, n),
            [r, c] => (r, c),
            ref other => {
                let (expected, found) = (vec![0, 0], other.to_vec());
                return Err(CheckpointError::WrongShape {
                    name,
                    expected,
                    found,
                });
            }
        };
        let values = decode::<F>(tensor.data()).collect();
        let array = Array2::from_shape_vec(shape, values)
            .map_err(|e| CheckpointError::Format(format!("`{name}`: {e}")))?;
        out.insert(name, array);
    }
    Ok(out)
}

/// The metadata key of an optimizer file's description (kind, rate, steps, parameters).
const OPTIMIZER_KEY: &str = "tapegrad.optimizer";

/// An optimizer's state ([`Optimizer::state`]) as a safetensors file, in memory: buffer
/// `k` of parameter `i` (in the model's order) is tensor `"{i}.{k}"`, and the kind, base
/// learning rate, step counts and parameter names and shapes are JSON in the metadata
/// under `"tapegrad.optimizer"`. The round trip is bit-exact.
///
/// ```
/// use ndarray::array;
/// use tapegrad::io;
/// use tapegrad::nn::Linear;
/// use tapegrad::optim::{Adam, Optimizer};
/// use tapegrad::Tape;
///
/// let mut model = Linear { weight: array![[1.0f32, -2.0]], bias: None };
/// let mut opt = Adam::new(0.1);
/// let grads = {
///     let tape = Tape::new();
///     tape.backward(tape.param(&model.weight).square().sum()).unwrap()
/// };
/// opt.step(&mut model, &grads).unwrap();
/// let bytes = io::optimizer_to_bytes(&opt).unwrap();
/// let mut resumed = Adam::new(0.1);
/// io::optimizer_from_bytes(&mut resumed, &bytes).unwrap();
/// assert_eq!(resumed.state(), opt.state());
/// ```
///
/// # Errors
///
/// [`CheckpointError::Format`] if safetensors cannot write the tensors.
pub fn optimizer_to_bytes<F: Float>(
    optimizer: &dyn Optimizer<F>,
) -> Result<Vec<u8>, CheckpointError> {
    let state = optimizer.state();
    let mut tensors = BTreeMap::new();
    let mut params = Vec::with_capacity(state.params.len());
    for (i, p) in state.params.iter().enumerate() {
        params.push(serde_json::json!({
            "name": p.name,
            "shape": [p.shape.0, p.shape.1],
            "steps": p.steps,
        }));
        for (k, b) in p.buffers.iter().enumerate() {
            let mut bytes = Vec::with_capacity(b.len() * std::mem::size_of::<F>());
            b.iter().for_each(|&x| x.write_le(&mut bytes));
            let tensor = Tensor {
                dtype: dtype::<F>(),
                shape: [b.nrows(), b.ncols()],
                bytes,
            };
            tensors.insert(format!("{i}.{k}"), tensor);
        }
    }
    let description = serde_json::json!({
        "kind": state.kind,
        // as text: exact, and NaN or ∞ survive
        "lr": format!("{:?}", state.lr.as_f64()),
        "steps": state.steps,
        "params": params,
    });
    let metadata = [
        ("producer".to_string(), "tapegrad".to_string()),
        (OPTIMIZER_KEY.to_string(), description.to_string()),
    ]
    .into_iter()
    .collect();
    safetensors::tensor::serialize(tensors.iter(), Some(metadata)).map_err(format_error)
}

/// Sets an optimizer's state from a file made by [`optimizer_to_bytes`]: all of it, or
/// none. The optimizer must be of the same kind and configuration (momentum on or off);
/// its hyperparameters stay its own ([`Optimizer::load_state`]).
///
/// # Errors
///
/// [`CheckpointError::Format`] for bytes that are not a valid safetensors file or not an
/// optimizer's state (no or a broken description, a tensor missing or left over);
/// `WrongDtype` and `WrongShape` for a buffer of another type or shape than its
/// parameter; [`CheckpointError::Optimizer`] if the optimizer refuses the state. The
/// optimizer is unchanged on error.
pub fn optimizer_from_bytes<F: Float>(
    optimizer: &mut dyn Optimizer<F>,
    bytes: &[u8],
) -> Result<(), CheckpointError> {
    let file = deserialize(bytes)?;
    let bad = |what: &str| CheckpointError::Format(format!("not an optimizer's state: {what}"));
    // check_file passed: the header length is in range
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes[8..8 + n]).map_err(|e| bad(&e.to_string()))?;
    let text = header["__metadata__"][OPTIMIZER_KEY]
        .as_str()
        .ok_or_else(|| bad(&format!("no `{OPTIMIZER_KEY}` in the metadata")))?;
    let description: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
    let kind = description["kind"].as_str().ok_or_else(|| bad("no kind"))?;
    let lr: f64 = description["lr"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| bad("no learning rate"))?;
    let steps = description["steps"]
        .as_u64()
        .and_then(|s| usize::try_from(s).ok())
        .ok_or_else(|| bad("no step count"))?;
    let list = description["params"]
        .as_array()
        .ok_or_else(|| bad("no parameter list"))?;
    let mut params = Vec::with_capacity(list.len());
    let mut used = 0;
    for (i, p) in list.iter().enumerate() {
        let name = p["name"]
            .as_str()
            .ok_or_else(|| bad("a parameter without a name"))?;
        let dim = |k: usize| {
            p["shape"][k]
                .as_u64()
                .and_then(|d| usize::try_from(d).ok())
                .ok_or_else(|| bad(&format!("`{name}` has no shape")))
        };
        let shape = (dim(0)?, dim(1)?);
        let param_steps = p["steps"]
            .as_u64()
            .ok_or_else(|| bad(&format!("`{name}` has no step count")))?;
        let mut buffers = Vec::new();
        while let Ok(tensor) = file.tensor(&format!("{i}.{}", buffers.len())) {
            check_dtype::<F>(name, &tensor)?;
            if tensor.shape() != [shape.0, shape.1] {
                return Err(CheckpointError::WrongShape {
                    name: name.to_string(),
                    expected: vec![shape.0, shape.1],
                    found: tensor.shape().to_vec(),
                });
            }
            let values = decode::<F>(tensor.data()).collect();
            let array = Array2::from_shape_vec(shape, values)
                .map_err(|e| bad(&format!("`{name}`: {e}")))?;
            buffers.push(array);
        }
        used += buffers.len();
        params.push(ParamRecord {
            name: name.to_string(),
            shape,
            steps: param_steps,
            buffers,
        });
    }
    if used != file.len() {
        return Err(bad("the file holds tensors of no parameter"));
    }
    let state = OptimizerState {
        kind: kind.to_string(),
        lr: F::cast(lr),
        steps,
        params,
    };
    optimizer
        .load_state(state)
        .map_err(CheckpointError::Optimizer)
}

/// Writes an optimizer's state ([`optimizer_to_bytes`]) to `path`, atomically as
/// [`save`] does: save it beside the model to resume a run as it was.
///
/// # Errors
///
/// As [`optimizer_to_bytes`], and [`CheckpointError::Io`] if the file cannot be written.
pub fn save_optimizer<F: Float>(
    optimizer: &dyn Optimizer<F>,
    path: impl AsRef<Path>,
) -> Result<(), CheckpointError> {
    let bytes = optimizer_to_bytes(optimizer)?;
    write_atomically(path.as_ref(), &bytes)?;
    Ok(())
}

/// Sets an optimizer's state from the file at `path` ([`optimizer_from_bytes`]), read
/// with the checks [`load`] makes.
///
/// # Errors
///
/// As [`optimizer_from_bytes`], and [`CheckpointError::Io`] if the file cannot be read.
pub fn load_optimizer<F: Float>(
    optimizer: &mut dyn Optimizer<F>,
    path: impl AsRef<Path>,
) -> Result<(), CheckpointError> {
    let bytes = read_checked(path.as_ref())?;
    optimizer_from_bytes(optimizer, &bytes)
}
