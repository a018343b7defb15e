//! `#[derive(Parameters)]`: the names and order of `visit` and `visit_mut`, the layers
//! `visit_layers_mut` lists, and `set_training` reaching every nested layer.
#![cfg(feature = "derive")]

use std::marker::PhantomData;

use tapegrad::ndarray::{Array2, array};
use tapegrad::nn::{Dropout, Linear, Module, Parameters, Relu, Sequential};
use tapegrad::{Float, Result, Tape, Tensor};

/// Every kind of field: layers, parameters, optional ones present and absent, skipped.
#[derive(Clone, Parameters)]
struct Block<F: Float> {
    width: usize,
    first: Linear<F>,
    gain: Array2<F>,
    shift: Option<Array2<F>>,
    missing: Option<Array2<F>>,
    drop: Dropout<F>,
    extra: Option<Linear<F>>,
    absent: Option<Linear<F>>,
    eps: F,
    #[param(skip)]
    ignored: Array2<F>,
    marker: PhantomData<F>,
}

impl<F: Float> Module<F> for Block<F> {
    fn forward<'t>(&'t self, x: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        let h = self.drop.forward(self.first.forward(x)?)?;
        h.try_mul(x.tape().param(&self.gain))
    }
}

/// A derived layer holding a derived layer and a `Sequential`, generic over a layer type.
#[derive(Clone, Parameters)]
struct Outer<F: Float, L> {
    inner: Block<F>,
    stack: Sequential<F>,
    head: L,
}

impl<F: Float, L: Module<F> + Clone> Module<F> for Outer<F, L> {
    fn forward<'t>(&'t self, x: Tensor<'t, F>) -> Result<Tensor<'t, F>> {
        self.head
            .forward(self.stack.forward(self.inner.forward(x)?)?)
    }
}

/// A tuple struct without a type parameter: names by position, `f32` from the fields.
#[derive(Clone, Parameters)]
struct Pair(Linear<f32>, Array2<f32>);

/// The float given on the struct, the fields naming none.
type Dense = Linear<f64>;
#[derive(Clone, Parameters)]
#[param(float = f64)]
struct Aliased {
    dense: Dense,
}

fn linear(inputs: usize, outputs: usize, start: f64) -> Linear<f64> {
    let weight =
        Array2::from_shape_fn((inputs, outputs), |(i, j)| start + (i * outputs + j) as f64);
    Linear {
        weight,
        bias: Some(Array2::from_elem((1, outputs), start)),
    }
}

fn block(start: f64) -> Block<f64> {
    Block {
        width: 2,
        first: linear(2, 2, start),
        gain: array![[2.0, 3.0]],
        shift: Some(array![[0.5, 0.5]]),
        missing: None,
        drop: Dropout::new(0.5, 1),
        extra: Some(linear(2, 1, start + 10.0)),
        absent: None,
        eps: 1e-5,
        ignored: array![[9.0]],
        marker: PhantomData,
    }
}

fn outer() -> Outer<f64, Dropout<f64>> {
    Outer {
        inner: block(0.0),
        stack: Sequential::new()
            .with(linear(2, 2, 20.0))
            .with(Relu)
            .with(Dropout::new(0.2, 3)),
        head: Dropout::new(0.1, 4),
    }
}

fn names_of<F: Float>(layer: &dyn Parameters<F>) -> Vec<String> {
    layer
        .parameters()
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

fn names_of_mut<F: Float>(layer: &mut dyn Parameters<F>) -> Vec<String> {
    let mut names = Vec::new();
    layer.visit_mut(&mut |name, _| names.push(name.to_string()));
    names
}

fn layer_names<F: Float>(layer: &mut dyn Parameters<F>) -> Vec<String> {
    let mut names = Vec::new();
    layer.visit_layers_mut(&mut |name, _| names.push(name.to_string()));
    names
}

#[test]
fn fields_are_visited_in_order_by_name() {
    let expected = [
        "first.weight",
        "first.bias",
        "gain",
        "shift",
        "extra.weight",
        "extra.bias",
    ];
    let mut b = block(0.0);
    assert_eq!(names_of(&b), expected);
    assert_eq!(names_of_mut(&mut b), expected);
    // the values are the fields' own
    let params = b.parameters();
    assert!(std::ptr::eq(params[0].1, &b.first.weight));
    assert!(std::ptr::eq(params[2].1, &b.gain));
    assert!(std::ptr::eq(params[3].1, b.shift.as_ref().unwrap()));
    assert!(std::ptr::eq(
        params[5].1,
        b.extra.as_ref().unwrap().bias.as_ref().unwrap()
    ));
    assert_eq!(b.parameter_count(), 4 + 2 + 2 + 2 + 2 + 1);
}

#[test]
fn optional_fields_appear_when_present() {
    let mut b = block(0.0);
    b.missing = Some(array![[1.0]]);
    b.absent = Some(linear(1, 1, 0.0));
    b.shift = None;
    b.extra = None;
    assert_eq!(
        names_of(&b),
        [
            "first.weight",
            "first.bias",
            "gain",
            "missing",
            "absent.weight",
            "absent.bias"
        ]
    );
}

#[test]
fn visit_mut_writes_the_fields() {
    let mut b = block(0.0);
    let mut k = 0.0;
    b.visit_mut(&mut |_, p| {
        k += 1.0;
        p.fill(k);
    });
    assert_eq!(b.first.weight, Array2::from_elem((2, 2), 1.0));
    assert_eq!(b.first.bias, Some(Array2::from_elem((1, 2), 2.0)));
    assert_eq!(b.gain, array![[3.0, 3.0]]);
    assert_eq!(b.shift, Some(array![[4.0, 4.0]]));
    assert_eq!(b.extra.as_ref().unwrap().weight, array![[5.0], [5.0]]);
    assert_eq!(b.extra.as_ref().unwrap().bias, Some(array![[6.0]]));
    assert_eq!(
        b.ignored,
        array![[9.0]],
        "a skipped field is not a parameter"
    );
    assert_eq!((b.width, b.eps), (2, 1e-5));
    assert_eq!(b.missing, None);
}

#[test]
fn nested_layers_are_prefixed() {
    let mut o = outer();
    let expected = [
        "inner.first.weight",
        "inner.first.bias",
        "inner.gain",
        "inner.shift",
        "inner.extra.weight",
        "inner.extra.bias",
        "stack.0.weight",
        "stack.0.bias",
    ];
    assert_eq!(names_of(&o), expected);
    assert_eq!(names_of_mut(&mut o), expected);
    assert_eq!(layer_names(&mut o), ["inner", "stack", "head"]);
    assert_eq!(layer_names(&mut o.inner), ["first", "drop", "extra"]);
    assert_eq!(layer_names(&mut o.stack), ["0", "1", "2"]);
}

#[test]
fn tuple_structs_are_named_by_position() {
    let mut p = Pair(
        Linear {
            weight: array![[1.0f32]],
            bias: None,
        },
        array![[2.0f32, 3.0]],
    );
    assert_eq!(names_of(&p), ["0.weight", "1"]);
    assert_eq!(names_of_mut(&mut p), ["0.weight", "1"]);
    assert_eq!(layer_names(&mut p), ["0"]);
}

#[test]
fn the_float_can_be_given() {
    let a = Aliased {
        dense: linear(1, 1, 0.0),
    };
    assert_eq!(names_of::<f64>(&a), ["dense.weight", "dense.bias"]);
}

/// Whether every dropout in `o` is in training mode, in the order they are held.
fn training(o: &Outer<f64, Dropout<f64>>) -> Vec<bool> {
    let in_stack = o.stack.clone();
    // the Sequential's dropout: evaluation mode passes its input through unchanged
    let tape = Tape::new();
    let x = Array2::from_elem((4, 2), 1.0);
    let y = in_stack.forward(tape.constant(&x)).unwrap().value();
    let stack_trains = y.iter().any(|&v| v == 0.0) || {
        // a draw that dropped nothing is as likely as not to be training; ask for more
        let big = Array2::from_elem((64, 2), 1.0);
        in_stack
            .forward(tape.constant(&big))
            .unwrap()
            .value()
            .iter()
            .any(|&v| v == 0.0)
    };
    vec![
        o.inner.drop.is_training(),
        stack_trains,
        o.head.is_training(),
    ]
}

#[test]
fn set_training_reaches_every_nested_layer() {
    let mut o = outer();
    assert_eq!(training(&o), [true, true, true]);
    o.set_training(false);
    assert_eq!(training(&o), [false, false, false]);
    o.set_training(true);
    assert_eq!(training(&o), [true, true, true]);
}

#[test]
fn an_evaluating_block_is_deterministic_and_differentiable() {
    let mut b = block(1.0);
    b.set_training(false);
    let tape = Tape::new();
    let y = b.forward(tape.constant(array![[1.0, 2.0]])).unwrap();
    // x·W + b = [1 + 2·3, 2 + 2·4] + 1 = [8, 11], times the gain [2, 3]
    assert_eq!(y.value(), array![[16.0, 33.0]]);
    let grads = tape.backward(y.sum()).unwrap();
    let got: Vec<(String, bool)> = b
        .gradients(&grads)
        .into_iter()
        .map(|(n, g)| (n, g.is_some()))
        .collect();
    assert_eq!(
        got,
        [
            ("first.weight".to_string(), true),
            ("first.bias".to_string(), true),
            ("gain".to_string(), true),
            ("shift".to_string(), false),
            ("extra.weight".to_string(), false),
            ("extra.bias".to_string(), false),
        ]
    );
    assert_eq!(grads.wrt(&b.gain).unwrap(), array![[8.0, 11.0]]);
}

/// The derive's `visit_torch_layout` lists the parameters of `visit`, in its order: the
/// struct's own arrays as `Unknown` (it cannot know how PyTorch stores them), the layers'
/// parameters as the layers say (a `Linear`'s weight transposed).
#[test]
fn the_torch_layouts_follow_the_fields() {
    use tapegrad::nn::TorchLayout::{Same, Transposed, Unknown};
    let layer = outer();
    let mut said = Vec::new();
    layer.visit_torch_layout(&mut |name, layout| said.push((name.to_string(), layout)));
    let names: Vec<String> = said.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, names_of(&layer));
    let layout = |name: &str| said.iter().find(|(n, _)| n == name).unwrap().1;
    assert_eq!(layout("inner.first.weight"), Transposed);
    assert_eq!(layout("inner.first.bias"), Same);
    assert_eq!(layout("inner.gain"), Unknown);
    assert_eq!(layout("inner.shift"), Unknown);
    assert_eq!(layout("inner.extra.weight"), Transposed);
    assert_eq!(layout("stack.0.weight"), Transposed);
}
