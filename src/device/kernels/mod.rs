//! `KernelDevice`: the `Device` whose every op is a launch of the `cuda/*.cu` kernels through a
//! `Launcher` — cudarc on a GPU, the host executor on the CPU. Launch configurations, argument
//! order, split decisions and workspace sizes live here once, so both run the same code.
//!
//! One module per family of launches: `conv` (the implicit-GEMM convolution passes), `fc` (the
//! fully connected layers), both on the tiles of `igemm`; `params` (the mirrors of
//! `cuda/params.cuh`); the pointwise ops, the reductions and softmax stay here.

mod conv;
mod fc;
mod igemm;
mod params;

use params::{
    ReduceParams, SgdParams, SoftmaxParams, TopKParams, dropout_params, lrn_params, pool_params,
    spatial_norm_params,
};

use super::launch::{Kernel, LaunchConfig, Launcher};
use super::{Block, Device};
use crate::ops::precision::Precision;
use crate::ops::{
    conv::ConvGeom, dropout::DropoutGeom, fc::FcGeom, lrn::LrnGeom, pool::PoolGeom, sgd::SgdStep,
    spatial_norm::SpatialNormGeom,
};
use anyhow::{Context, Result, ensure};
use std::ffi::c_void;
use std::sync::Mutex;

/// Threads per block of the elementwise kernels, the bias reduction and softmax/top-k.
const THREADS: u32 = 256;

// ---- helpers ---------------------------------------------------------------------------------

/// A kernel argument: the launcher reads the value behind the pointer during `launch`.
fn arg<T>(v: &T) -> *mut c_void {
    v as *const T as *mut c_void
}

fn i32_of(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v)
        .with_context(|| format!("{what} = {v} does not fit the kernels' 32-bit indices"))
}

fn u32_of(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).with_context(|| format!("{what} = {v} exceeds a grid dimension"))
}

fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    ensure!(got == want, "{what} holds {got} elements, expected {want}");
    Ok(())
}

fn kernel(module: &'static str, name: &'static str) -> Kernel {
    Kernel { module, name }
}

/// Threads of an LRN launch: one per pixel column for windows of 3 to 9 channels (which
/// `cuda/lrn.cu` walks in registers), else one per element (`lrn_by_column` there).
fn lrn_threads(g: &LrnGeom) -> usize {
    if (1..=4).contains(&(g.size / 2)) {
        g.n * g.h * g.w
    } else {
        g.len()
    }
}

/// One thread per pixel of a `width x height` map, 32 x 8 per block, the maps along grid z
/// (kernels loop over maps past CUDA's 65535 limit on it).
fn per_map_pixel(width: usize, height: usize, maps: usize) -> Result<LaunchConfig> {
    Ok(LaunchConfig {
        grid: [
            u32_of(width.div_ceil(32), "column blocks")?,
            u32_of(height.div_ceil(8), "row blocks")?,
            maps.clamp(1, 65535) as u32,
        ],
        block: [32, 8, 1],
        shared_bytes: 0,
    })
}

/// Dropout: one thread per Philox block (four units) a sample's units can touch, the samples
/// along grid y (`cuda/dropout.cu`).
fn per_philox_block(g: &DropoutGeom) -> Result<LaunchConfig> {
    let slots = g.units / 4 + 2;
    ensure!(
        g.n <= 65535,
        "dropout over {} samples exceeds CUDA's grid y limit",
        g.n
    );
    Ok(LaunchConfig {
        grid: [
            u32_of(slots.div_ceil(THREADS as usize), "blocks")?,
            g.n as u32,
            1,
        ],
        block: [THREADS, 1, 1],
        shared_bytes: 0,
    })
}

/// One thread per element, 256 per block.
fn elementwise(n: usize) -> Result<LaunchConfig> {
    Ok(LaunchConfig {
        grid: [u32_of(n.div_ceil(THREADS as usize), "blocks")?, 1, 1],
        block: [THREADS, 1, 1],
        shared_bytes: 0,
    })
}

// ---- the device ------------------------------------------------------------------------------

/// A `Device` that runs every op as `cuda/*.cu` kernels launched through `L`.
pub struct KernelDevice<L: Launcher> {
    launcher: L,
    /// Scratch for split partial sums and the spatial-norm scales; grown on demand and reused.
    /// Launches are stream-ordered, so reuse by the next op is safe.
    workspace: Mutex<Option<L::Buf>>,
    /// The block tile every convolution and fc kernel launch uses instead of the one chosen per
    /// layer (tests and benchmarks compare tiles with it); see [`KernelDevice::with_gemm_tile`].
    gemm_tile: Option<&'static str>,
}

impl<L: Launcher> KernelDevice<L> {
    pub fn new(launcher: L) -> Self {
        KernelDevice {
            launcher,
            workspace: Mutex::new(None),
            gemm_tile: None,
        }
    }

    /// This device with every convolution and fc kernel on one block tile (`128x128`, `64x128`,
    /// `48x128`, or `64x128_wide`: the convolutions' general-bounds kernels) instead of the one
    /// chosen per layer. A convolution the masked kernels cannot run still gets the general ones;
    /// fc kernels take `64x128` for `64x128_wide`.
    pub fn with_gemm_tile(mut self, tile: &str) -> Result<Self> {
        self.gemm_tile = Some(igemm::tile_named(tile)?);
        Ok(self)
    }

    pub fn launcher(&self) -> &L {
        &self.launcher
    }

    fn ptr(&self, buf: &L::Buf) -> u64 {
        self.launcher.device_ptr(buf)
    }

    /// The address of a workspace of at least `len` floats.
    fn workspace(&self, len: usize) -> Result<u64> {
        let mut ws = self.workspace.lock().expect("workspace lock poisoned");
        if ws.as_ref().is_none_or(|b| self.launcher.len(b) < len) {
            *ws = Some(
                self.launcher
                    .alloc(len)
                    .with_context(|| format!("allocating a workspace of {len} floats"))?,
            );
        }
        Ok(self
            .launcher
            .device_ptr(ws.as_ref().expect("just allocated")))
    }

    fn launch(&self, k: Kernel, cfg: LaunchConfig, args: &[*mut c_void]) -> Result<()> {
        self.launcher
            .launch(k, cfg, args)
            .with_context(|| format!("launching {}::{} with {cfg:?}", k.module, k.name))
    }

    /// `out = Σ_s parts[s]` (+ bias[(i / bias_div) % bias_mod]) over `len` elements.
    fn reduce_splits(
        &self,
        len: usize,
        splits: usize,
        parts: u64,
        bias: u64,
        bias_div: usize,
        bias_mod: usize,
        out: u64,
    ) -> Result<()> {
        let p = ReduceParams {
            len: i32_of(len, "reduction length")?,
            splits: splits as i32,
            bias_div: bias_div as i32,
            bias_mod: bias_mod as i32,
        };
        self.launch(
            kernel("reduce", "reduce_splits_f32"),
            elementwise(len)?,
            &[arg(&p), arg(&parts), arg(&bias), arg(&out)],
        )
    }

    /// An elementwise kernel `name(n, a, b, ..)` over buffers of equal length.
    fn elementwise_op(
        &self,
        module: &'static str,
        name: &'static str,
        bufs: &[u64],
        n: usize,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let n32 = i32_of(n, "length")?;
        let mut args = vec![arg(&n32)];
        args.extend(bufs.iter().map(arg));
        self.launch(kernel(module, name), elementwise(n)?, &args)
    }

    /// Fills `buf` with `value`.
    pub fn fill(&self, buf: &mut L::Buf, value: f32) -> Result<()> {
        let n = self.launcher.len(buf);
        if n == 0 {
            return Ok(());
        }
        let (n32, dst) = (i32_of(n, "length")?, self.ptr(buf));
        self.launch(
            kernel("elementwise", "fill_f32"),
            elementwise(n)?,
            &[arg(&n32), arg(&value), arg(&dst)],
        )
        .context("fill")
    }

    /// The `k` highest-scoring classes of each of the `n` rows of `scores` (`[n, classes]`),
    /// best first, ties to the lower index, as `ops::softmax::top_k`.
    pub fn top_k(
        &self,
        n: usize,
        classes: usize,
        k: usize,
        scores: &L::Buf,
    ) -> Result<Vec<Vec<usize>>> {
        let run = || -> Result<Vec<Vec<usize>>> {
            check_len("scores", self.launcher.len(scores), n * classes)?;
            ensure!(k > 0 && k <= classes, "k must be in 1..={classes}");
            if n == 0 {
                return Ok(vec![]);
            }
            let p = TopKParams {
                n: i32_of(n, "n")?,
                classes: i32_of(classes, "classes")?,
                k: k as i32,
            };
            let out = self.launcher.alloc(n * k)?;
            let (s, o) = (self.ptr(scores), self.ptr(&out));
            let cfg = LaunchConfig {
                grid: [u32_of(n, "rows")?, 1, 1],
                block: [THREADS, 1, 1],
                shared_bytes: 0,
            };
            self.launch(
                kernel("softmax", "top_k_f32"),
                cfg,
                &[arg(&p), arg(&s), arg(&o)],
            )?;
            let idx = self.launcher.download(&out)?;
            Ok(idx
                .chunks(k)
                .map(|r| r.iter().map(|&i| i as usize).collect())
                .collect())
        };
        run().with_context(|| format!("top_k (n {n}, classes {classes}, k {k})"))
    }
}

impl<L: Launcher> Device for KernelDevice<L> {
    type Buf = L::Buf;

    fn describe(&self) -> String {
        self.launcher.describe()
    }
    fn alloc(&self, len: usize) -> Result<L::Buf> {
        self.launcher.alloc(len)
    }
    fn upload(&self, data: &[f32]) -> Result<L::Buf> {
        self.launcher.upload(data)
    }
    fn download(&self, buf: &L::Buf) -> Result<Vec<f32>> {
        self.launcher.download(buf)
    }
    fn len(&self, buf: &L::Buf) -> usize {
        self.launcher.len(buf)
    }
    fn copy_2d(
        &self,
        src: &L::Buf,
        from: Block,
        dst: &mut L::Buf,
        to: Block,
        width: usize,
        rows: usize,
    ) -> Result<()> {
        self.launcher
            .copy_2d(src, from, dst, to, width, rows)
            .with_context(|| format!("copy_2d {rows} rows of {width} from {from:?} to {to:?}"))
    }
    fn copy_2d_async(
        &self,
        src: &L::Buf,
        from: Block,
        dst: &mut L::Buf,
        to: Block,
        width: usize,
        rows: usize,
    ) -> Result<()> {
        self.launcher
            .copy_2d_async(src, from, dst, to, width, rows)
            .with_context(|| {
                format!("copy_2d_async {rows} rows of {width} from {from:?} to {to:?}")
            })
    }
    fn join_copies(&self) -> Result<()> {
        self.launcher.join_copies()
    }
    fn input_slot_free(&self, slot: usize) -> Result<()> {
        self.launcher.input_slot_free(slot)
    }
    fn upload_async(&self, data: &[f32], dst: &mut L::Buf, slot: usize) -> Result<()> {
        self.launcher
            .upload_async(data, dst, slot)
            .with_context(|| format!("uploading {} floats into input slot {slot}", data.len()))
    }
    fn add_assign(&self, dst: &mut L::Buf, src: &L::Buf) -> Result<()> {
        let n = self.len(dst);
        check_len("add_assign source", self.len(src), n)?;
        self.elementwise_op(
            "elementwise",
            "add_assign_f32",
            &[self.ptr(dst), self.ptr(src)],
            n,
        )
        .with_context(|| format!("add_assign over {n} elements"))
    }
    fn synchronize(&self) -> Result<()> {
        self.launcher.synchronize()
    }
    fn memory_peak(&self) -> Option<usize> {
        self.launcher.memory_peak()
    }

    fn conv_forward(
        &self,
        g: &ConvGeom,
        prec: Precision,
        x: &L::Buf,
        w: &L::Buf,
        b: &L::Buf,
        y: &mut L::Buf,
    ) -> Result<()> {
        self.launch_conv_forward(g, prec, x, w, b, y, false)
    }
    fn conv_forward_relu(
        &self,
        g: &ConvGeom,
        prec: Precision,
        x: &L::Buf,
        w: &L::Buf,
        b: &L::Buf,
        y: &mut L::Buf,
    ) -> Result<()> {
        self.launch_conv_forward(g, prec, x, w, b, y, true)
    }

    fn conv_backward_data(
        &self,
        g: &ConvGeom,
        prec: Precision,
        dy: &L::Buf,
        w: &L::Buf,
        dx: &mut L::Buf,
    ) -> Result<()> {
        self.launch_conv_backward_data(g, prec, dy, w, dx)
    }

    fn conv_backward_filter(
        &self,
        g: &ConvGeom,
        prec: Precision,
        x: &L::Buf,
        dy: &L::Buf,
        dw: &mut L::Buf,
        db: &mut L::Buf,
    ) -> Result<()> {
        self.launch_conv_backward_filter(g, prec, x, dy, dw, db)
    }

    fn fc_forward(
        &self,
        g: &FcGeom,
        prec: Precision,
        x: &L::Buf,
        w: &L::Buf,
        b: &L::Buf,
        y: &mut L::Buf,
    ) -> Result<()> {
        self.launch_fc_forward(g, prec, x, w, b, y)
    }

    fn fc_backward_data(
        &self,
        g: &FcGeom,
        prec: Precision,
        dy: &L::Buf,
        w: &L::Buf,
        dx: &mut L::Buf,
    ) -> Result<()> {
        self.launch_fc_backward_data(g, prec, dy, w, dx)
    }

    fn fc_backward_filter(
        &self,
        g: &FcGeom,
        prec: Precision,
        x: &L::Buf,
        dy: &L::Buf,
        dw: &mut L::Buf,
        db: &mut L::Buf,
    ) -> Result<()> {
        self.launch_fc_backward_filter(g, prec, x, dy, dw, db)
    }

    fn relu_forward(&self, x: &L::Buf, y: &mut L::Buf) -> Result<()> {
        let n = self.len(x);
        check_len("relu_forward y", self.len(y), n)?;
        self.elementwise_op(
            "activation",
            "relu_forward_f32",
            &[self.ptr(x), self.ptr(y)],
            n,
        )
        .with_context(|| format!("relu_forward over {n} elements"))
    }
    fn relu_backward(&self, y: &L::Buf, dy: &L::Buf, dx: &mut L::Buf) -> Result<()> {
        let n = self.len(y);
        check_len("relu_backward dy", self.len(dy), n)?;
        check_len("relu_backward dx", self.len(dx), n)?;
        self.elementwise_op(
            "activation",
            "relu_backward_f32",
            &[self.ptr(y), self.ptr(dy), self.ptr(dx)],
            n,
        )
        .with_context(|| format!("relu_backward over {n} elements"))
    }
    fn tanh_forward(&self, x: &L::Buf, y: &mut L::Buf) -> Result<()> {
        let n = self.len(x);
        check_len("tanh_forward y", self.len(y), n)?;
        self.elementwise_op(
            "activation",
            "tanh_forward_f32",
            &[self.ptr(x), self.ptr(y)],
            n,
        )
        .with_context(|| format!("tanh_forward over {n} elements"))
    }
    fn tanh_backward(&self, y: &L::Buf, dy: &L::Buf, dx: &mut L::Buf) -> Result<()> {
        let n = self.len(y);
        check_len("tanh_backward dy", self.len(dy), n)?;
        check_len("tanh_backward dx", self.len(dx), n)?;
        self.elementwise_op(
            "activation",
            "tanh_backward_f32",
            &[self.ptr(y), self.ptr(dy), self.ptr(dx)],
            n,
        )
        .with_context(|| format!("tanh_backward over {n} elements"))
    }

    fn lrn_forward(&self, g: &LrnGeom, x: &L::Buf, y: &mut L::Buf) -> Result<()> {
        let run = || -> Result<()> {
            let p = lrn_params(g)?;
            check_len("x", self.len(x), g.len())?;
            check_len("y", self.len(y), g.len())?;
            if g.is_empty() {
                return Ok(());
            }
            let (xp, yp) = (self.ptr(x), self.ptr(y));
            self.launch(
                kernel("lrn", "lrn_forward_f32"),
                elementwise(lrn_threads(g))?,
                &[arg(&p), arg(&xp), arg(&yp)],
            )
        };
        run().with_context(|| format!("lrn_forward {g:?}"))
    }
    fn lrn_backward(
        &self,
        g: &LrnGeom,
        x: &L::Buf,
        y: &L::Buf,
        dy: &L::Buf,
        dx: &mut L::Buf,
    ) -> Result<()> {
        let run = || -> Result<()> {
            let p = lrn_params(g)?;
            for (what, b) in [("x", x), ("y", y), ("dy", dy)] {
                check_len(what, self.len(b), g.len())?;
            }
            check_len("dx", self.len(dx), g.len())?;
            if g.is_empty() {
                return Ok(());
            }
            let (xp, yp, dyp, dxp) = (self.ptr(x), self.ptr(y), self.ptr(dy), self.ptr(dx));
            self.launch(
                kernel("lrn", "lrn_backward_f32"),
                elementwise(lrn_threads(g))?,
                &[arg(&p), arg(&xp), arg(&yp), arg(&dyp), arg(&dxp)],
            )
        };
        run().with_context(|| format!("lrn_backward {g:?}"))
    }

    fn spatial_norm_forward(&self, g: &SpatialNormGeom, x: &L::Buf, y: &mut L::Buf) -> Result<()> {
        let run = || -> Result<()> {
            let p = spatial_norm_params(g)?;
            check_len("x", self.len(x), g.len())?;
            check_len("y", self.len(y), g.len())?;
            if g.is_empty() {
                return Ok(());
            }
            let (xp, yp) = (self.ptr(x), self.ptr(y));
            self.launch(
                kernel("spatial_norm", "spatial_norm_forward_f32"),
                elementwise(g.len())?,
                &[arg(&p), arg(&xp), arg(&yp)],
            )
        };
        run().with_context(|| format!("spatial_norm_forward {g:?}"))
    }
    fn spatial_norm_backward(
        &self,
        g: &SpatialNormGeom,
        x: &L::Buf,
        y: &L::Buf,
        dy: &L::Buf,
        dx: &mut L::Buf,
    ) -> Result<()> {
        let run = || -> Result<()> {
            let p = spatial_norm_params(g)?;
            for (what, b) in [("x", x), ("y", y), ("dy", dy)] {
                check_len(what, self.len(b), g.len())?;
            }
            check_len("dx", self.len(dx), g.len())?;
            if g.is_empty() {
                return Ok(());
            }
            let (xp, yp, dyp, dxp) = (self.ptr(x), self.ptr(y), self.ptr(dy), self.ptr(dx));
            let scale = self.workspace(g.len())?;
            let cfg = elementwise(g.len())?;
            self.launch(
                kernel("spatial_norm", "spatial_norm_scale_f32"),
                cfg,
                &[arg(&p), arg(&xp), arg(&scale)],
            )?;
            self.launch(
                kernel("spatial_norm", "spatial_norm_backward_f32"),
                cfg,
                &[
                    arg(&p),
                    arg(&xp),
                    arg(&yp),
                    arg(&dyp),
                    arg(&scale),
                    arg(&dxp),
                ],
            )
        };
        run().with_context(|| format!("spatial_norm_backward {g:?}"))
    }

    fn max_pool_forward(
        &self,
        g: &PoolGeom,
        x: &L::Buf,
        y: &mut L::Buf,
        argmax: &mut L::Buf,
    ) -> Result<()> {
        let run = || -> Result<()> {
            let p = pool_params(g)?;
            check_len("x", self.len(x), g.x_len())?;
            check_len("y", self.len(y), g.y_len())?;
            check_len("argmax", self.len(argmax), g.y_len())?;
            if g.y_len() == 0 {
                return Ok(());
            }
            let (xp, yp, ap) = (self.ptr(x), self.ptr(y), self.ptr(argmax));
            self.launch(
                kernel("pool", "max_pool_forward_f32"),
                per_map_pixel(g.out_w(), g.out_h(), g.n * g.c)?,
                &[arg(&p), arg(&xp), arg(&yp), arg(&ap)],
            )
        };
        run().with_context(|| format!("max_pool_forward {g:?}"))
    }
    fn max_pool_backward(
        &self,
        g: &PoolGeom,
        argmax: &L::Buf,
        dy: &L::Buf,
        dx: &mut L::Buf,
    ) -> Result<()> {
        let run = || -> Result<()> {
            let p = pool_params(g)?;
            check_len("argmax", self.len(argmax), g.y_len())?;
            check_len("dy", self.len(dy), g.y_len())?;
            check_len("dx", self.len(dx), g.x_len())?;
            if g.x_len() == 0 {
                return Ok(());
            }
            let (ap, dyp, dxp) = (self.ptr(argmax), self.ptr(dy), self.ptr(dx));
            self.launch(
                kernel("pool", "max_pool_backward_f32"),
                per_map_pixel(g.w, g.h, g.n * g.c)?,
                &[arg(&p), arg(&ap), arg(&dyp), arg(&dxp)],
            )
        };
        run().with_context(|| format!("max_pool_backward {g:?}"))
    }

    fn dropout_forward_train(&self, g: &DropoutGeom, x: &L::Buf, y: &mut L::Buf) -> Result<()> {
        let run = || -> Result<()> {
            let p = dropout_params(g)?;
            check_len("x", self.len(x), g.len())?;
            check_len("y", self.len(y), g.len())?;
            if g.is_empty() {
                return Ok(());
            }
            let (xp, yp) = (self.ptr(x), self.ptr(y));
            self.launch(
                kernel("dropout", "dropout_forward_train_f32"),
                per_philox_block(g)?,
                &[arg(&p), arg(&xp), arg(&yp)],
            )
        };
        run().with_context(|| format!("dropout_forward_train {g:?}"))
    }
    fn dropout_backward(&self, g: &DropoutGeom, dy: &L::Buf, dx: &mut L::Buf) -> Result<()> {
        let run = || -> Result<()> {
            let p = dropout_params(g)?;
            check_len("dy", self.len(dy), g.len())?;
            check_len("dx", self.len(dx), g.len())?;
            if g.is_empty() {
                return Ok(());
            }
            let (dyp, dxp) = (self.ptr(dy), self.ptr(dx));
            self.launch(
                kernel("dropout", "dropout_backward_f32"),
                per_philox_block(g)?,
                &[arg(&p), arg(&dyp), arg(&dxp)],
            )
        };
        run().with_context(|| format!("dropout_backward {g:?}"))
    }
    fn dropout_forward_test(&self, p: f32, x: &L::Buf, y: &mut L::Buf) -> Result<()> {
        let n = self.len(x);
        let run = || -> Result<()> {
            ensure!(
                (0.0..1.0).contains(&p),
                "drop probability {p} is not in [0, 1)"
            );
            check_len("y", self.len(y), n)?;
            if n == 0 {
                return Ok(());
            }
            // Rounded once from f64, as `ops::dropout::forward_test` does.
            let scale = (1.0 - p as f64) as f32;
            let (n32, xp, yp) = (i32_of(n, "length")?, self.ptr(x), self.ptr(y));
            self.launch(
                kernel("dropout", "dropout_forward_test_f32"),
                elementwise(n)?,
                &[arg(&n32), arg(&scale), arg(&xp), arg(&yp)],
            )
        };
        run().with_context(|| format!("dropout_forward_test (p {p}, {n} elements)"))
    }

    fn softmax_xent(
        &self,
        n: usize,
        classes: usize,
        logits: &L::Buf,
        labels: &L::Buf,
        probs: &mut L::Buf,
        dlogits: &mut L::Buf,
        losses: &mut L::Buf,
    ) -> Result<()> {
        let run = || -> Result<()> {
            ensure!(n > 0 && classes > 0, "empty batch or no classes");
            check_len("logits", self.len(logits), n * classes)?;
            check_len("probs", self.len(probs), n * classes)?;
            check_len("dlogits", self.len(dlogits), n * classes)?;
            check_len("labels", self.len(labels), n)?;
            check_len("losses", self.len(losses), n)?;
            ensure!(
                classes < 1 << 24,
                "{classes} classes: labels travel as exact floats below 2^24"
            );
            let p = SoftmaxParams {
                n: i32_of(n, "n")?,
                classes: i32_of(classes, "classes")?,
                inv_n: (1.0 / n as f64) as f32,
            };
            i32_of(n * classes, "logits length")?;
            let (zp, lp, pp, dp, lossp) = (
                self.ptr(logits),
                self.ptr(labels),
                self.ptr(probs),
                self.ptr(dlogits),
                self.ptr(losses),
            );
            let cfg = LaunchConfig {
                grid: [u32_of(n, "rows")?, 1, 1],
                block: [THREADS, 1, 1],
                shared_bytes: 0,
            };
            self.launch(
                kernel("softmax", "softmax_xent_f32"),
                cfg,
                &[arg(&p), arg(&zp), arg(&lp), arg(&pp), arg(&dp), arg(&lossp)],
            )
        };
        run().with_context(|| format!("softmax_xent (n {n}, classes {classes})"))
    }

    fn sgd_update(
        &self,
        step: &SgdStep,
        w: &mut L::Buf,
        v: &mut L::Buf,
        grad: &L::Buf,
    ) -> Result<()> {
        let n = self.len(w);
        let run = || -> Result<()> {
            check_len("v", self.len(v), n)?;
            check_len("grad", self.len(grad), n)?;
            if n == 0 {
                return Ok(());
            }
            // The same constants `ops::sgd::update_naive` uses, decay rounded once from f64.
            let p = SgdParams {
                n: i32_of(n, "length")?,
                momentum: step.momentum,
                lr: step.lr,
                decay: (step.weight_decay as f64 * step.lr as f64) as f32,
            };
            let (wp, vp, gp) = (self.ptr(w), self.ptr(v), self.ptr(grad));
            self.launch(
                kernel("sgd", "sgd_update_f32"),
                elementwise(n)?,
                &[arg(&p), arg(&wp), arg(&vp), arg(&gp)],
            )
        };
        run().with_context(|| format!("sgd_update {step:?} over {n} elements"))
    }
}
