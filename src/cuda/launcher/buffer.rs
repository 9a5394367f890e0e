//! `CudaBuf`, a launcher's buffer, and the copies on copy streams its stream must wait for
//! before it reads, writes or frees it.

use crate::cuda::memory::Counter;
use cudarc::driver::{CudaEvent, CudaSlice, CudaStream, DevicePtr};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// A buffer of `f32` on a GPU, owned by the launcher (stream) that allocated it.
pub struct CudaBuf {
    /// At least one element: the driver refuses empty allocations, so an empty buffer holds one
    /// unused float.
    pub(super) slice: CudaSlice<f32>,
    pub(super) len: usize,
    pub(super) counter: Arc<Counter>,
}

impl CudaBuf {
    pub(super) fn bytes(&self) -> usize {
        self.slice.num_bytes()
    }

    pub(super) fn ptr(&self) -> u64 {
        // With event tracking off, the guard records nothing.
        let (ptr, _guard) = self.slice.device_ptr(self.slice.stream());
        ptr
    }

    pub(super) fn stream(&self) -> &Arc<CudaStream> {
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

/// The copies each compute stream must wait for at its next `join_copies` (rule 4), by the
/// stream's handle: copies into its buffers, and copies out of them by other launchers.
pub(super) fn pending_copies() -> &'static Mutex<HashMap<usize, Vec<Arc<CudaEvent>>>> {
    static PENDING: OnceLock<Mutex<HashMap<usize, Vec<Arc<CudaEvent>>>>> = OnceLock::new();
    PENDING.get_or_init(Default::default)
}

pub(super) fn stream_key(stream: &CudaStream) -> usize {
    stream.cu_stream() as usize
}
