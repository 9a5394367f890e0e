//! Convolution: stride, zero padding (possibly asymmetric, as `net145`'s conv1 needs) and groups.
//!
//! `x: [n, c_in, h, w]`, `w: [c_out, c_in / groups, k, k]`, `b: [c_out]`, `y: [n, c_out, oh, ow]`.
//! Output channel `co` belongs to group `co / (c_out / groups)` and sees only that group's input
//! channels. Padding adds `pad` zeros before and `pad_end` zeros after each spatial axis.

pub use super::conv_geom::ConvGeom;
use crate::tensor::Real;
use rayon::prelude::*;

/// The input pixel that filter tap `(ky, kx)` of output pixel `(oy, ox)` reads, or `None` in the
/// padding.
fn tap(g: &ConvGeom, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
    let iy = (oy * g.stride + ky).checked_sub(g.pad)?;
    let ix = (ox * g.stride + kx).checked_sub(g.pad)?;
    (iy < g.h && ix < g.w).then_some((iy, ix))
}

/// Naive reference: `y = conv(x, w) + b`.
pub fn forward_naive<T: Real>(g: &ConvGeom, x: &[T], w: &[T], b: &[T], y: &mut [T]) {
    g.check(x.len(), w.len(), b.len(), y.len());
    let (oh, ow, cig, cog) = (g.out_h(), g.out_w(), g.cin_per_group(), g.cout_per_group());
    for n in 0..g.n {
        for co in 0..g.c_out {
            let grp = co / cog;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b[co];
                    for ci in 0..cig {
                        let c = grp * cig + ci;
                        for ky in 0..g.k {
                            for kx in 0..g.k {
                                if let Some((iy, ix)) = tap(g, oy, ox, ky, kx) {
                                    acc = acc
                                        + x[((n * g.c_in + c) * g.h + iy) * g.w + ix]
                                            * w[((co * cig + ci) * g.k + ky) * g.k + kx];
                                }
                            }
                        }
                    }
                    y[((n * g.c_out + co) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
}

/// Naive reference: `dx = ∂L/∂x` given `dy = ∂L/∂y`.
pub fn backward_data_naive<T: Real>(g: &ConvGeom, dy: &[T], w: &[T], dx: &mut [T]) {
    g.check(dx.len(), w.len(), g.c_out, dy.len());
    let (oh, ow, cig, cog) = (g.out_h(), g.out_w(), g.cin_per_group(), g.cout_per_group());
    dx.fill(T::zero());
    for n in 0..g.n {
        for co in 0..g.c_out {
            let grp = co / cog;
            for oy in 0..oh {
                for ox in 0..ow {
                    let d = dy[((n * g.c_out + co) * oh + oy) * ow + ox];
                    for ci in 0..cig {
                        let c = grp * cig + ci;
                        for ky in 0..g.k {
                            for kx in 0..g.k {
                                if let Some((iy, ix)) = tap(g, oy, ox, ky, kx) {
                                    let i = ((n * g.c_in + c) * g.h + iy) * g.w + ix;
                                    dx[i] = dx[i] + d * w[((co * cig + ci) * g.k + ky) * g.k + kx];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Naive reference: `dw = ∂L/∂w`, `db = ∂L/∂b` given `x` and `dy`.
pub fn backward_filter_naive<T: Real>(g: &ConvGeom, x: &[T], dy: &[T], dw: &mut [T], db: &mut [T]) {
    g.check(x.len(), dw.len(), db.len(), dy.len());
    let (oh, ow, cig, cog) = (g.out_h(), g.out_w(), g.cin_per_group(), g.cout_per_group());
    dw.fill(T::zero());
    db.fill(T::zero());
    for n in 0..g.n {
        for co in 0..g.c_out {
            let grp = co / cog;
            for oy in 0..oh {
                for ox in 0..ow {
                    let d = dy[((n * g.c_out + co) * oh + oy) * ow + ox];
                    db[co] = db[co] + d;
                    for ci in 0..cig {
                        let c = grp * cig + ci;
                        for ky in 0..g.k {
                            for kx in 0..g.k {
                                if let Some((iy, ix)) = tap(g, oy, ox, ky, kx) {
                                    let i = ((co * cig + ci) * g.k + ky) * g.k + kx;
                                    dw[i] = dw[i] + d * x[((n * g.c_in + c) * g.h + iy) * g.w + ix];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

// Fast CPU paths: im2col + GEMM, parallel over the batch. A sample's "column" matrix holds, for
// every filter tap `(ci, ky, kx)` (a row, ordered like the weights), the input value that tap reads
// at each output pixel (a column), zero in the padding; group `grp` owns the rows of its input
// channels. The convolution of one sample and group is then one GEMM with the group's weights.

/// Rows of the column matrix per group: the taps one filter has.
fn taps_per_group(g: &ConvGeom) -> usize {
    g.cin_per_group() * g.k * g.k
}

/// Output pixels `[lo, hi)` along an axis whose tap `t` lands inside the input `[0, len)`:
/// `0 <= o * stride + t - pad < len`.
fn valid_outputs(t: usize, len: usize, out: usize, stride: usize, pad: usize) -> (usize, usize) {
    let lo = pad.saturating_sub(t).div_ceil(stride).min(out);
    let hi = if len + pad > t {
        ((len + pad - t - 1) / stride + 1).min(out)
    } else {
        0
    };
    (lo, hi.max(lo))
}

/// Fills `col` (`c_in * k * k` rows of `(oy1 - oy0) * ow`) from one sample `xs` (`[c_in, h, w]`):
/// the columns of output rows `oy0..oy1`.
fn im2col<T: Real>(g: &ConvGeom, xs: &[T], (oy0, oy1): (usize, usize), col: &mut [T]) {
    let (oh, ow, s) = (g.out_h(), g.out_w(), g.stride);
    for (row, col_row) in col.chunks_mut((oy1 - oy0) * ow).enumerate() {
        let (c, ky, kx) = (row / (g.k * g.k), row / g.k % g.k, row % g.k);
        let map = &xs[c * g.h * g.w..(c + 1) * g.h * g.w];
        let (y0, y1) = valid_outputs(ky, g.h, oh, s, g.pad);
        let (x0, x1) = valid_outputs(kx, g.w, ow, s, g.pad);
        for (oy, out) in (oy0..oy1).zip(col_row.chunks_mut(ow)) {
            if oy < y0 || oy >= y1 {
                out.fill(T::zero());
                continue;
            }
            out[..x0].fill(T::zero());
            out[x1..].fill(T::zero());
            if x0 == x1 {
                continue;
            }
            let line = &map[(oy * s + ky - g.pad) * g.w..][..g.w];
            // Input x of output ox is ox·s + kx − pad; the slice starts at output x0.
            let first = x0 * s + kx - g.pad;
            if s == 1 {
                out[x0..x1].copy_from_slice(&line[first..first + (x1 - x0)]);
            } else {
                for (o, &v) in out[x0..x1].iter_mut().zip(line[first..].iter().step_by(s)) {
                    *o = v;
                }
            }
        }
    }
}

/// Adds every entry of `col` (the columns of output rows `oy0..oy1`) back onto the input pixel
/// it was read from (the adjoint of `im2col`), into one sample's `dxs`, which the caller zeroes.
/// Sequential, so the sum order is fixed.
fn col2im_add<T: Real>(g: &ConvGeom, col: &[T], (oy0, oy1): (usize, usize), dxs: &mut [T]) {
    let (oh, ow, s) = (g.out_h(), g.out_w(), g.stride);
    for (row, col_row) in col.chunks((oy1 - oy0) * ow).enumerate() {
        let (c, ky, kx) = (row / (g.k * g.k), row / g.k % g.k, row % g.k);
        let map = &mut dxs[c * g.h * g.w..(c + 1) * g.h * g.w];
        let (y0, y1) = valid_outputs(ky, g.h, oh, s, g.pad);
        let (x0, x1) = valid_outputs(kx, g.w, ow, s, g.pad);
        if x0 == x1 {
            continue;
        }
        for oy in y0.max(oy0)..y1.min(oy1) {
            let line = &mut map[(oy * s + ky - g.pad) * g.w..][..g.w];
            let at = (oy - oy0) * ow;
            let src = &col_row[at + x0..at + x1];
            let first = x0 * s + kx - g.pad;
            // The same additions in the same order as one pixel at a time; only the indexing
            // is cheaper.
            if s == 1 {
                for (d, &v) in line[first..first + src.len()].iter_mut().zip(src) {
                    *d = *d + v;
                }
            } else {
                for (d, &v) in line[first..].iter_mut().step_by(s).zip(src) {
                    *d = *d + v;
                }
            }
        }
    }
}

/// Bytes of column matrix per band of output rows: the band's columns stay in L2 (2 MB a core
/// on the CPUs this was tuned on) while the GEMM packs and reads them. A whole sample's can be
/// far larger: 4.4 MB for the paper's conv1, 3.5 MB for conv2.
const BAND_BYTES: usize = 512 << 10;

/// The bands of output rows `[oy0, oy1)` the fast paths cut one sample into.
fn bands(g: &ConvGeom) -> impl Iterator<Item = (usize, usize)> + use<> {
    let (oh, ow) = (g.out_h(), g.out_w());
    let row_bytes = (g.groups * taps_per_group(g) * ow * size_of::<f32>()).max(1);
    let rows = (BAND_BYTES / row_bytes).clamp(1, oh.max(1));
    (0..oh)
        .step_by(rows)
        .map(move |oy0| (oy0, (oy0 + rows).min(oh)))
}

/// A column matrix for the largest band, made once per rayon task (`for_each_init`) rather than
/// per sample: allocating and zeroing it per sample cost more than the im2col that fills it.
fn col_buffer<T: Real>(g: &ConvGeom) -> impl Fn() -> Vec<T> + Sync + Send + use<T> {
    let rows = bands(g).map(|(a, b)| b - a).max().unwrap_or(0);
    let len = g.groups * taps_per_group(g) * rows * g.out_w();
    move || vec![T::zero(); len]
}

/// Fast forward: `y = conv(x, w) + b` (same semantics as `forward_naive`): direct at stride 1
/// (`conv_direct`), strided as a stride-1 convolution over phase channels where the direct
/// kernels take that (`conv_strided`), else im2col and GEMM band by band.
pub fn forward<T: Real>(g: &ConvGeom, x: &[T], w: &[T], b: &[T], y: &mut [T]) {
    forward_maybe_relu(g, x, w, b, false, y)
}

/// `forward` then the ReLU in place (as `activation::relu_forward` computes it): fused into the
/// direct path's copy out of its tiles, a pass of its own after im2col and GEMM.
pub fn forward_relu<T: Real>(g: &ConvGeom, x: &[T], w: &[T], b: &[T], y: &mut [T]) {
    forward_maybe_relu(g, x, w, b, true, y)
}

fn forward_maybe_relu<T: Real>(g: &ConvGeom, x: &[T], w: &[T], b: &[T], relu: bool, y: &mut [T]) {
    g.check(x.len(), w.len(), b.len(), y.len());
    if super::conv_direct::applies(g) {
        return super::conv_direct::forward(g, x, w, b, relu, y);
    }
    if super::conv_strided::applies::<T>(g) {
        return super::conv_strided::forward(g, x, w, b, relu, y);
    }
    forward_gemm(g, x, w, b, y);
    if relu {
        y.par_chunks_mut(1 << 14).for_each(|c| {
            c.iter_mut()
                .for_each(|v| *v = if *v > T::zero() { *v } else { T::zero() })
        });
    }
}

fn forward_gemm<T: Real>(g: &ConvGeom, x: &[T], w: &[T], b: &[T], y: &mut [T]) {
    let (ow, ohw, kg, cog) = (
        g.out_w(),
        g.out_h() * g.out_w(),
        taps_per_group(g),
        g.cout_per_group(),
    );
    let x_per_sample = g.c_in * g.h * g.w;
    if y.is_empty() {
        return;
    }
    y.par_chunks_mut(g.c_out * ohw)
        .enumerate()
        .for_each_init(col_buffer(g), |col, (n, ys)| {
            let xs = &x[n * x_per_sample..(n + 1) * x_per_sample];
            for (co, out) in ys.chunks_mut(ohw).enumerate() {
                out.fill(b[co]);
            }
            for band in bands(g) {
                let px = (band.1 - band.0) * ow;
                let col = &mut col[..g.groups * kg * px];
                im2col(g, xs, band, col);
                for grp in 0..g.groups {
                    // y_grp[:, band] (cog x px) += w_grp (cog x kg) . col_grp (kg x px)
                    T::gemm(
                        cog,
                        kg,
                        px,
                        T::one(),
                        &w[grp * cog * kg..(grp + 1) * cog * kg],
                        (kg as isize, 1),
                        &col[grp * kg * px..(grp + 1) * kg * px],
                        (px as isize, 1),
                        T::one(),
                        &mut ys[grp * cog * ohw + band.0 * ow..(grp + 1) * cog * ohw],
                        (ohw as isize, 1),
                    );
                }
            }
        });
}

/// Fast data gradient: direct at stride 1 (`conv_direct`), else `col = wᵀ · dy` per sample, band
/// and group, then `col2im`.
pub fn backward_data<T: Real>(g: &ConvGeom, dy: &[T], w: &[T], dx: &mut [T]) {
    g.check(dx.len(), w.len(), g.c_out, dy.len());
    if super::conv_direct::applies(g) {
        return super::conv_direct::backward_data(g, dy, w, dx);
    }
    let (ow, ohw, kg, cog) = (
        g.out_w(),
        g.out_h() * g.out_w(),
        taps_per_group(g),
        g.cout_per_group(),
    );
    let x_per_sample = g.c_in * g.h * g.w;
    let y_per_sample = g.c_out * ohw;
    if x_per_sample == 0 {
        return;
    }
    dx.par_chunks_mut(x_per_sample)
        .enumerate()
        .for_each_init(col_buffer(g), |col, (n, dxs)| {
            let dys = &dy[n * y_per_sample..(n + 1) * y_per_sample];
            dxs.fill(T::zero());
            for band in bands(g) {
                let px = (band.1 - band.0) * ow;
                let col = &mut col[..g.groups * kg * px];
                for grp in 0..g.groups {
                    // col_grp (kg x px) = w_grpᵀ (kg x cog) . dy_grp[:, band] (cog x px)
                    T::gemm(
                        kg,
                        cog,
                        px,
                        T::one(),
                        &w[grp * cog * kg..(grp + 1) * cog * kg],
                        (1, kg as isize),
                        &dys[grp * cog * ohw + band.0 * ow..(grp + 1) * cog * ohw],
                        (ohw as isize, 1),
                        T::zero(),
                        &mut col[grp * kg * px..(grp + 1) * kg * px],
                        (px as isize, 1),
                    );
                }
                col2im_add(g, col, band, dxs);
            }
        });
}

/// The batch is cut into at most this many contiguous slices for the filter gradient; each slice
/// sums its samples into its own partial and the partials are added in slice order. The cut
/// depends on the batch size alone, never on the thread count, so the result is bit-identical on
/// every machine and every run.
const FILTER_PARTIALS: usize = 16;

/// Samples a slice holds at least. A partial is as large as the filters (1.8 MB for the paper's
/// conv3 tower), and a slice of one sample passes each sample's sums through a partial of its
/// own, which leaves the cache before the slices are added: at batch 8, slices of one sample
/// took the paper's conv3 filter gradient 11.3 ms against 5.6 at two slices of four.
const MIN_SLICE_SAMPLES: usize = 4;

/// Samples per slice of the filter gradient at batch `n` (the last slice may hold fewer).
pub(super) fn filter_slice_len(n: usize) -> usize {
    n.div_ceil(FILTER_PARTIALS).max(MIN_SLICE_SAMPLES)
}

/// Fast filter gradient: direct at stride 1 in f32 with AVX-512 (`conv_filter`), else
/// `dw += dy · colᵀ` over the batch, `db += Σ dy`, with a fixed-order
/// reduction of per-slice partials.
pub fn backward_filter<T: Real>(g: &ConvGeom, x: &[T], dy: &[T], dw: &mut [T], db: &mut [T]) {
    g.check(x.len(), dw.len(), db.len(), dy.len());
    if super::conv_filter::applies::<T>(g) {
        return super::conv_filter::backward_filter(g, x, dy, dw, db, filter_slice_len(g.n));
    }
    if super::conv_strided::applies::<T>(g) {
        return super::conv_strided::backward_filter(g, x, dy, dw, db, filter_slice_len(g.n));
    }
    let (ow, ohw, kg, cog) = (
        g.out_w(),
        g.out_h() * g.out_w(),
        taps_per_group(g),
        g.cout_per_group(),
    );
    let x_per_sample = g.c_in * g.h * g.w;
    let y_per_sample = g.c_out * ohw;
    let per_slice = filter_slice_len(g.n);
    let partials: Vec<(Vec<T>, Vec<T>)> = (0..g.n.div_ceil(per_slice))
        .into_par_iter()
        .map(|slice| {
            let mut pw = vec![T::zero(); dw.len()];
            let mut pb = vec![T::zero(); g.c_out];
            let mut col = col_buffer(g)();
            for n in slice * per_slice..((slice + 1) * per_slice).min(g.n) {
                let dys = &dy[n * y_per_sample..(n + 1) * y_per_sample];
                let xs = &x[n * x_per_sample..(n + 1) * x_per_sample];
                for band in bands(g) {
                    let px = (band.1 - band.0) * ow;
                    let col = &mut col[..g.groups * kg * px];
                    im2col(g, xs, band, col);
                    for grp in 0..g.groups {
                        // dw_grp (cog x kg) += dy_grp[:, band] (cog x px) . col_grpᵀ (px x kg)
                        T::gemm(
                            cog,
                            px,
                            kg,
                            T::one(),
                            &dys[grp * cog * ohw + band.0 * ow..(grp + 1) * cog * ohw],
                            (ohw as isize, 1),
                            &col[grp * kg * px..(grp + 1) * kg * px],
                            (1, px as isize),
                            T::one(),
                            &mut pw[grp * cog * kg..(grp + 1) * cog * kg],
                            (kg as isize, 1),
                        );
                    }
                }
                for (b, d) in pb.iter_mut().zip(dys.chunks(ohw)) {
                    *b = *b + d.iter().copied().sum::<T>();
                }
            }
            (pw, pb)
        })
        .collect();
    dw.fill(T::zero());
    db.fill(T::zero());
    for (pw, pb) in &partials {
        dw.iter_mut().zip(pw).for_each(|(d, &p)| *d = *d + p);
        db.iter_mut().zip(pb).for_each(|(d, &p)| *d = *d + p);
    }
}
