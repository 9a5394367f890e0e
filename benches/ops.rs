//! Times every op at the paper's exact layer shapes (batch 128 unless `ALEXNET_BENCH_BATCH` says
//! otherwise) on one tower's device: forward and backward of conv1–conv5, LRN1/LRN2, the three
//! poolings, dropout, fc6–fc8, softmax and the SGD update. Each row gives the median time and the
//! spread over repeats, the work rate (GFLOP/s for convolutions and fc layers, GB/s of compulsory
//! traffic for the rest) and its fraction of a ceiling measured in the same run: a large SGEMM
//! for arithmetic (on a GPU cuBLAS's, which also runs the fc layers; their rows marked `(own)`
//! time our GEMM kernels), a large copy for bandwidth. Writes `target/bench/ops.json`.
//!
//! The device is GPU 0 where one is usable (timed with CUDA events on its stream, and the peak
//! memory the run held is reported), else the CPU path (timed by the wall clock);
//! `ALEXNET_BENCH_DEVICE=cpu|cuda` chooses. The table says which.
//! `cargo bench --bench ops`; `ALEXNET_BENCH_REPEATS` sets the timed runs per op (default 5).

use alexnet::cuda::{CudaDevice, CudaLauncher};
use alexnet::device::cpu::CpuDevice;
use alexnet::device::kernels::KernelDevice;
use alexnet::device::{Device, labels_as_floats};
use alexnet::model::spec::Layer;
use alexnet::model::{Ablations, Plan, preset};
use alexnet::ops::{dropout::DropoutGeom, fc::FcGeom, philox, sgd::SgdStep};
use anyhow::{Result, bail};
use std::time::Instant;

/// How one run of an op is timed on a device.
trait Timed: Device {
    /// Milliseconds `f` takes on the device (everything it queued, done).
    fn time_ms(&self, f: &mut dyn FnMut() -> Result<()>) -> Result<f64>;
    /// The same device with the fc layers on our own GEMM kernels, where it normally runs them
    /// elsewhere (cuBLAS); its buffers are this device's.
    fn own_fc(&self) -> Option<Self>
    where
        Self: Sized,
    {
        None
    }
}

impl Timed for CpuDevice {
    fn time_ms(&self, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
        let t = Instant::now();
        f()?;
        self.synchronize()?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    }
}

impl Timed for CudaDevice {
    /// Between two CUDA events on the launcher's stream: the GPU's time, without the host's
    /// launch and scheduling overheads around it.
    fn time_ms(&self, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
        let timer = self.launcher().start_timer()?;
        f()?;
        timer.stop()
    }
    fn own_fc(&self) -> Option<Self> {
        let l = self.launcher();
        l.uses_cublas()
            .then(|| KernelDevice::new(l.without_cublas()))
    }
}

struct Row {
    op: String,
    times_ms: Vec<f64>,
    /// Floating point operations, or bytes moved, per run.
    work: f64,
    is_flops: bool,
}

fn random<D: Device>(dev: &D, len: usize, stream: u64) -> Result<D::Buf> {
    let data: Vec<f32> = (0..len as u64)
        .map(|i| 2.0 * philox::uniform(philox::word(3, stream, i)) - 1.0)
        .collect();
    dev.upload(&data)
}

/// Runs `f` once to warm up, then `repeats` times, each timed by the device.
fn time<D: Timed>(dev: &D, repeats: usize, mut f: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    f()?;
    dev.synchronize()?;
    let mut ms = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        ms.push(dev.time_ms(&mut f)?);
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms)
}

fn bench<D: Timed>(dev: &D, plan: &Plan, n: usize, repeats: usize) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let f4 = 4.0f64; // bytes per f32
    let mut push = |op: String, times_ms: Vec<f64>, work: f64, is_flops: bool| {
        rows.push(Row {
            op,
            times_ms,
            work,
            is_flops,
        })
    };
    for lp in &plan.layers {
        let (inp, out) = (n * lp.input.len(), n * lp.output.len());
        let name = lp.name().to_string();
        match &lp.layer {
            Layer::Conv(_) => {
                let g = lp.conv_geom(n);
                let (x, w, b, dy) = (
                    random(dev, inp, 1)?,
                    random(dev, g.w_len(), 2)?,
                    random(dev, g.c_out, 3)?,
                    random(dev, out, 4)?,
                );
                let (mut y, mut dx, mut dw, mut db) = (
                    dev.alloc(out)?,
                    dev.alloc(inp)?,
                    dev.alloc(g.w_len())?,
                    dev.alloc(g.c_out)?,
                );
                // One tower's share of the layer's multiply-adds, two flops each.
                let flops = 2.0 * (lp.macs / lp.active_towers) as f64 * n as f64;
                push(
                    format!("{name} forward"),
                    time(dev, repeats, || dev.conv_forward(&g, &x, &w, &b, &mut y))?,
                    flops,
                    true,
                );
                push(
                    format!("{name} data grad"),
                    time(dev, repeats, || {
                        dev.conv_backward_data(&g, &dy, &w, &mut dx)
                    })?,
                    flops,
                    true,
                );
                push(
                    format!("{name} filter grad"),
                    time(dev, repeats, || {
                        dev.conv_backward_filter(&g, &x, &dy, &mut dw, &mut db)
                    })?,
                    flops,
                    true,
                );
            }
            Layer::Fc(_) => {
                let g = lp.fc_geom(n);
                let wl = g.inputs * g.outputs;
                let (x, w, b, dy) = (
                    random(dev, inp, 1)?,
                    random(dev, wl, 2)?,
                    random(dev, g.outputs, 3)?,
                    random(dev, out, 4)?,
                );
                let (mut y, mut dx, mut dw, mut db) = (
                    dev.alloc(out)?,
                    dev.alloc(inp)?,
                    dev.alloc(wl)?,
                    dev.alloc(g.outputs)?,
                );
                let flops = 2.0 * wl as f64 * n as f64;
                // As the engine runs them (cuBLAS on a GPU), then on our own GEMM kernels
                // where those are not what ran.
                let own = dev.own_fc();
                let mut runs: Vec<(&D, &str)> = vec![(dev, "")];
                runs.extend(own.as_ref().map(|o| (o, " (own)")));
                for (d, tag) in runs {
                    push(
                        format!("{name} forward{tag}"),
                        time(d, repeats, || d.fc_forward(&g, &x, &w, &b, &mut y))?,
                        flops,
                        true,
                    );
                    push(
                        format!("{name} data grad{tag}"),
                        time(d, repeats, || d.fc_backward_data(&g, &dy, &w, &mut dx))?,
                        flops,
                        true,
                    );
                    push(
                        format!("{name} filter grad{tag}"),
                        time(d, repeats, || {
                            d.fc_backward_filter(&g, &x, &dy, &mut dw, &mut db)
                        })?,
                        flops,
                        true,
                    );
                }
                // The SGD update of this layer's weights: read w, v, g, write w, v.
                let (mut wv, mut v) = (random(dev, wl, 5)?, dev.alloc(wl)?);
                let step = SgdStep {
                    lr: 0.01,
                    momentum: 0.9,
                    weight_decay: 0.0005,
                };
                push(
                    format!("{name} sgd update"),
                    time(dev, repeats, || dev.sgd_update(&step, &mut wv, &mut v, &dw))?,
                    5.0 * f4 * wl as f64,
                    false,
                );
            }
            Layer::Lrn(_) => {
                let g = lp.lrn_geom(n);
                let (x, dy) = (random(dev, inp, 1)?, random(dev, out, 4)?);
                let (mut y, mut dx) = (dev.alloc(out)?, dev.alloc(inp)?);
                push(
                    format!("{name} forward"),
                    time(dev, repeats, || dev.lrn_forward(&g, &x, &mut y))?,
                    2.0 * f4 * inp as f64,
                    false,
                );
                dev.lrn_forward(&g, &x, &mut y)?;
                push(
                    format!("{name} backward"),
                    time(dev, repeats, || dev.lrn_backward(&g, &x, &y, &dy, &mut dx))?,
                    4.0 * f4 * inp as f64,
                    false,
                );
            }
            Layer::MaxPool(_) => {
                let g = lp.pool_geom(n);
                let (x, dy) = (random(dev, inp, 1)?, random(dev, out, 4)?);
                let (mut y, mut dx) = (dev.alloc(out)?, dev.alloc(inp)?);
                let mut argmax = dev.alloc(out)?;
                push(
                    format!("{name} forward"),
                    time(dev, repeats, || {
                        dev.max_pool_forward(&g, &x, &mut y, &mut argmax)
                    })?,
                    f4 * (inp + 2 * out) as f64,
                    false,
                );
                push(
                    format!("{name} backward"),
                    time(dev, repeats, || {
                        dev.max_pool_backward(&g, &argmax, &dy, &mut dx)
                    })?,
                    f4 * (inp + 2 * out) as f64,
                    false,
                );
            }
            Layer::Dropout(d) => {
                let units = lp.output.len();
                let g = DropoutGeom {
                    n,
                    units,
                    units_total: units * lp.active_towers,
                    unit_offset: 0,
                    p: d.p,
                    seed: 1,
                    stream: 1,
                };
                let x = random(dev, out, 1)?;
                let mut y = dev.alloc(out)?;
                push(
                    format!("{name} forward"),
                    time(dev, repeats, || dev.dropout_forward_train(&g, &x, &mut y))?,
                    2.0 * f4 * out as f64,
                    false,
                );
                push(
                    format!("{name} backward"),
                    time(dev, repeats, || dev.dropout_backward(&g, &x, &mut y))?,
                    2.0 * f4 * out as f64,
                    false,
                );
            }
            Layer::Relu(_) if lp.index == 1 => {
                // One ReLU stands for all: elementwise, bandwidth-bound, the size of conv1's output.
                let (x, mut y) = (random(dev, inp, 1)?, dev.alloc(inp)?);
                push(
                    format!("{name} forward"),
                    time(dev, repeats, || dev.relu_forward(&x, &mut y))?,
                    2.0 * f4 * inp as f64,
                    false,
                );
            }
            _ => {}
        }
    }
    let classes = plan.classes;
    let logits = random(dev, n * classes, 6)?;
    let labels: Vec<u32> = (0..n as u32).map(|i| i * 7 % classes as u32).collect();
    let labels = dev.upload(&labels_as_floats(&labels, classes)?)?;
    let (mut probs, mut dl) = (dev.alloc(n * classes)?, dev.alloc(n * classes)?);
    let mut losses = dev.alloc(n)?;
    push(
        "softmax xent".into(),
        time(dev, repeats, || {
            dev.softmax_xent(
                n,
                classes,
                &logits,
                &labels,
                &mut probs,
                &mut dl,
                &mut losses,
            )
        })?,
        3.0 * f4 * (n * classes) as f64,
        false,
    );
    Ok(rows)
}

/// Ceilings measured on the same device: a large SGEMM (fc-shaped, 4096×4096 by 256 rows) and a
/// large copy.
fn ceilings<D: Timed>(dev: &D, repeats: usize) -> Result<(f64, f64)> {
    let g = FcGeom {
        n: 256,
        inputs: 4096,
        outputs: 4096,
    };
    let (x, w, b) = (
        random(dev, g.n * g.inputs, 1)?,
        random(dev, g.inputs * g.outputs, 2)?,
        random(dev, g.outputs, 3)?,
    );
    let mut y = dev.alloc(g.n * g.outputs)?;
    let ms = time(dev, repeats, || dev.fc_forward(&g, &x, &w, &b, &mut y))?;
    let gflops = 2.0 * (g.n * g.inputs * g.outputs) as f64 / ms[ms.len() / 2] / 1e6;
    let len = 64 << 20;
    let src = random(dev, len, 4)?;
    let mut dst = dev.alloc(len)?;
    let block = alexnet::device::Block {
        offset: 0,
        pitch: len,
    };
    let ms = time(dev, repeats, || {
        dev.copy_2d(&src, block, &mut dst, block, len, 1)
    })?;
    let gbs = 2.0 * 4.0 * len as f64 / ms[ms.len() / 2] / 1e6;
    Ok((gflops, gbs))
}

fn main() -> Result<()> {
    let repeats: usize = std::env::var("ALEXNET_BENCH_REPEATS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let n: usize = std::env::var("ALEXNET_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let plan = Plan::new(&preset("paper", &Ablations::default())?)?;
    let choice = std::env::var("ALEXNET_BENCH_DEVICE").unwrap_or_default();
    match choice.as_str() {
        "cpu" => run(
            &CpuDevice,
            &plan,
            n,
            repeats,
            "chosen by ALEXNET_BENCH_DEVICE",
        ),
        "cuda" => run(
            &KernelDevice::new(CudaLauncher::new(0)?),
            &plan,
            n,
            repeats,
            "GPU 0",
        ),
        "" => match CudaLauncher::new(0) {
            Ok(l) => run(&KernelDevice::new(l), &plan, n, repeats, "GPU 0"),
            Err(e) => run(
                &CpuDevice,
                &plan,
                n,
                repeats,
                &format!("no GPU selected: this times the CPU path; {e:#}"),
            ),
        },
        other => bail!("ALEXNET_BENCH_DEVICE={other:?}: expected cpu or cuda"),
    }
}

fn run<D: Timed>(dev: &D, plan: &Plan, n: usize, repeats: usize, why: &str) -> Result<()> {
    println!(
        "ops at the paper's shapes, one tower, batch {n}, on {} ({why})",
        dev.describe()
    );
    let (peak_gflops, peak_gbs) = ceilings(dev, repeats)?;
    println!("ceilings measured now: SGEMM {peak_gflops:.1} GFLOP/s, copy {peak_gbs:.1} GB/s");
    let rows = bench(dev, plan, n, repeats)?;
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>12} {:>9}",
        "op", "median ms", "min ms", "max ms", "rate", "of peak"
    );
    let mut json = Vec::new();
    for r in &rows {
        let median = r.times_ms[r.times_ms.len() / 2];
        let rate = r.work / median / 1e6; // GFLOP/s or GB/s
        let peak = if r.is_flops { peak_gflops } else { peak_gbs };
        let unit = if r.is_flops { "GFLOP/s" } else { "GB/s" };
        println!(
            "{:<22} {:>10.3} {:>10.3} {:>10.3} {:>6.1} {:<7} {:>7.1}%",
            r.op,
            median,
            r.times_ms[0],
            r.times_ms[r.times_ms.len() - 1],
            rate,
            unit,
            100.0 * rate / peak
        );
        json.push(serde_json::json!({
            "op": r.op, "median_ms": median, "min_ms": r.times_ms[0], "max_ms": r.times_ms[r.times_ms.len() - 1],
            "rate": rate, "unit": unit, "fraction_of_ceiling": rate / peak,
        }));
    }
    let peak_bytes = dev.memory_peak();
    match peak_bytes {
        Some(b) => println!("peak device memory held: {:.3} GB", b as f64 / 1e9),
        None => println!("peak device memory: not counted on this device"),
    }
    let out = serde_json::json!({
        "device": dev.describe(), "batch": n, "repeats": repeats,
        "ceiling_sgemm_gflops": peak_gflops, "ceiling_copy_gbs": peak_gbs,
        "peak_device_bytes": peak_bytes, "ops": json,
    });
    let dir = std::path::Path::new(
        &std::env::var("CARGO_TARGET_DIR")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target").into()),
    )
    .join("bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("ops.json"), serde_json::to_string_pretty(&out)?)?;
    println!("wrote {}", dir.join("ops.json").display());
    Ok(())
}
