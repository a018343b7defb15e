//! Every op against two independent oracles (central finite differences in f64, and the
//! dot-product test), over shapes including 1 × 1, 1 × n, n × 1 and odd sizes, and over
//! input layouts: C order, F order (transposed views) and step-2 slices.
//!
//! One table, one loop (JAX's `grad_test_spec`, PyTorch's `op_db`). `every_op_has_a_case`
//! fails when a public op appears in `src/ops` without a case here or a row in the rule
//! table of `src/ops/mod.rs`.

mod common;

use std::collections::BTreeSet;

use common::{Domain, OpFn, SHAPES, cases, draw};
use ndarray::{Array2, ArrayView2, s};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tapegrad::check::{CheckOptions, gradcheck, gradgradcheck, vjp_dot_test};
use tapegrad::{BackwardOptions, Tape};

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
                gradcheck(|xs| (case.f)(&xs), &views, &opts)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
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

/// Ops whose rule has no tensor form, exempt from the second-order pass (none: every
/// built-in rule is differentiable again).
const FIRST_ORDER_ONLY: &[&str] = &[];

/// The cases of the second-order pass: all but those at a singular matrix, where `det`'s
/// first derivative (the cofactors, from the SVD) exists but its tensor form, through
/// `inv`, is a `Singular` error by design (`tests/linalg.rs` checks the error).
fn second_order_cases() -> Vec<common::Case> {
    cases()
        .into_iter()
        .filter(|c| !FIRST_ORDER_ONLY.contains(&c.op))
        .filter(|c| !c.domains.iter().any(|d| matches!(d, Domain::RankDeficient)))
        .collect()
}

/// For every op, shape and layout: the gradient recorded by `Tape::grad` (the rules'
/// tensor forms) equals first-order backward's (their array forms); Hessian-vector
/// products match central differences of the gradient; the Hessian is symmetric.
#[test]
fn every_op_passes_the_second_order_check_on_every_shape_and_layout() {
    let opts = CheckOptions::default();
    let mut rng = StdRng::seed_from_u64(13);
    let mut checked = 0;
    for case in second_order_cases() {
        for (r, c) in SHAPES {
            let inputs: Vec<Array2<f64>> = (case.shapes)(r, c)
                .iter()
                .zip(case.domains)
                .map(|(&s, &d)| draw(s, d, &mut rng))
                .collect();
            for layout in [Layout::C, Layout::F, Layout::Step2] {
                let stored: Vec<_> = inputs.iter().map(|a| store(a, layout)).collect();
                let views: Vec<_> = stored.iter().map(|s| view(s, layout)).collect();
                let opts = CheckOptions {
                    seed: checked,
                    ..opts.clone()
                };
                gradgradcheck(|xs| (case.f)(&xs), &views, &opts).unwrap_or_else(|e| {
                    panic!("{} on {r} × {c} in {layout:?} layout: {e}", case.op)
                });
                checked += 1;
            }
        }
    }
    assert_eq!(
        checked as usize,
        second_order_cases().len() * SHAPES.len() * 3
    );
}

/// A composition whose Hessian is wrong on purpose: `x ∘ detach(x)` hides a dependence,
/// so the Hessian-vector product through the recorded gradient (0) disagrees with
/// differences of the first-order gradient. (That each rule's two forms and its second
/// derivative are checked is shown with deliberately broken rules in `src/check.rs`.)
#[test]
fn gradgradcheck_catches_a_wrong_hessian() {
    let wrong: common::OpFn = |x| x[0].mul(x[0].detach());
    let x = Array2::from_elem((2, 3), 0.7);
    let err = gradgradcheck(|xs| wrong(&xs), &[x.view()], &CheckOptions::default()).unwrap_err();
    assert!(err.to_string().contains("Hessian-vector product"), "{err}");
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
                |xs| (case.f)(&xs),
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
    let err = gradcheck(|xs| wrong(&xs), &[x.view()], &CheckOptions::default()).unwrap_err();
    assert!(err.to_string().contains("finite differences give"), "{err}");
    assert!(vjp_dot_test(|xs| wrong(&xs), &[x.view()], &CheckOptions::default()).is_err());
}

/// Public functions of `src/ops` that are not ops (a builder of `Span`).
const NOT_OPS: &[&str] = &["step"];

/// Ops with no gradient (they return indices, not tensors): a row in the rule table that
/// says so, and no gradcheck case.
const NO_GRADIENT: &[&str] = &["argmax", "argmin"];

/// Public op methods defined in `src/ops/*.rs` (not `try_` forms), by scanning the source:
/// a new op cannot slip in without a case.
fn public_ops() -> BTreeSet<String> {
    common::public_fns_of_ops()
        .into_iter()
        .filter(|name| !name.starts_with("try_") && !NOT_OPS.contains(&name.as_str()))
        .collect()
}

#[test]
fn every_op_has_a_case_and_a_row_in_the_rule_table() {
    let all = public_ops();
    assert!(all.len() >= 60, "found only {all:?}");
    let ops: BTreeSet<String> = all
        .iter()
        .filter(|o| !NO_GRADIENT.contains(&o.as_str()))
        .cloned()
        .collect();
    let covered: BTreeSet<String> = cases().iter().map(|c| c.op.to_string()).collect();
    let missing: Vec<_> = ops.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "ops without a gradcheck case: {missing:?}"
    );
    let second: BTreeSet<String> = second_order_cases()
        .iter()
        .map(|c| c.op.to_string())
        .collect();
    let missing: Vec<_> = ops.difference(&second).collect();
    assert!(
        missing.is_empty(),
        "ops without a second-order case: {missing:?}"
    );
    let unknown: Vec<_> = covered.difference(&ops).collect();
    assert!(
        unknown.is_empty(),
        "cases for ops that do not exist: {unknown:?}"
    );
    let table =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/ops/mod.rs")).unwrap();
    for op in &all {
        assert!(
            table.contains(&format!("//! | `{op}(")),
            "{op} has no row in the rule table of src/ops/mod.rs"
        );
    }
}

/// Every op on inputs with no element (0 × 3, 3 × 0, 0 × 0): forward and backward run,
/// and every gradient has its input's shape. (Ops that take class or row indices need an
/// element to index, and are left out where they have none.)
#[test]
fn every_op_works_on_empty_inputs() {
    let needs_indices = ["gather_rows", "nll_loss", "softmax_cross_entropy_indices"];
    let mut rng = StdRng::seed_from_u64(17);
    let mut ran = 0;
    for case in cases() {
        for (r, c) in [(0, 3), (3, 0), (0, 0)] {
            // a gather has no row of an empty table to name; a class index no column
            if needs_indices.contains(&case.op) && (r > 0 || case.op == "gather_rows") {
                continue;
            }
            let inputs: Vec<Array2<f64>> = (case.shapes)(r, c)
                .iter()
                .zip(case.domains)
                .map(|(&s, &d)| draw(s, d, &mut rng))
                .collect();
            let tape = Tape::new();
            let xs: Vec<_> = inputs.iter().map(|x| tape.param(x.view())).collect();
            let y = (case.f)(&xs);
            let seed = Array2::ones(y.shape());
            let grads = tape
                .backward_with(y, BackwardOptions::new().seed(seed))
                .unwrap_or_else(|e| panic!("{} on {r} × {c}: {e}", case.op));
            for x in &xs {
                let g = grads
                    .try_get(*x)
                    .unwrap_or_else(|e| panic!("{} on {r} × {c}: {e}", case.op));
                assert_eq!(g.dim(), x.shape(), "{}", case.op);
            }
            ran += 1;
        }
    }
    assert!(ran > 2 * cases().len());
}
