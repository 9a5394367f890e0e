//! Every op's backward pass against central finite differences, in f64, for the naive reference
//! and (where it is generic) the fast CPU path.
//!
//! Method: for a random projection `r` of the output, `L(x) = <r, f(x)>`; the backward pass fed
//! `dy = r` must give `∂L/∂x`. Each input element is perturbed by ±h with h = 1e-5 and the
//! difference is taken elementwise before projecting, `<r, f(x+h) - f(x-h)> / 2h`, so that the
//! large common part cancels exactly: the truncation error is O(h²·f''') ≈ 1e-10 and the rounding
//! error ≈ eps·|y|/h ≈ 1e-11 per output, so analytic and numeric gradients of order one agree to
//! ~1e-9. The tolerance, 1e-6 relative to max(|numeric|, 1e-3), leaves a wide margin and still
//! catches any wrong term.

use alexnet::ops::{activation, conv, dropout, fc, lrn, pool, softmax, spatial_norm};
use alexnet::ops::{
    conv::ConvGeom, dropout::DropoutGeom, fc::FcGeom, lrn::LrnGeom, philox, pool::PoolGeom,
    spatial_norm::SpatialNormGeom,
};

const H: f64 = 1e-5;
const TOL: f64 = 1e-6;
const FLOOR: f64 = 1e-3;

fn random(len: usize, stream: u64, lo: f64, hi: f64) -> Vec<f64> {
    (0..len as u64)
        .map(|i| lo + (hi - lo) * philox::uniform(philox::word(42, stream, i)) as f64)
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Checks `analytic` (the gradient of `<r, f(inputs)>` with respect to `inputs[which]`) against
/// central differences of `f`.
fn check(
    what: &str,
    inputs: &[Vec<f64>],
    which: usize,
    r: &[f64],
    f: &dyn Fn(&[Vec<f64>]) -> Vec<f64>,
    analytic: &[f64],
) {
    let mut x = inputs.to_vec();
    assert_eq!(analytic.len(), x[which].len(), "{what}: gradient length");
    let mut worst = 0.0f64;
    for i in 0..x[which].len() {
        let orig = x[which][i];
        x[which][i] = orig + H;
        let up = f(&x);
        x[which][i] = orig - H;
        let down = f(&x);
        x[which][i] = orig;
        let diff: Vec<f64> = up.iter().zip(&down).map(|(u, d)| u - d).collect();
        let numeric = dot(r, &diff) / (2.0 * H);
        let err = (analytic[i] - numeric).abs() / numeric.abs().max(FLOOR);
        worst = worst.max(err);
        assert!(
            err < TOL,
            "{what}: input {which} element {i}: analytic {} numeric {numeric}",
            analytic[i]
        );
    }
    assert!(
        analytic.iter().any(|&g| g != 0.0),
        "{what}: the gradient is identically zero, the check proves nothing"
    );
    println!(
        "{what}: input {which}, {} elements, worst relative error {worst:.2e}",
        analytic.len()
    );
}

fn conv_case(g: ConvGeom, fast: bool) {
    let what = format!("conv {} {g:?}", if fast { "fast" } else { "naive" });
    let x = random(g.x_len(), 1, -1.0, 1.0);
    let w = random(g.w_len(), 2, -1.0, 1.0);
    let b = random(g.c_out, 3, -1.0, 1.0);
    let r = random(g.y_len(), 4, -1.0, 1.0);
    let f = |v: &[Vec<f64>]| {
        let mut y = vec![0.0; g.y_len()];
        if fast {
            conv::forward(&g, &v[0], &v[1], &v[2], &mut y);
        } else {
            conv::forward_naive(&g, &v[0], &v[1], &v[2], &mut y);
        }
        y
    };
    let (mut dx, mut dw, mut db) = (
        vec![0.0; g.x_len()],
        vec![0.0; g.w_len()],
        vec![0.0; g.c_out],
    );
    if fast {
        conv::backward_data(&g, &r, &w, &mut dx);
        conv::backward_filter(&g, &x, &r, &mut dw, &mut db);
    } else {
        conv::backward_data_naive(&g, &r, &w, &mut dx);
        conv::backward_filter_naive(&g, &x, &r, &mut dw, &mut db);
    }
    let inputs = [x, w, b];
    check(&what, &inputs, 0, &r, &f, &dx);
    check(&what, &inputs, 1, &r, &f, &dw);
    check(&what, &inputs, 2, &r, &f, &db);
}

#[test]
fn convolution() {
    let geoms = [
        ConvGeom {
            n: 1,
            c_in: 3,
            h: 7,
            w: 9,
            c_out: 4,
            k: 3,
            stride: 1,
            pad: 1,
            pad_end: 1,
            groups: 1,
        },
        ConvGeom {
            n: 3,
            c_in: 4,
            h: 9,
            w: 7,
            c_out: 6,
            k: 3,
            stride: 2,
            pad: 0,
            pad_end: 0,
            groups: 2,
        },
        ConvGeom {
            n: 2,
            c_in: 3,
            h: 11,
            w: 11,
            c_out: 2,
            k: 5,
            stride: 4,
            pad: 2,
            pad_end: 2,
            groups: 1,
        },
        // net145's conv1 shape of padding: none before, some after.
        ConvGeom {
            n: 2,
            c_in: 2,
            h: 10,
            w: 10,
            c_out: 3,
            k: 4,
            stride: 2,
            pad: 0,
            pad_end: 2,
            groups: 1,
        },
        ConvGeom {
            n: 1,
            c_in: 6,
            h: 5,
            w: 5,
            c_out: 3,
            k: 1,
            stride: 1,
            pad: 0,
            pad_end: 0,
            groups: 3,
        },
    ];
    for g in geoms {
        conv_case(g, false);
        conv_case(g, true);
    }
}

#[test]
fn fully_connected() {
    for fast in [false, true] {
        let g = FcGeom {
            n: 3,
            inputs: 7,
            outputs: 5,
        };
        let (x, w, b, r) = (
            random(21, 1, -1.0, 1.0),
            random(35, 2, -1.0, 1.0),
            random(5, 3, -1.0, 1.0),
            random(15, 4, -1.0, 1.0),
        );
        let f = |v: &[Vec<f64>]| {
            let mut y = vec![0.0; 15];
            if fast {
                fc::forward(&g, &v[0], &v[1], &v[2], &mut y)
            } else {
                fc::forward_naive(&g, &v[0], &v[1], &v[2], &mut y)
            }
            y
        };
        let (mut dx, mut dw, mut db) = (vec![0.0; 21], vec![0.0; 35], vec![0.0; 5]);
        if fast {
            fc::backward_data(&g, &r, &w, &mut dx);
            fc::backward_filter(&g, &x, &r, &mut dw, &mut db);
        } else {
            fc::backward_data_naive(&g, &r, &w, &mut dx);
            fc::backward_filter_naive(&g, &x, &r, &mut dw, &mut db);
        }
        let inputs = [x, w, b];
        for (i, grad) in [dx, dw, db].iter().enumerate() {
            check(&format!("fc fast={fast}"), &inputs, i, &r, &f, grad);
        }
    }
}

#[test]
fn activations() {
    // Keep ReLU inputs away from its kink: |x| >= 0.05 while the step is 1e-6.
    let x: Vec<f64> = random(40, 1, -1.0, 1.0)
        .into_iter()
        .map(|v| if v.abs() < 0.05 { v + 0.1 } else { v })
        .collect();
    let r = random(40, 2, -1.0, 1.0);
    for (name, fwd, bwd) in [
        (
            "relu",
            activation::relu_forward::<f64> as fn(&[f64], &mut [f64]),
            activation::relu_backward::<f64> as fn(&[f64], &[f64], &mut [f64]),
        ),
        (
            "tanh",
            activation::tanh_forward::<f64>,
            activation::tanh_backward::<f64>,
        ),
    ] {
        let f = |v: &[Vec<f64>]| {
            let mut y = vec![0.0; 40];
            fwd(&v[0], &mut y);
            y
        };
        let y = f(std::slice::from_ref(&x));
        let mut dx = vec![0.0; 40];
        bwd(&y, &r, &mut dx);
        check(name, std::slice::from_ref(&x), 0, &r, &f, &dx);
    }
}

#[test]
fn local_response_normalisation() {
    for (groups, alpha_over_n, size) in [(1, false, 5), (2, true, 3), (1, true, 5)] {
        for fast in [false, true] {
            // alpha large enough that the denominator varies strongly with the inputs.
            let g = LrnGeom {
                n: 2,
                c: 8,
                h: 3,
                w: 2,
                groups,
                size,
                k: 2.0,
                alpha: 0.7,
                beta: 0.75,
                alpha_over_n,
            };
            let x = random(g.len(), 1, -2.0, 2.0);
            let r = random(g.len(), 2, -1.0, 1.0);
            let f = |v: &[Vec<f64>]| {
                let mut y = vec![0.0; g.len()];
                if fast {
                    lrn::forward(&g, &v[0], &mut y)
                } else {
                    lrn::forward_naive(&g, &v[0], &mut y)
                }
                y
            };
            let y = f(std::slice::from_ref(&x));
            let mut dx = vec![0.0; g.len()];
            if fast {
                lrn::backward(&g, &x, &y, &r, &mut dx)
            } else {
                lrn::backward_naive(&g, &x, &y, &r, &mut dx)
            }
            check(
                &format!("lrn fast={fast} {g:?}"),
                std::slice::from_ref(&x),
                0,
                &r,
                &f,
                &dx,
            );
        }
    }
}

#[test]
fn spatial_normalisation() {
    for (size, over_area) in [(5, true), (3, false)] {
        for fast in [false, true] {
            let g = SpatialNormGeom {
                n: 2,
                c: 2,
                h: 6,
                w: 5,
                size,
                k: 1.0,
                alpha: 0.9,
                beta: 0.75,
                alpha_over_area: over_area,
            };
            let x = random(g.len(), 1, -2.0, 2.0);
            let r = random(g.len(), 2, -1.0, 1.0);
            let f = |v: &[Vec<f64>]| {
                let mut y = vec![0.0; g.len()];
                if fast {
                    spatial_norm::forward(&g, &v[0], &mut y)
                } else {
                    spatial_norm::forward_naive(&g, &v[0], &mut y)
                }
                y
            };
            let y = f(std::slice::from_ref(&x));
            let mut dx = vec![0.0; g.len()];
            if fast {
                spatial_norm::backward(&g, &x, &y, &r, &mut dx)
            } else {
                spatial_norm::backward_naive(&g, &x, &y, &r, &mut dx)
            }
            check(
                &format!("spatial norm fast={fast} {g:?}"),
                std::slice::from_ref(&x),
                0,
                &r,
                &f,
                &dx,
            );
        }
    }
}

#[test]
fn max_pooling() {
    for (size, stride) in [(3, 2), (2, 2), (3, 1)] {
        for fast in [false, true] {
            let g = PoolGeom {
                n: 2,
                c: 3,
                h: 7,
                w: 8,
                size,
                stride,
            };
            // Distinct values 0.01 apart (a permutation), so a ±1e-5 step never changes a
            // window's maximum.
            let len = g.x_len();
            let mut order: Vec<(u32, usize)> = (0..len)
                .map(|i| (philox::word(5, 5, i as u64), i))
                .collect();
            order.sort();
            let mut x = vec![0.0; len];
            for (rank, &(_, i)) in order.iter().enumerate() {
                x[i] = rank as f64 * 0.01;
            }
            let r = random(g.y_len(), 2, -1.0, 1.0);
            let f = |v: &[Vec<f64>]| {
                let mut y = vec![0.0; g.y_len()];
                if fast {
                    pool::forward(&g, &v[0], &mut y)
                } else {
                    pool::forward_naive(&g, &v[0], &mut y)
                }
                y
            };
            let mut dx = vec![0.0; len];
            if fast {
                pool::backward(&g, &x, &r, &mut dx)
            } else {
                pool::backward_naive(&g, &x, &r, &mut dx)
            }
            check(
                &format!("max pool fast={fast} {size}/{stride}"),
                std::slice::from_ref(&x),
                0,
                &r,
                &f,
                &dx,
            );
        }
    }
}

#[test]
fn dropout_and_softmax_cross_entropy() {
    let g = DropoutGeom {
        n: 3,
        units: 10,
        units_total: 20,
        unit_offset: 10,
        p: 0.5,
        seed: 9,
        stream: 4,
    };
    let x = random(30, 1, -1.0, 1.0);
    let r = random(30, 2, -1.0, 1.0);
    for fast in [false, true] {
        let f = |v: &[Vec<f64>]| {
            let mut y = vec![0.0; 30];
            if fast {
                dropout::forward_train(&g, &v[0], &mut y)
            } else {
                dropout::forward_train_naive(&g, &v[0], &mut y)
            }
            y
        };
        let mut dx = vec![0.0; 30];
        if fast {
            dropout::backward(&g, &r, &mut dx)
        } else {
            dropout::backward_naive(&g, &r, &mut dx)
        }
        check(
            &format!("dropout fast={fast}"),
            std::slice::from_ref(&x),
            0,
            &r,
            &f,
            &dx,
        );
    }

    // The loss is a scalar: r = [1] and f returns [loss].
    let (n, classes) = (3, 7);
    let logits = random(n * classes, 3, -3.0, 3.0);
    let labels = [2u32, 6, 0];
    let f = |v: &[Vec<f64>]| {
        let (mut p, mut d) = (vec![0.0; n * classes], vec![0.0; n * classes]);
        vec![softmax::xent_naive(
            n, classes, &v[0], &labels, &mut p, &mut d,
        )]
    };
    let (mut probs, mut dlogits) = (vec![0.0; n * classes], vec![0.0; n * classes]);
    softmax::xent_naive(n, classes, &logits, &labels, &mut probs, &mut dlogits);
    check(
        "softmax cross-entropy",
        std::slice::from_ref(&logits),
        0,
        &[1.0],
        &f,
        &dlogits,
    );
}
