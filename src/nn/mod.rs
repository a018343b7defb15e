//! Layers composed from ops: [`Linear`], activation layers, [`Embedding`], [`LayerNorm`],
//! [`Dropout`], [`SelfAttention`] and [`MultiHeadAttention`], [`Sequential`] and [`mlp`].
//!
//! Models are plain data: their parameters are `ndarray` arrays they own, and they are
//! `Send + Sync`. A forward pass puts the parameters on the input's tape *borrowed*
//! ([`Tape::param`](crate::Tape::param)), so nothing is copied, and backward finds each
//! parameter's gradient by the array itself ([`Gradients::wrt`]).
//!
//! Two traits carry everything optimizers ([`crate::optim`]), checkpoints ([`crate::io`])
//! and gradient read-out need, so none of them asks the user for bookkeeping:
//!
//! - [`Parameters`] lists a model's parameters by name (`"0.weight"`, `"0.bias"`, ...);
//! - [`Module`] adds the forward pass.
//!
//! A layer of your own is a struct of parameters and sub-layers that implements both; see
//! `examples/custom_layer.rs`.
//!
//! ```
//! use ndarray::array;
//! use rand::SeedableRng;
//! use tapegrad::nn::{mlp, Activation, Init, Module, Parameters};
//! use tapegrad::Tape;
//!
//! let mut rng = rand::rngs::StdRng::seed_from_u64(0);
//! let model = mlp::<f64>(&[2, 8, 1], Activation::Tanh, Activation::Sigmoid, Init::Glorot, &mut rng);
//! let names: Vec<String> = model.parameters().into_iter().map(|(name, _)| name).collect();
//! assert_eq!(names, ["0.weight", "0.bias", "2.weight", "2.bias"]);
//!
//! let tape = Tape::new();
//! let y = model.forward(tape.constant(array![[0.0, 1.0]])).unwrap();
//! let grads = tape.backward(y.sum()).unwrap();
//! for (name, grad) in model.gradients(&grads) {
//!     assert!(grad.is_some(), "{name} has a gradient");
//! }
//! ```

mod activation;
mod attention;
mod dropout;
mod embedding;
mod linear;
mod norm;
mod sequential;

pub use activation::{Activation, Gelu, Relu, Sigmoid, Tanh};
pub use attention::{MultiHeadAttention, SelfAttention};
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use linear::{Init, Linear};
pub use norm::LayerNorm;
pub use sequential::{Sequential, mlp};
/// Derives [`trait@Parameters`] from a struct's fields (feature `derive`, on
/// by default); see the trait for the rules and an example.
#[cfg(feature = "derive")]
pub use tapegrad_derive::Parameters;

use std::panic::Location;

use ndarray::Array2;

use crate::{Float, Gradients, Missing, Result, Tensor};

/// A model's parameters, by name, in a fixed order.
///
/// Implement the two visitors; everything else is provided. Nested layers prefix their
/// parameters' names with [`visit_child`] and [`visit_child_mut`], and list themselves in
/// [`Parameters::visit_layers_mut`] so that [`Module::set_training`] reaches them.
///
/// # Deriving it
///
/// `#[derive(Parameters)]` (feature `derive`, on by default) writes the three walks from
/// the struct's fields, in their order and named after them:
///
/// - a field of type `Array2` is a parameter of the field's name; an `Option<Array2>` one
///   is a parameter when it is `Some`;
/// - a field of any other type is a layer (it must implement [`Module`]): its parameters
///   are listed with the field's name as prefix (`dense.weight`), and
///   [`Module::set_training`] is passed on to it; an `Option` of a layer is one when it is
///   `Some`;
/// - fields of scalar types (`bool`, `char`, the integers, `f32`, `f64`, `String`, the
///   float type parameter), references and `PhantomData` are skipped, and so is a field
///   marked `#[param(skip)]` (use it for a field that is neither, such as a tuple or a
///   `Vec` of sizes);
/// - a tuple struct's fields are named by position (`0.weight`).
///
/// The derive sees the field types' names only: a type alias of `Array2` is taken for a
/// layer (and fails to compile as one); write `Array2` out.
///
/// The float type is the struct's first type parameter; in a struct without one it is
/// the one of `f32` and `f64` that the field types name, or the one given as
/// `#[param(float = f32)]` on the struct. A `Vec` or a `Box<dyn Module>` of layers is not
/// a layer field: hold them in a [`Sequential`], or implement the trait by hand.
///
/// ```
/// use tapegrad::ndarray::{Array2, array};
/// use tapegrad::nn::{Dropout, Linear, Module, Parameters};
/// use tapegrad::{Float, Result, Tape, Tensor};
///
/// /// `dropout(x·W + b) ∘ scale`
/// #[derive(Clone, Parameters)]
/// struct Scaled<F: Float> {
///     dense: Linear<F>,
///     scale: Array2<F>,
///     drop: Dropout<F>,
///     #[param(skip)]
///     shape: (usize, usize), // neither a parameter nor a layer
/// }
///
/// impl<F: Float> Module<F> for Scaled<F> {
///     fn forward<'t>(&'t self, x: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
///         let h = self.drop.forward(self.dense.forward(x)?)?;
///         h.try_mul(x.tape().param(&self.scale))
///     }
/// }
///
/// let mut layer = Scaled {
///     dense: Linear { weight: array![[1.0, 0.0], [0.0, 1.0]], bias: Some(array![[0.0, 0.0]]) },
///     scale: array![[2.0, 3.0]],
///     drop: Dropout::new(0.5, 7),
///     shape: (2, 2),
/// };
/// let names: Vec<String> = layer.parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["dense.weight", "dense.bias", "scale"]);
/// assert_eq!(layer.shape, (2, 2));
///
/// layer.set_training(false); // reaches the dropout: the output is x·W + b, scaled
/// assert!(!layer.drop.is_training());
/// let tape = Tape::new();
/// let y = layer.forward(tape.constant(array![[1.0, 1.0]])).unwrap();
/// assert_eq!(y.value(), array![[2.0, 3.0]]);
/// ```
pub trait Parameters<F: Float> {
    /// Calls `f` with the name and value of every parameter.
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Array2<F>));

    /// Calls `f` with the name and value of every parameter, mutably, in the order of
    /// [`Parameters::visit`].
    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Array2<F>));

    /// Calls `f` with the name of every layer this one holds directly, and the layer:
    /// what [`Module::set_training`] walks by default. The default holds none; implement
    /// it in a layer that holds others (the derive does), or override `set_training`.
    fn visit_layers_mut(&mut self, f: &mut dyn FnMut(&str, &mut dyn Module<F>)) {
        let _ = f;
    }

    /// Calls `f` with the name of every parameter and how PyTorch stores the same
    /// parameter ([`TorchLayout`]), in the order of [`Parameters::visit`]: what
    /// [`io::load_torch`](crate::io::load_torch) reads a PyTorch state dict by, and what
    /// tells [`io::load`](crate::io::load) that a file which does not say its layout could
    /// be read transposed.
    ///
    /// The default says [`TorchLayout::Unknown`] of every parameter (a square one is then
    /// refused from a file that does not say its layout, never guessed). The layers of
    /// [`nn`](crate::nn) and the derive say it; a layer of your own holding layers forwards
    /// it with [`visit_child_torch_layout`].
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::nn::{Linear, Parameters, TorchLayout};
    ///
    /// let layer = Linear { weight: array![[1.0, 2.0]], bias: Some(array![[0.0, 0.0]]) };
    /// let mut layouts = Vec::new();
    /// layer.visit_torch_layout(&mut |name, layout| layouts.push((name.to_string(), layout)));
    /// assert_eq!(
    ///     layouts,
    ///     [("weight".to_string(), TorchLayout::Transposed), ("bias".to_string(), TorchLayout::Same)]
    /// );
    /// ```
    fn visit_torch_layout(&self, f: &mut dyn FnMut(&str, TorchLayout)) {
        self.visit(&mut |name, _| f(name, TorchLayout::Unknown));
    }

    /// Every parameter with its name.
    fn parameters(&self) -> Vec<(String, &Array2<F>)> {
        let mut out = Vec::new();
        self.visit(&mut |name, p| out.push((name.to_string(), p)));
        out
    }

    /// The number of scalars in all parameters.
    fn parameter_count(&self) -> usize {
        let mut n = 0;
        self.visit(&mut |_, p| n += p.len());
        n
    }

    /// The parameters that got no gradient from the backward pass `grads` came from,
    /// with the reason ([`Missing`]: not reached from the loss, a constant, not on the
    /// tape at all, ...): what to look at when a layer does not learn.
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::nn::{Linear, Parameters};
    /// use tapegrad::{Missing, Tape};
    ///
    /// let model = Linear { weight: array![[1.0], [2.0]], bias: Some(array![[0.5]]) };
    /// let tape = Tape::new();
    /// let _b = tape.param(model.bias.as_ref().unwrap()); // on the tape, never used
    /// let loss = tape.constant(array![[1.0, 1.0]]).matmul(tape.param(&model.weight)).sum();
    /// let grads = tape.backward(loss).unwrap();
    /// assert_eq!(model.without_gradient(&grads), vec![("bias".to_string(), Missing::Unreached)]);
    /// ```
    fn without_gradient(&self, grads: &Gradients<F>) -> Vec<(String, Missing)> {
        let mut out = Vec::new();
        self.visit(&mut |name, p| {
            if let Some(why) = grads.reason(p) {
                out.push((name.to_string(), why));
            }
        });
        out
    }

    /// Each parameter's gradient in `grads`, by name: `None` for a parameter that was not
    /// on the tape `grads` came from.
    fn gradients<'g>(&self, grads: &'g Gradients<F>) -> Vec<(String, Option<&'g Array2<F>>)> {
        let mut out = Vec::new();
        self.visit(&mut |name, p| out.push((name.to_string(), grads.wrt(p))));
        out
    }
}

/// A layer or model: parameters and a forward pass.
///
/// `Send + Sync` is required, so every model can move between threads and be shared, and
/// so is `Clone` (through [`ModuleClone`], implemented for every `Clone` module), so every
/// model can be copied, a [`Sequential`] of boxed layers too: derive `Clone` on a layer of
/// your own.
pub trait Module<F: Float>: Parameters<F> + ModuleClone<F> + Send + Sync {
    /// The forward pass on `x`'s tape, with the parameters borrowed onto it.
    ///
    /// # Errors
    ///
    /// A shape error from an op, when `x` does not fit the layer.
    fn forward<'t>(&'t self, x: Tensor<'t, F>) -> Result<Tensor<'t, F>>;

    /// Switches between training (the default) and evaluation: [`Dropout`] drops only in
    /// training. The default passes it on to the layers this one holds
    /// ([`Parameters::visit_layers_mut`]: those of a [`Sequential`], the fields of a
    /// derived layer), and does nothing in a layer that holds none.
    fn set_training(&mut self, training: bool) {
        self.visit_layers_mut(&mut |_, layer| layer.set_training(training));
    }

    /// The layer's type, without its module path and generic arguments (`"Linear"` for
    /// `Linear<f32>`): how error messages and the profile name a layer
    /// ([`forward_child`]). Override it to name a layer otherwise.
    fn name(&self) -> &'static str {
        short_type_name(std::any::type_name::<Self>())
    }
}

/// Cloning a layer behind a trait object: `Box<dyn Module<F>>` is `Clone` through it.
///
/// Implemented for every [`Module`] that is `Clone`; there is nothing to implement by
/// hand.
pub trait ModuleClone<F: Float> {
    /// A copy of the layer, boxed.
    fn clone_box<'a>(&self) -> Box<dyn Module<F> + 'a>
    where
        Self: 'a;
}

impl<F: Float, M: Module<F> + Clone> ModuleClone<F> for M {
    fn clone_box<'a>(&self) -> Box<dyn Module<F> + 'a>
    where
        Self: 'a,
    {
        Box::new(self.clone())
    }
}

impl<F: Float> Clone for Box<dyn Module<F> + '_> {
    fn clone(&self) -> Self {
        (**self).clone_box()
    }
}

/// `"Linear"` from `"tapegrad::nn::linear::Linear<f32>"`.
fn short_type_name(full: &'static str) -> &'static str {
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

/// Runs `child`'s forward pass on `x` as the layer called `name` of a container of type
/// `container`: how a layer that holds other layers calls them ([`Sequential`] does, with
/// each layer's position as its name, and so do the attention layers).
///
/// It changes nothing when all goes well. An error from the child gains the layer: its
/// path, type and parameters, and the container's caller ([`Error::in_layer`]), so a shape
/// error deep in a model names the layer and your line rather than a line of tapegrad's
/// source. While [`profile`](crate::inspect::profile) runs, the ops the child records are
/// attributed to it ([`SiteStats::layer`](crate::inspect::SiteStats::layer)), so two
/// layers of the same type are told apart.
///
/// Mark the container's `forward` `#[track_caller]`: the error's call site is then the
/// line that called the container (Rust passes it through both calls).
///
/// # Errors
///
/// The child's error, with the layer added.
///
/// ```
/// use ndarray::Array2;
/// use rand::SeedableRng;
/// use tapegrad::nn::{forward_child, visit_child, visit_child_mut, Init, Linear, Module, Parameters};
/// use tapegrad::{Result, Tape, Tensor};
///
/// /// Two layers with a residual connection around the second.
/// #[derive(Clone)]
/// struct Residual {
///     inner: Linear<f64>,
///     outer: Linear<f64>,
/// }
///
/// impl Parameters<f64> for Residual {
///     fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Array2<f64>)) {
///         visit_child("inner", &self.inner, f);
///         visit_child("outer", &self.outer, f);
///     }
///     fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Array2<f64>)) {
///         visit_child_mut("inner", &mut self.inner, f);
///         visit_child_mut("outer", &mut self.outer, f);
///     }
/// }
///
/// impl Module<f64> for Residual {
///     #[track_caller]
///     fn forward<'t>(&'t self, x: Tensor<'t, f64>) -> Result<Tensor<'t, f64>> {
///         let h = forward_child("Residual", "inner", &self.inner, x)?;
///         forward_child("Residual", "outer", &self.outer, h)?.try_add(h)
///     }
/// }
///
/// let mut rng = rand::rngs::StdRng::seed_from_u64(3);
/// let block = Residual {
///     inner: Linear::new(3, 4, Init::Glorot, &mut rng),
///     outer: Linear::new(5, 4, Init::Glorot, &mut rng), // should take 4 inputs
/// };
/// let tape = Tape::new();
/// let err = block.forward(tape.constant(Array2::zeros((2, 3)))).unwrap_err();
/// let layer = err.in_layer().unwrap();
/// assert_eq!((layer.path.as_str(), layer.container), ("outer", "Residual"));
/// assert_eq!(layer.parameters, ["outer.weight", "outer.bias"]);
/// ```
///
/// [`Error::in_layer`]: crate::Error::in_layer
#[track_caller]
pub fn forward_child<'t, F: Float, M: Module<F> + ?Sized>(
    container: &'static str,
    name: &str,
    child: &'t M,
    x: Tensor<'t, F>,
) -> Result<Tensor<'t, F>> {
    run_child(container, ChildName::Str(name), child, x)
}

/// A child's name in its container: given, or its position (written out only when it is
/// needed: for an error, or while profiling).
#[derive(Clone, Copy)]
pub(crate) enum ChildName<'a> {
    Str(&'a str),
    Index(usize),
}

impl ChildName<'_> {
    /// Calls `f` with the name as text (a position written on the stack).
    pub(crate) fn with<R>(self, f: impl FnOnce(&str) -> R) -> R {
        match self {
            ChildName::Str(s) => f(s),
            ChildName::Index(i) => f(sequential::decimal(i, &mut [0u8; 20])),
        }
    }
}

/// [`forward_child`] with the name given either way.
#[track_caller]
pub(crate) fn run_child<'t, F: Float, M: Module<F> + ?Sized>(
    container: &'static str,
    name: ChildName<'_>,
    child: &'t M,
    x: Tensor<'t, F>,
) -> Result<Tensor<'t, F>> {
    let called_at = Location::caller();
    let scope = x.tape().enter_layer(name, child);
    let result = child.forward(x);
    drop(scope);
    match result {
        Ok(y) => Ok(y),
        Err(e) => Err(name.with(|name| {
            let parameters = || {
                let mut names = Vec::new();
                child.visit(&mut |p, _| names.push(p.to_string()));
                names
            };
            e.within(container, name, child.name(), parameters, called_at)
        })),
    }
}

/// Visits `child`'s parameters as `prefix.name`: how a layer names the parameters of the
/// layers it holds.
pub fn visit_child<'a, F: Float>(
    prefix: &str,
    child: &'a dyn Parameters<F>,
    f: &mut dyn FnMut(&str, &'a Array2<F>),
) {
    child.visit(&mut |name, p| with_joined(prefix, name, |full| f(full, p)));
}

/// How PyTorch stores a parameter, compared with tapegrad
/// ([`Parameters::visit_torch_layout`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TorchLayout {
    /// The same matrix; a 1 × n row may also be PyTorch's 1-D vector of n (a bias, a
    /// norm's scale).
    Same,
    /// The transpose: a linear layer's weight, which tapegrad holds as inputs × outputs
    /// (`y = x·W + b`) and PyTorch's `nn.Linear` as outputs × inputs (`y = x·Wᵀ + b`).
    Transposed,
    /// Not said by the layer: read as it is where the shapes tell (not square), refused
    /// where they cannot (square).
    Unknown,
}

/// Visits `child`'s [`TorchLayout`]s as `prefix.name`: how a layer that holds others
/// implements [`Parameters::visit_torch_layout`] (the twin of [`visit_child`]).
pub fn visit_child_torch_layout<F: Float>(
    prefix: &str,
    child: &dyn Parameters<F>,
    f: &mut dyn FnMut(&str, TorchLayout),
) {
    child.visit_torch_layout(&mut |name, layout| with_joined(prefix, name, |full| f(full, layout)));
}

/// The mutable twin of [`visit_child`].
pub fn visit_child_mut<'a, F: Float>(
    prefix: &str,
    child: &'a mut dyn Parameters<F>,
    f: &mut dyn FnMut(&str, &'a mut Array2<F>),
) {
    child.visit_mut(&mut |name, p| with_joined(prefix, name, |full| f(full, p)));
}

/// Calls `f` with `prefix.name`, joined in a buffer on the stack when it fits (every name
/// of a real model does), so that walking a model's parameters allocates nothing.
fn with_joined<R>(prefix: &str, name: &str, f: impl FnOnce(&str) -> R) -> R {
    const ROOM: usize = 64;
    let len = prefix.len() + 1 + name.len();
    if len > ROOM {
        return f(&format!("{prefix}.{name}"));
    }
    let mut buf = [0u8; ROOM];
    buf[..prefix.len()].copy_from_slice(prefix.as_bytes());
    buf[prefix.len()] = b'.';
    buf[prefix.len() + 1..len].copy_from_slice(name.as_bytes());
    // two strings joined by an ASCII byte are UTF-8
    let joined = std::str::from_utf8(&buf[..len]).expect("UTF-8 joined at a character boundary");
    f(joined)
}
