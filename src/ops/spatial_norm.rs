//! Same-map ("spatial") response normalisation, the extra layer after LRN2 in `net145`
//! (cuda-convnet's `rnorm`): `y = x / (k + α'·Σ_{q ∈ W(p)} x[q]²)^β` where `W(p)` is the
//! `size × size` neighbourhood of pixel `p` in the same map, centred (`p - size/2 ..= p + size/2`)
//! and clipped at the borders, and `α' = α / size²` when `alpha_over_area`.

use crate::tensor::Real;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpatialNormGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub size: usize,
    pub k: f32,
    pub alpha: f32,
    pub beta: f32,
    pub alpha_over_area: bool,
}

impl SpatialNormGeom {
    pub fn len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn effective_alpha(&self) -> f64 {
        let a = self.alpha as f64;
        if self.alpha_over_area {
            a / (self.size * self.size) as f64
        } else {
            a
        }
    }
    /// Rows (or columns) `[lo, hi)` of the window centred on `i` along an axis of length `len`.
    pub fn window(&self, i: usize, len: usize) -> (usize, usize) {
        let half = self.size / 2;
        (i.saturating_sub(half), (i + half + 1).min(len))
    }
    fn check(&self, lens: &[usize]) {
        assert!(
            self.size % 2 == 1,
            "spatial norm: window size must be odd: {self:?}"
        );
        for &l in lens {
            assert_eq!(l, self.len(), "spatial norm: buffer length for {self:?}");
        }
    }
}

fn scale<T: Real>(g: &SpatialNormGeom, map: &[T], y: usize, x: usize) -> T {
    let (y0, y1) = g.window(y, g.h);
    let (x0, x1) = g.window(x, g.w);
    let mut sum = T::zero();
    for qy in y0..y1 {
        for qx in x0..x1 {
            sum = sum + map[qy * g.w + qx].powi(2);
        }
    }
    T::from_f64_lossy(g.k as f64) + T::from_f64_lossy(g.effective_alpha()) * sum
}

pub fn forward_naive<T: Real>(g: &SpatialNormGeom, x: &[T], y: &mut [T]) {
    g.check(&[x.len(), y.len()]);
    let hw = g.h * g.w;
    let beta = T::from_f64_lossy(g.beta as f64);
    for (xm, ym) in x.chunks(hw).zip(y.chunks_mut(hw)) {
        for py in 0..g.h {
            for px in 0..g.w {
                ym[py * g.w + px] = xm[py * g.w + px] * scale(g, xm, py, px).powf(-beta);
            }
        }
    }
}

/// `dx[q] = dy[q]·s[q]^-β − 2α'β·x[q]·Σ_{p: q ∈ W(p)} dy[p]·y[p] / s[p]`.
pub fn backward_naive<T: Real>(g: &SpatialNormGeom, x: &[T], y: &[T], dy: &[T], dx: &mut [T]) {
    g.check(&[x.len(), y.len(), dy.len(), dx.len()]);
    let hw = g.h * g.w;
    let beta = T::from_f64_lossy(g.beta as f64);
    let two_ab = T::from_f64_lossy(2.0 * g.effective_alpha() * g.beta as f64);
    for m in 0..g.n * g.c {
        let r = m * hw..(m + 1) * hw;
        let (xm, ym, dym) = (&x[r.clone()], &y[r.clone()], &dy[r.clone()]);
        let dxm = &mut dx[r];
        for qy in 0..g.h {
            for qx in 0..g.w {
                // Windows are symmetric, so the pixels whose window holds q are q's own window.
                let (y0, y1) = g.window(qy, g.h);
                let (x0, x1) = g.window(qx, g.w);
                let mut acc = T::zero();
                for py in y0..y1 {
                    for px in x0..x1 {
                        let p = py * g.w + px;
                        acc = acc + dym[p] * ym[p] / scale(g, xm, py, px);
                    }
                }
                let q = qy * g.w + qx;
                dxm[q] = dym[q] * scale(g, xm, qy, qx).powf(-beta) - two_ab * xm[q] * acc;
            }
        }
    }
}

// Fast CPU paths, parallel over maps. Window sums are separable box sums (along rows, then along
// columns): `2·size` additions per pixel instead of `size²`, and every denominator base is
// computed once per pixel (the naive backward recomputes it `size²` times).

/// `out[p] = Σ_{q ∈ W(p)} v[q]` over one `h × w` map; `rows` is scratch of the same size.
fn box_sum<T: Real>(g: &SpatialNormGeom, v: &[T], rows: &mut [T], out: &mut [T]) {
    for py in 0..g.h {
        let line = &v[py * g.w..(py + 1) * g.w];
        for px in 0..g.w {
            let (x0, x1) = g.window(px, g.w);
            rows[py * g.w + px] = line[x0..x1].iter().copied().sum();
        }
    }
    for py in 0..g.h {
        let (y0, y1) = g.window(py, g.h);
        let o = &mut out[py * g.w..(py + 1) * g.w];
        o.fill(T::zero());
        for r in rows[y0 * g.w..y1 * g.w].chunks(g.w) {
            o.iter_mut().zip(r).for_each(|(a, &v)| *a = *a + v);
        }
    }
}

/// Scratch for one map: squares or `t`, row sums, and window sums.
struct Scratch<T> {
    v: Vec<T>,
    rows: Vec<T>,
    sums: Vec<T>,
}

impl<T: Real> Scratch<T> {
    fn new(hw: usize) -> Self {
        Scratch {
            v: vec![T::zero(); hw],
            rows: vec![T::zero(); hw],
            sums: vec![T::zero(); hw],
        }
    }

    /// Leaves the denominator bases `k + α'·Σ_{W(p)} x²` of map `xm` in `self.sums`.
    fn scales(&mut self, g: &SpatialNormGeom, xm: &[T]) {
        let (k, alpha) = (
            T::from_f64_lossy(g.k as f64),
            T::from_f64_lossy(g.effective_alpha()),
        );
        self.v.iter_mut().zip(xm).for_each(|(v, &x)| *v = x * x);
        box_sum(g, &self.v, &mut self.rows, &mut self.sums);
        self.sums.iter_mut().for_each(|s| *s = k + alpha * *s);
    }
}

/// Fast forward (same semantics as `forward_naive`).
pub fn forward<T: Real>(g: &SpatialNormGeom, x: &[T], y: &mut [T]) {
    g.check(&[x.len(), y.len()]);
    let hw = g.h * g.w;
    if hw == 0 {
        return;
    }
    let beta = T::from_f64_lossy(g.beta as f64);
    y.par_chunks_mut(hw).zip(x.par_chunks(hw)).for_each_init(
        || Scratch::new(hw),
        |sc, (ym, xm)| {
            sc.scales(g, xm);
            for ((y, &x), &s) in ym.iter_mut().zip(xm).zip(&sc.sums) {
                *y = x * s.powf(-beta);
            }
        },
    );
}

/// Fast backward: with `t[p] = dy[p]·y[p] / s[p]`, and windows symmetric,
/// `dx[q] = dy[q]·s[q]^-β − 2α'β·x[q]·Σ_{p ∈ W(q)} t[p]`.
pub fn backward<T: Real>(g: &SpatialNormGeom, x: &[T], y: &[T], dy: &[T], dx: &mut [T]) {
    g.check(&[x.len(), y.len(), dy.len(), dx.len()]);
    let hw = g.h * g.w;
    if hw == 0 {
        return;
    }
    let beta = T::from_f64_lossy(g.beta as f64);
    let two_ab = T::from_f64_lossy(2.0 * g.effective_alpha() * g.beta as f64);
    dx.par_chunks_mut(hw).enumerate().for_each_init(
        || (Scratch::new(hw), vec![T::zero(); hw], vec![T::zero(); hw]),
        |(sc, s, acc), (m, dxm)| {
            let r = m * hw..(m + 1) * hw;
            let (xm, ym, dym) = (&x[r.clone()], &y[r.clone()], &dy[r]);
            sc.scales(g, xm);
            s.copy_from_slice(&sc.sums);
            for ((t, (&d, &y)), &s) in sc.v.iter_mut().zip(dym.iter().zip(ym)).zip(s.iter()) {
                *t = d * y / s;
            }
            box_sum(g, &sc.v, &mut sc.rows, acc);
            for (((dx, &d), &s), (&x, &a)) in dxm
                .iter_mut()
                .zip(dym)
                .zip(s.iter())
                .zip(xm.iter().zip(acc.iter()))
            {
                *dx = d * s.powf(-beta) - two_ab * x * a;
            }
        },
    );
}
