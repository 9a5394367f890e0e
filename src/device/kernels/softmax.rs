//! Softmax with cross-entropy, and top-k (`cuda/softmax.cu`).

use super::{KernelDevice, THREADS, arg, check_len, i32_of, kernel, u32_of};
use crate::device::Device;
use crate::device::launch::{LaunchConfig, Launcher};
use anyhow::{Context, Result, ensure};

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct SoftmaxParams {
    pub(super) n: i32,
    pub(super) classes: i32,
    pub(super) inv_n: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct TopKParams {
    pub(super) n: i32,
    pub(super) classes: i32,
    pub(super) k: i32,
}

impl<L: Launcher> KernelDevice<L> {
    pub(super) fn launch_softmax_xent(
        &self,
        n: usize,
        classes: usize,
        logits: &L::Buf,
        labels: &L::Buf,
        probs: &mut L::Buf,
        dlogits: &mut L::Buf,
        losses: &mut L::Buf,
    ) -> Result<()> {
        let run = || -> Result<()> {
            ensure!(n > 0 && classes > 0, "empty batch or no classes");
            check_len("logits", self.len(logits), n * classes)?;
            check_len("probs", self.len(probs), n * classes)?;
            check_len("dlogits", self.len(dlogits), n * classes)?;
            check_len("labels", self.len(labels), n)?;
            check_len("losses", self.len(losses), n)?;
            ensure!(
                classes < 1 << 24,
                "{classes} classes: labels travel as exact floats below 2^24"
            );
            let p = SoftmaxParams {
                n: i32_of(n, "n")?,
                classes: i32_of(classes, "classes")?,
                inv_n: (1.0 / n as f64) as f32,
            };
            i32_of(n * classes, "logits length")?;
            let (zp, lp, pp, dp, lossp) = (
                self.ptr(logits),
                self.ptr(labels),
                self.ptr(probs),
                self.ptr(dlogits),
                self.ptr(losses),
            );
            let cfg = LaunchConfig {
                grid: [u32_of(n, "rows")?, 1, 1],
                block: [THREADS, 1, 1],
                shared_bytes: 0,
            };
            self.launch(
                kernel("softmax", "softmax_xent_f32"),
                cfg,
                &[arg(&p), arg(&zp), arg(&lp), arg(&pp), arg(&dp), arg(&lossp)],
            )
        };
        run().with_context(|| format!("softmax_xent (n {n}, classes {classes})"))
    }

    /// The `k` highest-scoring classes of each of the `n` rows of `scores` (`[n, classes]`),
    /// best first, ties to the lower index, as `ops::softmax::top_k`.
    pub fn top_k(
        &self,
        n: usize,
        classes: usize,
        k: usize,
        scores: &L::Buf,
    ) -> Result<Vec<Vec<usize>>> {
        let run = || -> Result<Vec<Vec<usize>>> {
            check_len("scores", self.launcher.len(scores), n * classes)?;
            ensure!(k > 0 && k <= classes, "k must be in 1..={classes}");
            if n == 0 {
                return Ok(vec![]);
            }
            let p = TopKParams {
                n: i32_of(n, "n")?,
                classes: i32_of(classes, "classes")?,
                k: k as i32,
            };
            let out = self.launcher.alloc(n * k)?;
            let (s, o) = (self.ptr(scores), self.ptr(&out));
            let cfg = LaunchConfig {
                grid: [u32_of(n, "rows")?, 1, 1],
                block: [THREADS, 1, 1],
                shared_bytes: 0,
            };
            self.launch(
                kernel("softmax", "top_k_f32"),
                cfg,
                &[arg(&p), arg(&s), arg(&o)],
            )?;
            let idx = self.launcher.download(&out)?;
            Ok(idx
                .chunks(k)
                .map(|r| r.iter().map(|&i| i as usize).collect())
                .collect())
        };
        run().with_context(|| format!("top_k (n {n}, classes {classes}, k {k})"))
    }
}
