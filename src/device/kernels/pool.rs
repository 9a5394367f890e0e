//! Overlapping max pooling (`cuda/pool.cu`).

use super::params::fast_div;
use super::{KernelDevice, arg, check_len, i32_of, kernel, u32_of};
use crate::device::Device;
use crate::device::launch::{LaunchConfig, Launcher};
use crate::ops::pool::PoolGeom;
use anyhow::{Context, Result, ensure};

/// One thread per pixel of a `width x height` map, 32 x 8 per block, the maps along grid z
/// (kernels loop over maps past CUDA's 65535 limit on it).
fn per_map_pixel(width: usize, height: usize, maps: usize) -> Result<LaunchConfig> {
    Ok(LaunchConfig {
        grid: [
            u32_of(width.div_ceil(32), "column blocks")?,
            u32_of(height.div_ceil(8), "row blocks")?,
            maps.clamp(1, 65535) as u32,
        ],
        block: [32, 8, 1],
        shared_bytes: 0,
    })
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct PoolParams {
    pub(super) maps: i32,
    pub(super) h: i32,
    pub(super) w: i32,
    pub(super) out_h: i32,
    pub(super) out_w: i32,
    pub(super) size: i32,
    pub(super) stride: i32,
    pub(super) stride_m: u32,
    pub(super) stride_l: u32,
}

pub(super) fn pool_params(g: &PoolGeom) -> Result<PoolParams> {
    ensure!(
        g.size > 0 && g.stride > 0 && g.size <= g.h && g.size <= g.w,
        "a {}x{} window does not fit the {}x{} input (stride {})",
        g.size,
        g.size,
        g.h,
        g.w,
        g.stride
    );
    i32_of(g.x_len(), "input length")?;
    Ok(PoolParams {
        maps: (g.n * g.c) as i32,
        h: g.h as i32,
        w: g.w as i32,
        out_h: g.out_h() as i32,
        out_w: g.out_w() as i32,
        size: g.size as i32,
        stride: g.stride as i32,
        stride_m: fast_div(g.stride).0,
        stride_l: fast_div(g.stride).1,
    })
}

impl<L: Launcher> KernelDevice<L> {
    pub(super) fn launch_max_pool_forward(
        &self,
        g: &PoolGeom,
        x: &L::Buf,
        y: &mut L::Buf,
        argmax: &mut L::Buf,
    ) -> Result<()> {
        let run = || -> Result<()> {
            let p = pool_params(g)?;
            check_len("x", self.len(x), g.x_len())?;
            check_len("y", self.len(y), g.y_len())?;
            check_len("argmax", self.len(argmax), g.y_len())?;
            if g.y_len() == 0 {
                return Ok(());
            }
            let (xp, yp, ap) = (self.ptr(x), self.ptr(y), self.ptr(argmax));
            self.launch(
                kernel("pool", "max_pool_forward_f32"),
                per_map_pixel(g.out_w(), g.out_h(), g.n * g.c)?,
                &[arg(&p), arg(&xp), arg(&yp), arg(&ap)],
            )
        };
        run().with_context(|| format!("max_pool_forward {g:?}"))
    }

    pub(super) fn launch_max_pool_backward(
        &self,
        g: &PoolGeom,
        argmax: &L::Buf,
        dy: &L::Buf,
        dx: &mut L::Buf,
    ) -> Result<()> {
        let run = || -> Result<()> {
            let p = pool_params(g)?;
            check_len("argmax", self.len(argmax), g.y_len())?;
            check_len("dy", self.len(dy), g.y_len())?;
            check_len("dx", self.len(dx), g.x_len())?;
            if g.x_len() == 0 {
                return Ok(());
            }
            let (ap, dyp, dxp) = (self.ptr(argmax), self.ptr(dy), self.ptr(dx));
            self.launch(
                kernel("pool", "max_pool_backward_f32"),
                per_map_pixel(g.w, g.h, g.n * g.c)?,
                &[arg(&p), arg(&ap), arg(&dyp), arg(&dxp)],
            )
        };
        run().with_context(|| format!("max_pool_backward {g:?}"))
    }
}
