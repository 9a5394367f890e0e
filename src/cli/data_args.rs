//! Opening datasets and their statistics for the commands.

use crate::data::{
    BadSample, Dataset, OpenOptions, Splits, Stats, prepare_with, unreadable_classes,
};
use crate::progress::Progress;
use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct PrepareArgs {
    /// The training set: a dataset root holding train/ (or train.tar), a class-folder tree, or a tar.
    #[arg(long)]
    pub data: PathBuf,
    /// Side of the base images (256 for ImageNet, 32 for CIFAR-10).
    #[arg(long, default_value_t = 256)]
    pub base: usize,
    /// Where to save the statistics [default: beside the training set].
    #[arg(long)]
    pub stats: Option<PathBuf>,
    /// Decoding threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub limits: ReadLimits,
    /// No progress bar (a line every few seconds instead), e.g. for logs.
    #[arg(long)]
    pub no_progress: bool,
}

/// Bounds on what one file of a dataset may cost to read.
#[derive(Args, Clone, Copy, Debug)]
pub struct ReadLimits {
    /// Image files larger than this many MiB are skipped by name, unread (the default is far
    /// above any real photograph).
    #[arg(long, value_name = "MIB", default_value_t = crate::files::DEFAULT_MAX_IMAGE_BYTES >> 20)]
    pub max_image_mib: u64,
}

impl ReadLimits {
    pub fn max_image_bytes(&self) -> u64 {
        self.max_image_mib.saturating_mul(1 << 20)
    }
}

pub fn threads(t: Option<usize>) -> usize {
    t.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The training and validation sets under `root`: `train`/`val` (or `.tar`, or `test`) inside it,
/// or `root` itself as the training set.
pub fn splits(root: &Path) -> Result<Splits> {
    if root.is_dir() && ["train", "train.tar"].iter().any(|n| root.join(n).exists()) {
        return Splits::find(root);
    }
    anyhow::ensure!(
        root.exists(),
        "dataset not found: {} does not exist",
        root.display()
    );
    Ok(Splits {
        train: root.to_path_buf(),
        val: None,
    })
}

/// Opens a dataset and prints its warnings (empty class folders, files that are not images).
pub fn open(path: &Path, classes: Option<Vec<String>>, limits: ReadLimits) -> Result<Arc<Dataset>> {
    let ds = Dataset::open_with(
        path,
        &OpenOptions {
            classes,
            max_image_bytes: Some(limits.max_image_bytes()),
            ..OpenOptions::default()
        },
    )?;
    for w in ds.warnings() {
        eprintln!("warning: {w}");
    }
    Ok(Arc::new(ds))
}

pub fn prepare(args: &PrepareArgs) -> Result<()> {
    let splits = splits(&args.data)?;
    let train = open(&splits.train, None, args.limits)?;
    println!(
        "{}: {} images in {} classes",
        splits.train.display(),
        train.len(),
        train.classes().len()
    );
    let t = std::time::Instant::now();
    let progress = Progress::new(
        format!("statistics of {}", splits.train.display()),
        train.len() as u64,
        !args.no_progress,
    );
    let prepared = prepare_with(
        &train,
        args.base,
        threads(args.threads),
        args.stats.as_deref(),
        &progress,
    )?;
    report_bad(&train, &prepared.bad);
    let s = &prepared.stats;
    let path = prepared
        .path
        .as_ref()
        .map_or("(not saved)".into(), |p| p.display().to_string());
    println!(
        "{} {path} in {:.1} s: mean image {}x{}, RGB eigenvalues {:.1} {:.1} {:.1}, {} images ({} unreadable)",
        if prepared.reused { "reused" } else { "wrote" },
        t.elapsed().as_secs_f64(),
        s.base,
        s.base,
        s.eigenvalues[0],
        s.eigenvalues[1],
        s.eigenvalues[2],
        s.images,
        prepared.bad.len()
    );
    Ok(())
}

/// Prints each file a full pass could not read, once, and the classes left with no image.
pub fn report_bad(dataset: &Dataset, bad: &[BadSample]) {
    for b in bad {
        eprintln!("skipped unreadable {}: {}", b.path, b.error);
    }
    for w in unreadable_classes(dataset, bad) {
        eprintln!("warning: {w}");
    }
}

/// Loads statistics from `path`, naming it in the error.
pub fn load_stats(path: &Path) -> Result<Stats> {
    Stats::load(path).with_context(|| format!("loading the dataset statistics {}", path.display()))
}
