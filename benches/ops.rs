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
//!
//! The convolutions and fc layers are timed at each precision of `ALEXNET_BENCH_PRECISION`
//! (a comma list of fp32, tf32, bf16, or `all`; default all three on a GPU, fp32 on the CPU),
//! each against the large GEMM's rate at the same precision.

mod common;

use alexnet::cuda::{CudaDevice, CudaLauncher};
use alexnet::device::cpu::CpuDevice;
use alexnet::device::kernels::KernelDevice;
use alexnet::device::{Device, labels_as_floats};
use alexnet::model::spec::Layer;
use alexnet::model::{Ablations, Plan, preset};
use alexnet::ops::precision::Precision;
use alexnet::ops::{dropout::DropoutGeom, fc::FcGeom, philox, sgd::SgdStep};
use anyhow::{Result, bail};
use common::{bench_dir, env_usize};
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
    /// The products' precision, for the convolutions and fc layers.
    precision: Option<Precision>,
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

fn bench<D: Timed>(
    dev: &D,
    plan: &Plan,
    n: usize,
    repeats: usize,
    precisions: &[Precision],
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let f4 = 4.0f64; // bytes per f32
    let mut push_at = |op: String, precision, times_ms: Vec<f64>, work: f64, is_flops: bool| {
        rows.push(Row {
            op,
            precision,
            times_ms,
            work,
            is_flops,
        })
    };
    // The op at `prec`, its name tagged with any precision but fp32.
    let tagged = |op: String, prec: Precision| match prec {
        Precision::Fp32 => op,
        p => format!("{op} {p}"),
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
                for &prec in precisions {
                    push_at(
                        tagged(format!("{name} forward"), prec),
                        Some(prec),
                        time(dev, repeats, || {
                            dev.conv_forward(&g, prec, &x, &w, &b, &mut y)
                        })?,
                        flops,
                        true,
                    );
                    push_at(
                        tagged(format!("{name} data grad"), prec),
                        Some(prec),
                        time(dev, repeats, || {
                            dev.conv_backward_data(&g, prec, &dy, &w, &mut dx)
                        })?,
                        flops,
                        true,
                    );
                    push_at(
                        tagged(format!("{name} filter grad"), prec),
                        Some(prec),
                        time(dev, repeats, || {
                            dev.conv_backward_filter(&g, prec, &x, &dy, &mut dw, &mut db)
                        })?,
                        flops,
                        true,
                    );
                }
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
                    for &prec in precisions {
                        push_at(
                            tagged(format!("{name} forward{tag}"), prec),
                            Some(prec),
                            time(d, repeats, || d.fc_forward(&g, prec, &x, &w, &b, &mut y))?,
                            flops,
                            true,
                        );
                        push_at(
                            tagged(format!("{name} data grad{tag}"), prec),
                            Some(prec),
                            time(d, repeats, || {
                                d.fc_backward_data(&g, prec, &dy, &w, &mut dx)
                            })?,
                            flops,
                            true,
                        );
                        push_at(
                            tagged(format!("{name} filter grad{tag}"), prec),
                            Some(prec),
                            time(d, repeats, || {
                                d.fc_backward_filter(&g, prec, &x, &dy, &mut dw, &mut db)
                            })?,
                            flops,
                            true,
                        );
                    }
                }
                // The SGD update of this layer's weights: read w, v, g, write w, v.
                let (mut wv, mut v) = (random(dev, wl, 5)?, dev.alloc(wl)?);
                let step = SgdStep {
                    lr: 0.01,
                    momentum: 0.9,
                    weight_decay: 0.0005,
                };
                push_at(
                    format!("{name} sgd update"),
                    None,
                    time(dev, repeats, || dev.sgd_update(&step, &mut wv, &mut v, &dw))?,
                    5.0 * f4 * wl as f64,
                    false,
                );
            }
            Layer::Lrn(_) => {
                let g = lp.lrn_geom(n);
                let (x, dy) = (random(dev, inp, 1)?, random(dev, out, 4)?);
                let (mut y, mut dx) = (dev.alloc(out)?, dev.alloc(inp)?);
                push_at(
                    format!("{name} forward"),
                    None,
                    time(dev, repeats, || dev.lrn_forward(&g, &x, &mut y))?,
                    2.0 * f4 * inp as f64,
                    false,
                );
                dev.lrn_forward(&g, &x, &mut y)?;
                push_at(
                    format!("{name} backward"),
                    None,
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
                push_at(
                    format!("{name} forward"),
                    None,
                    time(dev, repeats, || {
                        dev.max_pool_forward(&g, &x, &mut y, &mut argmax)
                    })?,
                    f4 * (inp + 2 * out) as f64,
                    false,
                );
                push_at(
                    format!("{name} backward"),
                    None,
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
                    first_sample: 0,
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
                push_at(
                    format!("{name} forward"),
                    None,
                    time(dev, repeats, || dev.dropout_forward_train(&g, &x, &mut y))?,
                    2.0 * f4 * out as f64,
                    false,
                );
                push_at(
                    format!("{name} backward"),
                    None,
                    time(dev, repeats, || dev.dropout_backward(&g, &x, &mut y))?,
                    2.0 * f4 * out as f64,
                    false,
                );
            }
            Layer::Relu(_) if lp.index == 1 => {
                // One ReLU stands for all: elementwise, bandwidth-bound, the size of conv1's output.
                let (x, mut y) = (random(dev, inp, 1)?, dev.alloc(inp)?);
                push_at(
                    format!("{name} forward"),
                    None,
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
    push_at(
        "softmax xent".into(),
        None,
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

/// Ceilings measured on the same device: a large GEMM (fc-shaped, 4096×4096 by 256 rows) at
/// each precision, and a large copy.
fn ceilings<D: Timed>(
    dev: &D,
    repeats: usize,
    precisions: &[Precision],
) -> Result<(Vec<(Precision, f64)>, f64)> {
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
    let mut gemm = Vec::new();
    for &prec in precisions {
        let ms = time(dev, repeats, || {
            dev.fc_forward(&g, prec, &x, &w, &b, &mut y)
        })?;
        gemm.push((
            prec,
            2.0 * (g.n * g.inputs * g.outputs) as f64 / ms[ms.len() / 2] / 1e6,
        ));
    }
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
    Ok((gemm, gbs))
}

/// `ALEXNET_BENCH_PRECISION`, or `default`.
fn bench_precisions(default: &[Precision]) -> Result<Vec<Precision>> {
    match std::env::var("ALEXNET_BENCH_PRECISION") {
        Err(_) => Ok(default.to_vec()),
        Ok(v) if v == "all" => Ok(Precision::ALL.to_vec()),
        Ok(v) => v.split(',').map(|p| p.trim().parse()).collect(),
    }
}

fn main() -> Result<()> {
    let repeats = env_usize("ALEXNET_BENCH_REPEATS", 5)?;
    let n = env_usize("ALEXNET_BENCH_BATCH", 128)?;
    let plan = Plan::new(&preset("paper", &Ablations::default())?)?;
    let (cpu, gpu) = (
        bench_precisions(&[Precision::Fp32])?,
        bench_precisions(&Precision::ALL)?,
    );
    let choice = std::env::var("ALEXNET_BENCH_DEVICE").unwrap_or_default();
    match choice.as_str() {
        "cpu" => run(
            &CpuDevice,
            &plan,
            n,
            repeats,
            &cpu,
            "chosen by ALEXNET_BENCH_DEVICE",
        ),
        "cuda" => run(
            &KernelDevice::new(CudaLauncher::new(0)?),
            &plan,
            n,
            repeats,
            &gpu,
            "GPU 0",
        ),
        "" => match CudaLauncher::new(0) {
            Ok(l) => run(&KernelDevice::new(l), &plan, n, repeats, &gpu, "GPU 0"),
            Err(e) => run(
                &CpuDevice,
                &plan,
                n,
                repeats,
                &cpu,
                &format!("no GPU selected: this times the CPU path; {e:#}"),
            ),
        },
        other => bail!("ALEXNET_BENCH_DEVICE={other:?}: expected cpu or cuda"),
    }
}

fn run<D: Timed>(
    dev: &D,
    plan: &Plan,
    n: usize,
    repeats: usize,
    precisions: &[Precision],
    why: &str,
) -> Result<()> {
    println!(
        "ops at the paper's shapes, one tower, batch {n}, on {} ({why})",
        dev.describe()
    );
    let (peak_gemm, peak_gbs) = ceilings(dev, repeats, precisions)?;
    let gemm_text: Vec<String> = peak_gemm
        .iter()
        .map(|(p, g)| format!("{p} {g:.1}"))
        .collect();
    println!(
        "ceilings measured now: GEMM {} GFLOP/s, copy {peak_gbs:.1} GB/s",
        gemm_text.join(", ")
    );
    let rows = bench(dev, plan, n, repeats, precisions)?;
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>12} {:>9}",
        "op", "median ms", "min ms", "max ms", "rate", "of peak"
    );
    let mut json = Vec::new();
    for r in &rows {
        let median = r.times_ms[r.times_ms.len() / 2];
        let rate = r.work / median / 1e6; // GFLOP/s or GB/s
        let peak = match r.precision {
            Some(p) => peak_gemm
                .iter()
                .find(|(q, _)| *q == p)
                .map_or(f64::NAN, |(_, g)| *g),
            None => peak_gbs,
        };
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
            "op": r.op, "precision": r.precision, "median_ms": median, "min_ms": r.times_ms[0],
            "max_ms": r.times_ms[r.times_ms.len() - 1], "rate": rate, "unit": unit,
            "fraction_of_ceiling": rate / peak,
        }));
    }
    let peak_bytes = dev.memory_peak();
    match peak_bytes {
        Some(b) => println!("peak device memory held: {:.3} GB", b as f64 / 1e9),
        None => println!("peak device memory: not counted on this device"),
    }
    let out = serde_json::json!({
        "device": dev.describe(), "batch": n, "repeats": repeats,
        "ceiling_gemm_gflops": peak_gemm.iter().map(|(p, g)| (p.name(), *g)).collect::<std::collections::BTreeMap<_, _>>(),
        "ceiling_copy_gbs": peak_gbs,
        "peak_device_bytes": peak_bytes, "ops": json,
    });
    let dir = bench_dir()?;
    std::fs::write(dir.join("ops.json"), serde_json::to_string_pretty(&out)?)?;
    println!("wrote {}", dir.join("ops.json").display());
    Ok(())
}
