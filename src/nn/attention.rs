//! Scaled dot-product self-attention over a sequence (a matrix, one token per row), single-
//! and multi-head, composed from ops.

use ndarray::Array2;
use rand::Rng;

use super::{
    Init, Linear, Module, Parameters, TorchLayout, forward_child, visit_child, visit_child_mut,
    visit_child_torch_layout,
};
use crate::error::shape_error;
use crate::{Float, Result, Tensor};

/// Multi-head self-attention (Vaswani et al. 2017) over a sequence of tokens, one per row:
/// `Q = X·W_q + b_q`, `K = X·W_k + b_k`, `V = X·W_v + b_v`, split by columns into
/// `heads` heads of `head_dim` features; each head computes
/// `softmax(Qₕ·Kₕᵀ / √head_dim)·Vₕ` (softmax along each row); the heads are concatenated
/// and projected back, `[H₁ … Hₕ]·W_o + b_o`. The parameters are the four projections,
/// named `q`, `k`, `v` and `o` (`q.weight`, `q.bias`, ...).
///
/// [`Module::forward`] attends over one sequence; [`MultiHeadAttention::attend`] takes
/// several sequences of the same length stacked by rows, with the projections done for all
/// tokens at once and the attention within each sequence.
///
/// ```
/// use rand::SeedableRng;
/// use tapegrad::nn::{Module, MultiHeadAttention};
/// use tapegrad::Tape;
///
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let attention = MultiHeadAttention::<f64>::new(8, 2, &mut rng); // 2 heads of 4
/// let tape = Tape::new();
/// let tokens = tape.constant(ndarray::Array2::from_elem((5, 8), 0.1)); // 5 tokens
/// let y = attention.forward(tokens).unwrap();
/// assert_eq!(y.shape(), (5, 8));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct MultiHeadAttention<F> {
    /// The query projection, features → heads × head_dim.
    pub q: Linear<F>,
    /// The key projection.
    pub k: Linear<F>,
    /// The value projection.
    pub v: Linear<F>,
    /// The output projection, heads × head_dim → features.
    pub o: Linear<F>,
    /// The number of heads.
    pub heads: usize,
}

impl<F: Float> MultiHeadAttention<F> {
    /// `heads` heads over tokens of `features` (which `heads` divides), each of
    /// `features / heads` features, with Glorot-initialised projections.
    ///
    /// # Panics
    ///
    /// If `heads` is 0 or does not divide `features`.
    pub fn new<R: Rng + ?Sized>(features: usize, heads: usize, rng: &mut R) -> Self {
        assert!(
            heads > 0 && features % heads == 0,
            "{heads} heads do not divide {features} features"
        );
        Self::with_head_dim(features, heads, features / heads, rng)
    }

    /// `heads` heads of `head_dim` features each over tokens of `features`.
    pub fn with_head_dim<R: Rng + ?Sized>(
        features: usize,
        heads: usize,
        head_dim: usize,
        rng: &mut R,
    ) -> Self {
        let inner = heads * head_dim;
        MultiHeadAttention {
            q: Linear::new(features, inner, Init::Glorot, rng),
            k: Linear::new(features, inner, Init::Glorot, rng),
            v: Linear::new(features, inner, Init::Glorot, rng),
            o: Linear::new(inner, features, Init::Glorot, rng),
            heads,
        }
    }

    /// Self-attention within each sequence of `seq` tokens of `x` (its rows, a multiple of
    /// `seq`, are the sequences one after the other); the same shape back.
    ///
    /// # Errors
    ///
    /// `Shape` if `seq` is 0 or does not divide the rows of `x`, or `x` does not have the
    /// layer's number of features.
    #[track_caller]
    pub fn attend<'t>(&'t self, x: Tensor<'t, F>, seq: usize) -> Result<Tensor<'t, F>> {
        let location = std::panic::Location::caller();
        if seq == 0 || x.rows() % seq != 0 {
            let rule = "the rows must be whole sequences of the given length";
            return Err(shape_error(
                "attend",
                x.shape(),
                (seq, x.cols()),
                rule,
                location,
            ));
        }
        const ME: &str = "MultiHeadAttention";
        let q = forward_child(ME, "q", &self.q, x)?;
        let k = forward_child(ME, "k", &self.k, x)?;
        let v = forward_child(ME, "v", &self.v, x)?;
        let head_dim = q.cols() / self.heads;
        let scale = F::one() / F::cast(head_dim as f64).sqrt();
        let mut sequences = Vec::with_capacity(x.rows() / seq);
        for start in (0..x.rows()).step_by(seq) {
            let rows = start..start + seq;
            let mut heads = Vec::with_capacity(self.heads);
            for h in 0..self.heads {
                let cols = h * head_dim..(h + 1) * head_dim;
                let qh = q.try_slice(rows.clone(), cols.clone())?;
                let kh = k.try_slice(rows.clone(), cols.clone())?;
                let vh = v.try_slice(rows.clone(), cols)?;
                let weights = qh
                    .try_matmul(kh.t())?
                    .mul_scalar(scale)
                    .try_softmax(ndarray::Axis(1))?;
                heads.push(weights.try_matmul(vh)?);
            }
            sequences.push(Tensor::try_concat_cols(&heads)?);
        }
        forward_child(ME, "o", &self.o, Tensor::try_concat_rows(&sequences)?)
    }
}

impl<F: Float> Parameters<F> for MultiHeadAttention<F> {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Array2<F>)) {
        visit_child("q", &self.q, f);
        visit_child("k", &self.k, f);
        visit_child("v", &self.v, f);
        visit_child("o", &self.o, f);
    }

    fn visit_torch_layout(&self, f: &mut dyn FnMut(&str, TorchLayout)) {
        visit_child_torch_layout("q", &self.q, f);
        visit_child_torch_layout("k", &self.k, f);
        visit_child_torch_layout("v", &self.v, f);
        visit_child_torch_layout("o", &self.o, f);
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Array2<F>)) {
        visit_child_mut("q", &mut self.q, f);
        visit_child_mut("k", &mut self.k, f);
        visit_child_mut("v", &mut self.v, f);
        visit_child_mut("o", &mut self.o, f);
    }
}

impl<F: Float> Module<F> for MultiHeadAttention<F> {
    /// Self-attention over the one sequence `x` (tokens × features).
    #[track_caller]
    fn forward<'t>(&'t self, x: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        self.attend(x, x.rows().max(1))
    }
}

/// Single-head self-attention: [`MultiHeadAttention`] with one head of `dim` features,
/// `softmax(Q·Kᵀ / √dim)·V` projected back to the tokens' features.
///
/// ```
/// use rand::SeedableRng;
/// use tapegrad::nn::{Module, SelfAttention};
/// use tapegrad::Tape;
///
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let attention = SelfAttention::<f64>::new(6, 4, &mut rng);
/// let tape = Tape::new();
/// let y = attention.forward(tape.constant(ndarray::Array2::from_elem((3, 6), 0.5))).unwrap();
/// assert_eq!(y.shape(), (3, 6));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct SelfAttention<F>(pub MultiHeadAttention<F>);

impl<F: Float> SelfAttention<F> {
    /// One head of `dim` features over tokens of `features`.
    pub fn new<R: Rng + ?Sized>(features: usize, dim: usize, rng: &mut R) -> Self {
        SelfAttention(MultiHeadAttention::with_head_dim(features, 1, dim, rng))
    }
}

impl<F: Float> Parameters<F> for SelfAttention<F> {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Array2<F>)) {
        self.0.visit(f);
    }

    fn visit_torch_layout(&self, f: &mut dyn FnMut(&str, TorchLayout)) {
        self.0.visit_torch_layout(f);
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Array2<F>)) {
        self.0.visit_mut(f);
    }
}

impl<F: Float> Module<F> for SelfAttention<F> {
    #[track_caller]
    fn forward<'t>(&'t self, x: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        self.0.forward(x)
    }
}
