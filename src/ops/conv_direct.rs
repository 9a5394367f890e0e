//! Direct convolution at stride 1 on the CPU, for the forward pass and the data gradient (which
//! at stride 1 is itself a stride-1 convolution: of the output gradient, padded by `k − 1 − pad`,
//! with the filters flipped and their in and out channels swapped).
//!
//! The im2col path copies every input pixel `k²` times into a column matrix and the GEMM then
//! copies that again into its panels; with the cifar net's 16 maps a tower, each copied value
//! feeds only 16 multiply-adds, so the copies cost more than the arithmetic. Here the input is
//! copied once, zero-padded, and a block of output positions × output channels is summed in
//! registers (48 × 8 in AVX-512, 48 × 2 in AVX2: `tiles_simd`): per filter tap, vector loads of
//! input and fused multiply-adds against the tap's weights of those channels, broadcast.
//!
//! Output positions are numbered along the padded input's rows (`q = oy·wp + ox`, `wp` the padded
//! rows' pitch, `Plane::wp`), so tap `(ky, kx)` of 16 consecutive positions reads 16 consecutive
//! inputs at `q + ky·wp + kx`, whatever the map's width; the positions at each row's end that
//! fall outside the output are computed and dropped.
//!
//! Each output is its bias plus the taps in the reference's order (channel, row, column), with
//! fused multiply-adds: correctly rounded, so the same bits on every CPU, with or without FMA
//! hardware, and on every thread count (the work is split by sample).

use super::conv_geom::ConvGeom;
use super::simd::{Simd, dispatch};
use crate::tensor::{Real, as_f32, as_f32_mut};
use multiversion::multiversion;
use rayon::prelude::*;

/// Output positions are computed in runs of 16 (a multiple of every vector's width).
const PX: usize = 16;
/// Output channels per tile; channel counts are padded up to a multiple with zero filters.
const CO: usize = 16;

/// Whether the direct path takes `g`: stride 1, and padding below the kernel size (so the data
/// gradient's padding `k − 1 − pad` is not negative).
pub fn applies(g: &ConvGeom) -> bool {
    g.stride == 1 && g.pad < g.k && g.pad_end < g.k
}

/// One stride-1 convolution of `cin` zero-padded maps: its sizes.
#[derive(Clone, Copy)]
pub(super) struct Plane {
    pub(super) cin: usize,
    /// Output channels rounded up to a multiple of `CO`.
    pub(super) cout_tiles: usize,
    pub(super) k: usize,
    /// The unpadded input map.
    pub(super) ih: usize,
    pub(super) iw: usize,
    /// Zeros before and after, along each axis.
    pub(super) pad: usize,
    pub(super) pad_end: usize,
}

impl Plane {
    pub(super) fn hp(&self) -> usize {
        self.ih + self.pad + self.pad_end
    }
    /// The padded rows' pitch: the map's width and one run of zeros between rows, as long as
    /// the larger of the two paddings. A row's right padding and the next row's left padding
    /// are the same zeros: a tap reaching `j <= pad` columns left of a row reads the zeros that
    /// end the row above (or its own leading ones), and one reaching `j <= pad_end` right reads
    /// this row's trailing zeros or the next row's leading ones. So each row computes
    /// `k − 1 − min(pad, pad_end)` dropped positions, not `k − 1` (20% fewer positions on the
    /// cifar net's 7×7 maps).
    pub(super) fn wp(&self) -> usize {
        self.iw + self.pad.max(self.pad_end)
    }
    pub(super) fn oh(&self) -> usize {
        self.hp() + 1 - self.k
    }
    pub(super) fn ow(&self) -> usize {
        self.iw + self.pad + self.pad_end + 1 - self.k
    }
    /// Filter taps per output channel: `(ci·k + ky)·k + kx` over `cin` input channels.
    pub(super) fn taps(&self) -> usize {
        self.cin * self.k * self.k
    }
    /// Where `tiles` reads the weight of `tap` for output channel `co`: channels in blocks of
    /// `BLOCK_CO`, each block's taps in order, the block's channels side by side
    /// (`[co / 8][tap][co % 8]`). A register block's weights are then one run of memory, not
    /// 8 floats at the stride of every channel (half of each 64-byte line unused, and each
    /// line a tap apart), and the layout is built by reading 8 filters side by side, in
    /// order, not by writing one float per line.
    pub(super) fn weight_at(&self, tap: usize, co: usize) -> usize {
        (co / BLOCK_CO) * self.taps() * BLOCK_CO + tap * BLOCK_CO + co % BLOCK_CO
    }
    /// Output positions computed per channel: the output rows at the padded width, in whole
    /// tiles.
    pub(super) fn positions(&self) -> usize {
        (self.oh() * self.wp()).div_ceil(PX) * PX
    }
    /// The padded input: `cin` planes of `hp·wp`, then zeros for the last tiles' reads past
    /// the last plane (their positions are dropped, but the reads must stay in the buffer).
    pub(super) fn padded_len(&self) -> usize {
        self.cin * self.hp() * self.wp() + PX + self.k * (self.wp() + 1)
    }
}

/// Copies `maps` (`cin` maps of `ih × iw`) into the maps' places in `xp`, whose zero padding is
/// left as it is: `xp` starts zeroed (a fresh `vec![0; padded_len()]`) and is reused only for
/// this plane, whose copies never write the padding (zeroing all of it again for each sample
/// was a second write of every value).
pub(super) fn pad_into<T: Real>(p: &Plane, maps: &[T], xp: &mut [T]) {
    let (hp, wp) = (p.hp(), p.wp());
    debug_assert!(
        xp[..p.pad * wp].iter().all(|v| *v == T::zero()),
        "xp's padding is zero"
    );
    for (map, plane) in maps.chunks_exact(p.ih * p.iw).zip(xp.chunks_mut(hp * wp)) {
        for (row, dst) in map
            .chunks_exact(p.iw)
            .zip(plane[p.pad * wp..].chunks_mut(wp))
        {
            copy_row(&mut dst[p.pad..p.pad + p.iw], row, false);
        }
    }
}

/// `dst = src`, or its ReLU (as `activation::relu_forward` computes it) where `relu`: 16 at a
/// time by copies of a fixed size, which stay inline. These rows are 7 to 32 long, and a
/// `copy_from_slice` of a run-time length is a call to memmove, which cost more than the copying
/// (8% of the cifar step).
#[inline]
fn copy_row<T: Real>(dst: &mut [T], src: &[T], relu: bool) {
    let on = |v: T| if !relu || v > T::zero() { v } else { T::zero() };
    let (mut d, mut s) = (dst.chunks_exact_mut(16), src.chunks_exact(16));
    for (d, s) in d.by_ref().zip(s.by_ref()) {
        let s: &[T; 16] = s.try_into().expect("16 wide");
        let d: &mut [T; 16] = d.try_into().expect("16 wide");
        *d = s.map(on);
    }
    for (d, &s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = on(s);
    }
}

/// All tiles of one plane: `yq[co][q] = bias[co] + Σ_{ci,ky,kx} w(ci, ky, kx, co) ·
/// xp[ci][q + ky·wp + kx]`, `w` read at `wt[weight_at(tap, co)]`, for `cout_tiles` channels
/// and `positions()` positions. In f32 by `tiles_simd` on the CPU's vectors, in f64 by the
/// scalar loops (the same fused operations in the same order, so the same bits).
fn tiles<T: Real>(p: &Plane, xp: &[T], wt: &[T], bias: &[T], yq: &mut [T]) {
    if let (Some(xp), Some(wt), Some(bias), Some(yq)) =
        (as_f32(xp), as_f32(wt), as_f32(bias), as_f32_mut(yq))
    {
        return dispatch!(tiles_simd::<_>(p, xp, wt, bias, yq));
    }
    tiles_scalar(p, xp, wt, bias, yq)
}

/// `tiles` in register blocks of `V` vectors of positions × `C` channels (`V·C` accumulators),
/// shaped by the register file: 3 × 8 of 16 lanes where there are 32 registers (AVX-512), per
/// tap 3 loads of inputs and 8 weights broadcast for 24 fused multiply-adds; 6 × 2 of 8 lanes
/// where there are 16 (AVX2), per tap 2 weights broadcast and held while 6 loads of inputs
/// stream past them, 12 multiply-adds in 15 registers. (A block of 3 × 4 there needed all 16
/// registers with the loaded inputs, and the compiler spilled one accumulator to the stack
/// every tap: its store and reload sat on that accumulator's chain, and the AVX2 step took 1.4x
/// as long. A block of one vector × 16 channels took 17 loads for 16 multiply-adds, and the two
/// load ports, not the two FMA ports, set its pace.) The positions left past the last whole
/// block go in blocks of fewer vectors. The input channels are taken `CI_BLOCK` at a time over
/// every block, so that block's weights and inputs stay in L1 while all blocks use them;
/// between passes the accumulators wait in `yq`. Each output's sum keeps the order of
/// `tiles_scalar`, so the same bits on every instruction set.
#[inline(always)]
fn tiles_simd<S: Simd>(p: &Plane, xp: &[f32], wt: &[f32], bias: &[f32], yq: &mut [f32]) {
    let (cin, ct, nq) = (p.cin, p.cout_tiles, p.positions());
    assert!(xp.len() >= p.padded_len() && wt.len() >= cin * p.k * p.k * ct);
    assert!(bias.len() >= ct && yq.len() >= ct * nq && ct % BLOCK_CO == 0 && nq % PX == 0);
    assert!(PX % S::LANES == 0, "positions come in whole vectors");
    debug_assert_eq!(
        p.weight_at(1, 1),
        BLOCK_CO + 1,
        "tiles_simd reads [co / 8][tap][co % 8]"
    );
    let t = TileArgs { p, xp, wt, bias };
    let wide = S::REGISTERS >= 32;
    let channels = if wide { WIDE_BLOCK.1 } else { NARROW_BLOCK.1 };
    for co0 in (0..ct).step_by(channels) {
        for ci0 in (0..cin.max(1)).step_by(CI_BLOCK) {
            let ci = ci0..(ci0 + CI_BLOCK).min(cin);
            let mut q0 = 0;
            while q0 < nq {
                let most = if wide { WIDE_BLOCK.0 } else { NARROW_BLOCK.0 };
                let vectors = ((nq - q0) / S::LANES).min(most);
                // SAFETY: the set's instructions (the caller's entry point); positions
                // q0 + LANES·vectors <= nq and channels co0 + channels <= ct, inside the
                // slices asserted above.
                unsafe {
                    match (wide, vectors) {
                        (true, 3) => t.block::<S, 3, 8>(q0, co0, ci.clone(), yq),
                        (true, 2) => t.block::<S, 2, 8>(q0, co0, ci.clone(), yq),
                        (true, _) => t.block::<S, 1, 8>(q0, co0, ci.clone(), yq),
                        (false, 6) => t.block::<S, 6, 2>(q0, co0, ci.clone(), yq),
                        (false, 4) => t.block::<S, 4, 2>(q0, co0, ci.clone(), yq),
                        (false, _) => t.block::<S, 2, 2>(q0, co0, ci.clone(), yq),
                    }
                }
                q0 += vectors * S::LANES;
            }
        }
    }
}

/// `tiles_simd`'s largest register blocks, vectors of positions × channels, with 32 registers
/// and with 16. The match on them spells the shapes out (the blocks are instantiated there).
const WIDE_BLOCK: (usize, usize) = (3, 8);
const NARROW_BLOCK: (usize, usize) = (6, 2);
/// Output channels per block of the weights' layout (`Plane::weight_at`); a register block of
/// `tiles_simd` takes all of them or a part that divides them.
const BLOCK_CO: usize = 8;

/// What every register block of one plane reads.
struct TileArgs<'a> {
    p: &'a Plane,
    xp: &'a [f32],
    wt: &'a [f32],
    bias: &'a [f32],
}

impl TileArgs<'_> {
    /// Positions `q0..q0 + LANES·V` of channels `co0..co0 + C`, over the input channels `ci`:
    /// from the bias at the first channel, else from what `yq` holds.
    ///
    /// # Safety
    /// The set's instructions; `q0 + LANES·V <= positions()`, `co0 + C <= cout_tiles`, `C`
    /// dividing `BLOCK_CO`, with the slices `tiles_simd` asserts.
    #[inline(always)]
    unsafe fn block<S: Simd, const V: usize, const C: usize>(
        &self,
        q0: usize,
        co0: usize,
        ci: std::ops::Range<usize>,
        yq: &mut [f32],
    ) {
        let p = self.p;
        let (wp, k, plane, nq) = (p.wp(), p.k, p.hp() * p.wp(), p.positions());
        let out = |c: usize, v: usize| (co0 + c) * nq + q0 + v * S::LANES;
        let first = ci.start == 0;
        // SAFETY (every block below): the caller's contract; `out(c, v) + LANES <= ct·nq <=
        // yq.len()`.
        let mut acc = [[unsafe { S::zero() }; V]; C];
        for (c, ac) in acc.iter_mut().enumerate() {
            for (v, a) in ac.iter_mut().enumerate() {
                *a = unsafe {
                    if first {
                        S::splat(self.bias[co0 + c])
                    } else {
                        S::load(yq.as_ptr().add(out(c, v)))
                    }
                };
            }
        }
        // This block's weights: `taps()` runs of 8, one per tap (`Plane::weight_at`), of which
        // the block reads `C` from `co0 % 8`.
        let block_start = (co0 / BLOCK_CO) * p.taps() * BLOCK_CO + co0 % BLOCK_CO;
        let (xp, wt) = (self.xp.as_ptr(), self.wt[block_start..].as_ptr());
        for ci in ci {
            for ky in 0..k {
                for kx in 0..k {
                    let at = ci * plane + q0 + ky * wp + kx;
                    let tap = ((ci * k + ky) * k + kx) * BLOCK_CO;
                    // SAFETY: `at + LANES·V <= padded_len()` (see `Plane::padded_len`: the
                    // reads of the last positions stay in the buffer) and `block_start + tap +
                    // C <= wt.len()`.
                    unsafe {
                        if C < V {
                            // Fewer weights than inputs: hold the weights, stream the inputs
                            // (`C + 1` registers beside the accumulators).
                            let mut wv = [S::zero(); C];
                            for (c, w) in wv.iter_mut().enumerate() {
                                *w = S::splat(*wt.add(tap + c));
                            }
                            for v in 0..V {
                                let x = S::load(xp.add(at + v * S::LANES));
                                for (ac, &w) in acc.iter_mut().zip(&wv) {
                                    ac[v] = S::fmadd(w, x, ac[v]);
                                }
                            }
                        } else {
                            // Hold the inputs, stream the weights (`V + 1` registers).
                            let mut xv = [S::zero(); V];
                            for (v, x) in xv.iter_mut().enumerate() {
                                *x = S::load(xp.add(at + v * S::LANES));
                            }
                            for (c, ac) in acc.iter_mut().enumerate() {
                                let wv = S::splat(*wt.add(tap + c));
                                for (a, &x) in ac.iter_mut().zip(&xv) {
                                    *a = S::fmadd(wv, x, *a);
                                }
                            }
                        }
                    }
                }
            }
        }
        for (c, ac) in acc.iter().enumerate() {
            for (v, a) in ac.iter().enumerate() {
                // SAFETY: as for the loads above.
                unsafe { S::store(yq.as_mut_ptr().add(out(c, v)), *a) };
            }
        }
    }
}

/// Input channels per pass of `tiles_simd` over the tiles.
const CI_BLOCK: usize = 8;

#[multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma"))]
fn tiles_scalar<T: Real>(p: &Plane, xp: &[T], wt: &[T], bias: &[T], yq: &mut [T]) {
    let (wp, k, plane) = (p.wp(), p.k, p.hp() * p.wp());
    let nq = p.positions();
    for co0 in (0..p.cout_tiles).step_by(CO) {
        for q0 in (0..nq).step_by(PX) {
            let mut acc = [[T::zero(); PX]; CO];
            for (a, &b) in acc.iter_mut().zip(&bias[co0..co0 + CO]) {
                *a = [b; PX];
            }
            for ci in 0..p.cin {
                let xc = &xp[ci * plane + q0..];
                for ky in 0..k {
                    for kx in 0..k {
                        let xv: &[T; PX] = xc[ky * wp + kx..][..PX].try_into().expect("PX wide");
                        let tap = (ci * k + ky) * k + kx;
                        // Two runs of 8 (`Plane::weight_at`).
                        let (lo, hi) = (p.weight_at(tap, co0), p.weight_at(tap, co0 + BLOCK_CO));
                        let wv: [T; CO] = std::array::from_fn(|c| match c < BLOCK_CO {
                            true => wt[lo + c],
                            false => wt[hi + c - BLOCK_CO],
                        });
                        for c in 0..CO {
                            for l in 0..PX {
                                acc[c][l] = wv[c].mul_add(xv[l], acc[c][l]);
                            }
                        }
                    }
                }
            }
            for (c, a) in acc.iter().enumerate() {
                yq[(co0 + c) * nq + q0..][..PX].copy_from_slice(a);
            }
        }
    }
}

/// One sample's convolutions, group by group: `inputs` (`groups · cin` maps) into `outputs`
/// (`groups · cout` maps of `oh × ow`), with `wt[grp]` the group's weights as `tiles` reads
/// them and `bias` (`groups · cout`, or empty for none).
#[allow(clippy::too_many_arguments)]
fn sample<T: Real>(
    p: &Plane,
    groups: usize,
    cout: usize,
    inputs: &[T],
    wt: &[Vec<T>],
    bias: &[T],
    relu: bool,
    outputs: &mut [T],
    (xp, yq, bt): &mut (Vec<T>, Vec<T>, Vec<T>),
) {
    let (oh, ow, wp, nq) = (p.oh(), p.ow(), p.wp(), p.positions());
    let in_maps = p.cin * p.ih * p.iw;
    for grp in 0..groups {
        pad_into(p, &inputs[grp * in_maps..(grp + 1) * in_maps], xp);
        bt.fill(T::zero());
        if !bias.is_empty() {
            bt[..cout].copy_from_slice(&bias[grp * cout..(grp + 1) * cout]);
        }
        tiles(p, xp, &wt[grp], bt, yq);
        let out = &mut outputs[grp * cout * oh * ow..(grp + 1) * cout * oh * ow];
        for (map, src) in out.chunks_exact_mut(oh * ow).zip(yq.chunks_exact(nq)) {
            for (row, line) in map.chunks_exact_mut(ow).zip(src.chunks(wp)) {
                copy_row(row, &line[..ow], relu);
            }
        }
    }
}

/// Scratch for one rayon task: the padded input, the tile outputs, the padded bias.
fn scratch<T: Real>(p: Plane) -> impl Fn() -> (Vec<T>, Vec<T>, Vec<T>) + Sync + Send {
    move || {
        (
            vec![T::zero(); p.padded_len()],
            vec![T::zero(); p.cout_tiles * p.positions()],
            vec![T::zero(); p.cout_tiles],
        )
    }
}

/// The weights of each of `groups` groups in the layout `tiles` reads (`Plane::weight_at`), in
/// parallel over blocks of 8 channels: `fill(grp, co, taps)` writes channel `co`'s weights into
/// `taps`, its `p.taps()` slots in tap order (those it leaves stay zero).
fn blocked_weights<T: Real>(
    p: &Plane,
    groups: usize,
    fill: impl Fn(usize, usize, std::iter::StepBy<std::slice::IterMut<'_, T>>) + Sync,
) -> Vec<Vec<T>> {
    let taps = p.taps();
    (0..groups)
        .map(|grp| {
            let mut t = vec![T::zero(); taps * p.cout_tiles];
            t.par_chunks_mut(taps * BLOCK_CO)
                .enumerate()
                .for_each(|(b, block)| {
                    for c in 0..BLOCK_CO {
                        fill(
                            grp,
                            b * BLOCK_CO + c,
                            block[c..].iter_mut().step_by(BLOCK_CO),
                        );
                    }
                });
            t
        })
        .collect()
}

/// Forward at stride 1: `y = conv(x, w) + b`, as `conv::forward_naive` defines it, and its
/// ReLU where `relu` (applied as each row is copied out of the tiles).
pub fn forward<T: Real>(g: &ConvGeom, x: &[T], w: &[T], b: &[T], relu: bool, y: &mut [T]) {
    assert!(
        applies(g),
        "conv_direct: {g:?} is not stride 1 with pad < k"
    );
    let (cig, cog, k) = (g.cin_per_group(), g.cout_per_group(), g.k);
    let p = Plane {
        cin: cig,
        cout_tiles: cog.div_ceil(CO) * CO,
        k,
        ih: g.h,
        iw: g.w,
        pad: g.pad,
        pad_end: g.pad_end,
    };
    // wt[grp] at `weight_at(tap, co)` = w[grp·cog + co][tap], zero past cog.
    let taps = p.taps();
    let wt = blocked_weights(&p, g.groups, |grp, co, block| {
        if co < cog {
            let filter = &w[(grp * cog + co) * taps..][..taps];
            block.zip(filter).for_each(|(d, &v)| *d = v);
        }
    });
    let (x_per, y_per) = (g.c_in * g.h * g.w, g.c_out * g.out_h() * g.out_w());
    if y_per == 0 {
        return;
    }
    y.par_chunks_mut(y_per)
        .zip(x.par_chunks(x_per))
        .for_each_init(scratch(p), |s, (ys, xs)| {
            sample(&p, g.groups, cog, xs, &wt, b, relu, ys, s)
        });
}

/// Data gradient at stride 1: `dx = ∂L/∂x` from `dy`, as `conv::backward_data_naive` defines
/// it, as the convolution of `dy` padded by `k − 1 − pad` (and `k − 1 − pad_end`) with the
/// filters flipped, out and in channels swapped.
pub fn backward_data<T: Real>(g: &ConvGeom, dy: &[T], w: &[T], dx: &mut [T]) {
    assert!(
        applies(g),
        "conv_direct: {g:?} is not stride 1 with pad < k"
    );
    let (cig, cog, k) = (g.cin_per_group(), g.cout_per_group(), g.k);
    let p = Plane {
        cin: cog,
        cout_tiles: cig.div_ceil(CO) * CO,
        k,
        ih: g.out_h(),
        iw: g.out_w(),
        pad: k - 1 - g.pad,
        pad_end: k - 1 - g.pad_end,
    };
    debug_assert_eq!((p.oh(), p.ow()), (g.h, g.w));
    // wt[grp] at `weight_at((co·k + ky)·k + kx, ci)` = w[grp·cog + co][ci][k−1−ky][k−1−kx],
    // zero past cig: the tap order (co, ky, kx) reads each filter's k² taps backwards.
    let wt = blocked_weights(&p, g.groups, |grp, ci, block| {
        if ci < cig {
            let mut block = block;
            for co in 0..cog {
                let filter = &w[((grp * cog + co) * cig + ci) * k * k..][..k * k];
                block
                    .by_ref()
                    .zip(filter.iter().rev())
                    .for_each(|(d, &v)| *d = v);
            }
        }
    });
    let (x_per, y_per) = (g.c_in * g.h * g.w, g.c_out * g.out_h() * g.out_w());
    if x_per == 0 {
        return;
    }
    dx.par_chunks_mut(x_per)
        .zip(dy.par_chunks(y_per))
        .for_each_init(scratch(p), |s, (dxs, dys)| {
            sample(&p, g.groups, cig, dys, &wt, &[], false, dxs, s)
        });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ops::simd::Isa;

    /// Values in [-1, 1) from a fixed sequence.
    pub(crate) fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| {
                let h = (i ^ seed).wrapping_mul(2_654_435_761).rotate_left(13) ^ seed;
                (h % 2000) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn every_instruction_set_gives_the_scalar_loops_bits() {
        // 11 input channels: two passes over the tiles (CI_BLOCK 8); 16 channels: two register
        // blocks of 8 (AVX-512) or eight of 2 (AVX2, portable). Positions: 160 (k 3: vectors
        // in blocks of 3, 3, 3, 1 of 16 lanes, or 6, 6, 6, 2 of 8) and 176 (k 5: 3, 3, 3, 2,
        // or 6, 6, 6, 4): every block shape.
        for (k, pad, pad_end, iw) in [(3, 1, 2, 13), (5, 2, 2, 16)] {
            let p = Plane {
                cin: 11,
                cout_tiles: 16,
                k,
                ih: 9,
                iw,
                pad,
                pad_end,
            };
            let xp = values(p.padded_len(), 1);
            let wt = values(p.taps() * p.cout_tiles, 2);
            let bias = values(p.cout_tiles, 3);
            assert_eq!(p.positions(), if k == 3 { 160 } else { 176 });
            let mut want = vec![0f32; p.cout_tiles * p.positions()];
            tiles_scalar(&p, &xp, &wt, &bias, &mut want);
            for isa in Isa::ALL.into_iter().filter(|&i| i <= Isa::best()) {
                let mut got = vec![0f32; want.len()];
                dispatch!(@isa isa, tiles_simd::<_>(&p, &xp, &wt, &bias, &mut got));
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{isa}, k {k}: other bits than the scalar loops'");
            }
        }
    }
}
