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

/// One update in place. Evaluated in the written order in `T`, so `f32` results are bit-exact
/// against a kernel that does the same without fused multiply-adds.
pub fn update_naive<T: Real>(s: &SgdStep, w: &mut [T], v: &mut [T], grad: &[T]) {
    assert!(w.len() == v.len() && v.len() == grad.len());
    let mu = T::from_f64_lossy(s.momentum as f64);
    let lr = T::from_f64_lossy(s.lr as f64);
    let decay = T::from_f64_lossy(s.weight_decay as f64 * s.lr as f64);
    for ((w, v), &g) in w.iter_mut().zip(v.iter_mut()).zip(grad) {
        *v = mu * *v - decay * *w - lr * g;
        *w = *w + *v;
    }
}
