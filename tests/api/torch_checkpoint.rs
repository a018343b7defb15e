//! PyTorch state dicts (`io::load_torch`): files written as PyTorch writes them
//! (tests/data/make_torch_fixtures.py, numpy + safetensors) load transposed where PyTorch
//! stores a layer transposed and compute what PyTorch's formula computed; and no file
//! loads silently transposed: `io::load` refuses a PyTorch file, and a file that does not
//! say its layout where a square parameter could be read either way.

use std::path::{Path, PathBuf};

use ndarray::{Array2, array};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tapegrad::io::{self, CheckpointError};
use tapegrad::nn::{
    Activation, Init, LayerNorm, Linear, Module, Parameters, Sequential, TorchLayout, mlp,
};
use tapegrad::{Float, Tape};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn net(hidden: usize) -> Sequential<f64> {
    let mut rng = StdRng::seed_from_u64(3);
    mlp(
        &[3, hidden, 2],
        Activation::Tanh,
        Activation::Identity,
        Init::Glorot,
        &mut rng,
    )
}

fn expected(name: &str) -> (Array2<f64>, Array2<f64>) {
    let file = std::fs::read(data("torch_mlp_expected.safetensors")).unwrap();
    let m = io::read_matrices::<f64>(&file).unwrap();
    (m["x"].clone(), m[name].clone())
}

fn worst(model: &Sequential<f64>, x: &Array2<f64>, y: &Array2<f64>) -> f64 {
    let tape = Tape::new();
    let out = model.forward(tape.constant(x)).unwrap().value();
    (&out - y).iter().fold(0.0, |m, d| m.max(d.abs()))
}

fn values(m: &dyn Parameters<f64>) -> Vec<Array2<f64>> {
    m.parameters().into_iter().map(|(_, p)| p.clone()).collect()
}

fn layout_error(e: CheckpointError) -> String {
    match e {
        CheckpointError::Layout(text) => text,
        other => panic!("a layout error expected, got: {other}"),
    }
}

#[test]
fn a_pytorch_state_dict_loads_transposed_and_computes_what_pytorch_computes() {
    for (hidden, file, y) in [
        (4, "torch_mlp_3_4_2.safetensors", "y_3_4_2"),
        (3, "torch_mlp_3_3_2.safetensors", "y_3_3_2"),
    ] {
        let (x, y) = expected(y);
        let mut model = net(hidden);
        io::load_torch(&mut model, data(file)).unwrap();
        let w = worst(&model, &x, &y);
        assert!(
            w < 1e-14,
            "{file}: the output differs from PyTorch's formula by {w}"
        );
        // the values the script wrote: 0.5·cos(0.9·i + k), the weight's row i of PyTorch
        // being tapegrad's column i
        let w0 = &model.parameters()[0].1;
        assert_eq!(w0[[1, 0]], 0.5 * (0.9f64).cos());
        assert_eq!(w0.dim(), (3, hidden));
    }
}

#[test]
fn load_refuses_a_pytorch_file_and_says_what_to_do() {
    // the file says `format: pt`
    let mut model = net(4);
    let before = values(&model);
    let text = layout_error(io::load(&mut model, data("torch_mlp_3_4_2.safetensors")).unwrap_err());
    assert!(text.contains("io::load_torch"), "{text}");
    assert_eq!(values(&model), before, "the model changed on error");

    // the file says nothing and its first weight is square: it could hold either layout
    let mut model = net(3);
    let text = layout_error(io::load(&mut model, data("torch_mlp_3_3_2.safetensors")).unwrap_err());
    assert!(text.contains("`0.weight` is square (3 × 3)"), "{text}");
    assert!(text.contains("io::load_torch") && text.contains("\"layout\": \"tapegrad\""));
    assert_eq!(
        values(&model),
        values(&net(3)),
        "the model changed on error"
    );
}

/// A safetensors file of `header` (JSON) and the `f64` data `values`.
fn file(header: &str, values: impl IntoIterator<Item = f64>) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    bytes
}

/// `nn.Linear(2, 3)` as PyTorch writes it, without metadata (`weight` 3 × 2, `bias` 3).
fn torch_linear_2_3(metadata: &str) -> Vec<u8> {
    let header = format!(
        r#"{{{metadata}"weight":{{"dtype":"F64","shape":[3,2],"data_offsets":[0,48]}},"bias":{{"dtype":"F64","shape":[3],"data_offsets":[48,72]}}}}"#
    );
    file(&header, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.1, 0.2, 0.3])
}

#[test]
fn a_non_square_pytorch_weight_through_load_is_a_shape_error_that_names_load_torch() {
    let mut layer = Linear {
        weight: Array2::<f64>::zeros((2, 3)),
        bias: Some(Array2::zeros((1, 3))),
    };
    let e = io::from_bytes(&mut layer, &torch_linear_2_3("")).unwrap_err();
    assert!(matches!(e, CheckpointError::WrongShape { .. }), "{e}");
    assert!(e.to_string().contains("io::load_torch"), "{e}");
    io::from_torch_bytes(&mut layer, &torch_linear_2_3("")).unwrap();
    assert_eq!(layer.weight, array![[1.0, 3.0, 5.0], [2.0, 4.0, 6.0]]);
    assert_eq!(layer.bias, Some(array![[0.1, 0.2, 0.3]]));
    // a layout tapegrad does not know is an error, not a guess
    let odd = torch_linear_2_3(r#""__metadata__":{"layout":"jax"},"#);
    let text = layout_error(io::from_torch_bytes(&mut layer, &odd).unwrap_err());
    assert!(text.contains("`jax`"), "{text}");
    let text = layout_error(io::from_bytes(&mut layer, &odd).unwrap_err());
    assert!(text.contains("`jax`"), "{text}");
}

#[test]
fn a_file_tapegrad_wrote_says_its_layout_and_load_torch_refuses_it() {
    let model = net(3);
    let bytes = io::to_bytes(&model).unwrap();
    let mut other = net(3);
    let text = layout_error(io::from_torch_bytes(&mut other, &bytes).unwrap_err());
    assert!(text.contains("io::load"), "{text}");
    // square weights and all, the file says its layout: `load` reads it as it is
    let mut fresh = mlp::<f64>(
        &[3, 3, 2],
        Activation::Tanh,
        Activation::Identity,
        Init::Glorot,
        &mut StdRng::seed_from_u64(9),
    );
    io::from_bytes(&mut fresh, &bytes).unwrap();
    assert_eq!(values(&fresh), values(&model));
}

/// A layer written by hand that does not say how PyTorch stores its parameters.
struct Bilinear {
    square: Array2<f64>,
    row: Array2<f64>,
}

impl Parameters<f64> for Bilinear {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Array2<f64>)) {
        f("square", &self.square);
        f("row", &self.row);
    }
    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Array2<f64>)) {
        f("square", &mut self.square);
        f("row", &mut self.row);
    }
}

#[test]
fn a_square_parameter_of_unknown_layout_is_refused_never_guessed() {
    let header = r#"{"square":{"dtype":"F64","shape":[2,2],"data_offsets":[0,32]},"row":{"dtype":"F64","shape":[2],"data_offsets":[32,48]}}"#;
    let bytes = file(header, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let mut layer = Bilinear {
        square: Array2::zeros((2, 2)),
        row: Array2::zeros((1, 2)),
    };
    let mut said = Vec::new();
    layer.visit_torch_layout(&mut |name, layout| said.push((name.to_string(), layout)));
    assert_eq!(
        said,
        [
            ("square".into(), TorchLayout::Unknown),
            ("row".into(), TorchLayout::Unknown)
        ]
    );
    let text = layout_error(io::from_torch_bytes(&mut layer, &bytes).unwrap_err());
    assert!(text.contains("visit_torch_layout"), "{text}");
    let text = layout_error(io::from_bytes(&mut layer, &bytes).unwrap_err());
    assert!(text.contains("`square` is square"), "{text}");
    assert_eq!(
        layer.square,
        Array2::<f64>::zeros((2, 2)),
        "the model changed on error"
    );
}

#[test]
fn layers_say_how_pytorch_stores_their_parameters() {
    let mut rng = StdRng::seed_from_u64(0);
    let mut model = Sequential::<f64>::new();
    model.push(Linear::new(2, 2, Init::Glorot, &mut rng));
    model.push(LayerNorm::new(2));
    let mut said = Vec::new();
    model.visit_torch_layout(&mut |name, layout| said.push((name.to_string(), layout)));
    let expected = [
        ("0.weight", TorchLayout::Transposed),
        ("0.bias", TorchLayout::Same),
        ("1.weight", TorchLayout::Same),
        ("1.bias", TorchLayout::Same),
    ];
    let expected: Vec<(String, TorchLayout)> =
        expected.iter().map(|(n, l)| (n.to_string(), *l)).collect();
    assert_eq!(said, expected);
    // a LayerNorm's vectors load from PyTorch's 1-D tensors
    let header = r#"{"0.weight":{"dtype":"F64","shape":[2,2],"data_offsets":[0,32]},"0.bias":{"dtype":"F64","shape":[2],"data_offsets":[32,48]},"1.weight":{"dtype":"F64","shape":[2],"data_offsets":[48,64]},"1.bias":{"dtype":"F64","shape":[2],"data_offsets":[64,80]}}"#;
    let bytes = file(header, (1..=10).map(f64::from));
    io::from_torch_bytes(&mut model, &bytes).unwrap();
    let got: Vec<Array2<f64>> = values(&model);
    assert_eq!(got[0], array![[1.0, 3.0], [2.0, 4.0]]);
    assert_eq!(got[1], array![[5.0, 6.0]]);
    assert_eq!(got[2], array![[7.0, 8.0]]);
    assert_eq!(got[3], array![[9.0, 10.0]]);
}

/// f32 models read f32 files only (no silent conversion), from PyTorch as from tapegrad.
#[test]
fn a_float64_state_dict_does_not_load_into_a_float32_model() {
    fn f32_net<F: Float>() -> Sequential<F> {
        mlp(
            &[3, 4, 2],
            Activation::Tanh,
            Activation::Identity,
            Init::Glorot,
            &mut StdRng::seed_from_u64(1),
        )
    }
    let mut model = f32_net::<f32>();
    let e = io::load_torch(&mut model, data("torch_mlp_3_4_2.safetensors")).unwrap_err();
    assert!(matches!(e, CheckpointError::WrongDtype { .. }), "{e}");
}
