//! `CudaLauncher`: the `Launcher` of one tower on one GPU — a stream of its own on the GPU's
//! shared context. Two towers on one GPU are two launchers on the same context with different
//! streams; on two GPUs, two contexts. Both are the same code path.
//!
//! Ordering rules (cudarc's per-buffer event tracking is off, see `gpu.rs`):
//! 1. A buffer belongs to the launcher that allocated it (its stream), and only that stream
//!    writes it: kernels are launched with this launcher's buffers only, and `copy_2d` refuses a
//!    destination of another stream. Work on one stream runs in order, so within a tower no
//!    synchronisation is needed. Freeing is stream-ordered too (cudarc frees a buffer with
//!    `cuMemFreeAsync` on its own stream).
//! 2. The one cross-stream access is `copy_2d` from another launcher's buffer (the towers'
//!    exchange). It is ordered both ways with events: the destination stream first waits for
//!    everything queued so far on the source's stream (so the source's writes are done), and
//!    after the copy the source's stream waits for the destination's (so a later write or free
//!    of the source cannot overtake the copy still reading it). An exchange therefore joins the
//!    two towers' streams, which the model's data flow does anyway.
//! 3. `download` reads on the buffer's own stream and waits for it; `synchronize` waits for this
//!    launcher's stream.
//! 4. `copy_2d_async` from another stream's buffer runs on this launcher's copy stream instead,
//!    after everything queued so far on both compute streams, and neither compute stream waits
//!    for it until its `join_copies`: until then the tower computes on (the network queues its
//!    filter gradients there), reading neither the destination nor writing the source.
//! 5. `upload_async` (the next training batch) copies into the pinned host buffer its device
//!    buffer has in its input slot, which first waits for that buffer's previous copy to finish
//!    (an event recorded after it), then runs the host-to-device copy on the copy stream after
//!    the event `input_slot_free` recorded on the compute stream (the last work reading the
//!    slot) and, for a device buffer new to the slot, after the compute stream's work so far
//!    (its allocation), and leaves its completion to `join_copies`: the step computing on the
//!    other slot runs on.

mod buffer;
mod copy;
mod upload;

pub use buffer::CudaBuf;

use buffer::{pending_copies, stream_key};
use upload::InputSlot;

use super::blas::{self, Blas};
use super::driver::{CheckDriver, error_text};
use super::gpu::Gpu;
use super::memory::MemoryStats;
use crate::device::Block;
use crate::device::launch::{Kernel, LaunchConfig, Launcher, Sgemm};
use anyhow::{Result, bail, ensure};
use cudarc::driver::{CudaStream, sys};
use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Clone)]
pub struct CudaLauncher {
    gpu: Arc<Gpu>,
    stream: Arc<CudaStream>,
    /// The stream's number on its GPU, for descriptions.
    stream_no: usize,
    /// Where `copy_2d_async` runs, so an exchange overlaps the tower's compute (rule 4).
    copy_stream: Arc<CudaStream>,
    /// cuBLAS on this stream for the fc layers, or why they run on our kernels instead.
    blas: Result<Arc<Blas>, Arc<str>>,
    /// The double-buffered input's two slots (rule 5).
    slots: Arc<Mutex<[InputSlot; 2]>>,
}

impl std::fmt::Debug for CudaLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Dynamic shared memory a kernel may use without opting in (`cuFuncSetAttribute`).
const DEFAULT_SHARED_LIMIT: u32 = 48 * 1024;

/// `ALEXNET_CUDA_CHECK_LAUNCHES=1`: wait for every launch and report a failure against the kernel
/// that caused it (a kernel's fault otherwise surfaces at the next synchronising call).
fn check_every_launch() -> bool {
    static CHECK: OnceLock<bool> = OnceLock::new();
    *CHECK.get_or_init(|| std::env::var("ALEXNET_CUDA_CHECK_LAUNCHES").is_ok_and(|v| v == "1"))
}

impl CudaLauncher {
    /// A launcher with a new stream on GPU `ordinal`. Fails with a clear message where there
    /// is no driver, no such GPU, or no GPU kernels in this build.
    pub fn new(ordinal: usize) -> Result<Self> {
        super::driver::init()?;
        if !crate::fatbins::KERNELS_EMBEDDED {
            bail!("{}", super::NO_KERNELS);
        }
        Self::on(Gpu::get(ordinal)?)
    }

    /// Another launcher on the same GPU with a stream of its own (a second tower on one GPU).
    pub fn another_stream(&self) -> Result<Self> {
        Self::on(self.gpu.clone())
    }

    fn on(gpu: Arc<Gpu>) -> Result<Self> {
        let (stream, stream_no) = gpu.new_stream()?;
        let copy_stream = gpu
            .context()
            .new_stream()
            .or_fail(|| format!("cuda:{}: creating a copy stream", gpu.ordinal()))?;
        // Where cuBLAS is missing or cannot start on this GPU, the fc layers run on the
        // engine's own GEMM kernels; the launcher's description (in the run's log) says why.
        let blas = match blas::why_not_cublas() {
            Some(why) => Err(Arc::from(why)),
            None => match Blas::new(&gpu, &stream) {
                Ok(b) => Ok(Arc::new(b)),
                Err(e) => Err(Arc::from(format!("cublasCreate failed ({e:#})").as_str())),
            },
        };
        Ok(CudaLauncher {
            gpu,
            stream,
            stream_no,
            copy_stream,
            blas,
            slots: Arc::default(),
        })
    }

    /// The same stream with the fc layers on our own GEMM kernels instead of cuBLAS (to test and
    /// time those kernels on a GPU).
    pub fn without_cublas(&self) -> Self {
        CudaLauncher {
            blas: Err(Arc::from("requested")),
            ..self.clone()
        }
    }

    /// Whether the fc layers run on cuBLAS.
    pub fn uses_cublas(&self) -> bool {
        self.blas.is_ok()
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    pub fn ordinal(&self) -> usize {
        self.gpu.ordinal()
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Bytes this process holds on this launcher's GPU, now and at the peak.
    pub fn memory(&self) -> MemoryStats {
        self.gpu.memory().stats()
    }

    fn what(&self) -> String {
        format!("cuda:{} stream {}", self.ordinal(), self.stream_no)
    }

    fn new_buf(&self, len: usize) -> Result<CudaBuf> {
        // cudarc multiplies without a check; a wrapped size would be a short buffer.
        ensure!(
            len <= isize::MAX as usize / 4,
            "{}: a buffer of {len} floats is beyond any address space",
            self.what()
        );
        let slice = self.stream.alloc_zeros::<f32>(len.max(1)).or_fail(|| {
            let now = self.memory().current;
            format!(
                "{}: allocating {len} floats ({}; this process holds {} on the GPU)",
                self.what(),
                super::driver::gb(4 * len),
                super::driver::gb(now)
            )
        })?;
        let counter = self.gpu.memory().clone();
        counter.add(slice.num_bytes());
        Ok(CudaBuf {
            slice,
            len,
            counter,
        })
    }

    /// Starts a timer on this launcher's stream (see `EventTimer`).
    pub fn start_timer(&self) -> Result<super::EventTimer> {
        super::EventTimer::start(&self.stream)
    }
}

impl Launcher for CudaLauncher {
    type Buf = CudaBuf;

    fn multiprocessors(&self) -> usize {
        self.gpu.multiprocessors()
    }

    fn describe(&self) -> String {
        let fc = match &self.blas {
            Ok(_) => "fc on cuBLAS".to_string(),
            Err(why) => format!("fc on own kernels: {why}"),
        };
        format!(
            "cuda:{} {} (stream {}, {fc})",
            self.ordinal(),
            self.gpu.name(),
            self.stream_no
        )
    }

    fn alloc(&self, len: usize) -> Result<CudaBuf> {
        self.new_buf(len)
    }

    fn upload(&self, data: &[f32]) -> Result<CudaBuf> {
        let mut buf = self.new_buf(data.len())?;
        if !data.is_empty() {
            // The driver documents an asynchronous copy from pageable memory as one that "might
            // be synchronous": it may read `data` when the copy runs. `data` is the caller's to
            // reuse once this returns, so wait for the copy (the staged input, which must not
            // wait, goes through pinned memory: `upload_async`).
            self.stream
                .memcpy_htod(data, &mut buf.slice)
                .and_then(|()| self.stream.synchronize())
                .or_fail(|| format!("{}: uploading {} floats", self.what(), data.len()))?;
        }
        Ok(buf)
    }

    fn download(&self, buf: &CudaBuf) -> Result<Vec<f32>> {
        let stream = buf.stream();
        let mut out = vec![0.0f32; buf.slice.len()];
        stream
            .memcpy_dtoh(&buf.slice, &mut out)
            .and_then(|()| stream.synchronize())
            .or_fail(|| format!("cuda:{}: downloading {} floats", buf.ordinal(), buf.len))?;
        out.truncate(buf.len);
        Ok(out)
    }

    fn len(&self, buf: &CudaBuf) -> usize {
        buf.len
    }

    fn device_ptr(&self, buf: &CudaBuf) -> u64 {
        buf.ptr()
    }

    fn copy_2d(
        &self,
        src: &CudaBuf,
        from: Block,
        dst: &mut CudaBuf,
        to: Block,
        width: usize,
        rows: usize,
    ) -> Result<()> {
        self.copy(src, from, dst, to, width, rows, false)
    }

    fn copy_2d_async(
        &self,
        src: &CudaBuf,
        from: Block,
        dst: &mut CudaBuf,
        to: Block,
        width: usize,
        rows: usize,
    ) -> Result<()> {
        self.copy(src, from, dst, to, width, rows, true)
    }

    fn input_slot_free(&self, slot: usize) -> Result<()> {
        ensure!(slot < 2, "input slot {slot}: there are two, 0 and 1");
        let free = self
            .stream
            .record_event(None)
            .or_fail(|| format!("{}: marking input slot {slot} free", self.what()))?;
        self.slots.lock().unwrap_or_else(|p| p.into_inner())[slot].free = Some(free);
        Ok(())
    }

    fn upload_async(&self, data: &[f32], dst: &mut CudaBuf, slot: usize) -> Result<()> {
        self.stage_upload(data, dst, slot)
    }

    fn join_copies(&self) -> Result<()> {
        let events = pending_copies()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&stream_key(&self.stream))
            .unwrap_or_default();
        for e in events {
            self.stream
                .wait(&e)
                .or_fail(|| format!("{}: joining its exchange copies", self.what()))?;
        }
        Ok(())
    }

    fn launch(&self, kernel: Kernel, cfg: LaunchConfig, args: &[*mut c_void]) -> Result<()> {
        let describe = || {
            format!(
                "{}: launching {}::{} (grid {:?}, block {:?}, {} shared bytes)",
                self.what(),
                kernel.module,
                kernel.name,
                cfg.grid,
                cfg.block,
                cfg.shared_bytes
            )
        };
        let f = self
            .gpu
            .function(kernel)
            .map_err(|e| e.context(describe()))?;
        if let Some(n) = f.params {
            ensure!(
                args.len() == n,
                "{}: {} arguments given, the kernel takes {n}",
                describe(),
                args.len()
            );
        }
        self.gpu.bind()?;
        if cfg.shared_bytes > DEFAULT_SHARED_LIMIT {
            // Above 48 KiB a kernel must opt in to dynamic shared memory (up to the GPU's
            // per-block maximum; beyond it the driver refuses, and says so).
            // SAFETY: `f.raw` is a valid function of the bound context.
            unsafe {
                sys::cuFuncSetAttribute(
                    f.raw,
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    i32::try_from(cfg.shared_bytes).unwrap_or(i32::MAX),
                )
            }
            .result()
            .or_fail(|| format!("{}: allowing that much shared memory", describe()))?;
        }
        // cuLaunchKernel copies the values behind `args` before it returns, so they need only
        // outlive this call (they do: the caller holds them).
        let mut args = args.to_vec();
        let [gx, gy, gz] = cfg.grid;
        let [bx, by, bz] = cfg.block;
        // SAFETY: by the `Launcher::launch` contract each `args[i]` points to a value of the
        // kernel's i-th parameter type and every device address among them lies in a live
        // buffer of this launcher, of the size the kernel uses; the count was checked above
        // where the driver can tell it.
        let rc = unsafe {
            sys::cuLaunchKernel(
                f.raw,
                gx,
                gy,
                gz,
                bx,
                by,
                bz,
                cfg.shared_bytes,
                self.stream.cu_stream(),
                args.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        if let Err(e) = rc.result() {
            bail!("{}: {}", describe(), error_text(&e));
        }
        if check_every_launch() {
            self.stream
                .synchronize()
                .or_fail(|| format!("{} (ALEXNET_CUDA_CHECK_LAUNCHES)", describe()))?;
        }
        Ok(())
    }

    fn vendor_sgemm(&self, g: &Sgemm) -> Result<bool> {
        match &self.blas {
            Ok(blas) => blas.sgemm(g).map(|()| true),
            Err(_) => Ok(false),
        }
    }

    fn memory_peak(&self) -> Option<usize> {
        Some(self.memory().peak)
    }

    fn synchronize(&self) -> Result<()> {
        self.join_copies()?;
        self.stream.synchronize().or_fail(|| {
            format!(
                "{}: synchronising (a kernel fault shows here; ALEXNET_CUDA_CHECK_LAUNCHES=1 names the kernel)",
                self.what()
            )
        })?;
        // Errors cudarc could only record (e.g. in a buffer's asynchronous free).
        self.gpu
            .context()
            .check_err()
            .or_fail(|| format!("{}: an earlier asynchronous operation", self.what()))
    }
}
