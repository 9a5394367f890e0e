//! The CUDA runtime (DESIGN.md §2, §4): cudarc 0.19 with the driver loaded at run time, so the
//! crate builds and runs on machines without CUDA, where every entry point returns a clear error
//! and nothing panics.
//!
//! - `blas`: cuBLAS for the fully connected layers.
//! - `driver`: loading and initialising the driver, GPU properties, error text.
//! - `gpu`: one context per GPU, kernel modules loaded lazily from the embedded fatbins, peer
//!   access.
//! - `launcher`: `CudaLauncher`, the `Launcher` of one tower (a stream), and `CudaBuf`; the
//!   stream-ordering rules are written there.
//! - `placement`: `--devices` to one launcher per tower.
//! - `memory`: current and peak bytes per GPU.
//! - `nccl`: NCCL, loaded at run time, for data-parallel replicas of the tower pair.
//! - `timer`: CUDA-event timing for benchmarks.
//!
//! The ops themselves are `device::kernels::KernelDevice`, shared with the host executor:
//! [`CudaDevice`] is that device over a `CudaLauncher`.

pub mod blas;
pub mod driver;
pub mod gpu;
pub mod launcher;
pub mod memory;
pub mod nccl;
pub mod placement;
pub mod timer;

pub use launcher::{CudaBuf, CudaLauncher};
pub use memory::MemoryStats;
pub use timer::EventTimer;

use crate::device::kernels::KernelDevice;

/// A tower on a GPU: every op a launch of the `cuda/*.cu` kernels.
pub type CudaDevice = KernelDevice<CudaLauncher>;

/// Why a build without nvcc cannot use a GPU.
pub const NO_KERNELS: &str = "this build has no GPU kernels (nvcc was not found when it was compiled); rebuild with nvcc (see README), or use --device emu to run the kernels on the CPU";

/// The devices for `towers` towers placed by `--devices` (`gpus`), ready for `Network::new`.
pub fn devices(gpus: &[usize], towers: usize) -> anyhow::Result<Vec<CudaDevice>> {
    Ok(placement::launchers(gpus, towers)?
        .into_iter()
        .map(KernelDevice::new)
        .collect())
}
