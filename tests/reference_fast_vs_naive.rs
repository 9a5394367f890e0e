//! The fast CPU paths in f32 against the naive references in f64, on ragged shapes and on the
//! paper's layer geometries (batch and channels reduced), plus determinism: the same inputs give
//! bit-identical outputs run after run and whatever the number of threads.
//!
//! Inputs are drawn in f32 and widened, so both sides see the same values. Errors are
//! `max |got - want| / max(|want|, rms(want))`. The floor: f32 rounding in a sum of K terms is an
//! absolute error of about ε₃₂·√K·rms(term), while the outputs themselves have an RMS near
//! √K·rms(term) (zero-mean terms), so measured against the output's RMS the typical error is a
//! few ε₃₂ ≈ 1e-7 whatever K is (the largest over thousands of outputs, an order more); an
//! output far below its RMS is a cancellation whose own relative error says nothing about the
//! code.
//! Tolerances: reductions (conv, fc: 9 to 9,216 terms per output) under 1e-4, ten times
//! tighter than the project's 1e-3 ceiling; elementwise ops (LRN, spatial norm: a handful of
//! terms and a power) under 1e-5. Largest errors seen: conv 1.8e-6, fc 7e-7, LRN and spatial
//! norm 2e-7, so both keep a margin of about 50 while a missing or misplaced term (an error of
//! order 1/√K of the output's RMS, at least 1% here) cannot pass.
//! Max pooling and dropout only select and route values: they are compared bit for bit.

pub mod support;

use alexnet::ops::{
    conv, conv::ConvGeom, dropout, dropout::DropoutGeom, fc, fc::FcGeom, lrn, lrn::LrnGeom, pool,
    pool::PoolGeom, spatial_norm, spatial_norm::SpatialNormGeom,
};
use alexnet::tensor::max_rel_err;
use support::inputs::{rms, rng, to_f64, uniform_f32};

const REDUCTION_TOL: f64 = 1e-4;
const ELEMENTWISE_TOL: f64 = 1e-5;

fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    let floor = rms(want);
    assert!(floor > 0.0, "{what}: reference output is all zeros");
    let err = max_rel_err(got, want, floor);
    assert!(err < tol, "{what}: relative error {err:e} over {tol:e}");
}

fn assert_bits_equal(what: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    if let Some(i) = (0..a.len()).find(|&i| a[i].to_bits() != b[i].to_bits()) {
        panic!("{what}: element {i} differs: {} vs {}", a[i], b[i]);
    }
}

// ---------------------------------------------------------------------------------------------
// Convolution

#[allow(clippy::too_many_arguments)]
fn conv_geom(
    n: usize,
    c_in: usize,
    (h, w): (usize, usize),
    c_out: usize,
    k: usize,
    stride: usize,
    (pad, pad_end): (usize, usize),
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

/// Forward, data gradient and filter gradient of the fast path on one set of inputs.
fn conv_fast(g: &ConvGeom, x: &[f32], w: &[f32], b: &[f32], dy: &[f32]) -> [Vec<f32>; 4] {
    let mut y = vec![0.0; g.y_len()];
    conv::forward(g, x, w, b, &mut y);
    let mut dx = vec![0.0; g.x_len()];
    conv::backward_data(g, dy, w, &mut dx);
    let (mut dw, mut db) = (vec![0.0; g.w_len()], vec![0.0; g.c_out]);
    conv::backward_filter(g, x, dy, &mut dw, &mut db);
    [y, dx, dw, db]
}

fn conv_inputs(g: &ConvGeom, seed: u64) -> [Vec<f32>; 4] {
    let mut r = rng(seed);
    [
        uniform_f32(&mut r, g.x_len(), -1.0, 1.0),
        uniform_f32(&mut r, g.w_len(), -1.0, 1.0),
        uniform_f32(&mut r, g.c_out, -1.0, 1.0),
        uniform_f32(&mut r, g.y_len(), -1.0, 1.0),
    ]
}

fn check_conv(g: ConvGeom, seed: u64) {
    let [x, w, b, dy] = conv_inputs(&g, seed);
    let got = conv_fast(&g, &x, &w, &b, &dy);
    let (x64, w64, b64, dy64) = (to_f64(&x), to_f64(&w), to_f64(&b), to_f64(&dy));
    let mut y = vec![0.0; g.y_len()];
    conv::forward_naive(&g, &x64, &w64, &b64, &mut y);
    let mut dx = vec![0.0; g.x_len()];
    conv::backward_data_naive(&g, &dy64, &w64, &mut dx);
    let (mut dw, mut db) = (vec![0.0; g.w_len()], vec![0.0; g.c_out]);
    conv::backward_filter_naive(&g, &x64, &dy64, &mut dw, &mut db);
    for (name, got, want) in [
        ("y", &got[0], &y),
        ("dx", &got[1], &dx),
        ("dw", &got[2], &dw),
        ("db", &got[3], &db),
    ] {
        assert_close(&format!("conv {g:?} {name}"), got, want, REDUCTION_TOL);
    }
    // The fused ReLU: the same bits as the ReLU of the forward pass.
    let mut y_relu = vec![0.0; g.y_len()];
    conv::forward_relu(&g, &x, &w, &b, &mut y_relu);
    let relu: Vec<f32> = got[0]
        .iter()
        .map(|&v| if v > 0.0 { v } else { 0.0 })
        .collect();
    assert_bits_equal(&format!("conv {g:?} forward_relu"), &y_relu, &relu);
    let again = conv_fast(&g, &x, &w, &b, &dy);
    for (i, name) in ["y", "dx", "dw", "db"].iter().enumerate() {
        assert_bits_equal(&format!("conv {g:?} {name}, run twice"), &got[i], &again[i]);
    }
}

#[test]
fn conv_ragged() {
    check_conv(conv_geom(3, 5, (13, 11), 7, 3, 2, (1, 2), 1), 1);
    check_conv(conv_geom(1, 9, (10, 7), 15, 4, 3, (2, 1), 3), 2);
    check_conv(conv_geom(3, 6, (9, 9), 10, 1, 1, (0, 0), 2), 3);
    check_conv(conv_geom(2, 3, (12, 12), 5, 7, 5, (3, 3), 1), 4);
    check_conv(conv_geom(1, 1, (5, 4), 1, 5, 1, (0, 1), 1), 5);
    // More samples than the filter gradient has partials: several samples per slice, last short.
    check_conv(conv_geom(35, 3, (5, 6), 4, 3, 1, (1, 1), 1), 6);
}

#[test]
fn conv_paper_geometries() {
    // conv1: 11x11 stride 4 on 227 -> 55.
    let g = conv_geom(1, 3, (227, 227), 4, 11, 4, (0, 0), 1);
    assert_eq!((g.out_h(), g.out_w()), (55, 55));
    check_conv(g, 10);
    // net145's conv1: 224 with 3 px of padding after only -> 55.
    let g = conv_geom(1, 3, (224, 224), 4, 11, 4, (0, 3), 1);
    assert_eq!((g.out_h(), g.out_w()), (55, 55));
    check_conv(g, 11);
    // conv2: 5x5 pad 2 on 27 (two towers as groups).
    let g = conv_geom(2, 8, (27, 27), 6, 5, 1, (2, 2), 2);
    assert_eq!(g.out_h(), 27);
    check_conv(g, 12);
    // conv3 (both towers' input) and conv4/5 (own tower, as groups): 3x3 pad 1 on 13.
    let g = conv_geom(2, 16, (13, 13), 12, 3, 1, (1, 1), 1);
    assert_eq!(g.out_h(), 13);
    check_conv(g, 13);
    check_conv(conv_geom(3, 12, (13, 13), 8, 3, 1, (1, 1), 2), 14);
    // A tower's conv2 at full depth (48 maps in, 5x5): 1,200 taps a pixel make each sample's
    // columns 3.5 MB, so the fast paths cut them into bands of 4 output rows, padding at the
    // first and last; and the grouped form, each group's rows inside every band.
    check_conv(conv_geom(1, 48, (27, 27), 5, 5, 1, (2, 2), 1), 15);
    check_conv(conv_geom(1, 96, (27, 27), 6, 5, 1, (2, 2), 2), 16);
    // Forty filters a group at stride 1: two 16-channel tiles and a padded third in the direct
    // forward and data gradient, beside the filter gradient's im2col and GEMM.
    check_conv(conv_geom(2, 8, (9, 9), 80, 3, 1, (1, 1), 2), 17);
}

/// The direct filter gradient (stride 1, k = 3 and 5, f32 on AVX-512) in each of its register
/// blocks: 16, 32 and 64 filters a block (one, two, four vectors), full blocks of filter rows and
/// the single-row tail after them, a padded filter vector, groups and asymmetric padding.
#[test]
fn conv_direct_filter_blocks() {
    // 32 filters, 5x5: two vectors, 2 rows a block over 15 rows (a one-row tail).
    check_conv(conv_geom(2, 3, (7, 6), 32, 5, 1, (2, 2), 1), 20);
    // 64 filters, 5x5: four vectors, a row a block; asymmetric padding.
    check_conv(conv_geom(2, 5, (6, 7), 64, 5, 1, (1, 2), 1), 21);
    // 32 filters, 3x3: two vectors, 4 rows a block over 9 rows.
    check_conv(conv_geom(3, 3, (6, 5), 32, 3, 1, (1, 1), 1), 22);
    // Two groups of 64 filters, 3x3: four vectors, 2 rows a block over 9 rows.
    check_conv(conv_geom(2, 6, (6, 5), 128, 3, 1, (1, 1), 2), 23);
    // 20 filters, 3x3, no padding: a vector and a padded one (two vectors, 4 rows a block).
    check_conv(conv_geom(2, 4, (8, 9), 20, 3, 1, (0, 0), 1), 24);
    // Strided, as stride-1 convolutions over phase channels: 5x5 at stride 2 (3x3 phase
    // filters, asymmetric padding) and 9x9 at stride 2 (5x5 phase filters); the paper's conv1
    // (11x11 at stride 4) is in conv_paper_geometries.
    check_conv(conv_geom(3, 3, (17, 15), 16, 5, 2, (2, 1), 1), 28);
    check_conv(conv_geom(2, 2, (20, 19), 40, 9, 2, (3, 4), 1), 29);
    // The cifar preset's three layers as one tower runs them, at a batch of 20 (the filter
    // gradient's slices of 4 samples, `conv::filter_slice_len`; conv_ragged's batch of 35 has
    // the short last slice).
    check_conv(conv_geom(20, 3, (32, 32), 16, 5, 1, (2, 2), 1), 25);
    check_conv(conv_geom(20, 16, (15, 15), 16, 5, 1, (2, 2), 1), 26);
    check_conv(conv_geom(20, 32, (7, 7), 32, 5, 1, (2, 2), 1), 27);
}

// ---------------------------------------------------------------------------------------------
// Fully connected

fn check_fc(g: FcGeom, seed: u64) {
    let mut r = rng(seed);
    let x = uniform_f32(&mut r, g.n * g.inputs, -1.0, 1.0);
    let w = uniform_f32(&mut r, g.outputs * g.inputs, -1.0, 1.0);
    let b = uniform_f32(&mut r, g.outputs, -1.0, 1.0);
    let dy = uniform_f32(&mut r, g.n * g.outputs, -1.0, 1.0);
    let run = || {
        let mut y = vec![0.0; g.n * g.outputs];
        fc::forward(&g, &x, &w, &b, &mut y);
        let mut dx = vec![0.0; x.len()];
        fc::backward_data(&g, &dy, &w, &mut dx);
        let (mut dw, mut db) = (vec![0.0; w.len()], vec![0.0; b.len()]);
        fc::backward_filter(&g, &x, &dy, &mut dw, &mut db);
        [y, dx, dw, db]
    };
    let got = run();
    let (x64, w64, b64, dy64) = (to_f64(&x), to_f64(&w), to_f64(&b), to_f64(&dy));
    let mut y = vec![0.0; g.n * g.outputs];
    fc::forward_naive(&g, &x64, &w64, &b64, &mut y);
    let mut dx = vec![0.0; x.len()];
    fc::backward_data_naive(&g, &dy64, &w64, &mut dx);
    let (mut dw, mut db) = (vec![0.0; w.len()], vec![0.0; b.len()]);
    fc::backward_filter_naive(&g, &x64, &dy64, &mut dw, &mut db);
    let want = [y, dx, dw, db];
    let again = run();
    for (i, name) in ["y", "dx", "dw", "db"].iter().enumerate() {
        assert_close(
            &format!("fc {g:?} {name}"),
            &got[i],
            &want[i],
            REDUCTION_TOL,
        );
        assert_bits_equal(&format!("fc {g:?} {name}, run twice"), &got[i], &again[i]);
    }
}

#[test]
fn fc_ragged_and_paper() {
    check_fc(
        FcGeom {
            n: 3,
            inputs: 37,
            outputs: 11,
        },
        20,
    );
    check_fc(
        FcGeom {
            n: 1,
            inputs: 5,
            outputs: 1,
        },
        21,
    );
    // fc6's 9,216 inputs (6x6x256), a slice of its outputs.
    check_fc(
        FcGeom {
            n: 2,
            inputs: 9216,
            outputs: 24,
        },
        22,
    );
    // fc8 reading both towers' fc7.
    check_fc(
        FcGeom {
            n: 3,
            inputs: 4096,
            outputs: 10,
        },
        23,
    );
    // The streaming kernels' blocks with remainders: 11 samples (a full block of 8 and 3), 70
    // outputs (64 and 6), 1100 inputs (1024 and 76; 68 lanes of 16 and 12 left over).
    check_fc(
        FcGeom {
            n: 11,
            inputs: 1100,
            outputs: 70,
        },
        24,
    );
    // The largest streaming batch, 16 (two full sample blocks), an odd number of outputs in
    // each row block (64 and 3: a pair short), 600 inputs (one 512-column block of the data
    // gradient and 88 past it; 37 vectors of 16 and 8 left over).
    check_fc(
        FcGeom {
            n: 16,
            inputs: 600,
            outputs: 67,
        },
        26,
    );
    // A batch past the streaming kernels: GEMMs over blocks of 64 samples (70 = 64 + 6) and of
    // 64 weight rows.
    check_fc(
        FcGeom {
            n: 70,
            inputs: 37,
            outputs: 130,
        },
        25,
    );
}

/// The fc filter gradient fused with its SGD step (and with the data gradient, or without it)
/// against the three apart: the weights, momentum, bias and input gradients equal bit for bit
/// (the fused kernel's promise, `fc::backward_filter_sgd`).
#[test]
fn fc_gradients_fused_with_sgd_are_the_three_apart() {
    use alexnet::ops::sgd::{self, SgdStep};
    // Every sample count of one register block; 67 outputs (pairs and an odd last row), 1100
    // inputs (two 512-column tasks, then one of 4 vectors of 16 and 12 left over).
    let shapes = (1..=8).map(|n| FcGeom {
        n,
        inputs: 1100,
        outputs: 67,
    });
    for (seed, g) in (40..).zip(shapes.chain([FcGeom {
        n: 8,
        inputs: 9216,
        outputs: 20,
    }])) {
        if !fc::sgd_fuses::<f32>(&g) {
            eprintln!("skipped: this CPU has no fused fc update (AVX-512 f32 only)");
            return;
        }
        let mut r = rng(seed);
        let x = uniform_f32(&mut r, g.n * g.inputs, -1.0, 1.0);
        let dy = uniform_f32(&mut r, g.n * g.outputs, -1.0, 1.0);
        let w0 = uniform_f32(&mut r, g.outputs * g.inputs, -1.0, 1.0);
        let v0 = uniform_f32(&mut r, w0.len(), -0.01, 0.01);
        let step = SgdStep {
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 0.0005,
        };
        let (mut dw, mut db_ref) = (vec![0.0; w0.len()], vec![0.0; g.outputs]);
        fc::backward_filter(&g, &x, &dy, &mut dw, &mut db_ref);
        let (mut w_ref, mut v_ref) = (w0.clone(), v0.clone());
        sgd::update(&step, &mut w_ref, &mut v_ref, &dw);
        let mut dx_ref = vec![0.0; x.len()];
        fc::backward_data(&g, &dy, &w0, &mut dx_ref);
        for with_data in [true, false] {
            let what = format!("fused fc {g:?} (data gradient: {with_data})");
            let (mut w, mut v, mut db) = (w0.clone(), v0.clone(), vec![0.0; g.outputs]);
            let mut dx = vec![f32::NAN; x.len()];
            let wanted = with_data.then_some(&mut dx[..]);
            fc::backward_filter_sgd(&g, &x, &dy, &step, &mut w, &mut v, &mut db, wanted);
            assert_bits_equal(&format!("{what} weights"), &w, &w_ref);
            assert_bits_equal(&format!("{what} momentum"), &v, &v_ref);
            assert_bits_equal(&format!("{what} bias gradient"), &db, &db_ref);
            if with_data {
                assert_bits_equal(&format!("{what} input gradient"), &dx, &dx_ref);
            } else {
                assert!(
                    dx.iter().all(|d| d.is_nan()),
                    "{what}: wrote the input gradient"
                );
            }
            assert!(w != w0, "{what}: the weights did not move");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Response normalisation

type NormFwd32<G> = fn(&G, &[f32], &mut [f32]);
type NormBwd32<G> = fn(&G, &[f32], &[f32], &[f32], &mut [f32]);
type NormFwd64<G> = fn(&G, &[f64], &mut [f64]);
type NormBwd64<G> = fn(&G, &[f64], &[f64], &[f64], &mut [f64]);

/// `fast` in f32 against `naive` in f64, forward and backward, on inputs uniform in
/// `[-amp, amp)`; the backward of each side is fed its own forward output.
fn check_norm<G: std::fmt::Debug>(
    what: &str,
    g: &G,
    len: usize,
    amp: f64,
    fast: (NormFwd32<G>, NormBwd32<G>),
    naive: (NormFwd64<G>, NormBwd64<G>),
    seed: u64,
) {
    let mut r = rng(seed);
    let x = uniform_f32(&mut r, len, -amp, amp);
    let dy = uniform_f32(&mut r, len, -1.0, 1.0);
    let run = || {
        let mut y = vec![0.0; len];
        fast.0(g, &x, &mut y);
        let mut dx = vec![0.0; len];
        fast.1(g, &x, &y, &dy, &mut dx);
        (y, dx)
    };
    let (y, dx) = run();
    let (x64, dy64) = (to_f64(&x), to_f64(&dy));
    let mut y64 = vec![0.0; len];
    naive.0(g, &x64, &mut y64);
    let mut dx64 = vec![0.0; len];
    naive.1(g, &x64, &y64, &dy64, &mut dx64);
    assert_close(&format!("{what} {g:?} y"), &y, &y64, ELEMENTWISE_TOL);
    assert_close(&format!("{what} {g:?} dx"), &dx, &dx64, ELEMENTWISE_TOL);
    let (y2, dx2) = run();
    assert_bits_equal(&format!("{what} {g:?} y, run twice"), &y, &y2);
    assert_bits_equal(&format!("{what} {g:?} dx, run twice"), &dx, &dx2);
}

#[allow(clippy::too_many_arguments)]
fn lrn_geom(
    n: usize,
    c: usize,
    hw: (usize, usize),
    groups: usize,
    size: usize,
    k: f32,
    alpha: f32,
    alpha_over_n: bool,
) -> LrnGeom {
    LrnGeom {
        n,
        c,
        h: hw.0,
        w: hw.1,
        groups,
        size,
        k,
        alpha,
        beta: 0.75,
        alpha_over_n,
    }
}

fn check_lrn(g: LrnGeom, amp: f64, seed: u64) {
    check_norm(
        "lrn",
        &g,
        g.len(),
        amp,
        (lrn::forward::<f32>, lrn::backward::<f32>),
        (lrn::forward_naive::<f64>, lrn::backward_naive::<f64>),
        seed,
    );
}

#[test]
fn lrn_ragged_and_paper() {
    // Ragged, with α large enough that the cross-channel term matters.
    check_lrn(lrn_geom(3, 7, (5, 3), 1, 5, 2.0, 1.0, false), 1.5, 30);
    check_lrn(lrn_geom(1, 9, (4, 7), 3, 3, 1.0, 3.0, true), 1.5, 31);
    check_lrn(lrn_geom(3, 5, (1, 1), 1, 7, 2.0, 0.5, false), 1.5, 32);
    // The paper's LRN1 over one tower's 48 maps (k = 2, α = 1e-4 undivided, β = 0.75) and
    // net145's (α / n); inputs at the scale of conv outputs, so α·Σx² is a visible share of k.
    check_lrn(lrn_geom(2, 48, (27, 27), 1, 5, 2.0, 1e-4, false), 30.0, 33);
    check_lrn(lrn_geom(1, 48, (27, 27), 1, 5, 2.0, 1e-4, true), 30.0, 34);
    // LRN2 with both towers' 2x128 maps held as groups.
    check_lrn(lrn_geom(1, 256, (13, 13), 2, 5, 2.0, 1e-4, false), 30.0, 35);
}

#[test]
fn spatial_norm_ragged_and_paper() {
    let fast: (NormFwd32<SpatialNormGeom>, NormBwd32<SpatialNormGeom>) =
        (spatial_norm::forward::<f32>, spatial_norm::backward::<f32>);
    let naive: (NormFwd64<SpatialNormGeom>, NormBwd64<SpatialNormGeom>) = (
        spatial_norm::forward_naive::<f64>,
        spatial_norm::backward_naive::<f64>,
    );
    let geom = |n, c, h, w, size, alpha, alpha_over_area| SpatialNormGeom {
        n,
        c,
        h,
        w,
        size,
        k: 1.0,
        alpha,
        beta: 0.75,
        alpha_over_area,
    };
    let g = geom(3, 3, 7, 5, 3, 1.0, false);
    check_norm("spatial norm", &g, g.len(), 1.5, fast, naive, 40);
    let g = geom(1, 2, 3, 11, 5, 5.0, true);
    check_norm("spatial norm", &g, g.len(), 1.5, fast, naive, 41);
    // net145's rnorm after LRN2: 5x5, scale 0.001 / 25, power 0.75, constant 1, on 27x27 maps.
    let g = geom(2, 4, 27, 27, 5, 0.001, true);
    check_norm("spatial norm", &g, g.len(), 30.0, fast, naive, 42);
}

// ---------------------------------------------------------------------------------------------
// Max pooling

fn check_pool(g: PoolGeom, seed: u64) {
    let mut r = rng(seed);
    // ReLU'd inputs: half the values are exactly 0, so windows hold ties the rule must break.
    let x: Vec<f32> = uniform_f32(&mut r, g.x_len(), -1.0, 1.0)
        .into_iter()
        .map(|v| v.max(0.0))
        .collect();
    let dy = uniform_f32(&mut r, g.y_len(), -1.0, 1.0);
    let run = || {
        let (mut y, mut argmax) = (vec![0.0; g.y_len()], vec![0.0; g.y_len()]);
        pool::forward(&g, &x, &mut y, &mut argmax);
        let mut dx = vec![0.0; g.x_len()];
        pool::backward(&g, &argmax, &dy, &mut dx);
        (y, dx)
    };
    let (y, dx) = run();
    // Same type: selection and the same accumulation order make the fast path bit-exact.
    let mut y32 = vec![0.0; g.y_len()];
    pool::forward_naive(&g, &x, &mut y32);
    let mut dx32 = vec![0.0; g.x_len()];
    pool::backward_naive(&g, &x, &dy, &mut dx32);
    assert_bits_equal(&format!("pool {g:?} y vs naive f32"), &y, &y32);
    assert_bits_equal(&format!("pool {g:?} dx vs naive f32"), &dx, &dx32);
    // f64: the forward selects the same values; the backward sums at most four f32 values.
    let (x64, dy64) = (to_f64(&x), to_f64(&dy));
    let mut y64 = vec![0.0; g.y_len()];
    pool::forward_naive(&g, &x64, &mut y64);
    let mut dx64 = vec![0.0; g.x_len()];
    pool::backward_naive(&g, &x64, &dy64, &mut dx64);
    assert_eq!(to_f64(&y), y64, "pool {g:?} y vs naive f64");
    assert_close(&format!("pool {g:?} dx"), &dx, &dx64, ELEMENTWISE_TOL);
    let (y2, dx2) = run();
    assert_bits_equal(&format!("pool {g:?} y, run twice"), &y, &y2);
    assert_bits_equal(&format!("pool {g:?} dx, run twice"), &dx, &dx2);
}

fn pool_geom(n: usize, c: usize, h: usize, w: usize, size: usize, stride: usize) -> PoolGeom {
    PoolGeom {
        n,
        c,
        h,
        w,
        size,
        stride,
    }
}

#[test]
fn pool_ragged_and_paper() {
    check_pool(pool_geom(3, 5, 8, 11, 3, 2), 50);
    check_pool(pool_geom(1, 3, 9, 7, 2, 2), 51);
    check_pool(pool_geom(2, 1, 10, 10, 3, 3), 52);
    // The paper's chain: 55 -> 27 -> 13 -> 6 with z = 3, s = 2.
    for (i, (h, out, n, c)) in [(55, 27, 2, 3), (27, 13, 1, 5), (13, 6, 3, 4)]
        .into_iter()
        .enumerate()
    {
        let g = pool_geom(n, c, h, h, 3, 2);
        assert_eq!((g.out_h(), g.out_w()), (out, out));
        check_pool(g, 53 + i as u64);
    }
}

/// The tie rule and special values: inputs from a handful of levels (so windows hold equal
/// maxima in several rows and columns, where only row-major order decides), with NaN and -inf
/// among them (a NaN at a window's first tap wins in the reference, one anywhere else never
/// does). The fast forward scans a row's windows side by side in vector lanes; it must pick the
/// same tap.
#[test]
fn pool_ties_and_special_values() {
    let levels = [f32::NAN, f32::NEG_INFINITY, -1.0, 0.0, 0.5, 1.0, 1.0, 1.0];
    for (i, g) in [
        pool_geom(2, 3, 13, 13, 3, 2),
        pool_geom(1, 2, 9, 11, 2, 1),
        pool_geom(1, 2, 12, 10, 3, 3),
        pool_geom(1, 1, 7, 16, 4, 3),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = rng(70 + i as u64);
        let x: Vec<f32> = uniform_f32(&mut r, g.x_len(), 0.0, levels.len() as f64)
            .into_iter()
            .map(|v| levels[(v as usize).min(levels.len() - 1)])
            .collect();
        let dy = uniform_f32(&mut r, g.y_len(), -1.0, 1.0);
        let (mut y, mut argmax) = (vec![0.0; g.y_len()], vec![0.0; g.y_len()]);
        pool::forward(&g, &x, &mut y, &mut argmax);
        let mut dx = vec![0.0; g.x_len()];
        pool::backward(&g, &argmax, &dy, &mut dx);
        let mut y_ref = vec![0.0; g.y_len()];
        pool::forward_naive(&g, &x, &mut y_ref);
        let mut dx_ref = vec![0.0; g.x_len()];
        pool::backward_naive(&g, &x, &dy, &mut dx_ref);
        assert_bits_equal(&format!("pool {g:?} y, ties"), &y, &y_ref);
        assert_bits_equal(&format!("pool {g:?} dx, ties"), &dx, &dx_ref);
    }
}

// ---------------------------------------------------------------------------------------------
// Dropout

#[test]
fn dropout_matches_the_reference_mask() {
    let geoms = [
        // fc6's tower B half, as the network runs it.
        (3, 2048, 4096, 2048, 0.5),
        // An offset and lengths that straddle Philox blocks of four words.
        (3, 13, 29, 7, 0.3),
        (1, 1, 5, 3, 0.5),
    ];
    for (i, (n, units, units_total, unit_offset, p)) in geoms.into_iter().enumerate() {
        let g = DropoutGeom {
            first_sample: 5 * i,
            n,
            units,
            units_total,
            unit_offset,
            p,
            seed: 1234,
            stream: 5 + i as u64,
        };
        let mut r = rng(60 + i as u64);
        let x = uniform_f32(&mut r, g.len(), 0.5, 1.0);
        let (mut y, mut y_naive) = (vec![0.0; g.len()], vec![0.0; g.len()]);
        dropout::forward_train(&g, &x, &mut y);
        dropout::forward_train_naive(&g, &x, &mut y_naive);
        assert_bits_equal(&format!("dropout {g:?} forward"), &y, &y_naive);
        let (mut dx, mut dx_naive) = (vec![0.0; g.len()], vec![0.0; g.len()]);
        dropout::backward(&g, &x, &mut dx);
        dropout::backward_naive(&g, &x, &mut dx_naive);
        assert_bits_equal(&format!("dropout {g:?} backward"), &dx, &dx_naive);
        let mut y64 = vec![0.0; g.len()];
        dropout::forward_train_naive(&g, &to_f64(&x), &mut y64);
        assert_eq!(to_f64(&y), y64, "dropout {g:?} vs naive f64");
    }
}

// ---------------------------------------------------------------------------------------------
// Independence from the thread count

/// Every fast path on the same inputs inside rayon pools of 1 and 3 threads: bit-identical.
/// (The ops split samples or outputs over the pool, never a summed dimension.)
#[test]
fn results_do_not_depend_on_thread_count() {
    let run_all = || {
        let mut out: Vec<Vec<f32>> = Vec::new();
        let g = conv_geom(35, 4, (7, 9), 6, 3, 2, (1, 2), 2);
        let [x, w, b, dy] = conv_inputs(&g, 70);
        out.extend(conv_fast(&g, &x, &w, &b, &dy));

        let g = FcGeom {
            n: 5,
            inputs: 300,
            outputs: 70,
        };
        let mut r = rng(71);
        let (x, w, b) = (
            uniform_f32(&mut r, g.n * g.inputs, -1.0, 1.0),
            uniform_f32(&mut r, g.outputs * g.inputs, -1.0, 1.0),
            uniform_f32(&mut r, g.outputs, -1.0, 1.0),
        );
        let dy = uniform_f32(&mut r, g.n * g.outputs, -1.0, 1.0);
        let mut y = vec![0.0; g.n * g.outputs];
        fc::forward(&g, &x, &w, &b, &mut y);
        let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; 70]);
        fc::backward_data(&g, &dy, &w, &mut dx);
        fc::backward_filter(&g, &x, &dy, &mut dw, &mut db);
        out.extend([y, dx, dw, db]);

        let g = lrn_geom(5, 9, (6, 5), 1, 5, 2.0, 1.0, false);
        let x = uniform_f32(&mut r, g.len(), -1.5, 1.5);
        let dy = uniform_f32(&mut r, g.len(), -1.0, 1.0);
        let (mut y, mut dx) = (vec![0.0; g.len()], vec![0.0; g.len()]);
        lrn::forward(&g, &x, &mut y);
        lrn::backward(&g, &x, &y, &dy, &mut dx);
        out.extend([y, dx]);

        let g = SpatialNormGeom {
            n: 3,
            c: 4,
            h: 7,
            w: 6,
            size: 5,
            k: 1.0,
            alpha: 5.0,
            beta: 0.75,
            alpha_over_area: true,
        };
        let x = uniform_f32(&mut r, g.len(), -1.5, 1.5);
        let dy = uniform_f32(&mut r, g.len(), -1.0, 1.0);
        let (mut y, mut dx) = (vec![0.0; g.len()], vec![0.0; g.len()]);
        spatial_norm::forward(&g, &x, &mut y);
        spatial_norm::backward(&g, &x, &y, &dy, &mut dx);
        out.extend([y, dx]);

        let g = pool_geom(3, 4, 9, 11, 3, 2);
        let x = uniform_f32(&mut r, g.x_len(), -1.0, 1.0);
        let dy = uniform_f32(&mut r, g.y_len(), -1.0, 1.0);
        let (mut y, mut dx) = (vec![0.0; g.y_len()], vec![0.0; g.x_len()]);
        let mut argmax = vec![0.0; g.y_len()];
        pool::forward(&g, &x, &mut y, &mut argmax);
        pool::backward(&g, &argmax, &dy, &mut dx);
        out.extend([y, dx]);

        let g = DropoutGeom {
            first_sample: 0,
            n: 6,
            units: 50,
            units_total: 100,
            unit_offset: 50,
            p: 0.5,
            seed: 9,
            stream: 1,
        };
        let x = uniform_f32(&mut r, g.len(), -1.0, 1.0);
        let mut y = vec![0.0; g.len()];
        dropout::forward_train(&g, &x, &mut y);
        out.push(y);
        out
    };
    let in_pool = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("rayon pool")
            .install(run_all)
    };
    let (one, three) = (in_pool(1), in_pool(3));
    for (i, (a, b)) in one.iter().zip(&three).enumerate() {
        assert_bits_equal(&format!("output {i}, 1 vs 3 threads"), a, b);
    }
}
