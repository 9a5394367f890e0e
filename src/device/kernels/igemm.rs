//! The block tiles of `cuda/igemm.cuh`'s main loop, shared by the convolution and fc launches:
//! their shared memory and residency, and the choice of tile and reduction split for a GEMM.
//!
//! A pass is a GEMM of `rows x cols` outputs (times `z` independent ones: groups, stride phases
//! or reduction splits) over `k` terms. A tile is chosen to minimise the estimated time: whole
//! waves of the device's SMs, each costing a resident set of blocks' multiply-adds at the tile's
//! issue rate; wasted rows count (a 64-row tile over 48 channels wastes a quarter). A split
//! reduction is chosen with it, so that its blocks fill whole waves too.

use super::u32_of;
use crate::device::launch::LaunchConfig;
use crate::ops::precision::Precision;
use anyhow::{Context, Result, ensure};
use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

/// A block tile of `cuda/igemm.cuh` (`IgemmTile<rows, cols, _>`), as `cuda/conv.cu` builds it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Tile {
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) threads: u32,
    /// Kernel name suffix.
    pub(super) suffix: &'static str,
    /// Share of the hot loop's instructions that are FFMA, from the sm_90 SASS
    /// (scripts/sass-guard.sh): what the tile can issue at best.
    pub(super) issue_share: f64,
}

/// K per main-loop step and shared-memory stages (cuda/igemm.cuh).
pub(super) const BK: usize = 32;
const STAGES: usize = 2;

pub(super) const TILES: [Tile; 3] = [
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
pub(super) const WIDE: Tile = Tile {
    rows: 64,
    cols: 128,
    threads: 128,
    suffix: "64x128_wide",
    issue_share: 0.79,
};

impl Tile {
    /// `IgemmTile::SMEM_BYTES` at precision `prec`: the stages of both operands' tiles (SIMT:
    /// K-major rows padded by 4 floats; tensor cores: rows of K padded by 4 floats for TF32, 8
    /// for bf16) and two K tables of 16-byte entries. `cuda/conv.cu` static_asserts the same.
    pub(super) fn smem_bytes(&self, prec: Precision) -> u32 {
        let stage = match prec {
            Precision::Fp32 => BK * (self.rows + 4 + self.cols + 4),
            Precision::Tf32 => (self.rows + self.cols) * (BK + 4),
            Precision::Bf16 => (self.rows + self.cols) * (BK + 8),
        };
        (STAGES * stage * 4 + 2 * BK * 16) as u32
    }

    /// Blocks resident on one SM: at most 128 registers a thread (the kernels' launch bounds),
    /// 227 KiB of shared memory (1 KiB of it reserved per block), 2048 threads.
    pub(super) fn blocks_per_sm(&self) -> usize {
        let by_regs = 65536 / (128 * self.threads as usize);
        let by_smem = (228 * 1024) / (self.smem_bytes(Precision::Fp32) as usize + 1024);
        let by_threads = 2048 / self.threads as usize;
        by_regs.min(by_smem).min(by_threads).max(1)
    }

    /// Blocks of a `rows x cols` GEMM, `z` of them.
    pub(super) fn blocks(&self, rows: usize, cols: usize, z: usize) -> usize {
        rows.div_ceil(self.rows) * cols.div_ceil(self.cols) * z
    }

    /// Estimated time (arbitrary units) of `blocks` blocks each of `k` GEMM-K terms on `sms`
    /// SMs: the waves, each as long as a resident set of blocks takes at the tile's issue rate.
    pub(super) fn cost(&self, blocks: usize, k: usize, sms: usize) -> f64 {
        let slots = sms * self.blocks_per_sm();
        let waves = blocks.div_ceil(slots);
        waves as f64 * (self.blocks_per_sm() * self.rows * self.cols * k.div_ceil(BK) * BK) as f64
            / self.issue_share
    }

    pub(super) fn config(
        &self,
        prec: Precision,
        rows: usize,
        cols: usize,
        z: usize,
    ) -> Result<LaunchConfig> {
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
            shared_bytes: self.smem_bytes(prec),
        })
    }
}

/// The fastest tile by [`Tile::cost`] for a GEMM of `rows x cols` (times `z`) over `k` terms.
pub(super) fn pick_tile(rows: usize, cols: usize, z: usize, k: usize, sms: usize) -> Tile {
    let cost = |t: &Tile| t.cost(t.blocks(rows, cols, z), k, sms);
    TILES
        .into_iter()
        .min_by(|a, b| cost(a).total_cmp(&cost(b)))
        .expect("tiles exist")
}

/// Most splits of a reduction, and fewest terms each keeps (so that the
/// partial sums stay cheap next to the GEMM).
const MAX_SPLITS: usize = 64;
const MIN_SPLIT_K: usize = 1024;

/// The tile and reduction split of a GEMM whose `k` terms may be split across blocks: (tile,
/// terms per split, a multiple of BK; number of splits), chosen together so that the blocks
/// fill whole waves.
pub(super) fn pick_split(
    rows: usize,
    cols: usize,
    groups: usize,
    k: usize,
    sms: usize,
) -> (Tile, usize, usize) {
    pick_split_among(&TILES, rows, cols, groups, k, sms)
}

/// [`pick_split`] over the tiles `tiles` only.
pub(super) fn pick_split_among(
    tiles: &[Tile],
    rows: usize,
    cols: usize,
    groups: usize,
    k: usize,
    sms: usize,
) -> (Tile, usize, usize) {
    let most = k.div_ceil(MIN_SPLIT_K).clamp(1, MAX_SPLITS);
    let mut best: Option<(f64, Tile, usize, usize)> = None;
    for &t in tiles {
        for want in 1..=most {
            let chunk = (k.div_ceil(want).div_ceil(BK) * BK).max(BK);
            let splits = k.div_ceil(chunk).max(1);
            let c = t.cost(t.blocks(rows, cols, groups * splits), chunk, sms);
            // Ties go to fewer splits (less to reduce), then to the earlier (larger) tile.
            if best.as_ref().is_none_or(|b| c < b.0 * (1.0 - 1e-9)) {
                best = Some((c, t, chunk, splits));
            }
        }
    }
    let (_, t, chunk, splits) = best.expect("at least one candidate");
    (t, chunk, splits)
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

/// The kernel `<pass>_<f32|tf32|bf16>_<tile>` (`cuda/conv.cu`, `cuda/fc.cu`) as the `'static`
/// name launches take: each distinct name is made once and kept.
pub(super) fn kernel_name(pass: &str, prec: Precision, t: Tile) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let prec = match prec {
        Precision::Fp32 => "f32",
        p => p.name(),
    };
    let name = format!("{pass}_{prec}_{}", t.suffix);
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    match names.get(name.as_str()) {
        Some(n) => n,
        None => {
            let leaked: &'static str = Box::leak(name.into_boxed_str());
            names.insert(leaked);
            leaked
        }
    }
}

pub(super) fn by_suffix(suffix: &str) -> Tile {
    TILES
        .into_iter()
        .chain([WIDE])
        .find(|t| t.suffix == suffix)
        .expect("a suffix tile_named accepted")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_bytes_are_what_conv_cu_asserts() {
        let bytes = |p| TILES.iter().map(|t| t.smem_bytes(p)).collect::<Vec<u32>>();
        assert_eq!(bytes(Precision::Fp32), [68608, 52224, 48128]);
        assert_eq!(bytes(Precision::Tf32), [74752, 56320, 51712]);
        assert_eq!(bytes(Precision::Bf16), [82944, 62464, 57344]);
        assert_eq!(WIDE.smem_bytes(Precision::Fp32), 52224);
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
    fn splits_cover_the_reduction_and_fill_waves() {
        for (rows, cols, k) in [
            (48, 363, 128 * 55 * 55),
            (128, 1200, 128 * 27 * 27),
            (192, 2304, 128 * 13 * 13),
            (4, 9, 50),
            (2, 3, 1),
        ] {
            let (t, chunk, splits) = pick_split(rows, cols, 1, k, 132);
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
        let (t, _, splits) = pick_split(48, 363, 1, 128 * 55 * 55, 132);
        assert!(t.blocks(48, 363, splits) >= 132, "{splits}");
    }
}
