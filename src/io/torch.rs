//! PyTorch state dicts: which layout a file holds, and loading one into a model, with
//! the linear weights transposed ([`load_torch`]).
//!
//! tapegrad's `Linear` computes `y = x·W + b` with `W` of inputs × outputs; PyTorch's
//! `nn.Linear` computes `y = x·Wᵀ + b` with `W` of outputs × inputs, and a bias of one
//! dimension. Parameter names are the same (`"0.weight"`), so a square layer of a PyTorch
//! file would load silently transposed into a tapegrad model if nothing said which layout
//! a file holds. tapegrad writes its layout in the file's metadata; each layer says how
//! PyTorch stores its parameters ([`Parameters::visit_torch_layout`]); and a file that
//! cannot be told apart is refused, with what to do.

use std::collections::BTreeMap;
use std::path::Path;

use super::file::{Metadata, deserialize, read_checked, text};
use super::{CheckpointError, Read, load_from, wrong_shape};
use crate::Float;
use crate::nn::{Parameters, TorchLayout};

/// The metadata key of the layout tapegrad writes, and its value.
pub(super) const LAYOUT_KEY: &str = "layout";
pub(super) const TAPEGRAD: &str = "tapegrad";

/// What a file's metadata says of its layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Declared {
    /// tapegrad's (`layout: tapegrad`, or written by tapegrad before the key existed).
    Tapegrad,
    /// PyTorch's (`format: pt`, as Hugging Face writes it, or `layout: torch`).
    Torch,
    /// Nothing (Python's `save_file` without metadata).
    Nothing,
}

fn declared(metadata: &Metadata) -> Result<Declared, CheckpointError> {
    let get = |key: &str| text(metadata, key);
    match (get(LAYOUT_KEY), get("format"), get("producer")) {
        (Some(TAPEGRAD), _, _) => Ok(Declared::Tapegrad),
        (Some("torch" | "pytorch"), _, _) => Ok(Declared::Torch),
        (Some(other), _, _) => Err(CheckpointError::Layout(format!(
            "the file's metadata names the layout `{}`, which tapegrad does not know (it \
             reads `tapegrad` with `io::load` and `torch` with `io::load_torch`)",
            other.escape_debug()
        ))),
        (None, _, Some(TAPEGRAD)) => Ok(Declared::Tapegrad),
        (None, Some("pt"), _) => Ok(Declared::Torch),
        (None, _, _) => Ok(Declared::Nothing),
    }
}

/// Each parameter's [`TorchLayout`] by name (`Unknown` for one the model does not say).
fn layouts<F: Float>(model: &dyn Parameters<F>) -> BTreeMap<String, TorchLayout> {
    let mut out = BTreeMap::new();
    model.visit_torch_layout(&mut |name, layout| {
        out.insert(name.to_string(), layout);
    });
    out
}

/// What [`io::from_bytes`](super::from_bytes) asks of a file's layout: tapegrad's, or
/// not said where no parameter could be read either way.
pub(super) fn check_native_layout<F: Float>(
    model: &dyn Parameters<F>,
    metadata: &Metadata,
) -> Result<(), CheckpointError> {
    match declared(metadata)? {
        Declared::Tapegrad => Ok(()),
        Declared::Torch => Err(CheckpointError::Layout(
            "the file says it holds a PyTorch state dict (linear weights as outputs × \
             inputs): load it with `io::load_torch` (or `io::from_torch_bytes`), which \
             transposes them"
                .to_string(),
        )),
        Declared::Nothing => {
            let layouts = layouts(model);
            let mut ambiguous = None;
            model.visit(&mut |name, p| {
                let layout = layouts.get(name).copied().unwrap_or(TorchLayout::Unknown);
                let square = p.nrows() == p.ncols() && p.nrows() > 1;
                if square && layout != TorchLayout::Same && ambiguous.is_none() {
                    ambiguous = Some((name.to_string(), p.nrows()));
                }
            });
            match ambiguous {
                None => Ok(()),
                Some((name, n)) => Err(CheckpointError::Layout(format!(
                    "the file does not say its layout, and `{name}` is square ({n} × {n}): \
                     PyTorch stores a linear weight transposed (outputs × inputs), so the \
                     file could hold either. If PyTorch wrote it, load it with \
                     `io::load_torch`; if it holds tapegrad's layout (inputs × outputs), \
                     write it with the metadata {{\"layout\": \"tapegrad\"}} (Python: \
                     `save_file(tensors, path, metadata={{\"layout\": \"tapegrad\"}})`)"
                ))),
            }
        }
    }
}

/// Sets the model's parameters from a PyTorch state dict saved as safetensors, in memory:
/// all of them, or none. Each parameter is read as its layer says PyTorch stores it
/// ([`Parameters::visit_torch_layout`]): a linear weight transposed (PyTorch's outputs ×
/// inputs becomes tapegrad's inputs × outputs), a bias or a norm's scale from a vector or
/// a row. Names are matched as they are (`Sequential`'s `"0.weight"` is PyTorch's
/// `nn.Sequential`'s).
///
/// ```
/// use ndarray::{Array2, array};
/// use tapegrad::io;
/// use tapegrad::nn::Linear;
///
/// // what Python writes for `nn.Linear(2, 3)`: weight (3, 2), bias (3,)
/// let header = r#"{"weight":{"dtype":"F64","shape":[3,2],"data_offsets":[0,48]},"bias":{"dtype":"F64","shape":[3],"data_offsets":[48,72]}}"#;
/// let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
/// bytes.extend_from_slice(header.as_bytes());
/// for v in [1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0, 0.1, 0.2, 0.3] {
///     bytes.extend_from_slice(&v.to_le_bytes());
/// }
///
/// let mut layer = Linear { weight: Array2::zeros((2, 3)), bias: Some(Array2::zeros((1, 3))) };
/// io::from_torch_bytes(&mut layer, &bytes).unwrap();
/// assert_eq!(layer.weight, array![[1.0, 3.0, 5.0], [2.0, 4.0, 6.0]]);
/// assert_eq!(layer.bias, Some(array![[0.1, 0.2, 0.3]]));
/// ```
///
/// # Errors
///
/// As [`from_bytes`](super::from_bytes), and [`CheckpointError::Layout`] for a file that
/// says it holds tapegrad's layout (load it with [`load`](super::load)), or a square
/// parameter whose layer does not say how PyTorch stores it. The model is unchanged on
/// error.
pub fn from_torch_bytes<F: Float>(
    model: &mut dyn Parameters<F>,
    bytes: &[u8],
) -> Result<(), CheckpointError> {
    let (file, metadata) = deserialize(bytes)?;
    if declared(&metadata)? == Declared::Tapegrad {
        return Err(CheckpointError::Layout(
            "the file says it holds tapegrad's layout (linear weights as inputs × \
             outputs): load it with `io::load` (or `io::from_bytes`)"
                .to_string(),
        ));
    }
    let layouts = layouts(&*model);
    load_from(model, &file, &mut |name, (r, c), found| {
        let layout = layouts.get(name).copied().unwrap_or(TorchLayout::Unknown);
        // a row may come as PyTorch's vector
        let as_is = found == [r, c] || (r == 1 && found == [c]);
        match layout {
            TorchLayout::Transposed if found == [c, r] => Ok(Read::Transposed),
            TorchLayout::Transposed => Err(wrong_shape(name, &[c, r], found)),
            TorchLayout::Unknown if r == c && r > 1 => Err(CheckpointError::Layout(format!(
                "`{name}` is square ({r} × {r}) and its layer does not say how PyTorch \
                 stores it: implement `Parameters::visit_torch_layout` for the layer \
                 holding it (`TorchLayout::Transposed` for a weight PyTorch stores as \
                 outputs × inputs, `Same` otherwise)"
            ))),
            _ if as_is => Ok(Read::AsIs),
            _ => Err(wrong_shape(name, &[r, c], found)),
        }
    })
}

/// Sets the model's parameters from a PyTorch state dict saved as a safetensors file at
/// `path` (`safetensors.torch.save_file(model.state_dict(), path)`): all of them, or none,
/// as [`from_torch_bytes`] reads them. The file is read as [`load`](super::load) reads one.
///
/// # Errors
///
/// As [`from_torch_bytes`], and [`CheckpointError::Io`] if the file cannot be read.
pub fn load_torch<F: Float>(
    model: &mut dyn Parameters<F>,
    path: impl AsRef<Path>,
) -> Result<(), CheckpointError> {
    let bytes = read_checked(path.as_ref())?;
    from_torch_bytes(model, &bytes)
}
