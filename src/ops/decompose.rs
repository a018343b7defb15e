//! Decompositions (feature `linalg`): `cholesky` and `eigh`. Both read the symmetric part
//! `(A + Aᵀ)/2` of their input, as JAX's `symmetrize_input=True`: for a symmetric `A`
//! that is `A` itself, and the gradient is symmetric, so a gradient check may perturb `A`
//! in any direction.
//!
//! VJP, with `L̄ = ∂L/∂L` (the factor) and `Φ(X)` = the lower triangle of `X` with its
//! diagonal halved:
//!
//! - `L = cholesky(A)`, `A = L·Lᵀ`: `dA = ½·L⁻ᵀ·(P + Pᵀ)·L⁻¹` with `P = Φ(Lᵀ·L̄)` (Murray
//!   2016, "Differentiation of the Cholesky decomposition", eq. 10; PyTorch's
//!   `cholesky_backward`). The array form is Murray's blocked algorithm (his
//!   `chol_blocked_rev`, mirroring LAPACK's `potrf` in reverse): GEMMs and triangular solves
//!   on blocks of 64 columns, his unblocked loop on each diagonal block, about twice the
//!   forward's flops. Saves `L`.
//! - `(λ, V) = eigh(A)`, `A = V·diag(λ)·Vᵀ`, `λ` ascending: `dA = V·(diag(λ̄) + F ∘ K)·Vᵀ`
//!   with `K = (X − Xᵀ)/2`, `X = Vᵀ·V̄` and `Fᵢⱼ = 1/(λⱼ − λᵢ)` off the diagonal (Giles 2008,
//!   §3.1; PyTorch's `linalg_eig_backward`, JAX's `_eigh_jvp_rule`). Saves `λ` and `V`.
//!
//! `eigh`'s gradient is undefined where two eigenvalues are equal and the loss depends on
//! how `V` splits their shared eigenspace: the term `Kᵢⱼ/(λⱼ − λᵢ)` is then ±∞ (or NaN),
//! as in PyTorch and JAX. Where `Kᵢⱼ` is exactly zero (a loss of the eigenvalues only,
//! or one that does not see the split) the term is 0, so such gradients stay finite.
//!
//! The tensor forms write the same formulas in recorded ops (Murray's symbolic form for
//! `cholesky`, with `solve_triangular`).

use std::panic::Location;

use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView1, ArrayView2, ShapeBuilder, Zip, s};

use super::lapack::{self, EighScale, LinalgFloat, computed, scale_by, square, triangular_solve};
use crate::error::{ErrorKind, Result, or_panic};
use crate::grad::Ctx;
use crate::higher::TensorCtx;
use crate::ops::diag::triangle_inplace;
use crate::rule::{Backward, Rule, Saves};
use crate::{Float, Tensor};

/// Columns per block of the blocked Cholesky backward.
const BLOCK: usize = 64;

/// `Φ(X)` in place: the lower triangle, its diagonal halved.
fn phi<F: Float>(x: &mut Array2<F>) {
    triangle_inplace(x, 0, true);
    x.diag_mut().mapv_inplace(|v| v * F::cast(0.5));
}

/// Murray's unblocked reverse step on one diagonal block (his `chol_unblocked_rev`,
/// mirroring LAPACK's `potf2`): from the block `D` of `L` and `D̄ = tril(D̄)`, in place, the
/// lower triangle `T` of the block's `Σ̄`. About twice `potf2`'s flops, with no copy.
fn cholesky_rev_unblocked<F: LinalgFloat>(d: ArrayView2<'_, F>, dbar: &mut Array2<F>) {
    let n = d.nrows();
    let half = F::cast(0.5);
    for j in (0..n).rev() {
        let djj = d[[j, j]];
        // d̄ −= c·c̄ / d, then d̄ /= d and c̄ /= d
        let mut dot = F::zero();
        for i in j + 1..n {
            dot += d[[i, j]] * dbar[[i, j]];
        }
        let dj = (dbar[[j, j]] - dot / djj) / djj;
        dbar[[j, j]] = dj;
        for i in j + 1..n {
            dbar[[i, j]] /= djj;
        }
        // r̄ −= d̄·r + c̄ᵀ·B ; B̄ −= c̄·rᵀ
        for k in 0..j {
            let mut s = dj * d[[j, k]];
            for i in j + 1..n {
                s += dbar[[i, j]] * d[[i, k]];
            }
            dbar[[j, k]] -= s;
        }
        for k in 0..j {
            let r = d[[j, k]];
            for i in j + 1..n {
                let c = dbar[[i, j]];
                dbar[[i, k]] -= c * r;
            }
        }
        dbar[[j, j]] = dj * half;
    }
}

/// Murray's blocked reverse-mode Cholesky (`chol_blocked_rev`): from `L` and `L̄`, the
/// lower triangle `T` whose symmetric part `(T + Tᵀ)/2` is `∂L/∂A`.
fn cholesky_rev<F: LinalgFloat>(l: ArrayView2<'_, F>, lbar: ArrayView2<'_, F>) -> Array2<F> {
    let n = l.nrows();
    let mut a = Array2::zeros((n, n).f());
    a.assign(&lbar);
    triangle_inplace(&mut a, 0, true);
    let (one, minus) = (F::one(), -F::one());
    let mut k = n;
    while k > 0 {
        let j = k.saturating_sub(BLOCK);
        let (r, d, b, c) = (
            l.slice(s![j..k, ..j]),
            l.slice(s![j..k, j..k]),
            l.slice(s![k.., ..j]),
            l.slice(s![k.., j..k]),
        );
        let (mut rbar, mut dbar, mut bbar, mut cbar) =
            a.multi_slice_mut((s![j..k, ..j], s![j..k, j..k], s![k.., ..j], s![k.., j..k]));
        // C̄ ← C̄·D⁻¹, kept transposed: Dᵀ·C̄ᵀ = C̄ᵀ
        let cbar_t = triangular_solve(d, true, true, false, cbar.t())
            .expect("a Cholesky factor has a positive diagonal");
        cbar.assign(&cbar_t.t());
        // B̄ ← B̄ − C̄·R
        general_mat_mul(minus, &cbar_t.t(), &r, one, &mut bbar);
        // D̄ ← tril(D̄ − C̄ᵀ·C), then the symbolic step on the block
        let mut dd = dbar.to_owned();
        general_mat_mul(minus, &cbar_t, &c, one, &mut dd);
        triangle_inplace(&mut dd, 0, true);
        cholesky_rev_unblocked(d, &mut dd);
        dbar.assign(&dd);
        // R̄ ← R̄ − (C̄ᵀ·B + (D̄ + D̄ᵀ)·R)
        general_mat_mul(minus, &cbar_t, &b, one, &mut rbar);
        let sym = &dd + &dd.t();
        general_mat_mul(minus, &sym, &r, one, &mut rbar);
        k = j;
    }
    triangle_inplace(&mut a, 0, true);
    a
}

/// `dA = (T + Tᵀ)/2`, `T` from Murray's blocked algorithm.
fn cholesky_backward<F: LinalgFloat>(_: F, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    let l = ctx.output();
    let t = cholesky_rev(l, g.view());
    let half = F::cast(0.5);
    let mut d = Array2::zeros(t.raw_dim().f());
    Zip::from(&mut d)
        .and(&t)
        .and(t.t())
        .for_each(|d, &a, &b| *d = (a + b) * half);
    ctx.accumulate(0, d);
}

/// `dA = ½·L⁻ᵀ·(P + Pᵀ)·L⁻¹`, `P = Φ(Lᵀ·L̄)`, recorded (Φ as a constant mask).
fn cholesky_tensor<'t, F: LinalgFloat>(
    _: F,
    g: Tensor<'t, F>,
    ctx: &mut TensorCtx<'_, 't, F>,
) -> Result<()> {
    let l = ctx.output();
    let n = l.rows();
    let mut mask = Array2::ones((n, n));
    phi(&mut mask);
    // L's upper triangle is zeros whatever A is: what reaches it of the gradient is
    // dropped before the product, as the array form drops it (an ∞ there, from `sqrt` at
    // those zeros, would otherwise meet a zero of L and make NaN)
    let p = l.t().try_matmul(g.tril(0))?.try_mul(ctx.constant(mask))?;
    let s = p.try_add(p.t())?;
    let x = l.try_solve_triangular(s, true, true)?; // L⁻ᵀ·S
    let y = l.try_solve_triangular(x.t(), true, true)?; // L⁻ᵀ·S·L⁻¹ (S symmetric)
    let half = F::cast(0.5);
    // symmetric up to rounding: symmetrise as the array form does
    ctx.accumulate(0, y.try_add(y.t())?.mul_scalar(half * half))
}

/// `dA = V·(diag(λ̄) + F ∘ K)·Vᵀ`, from the packed output `[λ V]` and its gradient.
fn eigh_backward<F: LinalgFloat>(_: F, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
    let y = ctx.output();
    let (lam, v) = (y.column(0), y.slice(s![.., 1..]));
    let m = rotation(&g, v, lam, Some(g.column(0)));
    let vm = v.dot(&m);
    ctx.accumulate_gemm(0, vm.view(), v.t());
}

/// `F ∘ K` (`Fᵢⱼ = 1/(λⱼ − λᵢ)` off the diagonal, a term 0 where `Kᵢⱼ` is 0) from the
/// gradient `g` of `[λ V]`, with `diag` on its diagonal (zeros if `None`).
fn rotation<F: LinalgFloat>(
    g: &Array2<F>,
    v: ArrayView2<'_, F>,
    lam: ArrayView1<'_, F>,
    diag: Option<ArrayView1<'_, F>>,
) -> Array2<F> {
    let x = v.t().dot(&g.slice(s![.., 1..]));
    let half = F::cast(0.5);
    let mut m = Array2::zeros((lam.len(), lam.len()));
    for ((i, j), m) in m.indexed_iter_mut() {
        *m = if i == j {
            diag.map_or(F::zero(), |d| d[i])
        } else {
            let k = (x[[i, j]] - x[[j, i]]) * half;
            if k == F::zero() {
                k
            } else {
                k / (lam[j] - lam[i])
            }
        };
    }
    m
}

/// `dA = V·(diag(λ̄) + K / (E + I + Z))·Vᵀ`, `Eᵢⱼ = λⱼ − λᵢ`, recorded; `Z` (a constant)
/// is 1 where a pair of equal eigenvalues meets a zero `K`, so that the term is 0 there.
fn eigh_tensor<'t, F: LinalgFloat>(
    _: F,
    g: Tensor<'t, F>,
    ctx: &mut TensorCtx<'_, 't, F>,
) -> Result<()> {
    eigh_recorded(g, ctx, None)
}

/// [`eigh_tensor`], for a matrix decomposed scaled (`Some`): the gaps are those of the
/// scaled eigenvalues `λ̃ = 2ˢ·λ` in value (exactly) and `2ˢ·(λⱼ − λᵢ)` in derivative,
/// and the rotation term is scaled back by `2ˢ` at the end.
fn eigh_recorded<'t, F: LinalgFloat>(
    g: Tensor<'t, F>,
    ctx: &mut TensorCtx<'_, 't, F>,
    scale: Option<&EighScale<F>>,
) -> Result<()> {
    let y = ctx.output();
    let n = y.rows();
    let (lam, v) = (y.try_slice(.., ..1)?, y.try_slice(.., 1..)?);
    let (glam, gv) = (g.try_slice(.., ..1)?, g.try_slice(.., 1..)?);
    let x = v.t().try_matmul(gv)?;
    let k = x.try_sub(x.t())?.mul_scalar(F::cast(0.5));
    let mut e = lam.t().try_sub(lam)?;
    // 2ˢ in two factors, each representable (s ≤ 1074 + 1)
    let halves = scale.map(|s| {
        let first = s.exponent / 2;
        [first, s.exponent - first].map(|p| F::cast(2f64.powi(p)))
    });
    if let (Some(scale), Some([p, q])) = (scale, halves) {
        let gaps = e.mul_scalar(p).mul_scalar(q);
        let exact = Array2::from_shape_fn((n, n), |(i, j)| scale.scaled[j] - scale.scaled[i]);
        e = gaps.try_add(ctx.constant(exact - gaps.try_value()?))?;
    }
    let (kv, ev) = (k.try_value()?, e.try_value()?);
    let mut fix = Array2::zeros((n, n));
    for ((i, j), z) in fix.indexed_iter_mut() {
        if i == j || (kv[[i, j]] == F::zero() && ev[[i, j]] == F::zero()) {
            *z = F::one();
        }
    }
    let m = k.try_div(e.try_add(ctx.constant(fix))?)?;
    let m = match halves {
        None => m.try_add(glam.try_diag_embed()?)?,
        Some(_) => m,
    };
    let da = match halves {
        None => v.try_matmul(m)?.try_matmul(v.t())?,
        // (2ˢ after the products, whose terms can overflow where their sum does not; in
        // reverse, past s > 1023, a cotangent times 2ˢ would overflow before it meets the
        // zeros it cancels against: there `ScaledEigh` records no differentiable form)
        Some([p, q]) => {
            let d = glam.try_diag_embed()?;
            // (m's diagonal is 0, but the cotangent that reaches it would meet k's +x − x
            // there: selected out, it is exactly 0)
            let off = Array2::from_shape_fn((n, n), |(i, j)| i != j);
            let zero = ctx.constant(Array2::zeros((1, 1)));
            let m = Tensor::try_where_(off.view(), m, zero)?;
            let rotation = v.try_matmul(m)?.try_matmul(v.t())?;
            let rotation = rotation.mul_scalar(p).mul_scalar(q);
            rotation.try_add(v.try_matmul(d)?.try_matmul(v.t())?)?
        }
    };
    ctx.accumulate(0, da)
}

/// The rule of `eigh` at a tiny matrix, decomposed scaled ([`EighScale`]): the array
/// form as [`eigh_backward`] with the gaps `2ˢ/(λ̃ⱼ − λ̃ᵢ)`, the rotation term
/// `V·(F̃ ∘ K)·Vᵀ` scaled by `2ˢ` once, elementwise, after the products (so that it
/// overflows only where the gradient does, and a zero term stays zero).
struct ScaledEigh<F>(EighScale<F>);

impl<F: LinalgFloat> ScaledEigh<F> {
    /// `dA` from the gradient `g` of the packed output `y = [λ V]`.
    fn array(&self, g: &Array2<F>, y: ArrayView2<'_, F>) -> Array2<F> {
        let v = y.slice(s![.., 1..]);
        let scaled = ArrayView1::from(&self.0.scaled[..]);
        let m = rotation(g, v, scaled, None);
        let mut da = v.dot(&m).dot(&v.t());
        da.mapv_inplace(|x| scale_by(x, self.0.exponent));
        let d = Array2::from_diag(&g.column(0));
        da += &v.dot(&d).dot(&v.t());
        da
    }
}

impl<F: LinalgFloat> Backward<F> for ScaledEigh<F> {
    fn backward(&self, g: Array2<F>, ctx: &mut Ctx<'_, '_, F>) {
        let da = self.array(&g, ctx.output());
        ctx.accumulate(0, da);
    }

    /// Where `2ˢ` is a float, [`eigh_recorded`]; past the largest float (a subnormal
    /// matrix), the array form's `dA`, recorded as a value whose own derivative is a
    /// `Subnormal` error: in recorded ops, a cotangent times `2ˢ` would overflow before
    /// meeting the zeros it cancels against, and the second derivative be NaN where it is
    /// 0 or overflows.
    fn backward_tensor<'t>(&self, g: Tensor<'t, F>, ctx: &mut TensorCtx<'_, 't, F>) -> Result<()> {
        if scale_by(F::one(), self.0.exponent).is_finite() {
            return eigh_recorded(g, ctx, Some(&self.0));
        }
        let y = ctx.output();
        let da = self.array(&g.try_value()?, y.try_value()?.view());
        let n = y.rows();
        let tape = g.tape();
        let operands = [g, y];
        let rule = tape.track(&operands).then(|| {
            let kind = ErrorKind::Subnormal {
                shape: (n, n),
                exponent: self.0.exponent,
            };
            (
                Saves::NONE,
                Rule::undefined("eigh", kind, ctx.recorded_at()),
            )
        });
        // (named apart from eigh: its inputs are eigh's gradient and output, not A)
        let da = tape.record(
            "eigh_backward",
            Ok(da),
            (n, n),
            &operands,
            rule,
            ctx.location,
        );
        ctx.accumulate(0, da)
    }
}

/// # Linear algebra: decompositions
///
/// Feature `linalg`.
impl<'t, F: LinalgFloat> Tensor<'t, F> {
    /// The lower Cholesky factor `L` of a symmetric positive definite matrix, `A = L·Lᵀ`
    /// (LAPACK `potrf`), zeros above the diagonal. Reads the symmetric part
    /// `(A + Aᵀ)/2`, as JAX does.
    ///
    /// The derivative (symmetric, as in JAX and PyTorch): `dA = ½·L⁻ᵀ·(P + Pᵀ)·L⁻¹`,
    /// `P = Φ(Lᵀ·L̄)`, `Φ` the lower triangle with its diagonal halved (Murray 2016),
    /// computed by Murray's blocked algorithm.
    ///
    /// *Needs the `linalg` feature and a LAPACK provider.*
    ///
    /// # Panics
    ///
    /// If `A` is not square, not positive definite, or holds NaN; see
    /// [`Tensor::try_cholesky`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let a = tape.param(array![[4.0, 2.0], [2.0, 5.0]]);
    /// let l = a.cholesky();
    /// assert_eq!(l.value(), array![[2.0, 0.0], [1.0, 2.0]]);
    /// ```
    #[track_caller]
    pub fn cholesky(self) -> Tensor<'t, F> {
        or_panic(self.try_cholesky())
    }

    /// The Cholesky factor, or an error.
    ///
    /// # Errors
    ///
    /// `NotSquare`; `NotPositiveDefinite` with LAPACK's `info` (the order of the first
    /// leading minor that is not positive); `NotFinite` if `A` holds NaN or an infinity;
    /// `TooLarge` or `OutOfMemory` if the working copy of `A` (which becomes `L`) cannot be
    /// allocated.
    #[track_caller]
    pub fn try_cholesky(self) -> Result<Tensor<'t, F>> {
        let location = Location::caller();
        let n = square("cholesky", self.shape, location)?;
        let tape = self.tape;
        let y = tape.read1(self.id, lapack::cholesky);
        let y = computed(y, "cholesky", location)?;
        let rule = tape.track(&[self]).then(|| {
            (
                Saves::output(),
                Rule::new(cholesky_backward, cholesky_tensor),
            )
        });
        Ok(tape.record("cholesky", y, (n, n), &[self], rule, location))
    }

    /// The eigenvalues `λ` (an n × 1 column, ascending) and eigenvectors `V` (n × n, the
    /// columns, orthonormal) of a symmetric matrix, `A = V·diag(λ)·Vᵀ` (LAPACK `syev`).
    /// Reads the symmetric part `(A + Aᵀ)/2`. Each eigenvector's sign is LAPACK's choice.
    ///
    /// The derivative: `dA = V·(diag(λ̄) + F ∘ K)·Vᵀ`, `K = (Vᵀ·V̄ − V̄ᵀ·V)/2`,
    /// `Fᵢⱼ = 1/(λⱼ − λᵢ)`. Where two eigenvalues are equal it is undefined for a loss that
    /// depends on how `V` splits their eigenspace: those terms are ±∞ or NaN (as in
    /// PyTorch and JAX). A loss of `λ` alone (or of `V` through functions blind to the
    /// split) has a finite gradient there: the terms with `Kᵢⱼ = 0` are 0.
    ///
    /// A matrix whose largest entry is below 2⁻⁵¹¹ (f64) is decomposed as `2ˢ·A` and its
    /// derivatives scaled back. Below 2⁻¹⁰²³ (subnormal), `2ˢ` is no float: the first
    /// derivative is still computed (by `backward` and [`Tape::grad`](crate::Tape::grad)),
    /// but differentiating it again is a `Subnormal` error naming `eigh` and this line.
    ///
    /// *Needs the `linalg` feature and a LAPACK provider.*
    ///
    /// # Panics
    ///
    /// If `A` is not square or holds NaN, or LAPACK does not converge; see
    /// [`Tensor::try_eigh`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let a = tape.param(array![[2.0, 1.0], [1.0, 2.0]]);
    /// let (lam, _v) = a.eigh();
    /// assert!((lam.value() - array![[1.0], [3.0]]).iter().all(|e: &f64| e.abs() < 1e-12));
    /// // the largest eigenvalue's gradient is v·vᵀ, v = (1, 1)/√2
    /// let grads = tape.backward(lam.slice_rows(1..).sum()).unwrap();
    /// assert!(grads.get(a).unwrap().iter().all(|e: &f64| (e - 0.5).abs() < 1e-12));
    /// ```
    #[track_caller]
    pub fn eigh(self) -> (Tensor<'t, F>, Tensor<'t, F>) {
        or_panic(self.try_eigh())
    }

    /// The eigenvalues and eigenvectors, or an error.
    ///
    /// # Errors
    ///
    /// `NotSquare`; `NotFinite` if `A` holds NaN or an infinity; `Lapack` (routine `syev`)
    /// if the iteration does not converge; `TooLarge` or `OutOfMemory` if the n × (n + 1)
    /// result `[λ V]`, in which the eigenvectors are computed, cannot be allocated.
    #[track_caller]
    pub fn try_eigh(self) -> Result<(Tensor<'t, F>, Tensor<'t, F>)> {
        let location = Location::caller();
        let n = square("eigh", self.shape, location)?;
        let tape = self.tape;
        // packed: [λ V], column-major, so that both are contiguous views
        let y = tape.read1(self.id, lapack::eigh_packed);
        let (y, scale) = match computed(y, "eigh", location)? {
            Ok((y, scale)) => (Ok(y), scale),
            Err(lost) => (Err(lost), None),
        };
        let rule = tape.track(&[self]).then(|| {
            let rule = match scale {
                None => Rule::new(eigh_backward, eigh_tensor),
                Some(scale) => Rule::boxed(ScaledEigh(scale)),
            };
            (Saves::output(), rule)
        });
        let packed = tape.record("eigh", y, (n, n + 1), &[self], rule, location);
        Ok((packed.try_slice(.., ..1)?, packed.try_slice(.., 1..)?))
    }
}
