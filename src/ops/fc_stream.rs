//! The fully connected layers' streaming kernels, for f32 at the batches up to 16 that the CPU
//! trains the paper's net with, written once over `simd::Simd` (`fc` dispatches here on AVX-512
//! and AVX2; the portable kernels beside it serve other CPUs and f64).
//!
//! At those batches the weights are the traffic (fc6's are 75 MB a tower) and each weight meets
//! only `n` samples, so a kernel keeps up only if its sums stay in registers: the portable loops,
//! whose sample count is known only at run time, kept their partial sums in memory (a load and a
//! store around every multiply-add) and reached a quarter of the memory's rate. Here the sample
//! count is a compile-time `S` (a block of up to 8 samples where there are 32 registers, 6 where
//! there are 16) and two weight rows share each load of a sample's inputs: per two vectors of
//! weights, `2·S` fused multiply-adds and `S + 2` loads.
//!
//! Every sum runs in a fixed order (the same bits on every run and every thread count): dot
//! products in interleaved lane partials (one per lane of the vector) added in lane order, then
//! the tail past the last whole vector; the gradients' sums over outputs or samples in
//! increasing order. The dot products' partials follow the vector's width, so AVX2's bits differ
//! from AVX-512's there (each set's are the same on every run).

use super::simd::Simd;

/// Samples a register block holds at most (the fused SGD step takes a whole batch up to this).
pub(super) const SAMPLES: usize = 8;

/// Samples a register block of `I` holds: with 16 registers, two rows' sums of 8 samples and
/// the operands would not fit.
fn block_samples<I: Simd>() -> usize {
    if I::REGISTERS >= 32 { SAMPLES } else { 6 }
}

/// Calls `$f::<I, S>($args)` for the run-time sample count `$s` in `1..=SAMPLES`.
macro_rules! by_samples {
    ($i:ty, $s:expr, $f:ident($($arg:expr),*)) => {
        match $s {
            1 => $f::<$i, 1>($($arg),*),
            2 => $f::<$i, 2>($($arg),*),
            3 => $f::<$i, 3>($($arg),*),
            4 => $f::<$i, 4>($($arg),*),
            5 => $f::<$i, 5>($($arg),*),
            6 => $f::<$i, 6>($($arg),*),
            7 => $f::<$i, 7>($($arg),*),
            8 => $f::<$i, 8>($($arg),*),
            s => unreachable!("{s} samples in a block of at most {SAMPLES}"),
        }
    };
}

/// Asks for the cache line at `c` of the next pair of weight rows (two rows on from `r0`, `r1`;
/// rows `pitch` apart). Each kernel reads or writes a row pair in 2-4 KB pieces and then jumps a
/// whole row (36 KB in fc6): the hardware prefetcher, which follows a stream within a 4 KB page,
/// starts over at every piece, and without this the kernels ran at 10-17 GB/s where the memory
/// gives 40. The address may lie past the weights' end (the last pair), so it is formed
/// without `add` and never read: a prefetch does not fault.
#[inline(always)]
fn prefetch_next_pair<I: Simd>(r0: *const f32, r1: *const f32, pitch: usize, c: usize) {
    // SAFETY: a prefetch is a hint; it reads nothing and cannot fault (the set's instructions:
    // the callers' contract).
    unsafe {
        I::prefetch(r0.wrapping_add(2 * pitch + c));
        I::prefetch(r1.wrapping_add(2 * pitch + c));
    }
}

/// Inputs per pass of the forward kernel over its rows: a block of 8 samples' inputs (32 KB)
/// stays in L1 while the rows stream past it.
const FORWARD_INPUTS: usize = 1024;

/// `out[r·n + j] = Σ_i w[r][i]·x[j][i]` for the `out.len() / n` weight rows `w` (`inputs` long)
/// and the `n` samples `x`.
///
/// # Safety
/// The set's instructions are available (the caller's entry point).
#[inline(always)]
pub(super) unsafe fn dot_rows<I: Simd>(
    inputs: usize,
    n: usize,
    w: &[f32],
    x: &[f32],
    out: &mut [f32],
) {
    let rows = out.len() / n;
    assert!(w.len() >= rows * inputs && x.len() >= n * inputs && out.len() == rows * n);
    let body = inputs / I::LANES * I::LANES;
    // Each (row, sample)'s lane partials, carried from one input block to the next.
    // SAFETY: the set's instructions (the caller's contract).
    let mut part = vec![unsafe { I::zero() }; rows * n];
    for i0 in (0..body).step_by(FORWARD_INPUTS) {
        let i1 = (i0 + FORWARD_INPUTS).min(body);
        for j0 in (0..n).step_by(block_samples::<I>()) {
            let s = block_samples::<I>().min(n - j0);
            let xs = &x[j0 * inputs..];
            let mut r = 0;
            while r < rows {
                let pair = rows - r >= 2;
                let at = |row: usize| row * n + j0;
                // SAFETY: the set's instructions (the caller's contract); rows r, r + 1 and samples
                // j0..j0 + s are inside the slices asserted above.
                unsafe {
                    let (w0, w1) = (
                        w.as_ptr().add(r * inputs),
                        w.as_ptr().add((r + pair as usize) * inputs),
                    );
                    // An odd last row runs as a pair with itself, its twin's sums dropped.
                    let mut spare = [I::zero(); SAMPLES];
                    let (p0, p1) = if pair {
                        let (p0, p1) = part[at(r)..].split_at_mut(n);
                        (&mut p0[..s], &mut p1[..s])
                    } else {
                        (&mut part[at(r)..][..s], &mut spare[..s])
                    };
                    by_samples!(I, s, dot_pair(w0, w1, xs.as_ptr(), inputs, i0..i1, p0, p1));
                }
                r += 1 + pair as usize;
            }
        }
    }
    for r in 0..rows {
        let wr = &w[r * inputs..][..inputs];
        for j in 0..n {
            let mut lanes = [0f32; 16];
            // SAFETY: `lanes` holds 16 f32s, at least a vector's; the set's instructions.
            unsafe { I::store(lanes.as_mut_ptr(), part[r * n + j]) };
            let mut sum = lanes[..I::LANES].iter().fold(0.0, |s, &v| s + v);
            for (i, &wv) in wr.iter().enumerate().skip(body) {
                sum += wv * x[j * inputs + i];
            }
            out[r * n + j] = sum;
        }
    }
}

/// `p0[j] += w0[c..] · x_j[c..]`, `p1[j] += w1[c..] · x_j[c..]` lane-wise over the vectors `c`
/// of `range`, for the `S` samples `x_j = x + j·inputs`.
///
/// # Safety
/// The set's instructions; `range` within the rows `w0`, `w1` and each sample's `inputs`.
#[inline(always)]
unsafe fn dot_pair<I: Simd, const S: usize>(
    w0: *const f32,
    w1: *const f32,
    x: *const f32,
    inputs: usize,
    range: std::ops::Range<usize>,
    p0: &mut [I::V],
    p1: &mut [I::V],
) {
    // SAFETY (every block here): the caller's contract.
    let (mut a0, mut a1) = unsafe { ([I::zero(); S], [I::zero(); S]) };
    a0.copy_from_slice(&p0[..S]);
    a1.copy_from_slice(&p1[..S]);
    for c in range.step_by(I::LANES) {
        // SAFETY: the caller's contract.
        unsafe {
            let (v0, v1) = (I::load(w0.add(c)), I::load(w1.add(c)));
            prefetch_next_pair::<I>(w0, w1, inputs, c);
            for j in 0..S {
                let xv = I::load(x.add(j * inputs + c));
                a0[j] = I::fmadd(v0, xv, a0[j]);
                a1[j] = I::fmadd(v1, xv, a1[j]);
            }
        }
    }
    p0.copy_from_slice(&a0);
    p1.copy_from_slice(&a1);
}

/// `acc[j][c] = Σ_o dy[j][o]·w[o][i0 + c]` for the `n` samples and the `acc[j].len() = width`
/// columns from `i0`, summed over the outputs in increasing order.
///
/// # Safety
/// The set's instructions are available (the caller's entry point).
#[inline(always)]
pub(super) unsafe fn accumulate_columns<I: Simd>(
    inputs: usize,
    outputs: usize,
    dy: &[f32],
    w: &[f32],
    i0: usize,
    acc: &mut [f32],
) {
    let n = dy.len() / outputs;
    let width = acc.len() / n;
    assert!(w.len() >= outputs * inputs && i0 + width <= inputs && acc.len() == n * width);
    acc.fill(0.0);
    let body = width / I::LANES * I::LANES;
    for j0 in (0..n).step_by(block_samples::<I>()) {
        let s = block_samples::<I>().min(n - j0);
        let mut o = 0;
        while o < outputs {
            let pair = outputs - o >= 2;
            // SAFETY: the set's instructions; rows o, o + 1 and columns i0..i0 + width are inside
            // `w`, samples j0..j0 + s inside `dy` and `acc`.
            unsafe {
                let w0 = w.as_ptr().add(o * inputs + i0);
                let w1 = if pair { w0.add(inputs) } else { w0 };
                let d0: [f32; SAMPLES] = std::array::from_fn(|j| {
                    if j < s {
                        dy[(j0 + j) * outputs + o]
                    } else {
                        0.0
                    }
                });
                let d1: [f32; SAMPLES] = std::array::from_fn(|j| {
                    if j < s && pair {
                        dy[(j0 + j) * outputs + o + 1]
                    } else {
                        0.0
                    }
                });
                let a = acc.as_mut_ptr().add(j0 * width);
                by_samples!(
                    I,
                    s,
                    add_pair(w0, w1, inputs, pair, &d0, &d1, a, width, body)
                );
            }
            o += 1 + pair as usize;
        }
    }
}

/// `a_j[c] += d0[j]·w0[c]` then, where `pair`, `+= d1[j]·w1[c]`, for the `S` rows `a_j = a +
/// j·width`: the whole vectors `c < body` in registers, the tail one element at a time.
///
/// # Safety
/// The set's instructions; `width` elements readable at `w0`, `w1` and writable at each `a_j`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn add_pair<I: Simd, const S: usize>(
    w0: *const f32,
    w1: *const f32,
    inputs: usize,
    pair: bool,
    d0: &[f32; SAMPLES],
    d1: &[f32; SAMPLES],
    a: *mut f32,
    width: usize,
    body: usize,
) {
    // SAFETY: the set's instructions (the caller's contract).
    let (b0, b1) = unsafe { (broadcasts::<I, S>(d0), broadcasts::<I, S>(d1)) };
    // SAFETY: the caller's contract.
    unsafe {
        for c in (0..body).step_by(I::LANES) {
            let (v0, v1) = (I::load(w0.add(c)), I::load(w1.add(c)));
            prefetch_next_pair::<I>(w0, w1, inputs, c);
            for j in 0..S {
                let p = a.add(j * width + c);
                let mut v = I::fmadd(b0[j], v0, I::load(p));
                if pair {
                    v = I::fmadd(b1[j], v1, v);
                }
                I::store(p, v);
            }
        }
        for c in body..width {
            for j in 0..S {
                let p = a.add(j * width + c);
                *p = d0[j].mul_add(*w0.add(c), *p);
                if pair {
                    *p = d1[j].mul_add(*w1.add(c), *p);
                }
            }
        }
    }
}

/// Inputs per pass of the filter gradient over its rows, as `FORWARD_INPUTS`.
const FILTER_INPUTS: usize = 1024;

/// `dw[r][i] = Σ_j dy[j][o0 + r]·x[j][i]` in sample order for the weight rows `dw` (a block of
/// rows from output `o0`, `inputs` long).
///
/// # Safety
/// The set's instructions are available (the caller's entry point).
#[inline(always)]
pub(super) unsafe fn outer_rows<I: Simd>(
    inputs: usize,
    outputs: usize,
    dy: &[f32],
    x: &[f32],
    o0: usize,
    dw: &mut [f32],
) {
    let n = dy.len() / outputs;
    let rows = dw.len() / inputs;
    assert!(x.len() >= n * inputs && o0 + rows <= outputs && n > 0);
    let body = inputs / I::LANES * I::LANES;
    let grad = |row: usize, j: usize| dy[j * outputs + o0 + row];
    for i0 in (0..body).step_by(FILTER_INPUTS) {
        let cols = i0..(i0 + FILTER_INPUTS).min(body);
        let mut r = 0;
        while r < rows {
            let pair = rows - r >= 2;
            let r1 = r + pair as usize;
            for j0 in (0..n).step_by(block_samples::<I>()) {
                let s = block_samples::<I>().min(n - j0);
                let d = |row: usize| -> [f32; SAMPLES] {
                    std::array::from_fn(|j| if j < s { grad(row, j0 + j) } else { 0.0 })
                };
                // SAFETY: the set's instructions; rows r, r1 of `dw`, the columns `cols` and
                // samples j0..j0 + s are inside the slices asserted above.
                unsafe {
                    let out0 = dw.as_mut_ptr().add(r * inputs);
                    let out1 = dw.as_mut_ptr().add(r1 * inputs);
                    let xs = x.as_ptr().add(j0 * inputs);
                    let first = j0 == 0;
                    by_samples!(
                        I,
                        s,
                        outer_pair(xs, inputs, cols.clone(), &d(r), &d(r1), first, out0, out1)
                    );
                }
            }
            r = r1 + 1;
        }
    }
    // The tail past the last whole vector, in the same order.
    for (r, row) in dw.chunks_exact_mut(inputs).enumerate() {
        for (i, out) in row.iter_mut().enumerate().skip(body) {
            *out = tail_gradient(x, inputs, n, i, |j| grad(r, j));
        }
    }
}

/// The data gradient, the filter gradient and the weights' SGD step of the weight columns `cols`
/// (of every output row), for a batch of at most `SAMPLES`, in one pass over the weights:
/// - where `acc` is given (`[n][cols.len()]`), the columns' input gradient `acc[j][c] = Σ_o
///   dy[j][o]·w[o][c]` from the weights as they were, summed over the outputs as
///   `accumulate_columns` sums it, so the same bits;
/// - each weight's gradient `Σ_j dy[j][o]·x[j][c]` (as `outer_rows` sums it) taken straight into
///   its step `v ← μ·v − λ·ε·w − ε·dw;  w ← w + v`, as `sgd::update_naive` computes it.
///
/// The weights' gradient is never written nor read back: per weight, one read and one write of
/// `w` and `v`, where the three apart took seven passes (the data gradient's read, the
/// gradient's write, the update's three reads and two writes) over fc6's 75 MB a tower.
///
/// # Safety
/// The set's instructions are available; `w` and `v` point at `outputs × inputs` floats each,
/// whose columns `cols` no other thread reads or writes meanwhile.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn columns_sgd<I: Simd>(
    inputs: usize,
    outputs: usize,
    dy: &[f32],
    x: &[f32],
    step: &crate::ops::sgd::SgdStep,
    cols: std::ops::Range<usize>,
    (w, v): (*mut f32, *mut f32),
    mut acc: Option<&mut [f32]>,
) {
    let n = dy.len() / outputs;
    let width = cols.len();
    assert!(x.len() >= n * inputs && (1..=SAMPLES).contains(&n) && cols.end <= inputs);
    assert!(acc.as_ref().is_none_or(|a| a.len() == n * width));
    if let Some(a) = acc.as_deref_mut() {
        a.fill(0.0);
    }
    let body = cols.start + width / I::LANES * I::LANES;
    let coefficients = step.coefficients::<f32>();
    let grads = |o: usize| -> [f32; SAMPLES] {
        std::array::from_fn(|j| if j < n { dy[j * outputs + o] } else { 0.0 })
    };
    let mut o = 0;
    while o < outputs {
        let pair = outputs - o >= 2;
        let o1 = o + pair as usize;
        let (d0, d1) = (grads(o), grads(o1));
        // SAFETY: the set's instructions; rows o, o1 of `w` and `v` and the columns `cols` are
        // inside what the caller gave, and no one else touches those columns.
        unsafe {
            let rows = SgdRows {
                w0: w.add(o * inputs),
                w1: w.add(o1 * inputs),
                v0: v.add(o * inputs),
                v1: v.add(o1 * inputs),
                pair,
                coefficients,
            };
            // The input gradient first, from the weights as they were: `accumulate_columns`'
            // own sums over this block of columns. Its loop brings the rows' pieces (2 KB each)
            // into L1, where the step's loop finds them; apart, the two loops measured faster
            // than one (fc6 at batch 8: 8.4-8.7 against 9.3-9.7 ms).
            if let Some(a) = acc.as_deref_mut() {
                let (w0, w1) = (rows.w0.add(cols.start), rows.w1.add(cols.start));
                let a = a.as_mut_ptr();
                let whole = body - cols.start;
                by_samples!(
                    I,
                    n,
                    add_pair(w0, w1, inputs, pair, &d0, &d1, a, width, whole)
                );
            }
            by_samples!(
                I,
                n,
                outer_pair_sgd(x.as_ptr(), inputs, cols.start..body, &d0, &d1, &rows)
            );
            // The columns past the last whole vector: `outer_rows`' sums, then the update.
            for c in body..cols.end {
                for (row, d) in [(o, &d0), (o1, &d1)].into_iter().take(1 + pair as usize) {
                    let g = tail_gradient(x, inputs, n, c, |j| d[j]);
                    let at = row * inputs + c;
                    crate::ops::sgd::update_naive(
                        step,
                        std::slice::from_raw_parts_mut(w.add(at), 1),
                        std::slice::from_raw_parts_mut(v.add(at), 1),
                        &[g],
                    );
                }
            }
        }
        o = o1 + 1;
    }
}

/// The weight and velocity rows of one pair (`pair` false: one row, whose twin pointers are
/// itself and are not written twice) and the update's `(μ, λ·ε, ε)`.
struct SgdRows {
    w0: *mut f32,
    w1: *mut f32,
    v0: *mut f32,
    v1: *mut f32,
    pair: bool,
    coefficients: (f32, f32, f32),
}

/// `outer_pair`'s sums over the `S` samples (from the first product), each vector then stepped
/// into its row of `rows` at once.
///
/// # Safety
/// The set's instructions; `range` within each sample's `inputs` and the rows of `rows`.
#[inline(always)]
unsafe fn outer_pair_sgd<I: Simd, const S: usize>(
    x: *const f32,
    inputs: usize,
    range: std::ops::Range<usize>,
    d0: &[f32; SAMPLES],
    d1: &[f32; SAMPLES],
    rows: &SgdRows,
) {
    // SAFETY: the set's instructions (the caller's contract).
    let (b0, b1) = unsafe { (broadcasts::<I, S>(d0), broadcasts::<I, S>(d1)) };
    let (mu, decay, lr) = rows.coefficients;
    // SAFETY: the set's instructions (the caller's contract).
    let (mu, decay, lr) = unsafe { (I::splat(mu), I::splat(decay), I::splat(lr)) };
    // SAFETY: the caller's contract.
    unsafe {
        for c in range.step_by(I::LANES) {
            prefetch_next_pair::<I>(rows.w0.cast_const(), rows.w1.cast_const(), inputs, c);
            prefetch_next_pair::<I>(rows.v0.cast_const(), rows.v1.cast_const(), inputs, c);
            let (a0, a1) = pair_sums::<I, S>(x, inputs, c, &b0, &b1, None);
            sgd_step::<I>(rows.w0.add(c), rows.v0.add(c), a0, (mu, decay, lr));
            if rows.pair {
                sgd_step::<I>(rows.w1.add(c), rows.v1.add(c), a1, (mu, decay, lr));
            }
        }
    }
}

/// `[splat(d[0]), .., splat(d[S - 1])]`. (A loop, not `array::from_fn`: a closure is compiled
/// as a function of its own, without the set's features, and the vector operations in it would
/// stay calls.)
///
/// # Safety
/// The set's instructions.
#[inline(always)]
unsafe fn broadcasts<I: Simd, const S: usize>(d: &[f32; SAMPLES]) -> [I::V; S] {
    // SAFETY: the caller's contract.
    unsafe {
        let mut b = [I::zero(); S];
        for (b, &d) in b.iter_mut().zip(d) {
            *b = I::splat(d);
        }
        b
    }
}

/// `v ← μ·v − λ·ε·w − ε·g;  w ← w + v` on one vector of a row, rounded step by step as
/// `sgd::update_naive`; `(mu, decay, lr)` are `(μ, λ·ε, ε)` broadcast.
///
/// # Safety
/// The set's instructions; `w`, `v` point at a vector's floats of the rows.
#[inline(always)]
unsafe fn sgd_step<I: Simd>(
    w: *mut f32,
    v: *mut f32,
    g: I::V,
    (mu, decay, lr): (I::V, I::V, I::V),
) {
    // SAFETY: the caller's contract.
    unsafe {
        let (wv, vv) = (I::load(w), I::load(v));
        let m = I::sub(I::mul(mu, vv), I::mul(decay, wv));
        let nv = I::sub(m, I::mul(lr, g));
        I::store(v, nv);
        I::store(w, I::add(wv, nv));
    }
}

/// `out0[c] (+)= Σ_j d0[j]·x_j[c]`, `out1[c] (+)= Σ_j d1[j]·x_j[c]` over the vectors `c` of
/// `range` for the `S` samples `x_j = x + j·inputs`: from the first product where `first`, else
/// on from what the rows hold (the sum over an earlier block of samples), by fused
/// multiply-adds.
///
/// # Safety
/// The set's instructions; `range` within each sample's `inputs` and the rows `out0`, `out1`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn outer_pair<I: Simd, const S: usize>(
    x: *const f32,
    inputs: usize,
    range: std::ops::Range<usize>,
    d0: &[f32; SAMPLES],
    d1: &[f32; SAMPLES],
    first: bool,
    out0: *mut f32,
    out1: *mut f32,
) {
    // SAFETY: the set's instructions (the caller's contract).
    let (b0, b1) = unsafe { (broadcasts::<I, S>(d0), broadcasts::<I, S>(d1)) };
    // SAFETY: the caller's contract.
    unsafe {
        for c in range.step_by(I::LANES) {
            prefetch_next_pair::<I>(out0.cast_const(), out1.cast_const(), inputs, c);
            let so_far = (!first).then(|| (I::load(out0.add(c)), I::load(out1.add(c))));
            let (a0, a1) = pair_sums::<I, S>(x, inputs, c, &b0, &b1, so_far);
            // Where the rows are one (an odd last row), both stores write the same value.
            I::store(out1.add(c), a1);
            I::store(out0.add(c), a0);
        }
    }
}

/// `(Σ_j b0[j]·x_j[c..c + 16], Σ_j b1[j]·x_j[c..c + 16])` over the `S` samples `x_j = x +
/// j·inputs`, in sample order by fused multiply-adds: on from `so_far` (the sums over an earlier
/// block of samples), or else from the first sample's product.
///
/// # Safety
/// The set's instructions; a vector's floats readable at `x_j + c` for each `j < S`.
#[inline(always)]
unsafe fn pair_sums<I: Simd, const S: usize>(
    x: *const f32,
    inputs: usize,
    c: usize,
    b0: &[I::V; S],
    b1: &[I::V; S],
    so_far: Option<(I::V, I::V)>,
) -> (I::V, I::V) {
    // SAFETY: the caller's contract.
    unsafe {
        let (mut a0, mut a1, from) = match so_far {
            Some((a0, a1)) => (a0, a1, 0),
            None => {
                let xv = I::load(x.add(c));
                (I::mul(b0[0], xv), I::mul(b1[0], xv), 1)
            }
        };
        for j in from..S {
            let xv = I::load(x.add(j * inputs + c));
            a0 = I::fmadd(b0[j], xv, a0);
            a1 = I::fmadd(b1[j], xv, a1);
        }
        (a0, a1)
    }
}

/// The gradient of weight `i` of a row past its last whole vector, `Σ_j d(j)·x[j][i]` over the
/// `n` samples, summed as the vectors sum it (the first product, then fused multiply-adds).
fn tail_gradient(x: &[f32], inputs: usize, n: usize, i: usize, d: impl Fn(usize) -> f32) -> f32 {
    (1..n).fold(d(0) * x[i], |sum, j| d(j).mul_add(x[j * inputs + i], sum))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv_direct::tests::values;
    use crate::ops::simd::{Isa, dispatch};

    fn sets() -> Vec<Isa> {
        [Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|&i| i <= Isa::best())
            .collect()
    }

    #[test]
    fn every_instruction_set_streams_the_same_sums() {
        // 7 samples (a block and a remainder under AVX2's 6), 5 rows (pairs and an odd one),
        // 83 inputs (whole vectors and a tail).
        let (n, rows, inputs) = (7, 5, 83);
        let (w, x) = (values(rows * inputs, 7), values(n * inputs, 8));
        let dy = values(n * rows, 9);
        for isa in sets() {
            // Dot products: each set's lane partials, so within f32 rounding of the f64 sums.
            let mut out = vec![0f32; rows * n];
            unsafe { dispatch!(@isa isa, dot_rows::<_>(inputs, n, &w, &x, &mut out)) };
            for r in 0..rows {
                for j in 0..n {
                    let exact: f64 = (0..inputs)
                        .map(|i| w[r * inputs + i] as f64 * x[j * inputs + i] as f64)
                        .sum();
                    let got = out[r * n + j] as f64;
                    assert!(
                        (got - exact).abs() < 1e-5 * inputs as f64,
                        "{isa} ({r}, {j})"
                    );
                }
            }
            // Sums over outputs and over samples: one chain in order, the same bits everywhere.
            let mut acc = vec![0f32; n * inputs];
            unsafe {
                dispatch!(@isa isa, accumulate_columns::<_>(inputs, rows, &dy, &w, 0, &mut acc))
            };
            for j in 0..n {
                for c in 0..inputs {
                    let want =
                        (0..rows).fold(0f32, |s, o| dy[j * rows + o].mul_add(w[o * inputs + c], s));
                    assert_eq!(acc[j * inputs + c].to_bits(), want.to_bits(), "{isa}");
                }
            }
            let mut dw = vec![0f32; rows * inputs];
            unsafe { dispatch!(@isa isa, outer_rows::<_>(inputs, rows, &dy, &x, 0, &mut dw)) };
            for r in 0..rows {
                for i in 0..inputs {
                    let want = tail_gradient(&x, inputs, n, i, |j| dy[j * rows + r]);
                    assert_eq!(dw[r * inputs + i].to_bits(), want.to_bits(), "{isa}");
                }
            }
        }
    }
}
