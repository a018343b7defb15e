//! Dropout as a layer, on only in training.

use std::sync::Mutex;

use ndarray::Array2;
use rand::SeedableRng;
use rand::rngs::ChaCha12Rng;

use super::{Module, Parameters};
use crate::{Float, Result, Tensor};

/// Dropout with probability `p` ([`Tensor::dropout`]) while training, the identity in
/// evaluation ([`Module::set_training`]). The masks come from the layer's own generator,
/// seeded at construction, so a run is reproducible. No parameters.
///
/// ```
/// use tapegrad::nn::{Dropout, Module};
/// use tapegrad::Tape;
///
/// let x = ndarray::Array2::<f64>::ones((4, 4));
/// let mut drop = Dropout::new(0.5, 7);
/// {
///     let tape = Tape::new(); // a training step
///     let y = drop.forward(tape.constant(&x)).unwrap();
///     assert!(y.value().iter().any(|&v| v == 0.0));
/// }
/// drop.set_training(false);
/// let tape = Tape::new();
/// assert_eq!(drop.forward(tape.constant(&x)).unwrap().value(), x);
/// ```
///
/// A clone continues from the same generator state: the original and the copy draw the
/// same masks from then on.
#[derive(Debug)]
pub struct Dropout<F> {
    /// The probability of dropping an element.
    pub p: F,
    /// `StdRng`'s generator (the same stream from the same seed), named so that its
    /// state can be copied: `StdRng` is not `Clone`.
    rng: Mutex<ChaCha12Rng>,
    training: bool,
}

impl<F: Float> Dropout<F> {
    /// Dropout with probability `p`, masks drawn from a generator seeded with `seed`.
    pub fn new(p: F, seed: u64) -> Self {
        Dropout {
            p,
            rng: Mutex::new(ChaCha12Rng::seed_from_u64(seed)),
            training: true,
        }
    }

    /// Whether the layer is in training mode.
    pub fn is_training(&self) -> bool {
        self.training
    }
}

impl<F: Float> Clone for Dropout<F> {
    fn clone(&self) -> Self {
        let rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let mut copy = ChaCha12Rng::from_seed(rng.get_seed());
        copy.set_stream(rng.get_stream());
        copy.set_word_pos(rng.get_word_pos());
        Dropout {
            p: self.p,
            rng: Mutex::new(copy),
            training: self.training,
        }
    }
}

impl<F: Float> Parameters<F> for Dropout<F> {
    fn visit<'a>(&'a self, _: &mut dyn FnMut(&str, &'a Array2<F>)) {}
    fn visit_mut<'a>(&'a mut self, _: &mut dyn FnMut(&str, &'a mut Array2<F>)) {}
}

impl<F: Float> Module<F> for Dropout<F> {
    /// # Errors
    ///
    /// `Parameter` if `p` is not in [0, 1].
    #[track_caller]
    fn forward<'t>(&'t self, x: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        if !self.training || self.p == F::zero() {
            return Ok(x);
        }
        // a poisoned lock only means another thread panicked mid-draw: the state is fine
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        x.try_dropout(self.p, &mut *rng)
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::{ChaCha12Rng, StdRng};
    use rand::{Rng, SeedableRng};

    /// The masks are those `StdRng` drew before the generator was named: the same
    /// stream from the same seed.
    #[test]
    fn the_generator_is_std_rngs() {
        let (mut a, mut b) = (StdRng::seed_from_u64(7), ChaCha12Rng::seed_from_u64(7));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }
}
