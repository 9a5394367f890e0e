//! The one interface every kernel launch goes through, shaped like `cuLaunchKernel`: a kernel
//! named by its module (`cuda/<module>.cu`) and function, a grid, a block, dynamic shared bytes
//! and an array of pointers to the arguments. Two implementations: cudarc on a GPU
//! (`crate::cuda`), and the host executor that runs the same `.cu` sources on the CPU
//! (`crate::emu`). Everything above it (launch configurations, argument order, buffer sizes,
//! the order of exchanges) is the same code for both, in `device::kernels`.

use super::Block;
use anyhow::Result;
use std::ffi::c_void;

/// A kernel: the `.cu` file it lives in (without extension) and its `extern "C"` name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    pub module: &'static str,
    pub name: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
}

/// A column-major SGEMM as BLAS defines it, `C = op(A)·op(B)` (op transposes where asked), `C` being
/// `m` x `n`; addresses as kernels see them (`Launcher::device_ptr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sgemm {
    /// fp32 throughout, or fp32 data multiplied on the tensor cores in TF32 or bf16 (the vendor
    /// converts the operands; sums stay fp32).
    pub precision: crate::ops::precision::Precision,
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: u64,
    pub lda: usize,
    pub b: u64,
    pub ldb: usize,
    pub c: u64,
    pub ldc: usize,
}

/// Memory and launches of one device that runs the `.cu` kernels.
pub trait Launcher {
    /// A buffer of `f32` in this device's memory.
    type Buf;

    fn describe(&self) -> String;
    /// A zero-filled buffer of `len` elements.
    fn alloc(&self, len: usize) -> Result<Self::Buf>;
    fn upload(&self, data: &[f32]) -> Result<Self::Buf>;
    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>>;
    fn len(&self, buf: &Self::Buf) -> usize;
    /// The address kernels see for the buffer's first element.
    fn device_ptr(&self, buf: &Self::Buf) -> u64;
    /// A strided copy into `dst`; `src` may belong to another launcher of the same kind
    /// (a peer copy between GPUs).
    fn copy_2d(
        &self,
        src: &Self::Buf,
        from: Block,
        dst: &mut Self::Buf,
        to: Block,
        width: usize,
        rows: usize,
    ) -> Result<()>;
    /// `copy_2d` that may run beside this launcher's later work; see `Device::copy_2d_async`.
    fn copy_2d_async(
        &self,
        src: &Self::Buf,
        from: Block,
        dst: &mut Self::Buf,
        to: Block,
        width: usize,
        rows: usize,
    ) -> Result<()> {
        self.copy_2d(src, from, dst, to, width, rows)
    }
    /// See `Device::join_copies`.
    fn join_copies(&self) -> Result<()> {
        Ok(())
    }
    /// See `Device::input_slot_free`.
    fn input_slot_free(&self, slot: usize) -> Result<()> {
        let _ = slot;
        Ok(())
    }
    /// See `Device::upload_async`.
    fn upload_async(&self, data: &[f32], dst: &mut Self::Buf, slot: usize) -> Result<()> {
        let _ = slot;
        *dst = self.upload(data)?;
        Ok(())
    }
    /// Launches `kernel`; `args[i]` points to the i-th kernel parameter's value (pointers are
    /// passed as `u64` device addresses).
    fn launch(&self, kernel: Kernel, cfg: LaunchConfig, args: &[*mut c_void]) -> Result<()>;
    fn synchronize(&self) -> Result<()>;

    /// Runs `g` with the vendor's SGEMM where this device has one (cuBLAS on a GPU) and returns
    /// true; false where it has none, and the caller launches its own kernels. The addresses
    /// must lie in live buffers of this launcher holding the matrices `g` describes.
    fn vendor_sgemm(&self, g: &Sgemm) -> Result<bool> {
        let _ = g;
        Ok(false)
    }

    /// Streaming multiprocessors of the device, which launches size their grids to fill in whole
    /// waves. The host executor answers an H100/H200's 132, so that it runs a shape with the
    /// tiles and splits the GPU this engine is built for would.
    fn multiprocessors(&self) -> usize {
        132
    }

    /// Bytes held at the peak on this launcher's device, where they are counted (a GPU).
    fn memory_peak(&self) -> Option<usize> {
        None
    }
}
