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
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;

use ndarray::Array2;
use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorView, View};

use crate::Float;
use crate::nn::Parameters;

/// Why a checkpoint could not be written or read.
#[derive(Debug)]
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
        }
    }
}

impl std::error::Error for CheckpointError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CheckpointError::Io(e) => Some(e),
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

/// Writes the model's parameters to a safetensors file at `path`.
///
/// # Errors
///
/// As [`to_bytes`], and [`CheckpointError::Io`] if the file cannot be written.
pub fn save<F: Float>(
    model: &dyn Parameters<F>,
    path: impl AsRef<Path>,
) -> Result<(), CheckpointError> {
    std::fs::write(path, to_bytes(model)?)?;
    Ok(())
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
    let file = SafeTensors::deserialize(bytes).map_err(format_error)?;
    let mut params: Vec<(String, (usize, usize))> = Vec::new();
    model.visit(&mut |name, p| params.push((name.to_string(), p.dim())));
    let mut names = HashSet::new();
    let mut data = Vec::with_capacity(params.len());
    for (name, (r, c)) in &params {
        if !names.insert(name.as_str()) {
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
        data.push(tensor.data());
    }
    if let Some(extra) = file.names().into_iter().find(|n| !names.contains(n)) {
        return Err(CheckpointError::UnexpectedTensor {
            name: extra.to_string(),
        });
    }
    let mut data = data.into_iter();
    model.visit_mut(&mut |_, p| {
        let bytes = data.next().expect("validated: one tensor per parameter");
        p.iter_mut()
            .zip(decode::<F>(bytes))
            .for_each(|(x, v)| *x = v);
    });
    Ok(())
}

/// Sets the model's parameters from the safetensors file at `path`: all of them, or none.
///
/// # Errors
///
/// As [`from_bytes`], and [`CheckpointError::Io`] if the file cannot be read.
pub fn load<F: Float>(
    model: &mut dyn Parameters<F>,
    path: impl AsRef<Path>,
) -> Result<(), CheckpointError> {
    let bytes = std::fs::read(path)?;
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
    let file = SafeTensors::deserialize(bytes).map_err(format_error)?;
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
