//! Every op against two independent oracles (central finite differences in f64, and the
//! dot-product test), over shapes including 1 × 1, 1 × n, n × 1 and odd sizes, and over
//! input layouts: C order, F order (transposed views) and step-2 slices.
//!
//! One table, one loop (JAX's `grad_test_spec`, PyTorch's `op_db`). `every_op_has_a_case`
//! fails when a public op appears in `src/ops` without a case here or a row in the rule
//! table of `src/ops/mod.rs`.

use std::collections::BTreeSet;

use ndarray::{Array2, ArrayView2, Axis, s};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use tapegrad::check::{CheckOptions, gradcheck, vjp_dot_test};
use tapegrad::{BackwardOptions, Tape, Tensor};

type OpFn = for<'t> fn(&[Tensor<'t, f64>]) -> Tensor<'t, f64>;

/// Where an input's values are drawn from (JAX's `rng_factory`).
#[derive(Clone, Copy, Debug)]
enum Domain {
    /// Standard normal.
    Normal,
    /// Uniform in [0.5, 2]: log, sqrt, denominators, negative powers.
    Positive,
    /// |x| uniform in [0.2, 2], random sign: away from relu's kink.
    AwayFromZero,
    /// Positive rows summing to 1: cross-entropy targets.
    Probabilities,
}

/// The input shapes of a case, from a base shape (r, c).
type Shapes = fn(usize, usize) -> Vec<(usize, usize)>;

struct Case {
    op: &'static str,
    f: OpFn,
    shapes: Shapes,
    domains: &'static [Domain],
}

const N: Domain = Domain::Normal;

fn one(r: usize, c: usize) -> Vec<(usize, usize)> {
    vec![(r, c)]
}
fn same(r: usize, c: usize) -> Vec<(usize, usize)> {
    vec![(r, c), (r, c)]
}
fn row(r: usize, c: usize) -> Vec<(usize, usize)> {
    vec![(r, c), (1, c)]
}
fn col(r: usize, c: usize) -> Vec<(usize, usize)> {
    vec![(r, c), (r, 1)]
}
fn scalar_rhs(r: usize, c: usize) -> Vec<(usize, usize)> {
    vec![(r, c), (1, 1)]
}
fn row_lhs(r: usize, c: usize) -> Vec<(usize, usize)> {
    vec![(1, c), (r, c)]
}
fn outer(r: usize, c: usize) -> Vec<(usize, usize)> {
    vec![(r, 1), (1, c)]
}
fn matmul(r: usize, c: usize) -> Vec<(usize, usize)> {
    vec![(r, c), (c, r + 2)]
}
fn matmul_tn(r: usize, c: usize) -> Vec<(usize, usize)> {
    vec![(c, r), (c, r + 1)]
}

fn indices(r: usize, c: usize) -> Vec<usize> {
    (0..r).map(|i| (3 * i + 1) % c).collect()
}

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    use Domain::*;
    vec![
        Case { op: "matmul", f: |x| x[0].matmul(x[1]), shapes: matmul, domains: &[N, N] },
        Case { op: "matmul", f: |x| x[0].t().matmul(x[1]), shapes: matmul_tn, domains: &[N, N] },
        Case { op: "matmul", f: |x| x[0].matmul(x[0].t()), shapes: one, domains: &[N] },
        Case { op: "add", f: |x| x[0].add(x[1]), shapes: same, domains: &[N, N] },
        Case { op: "add", f: |x| x[0].add(x[1]), shapes: row_lhs, domains: &[N, N] },
        Case { op: "add", f: |x| x[0].add(x[1]), shapes: scalar_rhs, domains: &[N, N] },
        Case { op: "add", f: |x| x[0].add(x[1]), shapes: outer, domains: &[N, N] },
        Case { op: "sub", f: |x| x[0].sub(x[1]), shapes: same, domains: &[N, N] },
        Case { op: "sub", f: |x| x[0].sub(x[1]), shapes: col, domains: &[N, N] },
        Case { op: "mul", f: |x| x[0].mul(x[1]), shapes: same, domains: &[N, N] },
        Case { op: "mul", f: |x| x[0].mul(x[1]), shapes: row, domains: &[N, N] },
        Case { op: "mul", f: |x| x[0].mul(x[0]), shapes: one, domains: &[N] },
        Case { op: "div", f: |x| x[0].div(x[1]), shapes: same, domains: &[N, Positive] },
        Case { op: "div", f: |x| x[0].div(x[1]), shapes: col, domains: &[N, Positive] },
        Case { op: "neg", f: |x| x[0].neg(), shapes: one, domains: &[N] },
        Case { op: "add_scalar", f: |x| x[0].add_scalar(0.75), shapes: one, domains: &[N] },
        Case { op: "mul_scalar", f: |x| x[0].mul_scalar(-1.25), shapes: one, domains: &[N] },
        Case { op: "add_row", f: |x| x[0].add_row(x[1]), shapes: row, domains: &[N, N] },
        Case { op: "add_col", f: |x| x[0].add_col(x[1]), shapes: col, domains: &[N, N] },
        Case { op: "sum", f: |x| x[0].sum(), shapes: one, domains: &[N] },
        Case { op: "mean", f: |x| x[0].mean(), shapes: one, domains: &[N] },
        Case { op: "sum_axis", f: |x| x[0].sum_axis(Axis(0)), shapes: one, domains: &[N] },
        Case { op: "sum_axis", f: |x| x[0].sum_axis(Axis(1)), shapes: one, domains: &[N] },
        Case { op: "mean_axis", f: |x| x[0].mean_axis(Axis(0)), shapes: one, domains: &[N] },
        Case { op: "mean_axis", f: |x| x[0].mean_axis(Axis(1)), shapes: one, domains: &[N] },
        Case { op: "t", f: |x| x[0].t(), shapes: one, domains: &[N] },
        Case { op: "t", f: |x| x[0].t().t().add(x[0]).t(), shapes: one, domains: &[N] },
        Case { op: "sigmoid", f: |x| x[0].sigmoid(), shapes: one, domains: &[N] },
        Case { op: "tanh", f: |x| x[0].tanh(), shapes: one, domains: &[N] },
        Case { op: "relu", f: |x| x[0].relu(), shapes: one, domains: &[AwayFromZero] },
        Case { op: "exp", f: |x| x[0].exp(), shapes: one, domains: &[N] },
        Case { op: "log", f: |x| x[0].log(), shapes: one, domains: &[Positive] },
        Case { op: "sqrt", f: |x| x[0].sqrt(), shapes: one, domains: &[Positive] },
        Case { op: "square", f: |x| x[0].square(), shapes: one, domains: &[N] },
        Case { op: "powi", f: |x| x[0].powi(3), shapes: one, domains: &[N] },
        Case { op: "powi", f: |x| x[0].powi(-2), shapes: one, domains: &[Positive] },
        Case { op: "mse_loss", f: |x| x[0].mse_loss(x[1]), shapes: same, domains: &[N, N] },
        Case { op: "softmax_cross_entropy", f: |x| x[0].softmax_cross_entropy(x[1]), shapes: same, domains: &[N, Probabilities] },
        Case {
            op: "softmax_cross_entropy_indices",
            f: |x| x[0].softmax_cross_entropy_indices(&indices(x[0].rows(), x[0].cols())),
            shapes: one,
            domains: &[N],
        },
    ]
}

/// Base shapes (r, c): 1 × 1, 1 × n, n × 1, odd sizes, and one above 7 in every
/// dimension so that matmuls take the BLAS path under the `blas` feature.
const SHAPES: [(usize, usize); 6] = [(1, 1), (1, 5), (4, 1), (3, 5), (7, 2), (9, 11)];

fn draw(shape: (usize, usize), domain: Domain, rng: &mut StdRng) -> Array2<f64> {
    let mut a = Array2::from_shape_simple_fn(shape, || match domain {
        Domain::Normal => StandardNormal.sample(rng),
        Domain::Positive | Domain::Probabilities => rng.random_range(0.5..2.0),
        Domain::AwayFromZero => {
            let m: f64 = rng.random_range(0.2..2.0);
            if rng.random_bool(0.5) { m } else { -m }
        }
    });
    if let Domain::Probabilities = domain {
        for mut r in a.rows_mut() {
            let s = r.sum();
            r /= s;
        }
    }
    a
}

/// The memory layouts every input is tried in.
#[derive(Clone, Copy, Debug)]
enum Layout {
    C,
    /// F order: the transposed view of a C-order array.
    F,
    /// Every other row and column of a larger array whose other elements are NaN, so a
    /// read outside the view poisons the result.
    Step2,
}

/// Storage holding `a`'s values in `layout`; [`view`] gives the view.
fn store(a: &Array2<f64>, layout: Layout) -> Array2<f64> {
    match layout {
        Layout::C => a.clone(),
        Layout::F => a.t().as_standard_layout().into_owned(),
        Layout::Step2 => {
            let (r, c) = a.dim();
            let mut big = Array2::from_elem((2 * r, 2 * c), f64::NAN);
            big.slice_mut(s![..;2, ..;2]).assign(a);
            big
        }
    }
}

fn view(storage: &Array2<f64>, layout: Layout) -> ArrayView2<'_, f64> {
    match layout {
        Layout::C => storage.view(),
        Layout::F => storage.t(),
        Layout::Step2 => storage.slice(s![..;2, ..;2]),
    }
}

/// Value of `f` and the VJP of every input for cotangent `v`.
fn value_and_vjp(
    f: OpFn,
    xs: &[ArrayView2<'_, f64>],
    v: &Array2<f64>,
) -> (Array2<f64>, Vec<Array2<f64>>) {
    let tape = Tape::new();
    let ts: Vec<_> = xs.iter().map(|x| tape.param(x.view())).collect();
    let y = f(&ts);
    let value = y.value();
    let grads = tape
        .backward_with(y, BackwardOptions::new().seed(v.clone()))
        .unwrap();
    (
        value,
        ts.iter().map(|t| grads.get(*t).unwrap().clone()).collect(),
    )
}

fn close(a: &Array2<f64>, b: &Array2<f64>) -> bool {
    a.dim() == b.dim()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-12 * (1.0 + y.abs()))
}

#[test]
fn every_op_passes_gradcheck_on_every_shape_and_layout() {
    let opts = CheckOptions::default();
    let mut rng = StdRng::seed_from_u64(7);
    let mut checked = 0;
    for case in cases() {
        for (r, c) in SHAPES {
            let shapes = (case.shapes)(r, c);
            let inputs: Vec<Array2<f64>> = shapes
                .iter()
                .zip(case.domains)
                .map(|(&s, &d)| draw(s, d, &mut rng))
                .collect();
            let standard: Vec<_> = inputs.iter().map(|a| a.view()).collect();
            let out_shape = {
                let tape = Tape::new();
                let ts: Vec<_> = standard.iter().map(|x| tape.constant(x.view())).collect();
                (case.f)(&ts).shape()
            };
            let v = draw(out_shape, Domain::Normal, &mut rng);
            let (y0, g0) = value_and_vjp(case.f, &standard, &v);
            for layout in [Layout::C, Layout::F, Layout::Step2] {
                let stored: Vec<_> = inputs.iter().map(|a| store(a, layout)).collect();
                let views: Vec<_> = stored.iter().map(|s| view(s, layout)).collect();
                let what = format!("{} on {shapes:?} in {layout:?} layout", case.op);
                gradcheck(case.f, &views, &opts).unwrap_or_else(|e| panic!("{what}: {e}"));
                // The same values and gradients as the C-order run.
                let (y, g) = value_and_vjp(case.f, &views, &v);
                assert!(close(&y, &y0), "{what}: forward differs from C order");
                for (k, (a, b)) in g.iter().zip(&g0).enumerate() {
                    assert!(
                        close(a, b),
                        "{what}: gradient of input {k} differs from C order"
                    );
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, cases().len() * SHAPES.len() * 3);
}

#[test]
fn every_op_passes_the_dot_product_test_at_larger_sizes() {
    let opts = CheckOptions {
        rtol: 1e-6,
        ..CheckOptions::default()
    };
    let mut rng = StdRng::seed_from_u64(11);
    for case in cases() {
        for (r, c) in [(17, 23), (64, 48)] {
            let inputs: Vec<Array2<f64>> = (case.shapes)(r, c)
                .iter()
                .zip(case.domains)
                .map(|(&s, &d)| draw(s, d, &mut rng))
                .collect();
            let views: Vec<_> = inputs.iter().map(|a| a.view()).collect();
            vjp_dot_test(
                case.f,
                &views,
                &CheckOptions {
                    seed: r as u64,
                    ..opts.clone()
                },
            )
            .unwrap_or_else(|e| panic!("{} at {r} × {c}: {e}", case.op));
        }
    }
}

#[test]
fn gradcheck_catches_a_wrong_gradient() {
    // A composition whose recorded gradient is wrong on purpose: detach hides the
    // dependence of the second factor on x, so backward gives x instead of 2x.
    let wrong: OpFn = |x| x[0].mul(x[0].detach());
    let x = Array2::from_elem((2, 3), 0.7);
    let err = gradcheck(wrong, &[x.view()], &CheckOptions::default()).unwrap_err();
    assert!(err.to_string().contains("finite differences give"), "{err}");
    assert!(vjp_dot_test(wrong, &[x.view()], &CheckOptions::default()).is_err());
}

/// Public op methods defined in `src/ops/*.rs` (not `try_` forms), by scanning the source:
/// a new op cannot slip in without a case.
fn public_ops() -> BTreeSet<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ops");
    let mut ops = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n == "mod.rs") {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            if let Some(rest) = line.trim_start().strip_prefix("pub fn ") {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.starts_with("try_") {
                    ops.insert(name);
                }
            }
        }
    }
    ops
}

#[test]
fn every_op_has_a_case_and_a_row_in_the_rule_table() {
    let ops = public_ops();
    assert!(ops.len() >= 26, "found only {ops:?}");
    let covered: BTreeSet<String> = cases().iter().map(|c| c.op.to_string()).collect();
    let missing: Vec<_> = ops.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "ops without a gradcheck case: {missing:?}"
    );
    let unknown: Vec<_> = covered.difference(&ops).collect();
    assert!(
        unknown.is_empty(),
        "cases for ops that do not exist: {unknown:?}"
    );
    let table =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/ops/mod.rs")).unwrap();
    for op in &ops {
        assert!(
            table.contains(&format!("//! | `{op}(")),
            "{op} has no row in the rule table of src/ops/mod.rs"
        );
    }
}
