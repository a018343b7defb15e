//! The `custom` and `remat` families: graphs of custom ops and rematerialised blocks whose
//! rules do every legal and illegal thing a user's code can do.
//!
//! A custom op here is `y = Σₖ cₖ·xₖ + q·xₐ∘x_b` (inputs broadcast to the output), with a
//! VJP that hands each input its gradient in parts: several contributions, each in the
//! input's shape or in the output's (the input broadcasts to it), or none where the input
//! does not matter; inputs may hold NaN. Illegal VJPs add a contribution of another shape,
//! or to an input that does not exist. A rule may panic, in its array form, its tensor
//! form or both; a remat block may panic when run again in backward (or in its forward).
//! The op has a tensor form (differentiable again) or not (first order only).
//!
//! Each program runs two passes, each a backward (retaining the graph or not) or a
//! `Tape::grad`, and checks them against a reference (the same program without its fault,
//! by backward on a fresh tape):
//!
//! - legal: every pass is `Ok` with the reference's gradients, `Tape::grad` included (it
//!   gathers a first-order VJP's contributions itself); a released tape refuses a second
//!   pass; in f64 without NaN, the gradient matches central differences, and so does the
//!   second order (`Tape::grad` twice, `functional::hvp`, `functional::jvp`) where every
//!   custom op has a tensor form (else second order is a `NotDifferentiable` error);
//!   a remat block's gradients are those of the same ops written out;
//! - illegal: every pass is an error, never `Ok`, never a panic;
//! - panicking: the pass that runs the rule panics with the injected payload; after a
//!   panicking backward that did not retain the graph, every later pass is an error; after
//!   one that did (or a panicking `Tape::grad`), a later pass errs, panics again, or is
//!   right.

use std::cell::Cell;

use ndarray::{Array2, ArrayView2, Axis, Zip};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tapegrad::custom::{self, CustomOp, Grads, Saved, TensorGrads};
use tapegrad::{BackwardOptions, ErrorKind, Float, Tape, Tensor, functional};

use crate::oracle::{agree, central, close_within, dot, randn};
use crate::{Family, catch, inject, injected, message, trace};

pub(crate) const CUSTOM: Family = Family {
    name: "custom",
    default: 300,
    run: run_custom,
    describe: describe_custom,
};

pub(crate) const REMAT: Family = Family {
    name: "remat",
    default: 150,
    run: run_remat,
    describe: describe_remat,
};

fn run_custom(seed: u64) -> bool {
    run(&generate(seed, Kind::Custom))
}
fn describe_custom(seed: u64) -> String {
    format!("{:?}", generate(seed, Kind::Custom))
}
fn run_remat(seed: u64) -> bool {
    run(&generate(seed, Kind::Remat))
}
fn describe_remat(seed: u64) -> String {
    format!("{:?}", generate(seed, Kind::Remat))
}

/// Which form of a rule panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Form {
    Array,
    Tensor,
    Both,
}

/// What a custom op's VJP gives input `k`.
#[derive(Clone, Debug)]
pub(crate) enum Vjp {
    /// Legal: the gradient in parts, each a fraction of it, in the output's shape (`true`)
    /// or summed down to the input's (`false`).
    Parts(Vec<(f64, bool)>),
    /// Illegal: one contribution of this shape, neither the input's nor the output's.
    Shape((usize, usize)),
    /// Illegal: a contribution to input `inputs + k`.
    Index(usize),
}

/// A custom op: `y = Σₖ coef[k]·xₖ + q·xₐ∘x_b`, and how its VJP behaves.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    pub(crate) coef: Vec<f64>,
    pub(crate) product: Option<(usize, usize, f64)>,
    pub(crate) vjps: Vec<Vjp>,
    pub(crate) tensor_form: bool,
    pub(crate) panic: Option<Form>,
}

impl Spec {
    /// The same op without its faults: illegal contributions become legal, no panic.
    fn clean(&self) -> Spec {
        let vjps = self
            .vjps
            .iter()
            .map(|v| match v {
                Vjp::Parts(p) => Vjp::Parts(p.clone()),
                _ => Vjp::Parts(vec![(1.0, false)]),
            })
            .collect();
        Spec {
            vjps,
            panic: None,
            ..self.clone()
        }
    }

    /// Whether the pass `pass` runs a panicking form of this op.
    fn panics_in(&self, pass: Pass) -> bool {
        let array = matches!(self.panic, Some(Form::Array | Form::Both));
        let tensor = matches!(self.panic, Some(Form::Tensor | Form::Both));
        match pass {
            Pass::Backward => array,
            // without a tensor form, `Tape::grad` runs the array form
            Pass::Grad => (self.tensor_form && tensor) || (!self.tensor_form && array),
        }
    }
}

/// The shape inputs of these shapes broadcast to, if they do.
fn broadcast_all(shapes: impl IntoIterator<Item = (usize, usize)>) -> Option<(usize, usize)> {
    let axis = |a: usize, b: usize| match (a, b) {
        _ if a == b => Some(a),
        (1, b) => Some(b),
        (a, 1) => Some(a),
        _ => None,
    };
    let mut out = (1, 1);
    for s in shapes {
        out = (axis(out.0, s.0)?, axis(out.1, s.1)?);
    }
    Some(out)
}

/// `d` summed down to `shape` (over the axes where `shape` is 1 and `d` is not).
fn sum_to<F: Float>(mut d: Array2<F>, shape: (usize, usize)) -> Array2<F> {
    if d.is_empty() {
        // (ndarray walks the lanes of an empty array: 2⁶² of them in a huge one)
        return Array2::zeros(shape);
    }
    if shape.0 == 1 && d.nrows() != 1 {
        d = d.sum_axis(Axis(0)).insert_axis(Axis(0));
    }
    if shape.1 == 1 && d.ncols() != 1 {
        d = d.sum_axis(Axis(1)).insert_axis(Axis(1));
    }
    d
}

/// The same, recorded.
fn sum_to_tensor<'t, F: Float>(
    mut d: Tensor<'t, F>,
    shape: (usize, usize),
) -> tapegrad::Result<Tensor<'t, F>> {
    if shape.0 == 1 && d.rows() != 1 {
        d = d.try_sum_axis(Axis(0))?;
    }
    if shape.1 == 1 && d.cols() != 1 {
        d = d.try_sum_axis(Axis(1))?;
    }
    Ok(d)
}

/// The custom op of a [`Spec`].
pub(crate) struct Fuzzed(pub(crate) Spec);

impl Fuzzed {
    /// `∂L/∂xₖ` in the output's shape, or `None` where `xₖ` does not matter.
    fn full<F: Float>(
        &self,
        k: usize,
        g: ArrayView2<'_, F>,
        x: &[ArrayView2<'_, F>],
    ) -> Option<Array2<F>> {
        let s = &self.0;
        let c = s.coef[k];
        if g.is_empty() {
            let depends = c != 0.0 || s.product.is_some_and(|(a, b, _)| a == k || b == k);
            return depends.then(|| Array2::zeros(g.dim()));
        }
        let mut d = (c != 0.0).then(|| g.mapv(|v| F::cast(c) * v));
        if let Some((a, b, q)) = s.product {
            for (this, other) in [(a, b), (b, a)] {
                if this == k {
                    let mut t = Array2::zeros(g.dim());
                    Zip::from(&mut t)
                        .and(&g)
                        .and_broadcast(&x[other])
                        .for_each(|t, &g, &v| *t = F::cast(q) * g * v);
                    d = Some(match d {
                        Some(d) => d + &t,
                        None => t,
                    });
                }
            }
        }
        d
    }

    /// The same, recorded.
    fn full_tensor<'t, F: Float>(
        &self,
        k: usize,
        g: Tensor<'t, F>,
        grads: &TensorGrads<'_, '_, 't, F>,
    ) -> tapegrad::Result<Option<Tensor<'t, F>>> {
        let s = &self.0;
        let c = s.coef[k];
        let mut d = (c != 0.0).then(|| g.mul_scalar(F::cast(c)));
        if let Some((a, b, q)) = s.product {
            for (this, other) in [(a, b), (b, a)] {
                if this == k {
                    let t = g.try_mul(grads.input(other))?.mul_scalar(F::cast(q));
                    d = Some(match d {
                        Some(d) => d.try_add(t)?,
                        None => t,
                    });
                }
            }
        }
        Ok(d)
    }

    fn tensor_vjp<'t, F: Float>(
        &self,
        g: Tensor<'t, F>,
        grads: &mut TensorGrads<'_, '_, 't, F>,
    ) -> tapegrad::Result<()> {
        let n = self.0.coef.len();
        for k in 0..n {
            let shape = grads.input(k).shape();
            match &self.0.vjps[k] {
                Vjp::Parts(parts) => {
                    if let Some(d) = self.full_tensor(k, g, grads)? {
                        for &(frac, whole) in parts {
                            let part = d.mul_scalar(F::cast(frac));
                            let part = if whole {
                                part
                            } else {
                                sum_to_tensor(part, shape)?
                            };
                            grads.add(k, part)?;
                        }
                    }
                }
                Vjp::Shape(bad) => {
                    let t = grads.constant(Array2::from_elem(*bad, F::one()));
                    grads.add(k, t)?;
                }
                Vjp::Index(extra) => {
                    let d = match self.full_tensor(k, g, grads)? {
                        Some(d) => sum_to_tensor(d, shape)?,
                        None => grads.constant(Array2::ones(shape)),
                    };
                    grads.add(n + extra, d)?;
                }
            }
        }
        Ok(())
    }
}

impl<F: Float> CustomOp<F> for Fuzzed {
    fn name(&self) -> &'static str {
        "fuzzed"
    }

    fn output_shape(
        &self,
        inputs: &[(usize, usize)],
    ) -> std::result::Result<(usize, usize), &'static str> {
        if inputs.len() != self.0.coef.len() {
            return Err("one input per coefficient");
        }
        broadcast_all(inputs.iter().copied()).ok_or("the inputs must broadcast together")
    }

    fn forward(&self, x: &[ArrayView2<'_, F>]) -> Array2<F> {
        let out = broadcast_all(x.iter().map(|v| v.dim())).expect("checked by output_shape");
        let mut y = Array2::zeros(out);
        if y.is_empty() {
            return y;
        }
        for (k, &c) in self.0.coef.iter().enumerate() {
            if c != 0.0 {
                Zip::from(&mut y)
                    .and_broadcast(&x[k])
                    .for_each(|y, &v| *y += F::cast(c) * v);
            }
        }
        if let Some((a, b, q)) = self.0.product {
            Zip::from(&mut y)
                .and_broadcast(&x[a])
                .and_broadcast(&x[b])
                .for_each(|y, &u, &v| *y += F::cast(q) * u * v);
        }
        y
    }

    fn vjp(&self, g: ArrayView2<'_, F>, saved: &Saved<'_, F>, grads: &mut Grads<'_, F>) {
        if matches!(self.0.panic, Some(Form::Array | Form::Both)) {
            inject();
        }
        let n = self.0.coef.len();
        let x: Vec<ArrayView2<'_, F>> = (0..n)
            .map(|k| saved.input(k).expect("the VJP reads every input"))
            .collect();
        for k in 0..n {
            let shape = x[k].dim();
            match &self.0.vjps[k] {
                Vjp::Parts(parts) => {
                    if let Some(d) = self.full(k, g, &x) {
                        for &(frac, whole) in parts {
                            let part = d.mapv(|v| F::cast(frac) * v);
                            grads.add(k, if whole { part } else { sum_to(part, shape) });
                        }
                    }
                }
                Vjp::Shape(bad) => grads.add(k, Array2::from_elem(*bad, F::one())),
                Vjp::Index(extra) => {
                    let d = self
                        .full(k, g, &x)
                        .map_or_else(|| Array2::ones(shape), |d| sum_to(d, shape));
                    grads.add(n + extra, d);
                }
            }
        }
    }

    fn vjp_tensor<'t>(
        &self,
        g: Tensor<'t, F>,
        grads: &mut TensorGrads<'_, '_, 't, F>,
    ) -> Option<tapegrad::Result<()>> {
        if !self.0.tensor_form {
            return None;
        }
        if matches!(self.0.panic, Some(Form::Tensor | Form::Both)) {
            inject();
        }
        Some(self.tensor_vjp(g, grads))
    }
}

/// The legal custom op of the `programs` family on two operands (broadcasting together):
/// `x₀ − ½x₁ + ¾x₀∘x₁`, its VJP in two contributions per input, one in the input's
/// shape and one in the output's; with a tensor form or not.
pub(crate) fn program_op<'t, F: Float>(
    x: &[Tensor<'t, F>],
    tensor_form: bool,
) -> tapegrad::Result<Tensor<'t, F>> {
    let spec = Spec {
        coef: vec![1.0, -0.5],
        product: Some((0, 1, 0.75)),
        vjps: vec![
            Vjp::Parts(vec![(0.5, false), (0.5, true)]),
            Vjp::Parts(vec![(0.25, true), (0.75, false)]),
        ],
        tensor_form,
        panic: None,
    };
    custom::try_apply(Fuzzed(spec), &[x[0], x[1]])
}

/// A remat block of two inputs (`Wide`: of the two given eight times each).
#[derive(Clone, Copy, Debug)]
enum Block {
    /// `tanh(x₀∘x₁)`
    TanhMul,
    /// `x₀∘σ(x₁) + x₁`
    MulSigmoid,
    /// `remat(sin(x₀∘x₁))∘x₀`: a block inside a block
    Nested,
    /// `tanh(custom(x₀, x₁))`: a custom op inside a block
    HoldsCustom,
    /// `Σₖ tanh(cₖ·xₖ)` over sixteen inputs, `x₀` and `x₁` in turn: more inputs than a
    /// rule saves one by one, each given several times
    Wide,
}

impl Block {
    /// The tensors the block takes, given its two arguments.
    fn inputs<'t, F: Float>(self, args: [Tensor<'t, F>; 2]) -> Vec<Tensor<'t, F>> {
        match self {
            Block::Wide => (0..16).map(|k| args[k % 2]).collect(),
            _ => args.to_vec(),
        }
    }
}

fn block<'s, F: Float>(
    kind: Block,
    spec: &Spec,
    x: &[Tensor<'s, F>],
) -> tapegrad::Result<Tensor<'s, F>> {
    match kind {
        Block::TanhMul => Ok(x[0].try_mul(x[1])?.tanh()),
        Block::MulSigmoid => x[0].try_mul(x[1].sigmoid())?.try_add(x[1]),
        Block::Nested => {
            let inner = x[0]
                .tape()
                .remat(&[x[0], x[1]], |y| Ok(y[0].try_mul(y[1])?.sin()))?;
            inner.try_mul(x[0])
        }
        Block::HoldsCustom => Ok(custom::try_apply(Fuzzed(spec.clone()), &[x[0], x[1]])?.tanh()),
        Block::Wide => {
            let mut sum = x[0].mul_scalar(F::cast(0.125)).tanh();
            for (k, xk) in x.iter().enumerate().skip(1) {
                sum = sum.try_add(xk.mul_scalar(F::cast((k + 1) as f64 / 8.0)).tanh())?;
            }
            Ok(sum)
        }
    }
}

#[derive(Clone, Debug)]
enum Node {
    /// `tanh` of a register: what the rules see is an intermediate
    Tanh(usize),
    Custom(Spec, Vec<usize>),
    Remat {
        block: Block,
        args: [usize; 2],
        /// The block's custom op ([`Block::HoldsCustom`]).
        spec: Spec,
        /// The call of the block that panics (1: the forward; 2: the first pass; ...).
        panic_on: Option<usize>,
        /// `spec` without its fault: what the block of the clean program holds (kept here,
        /// beside the counter of calls, because a block borrows what it reads for as long
        /// as the tape lives).
        clean: Spec,
        /// The block's calls so far, in the program being built.
        calls: Cell<usize>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    Backward,
    Grad,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Nothing,
    Illegal,
    Panic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Custom,
    Remat,
}

#[derive(Clone, Debug)]
struct Program {
    seed: u64,
    f32: bool,
    arrays: Vec<Array2<f64>>,
    nodes: Vec<Node>,
    /// One constant per custom or remat node: the loss is `Σ sum(Cᵢ∘yᵢ) + ½ sum(y²)` of
    /// the last.
    weights: Vec<Array2<f64>>,
    retain: bool,
    passes: [Pass; 2],
    fault: Fault,
}

const PARTS: [&[(f64, bool)]; 6] = [
    &[(1.0, false)],
    &[(1.0, true)],
    &[(0.5, false), (0.5, true)],
    &[(0.5, true), (0.5, false)],
    &[(0.25, false), (0.25, false), (0.5, true)],
    &[(0.75, true), (0.25, true)],
];

fn legal_spec(rng: &mut StdRng, n: usize) -> Spec {
    let coefs = [1.0, -0.5, 2.0, 0.0];
    let coef: Vec<f64> = (0..n)
        .map(|_| coefs[rng.random_range(0..coefs.len())])
        .collect();
    let product = rng.random_bool(0.6).then(|| {
        (
            rng.random_range(0..n),
            rng.random_range(0..n),
            [0.75, -1.0][rng.random_range(0..2)],
        )
    });
    let vjps = (0..n)
        .map(|_| Vjp::Parts(PARTS[rng.random_range(0..PARTS.len())].to_vec()))
        .collect();
    Spec {
        coef,
        product,
        vjps,
        tensor_form: rng.random_bool(0.5),
        panic: None,
    }
}

fn generate(seed: u64, kind: Kind) -> Program {
    let mut rng = StdRng::seed_from_u64(seed);
    let dims = [1, 2, 3];
    let out = (dims[rng.random_range(0..3)], dims[rng.random_range(0..3)]);
    let shapes = [out, (1, out.1), (out.0, 1), (1, 1)];
    let arrays: Vec<Array2<f64>> = (0..rng.random_range(1..=3))
        .map(|_| {
            let mut a = randn(shapes[rng.random_range(0..shapes.len())], &mut rng);
            if rng.random_bool(0.06) {
                let (r, c) = a.dim();
                a[[rng.random_range(0..r), rng.random_range(0..c)]] = f64::NAN;
            }
            a
        })
        .collect();
    let mut regs: Vec<(usize, usize)> = arrays.iter().map(|a| a.dim()).collect();
    let mut nodes = Vec::new();
    let mut weights = Vec::new();
    let count = rng.random_range(1..=3);
    for i in 0..count {
        let k = rng.random_range(0..100);
        let last = i + 1 == count && !nodes.iter().any(|n| !matches!(n, Node::Tanh(_)));
        let n = regs.len();
        let node = if k < 15 && !last {
            Node::Tanh(rng.random_range(0..n))
        } else if (kind == Kind::Custom) == (k < 80) {
            let arity = rng.random_range(1..=3);
            let args: Vec<usize> = (0..arity).map(|_| rng.random_range(0..n)).collect();
            Node::Custom(legal_spec(&mut rng, arity), args)
        } else {
            let blocks = [
                Block::TanhMul,
                Block::MulSigmoid,
                Block::Nested,
                Block::HoldsCustom,
                Block::Wide,
            ];
            let spec = legal_spec(&mut rng, 2);
            Node::Remat {
                block: blocks[rng.random_range(0..blocks.len())],
                args: [rng.random_range(0..n), rng.random_range(0..n)],
                clean: spec.clean(),
                spec,
                panic_on: None,
                calls: Cell::new(0),
            }
        };
        let shape = match &node {
            Node::Tanh(i) => regs[*i],
            Node::Custom(_, args) => broadcast_all(args.iter().map(|&a| regs[a])).unwrap(),
            Node::Remat { args, .. } => broadcast_all(args.iter().map(|&a| regs[a])).unwrap(),
        };
        if !matches!(node, Node::Tanh(_)) {
            weights.push(randn(shape, &mut rng));
        }
        regs.push(shape);
        nodes.push(node);
    }
    // at most one fault per program
    let fault = match rng.random_range(0..100) {
        0..60 => Fault::Nothing,
        60..80 => Fault::Illegal,
        _ => Fault::Panic,
    };
    let targets: Vec<usize> = (0..nodes.len())
        .filter(|&i| match &nodes[i] {
            Node::Tanh(_) => false,
            Node::Custom(..) => true,
            Node::Remat { block, .. } => {
                fault == Fault::Panic || matches!(block, Block::HoldsCustom)
            }
        })
        .collect();
    let fault = if targets.is_empty() {
        Fault::Nothing
    } else {
        fault
    };
    if fault != Fault::Nothing {
        let t = targets[rng.random_range(0..targets.len())];
        let (args, block): (Vec<usize>, Option<Block>) = match &nodes[t] {
            Node::Custom(_, args) => (args.clone(), None),
            Node::Remat { args, block, .. } => (args.to_vec(), Some(*block)),
            Node::Tanh(_) => unreachable!(),
        };
        let holds_custom = !matches!(block, Some(b) if !matches!(b, Block::HoldsCustom));
        match fault {
            Fault::Panic if block.is_some() && (!holds_custom || rng.random_bool(0.5)) => {
                if let Node::Remat { panic_on, .. } = &mut nodes[t] {
                    *panic_on = Some([1, 2, 2, 3][rng.random_range(0..4)]);
                }
            }
            Fault::Panic => {
                spec_mut(&mut nodes[t]).panic =
                    Some([Form::Array, Form::Tensor, Form::Both][rng.random_range(0..3)]);
            }
            _ => {
                // an illegal contribution to input k of a custom op
                let k = rng.random_range(0..args.len());
                let input = regs[args[k]];
                let output = broadcast_all(args.iter().map(|&a| regs[a])).unwrap();
                let bad: Vec<(usize, usize)> = [
                    (0, 0),
                    (1, 1),
                    (2, 1),
                    (1, 3),
                    (input.1, input.0),
                    (input.0 + 1, input.1),
                    (output.0, output.1 + 1),
                ]
                .into_iter()
                .filter(|&s| s != input && s != output)
                .collect();
                spec_mut(&mut nodes[t]).vjps[k] = if rng.random_bool(0.75) {
                    Vjp::Shape(bad[rng.random_range(0..bad.len())])
                } else {
                    Vjp::Index(rng.random_range(0..2))
                };
            }
        }
    }
    for node in &mut nodes {
        if let Node::Remat { spec, clean, .. } = node {
            *clean = spec.clean();
        }
    }
    let pass = |rng: &mut StdRng| {
        if rng.random_bool(0.5) {
            Pass::Backward
        } else {
            Pass::Grad
        }
    };
    Program {
        seed,
        f32: rng.random_bool(0.25),
        arrays,
        nodes,
        weights,
        retain: rng.random_bool(0.4),
        passes: [pass(&mut rng), pass(&mut rng)],
        fault,
    }
}

/// The custom op of a custom node, or of a remat block.
fn spec_mut(node: &mut Node) -> &mut Spec {
    match node {
        Node::Custom(spec, _) | Node::Remat { spec, .. } => spec,
        Node::Tanh(_) => unreachable!("a tanh node has no custom op"),
    }
}

impl Program {
    /// The largest finite magnitude among the program's numbers (at least 1).
    fn largest(&self) -> f64 {
        self.arrays
            .iter()
            .chain(&self.weights)
            .flatten()
            .map(|v| v.abs())
            .filter(|v| v.is_finite())
            .fold(1.0, f64::max)
    }

    /// Whether pass number `i` (0 or 1) of kind `pass` runs a panicking rule.
    fn panics_in(&self, pass: Pass, i: usize, forward_panicked: bool) -> bool {
        self.nodes.iter().any(|n| match n {
            Node::Tanh(_) => false,
            Node::Custom(spec, _) => spec.panics_in(pass),
            Node::Remat {
                panic_on,
                spec,
                block,
                ..
            } => {
                // the forward is call 1; each pass runs the block once more
                let block_panics = !forward_panicked && *panic_on == Some(i + 2);
                let custom = matches!(block, Block::HoldsCustom) && spec.panics_in(pass);
                block_panics || custom
            }
        })
    }

    /// Whether a custom op of the program that adds a gradient has no tensor form (first
    /// order only).
    fn first_order_only(&self) -> bool {
        let first_order =
            |s: &Spec| !s.tensor_form && (s.product.is_some() || s.coef.iter().any(|&c| c != 0.0));
        self.nodes.iter().any(|n| match n {
            Node::Custom(spec, _) => first_order(spec),
            Node::Remat {
                block: Block::HoldsCustom,
                spec,
                ..
            } => first_order(spec),
            _ => false,
        })
    }
}

/// What building a program gave.
struct Built<'t, F: Float> {
    loss: Tensor<'t, F>,
    /// A remat block panicked in its forward (as injected): it was left out.
    forward_panicked: bool,
}

/// Records program `p` on the parameters `xs`: `clean` without its fault, `plain` with
/// the remat blocks written out.
fn build<'t, 'p: 't, F: Float>(
    p: &'p Program,
    xs: &[Tensor<'t, F>],
    clean: bool,
    plain: bool,
) -> tapegrad::Result<Built<'t, F>> {
    let tape = xs[0].tape();
    let mut regs: Vec<Tensor<'t, F>> = xs.to_vec();
    let mut outputs = Vec::new();
    let mut forward_panicked = false;
    for node in &p.nodes {
        let y = match node {
            Node::Tanh(i) => {
                regs.push(regs[*i].tanh());
                continue;
            }
            Node::Custom(spec, args) => {
                let spec = if clean { spec.clean() } else { spec.clone() };
                let args: Vec<Tensor<'t, F>> = args.iter().map(|&a| regs[a]).collect();
                custom::try_apply(Fuzzed(spec), &args)?
            }
            Node::Remat {
                block: kind,
                args,
                spec,
                panic_on,
                clean: clean_spec,
                calls,
            } => {
                let (kind, panic_on) = (*kind, *panic_on);
                let spec = if clean { clean_spec } else { spec };
                let args = [regs[args[0]], regs[args[1]]];
                // what stands for a block whose forward panics
                let instead = || {
                    let shape = broadcast_all([args[0].shape(), args[1].shape()]).unwrap();
                    args[0].try_add(tape.constant(Array2::zeros(shape)))
                };
                if clean && panic_on == Some(1) {
                    instead()?
                } else if plain {
                    block(kind, spec, &kind.inputs(args))?
                } else {
                    let panic_on = if clean { None } else { panic_on };
                    calls.set(0);
                    let made = catch(|| {
                        tape.remat(&kind.inputs(args), move |x| {
                            calls.set(calls.get() + 1);
                            if Some(calls.get()) == panic_on {
                                inject();
                            }
                            block(kind, spec, &x)
                        })
                    });
                    match made {
                        Ok(y) => y?,
                        Err(e) if injected(&*e) => {
                            // the block's forward panicked, and the panic reached us: go on
                            // without it
                            forward_panicked = true;
                            instead()?
                        }
                        Err(e) => std::panic::resume_unwind(e),
                    }
                }
            }
        };
        outputs.push(y);
        regs.push(y);
    }
    let mut loss: Option<Tensor<'t, F>> = None;
    for (y, w) in outputs.iter().zip(&p.weights) {
        let term = y.try_mul(tape.constant(w.mapv(F::cast)))?.sum();
        loss = Some(match loss {
            Some(l) => l.try_add(term)?,
            None => term,
        });
    }
    let last = *outputs
        .last()
        .expect("a program has a custom or remat node");
    let loss = loss
        .expect("a weight per output")
        .try_add(last.square().sum().mul_scalar(F::cast(0.5)))?;
    Ok(Built {
        loss,
        forward_panicked,
    })
}

/// One pass: the gradients of the parameters, by backward or by `Tape::grad`.
fn pass<'t, F: Float>(
    tape: &'t Tape<'t, F>,
    kind: Pass,
    loss: Tensor<'t, F>,
    xs: &[Tensor<'t, F>],
    retain: bool,
) -> tapegrad::Result<Vec<Array2<F>>> {
    let grads: Vec<Array2<F>> = match kind {
        Pass::Backward => {
            let g = tape.backward_with(loss, BackwardOptions::new().retain_graph(retain))?;
            xs.iter()
                .map(|x| g.get(*x).expect("a parameter has a gradient").clone())
                .collect()
        }
        Pass::Grad => tape
            .grad(loss, xs)?
            .iter()
            .map(|g| g.try_value())
            .collect::<tapegrad::Result<_>>()?,
    };
    for (g, x) in grads.iter().zip(xs) {
        assert_eq!(
            g.dim(),
            x.shape(),
            "{kind:?}: a gradient of another shape than its parameter"
        );
    }
    Ok(grads)
}

/// The gradients of the program without its fault, by backward on a fresh tape (`plain`:
/// with the remat blocks written out).
fn reference<F: Float>(p: &Program, arrays: &[Array2<F>], plain: bool) -> (F, Vec<Array2<F>>) {
    let tape = Tape::new();
    let xs: Vec<Tensor<'_, F>> = arrays.iter().map(|a| tape.param(a)).collect();
    let built = build(p, &xs, true, plain).expect("the program without its fault records");
    let loss = built.loss.item();
    let grads = tape
        .backward(built.loss)
        .expect("backward of the program without its fault");
    (
        loss,
        xs.iter().map(|x| grads.get(*x).unwrap().clone()).collect(),
    )
}

fn run(p: &Program) -> bool {
    if p.f32 {
        check::<f32>(p, 1e-4);
        false
    } else {
        check::<f64>(p, 1e-9);
        let finite = p.arrays.iter().all(|a| a.iter().all(|v| v.is_finite()));
        p.fault == Fault::Nothing && finite && numeric(p)
    }
}

/// The two passes of `p` in `F`, against the reference.
fn check<F: Float>(p: &Program, tol: f64) {
    let arrays: Vec<Array2<F>> = p.arrays.iter().map(|a| a.mapv(F::cast)).collect();
    // Two ways to the same gradient (backward and `Tape::grad`, a block and its ops
    // written out) round differently: where the terms of a gradient cancel (a `tanh`
    // near ±1: `1 − y²`, times an upstream gradient that products of the program's
    // numbers make large) they differ by roundings of the terms (at most 9 units of the
    // last place of the largest number's square in 1.5 million programs).
    let largest = p.largest();
    let floor = 64.0 * F::epsilon().as_f64() * largest * largest;
    let (_, expected) = reference(p, &arrays, false);
    if p.nodes.iter().any(|n| matches!(n, Node::Remat { .. })) {
        // a remat block's gradients are those of its ops written out
        let (_, plain) = reference(p, &arrays, true);
        for (a, b) in expected.iter().zip(&plain) {
            assert!(
                close_within(a, b, tol, floor),
                "remat: {a} written out is {b}"
            );
        }
    }
    let tape = Tape::<F>::new();
    let xs: Vec<Tensor<'_, F>> = arrays.iter().map(|a| tape.param(a)).collect();
    let built = build(p, &xs, false, false).expect("the program records");
    let mut history: Vec<(Pass, bool)> = Vec::new();
    for (i, &kind) in p.passes.iter().enumerate() {
        let panics = p.panics_in(kind, i, built.forward_panicked);
        let outcome = catch(|| pass(&tape, kind, built.loss, &xs, p.retain));
        if trace() {
            let shown = match &outcome {
                Ok(r) => format!("{r:?}"),
                Err(e) => format!("panic: {}", message(&**e)),
            };
            eprintln!("pass {i} {kind:?} (panics: {panics}): {shown}\nexpected {expected:?}");
        }
        let released = history
            .iter()
            .any(|&(k, _)| k == Pass::Backward && !p.retain);
        let after_panic = history.iter().any(|&(_, panicked)| panicked);
        let what = format!("pass {i} ({kind:?}, retain_graph {})", p.retain);
        match outcome {
            Ok(Ok(grads)) => {
                assert!(
                    !(released && after_panic),
                    "{what} after a panicking backward returned Ok (gradients {grads:?})"
                );
                assert!(!released, "{what} on a released tape returned Ok");
                assert!(
                    p.fault != Fault::Illegal,
                    "{what} accepted an illegal contribution of a custom VJP: Ok({grads:?})"
                );
                assert!(!panics, "{what} ran a panicking rule and returned Ok");
                for (k, (g, e)) in grads.iter().zip(&expected).enumerate() {
                    assert!(
                        close_within(g, e, tol, floor),
                        "{what}: the gradient of parameter {k} is {g}, backward of the program \
                         without its fault gives {e}"
                    );
                }
                history.push((kind, false));
            }
            Ok(Err(e)) => {
                let fine = released || p.fault == Fault::Illegal || after_panic;
                assert!(fine, "{what}: an error where none is expected: {e}");
                if p.fault == Fault::Illegal && !released {
                    assert!(
                        !matches!(e.kind(), ErrorKind::BackwardTwice { .. }),
                        "{what}: {e}"
                    );
                }
                assert!(
                    !panics || released || after_panic,
                    "{what}: the panic of a rule became an error: {e}"
                );
                history.push((kind, false));
            }
            Err(e) if injected(&*e) => {
                assert!(
                    !(released && after_panic),
                    "{what} after a panicking backward ran the rules again (it panicked again)"
                );
                assert!(!released, "{what} on a released tape ran the rules again");
                assert!(
                    panics || after_panic,
                    "{what}: an injected panic from a rule that should not run"
                );
                history.push((kind, true));
            }
            Err(e) => panic!("{what} panicked: {}", message(&*e)),
        }
    }
}

/// In f64 for a program without fault or NaN: the gradient against central differences,
/// the second order (`Tape::grad` twice, `functional::hvp`, `functional::jvp`) against
/// central differences of the gradient.
fn numeric(p: &Program) -> bool {
    let mut rng = StdRng::seed_from_u64(p.seed ^ 0x2d);
    let u: Vec<Array2<f64>> = p.arrays.iter().map(|a| randn(a.dim(), &mut rng)).collect();
    let v: Vec<Array2<f64>> = p.arrays.iter().map(|a| randn(a.dim(), &mut rng)).collect();
    let moved = |eps: f64| -> Vec<Array2<f64>> {
        p.arrays
            .iter()
            .zip(&v)
            .map(|(a, d)| a + &(d * eps))
            .collect()
    };
    let (_, g0) = reference(p, &p.arrays, false);
    let first: f64 = g0.iter().zip(&v).map(|(g, d)| dot(g, d)).sum();
    let Some(fd) = central(1e-4, &mut |eps| Some(reference(p, &moved(eps), false).0)) else {
        return false;
    };
    agree("first order", first, fd, 1e-6);
    // second order: H·u by Tape::grad twice
    let tape = Tape::new();
    let xs: Vec<Tensor<'_, f64>> = p.arrays.iter().map(|a| tape.param(a)).collect();
    let loss = build(p, &xs, true, false).expect("records").loss;
    let gs = tape.grad(loss, &xs).expect("Tape::grad of a legal program");
    let mut phi = tape.scalar(0.0);
    for (g, d) in gs.iter().zip(&u) {
        phi = phi.add(g.try_mul(tape.constant(d)).expect("same shapes").sum());
    }
    // (a custom op without a tensor form refuses a second derivative, unless what reaches
    // it does not depend on the parameters)
    let hs = match tape.grad(phi, &xs) {
        Err(e) if p.first_order_only() => {
            assert_eq!(e.kind(), &ErrorKind::NotDifferentiable, "{e}");
            return true;
        }
        hs => hs.expect("second order of a program whose rules all have tensor forms"),
    };
    let hu: Vec<Array2<f64>> = hs.iter().map(|h| h.value()).collect();
    let second: f64 = hu.iter().zip(&v).map(|(h, d)| dot(h, d)).sum();
    if let Some(fd) = central(1e-4, &mut |eps| {
        let (_, g) = reference(p, &moved(eps), false);
        Some(g.iter().zip(&u).map(|(g, d)| dot(g, d)).sum())
    }) {
        agree("second order (Tape::grad twice)", second, fd, 1e-6);
    }
    // the same through the functional API
    let views: Vec<_> = p.arrays.iter().map(|a| a.view()).collect();
    let uv: Vec<_> = u.iter().map(|a| a.view()).collect();
    let vv: Vec<_> = v.iter().map(|a| a.view()).collect();
    if p.first_order_only() {
        return true;
    }
    let (_, hvp) = functional::hvp(
        |x| build(p, &x, true, false).expect("records").loss,
        &views,
        &uv,
    )
    .expect("functional::hvp");
    // the two routes round differently, and second-order terms cancel more than first
    // order ones (by up to 10³ units of the last place where the numbers are near 1)
    let largest = p.largest();
    for (a, b) in hvp.iter().zip(&hu) {
        assert!(
            close_within(a, b, 1e-9, 1e4 * f64::EPSILON * largest * largest),
            "functional::hvp gives {a}, Tape::grad twice {b}"
        );
    }
    let (_, jv) = functional::jvp(
        |x| build(p, &x, true, false).expect("records").loss,
        &views,
        &vv,
    )
    .expect("functional::jvp");
    agree("functional::jvp", jv[[0, 0]], first, 1e-9);
    true
}
