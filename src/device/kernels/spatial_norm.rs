//! Local contrast normalisation over a spatial window (`cuda/spatial_norm.cu`).

use super::{KernelDevice, arg, check_len, elementwise, i32_of, kernel};
use crate::device::Device;
use crate::device::launch::Launcher;
use crate::ops::spatial_norm::SpatialNormGeom;
use anyhow::{Context, Result, ensure};

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct SpatialNormParams {
    pub(super) maps: i32,
    pub(super) h: i32,
    pub(super) w: i32,
    pub(super) half: i32,
    pub(super) k: f32,
    pub(super) alpha: f32,
    pub(super) beta: f32,
    pub(super) two_alpha_beta: f32,
}

pub(super) fn spatial_norm_params(g: &SpatialNormGeom) -> Result<SpatialNormParams> {
    ensure!(g.size % 2 == 1, "window size {} is not odd", g.size);
    i32_of(g.len(), "length")?;
    Ok(SpatialNormParams {
        maps: (g.n * g.c) as i32,
        h: g.h as i32,
        w: g.w as i32,
        half: (g.size / 2) as i32,
        k: g.k,
        alpha: g.effective_alpha() as f32,
        beta: g.beta,
        two_alpha_beta: (2.0 * g.effective_alpha() * g.beta as f64) as f32,
    })
}

impl<L: Launcher> KernelDevice<L> {
    pub(super) fn launch_spatial_norm_forward(
        &self,
        g: &SpatialNormGeom,
        x: &L::Buf,
        y: &mut L::Buf,
    ) -> Result<()> {
        let run = || -> Result<()> {
            let p = spatial_norm_params(g)?;
            check_len("x", self.len(x), g.len())?;
            check_len("y", self.len(y), g.len())?;
            if g.is_empty() {
                return Ok(());
            }
            let (xp, yp) = (self.ptr(x), self.ptr(y));
            self.launch(
                kernel("spatial_norm", "spatial_norm_forward_f32"),
                elementwise(g.len())?,
                &[arg(&p), arg(&xp), arg(&yp)],
            )
        };
        run().with_context(|| format!("spatial_norm_forward {g:?}"))
    }

    pub(super) fn launch_spatial_norm_backward(
        &self,
        g: &SpatialNormGeom,
        x: &L::Buf,
        y: &L::Buf,
        dy: &L::Buf,
        dx: &mut L::Buf,
    ) -> Result<()> {
        let run = || -> Result<()> {
            let p = spatial_norm_params(g)?;
            for (what, b) in [("x", x), ("y", y), ("dy", dy)] {
                check_len(what, self.len(b), g.len())?;
            }
            check_len("dx", self.len(dx), g.len())?;
            if g.is_empty() {
                return Ok(());
            }
            let (xp, yp, dyp, dxp) = (self.ptr(x), self.ptr(y), self.ptr(dy), self.ptr(dx));
            let scale = self.workspace(g.len())?;
            let cfg = elementwise(g.len())?;
            self.launch(
                kernel("spatial_norm", "spatial_norm_scale_f32"),
                cfg,
                &[arg(&p), arg(&xp), arg(&scale)],
            )?;
            self.launch(
                kernel("spatial_norm", "spatial_norm_backward_f32"),
                cfg,
                &[
                    arg(&p),
                    arg(&xp),
                    arg(&yp),
                    arg(&dyp),
                    arg(&scale),
                    arg(&dxp),
                ],
            )
        };
        run().with_context(|| format!("spatial_norm_backward {g:?}"))
    }
}
