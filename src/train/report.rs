//! What a training run tells its user as it goes: a progress bar (or, without one, a status
//! line now and then), a JSON-lines metrics log, and each epoch's summary. Only the process that
//! writes the run folder reports (a replica other than rank 0 is silent).

use super::batches::TrainBatches;
use super::checkpoint::TrainState;
use super::config::TrainConfig;
use super::evaluate::EvalResult;
use crate::engine::StepStats;
use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// The share of time waiting for data from which the status line mentions it.
pub const DATA_WAIT_SHOWN: f64 = 0.05;

/// How often a run without a progress bar prints a status line.
const STATUS_LINE_EVERY: Duration = Duration::from_secs(30);

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

pub(super) struct Reporter {
    writes: bool,
    bar: Option<indicatif::ProgressBar>,
    log: Option<MetricsLog>,
    per_epoch: usize,
    total_steps: usize,
    last_line: Instant,
    /// The images of the current rate window (about five seconds), its start, and the time the
    /// steps spent waiting for the loader in it and in all.
    window_images: usize,
    window_start: Instant,
    window_wait: f64,
    total_wait: f64,
}

impl Reporter {
    /// Opens the metrics log (where this process writes the run folder) and the bar, which
    /// starts at `state.step`.
    pub(super) fn new(
        cfg: &TrainConfig,
        writes: bool,
        state: &TrainState,
        per_epoch: usize,
    ) -> Result<Self> {
        let log = match writes {
            true => Some(MetricsLog::open(&cfg.out_dir.join("metrics.jsonl"))?),
            false => None,
        };
        let total = cfg.epochs * per_epoch;
        let bar = (cfg.progress && writes).then(|| {
            let bar = indicatif::ProgressBar::new(
                cfg.max_steps.map_or(total as u64, |m| m.min(total as u64)),
            );
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} steps [{elapsed_precise} < {eta_precise}] {msg}",
                )
                .expect("a valid template"),
            );
            bar.set_position(state.step);
            bar
        });
        Ok(Reporter {
            writes,
            bar,
            log,
            per_epoch,
            total_steps: cfg.max_steps.map_or(total, |m| (m as usize).min(total)),
            last_line: Instant::now(),
            window_images: 0,
            window_start: Instant::now(),
            window_wait: 0.0,
            total_wait: 0.0,
        })
    }

    /// The steps waited `seconds` for the loader.
    pub(super) fn waited(&mut self, seconds: f64) {
        self.window_wait += seconds;
        self.total_wait += seconds;
    }

    /// Seconds the steps waited for the loader in all.
    pub(super) fn total_wait(&self) -> f64 {
        self.total_wait
    }

    /// A step of `n` images (the global batch's) ended with `stats`; `state` has counted it.
    pub(super) fn step(
        &mut self,
        state: &TrainState,
        stats: &StepStats,
        n: usize,
        data: &dyn TrainBatches,
    ) -> Result<()> {
        self.window_images += n;
        let secs = self.window_start.elapsed().as_secs_f64();
        let images_per_s = self.window_images as f64 / secs.max(1e-9);
        let waiting = (self.window_wait / secs.max(1e-9)).min(1.0);
        if secs > 5.0 {
            (self.window_images, self.window_start, self.window_wait) = (0, Instant::now(), 0.0);
        }
        let per_epoch = self.per_epoch;
        let total_wait = self.total_wait;
        self.log.as_mut().map_or(Ok(()), |log| log.write(serde_json::json!({
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
        match &self.bar {
            Some(bar) => {
                bar.set_position(state.step);
                bar.set_message(status());
            }
            // Without a bar (a log, a scheduler's output file), a line now and then shows the
            // run is alive.
            None if self.writes && self.last_line.elapsed() >= STATUS_LINE_EVERY => {
                self.last_line = Instant::now();
                eprintln!("step {}/{}: {}", state.step, self.total_steps, status());
            }
            None => {}
        }
        Ok(())
    }

    /// The end of epoch `state.epoch` (0-based, not yet advanced): its line in the log and its
    /// summary, then the learning-rate `change`, if any.
    pub(super) fn epoch_end(
        &mut self,
        state: &TrainState,
        eval: Option<EvalResult>,
        train_error: Option<f64>,
        peaks: (Vec<Option<usize>>, Option<String>),
        change: Option<String>,
    ) -> Result<()> {
        let line = serde_json::json!({
            "epoch_end": state.epoch + 1, "step": state.step, "train_top1_error": train_error,
            "val_top1_error": eval.map(|e| e.top1_error), "val_top5_error": eval.map(|e| e.top5_error),
            "val_loss": eval.map(|e| e.loss), "lr": state.lr,
            "device_peak_bytes": peaks.0,
        });
        if let Some(log) = &mut self.log {
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
        } + &peaks.1.map_or(String::new(), |t| {
            format!("; peak memory per tower's device: {t}")
        });
        self.say(&summary);
        if let Some(msg) = change.filter(|_| self.writes) {
            match &self.bar {
                Some(bar) => bar.println(&msg),
                None => eprintln!("{msg}"),
            }
        }
        Ok(())
    }

    /// A line for the user, above the bar where there is one.
    pub(super) fn say(&self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.println(msg),
            None if self.writes => eprintln!("{msg}"),
            None => {}
        }
    }

    pub(super) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
