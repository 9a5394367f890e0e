//! The fast CPU paths (f32) against the naive references (f64), on ragged shapes and on the
//! paper's layer geometries with reduced batch and channels; and the fast paths are deterministic.
//!
//! Tolerances: an f32 sum of K products of values of order one carries a rounding error of about
//! eps·sqrt(K)·max|term| (eps = 6e-8), so for the largest reductions here (K ≈ 2,400 taps in a
//! conv, 7,000 terms in a filter gradient) the error is ~1e-5 of the largest output. We allow 1e-3
//! relative, against a floor of 1e-2 of the output's largest magnitude (elements that cancel to
//! near zero are judged by absolute error). Elementwise ops (LRN, pooling, dropout) are compared
//! at 1e-5: a handful of f32 roundings.

use alexnet::ops::{conv, dropout, fc, lrn, philox, pool, spatial_norm};
use alexnet::ops::{
    conv::ConvGeom, dropout::DropoutGeom, fc::FcGeom, lrn::LrnGeom, pool::PoolGeom,
    spatial_norm::SpatialNormGeom,
};
use alexnet::tensor::max_rel_err;

fn random(len: usize, stream: u64) -> Vec<f64> {
    (0..len as u64)
        .map(|i| 2.0 * philox::uniform(philox::word(7, stream, i)) as f64 - 1.0)
        .collect()
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Relative error against a floor of 1e-2 of the reference's largest magnitude.
fn err(got: &[f32], want: &[f64]) -> f64 {
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    max_rel_err(got, want, 1e-2 * scale.max(1e-30))
}

fn conv_case(g: ConvGeom) {
    let (x, w, b, dy) = (
        random(g.x_len(), 1),
        random(g.w_len(), 2),
        random(g.c_out, 3),
        random(g.y_len(), 4),
    );
    let mut y = vec![0.0; g.y_len()];
    conv::forward_naive(&g, &x, &w, &b, &mut y);
    let mut dx = vec![0.0; g.x_len()];
    conv::backward_data_naive(&g, &dy, &w, &mut dx);
    let (mut dw, mut db) = (vec![0.0; g.w_len()], vec![0.0; g.c_out]);
    conv::backward_filter_naive(&g, &x, &dy, &mut dw, &mut db);

    let (xf, wf, bf, dyf) = (f32s(&x), f32s(&w), f32s(&b), f32s(&dy));
    let run = || {
        let mut y = vec![0f32; g.y_len()];
        conv::forward(&g, &xf, &wf, &bf, &mut y);
        let mut dx = vec![0f32; g.x_len()];
        conv::backward_data(&g, &dyf, &wf, &mut dx);
        let (mut dw, mut db) = (vec![0f32; g.w_len()], vec![0f32; g.c_out]);
        conv::backward_filter(&g, &xf, &dyf, &mut dw, &mut db);
        (y, dx, dw, db)
    };
    let (yf, dxf, dwf, dbf) = run();
    for (name, e) in [
        ("forward", err(&yf, &y)),
        ("data gradient", err(&dxf, &dx)),
        ("filter gradient", err(&dwf, &dw)),
        ("bias gradient", err(&dbf, &db)),
    ] {
        println!("conv {name} {g:?}: {e:.2e}");
        assert!(e < 1e-3, "conv {name} {g:?}: relative error {e}");
    }
    assert!(run() == (yf, dxf, dwf, dbf), "conv {g:?}: two runs differ");
}

#[test]
fn convolution_on_ragged_shapes_and_the_papers_geometries() {
    let c = |n, c_in, h, c_out, k, stride, pad, pad_end, groups| ConvGeom {
        n,
        c_in,
        h,
        w: h,
        c_out,
        k,
        stride,
        pad,
        pad_end,
        groups,
    };
    for g in [
        ConvGeom {
            n: 3,
            c_in: 5,
            h: 13,
            w: 10,
            c_out: 7,
            k: 3,
            stride: 2,
            pad: 1,
            pad_end: 0,
            groups: 1,
        },
        ConvGeom {
            n: 1,
            c_in: 6,
            h: 9,
            w: 11,
            c_out: 10,
            k: 5,
            stride: 1,
            pad: 2,
            pad_end: 2,
            groups: 2,
        },
        c(2, 3, 227, 4, 11, 4, 0, 0, 1), // conv1
        c(2, 3, 224, 4, 11, 4, 0, 3, 1), // net145's conv1
        c(2, 8, 27, 12, 5, 1, 2, 2, 1),  // conv2
        c(2, 16, 13, 12, 3, 1, 1, 1, 1), // conv3 (both towers' maps in)
        c(3, 12, 13, 10, 3, 1, 1, 1, 2), // conv4/5 as one grouped layer
    ] {
        conv_case(g);
    }
}

#[test]
fn fully_connected_at_an_fc6_like_shape() {
    let g = FcGeom {
        n: 3,
        inputs: 2304,
        outputs: 33,
    };
    let (x, w, b, dy) = (
        random(g.n * g.inputs, 1),
        random(g.outputs * g.inputs, 2),
        random(g.outputs, 3),
        random(g.n * g.outputs, 4),
    );
    let (mut y, mut dx, mut dw, mut db) = (
        vec![0.0; g.n * g.outputs],
        vec![0.0; x.len()],
        vec![0.0; w.len()],
        vec![0.0; g.outputs],
    );
    fc::forward_naive(&g, &x, &w, &b, &mut y);
    fc::backward_data_naive(&g, &dy, &w, &mut dx);
    fc::backward_filter_naive(&g, &x, &dy, &mut dw, &mut db);
    let (mut yf, mut dxf, mut dwf, mut dbf) = (
        vec![0f32; y.len()],
        vec![0f32; dx.len()],
        vec![0f32; dw.len()],
        vec![0f32; db.len()],
    );
    fc::forward(&g, &f32s(&x), &f32s(&w), &f32s(&b), &mut yf);
    fc::backward_data(&g, &f32s(&dy), &f32s(&w), &mut dxf);
    fc::backward_filter(&g, &f32s(&x), &f32s(&dy), &mut dwf, &mut dbf);
    for (name, e) in [
        ("forward", err(&yf, &y)),
        ("data", err(&dxf, &dx)),
        ("filter", err(&dwf, &dw)),
        ("bias", err(&dbf, &db)),
    ] {
        assert!(e < 1e-3, "fc {name}: {e}");
    }
}

#[test]
fn normalisations_pooling_and_dropout() {
    // LRN over a tower's 48 maps, paper constants (the paper's alpha, not divided by n) and the
    // net145 convention; inputs of the size ReLU outputs reach (up to ~10).
    for alpha_over_n in [false, true] {
        let g = LrnGeom {
            n: 2,
            c: 48,
            h: 5,
            w: 5,
            groups: 1,
            size: 5,
            k: 2.0,
            alpha: 1e-4,
            beta: 0.75,
            alpha_over_n,
        };
        let x: Vec<f64> = random(g.len(), 1).iter().map(|v| 10.0 * v).collect();
        let (dy, mut y, mut dx) = (random(g.len(), 2), vec![0.0; g.len()], vec![0.0; g.len()]);
        lrn::forward_naive(&g, &x, &mut y);
        lrn::backward_naive(&g, &x, &y, &dy, &mut dx);
        let (mut yf, mut dxf) = (vec![0f32; g.len()], vec![0f32; g.len()]);
        lrn::forward(&g, &f32s(&x), &mut yf);
        lrn::backward(&g, &f32s(&x), &yf, &f32s(&dy), &mut dxf);
        assert!(
            err(&yf, &y) < 1e-5 && err(&dxf, &dx) < 1e-5,
            "lrn: {} {}",
            err(&yf, &y),
            err(&dxf, &dx)
        );
    }
    let g = SpatialNormGeom {
        n: 2,
        c: 3,
        h: 13,
        w: 13,
        size: 5,
        k: 1.0,
        alpha: 0.001,
        beta: 0.75,
        alpha_over_area: true,
    };
    let x: Vec<f64> = random(g.len(), 3).iter().map(|v| 10.0 * v).collect();
    let (dy, mut y, mut dx) = (random(g.len(), 4), vec![0.0; g.len()], vec![0.0; g.len()]);
    spatial_norm::forward_naive(&g, &x, &mut y);
    spatial_norm::backward_naive(&g, &x, &y, &dy, &mut dx);
    let (mut yf, mut dxf) = (vec![0f32; g.len()], vec![0f32; g.len()]);
    spatial_norm::forward(&g, &f32s(&x), &mut yf);
    spatial_norm::backward(&g, &f32s(&x), &yf, &f32s(&dy), &mut dxf);
    assert!(
        err(&yf, &y) < 1e-5 && err(&dxf, &dx) < 1e-5,
        "spatial norm: {} {}",
        err(&yf, &y),
        err(&dxf, &dx)
    );

    // Pooling is exact (it selects and adds), including the first-maximum rule on ties: inputs
    // after a ReLU are zero in about half the places.
    for (h, size) in [(55, 3), (27, 3), (13, 3), (13, 2)] {
        let g = PoolGeom {
            n: 2,
            c: 3,
            h,
            w: h,
            size,
            stride: 2,
        };
        let x: Vec<f32> = random(g.x_len(), 5)
            .iter()
            .map(|&v| v.max(0.0) as f32)
            .collect();
        let dy: Vec<f32> = f32s(&random(g.y_len(), 6));
        let (mut y, mut yn, mut dx, mut dxn) = (
            vec![0f32; g.y_len()],
            vec![0f32; g.y_len()],
            vec![0f32; g.x_len()],
            vec![0f32; g.x_len()],
        );
        pool::forward(&g, &x, &mut y);
        pool::forward_naive(&g, &x, &mut yn);
        pool::backward(&g, &x, &dy, &mut dx);
        pool::backward_naive(&g, &x, &dy, &mut dxn);
        assert_eq!((y, dx), (yn, dxn), "pool {g:?}");
    }

    let g = DropoutGeom {
        n: 5,
        units: 2048,
        units_total: 4096,
        unit_offset: 2048,
        p: 0.5,
        seed: 3,
        stream: 17,
    };
    let x = f32s(&random(g.len(), 7));
    let (mut y, mut yn) = (vec![0f32; g.len()], vec![0f32; g.len()]);
    dropout::forward_train(&g, &x, &mut y);
    dropout::forward_train_naive(&g, &x, &mut yn);
    assert_eq!(y, yn, "dropout masks differ");
}
