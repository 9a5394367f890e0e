//! The filter gradient at stride 1 on the CPU, direct: no column matrix, no GEMM packing.
//!
//! `dw[co][ci][ky][kx] = Σ_n Σ_{oy,ox} dy[n][co][oy][ox] · xp[n][ci][oy + ky][ox + kx]`, with `xp`
//! the zero-padded input. A sample's output gradient is first laid out filter-fastest
//! (`dyt[oy·ow + ox][co]`), so one 16-wide load holds 16 filters' gradients at one position. A
//! register block then holds the partial sums of `V·16` filters × `R` rows of `K` taps (a row is
//! one input channel and filter row `(ci, ky)`, its `K` taps the filter columns `kx`), and per
//! output position costs `V` loads, `R·K` input values broadcast from memory and `V·R·K` fused
//! multiply-adds. The im2col path this replaces wrote every input value `K²` times into a
//! column matrix that the GEMM then copied again into its panels: at the cifar net's 16 filters
//! a tower each copy fed 16 multiply-adds, and the copies cost more than the arithmetic.
//!
//! Each weight's gradient is one chain of fused multiply-adds over the positions of a slice's
//! samples in order, and the slices' partials are added in slice order: the same bits on every
//! run and every thread count. AVX-512 and f32 only; elsewhere `conv::backward_filter` keeps
//! im2col and GEMM.

#[cfg(target_arch = "x86_64")]
use super::conv_direct::{Plane, pad_into};
use super::conv_geom::ConvGeom;
use crate::tensor::{Real, avx512_f32};
#[cfg(target_arch = "x86_64")]
use crate::tensor::{as_f32, as_f32_mut};
#[cfg(target_arch = "x86_64")]
use rayon::prelude::*;

/// Filters per vector: one AVX-512 register of f32.
const LANES: usize = 16;

/// Whether the direct filter gradient takes `g` in `T` on this CPU: stride 1 with the padding
/// the direct forward takes, a kernel size the register blocks are built for (3 and 5, every
/// stride-1 layer of the presets), f32, AVX-512.
pub fn applies<T: Real>(g: &ConvGeom) -> bool {
    super::conv_direct::applies(g) && matches!(g.k, 3 | 5) && avx512_f32::<T>()
}

/// `dw = ∂L/∂w`, `db = ∂L/∂b` as `conv::backward_filter_naive` defines them, the batch cut into
/// contiguous runs of `per_slice` samples whose partials are added in order. Only where
/// [`applies`] holds.
pub fn backward_filter<T: Real>(
    g: &ConvGeom,
    x: &[T],
    dy: &[T],
    dw: &mut [T],
    db: &mut [T],
    per_slice: usize,
) {
    assert!(
        applies::<T>(g),
        "conv_filter: {g:?} is not for the direct filter gradient"
    );
    #[cfg(target_arch = "x86_64")]
    if let (Some(x), Some(dy), Some(dw), Some(db)) =
        (as_f32(x), as_f32(dy), as_f32_mut(dw), as_f32_mut(db))
    {
        return backward_filter_f32(g, x, dy, dw, db, per_slice);
    }
    let _ = (x, dy, dw, db, per_slice);
    unreachable!("applies() holds only for f32 on x86-64")
}

#[cfg(target_arch = "x86_64")]
fn backward_filter_f32(
    g: &ConvGeom,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    db: &mut [f32],
    per_slice: usize,
) {
    let (cig, cog, k) = (g.cin_per_group(), g.cout_per_group(), g.k);
    let ct = cog.div_ceil(LANES) * LANES;
    let p = Plane {
        cin: cig,
        cout_tiles: ct,
        k,
        ih: g.h,
        iw: g.w,
        pad: g.pad,
        pad_end: g.pad_end,
    };
    let (ohw, taps) = (g.out_h() * g.out_w(), cig * k * k);
    let (x_per, y_per) = (g.c_in * g.h * g.w, g.c_out * ohw);
    let per_slice = per_slice.max(1);
    let partials: Vec<(Vec<f32>, Vec<f32>)> = (0..g.n.div_ceil(per_slice))
        .into_par_iter()
        .map(|slice| {
            // dwt[grp][tap][co]: the slice's sums, filters fastest.
            let mut dwt = vec![0f32; g.groups * taps * ct];
            let mut pb = vec![0f32; g.c_out];
            let mut xp = vec![0f32; p.padded_len()];
            // Filters past `cog` stay zero: their sums come out zero and are dropped.
            let mut dyt = vec![0f32; ohw * ct];
            for n in slice * per_slice..((slice + 1) * per_slice).min(g.n) {
                let (xs, dys) = (&x[n * x_per..][..x_per], &dy[n * y_per..][..y_per]);
                for grp in 0..g.groups {
                    pad_into(&p, &xs[grp * cig * g.h * g.w..][..cig * g.h * g.w], &mut xp);
                    // 16 positions at a time, filter by filter: a line of each map read whole,
                    // into 16 rows of `dyt` that stay in L1 (one position at a time read one
                    // float of every filter's map per line; one map at a time strode the whole
                    // of `dyt` once per filter).
                    let maps = &dys[grp * cog * ohw..][..cog * ohw];
                    for q0 in (0..ohw).step_by(LANES) {
                        let qn = LANES.min(ohw - q0);
                        let rows = &mut dyt[q0 * ct..(q0 + qn) * ct];
                        for (co, map) in maps.chunks_exact(ohw).enumerate() {
                            for (row, &v) in rows.chunks_exact_mut(ct).zip(&map[q0..q0 + qn]) {
                                row[co] = v;
                            }
                        }
                    }
                    // SAFETY: the CPU has AVX-512F (`applies`).
                    unsafe { sample_sums(&p, &xp, &dyt, &mut dwt[grp * taps * ct..][..taps * ct]) };
                }
                for (b, map) in pb.iter_mut().zip(dys.chunks_exact(ohw)) {
                    *b += lane_sum(map);
                }
            }
            (dwt, pb)
        })
        .collect();
    // The slices' sums in slice order, element by element in the filter-fastest layout (a
    // vectorised pass per slice), then one transpose into `dw`.
    let mut parts = partials.into_iter();
    let Some((mut sum, mut sum_b)) = parts.next() else {
        dw.fill(0.0);
        db.fill(0.0);
        return;
    };
    for (dwt, pb) in parts {
        sum.par_chunks_mut(1 << 14)
            .zip(dwt.par_chunks(1 << 14))
            .for_each(|(s, d)| s.iter_mut().zip(d).for_each(|(s, &d)| *s += d));
        sum_b.iter_mut().zip(&pb).for_each(|(s, &d)| *s += d);
    }
    // Filter by filter over the pool: the reads stride `ct` floats, and one thread's serial
    // pass took 1 ms at the paper's conv3.
    dw.par_chunks_mut(taps).enumerate().for_each(|(f, dst)| {
        let (grp, co) = (f / cog, f % cog);
        for (tap, d) in dst.iter_mut().enumerate() {
            *d = sum[(grp * taps + tap) * ct + co];
        }
    });
    db.copy_from_slice(&sum_b);
}

/// The sum of `v` in 16 interleaved partials, added up at the end: a fixed order, and not one
/// chain of dependent adds a map long (cifar's conv1 maps are 1024 long, 128 of them a filter).
#[cfg(target_arch = "x86_64")]
fn lane_sum(v: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let chunks = v.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        lanes.iter_mut().zip(c).for_each(|(l, &x)| *l += x);
    }
    lanes.iter().sum::<f32>() + tail
}

/// Adds one sample's sums into `dwt` (`[tap][ct]`, tap = `(ci·k + ky)·k + kx`): every filter
/// row `(ci, ky)` against every block of 16·V filters, `R` rows a register block.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn sample_sums(p: &Plane, xp: &[f32], dyt: &[f32], dwt: &mut [f32]) {
    let vectors = p.cout_tiles / LANES;
    let v = if vectors % 4 == 0 {
        4
    } else if vectors % 2 == 0 {
        2
    } else {
        1
    };
    let rows = p.cin * p.k;
    // Rows a block: as many as keep V·R·K accumulators within 25 of the 32 registers.
    let r = match (p.k, v) {
        (5, 1) => 5,
        (5, 2) => 2,
        (3, 1) => 8,
        (3, 2) => 4,
        (3, 4) => 2,
        _ => 1,
    };
    let b = Block { p: *p, xp, dyt };
    assert!(dyt.len() >= p.oh() * p.ow() * p.cout_tiles && dwt.len() >= rows * p.k * p.cout_tiles);
    assert!(xp.len() >= p.padded_len());
    for co0 in (0..p.cout_tiles).step_by(v * LANES) {
        let mut row = 0;
        while row < rows {
            let take = if rows - row >= r { r } else { 1 };
            // SAFETY: AVX-512F is enabled here; rows `row..row + take` and filters
            // `co0..co0 + 16·v` lie within the sizes asserted above.
            unsafe {
                match (p.k, v, take) {
                    (5, 1, 5) => b.rows::<1, 5, 5>(row, co0, dwt),
                    (5, 1, _) => b.rows::<1, 1, 5>(row, co0, dwt),
                    (5, 2, 2) => b.rows::<2, 2, 5>(row, co0, dwt),
                    (5, 2, _) => b.rows::<2, 1, 5>(row, co0, dwt),
                    (5, _, _) => b.rows::<4, 1, 5>(row, co0, dwt),
                    (3, 1, 8) => b.rows::<1, 8, 3>(row, co0, dwt),
                    (3, 1, _) => b.rows::<1, 1, 3>(row, co0, dwt),
                    (3, 2, 4) => b.rows::<2, 4, 3>(row, co0, dwt),
                    (3, 2, _) => b.rows::<2, 1, 3>(row, co0, dwt),
                    (3, _, 2) => b.rows::<4, 2, 3>(row, co0, dwt),
                    (3, _, _) => b.rows::<4, 1, 3>(row, co0, dwt),
                    _ => unreachable!("applies() admits k = 3 and 5"),
                }
            }
            row += take;
        }
    }
}

/// One sample's padded input and filter-fastest output gradient.
#[cfg(target_arch = "x86_64")]
struct Block<'a> {
    p: Plane,
    xp: &'a [f32],
    dyt: &'a [f32],
}

#[cfg(target_arch = "x86_64")]
impl Block<'_> {
    /// `dwt[(row + r)·K + kx][co0 + 16·v + lane] += Σ_{oy,ox} xp[row + r at (oy, ox + kx)] ·
    /// dyt[oy·ow + ox][co0 + 16·v + lane]` for `r < R`, `kx < K`, `v < V`, in registers.
    ///
    /// # Safety
    /// AVX-512F; rows `row..row + R` below `cin·k`, filters `co0 + 16·V` within `cout_tiles`,
    /// and `dwt`, `xp`, `dyt` of the sizes `sample_sums` asserts.
    #[target_feature(enable = "avx512f")]
    unsafe fn rows<const V: usize, const R: usize, const K: usize>(
        &self,
        row: usize,
        co0: usize,
        dwt: &mut [f32],
    ) {
        use std::arch::x86_64::*;
        let p = &self.p;
        let (wp, plane, ct) = (p.wp(), p.hp() * p.wp(), p.cout_tiles);
        let (oh, ow) = (p.oh(), p.ow());
        // Row (ci, ky) of the filter reads padded row oy + ky of channel ci.
        let xrow: [*const f32; R] = std::array::from_fn(|r| {
            let (ci, ky) = ((row + r) / K, (row + r) % K);
            // SAFETY: within `xp` (ci < cin, ky < k): see the caller's assertions.
            unsafe { self.xp.as_ptr().add(ci * plane + ky * wp) }
        });
        let out = |r: usize, kx: usize, v: usize| ((row + r) * K + kx) * ct + co0 + v * LANES;
        let mut acc = [[[_mm512_setzero_ps(); V]; K]; R];
        for (r, ar) in acc.iter_mut().enumerate() {
            for (kx, akx) in ar.iter_mut().enumerate() {
                for (v, a) in akx.iter_mut().enumerate() {
                    // SAFETY: `out(..) + 16 <= dwt.len()` (caller's assertions).
                    *a = unsafe { _mm512_loadu_ps(dwt.as_ptr().add(out(r, kx, v))) };
                }
            }
        }
        let dyt = self.dyt.as_ptr();
        for oy in 0..oh {
            for ox in 0..ow {
                let q = oy * ow + ox;
                // SAFETY: q < oh·ow and co0 + 16·V <= ct: inside `dyt`; the input read at
                // row oy + ky < hp, column ox + kx < wp + min(pad, pad_end) lies within
                // `padded_len()` (past a row's pitch it reads the next row's leading zeros,
                // see `Plane::wp`).
                unsafe {
                    let d: [__m512; V] =
                        std::array::from_fn(|v| _mm512_loadu_ps(dyt.add(q * ct + co0 + v * LANES)));
                    for (r, ar) in acc.iter_mut().enumerate() {
                        let xs = xrow[r].add(oy * wp + ox);
                        for (kx, akx) in ar.iter_mut().enumerate() {
                            let xv = _mm512_set1_ps(*xs.add(kx));
                            for (a, &dv) in akx.iter_mut().zip(&d) {
                                *a = _mm512_fmadd_ps(xv, dv, *a);
                            }
                        }
                    }
                }
            }
        }
        for (r, ar) in acc.iter().enumerate() {
            for (kx, akx) in ar.iter().enumerate() {
                for (v, a) in akx.iter().enumerate() {
                    // SAFETY: as for the loads above.
                    unsafe { _mm512_storeu_ps(dwt.as_mut_ptr().add(out(r, kx, v)), *a) };
                }
            }
        }
    }
}
