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

use super::blas::{self, Blas};
use super::driver::{CheckDriver, error_text};
use super::gpu::Gpu;
use super::memory::{Counter, MemoryStats};
use crate::device::launch::{Kernel, LaunchConfig, Launcher, Sgemm};
use crate::device::{Block, check_2d_blocks};
use anyhow::{Result, bail, ensure};
use cudarc::driver::{CudaEvent, CudaSlice, CudaStream, DevicePtr, PinnedHostSlice, sys};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

/// A buffer of `f32` on a GPU, owned by the launcher (stream) that allocated it.
pub struct CudaBuf {
    /// At least one element: the driver refuses empty allocations, so an empty buffer holds one
    /// unused float.
    slice: CudaSlice<f32>,
    len: usize,
    counter: Arc<Counter>,
}

impl CudaBuf {
    fn bytes(&self) -> usize {
        self.slice.num_bytes()
    }

    fn ptr(&self) -> u64 {
        // With event tracking off, the guard records nothing.
        let (ptr, _guard) = self.slice.device_ptr(self.slice.stream());
        ptr
    }

    fn stream(&self) -> &Arc<CudaStream> {
        self.slice.stream()
    }

    /// The GPU it lives on.
    pub fn ordinal(&self) -> usize {
        self.slice.ordinal()
    }
}

impl Drop for CudaBuf {
    fn drop(&mut self) {
        self.counter.sub(self.bytes());
        // cudarc frees the buffer on its stream next. A copy on a copy stream into or out of it
        // that the stream has not joined yet (a staged batch dropped before its step, an
        // exchange abandoned by an error) must come first: the free waits for every copy its
        // stream has pending (rules 4 and 5). Errors cannot be reported from here; cudarc
        // records the free's own.
        let stream = self.slice.stream();
        if let Some(events) = pending_copies()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&stream_key(stream))
        {
            for e in events {
                let _ = stream.wait(e);
            }
        }
    }
}

impl std::fmt::Debug for CudaBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaBuf(cuda:{}, {} floats)", self.ordinal(), self.len)
    }
}

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

/// One input slot: the point of the compute stream after which nothing reads its device
/// buffers, and where each of them is staged on the host.
#[derive(Default)]
struct InputSlot {
    free: Option<CudaEvent>,
    /// By the device buffer's address: a slot holds a batch's images and (on the first tower)
    /// its labels, each staged in pinned memory of its own.
    staged: HashMap<u64, Staged>,
}

/// Pinned host memory a device buffer's uploads are staged in, and the end of the last copy
/// out of it.
struct Staged {
    pinned: Option<PinnedHostSlice<f32>>,
    /// Recorded after the copy on the copy stream. (cudarc's pinned slices carry an event for
    /// this, but record it only with event tracking on, which `Gpu` turns off.)
    copied: Option<CudaEvent>,
    /// When it was last used, for keeping the few the slot's buffers need.
    used: u64,
}

impl Staged {
    /// Waits for the last copy out of it: the host may then rewrite or free it.
    fn wait_for_copy(&mut self) -> Result<(), cudarc::driver::DriverError> {
        match self.copied.take() {
            Some(e) => e.synchronize(),
            None => Ok(()),
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if crate::planted::planted("upload-free") {
            return;
        }
        if self.wait_for_copy().is_err() {
            // The copy may still read it: better lost than freed under it.
            std::mem::forget(self.pinned.take());
        }
    }
}

/// The copies each compute stream must wait for at its next `join_copies` (rule 4), by the
/// stream's handle: copies into its buffers, and copies out of them by other launchers.
fn pending_copies() -> &'static Mutex<HashMap<usize, Vec<Arc<CudaEvent>>>> {
    static PENDING: OnceLock<Mutex<HashMap<usize, Vec<Arc<CudaEvent>>>>> = OnceLock::new();
    PENDING.get_or_init(Default::default)
}

fn stream_key(stream: &CudaStream) -> usize {
    stream.cu_stream() as usize
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

    /// One `rows` x `width` copy between the given addresses on `stream` (one of this
    /// launcher's).
    #[allow(clippy::too_many_arguments)]
    fn enqueue_copy(
        &self,
        stream: &CudaStream,
        src_ctx: sys::CUcontext,
        src: u64,
        src_pitch: usize,
        dst: u64,
        dst_pitch: usize,
        width_bytes: usize,
        rows: usize,
    ) -> Result<()> {
        let dst_ctx = self.gpu.context().cu_ctx();
        let stream = stream.cu_stream();
        let contiguous = rows == 1 || (src_pitch == width_bytes && dst_pitch == width_bytes);
        // SAFETY: the caller checked both blocks lie inside their live buffers; the stream and
        // both contexts are alive; the descriptors are read during the call.
        let rc = unsafe {
            match (contiguous, src_ctx == dst_ctx) {
                (true, true) => sys::cuMemcpyDtoDAsync_v2(dst, src, width_bytes * rows, stream),
                (true, false) => {
                    sys::cuMemcpyPeerAsync(dst, dst_ctx, src, src_ctx, width_bytes * rows, stream)
                }
                (false, true) => {
                    let p = sys::CUDA_MEMCPY2D {
                        srcXInBytes: 0,
                        srcY: 0,
                        srcMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
                        srcHost: std::ptr::null(),
                        srcDevice: src,
                        srcArray: std::ptr::null_mut(),
                        srcPitch: src_pitch,
                        dstXInBytes: 0,
                        dstY: 0,
                        dstMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
                        dstHost: std::ptr::null_mut(),
                        dstDevice: dst,
                        dstArray: std::ptr::null_mut(),
                        dstPitch: dst_pitch,
                        WidthInBytes: width_bytes,
                        Height: rows,
                    };
                    sys::cuMemcpy2DAsync_v2(&p, stream)
                }
                (false, false) => {
                    // The documented strided copy between contexts: a 3D peer copy of depth 1.
                    let p = sys::CUDA_MEMCPY3D_PEER {
                        srcXInBytes: 0,
                        srcY: 0,
                        srcZ: 0,
                        srcLOD: 0,
                        srcMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
                        srcHost: std::ptr::null(),
                        srcDevice: src,
                        srcArray: std::ptr::null_mut(),
                        srcContext: src_ctx,
                        srcPitch: src_pitch,
                        srcHeight: rows,
                        dstXInBytes: 0,
                        dstY: 0,
                        dstZ: 0,
                        dstLOD: 0,
                        dstMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
                        dstHost: std::ptr::null_mut(),
                        dstDevice: dst,
                        dstArray: std::ptr::null_mut(),
                        dstContext: dst_ctx,
                        dstPitch: dst_pitch,
                        dstHeight: rows,
                        WidthInBytes: width_bytes,
                        Height: rows,
                        Depth: 1,
                    };
                    sys::cuMemcpy3DPeerAsync(&p, stream)
                }
            }
        };
        rc.result().or_fail(|| {
            format!(
                "{}: copying {rows} rows of {width_bytes} bytes (pitches {src_pitch} -> {dst_pitch})",
                self.what()
            )
        })
    }

    /// `copy_2d`, on the compute stream (rules 1, 2), or with `on_copy_stream` and a source of
    /// another stream on the copy stream (rule 4).
    #[allow(clippy::too_many_arguments)]
    fn copy(
        &self,
        src: &CudaBuf,
        from: Block,
        dst: &mut CudaBuf,
        to: Block,
        width: usize,
        rows: usize,
        on_copy_stream: bool,
    ) -> Result<()> {
        check_2d_blocks(src.len, from, dst.len, to, width, rows)?;
        if rows == 0 || width == 0 {
            return Ok(());
        }
        ensure!(
            **dst.stream() == *self.stream,
            "{}: copy_2d into a buffer of another launcher (cuda:{}); a launcher writes only its own buffers",
            self.what(),
            dst.ordinal()
        );
        ensure!(
            rows == 1 || (from.pitch >= width && to.pitch >= width),
            "{}: copy_2d with a pitch below the width (from {from:?}, to {to:?}, width {width}): rows would overlap",
            self.what()
        );
        let src_stream = src.stream().clone();
        let cross = *src_stream != *self.stream;
        let f = 4; // bytes per float
        let enqueue = |stream: &CudaStream| {
            self.gpu.bind()?;
            self.enqueue_copy(
                stream,
                src_stream.context().cu_ctx(),
                src.ptr() + (f * from.offset) as u64,
                f * from.pitch,
                dst.ptr() + (f * to.offset) as u64,
                f * to.pitch,
                f * width,
                rows,
            )
        };
        let waiting = |for_whom: &str| {
            format!(
                "{}: ordering {for_whom} with cuda:{}'s stream",
                self.what(),
                src.ordinal()
            )
        };
        if cross && on_copy_stream {
            // Rule 4: the copy stream waits for the source's writes and for this stream's
            // earlier use of `dst`; the copy's completion is joined later by both compute
            // streams, which meanwhile run on.
            for stream in [&src_stream, &self.stream] {
                if stream == &src_stream && crate::planted::planted("exchange-no-wait") {
                    continue;
                }
                stream
                    .record_event(None)
                    .and_then(|e| self.copy_stream.wait(&e))
                    .or_fail(|| waiting("the copy stream"))?;
            }
            enqueue(&self.copy_stream)?;
            let done = Arc::new(
                self.copy_stream
                    .record_event(None)
                    .or_fail(|| waiting("the copy stream"))?,
            );
            let mut pending = pending_copies().lock().unwrap_or_else(|p| p.into_inner());
            for stream in [&self.stream, &src_stream] {
                if stream == &src_stream && crate::planted::planted("copy-source-unjoined") {
                    continue;
                }
                pending
                    .entry(stream_key(stream))
                    .or_default()
                    .push(done.clone());
            }
            return Ok(());
        }
        if cross {
            // Rule 2: the source's writes first.
            src_stream
                .record_event(None)
                .and_then(|e| self.stream.wait(&e))
                .or_fail(|| waiting("its stream"))?;
        }
        enqueue(&self.stream)?;
        if cross {
            // Rule 2: nothing later on the source's stream may overtake the copy.
            self.stream
                .record_event(None)
                .and_then(|e| src_stream.wait(&e))
                .or_fail(|| waiting("the source's stream"))?;
        }
        Ok(())
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
        ensure!(slot < 2, "input slot {slot}: there are two, 0 and 1");
        ensure!(
            **dst.stream() == *self.stream && dst.len == data.len() && !data.is_empty(),
            "{}: upload_async of {} floats into {dst:?}, which is not this launcher's buffer of that length",
            self.what(),
            data.len()
        );
        let what = || {
            format!(
                "{}: staging {} floats in input slot {slot}",
                self.what(),
                data.len()
            )
        };
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let InputSlot { free, staged } = &mut slots[slot];
        let key = dst.ptr();
        let first_use = !staged.contains_key(&key);
        let counter = staged.values().map(|s| s.used).max().unwrap_or(0) + 1;
        if first_use {
            // The slot's buffers (images and labels) and, after a change of batch size, the ones
            // before them: keep the four used last.
            while staged.len() >= 4 {
                let oldest = *staged.iter().min_by_key(|(_, s)| s.used).expect("not empty").0;
                staged.remove(&oldest); // waits for its last copy, then frees it
            }
        }
        let entry = staged.entry(key).or_insert(Staged {
            pinned: None,
            copied: None,
            used: 0,
        });
        entry.used = counter;
        // The copy of two batches ago reads it until it is done.
        if !crate::planted::planted("upload-rewrite") {
            entry.wait_for_copy().or_fail(what)?;
        }
        if entry.pinned.as_ref().is_none_or(|p| p.len() != data.len()) {
            entry.pinned = None;
            // SAFETY: f32 is valid for any bits; the buffer is fully written below before use.
            let fresh = unsafe { self.gpu.context().alloc_pinned::<f32>(data.len()) };
            entry.pinned = Some(fresh.or_fail(what)?);
        }
        let pinned = entry.pinned.as_mut().expect("allocated above");
        let host = pinned.as_mut_slice().or_fail(what)?;
        use rayon::prelude::*;
        const CHUNK: usize = 1 << 18;
        host.par_chunks_mut(CHUNK)
            .zip(data.par_chunks(CHUNK))
            .for_each(|(d, s)| d.copy_from_slice(s));
        // A buffer new to the slot was allocated (and zero-filled) on the compute stream: the
        // copy must follow that too, not only the slot's last reader. It happens when the slot
        // is first used or the batch size changes, so the step queued meanwhile is waited for
        // then only.
        if first_use || free.is_none() {
            self.copy_stream.join(&self.stream).or_fail(what)?;
        }
        if let Some(free) = free.as_ref().filter(|_| !crate::planted::planted("slot-reuse")) {
            self.copy_stream.wait(free).or_fail(what)?;
        }
        self.copy_stream
            .memcpy_htod(&*pinned, &mut dst.slice)
            .or_fail(what)?;
        entry.copied = Some(self.copy_stream.record_event(None).or_fail(what)?);
        let done = Arc::new(self.copy_stream.record_event(None).or_fail(what)?);
        pending_copies()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(stream_key(&self.stream))
            .or_default()
            .push(done);
        Ok(())
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
