//! The loader: CPU threads decode and augment ahead of the training step into a bounded queue,
//! and batches come out in a fixed order.
//!
//! Batch `k` of epoch `e` is a pure function of (dataset, seed, `e`, `k`): the epoch's order is a
//! Philox shuffle keyed by (seed, `e`), each image's augmentation is keyed by (seed, `e`, sample),
//! and images within a batch are written to fixed slots. So the thread count changes nothing, and
//! starting at batch `k` ([`Loader::epoch`]) yields exactly what an uninterrupted run would have.
//!
//! Unreadable files: in training, the slot of a bad sample at epoch position `p` takes the first
//! readable sample at positions `p+1, p+2, …` (wrapping) of the same epoch order, so the batch
//! size stays fixed and the choice is deterministic; in evaluation the bad sample is left out
//! (that batch is shorter; one left with no image is still sent, empty, so that its skipped
//! files are reported; consumers pass over it). Either way it is reported in
//! [`Batch::skipped`] and counted in [`Loader::bad_samples`], and each file is decoded (and
//! fails) at most once per loader. A replacement is augmented as itself (keyed by its own sample
//! index).

use super::augment::{self, Augment, EvalViews, Geometry, Pixels};
use super::source::Dataset;
use super::stats::Stats;
use super::{BadSample, thread_pool};
use crate::ops::philox;
use anyhow::{Result, anyhow, bail, ensure};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

/// Names the epoch shuffle's Philox stream: this tag in the high half, the epoch in the low half.
const STREAM_SHUFFLE: u64 = 0xDA7A_0001 << 32;

/// Training (shuffled, augmented, last partial batch dropped) or evaluation (dataset order, fixed
/// views, last partial batch kept).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Random crop, mirror and PCA colour noise with α ~ N(0, `colour_noise`²); the paper's
    /// `colour_noise` is 0.1, and 0 turns the noise off (see also [`Loader::set_colour_noise`]).
    Train {
        colour_noise: f64,
    },
    Eval(EvalViews),
}

#[derive(Clone, Debug)]
pub struct LoaderConfig {
    pub geometry: Geometry,
    pub batch_size: usize,
    pub mode: Mode,
    /// The paper's augmentation, or the released code's (`net145`).
    pub augment: Augment,
    /// Seeds the shuffle and the augmentation.
    pub seed: u64,
    /// Decoding threads.
    pub threads: usize,
    /// Batches made ahead of the consumer (the queue's bound).
    pub prefetch: usize,
    /// Keep every decoded base image in memory when the whole dataset takes at most this many
    /// bytes (`len · base² · 3`): CIFAR-10's 50,000 at 32×32 take 154 MB. 0 turns caching off.
    pub cache_bytes: usize,
    /// The part of the work this loader does, for data-parallel replicas (issue #16).
    pub shard: Shard,
}

/// Replica `rank` of `of`'s part: in training, its equal slice of the slots of every global
/// batch of `batch_size` (`data::shard::range`), so each replica decodes only the images it
/// trains on, each exactly as the undivided batch would have them (same epoch order, same
/// augmentation by global position); in evaluation, every `of`-th batch from batch `rank` on.
/// `Shard::WHOLE` (rank 0 of 1) is everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub of: usize,
}

impl Shard {
    pub const WHOLE: Shard = Shard { rank: 0, of: 1 };
}

impl LoaderConfig {
    /// Paper defaults for training: colour noise 0.1, all cores, 4 batches ahead, a 2 GiB cache.
    pub fn train(geometry: Geometry, batch_size: usize, seed: u64) -> LoaderConfig {
        LoaderConfig {
            geometry,
            batch_size,
            mode: Mode::Train { colour_noise: 0.1 },
            augment: Augment::Paper,
            seed,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            prefetch: 4,
            cache_bytes: 2 << 30,
            shard: Shard::WHOLE,
        }
    }
    /// Evaluation with the given views, otherwise as [`LoaderConfig::train`].
    pub fn eval(geometry: Geometry, batch_size: usize, views: EvalViews) -> LoaderConfig {
        LoaderConfig {
            mode: Mode::Eval(views),
            ..Self::train(geometry, batch_size, 0)
        }
    }
}

/// One batch, ready for upload.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub epoch: u32,
    /// Position of this batch in its epoch.
    pub index: usize,
    /// NCHW `[len · views, 3, crop, crop]`, 0..255 minus the mean image; the views of image `i`
    /// are rows `i·views .. (i+1)·views`.
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
    /// Dataset index of each image.
    pub samples: Vec<usize>,
    /// Views per image: 1 in training, 1 or 10 in evaluation.
    pub views: usize,
    /// Unreadable samples met while making this batch, replaced (training) or left out (eval).
    pub skipped: Vec<BadSample>,
}

impl Batch {
    /// Images in the batch (not counting views).
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Images made and the time spent making them (not counting time blocked on a full queue).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Throughput {
    pub images: u64,
    pub busy_seconds: f64,
}

impl Throughput {
    pub fn images_per_second(&self) -> f64 {
        if self.busy_seconds > 0.0 {
            self.images as f64 / self.busy_seconds
        } else {
            0.0
        }
    }
}

/// A base image (shared, not copied, between the cache and the renderers) or why there is none.
type Decoded = std::result::Result<Arc<Vec<u8>>, String>;

struct Shared {
    dataset: Arc<Dataset>,
    stats: Arc<Stats>,
    config: LoaderConfig,
    pool: rayon::ThreadPool,
    /// One slot per sample when the dataset fits in `cache_bytes`.
    cache: Option<Vec<OnceLock<Decoded>>>,
    bad: Mutex<BTreeMap<usize, String>>,
    /// σ of the colour noise's α as `f64` bits, read when an epoch starts.
    colour_noise: AtomicU64,
    images: AtomicU64,
    busy_nanos: AtomicU64,
    /// Training batch buffers handed back by the consumer ([`Loader::recycle`]): reused, so a
    /// batch does not pay for fresh pages (79 MB at batch 128, over 19,000 page faults).
    spare: Mutex<Vec<Vec<f32>>>,
}

/// Makes batches of one dataset; see the module documentation for order and determinism.
pub struct Loader {
    shared: Arc<Shared>,
}

impl Loader {
    pub fn new(dataset: Arc<Dataset>, stats: Arc<Stats>, config: LoaderConfig) -> Result<Loader> {
        let g = config.geometry;
        Geometry::new(g.base, g.crop)?;
        ensure!(config.batch_size > 0, "batch size must be positive");
        ensure!(config.prefetch > 0, "prefetch must be at least one batch");
        let sh = config.shard;
        ensure!(sh.rank < sh.of, "shard {} of {}", sh.rank, sh.of);
        if let Mode::Train { .. } = config.mode {
            crate::data::shard::range(config.batch_size, sh.of, sh.rank)?;
        }
        ensure!(
            stats.base == g.base && stats.mean.len() == 3 * g.base * g.base,
            "the statistics are for {0}x{0} base images, the loader makes {1}x{1}",
            stats.base,
            g.base
        );
        ensure!(
            !dataset.is_empty(),
            "{} holds no images",
            dataset.path().display()
        );
        let mut noise = 0.0;
        if let Mode::Train { colour_noise } = config.mode {
            check_colour_noise(colour_noise)?;
            noise = colour_noise;
            ensure!(
                dataset.len() >= config.batch_size,
                "{} holds {} images, fewer than one batch of {}",
                dataset.path().display(),
                dataset.len(),
                config.batch_size
            );
        }
        let pool = thread_pool(config.threads)?;
        let cache_fits = dataset.len().saturating_mul(g.base * g.base * 3) <= config.cache_bytes;
        let cache = cache_fits.then(|| (0..dataset.len()).map(|_| OnceLock::new()).collect());
        Ok(Loader {
            shared: Arc::new(Shared {
                dataset,
                stats,
                config,
                pool,
                cache,
                bad: Mutex::new(BTreeMap::new()),
                colour_noise: AtomicU64::new(noise.to_bits()),
                images: AtomicU64::new(0),
                busy_nanos: AtomicU64::new(0),
                spare: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Sets σ of the colour noise for epochs started from now on (`net145` turns it off late in
    /// training); the decoded-image cache is kept.
    pub fn set_colour_noise(&self, sigma: f64) -> Result<()> {
        check_colour_noise(sigma)?;
        self.shared
            .colour_noise
            .store(sigma.to_bits(), Ordering::Relaxed);
        Ok(())
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.shared.config
    }
    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.shared.dataset
    }
    /// Whether decoded images are kept in memory.
    pub fn caches(&self) -> bool {
        self.shared.cache.is_some()
    }

    /// Batches per epoch: `len / batch_size` in training (the last partial batch is dropped),
    /// `ceil(len / batch_size)` in evaluation.
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.shared.dataset.len(), self.shared.config.batch_size);
        match self.shared.config.mode {
            Mode::Train { .. } => n / b,
            Mode::Eval(_) => n.div_ceil(b),
        }
    }

    /// Starts making epoch `epoch` from batch `start` on, in the background. Dropping the
    /// returned iterator stops the work.
    pub fn epoch(&self, epoch: u32, start: usize) -> Batches {
        let (tx, rx) = sync_channel(self.shared.config.prefetch);
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::clone(&self.shared);
        let end = self.batches_per_epoch();
        let stop_worker = Arc::clone(&stop);
        let tx_worker = tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("loader-epoch-{epoch}"))
            .spawn(move || shared.produce(epoch, start, end, &tx_worker, &stop_worker));
        match handle {
            Ok(handle) => Batches {
                rx: Some(rx),
                handle: Some(handle),
                stop,
            },
            Err(e) => {
                // No thread: hand the error to the consumer as the epoch's only item.
                let _ = tx.send(Err(anyhow!("starting the loader thread: {e}")));
                Batches {
                    rx: Some(rx),
                    handle: None,
                    stop,
                }
            }
        }
    }

    /// Hands a training batch's `images` back for a later batch to fill (each is overwritten
    /// whole); at most `prefetch + 2` are kept.
    pub fn recycle(&self, images: Vec<f32>) {
        let mut spare = self.shared.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < self.shared.config.prefetch + 2 {
            spare.push(images);
        }
    }

    /// Every unreadable sample met so far, by dataset index.
    pub fn bad_samples(&self) -> Vec<BadSample> {
        let bad = self.shared.bad.lock().unwrap_or_else(|p| p.into_inner());
        bad.iter()
            .map(|(&index, error)| BadSample {
                index,
                path: self.shared.dataset.describe(index),
                error: error.clone(),
            })
            .collect()
    }

    /// The loader's own rate since it was made.
    pub fn throughput(&self) -> Throughput {
        Throughput {
            images: self.shared.images.load(Ordering::Relaxed),
            busy_seconds: self.shared.busy_nanos.load(Ordering::Relaxed) as f64 * 1e-9,
        }
    }
}

fn check_colour_noise(sigma: f64) -> Result<()> {
    ensure!(
        sigma >= 0.0 && sigma.is_finite(),
        "colour noise σ {sigma} must be finite and ≥ 0"
    );
    Ok(())
}

/// The batches of one epoch, in order. Each item is a batch or the error that ended the epoch.
pub struct Batches {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Iterator for Batches {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Result<Batch>> {
        let item = self.rx.as_ref()?.recv().ok();
        if item.is_none() {
            // The producer finished (or died): surface a panic as an error.
            if let Some(handle) = self.handle.take()
                && handle.join().is_err()
            {
                return Some(Err(anyhow!("the loader thread panicked")));
            }
        }
        item
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.rx = None; // unblocks a producer waiting on a full queue
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// The epoch's order: a Fisher–Yates shuffle of `0..n` driven by Philox words keyed by
/// (seed, epoch), 64 random bits per step so the bias is below 2⁻³⁰ for any dataset size.
pub fn epoch_order(seed: u64, epoch: u32, n: usize) -> Vec<u32> {
    let stream = STREAM_SHUFFLE | epoch as u64;
    let mut order: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        let step = (n - 1 - i) as u64;
        let bits = (philox::word(seed, stream, 2 * step) as u64) << 32
            | philox::word(seed, stream, 2 * step + 1) as u64;
        let j = ((bits as u128 * (i as u128 + 1)) >> 64) as usize;
        order.swap(i, j);
    }
    order
}

impl Shared {
    fn produce(
        &self,
        epoch: u32,
        start: usize,
        end: usize,
        tx: &SyncSender<Result<Batch>>,
        stop: &AtomicBool,
    ) {
        let order = match self.config.mode {
            Mode::Train { .. } => Some(epoch_order(self.config.seed, epoch, self.dataset.len())),
            Mode::Eval(_) => None,
        };
        let colour_noise = f64::from_bits(self.colour_noise.load(Ordering::Relaxed));
        let sh = self.config.shard;
        let mine = |index: &usize| order.is_some() || index % sh.of == sh.rank;
        for index in (start..end).filter(mine) {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let began = Instant::now();
            let batch = match &order {
                Some(order) => self.train_batch(epoch, index, order, colour_noise),
                None => self.eval_batch(epoch, index),
            };
            if let Ok(b) = &batch {
                self.images.fetch_add(b.len() as u64, Ordering::Relaxed);
            }
            self.busy_nanos
                .fetch_add(began.elapsed().as_nanos() as u64, Ordering::Relaxed);
            let failed = batch.is_err();
            if tx.send(batch).is_err() || failed {
                return;
            }
        }
    }

    /// The base image of sample `index`, decoded once if caching; a bad file's error otherwise.
    fn base_image(&self, index: usize) -> Decoded {
        let decode = || {
            if let Some(error) = self
                .bad
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&index)
            {
                return Err(error.clone());
            }
            let decoded = self
                .dataset
                .load_unnamed(index, self.config.geometry.base)
                .map(Arc::new)
                .map_err(|e| format!("{e:#}"));
            if let Err(error) = &decoded {
                self.bad
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(index, error.clone());
            }
            decoded
        };
        match &self.cache {
            Some(cache) => cache[index].get_or_init(decode).clone(),
            None => decode(),
        }
    }

    fn bad_sample(&self, index: usize, error: String) -> BadSample {
        BadSample {
            index,
            path: self.dataset.describe(index),
            error,
        }
    }

    fn train_batch(
        &self,
        epoch: u32,
        index: usize,
        order: &[u32],
        colour_noise: f64,
    ) -> Result<Batch> {
        let (g, bs, n) = (self.config.geometry, self.config.batch_size, order.len());
        let sh = self.config.shard;
        let mine = crate::data::shard::range(bs, sh.of, sh.rank)?;
        let len = mine.len() * g.input_len();
        let recycled = self.spare.lock().unwrap_or_else(|p| p.into_inner()).pop();
        // Every element is written below (each slot's render fills it, or the batch fails).
        let mut images = recycled
            .filter(|v| v.len() == len)
            .unwrap_or_else(|| vec![0f32; len]);
        let slots: Vec<Result<(usize, Vec<BadSample>)>> = self.pool.install(|| {
            images
                .par_chunks_mut(g.input_len())
                .enumerate()
                .map(|(slot, out)| {
                    let position = index * bs + mine.start + slot;
                    let mut skipped = Vec::new();
                    for step in 0..n {
                        let sample = order[(position + step) % n] as usize;
                        match self.base_image(sample) {
                            Ok(image) => {
                                let style = self.config.augment;
                                let (seed, noise) = (self.config.seed, colour_noise);
                                let aug = augment::draw_for(
                                    style, seed, epoch, position, sample, g, noise,
                                );
                                let px = Pixels::train(style, &aug, &self.stats, noise, g);
                                augment::render(&image, &self.stats.mean, g, &px, out);
                                return Ok((sample, skipped));
                            }
                            Err(error) => skipped.push(self.bad_sample(sample, error)),
                        }
                    }
                    bail!(
                        "none of the {n} images of {} can be read",
                        self.dataset.path().display()
                    )
                })
                .collect()
        });
        let mut batch = Batch {
            epoch,
            index,
            images,
            labels: Vec::with_capacity(mine.len()),
            samples: Vec::with_capacity(mine.len()),
            views: 1,
            skipped: Vec::new(),
        };
        for slot in slots {
            let (sample, skipped) = slot?;
            batch.samples.push(sample);
            batch.labels.push(self.dataset.label(sample));
            batch.skipped.extend(skipped);
        }
        Ok(batch)
    }

    fn eval_batch(&self, epoch: u32, index: usize) -> Result<Batch> {
        let Mode::Eval(views) = self.config.mode else {
            bail!("not an evaluation loader")
        };
        let (g, bs) = (self.config.geometry, self.config.batch_size);
        let positions = index * bs..((index + 1) * bs).min(self.dataset.len());
        let view_list = views.views(g);
        let per_image = view_list.len() * g.input_len();
        let made: Vec<std::result::Result<Vec<f32>, String>> = self.pool.install(|| {
            positions
                .clone()
                .into_par_iter()
                .map(|sample| {
                    let image = self.base_image(sample)?;
                    let mut out = vec![0f32; per_image];
                    for (view, dst) in view_list.iter().zip(out.chunks_exact_mut(g.input_len())) {
                        let px = Pixels::eval(self.config.augment, *view, g);
                        augment::render(&image, &self.stats.mean, g, &px, dst);
                    }
                    Ok(out)
                })
                .collect()
        });
        let mut batch = Batch {
            epoch,
            index,
            images: Vec::with_capacity(positions.len() * per_image),
            labels: Vec::new(),
            samples: Vec::new(),
            views: view_list.len(),
            skipped: Vec::new(),
        };
        for (sample, result) in positions.zip(made) {
            match result {
                Ok(pixels) => {
                    batch.images.extend_from_slice(&pixels);
                    batch.samples.push(sample);
                    batch.labels.push(self.dataset.label(sample));
                }
                Err(error) => batch.skipped.push(self.bad_sample(sample, error)),
            }
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_order_is_a_uniform_permutation() {
        let n = 15;
        let epochs = 6000;
        let mut counts = vec![vec![0u32; n]; n];
        for epoch in 0..epochs {
            let order = epoch_order(11, epoch, n);
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, (0..n as u32).collect::<Vec<_>>());
            for (position, &sample) in order.iter().enumerate() {
                counts[sample as usize][position] += 1;
            }
        }
        // Each (sample, position) count is Binomial(6000, 1/15): mean 400, sd 19.4; 5 sd.
        for row in &counts {
            for &c in row {
                assert!((c as f64 - 400.0).abs() < 97.0, "{counts:?}");
            }
        }
    }
}
