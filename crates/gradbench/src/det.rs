//! `det` (cmpad's `det_by_minor`): the determinant by Laplace expansion along the first
//! row, recursively, `det M = Σₖ (−1)ᵏ M₀ₖ det M₍₀ₖ₎`: ℓ! products, no minor shared
//! between branches; its gradient (the cofactor matrix) by backward.
//!
//! One recorded op per tree level instead of one per scalar: the minors at depth `d` (rows
//! `d..ℓ`, the columns rows `0..d` left unused) form a column, in the order of the
//! expansion (children of a minor adjacent, by column). A level is the one above it as
//!
//! ```text
//! det(minors at depth d) = sum over each row of (signed first-row entries ∘ child dets)
//! ```
//!
//! with the child determinants reshaped to one row per parent, and the signed entries
//! `(−1)ᵏ A[d, Rₖ]` (R the parent's unused columns) gathered from `A` by the set of used
//! columns, which is all they depend on. The leaves (1 × 1 minors, two per 2 × 2 minor)
//! are gathered from the last row the same way. Every product of the expansion is computed
//! and summed once per tree node; only the index bookkeeping is batched.

use ndarray::Array2;
use serde_json::Value;
use tapegrad::{Tape, Tensor};

use crate::input::{count, err, field, flat, numbers};
use crate::runs::{Runs, measure};

/// Largest edge accepted: 13! ≈ 6.2·10⁹ leaves would not fit in memory.
const MAX_ELL: usize = 12;

/// The masks of used columns of the minors at depths `0..ℓ−1`, each depth in expansion
/// order: a minor's children are adjacent, ordered by the column they remove.
fn masks(ell: usize) -> Vec<Vec<usize>> {
    let mut levels = vec![vec![0usize]];
    for d in 0..ell.saturating_sub(2) {
        let parents = &levels[d];
        let mut next = Vec::with_capacity(parents.len() * (ell - d));
        for &p in parents {
            for c in 0..ell {
                if p & (1 << c) == 0 {
                    next.push(p | (1 << c));
                }
            }
        }
        levels.push(next);
    }
    levels
}

/// `det A` for an ℓ × ℓ tensor, ℓ ≥ 2, by the levels above.
fn det_by_minors<'t>(a: Tensor<'t, f64>, masks: &[Vec<usize>]) -> Tensor<'t, f64> {
    let ell = a.rows();
    let tape = a.tape();
    let flat = a.reshape((ell * ell, 1));
    // [A as a column; −A as a column; 0]: entry (r, c) with sign ± and a zero, by index
    let zero = tape.constant(Array2::zeros((1, 1)));
    let signed = Tensor::concat_rows(&[flat, -flat, zero]);
    let (neg, none) = (ell * ell, 2 * ell * ell);
    let sets = 1usize << ell;
    // one row per set of used columns: `f(set)` for sets of the wanted size, zeros elsewhere
    let table = |width: usize, size: usize, f: &dyn Fn(usize, &[usize]) -> Vec<usize>| {
        let mut index = vec![none; sets * width];
        for set in (0..sets).filter(|s| s.count_ones() as usize == size) {
            let free: Vec<usize> = (0..ell).filter(|c| set & (1 << c) == 0).collect();
            index[set * width..(set + 1) * width].copy_from_slice(&f(set, &free));
        }
        signed.gather_rows(&index).reshape((sets, width))
    };
    // the 1 × 1 minors, two per 2 × 2 minor with free columns a < b: A[ℓ−1, b], A[ℓ−1, a]
    let last = ell - 1;
    let leaves = table(2, ell - 2, &|_, free| {
        vec![last * ell + free[1], last * ell + free[0]]
    });
    let depth = ell - 2;
    let mut children = leaves.gather_rows(&masks[depth]);
    for d in (0..=depth).rev() {
        let width = ell - d;
        // (−1)ᵏ A[d, Rₖ] for the free columns Rₖ of each minor at depth d
        let signs = table(width, d, &|_, free| {
            let at = |(k, &c): (usize, &usize)| d * ell + c + if k % 2 == 1 { neg } else { 0 };
            free.iter().enumerate().map(at).collect()
        });
        let dets = (signs.gather_rows(&masks[d]) * children).sum_axis(ndarray::Axis(1));
        if d == 0 {
            return dets;
        }
        children = dets.reshape((masks[d - 1].len(), width + 1));
    }
    unreachable!("the loop returns at depth 0")
}

/// `det A` for any ℓ ≥ 1.
fn det<'t>(a: Tensor<'t, f64>, masks: &[Vec<usize>]) -> Tensor<'t, f64> {
    if a.rows() == 1 {
        a
    } else {
        det_by_minors(a, masks)
    }
}

pub fn evaluate(function: &str, input: &Value) -> Result<crate::runs::Evaluated, String> {
    let a = numbers(field(input, "A")?, "A")?;
    let ell = count(field(input, "ell")?, "ell")?;
    if ell == 0 || ell > MAX_ELL || a.len() != ell * ell {
        return Err(format!(
            "det needs 1 ≤ ell ≤ {MAX_ELL} and ell² numbers (ell {ell}, {} numbers)",
            a.len()
        ));
    }
    let a = Array2::from_shape_vec((ell, ell), a).map_err(|e| e.to_string())?;
    let runs = Runs::of(input);
    match function {
        "primal" => measure(
            runs,
            || {
                let levels = masks(ell);
                let tape = Tape::new();
                Ok(det(tape.constant(&a), &levels).item())
            },
            Value::from,
        ),
        "gradient" => measure(
            runs,
            || {
                let levels = masks(ell);
                let tape = Tape::new();
                let at = tape.param(&a);
                let mut grads = tape.backward(det(at, &levels)).map_err(err)?;
                grads.take(at).ok_or_else(|| "no gradient".to_string())
            },
            |g| flat(&g),
        ),
        _ => Err(crate::protocol::unknown("det", function)),
    }
}
