//! A stack of layers, and the multi-layer perceptron built from it.

use ndarray::Array2;
use rand::Rng;

use super::{
    Activation, ChildName, Init, Linear, Module, Parameters, TorchLayout, run_child, visit_child,
    visit_child_mut, visit_child_torch_layout,
};
use crate::{Float, Result, Tensor};

/// Layers applied in order. Parameters are named by the layer's position:
/// `"0.weight"`, `"0.bias"`, `"2.weight"`, ... (activation layers have none).
///
/// `Clone`: a copy owns copies of every layer.
#[derive(Clone, Default)]
pub struct Sequential<F: Float> {
    layers: Vec<Box<dyn Module<F>>>,
}

impl<F: Float> Sequential<F> {
    /// No layers yet.
    pub fn new() -> Self {
        Sequential { layers: Vec::new() }
    }

    /// Appends a layer.
    pub fn push(&mut self, layer: impl Module<F> + 'static) -> &mut Self {
        self.layers.push(Box::new(layer));
        self
    }

    /// Appends a layer, builder style.
    pub fn with(mut self, layer: impl Module<F> + 'static) -> Self {
        self.push(layer);
        self
    }

    /// The layers.
    pub fn layers(&self) -> &[Box<dyn Module<F>>] {
        &self.layers
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl<F: Float> Parameters<F> for Sequential<F> {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Array2<F>)) {
        let mut digits = [0u8; 20];
        for (i, layer) in self.layers.iter().enumerate() {
            visit_child(decimal(i, &mut digits), layer.as_ref(), f);
        }
    }

    fn visit_torch_layout(&self, f: &mut dyn FnMut(&str, TorchLayout)) {
        let mut digits = [0u8; 20];
        for (i, layer) in self.layers.iter().enumerate() {
            visit_child_torch_layout(decimal(i, &mut digits), layer.as_ref(), f);
        }
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Array2<F>)) {
        let mut digits = [0u8; 20];
        for (i, layer) in self.layers.iter_mut().enumerate() {
            visit_child_mut(decimal(i, &mut digits), layer.as_mut(), f);
        }
    }

    fn visit_layers_mut(&mut self, f: &mut dyn FnMut(&str, &mut dyn Module<F>)) {
        let mut digits = [0u8; 20];
        for (i, layer) in self.layers.iter_mut().enumerate() {
            f(decimal(i, &mut digits), layer.as_mut());
        }
    }
}

/// `i` in decimal, written into `digits` (no allocation: models are walked every step).
pub(crate) fn decimal(mut i: usize, digits: &mut [u8; 20]) -> &str {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (i % 10) as u8;
        i /= 10;
        if i == 0 {
            break;
        }
    }
    std::str::from_utf8(&digits[at..]).expect("ASCII digits")
}

impl<F: Float> Module<F> for Sequential<F> {
    /// The layers applied in order.
    ///
    /// # Errors
    ///
    /// The first layer's error, naming the layer by its position and type and the line
    /// that called this forward pass ([`Error::in_layer`](crate::Error::in_layer)).
    #[track_caller]
    fn forward<'t>(&'t self, x: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        let mut h = x;
        for (i, layer) in self.layers.iter().enumerate() {
            h = run_child("Sequential", ChildName::Index(i), layer.as_ref(), h)?;
        }
        Ok(h)
    }
}

impl<F: Float> std::fmt::Debug for Sequential<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequential")
            .field("layers", &self.layers.len())
            .finish()
    }
}

/// A multi-layer perceptron: a [`Linear`] layer between each pair of consecutive `sizes`
/// (inputs first), `hidden` after every layer but the last, `output` after the last.
///
/// ```
/// use rand::SeedableRng;
/// use tapegrad::nn::{mlp, Activation, Init, Parameters};
///
/// let mut rng = rand::rngs::StdRng::seed_from_u64(1);
/// // the seeds' 4-2-3 network: sigmoid everywhere
/// let net = mlp::<f32>(&[4, 2, 3], Activation::Sigmoid, Activation::Sigmoid, Init::Glorot, &mut rng);
/// assert_eq!(net.parameter_count(), 4 * 2 + 2 + 2 * 3 + 3);
/// ```
pub fn mlp<F: Float>(
    sizes: &[usize],
    hidden: Activation,
    output: Activation,
    init: Init,
    rng: &mut (impl Rng + ?Sized),
) -> Sequential<F> {
    let mut net = Sequential::new();
    let layers = sizes.len().saturating_sub(1);
    for (i, pair) in sizes.windows(2).enumerate() {
        net.push(Linear::<F>::new(pair[0], pair[1], init, rng));
        let activation = if i + 1 == layers { output } else { hidden };
        if let Some(layer) = activation.layer::<F>() {
            net.layers.push(layer);
        }
    }
    net
}

#[cfg(test)]
mod tests {
    #[test]
    fn decimal_writes_every_digit() {
        let mut digits = [0u8; 20];
        for i in [0, 7, 10, 12_345, usize::MAX] {
            assert_eq!(super::decimal(i, &mut digits), i.to_string());
        }
    }
}
