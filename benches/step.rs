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
//! `cargo bench --bench step`; `ALEXNET_BENCH_REPEATS` sets the timed steps per case,
//! `ALEXNET_BENCH_CASES` the cases (`cifar:128,paper:8`).
//!
//! On the CPU it also measures the FMA peak of the pool's threads (independent chains of
//! AVX-512 or AVX2 fused multiply-adds, whichever the CPU has) and gives each case's share of it,
//! and it runs the PyTorch peer side by side: `ALEXNET_BENCH_ROUNDS` rounds (default 3) of our
//! step and `scripts/peer_bench.py --device cpu` (same nets, batches and thread count)
//! alternating, so the ratio comes from one run on one machine state. `ALEXNET_BENCH_PEER=0`
//! skips the peer; it is skipped with one line where `python3` cannot import torch.

mod common;

use alexnet::device::Device;
use alexnet::device::cpu::CpuDevice;
use alexnet::engine::Network;
use alexnet::model::init::init_params;
use alexnet::model::{Ablations, Plan, preset};
use alexnet::ops::philox;
use alexnet::ops::precision::Precision;
use anyhow::{Result, bail};
use common::{bench_dir, env_usize, median};
use std::time::Instant;

fn main() -> Result<()> {
    let repeats = env_usize("ALEXNET_BENCH_REPEATS", 5)?;
    let gpus = alexnet::cuda::placement::parse_devices(
        &std::env::var("ALEXNET_BENCH_GPUS").unwrap_or_else(|_| "0".into()),
    )?;
    let gpu_cases = vec![("paper".to_string(), 128), ("cifar".to_string(), 128)];
    let cpu_cases = vec![("cifar".to_string(), 128), ("paper".to_string(), 8)];
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
    let cases = match std::env::var("ALEXNET_BENCH_CASES") {
        Ok(list) => parse_cases(&list)?,
        Err(_) if use_gpu => gpu_cases,
        Err(_) => cpu_cases,
    };
    for (name, batch) in &cases {
        let (name, batch) = (name.as_str(), *batch);
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
    let dir = bench_dir()?;
    if !use_gpu {
        let rounds = env_usize("ALEXNET_BENCH_ROUNDS", 3)?;
        let table = cpu_side_by_side(&cases, repeats, rounds)?;
        let path = dir.join("step-cpu-vs-pytorch.json");
        std::fs::write(&path, serde_json::to_string_pretty(&table)?)?;
        println!("wrote {}", path.display());
    }
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
    // As `alexnet train` runs: no gradients kept past their update.
    net.keep_gradients(false);
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
    let median = median(ms);
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

/// `preset:batch` pairs, comma separated.
fn parse_cases(list: &str) -> Result<Vec<(String, usize)>> {
    list.split(',')
        .map(|case| {
            let (name, batch) = case.split_once(':').ok_or_else(|| {
                anyhow::anyhow!("ALEXNET_BENCH_CASES: {case:?} is not preset:batch")
            })?;
            Ok((name.trim().to_string(), batch.trim().parse()?))
        })
        .collect()
}

/// GFLOP/s of fused multiply-adds on every thread of rayon's pool at once: each thread runs 12
/// independent accumulator chains (enough to cover the FMA latency on two ports) of the vectors
/// of the set the kernels use (`ops::simd::Isa::active`: AVX-512, AVX2, or portable), for about
/// 20 ms a round. The best of five rounds: single short rounds came out at half the peak now
/// and then (214-239 GFLOP/s against 402-466 on this 2-core machine), so every round is long
/// enough to ride out a core waking or clocking up, and the best one counts.
fn fma_peak_gflops() -> f64 {
    const ITERS: usize = 12_000_000;
    let chains = |seed: f32| alexnet::ops::simd::fma_chains(seed, ITERS);
    (0..5)
        .map(|_| {
            let t = Instant::now();
            // One run on every thread of the pool at once, for certain (`broadcast`; a
            // parallel iterator over one item a thread may run two items on one thread).
            let (flops, sum) = rayon::broadcast(|ctx| chains(1.0 + ctx.index() as f32))
                .into_iter()
                .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
            std::hint::black_box(sum);
            flops / t.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

/// The PyTorch peer's fp32 CPU steps for `cases` (median ms per case, the faster of its NCHW and
/// channels_last runs, and that layout), or why it cannot run.
fn peer_steps(cases: &[(String, usize)], repeats: usize) -> Result<Vec<(f64, String)>> {
    let list: Vec<String> = cases.iter().map(|(n, b)| format!("{n}:{b}")).collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/peer_bench.py");
    let out = std::process::Command::new("python3")
        .args([script, "--device", "cpu", "--json", "--cases"])
        .arg(list.join(","))
        .args(["--threads", &rayon::current_num_threads().to_string()])
        .args(["--repeats", &repeats.to_string()])
        .output()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!(
            "peer_bench.py failed: {}",
            err.lines().last().unwrap_or("no message")
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let rows = v["rows"].as_array().cloned().unwrap_or_default();
    cases
        .iter()
        .map(|(name, batch)| {
            rows.iter()
                .filter(|r| r["preset"] == name.as_str() && r["batch"] == *batch)
                .filter_map(|r| Some((r["median_ms"].as_f64()?, r["layout"].as_str()?.to_string())))
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .ok_or_else(|| anyhow::anyhow!("peer_bench.py gave no row for {name}:{batch}"))
        })
        .collect()
}

/// Ours and PyTorch on the CPU, alternating round by round; prints the table (medians over the
/// rounds of each round's median, the ratio per round) and returns it as JSON.
fn cpu_side_by_side(
    cases: &[(String, usize)],
    repeats: usize,
    rounds: usize,
) -> Result<serde_json::Value> {
    let peak = fma_peak_gflops();
    println!(
        "CPU kernels: {}; FMA peak of {} threads at that set: {peak:.1} GFLOP/s",
        alexnet::ops::simd::Isa::active(),
        rayon::current_num_threads()
    );
    let want_peer = std::env::var("ALEXNET_BENCH_PEER").map_or(true, |v| v != "0");
    let peer_ok = want_peer
        && std::process::Command::new("python3")
            .args(["-c", "import torch"])
            .output()
            .is_ok_and(|o| o.status.success());
    if want_peer && !peer_ok {
        println!(
            "no PyTorch peer: python3 cannot import torch (ALEXNET_BENCH_PEER=0 silences this)"
        );
    }
    let mut ours = vec![Vec::new(); cases.len()];
    let mut theirs = vec![Vec::new(); cases.len()];
    let mut layouts = vec![String::new(); cases.len()];
    for round in 0..rounds.max(1) {
        println!("side by side, round {}:", round + 1);
        for (c, (name, batch)) in cases.iter().enumerate() {
            let plan = Plan::new(&preset(name, &Ablations::default())?)?;
            let rows = time_step(&plan, vec![CpuDevice; plan.spec.towers], *batch, repeats)?;
            ours[c].push(rows[0]["median_ms"].as_f64().unwrap_or(f64::NAN));
        }
        if peer_ok {
            for (c, (ms, layout)) in peer_steps(cases, repeats)?.into_iter().enumerate() {
                theirs[c].push(ms);
                layouts[c] = layout;
            }
        }
    }
    println!(
        "{:<8} {:>6} {:>10} {:>12} {:>16} {:>24} {:>9}",
        "preset", "batch", "ours ms", "PyTorch ms", "PyTorch/ours", "per round", "% peak"
    );
    let mut table = Vec::new();
    for (c, (name, batch)) in cases.iter().enumerate() {
        let plan = Plan::new(&preset(name, &Ablations::default())?)?;
        let flops = 3.0 * 2.0 * plan.macs() as f64 * *batch as f64;
        let ratios: Vec<f64> = theirs[c].iter().zip(&ours[c]).map(|(t, o)| t / o).collect();
        let (o, t) = (median(&ours[c]), median(&theirs[c]));
        let share = flops / o / 1e6 / peak * 100.0;
        let per_round: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "{name:<8} {batch:>6} {o:>10.2} {t:>12.2} {:>16} {:>24} {share:>8.1}%",
            if t.is_nan() {
                "-".into()
            } else {
                format!("{:.2}x", t / o)
            },
            per_round.join(" "),
        );
        table.push(serde_json::json!({
            "preset": name, "batch": batch, "ours_median_ms": o, "ours_rounds_ms": ours[c],
            "pytorch_median_ms": t, "pytorch_rounds_ms": theirs[c], "pytorch_layout": layouts[c],
            "pytorch_over_ours": ratios, "fma_peak_gflops": peak,
            "cpu_isa": alexnet::ops::simd::Isa::active().name(), "share_of_fma_peak": share / 100.0,
            "threads": rayon::current_num_threads(),
        }));
    }
    Ok(serde_json::json!(table))
}
