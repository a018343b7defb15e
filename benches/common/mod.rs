//! The benchmark workloads (the README's "Performance"), shared by the benches and the
//! allocation tests (`#[path]`-included by `tests/alloc.rs`).
//!
//! A train step is: forward, loss, backward giving the gradient of every weight and bias,
//! and the SGD update `W -= lr·dW` with `lr = 0.1`. Every layer is `sigmoid(X·W + b)`;
//! the loss is the mean over all elements of `(out − target)²`. Weights are drawn from
//! N(0, 0.1²) with a fixed seed, inputs from N(0, 1), targets from U[0, 1]. All f32.
//!
//! Each step exists three times: through the tape ([`TapeTrainer`]), as the hand-written
//! ndarray backprop of the textbook formulas ([`HandTrainer`]), the baseline, and as fused
//! plain loops over slices ([`FloorTrainer`], `floor.rs`), the floor for tiny shapes.

#![allow(dead_code)]

mod floor;

#[allow(unused_imports)] // (not every bench uses it)
pub use floor::FloorTrainer;

use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, Zip};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal, StandardNormal, Uniform};
use tapegrad::{BackwardOptions, Gradients, Tape, Tensor};

pub const LR: f32 = 0.1;

/// Seconds per call of `f`, over `n` calls back to back.
pub fn seconds_per_call(n: usize, f: &mut dyn FnMut()) -> f64 {
    let t = std::time::Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() / n as f64
}

/// A workload: layer widths (input first) and batch size.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    pub name: &'static str,
    pub sizes: &'static [usize],
    pub batch: usize,
}

pub const W0: Workload = Workload {
    name: "W0-seed-4-2-3-b150",
    sizes: &[4, 2, 3],
    batch: 150,
};
pub const W1: Workload = Workload {
    name: "W1-mnist-784-256-256-10-b128",
    sizes: &[784, 256, 256, 10],
    batch: 128,
};
pub const W2: Workload = Workload {
    name: "W2-wide-1024-2048-2048-1024-b256",
    sizes: &[1024, 2048, 2048, 1024],
    batch: 256,
};

/// A multi-layer perceptron's parameters: plain arrays. Biases are 1 × n rows.
#[derive(Clone)]
pub struct Mlp {
    pub ws: Vec<Array2<f32>>,
    pub bs: Vec<Array2<f32>>,
}

impl Mlp {
    /// The loss of the layers `sigmoid(h·W + b)` (the fused `linear`) on the rows `x` with
    /// targets `y`, recorded on `tape`.
    pub fn linear_loss<'t>(
        &'t self,
        tape: &'t Tape<'t, f32>,
        x: ArrayView2<'t, f32>,
        y: ArrayView2<'t, f32>,
    ) -> Tensor<'t, f32> {
        let mut h = tape.constant(x);
        for (w, b) in self.ws.iter().zip(&self.bs) {
            h = h.linear(tape.param(w), tape.param(b)).sigmoid();
        }
        h.mse_loss(tape.constant(y))
    }

    /// The SGD update `p -= LR·dp` of every weight and bias, from `grads`.
    pub fn sgd(&mut self, grads: &Gradients<f32>) {
        for p in self.ws.iter_mut().chain(self.bs.iter_mut()) {
            let g = grads.wrt(&*p).expect("every parameter is on the tape");
            p.scaled_add(-LR, g);
        }
    }
}

/// The network, inputs and targets of a workload, from a fixed seed.
pub fn setup(w: Workload) -> (Mlp, Array2<f32>, Array2<f32>) {
    let mut rng = StdRng::seed_from_u64(2026);
    let weight = Normal::new(0.0f32, 0.1).unwrap();
    let layers = w.sizes.windows(2);
    let ws = layers
        .clone()
        .map(|p| Array2::from_shape_simple_fn((p[0], p[1]), || weight.sample(&mut rng)))
        .collect();
    let bs = layers
        .map(|p| Array2::from_shape_simple_fn((1, p[1]), || weight.sample(&mut rng)))
        .collect();
    let x = Array2::from_shape_simple_fn((w.batch, w.sizes[0]), || StandardNormal.sample(&mut rng));
    let uniform = Uniform::new(0.0f32, 1.0).unwrap();
    let y = Array2::from_shape_simple_fn((w.batch, *w.sizes.last().unwrap()), || {
        uniform.sample(&mut rng)
    });
    (Mlp { ws, bs }, x, y)
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// How a tape step is written: the bias added by a broadcasting `add` after `matmul`
/// (`Plain`) or by the fused `linear` op; gradients fresh every step or written into last
/// step's buffers (`BackwardOptions::reuse`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// `sigmoid(h.matmul(w) + b)`, a new `Gradients` every step: the obvious loop.
    Plain,
    /// `sigmoid(h.linear(w, b))`, a new `Gradients` every step.
    Linear,
    /// `linear`, with last step's gradients handed to backward (`reuse`).
    Reuse,
    /// As `Reuse`, every layer a rematerialised block (`Tape::remat`): the tape keeps
    /// only the layer boundaries, and backward runs each layer's forward again.
    Remat,
}

/// One layer, `sigmoid(X·W + b)`, as a block for `Tape::remat`.
pub fn layer<'s>(xs: &[tapegrad::Tensor<'s, f32>]) -> tapegrad::Result<tapegrad::Tensor<'s, f32>> {
    Ok(xs[0].try_linear(xs[1], xs[2])?.sigmoid())
}

/// Train steps through the tape, written as `path` says. [`TapeTrainer::new`] is the
/// fastest form, `Path::Reuse`.
pub struct TapeTrainer {
    pub net: Mlp,
    path: Path,
    grads: Option<Gradients<f32>>,
}

impl TapeTrainer {
    pub fn new(net: Mlp) -> Self {
        Self::with(net, Path::Reuse)
    }

    pub fn with(net: Mlp, path: Path) -> Self {
        TapeTrainer {
            net,
            path,
            grads: None,
        }
    }

    /// One train step. Returns the loss.
    pub fn step(&mut self, x: &Array2<f32>, y: &Array2<f32>) -> f32 {
        let net = &mut self.net;
        let previous = self.grads.take();
        let (loss, grads) = {
            let tape = Tape::new();
            let mut h = tape.constant(x);
            for (w, b) in net.ws.iter().zip(&net.bs) {
                h = match self.path {
                    Path::Plain => (h.matmul(tape.param(w)) + tape.param(b)).sigmoid(),
                    Path::Linear | Path::Reuse => h.linear(tape.param(w), tape.param(b)).sigmoid(),
                    Path::Remat => tape
                        .remat(&[h, tape.param(w), tape.param(b)], |xs| layer(&xs))
                        .expect("shapes fit"),
                };
            }
            let loss = h.mse_loss(tape.constant(y));
            let opts = BackwardOptions::new().reuse(previous);
            (
                loss.item(),
                tape.backward_with(loss, opts).expect("scalar loss"),
            )
        };
        net.sgd(&grads);
        if matches!(self.path, Path::Reuse | Path::Remat) {
            self.grads = Some(grads);
        }
        loss
    }
}

/// Train steps by hand, with the textbook formulas:
/// `delta_L = 2(out − y)/n ∘ out ∘ (1 − out)`, `dW_l = h_{l−1}ᵀ·delta_l`,
/// `db_l = colsum(delta_l)`, `delta_{l−1} = (delta_l·W_lᵀ) ∘ h_{l−1} ∘ (1 − h_{l−1})`.
/// The strongest plain ndarray code for it: nothing is allocated in a steady step. Every
/// activation, delta and gradient has a buffer kept from one step to the next; products
/// are GEMMs with beta = 0 into those buffers, transposes are views, bias and sigmoid are
/// one fused pass, each delta one fused pass, and parameters are updated in place.
pub struct HandTrainer {
    pub net: Mlp,
    hs: Vec<Array2<f32>>,
    deltas: Vec<Array2<f32>>,
    dws: Vec<Array2<f32>>,
    dbs: Vec<Array2<f32>>,
}

impl HandTrainer {
    pub fn new(net: Mlp) -> Self {
        let dws = net.ws.iter().map(|w| Array2::zeros(w.dim())).collect();
        let dbs = net.bs.iter().map(|b| Array2::zeros(b.dim())).collect();
        HandTrainer {
            net,
            hs: Vec::new(),
            deltas: Vec::new(),
            dws,
            dbs,
        }
    }

    /// One train step. Returns the loss.
    pub fn step(&mut self, x: &Array2<f32>, y: &Array2<f32>) -> f32 {
        let net = &mut self.net;
        let layers = net.ws.len();
        if self.hs.first().is_none_or(|h| h.nrows() != x.nrows()) {
            let shapes = net.ws.iter().map(|w| (x.nrows(), w.ncols()));
            self.hs = shapes.clone().map(Array2::zeros).collect();
            self.deltas = shapes.map(Array2::zeros).collect();
        }
        let hs = &mut self.hs;
        for l in 0..layers {
            let (done, rest) = hs.split_at_mut(l);
            let input = if l == 0 { x } else { &done[l - 1] };
            let z = &mut rest[0];
            general_mat_mul(1.0, input, &net.ws[l], 0.0, z);
            Zip::from(z)
                .and_broadcast(&net.bs[l])
                .for_each(|z, &b| *z = sigmoid(*z + b));
        }
        let out = &hs[layers - 1];
        let n = out.len() as f32;
        let mut sq = 0.0;
        Zip::from(&mut self.deltas[layers - 1])
            .and(out)
            .and(y)
            .for_each(|delta, &o, &t| {
                let d = o - t;
                sq += d * d;
                *delta = 2.0 * d / n * o * (1.0 - o);
            });
        for l in (0..layers).rev() {
            let input = if l == 0 { x } else { &hs[l - 1] };
            let (below, here) = self.deltas.split_at_mut(l);
            let delta = &here[0];
            general_mat_mul(1.0, &input.t(), delta, 0.0, &mut self.dws[l]);
            let db = self.dbs[l].as_slice_mut().expect("a standard row");
            db.fill(0.0);
            let cols = db.len();
            for row in delta
                .as_slice()
                .expect("a standard buffer")
                .chunks_exact(cols)
            {
                db.iter_mut().zip(row).for_each(|(d, &r)| *d += r);
            }
            if l > 0 {
                let dh = &mut below[l - 1];
                general_mat_mul(1.0, delta, &net.ws[l].t(), 0.0, dh);
                Zip::from(dh)
                    .and(&hs[l - 1])
                    .for_each(|d, &h| *d *= h * (1.0 - h));
            }
            net.ws[l].scaled_add(-LR, &self.dws[l]);
            net.bs[l].scaled_add(-LR, &self.dbs[l]);
        }
        sq / n
    }
}

/// Train steps through `nn` and `optim`: the network as a `Sequential` of `Linear` and
/// `Sigmoid` layers, updated by `optim::Sgd` (which finds gradients by parameter), with
/// gradient buffers reused from one step to the next like [`TapeTrainer`].
pub struct NnTrainer {
    pub model: tapegrad::nn::Sequential<f32>,
    opt: tapegrad::optim::Sgd<f32>,
    grads: Option<Gradients<f32>>,
}

impl NnTrainer {
    pub fn new(net: Mlp) -> Self {
        let mut model = tapegrad::nn::Sequential::new();
        for (w, b) in net.ws.into_iter().zip(net.bs) {
            model.push(tapegrad::nn::Linear {
                weight: w,
                bias: Some(b),
            });
            model.push(tapegrad::nn::Sigmoid);
        }
        NnTrainer {
            model,
            opt: tapegrad::optim::Sgd::new(LR),
            grads: None,
        }
    }

    /// One train step. Returns the loss.
    pub fn step(&mut self, x: &Array2<f32>, y: &Array2<f32>) -> f32 {
        use tapegrad::nn::Module;
        use tapegrad::optim::Optimizer;
        let previous = self.grads.take();
        let (loss, grads) = {
            let tape = Tape::new();
            let out = self.model.forward(tape.constant(x)).expect("shapes fit");
            let loss = out.mse_loss(tape.constant(y));
            let opts = BackwardOptions::new().reuse(previous);
            (
                loss.item(),
                tape.backward_with(loss, opts).expect("scalar loss"),
            )
        };
        self.opt
            .step(&mut self.model, &grads)
            .expect("every parameter has a gradient");
        self.grads = Some(grads);
        loss
    }
}
