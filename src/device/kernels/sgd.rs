//! The SGD step with momentum and weight decay (`cuda/sgd.cu`).

use super::{KernelDevice, arg, check_len, elementwise, i32_of, kernel};
use crate::device::Device;
use crate::device::launch::Launcher;
use crate::ops::sgd::SgdStep;
use anyhow::{Context, Result};

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct SgdParams {
    pub(super) n: i32,
    pub(super) momentum: f32,
    pub(super) lr: f32,
    pub(super) decay: f32,
}

impl<L: Launcher> KernelDevice<L> {
    pub(super) fn launch_sgd_update(
        &self,
        step: &SgdStep,
        w: &mut L::Buf,
        v: &mut L::Buf,
        grad: &L::Buf,
    ) -> Result<()> {
        let n = self.len(w);
        let run = || -> Result<()> {
            check_len("v", self.len(v), n)?;
            check_len("grad", self.len(grad), n)?;
            if n == 0 {
                return Ok(());
            }
            // The same constants `ops::sgd::update_naive` uses, decay rounded once from f64.
            let p = SgdParams {
                n: i32_of(n, "length")?,
                momentum: step.momentum,
                lr: step.lr,
                decay: (step.weight_decay as f64 * step.lr as f64) as f32,
            };
            let (wp, vp, gp) = (self.ptr(w), self.ptr(v), self.ptr(grad));
            self.launch(
                kernel("sgd", "sgd_update_f32"),
                elementwise(n)?,
                &[arg(&p), arg(&wp), arg(&vp), arg(&gp)],
            )
        };
        run().with_context(|| format!("sgd_update {step:?} over {n} elements"))
    }
}
