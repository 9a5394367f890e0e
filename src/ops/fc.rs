//! Fully connected layer: `y = x · wᵀ + b` with `x: [n, inputs]`, `w: [outputs, inputs]`,
//! `b: [outputs]`, `y: [n, outputs]`.

use super::fc_stream;
use super::simd::{dispatch, vector_f32};
use crate::tensor::{Real, as_f32, as_f32_mut};
use multiversion::multiversion;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FcGeom {
    pub n: usize,
    pub inputs: usize,
    pub outputs: usize,
}

impl FcGeom {
    fn check(&self, x: usize, w: usize, b: usize, y: usize) {
        assert_eq!(x, self.n * self.inputs, "fc: input length for {self:?}");
        assert_eq!(
            w,
            self.outputs * self.inputs,
            "fc: weight length for {self:?}"
        );
        assert_eq!(b, self.outputs, "fc: bias length for {self:?}");
        assert_eq!(y, self.n * self.outputs, "fc: output length for {self:?}");
    }
}

/// Naive reference forward.
pub fn forward_naive<T: Real>(g: &FcGeom, x: &[T], w: &[T], b: &[T], y: &mut [T]) {
    g.check(x.len(), w.len(), b.len(), y.len());
    for n in 0..g.n {
        for o in 0..g.outputs {
            let mut acc = b[o];
            for i in 0..g.inputs {
                acc = acc + x[n * g.inputs + i] * w[o * g.inputs + i];
            }
            y[n * g.outputs + o] = acc;
        }
    }
}

/// Naive reference: `dx = dy · w`.
pub fn backward_data_naive<T: Real>(g: &FcGeom, dy: &[T], w: &[T], dx: &mut [T]) {
    g.check(dx.len(), w.len(), g.outputs, dy.len());
    for n in 0..g.n {
        for i in 0..g.inputs {
            let mut acc = T::zero();
            for o in 0..g.outputs {
                acc = acc + dy[n * g.outputs + o] * w[o * g.inputs + i];
            }
            dx[n * g.inputs + i] = acc;
        }
    }
}

/// Naive reference: `dw = dyᵀ · x`, `db = Σₙ dy`.
pub fn backward_filter_naive<T: Real>(g: &FcGeom, x: &[T], dy: &[T], dw: &mut [T], db: &mut [T]) {
    g.check(x.len(), dw.len(), db.len(), dy.len());
    for o in 0..g.outputs {
        let mut acc_b = T::zero();
        for n in 0..g.n {
            acc_b = acc_b + dy[n * g.outputs + o];
        }
        db[o] = acc_b;
        for i in 0..g.inputs {
            let mut acc = T::zero();
            for n in 0..g.n {
                acc = acc + dy[n * g.outputs + o] * x[n * g.inputs + i];
            }
            dw[o * g.inputs + i] = acc;
        }
    }
}

// Fast CPU paths. At the small batches the CPU trains the paper's net with (8), the weights are
// the traffic: fc6's are 75 MB a tower, read once forward and once backward and the gradient
// written once, while the batch's rows fit in L2. A GEMM would copy the weights into its panels
// first (matrixmultiply spent 12.7 ms of fc6's forward, 6 GB/s, doing that), so batches up to
// `STREAMING_BATCH` stream the weights straight through register-blocked kernels instead, split
// over the pool by output (or input) block; larger batches run one GEMM per block of samples.
// Neither split cuts a summed dimension, so results do not depend on the thread count.

/// Batches up to this size take the streaming kernels.
const STREAMING_BATCH: usize = 16;
/// SIMD lanes of the streaming kernels' accumulators (one AVX-512 register of f32).
const LANES: usize = 16;
/// Samples whose dot products share one pass over a weight row (8 accumulators of `LANES`).
const SAMPLE_BLOCK: usize = 8;
/// Outputs per task of the forward pass, inputs per task of the data gradient.
const OUTPUT_BLOCK: usize = 64;
/// 1024 inputs: each weight row's slice is one 4 KB page read straight through (with 256, rows
/// 36 KB apart were read 1 KB at a time and the loads stalled), and the block's `[n][1024]`
/// partial sums, 32 KB at batch 8, stay in L1.
const INPUT_BLOCK: usize = 1024;
/// Samples per GEMM task for larger batches: each task packs the weights once more.
const GEMM_SAMPLES: usize = 64;

/// `acc[j][l] += Σ w_row[c + l]·x[j][c + l]` over the `LANES`-wide steps `c` of `range` (a
/// multiple of `LANES`), for the `xs.len() / inputs` (at most `SAMPLE_BLOCK`) rows of `xs`: the
/// interleaved partials of each dot product, carried from one range to the next.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma"))]
fn dot_lanes<T: Real>(
    w_row: &[T],
    xs: &[T],
    range: std::ops::Range<usize>,
    acc: &mut [[T; LANES]; SAMPLE_BLOCK],
) {
    let inputs = w_row.len();
    for c in range.step_by(LANES) {
        let wc: &[T; LANES] = w_row[c..c + LANES].try_into().expect("LANES wide");
        for (a, x) in acc.iter_mut().zip(xs.chunks_exact(inputs)) {
            let xc: &[T; LANES] = x[c..c + LANES].try_into().expect("LANES wide");
            for l in 0..LANES {
                a[l] = a[l] + wc[l] * xc[l];
            }
        }
    }
}

/// `out[r][j] = Σ_i w[o0 + r][i]·x[j][i]` for a block of weight rows: each dot product summed in
/// `LANES` interleaved partials reduced in lane order, then the tail past the last whole step.
/// The inputs go `INPUT_BLOCK` at a time over every row of the block, so that block of the
/// samples stays in L1 while the rows stream past it (a whole row at a time re-read all
/// samples' rows from L2 for each output); the partials carry over, so the sums are the same.
fn dot_block<T: Real>(g: &FcGeom, w: &[T], x: &[T], o0: usize, out: &mut [T]) {
    let (rows, blocks) = (out.len() / g.n, g.n.div_ceil(SAMPLE_BLOCK));
    let body = g.inputs / LANES * LANES;
    let mut acc = vec![[[T::zero(); LANES]; SAMPLE_BLOCK]; rows * blocks];
    for i0 in (0..body).step_by(INPUT_BLOCK) {
        let range = i0..(i0 + INPUT_BLOCK).min(body);
        for r in 0..rows {
            let w_row = &w[(o0 + r) * g.inputs..][..g.inputs];
            for (b, xs) in x.chunks(SAMPLE_BLOCK * g.inputs).enumerate() {
                dot_lanes(w_row, xs, range.clone(), &mut acc[r * blocks + b]);
            }
        }
    }
    for (r, dst) in out.chunks_exact_mut(g.n).enumerate() {
        let w_row = &w[(o0 + r) * g.inputs..][..g.inputs];
        for (j, (o, xj)) in dst.iter_mut().zip(x.chunks_exact(g.inputs)).enumerate() {
            let lanes = &acc[r * blocks + j / SAMPLE_BLOCK][j % SAMPLE_BLOCK];
            let mut sum = lanes.iter().fold(T::zero(), |s, &v| s + v);
            for i in body..g.inputs {
                sum = sum + w_row[i] * xj[i];
            }
            *o = sum;
        }
    }
}

/// `acc[j] += Σ_o dy[j][o]·w[o]` over the weight rows `w` (`[outputs, acc[j].len()]`, a column
/// block of the weights, `row_pitch` apart): each weight element is read once, the sum over
/// outputs runs in increasing order, as the reference's does.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma"))]
fn accumulate_rows<T: Real>(g: &FcGeom, dy: &[T], w: &[T], i0: usize, acc: &mut [T]) {
    let width = acc.len() / g.n;
    for o in 0..g.outputs {
        let wr = &w[o * g.inputs + i0..][..width];
        for (j, a) in acc.chunks_exact_mut(width).enumerate() {
            let d = dy[j * g.outputs + o];
            for (a, &w) in a.iter_mut().zip(wr) {
                *a = *a + d * w;
            }
        }
    }
}

/// `dw[r] = Σ_j dy[j][o0 + r]·x[j]` in sample order, as the reference sums it, for the weight rows
/// `dw` (a block from output `o0`), a column block of `INPUT_BLOCK` at a time: that block of the
/// samples (32 KB at batch 8) stays in L1 while every row of the block reads it, where a whole
/// row at a time re-read all samples' 36 KB rows from L2 for each output.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma"))]
fn outer_rows<T: Real>(g: &FcGeom, dy: &[T], x: &[T], o0: usize, dw: &mut [T]) {
    for i0 in (0..g.inputs).step_by(INPUT_BLOCK) {
        let width = INPUT_BLOCK.min(g.inputs - i0);
        for (r, row) in dw.chunks_exact_mut(g.inputs).enumerate() {
            let out = &mut row[i0..i0 + width];
            out.fill(T::zero());
            for (j, xj) in x.chunks_exact(g.inputs).enumerate() {
                let d = dy[j * g.outputs + o0 + r];
                for (w, &x) in out.iter_mut().zip(&xj[i0..i0 + width]) {
                    *w = *w + d * x;
                }
            }
        }
    }
}

/// Columns per task of the vector data gradient (`fc_stream`): its `[n][512]` sums (16 KB at
/// batch 8) stay in L1 while the weight rows stream past, and fc6's 9,216 inputs make 18 tasks,
/// which two threads share evenly (1024 made 9).
const DATA_COLUMNS: usize = 512;

/// Fast forward: `y = x · wᵀ + b`.
pub fn forward<T: Real>(g: &FcGeom, x: &[T], w: &[T], b: &[T], y: &mut [T]) {
    g.check(x.len(), w.len(), b.len(), y.len());
    if g.outputs == 0 || g.n == 0 {
        return;
    }
    if g.n > STREAMING_BATCH {
        // y rows are contiguous per sample: one GEMM per block of samples.
        let (i, o) = (g.inputs as isize, g.outputs as isize);
        y.par_chunks_mut(GEMM_SAMPLES * g.outputs)
            .zip(x.par_chunks(GEMM_SAMPLES * g.inputs))
            .for_each(|(ys, xs)| {
                for row in ys.chunks_mut(g.outputs) {
                    row.copy_from_slice(b);
                }
                let n = ys.len() / g.outputs;
                T::gemm(
                    n,
                    g.inputs,
                    g.outputs,
                    T::one(),
                    xs,
                    (i, 1),
                    w,
                    (1, i),
                    T::one(),
                    ys,
                    (o, 1),
                );
            });
        return;
    }
    // Per block of outputs, every sample's dot product with each weight row: `[outputs][n]`.
    let mut yt = vec![T::zero(); g.outputs * g.n];
    let fast = vector_f32::<T>();
    yt.par_chunks_mut(OUTPUT_BLOCK * g.n)
        .enumerate()
        .for_each(|(blk, out)| {
            let rows = &w[blk * OUTPUT_BLOCK * g.inputs..];
            if let (true, Some(rows), Some(x), Some(out)) =
                (fast, as_f32(rows), as_f32(x), as_f32_mut(out))
            {
                // SAFETY: `dispatch` enters the kernel through the active set's entry point.
                return unsafe { dispatch!(fc_stream::dot_rows::<_>(g.inputs, g.n, rows, x, out)) };
            }
            dot_block(g, w, x, blk * OUTPUT_BLOCK, out)
        });
    for (j, row) in y.chunks_mut(g.outputs).enumerate() {
        for (o, v) in row.iter_mut().enumerate() {
            *v = b[o] + yt[o * g.n + j];
        }
    }
}

/// Fast data gradient: `dx = dy · w`.
pub fn backward_data<T: Real>(g: &FcGeom, dy: &[T], w: &[T], dx: &mut [T]) {
    g.check(dx.len(), w.len(), g.outputs, dy.len());
    if g.inputs == 0 || g.n == 0 {
        return;
    }
    if g.n > STREAMING_BATCH {
        let (i, o) = (g.inputs as isize, g.outputs as isize);
        dx.par_chunks_mut(GEMM_SAMPLES * g.inputs)
            .zip(dy.par_chunks(GEMM_SAMPLES * g.outputs))
            .for_each(|(dxs, dys)| {
                let n = dxs.len() / g.inputs;
                T::gemm(
                    n,
                    g.outputs,
                    g.inputs,
                    T::one(),
                    dys,
                    (o, 1),
                    w,
                    (i, 1),
                    T::zero(),
                    dxs,
                    (i, 1),
                );
            });
        return;
    }
    // Per block of inputs, every sample's slice of dx, `[n][width]`, then copied into place.
    let fast = vector_f32::<T>();
    let block = if fast { DATA_COLUMNS } else { INPUT_BLOCK };
    let blocks: Vec<(usize, Vec<T>)> = (0..g.inputs.div_ceil(block))
        .into_par_iter()
        .map(|blk| {
            let i0 = blk * block;
            let width = block.min(g.inputs - i0);
            let mut acc = vec![T::zero(); g.n * width];
            if let (true, Some(dy), Some(w), Some(a)) =
                (fast, as_f32(dy), as_f32(w), as_f32_mut(&mut acc))
            {
                let (i, o) = (g.inputs, g.outputs);
                // SAFETY: `dispatch` enters the kernel through the active set's entry point.
                unsafe { dispatch!(fc_stream::accumulate_columns::<_>(i, o, dy, w, i0, a)) };
                return (i0, acc);
            }
            accumulate_rows(g, dy, w, i0, &mut acc);
            (i0, acc)
        })
        .collect();
    for (i0, acc) in blocks {
        let width = acc.len() / g.n;
        for (row, a) in dx.chunks_mut(g.inputs).zip(acc.chunks(width)) {
            row[i0..i0 + width].copy_from_slice(a);
        }
    }
}

/// Whether `backward_filter_sgd` takes `g` in `T` on this CPU: f32 with vectors (AVX2 or
/// AVX-512), a batch of at most 8 (one register block of samples).
pub fn sgd_fuses<T: Real>(g: &FcGeom) -> bool {
    vector_f32::<T>() && (1..=fc_stream::SAMPLES).contains(&g.n) && g.inputs > 0 && g.outputs > 0
}

/// The filter gradient and the weights' SGD step in one pass over the weights, where
/// [`sgd_fuses`], and with them the data gradient where `dx` is given: `w`, `v` end as
/// `backward_filter` then `sgd::update` leave them, bit for bit, `db` as `backward_filter` and
/// `dx` as `backward_data` (from the weights before their step) leave them; the weights'
/// gradient itself is not kept. At the paper's batch 8 the step is bound by the weights'
/// traffic, and this takes fc6's 75 MB a tower in four passes (a read and a write of `w` and
/// `v`) where the three apart take seven.
#[allow(clippy::too_many_arguments)]
pub fn backward_filter_sgd<T: Real>(
    g: &FcGeom,
    x: &[T],
    dy: &[T],
    step: &super::sgd::SgdStep,
    w: &mut [T],
    v: &mut [T],
    db: &mut [T],
    dx: Option<&mut [T]>,
) {
    g.check(x.len(), w.len(), db.len(), dy.len());
    assert!(
        sgd_fuses::<T>(g) && v.len() == w.len() && dx.as_ref().is_none_or(|d| d.len() == x.len()),
        "fc: {g:?} does not fuse its update"
    );
    bias_gradient(g, dy, db);
    if let (Some(x), Some(dy), Some(w), Some(v)) =
        (as_f32(x), as_f32(dy), as_f32_mut(w), as_f32_mut(v))
    {
        let dx = dx.map(|d| as_f32_mut(d).expect("dx is f32 as x is"));
        // Tasks of whole columns, each over every row, so that each input gradient sums its
        // outputs in order (as `backward_data` does) from weights no other task steps.
        let columns = SharedColumns {
            w: w.as_mut_ptr(),
            v: v.as_mut_ptr(),
            dx: dx.map_or(std::ptr::null_mut(), |d| d.as_mut_ptr()),
        };
        (0..g.inputs.div_ceil(DATA_COLUMNS))
            .into_par_iter()
            .for_each(|blk| {
                let cols = blk * DATA_COLUMNS..(blk * DATA_COLUMNS + DATA_COLUMNS).min(g.inputs);
                let width = cols.len();
                let (w, v, dx) = columns.pointers();
                let mut acc = (!dx.is_null()).then(|| vec![0.0; g.n * width]);
                // SAFETY: `dispatch` enters the kernel through the active set's entry point;
                // `w`, `v` are `outputs × inputs` and `dx` `n × inputs` (checked above), and the
                // tasks' columns are disjoint.
                unsafe {
                    let a = acc.as_deref_mut();
                    dispatch!(fc_stream::columns_sgd::<_>(
                        g.inputs,
                        g.outputs,
                        dy,
                        x,
                        step,
                        cols.clone(),
                        (w, v),
                        a,
                    ));
                    if let Some(acc) = acc {
                        for (j, a) in acc.chunks_exact(width).enumerate() {
                            let to = dx.add(j * g.inputs + cols.start);
                            std::ptr::copy_nonoverlapping(a.as_ptr(), to, width);
                        }
                    }
                }
            });
        return;
    }
    let _ = (x, dy, step, w, v, dx);
    unreachable!("sgd_fuses holds only for f32")
}

/// The weights, velocities and input gradient (null where not wanted) that the tasks of
/// `backward_filter_sgd` write, each its own columns of them.
struct SharedColumns {
    w: *mut f32,
    v: *mut f32,
    dx: *mut f32,
}

// SAFETY: the tasks that share it write disjoint columns, and the slices it points into outlive
// them (borrowed mutably for the whole parallel loop).
unsafe impl Sync for SharedColumns {}

impl SharedColumns {
    /// `(w, v, dx)`; a task takes them through this, so that it shares the whole (`Sync`)
    /// struct rather than its pointer fields one by one.
    fn pointers(&self) -> (*mut f32, *mut f32, *mut f32) {
        (self.w, self.v, self.dx)
    }
}

/// `db = Σₙ dy`, summed in sample order.
fn bias_gradient<T: Real>(g: &FcGeom, dy: &[T], db: &mut [T]) {
    db.fill(T::zero());
    for row in dy.chunks(g.outputs) {
        db.iter_mut().zip(row).for_each(|(b, &d)| *b = *b + d);
    }
}

/// Fast filter gradient: `dw = dyᵀ · x` (one weight row per output, in parallel), `db = Σ dy`.
pub fn backward_filter<T: Real>(g: &FcGeom, x: &[T], dy: &[T], dw: &mut [T], db: &mut [T]) {
    g.check(x.len(), dw.len(), db.len(), dy.len());
    if g.outputs == 0 || g.inputs == 0 {
        return db.fill(T::zero());
    }
    if g.n > STREAMING_BATCH {
        // Split by output rows, the GEMM's m: the sum over samples stays whole in each task.
        let (i, o) = (g.inputs as isize, g.outputs as isize);
        let rows = OUTPUT_BLOCK;
        dw.par_chunks_mut(rows * g.inputs)
            .enumerate()
            .for_each(|(blk, dws)| {
                let m = dws.len() / g.inputs;
                T::gemm(
                    m,
                    g.n,
                    g.inputs,
                    T::one(),
                    &dy[blk * rows..],
                    (1, o),
                    x,
                    (i, 1),
                    T::zero(),
                    dws,
                    (i, 1),
                );
            });
    } else {
        let fast = vector_f32::<T>();
        dw.par_chunks_mut(OUTPUT_BLOCK * g.inputs)
            .enumerate()
            .for_each(|(blk, rows)| {
                if let (true, Some(dy), Some(x), Some(rows)) =
                    (fast, as_f32(dy), as_f32(x), as_f32_mut(rows))
                {
                    let (i, o, o0) = (g.inputs, g.outputs, blk * OUTPUT_BLOCK);
                    // SAFETY: `dispatch` enters the kernel through the active set's entry point.
                    return unsafe { dispatch!(fc_stream::outer_rows::<_>(i, o, dy, x, o0, rows)) };
                }
                outer_rows(g, dy, x, blk * OUTPUT_BLOCK, rows)
            });
    }
    bias_gradient(g, dy, db);
}
