//! The second-order check: the two forms of every rule, Hessian-vector products and the
//! Hessian's symmetry.

use ndarray::{Array2, ArrayView2};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{CheckError, CheckOptions, CheckReport, dot, normal, of_inputs, views, vjp, vjp_at};
use crate::functional::Inputs;
use crate::{BackwardOptions, Tape, Tensor};

/// Checks the second derivatives of `f` at `inputs`, and its first derivatives a second
/// way. With `L = ⟨V, f(X)⟩` for a fixed random `V` (so any output shape works) and the
/// gradient `g = ∇L` recorded on the tape by [`Tape::grad_seeded`] (the tensor forms of
/// the rules):
///
/// 1. `g` equals the gradient of first-order backward (the array forms), element by
///    element, to `1e-10` relative: two independent implementations of each rule agree;
/// 2. the Hessian-vector product `H·U = ∇⟨g, U⟩`, by backward through the recorded `g`,
///    matches central differences of the first-order gradient along a random `U`,
///    `(∇L(X + εU) − ∇L(X − εU)) / 2ε`, element by element within the tolerances;
/// 3. `H` is symmetric: `⟨W, H·U⟩ = ⟨U, H·W⟩` for a second random `W`, to `1e-9` relative.
///
/// The inputs must be distinct arrays (two views of one array are one parameter of the
/// tape, [`Tape::param`]).
///
/// ```
/// use ndarray::array;
/// use tapegrad::{Inputs, Tensor};
/// use tapegrad::check::{gradgradcheck, CheckOptions};
///
/// fn layer<'t>(xs: Inputs<'_, 't, '_, f64>) -> Tensor<'t, f64> {
///     xs[0].matmul(xs[1]).tanh()
/// }
/// let x = array![[0.5, -1.0, 2.0], [1.5, 0.3, -0.7]];
/// let w = array![[0.2, -0.4], [1.0, 0.1], [-0.3, 0.8]];
/// gradgradcheck(layer, &[x.view(), w.view()], &CheckOptions::default()).unwrap();
/// ```
///
/// # Errors
///
/// [`CheckError::FormsDiffer`], [`CheckError::HessianMismatch`] or
/// [`CheckError::Asymmetric`] for the first check that fails; [`CheckError::Tape`] if
/// recording or backward fails.
pub fn gradgradcheck<'a, Fun>(
    f: Fun,
    inputs: &[ArrayView2<'_, f64>],
    opts: &CheckOptions,
) -> Result<CheckReport, CheckError>
where
    Fun: for<'s, 't> Fn(Inputs<'s, 't, 'a, f64>) -> Tensor<'t, f64>,
{
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let (v, fast) = vjp(&f, inputs, &mut rng)?;
    let us: Vec<Array2<f64>> = inputs.iter().map(|x| normal(x.dim(), &mut rng)).collect();
    let ws: Vec<Array2<f64>> = inputs.iter().map(|x| normal(x.dim(), &mut rng)).collect();
    let mut report = CheckReport {
        comparisons: 0,
        max_abs_error: 0.0,
    };
    // 1 and the Hessian-vector products, on one tape
    let (hu, hw) = {
        let tape = Tape::new();
        let xs: Vec<Tensor<'_, f64>> = inputs.iter().map(|x| tape.param(x.view())).collect();
        let y = f(Inputs::new(&tape, &xs));
        if !y.requires_grad() {
            return Ok(report);
        }
        let gs = tape.grad_seeded(y, tape.constant(&v), &xs)?;
        for (k, (g, a)) in gs.iter().zip(&fast).enumerate() {
            let g = g.try_value()?;
            for (index, (&t, &a)) in ndarray::indices(a.dim()).into_iter().zip(g.iter().zip(a)) {
                let err = (t - a).abs();
                if !(err <= 1e-10 * (1.0 + a.abs()) || t.to_bits() == a.to_bits()) {
                    return Err(CheckError::FormsDiffer {
                        input: k,
                        index,
                        array_form: a,
                        tensor_form: t,
                    });
                }
                report.comparisons += 1;
            }
        }
        let along = |dirs: &[Array2<f64>]| -> Result<Vec<Array2<f64>>, CheckError> {
            let mut s = None;
            for (g, d) in gs.iter().zip(dirs) {
                let term = g.try_mul(tape.constant(d.clone()))?.sum();
                s = Some(match s {
                    Some(s) => term.try_add(s)?,
                    None => term,
                });
            }
            let Some(s) = s.filter(|s: &Tensor<'_, f64>| s.requires_grad()) else {
                // the gradient does not depend on the inputs: H = 0
                return Ok(inputs.iter().map(|x| Array2::zeros(x.dim())).collect());
            };
            let grads = tape.backward_with(s, BackwardOptions::new().retain_graph(true))?;
            of_inputs(&grads, &xs)
        };
        (along(&us)?, along(&ws)?)
    };
    // 2: H·U against central differences of the first-order gradient
    let shifted = |sign: f64| -> Vec<Array2<f64>> {
        inputs
            .iter()
            .zip(&us)
            .map(|(x, u)| x + &(u * (sign * opts.eps)))
            .collect()
    };
    let (plus, minus) = (shifted(1.0), shifted(-1.0));
    let g_plus = vjp_at(&f, &views(&plus), &v)?;
    let g_minus = vjp_at(&f, &views(&minus), &v)?;
    for k in 0..inputs.len() {
        for index in ndarray::indices(inputs[k].dim()) {
            let numeric = (g_plus[k][index] - g_minus[k][index]) / (2.0 * opts.eps);
            let analytic = hu[k][index];
            let err = (analytic - numeric).abs();
            if err.is_nan() || err > opts.atol + opts.rtol * numeric.abs() {
                return Err(CheckError::HessianMismatch {
                    input: k,
                    index,
                    analytic,
                    numeric,
                });
            }
            report.comparisons += 1;
            report.max_abs_error = report.max_abs_error.max(err);
        }
    }
    // 3: symmetry
    let whu: f64 = ws.iter().zip(&hu).map(|(w, h)| dot(w, h)).sum();
    let uhw: f64 = us.iter().zip(&hw).map(|(u, h)| dot(u, h)).sum();
    let err = (whu - uhw).abs();
    if err.is_nan() || err > 1e-9 * (1.0 + whu.abs().max(uhw.abs())) {
        return Err(CheckError::Asymmetric { whu, uhw });
    }
    report.comparisons += 1;
    Ok(report)
}

#[cfg(test)]
mod tests {
    //! `gradgradcheck` against deliberately broken rules: `y = x²` with a right array form
    //! and a wrong tensor form.

    use std::panic::Location;

    use ndarray::{Array2, array};

    use super::gradgradcheck;
    use crate::Tensor;
    use crate::check::{CheckError, CheckOptions};
    use crate::error::Result;
    use crate::grad::Ctx;
    use crate::higher::TensorCtx;
    use crate::rule::{Rule, Saves, TensorRuleFn};

    /// `dX = 2 G ∘ X`: right.
    fn square_vjp(_: f64, g: Array2<f64>, ctx: &mut Ctx<'_, '_, f64>) {
        let x = ctx.input(0);
        ctx.accumulate_map(0, g, x, |g, x| 2.0 * g * x);
    }

    /// `dX = 3 G ∘ X`: a wrong value.
    fn wrong_value<'t>(_: f64, g: Tensor<'t, f64>, ctx: &mut TensorCtx<'_, 't, f64>) -> Result<()> {
        let d = g.try_mul(ctx.input(0))?.mul_scalar(3.0);
        ctx.accumulate(0, d)
    }

    /// `dX = 2 G ∘ detach(X)`: the right value, but it hides its dependence on X, so its
    /// own derivative (the second of x²) comes out 0 instead of 2.
    fn wrong_dependence<'t>(
        _: f64,
        g: Tensor<'t, f64>,
        ctx: &mut TensorCtx<'_, 't, f64>,
    ) -> Result<()> {
        let d = g.try_mul(ctx.input(0).detach())?.mul_scalar(2.0);
        ctx.accumulate(0, d)
    }

    fn square<'t>(x: Tensor<'t, f64>, tensor: TensorRuleFn<f64>) -> Tensor<'t, f64> {
        let tape = x.tape();
        let y = tape.read1(x.id, |v| v.mapv(|v| v * v));
        let rule = (Saves::NONE.input_if(0, true), Rule::new(square_vjp, tensor));
        tape.record("square", y, x.shape(), &[x], Some(rule), Location::caller())
    }

    fn broken_value<'t>(xs: &[Tensor<'t, f64>]) -> Tensor<'t, f64> {
        square(xs[0], wrong_value).sum()
    }

    fn broken_dependence<'t>(xs: &[Tensor<'t, f64>]) -> Tensor<'t, f64> {
        square(xs[0], wrong_dependence).sum()
    }

    fn right<'t>(xs: &[Tensor<'t, f64>]) -> Tensor<'t, f64> {
        xs[0].square().sum()
    }

    #[test]
    fn a_tensor_form_with_a_wrong_value_is_caught() {
        let x = array![[0.5, -1.5], [2.0, 0.25]];
        let err = gradgradcheck(
            |xs| broken_value(&xs),
            &[x.view()],
            &CheckOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, CheckError::FormsDiffer { .. }), "{err}");
    }

    #[test]
    fn a_tensor_form_with_a_wrong_second_derivative_is_caught() {
        let x = array![[0.5, -1.5], [2.0, 0.25]];
        let opts = CheckOptions::default();
        let err = gradgradcheck(|xs| broken_dependence(&xs), &[x.view()], &opts).unwrap_err();
        assert!(matches!(err, CheckError::HessianMismatch { .. }), "{err}");
        // and the right rule passes
        gradgradcheck(|xs| right(&xs), &[x.view()], &opts).unwrap();
    }
}
