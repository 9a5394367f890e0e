//! `cargo bench --bench search`: how fast `alexnet similar` searches a gallery, in gallery rows
//! per second, for the paper's Figure 4 (five queries, their six nearest, fc7's 4,096 values).
//!
//! The gallery is random f32 features written once (untimed) as a `.npy` file under
//! `target/bench/search/`, then searched from that file (as `similar --gallery F.npy` does: read
//! block by block, the page cache warm after the first pass) and from memory (the gallery as
//! `similar --gallery IMAGES` holds it). Each figure is the median of `ALEXNET_BENCH_REPEATS`
//! (default 5) searches after one untimed.
//!
//! `ALEXNET_BENCH_ROWS` (default 65,536) and `ALEXNET_BENCH_COLS` (4,096) size the gallery,
//! `ALEXNET_BENCH_QUERIES` (5) the queries; `ALEXNET_BENCH_DEVICE=cpu|cuda` the device (default:
//! a GPU where one is usable, else the CPU). Writes `target/bench/search.json`.

mod common;

use alexnet::device::Device;
use alexnet::device::cpu::CpuDevice;
use alexnet::device::kernels::KernelDevice;
use alexnet::features::file::{FeatureReader, FeatureWriter};
use alexnet::features::search::{Gallery, Matrix, default_block_rows, search};
use alexnet::progress::Progress;
use anyhow::{Result, bail};
use common::{bench_dir, env_usize, median};
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::time::Instant;

const TOP: usize = 6;

/// The gallery file, written once per size (random values, fixed seed).
fn gallery_file(rows: usize, cols: usize) -> Result<PathBuf> {
    let dir = bench_dir()?.join("search");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("gallery-{rows}x{cols}.npy"));
    if path.exists() {
        return Ok(path);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut w = FeatureWriter::create(&path, cols, false, vec![])?;
    let mut row = vec![0f32; cols];
    for i in 0..rows {
        row.iter_mut().for_each(|v| *v = rng.random_range(0.0..1.0));
        w.push(&row, &format!("{i}.jpg"), "")?;
    }
    w.finish()
}

/// Median seconds of `repeats` searches of `gallery` (after one untimed).
fn time_search<D: Device>(
    device: &D,
    queries: &[f32],
    gallery: &mut dyn Gallery,
    repeats: usize,
) -> Result<f64> {
    let block = default_block_rows(gallery.cols());
    let mut times = Vec::new();
    for i in 0..=repeats {
        let t = Instant::now();
        let hits = search(device, queries, gallery, TOP, block, &Progress::hidden())?;
        std::hint::black_box(hits);
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    Ok(median(&times))
}

fn main() -> Result<()> {
    let rows = env_usize("ALEXNET_BENCH_ROWS", 65_536)?;
    let cols = env_usize("ALEXNET_BENCH_COLS", 4096)?;
    let n = env_usize("ALEXNET_BENCH_QUERIES", 5)?;
    let repeats = env_usize("ALEXNET_BENCH_REPEATS", 5)?;
    let use_gpu = match std::env::var("ALEXNET_BENCH_DEVICE")
        .unwrap_or_default()
        .as_str()
    {
        "cpu" => false,
        "cuda" => true,
        "" => alexnet::cuda::CudaLauncher::new(0).is_ok(),
        other => bail!("ALEXNET_BENCH_DEVICE={other:?}: expected cpu or cuda"),
    };
    let path = gallery_file(rows, cols)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let queries: Vec<f32> = (0..n * cols).map(|_| rng.random_range(0.0..1.0)).collect();
    let mut file = FeatureReader::open(&path)?;
    let mut values = Vec::new();
    file.read_rows_into(0, rows, &mut values)?;
    let mut memory = Matrix { cols, values };
    let mut table = Vec::new();
    let mut time_both = |device_name: &str, file_s: f64, memory_s: f64| {
        for (source, s) in [("file", file_s), ("memory", memory_s)] {
            let rate = rows as f64 / s;
            println!(
                "{device_name:<6} {source:<7} {rows:>9} x {cols:<5} {n:>3} queries  {:>9.1} ms  {rate:>12.0} rows/s",
                s * 1e3
            );
            table.push(serde_json::json!({
                "device": device_name, "source": source, "rows": rows, "cols": cols,
                "queries": n, "top": TOP, "median_s": s, "rows_per_s": rate,
            }));
        }
    };
    println!(
        "search, median of {repeats} after one untimed; top {TOP}, blocks of {} rows",
        default_block_rows(cols)
    );
    if use_gpu {
        let gpu = KernelDevice::new(alexnet::cuda::CudaLauncher::new(0)?);
        let f = time_search(&gpu, &queries, &mut file, repeats)?;
        let m = time_search(&gpu, &queries, &mut memory, repeats)?;
        time_both("cuda", f, m);
    } else {
        let f = time_search(&CpuDevice, &queries, &mut file, repeats)?;
        let m = time_search(&CpuDevice, &queries, &mut memory, repeats)?;
        time_both("cpu", f, m);
    }
    let out = bench_dir()?.join("search.json");
    std::fs::write(&out, serde_json::to_string_pretty(&table)?)?;
    println!("wrote {}", out.display());
    Ok(())
}
