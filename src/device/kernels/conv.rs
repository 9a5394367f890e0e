//! The convolution passes, launched on the implicit-GEMM kernels of `cuda/conv.cu`: which block
//! tile each layer gets, how far the filter gradient's reduction is split, and the grids.
//!
//! Each pass is a GEMM of `rows x cols` outputs (times `z` independent ones: groups, stride
//! phases or reduction splits). A tile is chosen to minimise the estimated time: whole waves of
//! the device's SMs, each costing a resident set of blocks' multiply-adds at the tile's issue
//! rate; wasted rows count (a 64-row tile over 48 channels wastes a quarter). The filter
//! gradient's split count is chosen with it, so that its blocks fill whole waves too.

use super::params::conv_params;
use super::{KernelDevice, THREADS, arg, check_len, kernel, u32_of};
use crate::device::Device;
use crate::device::launch::{LaunchConfig, Launcher};
use crate::ops::conv::ConvGeom;
use anyhow::{Context, Result, ensure};

/// A block tile of `cuda/igemm.cuh` (`IgemmTile<rows, cols, _>`), as `cuda/conv.cu` builds it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Tile {
    rows: usize,
    cols: usize,
    threads: u32,
    /// Kernel name suffix.
    suffix: &'static str,
    /// Share of the hot loop's instructions that are FFMA, from the sm_90 SASS
    /// (scripts/sass-guard.sh): what the tile can issue at best.
    issue_share: f64,
}

/// K per main-loop step and shared-memory stages (cuda/igemm.cuh).
const BK: usize = 32;
const STAGES: usize = 2;

const TILES: [Tile; 3] = [
    Tile {
        rows: 128,
        cols: 128,
        threads: 256,
        suffix: "128x128",
        issue_share: 0.85,
    },
    Tile {
        rows: 64,
        cols: 128,
        threads: 128,
        suffix: "64x128",
        issue_share: 0.81,
    },
    Tile {
        rows: 48,
        cols: 128,
        threads: 128,
        suffix: "48x128",
        issue_share: 0.77,
    },
];

/// The tile the general ("_wide") kernels are built for: kernels beyond the masked checks' reach.
const WIDE: Tile = Tile {
    rows: 64,
    cols: 128,
    threads: 128,
    suffix: "64x128_wide",
    issue_share: 0.79,
};

/// Taps per axis the masked checks cover (IGEMM_MASKED_TAPS), and the filter gradient's border
/// rows (FILTER_BORDER).
const MASKED_TAPS: usize = 15;
const FILTER_BORDER: usize = 7;

impl Tile {
    /// `IgemmTile::SMEM_BYTES`: the stages of both operands' tiles (rows padded by 4 floats) and
    /// two K tables of 16-byte entries. `cuda/conv.cu` static_asserts the same numbers.
    fn smem_bytes(&self) -> u32 {
        (STAGES * BK * (self.rows + 4 + self.cols + 4) * 4 + 2 * BK * 16) as u32
    }

    /// Blocks resident on one SM: at most 128 registers a thread (the kernels' launch bounds),
    /// 227 KiB of shared memory (1 KiB of it reserved per block), 2048 threads.
    fn blocks_per_sm(&self) -> usize {
        let by_regs = 65536 / (128 * self.threads as usize);
        let by_smem = (228 * 1024) / (self.smem_bytes() as usize + 1024);
        let by_threads = 2048 / self.threads as usize;
        by_regs.min(by_smem).min(by_threads).max(1)
    }

    /// Blocks of a `rows x cols` GEMM, `z` of them.
    fn blocks(&self, rows: usize, cols: usize, z: usize) -> usize {
        rows.div_ceil(self.rows) * cols.div_ceil(self.cols) * z
    }

    /// Estimated time (arbitrary units) of `blocks` blocks each of `k` GEMM-K terms on `sms`
    /// SMs: the waves, each as long as a resident set of blocks takes at the tile's issue rate.
    fn cost(&self, blocks: usize, k: usize, sms: usize) -> f64 {
        let slots = sms * self.blocks_per_sm();
        let waves = blocks.div_ceil(slots);
        waves as f64 * (self.blocks_per_sm() * self.rows * self.cols * k.div_ceil(BK) * BK) as f64
            / self.issue_share
    }

    fn config(&self, rows: usize, cols: usize, z: usize) -> Result<LaunchConfig> {
        // CUDA caps gridDim.y and gridDim.z at 65535 (x at 2^31 - 1).
        let (ry, zs) = (rows.div_ceil(self.rows), z);
        ensure!(
            ry <= 65535 && zs <= 65535,
            "a grid of {ry} row tiles by {zs} GEMMs exceeds CUDA's 65535 limit on grid y and z"
        );
        Ok(LaunchConfig {
            grid: [
                u32_of(cols.div_ceil(self.cols), "column tiles")?,
                ry as u32,
                u32_of(zs, "grid z")?,
            ],
            block: [self.threads, 1, 1],
            shared_bytes: self.smem_bytes(),
        })
    }
}

/// The fastest tile by [`Tile::cost`] for a GEMM of `rows x cols` (times `z`) over `k` terms.
fn pick_tile(rows: usize, cols: usize, z: usize, k: usize, sms: usize) -> Tile {
    let cost = |t: &Tile| t.cost(t.blocks(rows, cols, z), k, sms);
    TILES
        .into_iter()
        .min_by(|a, b| cost(a).total_cmp(&cost(b)))
        .expect("tiles exist")
}

/// Most splits of the filter gradient's reduction, and fewest terms each keeps (so that the
/// partial sums stay cheap next to the GEMM).
const MAX_SPLITS: usize = 64;
const MIN_SPLIT_K: usize = 1024;

/// The filter gradient's tile and reduction split: (tile, terms per split, a multiple of BK;
/// number of splits), chosen together so that the blocks fill whole waves.
fn pick_filter_split(
    rows: usize,
    cols: usize,
    groups: usize,
    k: usize,
    sms: usize,
) -> (Tile, usize, usize) {
    let most = k.div_ceil(MIN_SPLIT_K).clamp(1, MAX_SPLITS);
    let mut best: Option<(f64, Tile, usize, usize)> = None;
    for t in TILES {
        for want in 1..=most {
            let chunk = k.div_ceil(want).div_ceil(BK) * BK;
            let splits = k.div_ceil(chunk.max(BK)).max(1);
            let c = t.cost(t.blocks(rows, cols, groups * splits), chunk, sms);
            // Ties go to fewer splits (less to reduce), then to the earlier (larger) tile.
            if best.as_ref().is_none_or(|b| c < b.0 * (1.0 - 1e-9)) {
                best = Some((c, t, chunk.max(BK), splits));
            }
        }
    }
    let (_, t, chunk, splits) = best.expect("at least one candidate");
    (t, chunk, splits)
}

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

/// The tile called `name` (a suffix of the kernel names), as [`KernelDevice::with_conv_tile`]
/// takes it.
pub(super) fn tile_named(name: &str) -> Result<&'static str> {
    TILES
        .iter()
        .chain([&WIDE])
        .map(|t| t.suffix)
        .find(|s| *s == name)
        .with_context(|| format!("no conv tile {name:?}: 128x128, 64x128, 48x128 or 64x128_wide"))
}

fn by_suffix(suffix: &str) -> Tile {
    TILES
        .into_iter()
        .chain([WIDE])
        .find(|t| t.suffix == suffix)
        .expect("a suffix tile_named accepted")
}

/// The tile and kernel name of a launch: the forced tile or the chosen one, on the general
/// kernels where the masked checks cannot serve.
fn tile_and_name(
    pass: &'static str,
    masked: bool,
    forced: Option<&str>,
    t: Tile,
) -> (Tile, String) {
    let t = forced.map_or(t, by_suffix);
    let t = if masked { t } else { WIDE };
    (t, format!("{pass}_f32_{}", t.suffix))
}

impl<L: Launcher> KernelDevice<L> {
    pub(super) fn launch_conv_forward(
        &self,
        g: &ConvGeom,
        x: &L::Buf,
        w: &L::Buf,
        b: &L::Buf,
        y: &mut L::Buf,
    ) -> Result<()> {
        let run = || -> Result<()> {
            let p = conv_params(g)?;
            check_len("x", self.len(x), g.x_len())?;
            check_len("w", self.len(w), g.w_len())?;
            check_len("b", self.len(b), g.c_out)?;
            check_len("y", self.len(y), g.y_len())?;
            let (rows, cols) = (g.cout_per_group(), g.n * g.out_h() * g.out_w());
            let kdim = g.cin_per_group() * g.k * g.k;
            let sms = self.launcher.multiprocessors();
            let (t, name) = tile_and_name(
                "conv_forward",
                g.k <= MASKED_TAPS,
                self.conv_tile,
                pick_tile(rows, cols, g.groups, kdim, sms),
            );
            let (xp, wp, bp, yp) = (self.ptr(x), self.ptr(w), self.ptr(b), self.ptr(y));
            self.launch_named(
                &name,
                t.config(rows, cols, g.groups)?,
                &[arg(&p), arg(&xp), arg(&wp), arg(&bp), arg(&yp)],
            )
        };
        run().with_context(|| format!("conv_forward {g:?}"))
    }

    pub(super) fn launch_conv_backward_data(
        &self,
        g: &ConvGeom,
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
                taps <= MASKED_TAPS,
                self.conv_tile,
                pick_tile(rows, cols, z, g.cout_per_group() * taps * taps, sms),
            );
            let (dyp, wp, dxp) = (self.ptr(dy), self.ptr(w), self.ptr(dx));
            self.launch_named(
                &name,
                t.config(rows, cols, z)?,
                &[arg(&p), arg(&dyp), arg(&wp), arg(&dxp)],
            )
        };
        run().with_context(|| format!("conv_backward_data {g:?}"))
    }

    pub(super) fn launch_conv_backward_filter(
        &self,
        g: &ConvGeom,
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
            let (t, chunk, splits) = pick_filter_split(rows, cols, g.groups, kdim, sms);
            let (t, name) = tile_and_name(
                "conv_backward_filter",
                filter_border_fits(g),
                self.conv_tile,
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
                &name,
                t.config(rows, cols, g.groups * splits)?,
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

    /// Launches `cuda/conv.cu`'s kernel `name` (made at run time from the tile).
    fn launch_named(
        &self,
        name: &str,
        cfg: LaunchConfig,
        args: &[*mut std::ffi::c_void],
    ) -> Result<()> {
        let name = conv_kernel_name(name)?;
        self.launch(kernel("conv", name), cfg, args)
    }
}

/// The `'static` kernel name for `name` (kernels are named by static strings).
fn conv_kernel_name(name: &str) -> Result<&'static str> {
    const NAMES: [&str; 12] = [
        "conv_forward_f32_128x128",
        "conv_forward_f32_64x128",
        "conv_forward_f32_48x128",
        "conv_forward_f32_64x128_wide",
        "conv_backward_data_f32_128x128",
        "conv_backward_data_f32_64x128",
        "conv_backward_data_f32_48x128",
        "conv_backward_data_f32_64x128_wide",
        "conv_backward_filter_f32_128x128",
        "conv_backward_filter_f32_64x128",
        "conv_backward_filter_f32_48x128",
        "conv_backward_filter_f32_64x128_wide",
    ];
    NAMES
        .into_iter()
        .find(|n| *n == name)
        .with_context(|| format!("no conv kernel {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_bytes_are_what_conv_cu_asserts() {
        let bytes: Vec<u32> = TILES.iter().map(Tile::smem_bytes).collect();
        assert_eq!(bytes, [68608, 52224, 48128]);
        assert_eq!(WIDE.smem_bytes(), 52224);
    }

    #[test]
    fn tiles_fit_the_papers_layers() {
        // conv1 forward per tower: 48 output channels over 128·55·55 pixels: the 48-row tile.
        assert_eq!(pick_tile(48, 128 * 55 * 55, 1, 363, 132).rows, 48);
        // conv3: 192 channels: two 128-row tiles waste a third; 64-row tiles waste nothing.
        assert_eq!(pick_tile(192, 128 * 13 * 13, 1, 2304, 132).rows, 64);
        // conv2: 128 channels, many pixels: the big tile.
        assert_eq!(pick_tile(128, 128 * 27 * 27, 1, 1200, 132).rows, 128);
    }

    #[test]
    fn filter_splits_cover_the_reduction_and_fill_waves() {
        for (rows, cols, k) in [
            (48, 363, 128 * 55 * 55),
            (128, 1200, 128 * 27 * 27),
            (192, 2304, 128 * 13 * 13),
            (4, 9, 50),
            (2, 3, 1),
        ] {
            let (t, chunk, splits) = pick_filter_split(rows, cols, 1, k, 132);
            assert_eq!(chunk % BK, 0);
            assert!(
                chunk * splits >= k && chunk * (splits - 1) < k.max(1),
                "{rows}x{cols} k {k}"
            );
            assert!((1..=MAX_SPLITS).contains(&splits));
            let blocks = t.blocks(rows, cols, splits);
            println!(
                "{rows}x{cols} k {k}: {} tiles of {}x{}, {splits} splits of {chunk}: {blocks} blocks",
                t.blocks(rows, cols, 1),
                t.rows,
                t.cols
            );
        }
        // conv1's filter gradient has 3 x 1 tiles of 48x128: it must split to fill the device.
        let (t, _, splits) = pick_filter_split(48, 363, 1, 128 * 55 * 55, 132);
        assert!(t.blocks(48, 363, splits) >= 132, "{splits}");
    }

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
