//! Local response normalisation across channels (`cuda/lrn.cu`).

use super::{KernelDevice, arg, check_len, elementwise, i32_of, kernel};
use crate::device::Device;
use crate::device::launch::Launcher;
use crate::ops::lrn::LrnGeom;
use anyhow::{Context, Result, ensure};

/// Threads of an LRN launch: one per pixel column for windows of 3 to 9 channels (which
/// `cuda/lrn.cu` walks in registers), else one per element (`lrn_by_column` there).
fn lrn_threads(g: &LrnGeom) -> usize {
    if (1..=4).contains(&(g.size / 2)) {
        g.n * g.h * g.w
    } else {
        g.len()
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct LrnParams {
    pub(super) n: i32,
    pub(super) c: i32,
    pub(super) hw: i32,
    pub(super) group_c: i32,
    pub(super) half: i32,
    pub(super) k: f32,
    pub(super) alpha: f32,
    pub(super) beta: f32,
    pub(super) two_alpha_beta: f32,
}

pub(super) fn lrn_params(g: &LrnGeom) -> Result<LrnParams> {
    ensure!(
        g.groups > 0 && g.c % g.groups == 0,
        "{} channels do not split into {} groups",
        g.c,
        g.groups
    );
    ensure!(g.size % 2 == 1, "window size {} is not odd", g.size);
    i32_of(g.len(), "length")?;
    Ok(LrnParams {
        n: g.n as i32,
        c: g.c as i32,
        hw: (g.h * g.w) as i32,
        group_c: (g.c / g.groups) as i32,
        half: (g.size / 2) as i32,
        k: g.k,
        alpha: g.effective_alpha() as f32,
        beta: g.beta,
        two_alpha_beta: (2.0 * g.effective_alpha() * g.beta as f64) as f32,
    })
}

impl<L: Launcher> KernelDevice<L> {
    pub(super) fn launch_lrn_forward(&self, g: &LrnGeom, x: &L::Buf, y: &mut L::Buf) -> Result<()> {
        let run = || -> Result<()> {
            let p = lrn_params(g)?;
            check_len("x", self.len(x), g.len())?;
            check_len("y", self.len(y), g.len())?;
            if g.is_empty() {
                return Ok(());
            }
            let (xp, yp) = (self.ptr(x), self.ptr(y));
            self.launch(
                kernel("lrn", "lrn_forward_f32"),
                elementwise(lrn_threads(g))?,
                &[arg(&p), arg(&xp), arg(&yp)],
            )
        };
        run().with_context(|| format!("lrn_forward {g:?}"))
    }

    pub(super) fn launch_lrn_backward(
        &self,
        g: &LrnGeom,
        x: &L::Buf,
        y: &L::Buf,
        dy: &L::Buf,
        dx: &mut L::Buf,
    ) -> Result<()> {
        let run = || -> Result<()> {
            let p = lrn_params(g)?;
            for (what, b) in [("x", x), ("y", y), ("dy", dy)] {
                check_len(what, self.len(b), g.len())?;
            }
            check_len("dx", self.len(dx), g.len())?;
            if g.is_empty() {
                return Ok(());
            }
            let (xp, yp, dyp, dxp) = (self.ptr(x), self.ptr(y), self.ptr(dy), self.ptr(dx));
            self.launch(
                kernel("lrn", "lrn_backward_f32"),
                elementwise(lrn_threads(g))?,
                &[arg(&p), arg(&xp), arg(&yp), arg(&dyp), arg(&dxp)],
            )
        };
        run().with_context(|| format!("lrn_backward {g:?}"))
    }
}
