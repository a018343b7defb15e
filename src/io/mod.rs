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
//! Linear weights are inputs × outputs here (`y = x·W + b`) and outputs × inputs in
//! PyTorch, under the same names: tapegrad writes its layout in the file's metadata,
//! [`load`] refuses a file in PyTorch's layout or one that could be read either way, and
//! [`load_torch`] reads a PyTorch state dict, transposing what PyTorch stores transposed
//! ([`Parameters::visit_torch_layout`]).
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
use safetensors::tensor::{Dtype, SafeTensorError, TensorView, View};

use crate::Float;
use crate::nn::Parameters;
use crate::optim::OptimError;

mod file;
mod optimizer;
mod torch;

use file::{deserialize, read_checked};
pub use optimizer::{load_optimizer, optimizer_from_bytes, optimizer_to_bytes, save_optimizer};
pub use torch::{from_torch_bytes, load_torch};

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
    /// A parameter is named `__metadata__`, the key safetensors keeps for the file's
    /// metadata: such a file could not be read back.
    ReservedName {
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
    /// The file's layout is not the one the loader reads (a PyTorch state dict given to
    /// [`load`], a tapegrad file to [`load_torch`]), or the file does not say its layout
    /// and a parameter could be read either way: what happened and what to do.
    Layout(String),
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointError::Io(e) => write!(f, "checkpoint I/O: {e}"),
            CheckpointError::Format(e) => write!(f, "not a valid safetensors file: {e}"),
            CheckpointError::DuplicateName { name } => {
                write!(f, "two parameters are named `{name}`")
            }
            CheckpointError::ReservedName { name } => write!(
                f,
                "a parameter is named `{name}`, which safetensors keeps for the file's \
                 metadata: rename it"
            ),
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
                )?;
                if let ([r, c], [fr, fc]) = (&expected[..], &found[..]) {
                    if (r, c) == (fc, fr) {
                        write!(
                            f,
                            " (its transpose: PyTorch stores a linear weight as outputs × \
                             inputs; load a PyTorch state dict with `io::load_torch`)"
                        )?;
                    }
                }
                Ok(())
            }
            CheckpointError::Optimizer(e) => write!(f, "the optimizer refused the state: {e}"),
            CheckpointError::Layout(e) => write!(f, "{e}"),
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

/// The key of a safetensors header that holds the file's metadata, not a tensor.
const RESERVED: &str = "__metadata__";

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

/// The model's parameters as a safetensors file, in memory, with the metadata
/// `{"layout": "tapegrad"}` (linear weights as inputs × outputs; see [`from_bytes`]). The
/// bytes depend on the model alone.
///
/// # Errors
///
/// [`CheckpointError::DuplicateName`] if two parameters share a name,
/// [`CheckpointError::ReservedName`] for a parameter named `__metadata__`.
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
    if let Some(name) = tensors.keys().find(|n| *n == RESERVED) {
        return Err(CheckpointError::ReservedName { name: name.clone() });
    }
    // one key: safetensors writes the metadata in its map's order, which for two keys
    // would change from run to run (files written before the key had `producer`)
    let metadata = [(torch::LAYOUT_KEY.to_string(), torch::TAPEGRAD.to_string())]
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
/// The file must hold tapegrad's layout: a linear weight as inputs × outputs. Files
/// tapegrad writes say so in their metadata (`"layout": "tapegrad"`); a file that says it
/// holds a PyTorch state dict (`"format": "pt"`) is refused with a pointer to
/// [`from_torch_bytes`], and so is a file that says nothing when the model has a square
/// parameter that PyTorch could have stored transposed
/// ([`TorchLayout`](crate::nn::TorchLayout)): such a file
/// could load silently transposed, so it does not load at all.
///
/// # Errors
///
/// [`CheckpointError::Format`] for bytes that are not a valid safetensors file;
/// [`CheckpointError::Layout`] for a file in PyTorch's layout or one that does not say
/// its layout where it matters; `MissingTensor`, `UnexpectedTensor`, `WrongDtype` or
/// `WrongShape` when the file does not hold exactly the model's parameters;
/// `DuplicateName` for a model with two parameters of one name. The model is unchanged on
/// error.
pub fn from_bytes<F: Float>(
    model: &mut dyn Parameters<F>,
    bytes: &[u8],
) -> Result<(), CheckpointError> {
    let (file, metadata) = deserialize(bytes)?;
    torch::check_native_layout(&*model, &metadata)?;
    load_from(model, &file, &mut |name, (r, c), found| {
        if found == [r, c] {
            Ok(Read::AsIs)
        } else {
            Err(wrong_shape(name, &[r, c], found))
        }
    })
}

/// How to read a parameter (named, of the shape given) from a tensor of the shape given.
type ReadHow<'a> = dyn FnMut(&str, (usize, usize), &[usize]) -> Result<Read, CheckpointError> + 'a;

/// How a parameter is read from its tensor.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Element for element, in row-major order.
    AsIs,
    /// The tensor is the parameter's transpose.
    Transposed,
}

fn wrong_shape(name: &str, expected: &[usize], found: &[usize]) -> CheckpointError {
    CheckpointError::WrongShape {
        name: name.to_string(),
        expected: expected.to_vec(),
        found: found.to_vec(),
    }
}

/// Sets the model's parameters from `file`, all or none: each from the tensor of its
/// name, read as `how` says from the parameter's shape and the tensor's (or refused).
/// Both passes walk the model with `visit_mut` and match tensors by name, so a model
/// whose `visit` and `visit_mut` list parameters in different orders still loads right.
fn load_from<F: Float>(
    model: &mut dyn Parameters<F>,
    file: &safetensors::SafeTensors<'_>,
    how: &mut ReadHow<'_>,
) -> Result<(), CheckpointError> {
    let mut params: Vec<(String, (usize, usize))> = Vec::new();
    model.visit_mut(&mut |name, p| params.push((name.to_string(), p.dim())));
    let mut data: BTreeMap<&str, (Read, &[u8])> = BTreeMap::new();
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
        let read = how(name, (*r, *c), tensor.shape())?;
        if tensor.data().len() != r * c * std::mem::size_of::<F>() {
            return Err(CheckpointError::Format(format!(
                "`{name}` has the wrong number of bytes"
            )));
        }
        data.insert(name, (read, tensor.data()));
    }
    if let Some(extra) = file.names().into_iter().find(|n| !data.contains_key(n)) {
        return Err(CheckpointError::UnexpectedTensor {
            name: extra.to_string(),
        });
    }
    model.visit_mut(&mut |name, p| {
        let (read, bytes) = data[name];
        match read {
            Read::AsIs => p
                .iter_mut()
                .zip(decode::<F>(bytes))
                .for_each(|(x, v)| *x = v),
            // the tensor's row j is the parameter's column j
            Read::Transposed => p
                .view_mut()
                .reversed_axes()
                .iter_mut()
                .zip(decode::<F>(bytes))
                .for_each(|(x, v)| *x = v),
        }
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
    let (file, _) = deserialize(bytes)?;
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
