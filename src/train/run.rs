//! The training loop: batches in, steps, a progress bar, a JSON-lines metrics log, checkpoints
//! every N steps, at the end of every epoch and on Ctrl-C, the learning-rate schedule, and
//! evaluation after each epoch. A resumed run continues exactly where the checkpoint stopped.

use super::checkpoint::{self, TrainState};
use super::replicated::Peers;
use super::schedule::Schedule;
use crate::device::Device;
use crate::model::Plan;
use crate::model::init::NetParams;
use crate::ops::softmax::top_k_errors;
use crate::parallel::Network;
use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// One batch: images `[n, c, size, size]` (preprocessed, ready for the network) and labels.
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
}

/// Training batches in a deterministic order: batch `b` of epoch `e` is always the same, so a
/// run can restart at any batch.
pub trait TrainBatches {
    fn batches_per_epoch(&self) -> usize;
    /// Positions the source at batch `first_batch` of `epoch`.
    fn start_epoch(&mut self, epoch: usize, first_batch: usize) -> Result<()>;
    fn next_batch(&mut self) -> Result<Batch>;
    /// The loader's own throughput so far, if it measures one.
    fn loader_images_per_second(&self) -> Option<f64> {
        None
    }
    /// Files that could not be read or decoded and were skipped.
    fn skipped_files(&self) -> usize {
        0
    }
    /// Takes back a batch's images once they are on the devices, for reuse.
    fn recycle(&mut self, images: Vec<f32>) {
        drop(images);
    }
}

/// Evaluation batches: each image as `views` crops; scores are the softmax averaged over views.
pub trait EvalBatches {
    fn views(&self) -> usize;
    fn restart(&mut self) -> Result<()>;
    /// The next batch of `n * views` crops (image-major) and its `n` labels, or `None` at the end.
    fn next_batch(&mut self) -> Result<Option<Batch>>;
}

pub struct TrainConfig {
    /// The training set's statistics, kept in every checkpoint for inference (`None`: not kept).
    pub stats: Option<crate::data::Stats>,
    pub epochs: usize,
    pub schedule: Schedule,
    /// Where the checkpoint, metrics log and plot go.
    pub out_dir: PathBuf,
    /// Save a checkpoint every this many steps (0: only at epoch ends and on interruption).
    pub checkpoint_every: u64,
    /// Stop after this many steps in total, if set.
    pub max_steps: Option<u64>,
    /// Stop (with a checkpoint) once this much time has passed, if set: the synthetic demo's
    /// time box.
    pub time_limit: Option<std::time::Duration>,
    /// Stop at the end of the first epoch whose average training top-1 error is at or below this
    /// (the paper's Figure 1 measures epochs to 25%), if set.
    pub stop_at_train_error: Option<f64>,
    /// Show a progress bar (off in tests and when output is not a terminal).
    pub progress: bool,
    /// What the run trains on, recorded in every checkpoint so that a resume finds it again.
    pub data: Option<checkpoint::DataRecord>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EvalResult {
    pub images: usize,
    pub top1_error: f64,
    pub top5_error: f64,
    pub loss: f64,
}

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

/// The share of time waiting for data from which the status line mentions it.
pub const DATA_WAIT_SHOWN: f64 = 0.05;

/// How often a run without a progress bar prints a status line.
const STATUS_LINE_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

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

/// Scores every image of `data` and returns its top-1 and top-5 error.
pub fn evaluate<D: Device>(net: &mut Network<D>, data: &mut dyn EvalBatches) -> Result<EvalResult> {
    score(net, data)?.result()
}

/// What evaluating some images adds up to, before dividing by their count (so that replicas
/// that each scored their share can add theirs).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EvalSums {
    pub images: usize,
    pub top1: usize,
    pub top5: usize,
    pub loss: f64,
}

impl EvalSums {
    pub fn result(self) -> Result<EvalResult> {
        let images = self.images;
        anyhow::ensure!(
            images > 0,
            "no image of the evaluation set could be read (each skipped file is named above)"
        );
        Ok(EvalResult {
            images,
            top1_error: self.top1 as f64 / images as f64,
            top5_error: self.top5 as f64 / images as f64,
            loss: self.loss / images as f64,
        })
    }
}

/// The sums over every batch of `data`.
pub(super) fn score<D: Device>(
    net: &mut Network<D>,
    data: &mut dyn EvalBatches,
) -> Result<EvalSums> {
    let classes = net.plan().classes;
    let views = data.views();
    data.restart()?;
    let mut sums = EvalSums::default();
    while let Some(batch) = data.next_batch()? {
        let n = batch.labels.len();
        let probs = net.predict(&batch.images, n * views)?;
        let mut mean = vec![0.0f32; n * classes];
        for (i, m) in mean.chunks_mut(classes).enumerate() {
            for v in 0..views {
                let p = &probs[(i * views + v) * classes..][..classes];
                m.iter_mut()
                    .zip(p)
                    .for_each(|(m, p)| *m += p / views as f32);
            }
        }
        sums.top1 += top_k_errors(n, classes, &mean, &batch.labels, 1);
        sums.top5 += top_k_errors(n, classes, &mean, &batch.labels, 5.min(classes));
        sums.loss -= batch
            .labels
            .iter()
            .enumerate()
            .map(|(i, &l)| (mean[i * classes + l as usize].max(1e-30) as f64).ln())
            .sum::<f64>();
        sums.images += n;
    }
    Ok(sums)
}

/// [`evaluate`], or for a replica, its share of the batches (the loader gives it every
/// replicas-th) added up with the others'.
fn evaluate_replicated<D: Device>(
    net: &mut Network<D>,
    data: &mut dyn EvalBatches,
    peers: Option<Peers>,
) -> Result<EvalResult> {
    match peers {
        None => evaluate(net, data),
        Some(p) => {
            let mine = score(net, data)?;
            p.eval_sums(net, mine)?.result()
        }
    }
}

/// Appends one JSON object per line to the metrics log.
struct MetricsLog(std::fs::File);

impl MetricsLog {
    fn open(path: &Path) -> Result<Self> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening metrics log {}", path.display()))?;
        Ok(MetricsLog(f))
    }
    fn write(&mut self, value: serde_json::Value) -> Result<()> {
        writeln!(self.0, "{value}").context("writing the metrics log")
    }
}

/// Trains `net` from `state` for `cfg.epochs` epochs in total.
pub fn train<D: Device>(
    net: &mut Network<D>,
    mut state: TrainState,
    data: &mut dyn TrainBatches,
    mut val: Option<&mut dyn EvalBatches>,
    cfg: &TrainConfig,
) -> Result<TrainOutcome> {
    // A data-parallel replica other than rank 0 writes nothing (see `replicated`).
    let peers = Peers::of(net);
    let writes = peers.is_none_or(|p| p.writes());
    if writes {
        std::fs::create_dir_all(&cfg.out_dir)
            .with_context(|| format!("creating {}", cfg.out_dir.display()))?;
    }
    let ckpt = checkpoint_path(&cfg.out_dir);
    let mut log = match writes {
        true => Some(MetricsLog::open(&cfg.out_dir.join("metrics.jsonl"))?),
        false => None,
    };
    let stop = interrupt_flag();
    let plan = net.plan().clone();
    let per_epoch = data.batches_per_epoch();
    anyhow::ensure!(
        per_epoch > 0,
        "the training set has fewer images than one batch"
    );
    let save = |net: &Network<D>, state: &TrainState| -> Result<()> {
        if !writes {
            return Ok(());
        }
        checkpoint::save_with_stats(
            &ckpt,
            &plan,
            state,
            &net.params()?,
            &net.velocities()?,
            cfg.data.as_ref(),
            cfg.stats.as_ref(),
        )
        .context("saving the checkpoint")
    };
    let bar = (cfg.progress && writes).then(|| {
        let total = (cfg.epochs * per_epoch) as u64;
        let bar = indicatif::ProgressBar::new(cfg.max_steps.map_or(total, |m| m.min(total)));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps [{elapsed_precise} < {eta_precise}] {msg}",
            )
            .expect("a valid template"),
        );
        bar.set_position(state.step);
        bar
    });
    let mut last_eval = None;
    let started = Instant::now();
    let mut last_line = Instant::now();
    let total_steps = cfg.max_steps.map_or(cfg.epochs * per_epoch, |m| {
        (m as usize).min(cfg.epochs * per_epoch)
    });
    let (mut window_images, mut window_start) = (0usize, Instant::now());
    let (mut interrupted, mut stopped_early) = (false, false);
    // Time the step spent waiting for the loader, in the status window and in all.
    let (mut window_wait, mut total_wait) = (0f64, 0f64);
    let fetch = |data: &mut dyn TrainBatches, window_wait: &mut f64, total_wait: &mut f64| {
        let t = Instant::now();
        let batch = data.next_batch();
        let waited = t.elapsed().as_secs_f64();
        (*window_wait, *total_wait) = (*window_wait + waited, *total_wait + waited);
        batch
    };
    // Replicas stop together: when any of them asked to at the last step (see below).
    let mut peers_stop = false;
    'epochs: while state.epoch < cfg.epochs {
        data.start_epoch(state.epoch, state.batch_in_epoch)?;
        let (mut epoch_errors, mut epoch_images) = (0usize, 0usize);
        // The batch staged for the next step (its size), uploaded while the last one computed.
        let mut staged: Option<usize> = None;
        while state.batch_in_epoch < per_epoch {
            let out_of_time = cfg.time_limit.is_some_and(|t| started.elapsed() >= t);
            let wants_stop = match peers {
                None => stop.load(Ordering::SeqCst) || out_of_time,
                Some(_) => peers_stop,
            };
            if wants_stop || cfg.max_steps.is_some_and(|m| state.step >= m) {
                interrupted = stop.load(Ordering::SeqCst);
                stopped_early = true;
                break 'epochs;
            }
            let n = match staged.take() {
                Some(n) => n,
                None => match fetch(data, &mut window_wait, &mut total_wait) {
                    Ok(batch) => {
                        net.stage_batch(&batch.images, &batch.labels)?;
                        data.recycle(batch.images);
                        batch.labels.len()
                    }
                    Err(e) => return Err(saved_before_failing(e, save(net, &state), &ckpt)),
                },
            };
            net.queue_staged_step(state.lr, state.step)?;
            // The next batch of this epoch is fetched and uploaded while this step computes
            // (unless this is the last step to run).
            let last = state.batch_in_epoch + 1 == per_epoch
                || cfg.max_steps.is_some_and(|m| state.step + 1 >= m);
            let mut fetch_error = None;
            match (!last).then(|| fetch(data, &mut window_wait, &mut total_wait)) {
                Some(Ok(batch)) => {
                    net.stage_batch(&batch.images, &batch.labels)?;
                    staged = Some(batch.labels.len());
                    data.recycle(batch.images);
                }
                // Reported once this step is counted and saved.
                Some(Err(e)) => fetch_error = Some(e),
                None => {}
            }
            let stats = net.finish_step()?;
            // A replica's stats are the global batch's, and so is the count of its images.
            let (stats, n) = match &peers {
                None => (stats, n),
                Some(p) => {
                    let out_of_time = cfg.time_limit.is_some_and(|t| started.elapsed() >= t);
                    let wants = stop.load(Ordering::SeqCst) || out_of_time;
                    let (global, stop_all) = p.after_step(net, stats, wants)?;
                    peers_stop = stop_all;
                    (global, n * p.replicas)
                }
            };
            anyhow::ensure!(
                stats.loss.is_finite(),
                "the loss diverged (it is {}) at step {}; try a lower learning rate",
                stats.loss,
                state.step
            );
            state.step += 1;
            state.batch_in_epoch += 1;
            window_images += n;
            (epoch_errors, epoch_images) = (epoch_errors + stats.top1_errors, epoch_images + n);
            let secs = window_start.elapsed().as_secs_f64();
            let images_per_s = window_images as f64 / secs.max(1e-9);
            let waiting = (window_wait / secs.max(1e-9)).min(1.0);
            if secs > 5.0 {
                (window_images, window_start, window_wait) = (0, Instant::now(), 0.0);
            }
            log.as_mut().map_or(Ok(()), |log| log.write(serde_json::json!({
                "step": state.step, "epoch": state.epoch as f64 + state.batch_in_epoch as f64 / per_epoch as f64,
                "loss": stats.loss, "top1_error": stats.top1_errors as f64 / n as f64, "top5_error": stats.top5_errors as f64 / n as f64,
                "lr": state.lr, "images_per_s": images_per_s, "loader_images_per_s": data.loader_images_per_second(),
                "skipped_files": data.skipped_files(), "data_wait_fraction": waiting, "data_wait_s": total_wait,
            })))?;
            let status = || {
                // Above a few percent the loader, not the step, sets the pace: say so.
                let loader = data
                    .loader_images_per_second()
                    .map_or(String::new(), |r| format!(", loader {r:.0} img/s"));
                let starved = if waiting >= DATA_WAIT_SHOWN {
                    format!(
                        ", waiting for data {:.0}% of the time{loader}",
                        100.0 * waiting
                    )
                } else {
                    String::new()
                };
                format!(
                    "epoch {} loss {:.3} top-1 error {:.1}% {:.0} img/s{starved}",
                    state.epoch + 1,
                    stats.loss,
                    100.0 * stats.top1_errors as f64 / n as f64,
                    images_per_s
                )
            };
            match &bar {
                Some(bar) => {
                    bar.set_position(state.step);
                    bar.set_message(status());
                }
                // Without a bar (a log, a scheduler's output file), a line now and then shows
                // the run is alive.
                None if writes && last_line.elapsed() >= STATUS_LINE_EVERY => {
                    last_line = Instant::now();
                    eprintln!("step {}/{}: {}", state.step, total_steps, status());
                }
                None => {}
            }
            if cfg.checkpoint_every > 0 && state.step % cfg.checkpoint_every == 0 {
                save(net, &state)?;
            }
            if let Some(e) = fetch_error {
                return Err(saved_before_failing(e, save(net, &state), &ckpt));
            }
        }
        // The epoch is complete: evaluate, adjust the rate, save.
        let eval = match val.as_deref_mut() {
            Some(v) => match evaluate_replicated(net, v, peers) {
                Ok(e) => Some(e),
                Err(e) => return Err(saved_before_failing(e, save(net, &state), &ckpt)),
            },
            None => None,
        };
        let change = cfg
            .schedule
            .end_of_epoch(&mut state, eval.map(|e| e.top1_error));
        // Over the batches this process ran of the epoch (all of them unless it resumed mid-way).
        let train_error = (epoch_images > 0).then(|| epoch_errors as f64 / epoch_images as f64);
        let line = serde_json::json!({
            "epoch_end": state.epoch + 1, "step": state.step, "train_top1_error": train_error,
            "val_top1_error": eval.map(|e| e.top1_error), "val_top5_error": eval.map(|e| e.top5_error),
            "val_loss": eval.map(|e| e.loss), "lr": state.lr,
            "device_peak_bytes": net.memory_peaks(),
        });
        if let Some(log) = &mut log {
            log.write(line)?;
        }
        let summary = match eval {
            Some(e) => format!(
                "epoch {}: validation top-1 error {:.2}%, top-5 error {:.2}% ({} images)",
                state.epoch + 1,
                100.0 * e.top1_error,
                100.0 * e.top5_error,
                e.images
            ),
            None => format!("epoch {} done", state.epoch + 1),
        } + &net.memory_peaks_text().map_or(String::new(), |t| {
            format!("; peak memory per tower's device: {t}")
        });
        match &bar {
            Some(bar) => bar.println(&summary),
            None if writes => eprintln!("{summary}"),
            None => {}
        }
        if let Some(msg) = change.filter(|_| writes) {
            match &bar {
                Some(bar) => bar.println(&msg),
                None => eprintln!("{msg}"),
            }
        }
        last_eval = eval.or(last_eval);
        state.epoch += 1;
        state.batch_in_epoch = 0;
        save(net, &state)?;
        if let (Some(goal), Some(e)) = (cfg.stop_at_train_error, train_error)
            && e <= goal
        {
            let msg = format!(
                "training error {:.2}% reached the goal of {:.2}% after {} epochs",
                100.0 * e,
                100.0 * goal,
                state.epoch
            );
            match &bar {
                Some(bar) => bar.println(&msg),
                None if writes => eprintln!("{msg}"),
                None => {}
            }
            break;
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if stopped_early {
        save(net, &state)?;
    }
    Ok(TrainOutcome {
        state,
        interrupted,
        last_eval,
        checkpoint: ckpt,
        seconds: started.elapsed().as_secs_f64(),
        data_wait_seconds: total_wait,
    })
}

/// An error that stopped training between steps, after the progress so far was saved (or not).
fn saved_before_failing(error: anyhow::Error, saved: Result<()>, ckpt: &Path) -> anyhow::Error {
    match saved {
        Ok(()) => error.context(format!(
            "training stopped; the progress so far is saved in {}",
            ckpt.display()
        )),
        Err(save_error) => error.context(format!(
            "training stopped, and saving the progress failed too ({save_error:#})"
        )),
    }
}

/// Parameters and training state to start from: a checkpoint when resuming (after checking it
/// is of this network), else a fresh initialisation.
pub fn starting_point(
    plan: &Plan,
    resume: Option<&Path>,
    seed: u64,
    lr: f32,
) -> Result<(NetParams, Option<NetParams>, TrainState)> {
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
            Ok((ck.params, Some(ck.momentum), ck.state))
        }
        None => Ok((
            crate::model::init::init_params(plan, seed),
            None,
            TrainState {
                lr,
                seed,
                ..TrainState::default()
            },
        )),
    }
}
