//! Every op's backward pass against central finite differences of its forward pass, in f64, for
//! the naive reference and (where it is generic) the fast CPU path.
//!
//! Each check projects the output onto a fixed random vector `r` (`L = <r, y>`), so the backward
//! pass, fed `dy = r`, must return the full vector-Jacobian product `Jᵀr`, every entry of which
//! is compared with `(L(x + h·e_i) - L(x - h·e_i)) / 2h`.
//!
//! Tolerance. With `h = 1e-6` in f64 the truncation error of a central difference is
//! `h²/6·|L'''|` ≈ 1e-13 for the smooth O(1) functions here (max pooling, ReLU and dropout are
//! piecewise linear: no truncation error at all, provided no kink lies within `h`, which the
//! inputs below guarantee). Rounding dominates: each evaluation of `L` is off by about
//! `ε·Σ|rᵢyᵢ|` (ε = 2.2e-16, `Σ|rᵢyᵢ|` ≲ 300 on these shapes), so a difference quotient is off by
//! ≲ `ε·300 / h` ≈ 7e-8 absolutely. Each entry is measured against `max(|gᵢ|, 0.1·max|g|)` with
//! `max|g|` ≥ 0.1 asserted (O(1) in practice), which bounds the expected relative error near
//! 1e-7; the largest seen is 2.5e-8. The tolerance, 1e-6, leaves margin over that and still
//! catches a wrong entry off by 1e-5 of the gradient's scale (`checker_rejects_a_small_error`),
//! far below the O(1) error of a missing or mis-indexed term. Entries far below the gradient's
//! scale are judged at 10% of it: their own relative error is dominated by the absolute rounding
//! error above and means nothing.

pub mod support;

use alexnet::ops::{
    activation, conv, conv::ConvGeom, dropout, dropout::DropoutGeom, fc, fc::FcGeom, lrn,
    lrn::LrnGeom, pool, pool::PoolGeom, softmax, spatial_norm, spatial_norm::SpatialNormGeom,
};
use alexnet::tensor::max_rel_err;
use support::inputs::{distinct, rng, uniform};

const H: f64 = 1e-6;
const TOL: f64 = 1e-6;
/// Entries are judged relative to at least this fraction of the gradient's largest entry.
const FLOOR_FRACTION: f64 = 0.1;

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// Central-difference gradient of `loss` at `x`.
fn numeric_gradient(x: &[f64], loss: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let x0 = xp[i];
            xp[i] = x0 + H;
            let up = loss(&xp);
            xp[i] = x0 - H;
            let down = loss(&xp);
            xp[i] = x0;
            (up - down) / (2.0 * H)
        })
        .collect()
}

/// The largest relative error of `numeric` against `analytic`, each entry measured against at
/// least `FLOOR_FRACTION` of the largest analytic entry.
fn gradient_error(what: &str, analytic: &[f64], numeric: &[f64]) -> f64 {
    let scale = analytic.iter().fold(0.0f64, |m, g| m.max(g.abs()));
    assert!(
        scale >= 0.1,
        "{what}: gradient too small to check (max |g| = {scale:e})"
    );
    max_rel_err(numeric, analytic, FLOOR_FRACTION * scale)
}

fn assert_gradient(what: &str, analytic: &[f64], numeric: &[f64]) {
    let err = gradient_error(what, analytic, numeric);
    assert!(
        err < TOL,
        "{what}: finite differences disagree with the backward pass, relative error {err:e}"
    );
}

/// The check itself: a gradient wrong in one entry by 1e-5 of its scale must fail it.
#[test]
fn checker_rejects_a_small_error() {
    let mut r = rng(99);
    let x = uniform(&mut r, 20, -1.0, 1.0);
    let proj = uniform(&mut r, 20, -1.0, 1.0);
    let mut dx = vec![0.0; 20];
    let mut y = vec![0.0; 20];
    activation::tanh_forward(&x, &mut y);
    activation::tanh_backward(&y, &proj, &mut dx);
    let numeric = numeric_gradient(&x, |x| {
        let mut y = vec![0.0; x.len()];
        activation::tanh_forward(x, &mut y);
        dot(&proj, &y)
    });
    assert!(gradient_error("tanh", &dx, &numeric) < TOL);
    let scale = dx.iter().fold(0.0f64, |m, g| m.max(g.abs()));
    dx[7] += 1e-5 * scale;
    assert!(gradient_error("tanh, one entry off", &dx, &numeric) > TOL);
}

// ---------------------------------------------------------------------------------------------
// Convolution

type ConvFwd = fn(&ConvGeom, &[f64], &[f64], &[f64], &mut [f64]);
type ConvData = fn(&ConvGeom, &[f64], &[f64], &mut [f64]);
type ConvFilter = fn(&ConvGeom, &[f64], &[f64], &mut [f64], &mut [f64]);

const CONV_IMPLS: [(&str, ConvFwd, ConvData, ConvFilter); 2] = [
    (
        "naive",
        conv::forward_naive::<f64>,
        conv::backward_data_naive::<f64>,
        conv::backward_filter_naive::<f64>,
    ),
    (
        "fast",
        conv::forward::<f64>,
        conv::backward_data::<f64>,
        conv::backward_filter::<f64>,
    ),
];

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

fn check_conv(g: ConvGeom, seed: u64) {
    let mut r = rng(seed);
    let x = uniform(&mut r, g.x_len(), -1.0, 1.0);
    let w = uniform(&mut r, g.w_len(), -1.0, 1.0);
    let b = uniform(&mut r, g.c_out, -1.0, 1.0);
    let proj = uniform(&mut r, g.y_len(), -1.0, 1.0);
    for (name, fwd, data, filter) in CONV_IMPLS {
        let loss = |x: &[f64], w: &[f64], b: &[f64]| {
            let mut y = vec![0.0; g.y_len()];
            fwd(&g, x, w, b, &mut y);
            dot(&proj, &y)
        };
        let mut dx = vec![0.0; g.x_len()];
        data(&g, &proj, &w, &mut dx);
        let (mut dw, mut db) = (vec![0.0; g.w_len()], vec![0.0; g.c_out]);
        filter(&g, &x, &proj, &mut dw, &mut db);
        let what = format!("conv {name} {g:?}");
        assert_gradient(
            &format!("{what} dx"),
            &dx,
            &numeric_gradient(&x, |x| loss(x, &w, &b)),
        );
        assert_gradient(
            &format!("{what} dw"),
            &dw,
            &numeric_gradient(&w, |w| loss(&x, w, &b)),
        );
        assert_gradient(
            &format!("{what} db"),
            &db,
            &numeric_gradient(&b, |b| loss(&x, &w, b)),
        );
    }
}

#[test]
fn conv_stride_1_with_and_without_padding() {
    check_conv(conv_geom(1, 2, (5, 5), 3, 3, 1, (0, 0), 1), 1);
    check_conv(conv_geom(3, 2, (7, 9), 4, 3, 1, (1, 1), 2), 2);
    check_conv(conv_geom(1, 4, (6, 5), 2, 3, 1, (2, 2), 2), 3);
}

#[test]
fn conv_stride_2_and_4() {
    check_conv(conv_geom(3, 4, (7, 9), 4, 3, 2, (1, 1), 2), 4);
    check_conv(conv_geom(1, 3, (9, 7), 2, 5, 2, (2, 2), 1), 5);
    check_conv(conv_geom(1, 3, (11, 13), 2, 5, 4, (0, 0), 1), 6);
    check_conv(conv_geom(3, 2, (9, 10), 2, 3, 4, (1, 1), 2), 7);
}

#[test]
fn conv_asymmetric_padding() {
    // net145's conv1 in miniature: no padding before, 3 after.
    check_conv(conv_geom(3, 2, (8, 7), 2, 4, 2, (0, 3), 1), 8);
    check_conv(conv_geom(1, 2, (7, 9), 4, 3, 1, (2, 0), 2), 9);
    check_conv(conv_geom(3, 3, (5, 6), 3, 3, 2, (1, 2), 1), 10);
}

// ---------------------------------------------------------------------------------------------
// Fully connected

type FcFwd = fn(&FcGeom, &[f64], &[f64], &[f64], &mut [f64]);
type FcData = fn(&FcGeom, &[f64], &[f64], &mut [f64]);
type FcFilter = fn(&FcGeom, &[f64], &[f64], &mut [f64], &mut [f64]);

const FC_IMPLS: [(&str, FcFwd, FcData, FcFilter); 2] = [
    (
        "naive",
        fc::forward_naive::<f64>,
        fc::backward_data_naive::<f64>,
        fc::backward_filter_naive::<f64>,
    ),
    (
        "fast",
        fc::forward::<f64>,
        fc::backward_data::<f64>,
        fc::backward_filter::<f64>,
    ),
];

#[test]
fn fc() {
    for (n, seed) in [(1, 11), (3, 12)] {
        let g = FcGeom {
            n,
            inputs: 7,
            outputs: 5,
        };
        let mut r = rng(seed);
        let x = uniform(&mut r, n * g.inputs, -1.0, 1.0);
        let w = uniform(&mut r, g.outputs * g.inputs, -1.0, 1.0);
        let b = uniform(&mut r, g.outputs, -1.0, 1.0);
        let proj = uniform(&mut r, n * g.outputs, -1.0, 1.0);
        for (name, fwd, data, filter) in FC_IMPLS {
            let loss = |x: &[f64], w: &[f64], b: &[f64]| {
                let mut y = vec![0.0; n * g.outputs];
                fwd(&g, x, w, b, &mut y);
                dot(&proj, &y)
            };
            let mut dx = vec![0.0; x.len()];
            data(&g, &proj, &w, &mut dx);
            let (mut dw, mut db) = (vec![0.0; w.len()], vec![0.0; b.len()]);
            filter(&g, &x, &proj, &mut dw, &mut db);
            let what = format!("fc {name} {g:?}");
            assert_gradient(
                &format!("{what} dx"),
                &dx,
                &numeric_gradient(&x, |x| loss(x, &w, &b)),
            );
            assert_gradient(
                &format!("{what} dw"),
                &dw,
                &numeric_gradient(&w, |w| loss(&x, w, &b)),
            );
            assert_gradient(
                &format!("{what} db"),
                &db,
                &numeric_gradient(&b, |b| loss(&x, &w, b)),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Activations

#[test]
fn relu() {
    let mut r = rng(21);
    // Magnitudes in [0.05, 1) with random signs: the kink at 0 is far outside ±h.
    let x: Vec<f64> = uniform(&mut r, 60, 0.05, 1.0)
        .into_iter()
        .zip(uniform(&mut r, 60, -1.0, 1.0))
        .map(|(m, s)| m.copysign(s))
        .collect();
    let proj = uniform(&mut r, x.len(), -1.0, 1.0);
    let mut y = vec![0.0; x.len()];
    activation::relu_forward(&x, &mut y);
    let mut dx = vec![0.0; x.len()];
    activation::relu_backward(&y, &proj, &mut dx);
    assert!(
        dx.contains(&0.0) && dx.iter().any(|&d| d != 0.0),
        "relu: inputs must exercise both sides of the kink"
    );
    let numeric = numeric_gradient(&x, |x| {
        let mut y = vec![0.0; x.len()];
        activation::relu_forward(x, &mut y);
        dot(&proj, &y)
    });
    assert_gradient("relu", &dx, &numeric);
}

#[test]
fn tanh() {
    let mut r = rng(22);
    let x = uniform(&mut r, 60, -2.0, 2.0);
    let proj = uniform(&mut r, x.len(), -1.0, 1.0);
    let mut y = vec![0.0; x.len()];
    activation::tanh_forward(&x, &mut y);
    let mut dx = vec![0.0; x.len()];
    activation::tanh_backward(&y, &proj, &mut dx);
    let numeric = numeric_gradient(&x, |x| {
        let mut y = vec![0.0; x.len()];
        activation::tanh_forward(x, &mut y);
        dot(&proj, &y)
    });
    assert_gradient("tanh", &dx, &numeric);
}

// ---------------------------------------------------------------------------------------------
// Response normalisation

/// Both normalisations have `dx = dy·s^-β − (cross term)`; with `y = x·s^-β` the first part is
/// `dy·y/x`. Returns `|cross term| / |dx|` (2-norms), to show the non-linear part is large enough
/// for a gradient check to notice if it were wrong or missing.
fn cross_term_share(x: &[f64], y: &[f64], dy: &[f64], dx: &[f64]) -> f64 {
    let (mut cross, mut total) = (0.0, 0.0);
    for i in 0..x.len() {
        cross += (dy[i] * y[i] / x[i] - dx[i]).powi(2);
        total += dx[i].powi(2);
    }
    (cross / total).sqrt()
}

type NormFwd<G> = fn(&G, &[f64], &mut [f64]);
type NormBwd<G> = fn(&G, &[f64], &[f64], &[f64], &mut [f64]);

fn check_norm<G: std::fmt::Debug>(
    op: &str,
    g: &G,
    len: usize,
    impls: [(&str, NormFwd<G>, NormBwd<G>); 2],
    seed: u64,
) {
    let mut r = rng(seed);
    // Magnitudes in [0.2, 1.5): s's sum of squares is O(1), and y / x is defined.
    let x: Vec<f64> = uniform(&mut r, len, 0.2, 1.5)
        .into_iter()
        .zip(uniform(&mut r, len, -1.0, 1.0))
        .map(|(m, s)| m.copysign(s))
        .collect();
    let proj = uniform(&mut r, len, -1.0, 1.0);
    for (name, fwd, bwd) in impls {
        let mut y = vec![0.0; len];
        fwd(g, &x, &mut y);
        let mut dx = vec![0.0; len];
        bwd(g, &x, &y, &proj, &mut dx);
        let share = cross_term_share(&x, &y, &proj, &dx);
        assert!(
            share > 0.1,
            "{op} {name} {g:?}: the non-linear term is too small ({share:.3}) for the check to bite"
        );
        let numeric = numeric_gradient(&x, |x| {
            let mut y = vec![0.0; len];
            fwd(g, x, &mut y);
            dot(&proj, &y)
        });
        assert_gradient(&format!("{op} {name} {g:?}"), &dx, &numeric);
    }
}

#[test]
fn lrn() {
    let impls: [(&str, NormFwd<LrnGeom>, NormBwd<LrnGeom>); 2] = [
        (
            "naive",
            lrn::forward_naive::<f64>,
            lrn::backward_naive::<f64>,
        ),
        ("fast", lrn::forward::<f64>, lrn::backward::<f64>),
    ];
    // α large enough that α'·Σx² is comparable to k: the cross-channel term then carries a
    // sizeable share of the gradient (asserted in check_norm).
    let cases = [
        (1, 5, 1.0, false),
        (1, 5, 5.0, true),
        (2, 3, 1.0, false),
        (2, 5, 4.0, true),
    ];
    for (seed, (groups, size, alpha, alpha_over_n)) in cases.into_iter().enumerate() {
        let g = LrnGeom {
            n: 2,
            c: 8,
            h: 3,
            w: 4,
            groups,
            size,
            k: 1.0,
            alpha,
            beta: 0.75,
            alpha_over_n,
        };
        check_norm("lrn", &g, g.len(), impls, 30 + seed as u64);
    }
    // An odd channel count with a window wider than half the channels.
    let g = LrnGeom {
        n: 1,
        c: 7,
        h: 2,
        w: 3,
        groups: 1,
        size: 5,
        k: 2.0,
        alpha: 2.0,
        beta: 0.75,
        alpha_over_n: false,
    };
    check_norm("lrn", &g, g.len(), impls, 39);
}

#[test]
fn spatial_norm() {
    let impls: [(&str, NormFwd<SpatialNormGeom>, NormBwd<SpatialNormGeom>); 2] = [
        (
            "naive",
            spatial_norm::forward_naive::<f64>,
            spatial_norm::backward_naive::<f64>,
        ),
        (
            "fast",
            spatial_norm::forward::<f64>,
            spatial_norm::backward::<f64>,
        ),
    ];
    let cases = [
        (2, 2, 5, 6, 3, 1.0, false),
        (1, 1, 7, 4, 5, 20.0, true),
        (1, 3, 4, 4, 5, 1.0, false),
    ];
    for (seed, (n, c, h, w, size, alpha, alpha_over_area)) in cases.into_iter().enumerate() {
        let g = SpatialNormGeom {
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
        check_norm("spatial norm", &g, g.len(), impls, 40 + seed as u64);
    }
}

// ---------------------------------------------------------------------------------------------
// Max pooling

/// The fast pair through the argmax the forward pass records (recomputed here from `x`, as
/// the gradient check calls the backward pass on its own).
fn pool_forward_fast(g: &PoolGeom, x: &[f64], y: &mut [f64]) {
    pool::forward(g, x, y, &mut vec![0.0; g.y_len()]);
}
fn pool_backward_fast(g: &PoolGeom, x: &[f64], dy: &[f64], dx: &mut [f64]) {
    let (mut y, mut argmax) = (vec![0.0; g.y_len()], vec![0.0; g.y_len()]);
    pool::forward(g, x, &mut y, &mut argmax);
    pool::backward(g, &argmax, dy, dx);
}

#[test]
fn max_pool_overlapping_and_plain() {
    type PoolFwd = fn(&PoolGeom, &[f64], &mut [f64]);
    type PoolBwd = fn(&PoolGeom, &[f64], &[f64], &mut [f64]);
    let impls: [(&str, PoolFwd, PoolBwd); 2] = [
        (
            "naive",
            pool::forward_naive::<f64>,
            pool::backward_naive::<f64>,
        ),
        ("fast", pool_forward_fast, pool_backward_fast),
    ];
    let cases = [(2, 2, 7, 7, 3, 2), (1, 3, 7, 9, 3, 2), (2, 2, 6, 8, 2, 2)];
    for (seed, (n, c, h, w, size, stride)) in cases.into_iter().enumerate() {
        let g = PoolGeom {
            n,
            c,
            h,
            w,
            size,
            stride,
        };
        let mut r = rng(50 + seed as u64);
        // Distinct values at least 2/len ≥ 3e-3 apart: no argmax flips under ±h.
        let x = distinct(&mut r, g.x_len());
        let proj = uniform(&mut r, g.y_len(), -1.0, 1.0);
        for (name, fwd, bwd) in impls {
            let mut dx = vec![0.0; g.x_len()];
            bwd(&g, &x, &proj, &mut dx);
            let numeric = numeric_gradient(&x, |x| {
                let mut y = vec![0.0; g.y_len()];
                fwd(&g, x, &mut y);
                dot(&proj, &y)
            });
            assert_gradient(&format!("max pool {name} {g:?}"), &dx, &numeric);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dropout

#[test]
fn dropout() {
    type DropFwd = fn(&DropoutGeom, &[f64], &mut [f64]);
    type DropBwd = fn(&DropoutGeom, &[f64], &mut [f64]);
    let impls: [(&str, DropFwd, DropBwd); 2] = [
        (
            "naive",
            dropout::forward_train_naive::<f64>,
            dropout::backward_naive::<f64>,
        ),
        (
            "fast",
            dropout::forward_train::<f64>,
            dropout::backward::<f64>,
        ),
    ];
    let g = DropoutGeom {
        first_sample: 0,
        n: 3,
        units: 10,
        units_total: 16,
        unit_offset: 4,
        p: 0.5,
        seed: 7,
        stream: 3,
    };
    let mut r = rng(60);
    let x = uniform(&mut r, g.len(), -1.0, 1.0);
    let proj = uniform(&mut r, g.len(), -1.0, 1.0);
    for (name, fwd, bwd) in impls {
        let mut dx = vec![0.0; g.len()];
        bwd(&g, &proj, &mut dx);
        assert!(
            dx.contains(&0.0) && dx.iter().any(|&d| d != 0.0),
            "dropout {name}: the mask must drop some units and keep others"
        );
        let numeric = numeric_gradient(&x, |x| {
            let mut y = vec![0.0; g.len()];
            fwd(&g, x, &mut y);
            dot(&proj, &y)
        });
        assert_gradient(&format!("dropout {name}"), &dx, &numeric);
    }
}

// ---------------------------------------------------------------------------------------------
// Softmax cross-entropy

#[test]
fn softmax_cross_entropy() {
    let (n, classes) = (3, 5);
    let mut r = rng(70);
    let logits = uniform(&mut r, n * classes, -3.0, 3.0);
    let labels = [4u32, 0, 2];
    let mut probs = vec![0.0; logits.len()];
    let mut dlogits = vec![0.0; logits.len()];
    softmax::xent_naive(n, classes, &logits, &labels, &mut probs, &mut dlogits);
    let numeric = numeric_gradient(&logits, |z| {
        let (mut p, mut d) = (vec![0.0; z.len()], vec![0.0; z.len()]);
        softmax::xent_naive(n, classes, z, &labels, &mut p, &mut d)
    });
    // Entries of (p - onehot) / n are up to 1/3 here, above the 0.1 scale assert_gradient wants.
    assert_gradient("softmax cross-entropy", &dlogits, &numeric);
}
