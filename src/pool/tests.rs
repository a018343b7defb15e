use super::*;
use crate::Tape;

/// A pooled-size f64 matrix filled with NaN, handed to the pool.
fn give_nans(shape: (usize, usize)) {
    give_array(Array2::<f64>::from_elem(shape, f64::NAN));
}

#[test]
fn buffers_are_taken_best_fit_and_small_ones_by_class() {
    trim();
    // 100 elements go to the class of 64 to 127, which serves requests of up to 64
    give_array(Array2::<f64>::zeros((10, 10)));
    assert_eq!(stats().buffers, 1);
    let misses = stats().misses;
    let v = take::<f64>(65).unwrap();
    assert_eq!(
        (v.len(), v.capacity(), stats().misses),
        (65, 128, misses + 1)
    );
    let v = take::<f64>(64).unwrap();
    assert_eq!((v.len(), v.capacity(), stats().buffers), (64, 100, 0));
    trim();
    give_nans((100, 100));
    give_nans((100, 120));
    give_nans((100, 300));
    assert_eq!(stats().buffers, 3);
    let v = take::<f64>(100 * 110).unwrap();
    assert_eq!((v.len(), v.capacity()), (11_000, 12_000));
    assert!(take::<f64>(100 * 100).is_some());
    // more than twice the size asked for is not a fit
    assert!(take::<f64>(100 * 140).is_none());
    assert!(
        take::<f32>(100 * 300).is_none(),
        "pools are per element type"
    );
    trim();
    assert_eq!(
        stats(),
        PoolStats {
            hits: stats().hits,
            misses: stats().misses,
            ..Default::default()
        }
    );
}

/// A recycled vector comes back empty, with its memory, for a type of the same size
/// and alignment; the element it held was dropped when it was given.
#[test]
fn vectors_are_recycled_empty() {
    trim();
    let rc = std::rc::Rc::new(());
    let mut v: Vec<std::rc::Rc<()>> = Vec::with_capacity(40);
    v.push(rc.clone());
    let ptr = v.as_ptr() as usize;
    give_vec(v);
    assert_eq!(std::rc::Rc::strong_count(&rc), 1, "the element was dropped");
    let w: Vec<usize> = take_vec();
    assert_eq!((w.len(), w.capacity(), w.as_ptr() as usize), (0, 40, ptr));
    let u: Vec<u8> = take_vec();
    assert_eq!(u.capacity(), 0, "no vector of that size was kept");
    give_vec(w);
    assert_eq!(stats().buffers, 1);
    trim();
    assert_eq!(stats().buffers, 0);
}

#[test]
fn the_limit_frees_the_oldest_buffers() {
    trim();
    let bytes = 100 * 100 * 8;
    set_limit(2 * bytes);
    give_nans((100, 100));
    give_nans((100, 100));
    give_nans((100, 100));
    assert_eq!(stats().buffers, 2);
    assert_eq!(stats().bytes, 2 * bytes);
    set_limit(0);
    assert_eq!(stats().bytes, 0);
    give_nans((100, 100));
    assert_eq!(stats().buffers, 0, "a zero limit turns pooling off");
    set_limit(DEFAULT_LIMIT);
}

#[test]
fn recycled_buffers_never_leak_their_old_values() {
    trim();
    let (m, k, n) = (128, 64, 96);
    let a = Array2::from_shape_fn((m, k), |(i, j)| (i * 3 + j) as f64 % 7.0 - 3.0);
    let b = Array2::from_shape_fn((k, n), |(i, j)| (i + 5 * j) as f64 % 5.0 - 2.0);
    let expected = a.dot(&b);
    for _ in 0..3 {
        give_nans((m, n));
    }
    assert_eq!(crate::kernels::gemm(a.view(), b.view()), expected);
    assert_eq!(
        crate::kernels::try_zeros::<f64>((m, n)).unwrap(),
        Array2::<f64>::zeros((m, n))
    );
    // an empty inner dimension: the product is zeros, not the buffer's NaN
    let (e1, e2) = (Array2::<f64>::zeros((m, 0)), Array2::<f64>::zeros((0, n)));
    let empty = crate::kernels::gemm(e1.view(), e2.view());
    assert_eq!(empty, Array2::<f64>::zeros((m, n)));
    // through a tape: a gradient computed in recycled buffers equals a fresh one
    let w = Array2::from_shape_fn((k, n), |(i, j)| ((i * j) % 11) as f64 / 10.0);
    let grad = || {
        let tape = Tape::new();
        let x = tape.constant(&a);
        let loss = x.matmul(tape.param(&w)).tanh().sum();
        tape.backward(loss).unwrap().wrt(&w).unwrap().clone()
    };
    trim();
    set_limit(0);
    let fresh = grad();
    set_limit(DEFAULT_LIMIT);
    for _ in 0..8 {
        give_nans((m, n));
        give_nans((k, n));
    }
    assert_eq!(grad(), fresh);
    assert!(stats().hits > 0);
    trim();
}
