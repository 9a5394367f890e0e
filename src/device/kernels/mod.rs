//! `KernelDevice`: the `Device` whose every op is a launch of the `cuda/*.cu` kernels through a
//! `Launcher` — cudarc on a GPU, the host executor on the CPU. Launch configurations, argument
//! order, split decisions and workspace sizes live here once, so both run the same code.
//!
//! One file per `cuda/<op>.cu`, holding that op's launches and the `#[repr(C)]` mirrors of its
//! parameter structs (`cuda/params.cuh`): `conv` (the implicit-GEMM convolution passes) and
//! `fc` on the tiles of `igemm`, `activation`, `lrn`, `spatial_norm`, `pool`, `dropout`,
//! `softmax` (with top-k), `sgd`, `elementwise`, `reduce`; `params` keeps conv's and fc's
//! mirrors. Here: the device, its workspace, the launch helpers, and the `Device` methods, each
//! handing over to its op's file.

mod activation;
mod conv;
mod dropout;
mod elementwise;
mod fc;
mod igemm;
mod lrn;
mod params;
mod pool;
mod reduce;
mod sgd;
mod softmax;
mod spatial_norm;

use super::launch::{Kernel, LaunchConfig, Launcher};
use super::{Block, Device};
use crate::ops::precision::Precision;
use crate::ops::{
    conv::ConvGeom, dropout::DropoutGeom, fc::FcGeom, lrn::LrnGeom, pool::PoolGeom, sgd::SgdStep,
    spatial_norm::SpatialNormGeom,
};
use anyhow::{Context, Result, ensure};
use std::ffi::c_void;
use std::sync::Mutex;

/// Threads per block of the elementwise kernels, the bias reduction and softmax/top-k.
const THREADS: u32 = 256;

// ---- helpers ---------------------------------------------------------------------------------

/// A kernel argument: the launcher reads the value behind the pointer during `launch`.
fn arg<T>(v: &T) -> *mut c_void {
    v as *const T as *mut c_void
}

fn i32_of(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v)
        .with_context(|| format!("{what} = {v} does not fit the kernels' 32-bit indices"))
}

fn u32_of(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).with_context(|| format!("{what} = {v} exceeds a grid dimension"))
}

fn check_len(what: impl std::fmt::Display, got: usize, want: usize) -> Result<()> {
    ensure!(got == want, "{what} holds {got} elements, expected {want}");
    Ok(())
}

fn kernel(module: &'static str, name: &'static str) -> Kernel {
    Kernel { module, name }
}

/// One thread per element, 256 per block.
fn elementwise(n: usize) -> Result<LaunchConfig> {
    Ok(LaunchConfig {
        grid: [u32_of(n.div_ceil(THREADS as usize), "blocks")?, 1, 1],
        block: [THREADS, 1, 1],
        shared_bytes: 0,
    })
}

// ---- the device ------------------------------------------------------------------------------

/// A `Device` that runs every op as `cuda/*.cu` kernels launched through `L`.
pub struct KernelDevice<L: Launcher> {
    launcher: L,
    /// Scratch for split partial sums and the spatial-norm scales; grown on demand and reused.
    /// Launches are stream-ordered, so reuse by the next op is safe.
    workspace: Mutex<Option<L::Buf>>,
    /// The block tile every convolution and fc kernel launch uses instead of the one chosen per
    /// layer (tests and benchmarks compare tiles with it); see [`KernelDevice::with_gemm_tile`].
    gemm_tile: Option<&'static str>,
}

impl<L: Launcher> KernelDevice<L> {
    pub fn new(launcher: L) -> Self {
        KernelDevice {
            launcher,
            workspace: Mutex::new(None),
            gemm_tile: None,
        }
    }

    /// This device with every convolution and fc kernel on one block tile (`128x128`, `64x128`,
    /// `48x128`, or `64x128_wide`: the convolutions' general-bounds kernels) instead of the one
    /// chosen per layer. A convolution the masked kernels cannot run still gets the general ones;
    /// fc kernels take `64x128` for `64x128_wide`.
    pub fn with_gemm_tile(mut self, tile: &str) -> Result<Self> {
        self.gemm_tile = Some(igemm::tile_named(tile)?);
        Ok(self)
    }

    pub fn launcher(&self) -> &L {
        &self.launcher
    }

    fn ptr(&self, buf: &L::Buf) -> u64 {
        self.launcher.device_ptr(buf)
    }

    /// The address of a workspace of at least `len` floats.
    fn workspace(&self, len: usize) -> Result<u64> {
        let mut ws = self.workspace.lock().expect("workspace lock poisoned");
        if ws.as_ref().is_none_or(|b| self.launcher.len(b) < len) {
            *ws = Some(
                self.launcher
                    .alloc(len)
                    .with_context(|| format!("allocating a workspace of {len} floats"))?,
            );
        }
        Ok(self
            .launcher
            .device_ptr(ws.as_ref().expect("just allocated")))
    }

    fn launch(&self, k: Kernel, cfg: LaunchConfig, args: &[*mut c_void]) -> Result<()> {
        self.launcher
            .launch(k, cfg, args)
            .with_context(|| format!("launching {}::{} with {cfg:?}", k.module, k.name))
    }
}

impl<L: Launcher> Device for KernelDevice<L> {
    type Buf = L::Buf;

    fn describe(&self) -> String {
        self.launcher.describe()
    }
    fn alloc(&self, len: usize) -> Result<L::Buf> {
        self.launcher.alloc(len)
    }
    fn upload(&self, data: &[f32]) -> Result<L::Buf> {
        self.launcher.upload(data)
    }
    fn download(&self, buf: &L::Buf) -> Result<Vec<f32>> {
        self.launcher.download(buf)
    }
    fn len(&self, buf: &L::Buf) -> usize {
        self.launcher.len(buf)
    }
    fn copy_2d(
        &self,
        src: &L::Buf,
        from: Block,
        dst: &mut L::Buf,
        to: Block,
        width: usize,
        rows: usize,
    ) -> Result<()> {
        self.launcher
            .copy_2d(src, from, dst, to, width, rows)
            .with_context(|| format!("copy_2d {rows} rows of {width} from {from:?} to {to:?}"))
    }
    fn copy_2d_async(
        &self,
        src: &L::Buf,
        from: Block,
        dst: &mut L::Buf,
        to: Block,
        width: usize,
        rows: usize,
    ) -> Result<()> {
        self.launcher
            .copy_2d_async(src, from, dst, to, width, rows)
            .with_context(|| {
                format!("copy_2d_async {rows} rows of {width} from {from:?} to {to:?}")
            })
    }
    fn join_copies(&self) -> Result<()> {
        self.launcher.join_copies()
    }
    fn input_slot_free(&self, slot: usize) -> Result<()> {
        self.launcher.input_slot_free(slot)
    }
    fn upload_async(&self, data: &[f32], dst: &mut L::Buf, slot: usize) -> Result<()> {
        self.launcher
            .upload_async(data, dst, slot)
            .with_context(|| format!("uploading {} floats into input slot {slot}", data.len()))
    }
    fn add_assign(&self, dst: &mut L::Buf, src: &L::Buf) -> Result<()> {
        self.launch_add_assign(dst, src)
    }
    fn synchronize(&self) -> Result<()> {
        self.launcher.synchronize()
    }
    fn memory_peak(&self) -> Option<usize> {
        self.launcher.memory_peak()
    }

    fn conv_forward(
        &self,
        g: &ConvGeom,
        prec: Precision,
        x: &L::Buf,
        w: &L::Buf,
        b: &L::Buf,
        y: &mut L::Buf,
    ) -> Result<()> {
        self.launch_conv_forward(g, prec, x, w, b, y, false)
    }
    fn conv_forward_relu(
        &self,
        g: &ConvGeom,
        prec: Precision,
        x: &L::Buf,
        w: &L::Buf,
        b: &L::Buf,
        y: &mut L::Buf,
    ) -> Result<()> {
        self.launch_conv_forward(g, prec, x, w, b, y, true)
    }

    fn conv_backward_data(
        &self,
        g: &ConvGeom,
        prec: Precision,
        dy: &L::Buf,
        w: &L::Buf,
        dx: &mut L::Buf,
    ) -> Result<()> {
        self.launch_conv_backward_data(g, prec, dy, w, dx)
    }

    fn conv_backward_filter(
        &self,
        g: &ConvGeom,
        prec: Precision,
        x: &L::Buf,
        dy: &L::Buf,
        dw: &mut L::Buf,
        db: &mut L::Buf,
    ) -> Result<()> {
        self.launch_conv_backward_filter(g, prec, x, dy, dw, db)
    }

    fn fc_forward(
        &self,
        g: &FcGeom,
        prec: Precision,
        x: &L::Buf,
        w: &L::Buf,
        b: &L::Buf,
        y: &mut L::Buf,
    ) -> Result<()> {
        self.launch_fc_forward(g, prec, x, w, b, y)
    }

    fn fc_backward_data(
        &self,
        g: &FcGeom,
        prec: Precision,
        dy: &L::Buf,
        w: &L::Buf,
        dx: &mut L::Buf,
    ) -> Result<()> {
        self.launch_fc_backward_data(g, prec, dy, w, dx)
    }

    fn fc_backward_filter(
        &self,
        g: &FcGeom,
        prec: Precision,
        x: &L::Buf,
        dy: &L::Buf,
        dw: &mut L::Buf,
        db: &mut L::Buf,
    ) -> Result<()> {
        self.launch_fc_backward_filter(g, prec, x, dy, dw, db)
    }

    fn relu_forward(&self, x: &L::Buf, y: &mut L::Buf) -> Result<()> {
        self.launch_relu_forward(x, y)
    }
    fn relu_backward(&self, y: &L::Buf, dy: &L::Buf, dx: &mut L::Buf) -> Result<()> {
        self.launch_relu_backward(y, dy, dx)
    }
    fn tanh_forward(&self, x: &L::Buf, y: &mut L::Buf) -> Result<()> {
        self.launch_tanh_forward(x, y)
    }
    fn tanh_backward(&self, y: &L::Buf, dy: &L::Buf, dx: &mut L::Buf) -> Result<()> {
        self.launch_tanh_backward(y, dy, dx)
    }
    fn lrn_forward(&self, g: &LrnGeom, x: &L::Buf, y: &mut L::Buf) -> Result<()> {
        self.launch_lrn_forward(g, x, y)
    }
    fn lrn_backward(
        &self,
        g: &LrnGeom,
        x: &L::Buf,
        y: &L::Buf,
        dy: &L::Buf,
        dx: &mut L::Buf,
    ) -> Result<()> {
        self.launch_lrn_backward(g, x, y, dy, dx)
    }
    fn spatial_norm_forward(&self, g: &SpatialNormGeom, x: &L::Buf, y: &mut L::Buf) -> Result<()> {
        self.launch_spatial_norm_forward(g, x, y)
    }
    fn spatial_norm_backward(
        &self,
        g: &SpatialNormGeom,
        x: &L::Buf,
        y: &L::Buf,
        dy: &L::Buf,
        dx: &mut L::Buf,
    ) -> Result<()> {
        self.launch_spatial_norm_backward(g, x, y, dy, dx)
    }
    fn max_pool_forward(
        &self,
        g: &PoolGeom,
        x: &L::Buf,
        y: &mut L::Buf,
        argmax: &mut L::Buf,
    ) -> Result<()> {
        self.launch_max_pool_forward(g, x, y, argmax)
    }
    fn max_pool_backward(
        &self,
        g: &PoolGeom,
        argmax: &L::Buf,
        dy: &L::Buf,
        dx: &mut L::Buf,
    ) -> Result<()> {
        self.launch_max_pool_backward(g, argmax, dy, dx)
    }
    fn dropout_forward_train(&self, g: &DropoutGeom, x: &L::Buf, y: &mut L::Buf) -> Result<()> {
        self.launch_dropout_forward_train(g, x, y)
    }
    fn dropout_backward(&self, g: &DropoutGeom, dy: &L::Buf, dx: &mut L::Buf) -> Result<()> {
        self.launch_dropout_backward(g, dy, dx)
    }
    fn dropout_forward_test(&self, p: f32, x: &L::Buf, y: &mut L::Buf) -> Result<()> {
        self.launch_dropout_forward_test(p, x, y)
    }
    fn softmax_xent(
        &self,
        n: usize,
        classes: usize,
        logits: &L::Buf,
        labels: &L::Buf,
        probs: &mut L::Buf,
        dlogits: &mut L::Buf,
        losses: &mut L::Buf,
    ) -> Result<()> {
        self.launch_softmax_xent(n, classes, logits, labels, probs, dlogits, losses)
    }
    fn sgd_update(
        &self,
        step: &SgdStep,
        w: &mut L::Buf,
        v: &mut L::Buf,
        grad: &L::Buf,
    ) -> Result<()> {
        self.launch_sgd_update(step, w, v, grad)
    }
}
