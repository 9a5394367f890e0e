//! Opening datasets and their statistics for the commands.

use crate::data::{Dataset, OpenOptions, Splits, Stats, prepare as prepare_stats};
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
pub fn open(path: &Path, classes: Option<Vec<String>>) -> Result<Arc<Dataset>> {
    let ds = Dataset::open_with(
        path,
        &OpenOptions {
            classes,
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
    let train = open(&splits.train, None)?;
    println!(
        "{}: {} images in {} classes",
        splits.train.display(),
        train.len(),
        train.classes().len()
    );
    let t = std::time::Instant::now();
    let prepared = prepare_stats(
        &train,
        args.base,
        threads(args.threads),
        args.stats.as_deref(),
    )?;
    for bad in &prepared.bad {
        eprintln!("skipped unreadable {}: {}", bad.path, bad.error);
    }
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

/// Loads statistics from `path`, naming it in the error.
pub fn load_stats(path: &Path) -> Result<Stats> {
    Stats::load(path).with_context(|| format!("loading the dataset statistics {}", path.display()))
}
