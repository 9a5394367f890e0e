//! Host tensors and the scalar types the CPU reference runs in.
//!
//! Layout, decided once for the whole crate: activations are NCHW (batch outermost, then channels,
//! rows, columns), fully connected activations are `[N, features]`, convolution weights are
//! `[C_out, C_in / groups, K, K]` and fc weights `[outputs, inputs]` (PyTorch's layouts, so a
//! checkpoint maps onto `torch.nn` modules without transposes). NCHW keeps the CPU reference, the
//! SIMT kernels and the golden fixtures from PyTorch in one layout; a tensor-core path that wants
//! NHWC converts at its own edges.

use std::fmt::Debug;
use std::iter::Sum;

/// The floating point types the CPU reference is generic over: `f32` for training, `f64` for the
/// finite-difference gradient checks.
pub trait Real:
    num_traits::Float + num_traits::FromPrimitive + Default + Debug + Sum + Send + Sync + 'static
{
    /// `c = alpha * a · b + beta * c` with row-major, arbitrarily strided matrices
    /// (`a`: m×k, `b`: k×n, `c`: m×n). Strides are in elements; a transpose is a swapped stride.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: &[Self],
        a_strides: (isize, isize),
        b: &[Self],
        b_strides: (isize, isize),
        beta: Self,
        c: &mut [Self],
        c_strides: (isize, isize),
    );

    fn from_f64_lossy(v: f64) -> Self {
        <Self as num_traits::FromPrimitive>::from_f64(v).expect("finite value")
    }
}

fn check_extent(len: usize, rows: usize, cols: usize, (rs, cs): (isize, isize), what: &str) {
    if rows == 0 || cols == 0 {
        return;
    }
    let last = (rows as isize - 1) * rs + (cols as isize - 1) * cs;
    assert!(
        rs >= 0 && cs >= 0 && (last as usize) < len,
        "gemm: matrix {what} ({rows}x{cols}, strides {rs},{cs}) does not fit its slice of {len}"
    );
}

macro_rules! impl_real {
    ($t:ty, $gemm:path) => {
        impl Real for $t {
            fn gemm(
                m: usize,
                k: usize,
                n: usize,
                alpha: Self,
                a: &[Self],
                a_strides: (isize, isize),
                b: &[Self],
                b_strides: (isize, isize),
                beta: Self,
                c: &mut [Self],
                c_strides: (isize, isize),
            ) {
                check_extent(a.len(), m, k, a_strides, "a");
                check_extent(b.len(), k, n, b_strides, "b");
                check_extent(c.len(), m, n, c_strides, "c");
                if m == 0 || n == 0 {
                    return;
                }
                // SAFETY: the extents of all three matrices were checked against their slices
                // above, and `c` is borrowed mutably so it cannot alias `a` or `b`.
                unsafe {
                    $gemm(
                        m,
                        k,
                        n,
                        alpha,
                        a.as_ptr(),
                        a_strides.0,
                        a_strides.1,
                        b.as_ptr(),
                        b_strides.0,
                        b_strides.1,
                        beta,
                        c.as_mut_ptr(),
                        c_strides.0,
                        c_strides.1,
                    )
                }
            }
        }
    };
}
impl_real!(f32, matrixmultiply::sgemm);
impl_real!(f64, matrixmultiply::dgemm);

/// `v` as f32s where `T` is f32 (for kernels written for f32 alone), else `None`.
pub fn as_f32<T: Real>(v: &[T]) -> Option<&[f32]> {
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()).then(|| {
        // SAFETY: T is f32, so the slice is one of f32s.
        unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<f32>(), v.len()) }
    })
}

/// [`as_f32`] for a mutable slice.
pub fn as_f32_mut<T: Real>(v: &mut [T]) -> Option<&mut [f32]> {
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()).then(|| {
        // SAFETY: T is f32, so the slice is one of f32s.
        unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<f32>(), v.len()) }
    })
}

/// A dense host tensor: a shape and its elements in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<T = f32> {
    pub shape: Vec<usize>,
    pub data: Vec<T>,
}

impl<T: Real> Tensor<T> {
    pub fn zeros(shape: &[usize]) -> Self {
        Tensor {
            shape: shape.to_vec(),
            data: vec![T::zero(); shape.iter().product()],
        }
    }

    pub fn from_vec(shape: &[usize], data: Vec<T>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "tensor shape {shape:?} does not match {} elements",
            data.len()
        );
        Tensor {
            shape: shape.to_vec(),
            data,
        }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Largest relative error of `got` against `want`, with `floor` guarding near-zero elements:
/// `max |g - w| / max(|w|, floor)`. Used by tests to state tolerances one way everywhere.
/// A NaN anywhere makes the result NaN, so `err < tol` fails (`f64::max` would skip it).
pub fn max_rel_err<A: Real, B: Real>(got: &[A], want: &[B], floor: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "compared slices differ in length");
    got.iter()
        .zip(want)
        .map(|(g, w)| {
            let (g, w) = (g.to_f64().unwrap(), w.to_f64().unwrap());
            (g - w).abs() / w.abs().max(floor)
        })
        .fold(
            0.0,
            |worst, e| if e > worst || e.is_nan() { e } else { worst },
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_matches_loops_with_transposed_b() {
        let (m, k, n) = (3, 4, 5);
        let a: Vec<f64> = (0..m * k).map(|i| i as f64 * 0.5 - 2.0).collect();
        // b stored as n×k, used transposed.
        let bt: Vec<f64> = (0..n * k).map(|i| (i as f64).sin()).collect();
        let mut c = vec![1.0; m * n];
        f64::gemm(
            m,
            k,
            n,
            2.0,
            &a,
            (k as isize, 1),
            &bt,
            (1, k as isize),
            0.5,
            &mut c,
            (n as isize, 1),
        );
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k).map(|p| a[i * k + p] * bt[j * k + p]).sum();
                assert!((c[i * n + j] - (2.0 * dot + 0.5)).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn max_rel_err_does_not_skip_nan() {
        assert!(max_rel_err(&[1.0f32, f32::NAN, 2.0], &[1.0f64, 1.0, 2.0], 1e-6).is_nan());
        assert!(max_rel_err(&[f32::NAN, 1.5], &[1.0f64, 1.0], 1e-6).is_nan());
        assert_eq!(max_rel_err(&[1.0f32, 1.5], &[1.0f64, 1.0], 1e-6), 0.5);
    }
}
