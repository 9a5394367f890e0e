//! What a run trains on: the datasets (given, recorded, or the
//! built-in synthetic set), their check against a resumed run's record, and their statistics.

use super::RunRequest;
use super::resume::Resume;
use crate::data::open::{open_dataset, report_bad, splits};
use crate::data::stats::compute_with;
use crate::data::{
    Dataset, EvalViews, Geometry, Loader, LoaderConfig, Shard, Split, Stats, Synthetic,
    prepare_with,
};
use crate::model::Plan;
use crate::model::spec::NetSpec;
use crate::progress::Progress;
use crate::train::batches::LoaderEval;
use crate::train::checkpoint::TrainState;
use crate::train::checkpoint::{DataRecord, DataSource};
use crate::train::run::interrupt_flag;
use anyhow::{Context, Result, bail, ensure};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
pub(super) fn open_data(req: &RunRequest, resume: Option<&Resume>) -> Result<Option<Data>> {
    let recorded = resume.and_then(Resume::record);
    let (root, train_path, recorded_val) = match (&req.data, resume, recorded) {
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
    let train = open_dataset(&train_path, None, req.max_image_bytes).with_context(|| {
        if req.data.is_none() {
            format!(
                "the run's training set {} cannot be opened: if it moved, pass --data with its new place",
                train_path.display()
            )
        } else {
            format!("opening the training set {}", train_path.display())
        }
    })?;
    let val_path = match (&req.val, req.no_val) {
        (_, true) => None,
        (Some(v), false) => Some(v.clone()),
        (None, false) => recorded_val,
    };
    let val = match &val_path {
        Some(v) => Some(
            open_dataset(v, Some(train.classes().to_vec()), req.max_image_bytes).with_context(
                || {
                    format!(
                        "opening the validation set {} (--no-val trains without one)",
                        v.display()
                    )
                },
            )?,
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
pub(super) fn check_resumed_data(req: &RunRequest, record: &DataRecord, data: &Data) -> Result<()> {
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
            req.data.is_some(),
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
    req: &RunRequest,
    train: &Dataset,
    base: usize,
    threads: usize,
    writer: bool,
) -> Result<(Stats, Vec<usize>)> {
    let progress = Progress::new(
        format!("statistics of {}", train.path().display()),
        train.len() as u64,
        !req.no_progress,
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
    let given = req.stats.clone().filter(|p| writer || p.exists());
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

/// The data asked for, the resumed run's, or the built-in synthetic set (saying so).
pub(super) fn open_run_data(
    req: &RunRequest,
    resume: Option<&Resume>,
    spec: &NetSpec,
    base: usize,
) -> Result<Data> {
    let data = match open_data(req, resume)? {
        Some(d) => d,
        None => {
            let minutes = req.max_minutes.unwrap_or(1.0);
            eprintln!(
                "No --data given: training the {} preset for about {minutes} minute(s) on the built-in synthetic set \
                 ({} procedurally drawn {}x{} images in 10 classes, nothing read from disk), to show the engine working. \
                 For real data pass --data DIR (see README).",
                spec.name,
                Synthetic::new(req.seed, Split::Train).len(),
                base,
                base
            );
            synthetic_data(req.seed)
        }
    };
    if !data.train.is_synthetic() {
        eprintln!(
            "training set {}: {} images in {} classes; validation: {}",
            data.train.path().display(),
            data.train.len(),
            data.train.classes().len(),
            data.val
                .as_ref()
                .map_or("none".to_string(), |v| format!("{} images", v.len()))
        );
    }
    Ok(data)
}

/// The data fits the network's classifier, and a resumed run's record.
pub(super) fn check_run_data(
    req: &RunRequest,
    data: &Data,
    plan: &Plan,
    recorded: Option<&DataRecord>,
) -> Result<()> {
    let classes = data.train.classes().len();
    ensure!(
        classes == plan.classes,
        "the training set has {classes} classes but the network's classifier has {}: pick a preset or spec whose last layer has {classes} units, or pass --classes",
        plan.classes
    );
    match recorded {
        Some(record) => check_resumed_data(req, record, data),
        None => Ok(()),
    }
}

/// The statistics a resumed run started with: its own (a new run takes them from the data).
pub(super) fn resumed_stats(
    req: &RunRequest,
    resume: Option<&Resume>,
    base: usize,
    data: &Data,
) -> Result<Option<Stats>> {
    let path = resume.map(|r| r.folder.join("stats.safetensors"));
    let Some(path) = path.filter(|p| p.exists()) else {
        return Ok(None);
    };
    ensure!(
        req.stats.is_none(),
        "the run keeps the statistics it started with ({}); --stats is for new runs",
        path.display()
    );
    let stats = crate::data::open::load_stats(&path)?;
    ensure!(
        stats.base == base && (stats.classes.is_empty() || stats.classes == data.train.classes()),
        "{} is for {}x{} images of {} classes, not this run's {base}x{base} images of {} classes",
        path.display(),
        stats.base,
        stats.base,
        stats.classes.len(),
        data.train.classes().len()
    );
    Ok(Some(stats))
}

/// The run's loaders: one per replica of this process, each making only its replica's share.
pub(super) struct Loaders<'a> {
    pub(super) data: &'a Data,
    pub(super) stats: &'a Arc<Stats>,
    pub(super) spec: &'a NetSpec,
    pub(super) geometry: Geometry,
    pub(super) threads: usize,
    pub(super) views: EvalViews,
}

impl Loaders<'_> {
    /// Replica `rank` of `of`'s training loader and validation batches.
    pub(super) fn open(
        &self,
        req: &RunRequest,
        state: &TrainState,
        rank: usize,
        of: usize,
    ) -> Result<(Loader, Option<LoaderEval>)> {
        let shard = Shard { rank, of };
        let config = |base: LoaderConfig| LoaderConfig {
            threads: self.threads,
            augment: self.spec.augment,
            shard,
            ..base
        };
        let g = self.geometry;
        let train = Loader::new(
            self.data.train.clone(),
            self.stats.clone(),
            config(LoaderConfig::train(g, req.batch, state.seed)),
        )?;
        let val = match &self.data.val {
            Some(v) => Some(LoaderEval::new(
                Loader::new(
                    v.clone(),
                    self.stats.clone(),
                    config(LoaderConfig::eval(g, req.batch, self.views)),
                )?,
                self.views.count(),
            )),
            None => None,
        };
        Ok((train, val))
    }
}
