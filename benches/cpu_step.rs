//! Times the CPU training step (forward, backward, SGD update) of `cifar` at batch 128 and of
//! `paper` at batch 8 on the CPU device; prints a table and writes JSON to
//! `target/bench/cpu_step.json`.
//!
//! `cargo bench --bench cpu_step`; `ALEXNET_BENCH_REPEATS` sets the timed steps per case.

use alexnet::device::Device;
use alexnet::device::cpu::CpuDevice;
use alexnet::model::init::init_params;
use alexnet::model::{Ablations, Plan, preset};
use alexnet::ops::philox;
use alexnet::parallel::Network;
use std::time::Instant;

struct Case {
    preset: &'static str,
    batch: usize,
}

fn main() -> anyhow::Result<()> {
    let repeats: usize = std::env::var("ALEXNET_BENCH_REPEATS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let cases = [
        Case {
            preset: "cifar",
            batch: 128,
        },
        Case {
            preset: "paper",
            batch: 8,
        },
    ];
    let mut rows = Vec::new();
    println!(
        "CPU training step ({}), {repeats} timed steps after one warm-up",
        CpuDevice.describe()
    );
    println!(
        "{:<8} {:>6} {:>12} {:>12} {:>12} {:>10} {:>10}",
        "preset", "batch", "median ms", "min ms", "max ms", "images/s", "GFLOP/s"
    );
    for case in cases {
        let plan = Plan::new(&preset(case.preset, &Ablations::default())?)?;
        let mut net = Network::new(
            &plan,
            vec![CpuDevice; plan.spec.towers],
            &init_params(&plan, 1),
            1,
        )?;
        let input = plan.spec.input;
        let len = case.batch * input.channels * input.size * input.size;
        let images: Vec<f32> = (0..len as u64)
            .map(|i| philox::uniform(philox::word(1, 0, i)) * 255.0 - 128.0)
            .collect();
        let labels: Vec<u32> = (0..case.batch as u64)
            .map(|i| philox::word(1, 1, i) % plan.classes as u32)
            .collect();
        net.train_step(&images, &labels, 0.01, 0)?;
        let mut ms: Vec<f64> = (0..repeats)
            .map(|s| {
                let t = Instant::now();
                net.train_step(&images, &labels, 0.01, 1 + s as u64)
                    .map(|_| t.elapsed().as_secs_f64() * 1e3)
            })
            .collect::<anyhow::Result<_>>()?;
        ms.sort_by(f64::total_cmp);
        let median = ms[ms.len() / 2];
        // Training costs about three forward passes: forward, data gradient, filter gradient.
        let flops = 3.0 * 2.0 * plan.macs() as f64 * case.batch as f64;
        let row = serde_json::json!({
            "preset": case.preset, "batch": case.batch, "median_ms": median, "min_ms": ms[0],
            "max_ms": ms[ms.len() - 1], "images_per_s": case.batch as f64 / median * 1e3,
            "gflops": flops / median / 1e6, "repeats": repeats, "device": "cpu",
            "threads": rayon::current_num_threads(),
        });
        println!(
            "{:<8} {:>6} {:>12.1} {:>12.1} {:>12.1} {:>10.1} {:>10.2}",
            case.preset,
            case.batch,
            median,
            ms[0],
            ms[ms.len() - 1],
            row["images_per_s"].as_f64().unwrap(),
            row["gflops"].as_f64().unwrap()
        );
        rows.push(row);
    }
    let dir = std::path::Path::new(
        &std::env::var("CARGO_TARGET_DIR")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target").into()),
    )
    .join("bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("cpu_step.json");
    std::fs::write(&path, serde_json::to_string_pretty(&rows)?)?;
    println!("wrote {}", path.display());
    Ok(())
}
