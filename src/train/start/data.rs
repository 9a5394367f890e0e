//! What `alexnet train` trains on: the run being resumed, the datasets (given, recorded, or the
//! built-in synthetic set), their check against a resumed run's record, and their statistics.

use super::TrainArgs;
use crate::cli::data_args::{open, report_bad, splits};
use crate::data::stats::compute_with;
use crate::data::{Dataset, Split, Stats, Synthetic, prepare_with};
use crate::progress::Progress;
use crate::train::checkpoint::{self, Checkpoint, DataRecord, DataSource};
use crate::train::run::{checkpoint_path, interrupt_flag};
use anyhow::{Context, Result, bail, ensure};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The run being continued: its folder, checkpoint file and what the checkpoint holds.
pub(super) struct Resume {
    pub(super) folder: PathBuf,
    pub(super) file: PathBuf,
    pub(super) ck: Checkpoint,
}

impl Data {
    /// What a checkpoint records of this data, for a resume to find and check it.
    pub(super) fn record(&self, base: usize) -> DataRecord {
        DataRecord {
            source: self.source.clone(),
            fingerprint: self.train.fingerprint(),
            samples: self.train.len(),
            classes: self.train.classes().to_vec(),
            base,
        }
    }
}

impl Resume {
    pub(super) fn open(path: &Path) -> Result<Resume> {
        let (folder, file) = if path.is_dir() {
            (path.to_path_buf(), checkpoint_path(path))
        } else {
            let folder = path.parent().map(PathBuf::from).unwrap_or_default();
            (folder, path.to_path_buf())
        };
        let ck = checkpoint::load(&file)
            .with_context(|| format!("cannot resume from {}", path.display()))?;
        if !ck.checksummed {
            eprintln!(
                "note: {} predates tensor checksums; its weights were checked only for being finite",
                file.display()
            );
        }
        Ok(Resume { folder, file, ck })
    }

    pub(super) fn record(&self) -> Option<&DataRecord> {
        self.ck.data.as_ref()
    }
}

/// The datasets a run trains and validates on, and how to find them again.
pub(super) struct Data {
    pub(super) train: Arc<Dataset>,
    pub(super) val: Option<Arc<Dataset>>,
    pub(super) source: DataSource,
}

pub(super) fn synthetic_data(seed: u64) -> Data {
    Data {
        train: Arc::new(Dataset::synthetic(Synthetic::new(seed, Split::Train))),
        val: Some(Arc::new(Dataset::synthetic(Synthetic::new(
            seed,
            Split::Val,
        )))),
        source: DataSource::Synthetic { seed },
    }
}

pub(super) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Opens `--data` (and `--val`), or with neither on a resume, the data the run recorded.
pub(super) fn open_data(args: &TrainArgs, resume: Option<&Resume>) -> Result<Option<Data>> {
    let recorded = resume.and_then(Resume::record);
    let (root, train_path, recorded_val) = match (&args.data, resume, recorded) {
        (Some(root), _, _) => {
            let sp = splits(root)?;
            (root.clone(), sp.train, sp.val)
        }
        (None, None, _) => return Ok(None),
        (None, Some(r), None) => bail!(
            "{} does not record what it was trained on (it was saved by an older version): pass \
             --data with the run's dataset, and --base if it was not the default",
            r.file.display()
        ),
        (None, Some(_), Some(record)) => match &record.source {
            DataSource::Synthetic { seed } => return Ok(Some(synthetic_data(*seed))),
            DataSource::Files { root, train, val } => (root.clone(), train.clone(), val.clone()),
        },
    };
    let train = open(&train_path, None, args.limits).with_context(|| {
        if args.data.is_none() {
            format!(
                "the run's training set {} cannot be opened: if it moved, pass --data with its new place",
                train_path.display()
            )
        } else {
            format!("opening the training set {}", train_path.display())
        }
    })?;
    let val_path = match (&args.val, args.no_val) {
        (_, true) => None,
        (Some(v), false) => Some(v.clone()),
        (None, false) => recorded_val,
    };
    let val = match &val_path {
        Some(v) => Some(
            open(v, Some(train.classes().to_vec()), args.limits).with_context(|| {
                format!(
                    "opening the validation set {} (--no-val trains without one)",
                    v.display()
                )
            })?,
        ),
        None => None,
    };
    Ok(Some(Data {
        source: DataSource::Files {
            root: absolute(&root),
            train: absolute(&train_path),
            val: val_path.as_deref().map(absolute),
        },
        train,
        val,
    }))
}

/// Refuses data that does not fit the run being resumed: other classes always; a training set
/// that changed since the run started unless `--data` says to use it as it is now.
pub(super) fn check_resumed_data(args: &TrainArgs, record: &DataRecord, data: &Data) -> Result<()> {
    let train = &data.train;
    if train.classes() != record.classes.as_slice() {
        let name = |c: Option<&String>| c.map_or("none".to_string(), |c| format!("{c:?}"));
        let first = (0..)
            .find(|&i| train.classes().get(i) != record.classes.get(i))
            .unwrap_or(0);
        bail!(
            "{} has {} classes and the run was trained on {}, which differ from class {first} on \
             ({} here, {} in the run): resume with the run's data",
            train.path().display(),
            train.classes().len(),
            record.classes.len(),
            name(train.classes().get(first)),
            name(record.classes.get(first))
        );
    }
    let fingerprint = train.fingerprint();
    if fingerprint != record.fingerprint {
        let what = format!(
            "the training set {} has changed since the run started ({} images now, {} then; \
             fingerprint {fingerprint}, then {})",
            train.path().display(),
            train.len(),
            record.samples,
            record.fingerprint
        );
        let root = match &data.source {
            DataSource::Files { root, .. } => root.display().to_string(),
            DataSource::Synthetic { .. } => "...".to_string(),
        };
        ensure!(
            args.data.is_some(),
            "{what}: its batches would differ from the run's. Pass --data {root} to continue on it as it is now"
        );
        eprintln!("note: {what}; continuing on it as --data asks");
    }
    Ok(())
}

/// Statistics read from a file beside the data or given by `--stats`, or computed now (kept in
/// memory: the caller saves them in the run folder once the start is checked).
/// Also returns the indices of the files it found unreadable (named already).
pub(super) fn dataset_stats(
    args: &TrainArgs,
    train: &Dataset,
    base: usize,
    threads: usize,
    writer: bool,
) -> Result<(Stats, Vec<usize>)> {
    let progress = Progress::new(
        format!("statistics of {}", train.path().display()),
        train.len() as u64,
        !args.no_progress,
    )
    .interruptible(interrupt_flag());
    let t = std::time::Instant::now();
    if train.is_synthetic() {
        return Ok((compute_with(train, base, threads, &progress)?.0, Vec::new()));
    }
    let beside = crate::data::stats::default_path(train, base)
        .ok()
        .filter(|p| p.exists());
    // A rank other than 0 of a multi-process run writes nothing: it reads a --stats file that
    // is there and otherwise computes the same statistics without saving them.
    let given = args.stats.clone().filter(|p| writer || p.exists());
    let (stats, bad, said) = match given.or(beside) {
        Some(path) => {
            let prepared = prepare_with(train, base, threads, Some(&path), &progress)?;
            let verb = if prepared.reused {
                "read"
            } else {
                "computed and saved to"
            };
            (
                prepared.stats,
                prepared.bad,
                format!("{verb} {}", path.display()),
            )
        }
        None => {
            let (stats, bad) = compute_with(train, base, threads, &progress)?;
            (stats, bad, "computed".to_string())
        }
    };
    report_bad(train, &bad);
    eprintln!(
        "dataset statistics: {said} ({:.1} s)",
        t.elapsed().as_secs_f64()
    );
    Ok((stats, bad.iter().map(|b| b.index).collect()))
}
