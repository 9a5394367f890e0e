//! What every benchmark binary shares: its settings from the environment, the median it
//! reports, and the folder it writes its JSON to. (Each bench is its own crate; this file is
//! compiled into each with `mod common;`, and a bench uses what it needs of it.)
#![allow(dead_code)]

use anyhow::{Context, Result};
use std::path::PathBuf;

/// `name` from the environment as a count, `default` where it is unset; a value that is not a
/// count is an error naming the variable, not the default in silence.
pub fn env_usize(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v} is not a count")),
        Err(_) => Ok(default),
    }
}

/// The median of `v` (the upper one of an even count), NaN where `v` is empty.
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `target/bench` (under `CARGO_TARGET_DIR` where it is set), created.
pub fn bench_dir() -> Result<PathBuf> {
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target").into());
    let dir = PathBuf::from(target).join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
