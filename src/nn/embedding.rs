//! A lookup table of learned rows.

use ndarray::Array2;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use super::{Parameters, TorchLayout};
use crate::{Float, Result, Tape, Tensor};

/// An embedding: one learned row of `dim` features per entry of a table (a word, a
/// position), looked up by index ([`Tensor::gather_rows`]: the gradient of a row looked
/// up twice is the sum of both). The parameter is named `weight`.
///
/// ```
/// use rand::SeedableRng;
/// use tapegrad::nn::Embedding;
/// use tapegrad::Tape;
///
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let table = Embedding::<f64>::new(10, 4, &mut rng);
/// let tape = Tape::new();
/// let tokens = table.lookup(&tape, &[3, 1, 3]).unwrap(); // 3 × 4
/// let grads = tape.backward(tokens.sum()).unwrap();
/// let g = grads.wrt(&table.weight).unwrap();
/// assert_eq!((g[[3, 0]], g[[1, 0]], g[[0, 0]]), (2.0, 1.0, 0.0));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Embedding<F> {
    /// entries × dim.
    pub weight: Array2<F>,
}

impl<F: Float> Embedding<F> {
    /// A table of `entries` rows of `dim` features drawn from N(0, 1) (PyTorch's default).
    pub fn new<R: Rng + ?Sized>(entries: usize, dim: usize, rng: &mut R) -> Self {
        let weight = Array2::from_shape_simple_fn((entries, dim), || {
            let v: f64 = StandardNormal.sample(rng);
            F::cast(v)
        });
        Embedding { weight }
    }

    /// The rows at `indices`, in order, with the table borrowed onto `tape`.
    ///
    /// # Errors
    ///
    /// `Index` if an index is not below the number of entries.
    #[track_caller]
    pub fn lookup<'t>(&'t self, tape: &'t Tape<'t, F>, indices: &[usize]) -> Result<Tensor<'t, F>> {
        tape.param(&self.weight).try_gather_rows(indices)
    }
}

impl<F: Float> Parameters<F> for Embedding<F> {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Array2<F>)) {
        f("weight", &self.weight);
    }

    fn visit_torch_layout(&self, f: &mut dyn FnMut(&str, TorchLayout)) {
        // `nn.Embedding.weight` is entries × features too
        f("weight", TorchLayout::Same);
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Array2<F>)) {
        f("weight", &mut self.weight);
    }
}
