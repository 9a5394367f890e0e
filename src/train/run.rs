//! The training loop: batches in, steps, a progress bar, a JSON-lines metrics log, checkpoints
//! every N steps, at the end of every epoch and on Ctrl-C, the learning-rate schedule, and
//! evaluation after each epoch. A resumed run continues exactly where the checkpoint stopped.

use super::batches::{Batch, EvalBatches, TrainBatches};
use super::checkpoint::{self, Checkpoint, TrainState};
pub use super::config::TrainConfig;
use super::evaluate::EvalResult;
use super::replicated::{Peers, evaluate_replicated};
use super::report::Reporter;
use crate::device::Device;
use crate::dist::replicas::Replica;
use crate::engine::{Network, StepStats};
use crate::model::Plan;
use crate::model::init::NetParams;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

#[derive(Clone, Debug, PartialEq)]
pub struct TrainOutcome {
    pub state: TrainState,
    pub interrupted: bool,
    pub last_eval: Option<EvalResult>,
    pub checkpoint: PathBuf,
    /// Wall time of the run, and the part of it the steps spent waiting for the loader.
    pub seconds: f64,
    pub data_wait_seconds: f64,
}

/// Set by the first Ctrl-C, SIGTERM or SIGHUP; the loop saves a checkpoint and stops at the next
/// step boundary. A second signal ends the process at once (exit status 130); the last
/// checkpoint is intact because saves are atomic.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        if let Err(e) = ctrlc::set_handler(move || {
            if f.swap(true, Ordering::SeqCst) {
                eprintln!("\nsecond interruption: quitting now (the last checkpoint is intact)");
                std::process::exit(130);
            }
            eprintln!("\ninterrupted: stopping cleanly, after saving a checkpoint if training has begun (interrupt again to quit now)");
        }) {
            eprintln!("warning: cannot catch Ctrl-C or SIGTERM ({e}); an interruption will lose the progress since the last checkpoint");
        }
        flag
    })
    .clone()
}

pub fn checkpoint_path(out_dir: &Path) -> PathBuf {
    out_dir.join("checkpoint.safetensors")
}

/// Trains `replica` (a network alone, or one replica of several) from `state` for
/// `cfg.epochs` epochs in total.
pub fn train<D: Device>(
    replica: &mut Replica<D>,
    mut state: TrainState,
    data: &mut dyn TrainBatches,
    mut val: Option<&mut dyn EvalBatches>,
    cfg: &TrainConfig,
) -> Result<TrainOutcome> {
    // A data-parallel replica other than rank 0 writes nothing (see `replicated`).
    let peers = Peers::of(replica);
    let writes = peers.is_none_or(|p| p.writes());
    if writes {
        std::fs::create_dir_all(&cfg.out_dir)
            .with_context(|| format!("creating {}", cfg.out_dir.display()))?;
    }
    let saver = Checkpointer {
        writes,
        path: checkpoint_path(&cfg.out_dir),
        plan: replica.net.plan().clone(),
        cfg,
    };
    let per_epoch = data.batches_per_epoch();
    anyhow::ensure!(
        per_epoch > 0,
        "the training set has fewer images than one batch"
    );
    let mut report = Reporter::new(cfg, writes, &state, per_epoch)?;
    let mut stop = StopPolicy::new(cfg, peers);
    let mut last_eval = None;
    while state.epoch < cfg.epochs {
        let Some(epoch) = train_epoch(replica, &mut state, data, &saver, &mut report, &mut stop)?
        else {
            break;
        };
        // The epoch is complete: evaluate, adjust the rate, save.
        let eval = match val.as_deref_mut() {
            Some(v) => match evaluate_replicated(replica, v, peers) {
                Ok(e) => Some(e),
                Err(e) => return Err(saver.saved_before_failing(e, &replica.net, &state)),
            },
            None => None,
        };
        let change = cfg
            .schedule
            .end_of_epoch(&mut state, eval.map(|e| e.top1_error));
        let train_error = epoch.error();
        let peaks = (replica.net.memory_peaks(), replica.net.memory_peaks_text());
        report.epoch_end(&state, eval, train_error, peaks, change)?;
        last_eval = eval.or(last_eval);
        state.epoch += 1;
        state.batch_in_epoch = 0;
        saver.save(&replica.net, &state)?;
        if let (Some(goal), Some(e)) = (cfg.stop_at_train_error, train_error)
            && e <= goal
        {
            report.say(&format!(
                "training error {:.2}% reached the goal of {:.2}% after {} epochs",
                100.0 * e,
                100.0 * goal,
                state.epoch
            ));
            break;
        }
    }
    report.finish();
    if stop.stopped_early {
        saver.save(&replica.net, &state)?;
    }
    Ok(TrainOutcome {
        state,
        interrupted: stop.interrupted,
        last_eval,
        checkpoint: saver.path,
        seconds: stop.started.elapsed().as_secs_f64(),
        data_wait_seconds: report.total_wait(),
    })
}

/// The training errors of the batches an epoch ran in this process (all of them unless it
/// resumed mid-way).
struct EpochErrors {
    errors: usize,
    images: usize,
}

impl EpochErrors {
    fn error(&self) -> Option<f64> {
        (self.images > 0).then(|| self.errors as f64 / self.images as f64)
    }
}

/// The steps of epoch `state.epoch` from batch `state.batch_in_epoch` on, each next batch fetched
/// and uploaded while the step before it computes. `None` where the run stops before the
/// epoch's end (`stop`).
fn train_epoch<D: Device>(
    replica: &mut Replica<D>,
    state: &mut TrainState,
    data: &mut dyn TrainBatches,
    saver: &Checkpointer,
    report: &mut Reporter,
    stop: &mut StopPolicy,
) -> Result<Option<EpochErrors>> {
    let per_epoch = data.batches_per_epoch();
    data.start_epoch(state.epoch, state.batch_in_epoch)?;
    let mut epoch = EpochErrors {
        errors: 0,
        images: 0,
    };
    // The batch staged for the next step (its size), uploaded while the last one computed.
    let mut staged: Option<usize> = None;
    while state.batch_in_epoch < per_epoch {
        if stop.before_step(state) {
            return Ok(None);
        }
        let n = match staged.take() {
            Some(n) => n,
            None => match fetch(data, report) {
                Ok(batch) => stage(replica, data, batch)?,
                Err(e) => return Err(saver.saved_before_failing(e, &replica.net, state)),
            },
        };
        replica.queue_staged_step(state.lr, state.step)?;
        // The next batch of this epoch is fetched and uploaded while this step computes (unless
        // this is the last step to run); an error fetching it is reported once this step is
        // counted and saved.
        let last = state.batch_in_epoch + 1 == per_epoch
            || stop.max_steps.is_some_and(|m| state.step + 1 >= m);
        let mut fetch_error = None;
        if !last {
            match fetch(data, report) {
                Ok(batch) => staged = Some(stage(replica, data, batch)?),
                Err(e) => fetch_error = Some(e),
            }
        }
        let (stats, n) = stop.after_step(replica, n)?;
        anyhow::ensure!(
            stats.loss.is_finite(),
            "the loss diverged (it is {}) at step {}; try a lower learning rate",
            stats.loss,
            state.step
        );
        state.step += 1;
        state.batch_in_epoch += 1;
        (epoch.errors, epoch.images) = (epoch.errors + stats.top1_errors, epoch.images + n);
        report.step(state, &stats, n, data)?;
        if saver.cfg.checkpoint_every > 0 && state.step % saver.cfg.checkpoint_every == 0 {
            saver.save(&replica.net, state)?;
        }
        if let Some(e) = fetch_error {
            return Err(saver.saved_before_failing(e, &replica.net, state));
        }
    }
    Ok(Some(epoch))
}

/// The next training batch, the wait for it counted as the loader's.
fn fetch(data: &mut dyn TrainBatches, report: &mut Reporter) -> Result<Batch> {
    let t = Instant::now();
    let batch = data.next_batch();
    report.waited(t.elapsed().as_secs_f64());
    batch
}

/// Stages `batch` on the devices (the prefetch: it uploads beside the step queued before) and
/// hands its images back to the loader; its size.
fn stage<D: Device>(
    replica: &mut Replica<D>,
    data: &mut dyn TrainBatches,
    batch: Batch,
) -> Result<usize> {
    replica.net.stage_batch(&batch.images, &batch.labels)?;
    data.recycle(batch.images);
    Ok(batch.labels.len())
}

/// When the run stops before its epochs are done: at an interruption, past the time limit, at
/// the step limit. Replicas stop together, at the step after any of them asked to.
struct StopPolicy {
    flag: Arc<AtomicBool>,
    started: Instant,
    time_limit: Option<std::time::Duration>,
    max_steps: Option<u64>,
    peers: Option<Peers>,
    /// Whether some replica asked to stop at the last step.
    peers_stop: bool,
    stopped_early: bool,
    interrupted: bool,
}

impl StopPolicy {
    fn new(cfg: &TrainConfig, peers: Option<Peers>) -> Self {
        StopPolicy {
            flag: interrupt_flag(),
            started: Instant::now(),
            time_limit: cfg.time_limit,
            max_steps: cfg.max_steps,
            peers,
            peers_stop: false,
            stopped_early: false,
            interrupted: false,
        }
    }

    /// Whether this process wants to stop (interrupted, or out of time by its own clock).
    fn wants_stop(&self) -> bool {
        let out_of_time = self.time_limit.is_some_and(|t| self.started.elapsed() >= t);
        self.flag.load(Ordering::SeqCst) || out_of_time
    }

    /// Whether to stop rather than run the step `state` is at.
    fn before_step(&mut self, state: &TrainState) -> bool {
        let wants = match self.peers {
            None => self.wants_stop(),
            Some(_) => self.peers_stop,
        };
        if wants || self.max_steps.is_some_and(|m| state.step >= m) {
            self.interrupted = self.flag.load(Ordering::SeqCst);
            self.stopped_early = true;
        }
        self.stopped_early
    }

    /// Waits for the queued step of `n` images and returns its stats and image count: for a
    /// replica, the global batch's, agreed with the others along with whether any wants to
    /// stop.
    fn after_step<D: Device>(
        &mut self,
        replica: &mut Replica<D>,
        n: usize,
    ) -> Result<(StepStats, usize)> {
        let stats = replica.net.finish_step()?;
        let Some(p) = self.peers else {
            return Ok((stats, n));
        };
        let (global, stop_all) = p.after_step(replica, stats, self.wants_stop())?;
        self.peers_stop = stop_all;
        Ok((global, n * p.replicas))
    }
}

/// Saves the run's checkpoint (where this process writes the run folder).
struct Checkpointer<'a> {
    writes: bool,
    path: PathBuf,
    plan: Plan,
    cfg: &'a TrainConfig,
}

impl Checkpointer<'_> {
    fn save<D: Device>(&self, net: &Network<D>, state: &TrainState) -> Result<()> {
        if !self.writes {
            return Ok(());
        }
        checkpoint::save_with_stats(
            &self.path,
            &self.plan,
            state,
            &net.params()?,
            &net.velocities()?,
            self.cfg.data.as_ref(),
            self.cfg.stats.as_ref(),
        )
        .context("saving the checkpoint")
    }

    /// `error`, which stopped training between steps, after saving the progress so far (or
    /// saying that saving failed too).
    fn saved_before_failing<D: Device>(
        &self,
        error: anyhow::Error,
        net: &Network<D>,
        state: &TrainState,
    ) -> anyhow::Error {
        match self.save(net, state) {
            Ok(()) => error.context(format!(
                "training stopped; the progress so far is saved in {}",
                self.path.display()
            )),
            Err(save_error) => error.context(format!(
                "training stopped, and saving the progress failed too ({save_error:#})"
            )),
        }
    }
}

/// Parameters and training state to start from: a checkpoint when resuming (after checking it
/// is of this network), else a fresh initialisation.
pub fn starting_point(plan: &Plan, resume: Option<&Path>, seed: u64, lr: f32) -> Result<Start> {
    match resume {
        Some(path) => {
            let path = if path.is_dir() {
                checkpoint_path(path)
            } else {
                path.to_path_buf()
            };
            let ck = checkpoint::load(&path)?;
            ck.check_model(plan)
                .with_context(|| format!("cannot resume from {}", path.display()))?;
            Ok(resumed_start(ck))
        }
        None => Ok(fresh_start(plan, seed, lr)),
    }
}

/// Weights, momentum (none: zero) and state a run starts from.
pub type Start = (NetParams, Option<NetParams>, TrainState);

/// A new run: weights initialised from `seed`, no momentum, rate `lr`.
pub fn fresh_start(plan: &Plan, seed: u64, lr: f32) -> Start {
    let state = TrainState {
        lr,
        seed,
        ..TrainState::default()
    };
    (crate::model::init::init_params(plan, seed), None, state)
}

/// A run continued from its checkpoint `ck`, exactly where it stopped.
pub fn resumed_start(ck: Checkpoint) -> Start {
    (ck.params, Some(ck.momentum), ck.state)
}
