//! An optimizer's state in a safetensors file of its own, beside the model's.

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::Array2;

use super::file::{deserialize, read_checked, text};
use super::{CheckpointError, Tensor, check_dtype, decode, dtype, format_error, write_atomically};
use crate::Float;
use crate::optim::{Optimizer, OptimizerState, ParamRecord};

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
    // one key: safetensors writes the metadata in its map's order, which for two keys
    // changes from run to run (the file's bytes did, when it had a `producer` too)
    let metadata = [(OPTIMIZER_KEY.to_string(), description.to_string())]
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
    let (file, metadata) = deserialize(bytes)?;
    let bad = |what: &str| CheckpointError::Format(format!("not an optimizer's state: {what}"));
    let description = text(&metadata, OPTIMIZER_KEY)
        .ok_or_else(|| bad(&format!("no `{OPTIMIZER_KEY}` in the metadata")))?;
    let description: serde_json::Value =
        serde_json::from_str(description).map_err(|e| bad(&e.to_string()))?;
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
/// [`save`](super::save) does: save it beside the model to resume a run as it was.
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
/// with the checks [`load`](super::load) makes.
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
