//! Choosing where the towers run: `--device cpu|emu|cuda` and `--devices 0,1`.

use crate::device::Device;
use crate::device::cpu::CpuDevice;
use crate::device::kernels::KernelDevice;
use crate::emu::EmuLauncher;
use anyhow::{Result, bail};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceKind {
    /// The CPU reference's fast paths (multithreaded GEMM).
    Cpu,
    /// The CUDA kernels run on the CPU by the host executor: slow, for checking the GPU path.
    Emu,
    /// GPUs, one tower per listed device.
    Cuda,
}

/// Work that runs on one device per tower, whatever their kind.
pub trait Job {
    type Output;
    fn run<D: Device>(self, devices: Vec<D>) -> Result<Self::Output>;
}

/// Builds `towers` devices of `kind` (placed on the GPUs listed in `gpus` for `cuda`) and runs `job`.
pub fn dispatch<J: Job>(
    kind: DeviceKind,
    towers: usize,
    gpus: &[usize],
    job: J,
) -> Result<J::Output> {
    match kind {
        DeviceKind::Cpu => job.run(vec![CpuDevice; towers]),
        DeviceKind::Emu => job.run(
            (0..towers)
                .map(|_| KernelDevice::new(EmuLauncher::new()))
                .collect(),
        ),
        DeviceKind::Cuda => {
            let _ = gpus;
            bail!(
                "the CUDA runtime is not part of this build yet; use --device cpu, or --device emu to run the CUDA kernels on the CPU"
            )
        }
    }
}

/// Parses `--devices 0,1` into GPU ordinals.
pub fn parse_gpus(list: &str) -> Result<Vec<usize>> {
    list.split(',')
        .map(|s| {
            s.trim().parse::<usize>().map_err(|_| {
                anyhow::anyhow!("--devices expects GPU numbers like 0,1; {s:?} is not one")
            })
        })
        .collect()
}

/// What `alexnet devices` prints.
pub fn report() -> String {
    let mut s = String::new();
    s += &format!(
        "GPU kernels embedded in this build: {}\n",
        if crate::fatbins::KERNELS_EMBEDDED {
            format!(
                "yes ({})",
                crate::fatbins::CUDA_ARCHS
                    .iter()
                    .map(|a| format!("sm_{a}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            "no (built without nvcc)".to_string()
        }
    );
    s += "CUDA runtime: not part of this build yet; --device cpu and --device emu are available\n";
    s
}
