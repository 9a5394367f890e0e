//! The fully connected layers: cuBLAS where the launcher has it, else the tiled SIMT GEMM of
//! `cuda/gemm.cuh` (`cuda/fc.cu`), with the reduction split across blocks when the output has
//! few tiles. The tile constants mirror `cuda/gemm.cuh`.

use super::params::fc_params;
use super::{KernelDevice, arg, check_len, elementwise, kernel, u32_of};
use crate::device::Device;
use crate::device::launch::{LaunchConfig, Launcher, Sgemm};
use crate::ops::fc::FcGeom;
use anyhow::{Context, Result, ensure};

/// Block tile of the shared GEMM loop: rows of C (the M side), columns (N), K per step.
const GEMM_BM: usize = 64;
const GEMM_BN: usize = 128;
const GEMM_BK: usize = 8;
const GEMM_THREADS: u32 = 256;

/// Blocks a launch aims for: two waves on a 132-SM H100/H200. Fixed rather than queried, so a
/// shape always splits the same way on every machine and results stay reproducible.
const TARGET_BLOCKS: usize = 264;
/// Fewest GEMM-K terms a split gets, so that partial sums stay cheap next to the GEMM.
const MIN_SPLIT_K: usize = 256;
const MAX_SPLITS: usize = 64;

/// How to split a reduction of `k` terms over blocks when the output has `tiles` tiles:
/// (terms per split, a multiple of the GEMM step; number of splits).
fn split_k(tiles: usize, k: usize) -> (usize, usize) {
    let want = TARGET_BLOCKS.div_ceil(tiles.max(1));
    let most = k.div_ceil(MIN_SPLIT_K).max(1);
    let splits = want.min(most).clamp(1, MAX_SPLITS);
    let chunk = (k.div_ceil(splits).div_ceil(GEMM_BK) * GEMM_BK).max(GEMM_BK);
    (chunk, k.div_ceil(chunk).max(1))
}

fn gemm_config(n_cols: usize, m_rows: usize, z: usize) -> Result<LaunchConfig> {
    // CUDA caps gridDim.y and gridDim.z at 65535 (x at 2^31 - 1).
    let (rows, zs) = (m_rows.div_ceil(GEMM_BM), z);
    ensure!(
        rows <= 65535 && zs <= 65535,
        "a GEMM grid of {rows} row tiles by {zs} splits exceeds CUDA's 65535 limit on grid y and z"
    );
    Ok(LaunchConfig {
        grid: [
            u32_of(n_cols.div_ceil(GEMM_BN), "column tiles")?,
            u32_of(m_rows.div_ceil(GEMM_BM), "row tiles")?,
            u32_of(z, "grid z")?,
        ],
        block: [GEMM_THREADS, 1, 1],
        shared_bytes: 0,
    })
}

impl<L: Launcher> KernelDevice<L> {
    pub(super) fn launch_fc_forward(
        &self,
        g: &FcGeom,
        x: &L::Buf,
        w: &L::Buf,
        b: &L::Buf,
        y: &mut L::Buf,
    ) -> Result<()> {
        let run = || -> Result<()> {
            let mut p = fc_params(g)?;
            check_len("x", self.len(x), g.n * g.inputs)?;
            check_len("w", self.len(w), g.outputs * g.inputs)?;
            check_len("b", self.len(b), g.outputs)?;
            check_len("y", self.len(y), g.n * g.outputs)?;
            let (xp, wp, bp, yp) = (self.ptr(x), self.ptr(w), self.ptr(b), self.ptr(y));
            let len = g.n * g.outputs;
            // Column-major, y^T [outputs, n] = (w^T)^T · x^T; then the bias, in place.
            let vendor = Sgemm {
                trans_a: true,
                trans_b: false,
                m: g.outputs,
                n: g.n,
                k: g.inputs,
                a: wp,
                lda: g.inputs,
                b: xp,
                ldb: g.inputs,
                c: yp,
                ldc: g.outputs,
            };
            if len > 0 && self.launcher.vendor_sgemm(&vendor)? {
                return self.reduce_splits(len, 1, yp, bp, 1, g.outputs, yp);
            }
            let tiles = g.outputs.div_ceil(GEMM_BM) * g.n.div_ceil(GEMM_BN);
            let (chunk, splits) = split_k(tiles, g.inputs);
            p.k_chunk = chunk as i32;
            let (out, bias) = if splits > 1 {
                (self.workspace(splits * len)?, 0)
            } else {
                (yp, bp)
            };
            let cfg = gemm_config(g.n, g.outputs, splits)?;
            self.launch(
                kernel("fc", "fc_forward_f32"),
                cfg,
                &[arg(&p), arg(&xp), arg(&wp), arg(&bias), arg(&out)],
            )?;
            if splits > 1 {
                // y[s, o] gets bias[o]: o = i % outputs.
                self.reduce_splits(len, splits, out, bp, 1, g.outputs, yp)?;
            }
            Ok(())
        };
        run().with_context(|| format!("fc_forward {g:?}"))
    }

    pub(super) fn launch_fc_backward_data(
        &self,
        g: &FcGeom,
        dy: &L::Buf,
        w: &L::Buf,
        dx: &mut L::Buf,
    ) -> Result<()> {
        let run = || -> Result<()> {
            let mut p = fc_params(g)?;
            check_len("dy", self.len(dy), g.n * g.outputs)?;
            check_len("w", self.len(w), g.outputs * g.inputs)?;
            check_len("dx", self.len(dx), g.n * g.inputs)?;
            let (dyp, wp, dxp) = (self.ptr(dy), self.ptr(w), self.ptr(dx));
            let len = g.n * g.inputs;
            // Column-major, dx^T [inputs, n] = w^T · dy^T.
            let vendor = Sgemm {
                trans_a: false,
                trans_b: false,
                m: g.inputs,
                n: g.n,
                k: g.outputs,
                a: wp,
                lda: g.inputs,
                b: dyp,
                ldb: g.outputs,
                c: dxp,
                ldc: g.inputs,
            };
            if len > 0 && self.launcher.vendor_sgemm(&vendor)? {
                return Ok(());
            }
            let tiles = g.inputs.div_ceil(GEMM_BM) * g.n.div_ceil(GEMM_BN);
            let (chunk, splits) = split_k(tiles, g.outputs);
            p.k_chunk = chunk as i32;
            let out = if splits > 1 {
                self.workspace(splits * len)?
            } else {
                dxp
            };
            let cfg = gemm_config(g.n, g.inputs, splits)?;
            self.launch(
                kernel("fc", "fc_backward_data_f32"),
                cfg,
                &[arg(&p), arg(&dyp), arg(&wp), arg(&out)],
            )?;
            if splits > 1 {
                self.reduce_splits(len, splits, out, 0, 1, 1, dxp)?;
            }
            Ok(())
        };
        run().with_context(|| format!("fc_backward_data {g:?}"))
    }

    pub(super) fn launch_fc_backward_filter(
        &self,
        g: &FcGeom,
        x: &L::Buf,
        dy: &L::Buf,
        dw: &mut L::Buf,
        db: &mut L::Buf,
    ) -> Result<()> {
        let run = || -> Result<()> {
            let mut p = fc_params(g)?;
            check_len("x", self.len(x), g.n * g.inputs)?;
            check_len("dy", self.len(dy), g.n * g.outputs)?;
            check_len("dw", self.len(dw), g.outputs * g.inputs)?;
            check_len("db", self.len(db), g.outputs)?;
            let (xp, dyp, dwp, dbp) = (self.ptr(x), self.ptr(dy), self.ptr(dw), self.ptr(db));
            let len = g.outputs * g.inputs;
            // Column-major, dw^T [inputs, outputs] = x^T · (dy^T)^T.
            let vendor = Sgemm {
                trans_a: false,
                trans_b: true,
                m: g.inputs,
                n: g.outputs,
                k: g.n,
                a: xp,
                lda: g.inputs,
                b: dyp,
                ldb: g.outputs,
                c: dwp,
                ldc: g.inputs,
            };
            if len == 0 || !self.launcher.vendor_sgemm(&vendor)? {
                let tiles = g.outputs.div_ceil(GEMM_BM) * g.inputs.div_ceil(GEMM_BN);
                let (chunk, splits) = split_k(tiles, g.n);
                p.k_chunk = chunk as i32;
                let out = if splits > 1 {
                    self.workspace(splits * len)?
                } else {
                    dwp
                };
                let cfg = gemm_config(g.inputs, g.outputs, splits)?;
                self.launch(
                    kernel("fc", "fc_backward_filter_f32"),
                    cfg,
                    &[arg(&p), arg(&xp), arg(&dyp), arg(&out)],
                )?;
                if splits > 1 {
                    self.reduce_splits(len, splits, out, 0, 1, 1, dwp)?;
                }
            }
            // The bias gradient stays on our kernel: a fixed-order sum, the same on every device.
            self.launch(
                kernel("fc", "fc_backward_bias_f32"),
                elementwise(g.outputs)?,
                &[arg(&p), arg(&dyp), arg(&dbp)],
            )
        };
        run().with_context(|| format!("fc_backward_filter {g:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn split_k_covers_the_reduction_in_whole_steps() {
        for (tiles, k) in [
            (1, 1),
            (3, 3025),
            (3, 387_200),
            (32, 9216),
            (2304, 128),
            (1, 0),
            (5, 257),
        ] {
            let (chunk, splits) = split_k(tiles, k);
            assert_eq!(chunk % GEMM_BK, 0, "chunk {chunk} for {tiles} tiles, k {k}");
            assert!(splits >= 1 && splits <= MAX_SPLITS);
            assert!(
                chunk * splits >= k,
                "splits must cover k: {chunk} x {splits} < {k}"
            );
            assert!(k == 0 || chunk * (splits - 1) < k, "no split may be empty");
        }
        // Small outputs with long reductions split; big outputs do not.
        assert!(split_k(3, 387_200).1 > 1);
        assert_eq!(split_k(2304, 128).1, 1);
    }
}
