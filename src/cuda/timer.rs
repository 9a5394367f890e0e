//! GPU-side timing with CUDA events, for benchmarks: the time between two points of one stream,
//! as the GPU measured it, without host scheduling noise.
//!
//! cudarc creates events with `CU_EVENT_DISABLE_TIMING` when given no flags; timing events
//! must be created with `CU_EVENT_DEFAULT`.

use super::driver::CheckDriver;
use anyhow::Result;
use cudarc::driver::{CudaEvent, CudaStream, sys};
use std::sync::Arc;

pub struct EventTimer {
    stream: Arc<CudaStream>,
    start: CudaEvent,
}

impl EventTimer {
    /// Records the start point on `stream`.
    pub fn start(stream: &Arc<CudaStream>) -> Result<Self> {
        let start = stream
            .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
            .or_fail(|| "recording a timing event".into())?;
        Ok(EventTimer {
            stream: stream.clone(),
            start,
        })
    }

    /// Records the end point and waits for it: milliseconds between the two on the GPU.
    pub fn stop(self) -> Result<f64> {
        let end = self
            .stream
            .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
            .or_fail(|| "recording a timing event".into())?;
        let ms = self
            .start
            .elapsed_ms(&end)
            .or_fail(|| "reading the time between two events".into())?;
        Ok(ms as f64)
    }
}
