//! What the training loop and evaluation read batches through, and the data pipeline's loaders
//! seen through those traits.

use crate::data::{Batches, Loader};
use anyhow::{Context, Result};
use std::collections::BTreeSet;

/// One batch: images `[n, c, size, size]` (preprocessed, ready for the network) and labels.
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
}

/// Training batches in a deterministic order: batch `b` of epoch `e` is always the same, so a
/// run can restart at any batch.
pub trait TrainBatches {
    fn batches_per_epoch(&self) -> usize;
    /// Positions the source at batch `first_batch` of `epoch`.
    fn start_epoch(&mut self, epoch: usize, first_batch: usize) -> Result<()>;
    fn next_batch(&mut self) -> Result<Batch>;
    /// The loader's own throughput so far, if it measures one.
    fn loader_images_per_second(&self) -> Option<f64> {
        None
    }
    /// Files that could not be read or decoded and were skipped.
    fn skipped_files(&self) -> usize {
        0
    }
    /// Takes back a batch's images once they are on the devices, for reuse.
    fn recycle(&mut self, images: Vec<f32>) {
        drop(images);
    }
}

/// Evaluation batches: each image as `views` crops; scores are the softmax averaged over views.
pub trait EvalBatches {
    fn views(&self) -> usize;
    fn restart(&mut self) -> Result<()>;
    /// The next batch of `n * views` crops (image-major) and its `n` labels, or `None` at the end.
    fn next_batch(&mut self) -> Result<Option<Batch>>;
}

/// Training batches from a `data::Loader`; unreadable files are reported once each as they are
/// met (the loader has already replaced them).
pub struct LoaderBatches {
    pub loader: Loader,
    current: Option<Batches>,
    /// Dataset indices of the bad files already named (each is met again every epoch).
    reported: BTreeSet<usize>,
}

impl LoaderBatches {
    pub fn new(loader: Loader) -> Self {
        LoaderBatches {
            loader,
            current: None,
            reported: BTreeSet::new(),
        }
    }

    /// Bad files already named elsewhere (by the statistics pass): not named again.
    pub fn already_reported(mut self, indices: impl IntoIterator<Item = usize>) -> Self {
        self.reported.extend(indices);
        self
    }
}

impl TrainBatches for LoaderBatches {
    fn batches_per_epoch(&self) -> usize {
        self.loader.batches_per_epoch()
    }
    fn start_epoch(&mut self, epoch: usize, first_batch: usize) -> Result<()> {
        self.current = Some(self.loader.epoch(epoch as u32, first_batch));
        Ok(())
    }
    fn next_batch(&mut self) -> Result<Batch> {
        let batches = self
            .current
            .as_mut()
            .context("start_epoch was not called")?;
        let b = batches
            .next()
            .context("the loader ended its epoch early")??;
        for bad in &b.skipped {
            if self.reported.insert(bad.index) {
                eprintln!("skipped unreadable {}: {}", bad.path, bad.error);
            }
        }
        Ok(Batch {
            images: b.images,
            labels: b.labels,
        })
    }
    fn loader_images_per_second(&self) -> Option<f64> {
        Some(self.loader.throughput().images_per_second())
    }
    fn skipped_files(&self) -> usize {
        self.loader.bad_samples().len()
    }
    fn recycle(&mut self, images: Vec<f32>) {
        self.loader.recycle(images);
    }
}

/// Evaluation batches from a `data::Loader` in evaluation mode (every image once, `views` crops).
pub struct LoaderEval {
    pub loader: Loader,
    views: usize,
    current: Option<Batches>,
    /// Dataset indices of the bad files already named (each is met again every evaluation).
    reported: BTreeSet<usize>,
}

impl LoaderEval {
    pub fn new(loader: Loader, views: usize) -> Self {
        LoaderEval {
            loader,
            views,
            current: None,
            reported: BTreeSet::new(),
        }
    }
}

impl EvalBatches for LoaderEval {
    fn views(&self) -> usize {
        self.views
    }
    fn restart(&mut self) -> Result<()> {
        self.current = Some(self.loader.epoch(0, 0));
        Ok(())
    }
    fn next_batch(&mut self) -> Result<Option<Batch>> {
        let batches = self.current.as_mut().context("restart was not called")?;
        // A batch whose every file was bad comes empty, only to name them: passed over.
        for b in batches.by_ref() {
            let b = b?;
            for bad in &b.skipped {
                if self.reported.insert(bad.index) {
                    eprintln!("skipped unreadable {}: {}", bad.path, bad.error);
                }
            }
            if !b.is_empty() {
                return Ok(Some(Batch {
                    images: b.images,
                    labels: b.labels,
                }));
            }
        }
        Ok(None)
    }
}
