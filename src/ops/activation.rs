//! Elementwise non-linearities. Backward passes take the forward *output* `y` (both derivatives
//! are functions of it), so `x` need not be kept.

use crate::tensor::Real;

pub fn relu_forward<T: Real>(x: &[T], y: &mut [T]) {
    assert_eq!(x.len(), y.len());
    for (y, &x) in y.iter_mut().zip(x) {
        *y = if x > T::zero() { x } else { T::zero() };
    }
}

/// `dx = dy` where the unit was active (`y > 0`), else 0; over the pool in chunks (each element
/// on its own, so the same result on any thread count).
pub fn relu_backward<T: Real>(y: &[T], dy: &[T], dx: &mut [T]) {
    use rayon::prelude::*;
    assert!(y.len() == dy.len() && dy.len() == dx.len());
    const CHUNK: usize = 1 << 15;
    dx.par_chunks_mut(CHUNK)
        .zip(dy.par_chunks(CHUNK))
        .zip(y.par_chunks(CHUNK))
        .for_each(|((dx, dy), y)| {
            for ((dx, &dy), &y) in dx.iter_mut().zip(dy).zip(y) {
                *dx = if y > T::zero() { dy } else { T::zero() };
            }
        });
}

pub fn tanh_forward<T: Real>(x: &[T], y: &mut [T]) {
    assert_eq!(x.len(), y.len());
    for (y, &x) in y.iter_mut().zip(x) {
        *y = x.tanh();
    }
}

/// `dx = dy · (1 - y²)`.
pub fn tanh_backward<T: Real>(y: &[T], dy: &[T], dx: &mut [T]) {
    assert!(y.len() == dy.len() && dy.len() == dx.len());
    for ((dx, &dy), &y) in dx.iter_mut().zip(dy).zip(y) {
        *dx = dy * (T::one() - y * y);
    }
}
