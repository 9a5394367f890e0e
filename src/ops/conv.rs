//! Convolution: stride, zero padding (possibly asymmetric, as `net145`'s conv1 needs) and groups.
//!
//! `x: [n, c_in, h, w]`, `w: [c_out, c_in / groups, k, k]`, `b: [c_out]`, `y: [n, c_out, oh, ow]`.
//! Output channel `co` belongs to group `co / (c_out / groups)` and sees only that group's input
//! channels. Padding adds `pad` zeros before and `pad_end` zeros after each spatial axis.

use crate::tensor::Real;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub pad_end: usize,
    pub groups: usize,
}

impl ConvGeom {
    pub fn out_h(&self) -> usize {
        (self.h + self.pad + self.pad_end - self.k) / self.stride + 1
    }
    pub fn out_w(&self) -> usize {
        (self.w + self.pad + self.pad_end - self.k) / self.stride + 1
    }
    pub fn x_len(&self) -> usize {
        self.n * self.c_in * self.h * self.w
    }
    pub fn w_len(&self) -> usize {
        self.c_out * (self.c_in / self.groups) * self.k * self.k
    }
    pub fn y_len(&self) -> usize {
        self.n * self.c_out * self.out_h() * self.out_w()
    }
    /// Input channels each filter sees.
    pub fn cin_per_group(&self) -> usize {
        self.c_in / self.groups
    }
    pub fn cout_per_group(&self) -> usize {
        self.c_out / self.groups
    }
    fn check(&self, x: usize, w: usize, b: usize, y: usize) {
        assert!(
            self.groups > 0 && self.c_in % self.groups == 0 && self.c_out % self.groups == 0,
            "conv: {} input and {} output channels do not split into {} groups",
            self.c_in,
            self.c_out,
            self.groups
        );
        assert!(self.stride > 0 && self.k > 0 && self.k <= self.h + self.pad + self.pad_end);
        assert_eq!(x, self.x_len(), "conv: input length for {self:?}");
        assert_eq!(w, self.w_len(), "conv: weight length for {self:?}");
        assert_eq!(b, self.c_out, "conv: bias length for {self:?}");
        assert_eq!(y, self.y_len(), "conv: output length for {self:?}");
    }
}

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

// Fast CPU paths (im2col + GEMM). Placeholders that defer to the naive loops until written.
pub fn forward(g: &ConvGeom, x: &[f32], w: &[f32], b: &[f32], y: &mut [f32]) {
    forward_naive(g, x, w, b, y)
}
pub fn backward_data(g: &ConvGeom, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    backward_data_naive(g, dy, w, dx)
}
pub fn backward_filter(g: &ConvGeom, x: &[f32], dy: &[f32], dw: &mut [f32], db: &mut [f32]) {
    backward_filter_naive(g, x, dy, dw, db)
}
