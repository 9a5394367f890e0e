//! NCCL for data-parallel replicas (issue #16): cudarc's `nccl` feature, loaded at run time like
//! the driver, so builds and machines without libnccl work and say so instead of panicking
//! (cudarc panics on a missing library: `library_present` is checked before any call).
//!
//! [`NcclCollective`] is the GPU side of `parallel::collective::Collective`: one communicator per
//! tower, linking that tower's GPUs across the replicas, and a stream of its own per tower on
//! which each layer's all-reduce is queued after the compute stream's work so far, so it runs
//! beside the rest of backward; the compute stream waits for it only before the update.

use super::CudaDevice;
use crate::device::launch::Launcher;
use crate::parallel::collective::Collective;
use anyhow::{Result, anyhow, bail, ensure};
use cudarc::driver::{CudaEvent, CudaStream};
use cudarc::nccl::{result as nccl, sys};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why replicas cannot run without NCCL, and what to do.
pub const NO_NCCL: &str = "data-parallel replicas (more GPUs in --devices than the network has towers) need NCCL, and libnccl (libnccl.so.2) could not be loaded on this machine: install NCCL (the libnccl2 package, or the nvidia-nccl wheel's lib/ folder on LD_LIBRARY_PATH), or list one GPU per tower";

/// Whether libnccl can be loaded.
pub fn library_present() -> bool {
    // SAFETY: tries to dlopen libnccl under its usual names, and closes it again.
    unsafe { sys::is_culib_present() }
}

/// NCCL's version (`2.27.3`), or why it is not usable.
pub fn version() -> Result<String> {
    ensure!(library_present(), "{NO_NCCL}");
    let v = nccl::get_nccl_version().map_err(|e| anyhow!("ncclGetVersion: {e:?}"))?;
    // NCCL_VERSION_CODE: major*10000 + minor*100 + patch since 2.9 (major*1000 + ... before).
    let (major, rest) = if v >= 10000 {
        (v / 10000, v % 10000)
    } else {
        (v / 1000, v % 1000)
    };
    Ok(format!("{major}.{}.{}", rest / 100, rest % 100))
}

/// `Ok` where replicas can run, else the error naming libnccl.
pub fn require() -> Result<()> {
    version().map(|_| ())
}

/// A new NCCL unique id (rank 0 makes it and hands it out; see `parallel::rendezvous`).
pub fn unique_id() -> Result<Vec<u8>> {
    require()?;
    let id = nccl::get_uniqueid().map_err(|e| anyhow!("ncclGetUniqueId: {e:?}"))?;
    Ok(id.internal.iter().map(|&c| c as u8).collect())
}

fn check(what: &str, r: sys::ncclResult_t) -> Result<()> {
    match r {
        sys::ncclResult_t::ncclSuccess => Ok(()),
        e => bail!("{what}: NCCL error {e:?}"),
    }
}

/// One tower's link to the same tower of the other replicas.
struct TowerComm {
    comm: sys::ncclComm_t,
    stream: Arc<CudaStream>,
    /// The point of `stream` after this step's last all-reduce.
    done: Option<CudaEvent>,
}

// SAFETY: an NCCL communicator may be used from any one thread at a time; a TowerComm is owned
// by one replica's thread.
unsafe impl Send for TowerComm {}

impl Drop for TowerComm {
    fn drop(&mut self) {
        // Abort, not destroy: destroy waits for the peers, which may be gone.
        // SAFETY: created by ncclCommInitRank and released only here.
        unsafe {
            sys::ncclCommAbort(self.comm);
        }
    }
}

/// Replica `rank` of `replicas`, over NCCL.
pub struct NcclCollective {
    rank: usize,
    replicas: usize,
    towers: Vec<TowerComm>,
    /// How long `finish` waits for the all-reduces before it aborts the communicators: a rank
    /// that died leaves the others' collectives waiting forever otherwise.
    timeout: Duration,
}

impl NcclCollective {
    /// Joins the communicators of every tower: `ids[t]` is tower `t`'s unique id (the same on
    /// every replica), `devices[t]` this replica's tower `t`. Every replica must call this at
    /// the same time (NCCL's init waits for all ranks).
    pub fn new(
        devices: &[CudaDevice],
        ids: &[Vec<u8>],
        rank: usize,
        replicas: usize,
        timeout: Duration,
    ) -> Result<Self> {
        require()?;
        ensure!(ids.len() == devices.len(), "one NCCL id per tower");
        let mut towers = Vec::new();
        for (t, (dev, id)) in devices.iter().zip(ids).enumerate() {
            ensure!(
                id.len() == 128,
                "an NCCL unique id has 128 bytes, not {}",
                id.len()
            );
            let mut internal = [0 as std::ffi::c_char; 128];
            for (i, &b) in id.iter().enumerate() {
                internal[i] = b as std::ffi::c_char;
            }
            let gpu = dev.launcher().gpu();
            let (stream, _) = gpu.new_stream()?;
            stream
                .context()
                .bind_to_thread()
                .map_err(|e| anyhow!("{e:?}"))?;
            let mut comm = std::ptr::null_mut();
            // SAFETY: `comm` receives a new communicator; the id is 128 bytes.
            check(
                &format!("tower {t}: ncclCommInitRank (rank {rank} of {replicas})"),
                unsafe {
                    sys::ncclCommInitRank(
                        &mut comm,
                        replicas as i32,
                        sys::ncclUniqueId { internal },
                        rank as i32,
                    )
                },
            )?;
            towers.push(TowerComm {
                comm,
                stream,
                done: None,
            });
        }
        Ok(NcclCollective {
            rank,
            replicas,
            towers,
            timeout,
        })
    }
}

impl Collective<CudaDevice> for NcclCollective {
    fn replicas(&self) -> usize {
        self.replicas
    }

    fn rank(&self) -> usize {
        self.rank
    }

    fn start_mean(
        &mut self,
        tower: usize,
        dev: &CudaDevice,
        bufs: &mut [&mut super::CudaBuf],
    ) -> Result<()> {
        let launcher = dev.launcher();
        let tc = self
            .towers
            .get_mut(tower)
            .ok_or_else(|| anyhow!("no NCCL communicator for tower {tower}"))?;
        // After the compute stream's work so far (the gradients just computed).
        tc.stream
            .join(launcher.stream())
            .map_err(|e| anyhow!("{e:?}"))?;
        check("ncclGroupStart", unsafe { sys::ncclGroupStart() })?;
        for b in bufs.iter() {
            let ptr = launcher.device_ptr(b) as *mut std::ffi::c_void;
            // SAFETY: `ptr` is a live buffer of `len` floats on this tower's GPU; the compute
            // stream does not touch it until `finish` has made it wait for this stream.
            check("ncclAllReduce", unsafe {
                sys::ncclAllReduce(
                    ptr,
                    ptr,
                    launcher.len(b),
                    sys::ncclDataType_t::ncclFloat32,
                    sys::ncclRedOp_t::ncclAvg,
                    tc.comm,
                    tc.stream.cu_stream() as _,
                )
            })?;
        }
        check("ncclGroupEnd", unsafe { sys::ncclGroupEnd() })?;
        tc.done = Some(tc.stream.record_event(None).map_err(|e| anyhow!("{e:?}"))?);
        Ok(())
    }

    /// Waits (on the host, polling) until every tower's all-reduces are done or the timeout
    /// passes; past it, or on an asynchronous NCCL error, aborts the communicators so that
    /// nothing hangs, and fails. Then orders each compute stream after its tower's reductions.
    fn finish(&mut self, devices: &[CudaDevice]) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        for (t, tc) in self.towers.iter_mut().enumerate() {
            let Some(done) = tc.done.take() else { continue };
            loop {
                match done.try_is_complete() {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => bail!("tower {t}: the all-reduce failed: {e:?}"),
                }
                let mut state = sys::ncclResult_t::ncclSuccess;
                // SAFETY: a live communicator.
                unsafe { sys::ncclCommGetAsyncError(tc.comm, &mut state) };
                if !matches!(
                    state,
                    sys::ncclResult_t::ncclSuccess | sys::ncclResult_t::ncclInProgress
                ) {
                    bail!(
                        "replica {}: tower {t}'s all-reduce failed ({state:?}): a peer replica failed or is unreachable",
                        self.rank
                    );
                }
                if Instant::now() >= deadline {
                    // Dropping the communicators (below, with self) aborts them.
                    bail!(
                        "replica {} of {}: tower {t}'s gradient all-reduce did not finish within {:?}: another replica died or hangs; aborting",
                        self.rank,
                        self.replicas,
                        self.timeout
                    );
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            if let Some(dev) = devices.get(t) {
                dev.launcher()
                    .stream()
                    .wait(&done)
                    .map_err(|e| anyhow!("{e:?}"))?;
            }
        }
        Ok(())
    }
}
