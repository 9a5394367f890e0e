//! The paper's data pipeline (§4.1, §5 of Krizhevsky et al. 2012; DESIGN.md §3): datasets,
//! decoding, the mean image and colour PCA, augmentation, evaluation views, and a prefetching
//! loader.
//!
//! ```no_run
//! use alexnet::data::*;
//! use std::sync::Arc;
//! # fn main() -> anyhow::Result<()> {
//! let splits = Splits::find("../shared/data/cifar10")?;          // train.tar, test.tar
//! let train = Arc::new(Dataset::open(&splits.train)?);
//! for w in train.warnings() { eprintln!("warning: {w}"); }
//! let g = Geometry::new(32, 28)?;                                // ImageNet: (256, 227)
//! let prepared = prepare(&train, g.base, 8, None)?;             // computed once, then reused
//! let stats = Arc::new(prepared.stats);
//! let loader = Loader::new(train.clone(), stats.clone(), LoaderConfig::train(g, 128, 42))?;
//! for batch in loader.epoch(0, 0) {                              // resume: epoch(e, k)
//!     let batch = batch?;                                        // images NCHW, labels, samples
//!     for bad in &batch.skipped { eprintln!("skipped {}: {}", bad.path, bad.error); }
//! }
//! println!("{:.0} images/s", loader.throughput().images_per_second());
//! let val = Arc::new(Dataset::open_with(
//!     splits.val.unwrap(),
//!     &OpenOptions { classes: Some(train.classes().to_vec()), ..Default::default() },
//! )?);
//! let eval = Loader::new(val, stats, LoaderConfig::eval(g, 128, EvalViews::TenCrop))?;
//! # Ok(()) }
//! ```
//!
//! **Datasets** ([`Dataset`]): a folder or an uncompressed tar of class folders
//! (`<root>/<class>/<image>`, ImageNet's `train/<wnid>/*.JPEG`, CIFAR-10's tars, a tar may wrap
//! the tree in one top folder), or a flat folder/tar plus a labels file ([`OpenOptions::labels`]
//! documents both accepted forms: `<file> <label>` lines, or one label per line in sorted
//! file-name order). Classes are the sorted folder names ([`Dataset::classes`], also saved in the
//! statistics file for `predict`). A missing path or no images is an error naming the path; an
//! empty class folder or skipped files are [`Dataset::warnings`]. [`Dataset::synthetic`] is the
//! built-in procedural set ([`synthetic`]) for runs without `--data`.
//!
//! **Decoding** ([`decode`]): format from content (JPEG incl. CMYK and grayscale, PNG), always to
//! RGB; corrupt or truncated files are per-file errors. **Base image**: the centred square resized
//! to `base`×`base` with a bilinear filter (SIMD, antialiasing when shrinking), kept as `u8`
//! (256 for ImageNet; 32 for CIFAR, where 32×32 images pass through untouched).
//!
//! **Statistics** ([`prepare`], [`Stats`]): one pass over the training set for the per-pixel mean
//! image (`[3, base, base]`) and the eigenvectors/eigenvalues of the RGB covariance over all
//! pixels. Integer sums make it bit-for-bit independent of the thread count. Saved as
//! `<dataset>.stats-<base>.safetensors` beside the dataset (or at a given path) and reused.
//!
//! **Network input** ([`augment`]): `f32` CHW, pixel values 0..255 minus the mean image (cut at
//! the same place). Training: a random `crop`×`crop` window, a mirror with probability ½, and the
//! paper's PCA colour noise (α ~ N(0, 0.1²); scale convention in [`augment::colour_shift`]),
//! keyed by (seed, epoch, sample index) through `crate::ops::philox`. Evaluation: the centre crop
//! or the ten crops ([`EvalViews`]).
//!
//! **Packs** ([`pack`]): `alexnet prepare --pack` stores a dataset's base images once as JPEG tar
//! shards with an index; [`Dataset::open`] reads a pack split like a folder, and decoding a
//! 256×256 JPEG costs a fraction of decoding and resizing a photograph.
//!
//! **Loader** ([`Loader`]): background threads fill a bounded queue; batches are NCHW
//! `[n·views, 3, crop, crop]` with labels and sample indices, in an order fixed by the seed (see
//! [`loader`] for determinism, resume and how unreadable files are replaced), and the loader
//! measures its own images/s. Small datasets are decoded once and kept in memory.

pub mod augment;
pub mod decode;
pub mod loader;
pub mod open;
pub mod pack;
pub mod shard;
pub mod source;
pub mod stats;
pub mod synthetic;

pub use augment::{Augment, EvalViews, Geometry, Pixels, View};
pub use loader::{Batch, Batches, Loader, LoaderConfig, Mode, Shard, Throughput};
pub use pack::{PackOptions, Packed, pack_split};
pub use source::{Dataset, OpenOptions, Sample, Splits};
pub use stats::{Prepared, Stats, prepare, prepare_with};
pub use synthetic::{Split, Synthetic};

use anyhow::{Context, Result};

/// A sample that could not be read or decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadSample {
    /// Its dataset index.
    pub index: usize,
    /// Where it lives (`<root>/<name>` or `<tar>:<member>`).
    pub path: String,
    /// Why, e.g. "truncated JPEG: ..." or "not a JPEG or PNG image ...".
    pub error: String,
}

impl BadSample {
    fn new(dataset: &Dataset, index: usize, error: &anyhow::Error) -> BadSample {
        BadSample {
            index,
            path: dataset.describe(index),
            error: format!("{error:#}"),
        }
    }
}

/// Warnings for the classes of `dataset` none of whose images could be read (given every bad
/// sample of a full pass, as statistics make one): such a class can never be predicted right.
pub fn unreadable_classes(dataset: &Dataset, bad: &[BadSample]) -> Vec<String> {
    let mut bad_per_class = vec![0usize; dataset.classes().len()];
    for b in bad {
        bad_per_class[dataset.label(b.index) as usize] += 1;
    }
    dataset
        .class_counts()
        .iter()
        .zip(&bad_per_class)
        .zip(dataset.classes())
        .filter(|((all, bad), _)| **all > 0 && **bad == **all)
        .map(|((&all, _), class)| {
            format!(
                "class {class} of {} has no readable image (all {all} of its files were skipped)",
                dataset.path().display()
            )
        })
        .collect()
}

/// The network inputs for one encoded image (for `predict`): decoded, cut to the base image, and
/// each of `views` rendered with the mean subtracted as `augment` does it, `[views, 3, crop,
/// crop]` in one `Vec`.
pub fn image_views(
    bytes: &[u8],
    stats: &Stats,
    g: Geometry,
    views: EvalViews,
    augment: Augment,
) -> Result<Vec<f32>> {
    anyhow::ensure!(
        stats.base == g.base,
        "the statistics are for base {}, not {}",
        stats.base,
        g.base
    );
    let image = decode::decode_base(bytes, g.base)?;
    let mut out = vec![0f32; views.count() * g.input_len()];
    for (view, dst) in views
        .views(g)
        .into_iter()
        .zip(out.chunks_exact_mut(g.input_len()))
    {
        augment::render(&image, &stats.mean, g, &Pixels::eval(augment, view, g), dst);
    }
    Ok(out)
}

/// A pool of `threads` worker threads (at least one).
fn thread_pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("data-{i}"))
        .build()
        .context("starting the data threads")
}
