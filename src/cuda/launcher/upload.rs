//! The double-buffered input's uploads (rule 5 of `launcher`): each device buffer of an input
//! slot is staged in pinned host memory of its own, rewritten only once its last copy is done.

use super::buffer::{pending_copies, stream_key};
use super::{CudaBuf, CudaLauncher};
use crate::cuda::driver::CheckDriver;
use anyhow::{Result, ensure};
use cudarc::driver::{CudaEvent, PinnedHostSlice};
use std::collections::HashMap;
use std::sync::Arc;

/// One input slot: the point of the compute stream after which nothing reads its device
/// buffers, and where each of them is staged on the host.
#[derive(Default)]
pub(super) struct InputSlot {
    pub(super) free: Option<CudaEvent>,
    /// By the device buffer's address: a slot holds a batch's images and (on the first tower)
    /// its labels, each staged in pinned memory of its own.
    pub(super) staged: HashMap<u64, Staged>,
}

/// Pinned host memory a device buffer's uploads are staged in, and the end of the last copy
/// out of it.
pub(super) struct Staged {
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

impl CudaLauncher {
    /// `Launcher::upload_async` (rule 5).
    pub(super) fn stage_upload(&self, data: &[f32], dst: &mut CudaBuf, slot: usize) -> Result<()> {
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
                let oldest = *staged
                    .iter()
                    .min_by_key(|(_, s)| s.used)
                    .expect("not empty")
                    .0;
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
        if let Some(free) = free
            .as_ref()
            .filter(|_| !crate::planted::planted("slot-reuse"))
        {
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
}
