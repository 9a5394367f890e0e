//! The host executor against plain Rust loops, through the `Launcher` interface, with the
//! self-test kernels of `cuda/selftest.cu` on ragged shapes; plus the checks that show the tests
//! can fail (a missing barrier, a read of never-written shared memory, a deadlock, bad configs).

use alexnet::device::launch::{Kernel, LaunchConfig, Launcher};
use alexnet::emu::{EmuLauncher, registered_kernels};
use alexnet::fatbins;
use alexnet::tensor::max_rel_err;
use std::ffi::c_void;

const fn selftest(name: &'static str) -> Kernel {
    Kernel {
        module: "selftest",
        name,
    }
}

/// A pointer to a launch argument's value.
fn arg<T>(v: &mut T) -> *mut c_void {
    v as *mut T as *mut c_void
}

fn cfg(grid: [u32; 3], block: [u32; 3], shared_bytes: u32) -> LaunchConfig {
    LaunchConfig {
        grid,
        block,
        shared_bytes,
    }
}

/// Deterministic data in [-1, 1) without an RNG dependency.
fn data(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let x = (i as u32)
                .wrapping_mul(2654435761)
                .wrapping_add(seed.wrapping_mul(40503));
            ((x >> 8) % 2000) as f32 / 1000.0 - 1.0
        })
        .collect()
}

fn sgemm(l: &EmuLauncher, m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
    let (da, db) = (l.upload(a).unwrap(), l.upload(b).unwrap());
    let dc = l.alloc(m * n).unwrap();
    let (mut mi, mut ni, mut ki) = (m as i32, n as i32, k as i32);
    let (mut pa, mut pb, mut pc) = (l.device_ptr(&da), l.device_ptr(&db), l.device_ptr(&dc));
    let grid = [n.div_ceil(16) as u32, m.div_ceil(16) as u32, 1];
    let args = [
        arg(&mut mi),
        arg(&mut ni),
        arg(&mut ki),
        arg(&mut pa),
        arg(&mut pb),
        arg(&mut pc),
    ];
    l.launch(selftest("selftest_sgemm"), cfg(grid, [16, 16, 1], 0), &args)
        .unwrap();
    l.download(&dc).unwrap()
}

fn sgemm_reference(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
    let mut c = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k)
                .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
                .sum();
        }
    }
    c
}

/// Largest |got - want| relative to the largest |want| (single outputs may cancel to ~0); NaN
/// when any output is NaN.
fn err_vs(got: &[f32], want: &[f64]) -> f64 {
    let scale = want.iter().fold(f64::MIN_POSITIVE, |m, w| m.max(w.abs()));
    max_rel_err(got, want, scale)
}

// f32 sums of at most 83 products of values in [-1, 1): rounding error ~k·2^-24 ≈ 5e-6 of the
// largest output at worst; a wrong or missing tile is orders of magnitude more.
const SGEMM_TOL: f64 = 1e-5;

#[test]
fn sgemm_matches_f64_loops_on_ragged_shapes() {
    let l = EmuLauncher::new();
    for (m, n, k) in [(67, 45, 83), (1, 1, 1), (16, 16, 16), (33, 17, 5)] {
        let (a, b) = (data(m * k, 1), data(k * n, 2));
        let err = err_vs(
            &sgemm(&l, m, n, k, &a, &b),
            &sgemm_reference(m, n, k, &a, &b),
        );
        assert!(err < SGEMM_TOL, "{m}x{n}x{k}: error {err:e}");
    }
}

#[test]
fn sgemm_without_a_barrier_is_wrong() {
    // The `nobarrier` build drops the barrier between filling the tiles and reading them: the
    // executor's round-robin schedule must turn that into a wrong result, every time.
    let l = EmuLauncher::with_variant("nobarrier").unwrap();
    let (m, n, k) = (67, 45, 83);
    let (a, b) = (data(m * k, 1), data(k * n, 2));
    let want = sgemm_reference(m, n, k, &a, &b);
    let got = sgemm(&l, m, n, k, &a, &b);
    let err = err_vs(&got, &want);
    assert!(
        err.is_nan() || err > 1e-2,
        "without the barrier the SGEMM still matched (error {err:e})"
    );
    // And the normal build next to it is right, so the difference is the barrier.
    let err = err_vs(&sgemm(&EmuLauncher::new(), m, n, k, &a, &b), &want);
    assert!(err < SGEMM_TOL, "error {err:e}");
}

#[test]
fn block_sum_with_shuffles_and_shared_memory() {
    let l = EmuLauncher::new();
    // 200 threads: six full warps and a partial one of 8 lanes. 1000 threads: 31 warps + 8.
    for (n, threads, blocks) in [(10007usize, 200u32, 7u32), (5000, 1000, 3), (33, 32, 2)] {
        let x = data(n, 3);
        let dx = l.upload(&x).unwrap();
        let sums = l.alloc(blocks as usize).unwrap();
        let (mut ni, mut px, mut ps) = (n as i32, l.device_ptr(&dx), l.device_ptr(&sums));
        let args = [arg(&mut ni), arg(&mut px), arg(&mut ps)];
        l.launch(
            selftest("selftest_block_sum"),
            cfg([blocks, 1, 1], [threads, 1, 1], 0),
            &args,
        )
        .unwrap();
        let got = l.download(&sums).unwrap();
        // Each block's grid-stride share, summed in f64.
        let stride = (blocks * threads) as usize;
        for (blk, g) in got.iter().enumerate() {
            let want: f64 = (0..n)
                .filter(|i| (i % stride) / threads as usize == blk)
                .map(|i| x[i] as f64)
                .sum();
            let count = (0..n)
                .filter(|i| (i % stride) / threads as usize == blk)
                .count() as f64;
            // f32 sums of |values| < 1: error at most ~count·2^-24 in absolute terms.
            let tol = count * 6e-8 + 1e-6;
            assert!(
                (*g as f64 - want).abs() <= tol,
                "n {n}, {threads} threads, block {blk}: {g} vs {want}"
            );
        }
    }
}

#[test]
fn atomics_count_sum_max_and_cas() {
    let l = EmuLauncher::new();
    let (n, bins) = (5003usize, 37usize);
    let keys: Vec<i32> = (0..n).map(|i| ((i * 7919 + 13) % bins) as i32).collect();
    let vals = data(n, 4);
    let dvals = l.upload(&vals).unwrap();
    let mut counts = vec![0i32; bins];
    let totals = l.alloc(bins).unwrap();
    let mut max_key = -1i32;
    let mut cas = 0u32;
    let mut ni = n as i32;
    let (mut pk, mut pv, mut pc) = (
        keys.as_ptr() as u64,
        l.device_ptr(&dvals),
        counts.as_mut_ptr() as u64,
    );
    let (mut pt, mut pm, mut pcas) = (
        l.device_ptr(&totals),
        &mut max_key as *mut i32 as u64,
        &mut cas as *mut u32 as u64,
    );
    let args = [
        arg(&mut ni),
        arg(&mut pk),
        arg(&mut pv),
        arg(&mut pc),
        arg(&mut pt),
        arg(&mut pm),
        arg(&mut pcas),
    ];
    let blocks = n.div_ceil(128) as u32;
    l.launch(
        selftest("selftest_atomics"),
        cfg([blocks, 1, 1], [128, 1, 1], 0),
        &args,
    )
    .unwrap();
    let totals = l.download(&totals).unwrap();
    for b in 0..bins {
        let members: Vec<usize> = (0..n).filter(|&i| keys[i] as usize == b).collect();
        assert_eq!(counts[b], members.len() as i32, "count of bin {b}");
        let want: f64 = members.iter().map(|&i| vals[i] as f64).sum();
        // ~135 f32 additions of values in [-1, 1): absolute error well under 1e-4.
        assert!(
            (totals[b] as f64 - want).abs() < 1e-4,
            "total of bin {b}: {} vs {want}",
            totals[b]
        );
    }
    assert_eq!(max_key, bins as i32 - 1);
    assert_eq!(cas, n as u32);
}

#[test]
fn dynamic_shared_reverse_with_early_exits() {
    let l = EmuLauncher::new();
    let (n, threads) = (1000usize, 128u32);
    let x = data(n, 5);
    let dx = l.upload(&x).unwrap();
    let dy = l.alloc(n).unwrap();
    let (mut ni, mut px, mut py) = (n as i32, l.device_ptr(&dx), l.device_ptr(&dy));
    let args = [arg(&mut ni), arg(&mut px), arg(&mut py)];
    let blocks = n.div_ceil(threads as usize) as u32;
    l.launch(
        selftest("selftest_dynamic_reverse"),
        cfg([blocks, 1, 1], [threads, 1, 1], threads * 4),
        &args,
    )
    .unwrap();
    let got = l.download(&dy).unwrap();
    let want: Vec<f32> = x
        .chunks(threads as usize)
        .flat_map(|c| c.iter().rev().copied())
        .collect();
    assert_eq!(got, want);
}

#[test]
fn shared_memory_is_poisoned_between_blocks() {
    // Block 0 writes all 64 slots, block 1 only the first 20: its other slots must read NaN
    // (poison), not block 0's values, in both static and dynamic shared memory.
    let l = EmuLauncher::new();
    let (threads, written) = (64usize, 20i32);
    let x: Vec<f32> = (0..2 * threads).map(|i| i as f32).collect();
    let dx = l.upload(&x).unwrap();
    let (ys, yd) = (l.alloc(2 * threads).unwrap(), l.alloc(2 * threads).unwrap());
    let mut w = written;
    let (mut px, mut pys, mut pyd) = (l.device_ptr(&dx), l.device_ptr(&ys), l.device_ptr(&yd));
    let args = [arg(&mut w), arg(&mut px), arg(&mut pys), arg(&mut pyd)];
    l.launch(
        selftest("selftest_stale_shared"),
        cfg([2, 1, 1], [threads as u32, 1, 1], 4 * threads as u32),
        &args,
    )
    .unwrap();
    for y in [l.download(&ys).unwrap(), l.download(&yd).unwrap()] {
        for i in 0..2 * threads {
            let unwritten = i >= threads && i - threads >= written as usize;
            if unwritten {
                assert!(
                    y[i].is_nan(),
                    "slot {i}: read {} where shared memory was never written",
                    y[i]
                );
            } else {
                assert_eq!(y[i], x[i], "slot {i}");
            }
        }
    }
}

#[test]
fn shuffles_and_votes_follow_cuda_semantics() {
    let l = EmuLauncher::new();
    // 48 threads: a full warp and a partial one of 16 lanes.
    let n = 48usize;
    for width in [32i32, 16, 8] {
        let out = l.alloc(4 * n).unwrap();
        let mut votes = vec![0u32; 2 * n];
        let (mut w, mut po, mut pv) = (width, l.device_ptr(&out), votes.as_mut_ptr() as u64);
        let args = [arg(&mut w), arg(&mut po), arg(&mut pv)];
        l.launch(
            selftest("selftest_shuffles"),
            cfg([1, 1, 1], [n as u32, 1, 1], 0),
            &args,
        )
        .unwrap();
        let got = l.download(&out).unwrap();
        let w = width as usize;
        let value = |t: usize| t as f32 + 0.5;
        for t in 0..n {
            let (lane, warp_base) = (t % 32, t / 32 * 32);
            let lanes = (n - warp_base).min(32);
            let seg = lane / w * w;
            // The executor's answer for a source lane outside the warp: the caller's own value.
            let from = |src_lane: usize| {
                if src_lane < lanes {
                    value(warp_base + src_lane)
                } else {
                    value(t)
                }
            };
            let idx = seg + ((7 * lane + 3) % 32) % w;
            assert_eq!(got[t], from(idx), "width {width} shfl, thread {t}");
            let up = if lane - seg >= 3 {
                from(lane - 3)
            } else {
                value(t)
            };
            assert_eq!(got[n + t], up, "width {width} shfl_up, thread {t}");
            let down = if lane - seg + 5 < w {
                from(lane + 5)
            } else {
                value(t)
            };
            assert_eq!(got[2 * n + t], down, "width {width} shfl_down, thread {t}");
            let xor = if (lane ^ 9) / w == lane / w {
                from(lane ^ 9)
            } else {
                value(t)
            };
            assert_eq!(got[3 * n + t], xor, "width {width} shfl_xor, thread {t}");
            let ballot = (0..lanes)
                .filter(|l| (warp_base + l) % 3 == 0)
                .fold(0u32, |b, l| b | 1 << l);
            assert_eq!(votes[t], ballot, "ballot, thread {t}");
            assert_eq!(
                votes[n + t],
                (0..n).filter(|i| i % 3 == 0).count() as u32,
                "syncthreads_count"
            );
        }
    }
}

/// One `mma.sync` of `kernel` (16 x `k` times `k` x 8, plus C) on the host executor: D and the
/// lane·4 + register that held each D element.
fn mma(
    l: &EmuLauncher,
    kernel: &'static str,
    k: usize,
    a: &[f32],
    b: &[f32],
    c: &[f32],
) -> (Vec<f32>, Vec<i32>) {
    assert_eq!((a.len(), b.len(), c.len()), (16 * k, k * 8, 128));
    let (da, db, dc) = (
        l.upload(a).unwrap(),
        l.upload(b).unwrap(),
        l.upload(c).unwrap(),
    );
    let dd = l.alloc(128).unwrap();
    let mut lanes = vec![-1i32; 128];
    let (mut pa, mut pb, mut pc, mut pd) = (
        l.device_ptr(&da),
        l.device_ptr(&db),
        l.device_ptr(&dc),
        l.device_ptr(&dd),
    );
    let mut pl = lanes.as_mut_ptr() as u64;
    let args = [
        arg(&mut pa),
        arg(&mut pb),
        arg(&mut pc),
        arg(&mut pd),
        arg(&mut pl),
    ];
    l.launch(selftest(kernel), cfg([1, 1, 1], [32, 1, 1], 0), &args)
        .unwrap();
    (l.download(&dd).unwrap(), lanes)
}

/// D = A·B + C in f64 on operands rounded by `round`.
fn mma_reference(k: usize, a: &[f32], b: &[f32], c: &[f32], round: fn(f32) -> f32) -> Vec<f64> {
    let mut d = vec![0.0; 128];
    for i in 0..16 {
        for j in 0..8 {
            let dot: f64 = (0..k)
                .map(|kk| round(a[i * k + kk]) as f64 * round(b[kk * 8 + j]) as f64)
                .sum();
            d[i * 8 + j] = dot + c[i * 8 + j] as f64;
        }
    }
    d
}

/// Small integers in [-8, 8]: their products and sums are exact in every precision, so any
/// element taken from the wrong lane or register changes the result.
fn small_ints(len: usize, seed: u32) -> Vec<f32> {
    data(len, seed).iter().map(|v| (v * 8.0).round()).collect()
}

#[test]
fn mma_fragments_follow_the_ptx_isa_layouts() {
    let l = EmuLauncher::new();
    let tf32 = |v: f32| alexnet::ops::precision::to_tf32(v);
    let bf16 = |v: f32| half::bf16::from_f32(v).to_f32();
    for (kernel, k, round) in [
        ("selftest_mma_tf32", 8, tf32 as fn(f32) -> f32),
        ("selftest_mma_bf16", 16, bf16 as fn(f32) -> f32),
    ] {
        // C/D: element (row, col) in lane (row % 8)·4 + col / 2, register (col % 2) + 2·(row >= 8)
        // (ISA: c0,c1 at (g, 2t..2t+1), c2,c3 at (g+8, 2t..2t+1)).
        let (a, b, c) = (
            small_ints(16 * k, 1),
            small_ints(k * 8, 2),
            small_ints(128, 3),
        );
        let (d, lanes) = mma(&l, kernel, k, &a, &b, &c);
        for row in 0..16 {
            for col in 0..8 {
                let want = ((row % 8) * 4 + col / 2) * 4 + col % 2 + 2 * (row / 8);
                assert_eq!(
                    lanes[row * 8 + col],
                    want as i32,
                    "{kernel}: D({row}, {col})'s lane and register"
                );
            }
        }
        let want = mma_reference(k, &a, &b, &c, round);
        for i in 0..128 {
            assert_eq!(
                d[i] as f64,
                want[i],
                "{kernel}: D({}, {}) of exact integers",
                i / 8,
                i % 8
            );
        }
        // Values no precision holds exactly: the kernel rounds its operands as `round` does and
        // sums in fp32 (16 products of about 1: ~2e-7 relative, 2e-6 allowed).
        let (a, b, c) = (data(16 * k, 4), data(k * 8, 5), data(128, 6));
        let (d, _) = mma(&l, kernel, k, &a, &b, &c);
        let err = err_vs(&d, &mma_reference(k, &a, &b, &c, round));
        assert!(err < 2e-6, "{kernel}: {err} against the rounded reference");
        let unrounded = err_vs(&d, &mma_reference(k, &a, &b, &c, |v| v));
        assert!(
            unrounded > 1e-4,
            "{kernel}: its operands are not rounded ({unrounded})"
        );
    }
}

#[test]
fn operand_rounding_matches_the_cpu_reference() {
    // Ties (TF32: low 13 bits 0x1000, away from zero; bf16: low 16 bits 0x8000, to even), one
    // step either side, the largest finite values (round up to infinity), subnormals, zeros,
    // infinities and NaN, then a sweep of ordinary values.
    let mut x: Vec<f32> = [
        0x3f80_1000u32,
        0x3f80_3000,
        0xbf80_1000,
        0x3f80_0fff,
        0x3f80_1001,
        0x3f80_8000,
        0x3f81_8000,
        0xbf81_8000,
        0x3f80_7fff,
        0x3f80_8001,
        0x7f7f_ffff,
        0xff7f_ffff,
        0x0000_1000,
        0x0000_8000,
        0x0001_8000,
        0x807f_ffff,
        0x0000_0000,
        0x8000_0000,
        0x7f80_0000,
        0xff80_0000,
        0x7fc0_0000,
        0x7f80_0001,
    ]
    .iter()
    .map(|&b| f32::from_bits(b))
    .collect();
    x.extend(data(1000, 7).iter().map(|v| v * 1e3));
    let l = EmuLauncher::new();
    let dx = l.upload(&x).unwrap();
    let (mut tf32, mut bf16) = (vec![0u32; x.len()], vec![0u32; x.len()]);
    let mut n = x.len() as i32;
    let (mut px, mut pt, mut pb) = (
        l.device_ptr(&dx),
        tf32.as_mut_ptr() as u64,
        bf16.as_mut_ptr() as u64,
    );
    let args = [arg(&mut n), arg(&mut px), arg(&mut pt), arg(&mut pb)];
    let grid = [x.len().div_ceil(128) as u32, 1, 1];
    l.launch(
        selftest("selftest_operand_rounding"),
        cfg(grid, [128, 1, 1], 0),
        &args,
    )
    .unwrap();
    for (i, &v) in x.iter().enumerate() {
        let want_tf32 = alexnet::ops::precision::to_tf32(v);
        let want_lo = half::bf16::from_f32(v);
        let want_hi = half::bf16::from_f32(-v);
        let (lo, hi) = (
            half::bf16::from_bits(bf16[i] as u16),
            half::bf16::from_bits((bf16[i] >> 16) as u16),
        );
        if v.is_nan() {
            assert!(
                f32::from_bits(tf32[i]).is_nan() && lo.is_nan() && hi.is_nan(),
                "NaN {:#x}",
                v.to_bits()
            );
            continue;
        }
        assert_eq!(
            tf32[i],
            want_tf32.to_bits(),
            "tf32 of {:#010x}",
            v.to_bits()
        );
        assert_eq!(
            (lo.to_bits(), hi.to_bits()),
            (want_lo.to_bits(), want_hi.to_bits()),
            "bf16 of {:#010x}",
            v.to_bits()
        );
    }
    // The tie cases round as documented, not only as the CPU reference does.
    assert_eq!(tf32[0], 0x3f80_2000, "TF32 tie rounds away from zero");
    assert_eq!(
        tf32[2], 0xbf80_2000,
        "negative TF32 tie rounds away from zero"
    );
    assert_eq!(bf16[5] & 0xffff, 0x3f80, "bf16 tie to even (down)");
    assert_eq!(bf16[6] & 0xffff, 0x3f82, "bf16 tie to even (up)");
    assert_eq!(
        f32::from_bits(tf32[10]),
        f32::INFINITY,
        "TF32 past the largest finite value"
    );
}

#[test]
fn intrinsics_follow_cuda_semantics() {
    let l = EmuLauncher::new();
    let mut ints = vec![i32::MIN; 27];
    let floats = l.alloc(18).unwrap();
    let (mut pi, mut pf) = (ints.as_mut_ptr() as u64, l.device_ptr(&floats));
    let args = [arg(&mut pi), arg(&mut pf)];
    l.launch(
        selftest("selftest_intrinsics"),
        cfg([1, 1, 1], [1, 1, 1], 0),
        &args,
    )
    .unwrap();
    let umulhi = ((0xD2511F53u64 * 0xCD9E8D57u64) >> 32) as i32;
    let want_ints = [
        2,
        4,
        -2,
        -2,
        -3,
        3,
        i32::MAX,
        0,
        umulhi,
        i32::MIN,
        32,
        31,
        0,
        4,
        8,
        -3,
        3,
        0,
        -15,
        3,
        0xC000_0000u32 as i32,
        10,
        7,
        2,
        0,
        5,
        6,
    ];
    assert_eq!(ints, want_ints);
    let f = l.download(&floats).unwrap();
    let exact = [
        (0, 1.0),
        (1, 0.0),
        (2, 0.0),
        (3, 0.25),
        (4, 0.5),
        (8, 2f32.powi(-24)),
        (9, 1.0),
        (10, -1.0),
        (11, 3.0),
        (12, 16777216.0),
        (13, 1.0),
        (14, 12.0),
        (15, 0.75),
        (16, 1.5),
        (17, 2.5),
    ];
    for (i, want) in exact {
        assert_eq!(f[i], want, "floats[{i}]");
    }
    // The GPU's fast __expf/__logf/__powf are within a few ulp here (CUDA's tables: 2 + 1.16|x|
    // ulp, 2^-21.4 absolute, 2 + 1.16|y log2 x| ulp); 2e-6 relative covers them.
    for (i, want) in [
        (5, std::f32::consts::E),
        (6, std::f32::consts::LN_2),
        (7, 1024.0),
    ] {
        assert!(
            ((f[i] - want) / want).abs() < 2e-6,
            "floats[{i}] = {}",
            f[i]
        );
    }
}

#[test]
fn deadlock_is_reported_and_the_executor_recovers() {
    let l = EmuLauncher::new();
    let out = l.alloc(32).unwrap();
    let mut po = l.device_ptr(&out);
    let err = l
        .launch(
            selftest("selftest_divergent_barrier"),
            cfg([1, 1, 1], [32, 1, 1], 0),
            &[arg(&mut po)],
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("selftest_divergent_barrier") && err.contains("deadlock"),
        "{err}"
    );
    // The next launch runs normally.
    let mut iters = 3i32;
    let args = [arg(&mut iters), arg(&mut po)];
    l.launch(
        selftest("selftest_barrier_loop"),
        cfg([1, 1, 1], [32, 1, 1], 0),
        &args,
    )
    .unwrap();
    assert!(l.download(&out).unwrap().iter().all(|&v| v == 3.0));
}

#[test]
fn bad_launches_are_clear_errors() {
    let l = EmuLauncher::new();
    let mut out = l.alloc(2048).unwrap();
    let (mut iters, mut po) = (1i32, l.device_ptr(&out));
    let args = [arg(&mut iters), arg(&mut po)];
    let loop_kernel = selftest("selftest_barrier_loop");
    let err = |r: anyhow::Result<()>| r.unwrap_err().to_string();

    let e = err(l.launch(loop_kernel, cfg([1, 1, 1], [1025, 1, 1], 0), &args));
    assert!(
        e.contains("selftest_barrier_loop") && e.contains("1024"),
        "{e}"
    );
    let e = err(l.launch(loop_kernel, cfg([1, 1, 1], [32, 32, 2], 0), &args));
    assert!(e.contains("2048 threads"), "{e}");
    let e = err(l.launch(loop_kernel, cfg([0, 1, 1], [32, 1, 1], 0), &args));
    assert!(e.contains("at least 1") || e.contains(">= 1"), "{e}");
    let e = err(l.launch(loop_kernel, cfg([1, 1, 1], [32, 1, 1], 1 << 20), &args));
    assert!(e.contains("shared memory"), "{e}");
    let e = err(l.launch(loop_kernel, cfg([1, 1, 1], [32, 1, 1], 0), &args[..1]));
    assert!(
        e.contains("1 arguments given") && e.contains("takes 2"),
        "{e}"
    );
    let e = err(l.launch(
        selftest("no_such_kernel"),
        cfg([1, 1, 1], [1, 1, 1], 0),
        &args,
    ));
    assert!(
        e.contains("selftest::no_such_kernel") && e.contains("selftest_sgemm"),
        "{e}"
    );
    let e = err(l.launch(
        Kernel {
            module: "nope",
            name: "k",
        },
        cfg([1, 1, 1], [1, 1, 1], 0),
        &args,
    ));
    assert!(e.contains("nope::k"), "{e}");
    assert!(EmuLauncher::with_variant("no_such_variant").is_err());
    // Out-of-range copies are errors, not panics.
    let src = l.alloc(10).unwrap();
    let block = |offset, pitch| alexnet::device::Block { offset, pitch };
    assert!(
        l.copy_2d(&src, block(0, 4), &mut out, block(0, 4), 4, 3)
            .is_err()
    );
    assert!(
        l.copy_2d(&src, block(0, 3), &mut out, block(2046, 1), 3, 1)
            .is_err()
    );
}

#[test]
fn copy_2d_copies_strided_blocks() {
    let l = EmuLauncher::new();
    let src = l
        .upload(&(0..20).map(|i| i as f32).collect::<Vec<_>>())
        .unwrap();
    let mut dst = l.alloc(12).unwrap();
    let block = |offset, pitch| alexnet::device::Block { offset, pitch };
    l.copy_2d(&src, block(1, 5), &mut dst, block(0, 4), 3, 3)
        .unwrap();
    let want = [1., 2., 3., 0., 6., 7., 8., 0., 11., 12., 13., 0.];
    assert_eq!(l.download(&dst).unwrap(), want);
}

#[test]
fn every_kernel_file_is_registered() {
    // Every cuda/*.cu shows up in the host build, and the variants exist.
    let kernels = registered_kernels();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cuda");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cu") {
            let module = path.file_stem().unwrap().to_str().unwrap();
            assert!(
                kernels.iter().any(|(v, m, _)| v.is_empty() && *m == module),
                "{module} not registered"
            );
        }
    }
    assert!(kernels.contains(&("nobarrier", "selftest", "selftest_sgemm")));
}

#[test]
fn fatbins_are_embedded_when_nvcc_was_found() {
    if std::env::var("CI")
        .is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
    {
        // build.rs fails a CI build without nvcc; this catches a build that got past it.
        let embedded = fatbins::KERNELS_EMBEDDED;
        assert!(embedded, "CI builds must compile the GPU kernels");
    }
    if !fatbins::KERNELS_EMBEDDED {
        assert!(fatbins::FATBINS.is_empty());
        println!("SKIP fatbin checks: built without nvcc");
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cuda");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cu") {
            let module = path.file_stem().unwrap().to_str().unwrap();
            let image = fatbins::fatbin(module).unwrap_or_else(|| panic!("no fatbin for {module}"));
            // A fatbin starts with its magic number 0xBA55ED50 (little-endian).
            assert_eq!(&image[..4], &[0x50, 0xED, 0x55, 0xBA], "{module}");
        }
    }
}
