//! Layer normalisation as a layer.

use ndarray::Array2;

use super::{Module, Parameters, TorchLayout};
use crate::{Float, Result, Tensor};

/// Layer normalisation of each row with a learned affine map, `y = x̂ ∘ γ + β`, one fused
/// op ([`Tensor::layer_norm`]). The parameters are named `weight` (`γ`, starting at ones)
/// and `bias` (`β`, starting at zeros), both 1 × features.
///
/// ```
/// use tapegrad::nn::{LayerNorm, Module};
/// use tapegrad::Tape;
///
/// let norm = LayerNorm::<f64>::new(3);
/// let tape = Tape::new();
/// let y = norm.forward(tape.constant(ndarray::array![[1.0, 2.0, 6.0]])).unwrap();
/// let mean = y.value().sum() / 3.0;
/// assert!(mean.abs() < 1e-12);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNorm<F> {
    /// `γ`, 1 × features.
    pub weight: Array2<F>,
    /// `β`, 1 × features.
    pub bias: Array2<F>,
    /// Added to the variance: 10⁻⁵, as PyTorch.
    pub eps: F,
}

impl<F: Float> LayerNorm<F> {
    /// A layer over rows of `features`, `γ = 1`, `β = 0`, `ε = 10⁻⁵`.
    pub fn new(features: usize) -> Self {
        LayerNorm {
            weight: Array2::ones((1, features)),
            bias: Array2::zeros((1, features)),
            eps: F::cast(1e-5),
        }
    }
}

impl<F: Float> Parameters<F> for LayerNorm<F> {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Array2<F>)) {
        f("weight", &self.weight);
        f("bias", &self.bias);
    }

    fn visit_torch_layout(&self, f: &mut dyn FnMut(&str, TorchLayout)) {
        // `nn.LayerNorm`'s are vectors of the features
        f("weight", TorchLayout::Same);
        f("bias", TorchLayout::Same);
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Array2<F>)) {
        f("weight", &mut self.weight);
        f("bias", &mut self.bias);
    }
}

impl<F: Float> Module<F> for LayerNorm<F> {
    #[track_caller]
    fn forward<'t>(&'t self, x: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        let tape = x.tape();
        x.try_layer_norm(tape.param(&self.weight), tape.param(&self.bias), self.eps)
    }
}
