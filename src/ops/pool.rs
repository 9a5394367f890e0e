//! Max pooling, overlapping when `stride < size` (paper §3.4: z = 3, s = 2).
//!
//! Output size is `(h - size) / stride + 1` (no padding; the paper's 55 → 27 → 13 → 6 chain).
//! The gradient of a window goes to its *first* maximum in row-major order. After a ReLU, ties
//! (runs of zeros) are common, so this rule is part of the op's definition and every
//! implementation, CPU or GPU, follows it exactly.

use crate::tensor::Real;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub size: usize,
    pub stride: usize,
}

impl PoolGeom {
    pub fn out_h(&self) -> usize {
        (self.h - self.size) / self.stride + 1
    }
    pub fn out_w(&self) -> usize {
        (self.w - self.size) / self.stride + 1
    }
    pub fn x_len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    pub fn y_len(&self) -> usize {
        self.n * self.c * self.out_h() * self.out_w()
    }
    fn check(&self, x: usize, y: usize) {
        assert!(self.size > 0 && self.stride > 0 && self.size <= self.h && self.size <= self.w);
        assert_eq!(x, self.x_len(), "pool: input length for {self:?}");
        assert_eq!(y, self.y_len(), "pool: output length for {self:?}");
    }
}

/// Index within the map of the first maximum of window `(oy, ox)`.
pub fn argmax_in_window<T: Real>(g: &PoolGeom, map: &[T], oy: usize, ox: usize) -> usize {
    let mut best = (oy * g.stride) * g.w + ox * g.stride;
    for ky in 0..g.size {
        for kx in 0..g.size {
            let i = (oy * g.stride + ky) * g.w + ox * g.stride + kx;
            if map[i] > map[best] {
                best = i;
            }
        }
    }
    best
}

pub fn forward_naive<T: Real>(g: &PoolGeom, x: &[T], y: &mut [T]) {
    g.check(x.len(), y.len());
    let (hw, ohw) = (g.h * g.w, g.out_h() * g.out_w());
    for m in 0..g.n * g.c {
        let map = &x[m * hw..(m + 1) * hw];
        for oy in 0..g.out_h() {
            for ox in 0..g.out_w() {
                y[m * ohw + oy * g.out_w() + ox] = map[argmax_in_window(g, map, oy, ox)];
            }
        }
    }
}

/// Routes each window's gradient to its first maximum, summing where windows overlap.
pub fn backward_naive<T: Real>(g: &PoolGeom, x: &[T], dy: &[T], dx: &mut [T]) {
    g.check(x.len(), dy.len());
    assert_eq!(dx.len(), x.len());
    let (hw, ohw) = (g.h * g.w, g.out_h() * g.out_w());
    dx.fill(T::zero());
    for m in 0..g.n * g.c {
        let map = &x[m * hw..(m + 1) * hw];
        for oy in 0..g.out_h() {
            for ox in 0..g.out_w() {
                let i = m * hw + argmax_in_window(g, map, oy, ox);
                dx[i] = dx[i] + dy[m * ohw + oy * g.out_w() + ox];
            }
        }
    }
}

// Fast CPU paths, parallel over maps. The forward pass finds each window's maximum with the same
// `argmax_in_window` as the references, so the tie rule cannot drift, and records where it was;
// the backward pass routes each window's gradient there without looking at the input again,
// accumulating a map's gradient in the same (row-major window) order as the references, so both
// match them bit for bit.

/// Fast forward (same `y` as `forward_naive`); `argmax[o]` gets output `o`'s window position of
/// its maximum, `ky·size + kx` (exact in any float type), for [`backward`]. The window is scanned
/// in the references' order with the same strict `>`, so the first maximum wins here too; only
/// the indexing differs (one bounds check per window row instead of per tap).
pub fn forward<T: Real>(g: &PoolGeom, x: &[T], y: &mut [T], argmax: &mut [T]) {
    g.check(x.len(), y.len());
    assert_eq!(argmax.len(), y.len(), "pool: argmax length for {g:?}");
    let (hw, ow, size, stride) = (g.h * g.w, g.out_w(), g.size, g.stride);
    if y.is_empty() {
        return;
    }
    let offsets: Vec<T> = (0..size * size)
        .map(|o| T::from_f64_lossy(o as f64))
        .collect();
    y.par_chunks_mut(g.out_h() * ow)
        .zip(argmax.par_chunks_mut(g.out_h() * ow))
        .zip(x.par_chunks(hw))
        .for_each(|((ym, am), map)| {
            for (oy, (row, arow)) in ym.chunks_mut(ow).zip(am.chunks_mut(ow)).enumerate() {
                let top = &map[oy * stride * g.w..];
                for (ox, (y, a)) in row.iter_mut().zip(arow).enumerate() {
                    let (mut best, mut at) = (top[ox * stride], 0);
                    for ky in 0..size {
                        let line = &top[ky * g.w + ox * stride..][..size];
                        for (kx, &v) in line.iter().enumerate() {
                            // Selects, not a branch: which tap wins is data, and unpredictable.
                            let gt = v > best;
                            best = if gt { v } else { best };
                            at = if gt { ky * size + kx } else { at };
                        }
                    }
                    *y = best;
                    *a = offsets[at];
                }
            }
        });
}

/// Fast backward from the forward pass's `argmax`: each window's gradient to its first maximum,
/// summed where windows overlap.
pub fn backward<T: Real>(g: &PoolGeom, argmax: &[T], dy: &[T], dx: &mut [T]) {
    assert_eq!(argmax.len(), g.y_len(), "pool: argmax length for {g:?}");
    g.check(dx.len(), dy.len());
    let (hw, ow) = (g.h * g.w, g.out_w());
    if dx.is_empty() {
        return;
    }
    // Where window position `ky·size + kx` lies from the window's corner, in the map: looked up,
    // not divided out per output.
    let rel: Vec<usize> = (0..g.size * g.size)
        .map(|off| (off / g.size) * g.w + off % g.size)
        .collect();
    dx.par_chunks_mut(hw)
        .zip(argmax.par_chunks(g.out_h() * ow))
        .zip(dy.par_chunks(g.out_h() * ow))
        .for_each(|((dxm, am), dym)| {
            dxm.fill(T::zero());
            for (oy, (row, arow)) in dym.chunks(ow).zip(am.chunks(ow)).enumerate() {
                let top = oy * g.stride * g.w;
                for (ox, (&d, &a)) in row.iter().zip(arow).enumerate() {
                    let off = a.to_usize().expect("a window position from forward");
                    let i = top + ox * g.stride + rel[off];
                    dxm[i] = dxm[i] + d;
                }
            }
        });
}
