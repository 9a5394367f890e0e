//! `alexnet train`.
//!
//! A start checks everything it can before it writes anything: the network, the data, the
//! schedule, the devices' list, that the run folder holds no other run and that no other process
//! trains in it (a lock, see [`RunFolder`]). A resume trains on the data, spec and statistics the
//! run was started with, as its checkpoint records them. If the start fails before the first step,
//! the folder is left as it was (or removed, if this start made it).

mod data;
mod job;
mod placement;
mod report;

use super::NetArgs;
use super::data_args::{ReadLimits, threads};
use super::devices::DeviceKind;
use crate::data::{EvalViews, Geometry, Loader, LoaderConfig, Shard, Split, Stats, Synthetic};
use crate::model::Plan;
use crate::model::init::NetParams;
use crate::model::spec::NetSpec;
use crate::ops::precision::Precision;
use crate::train::batches::{LoaderBatches, LoaderEval};
use crate::train::checkpoint::{DataRecord, TrainState};
use crate::train::run::{TrainConfig, checkpoint_path, fresh_start, interrupt_flag, resumed_start};
use crate::train::run_folder::RunFolder;
use crate::train::schedule::Schedule;
use crate::train::settle;
use anyhow::{Context, Result, ensure};
use clap::Args;
use data::{Data, Resume, absolute, check_resumed_data, dataset_stats, open_data, synthetic_data};
use job::TrainJob;
use placement::Placement;
use report::{announce, report_outcome};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub net: NetArgs,
    /// Training data: a root holding train/ and val/ (or .tar, or test/), a class-folder tree, or a
    /// tar of one. Without it: the built-in synthetic set, for about a minute; with --resume, the
    /// data the run was started on (given, it must have the run's classes).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Validation set, if not found under --data.
    #[arg(long, conflicts_with = "no_val")]
    pub val: Option<PathBuf>,
    /// Do not evaluate a validation set after each epoch.
    #[arg(long)]
    pub no_val: bool,
    /// Dataset statistics (mean image, colour PCA) [default: beside the training set if present,
    /// else computed and saved in the run folder]. A resumed run keeps its own.
    #[arg(long)]
    pub stats: Option<PathBuf>,
    /// Where the towers run [default: auto, the GPUs if usable, else the CPU].
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceKind,
    /// The convolutions' and fc layers' products [default: the spec's, fp32 for the presets; on
    /// a resume, the precision the run was trained at]. Weights, updates and everything else
    /// stay fp32.
    #[arg(long, value_enum)]
    pub precision: Option<Precision>,
    /// GPUs for the towers with --device cuda or auto: `0,1` puts tower A on GPU 0 and B on GPU
    /// 1; `0` puts both on GPU 0 (two streams) [default: 0,1, or 0 where there is one GPU]. More
    /// GPUs than towers train data-parallel replicas over NCCL: `0,1,2,3` is two replicas of the
    /// tower pair, each on its slice of every batch.
    #[arg(long)]
    pub devices: Option<String>,
    /// Data-parallel replicas in this process with --device cpu or emu, as threads (on GPUs,
    /// --devices lists the replicas' GPUs). --batch stays the global batch: each replica takes
    /// an equal slice of it [default: 1].
    #[arg(long)]
    pub replicas: Option<usize>,
    /// Where the processes of a multi-process run meet (WORLD_SIZE/RANK or Slurm's variables
    /// set): tcp:HOST:PORT or file:PATH [default: MASTER_ADDR:MASTER_PORT].
    #[arg(long)]
    pub rendezvous: Option<String>,
    /// Seconds a data-parallel run waits for the other processes at the rendezvous and at
    /// each reduction before it stops with an error naming the missing ones.
    #[arg(long, default_value_t = 300.0)]
    pub peer_timeout: f64,
    #[arg(long, default_value_t = 90)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Initial learning rate [default: the spec's, 0.01 for the presets; 0.005 on the built-in
    /// synthetic set].
    #[arg(long)]
    pub lr: Option<f32>,
    /// plateau[:PATIENCE] (divide by 10 when validation error stops improving), epochs:E1,E2,...
    /// or constant.
    #[arg(long, default_value = "plateau")]
    pub lr_schedule: String,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run folder for the checkpoint, metrics log, statistics and curves [default: runs/<net>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Save a checkpoint every N steps (also at every epoch end and on Ctrl-C).
    #[arg(long, default_value_t = 1000)]
    pub checkpoint_every: u64,
    /// Continue a run from its folder (or checkpoint file), exactly where it stopped.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Side of the base images [default: 256, or the input size for small inputs].
    #[arg(long)]
    pub base: Option<usize>,
    /// Evaluate the validation set with the paper's ten crops instead of the centre crop.
    #[arg(long)]
    pub ten_crop: bool,
    /// Decoding threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Stop after this many steps in all (with a checkpoint).
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Stop after this many minutes (with a checkpoint) [default: 1 for the synthetic set].
    #[arg(long)]
    pub max_minutes: Option<f64>,
    /// Stop once an epoch's average training top-1 error is at or below this fraction (the
    /// paper's Figure 1 counts epochs to 0.25).
    #[arg(long)]
    pub until_train_error: Option<f64>,
    /// No progress bar (plain lines), e.g. for logs.
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub limits: ReadLimits,
}

pub fn run(args: TrainArgs) -> Result<()> {
    // Signals first: an interruption while starting (statistics take minutes on ImageNet) stops
    // the start cleanly rather than killing the process between two writes.
    let _ = interrupt_flag();
    let resume = args.resume.as_deref().map(Resume::open).transpose()?;
    let (mut spec, mut plan) = settle_network(&args, resume.as_ref())?;
    // A preset's classifier is sized to the training set (unless --classes said otherwise).
    let sized_to_data = args.net.is_preset() && args.net.classes.is_none() && resume.is_none();
    let recorded = resume.as_ref().and_then(Resume::record);
    let base = settle::base(args.base, recorded.map(|r| r.base), spec.input.size)?;
    let geometry = Geometry::new(base, spec.input.size)?;
    let schedule = args.lr_schedule.parse::<Schedule>()?;
    let place = Placement::settle(&args, spec.towers)?;
    let out = run_folder(&args, resume.as_ref(), &spec.name, place.writer)?;

    let threads = threads(args.threads);
    let data = open_run_data(&args, resume.as_ref(), &spec, base)?;
    if sized_to_data && data.train.classes().len() != plan.classes {
        (spec, plan) = sized_to(spec, data.train.classes().len())?;
    }
    check_run_data(&args, &data, &plan, recorded)?;
    let run_stats = resumed_stats(&args, resume.as_ref(), base, &data)?;

    // Every check that needs no work is done, here and (once they all arrive) in the other
    // processes of a multi-process run.
    let group = place.join_group(&args, spec.towers)?;
    // Claim the folder (a lock, held until the end).
    let mut folder = place.writer.then(|| claim(&out)).transpose()?;
    let (stats, named_bad) = match run_stats {
        Some(s) => (s, Vec::new()),
        None => dataset_stats(&args, &data.train, base, threads, place.writer)?,
    };
    let synthetic = data.train.is_synthetic();
    let (params, momentum, state) = starting_point(&args, resume, &plan, &out, synthetic)?;
    let record = data.record(base);
    let stats = Arc::new(stats);
    let loaders = Loaders {
        data: &data,
        stats: &stats,
        spec: &spec,
        geometry,
        threads: (threads / place.local).max(1),
        views: if args.ten_crop {
            EvalViews::TenCrop
        } else {
            EvalViews::Centre
        },
    };
    let shards = (0..place.local)
        .map(|i| loaders.open(&args, &state, place.first_replica + i, place.replicas))
        .collect::<Result<Vec<_>>>()?;
    let batches_per_epoch = shards[0].0.batches_per_epoch();
    let cfg = || train_config(&args, &out, &stats, &record, &schedule, synthetic);
    // The run keeps the statistics it trained with, for eval, predict and resuming.
    let kept_stats = out.join("stats.safetensors");
    if let Some(folder) = folder.as_mut().filter(|_| !kept_stats.exists()) {
        stats.save(&kept_stats)?;
        folder.created(kept_stats);
    }
    if place.writer {
        announce(
            &spec,
            &plan,
            &args,
            place.replicas,
            batches_per_epoch,
            state.lr,
        );
    }
    let t = std::time::Instant::now();
    let started = folder
        .as_ref()
        .map_or_else(|| Arc::new(AtomicBool::new(false)), RunFolder::start_flag);
    let mut jobs = Vec::new();
    for (train, val) in shards {
        jobs.push(TrainJob {
            plan: plan.clone(),
            batch: args.batch,
            params: params.clone(),
            momentum: momentum.clone(),
            state: state.clone(),
            train: LoaderBatches::new(train).already_reported(named_bad.clone()),
            val,
            cfg: cfg(),
            started: started.clone(),
        });
    }
    let outcome = place.launch_jobs(jobs, group, spec.towers)?;
    if !place.writer {
        println!(
            "rank {}: stopped after {} steps; rank 0 wrote the run",
            place.launch.rank, outcome.state.step
        );
        return Ok(());
    }
    report_outcome(
        &outcome,
        &out,
        args.epochs,
        args.batch,
        t.elapsed().as_secs_f64(),
    );
    Ok(())
}

/// What the training loop is told: `args`' limits and reporting, and what each checkpoint keeps.
fn train_config(
    args: &TrainArgs,
    out: &Path,
    stats: &Stats,
    record: &DataRecord,
    schedule: &Schedule,
    synthetic: bool,
) -> TrainConfig {
    TrainConfig {
        stats: Some(stats.clone()),
        epochs: args.epochs,
        schedule: schedule.clone(),
        out_dir: out.to_path_buf(),
        checkpoint_every: args.checkpoint_every,
        max_steps: args.max_steps,
        time_limit: args
            .max_minutes
            .or(synthetic.then_some(1.0))
            .map(|m| Duration::from_secs_f64(m * 60.0)),
        stop_at_train_error: args.until_train_error,
        progress: !args.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        data: Some(record.clone()),
    }
}

/// The run folder, refused where it holds another run's checkpoint (which only the writer, rank
/// 0, would overwrite).
fn run_folder(
    args: &TrainArgs,
    resume: Option<&Resume>,
    net: &str,
    writer: bool,
) -> Result<PathBuf> {
    let out = settle::run_folder(args.out.as_deref(), resume.map(|r| r.folder.as_path()), net);
    let in_place = resume.is_some_and(|r| absolute(&r.file) == absolute(&checkpoint_path(&out)));
    let occupied = writer && checkpoint_path(&out).exists();
    settle::check_folder_free(&out, occupied, resume.map(|r| r.file.as_path()), in_place)?;
    Ok(out)
}

/// The network: the checkpoint's when resuming without a choice, else the arguments; at the
/// precision asked, else the resumed run's. A resumed run is checked to be of this network and
/// batch.
fn settle_network(args: &TrainArgs, resume: Option<&Resume>) -> Result<(NetSpec, Plan)> {
    let synthetic_default = args.data.is_none() && resume.is_none();
    let mut spec = match (resume, args.net.chosen()) {
        (Some(r), false) => r.ck.spec.clone(),
        _ => args
            .net
            .spec_or(if synthetic_default { "cifar" } else { "paper" })?,
    };
    // A resume continues at the precision the run was trained at, unless told otherwise.
    spec.precision = settle::precision(
        args.precision,
        resume.map(|r| r.ck.spec.precision),
        spec.precision,
    );
    let plan = Plan::new(&spec).context("the network spec does not make sense")?;
    if let Some(r) = resume {
        r.ck.check_model(&plan)
            .with_context(|| format!("cannot resume from {}", r.file.display()))?;
        settle::check_resumed_batch(r.ck.state.batch, args.batch)?;
    }
    Ok((spec, plan))
}

/// `spec` with its classifier sized to `classes`, saying so.
fn sized_to(spec: NetSpec, classes: usize) -> Result<(NetSpec, Plan)> {
    let (sized, note) = spec.with_classes(classes)?;
    eprintln!(
        "{}: classifier sized to the training set's {classes} classes{}",
        sized.name,
        note.map_or(String::new(), |n| format!(" ({n})"))
    );
    let plan = Plan::new(&sized).context("the network spec does not make sense")?;
    Ok((sized, plan))
}

/// The data asked for, the resumed run's, or the built-in synthetic set (saying so).
fn open_run_data(
    args: &TrainArgs,
    resume: Option<&Resume>,
    spec: &NetSpec,
    base: usize,
) -> Result<Data> {
    let data = match open_data(args, resume)? {
        Some(d) => d,
        None => {
            let minutes = args.max_minutes.unwrap_or(1.0);
            eprintln!(
                "No --data given: training the {} preset for about {minutes} minute(s) on the built-in synthetic set \
                 ({} procedurally drawn {}x{} images in 10 classes, nothing read from disk), to show the engine working. \
                 For real data pass --data DIR (see README).",
                spec.name,
                Synthetic::new(args.seed, Split::Train).len(),
                base,
                base
            );
            synthetic_data(args.seed)
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
fn check_run_data(
    args: &TrainArgs,
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
        Some(record) => check_resumed_data(args, record, data),
        None => Ok(()),
    }
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

/// The statistics a resumed run started with: its own (a new run takes them from the data).
fn resumed_stats(
    args: &TrainArgs,
    resume: Option<&Resume>,
    base: usize,
    data: &Data,
) -> Result<Option<Stats>> {
    let path = resume.map(|r| r.folder.join("stats.safetensors"));
    let Some(path) = path.filter(|p| p.exists()) else {
        return Ok(None);
    };
    ensure!(
        args.stats.is_none(),
        "the run keeps the statistics it started with ({}); --stats is for new runs",
        path.display()
    );
    let stats = super::data_args::load_stats(&path)?;
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

/// The weights, momentum and state to start from: the resumed run's (saying where it stands),
/// else a fresh initialisation.
fn starting_point(
    args: &TrainArgs,
    resume: Option<Resume>,
    plan: &Plan,
    out: &Path,
    synthetic: bool,
) -> Result<(NetParams, Option<NetParams>, TrainState)> {
    let spec = &plan.spec;
    let (params, momentum, mut state) = match resume {
        Some(r) => {
            let trained_at = r.ck.spec.precision;
            let precision = if spec.precision == trained_at {
                format!("at the run's precision, {trained_at} (--precision changes it)")
            } else {
                format!(
                    "at {}, as --precision asks (the run was trained at {trained_at})",
                    spec.precision
                )
            };
            eprintln!(
                "resuming {} at epoch {}, batch {} (step {}), {precision}",
                out.display(),
                r.ck.state.epoch + 1,
                r.ck.state.batch_in_epoch,
                r.ck.state.step
            );
            resumed_start(r.ck)
        }
        None => fresh_start(
            plan,
            args.seed,
            settle::initial_lr(args.lr, synthetic, spec.optim.lr),
        ),
    };
    state.batch = args.batch;
    Ok((params, momentum, state))
}

/// The run's loaders: one per replica of this process, each making only its replica's share.
struct Loaders<'a> {
    data: &'a Data,
    stats: &'a Arc<Stats>,
    spec: &'a NetSpec,
    geometry: Geometry,
    threads: usize,
    views: EvalViews,
}

impl Loaders<'_> {
    /// Replica `rank` of `of`'s training loader and validation batches.
    fn open(
        &self,
        args: &TrainArgs,
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
            config(LoaderConfig::train(g, args.batch, state.seed)),
        )?;
        let val = match &self.data.val {
            Some(v) => Some(LoaderEval::new(
                Loader::new(
                    v.clone(),
                    self.stats.clone(),
                    config(LoaderConfig::eval(g, args.batch, self.views)),
                )?,
                self.views.count(),
            )),
            None => None,
        };
        Ok((train, val))
    }
}
