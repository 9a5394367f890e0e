//! `KernelDevice`: the `Device` whose every op is a launch of the `cuda/*.cu` kernels through a
//! `Launcher` — cudarc on a GPU, the host executor on the CPU. Launch configurations, argument
//! order, split decisions and workspace sizes live here once, so both run the same code.
//!
//! The parameter structs below mirror `cuda/params.cuh` field for field; the tile constants
//! mirror `cuda/gemm.cuh`.

use super::launch::{Kernel, LaunchConfig, Launcher, Sgemm};
use super::{Block, Device};
use crate::ops::{
    conv::ConvGeom, dropout::DropoutGeom, fc::FcGeom, lrn::LrnGeom, pool::PoolGeom, sgd::SgdStep,
    spatial_norm::SpatialNormGeom,
};
use anyhow::{Context, Result, ensure};
use std::ffi::c_void;
use std::sync::Mutex;

// ---- mirrors of cuda/gemm.cuh and cuda/params.cuh ---------------------------------------------

/// Block tile of the shared GEMM loop: rows of C (the M side), columns (N), K per step.
const GEMM_BM: usize = 64;
const GEMM_BN: usize = 128;
const GEMM_BK: usize = 8;
const GEMM_THREADS: u32 = 256;
/// Threads per block of the elementwise kernels, the bias reduction and softmax/top-k.
const THREADS: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct ConvParams {
    n: i32,
    c_in: i32,
    h: i32,
    w: i32,
    c_out: i32,
    out_h: i32,
    out_w: i32,
    k: i32,
    stride: i32,
    pad: i32,
    groups: i32,
    cin_g: i32,
    cout_g: i32,
    k_chunk: i32,
    img_chunk: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct FcParams {
    n: i32,
    inputs: i32,
    outputs: i32,
    k_chunk: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct ReduceParams {
    len: i32,
    splits: i32,
    bias_div: i32,
    bias_mod: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct LrnParams {
    n: i32,
    c: i32,
    hw: i32,
    group_c: i32,
    half: i32,
    k: f32,
    alpha: f32,
    beta: f32,
    two_alpha_beta: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct SpatialNormParams {
    maps: i32,
    h: i32,
    w: i32,
    half: i32,
    k: f32,
    alpha: f32,
    beta: f32,
    two_alpha_beta: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct PoolParams {
    maps: i32,
    h: i32,
    w: i32,
    out_h: i32,
    out_w: i32,
    size: i32,
    stride: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct DropoutParams {
    seed: u64,
    stream: u64,
    n: i32,
    units: i32,
    units_total: i32,
    unit_offset: i32,
    p: f32,
    pad_: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct SoftmaxParams {
    n: i32,
    classes: i32,
    inv_n: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct TopKParams {
    n: i32,
    classes: i32,
    k: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct SgdParams {
    n: i32,
    momentum: f32,
    lr: f32,
    decay: f32,
}

// ---- split decisions -------------------------------------------------------------------------

/// Blocks a launch aims for: two waves on a 132-SM H100/H200. Fixed rather than queried, so a
/// shape always splits the same way on every machine and results stay reproducible.
const TARGET_BLOCKS: usize = 264;
/// Fewest GEMM-K terms a split gets, so that partial sums stay cheap next to the GEMM.
const MIN_SPLIT_K: usize = 256;
const MAX_SPLITS: usize = 64;

/// How to split a reduction of `k` terms over blocks when the output has `tiles` tiles:
/// (terms per split, a multiple of the GEMM step; number of splits).
fn split_k(tiles: usize, k: usize) -> (usize, usize) {
    let want = TARGET_BLOCKS.div_ceil(tiles.max(1));
    let most = k.div_ceil(MIN_SPLIT_K).max(1);
    let splits = want.min(most).clamp(1, MAX_SPLITS);
    let chunk = (k.div_ceil(splits).div_ceil(GEMM_BK) * GEMM_BK).max(GEMM_BK);
    (chunk, k.div_ceil(chunk).max(1))
}

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

/// One thread per element, 256 per block.
fn elementwise(n: usize) -> Result<LaunchConfig> {
    Ok(LaunchConfig {
        grid: [u32_of(n.div_ceil(THREADS as usize), "blocks")?, 1, 1],
        block: [THREADS, 1, 1],
        shared_bytes: 0,
    })
}

fn gemm_config(n_cols: usize, m_rows: usize, z: usize) -> Result<LaunchConfig> {
    // CUDA caps gridDim.y and gridDim.z at 65535 (x at 2^31 - 1).
    let (rows, zs) = (m_rows.div_ceil(GEMM_BM), z);
    ensure!(
        rows <= 65535 && zs <= 65535,
        "a GEMM grid of {rows} row tiles by {zs} splits exceeds CUDA's 65535 limit on grid y and z"
    );
    Ok(LaunchConfig {
        grid: [
            u32_of(n_cols.div_ceil(GEMM_BN), "column tiles")?,
            u32_of(m_rows.div_ceil(GEMM_BM), "row tiles")?,
            u32_of(z, "grid z")?,
        ],
        block: [GEMM_THREADS, 1, 1],
        shared_bytes: 0,
    })
}

fn conv_params(g: &ConvGeom) -> Result<ConvParams> {
    ensure!(
        g.groups > 0 && g.c_in % g.groups == 0 && g.c_out % g.groups == 0,
        "{} input and {} output channels do not split into {} groups",
        g.c_in,
        g.c_out,
        g.groups
    );
    ensure!(
        g.stride > 0 && g.k > 0,
        "kernel size and stride must be positive"
    );
    ensure!(
        g.k <= g.h + g.pad + g.pad_end && g.k <= g.w + g.pad + g.pad_end,
        "a {}x{} kernel does not fit the padded {}x{} input",
        g.k,
        g.k,
        g.h,
        g.w
    );
    ensure!(g.n > 0 && g.c_in > 0 && g.c_out > 0, "empty convolution");
    for (what, v) in [("input length", g.x_len()), ("output length", g.y_len())] {
        i32_of(v, what)?;
    }
    i32_of(g.w_len(), "weight length")?;
    Ok(ConvParams {
        n: i32_of(g.n, "n")?,
        c_in: i32_of(g.c_in, "c_in")?,
        h: i32_of(g.h, "h")?,
        w: i32_of(g.w, "w")?,
        c_out: i32_of(g.c_out, "c_out")?,
        out_h: i32_of(g.out_h(), "out_h")?,
        out_w: i32_of(g.out_w(), "out_w")?,
        k: i32_of(g.k, "k")?,
        stride: i32_of(g.stride, "stride")?,
        pad: i32_of(g.pad, "pad")?,
        groups: i32_of(g.groups, "groups")?,
        cin_g: i32_of(g.cin_per_group(), "c_in per group")?,
        cout_g: i32_of(g.cout_per_group(), "c_out per group")?,
        k_chunk: 0,
        img_chunk: 0,
    })
}

fn fc_params(g: &FcGeom) -> Result<FcParams> {
    ensure!(g.n > 0 && g.inputs > 0 && g.outputs > 0, "empty fc layer");
    i32_of(g.n * g.inputs, "input length")?;
    i32_of(g.n * g.outputs, "output length")?;
    i32_of(g.inputs * g.outputs, "weight length")?;
    Ok(FcParams {
        n: g.n as i32,
        inputs: g.inputs as i32,
        outputs: g.outputs as i32,
        k_chunk: 0,
    })
}

fn pool_params(g: &PoolGeom) -> Result<PoolParams> {
    ensure!(
        g.size > 0 && g.stride > 0 && g.size <= g.h && g.size <= g.w,
        "a {}x{} window does not fit the {}x{} input (stride {})",
        g.size,
        g.size,
        g.h,
        g.w,
        g.stride
    );
    i32_of(g.x_len(), "input length")?;
    Ok(PoolParams {
        maps: (g.n * g.c) as i32,
        h: g.h as i32,
        w: g.w as i32,
        out_h: g.out_h() as i32,
        out_w: g.out_w() as i32,
        size: g.size as i32,
        stride: g.stride as i32,
    })
}

fn lrn_params(g: &LrnGeom) -> Result<LrnParams> {
    ensure!(
        g.groups > 0 && g.c % g.groups == 0,
        "{} channels do not split into {} groups",
        g.c,
        g.groups
    );
    ensure!(g.size % 2 == 1, "window size {} is not odd", g.size);
    i32_of(g.len(), "length")?;
    Ok(LrnParams {
        n: g.n as i32,
        c: g.c as i32,
        hw: (g.h * g.w) as i32,
        group_c: (g.c / g.groups) as i32,
        half: (g.size / 2) as i32,
        k: g.k,
        alpha: g.effective_alpha() as f32,
        beta: g.beta,
        two_alpha_beta: (2.0 * g.effective_alpha() * g.beta as f64) as f32,
    })
}

fn spatial_norm_params(g: &SpatialNormGeom) -> Result<SpatialNormParams> {
    ensure!(g.size % 2 == 1, "window size {} is not odd", g.size);
    i32_of(g.len(), "length")?;
    Ok(SpatialNormParams {
        maps: (g.n * g.c) as i32,
        h: g.h as i32,
        w: g.w as i32,
        half: (g.size / 2) as i32,
        k: g.k,
        alpha: g.effective_alpha() as f32,
        beta: g.beta,
        two_alpha_beta: (2.0 * g.effective_alpha() * g.beta as f64) as f32,
    })
}

fn dropout_params(g: &DropoutGeom) -> Result<DropoutParams> {
    ensure!(
        g.unit_offset + g.units <= g.units_total,
        "units {}..{} lie outside the layer's {}",
        g.unit_offset,
        g.unit_offset + g.units,
        g.units_total
    );
    ensure!(
        (0.0..1.0).contains(&g.p),
        "drop probability {} is not in [0, 1)",
        g.p
    );
    i32_of(g.len(), "length")?;
    Ok(DropoutParams {
        seed: g.seed,
        stream: g.stream,
        n: g.n as i32,
        units: g.units as i32,
        units_total: i32_of(g.units_total, "units_total")?,
        unit_offset: g.unit_offset as i32,
        p: g.p,
        pad_: 0,
    })
}

// ---- the device ------------------------------------------------------------------------------

/// A `Device` that runs every op as `cuda/*.cu` kernels launched through `L`.
pub struct KernelDevice<L: Launcher> {
    launcher: L,
    /// Scratch for split partial sums and the spatial-norm scales; grown on demand and reused.
    /// Launches are stream-ordered, so reuse by the next op is safe.
    workspace: Mutex<Option<L::Buf>>,
}

impl<L: Launcher> KernelDevice<L> {
    pub fn new(launcher: L) -> Self {
        KernelDevice {
            launcher,
            workspace: Mutex::new(None),
        }
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
        x: &L::Buf,
        w: &L::Buf,
        b: &L::Buf,
        y: &mut L::Buf,
    ) -> Result<()> {
        let run = || -> Result<()> {
            let p = conv_params(g)?;
            check_len("x", self.len(x), g.x_len())?;
            check_len("w", self.len(w), g.w_len())?;
            check_len("b", self.len(b), g.c_out)?;
            check_len("y", self.len(y), g.y_len())?;
            let cfg = gemm_config(g.n * g.out_h() * g.out_w(), g.cout_per_group(), g.groups)?;
            let (xp, wp, bp, yp) = (self.ptr(x), self.ptr(w), self.ptr(b), self.ptr(y));
            self.launch(
                kernel("conv", "conv_forward_f32"),
                cfg,
                &[arg(&p), arg(&xp), arg(&wp), arg(&bp), arg(&yp)],
            )
        };
        run().with_context(|| format!("conv_forward {g:?}"))
    }

    fn conv_backward_data(
        &self,
        g: &ConvGeom,
        dy: &L::Buf,
        w: &L::Buf,
        dx: &mut L::Buf,
    ) -> Result<()> {
        let run = || -> Result<()> {
            let p = conv_params(g)?;
            check_len("dy", self.len(dy), g.y_len())?;
            check_len("w", self.len(w), g.w_len())?;
            check_len("dx", self.len(dx), g.x_len())?;
            // One GEMM per (group, stride phase); the grid covers the largest phase (phase 0).
            let s = g.stride;
            let cols = g.n * g.h.div_ceil(s) * g.w.div_ceil(s);
            let cfg = gemm_config(cols, g.cin_per_group(), g.groups * s * s)?;
            let (dyp, wp, dxp) = (self.ptr(dy), self.ptr(w), self.ptr(dx));
            self.launch(
                kernel("conv", "conv_backward_data_f32"),
                cfg,
                &[arg(&p), arg(&dyp), arg(&wp), arg(&dxp)],
            )
        };
        run().with_context(|| format!("conv_backward_data {g:?}"))
    }

    fn conv_backward_filter(
        &self,
        g: &ConvGeom,
        x: &L::Buf,
        dy: &L::Buf,
        dw: &mut L::Buf,
        db: &mut L::Buf,
    ) -> Result<()> {
        let run = || -> Result<()> {
            let mut p = conv_params(g)?;
            check_len("x", self.len(x), g.x_len())?;
            check_len("dy", self.len(dy), g.y_len())?;
            check_len("dw", self.len(dw), g.w_len())?;
            check_len("db", self.len(db), g.c_out)?;
            let (xp, dyp, dwp, dbp) = (self.ptr(x), self.ptr(dy), self.ptr(dw), self.ptr(db));

            // Filter gradient: reduction over n·oh·ow, split across blocks.
            let (m, ncols, kdim) = (
                g.cout_per_group(),
                g.cin_per_group() * g.k * g.k,
                g.n * g.out_h() * g.out_w(),
            );
            let tiles = m.div_ceil(GEMM_BM) * ncols.div_ceil(GEMM_BN) * g.groups;
            let (chunk, splits) = split_k(tiles, kdim);
            p.k_chunk = i32_of(chunk, "k_chunk")?;
            // Bias gradient: reduction over images, split the same way.
            let bias_splits = TARGET_BLOCKS.div_ceil(g.c_out).clamp(1, g.n);
            let img_chunk = g.n.div_ceil(bias_splits);
            let bias_splits = g.n.div_ceil(img_chunk);
            p.img_chunk = img_chunk as i32;

            let w_len = g.w_len();
            let w_parts = if splits > 1 { splits * w_len } else { 0 };
            let b_parts = if bias_splits > 1 {
                bias_splits * g.c_out
            } else {
                0
            };
            let ws = if w_parts + b_parts > 0 {
                self.workspace(w_parts + b_parts)?
            } else {
                0
            };
            let b_ws = ws + 4 * w_parts as u64;

            let out = if splits > 1 { ws } else { dwp };
            let cfg = gemm_config(ncols, m, g.groups * splits)?;
            self.launch(
                kernel("conv", "conv_backward_filter_f32"),
                cfg,
                &[arg(&p), arg(&xp), arg(&dyp), arg(&out)],
            )?;
            if splits > 1 {
                self.reduce_splits(w_len, splits, ws, 0, 1, 1, dwp)?;
            }

            let out = if bias_splits > 1 { b_ws } else { dbp };
            let cfg = LaunchConfig {
                grid: [u32_of(g.c_out, "c_out")?, bias_splits as u32, 1],
                block: [THREADS, 1, 1],
                shared_bytes: 0,
            };
            self.launch(
                kernel("conv", "conv_backward_bias_f32"),
                cfg,
                &[arg(&p), arg(&dyp), arg(&out)],
            )?;
            if bias_splits > 1 {
                self.reduce_splits(g.c_out, bias_splits, b_ws, 0, 1, 1, dbp)?;
            }
            Ok(())
        };
        run().with_context(|| format!("conv_backward_filter {g:?}"))
    }

    fn fc_forward(
        &self,
        g: &FcGeom,
        x: &L::Buf,
        w: &L::Buf,
        b: &L::Buf,
        y: &mut L::Buf,
    ) -> Result<()> {
        let run = || -> Result<()> {
            let mut p = fc_params(g)?;
            check_len("x", self.len(x), g.n * g.inputs)?;
            check_len("w", self.len(w), g.outputs * g.inputs)?;
            check_len("b", self.len(b), g.outputs)?;
            check_len("y", self.len(y), g.n * g.outputs)?;
            let (xp, wp, bp, yp) = (self.ptr(x), self.ptr(w), self.ptr(b), self.ptr(y));
            let len = g.n * g.outputs;
            // Column-major, y^T [outputs, n] = (w^T)^T · x^T; then the bias, in place.
            let vendor = Sgemm {
                trans_a: true,
                trans_b: false,
                m: g.outputs,
                n: g.n,
                k: g.inputs,
                a: wp,
                lda: g.inputs,
                b: xp,
                ldb: g.inputs,
                c: yp,
                ldc: g.outputs,
            };
            if len > 0 && self.launcher.vendor_sgemm(&vendor)? {
                return self.reduce_splits(len, 1, yp, bp, 1, g.outputs, yp);
            }
            let tiles = g.outputs.div_ceil(GEMM_BM) * g.n.div_ceil(GEMM_BN);
            let (chunk, splits) = split_k(tiles, g.inputs);
            p.k_chunk = chunk as i32;
            let (out, bias) = if splits > 1 {
                (self.workspace(splits * len)?, 0)
            } else {
                (yp, bp)
            };
            let cfg = gemm_config(g.n, g.outputs, splits)?;
            self.launch(
                kernel("fc", "fc_forward_f32"),
                cfg,
                &[arg(&p), arg(&xp), arg(&wp), arg(&bias), arg(&out)],
            )?;
            if splits > 1 {
                // y[s, o] gets bias[o]: o = i % outputs.
                self.reduce_splits(len, splits, out, bp, 1, g.outputs, yp)?;
            }
            Ok(())
        };
        run().with_context(|| format!("fc_forward {g:?}"))
    }

    fn fc_backward_data(&self, g: &FcGeom, dy: &L::Buf, w: &L::Buf, dx: &mut L::Buf) -> Result<()> {
        let run = || -> Result<()> {
            let mut p = fc_params(g)?;
            check_len("dy", self.len(dy), g.n * g.outputs)?;
            check_len("w", self.len(w), g.outputs * g.inputs)?;
            check_len("dx", self.len(dx), g.n * g.inputs)?;
            let (dyp, wp, dxp) = (self.ptr(dy), self.ptr(w), self.ptr(dx));
            let len = g.n * g.inputs;
            // Column-major, dx^T [inputs, n] = w^T · dy^T.
            let vendor = Sgemm {
                trans_a: false,
                trans_b: false,
                m: g.inputs,
                n: g.n,
                k: g.outputs,
                a: wp,
                lda: g.inputs,
                b: dyp,
                ldb: g.outputs,
                c: dxp,
                ldc: g.inputs,
            };
            if len > 0 && self.launcher.vendor_sgemm(&vendor)? {
                return Ok(());
            }
            let tiles = g.inputs.div_ceil(GEMM_BM) * g.n.div_ceil(GEMM_BN);
            let (chunk, splits) = split_k(tiles, g.outputs);
            p.k_chunk = chunk as i32;
            let out = if splits > 1 {
                self.workspace(splits * len)?
            } else {
                dxp
            };
            let cfg = gemm_config(g.n, g.inputs, splits)?;
            self.launch(
                kernel("fc", "fc_backward_data_f32"),
                cfg,
                &[arg(&p), arg(&dyp), arg(&wp), arg(&out)],
            )?;
            if splits > 1 {
                self.reduce_splits(len, splits, out, 0, 1, 1, dxp)?;
            }
            Ok(())
        };
        run().with_context(|| format!("fc_backward_data {g:?}"))
    }

    fn fc_backward_filter(
        &self,
        g: &FcGeom,
        x: &L::Buf,
        dy: &L::Buf,
        dw: &mut L::Buf,
        db: &mut L::Buf,
    ) -> Result<()> {
        let run = || -> Result<()> {
            let mut p = fc_params(g)?;
            check_len("x", self.len(x), g.n * g.inputs)?;
            check_len("dy", self.len(dy), g.n * g.outputs)?;
            check_len("dw", self.len(dw), g.outputs * g.inputs)?;
            check_len("db", self.len(db), g.outputs)?;
            let (xp, dyp, dwp, dbp) = (self.ptr(x), self.ptr(dy), self.ptr(dw), self.ptr(db));
            let len = g.outputs * g.inputs;
            // Column-major, dw^T [inputs, outputs] = x^T · (dy^T)^T.
            let vendor = Sgemm {
                trans_a: false,
                trans_b: true,
                m: g.inputs,
                n: g.outputs,
                k: g.n,
                a: xp,
                lda: g.inputs,
                b: dyp,
                ldb: g.outputs,
                c: dwp,
                ldc: g.inputs,
            };
            if len == 0 || !self.launcher.vendor_sgemm(&vendor)? {
                let tiles = g.outputs.div_ceil(GEMM_BM) * g.inputs.div_ceil(GEMM_BN);
                let (chunk, splits) = split_k(tiles, g.n);
                p.k_chunk = chunk as i32;
                let out = if splits > 1 {
                    self.workspace(splits * len)?
                } else {
                    dwp
                };
                let cfg = gemm_config(g.inputs, g.outputs, splits)?;
                self.launch(
                    kernel("fc", "fc_backward_filter_f32"),
                    cfg,
                    &[arg(&p), arg(&xp), arg(&dyp), arg(&out)],
                )?;
                if splits > 1 {
                    self.reduce_splits(len, splits, out, 0, 1, 1, dwp)?;
                }
            }
            // The bias gradient stays on our kernel: a fixed-order sum, the same on every device.
            self.launch(
                kernel("fc", "fc_backward_bias_f32"),
                elementwise(g.outputs)?,
                &[arg(&p), arg(&dyp), arg(&dbp)],
            )
        };
        run().with_context(|| format!("fc_backward_filter {g:?}"))
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
                elementwise(g.len())?,
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
                elementwise(g.len())?,
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

    fn max_pool_forward(&self, g: &PoolGeom, x: &L::Buf, y: &mut L::Buf) -> Result<()> {
        let run = || -> Result<()> {
            let p = pool_params(g)?;
            check_len("x", self.len(x), g.x_len())?;
            check_len("y", self.len(y), g.y_len())?;
            if g.y_len() == 0 {
                return Ok(());
            }
            let (xp, yp) = (self.ptr(x), self.ptr(y));
            self.launch(
                kernel("pool", "max_pool_forward_f32"),
                elementwise(g.y_len())?,
                &[arg(&p), arg(&xp), arg(&yp)],
            )
        };
        run().with_context(|| format!("max_pool_forward {g:?}"))
    }
    fn max_pool_backward(
        &self,
        g: &PoolGeom,
        x: &L::Buf,
        dy: &L::Buf,
        dx: &mut L::Buf,
    ) -> Result<()> {
        let run = || -> Result<()> {
            let p = pool_params(g)?;
            check_len("x", self.len(x), g.x_len())?;
            check_len("dy", self.len(dy), g.y_len())?;
            check_len("dx", self.len(dx), g.x_len())?;
            if g.x_len() == 0 {
                return Ok(());
            }
            let (xp, dyp, dxp) = (self.ptr(x), self.ptr(dy), self.ptr(dx));
            self.launch(
                kernel("pool", "max_pool_backward_f32"),
                elementwise(g.x_len())?,
                &[arg(&p), arg(&xp), arg(&dyp), arg(&dxp)],
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
                elementwise(g.len())?,
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
                elementwise(g.len())?,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_k_covers_the_reduction_in_whole_steps() {
        for (tiles, k) in [
            (1, 1),
            (3, 3025),
            (3, 387_200),
            (32, 9216),
            (2304, 128),
            (1, 0),
            (5, 257),
        ] {
            let (chunk, splits) = split_k(tiles, k);
            assert_eq!(chunk % GEMM_BK, 0, "chunk {chunk} for {tiles} tiles, k {k}");
            assert!(splits >= 1 && splits <= MAX_SPLITS);
            assert!(
                chunk * splits >= k,
                "splits must cover k: {chunk} x {splits} < {k}"
            );
            assert!(k == 0 || chunk * (splits - 1) < k, "no split may be empty");
        }
        // Small outputs with long reductions split; big outputs do not.
        assert!(split_k(3, 387_200).1 > 1);
        assert_eq!(split_k(2304, 128).1, 1);
    }

    #[test]
    fn param_structs_match_the_sizes_params_cuh_asserts() {
        // cuda/params.cuh static_asserts the same sizes on the C side.
        use std::mem::{align_of, size_of};
        assert_eq!(size_of::<ConvParams>(), 60);
        assert_eq!(size_of::<FcParams>(), 16);
        assert_eq!(size_of::<ReduceParams>(), 16);
        assert_eq!(size_of::<LrnParams>(), 36);
        assert_eq!(size_of::<SpatialNormParams>(), 32);
        assert_eq!(size_of::<PoolParams>(), 28);
        assert_eq!(
            (size_of::<DropoutParams>(), align_of::<DropoutParams>()),
            (40, 8)
        );
        assert_eq!(size_of::<SoftmaxParams>(), 12);
        assert_eq!(size_of::<TopKParams>(), 12);
        assert_eq!(size_of::<SgdParams>(), 16);
    }
}
