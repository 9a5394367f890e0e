//! Training: checkpoints, the learning-rate schedule, the metrics log and the loop.

pub mod checkpoint;
pub mod run;
pub mod schedule;
