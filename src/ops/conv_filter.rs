//! The filter gradient at stride 1 on the CPU, direct: no column matrix, no GEMM packing.
//!
//! `dw[co][ci][ky][kx] = Σ_n Σ_{oy,ox} dy[n][co][oy][ox] · xp[n][ci][oy + ky][ox + kx]`, with `xp`
//! the zero-padded input. A sample's output gradient is first laid out filter-fastest
//! (`dyt[oy·ow + ox][co]`), so one vector load holds a vector's width of filters' gradients at
//! one position. A register block then holds the partial sums of `V` vectors of filters × `R`
//! rows of `K` taps (a row is one input channel and filter row `(ci, ky)`, its `K` taps the
//! filter columns `kx`), and per output position costs `V` loads, `R·K` input values broadcast from memory and `V·R·K` fused
//! multiply-adds. The im2col path this replaces wrote every input value `K²` times into a
//! column matrix that the GEMM then copied again into its panels: at the cifar net's 16 filters
//! a tower each copy fed 16 multiply-adds, and the copies cost more than the arithmetic.
//!
//! Each weight's gradient is one chain of fused multiply-adds over the positions of a slice's
//! samples in order, and the slices' partials are added in slice order: the same bits on every
//! run and every thread count, and on every instruction set (the blocking changes, the order of
//! each chain does not). f32 on AVX-512 or AVX2 (`simd`); elsewhere `conv::backward_filter` keeps
//! im2col and GEMM.

use super::conv_direct::{Plane, pad_into};
use super::conv_geom::ConvGeom;
use super::simd::{Simd, dispatch, vector_f32};
use crate::tensor::{Real, as_f32, as_f32_mut};
use rayon::prelude::*;

/// Filters are padded to a multiple of 16 (a whole number of vectors of every width), and the
/// bias gradient's sums run in 16 interleaved partials.
const LANES: usize = 16;

/// Whether the direct filter gradient takes `g` in `T` on this CPU: stride 1 with the padding
/// the direct forward takes, a kernel size the register blocks are built for (3 and 5, every
/// stride-1 layer of the presets), f32, vectors with fused multiply-adds (AVX2 or AVX-512).
pub fn applies<T: Real>(g: &ConvGeom) -> bool {
    super::conv_direct::applies(g) && matches!(g.k, 3 | 5) && vector_f32::<T>()
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
    if let (Some(x), Some(dy), Some(dw), Some(db)) =
        (as_f32(x), as_f32(dy), as_f32_mut(dw), as_f32_mut(db))
    {
        return backward_filter_f32(g, x, dy, dw, db, per_slice);
    }
    unreachable!("applies() holds only for f32")
}

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
                    let dwt = &mut dwt[grp * taps * ct..][..taps * ct];
                    dispatch!(sample_sums::<_>(&p, &xp, &dyt, dwt));
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
/// row `(ci, ky)` against every block of `V` vectors of filters, `R` rows a register block, as
/// many as keep the `V·R·K` accumulators within the registers (25 of AVX-512's 32, 12 of
/// AVX2's 16, with room for the loaded gradients and the broadcast input).
#[inline(always)]
fn sample_sums<S: Simd>(p: &Plane, xp: &[f32], dyt: &[f32], dwt: &mut [f32]) {
    let wide = S::REGISTERS >= 32;
    let vectors = p.cout_tiles / S::LANES;
    let v = if vectors % 4 == 0 && wide {
        4
    } else if vectors % 2 == 0 {
        2
    } else {
        1
    };
    let rows = p.cin * p.k;
    let r = match (wide, p.k, v) {
        (true, 5, 1) => 5,
        (true, 5, 2) => 2,
        (true, 3, 1) => 8,
        (true, 3, 2) => 4,
        (true, 3, 4) => 2,
        (false, 5, 1) => 2,
        (false, 3, 1) => 4,
        (false, 3, 2) => 2,
        _ => 1,
    };
    let b = Block { p: *p, xp, dyt };
    assert!(dyt.len() >= p.oh() * p.ow() * p.cout_tiles && dwt.len() >= rows * p.k * p.cout_tiles);
    assert!(xp.len() >= p.padded_len() && p.cout_tiles % S::LANES == 0);
    for co0 in (0..p.cout_tiles).step_by(v * S::LANES) {
        let mut row = 0;
        while row < rows {
            let take = if rows - row >= r { r } else { 1 };
            // SAFETY: the set's instructions (the caller's entry point); rows
            // `row..row + take` and filters `co0..co0 + LANES·v` lie within the sizes asserted
            // above.
            unsafe {
                match (p.k, v, take) {
                    (5, 1, 5) => b.rows::<S, 1, 5, 5>(row, co0, dwt),
                    (5, 1, 2) => b.rows::<S, 1, 2, 5>(row, co0, dwt),
                    (5, 1, _) => b.rows::<S, 1, 1, 5>(row, co0, dwt),
                    (5, 2, 2) => b.rows::<S, 2, 2, 5>(row, co0, dwt),
                    (5, 2, _) => b.rows::<S, 2, 1, 5>(row, co0, dwt),
                    (5, _, _) => b.rows::<S, 4, 1, 5>(row, co0, dwt),
                    (3, 1, 8) => b.rows::<S, 1, 8, 3>(row, co0, dwt),
                    (3, 1, 4) => b.rows::<S, 1, 4, 3>(row, co0, dwt),
                    (3, 1, _) => b.rows::<S, 1, 1, 3>(row, co0, dwt),
                    (3, 2, 4) => b.rows::<S, 2, 4, 3>(row, co0, dwt),
                    (3, 2, 2) => b.rows::<S, 2, 2, 3>(row, co0, dwt),
                    (3, 2, _) => b.rows::<S, 2, 1, 3>(row, co0, dwt),
                    (3, _, 2) => b.rows::<S, 4, 2, 3>(row, co0, dwt),
                    (3, _, _) => b.rows::<S, 4, 1, 3>(row, co0, dwt),
                    _ => unreachable!("applies() admits k = 3 and 5"),
                }
            }
            row += take;
        }
    }
}

/// One sample's padded input and filter-fastest output gradient.
struct Block<'a> {
    p: Plane,
    xp: &'a [f32],
    dyt: &'a [f32],
}

impl Block<'_> {
    /// `dwt[(row + r)·K + kx][co0 + LANES·v + lane] += Σ_{oy,ox} xp[row + r at (oy, ox + kx)]
    /// · dyt[oy·ow + ox][co0 + LANES·v + lane]` for `r < R`, `kx < K`, `v < V`, in registers.
    ///
    /// # Safety
    /// The set's instructions; rows `row..row + R` below `cin·k`, filters `co0 + LANES·V`
    /// within `cout_tiles`, and `dwt`, `xp`, `dyt` of the sizes `sample_sums` asserts.
    #[inline(always)]
    unsafe fn rows<S: Simd, const V: usize, const R: usize, const K: usize>(
        &self,
        row: usize,
        co0: usize,
        dwt: &mut [f32],
    ) {
        let p = &self.p;
        let (wp, plane, ct) = (p.wp(), p.hp() * p.wp(), p.cout_tiles);
        let (oh, ow) = (p.oh(), p.ow());
        // Row (ci, ky) of the filter reads padded row oy + ky of channel ci.
        let xrow: [*const f32; R] = std::array::from_fn(|r| {
            let (ci, ky) = ((row + r) / K, (row + r) % K);
            // SAFETY: within `xp` (ci < cin, ky < k): see the caller's assertions.
            unsafe { self.xp.as_ptr().add(ci * plane + ky * wp) }
        });
        let out = |r: usize, kx: usize, v: usize| ((row + r) * K + kx) * ct + co0 + v * S::LANES;
        // SAFETY: `out(..) + LANES <= dwt.len()` (caller's assertions).
        let mut acc = [[[unsafe { S::zero() }; V]; K]; R];
        for (r, ar) in acc.iter_mut().enumerate() {
            for (kx, akx) in ar.iter_mut().enumerate() {
                for (v, a) in akx.iter_mut().enumerate() {
                    *a = unsafe { S::load(dwt.as_ptr().add(out(r, kx, v))) };
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
                    let mut d = [S::zero(); V];
                    for (v, dv) in d.iter_mut().enumerate() {
                        *dv = S::load(dyt.add(q * ct + co0 + v * S::LANES));
                    }
                    for (r, ar) in acc.iter_mut().enumerate() {
                        let xs = xrow[r].add(oy * wp + ox);
                        for (kx, akx) in ar.iter_mut().enumerate() {
                            let xv = S::splat(*xs.add(kx));
                            for (a, &dv) in akx.iter_mut().zip(&d) {
                                *a = S::fmadd(xv, dv, *a);
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
                    unsafe { S::store(dwt.as_mut_ptr().add(out(r, kx, v)), *a) };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv_direct::tests::values;
    use crate::ops::simd::Isa;

    #[test]
    fn every_instruction_set_sums_each_chain_in_the_same_order() {
        for k in [3, 5] {
            // 32 filters: two vectors of AVX-512, four of AVX2; 5 input channels: rows in
            // blocks and a remainder.
            let p = Plane {
                cin: 5,
                cout_tiles: 32,
                k,
                ih: 7,
                iw: 9,
                pad: k / 2,
                pad_end: k / 2,
            };
            let (ct, rows) = (p.cout_tiles, p.cin * k);
            let xp = values(p.padded_len(), 4);
            let dyt = values(p.oh() * p.ow() * ct, 5);
            let start = values(rows * k * ct, 6);
            // Each weight's chain: from what dwt held, one fused multiply-add per position.
            let mut want = start.clone();
            for row in 0..rows {
                let (ci, ky) = (row / k, row % k);
                for kx in 0..k {
                    for co in 0..ct {
                        let w = &mut want[(row * k + kx) * ct + co];
                        for oy in 0..p.oh() {
                            for ox in 0..p.ow() {
                                let x = xp[ci * p.hp() * p.wp() + (oy + ky) * p.wp() + ox + kx];
                                *w = x.mul_add(dyt[(oy * p.ow() + ox) * ct + co], *w);
                            }
                        }
                    }
                }
            }
            for isa in [Isa::Avx2, Isa::Avx512]
                .into_iter()
                .filter(|&i| i <= Isa::best())
            {
                let mut got = start.clone();
                dispatch!(@isa isa, sample_sums::<_>(&p, &xp, &dyt, &mut got));
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{isa}, k {k}: other bits than the chains in order");
            }
        }
    }
}
