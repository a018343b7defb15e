//! Reading a safetensors file safely: its header checked (lengths, offsets, sizes,
//! with overflow-safe arithmetic) before safetensors sees the bytes, and files without a
//! length (pipes, devices) read only as far as their header declares.

use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors};

use super::{CheckpointError, format_error};

/// safetensors' own limit on the header's length.
const MAX_HEADER: u64 = 100_000_000;

/// A file's metadata (the header's `__metadata__`; empty without one), as the header
/// check read it.
pub(super) type Metadata = serde_json::Map<String, serde_json::Value>;

/// The bytes as safetensors reads them, once [`check_file`] found them well formed, and
/// their metadata.
pub(super) fn deserialize(bytes: &[u8]) -> Result<(SafeTensors<'_>, Metadata), CheckpointError> {
    let metadata = check_file(bytes)?;
    let file = SafeTensors::deserialize(bytes).map_err(format_error)?;
    Ok((file, metadata))
}

/// The text of `key` in a file's metadata.
pub(super) fn text<'m>(metadata: &'m Metadata, key: &str) -> Option<&'m str> {
    metadata.get(key).and_then(serde_json::Value::as_str)
}

/// Checks a whole safetensors file in memory: the header's length, the header
/// ([`check_header`]), and that the data is exactly as long as the header declares.
/// Returns the header's metadata.
fn check_file(bytes: &[u8]) -> Result<Metadata, CheckpointError> {
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
    let (data, metadata) = check_header(&bytes[8..8 + n as usize])?;
    if data != rest - n {
        return Err(CheckpointError::Format(format!(
            "the header declares {data} bytes of data, the file holds {}",
            rest - n
        )));
    }
    Ok(metadata)
}

/// Checks a safetensors header (the JSON after the length) as the format requires, with
/// checked arithmetic, and returns the length of the data it declares and its metadata
/// (`__metadata__`, which safetensors then checks holds text only). Every tensor's
/// dtype is known, its shape's product times the dtype's size is whole bytes and is its
/// data's length (`end − begin`, with `begin ≤ end`), and the tensors, sorted by offset,
/// tile the data from 0 without gap or overlap. safetensors 0.8 checks most of this, but
/// adds the declared data length to the header's without checking: a header declaring
/// nearly 2⁶⁴ bytes made it panic in builds with overflow checks.
fn check_header(header: &[u8]) -> Result<(u64, Metadata), CheckpointError> {
    let bad = |what: String| CheckpointError::Format(format!("invalid header: {what}"));
    let json: serde_json::Value = serde_json::from_slice(header).map_err(|e| bad(e.to_string()))?;
    let tensors = json
        .as_object()
        .ok_or_else(|| bad("not a JSON object".into()))?;
    let mut spans = Vec::with_capacity(tensors.len());
    let mut metadata = Metadata::new();
    for (name, info) in tensors {
        if name == "__metadata__" {
            if let Some(map) = info.as_object() {
                metadata = map.clone();
            }
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
    Ok((at, metadata))
}

/// Reads a safetensors file after checking, from its header alone, that it holds what
/// the header declares: a header length or tensor sizes beyond the file's length are
/// refused before the data is read or its buffer allocated. A file without a length (a
/// named pipe, a device) is read as a stream up to the end its header declares.
pub(super) fn read_checked(path: &Path) -> Result<Vec<u8>, CheckpointError> {
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
    let (data, _) = check_header(&bytes[8..])?;
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
