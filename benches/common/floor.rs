//! The floor of a train step: the same math as [`HandTrainer`](super::HandTrainer)
//! (sigmoid layers, MSE, SGD) written as plain loops over slices, with no ndarray call and
//! no allocation in a steady step, and the sigmoid through tapegrad's vectorized kernel
//! over a whole layer (`tapegrad::bench_kernels`; the hand-written step calls the scalar
//! `exp` per element). For tiny shapes (W0: 150 × 4 × 2 × 3) this is what the arithmetic
//! costs; ndarray's and matrixmultiply's fixed cost per call is what separates the
//! hand-written ndarray step from it.

// index loops over K and M are what unrolls when they are constants
#![allow(clippy::needless_range_loop)]

use ndarray::Array2;

use tapegrad::bench_kernels;

use super::{LR, Mlp};

/// Train steps as fused loops: per layer, one loop nest for `Z = X·W + b` and the
/// sigmoid; for the loss, one pass; per layer backward, one nest for the input gradient
/// (through the old weights) and one for the weight and bias gradients with the update.
pub struct FloorTrainer {
    pub net: Mlp,
    /// Each layer's output, row-major.
    hs: Vec<Vec<f32>>,
    /// Each layer's pre-activation `X·W + b`, row-major.
    zs: Vec<Vec<f32>>,
    /// Each layer's delta (the gradient at its pre-activation), row-major.
    deltas: Vec<Vec<f32>>,
    /// Each layer's weight gradient, row-major.
    dws: Vec<Vec<f32>>,
}

impl FloorTrainer {
    pub fn new(net: Mlp) -> Self {
        FloorTrainer {
            net,
            hs: Vec::new(),
            zs: Vec::new(),
            deltas: Vec::new(),
            dws: Vec::new(),
        }
    }

    /// One train step. Returns the loss.
    pub fn step(&mut self, x: &Array2<f32>, y: &Array2<f32>) -> f32 {
        let net = &mut self.net;
        let layers = net.ws.len();
        let n = x.nrows();
        if self
            .hs
            .first()
            .is_none_or(|h| h.len() != n * net.ws[0].ncols())
        {
            self.hs = net.ws.iter().map(|w| vec![0.0; n * w.ncols()]).collect();
            self.zs = self.hs.clone();
            self.deltas = self.hs.clone();
            self.dws = net.ws.iter().map(|w| vec![0.0; w.len()]).collect();
        }
        let x = x.as_slice().expect("standard data");
        let y = y.as_slice().expect("standard targets");
        for l in 0..layers {
            let (k, m) = net.ws[l].dim();
            let w = net.ws[l].as_slice().expect("standard weights");
            let b = net.bs[l].as_slice().expect("a standard row");
            let (done, rest) = self.hs.split_at_mut(l);
            let input: &[f32] = if l == 0 { x } else { &done[l - 1] };
            sized!(k, m, forward(input, w, b, &mut self.zs[l]));
            bench_kernels::map("sigmoid", &self.zs[l], &mut rest[0]);
        }
        let out = &self.hs[layers - 1];
        let count = out.len() as f32;
        let mut sq = 0.0;
        for ((d, &o), &t) in self.deltas[layers - 1].iter_mut().zip(out).zip(y) {
            let e = o - t;
            sq += e * e;
            *d = 2.0 * e / count * o * (1.0 - o);
        }
        for l in (0..layers).rev() {
            let (k, m) = net.ws[l].dim();
            let (below, here) = self.deltas.split_at_mut(l);
            let delta = &here[0];
            if l > 0 {
                // dH = Δ·Wᵀ through the old weights, times the sigmoid's derivative
                let w = net.ws[l].as_slice().expect("standard weights");
                sized!(
                    k,
                    m,
                    input_grad(delta, w, &self.hs[l - 1], &mut below[l - 1])
                );
            }
            let input: &[f32] = if l == 0 { x } else { &self.hs[l - 1] };
            // dW = Xᵀ·Δ and db = Σ rows of Δ, row by row; then W −= LR·dW, b −= LR·db
            let dw = &mut self.dws[l];
            let b = net.bs[l].as_slice_mut().expect("a standard row");
            sized!(k, m, update(input, delta, dw, b));
            let w = net.ws[l].as_slice_mut().expect("standard weights");
            w.iter_mut().zip(dw.iter()).for_each(|(w, &g)| *w -= LR * g);
        }
        sq / count
    }
}

/// Calls `$f::<K, M>` with the layer's `k × m` known at compile time where it is one of
/// W0's shapes (so the compiler unrolls the short loops), `$f::<0, 0>` (sizes read from
/// the slices) otherwise.
macro_rules! sized {
    ($k:expr, $m:expr, $f:ident($($a:expr),*)) => {
        match ($k, $m) {
            (4, 2) => $f::<4, 2>($k, $m, $($a),*),
            (2, 3) => $f::<2, 3>($k, $m, $($a),*),
            (k, m) => $f::<0, 0>(k, m, $($a),*),
        }
    };
}
use sized;

/// `K` if known at compile time (non-zero), else `k`.
#[inline(always)]
fn dim<const K: usize>(k: usize) -> usize {
    if K == 0 { k } else { K }
}

/// `Z = X·W + b`, a row at a time.
#[inline(always)]
fn forward<const K: usize, const M: usize>(
    k: usize,
    m: usize,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    z: &mut [f32],
) {
    let (k, m) = (dim::<K>(k), dim::<M>(m));
    for (row, o) in x.chunks_exact(k).zip(z.chunks_exact_mut(m)) {
        for j in 0..m {
            let mut s = b[j];
            for p in 0..k {
                s += row[p] * w[p * m + j];
            }
            o[j] = s;
        }
    }
}

/// `dH = (Δ·Wᵀ) ∘ H ∘ (1 − H)`, a row at a time.
#[inline(always)]
fn input_grad<const K: usize, const M: usize>(
    k: usize,
    m: usize,
    delta: &[f32],
    w: &[f32],
    h: &[f32],
    dh: &mut [f32],
) {
    let (k, m) = (dim::<K>(k), dim::<M>(m));
    for ((drow, dhrow), hrow) in delta
        .chunks_exact(m)
        .zip(dh.chunks_exact_mut(k))
        .zip(h.chunks_exact(k))
    {
        for p in 0..k {
            let mut s = 0.0;
            for j in 0..m {
                s += drow[j] * w[p * m + j];
            }
            dhrow[p] = s * hrow[p] * (1.0 - hrow[p]);
        }
    }
}

/// `dW = Xᵀ·Δ` into `dw` and `b −= LR · Σ rows of Δ`, a row at a time.
#[inline(always)]
fn update<const K: usize, const M: usize>(
    k: usize,
    m: usize,
    x: &[f32],
    delta: &[f32],
    dw: &mut [f32],
    b: &mut [f32],
) {
    let (k, m) = (dim::<K>(k), dim::<M>(m));
    dw.fill(0.0);
    let mut db = [0.0f32; 64];
    let db = &mut db[..m.min(64)];
    for (row, drow) in x.chunks_exact(k).zip(delta.chunks_exact(m)) {
        for p in 0..k {
            for j in 0..m {
                dw[p * m + j] += row[p] * drow[j];
            }
        }
        for j in 0..db.len() {
            db[j] += drow[j];
        }
    }
    if m > 64 {
        // wide layers (not W0's): the bias sums column by column
        for j in 0..m {
            let s: f32 = delta.iter().skip(j).step_by(m).sum();
            b[j] -= LR * s;
        }
        return;
    }
    b.iter_mut().zip(db.iter()).for_each(|(b, &d)| *b -= LR * d);
}
