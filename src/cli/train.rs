//! `alexnet train`.

use super::NetArgs;
use super::data_args::{open, splits, threads};
use super::devices::{DeviceKind, Job, dispatch, parse_gpus};
use crate::data::{Dataset, EvalViews, Geometry, Loader, LoaderConfig, Split, Synthetic, prepare};
use crate::device::Device;
use crate::model::Plan;
use crate::model::init::NetParams;
use crate::parallel::Network;
use crate::train::batches::{LoaderBatches, LoaderEval};
use crate::train::checkpoint::TrainState;
use crate::train::plot::plot_metrics;
use crate::train::run::{
    EvalBatches, TrainConfig, TrainOutcome, checkpoint_path, starting_point, train,
};
use crate::train::schedule::Schedule;
use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub net: NetArgs,
    /// Training data: a root holding train/ and val/ (or .tar, or test/), a class-folder tree, or a
    /// tar of one. Without it: the built-in synthetic set, for about a minute.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Validation set, if not found under --data.
    #[arg(long, conflicts_with = "no_val")]
    pub val: Option<PathBuf>,
    /// Do not evaluate a validation set after each epoch.
    #[arg(long)]
    pub no_val: bool,
    /// Dataset statistics (mean image, colour PCA) [default: beside the training set if present,
    /// else computed and saved in the run folder].
    #[arg(long)]
    pub stats: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceKind,
    /// GPUs for the towers with --device cuda: `0,1` puts tower A on GPU 0 and B on GPU 1; `0`
    /// puts both on GPU 0 (two streams).
    #[arg(long, default_value = "0,1")]
    pub devices: String,
    #[arg(long, default_value_t = 90)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Initial learning rate [default: the spec's, 0.01 for the presets].
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
}

impl Job for TrainJob {
    type Output = TrainOutcome;
    fn run<D: Device>(mut self, devices: Vec<D>) -> Result<TrainOutcome> {
        let names: Vec<String> = devices.iter().map(|d| d.describe()).collect();
        eprintln!("towers on: {}", names.join(" | "));
        let mut net = Network::new(&self.plan, devices, &self.params, self.state.seed)?;
        if let Some(m) = &self.momentum {
            net.set_velocities(m)?;
        }
        net.reserve_batch(self.batch)?;
        let mb: Vec<String> = net
            .bytes_per_tower()
            .iter()
            .map(|b| format!("{:.0} MB", *b as f64 / 1e6))
            .collect();
        eprintln!(
            "memory held per tower at batch {}: {} (before op workspaces)",
            self.batch,
            mb.join(" | ")
        );
        let val = self.val.as_mut().map(|v| v as &mut dyn EvalBatches);
        train(&mut net, self.state, &mut self.train, val, &self.cfg)
    }
}

pub fn run(args: TrainArgs) -> Result<()> {
    let synthetic = args.data.is_none();
    // The network: from the checkpoint when resuming without a choice, else the arguments.
    let resume_ck = match &args.resume {
        Some(p) => {
            let path = if p.is_dir() {
                checkpoint_path(p)
            } else {
                p.clone()
            };
            Some(
                crate::train::checkpoint::load(&path)
                    .with_context(|| format!("cannot resume from {}", p.display()))?,
            )
        }
        None => None,
    };
    let spec = match (&resume_ck, args.net.chosen()) {
        (Some(ck), false) => ck.spec.clone(),
        _ => args
            .net
            .spec_or(if synthetic { "cifar" } else { "paper" })?,
    };
    let plan = Plan::new(&spec).context("the network spec does not make sense")?;
    let crop = spec.input.size;
    let base = args.base.unwrap_or(if crop > 64 { 256 } else { crop });
    let geometry = Geometry::new(base, crop)?;
    let out = args
        .out
        .clone()
        .or_else(|| {
            args.resume.as_ref().map(|p| {
                if p.is_dir() {
                    p.clone()
                } else {
                    p.parent().map(PathBuf::from).unwrap_or_default()
                }
            })
        })
        .unwrap_or_else(|| PathBuf::from("runs").join(&spec.name));
    if args.resume.is_none() && checkpoint_path(&out).exists() {
        bail!(
            "{} already holds a checkpoint: pass --resume {} to continue it, or --out to start a new run elsewhere",
            out.display(),
            out.display()
        );
    }
    std::fs::create_dir_all(&out)
        .with_context(|| format!("creating the run folder {}", out.display()))?;

    // Data.
    let threads = threads(args.threads);
    let (train_set, val_set, stats) = if synthetic {
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
        let train = Arc::new(Dataset::synthetic(Synthetic::new(args.seed, Split::Train)));
        let val = Arc::new(Dataset::synthetic(Synthetic::new(args.seed, Split::Val)));
        let stats = prepare(&train, base, threads, None)?.stats;
        (train, Some(val), stats)
    } else {
        let root = args.data.as_ref().expect("not synthetic");
        let sp = splits(root)?;
        let train = open(&sp.train, None)?;
        let val = match args.val.as_ref().or(sp.val.as_ref()) {
            Some(v) if !args.no_val => Some(open(v, Some(train.classes().to_vec()))?),
            _ => None,
        };
        eprintln!(
            "training set {}: {} images in {} classes; validation: {}",
            sp.train.display(),
            train.len(),
            train.classes().len(),
            val.as_ref()
                .map_or("none".to_string(), |v| format!("{} images", v.len()))
        );
        ensure!(
            train.classes().len() == plan.classes,
            "the training set has {} classes but the network's classifier has {}: pick a preset or spec whose last layer has {} units",
            train.classes().len(),
            plan.classes,
            train.classes().len()
        );
        // Statistics: --stats, else the file `alexnet prepare` leaves beside the training set,
        // else computed now and kept in the run folder (never written into the dataset).
        let beside = crate::data::stats::default_path(&train, base)
            .ok()
            .filter(|p| p.exists());
        let path = args
            .stats
            .clone()
            .or(beside)
            .unwrap_or_else(|| out.join(format!("stats-{base}.safetensors")));
        let t = std::time::Instant::now();
        let prepared = prepare(&train, base, threads, Some(&path))?;
        eprintln!(
            "dataset statistics: {} {} ({:.1} s)",
            if prepared.reused {
                "read"
            } else {
                "computed and saved to"
            },
            path.display(),
            t.elapsed().as_secs_f64()
        );
        (train, val, prepared.stats)
    };
    // The run keeps the statistics it trained with, for eval and predict.
    stats.save(&out.join("stats.safetensors"))?;

    let (params, momentum, mut state) = starting_point(
        &plan,
        args.resume.as_deref(),
        args.seed,
        args.lr.unwrap_or(spec.optim.lr),
    )?;
    if let Some(ck) = &resume_ck {
        ensure!(
            ck.state.batch == 0 || ck.state.batch == args.batch,
            "the run was trained with batch {}, not {}: resume with --batch {} to continue it exactly",
            ck.state.batch,
            args.batch,
            ck.state.batch
        );
        eprintln!(
            "resuming {} at epoch {}, batch {} (step {})",
            out.display(),
            state.epoch + 1,
            state.batch_in_epoch,
            state.step
        );
    }
    state.batch = args.batch;

    let stats = Arc::new(stats);
    let loader = Loader::new(
        train_set.clone(),
        stats.clone(),
        LoaderConfig {
            threads,
            augment: spec.augment,
            ..LoaderConfig::train(geometry, args.batch, state.seed)
        },
    )?;
    let views = if args.ten_crop {
        EvalViews::TenCrop
    } else {
        EvalViews::Centre
    };
    let val = match val_set {
        Some(v) => Some(LoaderEval::new(
            Loader::new(
                v,
                stats,
                LoaderConfig {
                    threads,
                    augment: spec.augment,
                    ..LoaderConfig::eval(geometry, args.batch, views)
                },
            )?,
            views.count(),
        )),
        None => None,
    };
    let cfg = TrainConfig {
        epochs: args.epochs,
        schedule: args.lr_schedule.parse::<Schedule>()?,
        out_dir: out.clone(),
        checkpoint_every: args.checkpoint_every,
        max_steps: args.max_steps,
        time_limit: args
            .max_minutes
            .or(synthetic.then_some(1.0))
            .map(|m| Duration::from_secs_f64(m * 60.0)),
        stop_at_train_error: args.until_train_error,
        progress: !args.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    eprintln!(
        "{}: {} parameters, {} towers, batch {}, {} batches per epoch, learning rate {}",
        spec.name,
        crate::model::plan::group_digits(plan.params()),
        spec.towers,
        args.batch,
        loader.batches_per_epoch(),
        state.lr
    );
    let t = std::time::Instant::now();
    let job = TrainJob {
        plan: plan.clone(),
        batch: args.batch,
        params,
        momentum,
        state,
        train: LoaderBatches::new(loader),
        val,
        cfg,
    };
    let outcome = dispatch(args.device, spec.towers, &parse_gpus(&args.devices)?, job)?;
    let png = out.join("curves.png");
    if let Err(e) = plot_metrics(&out.join("metrics.jsonl"), &png) {
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
            "Continue with: alexnet train --resume {} --batch {}{}",
            out.display(),
            args.batch,
            if synthetic { "" } else { " --data ..." }
        );
    }
    Ok(())
}
