//! Where this process's replicas run (GPUs or the CPU), who they are among the run's, and how
//! the run's processes meet.

use super::RunRequest;
use super::job::TrainJob;
use crate::data::shard;
use crate::dist::dispatch::{DeviceKind, choose, dispatch, dispatch_replicas, rendezvous_id};
use crate::dist::launch::{Launch, Rendezvous};
use crate::dist::rendezvous::{Group, join};
use crate::train::run::TrainOutcome;
use crate::train::settle;
use anyhow::{Result, bail, ensure};
use std::time::Duration;

/// Where this process's replicas run and who they are among all of the run's.
pub(super) struct Placement {
    pub(super) device: DeviceKind,
    pub(super) gpus: Vec<usize>,
    pub(super) launch: Launch,
    /// Replicas in this process, in the whole run, and this process's first one's rank.
    pub(super) local: usize,
    pub(super) replicas: usize,
    pub(super) first_replica: usize,
    /// Rank 0 alone writes the run folder; the other processes only train.
    pub(super) writer: bool,
    pub(super) peer_timeout: Duration,
}

impl Placement {
    pub(super) fn settle(req: &RunRequest, towers: usize) -> Result<Placement> {
        let (device, mut gpus) = choose(req.device, req.devices.as_deref(), towers)?;
        // Data parallel (issue #16): replicas in this process, in every process the launcher
        // started (WORLD_SIZE or Slurm's SLURM_NTASKS), and this process's first replica's rank.
        let launch = Launch::from_env(|k| std::env::var(k).ok())?;
        if launch.world_size > 1 && device == DeviceKind::Cuda && req.devices.is_none() {
            // One process per tower pair (torchrun --nproc-per-node 4 on eight GPUs): the pair
            // LOCAL_RANK names.
            gpus = (launch.local_rank * towers..(launch.local_rank + 1) * towers).collect();
        }
        let local = local_replicas(req, device, &gpus, towers)?;
        let replicas = local * launch.world_size;
        shard::range(req.batch, replicas, 0)?;
        ensure!(
            device == DeviceKind::Cuda || launch.world_size == 1 || local == 1,
            "--replicas {local} in each of {} processes: on the CPU a run of several processes takes one replica per process (start more processes instead)",
            launch.world_size
        );
        Ok(Placement {
            device,
            gpus,
            local,
            replicas,
            first_replica: launch.rank * local,
            writer: launch.rank == 0,
            peer_timeout: settle::peer_timeout(req.peer_timeout)?,
            launch,
        })
    }

    /// Runs the jobs (one per replica of this process) on their devices; the outcome of the
    /// first.
    pub(super) fn launch_jobs(
        &self,
        mut jobs: Vec<TrainJob>,
        group: Option<Group>,
        towers: usize,
    ) -> Result<TrainOutcome> {
        let (device, gpus) = (self.device, &self.gpus);
        if self.replicas == 1 {
            return dispatch(device, towers, gpus, jobs.pop().expect("one job"));
        }
        let outcomes = dispatch_replicas(device, towers, gpus, jobs, group, self.peer_timeout)?;
        Ok(outcomes
            .into_iter()
            .next()
            .expect("one outcome per replica"))
    }

    /// Meets the run's other processes (where there are any).
    pub(super) fn join_group(&self, req: &RunRequest, towers: usize) -> Result<Option<Group>> {
        let launch = &self.launch;
        if launch.world_size == 1 {
            return Ok(None);
        }
        let at = launch.rendezvous(req.rendezvous.as_deref())?;
        let place = match &at {
            Rendezvous::Tcp(addr) => format!("at {addr}"),
            Rendezvous::File(path) => format!("through {}", path.display()),
            Rendezvous::Alone => String::new(),
        };
        eprintln!(
            "rank {} of {}: waiting up to {:?} for the other processes {place}",
            launch.rank, launch.world_size, self.peer_timeout
        );
        let device = self.device;
        Ok(Some(join(launch, &at, self.peer_timeout, || {
            rendezvous_id(device, towers)
        })?))
    }
}

/// How many data-parallel replicas this process runs: on GPUs, one per `towers` GPUs of
/// `--devices` (checked by `choose`: whole replicas, NCCL there); on the CPU and the host
/// executor, `--replicas`.
fn local_replicas(
    req: &RunRequest,
    device: DeviceKind,
    gpus: &[usize],
    towers: usize,
) -> Result<usize> {
    let asked = req.replicas;
    ensure!(
        asked != Some(0),
        "--replicas 0: a run has at least one replica"
    );
    if device != DeviceKind::Cuda {
        return Ok(asked.unwrap_or(1));
    }
    let from_gpus = if gpus.len() > towers {
        gpus.len() / towers
    } else {
        1
    };
    match asked {
        Some(r) if r != from_gpus => bail!(
            "--replicas {r} on GPUs: list the replicas' GPUs in --devices instead ({} for {r} replicas of {towers} towers), which gives {from_gpus} now",
            r * towers
        ),
        _ => Ok(from_gpus),
    }
}
