//! The fully connected layer `Y = X·W + b`.

use ndarray::Array2;
use rand::Rng;
use rand_distr::{Distribution, Normal, Uniform};

use std::panic::Location;

use super::{Module, Parameters, TorchLayout};
use crate::error::{check_size, or_panic};
use crate::{Float, Result, Tensor};

/// How [`Linear::new`] draws the weights (biases start at zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// Glorot (Xavier) uniform: `U(−a, a)` with `a = √(6 / (inputs + outputs))`. For
    /// sigmoid and tanh layers.
    Glorot,
    /// He (Kaiming) normal: `N(0, 2 / inputs)`. For relu layers.
    He,
}

/// A fully connected layer: `Y = X·W + b`, with `W` of shape inputs × outputs and the
/// optional bias `b` a 1 × outputs row. One sample per row of `X`; the forward pass is
/// the fused op [`Tensor::linear`].
///
/// The parameters are named `weight` and `bias`. Note the layout: `W` is inputs ×
/// outputs, the transpose of PyTorch's `nn.Linear.weight`, so that the forward pass is the
/// seeds' `X·W` with no transpose at all.
///
/// ```
/// use rand::SeedableRng;
/// use tapegrad::nn::{Init, Linear, Module};
/// use tapegrad::Tape;
///
/// let mut rng = rand::rngs::StdRng::seed_from_u64(7);
/// let layer = Linear::<f32>::new(3, 2, Init::Glorot, &mut rng);
/// let tape = Tape::new();
/// let y = layer.forward(tape.constant(ndarray::Array2::ones((5, 3)))).unwrap();
/// assert_eq!(y.shape(), (5, 2));
/// // a wrong width is an error, not a panic
/// assert!(layer.forward(tape.constant(ndarray::Array2::ones((5, 4)))).is_err());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Linear<F> {
    /// inputs × outputs.
    pub weight: Array2<F>,
    /// 1 × outputs, or none.
    pub bias: Option<Array2<F>>,
}

impl<F: Float> Linear<F> {
    /// A layer with weights drawn by `init` from `rng` (seed it for reproducible runs) and
    /// a zero bias.
    ///
    /// # Panics
    ///
    /// If `inputs × outputs` elements do not fit in memory's address space; see
    /// [`Linear::try_new`].
    #[track_caller]
    pub fn new<R: Rng + ?Sized>(inputs: usize, outputs: usize, init: Init, rng: &mut R) -> Self {
        or_panic(Self::try_new(inputs, outputs, init, rng))
    }

    /// A layer as [`Linear::new`], or `TooLarge` if the weight's size in bytes does not
    /// fit in `isize`. (A size that fits but that the system cannot provide aborts the
    /// process, as every Rust allocation does.)
    ///
    /// # Errors
    ///
    /// `TooLarge`, naming the weight's shape.
    #[track_caller]
    pub fn try_new<R: Rng + ?Sized>(
        inputs: usize,
        outputs: usize,
        init: Init,
        rng: &mut R,
    ) -> Result<Self> {
        let location = Location::caller();
        check_size::<F>("Linear::new", (inputs, outputs), location)?;
        let weight = match init {
            Init::Glorot => {
                let a = (6.0 / inputs.saturating_add(outputs).max(1) as f64).sqrt();
                let u = Uniform::new_inclusive(-a, a).expect("a finite range");
                Array2::from_shape_simple_fn((inputs, outputs), || F::cast(u.sample(rng)))
            }
            Init::He => {
                let n =
                    Normal::new(0.0, (2.0 / inputs.max(1) as f64).sqrt()).expect("a finite std");
                Array2::from_shape_simple_fn((inputs, outputs), || F::cast(n.sample(rng)))
            }
        };
        Ok(Linear {
            weight,
            bias: Some(Array2::zeros((1, outputs))),
        })
    }

    /// The same without a bias.
    ///
    /// # Panics
    ///
    /// As [`Linear::new`].
    #[track_caller]
    pub fn without_bias<R: Rng + ?Sized>(
        inputs: usize,
        outputs: usize,
        init: Init,
        rng: &mut R,
    ) -> Self {
        Linear {
            bias: None,
            ..Self::new(inputs, outputs, init, rng)
        }
    }

    /// Number of inputs (rows of `W`).
    pub fn inputs(&self) -> usize {
        self.weight.nrows()
    }

    /// Number of outputs (columns of `W`).
    pub fn outputs(&self) -> usize {
        self.weight.ncols()
    }
}

impl<F: Float> Parameters<F> for Linear<F> {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Array2<F>)) {
        f("weight", &self.weight);
        if let Some(b) = &self.bias {
            f("bias", b);
        }
    }

    fn visit_torch_layout(&self, f: &mut dyn FnMut(&str, TorchLayout)) {
        f("weight", TorchLayout::Transposed);
        if self.bias.is_some() {
            f("bias", TorchLayout::Same);
        }
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Array2<F>)) {
        f("weight", &mut self.weight);
        if let Some(b) = &mut self.bias {
            f("bias", b);
        }
    }
}

impl<F: Float> Module<F> for Linear<F> {
    #[track_caller]
    fn forward<'t>(&'t self, x: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        let tape = x.tape();
        let w = tape.param(&self.weight);
        match &self.bias {
            Some(b) => x.try_linear(w, tape.param(b)),
            None => x.try_matmul(w),
        }
    }
}
