//! Reading an eval's JSON input into numbers and arrays (untimed), and writing arrays back.

use ndarray::Array2;
use serde_json::Value;

/// `input[key]`, or an error naming the key.
pub fn field<'a>(input: &'a Value, key: &str) -> Result<&'a Value, String> {
    input
        .get(key)
        .ok_or_else(|| format!("input has no {key:?}"))
}

/// A number.
pub fn number(v: &Value, what: &str) -> Result<f64, String> {
    v.as_f64().ok_or_else(|| format!("{what}: not a number"))
}

/// A non-negative integer.
pub fn count(v: &Value, what: &str) -> Result<usize, String> {
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("{what}: not a non-negative integer"))
}

/// An array of numbers.
pub fn numbers(v: &Value, what: &str) -> Result<Vec<f64>, String> {
    let items = v
        .as_array()
        .ok_or_else(|| format!("{what}: not an array"))?;
    items.iter().map(|x| number(x, what)).collect()
}

/// An array of non-negative integers.
pub fn counts(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    let items = v
        .as_array()
        .ok_or_else(|| format!("{what}: not an array"))?;
    items.iter().map(|x| count(x, what)).collect()
}

/// A nested array (rows of equal length) as a matrix; `cols` gives the width of an empty
/// one (and is checked otherwise, when given).
pub fn matrix(v: &Value, what: &str, cols: Option<usize>) -> Result<Array2<f64>, String> {
    let rows = v
        .as_array()
        .ok_or_else(|| format!("{what}: not an array of rows"))?;
    let width = match (rows.first(), cols) {
        (Some(r), _) => r.as_array().map(Vec::len).unwrap_or(0),
        (None, Some(c)) => c,
        (None, None) => 0,
    };
    if let Some(c) = cols.filter(|&c| c != width) {
        return Err(format!("{what}: rows of {width} numbers, expected {c}"));
    }
    let mut data = Vec::with_capacity(rows.len() * width);
    for row in rows {
        let row = numbers(row, what)?;
        if row.len() != width {
            return Err(format!("{what}: rows of different lengths"));
        }
        data.extend(row);
    }
    Array2::from_shape_vec((rows.len(), width), data).map_err(|e| format!("{what}: {e}"))
}

/// A matrix as nested rows.
pub fn rows(a: &Array2<f64>) -> Value {
    Value::from(
        a.rows()
            .into_iter()
            .map(|r| Value::from(r.to_vec()))
            .collect::<Vec<_>>(),
    )
}

/// A matrix's elements in row-major order.
pub fn flat(a: &Array2<f64>) -> Value {
    Value::from(a.iter().copied().collect::<Vec<f64>>())
}

/// A tapegrad error as the protocol's error text.
pub fn err(e: tapegrad::Error) -> String {
    e.to_string()
}
