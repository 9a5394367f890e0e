//! Training: a run assembled and launched, the loop and what it is made of.
//!
//! - `start`: a run from a [`start::RunRequest`]: settled, checked, its data, statistics, folder
//!   lock and rendezvous opened, one job per replica of this process; then launched.
//! - `run`: the loop (`train`), in parts: each epoch's steps with the next batch prefetched
//!   beside the step, the stop policy, the checkpointer; it drives a `dist::replicas::Replica`,
//!   alone or among others.
//! - `report`: the progress bar or status lines, the metrics log, each epoch's summary.
//! - `replicated`: where replicas must agree (stats, stopping, evaluation, the start).
//! - `evaluate`: top-1/top-5 error and loss over an evaluation set.
//! - `batches`: the traits the loop reads batches through, and the loaders behind them.
//! - `config`, `settle`: what a run is told, and the pure decisions that settle it.
//! - `checkpoint`, `run_folder`, `schedule`, `plot`: the files of a run and the rate schedule.

pub mod batches;
pub mod checkpoint;
pub mod config;
pub mod evaluate;
pub mod plot;
pub mod replicated;
pub mod report;
pub mod run;
pub mod run_folder;
pub mod schedule;
pub mod settle;
pub mod start;
