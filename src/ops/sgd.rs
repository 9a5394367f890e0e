//! Stochastic gradient descent exactly as the paper writes it (§5):
//! `v ← μ·v − λ·ε·w − ε·∂L/∂w;  w ← w + v`
//! with momentum μ = 0.9 and weight decay λ = 0.0005 inside the velocity.

use crate::tensor::Real;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdStep {
    /// ε for this parameter (the schedule's rate times the parameter's multiplier).
    pub lr: f32,
    pub momentum: f32,
    /// λ; zero for parameters that take no decay.
    pub weight_decay: f32,
}

impl SgdStep {
    /// `(μ, λ·ε, ε)` in `T`, as every update multiplies by them (λ·ε taken in f64 first).
    pub fn coefficients<T: Real>(&self) -> (T, T, T) {
        (
            T::from_f64_lossy(self.momentum as f64),
            T::from_f64_lossy(self.weight_decay as f64 * self.lr as f64),
            T::from_f64_lossy(self.lr as f64),
        )
    }
}

/// One update in place. Evaluated in the written order in `T`, so `f32` results are bit-exact
/// against a kernel that does the same without fused multiply-adds (as `fc_stream`'s fused
/// filter gradient and update does).
#[inline]
pub fn update_naive<T: Real>(s: &SgdStep, w: &mut [T], v: &mut [T], grad: &[T]) {
    assert!(w.len() == v.len() && v.len() == grad.len());
    let (mu, decay, lr) = s.coefficients::<T>();
    for ((w, v), &g) in w.iter_mut().zip(v.iter_mut()).zip(grad) {
        *v = mu * *v - decay * *w - lr * g;
        *w = *w + *v;
    }
}

/// Elements per task of [`update`]: large enough that a task's work dwarfs handing it out.
const UPDATE_CHUNK: usize = 1 << 16;

/// [`update_naive`] split over the pool and compiled for the CPU's widest vectors: the same
/// arithmetic per element in the same order, so bit-identical to it (each element is updated
/// on its own; no sum crosses elements).
pub fn update<T: Real>(s: &SgdStep, w: &mut [T], v: &mut [T], grad: &[T]) {
    use rayon::prelude::*;
    assert!(w.len() == v.len() && v.len() == grad.len());
    w.par_chunks_mut(UPDATE_CHUNK)
        .zip(v.par_chunks_mut(UPDATE_CHUNK))
        .zip(grad.par_chunks(UPDATE_CHUNK))
        .for_each(|((w, v), g)| update_chunk(s, w, v, g));
}

#[multiversion::multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma"))]
fn update_chunk<T: Real>(s: &SgdStep, w: &mut [T], v: &mut [T], grad: &[T]) {
    update_naive(s, w, v, grad);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two steps with power-of-two constants, so every intermediate is exact in binary and the
    /// expected values below are the formula worked by hand:
    /// `v ← μ·v − λ·ε·w − ε·g;  w ← w + v` with ε = 0.5, μ = 0.5, λ = 0.25 (λ·ε = 0.125).
    fn two_hand_worked_steps<T: Real>() {
        let s = SgdStep {
            lr: 0.5,
            momentum: 0.5,
            weight_decay: 0.25,
        };
        let t = |v: f64| T::from_f64_lossy(v);
        let mut w = vec![t(1.0), t(-2.0)];
        let mut v = vec![t(0.0), t(0.5)];
        // Step 1. v0 = 0.5·0 − 0.125·1 − 0.5·0.5 = −0.375, w0 = 1 − 0.375 = 0.625;
        //         v1 = 0.5·0.5 − 0.125·(−2) − 0.5·1 = 0, w1 = −2 + 0 = −2.
        update_naive(&s, &mut w, &mut v, &[t(0.5), t(1.0)]);
        assert_eq!(v, vec![t(-0.375), t(0.0)]);
        assert_eq!(w, vec![t(0.625), t(-2.0)]);
        // Step 2. The decay of step 1 rides on in the velocity (it is inside v, not applied to w
        // apart from it): v0 = 0.5·(−0.375) − 0.125·0.625 − 0.5·(−1) = 0.234375,
        // w0 = 0.859375; v1 = 0.5·0 − 0.125·(−2) − 0.5·0.25 = 0.125, w1 = −1.875.
        update_naive(&s, &mut w, &mut v, &[t(-1.0), t(0.25)]);
        assert_eq!(v, vec![t(0.234375), t(0.125)]);
        assert_eq!(w, vec![t(0.859375), t(-1.875)]);
    }

    #[test]
    fn follows_the_written_formula_step_by_step() {
        two_hand_worked_steps::<f32>();
        two_hand_worked_steps::<f64>();
    }

    #[test]
    fn paper_constants_over_several_steps() {
        // The paper's μ = 0.9, λ = 0.0005, ε = 0.01, against the formula written out in f64.
        let s = SgdStep {
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 0.0005,
        };
        let (mu, lr, wd) = (s.momentum as f64, s.lr as f64, s.weight_decay as f64);
        let mut w: Vec<f64> = (0..7).map(|i| (i as f64 * 0.7).sin()).collect();
        let mut v = vec![0.0; 7];
        let (mut w_ref, mut v_ref) = (w.clone(), v.clone());
        for step in 0..5 {
            let g: Vec<f64> = (0..7).map(|i| ((i + 3 * step) as f64).cos()).collect();
            update_naive(&s, &mut w, &mut v, &g);
            for i in 0..7 {
                v_ref[i] = mu * v_ref[i] - wd * lr * w_ref[i] - lr * g[i];
                w_ref[i] += v_ref[i];
            }
            // The same operations in the same order (λ·ε taken first): equal bit for bit.
            assert_eq!(w, w_ref, "step {step}: weights");
            assert_eq!(v, v_ref, "step {step}: velocities");
        }
    }

    #[test]
    fn parallel_update_is_the_naive_one_bit_for_bit() {
        // Over three tasks' worth and a ragged end, with the paper's constants.
        let s = SgdStep {
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 0.0005,
        };
        let len = 2 * UPDATE_CHUNK + 1234;
        let w0: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
        let v0: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos() * 0.01).collect();
        let g: Vec<f32> = (0..len).map(|i| (i as f32 * 0.53).sin() * 0.1).collect();
        let (mut w, mut v) = (w0.clone(), v0.clone());
        let (mut w_ref, mut v_ref) = (w0, v0);
        update(&s, &mut w, &mut v, &g);
        update_naive(&s, &mut w_ref, &mut v_ref, &g);
        assert!(w == w_ref && v == v_ref, "update and update_naive differ");
    }

    #[test]
    fn zero_decay_leaves_weights_alone_without_gradient() {
        let s = SgdStep {
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 0.0,
        };
        let mut w = vec![1000.0f32, -3.5, 0.25];
        let mut v = vec![0.0f32; 3];
        update_naive(&s, &mut w, &mut v, &[0.0; 3]);
        assert_eq!(w, vec![1000.0, -3.5, 0.25]);
        assert_eq!(v, vec![0.0; 3]);
        // With a gradient and no decay the step is exactly μ·v − ε·g.
        let mut v = vec![0.5f32; 3];
        let mut w2 = w.clone();
        update_naive(&s, &mut w2, &mut v, &[1.0, -2.0, 0.0]);
        let mu = 0.9f32;
        let want_v = [mu * 0.5 - 0.01 * 1.0, mu * 0.5 - 0.01 * -2.0, mu * 0.5];
        assert_eq!(v, want_v.to_vec());
        for i in 0..3 {
            assert_eq!(w2[i], w[i] + want_v[i]);
        }
    }
}
