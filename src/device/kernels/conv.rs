//! The convolution passes, launched on the implicit-GEMM kernels of `cuda/conv.cu`: which block
//! tile each layer gets (`igemm`), how far the filter gradient's reduction is split, whether the
//! masked bounds checks serve, and the grids.

use super::igemm::{Tile, WIDE, by_suffix, kernel_name, pick_split, pick_tile};
use super::params::conv_params;
use super::{KernelDevice, THREADS, arg, check_len, kernel, u32_of};
use crate::device::Device;
use crate::device::launch::{LaunchConfig, Launcher};
use crate::ops::conv::ConvGeom;
use crate::ops::precision::Precision;
use anyhow::{Context, Result};

/// Taps per axis the masked checks cover (IGEMM_MASKED_TAPS in cuda/igemm.cuh), and the filter
/// gradient's border rows (FILTER_BORDER in cuda/conv.cu).
const MASKED_TAPS: usize = 15;
const FILTER_BORDER: usize = 7;

/// Whether every output pixel whose filter taps can fall outside the input lies within
/// FILTER_BORDER rows or columns of the output's edge (the masked filter gradient's premise).
fn filter_border_fits(g: &ConvGeom) -> bool {
    let fits = |size: usize, out: usize| {
        // Rows whose first tap is above the input, and whose last tap is below it.
        let top = g.pad.div_ceil(g.stride).min(out);
        let last_ok = (size + g.pad).saturating_sub(g.k); // iy of the last tap < size
        let bottom = out.saturating_sub(last_ok / g.stride + 1);
        top <= FILTER_BORDER && bottom <= FILTER_BORDER
    };
    fits(g.h, g.out_h()) && fits(g.w, g.out_w())
}

/// The tile and kernel of a launch at `prec`: the forced tile or the chosen one, on the general
/// kernels where the masked checks cannot serve.
fn tile_and_name(
    pass: &'static str,
    prec: Precision,
    masked: bool,
    forced: Option<&str>,
    t: Tile,
) -> (Tile, &'static str) {
    let t = forced.map_or(t, by_suffix);
    let t = if masked { t } else { WIDE };
    (t, kernel_name(pass, prec, t))
}

impl<L: Launcher> KernelDevice<L> {
    pub(super) fn launch_conv_forward(
        &self,
        g: &ConvGeom,
        prec: Precision,
        x: &L::Buf,
        w: &L::Buf,
        b: &L::Buf,
        y: &mut L::Buf,
        relu: bool,
    ) -> Result<()> {
        let run = || -> Result<()> {
            let mut p = conv_params(g)?;
            p.relu = relu as i32;
            check_len("x", self.len(x), g.x_len())?;
            check_len("w", self.len(w), g.w_len())?;
            check_len("b", self.len(b), g.c_out)?;
            check_len("y", self.len(y), g.y_len())?;
            let (rows, cols) = (g.cout_per_group(), g.n * g.out_h() * g.out_w());
            let kdim = g.cin_per_group() * g.k * g.k;
            let sms = self.launcher.multiprocessors();
            let (t, name) = tile_and_name(
                "conv_forward",
                prec,
                g.k <= MASKED_TAPS,
                self.gemm_tile,
                pick_tile(rows, cols, g.groups, kdim, sms),
            );
            let (xp, wp, bp, yp) = (self.ptr(x), self.ptr(w), self.ptr(b), self.ptr(y));
            self.launch_named(
                name,
                t.config(prec, rows, cols, g.groups)?,
                &[arg(&p), arg(&xp), arg(&wp), arg(&bp), arg(&yp)],
            )
        };
        run().with_context(|| format!("conv_forward {g:?}"))
    }

    pub(super) fn launch_conv_backward_data(
        &self,
        g: &ConvGeom,
        prec: Precision,
        dy: &L::Buf,
        w: &L::Buf,
        dx: &mut L::Buf,
    ) -> Result<()> {
        let run = || -> Result<()> {
            let p = conv_params(g)?;
            check_len("dy", self.len(dy), g.y_len())?;
            check_len("w", self.len(w), g.w_len())?;
            check_len("dx", self.len(dx), g.x_len())?;
            // One GEMM per (group, stride phase); the grid covers the largest phase (phase 0).
            let s = g.stride;
            let (rows, cols) = (g.cin_per_group(), g.n * g.h.div_ceil(s) * g.w.div_ceil(s));
            let taps = g.k.div_ceil(s);
            let sms = self.launcher.multiprocessors();
            let z = g.groups * s * s;
            let (t, name) = tile_and_name(
                "conv_backward_data",
                prec,
                taps <= MASKED_TAPS,
                self.gemm_tile,
                pick_tile(rows, cols, z, g.cout_per_group() * taps * taps, sms),
            );
            let (dyp, wp, dxp) = (self.ptr(dy), self.ptr(w), self.ptr(dx));
            self.launch_named(
                name,
                t.config(prec, rows, cols, z)?,
                &[arg(&p), arg(&dyp), arg(&wp), arg(&dxp)],
            )
        };
        run().with_context(|| format!("conv_backward_data {g:?}"))
    }

    pub(super) fn launch_conv_backward_filter(
        &self,
        g: &ConvGeom,
        prec: Precision,
        x: &L::Buf,
        dy: &L::Buf,
        dw: &mut L::Buf,
        db: &mut L::Buf,
    ) -> Result<()> {
        let run = || -> Result<()> {
            let mut p = conv_params(g)?;
            check_len("x", self.len(x), g.x_len())?;
            check_len("dy", self.len(dy), g.y_len())?;
            check_len("dw", self.len(dw), g.w_len())?;
            check_len("db", self.len(db), g.c_out)?;
            let (xp, dyp, dwp, dbp) = (self.ptr(x), self.ptr(dy), self.ptr(dw), self.ptr(db));
            let sms = self.launcher.multiprocessors();

            // Filter gradient: reduction over n·oh·ow, split across blocks.
            let (rows, cols, kdim) = (
                g.cout_per_group(),
                g.cin_per_group() * g.k * g.k,
                g.n * g.out_h() * g.out_w(),
            );
            let (t, chunk, splits) = pick_split(rows, cols, g.groups, kdim, sms);
            let (t, name) = tile_and_name(
                "conv_backward_filter",
                prec,
                filter_border_fits(g),
                self.gemm_tile,
                t,
            );
            p.k_chunk = super::i32_of(chunk, "k_chunk")?;
            // Bias gradient: reduction over images, split to fill two waves.
            let bias_splits = (2 * sms).div_ceil(g.c_out).clamp(1, g.n);
            let img_chunk = g.n.div_ceil(bias_splits);
            let bias_splits = g.n.div_ceil(img_chunk);
            p.img_chunk = img_chunk as i32;

            let w_len = g.w_len();
            let w_parts = if splits > 1 { splits * w_len } else { 0 };
            let b_parts = if bias_splits > 1 {
                bias_splits * g.c_out
            } else {
                0
            };
            let ws = if w_parts + b_parts > 0 {
                self.workspace(w_parts + b_parts)?
            } else {
                0
            };
            let b_ws = ws + 4 * w_parts as u64;

            let out = if splits > 1 { ws } else { dwp };
            self.launch_named(
                name,
                t.config(prec, rows, cols, g.groups * splits)?,
                &[arg(&p), arg(&xp), arg(&dyp), arg(&out)],
            )?;
            if splits > 1 {
                self.reduce_splits(w_len, splits, ws, 0, 1, 1, dwp)?;
            }

            let out = if bias_splits > 1 { b_ws } else { dbp };
            let cfg = LaunchConfig {
                grid: [u32_of(g.c_out, "c_out")?, bias_splits as u32, 1],
                block: [THREADS, 1, 1],
                shared_bytes: 0,
            };
            self.launch(
                kernel("conv", "conv_backward_bias_f32"),
                cfg,
                &[arg(&p), arg(&dyp), arg(&out)],
            )?;
            if bias_splits > 1 {
                self.reduce_splits(g.c_out, bias_splits, b_ws, 0, 1, 1, dbp)?;
            }
            Ok(())
        };
        run().with_context(|| format!("conv_backward_filter {g:?}"))
    }

    /// Launches `cuda/conv.cu`'s kernel `name`.
    fn launch_named(
        &self,
        name: &'static str,
        cfg: LaunchConfig,
        args: &[*mut std::ffi::c_void],
    ) -> Result<()> {
        self.launch(kernel("conv", name), cfg, args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn masked_filter_border_covers_the_presets() {
        let g = |h: usize, k: usize, stride: usize, pad: usize, pad_end: usize| ConvGeom {
            n: 1,
            c_in: 1,
            h,
            w: h,
            c_out: 1,
            k,
            stride,
            pad,
            pad_end,
            groups: 1,
        };
        assert!(filter_border_fits(&g(227, 11, 4, 0, 0))); // conv1
        assert!(filter_border_fits(&g(27, 5, 1, 2, 2))); // conv2
        assert!(filter_border_fits(&g(13, 3, 1, 1, 1))); // conv3-5
        assert!(filter_border_fits(&g(224, 11, 4, 2, 1))); // net145-style one-sided padding
        assert!(!filter_border_fits(&g(40, 17, 1, 8, 8))); // a border of 8 rows
    }
}
