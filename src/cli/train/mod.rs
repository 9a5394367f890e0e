//! `alexnet train`: its arguments, and what it says; the run itself is assembled and launched
//! by the library ([`crate::train::start`]).

mod report;

use super::NetArgs;
use super::data_args::ReadLimits;
use crate::dist::dispatch::DeviceKind;
use crate::ops::precision::Precision;
use crate::train::start::{RunRequest, assemble};
use anyhow::Result;
use clap::Args;
use report::{announce, report_outcome};
use std::path::PathBuf;

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
    let req = args.request();
    let mut run = assemble(&req)?;
    if run.writer() {
        announce(
            &run.spec,
            &run.plan,
            req.batch,
            run.replicas(),
            run.batches_per_epoch,
            run.lr,
        );
    }
    let t = std::time::Instant::now();
    let outcome = run.launch()?;
    if !run.writer() {
        println!(
            "rank {}: stopped after {} steps; rank 0 wrote the run",
            run.rank(),
            outcome.state.step
        );
        return Ok(());
    }
    report_outcome(
        &outcome,
        &run.out,
        req.epochs,
        req.batch,
        t.elapsed().as_secs_f64(),
    );
    Ok(())
}

impl TrainArgs {
    /// The library's form of these arguments.
    fn request(self) -> RunRequest {
        RunRequest {
            net: self.net.choice(),
            data: self.data,
            val: self.val,
            no_val: self.no_val,
            stats: self.stats,
            device: self.device,
            precision: self.precision,
            devices: self.devices,
            replicas: self.replicas,
            rendezvous: self.rendezvous,
            peer_timeout: self.peer_timeout,
            epochs: self.epochs,
            batch: self.batch,
            lr: self.lr,
            lr_schedule: self.lr_schedule,
            seed: self.seed,
            out: self.out,
            checkpoint_every: self.checkpoint_every,
            resume: self.resume,
            base: self.base,
            ten_crop: self.ten_crop,
            threads: self.threads,
            max_steps: self.max_steps,
            max_minutes: self.max_minutes,
            until_train_error: self.until_train_error,
            no_progress: self.no_progress,
            max_image_bytes: self.limits.max_image_bytes(),
        }
    }
}
