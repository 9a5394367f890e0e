//! Where a run's networks go and how they start there: the device kind (`cpu`, `emu`, `cuda`,
//! or `auto` resolved once), the GPUs of each replica, and jobs run on those devices, alone or
//! as data-parallel replicas with the collective their devices call for (in-process, TCP, NCCL).

use super::collective::{Collective, LocalCollective};
use super::nccl::NcclCollective;
use super::rendezvous::Group;
use super::replicas::{on_threads, take_each};
use super::tcp_collective::TcpCollective;
use crate::cuda::{self, driver};
use crate::device::Device;
use crate::device::cpu::CpuDevice;
use crate::device::kernels::KernelDevice;
use crate::emu::EmuLauncher;
use anyhow::{Result, ensure};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceKind {
    /// The GPUs where a driver, a GPU and this build's kernels are all there; else the CPU. One
    /// line says which, and why.
    Auto,
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

/// Where the towers go: `kind` with `auto` resolved, and the GPUs for `cuda` (`devices` as
/// `--devices` gave it; by default GPUs 0 and 1, or GPU 0 alone on a machine with one). With
/// `auto` it prints one line saying what it chose and why.
pub fn choose(
    kind: DeviceKind,
    devices: Option<&str>,
    towers: usize,
) -> Result<(DeviceKind, Vec<usize>)> {
    if let Some(list) = devices {
        // More GPUs than towers: data-parallel replicas, which need NCCL and every GPU named.
        replicas_asked(&parse_gpus(list)?, towers)?;
    }
    let visible = || driver::init().map(|d| d.devices);
    let default_gpus = |n: usize| (0..towers.min(n).max(1)).collect::<Vec<_>>();
    match kind {
        DeviceKind::Auto => {
            let why_not = if !crate::fatbins::KERNELS_EMBEDDED {
                Err("this build has no GPU kernels (it was built without nvcc)".to_string())
            } else {
                match visible() {
                    Ok(0) => Err("the CUDA driver sees no GPU".to_string()),
                    Ok(n) => Ok(n),
                    Err(e) => Err(format!("{e:#}")),
                }
            };
            match why_not {
                Ok(n) => {
                    let gpus = match devices {
                        Some(list) => parse_gpus(list)?,
                        None => default_gpus(n),
                    };
                    eprintln!(
                        "device: cuda, towers on GPU {} ({} visible; --device cpu to train on the CPU)",
                        gpus.iter()
                            .map(|g| g.to_string())
                            .collect::<Vec<_>>()
                            .join(","),
                        driver::plural(n, "GPU")
                    );
                    Ok((DeviceKind::Cuda, gpus))
                }
                Err(why) => {
                    eprintln!("device: cpu (no GPU to use: {why})");
                    Ok((DeviceKind::Cpu, Vec::new()))
                }
            }
        }
        DeviceKind::Cuda => {
            let gpus = match devices {
                Some(list) => parse_gpus(list)?,
                // Without a driver this is [0, 1] and the launch says why there is no GPU.
                None => default_gpus(visible().unwrap_or(towers)),
            };
            Ok((DeviceKind::Cuda, gpus))
        }
        other => Ok((other, Vec::new())),
    }
}

/// Builds `towers` devices of `kind` (placed on the GPUs listed in `gpus` for `cuda`) and runs
/// `job`; `auto` must have been resolved by [`choose`].
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
        DeviceKind::Cuda => job.run(cuda::devices(gpus, towers)?),
        DeviceKind::Auto => {
            let (kind, gpus) = choose(DeviceKind::Auto, None, towers)?;
            dispatch(kind, towers, &gpus, job)
        }
    }
}

/// Work that runs as one data-parallel replica of the towers (issue #16): its devices, one per
/// tower, and the collective that averages its gradients with the other replicas'.
pub trait ReplicaJob: Send {
    type Output: Send;
    fn run<D: Device + 'static>(
        self,
        devices: Vec<D>,
        collective: Box<dyn Collective<D>>,
    ) -> Result<Self::Output>;
}

/// Runs `jobs`, this process's replicas, each on a thread of its own with `towers` devices of
/// `kind` (`cuda`: replica `i` on GPUs `gpus[i * towers..][..towers]`). With `group` (a run of
/// several processes, each with as many replicas) replica `i` of process `p` is replica
/// `p * jobs.len() + i` of them all. The collective: NCCL on GPUs; on the CPU and the host
/// executor, the in-process one between threads, or over the rendezvous' TCP links between
/// processes (one replica per process). `timeout` bounds each reduction.
pub fn dispatch_replicas<J: ReplicaJob>(
    kind: DeviceKind,
    towers: usize,
    gpus: &[usize],
    jobs: Vec<J>,
    group: Option<Group>,
    timeout: Duration,
) -> Result<Vec<J::Output>> {
    let local = jobs.len();
    let (processes, process) = group.as_ref().map_or((1, 0), |g| (g.world_size, g.rank));
    let jobs = take_each(jobs);
    let host_collectives = |group: Option<Group>| -> Result<Vec<HostCollective>> {
        match group.filter(|g| g.world_size > 1) {
            None => Ok(LocalCollective::group(local)
                .into_iter()
                .map(HostCollective::Local)
                .collect()),
            Some(g) => {
                ensure!(
                    local == 1,
                    "{local} replicas in each of {processes} processes: on the CPU a run of several processes takes one replica per process (start more processes instead)"
                );
                Ok(vec![HostCollective::Tcp(TcpCollective::new(g, timeout)?)])
            }
        }
    };
    match kind {
        DeviceKind::Cpu => {
            let collectives = take_each(host_collectives(group)?);
            on_threads(local, |i| {
                let c = collectives.take(i).boxed();
                jobs.take(i).run(vec![CpuDevice; towers], c)
            })
        }
        DeviceKind::Emu => {
            let collectives = take_each(host_collectives(group)?);
            on_threads(local, |i| {
                let c = collectives.take(i).boxed();
                let devices = (0..towers)
                    .map(|_| KernelDevice::new(EmuLauncher::new()))
                    .collect();
                jobs.take(i).run(devices, c)
            })
        }
        DeviceKind::Cuda => {
            cuda::nccl::require()?;
            // One NCCL id per tower: made here, or by rank 0 and handed out at the rendezvous.
            let ids: Vec<Vec<u8>> = match &group {
                Some(g) if processes > 1 => {
                    ensure!(
                        g.id.len() == 128 * towers,
                        "rank 0 handed out {} bytes of NCCL ids, not {} for {towers} towers: is it the same build and network?",
                        g.id.len(),
                        128 * towers
                    );
                    g.id.chunks(128).map(<[u8]>::to_vec).collect()
                }
                _ => (0..towers)
                    .map(|_| cuda::nccl::unique_id())
                    .collect::<Result<_>>()?,
            };
            ensure!(
                gpus.len() == local * towers,
                "{local} replicas of {towers} towers need {} GPUs, --devices names {}",
                local * towers,
                gpus.len()
            );
            let replicas = processes * local;
            let results = on_threads(local, |i| {
                let job = jobs.take(i);
                let devices = cuda::devices(&gpus[i * towers..][..towers], towers)?;
                let rank = process * local + i;
                let c = NcclCollective::new(&devices, &ids, rank, replicas, timeout)?;
                job.run(devices, Box::new(c))
            });
            // The rendezvous' links stay open until every replica is done.
            drop(group);
            results
        }
        DeviceKind::Auto => anyhow::bail!("dispatch_replicas needs the device kind resolved"),
    }
}

/// The collectives of replicas on host-side devices.
enum HostCollective {
    Local(LocalCollective),
    Tcp(TcpCollective),
}

impl HostCollective {
    fn boxed<D: Device + 'static>(self) -> Box<dyn Collective<D>> {
        match self {
            HostCollective::Local(c) => Box::new(c),
            HostCollective::Tcp(c) => Box::new(c),
        }
    }
}

/// The NCCL ids a multi-process run's rank 0 hands out (one per tower), or for runs without
/// NCCL any bytes (the TCP collective needs none).
pub fn rendezvous_id(kind: DeviceKind, towers: usize) -> Result<Vec<u8>> {
    if kind == DeviceKind::Cuda {
        let mut ids = Vec::new();
        for _ in 0..towers {
            ids.extend(cuda::nccl::unique_id()?);
        }
        Ok(ids)
    } else {
        Ok(Vec::new())
    }
}

/// Parses `--devices 0,1` into GPU ordinals.
pub fn parse_gpus(list: &str) -> Result<Vec<usize>> {
    cuda::placement::parse_devices(list)
}

/// `--devices` naming more GPUs than the network has towers asks for data-parallel replicas of
/// the towers (`0,1,2,3`: two replicas of a two-tower net); returns how many. A list that does
/// not divide into whole replicas, or replicas without NCCL or GPUs, is an error naming why.
pub fn replicas_asked(gpus: &[usize], towers: usize) -> Result<usize> {
    if gpus.len() <= towers {
        return Ok(1);
    }
    let list = gpus
        .iter()
        .map(|g| g.to_string())
        .collect::<Vec<_>>()
        .join(",");
    anyhow::ensure!(
        gpus.len().is_multiple_of(towers),
        "--devices {list} names {} GPUs for a network of {towers} towers: data-parallel replicas take {towers} GPUs each, so give a multiple of {towers}",
        gpus.len()
    );
    let mut seen = std::collections::BTreeSet::new();
    if let Some(g) = gpus.iter().find(|g| !seen.insert(**g)) {
        anyhow::bail!(
            "--devices {list} names GPU {g} twice: each replica's towers need GPUs of their own"
        );
    }
    let replicas = gpus.len() / towers;
    cuda::nccl::require()?;
    let visible = driver::init()?.devices;
    if let Some(&bad) = gpus.iter().find(|&&g| g >= visible) {
        anyhow::bail!(
            "--devices {list}: there is no GPU {bad}, this machine has {}",
            driver::plural(visible, "GPU")
        );
    }
    Ok(replicas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_without_nccl_or_whole_pairs_are_clear_errors() {
        assert_eq!(replicas_asked(&[0, 1], 2).unwrap(), 1);
        let e = replicas_asked(&[0, 1, 2], 2).unwrap_err().to_string();
        assert!(e.contains("give a multiple of 2"), "{e}");
        let e = replicas_asked(&[0, 1, 1, 2], 2).unwrap_err().to_string();
        assert!(e.contains("names GPU 1 twice"), "{e}");
        match replicas_asked(&[0, 1, 2, 3], 2) {
            Ok(r) => assert_eq!(r, 2, "a machine with NCCL and four GPUs runs two replicas"),
            Err(e) => {
                let e = format!("{e:#}");
                if cuda::nccl::library_present() {
                    println!("NCCL is here; without the GPUs: {e}");
                    assert!(e.contains("GPU") || e.contains("driver"), "{e}");
                } else {
                    assert!(e.contains("need NCCL") && e.contains("libnccl"), "{e}");
                }
            }
        }
    }

    #[test]
    fn the_cuda_arm_fails_clearly_without_a_gpu() {
        struct Nothing;
        impl Job for Nothing {
            type Output = usize;
            fn run<D: Device>(self, devices: Vec<D>) -> Result<usize> {
                Ok(devices.len())
            }
        }
        match dispatch(DeviceKind::Cuda, 2, &[0], Nothing) {
            Ok(n) => assert_eq!(n, 2, "a GPU machine gives one device per tower"),
            Err(e) => {
                let msg = format!("{e:#}");
                assert!(
                    msg.contains("no CUDA driver")
                        || msg.contains("no GPU")
                        || msg.contains("no GPU kernels"),
                    "{msg}"
                );
            }
        }
    }
}
