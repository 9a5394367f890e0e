//! Every CUDA kernel, unchanged, run on the CPU by the host executor (`KernelDevice<EmuLauncher>`)
//! against the naive CPU reference: ragged shapes (sizes that are not multiples of the tiles,
//! batch 1 and 3, odd channel counts, groups) and the paper's layer geometries with reduced batch
//! and channels. Tolerances are in `common/device_checks.rs`, with their reasons.
//!
//! The tensor-core kernels (TF32 and bf16 operands, fp32 sums) run the same shapes against the
//! reference on operands rounded as they round them; the warp-level MMA is a warp collective of
//! the host executor (cuda/mma.cuh).
//!
//! The tests bite: the conv kernels built without one of their barriers (the `nobarrier` variant,
//! `-DALEXNET_DROP_TEST_BARRIER`), without a wait for their asynchronous copies (`nowait`) or
//! without one of each warp's MMA products (`skipmma`) must fail the same comparison.

pub mod support;

use alexnet::device::kernels::KernelDevice;
use alexnet::emu::EmuLauncher;
use alexnet::ops::precision::Precision;
use alexnet::ops::{
    conv::ConvGeom, dropout::DropoutGeom, fc::FcGeom, lrn::LrnGeom, pool::PoolGeom,
    spatial_norm::SpatialNormGeom,
};
use support::kernel_checks::*;

fn dev() -> KernelDevice<EmuLauncher> {
    KernelDevice::new(EmuLauncher::new())
}

fn conv(
    n: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    pad: usize,
    pad_end: usize,
    groups: usize,
) -> ConvGeom {
    ConvGeom {
        n,
        c_in,
        h,
        w,
        c_out,
        k,
        stride,
        pad,
        pad_end,
        groups,
    }
}

#[test]
fn convolution_ragged_shapes() {
    let d = dev();
    for (i, g) in [
        conv(1, 3, 7, 9, 5, 3, 1, 1, 1, 1),
        conv(3, 5, 13, 10, 7, 3, 2, 1, 0, 1),
        conv(3, 6, 9, 11, 10, 5, 1, 2, 2, 2),
        conv(2, 4, 6, 6, 130, 1, 1, 0, 0, 1), // more filters than one tile
        conv(1, 9, 5, 5, 3, 3, 1, 1, 1, 3),
    ]
    .iter()
    .enumerate()
    {
        check_conv(&d, g, 10 + i as u64).unwrap();
    }
}

#[test]
fn convolution_at_the_papers_geometries() {
    let d = dev();
    for (i, g) in [
        conv(1, 3, 227, 227, 4, 11, 4, 0, 0, 1), // conv1
        conv(1, 3, 224, 224, 4, 11, 4, 0, 3, 1), // net145's conv1
        conv(1, 8, 27, 27, 12, 5, 1, 2, 2, 1),   // conv2
        conv(3, 16, 13, 13, 12, 3, 1, 1, 1, 1),  // conv3: both towers' maps in
        conv(1, 12, 13, 13, 12, 3, 1, 1, 1, 2),  // conv4/5 as one grouped layer
    ]
    .iter()
    .enumerate()
    {
        check_conv(&d, g, 20 + i as u64).unwrap();
    }
}

#[test]
fn every_conv_tile_on_ragged_shapes() {
    // Each block tile the launcher can choose, forced, on shapes that cut its rows, columns and
    // K steps short; the general-bounds kernels also on a kernel wider than the masked checks'
    // 15 taps and a filter-gradient border deeper than their 7 rows.
    let shapes = [
        conv(2, 5, 11, 10, 9, 3, 1, 1, 1, 1),
        conv(1, 7, 9, 9, 131, 5, 2, 2, 1, 1), // more filters than a 128-row tile
        conv(3, 4, 8, 7, 49, 3, 1, 1, 0, 1),  // one past a 48-row tile
    ];
    for tile in ["128x128", "64x128", "48x128", "64x128_wide"] {
        let d = dev().with_gemm_tile(tile).unwrap();
        for (i, g) in shapes.iter().enumerate() {
            check_conv(&d, g, 40 + i as u64).unwrap_or_else(|e| panic!("tile {tile}: {e:#}"));
        }
    }
    let wide = [
        conv(1, 2, 20, 19, 5, 17, 1, 8, 8, 1), // 17x17 taps, 8 border rows
        conv(2, 3, 33, 33, 4, 16, 2, 1, 0, 1),
    ];
    for (i, g) in wide.iter().enumerate() {
        check_conv(&dev(), g, 50 + i as u64).unwrap();
    }
}

const TENSOR_CORES: [Precision; 2] = [Precision::Tf32, Precision::Bf16];

#[test]
fn tensor_core_convolution_every_tile_on_ragged_shapes() {
    let shapes = [
        conv(1, 3, 7, 9, 5, 3, 1, 1, 1, 1),
        conv(3, 5, 13, 10, 7, 3, 2, 1, 0, 1),
        conv(3, 6, 9, 11, 10, 5, 1, 2, 2, 2),
        conv(1, 7, 9, 9, 131, 5, 2, 2, 1, 1), // more filters than a 128-row tile
        conv(3, 4, 8, 7, 49, 3, 1, 1, 0, 1),  // one past a 48-row tile
    ];
    for prec in TENSOR_CORES {
        for tile in ["128x128", "64x128", "48x128", "64x128_wide"] {
            let d = dev().with_gemm_tile(tile).unwrap();
            for (i, g) in shapes.iter().enumerate() {
                check_conv_at(&d, g, prec, 60 + i as u64)
                    .unwrap_or_else(|e| panic!("tile {tile}: {e:#}"));
            }
        }
        // The general-bounds kernels: more than 15 taps a side.
        check_conv_at(&dev(), &conv(1, 2, 20, 19, 5, 17, 1, 8, 8, 1), prec, 66).unwrap();
    }
}

#[test]
fn tensor_core_convolution_at_the_papers_geometries() {
    let d = dev();
    for prec in TENSOR_CORES {
        for (i, g) in [
            conv(1, 3, 227, 227, 4, 11, 4, 0, 0, 1), // conv1
            conv(1, 8, 27, 27, 12, 5, 1, 2, 2, 1),   // conv2
            conv(3, 16, 13, 13, 12, 3, 1, 1, 1, 1),  // conv3
            conv(1, 12, 13, 13, 12, 3, 1, 1, 1, 2),  // conv4/5 as one grouped layer
        ]
        .iter()
        .enumerate()
        {
            check_conv_at(&d, g, prec, 70 + i as u64).unwrap();
        }
    }
}

#[test]
fn the_conv_kernels_without_a_barrier_a_copy_wait_or_an_mma_fail_the_same_check() {
    // 40 filters and 242 output pixels on the 64x128 tile: every warp's every product holds
    // real outputs, so dropping one of them is visible.
    let g = conv(2, 5, 11, 11, 40, 3, 1, 1, 1, 1);
    let intact = dev().with_gemm_tile("64x128").unwrap();
    for prec in [Precision::Fp32, Precision::Tf32, Precision::Bf16] {
        let good = conv_forward_error(&intact, &g, prec, 5).unwrap();
        assert!(
            good < TOL_GEMM,
            "the intact kernel must pass at {prec}: {good}"
        );
    }
    // A missing barrier lets threads read the shared tile before it is written (poisoned NaN) or
    // after it is overwritten; a missing wait for the asynchronous copies reads a stage before
    // its copies land (the host executor delays them to the wait and poisons the destination
    // until then); a missing product leaves a 16 x 8 block of outputs without its sums. Each
    // gives an error that is NaN or far beyond the tolerance.
    let broken = |variant: &str| {
        KernelDevice::new(EmuLauncher::with_variant(variant).unwrap())
            .with_gemm_tile("64x128")
            .unwrap()
    };
    let cases = [
        ("nobarrier", Precision::Fp32),
        ("nowait", Precision::Fp32),
        ("nobarrier", Precision::Tf32),
        ("nowait", Precision::Bf16),
        ("skipmma", Precision::Tf32),
        ("skipmma", Precision::Bf16),
    ];
    for (variant, prec) in cases {
        let bad = conv_forward_error(&broken(variant), &g, prec, 5).unwrap();
        assert!(
            bad.is_nan() || bad > 100.0 * TOL_GEMM,
            "the kernel built {variant} passed at {prec}: error {bad}"
        );
    }
    // The fp32 path has no MMA: the skipmma build leaves it exact.
    let fp32 = conv_forward_error(&broken("skipmma"), &g, Precision::Fp32, 5).unwrap();
    assert!(
        fp32 < TOL_GEMM,
        "skipmma must not touch the fp32 kernels: {fp32}"
    );
}

#[test]
fn fully_connected() {
    // The tile chosen per layer, then each tile forced (ragged against every one of them; the
    // 2304-input case splits its reduction), at every precision.
    for prec in [Precision::Fp32, Precision::Tf32, Precision::Bf16] {
        for tile in [None, Some("128x128"), Some("64x128"), Some("48x128")] {
            let d = match tile {
                Some(t) => dev().with_gemm_tile(t).unwrap(),
                None => dev(),
            };
            fc_cases(&d, prec);
        }
    }
}

fn fc_cases(d: &KernelDevice<EmuLauncher>, prec: Precision) {
    for (i, g) in [
        FcGeom {
            n: 1,
            inputs: 7,
            outputs: 5,
        },
        FcGeom {
            n: 3,
            inputs: 300,
            outputs: 131,
        },
        FcGeom {
            n: 2,
            inputs: 2304,
            outputs: 65,
        },
    ]
    .iter()
    .enumerate()
    {
        check_fc_at(d, g, prec, 30 + i as u64).unwrap();
    }
}

#[test]
fn elementwise_normalisation_pooling_dropout_softmax_sgd() {
    let d = dev();
    check_activations(&d, 1000, 1).unwrap();
    check_fill(&d, 777).unwrap();
    for (i, alpha_over_n) in [false, true].into_iter().enumerate() {
        check_lrn(
            &d,
            &LrnGeom {
                n: 3,
                c: 48,
                h: 5,
                w: 7,
                groups: 1,
                size: 5,
                k: 2.0,
                alpha: 1e-4,
                beta: 0.75,
                alpha_over_n,
            },
            40 + i as u64,
        )
        .unwrap();
    }
    check_lrn(
        &d,
        &LrnGeom {
            n: 1,
            c: 10,
            h: 3,
            w: 3,
            groups: 2,
            size: 3,
            k: 2.0,
            alpha: 0.5,
            beta: 0.75,
            alpha_over_n: false,
        },
        42,
    )
    .unwrap();
    // Every window the column kernels compile (3 to 9) and two they do not (1, 11), with
    // groups narrower than the window; a large alpha so that the sum, not k, dominates.
    for (i, (c, groups, size)) in [(10, 5, 5), (12, 2, 7), (18, 1, 9), (9, 3, 1), (16, 1, 11)]
        .into_iter()
        .enumerate()
    {
        check_lrn(
            &d,
            &LrnGeom {
                n: 2,
                c,
                h: 3,
                w: 5,
                groups,
                size,
                k: 1.0,
                alpha: 0.7,
                beta: 0.75,
                alpha_over_n: i % 2 == 0,
            },
            60 + i as u64,
        )
        .unwrap();
    }
    check_spatial_norm(
        &d,
        &SpatialNormGeom {
            n: 2,
            c: 3,
            h: 13,
            w: 11,
            size: 5,
            k: 1.0,
            alpha: 0.001,
            beta: 0.75,
            alpha_over_area: true,
        },
        43,
    )
    .unwrap();
    for (i, (h, size, stride)) in [
        (55, 3, 2),
        (27, 3, 2),
        (13, 3, 2),
        (13, 2, 2),
        (8, 3, 2),
        (9, 3, 1),
        (11, 4, 3),
    ]
    .into_iter()
    .enumerate()
    {
        check_max_pool(
            &d,
            &PoolGeom {
                n: 3,
                c: 3,
                h,
                w: h + 2,
                size,
                stride,
            },
            50 + i as u64,
        )
        .unwrap();
    }
    // A tower's half of fc6/fc7, and a ragged one whose samples' units start and end inside
    // Philox blocks (one block of words serves four units).
    for (i, (n, units, units_total, unit_offset)) in [(3, 2048, 4096, 2048), (5, 37, 101, 3)]
        .into_iter()
        .enumerate()
    {
        check_dropout(
            &d,
            &DropoutGeom {
                // A replica's slice: the kernel indexes the stream by the global sample.
                first_sample: 3,
                n,
                units,
                units_total,
                unit_offset,
                p: 0.5,
                seed: 9,
                stream: 4,
            },
            60 + i as u64,
        )
        .unwrap();
    }
    check_softmax_xent(&d, 3, 1000, 61).unwrap();
    check_softmax_xent(&d, 1, 10, 62).unwrap();
    check_top_k(&d, 3, 1000, 5, 63).unwrap();
    check_sgd(&d, 1025, 64).unwrap();
}

#[test]
fn the_tensor_core_kernels_agree_only_with_the_reference_rounded_as_they_round() {
    // Against its own precision's reference a kernel is within the fp32 tolerance (measured
    // ~1e-7 here); against the other references it is not (measured 2.7e-4 tf32 vs fp32, 2.1e-3
    // for the pairs with bf16): the same-precision comparisons above see the rounding, not only
    // the sums.
    let g = conv(2, 5, 11, 11, 40, 3, 1, 1, 1, 1);
    for prec in TENSOR_CORES {
        for reference in Precision::ALL {
            let e = conv_forward_error_against(&dev(), &g, prec, reference, 5).unwrap();
            if reference == prec {
                assert!(e < TOL_GEMM, "{prec} against its own reference: {e}");
            } else {
                assert!(
                    e > 2.0 * TOL_GEMM,
                    "{prec} against the {reference} reference: {e}"
                );
            }
        }
    }
}
