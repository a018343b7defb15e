//! With the `blas` feature: matmul operands reach GEMM as the caller's own storage with
//! transpose flags (no copies), gradients accumulate with beta = 1, and constants cost no
//! GEMM in backward.
//!
//! This test binary defines `cblas_sgemm` and `cblas_dgemm` itself. The linker resolves
//! ndarray's calls to these definitions before the system BLAS, so every GEMM the tape
//! makes is recorded (layout, transpose flags, pointers, leading dimensions, beta) and then
//! computed by a plain triple loop, which the tests also check against ndarray.

#![cfg(feature = "blas")]

use std::sync::Mutex;

use ndarray::Array2;
use tapegrad::{BackwardOptions, Tape};

const ROW_MAJOR: i32 = 101;
const NO_TRANS: i32 = 111;
const TRANS: i32 = 112;

/// One recorded GEMM call: `C ← α op(A) op(B) + β C`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Call {
    layout: i32,
    trans_a: i32,
    trans_b: i32,
    m: i32,
    n: i32,
    k: i32,
    a: usize,
    lda: i32,
    b: usize,
    ldb: i32,
    beta: f64,
    c: usize,
}

static CALLS: Mutex<Vec<Call>> = Mutex::new(Vec::new());
/// Tests run in parallel threads and every GEMM lands in one log: each test holds this
/// for its whole body (its reference products call the mock too).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

macro_rules! mock_gemm {
    ($name:ident, $t:ty) => {
        /// A recording, naive `cblas_?gemm`.
        ///
        /// # Safety
        ///
        /// The pointers and leading dimensions must describe valid matrices, as for BLAS.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(
            layout: i32,
            trans_a: i32,
            trans_b: i32,
            m: i32,
            n: i32,
            k: i32,
            alpha: $t,
            a: *const $t,
            lda: i32,
            b: *const $t,
            ldb: i32,
            beta: $t,
            c: *mut $t,
            ldc: i32,
        ) {
            let call = Call {
                layout,
                trans_a,
                trans_b,
                m,
                n,
                k,
                a: a as usize,
                lda,
                b: b as usize,
                ldb,
                beta: beta as f64,
                c: c as usize,
            };
            CALLS.lock().unwrap().push(call);
            let (m, n, k) = (m as isize, n as isize, k as isize);
            let (lda, ldb, ldc) = (lda as isize, ldb as isize, ldc as isize);
            // Element (i, j) of a stored matrix with leading dimension ld, and of op(·).
            let at = |i: isize, j: isize, ld: isize| {
                if layout == ROW_MAJOR {
                    i * ld + j
                } else {
                    i + j * ld
                }
            };
            let op = |i: isize, j: isize, ld: isize, trans: i32| {
                if trans == NO_TRANS {
                    at(i, j, ld)
                } else {
                    at(j, i, ld)
                }
            };
            for i in 0..m {
                for j in 0..n {
                    let mut s: $t = 0.0;
                    for l in 0..k {
                        // SAFETY: in bounds for the matrices the caller described.
                        s += unsafe {
                            *a.offset(op(i, l, lda, trans_a)) * *b.offset(op(l, j, ldb, trans_b))
                        };
                    }
                    // SAFETY: as above; with beta = 0 the old value is not read (BLAS rule).
                    unsafe {
                        let cij = c.offset(at(i, j, ldc));
                        *cij = if beta == 0.0 {
                            alpha * s
                        } else {
                            alpha * s + beta * *cij
                        };
                    }
                }
            }
        }
    };
}

mock_gemm!(cblas_sgemm, f32);
mock_gemm!(cblas_dgemm, f64);

/// Runs `f` with an empty call log and returns the calls it made. The caller holds
/// [`serial`].
fn record(f: impl FnOnce()) -> Vec<Call> {
    CALLS.lock().unwrap().clear();
    f();
    std::mem::take(&mut *CALLS.lock().unwrap())
}

fn matrix(rows: usize, cols: usize, seed: f64) -> Array2<f64> {
    Array2::from_shape_fn((rows, cols), |(i, j)| {
        ((i * cols + j) as f64 * 0.37 + seed).sin()
    })
}

fn close(a: &Array2<f64>, b: &Array2<f64>) -> bool {
    a.dim() == b.dim() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
}

#[test]
fn matmul_vjp_passes_transposes_as_flags_on_the_original_storage() {
    let _serial = serial();
    let x = matrix(16, 32, 0.1);
    let w = matrix(32, 8, 0.2);
    let g = matrix(16, 8, 0.3);
    let mut got = None;
    let calls = record(|| {
        let tape = Tape::new();
        let (xt, wt) = (tape.param(&x), tape.param(&w));
        let y = xt.matmul(wt);
        let grads = tape
            .backward_with(y, BackwardOptions::new().seed(g.clone()))
            .unwrap();
        got = Some((
            y.value(),
            grads.get(xt).unwrap().clone(),
            grads.get(wt).unwrap().clone(),
        ));
    });
    let (y, dx, dw) = got.unwrap();
    assert!(close(&y, &x.dot(&w)) && close(&dx, &g.dot(&w.t())) && close(&dw, &x.t().dot(&g)));

    assert_eq!(calls.len(), 3, "{calls:#?}");
    // the rule computes the weight's gradient first (the textbook's order)
    let (fwd, d_w, d_x) = (calls[0], calls[1], calls[2]);
    assert!(calls.iter().all(|c| c.layout == ROW_MAJOR));
    // Y = X·W
    assert_eq!(
        (fwd.trans_a, fwd.trans_b, fwd.a, fwd.b),
        (NO_TRANS, NO_TRANS, x.as_ptr() as usize, w.as_ptr() as usize)
    );
    // dX = G·Wᵀ: W's own storage, transposed by flag
    assert_eq!((d_x.trans_a, d_x.trans_b), (NO_TRANS, TRANS));
    assert_eq!((d_x.b, d_x.ldb), (w.as_ptr() as usize, 8));
    // dW = Xᵀ·G: X's own storage, transposed by flag
    assert_eq!((d_w.trans_a, d_w.trans_b), (TRANS, NO_TRANS));
    assert_eq!((d_w.a, d_w.lda), (x.as_ptr() as usize, 32));
    // first contributions: fresh buffers, beta = 0
    assert_eq!((d_x.beta, d_w.beta), (0.0, 0.0));
}

#[test]
fn transposed_views_reach_gemm_without_a_copy() {
    let _serial = serial();
    // X given as the transposed view of a C-order 32 × 16 array (so X is 16 × 32, F order),
    // and Aᵀ·B written with the tape's own transpose.
    let storage = matrix(32, 16, 0.4);
    let w = matrix(32, 8, 0.5);
    let a = matrix(24, 16, 0.6);
    let b = matrix(24, 12, 0.7);
    let mut got = None;
    let calls = record(|| {
        let tape = Tape::<f64>::new();
        let y = tape.constant(storage.t()).matmul(tape.constant(&w));
        let z = tape.constant(&a).t().matmul(tape.constant(&b));
        got = Some((y.value(), z.value()));
    });
    let (y, z) = got.unwrap();
    assert!(close(&y, &storage.t().dot(&w)) && close(&z, &a.t().dot(&b)));
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_eq!(
        (calls[0].trans_a, calls[0].a),
        (TRANS, storage.as_ptr() as usize)
    );
    assert_eq!((calls[1].trans_a, calls[1].a), (TRANS, a.as_ptr() as usize));
    assert_eq!(calls[1].b, b.as_ptr() as usize);
}

#[test]
fn a_shared_weight_accumulates_into_its_gradient_with_beta_one() {
    let _serial = serial();
    // W used by two matmuls: the second contribution to dW goes into the first one's
    // buffer through GEMM with beta = 1.
    let x = matrix(16, 12, 0.8);
    let w = matrix(12, 12, 0.9);
    let mut got = None;
    let calls = record(|| {
        let tape = Tape::<f64>::new();
        let wt = tape.param(&w);
        let loss = tape.constant(&x).matmul(wt).matmul(wt).sum();
        got = Some(tape.backward(loss).unwrap().get(wt).unwrap().clone());
    });
    // d/dW sum(X·W·W) = (XW)ᵀ·1 + Xᵀ·(1·Wᵀ)
    let ones = Array2::ones((16, 12));
    let expected = x.dot(&w).t().dot(&ones) + x.t().dot(&ones.dot(&w.t()));
    assert!(close(&got.unwrap(), &expected));
    let dw: Vec<_> = calls.iter().filter(|c| c.trans_a == TRANS).collect();
    assert_eq!(dw.len(), 2, "{calls:#?}");
    assert_eq!(dw[0].beta, 0.0);
    assert_eq!(dw[1].beta, 1.0);
    assert_eq!(
        dw[0].c, dw[1].c,
        "the second contribution must land in the first one's buffer"
    );
}

#[test]
fn constants_cost_no_gemm_in_backward() {
    let _serial = serial();
    // X is a constant: backward computes dW = Xᵀ·G only, never G·Wᵀ.
    let x = matrix(16, 32, 1.0).mapv(|v| v as f32);
    let w = matrix(32, 8, 1.1).mapv(|v| v as f32);
    let calls = record(|| {
        let tape = Tape::new();
        let wt = tape.param(&w);
        let loss = tape.constant(&x).matmul(wt).sigmoid().sum();
        tape.backward(loss).unwrap();
    });
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_eq!((calls[1].trans_a, calls[1].a), (TRANS, x.as_ptr() as usize));
}

#[test]
fn a_tensor_times_its_own_transpose_reads_one_storage() {
    let _serial = serial();
    // Xᵀ·X and X·Xᵀ: both operands of both products are X's storage, one by flag.
    let x = matrix(12, 10, 1.2);
    let mut got = None;
    let calls = record(|| {
        let tape = Tape::<f64>::new();
        let xt = tape.param(&x);
        let loss = xt.t().matmul(xt).sum().add(xt.matmul(xt.t()).sum());
        got = Some(tape.backward(loss).unwrap().get(xt).unwrap().clone());
    });
    // d/dX [sum(XᵀX) + sum(XXᵀ)] = 2·X·1 + 2·1·X
    let expected = x.dot(&Array2::ones((10, 10))) * 2.0 + Array2::ones((12, 12)).dot(&x) * 2.0;
    assert!(close(&got.unwrap(), &expected));
    assert_eq!(calls.len(), 2 + 4, "{calls:#?}");
    let storage = x.as_ptr() as usize;
    assert!(calls[..2].iter().all(|c| c.a == storage && c.b == storage));
    assert_eq!((calls[0].trans_a, calls[0].trans_b), (TRANS, NO_TRANS));
    assert_eq!((calls[1].trans_a, calls[1].trans_b), (NO_TRANS, TRANS));
}
