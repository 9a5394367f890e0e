//! One GPU as this process uses it: its context (one per device, shared by every launcher on it),
//! the kernel modules loaded into it (lazily, once, from the embedded fatbins), the functions
//! looked up in them, its memory counter, and peer access to other GPUs.
//!
//! Stream ordering is ours, not cudarc's: the context is created with cudarc's per-buffer event
//! tracking turned off, because our kernels receive raw device addresses that cudarc never sees,
//! so its events could not describe them. The rules `CudaLauncher` keeps instead are written
//! there.

use super::driver::{self, CheckDriver, error_text};
use super::memory::{self, Counter};
use crate::device::launch::Kernel;
use anyhow::{Result, anyhow, bail};
use cudarc::driver::{CudaContext, CudaStream, sys};
use std::collections::{BTreeSet, HashMap};
use std::ffi::{CString, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// A loaded `cuda/<module>.cu` image; unloaded when the last function from it is gone.
struct Module {
    raw: sys::CUmodule,
    ctx: Arc<CudaContext>,
}

// SAFETY: a CUmodule handle may be used from any thread once its context is bound there, which
// every use here does.
unsafe impl Send for Module {}
unsafe impl Sync for Module {}

impl Drop for Module {
    fn drop(&mut self) {
        // Nothing can report an error from here; binding fails on an error cudarc recorded
        // earlier, so drop that first (the context is going away with its last module).
        let _ = self.ctx.check_err();
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: loaded by cuModuleLoadData in this context and unloaded only here.
            let _ = unsafe { sys::cuModuleUnload(self.raw) };
        }
    }
}

/// A kernel's function handle, keeping its module loaded.
#[derive(Clone)]
pub struct Function {
    pub raw: sys::CUfunction,
    /// The kernel's parameter count, if the driver could say (`cuFuncGetParamInfo`).
    pub params: Option<usize>,
    _module: Arc<Module>,
}

// SAFETY: as for `Module`.
unsafe impl Send for Function {}
unsafe impl Sync for Function {}

pub struct Gpu {
    ordinal: usize,
    name: String,
    compute_capability: (i32, i32),
    multiprocessors: usize,
    ctx: Arc<CudaContext>,
    modules: Mutex<HashMap<&'static str, Arc<Module>>>,
    functions: Mutex<HashMap<Kernel, Function>>,
    /// GPUs whose memory this one may access directly.
    peers: Mutex<BTreeSet<usize>>,
    streams_made: AtomicUsize,
    memory: Arc<Counter>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cuda:{} {}", self.ordinal, self.name)
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        // Let queued kernels finish before their modules are unloaded (the fields drop next).
        // A stale recorded error would stop `synchronize` before it waits: clear it first.
        let _ = self.ctx.check_err();
        let _ = self.ctx.synchronize();
    }
}

/// The live `Gpu` of each ordinal: one context per device per process, however many launchers
/// use it. Weak, so a GPU's context and modules go when its last launcher and buffer do.
fn registry() -> &'static Mutex<HashMap<usize, Weak<Gpu>>> {
    static GPUS: OnceLock<Mutex<HashMap<usize, Weak<Gpu>>>> = OnceLock::new();
    GPUS.get_or_init(Default::default)
}

impl Gpu {
    /// GPU `ordinal`, set up on first use.
    pub fn get(ordinal: usize) -> Result<Arc<Gpu>> {
        let mut gpus = registry().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(gpu) = gpus.get(&ordinal).and_then(Weak::upgrade) {
            return Ok(gpu);
        }
        let gpu = Arc::new(Gpu::open(ordinal)?);
        gpus.insert(ordinal, Arc::downgrade(&gpu));
        Ok(gpu)
    }

    fn open(ordinal: usize) -> Result<Gpu> {
        let info = driver::gpu_info(ordinal)?;
        let ctx = CudaContext::new(ordinal)
            .or_fail(|| format!("cuda:{ordinal}: creating its context"))?;
        // SAFETY: called before any buffer exists in this context (this is its first use in the
        // process); from here on the launchers order streams themselves (see `CudaLauncher`).
        unsafe { ctx.disable_event_tracking() };
        if ctx.has_async_alloc() {
            // Keep freed memory in the pool instead of returning it to the driver at every
            // synchronisation: the training loop frees and reallocates small buffers each step.
            let pool = default_pool(&ctx)?;
            let mut keep = u64::MAX;
            // SAFETY: the attribute takes a cuuint64_t.
            unsafe {
                sys::cuMemPoolSetAttribute(
                    pool,
                    sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                    &mut keep as *mut u64 as *mut c_void,
                )
            }
            .result()
            .or_fail(|| format!("cuda:{ordinal}: setting its memory pool's release threshold"))?;
        }
        Ok(Gpu {
            ordinal,
            name: info.name,
            compute_capability: info.compute_capability,
            multiprocessors: info.multiprocessors.max(1) as usize,
            ctx,
            modules: Mutex::default(),
            functions: Mutex::default(),
            peers: Mutex::default(),
            streams_made: AtomicUsize::new(0),
            memory: memory::counter(ordinal),
        })
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// Streaming multiprocessors: what a launch's blocks are sized to fill in whole waves.
    pub fn multiprocessors(&self) -> usize {
        self.multiprocessors
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    pub fn memory(&self) -> &Arc<Counter> {
        &self.memory
    }

    /// A new non-blocking stream and its number on this GPU (for descriptions).
    pub fn new_stream(&self) -> Result<(Arc<CudaStream>, usize)> {
        let stream = self
            .ctx
            .new_stream()
            .or_fail(|| format!("cuda:{}: creating a stream", self.ordinal))?;
        Ok((stream, self.streams_made.fetch_add(1, Ordering::Relaxed)))
    }

    /// The function of `kernel`, loading its module on first use.
    pub fn function(&self, kernel: Kernel) -> Result<Function> {
        let mut functions = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = functions.get(&kernel) {
            return Ok(f.clone());
        }
        let module = self.module(kernel.module)?;
        let name = CString::new(kernel.name)
            .map_err(|_| anyhow!("kernel name {:?} contains a NUL byte", kernel.name))?;
        self.bind()?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: `module.raw` is loaded in this (bound) context; writes one handle.
        let rc = unsafe { sys::cuModuleGetFunction(&mut raw, module.raw, name.as_ptr()) };
        if let Err(e) = rc.result() {
            if e.0 == sys::CUresult::CUDA_ERROR_NOT_FOUND {
                bail!(
                    "cuda:{}: no kernel {}::{} (cuda/{}.cu has no extern \"C\" __global__ of that name)",
                    self.ordinal,
                    kernel.module,
                    kernel.name,
                    kernel.module
                );
            }
            bail!(
                "cuda:{}: looking up {}::{}: {}",
                self.ordinal,
                kernel.module,
                kernel.name,
                error_text(&e)
            );
        }
        let f = Function {
            raw,
            params: param_count(raw),
            _module: module,
        };
        functions.insert(kernel, f.clone());
        Ok(f)
    }

    fn module(&self, module: &'static str) -> Result<Arc<Module>> {
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = modules.get(module) {
            return Ok(m.clone());
        }
        if !crate::fatbins::KERNELS_EMBEDDED {
            bail!("{}", super::NO_KERNELS);
        }
        let Some(image) = crate::fatbins::fatbin(module) else {
            let known: Vec<_> = crate::fatbins::FATBINS.iter().map(|(m, _)| *m).collect();
            bail!("no GPU module {module:?} in this build (cuda/{module}.cu; embedded: {known:?})");
        };
        // `include_bytes!` data is byte-aligned; the driver reads the fatbin header as 64-bit
        // words, so load from an 8-byte-aligned copy (the driver copies the image in turn).
        let mut aligned = vec![0u64; image.len().div_ceil(8)];
        // SAFETY: `aligned` holds at least `image.len()` bytes and does not overlap `image`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                image.as_ptr(),
                aligned.as_mut_ptr() as *mut u8,
                image.len(),
            )
        };
        self.bind()?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: `aligned` is a complete fatbin image produced by nvcc; writes one handle.
        let rc = unsafe { sys::cuModuleLoadData(&mut raw, aligned.as_ptr() as *const c_void) };
        if let Err(e) = rc.result() {
            let (major, minor) = self.compute_capability;
            let archs: Vec<String> = crate::fatbins::CUDA_ARCHS
                .iter()
                .map(|a| format!("sm_{a}"))
                .collect();
            bail!(
                "cuda:{} ({}, compute capability {major}.{minor}) cannot load the embedded kernels of cuda/{module}.cu: {}. \
                 This build has native code for {} and PTX for the lowest; rebuild with ALEXNET_CUDA_ARCHS including {major}{minor}, \
                 or with an nvcc no newer than the driver (see README)",
                self.ordinal,
                self.name,
                error_text(&e),
                archs.join(", ")
            );
        }
        let m = Arc::new(Module {
            raw,
            ctx: self.ctx.clone(),
        });
        modules.insert(module, m.clone());
        Ok(m)
    }

    /// Makes this GPU's context current on the calling thread (every raw driver call needs it).
    pub fn bind(&self) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .or_fail(|| format!("cuda:{}: making its context current", self.ordinal))
    }

    /// Lets this GPU read and write `peer`'s memory directly, where the hardware allows:
    /// `cuCtxEnablePeerAccess` for ordinary allocations and, since cudarc allocates from the
    /// device's memory pool (`cuMemAllocAsync`), `cuMemPoolSetAccess` on `peer`'s pool, which
    /// peer access does not cover. Returns whether access is now direct; where it is not,
    /// copies between the two still work, staged by the driver.
    pub fn enable_peer_access(&self, peer: &Gpu) -> Result<bool> {
        if peer.ordinal == self.ordinal {
            return Ok(false);
        }
        if self
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&peer.ordinal)
        {
            return Ok(true);
        }
        if !driver::can_access_peer(self.ordinal, peer.ordinal)? {
            return Ok(false);
        }
        let what = || {
            format!(
                "cuda:{} -> cuda:{}: enabling peer access",
                self.ordinal, peer.ordinal
            )
        };
        self.bind()?;
        // SAFETY: both contexts are alive; this context is current.
        match unsafe { sys::cuCtxEnablePeerAccess(peer.ctx.cu_ctx(), 0) }.result() {
            Ok(()) => {}
            Err(e) if e.0 == sys::CUresult::CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED => {}
            Err(e) => bail!("{}: {}", what(), error_text(&e)),
        }
        if peer.ctx.has_async_alloc() {
            let desc = sys::CUmemAccessDesc {
                location: sys::CUmemLocation {
                    type_: sys::CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE,
                    id: self.ctx.cu_device(),
                },
                flags: sys::CUmemAccess_flags::CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
            };
            let pool = default_pool(&peer.ctx)?;
            // SAFETY: one valid descriptor for a valid pool.
            unsafe { sys::cuMemPoolSetAccess(pool, &desc, 1) }
                .result()
                .or_fail(|| format!("{} (memory pool)", what()))?;
        }
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer.ordinal);
        Ok(true)
    }
}

/// The pool `cuMemAllocAsync` draws from on `ctx`'s device (the device's current pool).
fn default_pool(ctx: &CudaContext) -> Result<sys::CUmemoryPool> {
    let mut pool = std::ptr::null_mut();
    // SAFETY: the device is valid; writes one handle.
    unsafe { sys::cuDeviceGetMemPool(&mut pool, ctx.cu_device()) }
        .result()
        .or_fail(|| format!("cuda:{}: cuDeviceGetMemPool", ctx.ordinal()))?;
    Ok(pool)
}

/// The number of parameters `f` takes: `cuFuncGetParamInfo` answers for every index below it
/// and fails with CUDA_ERROR_INVALID_VALUE at it. `None` if the driver cannot say.
fn param_count(f: sys::CUfunction) -> Option<usize> {
    // Far above any kernel here; a bound so a misbehaving driver cannot loop forever.
    const MOST: usize = 256;
    for i in 0..MOST {
        let (mut offset, mut size) = (0usize, 0usize);
        // SAFETY: `f` is a valid function; writes two integers.
        match unsafe { sys::cuFuncGetParamInfo(f, i, &mut offset, &mut size) }.result() {
            Ok(()) => {}
            Err(e) if e.0 == sys::CUresult::CUDA_ERROR_INVALID_VALUE => return Some(i),
            Err(_) => return None,
        }
    }
    None
}
