//! Activation layers: parameter-free [`Module`]s wrapping the elementwise ops.

use ndarray::Array2;

use super::{Module, Parameters};
use crate::{Float, Result, Tensor};

macro_rules! activation_layer {
    ($name:ident, $op:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name;

        impl<F: Float> Parameters<F> for $name {
            fn visit<'a>(&'a self, _: &mut dyn FnMut(&str, &'a Array2<F>)) {}
            fn visit_mut<'a>(&'a mut self, _: &mut dyn FnMut(&str, &'a mut Array2<F>)) {}
        }

        impl<F: Float> Module<F> for $name {
            fn forward<'t>(&'t self, x: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
                Ok(x.$op())
            }
        }
    };
}

activation_layer!(
    Sigmoid,
    sigmoid,
    "The logistic function as a layer ([`Tensor::sigmoid`])."
);
activation_layer!(
    Tanh,
    tanh,
    "Hyperbolic tangent as a layer ([`Tensor::tanh`])."
);
activation_layer!(
    Relu,
    relu,
    "Rectified linear unit as a layer ([`Tensor::relu`])."
);
activation_layer!(
    Gelu,
    gelu,
    "Gaussian error linear unit (exact form) as a layer ([`Tensor::gelu`])."
);

/// The activation [`mlp`](super::mlp) puts after a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// [`Sigmoid`].
    Sigmoid,
    /// [`Tanh`].
    Tanh,
    /// [`Relu`].
    Relu,
    /// [`Gelu`].
    Gelu,
    /// None: the layer's output is used as is (logits for a softmax cross-entropy).
    Identity,
}

impl Activation {
    /// The layer, or `None` for [`Activation::Identity`].
    pub fn layer<F: Float>(self) -> Option<Box<dyn Module<F>>> {
        match self {
            Activation::Sigmoid => Some(Box::new(Sigmoid)),
            Activation::Tanh => Some(Box::new(Tanh)),
            Activation::Relu => Some(Box::new(Relu)),
            Activation::Gelu => Some(Box::new(Gelu)),
            Activation::Identity => None,
        }
    }
}
