//! Local response normalisation across channels (paper §3.3):
//! `y[c] = x[c] / (k + α'·Σ_{j ∈ W(c)} x[j]²)^β` with `W(c) = [c - size/2, c + size/2]` clipped to
//! the channel group of `c`, and `α' = α / size` when `alpha_over_n` (cuda-convnet, Caffe) or `α`
//! (the paper's text). Groups keep the window inside one tower when a single grouped tensor holds
//! both towers; a tower's own tensor uses `groups = 1`.

use crate::tensor::Real;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrnGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub groups: usize,
    pub size: usize,
    pub k: f32,
    pub alpha: f32,
    pub beta: f32,
    pub alpha_over_n: bool,
}

impl LrnGeom {
    pub fn len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The α actually multiplying the sum of squares.
    pub fn effective_alpha(&self) -> f64 {
        if self.alpha_over_n {
            self.alpha as f64 / self.size as f64
        } else {
            self.alpha as f64
        }
    }
    /// The channels `[lo, hi)` in the window of channel `c`.
    pub fn window(&self, c: usize) -> (usize, usize) {
        let cg = self.c / self.groups;
        let g0 = (c / cg) * cg;
        let half = self.size / 2;
        (c.saturating_sub(half).max(g0), (c + half + 1).min(g0 + cg))
    }
    fn check(&self, lens: &[usize]) {
        assert!(
            self.groups > 0 && self.c % self.groups == 0,
            "lrn: {self:?}"
        );
        assert!(self.size % 2 == 1, "lrn: window size must be odd: {self:?}");
        for &l in lens {
            assert_eq!(l, self.len(), "lrn: buffer length for {self:?}");
        }
    }
}

/// The denominator base `k + α'·Σ x²` for channel `c` at pixel offset `p` of sample `n`.
fn scale<T: Real>(g: &LrnGeom, x: &[T], n: usize, c: usize, p: usize) -> T {
    let hw = g.h * g.w;
    let (lo, hi) = g.window(c);
    let sum: T = (lo..hi).map(|j| x[(n * g.c + j) * hw + p].powi(2)).sum();
    T::from_f64_lossy(g.k as f64) + T::from_f64_lossy(g.effective_alpha()) * sum
}

pub fn forward_naive<T: Real>(g: &LrnGeom, x: &[T], y: &mut [T]) {
    g.check(&[x.len(), y.len()]);
    let hw = g.h * g.w;
    let beta = T::from_f64_lossy(g.beta as f64);
    for n in 0..g.n {
        for c in 0..g.c {
            for p in 0..hw {
                let i = (n * g.c + c) * hw + p;
                y[i] = x[i] * scale(g, x, n, c, p).powf(-beta);
            }
        }
    }
}

/// `dx[j] = dy[j]·s[j]^-β − 2α'β·x[j]·Σ_{c: j ∈ W(c)} dy[c]·y[c] / s[c]`.
pub fn backward_naive<T: Real>(g: &LrnGeom, x: &[T], y: &[T], dy: &[T], dx: &mut [T]) {
    g.check(&[x.len(), y.len(), dy.len(), dx.len()]);
    let hw = g.h * g.w;
    let beta = T::from_f64_lossy(g.beta as f64);
    let two_ab = T::from_f64_lossy(2.0 * g.effective_alpha() * g.beta as f64);
    for n in 0..g.n {
        for j in 0..g.c {
            for p in 0..hw {
                let i = (n * g.c + j) * hw + p;
                let mut acc = T::zero();
                for c in 0..g.c {
                    let (lo, hi) = g.window(c);
                    if (lo..hi).contains(&j) {
                        let ic = (n * g.c + c) * hw + p;
                        acc = acc + dy[ic] * y[ic] / scale(g, x, n, c, p);
                    }
                }
                dx[i] = dy[i] * scale(g, x, n, j, p).powf(-beta) - two_ab * x[i] * acc;
            }
        }
    }
}

// Fast CPU paths, parallel over samples. Each computes every denominator base once (the naive
// backward recomputes it for every pair of channels), with pixels in the innermost loop.

/// The denominator bases `s = k + α'·Σ_{W(c)} x²` of one sample `xs` (`[c, hw]`) into `s`, in
/// one pass over the channels: a running window sum gains the channel entering the window and
/// loses the one leaving it. Every term is a square, so the subtraction cancels nothing of
/// consequence: its rounding is at most a few ulps of the largest square that passed through,
/// well under the `k` (> 0 in every net) it is added to after scaling by α'.
fn scales<T: Real>(g: &LrnGeom, xs: &[T], s: &mut [T]) {
    let (hw, cg, half) = (g.h * g.w, g.c / g.groups, g.size / 2);
    let (k, alpha) = (
        T::from_f64_lossy(g.k as f64),
        T::from_f64_lossy(g.effective_alpha()),
    );
    let map = |c: usize| &xs[c * hw..(c + 1) * hw];
    let mut run = vec![T::zero(); hw];
    for g0 in (0..g.c).step_by(cg.max(1)) {
        run.fill(T::zero());
        for j in g0..(g0 + half).min(g0 + cg) {
            run.iter_mut()
                .zip(map(j))
                .for_each(|(a, &x)| *a = *a + x * x);
        }
        for c in g0..g0 + cg {
            if c + half < g0 + cg {
                let entering = map(c + half);
                run.iter_mut()
                    .zip(entering)
                    .for_each(|(a, &x)| *a = *a + x * x);
            }
            if c > g0 + half {
                let leaving = map(c - half - 1);
                run.iter_mut()
                    .zip(leaving)
                    .for_each(|(a, &x)| *a = *a - x * x);
            }
            let sc = &mut s[c * hw..(c + 1) * hw];
            sc.iter_mut()
                .zip(&run)
                .for_each(|(o, &a)| *o = k + alpha * a);
        }
    }
}

/// `out[i] = a[i] · s[i]^-β`. At the β = 0.75 of every shipped net, `s^-0.75 = 1 / (√s · ⁴√s)`:
/// square roots vectorise, `powf` does not, and it was most of LRN's time. Within 2 ulps of
/// `powf` (a square root is correctly rounded; two of them and a division add at most ~2 ulps).
fn times_pow_neg_beta<T: Real>(beta: f32, a: &[T], s: &[T], out: &mut [T]) {
    if beta == 0.75 {
        for ((o, &a), &s) in out.iter_mut().zip(a).zip(s) {
            let r = s.sqrt();
            *o = a / (r * r.sqrt());
        }
    } else {
        let neg_beta = T::from_f64_lossy(-(beta as f64));
        for ((o, &a), &s) in out.iter_mut().zip(a).zip(s) {
            *o = a * s.powf(neg_beta);
        }
    }
}

/// Fast forward (same semantics as `forward_naive`).
pub fn forward<T: Real>(g: &LrnGeom, x: &[T], y: &mut [T]) {
    g.check(&[x.len(), y.len()]);
    let per_sample = g.c * g.h * g.w;
    if per_sample == 0 {
        return;
    }
    y.par_chunks_mut(per_sample)
        .zip(x.par_chunks(per_sample))
        .for_each(|(ys, xs)| {
            let mut s = vec![T::zero(); per_sample];
            scales(g, xs, &mut s);
            times_pow_neg_beta(g.beta, xs, &s, ys);
        });
}

/// Fast backward: with `t[c] = dy[c]·y[c] / s[c]`, and because `j ∈ W(c)` exactly when
/// `c ∈ W(j)` (windows are symmetric and stay in one group),
/// `dx[j] = dy[j]·s[j]^-β − 2α'β·x[j]·Σ_{c ∈ W(j)} t[c]`.
pub fn backward<T: Real>(g: &LrnGeom, x: &[T], y: &[T], dy: &[T], dx: &mut [T]) {
    g.check(&[x.len(), y.len(), dy.len(), dx.len()]);
    let (hw, per_sample) = (g.h * g.w, g.c * g.h * g.w);
    if per_sample == 0 {
        return;
    }
    let two_ab = T::from_f64_lossy(2.0 * g.effective_alpha() * g.beta as f64);
    dx.par_chunks_mut(per_sample)
        .enumerate()
        .for_each(|(n, dxs)| {
            let r = n * per_sample..(n + 1) * per_sample;
            let (xs, ys, dys) = (&x[r.clone()], &y[r.clone()], &dy[r]);
            let mut s = vec![T::zero(); per_sample];
            scales(g, xs, &mut s);
            let t: Vec<T> = (dys.iter().zip(ys).zip(&s))
                .map(|((&d, &y), &s)| d * y / s)
                .collect();
            // dx = dy·s^-β first, then less the window term. The window of `t` is summed
            // directly, not slid: `t` changes sign, and a running sum would carry the rounding
            // of every large value that left the window.
            times_pow_neg_beta(g.beta, dys, &s, dxs);
            let mut acc = vec![T::zero(); hw];
            for j in 0..g.c {
                let (lo, hi) = g.window(j);
                acc.fill(T::zero());
                for tc in t[lo * hw..hi * hw].chunks(hw) {
                    acc.iter_mut().zip(tc).for_each(|(a, &t)| *a = *a + t);
                }
                let p = j * hw..(j + 1) * hw;
                for ((dx, &x), &a) in dxs[p.clone()].iter_mut().zip(&xs[p]).zip(&acc) {
                    *dx = *dx - two_ab * x * a;
                }
            }
        });
}
