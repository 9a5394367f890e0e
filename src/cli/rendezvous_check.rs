//! `alexnet rendezvous-check`: the multi-process introduction of a data-parallel run, without a
//! GPU (tests/dist_rendezvous.rs starts it as real processes). Each rank prints one JSON line with
//! the id it got and the images of the epoch its shard reads, then checks liveness `--checks`
//! times, printing `alive K` after each.

use crate::data::shard;
use crate::dist::launch::Launch;
use crate::dist::rendezvous::join;
use anyhow::Result;
use std::io::Write;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// `tcp:HOST:PORT` or `file:PATH` [default: MASTER_ADDR:MASTER_PORT].
    #[arg(long)]
    rendezvous: Option<String>,
    /// Seconds to wait for the other ranks, at the rendezvous and at every liveness check.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    /// Images in the epoch to shard, and the global batch.
    #[arg(long, default_value_t = 100)]
    images: usize,
    #[arg(long, default_value_t = 12)]
    batch: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 0)]
    epoch: u32,
    /// Liveness checks after the rendezvous, and the pause between them.
    #[arg(long, default_value_t = 3)]
    checks: usize,
    #[arg(long, default_value_t = 50)]
    interval_ms: u64,
}

pub fn run(args: &Args) -> Result<()> {
    let launch = Launch::from_env(|k| std::env::var(k).ok())?;
    let at = launch.rendezvous(args.rendezvous.as_deref())?;
    let timeout = Duration::from_secs_f64(args.timeout);
    let mut group = join(&launch, &at, timeout, || {
        // The NCCL id where NCCL is here; else any bytes rank 0 alone chose.
        if crate::cuda::nccl::library_present() {
            crate::cuda::nccl::unique_id()
        } else {
            let seed = std::process::id() as u64
                ^ std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
            Ok((0..128u64)
                .map(|i| crate::ops::philox::word(seed, 1, i) as u8)
                .collect())
        }
    })?;
    let order = crate::data::loader::epoch_order(args.seed, args.epoch, args.images);
    let mine = shard::range(args.batch, launch.world_size, launch.rank)?;
    let shard: Vec<u32> = order
        .chunks_exact(args.batch)
        .flat_map(|b| b[mine.clone()].to_vec())
        .collect();
    let id: String = group.id.iter().map(|b| format!("{b:02x}")).collect();
    let line = serde_json::json!({
        "rank": launch.rank,
        "world": launch.world_size,
        "id": id,
        "shard": shard,
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    for k in 0..args.checks {
        std::thread::sleep(Duration::from_millis(args.interval_ms));
        group.check_alive()?;
        writeln!(out, "alive {k}")?;
        out.flush()?;
    }
    Ok(())
}
