//! [`NcclCollective`] is the GPU side of [`Collective`]: one communicator per tower, linking
//! that tower's GPUs across the replicas, and a stream of its own per tower on which each
//! layer's all-reduce is queued after the compute stream's work so far, so it runs beside the
//! rest of backward; the compute stream waits for it only before the update.
//!
//! Nothing waits without a bound: the set-up is non-blocking (NCCL's `blocking = 0` config) and
//! polled until the peer timeout, and so are the reductions; past it, or at an error, the
//! communicators are aborted at once, which releases their queued work, so that nothing
//! synchronising the GPUs afterwards (freeing buffers, cuBLAS, the context) waits forever for a
//! peer that is gone.

use super::collective::{Collective, PEER_FAILED};
use crate::cuda::nccl::{
    Config, NCCL_AVG, NCCL_FLOAT32, NCCL_IN_PROGRESS, NCCL_REMOTE_ERROR, NCCL_SUCCESS, TowerComm,
    UNIQUE_ID_BYTES, UniqueId, check, describe, nccl,
};
use crate::cuda::{CudaBuf, CudaDevice};
use crate::device::launch::Launcher;
use anyhow::{Result, anyhow, bail, ensure};
use std::ffi::{c_char, c_int, c_void};
use std::time::{Duration, Instant};

/// Replica `rank` of `replicas`, over NCCL.
pub struct NcclCollective {
    rank: usize,
    replicas: usize,
    towers: Vec<TowerComm>,
    /// How long the set-up and each step's all-reduces may take before the communicators are
    /// aborted: a rank that died or never came leaves the others waiting forever otherwise.
    timeout: Duration,
}

impl NcclCollective {
    /// Joins the communicators of every tower: `ids[t]` is tower `t`'s unique id (the same on
    /// every replica), `devices[t]` this replica's tower `t`. Every replica must call this
    /// within `timeout` of the others; past it the set-up is abandoned with an error.
    pub fn new(
        devices: &[CudaDevice],
        ids: &[Vec<u8>],
        rank: usize,
        replicas: usize,
        timeout: Duration,
    ) -> Result<Self> {
        let n = nccl()?;
        ensure!(ids.len() == devices.len(), "one NCCL id per tower");
        let mut c = NcclCollective {
            rank,
            replicas,
            towers: Vec::new(),
            timeout,
        };
        let deadline = Instant::now() + timeout;
        for (t, (dev, id)) in devices.iter().zip(ids).enumerate() {
            ensure!(
                id.len() == UNIQUE_ID_BYTES,
                "an NCCL unique id has {UNIQUE_ID_BYTES} bytes, not {}",
                id.len()
            );
            let mut unique = UniqueId {
                internal: [0; UNIQUE_ID_BYTES],
            };
            for (d, &b) in unique.internal.iter_mut().zip(id) {
                *d = b as c_char;
            }
            let gpu = dev.launcher().gpu();
            let (stream, _) = gpu.new_stream()?;
            // NCCL takes its device from the calling thread's current context.
            gpu.bind()?;
            let mut comm = std::ptr::null_mut();
            let mut config = Config::non_blocking();
            // SAFETY: `comm` receives a new communicator; the id and config are read during
            // the call.
            let r = unsafe {
                (n.comm_init_rank_config)(
                    &mut comm,
                    replicas as c_int,
                    unique,
                    rank as c_int,
                    &mut config,
                )
            };
            let what = format!("tower {t}: ncclCommInitRankConfig (rank {rank} of {replicas})");
            if r == NCCL_REMOTE_ERROR {
                bail!(
                    "{what}: {} ({PEER_FAILED}: it gave up on the set-up)",
                    describe(r)
                );
            }
            if r != NCCL_IN_PROGRESS {
                check(&what, r)?;
            }
            c.towers.push(TowerComm {
                comm: Some(comm),
                stream,
                done: None,
            });
        }
        // Every tower's set-up runs at once; each must complete before the deadline.
        for t in 0..c.towers.len() {
            c.wait_ready(t, deadline, "set-up")?;
        }
        Ok(c)
    }

    /// Polls tower `t`'s communicator until it has nothing in progress (see `poll`).
    fn wait_ready(&mut self, t: usize, deadline: Instant, what: &str) -> Result<()> {
        while !self.poll(t, deadline, what)? {
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    }

    /// One look at tower `t`'s communicator: whether it has nothing in progress. At an error,
    /// or past `deadline`, every communicator of this replica is aborted and it fails.
    fn poll(&mut self, t: usize, deadline: Instant, what: &str) -> Result<bool> {
        let n = nccl()?;
        let Some(comm) = self.towers[t].comm else {
            bail!("tower {t}'s NCCL communicator was aborted");
        };
        let mut state = NCCL_SUCCESS;
        // SAFETY: a live communicator; writes one result.
        let r = unsafe { (n.comm_get_async_error)(comm, &mut state) };
        if r != NCCL_SUCCESS || (state != NCCL_SUCCESS && state != NCCL_IN_PROGRESS) {
            let why = describe(if r != NCCL_SUCCESS { r } else { state });
            self.abort_all();
            bail!(
                "replica {} of {}: tower {t}'s NCCL {what} failed ({why}): {PEER_FAILED} or is unreachable",
                self.rank,
                self.replicas
            );
        }
        if state == NCCL_SUCCESS {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            self.abort_all();
            bail!(
                "replica {} of {}: tower {t}'s NCCL {what} did not complete within {:?} (--peer-timeout): {PEER_FAILED}, hangs, or never started; aborting",
                self.rank,
                self.replicas,
                self.timeout
            );
        }
        Ok(false)
    }

    fn abort_all(&mut self) {
        for tc in &mut self.towers {
            tc.abort();
        }
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
        bufs: &mut [&mut CudaBuf],
    ) -> Result<()> {
        let n = nccl()?;
        let launcher = dev.launcher();
        let tc = self
            .towers
            .get_mut(tower)
            .ok_or_else(|| anyhow!("no NCCL communicator for tower {tower}"))?;
        let comm = tc
            .comm
            .ok_or_else(|| anyhow!("tower {tower}'s NCCL communicator was aborted"))?;
        // After the compute stream's work so far (the gradients just computed).
        if !crate::planted::planted("nccl-no-wait") {
            tc.stream
                .join(launcher.stream())
                .map_err(|e| anyhow!("{e:?}"))?;
        }
        launcher.gpu().bind()?;
        // SAFETY: plain calls; the group only batches the launches below.
        check("ncclGroupStart", unsafe { (n.group_start)() })?;
        let mut queued = Ok(());
        for b in bufs.iter() {
            let ptr = launcher.device_ptr(b) as *mut c_void;
            // SAFETY: `ptr` is a live buffer of `len` floats on this tower's GPU; the compute
            // stream does not touch it until `finish` has made it wait for this stream.
            let r = unsafe {
                (n.all_reduce)(
                    ptr,
                    ptr,
                    launcher.len(b),
                    NCCL_FLOAT32,
                    NCCL_AVG,
                    comm,
                    tc.stream.cu_stream() as *mut c_void,
                )
            };
            if queued.is_ok() {
                queued = check("ncclAllReduce", r);
            }
        }
        // SAFETY: closes the group opened above.
        let end = unsafe { (n.group_end)() };
        if let Err(e) = queued {
            self.abort_all();
            return Err(e);
        }
        if end != NCCL_IN_PROGRESS
            && let Err(e) = check("ncclGroupEnd", end)
        {
            self.abort_all();
            return Err(e);
        }
        let tc = &mut self.towers[tower];
        tc.done = Some(tc.stream.record_event(None).map_err(|e| anyhow!("{e:?}"))?);
        Ok(())
    }

    /// Waits (on the host, polling) until every tower's all-reduces are done or the timeout
    /// passes; past it, or on an asynchronous NCCL error, aborts the communicators so that
    /// nothing hangs, and fails. Then orders each compute stream after its tower's reductions.
    fn finish(&mut self, devices: &[CudaDevice]) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        for t in 0..self.towers.len() {
            let Some(done) = self.towers[t].done.take() else {
                continue;
            };
            loop {
                match done.try_is_complete() {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => {
                        self.abort_all();
                        bail!("tower {t}: the all-reduce failed: {e:?}");
                    }
                }
                // An asynchronous error, or the deadline: abort and fail.
                self.poll(t, deadline, "gradient all-reduce")?;
                if Instant::now() >= deadline {
                    self.abort_all();
                    bail!(
                        "replica {} of {}: tower {t}'s gradient all-reduce did not finish within {:?} (--peer-timeout): {PEER_FAILED} or hangs; aborting",
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
