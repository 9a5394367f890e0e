//! Strided convolutions (the paper's conv1: 11×11 at stride 4) as stride-1 ones, so that they
//! take the direct kernels of `conv_direct` and `conv_filter` instead of im2col and GEMM.
//!
//! Split each filter tap `ky = s·qy + ry` (`ry < s`) and each padded input row `i·s + ry` by its
//! phase `ry`, and the same along columns. Then tap `(ky, kx)` of output `(oy, ox)` reads phase
//! `(ry, rx)` of the input at `(oy + qy, ox + qx)`: the strided convolution of `c` channels with
//! `k × k` filters is a stride-1, unpadded one of `c·s²` phase channels with `ceil(k / s)²`
//! filters, whose taps past the original filter (`s·q + r >= k`) are zero. At conv1 that is 48
//! channels of 3 × 3 on 57 × 57 maps: 19% more multiply-adds than the 363 taps of the original,
//! at the direct kernels' rate instead of im2col's copies and the GEMM's packing.
//!
//! The sums run over the phase channels' taps in their order, not the reference's `(ci, ky, kx)`:
//! within tolerance of it, and the same bits on every run and thread count.

use super::conv_geom::ConvGeom;
use crate::tensor::Real;
use rayon::prelude::*;

/// The stride-1 convolution over phase channels that computes `g`.
fn phase_geom(g: &ConvGeom) -> ConvGeom {
    let kq = g.k.div_ceil(g.stride);
    ConvGeom {
        n: g.n,
        c_in: g.c_in * g.stride * g.stride,
        h: g.out_h() + kq - 1,
        w: g.out_w() + kq - 1,
        c_out: g.c_out,
        k: kq,
        stride: 1,
        pad: 0,
        pad_end: 0,
        groups: 1,
    }
}

/// Whether `g` runs here in `T`: strided, one group, and the phase convolution one that the
/// direct filter gradient takes (f32 on AVX-512, 3×3 or 5×5 phase filters: conv1's 11×11 at
/// stride 4 gives 3×3).
pub fn applies<T: Real>(g: &ConvGeom) -> bool {
    g.stride > 1 && g.groups == 1 && super::conv_filter::applies::<T>(&phase_geom(g))
}

/// The input by phase channel: `xq[n][(ci·s + ry)·s + rx][i][j] = x[n][ci][i·s + ry − pad][j·s + rx
/// − pad]`, zero outside the input.
fn phase_input<T: Real>(g: &ConvGeom, x: &[T]) -> Vec<T> {
    let (s, pg) = (g.stride, phase_geom(g));
    let mut xq = vec![T::zero(); pg.x_len()];
    let (hq, wq) = (pg.h, pg.w);
    // A sample per task.
    xq.par_chunks_exact_mut(pg.c_in * hq * wq)
        .zip(x.par_chunks_exact(g.c_in * g.h * g.w))
        .for_each(|(maps, src)| {
            for (c, map) in maps.chunks_exact_mut(hq * wq).enumerate() {
                let (ci, ry, rx) = (c / (s * s), c / s % s, c % s);
                let plane = &src[ci * g.h * g.w..][..g.h * g.w];
                for (i, row) in map.chunks_exact_mut(wq).enumerate() {
                    let Some(r) = (i * s + ry).checked_sub(g.pad).filter(|&r| r < g.h) else {
                        continue;
                    };
                    let line = &plane[r * g.w..][..g.w];
                    // Columns j·s + rx − pad inside the input: j in [j0, j1).
                    let j0 = g.pad.saturating_sub(rx).div_ceil(s);
                    let j1 = ((g.w + g.pad).saturating_sub(rx).div_ceil(s)).min(wq);
                    if j0 < j1 {
                        let first = j0 * s + rx - g.pad;
                        for (v, &x) in row[j0..j1].iter_mut().zip(line[first..].iter().step_by(s)) {
                            *v = x;
                        }
                    }
                }
            }
        });
    xq
}

/// Each weight's index in `w` (`[co][ci][ky][kx]`) and among the phase filters
/// (`[co][(ci·s + ry)·s + rx][qy][qx]`, for `ky = s·qy + ry`, `kx = s·qx + rx`).
fn phase_taps(g: &ConvGeom) -> impl Iterator<Item = (usize, usize)> + use<> {
    let (s, k, c_in) = (g.stride, g.k, g.c_in);
    let kq = k.div_ceil(s);
    (0..g.c_out * c_in * k * k).map(move |i| {
        let (co, ci, ky, kx) = (i / (c_in * k * k), i / (k * k) % c_in, i / k % k, i % k);
        let at = (((ci * s + ky % s) * s + kx % s) * kq + ky / s) * kq + kx / s;
        (i, co * c_in * s * s * kq * kq + at)
    })
}

/// Forward: `y = conv(x, w) + b` as `conv::forward_naive` defines it, and its ReLU where `relu`.
pub fn forward<T: Real>(g: &ConvGeom, x: &[T], w: &[T], b: &[T], relu: bool, y: &mut [T]) {
    assert!(
        applies::<T>(g),
        "conv_strided: {g:?} is not for the phase form"
    );
    let pg = phase_geom(g);
    let mut wq = vec![T::zero(); pg.w_len()];
    for (i, j) in phase_taps(g) {
        wq[j] = w[i];
    }
    super::conv_direct::forward(&pg, &phase_input(g, x), &wq, b, relu, y);
}

/// Filter gradient: `dw`, `db` as `conv::backward_filter_naive` defines them, the batch cut into
/// slices of `per_slice` samples as `conv_filter::backward_filter` cuts it.
pub fn backward_filter<T: Real>(
    g: &ConvGeom,
    x: &[T],
    dy: &[T],
    dw: &mut [T],
    db: &mut [T],
    per_slice: usize,
) {
    assert!(
        applies::<T>(g),
        "conv_strided: {g:?} is not for the phase form"
    );
    let pg = phase_geom(g);
    let mut dwq = vec![T::zero(); pg.w_len()];
    super::conv_filter::backward_filter(&pg, &phase_input(g, x), dy, &mut dwq, db, per_slice);
    for (i, j) in phase_taps(g) {
        dw[i] = dwq[j];
    }
}
