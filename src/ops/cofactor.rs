//! `det`'s derivatives of order 2 and 3 (feature `linalg`): the cofactor matrix, `det`'s
//! gradient, as a recorded op whose rules are exact at every rank.
//!
//! `det`'s tensor form records `cofactor(A) = adj(A)ᵀ`, times `g`. The cofactors are a
//! polynomial in `A`, and so are their derivatives: `H_A[G] = d/dt cofactor(A + tG)` at
//! `t = 0` is `det`'s Hessian applied to `G`, and `T_A[G, Y] = d/dt H_{A+tY}[G]` its third
//! derivative. Both are symmetric in their arguments (`⟨Y, H_A[G]⟩ = ⟨G, H_A[Y]⟩`), so:
//!
//! - `Y = cofactor(A)`: `dA = H_A[Ȳ]`. Saves `A`. Tensor form: `cofactor_vjp(A, Ȳ)`.
//! - `Y = cofactor_vjp(A, G) = H_A[G]`: `dG = H_A[Ȳ]`, `dA = T_A[G, Ȳ]`. Saves `A`, `G`.
//!   Tensor form: `dG = cofactor_vjp(A, Ȳ)`; `dA` by the closed form through `A⁻¹` where
//!   `A` is well-conditioned, else an `IllConditioned` error (below).
//!
//! `H` and `T` are computed in the frame of the SVD `Â = U·diag(s)·Vᵀ` of `Â = 2⁻ᵏ·A` (a
//! power of two bringing its largest element into [1, 2), which is exact), `σ = det U·det V`
//! (±1), `X' = Uᵀ·X·V` (`det(U·S·Vᵀ + E) = σ·det(S + E')`): at the diagonal `S` each
//! derivative is a sum of products of singular values, taken without division, so the
//! results are as exact at rank n − 1 or n − 2 as anywhere (the tensor form `g·det·A⁻ᵀ`
//! they replace gave numbers of order 1 for `det(u·vᵀ)`, which is 0 with all its
//! derivatives). With `Πᵢⱼ = ∏_{l∉{i,j}} sₗ` (`Πᵢᵢ = 0`) and `Π³ₐᵦₖ = ∏_{l∉{a,b,k}} sₗ`:
//!
//! - `cofactor(A) = 2^{k(n−1)}·σ·U·diag(∏_{l≠i} sₗ)·Vᵀ`;
//! - `H_A[G] = 2^{k(n−2)}·σ·U·(diag(Π·diag(G')) − Π ∘ G'ᵀ)·Vᵀ`;
//! - `T_A[G, Y] = 2^{k(n−3)}·σ·U·T'·Vᵀ`, `T'ₐᵦ = Σ_{k∉{a,b}} Π³ₐᵦₖ·(G'ᵦₖY'ₖₐ − G'ᵦₐY'ₖₖ −
//!   G'ₖₖY'ᵦₐ + G'ₖₐY'ᵦₖ)` for `a ≠ b`, `T'ₐₐ = Σ_{i≠j; i,j≠a} Π³ₐᵢⱼ·(G'ᵢᵢY'ⱼⱼ − G'ᵢⱼY'ⱼᵢ)`.
//!
//! One SVD and O(n³) work each. The fourth derivative and beyond go through the closed
//! form of `T` in recorded ops, with `B = A⁻¹` and `C = cofactor(A)`:
//! `T_A[G, Y] = (tr(BG)·tr(BY) − tr(BGBY))·C − tr(BY)·BᵀGᵀC − tr(BG)·BᵀYᵀC + BᵀYᵀBᵀGᵀC +
//! BᵀGᵀBᵀYᵀC`, whose rounding errors grow with `κ(A)`: it is used where LAPACK's estimate
//! of `1/κ₁(A)` exceeds ε^¼ (then they stay below about ε^¾), and is an `IllConditioned`
//! error, naming `det` and the line of `Tape::grad`, elsewhere.

use std::panic::Location;

use ndarray::{Array2, ArrayView2};

use super::lapack::{LinalgFloat, Lu, computed, ill_conditioned, scale_by, svd};
use crate::error::{Error, ErrorKind, Result, or_panic};
use crate::grad::Ctx;
use crate::higher::TensorCtx;
use crate::kernels::try_gemm;
use crate::rule::{Backward, Rule, Saves};
use crate::{Float, Tensor};

/// The bound `1/κ₁(A)` must exceed for formulas through `A⁻¹` to be used for `det`'s
/// derivatives: ε^¼ (1.2e-4 for f64, 0.019 for f32), where their error, about `ε·κ`, is
/// at most ε^¾.
pub(crate) fn well_conditioned<F: Float>() -> F {
    F::epsilon().sqrt().sqrt()
}

/// `x·2^e`, rounded once, for an exponent summed in `i64` (clamped: past ±2²⁰ every
/// result over- or underflows alike).
fn scaled<F: Float>(x: F, e: i64) -> F {
    scale_by(x, e.clamp(-1 << 20, 1 << 20) as i32)
}

/// `A·B`, or `OutOfMemory`.
fn mm<F: Float>(
    a: ArrayView2<'_, F>,
    b: ArrayView2<'_, F>,
) -> std::result::Result<Array2<F>, ErrorKind> {
    try_gemm(a, b).ok_or(ErrorKind::OutOfMemory {
        shape: (a.nrows(), b.ncols()),
    })
}

/// The SVD frame of `A = 2^k·U·diag(s)·Vᵀ` (`Â = 2⁻ᵏA` with its largest element in
/// [1, 2)), and `σ = det U·det V`.
struct Frame<F> {
    k: i64,
    u: Array2<F>,
    s: Vec<F>,
    vt: Array2<F>,
    sigma: F,
}

impl<F: LinalgFloat> Frame<F> {
    fn new(a: ArrayView2<'_, F>) -> std::result::Result<Self, ErrorKind> {
        let big = a.iter().fold(F::zero(), |m, x| m.max(x.abs()));
        let k = if big == F::zero() || !big.is_finite() {
            0
        } else {
            i64::from(libm::ilogb(big.as_f64()))
        };
        let (u, s, vt) = if k == 0 {
            svd(a)?
        } else {
            svd(a.mapv(|x| scaled(x, -k)).view())?
        };
        // det U·det Vᵀ is ±1: the signs of their LU factorisations
        let sign = |m: &Array2<F>| Ok::<F, ErrorKind>(Lu::new(m.view())?.det().signum());
        let sigma = sign(&u)? * sign(&vt)?;
        Ok(Frame { k, u, s, vt, sigma })
    }

    fn n(&self) -> usize {
        self.s.len()
    }

    /// `X' = Uᵀ·X·V`.
    fn to_frame(&self, x: ArrayView2<'_, F>) -> std::result::Result<Array2<F>, ErrorKind> {
        mm(mm(self.u.t(), x)?.view(), self.vt.t())
    }

    /// `2^{k·p}·σ·U·X'·Vᵀ`, the power of two applied once per element.
    fn out_of_frame(&self, x: Array2<F>, p: i64) -> std::result::Result<Array2<F>, ErrorKind> {
        let mut y = mm(mm(self.u.view(), x.view())?.view(), self.vt.view())?;
        let (e, sigma) = (self.k * p, self.sigma);
        y.mapv_inplace(|v| scaled(sigma * v, e));
        Ok(y)
    }
}

/// `∏_{l ∉ skip, l ≠ i} xₗ` for every `i` not in `skip` (0 for those in it), without
/// division: prefix and suffix products.
fn products_but_one<F: Float>(x: &[F], skip: &[usize]) -> Vec<F> {
    let n = x.len();
    let keep: Vec<usize> = (0..n).filter(|i| !skip.contains(i)).collect();
    let mut out = vec![F::zero(); n];
    let mut acc = F::one();
    for &i in &keep {
        out[i] = acc;
        acc *= x[i];
    }
    acc = F::one();
    for &i in keep.iter().rev() {
        out[i] *= acc;
        acc *= x[i];
    }
    out
}

/// `Πᵢⱼ = ∏_{l ∉ skip ∪ {i, j}} xₗ` for `i ≠ j` outside `skip`, 0 elsewhere, without
/// division: O(n²).
fn products_but_two<F: Float>(x: &[F], skip: &[usize]) -> Array2<F> {
    let n = x.len();
    let keep: Vec<usize> = (0..n).filter(|i| !skip.contains(i)).collect();
    let m = keep.len();
    // prefix[p] = ∏ of keep[..p], suffix[p] = ∏ of keep[p + 1..]
    let mut prefix = vec![F::one(); m + 1];
    for p in 0..m {
        prefix[p + 1] = prefix[p] * x[keep[p]];
    }
    let mut suffix = vec![F::one(); m + 1];
    for p in (0..m).rev() {
        suffix[p] = if p + 1 < m {
            suffix[p + 1] * x[keep[p + 1]]
        } else {
            F::one()
        };
    }
    let mut out = Array2::zeros((n, n));
    for p in 0..m {
        let mut middle = F::one();
        for q in p + 1..m {
            let v = prefix[p] * middle * suffix[q];
            out[[keep[p], keep[q]]] = v;
            out[[keep[q], keep[p]]] = v;
            middle *= x[keep[q]];
        }
    }
    out
}

/// The cofactor matrix `adj(A)ᵀ` from the SVD: exact at every rank.
pub(crate) fn cofactors_svd<F: LinalgFloat>(
    a: ArrayView2<'_, F>,
) -> std::result::Result<Array2<F>, ErrorKind> {
    let f = Frame::new(a)?;
    let n = f.n();
    let p = products_but_one(&f.s, &[]);
    let mut d = Array2::zeros((n, n));
    d.diag_mut().iter_mut().zip(&p).for_each(|(d, &p)| *d = p);
    f.out_of_frame(d, n as i64 - 1)
}

/// `H_A[G]`, `det`'s Hessian applied to `G`: the derivative of the cofactors along `G`.
pub(crate) fn hessian<F: LinalgFloat>(
    a: ArrayView2<'_, F>,
    g: ArrayView2<'_, F>,
) -> std::result::Result<Array2<F>, ErrorKind> {
    let f = Frame::new(a)?;
    let n = f.n();
    let gp = f.to_frame(g)?;
    let pi = products_but_two(&f.s, &[]);
    // diag(Π·diag(G')) − Π ∘ G'ᵀ
    let mut x = &pi * &gp.t();
    x.mapv_inplace(|v| -v);
    for i in 0..n {
        x[[i, i]] = (0..n).fold(F::zero(), |acc, j| acc + pi[[i, j]] * gp[[j, j]]);
    }
    f.out_of_frame(x, n as i64 - 2)
}

/// `T_A[G, Y]`, `det`'s third derivative applied to `G` and `Y`: the gradient of
/// `⟨Y, H_A[G]⟩` with respect to `A`.
pub(crate) fn third<F: LinalgFloat>(
    a: ArrayView2<'_, F>,
    g: ArrayView2<'_, F>,
    y: ArrayView2<'_, F>,
) -> std::result::Result<Array2<F>, ErrorKind> {
    let f = Frame::new(a)?;
    let n = f.n();
    let (g, y) = (f.to_frame(g)?, f.to_frame(y)?);
    let mut t = Array2::zeros((n, n));
    for a in 0..n {
        for b in 0..n {
            t[[a, b]] = if a == b {
                let pi = products_but_two(&f.s, &[a]);
                let mut sum = F::zero();
                for i in (0..n).filter(|&i| i != a) {
                    for j in (0..n).filter(|&j| j != a && j != i) {
                        sum += pi[[i, j]] * (g[[i, i]] * y[[j, j]] - g[[i, j]] * y[[j, i]]);
                    }
                }
                sum
            } else {
                let q = products_but_one(&f.s, &[a, b]);
                (0..n)
                    .filter(|&k| k != a && k != b)
                    .fold(F::zero(), |sum, k| {
                        sum + q[k]
                            * (g[[b, k]] * y[[k, a]]
                                - g[[b, a]] * y[[k, k]]
                                - g[[k, k]] * y[[b, a]]
                                + g[[k, a]] * y[[b, k]])
                    })
            };
        }
    }
    f.out_of_frame(t, n as i64 - 3)
}

/// Records `cofactor(A)` with its value `c` (`det`'s rule has it, or the LU to make it).
pub(crate) fn record_cofactor<'t, F: LinalgFloat>(
    a: Tensor<'t, F>,
    c: Array2<F>,
    location: &'static Location<'static>,
) -> Tensor<'t, F> {
    let tape = a.tape;
    let rule = tape.track(&[a]).then(|| {
        let saves = Saves::NONE.input_if(0, true);
        (saves, Rule::boxed(CofactorBackward))
    });
    tape.record("cofactor", Ok(c), a.shape, &[a], rule, location)
}

/// The rule of `cofactor`: `dA = H_A[Ȳ]`.
struct CofactorBackward;

impl<F: LinalgFloat> Backward<F> for CofactorBackward {
    fn backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
        or_panic(self.try_backward(g, ctx));
    }

    fn try_backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) -> Result<()> {
        let h = hessian(ctx.input(0), g.view()).map_err(|k| ctx.error(k))?;
        ctx.accumulate(0, h);
        Ok(())
    }

    fn backward_tensor<'t>(&self, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
        let h = cofactor_vjp(ctx.input(0), g, ctx.location)?;
        ctx.accumulate(0, h)
    }
}

/// Records `cofactor_vjp(A, G) = H_A[G]`.
fn cofactor_vjp<'t, F: LinalgFloat>(
    a: Tensor<'t, F>,
    g: Tensor<'t, F>,
    location: &'static Location<'static>,
) -> Result<Tensor<'t, F>> {
    let tape = a.tape;
    let y = tape.read2(a.id, g.id, |a, g| hessian(a, g));
    let y = computed(y, "det", location)?;
    let rule = tape.track(&[a, g]).then(|| {
        let saves = Saves::NONE.input_if(0, true).input_if(1, true);
        (saves, Rule::boxed(CofactorVjpBackward))
    });
    Ok(tape.record("cofactor_vjp", y, a.shape, &[a, g], rule, location))
}

/// The rule of `cofactor_vjp`: `dG = H_A[Ȳ]`, `dA = T_A[G, Ȳ]`.
struct CofactorVjpBackward;

impl<F: LinalgFloat> Backward<F> for CofactorVjpBackward {
    fn backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
        or_panic(self.try_backward(g, ctx));
    }

    fn try_backward(&self, yb: Array2<F>, ctx: &mut Ctx<'_, '_, F>) -> Result<()> {
        let (a, g) = (ctx.input(0), ctx.input(1));
        if ctx.needs_grad(0) {
            let t = third(a, g, yb.view()).map_err(|k| ctx.error(k))?;
            ctx.accumulate(0, t);
        }
        if ctx.needs_grad(1) {
            let h = hessian(a, yb.view()).map_err(|k| ctx.error(k))?;
            ctx.accumulate(1, h);
        }
        Ok(())
    }

    fn backward_tensor<'t>(&self, yb: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
        let (a, g) = (ctx.input(0), ctx.input(1));
        if ctx.needs_grad(0) {
            ctx.accumulate(0, third_tensor(a, g, yb, ctx.location)?)?;
        }
        if ctx.needs_grad(1) {
            ctx.accumulate(1, cofactor_vjp(a, yb, ctx.location)?)?;
        }
        Ok(())
    }
}

/// `t·2^e` in recorded ops: products by powers of two that are themselves finite.
fn scale_tensor<'t, F: Float>(mut t: Tensor<'t, F>, mut e: i64) -> Tensor<'t, F> {
    while e != 0 {
        let step = e.clamp(-900, 900);
        t = t.mul_scalar(scaled(F::one(), step));
        e -= step;
    }
    t
}

/// `T_A[G, Y]` by its closed form through `A⁻¹`, in recorded ops (differentiable again),
/// computed on `Â = 2⁻ᵏ·A`; an `IllConditioned` error naming `det` where `1/κ₁(A)` is at
/// most [`well_conditioned`].
fn third_tensor<'t, F: LinalgFloat>(
    a: Tensor<'t, F>,
    g: Tensor<'t, F>,
    y: Tensor<'t, F>,
    location: &'static Location<'static>,
) -> Result<Tensor<'t, F>> {
    let fail = |kind| Error::new("det", kind, location);
    let n = a.rows();
    let value = a.try_value()?;
    let big = value.iter().fold(F::zero(), |m, x| m.max(x.abs()));
    let k = if big == F::zero() {
        0
    } else {
        i64::from(libm::ilogb(big.as_f64()))
    };
    let scaled_value = value.mapv(|x| scaled(x, -k));
    let bound = well_conditioned::<F>();
    let ill = |rcond: F| ill_conditioned(n, rcond, bound);
    let lu = match Lu::with_norm(scaled_value.view()) {
        Ok(lu) => lu,
        Err(ErrorKind::Singular { .. }) => return Err(fail(ill(F::zero()))),
        Err(kind) => return Err(fail(kind)),
    };
    let rcond = lu.rcond().map_err(fail)?;
    if rcond.is_nan() || rcond <= bound {
        return Err(fail(ill(rcond)));
    }
    let cof = lu.cofactors().map_err(fail)?;
    let ah = scale_tensor(a, -k);
    let (b, c) = (ah.try_inv()?, record_cofactor(ah, cof, location));
    // tr(X·Y) = Σ Xᵢⱼ·Yⱼᵢ
    let tr = |x: Tensor<'t, F>, y: Tensor<'t, F>| Ok::<_, Error>(x.try_mul(y.t())?.sum());
    let (bg, by) = (b.try_matmul(g)?, b.try_matmul(y)?);
    let (tbg, tby, tbgby) = (tr(b, g)?, tr(b, y)?, tr(bg, by)?);
    let bt = b.t();
    let (btgtc, btytc) = (
        bt.try_matmul(g.t().try_matmul(c)?)?,
        bt.try_matmul(y.t().try_matmul(c)?)?,
    );
    // (tr(BG)·tr(BY) − tr(BGBY))·C − tr(BY)·BᵀGᵀC − tr(BG)·BᵀYᵀC + BᵀYᵀ·BᵀGᵀC + BᵀGᵀ·BᵀYᵀC
    let m = c
        .try_mul(tbg.try_mul(tby)?.try_sub(tbgby)?)?
        .try_sub(btgtc.try_mul(tby)?)?
        .try_sub(btytc.try_mul(tbg)?)?
        .try_add(bt.try_matmul(y.t())?.try_matmul(btgtc)?)?
        .try_add(bt.try_matmul(g.t())?.try_matmul(btytc)?)?;
    Ok(scale_tensor(m, k * (n as i64 - 3)))
}
