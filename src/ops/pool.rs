//! Max pooling, overlapping when `stride < size` (paper §3.4: z = 3, s = 2).
//!
//! Output size is `(h - size) / stride + 1` (no padding; the paper's 55 → 27 → 13 → 6 chain).
//! The gradient of a window goes to its *first* maximum in row-major order. After a ReLU, ties
//! (runs of zeros) are common, so this rule is part of the op's definition and every
//! implementation, CPU or GPU, follows it exactly.

use super::simd::{Simd, dispatch};
use crate::tensor::{Real, as_f32, as_f32_mut};
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

// Fast CPU paths, parallel over maps. The forward pass scans each window's taps in the
// references' row-major order with the same strict `>` (the tie rule; the tests hold it to ties
// and NaNs), and records where the maximum was; the backward pass routes each window's gradient
// there without looking at the input again, accumulating a map's gradient in the same
// (row-major window) order as the references, so both match them bit for bit.

/// Fast forward (same `y` as `forward_naive`); `argmax[o]` gets output `o`'s window position of
/// its maximum, `ky·size + kx` (exact in any float type), for [`backward`]. Each window is
/// scanned in the references' order with the same strict `>`, so the first maximum wins here
/// too. In f32 at stride 1 or 2 (every pooling layer of the presets) a row's windows run side
/// by side in vector lanes ([`map_maxima`]); otherwise, and in f64 (the gradient checks), each
/// window by the references' own `argmax_in_window`.
pub fn forward<T: Real>(g: &PoolGeom, x: &[T], y: &mut [T], argmax: &mut [T]) {
    g.check(x.len(), y.len());
    assert_eq!(argmax.len(), y.len(), "pool: argmax length for {g:?}");
    let (hw, ohw) = (g.h * g.w, g.out_h() * g.out_w());
    if y.is_empty() {
        return;
    }
    let vectors = as_f32(x).is_some() && matches!(g.stride, 1 | 2);
    let maps = y
        .par_chunks_mut(ohw)
        .zip(argmax.par_chunks_mut(ohw))
        .zip(x.par_chunks(hw));
    if vectors {
        return maps.for_each_init(
            || vec![0f32; tail_len(g)],
            |tail, ((ym, am), map)| {
                let f32s = (as_f32_mut(ym), as_f32_mut(am), as_f32(map));
                let (Some(ym), Some(am), Some(map)) = f32s else {
                    unreachable!("T is f32")
                };
                dispatch!(map_maxima::<_>(g, map, tail, ym, am))
            },
        );
    }
    let ow = g.out_w();
    maps.for_each(|((ym, am), map)| {
        for (o, (y, a)) in ym.iter_mut().zip(am.iter_mut()).enumerate() {
            let (oy, ox) = (o / ow, o % ow);
            let i = argmax_in_window(g, map, oy, ox);
            let (ky, kx) = (i / g.w - oy * g.stride, i % g.w - ox * g.stride);
            *y = map[i];
            *a = T::from_f64_lossy((ky * g.size + kx) as f64);
        }
    });
}

/// The floats [`map_maxima`] reads from one window row's start for a vector of windows at
/// stride `s` (at most 2): `s·16` (the widest vector's windows) and the window's width.
fn tail_len(g: &PoolGeom) -> usize {
    g.stride * 16 + g.size
}

/// One map's window maxima, `LANES` consecutive windows of an output row at a time: per tap, one
/// vector of inputs (at stride 2, dealt from two loads) and two selects, the maximum and where it
/// was, for `LANES` windows, where one window's scan alone is a chain of dependent selects.
/// The windows past the row's end read on into the next row and are dropped; where a read
/// would pass the map's end, that row's inputs are first copied into `tail`, zeros after.
#[inline(always)]
fn map_maxima<S: Simd>(
    g: &PoolGeom,
    map: &[f32],
    tail: &mut [f32],
    ym: &mut [f32],
    am: &mut [f32],
) {
    match g.stride {
        1 => map_maxima_at::<S, 1>(g, map, tail, ym, am),
        _ => map_maxima_at::<S, 2>(g, map, tail, ym, am),
    }
}

/// [`map_maxima`] at stride `STRIDE`.
#[inline(always)]
fn map_maxima_at<S: Simd, const STRIDE: usize>(
    g: &PoolGeom,
    map: &[f32],
    tail: &mut [f32],
    ym: &mut [f32],
    am: &mut [f32],
) {
    let (ow, size, w) = (g.out_w(), g.size, g.w);
    let reach = STRIDE * S::LANES + size;
    assert!(g.stride == STRIDE && tail.len() >= reach && map.len() == g.h * w);
    let (mut best, mut at) = ([0f32; 16], [0f32; 16]);
    for (oy, (ys, ats)) in ym
        .chunks_exact_mut(ow)
        .zip(am.chunks_exact_mut(ow))
        .enumerate()
    {
        for j in (0..ow).step_by(S::LANES) {
            // SAFETY: the set's instructions (the caller's entry point). Every read lies within
            // `reach` floats of its row's start `src`, and those lie within `map` or `tail`.
            unsafe {
                let (mut b, mut a) = (S::zero(), S::zero());
                for ky in 0..size {
                    let start = (oy * STRIDE + ky) * w + j * STRIDE;
                    let src = if start + reach <= map.len() {
                        map.as_ptr().add(start)
                    } else {
                        let (inside, zeros) = tail.split_at_mut(map.len() - start);
                        inside.copy_from_slice(&map[start..]);
                        zeros.fill(0.0);
                        tail.as_ptr()
                    };
                    for kx in 0..size {
                        let v = match STRIDE {
                            1 => S::load(src.add(kx)),
                            _ => {
                                let (even, odd) = S::load_even_odd(src.add(kx & !1));
                                if kx % 2 == 0 { even } else { odd }
                            }
                        };
                        if ky == 0 && kx == 0 {
                            b = v;
                            continue;
                        }
                        let here = S::splat((ky * size + kx) as f32);
                        a = S::select_gt(v, b, here, a);
                        b = S::select_gt(v, b, v, b);
                    }
                }
                S::store(best.as_mut_ptr(), b);
                S::store(at.as_mut_ptr(), a);
            }
            let n = S::LANES.min(ow - j);
            ys[j..j + n].copy_from_slice(&best[..n]);
            ats[j..j + n].copy_from_slice(&at[..n]);
        }
    }
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
