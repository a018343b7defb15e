//! The ops, one file per family, each op's forward and VJP rule side by side.
//!
//! # The rule table
//!
//! Every op, its forward, its vector-Jacobian product and what its rule saves, in one place
//! (PyTorch's `derivatives.yaml`, without code generation). `G = ∂L/∂Y` is the gradient of
//! the op's output; `sum_to` sums a broadcast gradient back to the operand's shape
//! (`kernels/mod.rs`); `∘` is the elementwise product. "Saves" lists what the rule reads
//! during backward: values named there stay on the tape (no copy) until the rule has run,
//! and a `?` means "only if the other operand needs a gradient".
//!
//! Every rule has two forms, side by side in the op's file: the **array form** (the VJP
//! column) that first-order backward runs, on plain arrays and in place; and the **tensor
//! form** (the `*_tensor` function beside it), the same formula written in recorded ops,
//! which [`Tape::grad`](crate::Tape::grad) runs so that gradients can be differentiated
//! again, to any order. The last column says where the tensor form differs from a
//! recording of the VJP. `tests/gradcheck.rs` requires both forms to agree, and checks
//! every op's second derivatives (Hessian-vector products against finite differences of
//! the gradient, and the Hessian's symmetry).
//!
//! | op | forward | VJP | saves | tensor form |
//! |----|---------|-----|-------|-------------|
//! | `matmul(X, W)` | `Y = X·W` | `dX = G·Wᵀ ; dW = Xᵀ·G` (GEMM, beta = 1 into an existing slot) | `W?`, `X?` | the VJP, recorded |
//! | `linear(X, W, b)` | `X·W + 1·b`, one GEMM with beta = 1 over the broadcast `b` | `dX = G·Wᵀ ; dW = Xᵀ·G ; db = 1ᵀ·G` | `W?`, `X?` | the VJP, recorded |
//! | `add(A, B)` | `A + B` (broadcast) | `dA = sum_to(G) ; dB = sum_to(G)` | nothing | the VJP, recorded |
//! | `sub(A, B)` | `A − B` (broadcast) | `dA = sum_to(G) ; dB = −sum_to(G)` | nothing | the VJP, recorded |
//! | `mul(A, B)` | `A ∘ B` (broadcast) | `dA = sum_to(G ∘ B) ; dB = sum_to(G ∘ A)` | `B?`, `A?` | the VJP, recorded |
//! | `div(A, B)` | `Y = A / B` (broadcast) | `dA = sum_to(G / B) ; dB = −sum_to((G / B) ∘ Y)` | `B`, `Y?` | the VJP, recorded |
//! | `neg(X)` | `−X` | `dX = −G` | nothing | the VJP, recorded |
//! | `add_scalar(X, s)` | `X + s` | `dX = G` | nothing | the VJP, recorded |
//! | `mul_scalar(X, s)` | `s·X` | `dX = s·G` | nothing | the VJP, recorded |
//! | `scalar_div(X, s)` | `Y = s / X` (also `s / x`) | `dX = −(G / X) ∘ Y` | `X`, `Y` | the VJP, recorded |
//! | `add_row(X, b)` | `X + 1·b`, `b` is 1 × n | `dX = G ; db = 1ᵀ·G` (column sums, seed 003) | nothing | the VJP, recorded |
//! | `add_col(X, c)` | `X + c·1ᵀ`, `c` is m × 1 | `dX = G ; dc = G·1` (row sums) | nothing | the VJP, recorded |
//! | `sum(X)` | `Σᵢⱼ xᵢⱼ` (1 × 1) | `dX = G` broadcast to X's shape | nothing | `broadcast_to(G)` |
//! | `mean(X)` | `Σᵢⱼ xᵢⱼ / mn` | `dX = G / mn` broadcast | nothing | `broadcast_to(G / mn)` |
//! | `sum_axis(X, a)` | sums along axis `a`, keeping it (1 × n or m × 1) | `dX = G` broadcast | nothing | `broadcast_to(G)` |
//! | `mean_axis(X, a)` | means along axis `a`, keeping it | `dX = G / len(a)` broadcast | nothing | `broadcast_to(G / len(a))` |
//! | `max(X)` | `max X` (1 × 1) | `dX = G ∘ [X = Y] / ties` | `X`, `Y` | `broadcast_to(G) ∘ W`, `W` a constant |
//! | `min(X)` | `min X` (1 × 1) | `dX = G ∘ [X = Y] / ties` | `X`, `Y` | `broadcast_to(G) ∘ W`, `W` a constant |
//! | `max_axis(X, a)` | largest along `a`, kept | `dX = G ∘ [X = Y] / ties`, per lane | `X`, `Y` | `broadcast_to(G) ∘ W`, `W` a constant |
//! | `min_axis(X, a)` | smallest along `a`, kept | `dX = G ∘ [X = Y] / ties`, per lane | `X`, `Y` | `broadcast_to(G) ∘ W`, `W` a constant |
//! | `argmax(X, a)` | index of the largest per lane (a `Vec<usize>`) | none: indices have no gradient | nothing | — |
//! | `argmin(X, a)` | index of the smallest per lane (a `Vec<usize>`) | none: indices have no gradient | nothing | — |
//! | `t(X)` | `Xᵀ` (a view, no copy) | `dX = Gᵀ` (a view, no copy) | nothing | the VJP, recorded |
//! | `reshape(X, shape)` | row-major reshape (a view when `X` is contiguous) | `dX = reshape(G, shape of X)` | nothing | the VJP, recorded |
//! | `slice(X, rows, cols)` | `X[rows, cols]`, ranges with steps (a view) | `dX[rows, cols] += G`, in place | nothing | `embed(G)`: zeros with `G` at `[rows, cols]` (its VJP: a slice) |
//! | `slice_rows(X, rows)` | `slice(X, rows, ..)` | as `slice` | nothing | as `slice` |
//! | `slice_cols(X, cols)` | `slice(X, .., cols)` | as `slice` | nothing | as `slice` |
//! | `concat_rows(X₁, X₂, …)` | `[X₁; X₂; …]` | `dXₖ =` Xₖ's block of rows of `G` | nothing | slices of `G` |
//! | `concat_cols(X₁, X₂, …)` | `[X₁ X₂ …]` | `dXₖ =` Xₖ's block of columns of `G` | nothing | slices of `G` |
//! | `gather_rows(X, idx)` | `Yᵢ = X_{idxᵢ}` | `dX_{idxᵢ} += Gᵢ` (scatter-add) | `idx` (owned) | `scatter_rows(G)` (its VJP: a gather) |
//! | `sigmoid(X)` | `Y = 1 / (1 + e⁻ˣ)` | `dX = G ∘ Y ∘ (1 − Y)` | `Y` | the VJP, recorded |
//! | `tanh(X)` | `Y = tanh X` | `dX = G ∘ (1 − Y²)` | `Y` | the VJP, recorded |
//! | `relu(X)` | `Y = max(X, 0)` | `dX = G ∘ [Y > 0]` | `Y` | `G ∘ M`, `M = [Y > 0]` a constant |
//! | `leaky_relu(X, α)` | `X` for `X > 0`, else `αX` | `dX = G ∘ (1 for X > 0, else α)` | `X` | `G ∘ M`, `M` a constant |
//! | `elu(X, α)` | `X` for `X > 0`, else `α(eˣ − 1)` | `dX = G ∘ (1 for Y > 0, else Y + α)` | `Y` | `G ∘ (M₊ + M₋ ∘ (Y + α))`, masks constant |
//! | `gelu(X)` | `X Φ(X)`, `Φ(x) = (1 + erf(x/√2)) / 2` | `dX = G ∘ (Φ(X) + X φ(X))` | `X` | the VJP, recorded |
//! | `gelu_tanh(X)` | `X (1 + tanh u) / 2`, `u = √(2/π)(X + 0.044715 X³)` | `dX = G ∘ ((1 + t)/2 + X (1 − t²) u′ / 2)`, `t = tanh u` | `X` | the VJP, recorded |
//! | `softplus(X)` | `max(X, 0) + ln(1 + e^−|X|)` | `dX = G ∘ σ(X)` | `X` | the VJP, recorded |
//! | `silu(X)` | `X ∘ σ(X)` | `dX = G ∘ σ(X)(1 + X(1 − σ(X)))` | `X` | the VJP, recorded |
//! | `exp(X)` | `Y = eˣ` | `dX = G ∘ Y` | `Y` | the VJP, recorded |
//! | `log(X)` | `ln X` | `dX = G / X` (+∞ at ±0) | `X` | `G / (X + 0)` |
//! | `sqrt(X)` | `Y = √X` | `dX = G / 2Y` (+∞ at ±0) | `Y` | the VJP, recorded |
//! | `square(X)` | `X²` | `dX = 2 G ∘ X` | `X` | the VJP, recorded |
//! | `powi(X, n)` | `Xⁿ` | `dX = n G ∘ Xⁿ⁻¹` | `X` | as the VJP; `Xⁿ⁻¹` by `powf` for `n = i32::MIN` |
//! | `powf(X, p)` | `Xᵖ` | `dX = p G ∘ Xᵖ⁻¹` | `X` | the VJP, recorded |
//! | `recip(X)` | `Y = 1 / X` | `dX = −G ∘ Y²` | `Y` | the VJP, recorded |
//! | `abs(X)` | `|X|` | `dX = G ∘ sign(X)` (0 at 0) | `X` | `G ∘ sign(X)`, the signs a constant |
//! | `sin(X)` | `sin X` | `dX = G ∘ cos X` | `X` | the VJP, recorded |
//! | `cos(X)` | `cos X` | `dX = −G ∘ sin X` | `X` | the VJP, recorded |
//! | `erf(X)` | `erf X` | `dX = G ∘ 2/√π e^(−X²)` | `X` | the VJP, recorded |
//! | `clamp(X, lo, hi)` | `min(max(X, lo), hi)` | `dX = G ∘ [lo ≤ X ≤ hi]` | `X` | `G ∘ M`, `M` a constant |
//! | `maximum(A, B)` | `max(A, B)` elementwise (broadcast) | `dA = sum_to(G ∘ W) ; dB = sum_to(G ∘ (1 − W))`, `W = [A > B] + [A = B]/2` | `A`, `B` | `W` a constant |
//! | `minimum(A, B)` | `min(A, B)` elementwise (broadcast) | as `maximum`, `W = [A < B] + [A = B]/2` | `A`, `B` | `W` a constant |
//! | `where_(M, A, B)` | `A` where `M`, else `B` (broadcast) | `dA = sum_to(where_(M, G, 0)) ; dB = sum_to(where_(M, 0, G))` (selected: 0 where `G` is ±∞) | the mask (owned) | `where_` recorded |
//! | `broadcast_to(X, shape)` | `X` repeated to `shape` | `dX = sum_to(G)` | nothing | the VJP, recorded |
//! | `softmax(X, a)` | `Y = exp(X − lse_a(X))` | `dX = Y ∘ (G − Σ_a(G ∘ Y))` | `Y` | the VJP, recorded |
//! | `log_softmax(X, a)` | `Y = X − lse_a(X)` | `dX = G − exp(Y) ∘ Σ_a G` | `Y` | the VJP, recorded |
//! | `logsumexp(X, a)` | `Y = m + ln Σ_a exp(X − m)` | `dX = G ∘ softmax_a(X)` | `X` | the VJP, recorded |
//! | `layer_norm(X, γ, β, ε)` | per row `x̂ ∘ γ + β`, `x̂ = (x − μ) r`, `r = 1/√(σ² + ε)` | per row `dx = r (ĝ − mean ĝ − x̂ ∘ mean(ĝ ∘ x̂))`, `ĝ = G ∘ γ` ; `dγ = Σ G ∘ x̂` ; `dβ = Σ G` | `x̂`, `r` (owned), `γ` | recomputes `x̂` and `r` from `X` |
//! | `mse_loss(P, T)` | `Σ (P − T)² / mn` (1 × 1) | `dP = 2G (P − T) / mn ; dT = −dP` | P, T | recomputes `P − T` from the inputs |
//! | `l1_loss(P, T)` | `Σ |P − T| / n` (1 × 1) | `dP = G sign(P − T) / n ; dT = −dP` | `P`, `T` | the signs a constant |
//! | `huber_loss(P, T, δ)` | `Σ h(P − T) / n`, `h(d) = d²/2` for `|d| ≤ δ`, else `δ(|d| − δ/2)` | `dP = G clamp(P − T, −δ, δ) / n ; dT = −dP` | `P`, `T` | the VJP, recorded |
//! | `bce_with_logits(Z, T)` | `Σ [max(Z, 0) − Z ∘ T + ln(1 + e^−|Z|)] / n` | `dZ = G (σ(Z) − T) / n ; dT = −G Z / n` | `Z`, `T` | the VJP, recorded |
//! | `softmax_cross_entropy(Z, T)` | `−Σ T ∘ log softmax(Z) / m` (1 × 1) | `dZ = G (softmax(Z) ∘ rowsum(T) − T) / m ; dT = −G log softmax(Z) / m` | `log softmax(Z)` (owned), `T?` | recomputes `log_softmax(Z)` from `Z` |
//! | `softmax_cross_entropy_indices(Z, y)` | `−Σᵢ log softmax(Z)[i, yᵢ] / m` (1 × 1) | `dZ = G (softmax(Z) − onehot(y)) / m` | `softmax(Z)`, `y` (owned) | recomputes `softmax(Z)`; `onehot(y)` a constant |
//! | `nll_loss(X, y)` | `−Σᵢ X[i, yᵢ] / m` from log-probabilities | `dX = −G onehot(y) / m` | `y` (owned) | `onehot(y)` a constant |
//! | `dropout(X, p, rng)` | `X ∘ M / (1 − p)`, `M` drawn from `rng` | `dX = G ∘ M / (1 − p)` | `M / (1 − p)` (owned) | the mask a constant |
//! | `remat(inputs, f)`, a method of the tape | `f(inputs)` on a tape of its own; only the result is kept | `f` run again on the saved inputs, then backward through it with seed `G`; nothing to an input `f`'s output does not depend on | the inputs | `f` run again on this tape, its VJP recorded (`grad_seeded`), nothing to such an input |
//! | `trace(A)` | `Σᵢ aᵢᵢ` (1 × 1) | `dA = g·I`: `g` added to the diagonal (no identity is built) | nothing | `diag_embed(broadcast_to(g))`, padded by `embed` |
//! | `diag(A)` | the main diagonal, a column | `dA = diag_embed(G)`: `G` added to the diagonal | nothing | `diag_embed(G)`, padded by `embed` |
//! | `diag_embed(v)` | `v` (a row or column) on the diagonal of a square matrix | `dv = diag(G)` | nothing | the VJP, recorded |
//! | `tril(A, k)` | zeros above diagonal `k` | `dA = tril(G, k)` | nothing | the VJP, recorded |
//! | `triu(A, k)` | zeros below diagonal `k` | `dA = triu(G, k)` | nothing | the VJP, recorded |
//! | `inv(A)` | `Y = A⁻¹` (LAPACK `getrf`, `getri`) | `dA = −Yᵀ·G·Yᵀ` (Giles 2008); at a matrix singular to working precision (`1/κ₁ ≤ ε`, also with its rows and columns scaled by powers of two), an `IllConditioned` error | `Y` | the VJP, recorded |
//! | `solve(A, B)` | `X = A⁻¹·B`, any number of columns (`getrf`, `getrs`) | `dB = A⁻ᵀ·G` with the forward's LU ; `dA = −dB·Xᵀ` (Giles 2008); as `inv`, an `IllConditioned` error where `A` is singular to working precision | the LU (owned), `X?` | `dB = solve(Aᵀ, G)` |
//! | `solve_triangular(A, B, lower, transpose)` | `X = op(A)⁻¹·B` on `A`'s triangle (`trtrs`) | `dB = op(A)⁻ᵀ·G ; dA = −tri(dB·Xᵀ)`, or `−tri(X·dBᵀ)` for `Aᵀ` (PyTorch, JAX) | `A`, `X?` | the VJP, recorded (`tri` = `tril`/`triu`) |
//! | `cho_solve(L, B)` | `X = (L·Lᵀ)⁻¹·B`, two triangular solves | `dB = (L·Lᵀ)⁻¹·G ; dL = −tril((dB·Xᵀ + X·dBᵀ)·L)` (JAX) | `L`, `X?` | the VJP, recorded |
//! | `det(A)` | `y = ±∏ uᵢᵢ` from the LU (`getrf`) | `dA = g·adj(A)ᵀ`: `g·det(A)·A⁻ᵀ` from the LU (each element scaled once: no under- or overflow of `det A` on the way), or from the SVD at a singular or ill-conditioned `A` (PyTorch) | the LU (owned), or the cofactors (owned) | `cofactor(A)·g`, `cofactor` an op whose derivatives are computed in the SVD's frame (exact at every rank; the third recorded by `Tape::grad` through `A⁻¹`, an `IllConditioned` error where `1/κ₁(A) ≤ ε^¼`) |
//! | `slogdet(A)` | `(sign, y = ln |det A|)` from the LU | `dA = g·A⁻ᵀ` from the LU ; none for the sign ; a `Singular` error at a singular `A`, `IllConditioned` at one singular to working precision (as `inv`) | the LU (owned) | `g·inv(A)ᵀ` |
//! | `logdet(A)` | `ln det A` (NaN if `det A < 0`) | as `slogdet` | the LU (owned) | as `slogdet` |
//! | `cholesky(A)` | `L`, `L·Lᵀ = (A + Aᵀ)/2` (`potrf`) | `dA = ½·L⁻ᵀ(P + Pᵀ)L⁻¹`, `P = Φ(Lᵀ·tril(L̄))` (Murray 2016; blocked: his `chol_blocked_rev`) | `L` | Murray's symbolic form, recorded |
//! | `eigh(A)` | `(λ, V)` of `(A + Aᵀ)/2`, `λ` ascending (`syev`) | `dA = V·(diag(λ̄) + F ∘ K)·Vᵀ`, `K = (Vᵀ·V̄ − V̄ᵀ·V)/2`, `Fᵢⱼ = 1/(λⱼ − λᵢ)` (Giles 2008; PyTorch, JAX); a tiny `A` (below 2⁻⁵¹¹) decomposed as `2ˢ·A`, `F` from its gaps, scaled back once | `λ`, `V` (and `2ˢ·λ`, `s` for a tiny `A`) | the VJP, recorded; at a subnormal `A` (`2ˢ` past the largest float) the array form's value, whose derivative is a `Subnormal` error |
//!
//! The rows from `inv` on need the `linalg` feature and a LAPACK provider (see the
//! crate docs); `Φ(X)` is `X`'s lower triangle with its diagonal halved. `cholesky` and
//! `eigh` read `(A + Aᵀ)/2`, so their gradients are symmetric (JAX's convention).
//!
//! `detach(X)` returns X's value as a new leaf that needs no gradient: backward stops there.
//!
//! Softmax rows are computed as `z − max(z) − ln Σ exp(z − max(z))`, stable for any finite
//! logits; NaN and infinite inputs propagate to the loss instead of panicking.
//!
//! # Fallible and panicking forms
//!
//! Every op that combines shapes comes in two forms: `try_matmul` returns
//! [`Result`](crate::Result) with an [`Error`](crate::Error) naming the op, both shapes and
//! the caller's line; `matmul` is the shorthand that panics with that message (its docs say
//! so). Ops on one tensor cannot fail and return the tensor directly. Operators
//! (`a + b`, `a * b`, `-a`, `a * 2.0`) are the panicking forms of `add`, `mul`, `neg` and
//! `mul_scalar`.
//!
//! # How to add an op
//!
//! Write it as a custom op ([`crate::custom`]): implement
//! [`CustomOp`](crate::custom::CustomOp) with the output's shape, the forward on ndarray
//! views, what the VJP reads ([`Reads`](crate::custom::Reads)), the VJP on arrays, and,
//! for derivatives of higher order, the VJP in tensor ops; record it with
//! [`custom::apply`](crate::custom::apply). It gets what a built-in op gets: a `try_`
//! form with typed errors naming it and your line, the values it reads kept until its
//! VJP has run and released after, `retain_graph`, gradients accumulated into existing
//! buffers, and [`check::gradcheck`](crate::check::gradcheck) and
//! [`check::gradgradcheck`](crate::check::gradgradcheck) to test it.
//! `examples/custom_op.rs` has two: a stable softplus (both VJP forms) and `ln Γ` from an
//! external crate (first order only).

pub use index::Span;
#[cfg(feature = "linalg")]
pub use lapack::LinalgFloat;

// Adding a built-in op (for contributors): take `sigmoid` (`activation.rs`, on the
// `(f, df)` machinery of `unary.rs`) as the model. Write the forward on views; declare
// with `Saves` only what the rule reads; record with `tape.record`, building the rule only
// when `tape.track(..)` says an input needs a gradient, in both forms: the array form
// `fn(param, G, ctx)` adding through the `Ctx` helpers (which accumulate in place and
// un-broadcast), and the tensor form, the same formula in tensor ops through
// `TensorCtx::accumulate` (`Rule::new`, or `Rule::boxed` for a rule that owns arrays).
// Then add a row to the rule table above, cases to `tests/common/mod.rs` and to the fuzzer
// in `tests/fuzz/programs.rs`: the tests fail until all three exist.

mod activation;
mod broadcast;
#[cfg(feature = "linalg")]
mod cofactor;
mod cross_entropy;
#[cfg(feature = "linalg")]
mod decompose;
#[cfg(feature = "linalg")]
mod det;
mod diag;
mod dropout;
mod elementwise;
mod extreme;
mod index;
#[cfg(feature = "linalg")]
mod lapack;
mod loss;
#[cfg(feature = "linalg")]
mod lu;
mod math;
mod matmul;
mod norm;
mod reduce;
mod remat;
mod scalar;
mod select;
mod shape;
mod softmax;
#[cfg(feature = "linalg")]
mod solve;
mod unary;
