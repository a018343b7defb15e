//! The defects of issue 8, each with the test that failed before its fix: weight sharing,
//! parameters without a gradient, the root after backward, sizes, numerics checked
//! against f64 closed forms, optimizers and checkpoints; then those of issue 19 (panics
//! through APIs documented not to panic).

mod common;

use common::close;

use std::panic::{AssertUnwindSafe, catch_unwind};

use ndarray::{Array2, Axis, array, s};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tapegrad::nn::{Init, Linear, Module, Parameters, Sequential};
use tapegrad::optim::{Adam, OptimError, Optimizer, Sgd, clip_grad_norm};
use tapegrad::{ErrorKind, Missing, Tape, Tensor, io};

/// Central differences of `loss` in every element of `w`.
fn numeric_gradient(w: &Array2<f64>, loss: impl Fn(&Array2<f64>) -> f64) -> Array2<f64> {
    let mut g = Array2::zeros(w.dim());
    let mut w = w.clone();
    for idx in ndarray::indices(w.dim()) {
        let w0 = w[idx];
        w[idx] = w0 + 1e-6;
        let plus = loss(&w);
        w[idx] = w0 - 1e-6;
        let minus = loss(&w);
        w[idx] = w0;
        g[idx] = (plus - minus) / 2e-6;
    }
    g
}

fn layer(w: Array2<f64>, b: Array2<f64>) -> Linear<f64> {
    Linear {
        weight: w,
        bias: Some(b),
    }
}

// ---- 1. A layer used twice on one tape gets the sum of both uses -------------------------

/// `y = f(f(x))` with one `Linear` applied twice: dL/dW = xᵀ·G₁ + h₁ᵀ·G₂ (both uses), where
/// the old tape gave only the first leaf's term.
#[test]
fn a_layer_applied_twice_gets_the_sum_of_both_uses() {
    let w = array![[0.5, -1.0], [2.0, 0.25]];
    let b = array![[0.1, -0.2]];
    let x = array![[1.0, 2.0], [-0.5, 3.0]];
    let net = layer(w.clone(), b.clone());
    let tape = Tape::new();
    let y = net
        .forward(net.forward(tape.constant(&x)).unwrap())
        .unwrap();
    let loss = y.square().sum();
    let grads = tape.backward(loss).unwrap();
    // by hand: h = xW + b, y = hW + b, L = Σy², G₂ = 2y, G₁ = G₂Wᵀ
    let h = x.dot(&w) + &b;
    let yv = h.dot(&w) + &b;
    let g2 = &yv * 2.0;
    let g1 = g2.dot(&w.t());
    let dw = x.t().dot(&g1) + h.t().dot(&g2);
    let db = g1.sum_axis(Axis(0)).insert_axis(Axis(0)) + g2.sum_axis(Axis(0)).insert_axis(Axis(0));
    assert!(close(grads.wrt(&net.weight).unwrap(), &dw, 1e-12));
    assert!(close(
        grads.wrt(net.bias.as_ref().unwrap()).unwrap(),
        &db,
        1e-12
    ));
    // and by finite differences in W
    let numeric = numeric_gradient(&w, |w| {
        let h = x.dot(w) + &b;
        (h.dot(w) + &b).mapv(|v| v * v).sum()
    });
    assert!(close(grads.wrt(&net.weight).unwrap(), &numeric, 1e-6));
}

/// The same array put on the tape twice through `Tensor` ops is one leaf; its transpose is
/// that leaf's transpose (tied weights).
#[test]
fn the_same_array_as_a_parameter_twice_is_one_leaf() {
    let w = array![[0.3, -0.7, 1.1], [0.2, 0.5, -0.4]];
    let x = array![[1.0, -2.0], [0.5, 0.25], [2.0, 1.0]];
    let tape = Tape::new();
    let (a, b) = (tape.param(&w), tape.param(&w));
    assert_eq!((a.rows(), a.cols()), (2, 3));
    let xt = tape.constant(&x);
    // L = Σ tanh(x·W)·Wᵀ ... written with two handles and a transposed view of the storage
    let tied = tape.param(w.t());
    assert_eq!(tied.shape(), (3, 2));
    let loss = xt.matmul(a).tanh().matmul(tied).mul(xt).sum().add(b.sum());
    let grads = tape.backward(loss).unwrap();
    assert_eq!(grads.len(), 1, "one leaf for every use of w");
    assert_eq!(grads.get(a), grads.get(b));
    let numeric = numeric_gradient(&w, |w| {
        (x.dot(w).mapv(f64::tanh).dot(&w.t()) * &x).sum() + w.sum()
    });
    assert!(close(grads.wrt(&w).unwrap(), &numeric, 1e-6));
}

/// A recurrent layer unrolled through `nn` and a siamese pair: the gradient by finite
/// differences of the whole composition.
#[test]
fn an_unrolled_recurrent_net_and_a_siamese_pair_get_full_gradients() {
    let mut rng = StdRng::seed_from_u64(3);
    let cell = Linear::<f64>::new(3, 3, Init::Glorot, &mut rng);
    let x = array![[0.5, -1.0, 0.25], [1.5, 0.5, -0.75]];
    let unrolled = |w: &Array2<f64>, b: &Array2<f64>| {
        let mut h = x.clone();
        for _ in 0..4 {
            h = (h.dot(w) + b).mapv(f64::tanh);
        }
        let other = (x.mapv(|v| 2.0 * v).dot(w) + b).mapv(f64::tanh); // the siamese twin
        (h * other).sum()
    };
    let tape = Tape::new();
    let mut h = tape.constant(&x);
    for _ in 0..4 {
        h = cell.forward(h).unwrap().tanh();
    }
    let twin = cell
        .forward(tape.constant(x.mapv(|v| 2.0 * v)))
        .unwrap()
        .tanh();
    let loss = h.mul(twin).sum();
    assert!((loss.item() - unrolled(&cell.weight, cell.bias.as_ref().unwrap())).abs() < 1e-12);
    let grads = tape.backward(loss).unwrap();
    let b = cell.bias.clone().unwrap();
    let dw = numeric_gradient(&cell.weight, |w| unrolled(w, &b));
    let db = numeric_gradient(&b, |b| unrolled(&cell.weight, b));
    assert!(close(grads.wrt(&cell.weight).unwrap(), &dw, 1e-6));
    assert!(close(
        grads.wrt(cell.bias.as_ref().unwrap()).unwrap(),
        &db,
        1e-6
    ));
}

/// SGD, Adam and gradient clipping consume the summed gradient.
#[test]
fn optimizers_step_with_the_sum_over_every_use() {
    let w = array![[0.5, -1.0], [2.0, 0.25]];
    let b = array![[0.1, -0.2]];
    let x = array![[1.0, 2.0], [-0.5, 3.0]];
    let h = x.dot(&w) + &b;
    let yv = h.dot(&w) + &b;
    let g2 = &yv * 2.0;
    let g1 = g2.dot(&w.t());
    let dw = x.t().dot(&g1) + h.t().dot(&g2);
    let grads_of = |net: &Linear<f64>| {
        let tape = Tape::new();
        let y = net
            .forward(net.forward(tape.constant(&x)).unwrap())
            .unwrap();
        tape.backward(y.square().sum()).unwrap()
    };
    let mut net = layer(w.clone(), b.clone());
    let grads = grads_of(&net);
    Sgd::new(0.01).step(&mut net, &grads).unwrap();
    assert!(close(&net.weight, &(&w - &(&dw * 0.01)), 1e-12));

    // Adam's first step moves every weight by lr · sign(g) (m̂ / √v̂ = g / |g|)
    let mut net = layer(w.clone(), b.clone());
    let grads = grads_of(&net);
    Adam::new(0.01).step(&mut net, &grads).unwrap();
    let expected = &w - &dw.mapv(|g| 0.01 * g.signum());
    assert!(close(&net.weight, &expected, 1e-6));

    let net = layer(w.clone(), b.clone());
    let mut grads = grads_of(&net);
    let db = g1.sum_axis(Axis(0)) + g2.sum_axis(Axis(0));
    let norm = clip_grad_norm(&net, &mut grads, 1.0);
    let want = (dw.mapv(|v| v * v).sum() + db.mapv(|v| v * v).sum()).sqrt();
    assert!((norm - want).abs() < 1e-9 * want, "{norm} vs {want}");
}

/// Two different views of one storage (overlapping slices) cannot be summed into one
/// gradient: `wrt` gives none for either, and says why.
#[test]
fn overlapping_parameter_views_are_reported_not_half_counted() {
    let w = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]];
    let tape = Tape::new();
    let left = tape.param(w.slice(s![.., ..2]));
    let right = tape.param(w.slice(s![.., 1..]));
    let grads = tape.backward(left.sum().add(right.sum())).unwrap();
    assert_eq!(grads.get(left).unwrap(), &Array2::<f64>::ones((2, 2)));
    assert!(grads.wrt(&w.slice(s![.., ..2])).is_none());
    let err = grads.try_wrt(&w.slice(s![.., 1..])).unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Missing(Missing::Overlapping));
}

// ---- 2. A parameter that gets no gradient is never skipped silently ----------------------

/// A layer that puts a copy of its weight on the tape.
#[derive(Clone)]
struct Copying {
    w: Array2<f64>,
    b: Array2<f64>,
}

impl Parameters<f64> for Copying {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Array2<f64>)) {
        f("w", &self.w);
        f("b", &self.b);
    }
    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Array2<f64>)) {
        f("w", &mut self.w);
        f("b", &mut self.b);
    }
}

impl Module<f64> for Copying {
    fn forward<'t>(&'t self, x: Tensor<'t, f64>) -> tapegrad::Result<Tensor<'t, f64>> {
        let tape = x.tape();
        x.try_matmul(tape.param(self.w.clone()))?
            .try_add_row(tape.param(&self.b))
    }
}

#[test]
fn a_parameter_without_a_gradient_is_an_error_naming_it() {
    let mut m = Copying {
        w: array![[1.0], [2.0]],
        b: array![[0.5]],
    };
    let grads = {
        let tape = Tape::new();
        let y = m.forward(tape.constant(array![[1.0, 1.0]])).unwrap();
        tape.backward(y.sum()).unwrap()
    };
    let err = Sgd::new(0.1).step(&mut m, &grads).unwrap_err();
    assert_eq!(
        err,
        OptimError::NoGradient {
            name: "w".into(),
            reason: Missing::NotOnTape
        }
    );
    assert!(
        err.to_string().contains("parameter `w` has no gradient"),
        "{err}"
    );
    assert!(err.to_string().contains("tape.param(w.clone())"), "{err}");
    assert_eq!(m.b, array![[0.5]], "nothing was updated");
    let err = Adam::new(0.1).step(&mut m, &grads).unwrap_err();
    assert!(matches!(err, OptimError::NoGradient { .. }));
    // freezing it on purpose is explicit
    Sgd::new(0.1).freeze(["w"]).step(&mut m, &grads).unwrap();
    assert_eq!(
        (m.w.clone(), m.b.clone()),
        (array![[1.0], [2.0]], array![[0.4]])
    );
    // a frozen name that is not a parameter is an error too
    let err = Sgd::new(0.1)
        .freeze(["v"])
        .step(&mut m, &grads)
        .unwrap_err();
    assert_eq!(err, OptimError::UnknownParameter { name: "v".into() });
}

#[test]
fn gradients_say_why_a_tensor_or_array_has_none() {
    let (w, c) = (array![[1.0, 2.0]], array![[3.0, 4.0]]);
    let tape = Tape::new();
    let (wt, ct) = (tape.param(&w), tape.constant(&c));
    let h = wt.mul(ct);
    let d = h.detach();
    let frozen = tape.no_grad(|| tape.param(array![[1.0]]));
    let mut grads = tape.backward(h.add(d).sum()).unwrap();
    let why = |r: tapegrad::Result<&Array2<f64>>| match r.unwrap_err().kind() {
        ErrorKind::Missing(m) => *m,
        other => panic!("{other:?}"),
    };
    assert_eq!(why(grads.try_get(ct)), Missing::Constant);
    assert_eq!(why(grads.try_get(frozen)), Missing::Constant);
    assert_eq!(why(grads.try_get(h)), Missing::Intermediate);
    assert_eq!(why(grads.try_get(d)), Missing::Detached);
    assert_eq!(why(grads.try_wrt(&c)), Missing::Constant);
    assert_eq!(why(grads.try_wrt(&w.clone())), Missing::NotOnTape);
    let other = Tape::new();
    assert_eq!(why(grads.try_get(other.param(&w))), Missing::OtherTape);
    grads.take(wt).unwrap();
    assert_eq!(why(grads.try_get(wt)), Missing::Taken);
}

#[test]
fn error_debug_is_its_display() {
    let tape = Tape::<f64>::new();
    let err = tape
        .constant(Array2::zeros((2, 3)))
        .try_matmul(tape.constant(Array2::zeros((2, 3))))
        .unwrap_err();
    assert_eq!(format!("{err:?}"), err.to_string());
    assert!(format!("{err:?}").contains("called at"));
    let opt = OptimError::UnknownParameter { name: "x".into() };
    assert_eq!(format!("{opt:?}"), opt.to_string());
}

// ---- 3. The root stays readable after backward -----------------------------------------

#[test]
fn the_root_stays_readable_after_backward_also_as_a_view() {
    let tape = Tape::new();
    let x = tape.param(array![[1.0, 2.0]]);
    let loss = x.square().sum().t();
    let grads = tape.backward(loss).unwrap();
    assert_eq!(loss.item(), 5.0);
    assert_eq!(grads.get(x).unwrap(), &array![[2.0, 4.0]]);
    let loss2 = tape.param(array![[3.0]]).exp().detach().t().t();
    assert!(loss2.try_item().is_ok());
}

// ---- 4. No panic, abort or hang from shapes ------------------------------------------------

fn too_large<T: std::fmt::Debug>(r: tapegrad::Result<T>, shape: (usize, usize)) {
    assert_eq!(r.unwrap_err().kind(), &ErrorKind::TooLarge { shape });
}

#[test]
fn results_too_large_to_allocate_are_typed_errors() {
    let tape = Tape::<f64>::new();
    let wide = tape.param(Array2::zeros((0, 1 << 62)));
    too_large(wide.try_sum_axis(Axis(0)), (1, 1 << 62));
    too_large(wide.try_mean_axis(Axis(0)), (1, 1 << 62));
    let tape = Tape::<f32>::new();
    let (a, b) = (
        tape.param(Array2::zeros((1 << 31, 0))),
        tape.param(Array2::zeros((0, 1 << 31))),
    );
    too_large(a.try_matmul(b), (1 << 31, 1 << 31));
    // a broadcast view costs one element, its broadcast sum 2⁶⁴ bytes
    let one = Array2::<f32>::zeros((1, 1));
    let tall = tape.constant(one.broadcast((1 << 32, 1)).unwrap());
    let long = tape.constant(one.broadcast((1, 1 << 32)).unwrap());
    too_large(tall.try_add(long), (1 << 32, 1 << 32));
    let err = Linear::<f32>::try_new(usize::MAX, 2, Init::He, &mut StdRng::seed_from_u64(0));
    too_large(err, (usize::MAX, 2));
    let _ = Tape::<f32>::with_capacity(usize::MAX); // a hint: ignored, not a panic
}

#[test]
fn empty_matrices_with_huge_dimensions_cost_nothing() {
    let n = 1usize << 40;
    let tape = Tape::<f64>::new();
    let tall = tape.param(Array2::zeros((n, 0)));
    assert_eq!(tall.try_sum_axis(Axis(0)).unwrap().shape(), (1, 0));
    // 2⁴⁰ row sums of nothing: 8 TB of zeros, which this machine refuses
    match tall.try_sum_axis(Axis(1)) {
        Ok(sums) => assert_eq!(sums.shape(), (n, 1)),
        Err(e) => assert_eq!(e.kind(), &ErrorKind::OutOfMemory { shape: (n, 1) }),
    }
    let w = tape.param(Array2::zeros((0, 0)));
    let y = tall
        .try_linear(w, tape.param(Array2::zeros((1, 0))))
        .unwrap();
    assert_eq!(y.shape(), (n, 0));
    let ce = tall
        .try_softmax_cross_entropy(tape.constant(Array2::zeros((n, 0))))
        .unwrap();
    assert_eq!(ce.item(), 0.0);
    let mse = tall
        .try_mse_loss(tape.constant(Array2::zeros((n, 0))))
        .unwrap();
    assert!(
        mse.item().is_nan(),
        "the mean of nothing is NaN, as in NumPy"
    );
    let loss = tall.sigmoid().sum().add(y.sum()).add(ce);
    let grads = tape.backward(loss).unwrap();
    assert_eq!(grads.get(tall).unwrap().dim(), (n, 0));
    // sums along the long axis of a wide empty matrix
    let wide = tape.param(Array2::zeros((0, n)));
    let s = wide.try_sum_axis(Axis(1)).unwrap();
    assert_eq!(s.value(), Array2::<f64>::zeros((0, 1)));
}

// ---- 5. Numerics, each against the f64 closed form ----------------------------------------

#[test]
fn softmax_cross_entropy_of_large_equal_logits_is_ln_c() {
    for logit in [1e6f32, 1e7, -1e7] {
        let tape = Tape::<f32>::new();
        let z = tape.param(Array2::from_elem((2, 3), logit));
        let t = tape.constant(array![[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]);
        let loss = z.softmax_cross_entropy(t);
        assert!(
            (loss.item() as f64 - 3f64.ln()).abs() < 1e-6,
            "{logit}: {}",
            loss.item()
        );
        let grads = tape.backward(loss).unwrap();
        let dz = grads.get(z).unwrap();
        // (softmax − t) / N = (1/3 − t) / 2
        let want = array![
            [-1.0 / 3.0, 1.0 / 6.0, 1.0 / 6.0],
            [1.0 / 6.0, 1.0 / 6.0, -1.0 / 3.0]
        ];
        for (a, b) in dz.iter().zip(&want) {
            assert!((*a as f64 - b).abs() < 1e-6, "{logit}: {dz}");
        }
        for row in dz.rows() {
            assert!(row.sum().abs() < 1e-6, "{logit}: rows of dZ sum to zero");
        }
    }
}

#[test]
fn softmax_cross_entropy_with_infinite_and_extreme_logits_is_finite() {
    let rows = [
        [f32::NEG_INFINITY, 0.0, 1.0],
        [3e38, -3e38, 0.0],
        [-3e38, 3e38, 1.0],
    ];
    let targets = [[0.0f32, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]];
    for (z, t) in rows.iter().zip(&targets) {
        // the f64 closed form: −Σ t log softmax(z)
        let zf: Vec<f64> = z.iter().map(|&v| v as f64).collect();
        let m = zf.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = zf.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        let want: f64 = zf
            .iter()
            .zip(t)
            .filter(|(_, t)| **t != 0.0)
            .map(|(v, &t)| -(t as f64) * ((v - m) - lse))
            .sum();
        let tape = Tape::<f32>::new();
        let zt = tape.param(Array2::from_shape_vec((1, 3), z.to_vec()).unwrap());
        let tt = tape.constant(Array2::from_shape_vec((1, 3), t.to_vec()).unwrap());
        let loss = zt.softmax_cross_entropy(tt);
        assert!(
            (loss.item() as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
            "{z:?}: {} vs {want}",
            loss.item()
        );
        let grads = tape.backward(loss).unwrap();
        assert!(
            grads.get(zt).unwrap().iter().all(|v| v.is_finite()),
            "{z:?}"
        );
    }
}

#[test]
fn the_quotient_rule_neither_overflows_nor_underflows() {
    // dB of a / b is −a / b²; a / b² overflows or underflows in f32 where the answer does not
    for (a, b) in [
        (1e38f32, 1e20f32),
        (1e-30, 1e-25),
        (0.0, 1e-25),
        (3.0, -2.0),
    ] {
        let tape = Tape::<f32>::new();
        let (at, bt) = (tape.param(array![[a]]), tape.param(array![[b]]));
        let grads = tape.backward(at.div(bt)).unwrap();
        let (da, db) = (
            grads.get(at).unwrap()[[0, 0]],
            grads.get(bt).unwrap()[[0, 0]],
        );
        let (want_a, want_b) = (1.0 / b as f64, -(a as f64) / (b as f64 * b as f64));
        assert!(
            (da as f64 - want_a).abs() <= 1e-6 * want_a.abs(),
            "{a}/{b}: dA {da}"
        );
        assert!(
            (db as f64 - want_b).abs() <= 1e-6 * want_b.abs(),
            "{a}/{b}: dB {db} vs {want_b}"
        );
        assert_eq!(
            db.is_sign_negative(),
            want_b.is_sign_negative(),
            "{a}/{b}: dB {db}"
        );
    }
}

#[test]
fn powi_at_the_most_negative_exponent() {
    let n = i32::MIN;
    for x in [1.0f64, -1.0, 2.0, 0.5] {
        let tape = Tape::<f64>::new();
        let xt = tape.param(array![[x]]);
        let grads = tape.backward(xt.powi(n)).unwrap();
        let want = f64::from(n) * x.powf(f64::from(n) - 1.0);
        let got = grads.get(xt).unwrap()[[0, 0]];
        assert!(
            got == want || (got - want).abs() <= 1e-12 * want.abs(),
            "x = {x}: {got} vs {want}"
        );
    }
}

#[test]
fn log_and_sqrt_at_negative_zero_have_the_derivative_plus_infinity() {
    let tape = Tape::<f32>::new();
    let x = tape.param(array![[-0.0f32, 0.0]]);
    let grads = tape.backward(x.log().sum().add(x.sqrt().sum())).unwrap();
    assert_eq!(
        grads.get(x).unwrap(),
        &array![[f32::INFINITY, f32::INFINITY]]
    );
}

// ---- 6. Optimizers and checkpoints never panic and never corrupt ----------------------

#[test]
fn a_gradient_of_the_wrong_shape_is_an_error_not_a_panic() {
    let mut net = layer(array![[1.0], [2.0]], array![[0.0]]);
    let mut grads = {
        let tape = Tape::new();
        let y = net.forward(tape.constant(array![[1.0, 1.0]])).unwrap();
        tape.backward(y.sum()).unwrap()
    };
    *grads.wrt_mut(&net.weight).unwrap() = Array2::zeros((3, 3));
    let before = net.clone();
    for opt in [
        &mut Sgd::new(0.1) as &mut dyn Optimizer<f64>,
        &mut Sgd::new(0.1).momentum(0.9),
        &mut Adam::new(0.1),
    ] {
        let r = catch_unwind(AssertUnwindSafe(|| opt.step(&mut net, &grads)));
        let err = r.expect("no panic").unwrap_err();
        assert_eq!(
            err,
            OptimError::GradientShape {
                name: "weight".into(),
                expected: (2, 1),
                found: (3, 3)
            }
        );
        assert_eq!(net, before);
    }
}

fn checkpoint_model(seed: u64) -> Sequential<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    Sequential::new()
        .with(Linear::new(40, 30, Init::Glorot, &mut rng))
        .with(Linear::new(30, 2, Init::Glorot, &mut rng))
}

/// A save replaces the file by renaming a complete new one over it: a reader holding the
/// old file still reads the whole old checkpoint, and no save ever truncates it in place.
#[test]
fn saving_replaces_the_checkpoint_atomically() {
    use std::io::Read;
    let dir = std::env::temp_dir().join(format!("tapegrad-atomic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    let (old, new) = (checkpoint_model(1), checkpoint_model(2));
    io::save(&old, &path).unwrap();
    let old_bytes = std::fs::read(&path).unwrap();
    let mut held = std::fs::File::open(&path).unwrap();
    io::save(&new, &path).unwrap();
    let mut seen = Vec::new();
    held.read_to_end(&mut seen).unwrap();
    assert_eq!(seen, old_bytes, "the old file was rewritten in place");
    let mut loaded = checkpoint_model(3);
    io::load(&mut loaded, &path).unwrap();
    assert_eq!(io::to_bytes(&loaded).unwrap(), io::to_bytes(&new).unwrap());
    // a save that fails leaves the old file and no temporary file
    let bad = dir.join("no-such-dir").join("model.safetensors");
    assert!(io::save(&new, &bad).is_err());
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["model.safetensors"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A model whose `visit` and `visit_mut` list its parameters in different orders.
#[derive(Clone, PartialEq, Debug)]
struct Shuffled {
    a: Array2<f32>,
    b: Array2<f32>,
}

impl Parameters<f32> for Shuffled {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Array2<f32>)) {
        f("a", &self.a);
        f("b", &self.b);
    }
    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Array2<f32>)) {
        f("b", &mut self.b);
        f("a", &mut self.a);
    }
}

#[test]
fn loading_matches_tensors_by_name_whatever_the_visit_order() {
    let saved = Shuffled {
        a: array![[1.0, 2.0]],
        b: array![[3.0, 4.0]],
    };
    let bytes = io::to_bytes(&saved).unwrap();
    let mut loaded = Shuffled {
        a: Array2::zeros((1, 2)),
        b: Array2::zeros((1, 2)),
    };
    io::from_bytes(&mut loaded, &bytes).unwrap();
    assert_eq!(loaded, saved);
}

/// A header that declares more than the file holds is refused by `load` before the data
/// is read.
#[test]
fn files_that_declare_more_than_they_hold_are_refused() {
    let dir = std::env::temp_dir().join(format!("tapegrad-declared-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = io::to_bytes(&checkpoint_model(1)).unwrap();
    let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("header longer than the file", {
            let mut b = good.clone();
            b[..8].copy_from_slice(&(good.len() as u64).to_le_bytes());
            b
        }),
        ("header length near u64::MAX", {
            let mut b = good.clone();
            b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
            b
        }),
        ("data cut short", good[..good.len() - 100].to_vec()),
        ("junk after the data", {
            let mut b = good.clone();
            b.extend(std::iter::repeat_n(0u8, 1000));
            b
        }),
        ("a tensor declared larger than the data", {
            let header = String::from_utf8(good[8..8 + n].to_vec()).unwrap();
            let lied = header.replacen("[40,30]", "[40,99]", 1);
            let mut b = (lied.len() as u64).to_le_bytes().to_vec();
            b.extend(lied.as_bytes());
            b.extend(&good[8 + n..]);
            b
        }),
    ];
    for (what, bytes) in cases {
        let path = dir.join("m.safetensors");
        std::fs::write(&path, &bytes).unwrap();
        let mut m = checkpoint_model(5);
        let before = io::to_bytes(&m).unwrap();
        let err = io::load(&mut m, &path).expect_err(what);
        assert!(
            matches!(err, io::CheckpointError::Format(_)),
            "{what}: {err}"
        );
        assert_eq!(
            io::to_bytes(&m).unwrap(),
            before,
            "{what}: the model changed"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---- issue 19: panics through APIs documented not to panic ----

/// The panic `layout-rs` raises on some graphs is caught inside `to_svg` without reaching
/// the panic hook (nothing is printed), while every other panic still reaches the hook
/// installed before. (No other test of this file may call `to_svg`: the hook this test
/// installs must be the one `to_svg` wraps.)
#[test]
fn to_svg_catches_layout_panics_without_printing_them() {
    use std::cell::Cell;
    thread_local! {
        static SEEN: Cell<usize> = const { Cell::new(0) };
    }
    let test_thread = std::thread::current().id();
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() == test_thread {
            SEEN.with(|s| s.set(s.get() + 1));
        } else {
            default(info);
        }
    }));
    let tape = Tape::new();
    common::layout_rs_panic_graph(&tape);
    let svg = tape.to_svg();
    let seen_by_layout = SEEN.with(Cell::get);
    let other = catch_unwind(|| panic!("an ordinary panic"));
    let seen_after = SEEN.with(Cell::get);
    // the hook that prints, back for the other tests
    drop(std::panic::take_hook());
    assert!(svg.is_ok(), "{svg:?}");
    assert_eq!(seen_by_layout, 0, "the layout's panic reached the hook");
    assert!(other.is_err());
    assert_eq!(seen_after, 1, "an ordinary panic must still reach the hook");
}

/// Concatenations whose total length does not fit: a `TooLarge` error, not an overflow
/// (three inputs overflow `usize`; two exceed the `isize::MAX` an array axis may have).
#[test]
fn concat_of_lengths_that_overflow_is_too_large() {
    let n = isize::MAX as usize;
    let tape = Tape::<f64>::new();
    let tall = tape.param(Array2::zeros((n, 0)));
    let wide = tape.param(Array2::zeros((0, n)));
    for k in [2, 3] {
        let err = Tensor::try_concat_rows(&vec![tall; k]).unwrap_err();
        assert_eq!(err.op(), "concat_rows");
        assert!(matches!(err.kind(), ErrorKind::TooLarge { .. }), "{err}");
        let err = Tensor::try_concat_cols(&vec![wide; k]).unwrap_err();
        assert_eq!(err.op(), "concat_cols");
        assert!(matches!(err.kind(), ErrorKind::TooLarge { .. }), "{err}");
    }
    // one input of the largest length is fine
    assert_eq!(Tensor::try_concat_rows(&[tall]).unwrap().shape(), (n, 0));
}

// ---- issue 19 item 10: smaller numeric and argument defects ----

/// Adam with ε = 0 and a gradient that is zero: the moments are 0 and the update's limit
/// is 0, not 0/0 = NaN.
#[test]
fn adam_without_eps_leaves_a_parameter_with_zero_gradient_alone() {
    let mut net = layer(array![[1.0, -2.0]], array![[0.5, 0.0]]);
    let grads = {
        let tape = Tape::new();
        let w = tape.param(&net.weight);
        let b = tape.param(net.bias.as_ref().unwrap());
        // the loss does not depend on the bias's second element
        tape.backward(
            w.square()
                .sum()
                .add(b.mul(tape.constant(array![[1.0, 0.0]])).sum()),
        )
        .unwrap()
    };
    let mut opt = Adam::new(0.1).eps(0.0);
    for _ in 0..3 {
        opt.step(&mut net, &grads).unwrap();
    }
    let bias = net.bias.as_ref().unwrap();
    assert_eq!(bias[[0, 1]], 0.0, "{bias}");
    assert!(net.weight.iter().chain(bias).all(|v| v.is_finite()));
}

/// A negative or NaN max norm would reverse the gradients (the factor is negative) or
/// leave them unclipped: refused by `try_clip_grad_norm`, a documented panic in
/// `clip_grad_norm`; the gradients are unchanged.
#[test]
fn clip_grad_norm_refuses_a_negative_or_nan_max_norm() {
    use tapegrad::optim::try_clip_grad_norm;
    let net = layer(array![[3.0, 4.0]], array![[0.0, 0.0]]);
    let mut grads = {
        let tape = Tape::new();
        let w = tape.param(&net.weight);
        let b = tape.param(net.bias.as_ref().unwrap());
        tape.backward(w.square().sum().add(b.sum())).unwrap()
    };
    let before = grads.wrt(&net.weight).unwrap().clone();
    for max_norm in [-1.0, f64::NAN, f64::NEG_INFINITY] {
        let err = try_clip_grad_norm(&net, &mut grads, max_norm).unwrap_err();
        assert!(matches!(err, OptimError::InvalidArgument { .. }), "{err}");
        assert_eq!(grads.wrt(&net.weight).unwrap(), &before);
        let panicked = catch_unwind(AssertUnwindSafe(|| {
            clip_grad_norm(&net, &mut grads, max_norm);
        }));
        assert!(panicked.is_err(), "clip_grad_norm({max_norm}) returned");
        assert_eq!(grads.wrt(&net.weight).unwrap(), &before);
    }
    // zero and infinity are legal: all zeros, and no clipping
    let norm = try_clip_grad_norm(&net, &mut grads, f64::INFINITY).unwrap();
    assert_eq!(grads.wrt(&net.weight).unwrap(), &before);
    assert!(norm > 0.0);
    try_clip_grad_norm(&net, &mut grads, 0.0).unwrap();
    assert!(grads.wrt(&net.weight).unwrap().iter().all(|&v| v == 0.0));
}

/// bce_with_logits at infinite logits whose target makes the loss's limit finite (z = +∞
/// with t = 1, z = −∞ with t = 0): the loss is 0 and the gradient 0, not NaN; where the
/// limit is +∞ (z = +∞, t = 0) the loss is +∞.
#[test]
fn bce_with_logits_at_infinite_logits_takes_the_limit() {
    let tape = Tape::<f64>::new();
    let z = tape.param(array![[f64::INFINITY, f64::NEG_INFINITY]]);
    let loss = z.bce_with_logits(tape.constant(array![[1.0, 0.0]]));
    assert_eq!(loss.item(), 0.0);
    let grads = tape.backward(loss).unwrap();
    assert_eq!(grads.get(z).unwrap(), &array![[0.0, 0.0]]);

    let tape = Tape::<f64>::new();
    let z = tape.param(array![[f64::INFINITY, 0.0]]);
    let loss = z.bce_with_logits(tape.constant(array![[0.0, 1.0]]));
    assert_eq!(loss.item(), f64::INFINITY);
}

/// silu at ±∞: silu(−∞) = 0 (was −∞/∞ = NaN), silu(+∞) = +∞; its derivative is 0 at −∞
/// and 1 at +∞ (both were 0·∞ = NaN).
#[test]
fn silu_at_infinity_takes_the_limit() {
    let tape = Tape::<f64>::new();
    let x = tape.param(array![[f64::NEG_INFINITY, f64::INFINITY, -800.0, 800.0]]);
    let y = x.silu();
    assert_eq!(y.value(), array![[0.0, f64::INFINITY, -0.0, 800.0]]);
    let grads = tape.backward(y.sum()).unwrap();
    assert_eq!(grads.get(x).unwrap(), &array![[0.0, 1.0, 0.0, 1.0]]);
}

/// gelu_tanh's derivative at ±∞ and where x³ overflows is its limit, 1 at +∞ and 0 at −∞,
/// by backward and by Tape::grad (the formula's second term was ∞ · 0 = NaN there);
/// elsewhere it matches central differences, and the two forms agree.
#[test]
fn gelu_tanh_derivative_at_infinity_takes_the_limit() {
    let tape = Tape::<f64>::new();
    let x = tape.param(array![[f64::NEG_INFINITY, f64::INFINITY, -1e200, 1e200]]);
    // the tensor form (Tape::grad) too, where x u′ overflowed against 1 − t² = 0
    let recorded = tape.grad(x.gelu_tanh().sum(), &[x]).unwrap()[0];
    assert_eq!(recorded.value(), array![[0.0, 1.0, 0.0, 1.0]]);
    let grads = tape.backward(x.gelu_tanh().sum()).unwrap();
    assert_eq!(grads.get(x).unwrap(), &array![[0.0, 1.0, 0.0, 1.0]]);
    for &v in &[-6.0, -2.5, -0.3, 0.0, 0.7, 3.0, 6.0] {
        let tape = Tape::<f64>::new();
        let x = tape.param(array![[v]]);
        let recorded = tape.grad(x.gelu_tanh().sum(), &[x]).unwrap()[0].item();
        let g = tape.backward(x.gelu_tanh().sum()).unwrap().get(x).unwrap()[[0, 0]];
        assert!(
            (recorded - g).abs() <= 1e-14,
            "at {v}: Tape::grad {recorded}, backward {g}"
        );
        let f = |x: f64| {
            let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            0.5 * x * (1.0 + u.tanh())
        };
        let h = 1e-5;
        let fd = (f(v + h) - f(v - h)) / (2.0 * h);
        assert!((g - fd).abs() <= 1e-8, "at {v}: {g} vs {fd}");
    }
}

/// gelu, gelu_tanh and silu at ±∞ take their limits on every path of the elementwise kernels, the
/// scalar std path (`TAPEGRAD_KERNELS=std`) included: gelu(−∞) = −0, gelu′(±∞) = 1, 0,
/// silu(−∞) = 0 (the std path's formulas gave ∞ · 0 and −∞/∞ = NaN).
#[test]
fn gelu_and_silu_at_infinity_take_the_limit_on_every_kernel_path() {
    use tapegrad::bench_kernels::{Path, path, set_path};
    let before = path();
    for p in [Path::Avx2, Path::Baseline, Path::Std] {
        set_path(p);
        let tape = Tape::<f64>::new();
        let x = tape.param(array![[f64::NEG_INFINITY, f64::INFINITY]]);
        let (gelu, silu) = (x.gelu(), x.silu());
        assert_eq!(gelu.value(), array![[0.0, f64::INFINITY]], "{p:?}");
        assert_eq!(x.gelu_tanh().value(), array![[0.0, f64::INFINITY]], "{p:?}");
        assert_eq!(silu.value(), array![[0.0, f64::INFINITY]], "{p:?}");
        let g = tape.backward(gelu.sum()).unwrap();
        assert_eq!(g.get(x).unwrap(), &array![[0.0, 1.0]], "{p:?}");
    }
    set_path(before);
}
