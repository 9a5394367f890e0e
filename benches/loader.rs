//! `cargo bench --bench loader`: how fast the data pipeline makes training batches, per core, on
//! real ImageNet JPEGs, beside Pillow + NumPy doing the same work.
//!
//! Rows (every one decodes, cuts the base image, and renders the paper's training input: random
//! 227×227 crop, mirror, PCA colour noise, mean subtraction, into an NCHW `f32` batch):
//! - `raw`: the crate's `Loader` on the JPEG folder, no decoded-image cache;
//! - `raw, before`: the same steps as the loader made them before the SIMD resize (the image
//!   crate's decoder and generic triangle resize), timed inline on one thread: the baseline of
//!   the "faster raw path" and of the pack's ratio;
//! - `packed`: the `Loader` on a pack of the same images (`alexnet prepare --pack`, made here under
//!   `target/bench/loader/` first, untimed);
//! - `pillow raw` / `pillow packed`: `scripts/loader_baseline.py` on the same files (the packed
//!   one reads the same shard bytes by offset), when `python3` with Pillow and NumPy is present.
//!
//! Loader rows run with 1 thread and with every core (`ALEXNET_LOADER_THREADS`, a comma list,
//! overrides); per-core rates divide by the thread count. Each figure is the median over
//! `ALEXNET_LOADER_PASSES` (default 5) timed epochs after one untimed. Writes
//! `target/bench/loader.json` (under `CARGO_TARGET_DIR` when set), and packs into
//! `target/bench/loader/`. The images: `ALEXNET_LOADER_DATA` (a class-folder tree), default
//! `../shared/data/imagenet-samples` beside the repository; without it the bench says so and
//! stops. The baseline script: `ALEXNET_LOADER_BASELINE`, default `scripts/loader_baseline.py`.

mod common;

use alexnet::data::augment::{self, Augment, Geometry, Pixels};
use alexnet::data::{Dataset, Loader, LoaderConfig, PackOptions, Stats, pack_split, prepare};
use alexnet::progress::Progress;
use anyhow::{Context, Result, bail};
use common::{bench_dir, env_usize, median};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

const BATCH: usize = 20;

/// Images per second of the loader over `passes` epochs (after one untimed).
fn time_loader(
    ds: &Arc<Dataset>,
    stats: &Arc<Stats>,
    threads: usize,
    passes: usize,
) -> Result<f64> {
    let g = Geometry::new(256, 227)?;
    let mut cfg = LoaderConfig::train(g, BATCH, 7);
    cfg.threads = threads;
    cfg.cache_bytes = 0;
    cfg.prefetch = 2;
    let loader = Loader::new(ds.clone(), stats.clone(), cfg)?;
    let mut rates = Vec::new();
    for epoch in 0..=passes {
        let t = Instant::now();
        let mut images = 0;
        for b in loader.epoch(epoch as u32, 0) {
            let b = b?;
            anyhow::ensure!(b.skipped.is_empty(), "unreadable: {:?}", b.skipped);
            images += b.len();
            loader.recycle(b.images); // as the training loop does
        }
        if epoch > 0 {
            rates.push(images as f64 / t.elapsed().as_secs_f64());
        }
    }
    Ok(median(&rates))
}

/// The loader's steps as it made them before this change: the image crate's decoder and its
/// generic triangle-filter resize, then the same render. One thread.
fn time_before(ds: &Dataset, stats: &Stats, passes: usize) -> Result<f64> {
    let g = Geometry::new(256, 227)?;
    let mut out = vec![0f32; BATCH * g.input_len()];
    let mut rates = Vec::new();
    for pass in 0..=passes {
        let t = Instant::now();
        for i in 0..ds.len() {
            let bytes = ds.read(i)?;
            let rgb = image::load_from_memory(&bytes)?.into_rgb8();
            let (w, h) = rgb.dimensions();
            let side = w.min(h);
            let square =
                image::imageops::crop_imm(&rgb, (w - side) / 2, (h - side) / 2, side, side);
            let base =
                image::imageops::resize(&*square, 256, 256, image::imageops::FilterType::Triangle)
                    .into_raw();
            let aug = augment::draw_for(Augment::Paper, 7, pass as u32, i, i, g, 0.1);
            let px = Pixels::train(Augment::Paper, &aug, stats, 0.1, g);
            let slot = &mut out[(i % BATCH) * g.input_len()..][..g.input_len()];
            augment::render(&base, &stats.mean, g, &px, slot);
        }
        if pass > 0 {
            rates.push(ds.len() as f64 / t.elapsed().as_secs_f64());
        }
    }
    std::hint::black_box(&out);
    Ok(median(&rates))
}

/// `scripts/loader_baseline.py` on `list`: its JSON, or why it did not run.
fn pillow(list: &Path, passes: usize) -> std::result::Result<serde_json::Value, String> {
    let script = std::env::var("ALEXNET_LOADER_BASELINE").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/loader_baseline.py").into()
    });
    let out = Command::new("python3")
        .arg(script)
        .arg("--list")
        .arg(list)
        .args([
            "--passes",
            &passes.to_string(),
            "--batch",
            &BATCH.to_string(),
            "--json",
        ])
        .output()
        .map_err(|e| format!("python3 not runnable ({e})"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("unreadable output: {e}"))
}

/// The pack's images as `shard<TAB>offset<TAB>size` lines, from its indexes.
fn pack_list(split: &Path, list: &Path) -> Result<()> {
    let mut text = String::new();
    let mut shards: Vec<PathBuf> = std::fs::read_dir(split)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    shards.retain(|p| p.extension().is_some_and(|e| e == "idx"));
    shards.sort();
    for idx in shards {
        let tar = idx.with_extension("tar");
        for line in std::fs::read_to_string(&idx)?.lines().skip(1) {
            let f: Vec<&str> = line.split('\t').collect();
            text += &format!("{}\t{}\t{}\n", tar.display(), f[0], f[1]);
        }
    }
    std::fs::write(list, text)?;
    Ok(())
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(()); // `cargo bench -- --list`: nothing to list
    }
    let data = PathBuf::from(std::env::var("ALEXNET_LOADER_DATA").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/data/imagenet-samples"
        )
        .into()
    }));
    if !data.is_dir() {
        println!(
            "loader bench: skipped, no images at {} (set ALEXNET_LOADER_DATA to a class-folder tree of JPEGs)",
            data.display()
        );
        return Ok(());
    }
    let passes = env_usize("ALEXNET_LOADER_PASSES", 5)?.max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads: Vec<usize> = match std::env::var("ALEXNET_LOADER_THREADS") {
        Ok(v) => v
            .split(',')
            .map(|t| {
                t.trim()
                    .parse()
                    .with_context(|| format!("ALEXNET_LOADER_THREADS={v}"))
            })
            .collect::<Result<_>>()?,
        Err(_) if cores > 1 => vec![1, cores],
        Err(_) => vec![1],
    };
    let bench_dir = bench_dir()?;
    let work = bench_dir.join("loader");
    std::fs::create_dir_all(&work)?;
    let raw = Arc::new(Dataset::open(&data)?);
    if raw.len() < BATCH {
        bail!(
            "{} holds {} images, fewer than a batch of {BATCH}",
            data.display(),
            raw.len()
        );
    }
    let stats = Arc::new(
        prepare(
            &raw,
            256,
            cores,
            Some(&work.join("raw.stats-256.safetensors")),
        )?
        .stats,
    );
    // Packed afresh each run, so the pack is what this build writes.
    let pack_dir = work.join("pack/train");
    if pack_dir.exists() {
        std::fs::remove_dir_all(&pack_dir)?;
    }
    pack_split(
        &raw,
        &pack_dir,
        &PackOptions::default(),
        false,
        &Progress::hidden(),
    )?;
    let packed = Arc::new(Dataset::open(&pack_dir)?);
    let mean_bytes = |ds: &Dataset| -> Result<f64> {
        let mut total = 0;
        for i in 0..ds.len() {
            total += ds.read(i)?.len();
        }
        Ok(total as f64 / ds.len() as f64)
    };
    println!(
        "loader bench: {} images from {} ({:.0} KB each, {:.0} KB packed), batch {BATCH}, median of {passes} epochs",
        raw.len(),
        data.display(),
        mean_bytes(&raw)? / 1e3,
        mean_bytes(&packed)? / 1e3,
    );
    let mut rows: Vec<(String, usize, f64)> = Vec::new();
    rows.push(("raw, before".into(), 1, time_before(&raw, &stats, passes)?));
    for &t in &threads {
        rows.push(("raw".into(), t, time_loader(&raw, &stats, t, passes)?));
        rows.push(("packed".into(), t, time_loader(&packed, &stats, t, passes)?));
    }
    let raw_list = work.join("raw.list");
    let mut text = String::new();
    for i in 0..raw.len() {
        text += &format!("{}\n", data.join(&raw.samples()[i].name).display());
    }
    std::fs::write(&raw_list, text)?;
    let packed_list = work.join("packed.list");
    pack_list(&pack_dir, &packed_list)?;
    let mut peers = serde_json::Map::new();
    for (name, list) in [("pillow raw", &raw_list), ("pillow packed", &packed_list)] {
        match pillow(list, passes) {
            Ok(v) => {
                let rate = v["images_per_s"].as_f64().unwrap_or(0.0);
                rows.push((name.into(), 1, rate));
                peers.insert(name.into(), v);
            }
            Err(why) => println!("{name}: not run: {why}"),
        }
    }
    let per_core = |name: &str| rows.iter().find(|r| r.0 == name && r.1 == 1).map(|r| r.2);
    let (before, pil_raw, pil_packed) = (
        per_core("raw, before"),
        per_core("pillow raw"),
        per_core("pillow packed"),
    );
    println!(
        "{:<14} {:>7} {:>10} {:>14} {:>12} {:>13}",
        "path", "threads", "images/s", "images/s/core", "vs before", "vs Pillow"
    );
    let mut json_rows = Vec::new();
    for (name, t, rate) in &rows {
        let core = rate / *t as f64;
        let pil = if name.contains("packed") {
            pil_packed
        } else {
            pil_raw
        };
        let ratio = |b: Option<f64>| b.map_or("-".into(), |b| format!("{:.2}x", core / b));
        println!(
            "{name:<14} {t:>7} {rate:>10.0} {core:>14.0} {:>12} {:>13}",
            ratio(before),
            if name.starts_with("pillow") {
                "-".into()
            } else {
                ratio(pil)
            }
        );
        json_rows.push(serde_json::json!({
            "path": name, "threads": t, "images_per_s": rate, "images_per_s_per_core": core,
            "vs_before": before.map(|b| core / b), "vs_pillow": pil.map(|p| core / p),
        }));
    }
    let json = serde_json::json!({
        "images": raw.len(), "data": data.display().to_string(), "batch": BATCH, "passes": passes,
        "cores": cores, "rows": json_rows, "pillow": peers,
    });
    let file = bench_dir.join("loader.json");
    std::fs::write(&file, serde_json::to_string_pretty(&json)?)?;
    println!("wrote {}", file.display());
    Ok(())
}
