//! Times the whole two-tower training step (forward, the towers' exchanges, backward, SGD update)
//! on the device a user would train on: GPUs where usable (`ALEXNET_BENCH_GPUS`, default `0`:
//! both towers on GPU 0 on two streams; `0,1` puts them on two GPUs), `paper` and `cifar` at
//! batch 128; else the CPU device, `cifar` at batch 128 and `paper` at batch 8, and it says so.
//! `ALEXNET_BENCH_DEVICE=cpu|cuda` chooses. Prints a table and writes `target/bench/step.json`.
//!
//! Each case is timed twice: with the batch resident on the devices (`Network::train_loaded`,
//! the condition of the peers' benchmarks, which keep their input on the GPU), and with the
//! batch uploaded from host memory every step (`Network::train_step`, as `alexnet train` does).
//!
//! Each case at each precision of `ALEXNET_BENCH_PRECISION` (a comma list of fp32, tf32, bf16, or
//! `all`; default all three on GPUs, fp32 on the CPU).
//!
//! `cargo bench --bench step`; `ALEXNET_BENCH_REPEATS` sets the timed steps per case.

use alexnet::device::Device;
use alexnet::device::cpu::CpuDevice;
use alexnet::model::init::init_params;
use alexnet::model::{Ablations, Plan, preset};
use alexnet::ops::philox;
use alexnet::ops::precision::Precision;
use alexnet::parallel::Network;
use anyhow::{Result, bail};
use std::time::Instant;

fn main() -> Result<()> {
    let repeats: usize = std::env::var("ALEXNET_BENCH_REPEATS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let gpus = alexnet::cuda::placement::parse_devices(
        &std::env::var("ALEXNET_BENCH_GPUS").unwrap_or_else(|_| "0".into()),
    )?;
    let gpu_cases = [("paper", 128), ("cifar", 128)];
    let cpu_cases = [("cifar", 128), ("paper", 8)];
    let choice = std::env::var("ALEXNET_BENCH_DEVICE").unwrap_or_default();
    let use_gpu = match choice.as_str() {
        "cpu" => false,
        "cuda" => true,
        "" => match alexnet::cuda::CudaLauncher::new(gpus[0]) {
            Ok(_) => true,
            Err(e) => {
                println!("no GPU selected: this times the CPU path; {e:#}");
                false
            }
        },
        other => bail!("ALEXNET_BENCH_DEVICE={other:?}: expected cpu or cuda"),
    };
    let precisions: Vec<Precision> = match std::env::var("ALEXNET_BENCH_PRECISION") {
        Err(_) if use_gpu => Precision::ALL.to_vec(),
        Err(_) => vec![Precision::Fp32],
        Ok(v) if v == "all" => Precision::ALL.to_vec(),
        Ok(v) => v
            .split(',')
            .map(|p| p.trim().parse())
            .collect::<Result<_>>()?,
    };
    println!("training step, {repeats} timed steps after one warm-up");
    println!(
        "{:<8} {:>5} {:>6} {:>9} {:>11} {:>11} {:>11} {:>10} {:>9}  devices",
        "preset", "prec", "batch", "input", "median ms", "min ms", "max ms", "images/s", "GFLOP/s"
    );
    let mut rows = Vec::new();
    let cases: &[(&str, usize)] = if use_gpu { &gpu_cases } else { &cpu_cases };
    for &(name, batch) in cases {
        for &precision in &precisions {
            let mut spec = preset(name, &Ablations::default())?;
            spec.precision = precision;
            let plan = Plan::new(&spec)?;
            let towers = plan.spec.towers;
            let case_rows = if use_gpu {
                time_step(
                    &plan,
                    alexnet::cuda::devices(&gpus, towers)?,
                    batch,
                    repeats,
                )?
            } else {
                time_step(&plan, vec![CpuDevice; towers], batch, repeats)?
            };
            rows.extend(case_rows);
        }
    }
    let dir = std::path::Path::new(
        &std::env::var("CARGO_TARGET_DIR")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target").into()),
    )
    .join("bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("step.json");
    std::fs::write(&path, serde_json::to_string_pretty(&rows)?)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Times `repeats` training steps of a fresh network on `devices` with random images, each step
/// waited for on every device, first with the batch resident, then uploaded each step; prints
/// a row for each and returns them as JSON.
fn time_step<D: Device>(
    plan: &Plan,
    devices: Vec<D>,
    batch: usize,
    repeats: usize,
) -> Result<Vec<serde_json::Value>> {
    let described: Vec<String> = devices.iter().map(|d| d.describe()).collect();
    let mut net = Network::new(plan, devices, &init_params(plan, 1), 1)?;
    let input = plan.spec.input;
    let len = batch * input.channels * input.size * input.size;
    let images: Vec<f32> = (0..len as u64)
        .map(|i| philox::uniform(philox::word(1, 0, i)) * 255.0 - 128.0)
        .collect();
    let labels: Vec<u32> = (0..batch as u64)
        .map(|i| philox::word(1, 1, i) % plan.classes as u32)
        .collect();
    let wait =
        |net: &Network<D>| -> Result<()> { net.devices().iter().try_for_each(|d| d.synchronize()) };
    net.train_step(&images, &labels, 0.01, 0)?;
    wait(&net)?;
    let mut rows = Vec::new();
    for resident in [true, false] {
        let mut ms = Vec::with_capacity(repeats);
        for s in 0..repeats {
            let step = 1 + s as u64;
            let t = Instant::now();
            if resident {
                net.train_loaded(0.01, step)?;
            } else {
                net.train_step(&images, &labels, 0.01, step)?;
            }
            wait(&net)?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        rows.push(row(plan, batch, resident, &mut ms, &described));
    }
    if let Some(text) = net.memory_peaks_text() {
        println!("         peak memory per tower's device: {text}");
    }
    let peaks = net.memory_peaks();
    for r in &mut rows {
        r["device_peak_bytes"] = serde_json::json!(peaks);
    }
    Ok(rows)
}

/// Prints one timed case and returns it as JSON.
fn row(
    plan: &Plan,
    batch: usize,
    resident: bool,
    ms: &mut [f64],
    described: &[String],
) -> serde_json::Value {
    ms.sort_by(f64::total_cmp);
    let median = ms[ms.len() / 2];
    // Training costs about three forward passes: forward, data gradient, filter gradient.
    let flops = 3.0 * 2.0 * plan.macs() as f64 * batch as f64;
    let images_per_s = batch as f64 / median * 1e3;
    let input = if resident { "resident" } else { "uploaded" };
    println!(
        "{:<8} {:>5} {:>6} {:>9} {:>11.2} {:>11.2} {:>11.2} {:>10.1} {:>9.1}  {}",
        plan.spec.name,
        plan.spec.precision,
        batch,
        input,
        median,
        ms[0],
        ms[ms.len() - 1],
        images_per_s,
        flops / median / 1e6,
        described.join(" | ")
    );
    serde_json::json!({
        "preset": plan.spec.name, "precision": plan.spec.precision, "batch": batch, "input": input, "median_ms": median,
        "min_ms": ms[0], "max_ms": ms[ms.len() - 1], "images_per_s": images_per_s,
        "gflops": flops / median / 1e6, "repeats": ms.len(), "devices": described,
        "cpu_threads": rayon::current_num_threads(),
    })
}
