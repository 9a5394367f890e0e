//! The double-buffered input of training: while a step computes on the batch in one input slot,
//! the next batch is uploaded into the other (on a GPU, from pinned host memory on each tower's
//! copy stream), and the next step waits only for that upload's event. The order of operations
//! (which slot is free when, what each step waits for) lives here, in code every device runs,
//! so the CPU reference and the host executor test it; a device only supplies
//! `Device::input_slot_free`, `Device::upload_async` and `Device::join_copies`.
//!
//! One step in a training loop: `queue_staged_step` (the staged batch becomes the current one,
//! the step is queued), then `stage_batch` with the next batch (beside the step), then
//! `finish_step` (waits for the step, returns its loss).

use super::{GradientHooks, Network, StepStats};
use crate::device::{Device, labels_as_floats};
use anyhow::{Context, Result, ensure};

/// The input slot not being computed on, and what was staged there.
pub(super) struct Staging<B> {
    /// The slot of `Network::images` (the batch computed on): 0 or 1.
    current: usize,
    /// The other slot: images on every tower, labels on tower 0.
    images: Vec<B>,
    labels: Option<B>,
    /// The staged batch's size and labels.
    staged: Option<(usize, Vec<u32>)>,
    /// Whether a step is queued and its stats not yet read.
    pending: bool,
}

impl<B> Default for Staging<B> {
    fn default() -> Self {
        Staging {
            current: 0,
            images: Vec::new(),
            labels: None,
            staged: None,
            pending: false,
        }
    }
}

impl<D: Device> Network<D> {
    /// Starts uploading a training batch into the input slot the queued step (if any) is not
    /// reading, beside that step; `queue_staged_step` trains on it. `images` may be reused as
    /// soon as this returns.
    pub fn stage_batch(&mut self, images: &[f32], labels: &[u32]) -> Result<()> {
        let n = labels.len();
        let floats = labels_as_floats(labels, self.plan.classes)?;
        let len = self.check_images(images, n)?;
        ensure!(
            self.staging.staged.is_none(),
            "a batch is already staged: queue a step on it first"
        );
        ensure!(
            !self.staging.pending || n == self.batch,
            "the next batch ({n} images) must be the size of the step still running ({})",
            self.batch
        );
        self.reserve_batch(n)?;
        let slot = 1 - self.staging.current;
        let st = &mut self.staging;
        let fits = |d: &D, b: &D::Buf, want: usize| d.len(b) == want;
        let allocated = st.images.len() == self.devices.len()
            && st
                .images
                .iter()
                .zip(&self.devices)
                .all(|(b, d)| fits(d, b, n * len))
            && st
                .labels
                .as_ref()
                .is_some_and(|b| fits(&self.devices[0], b, n));
        if !allocated {
            st.images = self
                .devices
                .iter()
                .map(|d| d.alloc(n * len))
                .collect::<Result<_>>()?;
            st.labels = Some(self.devices[0].alloc(n)?);
        }
        // Each tower's upload straight from the host: no device-to-device copy to order
        // across the towers' streams.
        for (dev, buf) in self.devices.iter().zip(&mut st.images) {
            dev.upload_async(images, buf, slot)?;
        }
        let labels_buf = st.labels.as_mut().expect("allocated above");
        self.devices[0].upload_async(&floats, labels_buf, slot)?;
        st.staged = Some((n, labels.to_vec()));
        Ok(())
    }

    /// Makes the staged batch the current one and queues a training step on it (forward,
    /// backward, update), which waits for that batch's upload and nothing else. The slot the
    /// previous step read becomes the one the next `stage_batch` fills.
    pub fn queue_staged_step(&mut self, lr: f32, step: u64) -> Result<()> {
        self.queue_staged_step_with(lr, step, None)
    }

    /// `queue_staged_step` with `hooks` in its backward pass.
    pub fn queue_staged_step_with(
        &mut self,
        lr: f32,
        step: u64,
        hooks: Option<&mut dyn GradientHooks<D>>,
    ) -> Result<()> {
        ensure!(
            !self.staging.pending,
            "the previous step's stats were not read (finish_step)"
        );
        let (n, labels) = self
            .staging
            .staged
            .take()
            .context("no batch is staged (stage_batch)")?;
        let previous = self.staging.current;
        for d in &self.devices {
            d.input_slot_free(previous)?;
        }
        std::mem::swap(&mut self.images, &mut self.staging.images);
        let (current, spare) = (self.labels.as_mut(), self.staging.labels.as_mut());
        std::mem::swap(
            current.context("no batch buffers")?,
            spare.context("no staged labels")?,
        );
        self.staging.current = 1 - previous;
        for d in &self.devices {
            d.join_copies()?;
        }
        self.loaded = n;
        self.loaded_labels = labels;
        self.staging.pending = true;
        self.queue_step(lr, step, hooks)
    }

    /// Waits for the step `queue_staged_step` queued; its loss and errors.
    pub fn finish_step(&mut self) -> Result<StepStats> {
        ensure!(
            self.staging.pending,
            "no step is queued (queue_staged_step)"
        );
        self.staging.pending = false;
        self.read_stats()
    }
}
