//! The fully connected layers: cuBLAS where the launcher has it, else our kernels (`cuda/fc.cu`)
//! on the main loop and tiles of `igemm`, with the reduction split across blocks when the output
//! has too few tiles to fill the device.

use super::igemm::{Tile, by_suffix, kernel_name, pick_split, pick_split_among};
use super::params::fc_params;
use super::{KernelDevice, arg, check_len, elementwise, kernel};
use crate::device::Device;
use crate::device::launch::{Launcher, Sgemm};
use crate::ops::fc::FcGeom;
use crate::ops::precision::Precision;
use anyhow::{Context, Result};

/// The tile and split of a pass whose output is `rows x cols` over `k` terms: the best pair, or
/// the best split on the forced tile.
fn plan(
    forced: Option<&str>,
    rows: usize,
    cols: usize,
    k: usize,
    sms: usize,
) -> (Tile, usize, usize) {
    match forced {
        Some(f) => pick_split_among(
            &[by_suffix(f.trim_end_matches("_wide"))],
            rows,
            cols,
            1,
            k,
            sms,
        ),
        None => pick_split(rows, cols, 1, k, sms),
    }
}

impl<L: Launcher> KernelDevice<L> {
    pub(super) fn launch_fc_forward(
        &self,
        g: &FcGeom,
        prec: Precision,
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
                precision: prec,
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
            let sms = self.launcher.multiprocessors();
            let (t, chunk, splits) = plan(self.gemm_tile, g.outputs, g.n, g.inputs, sms);
            p.k_chunk = chunk as i32;
            let (out, bias) = if splits > 1 {
                (self.workspace(splits * len)?, 0)
            } else {
                (yp, bp)
            };
            let cfg = t.config(prec, g.outputs, g.n, splits)?;
            self.launch(
                kernel("fc", kernel_name("fc_forward", prec, t)),
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
        prec: Precision,
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
                precision: prec,
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
            let sms = self.launcher.multiprocessors();
            let (t, chunk, splits) = plan(self.gemm_tile, g.inputs, g.n, g.outputs, sms);
            p.k_chunk = chunk as i32;
            let out = if splits > 1 {
                self.workspace(splits * len)?
            } else {
                dxp
            };
            let cfg = t.config(prec, g.inputs, g.n, splits)?;
            self.launch(
                kernel("fc", kernel_name("fc_backward_data", prec, t)),
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
        prec: Precision,
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
                precision: prec,
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
                let sms = self.launcher.multiprocessors();
                let (t, chunk, splits) = plan(self.gemm_tile, g.outputs, g.inputs, g.n, sms);
                p.k_chunk = chunk as i32;
                let out = if splits > 1 {
                    self.workspace(splits * len)?
                } else {
                    dwp
                };
                let cfg = t.config(prec, g.outputs, g.inputs, splits)?;
                self.launch(
                    kernel("fc", kernel_name("fc_backward_filter", prec, t)),
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
