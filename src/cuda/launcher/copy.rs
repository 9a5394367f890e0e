//! The 2-D copies between buffers of one GPU or two (rules 2 and 4 of `launcher`).

use super::buffer::{pending_copies, stream_key};
use super::{CudaBuf, CudaLauncher};
use crate::cuda::driver::CheckDriver;
use crate::device::{Block, check_2d_blocks};
use anyhow::{Result, ensure};
use cudarc::driver::{CudaStream, sys};
use std::sync::Arc;

impl CudaLauncher {
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
    pub(super) fn copy(
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
}
