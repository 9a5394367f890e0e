//! Training: checkpoints, the learning-rate schedule, the metrics log and the loop.

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
