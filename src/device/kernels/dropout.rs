//! Dropout (`cuda/dropout.cu`): masks regenerated from Philox, never stored.

use super::{KernelDevice, THREADS, arg, check_len, elementwise, i32_of, kernel, u32_of};
use crate::device::Device;
use crate::device::launch::{LaunchConfig, Launcher};
use crate::ops::dropout::DropoutGeom;
use anyhow::{Context, Result, ensure};

/// Dropout: one thread per Philox block (four units) a sample's units can touch, the samples
/// along grid y (`cuda/dropout.cu`).
fn per_philox_block(g: &DropoutGeom) -> Result<LaunchConfig> {
    let slots = g.units / 4 + 2;
    ensure!(
        g.n <= 65535,
        "dropout over {} samples exceeds CUDA's grid y limit",
        g.n
    );
    Ok(LaunchConfig {
        grid: [
            u32_of(slots.div_ceil(THREADS as usize), "blocks")?,
            g.n as u32,
            1,
        ],
        block: [THREADS, 1, 1],
        shared_bytes: 0,
    })
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct DropoutParams {
    pub(super) seed: u64,
    pub(super) stream: u64,
    pub(super) n: i32,
    pub(super) units: i32,
    pub(super) units_total: i32,
    pub(super) unit_offset: i32,
    pub(super) p: f32,
    pub(super) first_sample: i32,
}

pub(super) fn dropout_params(g: &DropoutGeom) -> Result<DropoutParams> {
    ensure!(
        g.unit_offset + g.units <= g.units_total,
        "units {}..{} lie outside the layer's {}",
        g.unit_offset,
        g.unit_offset + g.units,
        g.units_total
    );
    ensure!(
        (0.0..1.0).contains(&g.p),
        "drop probability {} is not in [0, 1)",
        g.p
    );
    i32_of(g.len(), "length")?;
    // The kernel adds the two in an int.
    i32_of(g.first_sample + g.n, "first_sample + n")?;
    Ok(DropoutParams {
        seed: g.seed,
        stream: g.stream,
        n: g.n as i32,
        units: g.units as i32,
        units_total: i32_of(g.units_total, "units_total")?,
        unit_offset: g.unit_offset as i32,
        p: g.p,
        first_sample: i32_of(g.first_sample, "first_sample")?,
    })
}

impl<L: Launcher> KernelDevice<L> {
    pub(super) fn launch_dropout_forward_train(
        &self,
        g: &DropoutGeom,
        x: &L::Buf,
        y: &mut L::Buf,
    ) -> Result<()> {
        let run = || -> Result<()> {
            let p = dropout_params(g)?;
            check_len("x", self.len(x), g.len())?;
            check_len("y", self.len(y), g.len())?;
            if g.is_empty() {
                return Ok(());
            }
            let (xp, yp) = (self.ptr(x), self.ptr(y));
            self.launch(
                kernel("dropout", "dropout_forward_train_f32"),
                per_philox_block(g)?,
                &[arg(&p), arg(&xp), arg(&yp)],
            )
        };
        run().with_context(|| format!("dropout_forward_train {g:?}"))
    }

    pub(super) fn launch_dropout_backward(
        &self,
        g: &DropoutGeom,
        dy: &L::Buf,
        dx: &mut L::Buf,
    ) -> Result<()> {
        let run = || -> Result<()> {
            let p = dropout_params(g)?;
            check_len("dy", self.len(dy), g.len())?;
            check_len("dx", self.len(dx), g.len())?;
            if g.is_empty() {
                return Ok(());
            }
            let (dyp, dxp) = (self.ptr(dy), self.ptr(dx));
            self.launch(
                kernel("dropout", "dropout_backward_f32"),
                per_philox_block(g)?,
                &[arg(&p), arg(&dyp), arg(&dxp)],
            )
        };
        run().with_context(|| format!("dropout_backward {g:?}"))
    }

    pub(super) fn launch_dropout_forward_test(
        &self,
        p: f32,
        x: &L::Buf,
        y: &mut L::Buf,
    ) -> Result<()> {
        let n = self.len(x);
        let run = || -> Result<()> {
            ensure!(
                (0.0..1.0).contains(&p),
                "drop probability {p} is not in [0, 1)"
            );
            check_len("y", self.len(y), n)?;
            if n == 0 {
                return Ok(());
            }
            // Rounded once from f64, as `ops::dropout::forward_test` does.
            let scale = (1.0 - p as f64) as f32;
            let (n32, xp, yp) = (i32_of(n, "length")?, self.ptr(x), self.ptr(y));
            self.launch(
                kernel("dropout", "dropout_forward_test_f32"),
                elementwise(n)?,
                &[arg(&n32), arg(&scale), arg(&xp), arg(&yp)],
            )
        };
        run().with_context(|| format!("dropout_forward_test (p {p}, {n} elements)"))
    }
}
