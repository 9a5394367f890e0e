//! NCCL for data-parallel replicas (issue #16), loaded at run time under the name NCCL installs:
//! `libnccl.so.2` (the libnccl2 package and the nvidia-nccl wheels put no other on a machine;
//! the `libnccl.so` link comes only with the development package), then `libnccl.so`. cudarc's
//! loader looks for neither `.so.2` nor the link first, so the engine binds the few functions it
//! calls itself; a missing library or symbol is an error naming it, never a panic.
//!
//! [`NcclCollective`] is the GPU side of `parallel::collective::Collective`: one communicator per
//! tower, linking that tower's GPUs across the replicas, and a stream of its own per tower on
//! which each layer's all-reduce is queued after the compute stream's work so far, so it runs
//! beside the rest of backward; the compute stream waits for it only before the update.
//!
//! Nothing waits without a bound: the set-up is non-blocking (NCCL's `blocking = 0` config) and
//! polled until the peer timeout, and so are the reductions; past it, or at an error, the
//! communicators are aborted at once, which releases their queued work, so that nothing
//! synchronising the GPUs afterwards (freeing buffers, cuBLAS, the context) waits forever for a
//! peer that is gone.

use super::CudaDevice;
use crate::device::launch::Launcher;
use crate::parallel::collective::{Collective, PEER_FAILED};
use anyhow::{Result, anyhow, bail, ensure};
use cudarc::driver::{CudaEvent, CudaStream};
use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Why replicas cannot run without NCCL, and what to do.
pub const NO_NCCL: &str = "data-parallel replicas (more GPUs in --devices than the network has towers) need NCCL, and libnccl (libnccl.so.2) could not be loaded on this machine: install NCCL (the libnccl2 package, or the nvidia-nccl wheel's lib/ folder on LD_LIBRARY_PATH), or list one GPU per tower";

/// The names tried, in order.
const LIBRARY_NAMES: [&str; 2] = ["libnccl.so.2", "libnccl.so"];

type NcclResult = c_int;
const NCCL_SUCCESS: NcclResult = 0;
const NCCL_REMOTE_ERROR: NcclResult = 6;
const NCCL_IN_PROGRESS: NcclResult = 7;
const NCCL_FLOAT32: c_int = 7;
const NCCL_AVG: c_int = 4;
const UNIQUE_ID_BYTES: usize = 128;
type Comm = *mut c_void;

/// `ncclUniqueId`.
#[repr(C)]
#[derive(Clone, Copy)]
struct UniqueId {
    internal: [c_char; UNIQUE_ID_BYTES],
}

/// `ncclConfig_t` as NCCL 2.17 laid it out: a library reads as many fields as `size` and
/// `version` say, so this is understood by every NCCL since.
#[repr(C)]
struct Config {
    size: usize,
    magic: u32,
    version: u32,
    blocking: c_int,
    cga_cluster_size: c_int,
    min_ctas: c_int,
    max_ctas: c_int,
    net_name: *const c_char,
}

impl Config {
    /// NCCL_CONFIG_INITIALIZER with `blocking = 0`.
    fn non_blocking() -> Config {
        const UNDEF: c_int = c_int::MIN;
        Config {
            size: std::mem::size_of::<Config>(),
            magic: 0xcafe_beef,
            version: 2 * 10000 + 17 * 100,
            blocking: 0,
            cga_cluster_size: UNDEF,
            min_ctas: UNDEF,
            max_ctas: UNDEF,
            net_name: std::ptr::null(),
        }
    }
}

/// The functions the engine calls.
struct Nccl {
    _library: libloading::Library,
    get_version: unsafe extern "C" fn(*mut c_int) -> NcclResult,
    get_unique_id: unsafe extern "C" fn(*mut UniqueId) -> NcclResult,
    comm_init_rank_config:
        unsafe extern "C" fn(*mut Comm, c_int, UniqueId, c_int, *mut Config) -> NcclResult,
    comm_get_async_error: unsafe extern "C" fn(Comm, *mut NcclResult) -> NcclResult,
    comm_abort: unsafe extern "C" fn(Comm) -> NcclResult,
    group_start: unsafe extern "C" fn() -> NcclResult,
    group_end: unsafe extern "C" fn() -> NcclResult,
    #[allow(clippy::type_complexity)]
    all_reduce: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        c_int,
        c_int,
        Comm,
        *mut c_void,
    ) -> NcclResult,
    get_error_string: unsafe extern "C" fn(NcclResult) -> *const c_char,
}

fn load() -> Result<Nccl, String> {
    let mut tried = Vec::new();
    let library = LIBRARY_NAMES
        .iter()
        .find_map(|name| {
            // SAFETY: loading NCCL runs its initialisers, which expect nothing of us.
            match unsafe { libloading::Library::new(*name) } {
                Ok(l) => Some(l),
                Err(e) => {
                    tried.push(format!("{name}: {e}"));
                    None
                }
            }
        })
        .ok_or_else(|| format!("{NO_NCCL} (tried {})", tried.join("; ")))?;
    macro_rules! symbol {
        ($name:literal) => {
            // SAFETY: the symbol is NCCL's function of that name, whose C signature the field's
            // type states (nccl.h).
            *unsafe { library.get(concat!($name, "\0").as_bytes()) }
                .map_err(|e| format!("libnccl has no {}: {e} (NCCL 2.17 or newer is needed)", $name))?
        };
    }
    Ok(Nccl {
        get_version: symbol!("ncclGetVersion"),
        get_unique_id: symbol!("ncclGetUniqueId"),
        comm_init_rank_config: symbol!("ncclCommInitRankConfig"),
        comm_get_async_error: symbol!("ncclCommGetAsyncError"),
        comm_abort: symbol!("ncclCommAbort"),
        group_start: symbol!("ncclGroupStart"),
        group_end: symbol!("ncclGroupEnd"),
        all_reduce: symbol!("ncclAllReduce"),
        get_error_string: symbol!("ncclGetErrorString"),
        _library: library,
    })
}

/// NCCL, loaded once per process, or why it cannot be.
fn nccl() -> Result<&'static Nccl> {
    static NCCL: OnceLock<Result<Nccl, String>> = OnceLock::new();
    NCCL.get_or_init(load).as_ref().map_err(|e| anyhow!("{e}"))
}

/// Whether libnccl can be loaded (with every function the engine calls).
pub fn library_present() -> bool {
    nccl().is_ok()
}

/// `what: NCCL error N (its description)` unless `r` is success.
fn check(what: &str, r: NcclResult) -> Result<()> {
    if r == NCCL_SUCCESS {
        return Ok(());
    }
    bail!("{what}: {}", describe(r))
}

fn describe(r: NcclResult) -> String {
    let text = nccl()
        .ok()
        // SAFETY: NCCL returns a static NUL-terminated string for any code.
        .map(|n| unsafe { (n.get_error_string)(r) })
        .filter(|p| !p.is_null())
        // SAFETY: as above.
        .map(|p| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("NCCL error {r} ({text})")
}

/// NCCL's version (`2.27.3`), or why it is not usable.
pub fn version() -> Result<String> {
    let n = nccl()?;
    let mut v = 0;
    // SAFETY: writes one int.
    check("ncclGetVersion", unsafe { (n.get_version)(&mut v) })?;
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
    let n = nccl()?;
    let mut id = UniqueId {
        internal: [0; UNIQUE_ID_BYTES],
    };
    // SAFETY: writes one id.
    check("ncclGetUniqueId", unsafe { (n.get_unique_id)(&mut id) })?;
    Ok(id.internal.iter().map(|&c| c as u8).collect())
}

/// One tower's link to the same tower of the other replicas.
struct TowerComm {
    /// `None` once aborted.
    comm: Option<Comm>,
    stream: Arc<CudaStream>,
    /// The point of `stream` after this step's last all-reduce.
    done: Option<CudaEvent>,
}

// SAFETY: an NCCL communicator may be used from any one thread at a time; a TowerComm is owned
// by one replica's thread.
unsafe impl Send for TowerComm {}

impl TowerComm {
    /// Aborts the communicator: its queued work is dropped and nothing will wait for it.
    fn abort(&mut self) {
        if crate::planted::planted("nccl-no-abort") {
            return;
        }
        if let (Some(comm), Ok(n)) = (self.comm.take(), nccl()) {
            // SAFETY: a communicator of ours, aborted once (`take`).
            unsafe { (n.comm_abort)(comm) };
        }
    }
}

impl Drop for TowerComm {
    fn drop(&mut self) {
        // Abort, not destroy: destroy waits for the peers, which may be gone.
        self.abort();
    }
}

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
                bail!("{what}: {} ({PEER_FAILED}: it gave up on the set-up)", describe(r));
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
        bufs: &mut [&mut super::CudaBuf],
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
