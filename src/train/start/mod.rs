//! A training run assembled from what was asked: the network, data, statistics, schedule and
//! devices settled and checked, the run folder claimed, the other processes met, and one job per
//! replica of this process; then launched. `alexnet train` is a thin layer over it.
//!
//! A start checks everything it can before it writes anything: the network, the data, the
//! schedule, the devices' list, that the run folder holds no other run and that no other process
//! trains in it (a lock, see [`RunFolder`]). A resume trains on the data, spec and statistics the
//! run was started with, as its checkpoint records them. If the start fails before the first step,
//! the folder is left as it was (or removed, if this start made it).
//!
//! - `resume`: the run being continued; `network`: the spec and the starting weights;
//! - `data`: the datasets, their check against a resumed run, their statistics, the loaders;
//! - `placement`: where this process's replicas run and how the run's processes meet;
//! - `job`: one replica's training on the devices it is given.

mod data;
mod job;
mod network;
mod placement;
mod resume;

use crate::data::open::threads;
use crate::data::{EvalViews, Geometry, Stats};
use crate::dist::dispatch::DeviceKind;
use crate::model::Plan;
use crate::model::choice::NetChoice;
use crate::model::spec::NetSpec;
use crate::ops::precision::Precision;
use crate::train::batches::LoaderBatches;
use crate::train::checkpoint::DataRecord;
use crate::train::run::{TrainConfig, TrainOutcome, checkpoint_path, interrupt_flag};
use crate::train::run_folder::RunFolder;
use crate::train::schedule::Schedule;
use crate::train::settle;
use anyhow::Result;
use data::{Loaders, absolute, check_run_data, dataset_stats, open_run_data, resumed_stats};
use job::TrainJob;
use network::{settle_network, sized_to, starting_point};
use placement::Placement;
use resume::Resume;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// What a run is asked to be: `alexnet train`'s arguments, each `None` leaving the default its
/// documentation states (the CLI's help gives them).
#[derive(Clone, Debug)]
pub struct RunRequest {
    pub net: NetChoice,
    /// A dataset root, class-folder tree, tar or pack; none: the resumed run's, or synthetic.
    pub data: Option<PathBuf>,
    pub val: Option<PathBuf>,
    pub no_val: bool,
    pub stats: Option<PathBuf>,
    pub device: DeviceKind,
    pub precision: Option<Precision>,
    /// GPUs as `--devices` lists them (`0,1`).
    pub devices: Option<String>,
    pub replicas: Option<usize>,
    pub rendezvous: Option<String>,
    /// Seconds to wait for the other processes.
    pub peer_timeout: f64,
    pub epochs: usize,
    pub batch: usize,
    pub lr: Option<f32>,
    pub lr_schedule: String,
    pub seed: u64,
    pub out: Option<PathBuf>,
    pub checkpoint_every: u64,
    pub resume: Option<PathBuf>,
    pub base: Option<usize>,
    pub ten_crop: bool,
    pub threads: Option<usize>,
    pub max_steps: Option<u64>,
    pub max_minutes: Option<f64>,
    pub until_train_error: Option<f64>,
    pub no_progress: bool,
    pub max_image_bytes: u64,
}

/// A run ready to launch: every check passed, the folder claimed (by the writer, rank 0), one
/// job per replica of this process.
pub struct Run {
    pub spec: NetSpec,
    pub plan: Plan,
    /// The run folder.
    pub out: PathBuf,
    /// Batches per epoch; the learning rate it starts at.
    pub batches_per_epoch: usize,
    pub lr: f32,
    placement: Placement,
    group: Option<crate::dist::rendezvous::Group>,
    jobs: Vec<TrainJob>,
    /// The folder's lock, held until the run is dropped (after its report).
    _folder: Option<RunFolder>,
}

impl Run {
    /// Whether this process writes the run folder (rank 0) rather than only training.
    pub fn writer(&self) -> bool {
        self.placement.writer
    }

    /// Replicas in the whole run.
    pub fn replicas(&self) -> usize {
        self.placement.replicas
    }

    /// This process's rank among the run's processes.
    pub fn rank(&self) -> usize {
        self.placement.launch.rank
    }

    /// Trains: each job on its devices (this process's replicas on threads); the outcome of the
    /// first.
    pub fn launch(&mut self) -> Result<TrainOutcome> {
        let jobs = std::mem::take(&mut self.jobs);
        self.placement
            .launch_jobs(jobs, self.group.take(), self.spec.towers)
    }
}

/// Settles and checks everything `req` asks, meets the run's other processes, claims the folder
/// and builds this process's jobs. Nothing of the run folder is written before every check has
/// passed.
pub fn assemble(req: &RunRequest) -> Result<Run> {
    // Signals first: an interruption while starting (statistics take minutes on ImageNet) stops
    // the start cleanly rather than killing the process between two writes.
    let _ = interrupt_flag();
    let resume = req.resume.as_deref().map(Resume::open).transpose()?;
    let (mut spec, mut plan) = settle_network(req, resume.as_ref())?;
    // A preset's classifier is sized to the training set (unless --classes said otherwise).
    let sized_to_data = req.net.is_preset() && req.net.classes.is_none() && resume.is_none();
    let recorded = resume.as_ref().and_then(Resume::record);
    let base = settle::base(req.base, recorded.map(|r| r.base), spec.input.size)?;
    let geometry = Geometry::new(base, spec.input.size)?;
    let schedule = req.lr_schedule.parse::<Schedule>()?;
    let place = Placement::settle(req, spec.towers)?;
    let out = run_folder(req, resume.as_ref(), &spec.name, place.writer)?;

    let threads = threads(req.threads);
    let data = open_run_data(req, resume.as_ref(), &spec, base)?;
    if sized_to_data && data.train.classes().len() != plan.classes {
        (spec, plan) = sized_to(spec, data.train.classes().len())?;
    }
    check_run_data(req, &data, &plan, recorded)?;
    let run_stats = resumed_stats(req, resume.as_ref(), base, &data)?;

    // Every check that needs no work is done, here and (once they all arrive) in the other
    // processes of a multi-process run.
    let group = place.join_group(req, spec.towers)?;
    // Claim the folder (a lock, held until the end).
    let mut folder = place.writer.then(|| claim(&out)).transpose()?;
    let (stats, named_bad) = match run_stats {
        Some(s) => (s, Vec::new()),
        None => dataset_stats(req, &data.train, base, threads, place.writer)?,
    };
    let synthetic = data.train.is_synthetic();
    let (params, momentum, state) = starting_point(req, resume, &plan, &out, synthetic)?;
    let record = data.record(base);
    let stats = Arc::new(stats);
    let loaders = Loaders {
        data: &data,
        stats: &stats,
        spec: &spec,
        geometry,
        threads: (threads / place.local).max(1),
        views: EvalViews::from_ten_crop(req.ten_crop),
    };
    let shards = (0..place.local)
        .map(|i| loaders.open(req, &state, place.first_replica + i, place.replicas))
        .collect::<Result<Vec<_>>>()?;
    let batches_per_epoch = shards[0].0.batches_per_epoch();
    // The run keeps the statistics it trained with, for eval, predict and resuming.
    let kept_stats = out.join("stats.safetensors");
    if let Some(folder) = folder.as_mut().filter(|_| !kept_stats.exists()) {
        stats.save(&kept_stats)?;
        folder.created(kept_stats);
    }
    let started = folder
        .as_ref()
        .map_or_else(|| Arc::new(AtomicBool::new(false)), RunFolder::start_flag);
    let jobs = shards
        .into_iter()
        .map(|(train, val)| TrainJob {
            plan: plan.clone(),
            batch: req.batch,
            params: params.clone(),
            momentum: momentum.clone(),
            state: state.clone(),
            train: LoaderBatches::new(train).already_reported(named_bad.clone()),
            val,
            cfg: train_config(req, &out, &stats, &record, &schedule, synthetic),
            started: started.clone(),
        })
        .collect();
    Ok(Run {
        spec,
        plan,
        out,
        batches_per_epoch,
        lr: state.lr,
        placement: place,
        group,
        jobs,
        _folder: folder,
    })
}

/// What the training loop is told: the request's limits and reporting, and what each checkpoint keeps.
fn train_config(
    req: &RunRequest,
    out: &Path,
    stats: &Stats,
    record: &DataRecord,
    schedule: &Schedule,
    synthetic: bool,
) -> TrainConfig {
    TrainConfig {
        stats: Some(stats.clone()),
        epochs: req.epochs,
        schedule: schedule.clone(),
        out_dir: out.to_path_buf(),
        checkpoint_every: req.checkpoint_every,
        max_steps: req.max_steps,
        time_limit: req
            .max_minutes
            .or(synthetic.then_some(1.0))
            .map(|m| Duration::from_secs_f64(m * 60.0)),
        stop_at_train_error: req.until_train_error,
        progress: !req.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        data: Some(record.clone()),
    }
}

/// The run folder, refused where it holds another run's checkpoint (which only the writer, rank
/// 0, would overwrite).
fn run_folder(
    req: &RunRequest,
    resume: Option<&Resume>,
    net: &str,
    writer: bool,
) -> Result<PathBuf> {
    let out = settle::run_folder(req.out.as_deref(), resume.map(|r| r.folder.as_path()), net);
    let in_place = resume.is_some_and(|r| absolute(&r.file) == absolute(&checkpoint_path(&out)));
    let occupied = writer && checkpoint_path(&out).exists();
    settle::check_folder_free(&out, occupied, resume.map(|r| r.file.as_path()), in_place)?;
    Ok(out)
}

/// Claims the run folder (a lock, held until the end), saying where it took over a dead run's.
fn claim(out: &Path) -> Result<RunFolder> {
    let folder = RunFolder::claim(out)?;
    if let Some(pid) = folder.took_over_from.as_ref() {
        eprintln!(
            "note: took over {}'s lock from process {pid}, which is no longer running",
            out.display()
        );
    }
    Ok(folder)
}
