//! `alexnet train`.
//!
//! A start checks everything it can before it writes anything: the network, the data, the
//! schedule, the devices' list, that the run folder holds no other run and that no other process
//! trains in it (a lock, see [`RunFolder`]). A resume trains on the data, spec and statistics the
//! run was started with, as its checkpoint records them. If the start fails before the first step,
//! the folder is left as it was (or removed, if this start made it).

use super::NetArgs;
use super::data_args::{ReadLimits, open, report_bad, splits, threads};
use super::devices::{
    DeviceKind, Job, ReplicaJob, choose, dispatch, dispatch_replicas, rendezvous_id,
};
use crate::data::stats::compute_with;
use crate::data::{
    Dataset, EvalViews, Geometry, Loader, LoaderConfig, Shard, Split, Stats, Synthetic,
    prepare_with,
};
use crate::device::Device;
use crate::model::Plan;
use crate::model::init::NetParams;
use crate::ops::precision::Precision;
use crate::dist::collective::Collective;
use crate::dist::rendezvous::{Launch, Rendezvous, join};
use crate::data::shard;
use crate::dist::replicas::Replica;
use crate::engine::Network;
use crate::progress::Progress;
use crate::train::batches::{LoaderBatches, LoaderEval};
use crate::train::checkpoint::{self, Checkpoint, DataRecord, DataSource, TrainState};
use crate::train::plot::plot_metrics;
use crate::train::replicated::Peers;
use crate::train::batches::EvalBatches;
use crate::train::run::{TrainConfig, TrainOutcome, checkpoint_path, interrupt_flag, train};
use crate::train::run_folder::RunFolder;
use crate::train::schedule::Schedule;
use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

struct TrainJob {
    plan: Plan,
    batch: usize,
    params: NetParams,
    momentum: Option<NetParams>,
    state: TrainState,
    train: LoaderBatches,
    val: Option<LoaderEval>,
    cfg: TrainConfig,
    /// Set once the devices hold the network: the run has begun (see [`RunFolder::start_flag`]).
    started: Arc<AtomicBool>,
}

impl Job for TrainJob {
    type Output = TrainOutcome;
    fn run<D: Device>(self, devices: Vec<D>) -> Result<TrainOutcome> {
        self.run_on(devices, None)
    }
}

impl ReplicaJob for TrainJob {
    type Output = TrainOutcome;
    fn run<D: Device + 'static>(
        self,
        devices: Vec<D>,
        collective: Box<dyn Collective<D>>,
    ) -> Result<TrainOutcome> {
        self.run_on(devices, Some(collective))
    }
}

impl TrainJob {
    /// One network on `devices`, or with `collective` one data-parallel replica, whose batches
    /// are its slice of each global batch (the loader makes only that slice).
    fn run_on<D: Device>(
        mut self,
        devices: Vec<D>,
        collective: Option<Box<dyn Collective<D>>>,
    ) -> Result<TrainOutcome> {
        let names: Vec<String> = devices.iter().map(|d| d.describe()).collect();
        let who = match &collective {
            Some(c) => format!("replica {} of {}: ", c.rank(), c.replicas()),
            None => String::new(),
        };
        eprintln!("{who}towers on: {}", names.join(" | "));
        let mut net = Network::new(&self.plan, devices, &self.params, self.state.seed)?;
        // Training reads no gradients: the fc layers may take their update in backward.
        net.keep_gradients(false);
        if let Some(m) = &self.momentum {
            net.set_velocities(m)?;
        }
        let mut replica = match collective {
            Some(c) => Replica::new(net, c, self.batch)?,
            None => Replica::alone(net, self.batch),
        };
        let batch = replica.samples().len();
        replica.net.reserve_batch(batch)?;
        let mb: Vec<String> = replica
            .net
            .bytes_per_tower()
            .iter()
            .map(|b| format!("{:.0} MB", *b as f64 / 1e6))
            .collect();
        eprintln!(
            "{who}memory held per tower at batch {batch}: {} (before op workspaces)",
            mb.join(" | ")
        );
        ensure!(
            !interrupt_flag().load(Ordering::SeqCst),
            "interrupted before training began; the run folder is as it was"
        );
        if let Some(peers) = Peers::of(&replica) {
            // The place in the run and the arguments that shape every step.
            let place = format!("{:?} batch {}", self.state, self.batch);
            let place = xxhash_rust::xxh3::xxh3_64(place.as_bytes());
            peers.check_same_start(&mut replica, place)?;
        }
        self.started.store(true, Ordering::SeqCst);
        let val = self.val.as_mut().map(|v| v as &mut dyn EvalBatches);
        train(&mut replica, self.state, &mut self.train, val, &self.cfg)
    }
}

/// The run being continued: its folder, checkpoint file and what the checkpoint holds.
struct Resume {
    folder: PathBuf,
    file: PathBuf,
    ck: Checkpoint,
}

impl Resume {
    fn open(path: &Path) -> Result<Resume> {
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

    fn record(&self) -> Option<&DataRecord> {
        self.ck.data.as_ref()
    }
}

/// The datasets a run trains and validates on, and how to find them again.
struct Data {
    train: Arc<Dataset>,
    val: Option<Arc<Dataset>>,
    source: DataSource,
}

/// The initial learning rate on the built-in synthetic set when `--lr` is not given. At the
/// presets' 0.01 the cifar preset died at chance (90% validation error from the first epoch
/// on) at one seed in four, with the CPU kernels of before and after the CPU path's second
/// rework alike (a different seed each: the runs are chaotic, and summation order picks which);
/// at 0.005 six seeds of six learned, to 0.75-20% validation error after two epochs.
const SYNTHETIC_LR: f32 = 0.005;

fn synthetic_data(seed: u64) -> Data {
    Data {
        train: Arc::new(Dataset::synthetic(Synthetic::new(seed, Split::Train))),
        val: Some(Arc::new(Dataset::synthetic(Synthetic::new(
            seed,
            Split::Val,
        )))),
        source: DataSource::Synthetic { seed },
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Opens `--data` (and `--val`), or with neither on a resume, the data the run recorded.
fn open_data(args: &TrainArgs, resume: Option<&Resume>) -> Result<Option<Data>> {
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
fn check_resumed_data(args: &TrainArgs, record: &DataRecord, data: &Data) -> Result<()> {
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
fn dataset_stats(
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

pub fn run(args: TrainArgs) -> Result<()> {
    // Signals first: an interruption while starting (statistics take minutes on ImageNet) stops
    // the start cleanly rather than killing the process between two writes.
    let _ = interrupt_flag();
    let resume = args.resume.as_deref().map(Resume::open).transpose()?;
    let synthetic_default = args.data.is_none() && resume.is_none();

    // The network: the checkpoint's when resuming without a choice, else the arguments.
    let mut spec = match (&resume, args.net.chosen()) {
        (Some(r), false) => r.ck.spec.clone(),
        _ => args
            .net
            .spec_or(if synthetic_default { "cifar" } else { "paper" })?,
    };
    // A resume continues at the precision the run was trained at, unless told otherwise.
    spec.precision = match (&resume, args.precision) {
        (_, Some(p)) => p,
        (Some(r), None) => r.ck.spec.precision,
        (None, None) => spec.precision,
    };
    let mut plan = Plan::new(&spec).context("the network spec does not make sense")?;
    // A preset's classifier is sized to the training set (unless --classes said otherwise).
    let sized_to_data = args.net.is_preset() && args.net.classes.is_none() && resume.is_none();
    if let Some(r) = &resume {
        r.ck.check_model(&plan)
            .with_context(|| format!("cannot resume from {}", r.file.display()))?;
        ensure!(
            r.ck.state.batch == 0 || r.ck.state.batch == args.batch,
            "the run was trained with batch {}, not {}: resume with --batch {} to continue it exactly",
            r.ck.state.batch,
            args.batch,
            r.ck.state.batch
        );
    }
    let recorded = resume.as_ref().and_then(Resume::record);
    let crop = spec.input.size;
    let base = match (args.base, recorded) {
        (Some(b), Some(r)) if b != r.base => bail!(
            "the run was trained from {0}x{0} base images, not {b}x{b}: drop --base or pass --base {0}",
            r.base
        ),
        (Some(b), _) => b,
        (None, Some(r)) => r.base,
        (None, None) => {
            if crop > 64 {
                256
            } else {
                crop
            }
        }
    };
    let geometry = Geometry::new(base, crop)?;
    let schedule = args.lr_schedule.parse::<Schedule>()?;
    let (device, mut gpus) = choose(args.device, args.devices.as_deref(), spec.towers)?;
    // Data parallel (issue #16): replicas in this process, in every process the launcher
    // started (WORLD_SIZE or Slurm's SLURM_NTASKS), and this process's first replica's rank.
    let launch = Launch::from_env(|k| std::env::var(k).ok())?;
    if launch.world_size > 1 && device == DeviceKind::Cuda && args.devices.is_none() {
        // One process per tower pair (torchrun --nproc-per-node 4 on eight GPUs): the pair
        // LOCAL_RANK names.
        let t = spec.towers;
        gpus = (launch.local_rank * t..(launch.local_rank + 1) * t).collect();
    }
    let local = local_replicas(&args, device, &gpus, spec.towers)?;
    let replicas = local * launch.world_size;
    shard::range(args.batch, replicas, 0)?;
    ensure!(
        device == DeviceKind::Cuda || launch.world_size == 1 || local == 1,
        "--replicas {local} in each of {} processes: on the CPU a run of several processes takes one replica per process (start more processes instead)",
        launch.world_size
    );
    let first_replica = launch.rank * local;
    // Rank 0 alone writes the run folder; the other processes only train.
    let writer = launch.rank == 0;
    let peer_timeout = Duration::try_from_secs_f64(args.peer_timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .with_context(|| {
            format!(
                "--peer-timeout {}: expected seconds above 0",
                args.peer_timeout
            )
        })?;

    // The run folder: never another run's.
    let out = args
        .out
        .clone()
        .or_else(|| resume.as_ref().map(|r| r.folder.clone()))
        .unwrap_or_else(|| PathBuf::from("runs").join(&spec.name));
    let continues_in_place = resume
        .as_ref()
        .is_some_and(|r| absolute(&r.file) == absolute(&checkpoint_path(&out)));
    if writer && !continues_in_place && checkpoint_path(&out).exists() {
        match &resume {
            None => bail!(
                "{} already holds a checkpoint: pass --resume {} to continue it, or --out to start a new run elsewhere",
                out.display(),
                out.display()
            ),
            Some(r) => bail!(
                "{} already holds a checkpoint, which continuing {} there would overwrite: pass --out to continue it in another folder",
                out.display(),
                r.file.display()
            ),
        }
    }

    // Data.
    let threads = threads(args.threads);
    let data = match open_data(&args, resume.as_ref())? {
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
    let synthetic = data.train.is_synthetic();
    if !synthetic {
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
    let classes = data.train.classes().len();
    if sized_to_data && classes != plan.classes {
        let (sized, note) = spec.with_classes(classes)?;
        eprintln!(
            "{}: classifier sized to the training set's {classes} classes{}",
            sized.name,
            note.map_or(String::new(), |n| format!(" ({n})"))
        );
        spec = sized;
        plan = Plan::new(&spec).context("the network spec does not make sense")?;
    }
    ensure!(
        data.train.classes().len() == plan.classes,
        "the training set has {} classes but the network's classifier has {}: pick a preset or spec whose last layer has {} units, or pass --classes",
        data.train.classes().len(),
        plan.classes,
        data.train.classes().len()
    );
    if let Some(record) = recorded {
        check_resumed_data(&args, record, &data)?;
    }
    // The statistics a resumed run started with are its own; a new run takes them from the data.
    let run_stats_path = resume.as_ref().map(|r| r.folder.join("stats.safetensors"));
    let run_stats = match run_stats_path.as_ref().filter(|p| p.exists()) {
        Some(path) => {
            ensure!(
                args.stats.is_none(),
                "the run keeps the statistics it started with ({}); --stats is for new runs",
                path.display()
            );
            let stats = super::data_args::load_stats(path)?;
            ensure!(
                stats.base == base
                    && (stats.classes.is_empty() || stats.classes == data.train.classes()),
                "{} is for {}x{} images of {} classes, not this run's {base}x{base} images of {} classes",
                path.display(),
                stats.base,
                stats.base,
                stats.classes.len(),
                data.train.classes().len()
            );
            Some(stats)
        }
        None => None,
    };

    // Every check that needs no work is done, here and (once they all arrive) in the other
    // processes of a multi-process run.
    let group = if launch.world_size > 1 {
        let at = launch.rendezvous(args.rendezvous.as_deref())?;
        let place = match &at {
            Rendezvous::Tcp(addr) => format!("at {addr}"),
            Rendezvous::File(path) => format!("through {}", path.display()),
            Rendezvous::Alone => String::new(),
        };
        eprintln!(
            "rank {} of {}: waiting up to {:?} for the other processes {place}",
            launch.rank, launch.world_size, peer_timeout
        );
        Some(join(&launch, &at, peer_timeout, || {
            rendezvous_id(device, spec.towers)
        })?)
    } else {
        None
    };
    // Claim the folder (a lock, held until the end).
    let mut folder = writer.then(|| RunFolder::claim(&out)).transpose()?;
    if let Some(pid) = folder.as_ref().and_then(|f| f.took_over_from.as_ref()) {
        eprintln!(
            "note: took over {}'s lock from process {pid}, which is no longer running",
            out.display()
        );
    }
    let (stats, named_bad) = match run_stats {
        Some(s) => (s, Vec::new()),
        None => dataset_stats(&args, &data.train, base, threads, writer)?,
    };
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
            (r.ck.params, Some(r.ck.momentum), r.ck.state)
        }
        None => (
            crate::model::init::init_params(&plan, args.seed),
            None,
            TrainState {
                lr: args.lr.unwrap_or(if synthetic {
                    SYNTHETIC_LR
                } else {
                    spec.optim.lr
                }),
                seed: args.seed,
                ..TrainState::default()
            },
        ),
    };
    state.batch = args.batch;

    let record = DataRecord {
        source: data.source.clone(),
        fingerprint: data.train.fingerprint(),
        samples: data.train.len(),
        classes: data.train.classes().to_vec(),
        base,
    };
    let stats = Arc::new(stats);
    let views = if args.ten_crop {
        EvalViews::TenCrop
    } else {
        EvalViews::Centre
    };
    // One loader per replica of this process, each making only its replica's share.
    let loader_threads = (threads / local).max(1);
    let loaders = |shard: Shard| -> Result<(Loader, Option<LoaderEval>)> {
        let train = Loader::new(
            data.train.clone(),
            stats.clone(),
            LoaderConfig {
                threads: loader_threads,
                augment: spec.augment,
                shard,
                ..LoaderConfig::train(geometry, args.batch, state.seed)
            },
        )?;
        let val = match &data.val {
            Some(v) => Some(LoaderEval::new(
                Loader::new(
                    v.clone(),
                    stats.clone(),
                    LoaderConfig {
                        threads: loader_threads,
                        augment: spec.augment,
                        shard,
                        ..LoaderConfig::eval(geometry, args.batch, views)
                    },
                )?,
                views.count(),
            )),
            None => None,
        };
        Ok((train, val))
    };
    let mut shards = Vec::new();
    for i in 0..local {
        shards.push(loaders(Shard {
            rank: first_replica + i,
            of: replicas,
        })?);
    }
    let batches_per_epoch = shards[0].0.batches_per_epoch();
    let cfg = || TrainConfig {
        stats: Some((*stats).clone()),
        epochs: args.epochs,
        schedule: schedule.clone(),
        out_dir: out.clone(),
        checkpoint_every: args.checkpoint_every,
        max_steps: args.max_steps,
        time_limit: args
            .max_minutes
            .or(synthetic.then_some(1.0))
            .map(|m| Duration::from_secs_f64(m * 60.0)),
        stop_at_train_error: args.until_train_error,
        progress: !args.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        data: Some(record.clone()),
    };
    // The run keeps the statistics it trained with, for eval, predict and resuming.
    let kept_stats = out.join("stats.safetensors");
    if let Some(folder) = folder.as_mut().filter(|_| !kept_stats.exists()) {
        stats.save(&kept_stats)?;
        folder.created(kept_stats);
    }
    if writer {
        eprintln!(
            "{}: {} parameters, {} towers, batch {}{}, {} batches per epoch, learning rate {}, {} products",
            spec.name,
            crate::model::plan::group_digits(plan.params()),
            spec.towers,
            args.batch,
            if replicas > 1 {
                format!(
                    " ({replicas} data-parallel replicas of {} each)",
                    args.batch / replicas
                )
            } else {
                String::new()
            },
            batches_per_epoch,
            state.lr,
            spec.precision
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
    let outcome = if replicas == 1 {
        dispatch(device, spec.towers, &gpus, jobs.pop().expect("one job"))?
    } else {
        let outcomes = dispatch_replicas(device, spec.towers, &gpus, jobs, group, peer_timeout)?;
        outcomes
            .into_iter()
            .next()
            .expect("one outcome per replica")
    };
    if !writer {
        println!(
            "rank {}: stopped after {} steps; rank 0 wrote the run",
            launch.rank, outcome.state.step
        );
        return Ok(());
    }
    let png = out.join("curves.png");
    if let Err(e) = plot_metrics(&out.join("metrics.jsonl"), &png, false) {
        eprintln!("warning: could not draw the curves: {e:#}");
    }
    let s = &outcome.state;
    println!(
        "{} after {} steps ({} epochs and {} batches) in {:.0} s.",
        if outcome.interrupted {
            "Interrupted"
        } else {
            "Stopped"
        },
        s.step,
        s.epoch,
        s.batch_in_epoch,
        t.elapsed().as_secs_f64()
    );
    let waited = outcome.data_wait_seconds / outcome.seconds.max(1e-9);
    if waited >= crate::train::report::DATA_WAIT_SHOWN {
        println!(
            "The steps waited {:.0} s for data ({:.0}% of the run): the loader set the pace. A pack \
             (alexnet prepare --pack) decodes several times faster; more --threads help too.",
            outcome.data_wait_seconds,
            100.0 * waited
        );
    }
    if let Some(e) = outcome.last_eval {
        println!(
            "Validation: top-1 error {:.2}%, top-5 error {:.2}% ({} images).",
            100.0 * e.top1_error,
            100.0 * e.top5_error,
            e.images
        );
    }
    println!(
        "Checkpoint {}; metrics {}; curves {}.",
        outcome.checkpoint.display(),
        out.join("metrics.jsonl").display(),
        png.display()
    );
    if s.epoch < args.epochs {
        println!(
            "Continue with: alexnet train --resume {} --batch {}",
            out.display(),
            args.batch
        );
    }
    Ok(())
}

/// How many data-parallel replicas this process runs: on GPUs, one per `towers` GPUs of
/// `--devices` (checked by `choose`: whole replicas, NCCL there); on the CPU and the host
/// executor, `--replicas`.
fn local_replicas(
    args: &TrainArgs,
    device: DeviceKind,
    gpus: &[usize],
    towers: usize,
) -> Result<usize> {
    let asked = args.replicas;
    ensure!(
        asked != Some(0),
        "--replicas 0: a run has at least one replica"
    );
    if device != DeviceKind::Cuda {
        return Ok(asked.unwrap_or(1));
    }
    let from_gpus = if gpus.len() > towers {
        gpus.len() / towers
    } else {
        1
    };
    match asked {
        Some(r) if r != from_gpus => bail!(
            "--replicas {r} on GPUs: list the replicas' GPUs in --devices instead ({} for {r} replicas of {towers} towers), which gives {from_gpus} now",
            r * towers
        ),
        _ => Ok(from_gpus),
    }
}
