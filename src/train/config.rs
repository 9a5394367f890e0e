//! What a training run is told: its epochs, schedule, folder, limits and what to record.

use super::checkpoint;
use super::schedule::Schedule;
use std::path::PathBuf;

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
