//! NCCL for data-parallel replicas (issue #16), loaded at run time under the name NCCL installs:
//! `libnccl.so.2` (the libnccl2 package and the nvidia-nccl wheels put no other on a machine;
//! the `libnccl.so` link comes only with the development package), then `libnccl.so`. cudarc's
//! loader looks for neither `.so.2` nor the link first, so the engine binds the few functions it
//! calls itself; a missing library or symbol is an error naming it, never a panic.
//!
//! This is the binding alone: `dist::nccl` builds the replicas' collective on it.

use anyhow::{Result, anyhow, bail};
use cudarc::driver::{CudaEvent, CudaStream};
use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::{Arc, OnceLock};

/// Why replicas cannot run without NCCL, and what to do.
pub const NO_NCCL: &str = "data-parallel replicas (more GPUs in --devices than the network has towers) need NCCL, and libnccl (libnccl.so.2) could not be loaded on this machine: install NCCL (the libnccl2 package, or the nvidia-nccl wheel's lib/ folder on LD_LIBRARY_PATH), or list one GPU per tower";

/// The names tried, in order.
const LIBRARY_NAMES: [&str; 2] = ["libnccl.so.2", "libnccl.so"];

pub(crate) type NcclResult = c_int;
pub(crate) const NCCL_SUCCESS: NcclResult = 0;
pub(crate) const NCCL_REMOTE_ERROR: NcclResult = 6;
pub(crate) const NCCL_IN_PROGRESS: NcclResult = 7;
pub(crate) const NCCL_FLOAT32: c_int = 7;
pub(crate) const NCCL_AVG: c_int = 4;
pub(crate) const UNIQUE_ID_BYTES: usize = 128;
pub(crate) type Comm = *mut c_void;

/// `ncclUniqueId`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct UniqueId {
    pub(crate) internal: [c_char; UNIQUE_ID_BYTES],
}

/// `ncclConfig_t` as NCCL 2.17 laid it out: a library reads as many fields as `size` and
/// `version` say, so this is understood by every NCCL since.
#[repr(C)]
pub(crate) struct Config {
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
    pub(crate) fn non_blocking() -> Config {
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
pub(crate) struct Nccl {
    _library: libloading::Library,
    pub(crate) get_version: unsafe extern "C" fn(*mut c_int) -> NcclResult,
    pub(crate) get_unique_id: unsafe extern "C" fn(*mut UniqueId) -> NcclResult,
    pub(crate) comm_init_rank_config:
        unsafe extern "C" fn(*mut Comm, c_int, UniqueId, c_int, *mut Config) -> NcclResult,
    pub(crate) comm_get_async_error: unsafe extern "C" fn(Comm, *mut NcclResult) -> NcclResult,
    pub(crate) comm_abort: unsafe extern "C" fn(Comm) -> NcclResult,
    pub(crate) group_start: unsafe extern "C" fn() -> NcclResult,
    pub(crate) group_end: unsafe extern "C" fn() -> NcclResult,
    #[allow(clippy::type_complexity)]
    pub(crate) all_reduce: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        c_int,
        c_int,
        Comm,
        *mut c_void,
    ) -> NcclResult,
    pub(crate) get_error_string: unsafe extern "C" fn(NcclResult) -> *const c_char,
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
            *unsafe { library.get(concat!($name, "\0").as_bytes()) }.map_err(|e| {
                format!(
                    "libnccl has no {}: {e} (NCCL 2.17 or newer is needed)",
                    $name
                )
            })?
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
pub(crate) fn nccl() -> Result<&'static Nccl> {
    static NCCL: OnceLock<Result<Nccl, String>> = OnceLock::new();
    NCCL.get_or_init(load).as_ref().map_err(|e| anyhow!("{e}"))
}

/// Whether libnccl can be loaded (with every function the engine calls).
pub fn library_present() -> bool {
    nccl().is_ok()
}

/// `what: NCCL error N (its description)` unless `r` is success.
pub(crate) fn check(what: &str, r: NcclResult) -> Result<()> {
    if r == NCCL_SUCCESS {
        return Ok(());
    }
    bail!("{what}: {}", describe(r))
}

pub(crate) fn describe(r: NcclResult) -> String {
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

/// A new NCCL unique id (rank 0 makes it and hands it out; see `dist::rendezvous`).
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
pub(crate) struct TowerComm {
    /// `None` once aborted.
    pub(crate) comm: Option<Comm>,
    pub(crate) stream: Arc<CudaStream>,
    /// The point of `stream` after this step's last all-reduce.
    pub(crate) done: Option<CudaEvent>,
}

// SAFETY: an NCCL communicator may be used from any one thread at a time; a TowerComm is owned
// by one replica's thread.
unsafe impl Send for TowerComm {}

impl TowerComm {
    /// Aborts the communicator: its queued work is dropped and nothing will wait for it.
    pub(crate) fn abort(&mut self) {
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
