//! Data parallelism across the cores of one machine: a batch split into shards, each
//! shard's forward and backward on its own tape in its own thread (rayon's pool), and the
//! gradients reduced in a fixed order.
//!
//! The result does not depend on scheduling: shard `i` always gets the same rows, and the
//! shards' gradients are summed in shard order, so a step is bitwise the same from run to
//! run and whatever the number of threads; it equals the one-tape gradient of the whole
//! batch to rounding.
//!
//! **The mean.** A shard's loss is the mean over its own `nᵢ` rows, so its gradient is
//! `gᵢ = (1/nᵢ) Σ_{rows of i} ∂ℓ`. The full batch's mean gradient is
//! `(1/N) Σ_all ∂ℓ = Σᵢ (nᵢ/N) gᵢ`: [`DataParallel::step`] weights each shard by its share
//! of the rows, and the returned loss is the same weighted mean. A loss that is a sum
//! over rows (not a mean) would need weights of 1: write it as a mean, or scale after.
//!
//! **Threads.** Shards run on rayon's global pool (`RAYON_NUM_THREADS`, by default one
//! thread per core), or on the pool of an enclosing `ThreadPool::install`. With OpenBLAS,
//! give each shard one BLAS thread (`OPENBLAS_NUM_THREADS=1`): the cores are already busy
//! with shards.
//!
//! ```
//! use ndarray::{Array2, s};
//! use tapegrad::nn::{Linear, Module};
//! use tapegrad::optim::{Optimizer, Sgd};
//! use tapegrad::parallel::DataParallel;
//! use tapegrad::{BackwardOptions, Tape};
//!
//! let x = Array2::from_shape_fn((10, 3), |(i, j)| (i + 2 * j) as f64 / 10.0);
//! let y = Array2::from_shape_fn((10, 1), |(i, _)| i as f64 / 10.0);
//! let mut model = Linear::<f64> {
//!     weight: Array2::from_elem((3, 1), 0.1),
//!     bias: Some(Array2::zeros((1, 1))),
//! };
//! let mut opt = Sgd::new(0.1);
//! let mut dp = DataParallel::new(2);
//! for _ in 0..3 {
//!     let (loss, grads) = dp
//!         .step(x.nrows(), |rows, reuse| {
//!             let tape = Tape::new();
//!             let out = model.forward(tape.constant(x.slice(s![rows.clone(), ..])))?;
//!             let loss = out.mse_loss(tape.constant(y.slice(s![rows, ..])));
//!             Ok((loss.item(), tape.backward_with(loss, BackwardOptions::new().reuse(reuse))?))
//!         })
//!         .unwrap();
//!     assert!(loss.is_finite());
//!     opt.step(&mut model, grads).unwrap();
//! }
//! ```

use std::ops::Range;

#[cfg(feature = "mpi")]
pub mod mpi;

use rayon::prelude::*;

use crate::error::Result;
use crate::{Float, Gradients};

/// Splits `rows` rows into `shards` contiguous ranges whose lengths differ by at most one
/// (the first `rows % shards` get the extra row). Shards beyond `rows` are empty.
pub fn shard_ranges(rows: usize, shards: usize) -> Vec<Range<usize>> {
    let shards = shards.max(1);
    let (base, extra) = (rows / shards, rows % shards);
    let mut start = 0;
    (0..shards)
        .map(|i| {
            let len = base + usize::from(i < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .collect()
}

/// Data-parallel steps over a fixed number of shards: it keeps each shard's gradient
/// buffers and the reduced gradients from one step to the next, so a steady step
/// allocates no parameter-sized buffer.
pub struct DataParallel<F: Float> {
    shards: usize,
    /// Each shard's gradients of the last step, handed back to it for `reuse`.
    previous: Vec<Option<Gradients<F>>>,
    /// The reduced gradients, rewritten in place every step.
    total: Option<Gradients<F>>,
}

impl<F: Float> DataParallel<F> {
    /// Steps over `shards` shards (at least 1).
    pub fn new(shards: usize) -> Self {
        let shards = shards.max(1);
        DataParallel {
            shards,
            previous: (0..shards).map(|_| None).collect(),
            total: None,
        }
    }

    /// The number of shards.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// One step over a batch of `rows` rows: calls `shard(rows_of_shard, reuse)` for each
    /// non-empty shard, in parallel, where the closure builds its own tape for those rows,
    /// computes the mean loss over them, runs backward (handing `reuse` to
    /// [`BackwardOptions::reuse`](crate::BackwardOptions::reuse)) and returns
    /// `(loss, gradients)`. Returns the full batch's mean loss and mean gradient,
    /// `Σᵢ (nᵢ/N)·(lossᵢ, gᵢ)`, summed in shard order.
    ///
    /// # Errors
    ///
    /// `Empty` for a batch of no rows; the first shard's error (in shard order), or
    /// `Unmatched` if the shards' gradients are not of the same parameters.
    #[track_caller]
    pub fn step<S>(&mut self, rows: usize, shard: S) -> Result<(F, &Gradients<F>)>
    where
        S: Fn(Range<usize>, Option<Gradients<F>>) -> Result<(F, Gradients<F>)> + Sync,
    {
        let location = std::panic::Location::caller();
        let ranges: Vec<Range<usize>> = shard_ranges(rows, self.shards)
            .into_iter()
            .filter(|r| !r.is_empty())
            .collect();
        let jobs: Vec<(Range<usize>, Option<Gradients<F>>)> = ranges
            .iter()
            .zip(self.previous.iter_mut())
            .map(|(r, p)| (r.clone(), p.take()))
            .collect();
        let results: Vec<Result<(F, Gradients<F>)>> = jobs
            .into_par_iter()
            .map(|(r, reuse)| shard(r, reuse))
            .collect();
        if ranges.is_empty() {
            let kind = crate::ErrorKind::Empty { shape: (rows, 0) };
            return Err(crate::Error::new("data_parallel", kind, location));
        }
        let n = F::cast(rows as f64);
        let mut loss = F::zero();
        for (i, (result, r)) in results.into_iter().zip(&ranges).enumerate() {
            let (shard_loss, grads) = result?;
            let w = F::cast(r.len() as f64) / n;
            loss += w * shard_loss;
            // the first shard overwrites last step's total, or makes a new one when
            // there is none or the parameters changed
            let kept = match &mut self.total {
                Some(total) if i > 0 => {
                    total.add_scaled(w, &grads)?;
                    true
                }
                Some(total) => total.assign_scaled(w, &grads).is_ok(),
                None => false,
            };
            if !kept {
                let mut g = grads.clone();
                g.scale(w);
                self.total = Some(g);
            }
            self.previous[i] = Some(grads);
        }
        let total = self.total.as_ref().expect("made by the first shard");
        Ok((loss, total))
    }
}

#[cfg(test)]
mod tests {
    use super::shard_ranges;

    #[test]
    fn shards_cover_the_rows_in_order_with_sizes_differing_by_one_at_most() {
        assert_eq!(shard_ranges(10, 3), vec![0..4, 4..7, 7..10]);
        assert_eq!(shard_ranges(4, 4), vec![0..1, 1..2, 2..3, 3..4]);
        assert_eq!(shard_ranges(2, 3), vec![0..1, 1..2, 2..2]);
        assert_eq!(shard_ranges(5, 0), vec![0..5]);
    }
}
