//! The program generator: random programs over every public op, run and checked against
//! the invariants and finite differences (see the crate docs in `main.rs`).

use ndarray::{Array2, Axis, s};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
#[cfg(not(feature = "linalg"))]
use tapegrad::Float;
use tapegrad::bench_kernels::{Path, set_path};
use tapegrad::nn::Parameters;
use tapegrad::ops::Span;
use tapegrad::optim::{Adam, Optimizer, Sgd};
use tapegrad::{BackwardOptions, ErrorKind, Gradients, Missing, Tape, Tensor, functional, io};

use crate::oracle::{agree, central, close_within, dot, randn};
use crate::trace;

/// The element types fuzzed: `f32` and `f64`, with the linear-algebra ops when the
/// `linalg` feature is on (they need `LinalgFloat`).
#[cfg(feature = "linalg")]
pub(crate) trait Elem: tapegrad::LinalgFloat {}
#[cfg(feature = "linalg")]
impl<T: tapegrad::LinalgFloat> Elem for T {}
#[cfg(not(feature = "linalg"))]
pub(crate) trait Elem: Float {}
#[cfg(not(feature = "linalg"))]
impl<T: Float> Elem for T {}

/// An op under test: its name, its number of tensor operands, and its `try_` form.
pub(crate) struct Op<F: Elem> {
    pub(crate) name: &'static str,
    arity: usize,
    f: for<'t> fn(&[Tensor<'t, F>]) -> tapegrad::Result<Tensor<'t, F>>,
    /// Whether operands of these shapes fit (to pick fitting operands most of the time).
    fits: fn(&[(usize, usize)]) -> bool,
}

fn any(_: &[(usize, usize)]) -> bool {
    true
}
fn broadcasts(s: &[(usize, usize)]) -> bool {
    let axis = |a: usize, b: usize| a == b || a == 1 || b == 1;
    axis(s[0].0, s[1].0) && axis(s[0].1, s[1].1)
}
fn same(s: &[(usize, usize)]) -> bool {
    s[0] == s[1]
}
fn product(s: &[(usize, usize)]) -> bool {
    s[0].1 == s[1].0
}
fn layer(s: &[(usize, usize)]) -> bool {
    s[0].1 == s[1].0 && s[2] == (1, s[1].1)
}
fn row(s: &[(usize, usize)]) -> bool {
    s[1] == (1, s[0].1)
}
fn col(s: &[(usize, usize)]) -> bool {
    s[1] == (s[0].0, 1)
}

/// Indices as a column of constants on `t`'s tape (they have no gradient).
fn indices_as<'t, F: Elem>(t: Tensor<'t, F>, indices: &[usize]) -> Tensor<'t, F> {
    let column = Array2::from_shape_fn((indices.len(), 1), |(i, _)| F::cast(indices[i] as f64));
    t.tape().constant(column)
}

/// A fixed mask: true where the row and column indices add up to an even number.
/// (A 1 × 1 mask, which broadcasts to anything, where the shape would be huge.)
fn checkerboard((r, c): (usize, usize)) -> Array2<bool> {
    if r.checked_mul(c).is_none_or(|n| n > 1 << 20) {
        return Array2::from_elem((1, 1), true);
    }
    Array2::from_shape_fn((r, c), |(i, j)| (i + j) % 2 == 0)
}

/// Class indices for the rows of `z`: a valid index per row when there are columns.
fn classes<F: Elem>(z: Tensor<'_, F>) -> Vec<usize> {
    let (r, c) = z.shape();
    (0..r.min(64))
        .map(|i| if c == 0 { 0 } else { (3 * i + 1) % c })
        .collect()
}

/// Every public op (the test at the bottom checks the list against `src/ops`).
#[rustfmt::skip]
pub(crate) fn ops<F: Elem>() -> Vec<Op<F>> {
    #[allow(unused_mut)]
    let mut ops = vec![
        Op { name: "matmul", arity: 2, f: |x| x[0].try_matmul(x[1]), fits: product },
        Op { name: "linear", arity: 3, f: |x| x[0].try_linear(x[1], x[2]), fits: layer },
        Op { name: "remat", arity: 3, f: |x| x[0].tape().remat(&[x[0], x[1], x[2]], |y| Ok(y[0].try_linear(y[1], y[2])?.tanh())), fits: layer },
        Op { name: "remat", arity: 2, f: |x| x[0].tape().remat(&[x[0], x[1]], |y| y[0].try_mul(y[1])), fits: broadcasts },
        Op { name: "add", arity: 2, f: |x| x[0].try_add(x[1]), fits: broadcasts },
        Op { name: "sub", arity: 2, f: |x| x[0].try_sub(x[1]), fits: broadcasts },
        Op { name: "mul", arity: 2, f: |x| x[0].try_mul(x[1]), fits: broadcasts },
        Op { name: "div", arity: 2, f: |x| x[0].try_div(x[1]), fits: broadcasts },
        Op { name: "add_row", arity: 2, f: |x| x[0].try_add_row(x[1]), fits: row },
        Op { name: "add_col", arity: 2, f: |x| x[0].try_add_col(x[1]), fits: col },
        Op { name: "mse_loss", arity: 2, f: |x| x[0].try_mse_loss(x[1]), fits: same },
        Op { name: "softmax_cross_entropy", arity: 2, f: |x| x[0].try_softmax_cross_entropy(x[1]), fits: same },
        Op { name: "softmax_cross_entropy_indices", arity: 1, f: |x| x[0].try_softmax_cross_entropy_indices(&classes(x[0])), fits: any },
        Op { name: "neg", arity: 1, f: |x| Ok(x[0].neg()), fits: any },
        Op { name: "add_scalar", arity: 1, f: |x| Ok(x[0].add_scalar(F::cast(0.5))), fits: any },
        Op { name: "mul_scalar", arity: 1, f: |x| Ok(x[0].mul_scalar(F::cast(-1.5))), fits: any },
        Op { name: "sum", arity: 1, f: |x| Ok(x[0].sum()), fits: any },
        Op { name: "mean", arity: 1, f: |x| Ok(x[0].mean()), fits: any },
        Op { name: "sum_axis", arity: 1, f: |x| x[0].try_sum_axis(Axis(0)), fits: any },
        Op { name: "sum_axis", arity: 1, f: |x| x[0].try_sum_axis(Axis(1)), fits: any },
        Op { name: "mean_axis", arity: 1, f: |x| x[0].try_mean_axis(Axis(0)), fits: any },
        Op { name: "mean_axis", arity: 1, f: |x| x[0].try_mean_axis(Axis(1)), fits: any },
        Op { name: "t", arity: 1, f: |x| Ok(x[0].t()), fits: any },
        Op { name: "sigmoid", arity: 1, f: |x| Ok(x[0].sigmoid()), fits: any },
        Op { name: "tanh", arity: 1, f: |x| Ok(x[0].tanh()), fits: any },
        Op { name: "relu", arity: 1, f: |x| Ok(x[0].relu()), fits: any },
        Op { name: "exp", arity: 1, f: |x| Ok(x[0].exp()), fits: any },
        Op { name: "log", arity: 1, f: |x| Ok(x[0].log()), fits: any },
        Op { name: "sqrt", arity: 1, f: |x| Ok(x[0].sqrt()), fits: any },
        Op { name: "square", arity: 1, f: |x| Ok(x[0].square()), fits: any },
        Op { name: "powi", arity: 1, f: |x| Ok(x[0].powi(3)), fits: any },
        Op { name: "powi", arity: 1, f: |x| Ok(x[0].powi(-2)), fits: any },
        Op { name: "powi", arity: 1, f: |x| Ok(x[0].powi(i32::MIN)), fits: any },
        Op { name: "powf", arity: 1, f: |x| Ok(x[0].powf(F::cast(1.5))), fits: any },
        Op { name: "broadcast_to", arity: 2, f: |x| x[0].try_broadcast_to(x[1].shape()), fits: |s| broadcasts(s) && (s[0].0 == 1 || s[0].0 == s[1].0) && (s[0].1 == 1 || s[0].1 == s[1].1) },
        Op { name: "softmax", arity: 1, f: |x| x[0].try_softmax(Axis(1)), fits: any },
        Op { name: "softmax", arity: 1, f: |x| x[0].try_softmax(Axis(0)), fits: any },
        Op { name: "log_softmax", arity: 1, f: |x| x[0].try_log_softmax(Axis(1)), fits: any },
        Op { name: "log_softmax", arity: 1, f: |x| x[0].try_log_softmax(Axis(0)), fits: any },
        Op { name: "logsumexp", arity: 1, f: |x| x[0].try_logsumexp(Axis(1)), fits: any },
        Op { name: "logsumexp", arity: 1, f: |x| x[0].try_logsumexp(Axis(0)), fits: any },
        Op { name: "leaky_relu", arity: 1, f: |x| Ok(x[0].leaky_relu(F::cast(0.1))), fits: any },
        Op { name: "elu", arity: 1, f: |x| Ok(x[0].elu(F::one())), fits: any },
        Op { name: "gelu", arity: 1, f: |x| Ok(x[0].gelu()), fits: any },
        Op { name: "gelu_tanh", arity: 1, f: |x| Ok(x[0].gelu_tanh()), fits: any },
        Op { name: "softplus", arity: 1, f: |x| Ok(x[0].softplus()), fits: any },
        Op { name: "silu", arity: 1, f: |x| Ok(x[0].silu()), fits: any },
        Op { name: "recip", arity: 1, f: |x| Ok(x[0].recip()), fits: any },
        Op { name: "abs", arity: 1, f: |x| Ok(x[0].abs()), fits: any },
        Op { name: "sin", arity: 1, f: |x| Ok(x[0].sin()), fits: any },
        Op { name: "cos", arity: 1, f: |x| Ok(x[0].cos()), fits: any },
        Op { name: "erf", arity: 1, f: |x| Ok(x[0].erf()), fits: any },
        Op { name: "clamp", arity: 1, f: |x| Ok(x[0].clamp(F::cast(-0.5), F::cast(0.7))), fits: any },
        Op { name: "scalar_div", arity: 1, f: |x| Ok(x[0].scalar_div(F::cast(1.5))), fits: any },
        Op { name: "maximum", arity: 2, f: |x| x[0].try_maximum(x[1]), fits: broadcasts },
        Op { name: "minimum", arity: 2, f: |x| x[0].try_minimum(x[1]), fits: broadcasts },
        Op { name: "where_", arity: 2, f: |x| Tensor::try_where_(checkerboard(x[0].shape()).view(), x[0], x[1]), fits: broadcasts },
        Op { name: "max", arity: 1, f: |x| Ok(x[0].max()), fits: any },
        Op { name: "min", arity: 1, f: |x| Ok(x[0].min()), fits: any },
        Op { name: "max_axis", arity: 1, f: |x| x[0].try_max_axis(Axis(0)), fits: any },
        Op { name: "min_axis", arity: 1, f: |x| x[0].try_min_axis(Axis(1)), fits: any },
        Op { name: "argmax", arity: 1, f: |x| x[0].try_argmax(Axis(1)).map(|i| indices_as(x[0], &i)), fits: any },
        Op { name: "argmin", arity: 1, f: |x| x[0].try_argmin(Axis(0)).map(|i| indices_as(x[0], &i)), fits: any },
        Op { name: "slice", arity: 1, f: |x| { let r = x[0].rows(); x[0].try_slice(r / 2.., Span::from(..).step(2)) }, fits: any },
        Op { name: "slice", arity: 1, f: |x| x[0].try_slice(1..3, 0..1), fits: |s| s[0].0 >= 3 && s[0].1 >= 1 },
        Op { name: "slice_rows", arity: 1, f: |x| x[0].try_slice(.., ..).map(|t| t.slice_rows(..)), fits: any },
        Op { name: "slice_cols", arity: 1, f: |x| { let c = x[0].cols(); x[0].try_slice(.., c / 2..).map(|t| t.slice_cols(..)) }, fits: any },
        Op { name: "gather_rows", arity: 1, f: |x| x[0].try_gather_rows(&[0, 2, 1, 0]), fits: |s| s[0].0 >= 3 },
        Op { name: "reshape", arity: 1, f: |x| { let (r, c) = x[0].shape(); x[0].try_reshape((c, r)) }, fits: any },
        Op { name: "reshape", arity: 1, f: |x| { let (r, c) = x[0].shape(); x[0].try_reshape((r.saturating_mul(c), 1)) }, fits: any },
        Op { name: "concat_rows", arity: 2, f: |x| Tensor::try_concat_rows(&[x[0], x[1]]), fits: |s| s[0].1 == s[1].1 },
        Op { name: "concat_rows", arity: 2, f: |x| Tensor::try_concat_rows(&[x[0], x[1], x[0]]), fits: |s| s[0].1 == s[1].1 },
        Op { name: "concat_cols", arity: 2, f: |x| Tensor::try_concat_cols(&[x[0], x[1], x[0]]), fits: |s| s[0].0 == s[1].0 },
        Op { name: "l1_loss", arity: 2, f: |x| x[0].try_l1_loss(x[1]), fits: same },
        Op { name: "huber_loss", arity: 2, f: |x| x[0].try_huber_loss(x[1], F::one()), fits: same },
        Op { name: "bce_with_logits", arity: 2, f: |x| x[0].try_bce_with_logits(x[1]), fits: same },
        Op { name: "nll_loss", arity: 1, f: |x| x[0].try_nll_loss(&classes(x[0])), fits: any },
        Op { name: "layer_norm", arity: 3, f: |x| x[0].try_layer_norm(x[1], x[2], F::cast(1e-5)), fits: |s| s[1] == (1, s[0].1) && s[2] == s[1] },
        Op { name: "dropout", arity: 1, f: |x| x[0].try_dropout(F::cast(0.25), &mut StdRng::seed_from_u64(3)), fits: any },
        Op { name: "trace", arity: 1, f: |x| Ok(x[0].trace()), fits: any },
        Op { name: "diag", arity: 1, f: |x| x[0].try_diag(), fits: any },
        Op { name: "diag_embed", arity: 1, f: |x| x[0].try_diag_embed(), fits: |s| s[0].0 == 1 || s[0].1 == 1 },
        // custom ops (legal): two contributions per input, one in the input's shape and
        // one in the output's; first order only, or with a tensor form
        Op { name: "custom", arity: 2, f: |x| crate::rules::program_op(x, false), fits: broadcasts },
        Op { name: "custom", arity: 2, f: |x| crate::rules::program_op(x, true), fits: broadcasts },
        Op { name: "tril", arity: 1, f: |x| Ok(x[0].tril(0)), fits: any },
        Op { name: "triu", arity: 1, f: |x| Ok(x[0].triu(-1)), fits: any },
    ];
    #[cfg(feature = "linalg")]
    ops.extend(linalg_ops());
    ops
}

#[cfg(feature = "linalg")]
fn square(s: &[(usize, usize)]) -> bool {
    s[0].0 == s[0].1
}
#[cfg(feature = "linalg")]
fn system(s: &[(usize, usize)]) -> bool {
    square(s) && s[1].0 == s[0].0
}

/// The linear-algebra ops; most random matrices are invertible, few positive definite
/// (`cholesky` also runs on a Gram matrix `X·Xᵀ`, which is for more columns than rows).
#[cfg(feature = "linalg")]
#[rustfmt::skip]
fn linalg_ops<F: Elem>() -> Vec<Op<F>> {
    vec![
        Op { name: "inv", arity: 1, f: |x| x[0].try_inv(), fits: square },
        Op { name: "solve", arity: 2, f: |x| x[0].try_solve(x[1]), fits: system },
        Op { name: "solve_triangular", arity: 2, f: |x| x[0].try_solve_triangular(x[1], true, false), fits: system },
        Op { name: "solve_triangular", arity: 2, f: |x| x[0].try_solve_triangular(x[1], false, true), fits: system },
        Op { name: "cho_solve", arity: 2, f: |x| x[0].try_cho_solve(x[1]), fits: system },
        Op { name: "det", arity: 1, f: |x| x[0].try_det(), fits: square },
        Op { name: "slogdet", arity: 1, f: |x| x[0].try_slogdet().map(|(_, l)| l), fits: square },
        Op { name: "slogdet", arity: 1, f: |x| x[0].try_slogdet().map(|(s, _)| s), fits: square },
        Op { name: "logdet", arity: 1, f: |x| x[0].try_logdet(), fits: square },
        Op { name: "cholesky", arity: 1, f: |x| x[0].try_cholesky(), fits: square },
        Op { name: "cholesky", arity: 1, f: |x| x[0].try_matmul(x[0].t())?.try_cholesky(), fits: |s| s[0].0 <= s[0].1 },
        Op { name: "eigh", arity: 1, f: |x| x[0].try_eigh().map(|(l, _)| l), fits: square },
        Op { name: "eigh", arity: 1, f: |x| x[0].try_eigh().map(|(_, v)| v.square()), fits: square },
    ]
}

/// How an array of the pool goes on the tape.
#[derive(Clone, Copy, Debug)]
enum Leaf {
    /// `tape.param(&a)`
    Param,
    /// `tape.param(a.t())`: the same parameter, transposed
    ParamT,
    /// `tape.param(big.slice(s![..;2, ..;2]))` of a separate storage holding `a`
    Step2,
    /// `tape.param(a.clone())`: a new leaf, found by its tensor only
    Owned,
    /// `tape.constant(&a)`
    Constant,
    /// `tape.param(&a)` inside `no_grad`: a constant
    NoGradParam,
}

#[derive(Clone, Debug)]
enum Instr {
    Leaf(usize, Leaf),
    /// Op `op` of [`ops`] on registers (indices taken modulo the registers so far).
    Op {
        op: usize,
        args: Vec<usize>,
        no_grad: bool,
    },
    Detach(usize),
    /// `tape.grad(sum(a), &[b])`: a gradient recorded on the tape, differentiable again.
    Grad(usize, usize),
    /// A binary op with a tensor of the second tape: must be `ForeignTensor`.
    Foreign {
        op: usize,
        arg: usize,
    },
}

#[derive(Clone, Debug)]
pub(crate) struct Program {
    seed: u64,
    arrays: Vec<Array2<f64>>,
    instrs: Vec<Instr>,
    retain: bool,
    seeded: bool,
    reuse: bool,
}

const DIMS: [usize; 6] = [0, 1, 1, 2, 3, 5];
/// The smallest dimension of the huge empty matrices (which cost nothing).
const HUGE: usize = 1 << 40;
/// Their dimensions: three of the largest overflow `usize` when added (`concat`).
const HUGE_DIMS: [usize; 3] = [HUGE, 1 << 62, isize::MAX as usize];

pub(crate) fn generate(seed: u64, ops: usize) -> Program {
    let mut rng = StdRng::seed_from_u64(seed);
    let n_arrays = rng.random_range(1..6);
    let arrays = (0..n_arrays)
        .map(|_| {
            let mut shape = (
                DIMS[rng.random_range(0..DIMS.len())],
                DIMS[rng.random_range(0..DIMS.len())],
            );
            if rng.random_bool(0.04) {
                let huge = HUGE_DIMS[rng.random_range(0..HUGE_DIMS.len())];
                shape = if rng.random_bool(0.5) {
                    (huge, 0)
                } else {
                    (0, huge)
                };
            }
            let mut a = Array2::from_shape_simple_fn(shape, || {
                let v: f64 = StandardNormal.sample(&mut rng);
                v
            });
            if !a.is_empty() && rng.random_bool(0.08) {
                let (r, c) = a.dim();
                let special = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -0.0, 1e300];
                a[[rng.random_range(0..r), rng.random_range(0..c)]] =
                    special[rng.random_range(0..special.len())];
            }
            a
        })
        .collect::<Vec<_>>();
    let leaves = [
        Leaf::Param,
        Leaf::Param,
        Leaf::Param,
        Leaf::ParamT,
        Leaf::Step2,
        Leaf::Owned,
        Leaf::Constant,
        Leaf::Constant,
        Leaf::NoGradParam,
    ];
    let mut instrs: Vec<Instr> = (0..rng.random_range(1..4))
        .map(|_| {
            Instr::Leaf(
                rng.random_range(0..n_arrays),
                leaves[rng.random_range(0..leaves.len())],
            )
        })
        .collect();
    for _ in 0..rng.random_range(1..12) {
        let k = rng.random_range(0..100);
        let instr = if k < 20 {
            Instr::Leaf(
                rng.random_range(0..n_arrays),
                leaves[rng.random_range(0..leaves.len())],
            )
        } else if k < 24 {
            Instr::Detach(rng.random_range(0..64))
        } else if k < 30 {
            Instr::Grad(rng.random_range(0..64), rng.random_range(0..64))
        } else if k < 26 {
            Instr::Foreign {
                op: rng.random_range(0..ops),
                arg: rng.random_range(0..64),
            }
        } else {
            Instr::Op {
                op: rng.random_range(0..ops),
                // operands are picked to fit when `run` finds fitting ones (see `pick`)
                args: (0..3).map(|_| rng.random_range(0..1 << 20)).collect(),
                no_grad: rng.random_bool(0.05),
            }
        };
        instrs.push(instr);
    }
    Program {
        seed,
        arrays,
        instrs,
        retain: rng.random_bool(0.3),
        seeded: rng.random_bool(0.2),
        reuse: rng.random_bool(0.3),
    }
}

/// The arrays of a program in `F`, the step-2 storages and the copies used for constants.
struct Data<F> {
    /// What parameters borrow (perturbed by the finite differences).
    params: Vec<Array2<F>>,
    /// Storage with each array on every other row and column (NaN between).
    big: Vec<Array2<F>>,
    /// What constants borrow (never perturbed: constants get no gradient).
    constants: Vec<Array2<F>>,
}

impl<F: Elem> Data<F> {
    fn new(arrays: &[Array2<f64>], constants: &[Array2<f64>]) -> Self {
        let cast = |a: &Array2<f64>| a.mapv(F::cast);
        let big = arrays
            .iter()
            .map(|a| {
                let (r, c) = a.dim();
                if r == 0 || c == 0 {
                    return Array2::zeros((r, c));
                }
                let mut b = Array2::from_elem((2 * r, 2 * c), F::nan());
                b.slice_mut(s![..;2, ..;2]).assign(&cast(a));
                b
            })
            .collect();
        Data {
            params: arrays.iter().map(cast).collect(),
            big,
            constants: constants.iter().map(cast).collect(),
        }
    }

    fn step2(&self, k: usize) -> ndarray::ArrayView2<'_, F> {
        let b = &self.big[k];
        if b.is_empty() {
            b.view()
        } else {
            b.slice(s![..;2, ..;2])
        }
    }
}

/// One array's leaves that require a gradient: how the gradient of the array itself is
/// the sum over them.
#[derive(Default)]
struct Uses {
    borrowed: bool,
    step2: bool,
    owned: Vec<usize>,
}

/// Picks operands for `op`: fitting ones when some exist (most of the time), else any.
fn pick<F: Elem>(op: &Op<F>, regs: &[Tensor<'_, F>], args: &[usize]) -> Vec<usize> {
    let n = regs.len();
    let mut chosen: Vec<usize> = args[..op.arity].iter().map(|a| a % n).collect();
    if args[0] % 5 == 0 {
        return chosen; // sometimes on purpose unfit
    }
    // try every combination of the first operand's partners, starting at the given ones
    let shapes = |c: &[usize]| c.iter().map(|&i| regs[i].shape()).collect::<Vec<_>>();
    if (op.fits)(&shapes(&chosen)) {
        return chosen;
    }
    match op.arity {
        2 => {
            if let Some(j) = (0..n)
                .map(|d| (chosen[1] + d) % n)
                .find(|&j| (op.fits)(&shapes(&[chosen[0], j])))
            {
                chosen[1] = j;
            }
        }
        3 => {
            'outer: for d1 in 0..n {
                for d2 in 0..n {
                    let c = [chosen[0], (chosen[1] + d1) % n, (chosen[2] + d2) % n];
                    if (op.fits)(&shapes(&c)) {
                        chosen = c.to_vec();
                        break 'outer;
                    }
                }
            }
        }
        _ => {}
    }
    chosen
}

/// Whether `op` runs exactly on a point where it is not differentiable: relu, abs and
/// their kin at an exact 0 (x − x, or a parameter minus its constant copy), clamp at a
/// bound and huber at |a − b| = 1 (to rounding), ties of maximum, max and l1: there
/// central differences average the one-sided slopes at every step size.
fn on_kink<F: Elem>(op: &str, operands: &[Tensor<'_, F>]) -> bool {
    let has = |t: &Tensor<'_, F>, p: &dyn Fn(F) -> bool| {
        t.try_value()
            .is_ok_and(|v| v.len() <= 1 << 16 && v.iter().any(|&x| p(x)))
    };
    let pairs = |p: &dyn Fn(F, F) -> bool| {
        let (Ok(a), Ok(b)) = (operands[0].try_value(), operands[1].try_value()) else {
            return false;
        };
        let shape = (a.nrows().max(b.nrows()), a.ncols().max(b.ncols()));
        match (a.broadcast(shape), b.broadcast(shape)) {
            (Some(a), Some(b)) => {
                a.len() <= 1 << 16 && a.iter().zip(b.iter()).any(|(&x, &y)| p(x, y))
            }
            _ => false,
        }
    };
    let duplicates = |t: &Tensor<'_, F>| {
        t.try_value().is_ok_and(|v| {
            let mut bits: Vec<u64> = v.iter().map(|x| x.as_f64().to_bits()).collect();
            bits.sort_unstable();
            v.len() <= 1 << 16 && bits.windows(2).any(|w| w[0] == w[1])
        })
    };
    // within rounding of a kink at `k` (1 − 10⁻¹⁶ from rounding, in seed 478225, is on
    // huber's kink for finite differences: every step straddles it)
    let near = |x: F, k: f64| (x.as_f64() - k).abs() <= 1e-9 * k.abs().max(1.0);
    match op {
        "relu" | "abs" | "leaky_relu" | "elu" => has(&operands[0], &|x| x == F::zero()),
        "clamp" => has(&operands[0], &|x| near(x, -0.5) || near(x, 0.7)),
        "maximum" | "minimum" | "l1_loss" => pairs(&|a, b| a == b),
        "huber_loss" => pairs(&|a, b| near((a - b).abs(), 1.0)),
        "max" | "min" | "max_axis" | "min_axis" => duplicates(&operands[0]),
        #[cfg(feature = "linalg")]
        "eigh" => close_eigenvalues(&operands[0]),
        #[cfg(feature = "linalg")]
        "inv" | "solve" | "solve_triangular" | "cho_solve" | "det" | "slogdet" | "logdet"
        | "cholesky" => ill_conditioned(&operands[0]),
        _ => false,
    }
}

/// Whether `e` says a derivative does not exist where it was asked for: `det`'s, `slogdet`'s
/// or `logdet`'s at a singular matrix, those through `A⁻¹` at one singular to working
/// precision, `eigh`'s second at a subnormal matrix, or a derivative through a custom op
/// whose VJP is first-order only.
fn undefined(e: &tapegrad::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::NotDifferentiable
            | ErrorKind::Singular { .. }
            | ErrorKind::IllConditioned { .. }
            | ErrorKind::Subnormal { .. }
    )
}

/// `64·ε·Lᵈ`, `L` the largest finite value the program computed (at least 1): how far two
/// computations of a gradient (`d = 2`, products of such values) or of a second derivative
/// (`d = 3`) can differ by rounding where their terms cancel to far less than themselves,
/// and a normwise comparison has nothing to scale by (seeds 65109, 141033: gradients of
/// 10⁻¹⁶ to 10⁻³³ that are 0 in the other form).
fn cancellation<F: Elem>(regs: &[Tensor<'_, F>], d: i32) -> f64 {
    let largest = regs
        .iter()
        .filter_map(|t| t.try_value().ok())
        .filter(|v| v.len() <= 1 << 16)
        .fold(1.0f64, |m, v| {
            v.iter()
                .map(|x| x.as_f64().abs())
                .filter(|x| x.is_finite())
                .fold(m, f64::max)
        });
    64.0 * F::epsilon().as_f64() * largest.powi(d)
}

/// Whether the matrix a linear-algebra op reads (`X·Xᵀ` for a Gram form's `X`; its
/// triangles too, which the triangular ops read) has a condition number past what `F`
/// compares at: there two formulas of one gradient (backward and `Tape::grad`) differ
/// by `cond·ε` times the gradient, as any two implementations would (the `linalg` family
/// checks such matrices against its own oracles).
#[cfg(feature = "linalg")]
fn ill_conditioned<F: Elem>(t: &Tensor<'_, F>) -> bool {
    let Ok(v) = t.try_value() else { return false };
    let a = v.mapv(|x| x.as_f64());
    // (empty matrices may have huge dimensions: their Gram matrix would too)
    if a.is_empty() || a.nrows() > 64 || a.ncols() > 64 || a.iter().any(|x| !x.is_finite()) {
        return false;
    }
    let a = if a.nrows() == a.ncols() {
        a
    } else {
        a.dot(&a.t())
    };
    let limit = if std::mem::size_of::<F>() == 4 {
        1e3
    } else {
        1e6
    };
    let norm = |m: &Array2<f64>| {
        m.rows()
            .into_iter()
            .map(|r| r.iter().map(|x| x.abs()).sum::<f64>())
            .fold(0.0, f64::max)
    };
    let cond = |m: Array2<f64>| {
        let tape = Tape::new();
        match tape.constant(&m).try_inv() {
            Ok(inv) => norm(&m) * norm(&inv.value()),
            Err(_) => f64::INFINITY,
        }
    };
    let n = a.nrows();
    let lower = Array2::from_shape_fn((n, n), |(i, j)| if i >= j { a[[i, j]] } else { 0.0 });
    let upper = Array2::from_shape_fn((n, n), |(i, j)| if i <= j { a[[i, j]] } else { 0.0 });
    [a, lower, upper].into_iter().any(|m| {
        let c = cond(m);
        c.is_nan() || c >= limit
    })
}

/// Whether the symmetric part of `t` has two eigenvalues within `10⁻⁴` of each other
/// (relative to the largest): there `eigh`'s eigenvectors turn fast, or are not
/// differentiable at all.
#[cfg(feature = "linalg")]
fn close_eigenvalues<F: Elem>(t: &Tensor<'_, F>) -> bool {
    let Ok(v) = t.try_value() else { return false };
    let tape = Tape::new();
    let Ok((lam, _)) = tape.constant(v.mapv(|x| x.as_f64())).try_eigh() else {
        return false;
    };
    let lam = lam.value();
    let scale = lam.iter().fold(1.0f64, |m, x| m.max(x.abs()));
    lam.iter()
        .zip(lam.iter().skip(1))
        .any(|(a, b)| (b - a).abs() < 1e-4 * scale)
}

/// What one run of a program produced.
struct Outcome<F: tapegrad::Float> {
    loss: Option<f64>,
    /// Whether every value the program computed was finite (finite differences are an
    /// oracle only then: past an overflow, ∞·0 = NaN is the right gradient of IEEE math).
    finite: bool,
    /// The gradient of each array, summed over its uses (`None`: no use requires one).
    grads: Vec<Option<Array2<F>>>,
    all: Option<Gradients<F>>,
    /// Which ops and recorded gradients succeeded, in order: a perturbed run that took
    /// another path (a matrix that stopped being positive definite) computes another
    /// function, and is no finite-difference oracle.
    path: Vec<bool>,
}

/// Where a program's leaves come from: the arrays of [`Data`] (borrowed, copied,
/// step-2 views, constants), or given tensors (a function for `functional`: every use of
/// array `k` is the tensor `k`, constants are copies).
enum Source<'a, 't, F: Elem> {
    Data(&'t Data<F>),
    Inputs(&'a [Tensor<'t, F>], &'a [Array2<F>]),
}

/// A program recorded on a tape.
struct Recorded<'t, F: Elem> {
    regs: Vec<Tensor<'t, F>>,
    uses: Vec<Uses>,
    /// The leaves that require a gradient: the tensor, its array, and whether it holds
    /// the array transposed.
    leaves: Vec<(Tensor<'t, F>, usize, bool)>,
    /// Whether an op ran exactly on a kink (finite differences are no oracle there).
    kinked: bool,
    path: Vec<bool>,
}

/// Records `p`'s instructions on `tape`, checking the invariants of each op.
fn record<'t, F: Elem>(
    p: &Program,
    tape: &'t Tape<'t, F>,
    source: Source<'_, 't, F>,
    stranger: Option<Tensor<'t, F>>,
) -> Recorded<'t, F> {
    let ops = ops::<F>();
    let mut regs: Vec<Tensor<'t, F>> = Vec::new();
    let mut uses: Vec<Uses> = (0..p.arrays.len()).map(|_| Uses::default()).collect();
    let mut leaves = Vec::new();
    let mut kinked = false;
    let mut path = Vec::new();
    for instr in &p.instrs {
        match instr {
            &Instr::Leaf(k, kind) => {
                // whether the leaf is new (a borrowed array already on the tape comes back
                // as the same leaf, or its `t`)
                let fresh = match kind {
                    Leaf::Param | Leaf::ParamT => !uses[k].borrowed,
                    Leaf::Step2 => !uses[k].step2,
                    _ => true,
                };
                let (t, transposed) = match source {
                    Source::Data(data) => match kind {
                        Leaf::Param => {
                            uses[k].borrowed = true;
                            (tape.param(&data.params[k]), false)
                        }
                        Leaf::ParamT => {
                            uses[k].borrowed = true;
                            (tape.param(data.params[k].t()), true)
                        }
                        Leaf::Step2 => {
                            uses[k].step2 = true;
                            (tape.param(data.step2(k)), false)
                        }
                        Leaf::Owned => {
                            let t = tape.param(data.params[k].clone());
                            uses[k].owned.push(regs.len());
                            (t, false)
                        }
                        Leaf::Constant => (tape.constant(&data.constants[k]), false),
                        Leaf::NoGradParam => {
                            (tape.no_grad(|| tape.param(&data.constants[k])), false)
                        }
                    },
                    Source::Inputs(xs, constants) => match kind {
                        Leaf::Param | Leaf::Step2 | Leaf::Owned => (xs[k], false),
                        Leaf::ParamT => (xs[k].t(), true),
                        Leaf::Constant => (tape.constant(constants[k].clone()), false),
                        Leaf::NoGradParam => {
                            (tape.no_grad(|| tape.param(constants[k].clone())), false)
                        }
                    },
                };
                if fresh && t.requires_grad() && t.op() == "leaf" {
                    leaves.push((t, k, transposed));
                }
                regs.push(t);
            }
            Instr::Detach(i) if !regs.is_empty() => {
                let t = regs[i % regs.len()].detach();
                assert!(!t.requires_grad());
                regs.push(t);
            }
            Instr::Detach(_) => {}
            Instr::Grad(a, b) if !regs.is_empty() => {
                let (y, x) = (regs[a % regs.len()], regs[b % regs.len()]);
                let y = if y.shape() == (1, 1) { y } else { y.sum() };
                let g = tape.grad(y, &[x]);
                path.push(g.is_ok());
                let g = match g {
                    Ok(g) => g[0],
                    // the sums of a huge empty matrix's lanes do not fit
                    // (or a derivative that does not exist: slogdet's or det's second at a
                    // singular matrix, those through A⁻¹ at one singular to working
                    // precision; or a second derivative through a custom op without a
                    // tensor form)
                    Err(e)
                        if undefined(&e)
                            || matches!(
                                e.kind(),
                                ErrorKind::OutOfMemory { .. } | ErrorKind::TooLarge { .. }
                            ) =>
                    {
                        continue;
                    }
                    Err(e) => panic!("grad: {e}"),
                };
                assert_eq!(g.shape(), x.shape(), "grad's shape");
                if trace() {
                    eprintln!("grad -> {:?}", g.value().mapv(|v| v.as_f64()));
                }
                regs.push(g);
            }
            Instr::Grad(..) => {}
            Instr::Foreign { op, arg } if !regs.is_empty() => {
                let op = &ops[op % ops.len()];
                if let (2, Some(stranger)) = (op.arity, stranger) {
                    let a = regs[arg % regs.len()];
                    let err = (op.f)(&[a, stranger]).unwrap_err();
                    let foreign = matches!(err.kind(), ErrorKind::ForeignTensor);
                    let shape = matches!(err.kind(), ErrorKind::Shape { .. });
                    assert!(foreign || shape, "{}: {err}", op.name);
                }
            }
            Instr::Foreign { .. } => {}
            Instr::Op { op, args, no_grad } if !regs.is_empty() => {
                let op = &ops[op % ops.len()];
                let chosen = pick(op, &regs, args);
                let operands: Vec<_> = chosen.iter().map(|&i| regs[i]).collect();
                let shapes: Vec<_> = operands.iter().map(|t| t.shape()).collect();
                kinked |= on_kink(op.name, &operands);
                let result = if *no_grad {
                    tape.no_grad(|| (op.f)(&operands))
                } else {
                    (op.f)(&operands)
                };
                if trace() {
                    let shown = result.as_ref().map(|t| t.value().mapv(|v| v.as_f64()));
                    eprintln!("{} {chosen:?} {shapes:?} -> {shown:?}", op.name);
                }
                path.push(result.is_ok());
                match result {
                    Ok(t) => {
                        if *no_grad {
                            assert!(!t.requires_grad(), "{} inside no_grad", op.name);
                        }
                        regs.push(t);
                    }
                    Err(e) => {
                        let expected = matches!(
                            e.kind(),
                            ErrorKind::Shape { .. }
                                | ErrorKind::TooLarge { .. }
                                | ErrorKind::OutOfMemory { .. }
                                | ErrorKind::TargetCount { .. }
                                | ErrorKind::ClassIndex { .. }
                                | ErrorKind::Slice { .. }
                                | ErrorKind::Index { .. }
                                | ErrorKind::Empty { .. }
                                // the linear-algebra ops on matrices they cannot take
                                | ErrorKind::NotSquare { .. }
                                | ErrorKind::Singular { .. }
                                | ErrorKind::NotPositiveDefinite { .. }
                                | ErrorKind::NotFinite { .. }
                                // an eigenvalue iteration on entries near 1e300
                                | ErrorKind::Lapack { .. }
                        );
                        assert!(expected, "{} on {shapes:?}: {e}", op.name);
                        if let ErrorKind::Shape { .. } = e.kind() {
                            assert!(!(op.fits)(&shapes), "{} refused {shapes:?}: {e}", op.name);
                        }
                    }
                }
            }
            Instr::Op { .. } => {}
        }
    }
    Recorded {
        regs,
        uses,
        leaves,
        kinked,
        path,
    }
}

/// Runs `p` on `data`. Checks the invariants of one run; returns the loss and gradients.
fn run<F: Elem>(p: &Program, data: &Data<F>, previous: Option<Gradients<F>>) -> Outcome<F> {
    let tape = Tape::<F>::new();
    let other = Tape::<F>::new();
    let stranger = other.param(Array2::ones((1, 1)));
    let Recorded {
        regs,
        uses,
        leaves,
        kinked,
        path,
    } = record(p, &tape, Source::Data(data), Some(stranger));
    let Some(&last) = regs.last() else {
        return Outcome {
            loss: None,
            finite: false,
            grads: vec![None; p.arrays.len()],
            all: None,
            path,
        };
    };
    let finite = !kinked
        && regs.iter().all(|t| {
            let v = t.value();
            v.len() <= 1 << 16 && v.iter().all(|x| x.is_finite())
        });
    // the root: the last register, summed to a scalar unless backward gets a seed
    let root = if p.seeded || last.shape() == (1, 1) {
        last
    } else {
        last.sum()
    };
    let loss = if root.shape() == (1, 1) {
        Some(root.item().as_f64())
    } else {
        None
    };
    let mut opts = BackwardOptions::new().retain_graph(p.retain);
    let mut seed = None;
    if root.shape() != (1, 1) {
        let mut rng = StdRng::seed_from_u64(p.seed ^ 0x5eed);
        let (r, c) = root.shape();
        if r.checked_mul(c).is_some_and(|n| n <= 1 << 20) {
            let s = Array2::from_shape_simple_fn((r, c), || {
                let v: f64 = StandardNormal.sample(&mut rng);
                F::cast(v)
            });
            opts = opts.seed(s.clone());
            seed = Some(s);
        } else {
            return Outcome {
                loss: None,
                finite,
                grads: vec![None; p.arrays.len()],
                all: None,
                path,
            };
        }
    }
    if let Some(previous) = previous {
        opts = opts.reuse(previous);
    }
    // the same gradients recorded by Tape::grad (before backward releases anything)
    let leaf_tensors: Vec<Tensor<'_, F>> = leaves.iter().map(|l| l.0).collect();
    let recorded = if finite && root.requires_grad() {
        let r = match &seed {
            None => tape.grad(root, &leaf_tensors),
            Some(s) => tape.grad_seeded(root, tape.constant(s.clone()), &leaf_tensors),
        };
        match r {
            Ok(gs) => Some(gs.iter().map(|g| g.value()).collect::<Vec<_>>()),
            Err(e) => {
                let expected = undefined(&e)
                    || matches!(
                        e.kind(),
                        ErrorKind::TooLarge { .. } | ErrorKind::OutOfMemory { .. }
                    );
                assert!(expected, "Tape::grad: {e}");
                None
            }
        }
    } else {
        None
    };
    let grads = match tape.backward_with(root, opts.clone()) {
        Ok(g) if trace() => {
            for (i, t) in regs.iter().enumerate() {
                eprintln!("register {i}: gradient {:?}", g.get(*t));
            }
            g
        }
        Ok(g) => g,
        Err(e) => {
            // no gradient to take, or one that does not exist (slogdet at a singular
            // matrix; inv, solve, slogdet and logdet at one singular to working precision;
            // eigh's second at a subnormal matrix, recorded by `Tape::grad`)
            // (or a second derivative through a custom op without a tensor form, recorded
            // by `Tape::grad` earlier in the program)
            let undefined = matches!(e.kind(), ErrorKind::Singular { .. })
                && matches!(e.op(), "slogdet" | "logdet")
                || matches!(e.kind(), ErrorKind::IllConditioned { .. })
                    && matches!(e.op(), "inv" | "solve" | "slogdet" | "logdet")
                || matches!(e.kind(), ErrorKind::Subnormal { .. }) && e.op() == "eigh"
                || e.kind() == &ErrorKind::NotDifferentiable;
            assert!(
                undefined || (!root.requires_grad() && e.kind() == &ErrorKind::NoGradient),
                "backward: {e}"
            );
            return Outcome {
                loss,
                finite,
                grads: vec![None; p.arrays.len()],
                all: None,
                path,
            };
        }
    };
    for (t, ..) in &leaves {
        let g = grads
            .try_get(*t)
            .expect("every leaf requiring a gradient has one");
        assert_eq!(g.dim(), t.shape(), "gradient shape");
    }
    if let Some(recorded) = &recorded {
        let tol = if std::mem::size_of::<F>() == 4 {
            1e-3
        } else {
            1e-7
        };
        let floor = cancellation(&regs, 2);
        for ((t, ..), r) in leaves.iter().zip(recorded) {
            let g = grads.get(*t).expect("checked above");
            // NaN and ±∞ alike: past an infinite derivative (`sqrt` at 0) which of them
            // an element holds depends on the order of the operations that meet it
            // (∞ − ∞ in one rule form, ∞ in the other); a finite element must be finite
            // in both
            let finite = |x: &Array2<F>| x.mapv(|v| if v.is_finite() { v } else { F::nan() });
            assert!(
                close_within(&finite(g), &finite(r), tol, floor),
                "Tape::grad gives {r}, backward gives {g} (leaf {t:?})"
            );
        }
    }
    // the root, and every value, can be read (or the read is a typed error)
    if let Some(l) = loss {
        assert!(root.item().as_f64().to_bits() == l.to_bits() || l.is_nan());
    }
    for t in &regs {
        if let Err(e) = t.try_value() {
            assert!(matches!(e.kind(), ErrorKind::Released { .. }), "{e}");
        }
    }
    // a second backward: the same gradients when retained, a typed error otherwise
    match tape.backward_with(root, BackwardOptions::new().retain_graph(true)) {
        Ok(again) if p.retain => {
            for (t, ..) in &leaves {
                let (a, b) = (again.get(*t).unwrap(), grads.get(*t).unwrap());
                assert!(same_bits(a, b), "a retained graph gave other gradients");
            }
        }
        Ok(_) => panic!("a second backward on a released tape succeeded"),
        Err(e) if p.retain => {
            // only a seeded root cannot be run again without its seed
            assert!(matches!(e.kind(), ErrorKind::NotScalar { .. }), "{e}")
        }
        Err(e) => assert!(
            matches!(
                e.kind(),
                ErrorKind::BackwardTwice { .. } | ErrorKind::NotScalar { .. }
            ),
            "{e}"
        ),
    }
    let per_array = (0..p.arrays.len())
        .map(|k| {
            let u = &uses[k];
            let mut total: Option<Array2<F>> = None;
            let mut add = |g: &Array2<F>| match &mut total {
                Some(t) => *t += g,
                None => total = Some(g.clone()),
            };
            if u.borrowed {
                add(grads
                    .try_wrt(&data.params[k])
                    .expect("a borrowed parameter"));
            }
            if u.step2 {
                match grads.try_wrt(&data.step2(k)) {
                    Ok(g) => add(g),
                    Err(e) => panic!("step-2 view: {e}"),
                }
            }
            for &i in &u.owned {
                add(grads.get(regs[i]).expect("an owned parameter"));
            }
            // (empty arrays have no identity: any empty view of that shape finds them)
            if !u.borrowed && !data.params[k].is_empty() {
                let err = grads.try_wrt(&data.params[k]).unwrap_err();
                assert!(
                    matches!(
                        err.kind(),
                        ErrorKind::Missing(Missing::NotOnTape | Missing::Constant)
                    ),
                    "{err}"
                );
            }
            total
        })
        .collect();
    Outcome {
        loss,
        finite,
        grads: per_array,
        all: Some(grads),
        path,
    }
}

fn same_bits<F: Elem>(a: &Array2<F>, b: &Array2<F>) -> bool {
    a.dim() == b.dim()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.as_f64().to_bits() == y.as_f64().to_bits())
}

/// The program's arrays as a model, for the optimizer step and the checkpoint round trip:
/// the same storage the tape borrowed, so gradients are found by it.
struct Pool<'a, F>(&'a mut [Array2<F>]);

impl<F: Elem> Parameters<F> for Pool<'_, F> {
    fn visit<'b>(&'b self, f: &mut dyn FnMut(&str, &'b Array2<F>)) {
        for (i, a) in self.0.iter().enumerate() {
            f(&format!("a{i}"), a);
        }
    }
    fn visit_mut<'b>(&'b mut self, f: &mut dyn FnMut(&str, &'b mut Array2<F>)) {
        for (i, a) in self.0.iter_mut().enumerate() {
            f(&format!("a{i}"), a);
        }
    }
}

/// Runs program `p` in `F` and checks everything but the finite differences.
fn check<F: Elem>(p: &Program) -> (Data<F>, Outcome<F>) {
    let mut data = Data::<F>::new(&p.arrays, &p.arrays);
    let first = run(p, &data, None);
    if p.reuse && first.all.is_some() {
        // the same program again, writing into the first run's buffers
        let previous = first.all.clone();
        let second = run(p, &data, previous);
        for (a, b) in first.grads.iter().zip(&second.grads) {
            if let (Some(a), Some(b)) = (a, b) {
                assert!(same_bits(a, b), "reused buffers gave other gradients");
            }
        }
    }
    // an optimizer step: parameters without a gradient must be frozen, then it succeeds
    if let Some(grads) = &first.all {
        let frozen: Vec<String> = (0..data.params.len())
            .filter(|&i| grads.try_wrt(&data.params[i]).is_err())
            .map(|i| format!("a{i}"))
            .collect();
        let mut model = Pool(&mut data.params);
        let r = Sgd::new(F::cast(0.01)).step(&mut model, grads);
        assert_eq!(r.is_err(), !frozen.is_empty(), "{r:?}");
        Adam::new(F::cast(0.01))
            .freeze(frozen)
            .step(&mut model, grads)
            .expect("every parameter has a gradient or is frozen");
        // a checkpoint round trip is bit-exact; a corrupted one is an error or a load
        let bytes = io::to_bytes(&model).unwrap();
        let mut zeros: Vec<_> = model.0.iter().map(|a| Array2::zeros(a.dim())).collect();
        let mut back = Pool(&mut zeros);
        io::from_bytes(&mut back, &bytes).unwrap();
        for (a, b) in back.0.iter().zip(model.0.iter()) {
            assert!(same_bits(a, b), "checkpoint round trip");
        }
        let mut bad = bytes.clone();
        let i = (p.seed as usize) % bad.len();
        bad[i] ^= 0x5a;
        let _ = io::from_bytes(&mut back, &bad);
    }
    (data, first)
}

/// The directional derivative of `p`'s loss along random directions by central
/// differences, at two step sizes; `None` where they disagree (a kink, a tie, a loss that
/// is not finite) or the program has no loss.
fn numeric(p: &Program, analytic: &Outcome<f64>) -> Option<(f64, f64)> {
    analytic.loss.filter(|_| analytic.finite)?;
    // no gradients to compare where backward refused (a second derivative through a
    // first-order-only custom op): the missing gradients are not zeros
    analytic.all.as_ref()?;
    let mut rng = StdRng::seed_from_u64(p.seed ^ 0xd1f);
    let dirs: Vec<Array2<f64>> = p
        .arrays
        .iter()
        .map(|a| {
            Array2::from_shape_simple_fn(a.dim(), || {
                let v: f64 = StandardNormal.sample(&mut rng);
                v
            })
        })
        .collect();
    let mut expected = 0.0;
    for (g, d) in analytic.grads.iter().zip(&dirs) {
        if let Some(g) = g {
            expected += (g * d).sum();
        }
    }
    if !expected.is_finite() {
        // a point where the function is not differentiable (√ at 0 through x − x): the
        // chain rule gives ∞ · 0 there, as in every autodiff system
        return None;
    }
    let at = |eps: f64| -> Option<f64> {
        let moved = |sign: f64| -> Option<f64> {
            let arrays: Vec<_> = p
                .arrays
                .iter()
                .zip(&dirs)
                .map(|(a, d)| a + &(d * (sign * eps)))
                .collect();
            let data = Data::<f64>::new(&arrays, &p.arrays);
            let quiet = Program {
                retain: true,
                reuse: false,
                ..p.clone()
            };
            let moved = run(&quiet, &data, None);
            (moved.path == analytic.path).then_some(moved.loss)?
        };
        Some((moved(1.0)? - moved(-1.0)?) / (2.0 * eps))
    };
    let (coarse, fine) = (at(1e-4)?, at(1e-5)?);
    let scale = 1.0 + coarse.abs().max(fine.abs());
    if !(coarse.is_finite() && fine.is_finite()) || (coarse - fine).abs() > 1e-4 * scale {
        return None;
    }
    Some((expected, fine))
}

pub(crate) const FAMILY: crate::Family = crate::Family {
    name: "programs",
    default: 300,
    run: fuzz_one,
    describe,
};

fn describe(seed: u64) -> String {
    format!("{:?}", generate(seed, ops::<f64>().len()))
}

/// Runs program `seed` in f64 (with the finite-difference checks) or f32. Returns whether
/// the finite differences were compared.
pub(crate) fn fuzz_one(seed: u64) -> bool {
    let compared = std::cell::Cell::new(false);
    crate::all(vec![
        Box::new(|| {
            if seed % 2 == 0 {
                limits::<f64>(seed);
            } else {
                limits::<f32>(seed);
            }
        }),
        Box::new(|| compared.set(program(seed))),
    ]);
    compared.get()
}

/// Program `seed`: see [`fuzz_one`].
fn program(seed: u64) -> bool {
    let n_ops = ops::<f64>().len();
    let p = generate(seed, n_ops);
    // every instantiation of the elementwise kernels (`Avx2` is the baseline on a CPU
    // without it): each keeps every invariant
    let paths = [Path::Avx2, Path::Baseline, Path::Std];
    set_path(paths[(seed / 4 % 3) as usize]);
    if seed % 4 == 3 {
        check::<f32>(&p);
        return false;
    }
    let (_, outcome) = check::<f64>(&p);
    // finite, moderate, and away from the kinks at exactly 0 (relu, and later abs, ...),
    // where central differences average the one-sided slopes at every step size
    let finite = p.arrays.iter().all(|a| {
        a.iter()
            .all(|v| v.is_finite() && v.abs() < 1e6 && *v != 0.0)
    });
    // detach and no_grad cut the gradient where the value still depends on the input:
    // finite differences are no oracle there
    let cut = p
        .instrs
        .iter()
        .any(|i| matches!(i, Instr::Detach(_) | Instr::Op { no_grad: true, .. }));
    if cut {
        return false;
    }
    if !finite
        || p.arrays.iter().any(|a| {
            a.len() > 64
                || a.is_empty() && a.dim() != (0, 0) && (a.nrows() >= HUGE || a.ncols() >= HUGE)
        })
    {
        return false;
    }
    match numeric(&p, &outcome) {
        Some((analytic, numeric)) => {
            let tol = 1e-5 * (1.0 + numeric.abs());
            assert!(
                (analytic - numeric).abs() <= tol,
                "gradient: backward gives {analytic:e} along the direction, finite differences {numeric:e}"
            );
            second_order(&p, &outcome, analytic);
            true
        }
        None => false,
    }
}

/// The gradient of each array at `arrays` by backward (summed over its uses), if the run
/// takes `p`'s path.
fn gradients_at(
    p: &Program,
    arrays: &[Array2<f64>],
    path: &[bool],
) -> Option<Vec<Option<Array2<f64>>>> {
    let data = Data::<f64>::new(arrays, &p.arrays);
    let quiet = Program {
        retain: true,
        reuse: false,
        ..p.clone()
    };
    let moved = run(&quiet, &data, None);
    (moved.path == path && moved.finite).then_some(moved.grads)
}

/// Program `p` as a function of its arrays (`constants` for its constants), for
/// `functional`.
fn replay<'t>(p: &Program, constants: &[Array2<f64>], xs: &[Tensor<'t, f64>]) -> Tensor<'t, f64> {
    let rec = record(p, xs[0].tape(), Source::Inputs(xs, constants), None);
    let last = *rec.regs.last().expect("a program with a loss");
    if last.shape() == (1, 1) {
        last
    } else {
        last.sum()
    }
}

/// The second order of a program whose first order matched finite differences: `H·u` by
/// `Tape::grad` twice and by `functional::hvp` against central differences of backward's
/// gradient along `v`, and `functional::jvp` along `v` against backward's gradient
/// (`first`, its derivative along `v`).
fn second_order(p: &Program, outcome: &Outcome<f64>, first: f64) {
    let mut rng = StdRng::seed_from_u64(p.seed ^ 0xd1f);
    let v: Vec<Array2<f64>> = p.arrays.iter().map(|a| randn(a.dim(), &mut rng)).collect();
    let mut rng = StdRng::seed_from_u64(p.seed ^ 0x5ec);
    let u: Vec<Array2<f64>> = p.arrays.iter().map(|a| randn(a.dim(), &mut rng)).collect();
    // H·u by Tape::grad twice, per array (summed over its leaves)
    let data = Data::<f64>::new(&p.arrays, &p.arrays);
    let tape = Tape::new();
    let rec = record(p, &tape, Source::Data(&data), None);
    let last = *rec.regs.last().expect("a program with a loss");
    let root = if last.shape() == (1, 1) {
        last
    } else {
        last.sum()
    };
    let leaves: Vec<Tensor<'_, f64>> = rec.leaves.iter().map(|l| l.0).collect();
    let gs = match tape.grad(root, &leaves) {
        Ok(gs) => gs,
        Err(e) if undefined(&e) => return,
        Err(e) => panic!("Tape::grad: {e}"),
    };
    let mut phi = tape.scalar(0.0);
    for (g, &(_, k, transposed)) in gs.iter().zip(&rec.leaves) {
        let d = if transposed {
            u[k].t().to_owned()
        } else {
            u[k].clone()
        };
        phi = phi.add(
            g.try_mul(tape.constant(d))
                .expect("a gradient has its leaf's shape")
                .sum(),
        );
    }
    let hs = match tape.grad(phi, &leaves) {
        Ok(hs) => hs,
        Err(e) if undefined(&e) => return,
        Err(e) => panic!("Tape::grad of a recorded gradient: {e}"),
    };
    let mut hu: Vec<Array2<f64>> = p.arrays.iter().map(|a| Array2::zeros(a.dim())).collect();
    for (h, &(_, k, transposed)) in hs.iter().zip(&rec.leaves) {
        let h = h.value();
        hu[k] += &if transposed { h.t().to_owned() } else { h };
    }
    let analytic: f64 = hu.iter().zip(&v).map(|(h, d)| dot(h, d)).sum();
    if !analytic.is_finite() {
        return;
    }
    let numeric = central(1e-4, &mut |eps| {
        let arrays: Vec<_> = p
            .arrays
            .iter()
            .zip(&v)
            .map(|(a, d)| a + &(d * eps))
            .collect();
        let grads = gradients_at(p, &arrays, &outcome.path)?;
        Some(
            grads
                .iter()
                .zip(&u)
                .map(|(g, d)| g.as_ref().map_or(0.0, |g| dot(g, d)))
                .sum(),
        )
    });
    if let Some(numeric) = numeric {
        agree("second order (Tape::grad twice)", analytic, numeric, 1e-5);
    }
    // the program as a function of its arrays, for `functional` (not for programs that
    // record a gradient with respect to a leaf: in the function, every use of an array is
    // one input, where on the tape a copy or a step-2 view is a leaf of its own)
    if p.instrs.iter().any(|i| matches!(i, Instr::Grad(..))) {
        return;
    }
    let constants = p.arrays.clone();
    let views: Vec<_> = p.arrays.iter().map(|a| a.view()).collect();
    let uv: Vec<_> = u.iter().map(|a| a.view()).collect();
    let vv: Vec<_> = v.iter().map(|a| a.view()).collect();
    // (every array of a program is an input here, also one that only went on the tape as
    // a constant: its gradient is zeros)
    let used: Vec<bool> = (0..p.arrays.len())
        .map(|k| rec.leaves.iter().any(|l| l.1 == k))
        .collect();
    match functional::hvp(|xs| replay(p, &constants, &xs), &views, &uv) {
        Ok((_, hvp)) => {
            let floor = cancellation(&rec.regs, 3);
            for (k, (a, b)) in hvp.iter().zip(&hu).enumerate() {
                assert!(
                    !used[k] || close_within(a, b, 1e-7, floor),
                    "functional::hvp gives {a}, Tape::grad twice {b} (array {k})"
                );
            }
        }
        Err(e) if undefined(&e) => {}
        Err(e) => panic!("functional::hvp: {e}"),
    }
    match functional::jvp(|xs| replay(p, &constants, &xs), &views, &vv) {
        // (∞·0 where an empty array meets a derivative that is infinite at 0)
        Ok((_, jv)) if jv.len() == 1 && !jv[[0, 0]].is_finite() => {}
        Ok((_, jv)) if jv.len() == 1 => agree("functional::jvp", jv[[0, 0]], first, 1e-7),
        Ok((_, jv)) => panic!("functional::jvp of a scalar gave {jv}"),
        Err(e) if undefined(&e) => {}
        Err(e) => panic!("functional::jvp: {e}"),
    }
}

/// An elementwise op or loss of logits (and targets).
type LimitOp<F> = for<'t> fn(Tensor<'t, F>, Tensor<'t, F>) -> tapegrad::Result<Tensor<'t, F>>;

/// Elementwise ops and losses whose value and derivative have limits at ±∞ (and at the
/// largest finite numbers), with their second operand where they take one.
#[rustfmt::skip]
fn limit_ops<F: Elem>() -> Vec<(&'static str, LimitOp<F>)> {
    vec![
        ("sigmoid", |x, _| Ok(x.sigmoid())),
        ("tanh", |x, _| Ok(x.tanh())),
        ("softplus", |x, _| Ok(x.softplus())),
        ("silu", |x, _| Ok(x.silu())),
        ("gelu", |x, _| Ok(x.gelu())),
        ("gelu_tanh", |x, _| Ok(x.gelu_tanh())),
        ("elu", |x, _| Ok(x.elu(F::one()))),
        ("leaky_relu", |x, _| Ok(x.leaky_relu(F::cast(0.1)))),
        ("relu", |x, _| Ok(x.relu())),
        ("erf", |x, _| Ok(x.erf())),
        ("exp", |x, _| Ok(x.exp())),
        ("clamp", |x, _| Ok(x.clamp(F::cast(-0.5), F::cast(0.7)))),
        ("bce_with_logits", |x, t| x.try_bce_with_logits(t)),
        ("huber_loss", |x, t| x.try_huber_loss(t, F::one())),
    ]
}

/// One op of [`limit_ops`] at logits among ±∞, ±the largest finite numbers and large
/// values (targets in [0, 1]): its value and its gradient hold no NaN, since the limits
/// exist.
fn limits<F: Elem>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x1137);
    let ops = limit_ops::<F>();
    let (name, f) = ops[rng.random_range(0..ops.len())];
    let big = [
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MAX,
        f64::MIN,
        1e4,
        -1e4,
        800.0,
        -800.0,
        0.5,
    ];
    let n = rng.random_range(1..=4);
    let x = Array2::from_shape_simple_fn((1, n), || F::cast(big[rng.random_range(0..big.len())]));
    let t =
        Array2::from_shape_simple_fn((1, n), || F::cast([0.0, 1.0, 0.3][rng.random_range(0..3)]));
    let tape = Tape::<F>::new();
    let xt = tape.param(&x);
    let y = f(xt, tape.constant(&t)).unwrap_or_else(|e| panic!("{name} at {x}: {e}"));
    let value = y.value();
    assert!(
        value.iter().all(|v| !v.is_nan()),
        "{name} at {x} (targets {t}) is {value}: NaN where the limit exists"
    );
    let loss = if y.shape() == (1, 1) { y } else { y.sum() };
    let grads = tape.backward(loss).expect("a gradient");
    let g = grads.get(xt).expect("the logits' gradient");
    assert!(
        g.iter().all(|v| !v.is_nan()),
        "the derivative of {name} at {x} (targets {t}) is {g}: NaN where the limit exists"
    );
}
