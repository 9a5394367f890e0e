//! Opening datasets and their statistics the way the commands do: a root's training and
//! validation sets, each dataset's warnings printed, unreadable files named once.

use super::{BadSample, Dataset, OpenOptions, Splits, Stats, unreadable_classes};
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;

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

/// Opens a dataset (with `classes`, the classes it must have; files past `max_image_bytes`
/// skipped by name) and prints its warnings (empty class folders, files that are not images).
pub fn open_dataset(
    path: &Path,
    classes: Option<Vec<String>>,
    max_image_bytes: u64,
) -> Result<Arc<Dataset>> {
    let ds = Dataset::open_with(
        path,
        &OpenOptions {
            classes,
            max_image_bytes: Some(max_image_bytes),
            ..OpenOptions::default()
        },
    )?;
    for w in ds.warnings() {
        eprintln!("warning: {w}");
    }
    Ok(Arc::new(ds))
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

/// Decoding threads: those asked for, else one per core.
pub fn threads(asked: Option<usize>) -> usize {
    asked.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
