//! Per-op checks of a `Device` against the naive CPU references, generic so the same checks run
//! on the host executor (`tests/executor_kernels.rs`) and on a GPU.
//!
//! Each check uploads deterministic data, runs the op on the device and compares with the naive
//! reference. The reference runs in f64 on the same (f32) inputs where the kernel's arithmetic
//! differs from the reference's (accumulation order, fused multiply-adds, `expf`/`powf`), and in
//! f32 where the op is exact and must agree bit for bit.
//!
//! Tolerances, and why:
//! - `TOL_GEMM` (conv, fc): f32 sums of up to a few thousand products, compared as the largest
//!   error relative to the largest output (single outputs may cancel to near zero). Rounding
//!   gives ~1e-6; a wrong or missing term of ~1/(terms) of the sum gives > 1e-3.
//! - `TOL_REDUCE` (bias gradients, softmax's sum): the same bound for plain sums.
//! - `TOL_ELEMENTWISE` (tanh, LRN and spatial-norm forward, probabilities): a few ulp of
//!   `tanhf`/`powf`/`expf` and a short sum, relative per element.
//! - `TOL_NORM_BACKWARD` (LRN, spatial norm backward): the two terms of dx may cancel, so the
//!   error is taken relative to the largest |dx|; each term is a short sum of ulp-accurate values.
//! - Exact: relu, max pool (forward and the fixed-order gather backward), dropout masks, SGD
//!   (explicitly rounded intrinsics), add/fill, top-k indices.

use alexnet::device::kernels::KernelDevice;
use alexnet::device::launch::Launcher;
use alexnet::device::{Device, labels_as_floats};
use alexnet::ops::precision::Precision;
use alexnet::ops::{
    activation,
    conv::{self, ConvGeom},
    dropout::{self, DropoutGeom},
    fc::{self, FcGeom},
    lrn::{self, LrnGeom},
    philox,
    pool::{self, PoolGeom},
    sgd::{self, SgdStep},
    softmax,
    spatial_norm::{self, SpatialNormGeom},
};
use alexnet::tensor::max_rel_err;
use anyhow::Result;

pub const TOL_GEMM: f64 = 1e-4;
pub const TOL_REDUCE: f64 = 1e-4;
pub const TOL_ELEMENTWISE: f64 = 1e-5;
pub const TOL_NORM_BACKWARD: f64 = 1e-5;

/// `len` deterministic values uniform in `[lo, hi)`, a pure function of `seed`.
pub fn data(len: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    (0..len as u64)
        .map(|i| lo + (hi - lo) * philox::uniform(philox::word(seed, 0xda7a, i)))
        .collect()
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// Largest error relative to the largest reference magnitude.
fn err_vs_max(got: &[f32], want: &[f64]) -> f64 {
    max_rel_err(got, want, max_abs(want).max(f64::MIN_POSITIVE))
}

/// Each value's bits, for exact comparisons.
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Asserts bit equality, naming the first differing element.
fn assert_bits_eq(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!(
            "{what}: element {i} is {} on the device, {} in the reference",
            got[i], want[i]
        );
    }
}

fn assert_within(what: &str, err: f64, tol: f64) {
    assert!(
        err < tol,
        "{what}: error {err:.3e} exceeds tolerance {tol:.0e}"
    );
}

// ---- convolution -----------------------------------------------------------------------------

/// Errors of the three convolution passes against the f64 reference.
#[derive(Debug)]
pub struct ConvErrors {
    pub forward: f64,
    pub data: f64,
    pub filter: f64,
    pub bias: f64,
}

/// The forward pass alone at `prec`: its error against the f64 reference on the operands
/// rounded as `prec` rounds them (products of rounded operands are exact, so only the order of
/// the sums differs and the same tolerance holds at every precision).
pub fn conv_forward_error<D: Device>(
    dev: &D,
    g: &ConvGeom,
    prec: Precision,
    seed: u64,
) -> Result<f64> {
    conv_forward_error_against(dev, g, prec, prec, seed)
}

/// The forward pass at `prec` against the reference on operands rounded as `reference` rounds
/// them: a kernel that rounds other than the reference says shows as the difference between the
/// two.
pub fn conv_forward_error_against<D: Device>(
    dev: &D,
    g: &ConvGeom,
    prec: Precision,
    reference: Precision,
    seed: u64,
) -> Result<f64> {
    let (x, w, b) = conv_inputs(g, seed);
    let mut y = dev.alloc(g.y_len())?;
    dev.conv_forward(
        g,
        prec,
        &dev.upload(&x)?,
        &dev.upload(&w)?,
        &dev.upload(&b)?,
        &mut y,
    )?;
    let mut want = vec![0.0; g.y_len()];
    let (x, w) = (reference.round_all(&x), reference.round_all(&w));
    conv::forward_naive(g, &f64s(&x), &f64s(&w), &f64s(&b), &mut want);
    Ok(err_vs_max(&dev.download(&y)?, &want))
}

fn conv_inputs(g: &ConvGeom, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    (
        data(g.x_len(), seed, -1.0, 1.0),
        data(g.w_len(), seed + 1, -1.0, 1.0),
        data(g.c_out, seed + 2, -1.0, 1.0),
    )
}

/// All three passes at `prec`, against the f64 reference on operands rounded as `prec` does
/// (the bias gradient, a plain sum, of the unrounded gradient).
pub fn conv_errors<D: Device>(
    dev: &D,
    g: &ConvGeom,
    prec: Precision,
    seed: u64,
) -> Result<ConvErrors> {
    let (x, w, _) = conv_inputs(g, seed);
    let dy = data(g.y_len(), seed + 3, -1.0, 1.0);
    let (xd, wd, dyd) = (dev.upload(&x)?, dev.upload(&w)?, dev.upload(&dy)?);
    let (xr, wr, dyr) = (prec.round_all(&x), prec.round_all(&w), prec.round_all(&dy));

    let forward = conv_forward_error(dev, g, prec, seed)?;

    let mut dx = dev.alloc(g.x_len())?;
    dev.conv_backward_data(g, prec, &dyd, &wd, &mut dx)?;
    let mut want_dx = vec![0.0; g.x_len()];
    conv::backward_data_naive(g, &f64s(&dyr), &f64s(&wr), &mut want_dx);

    let (mut dw, mut db) = (dev.alloc(g.w_len())?, dev.alloc(g.c_out)?);
    dev.conv_backward_filter(g, prec, &xd, &dyd, &mut dw, &mut db)?;
    let (mut want_dw, mut rounded_db) = (vec![0.0; g.w_len()], vec![0.0; g.c_out]);
    conv::backward_filter_naive(g, &f64s(&xr), &f64s(&dyr), &mut want_dw, &mut rounded_db);
    let want_db = conv_bias_gradient(g, &dy);
    let (dw1, db1) = (dev.download(&dw)?, dev.download(&db)?);

    // The split reduction must be bit-reproducible: run the filter gradient again.
    dev.conv_backward_filter(g, prec, &xd, &dyd, &mut dw, &mut db)?;
    assert_eq!(
        bits(&dev.download(&dw)?),
        bits(&dw1),
        "filter gradient not reproducible: {g:?}"
    );
    assert_eq!(
        bits(&dev.download(&db)?),
        bits(&db1),
        "bias gradient not reproducible: {g:?}"
    );

    Ok(ConvErrors {
        forward,
        data: err_vs_max(&dev.download(&dx)?, &want_dx),
        filter: err_vs_max(&dw1, &want_dw),
        bias: err_vs_max(&db1, &want_db),
    })
}

/// The bias gradient in f64: per output channel, the sum of the (unrounded) output gradient.
fn conv_bias_gradient(g: &ConvGeom, dy: &[f32]) -> Vec<f64> {
    let plane = g.out_h() * g.out_w();
    let mut db = vec![0.0; g.c_out];
    for (i, &d) in dy.iter().enumerate() {
        db[(i / plane) % g.c_out] += d as f64;
    }
    db
}

pub fn check_conv<D: Device>(dev: &D, g: &ConvGeom, seed: u64) -> Result<()> {
    check_conv_at(dev, g, Precision::Fp32, seed)
}

pub fn check_conv_at<D: Device>(dev: &D, g: &ConvGeom, prec: Precision, seed: u64) -> Result<()> {
    let e = conv_errors(dev, g, prec, seed)?;
    let what = |pass: &str| format!("conv {pass} at {prec} {g:?}");
    assert_within(&what("forward"), e.forward, TOL_GEMM);
    assert_within(&what("data gradient"), e.data, TOL_GEMM);
    assert_within(&what("filter gradient"), e.filter, TOL_GEMM);
    assert_within(&what("bias gradient"), e.bias, TOL_REDUCE);
    Ok(())
}

// ---- fully connected -------------------------------------------------------------------------

/// The three fc passes at `prec`, references as for [`conv_errors`].
pub fn check_fc_at<D: Device>(dev: &D, g: &FcGeom, prec: Precision, seed: u64) -> Result<()> {
    let x = data(g.n * g.inputs, seed, -1.0, 1.0);
    let w = data(g.outputs * g.inputs, seed + 1, -1.0, 1.0);
    let b = data(g.outputs, seed + 2, -1.0, 1.0);
    let dy = data(g.n * g.outputs, seed + 3, -1.0, 1.0);
    let (xr, wr, dyr) = (prec.round_all(&x), prec.round_all(&w), prec.round_all(&dy));
    let (xd, wd, bd, dyd) = (
        dev.upload(&x)?,
        dev.upload(&w)?,
        dev.upload(&b)?,
        dev.upload(&dy)?,
    );

    let mut y = dev.alloc(g.n * g.outputs)?;
    dev.fc_forward(g, prec, &xd, &wd, &bd, &mut y)?;
    let mut want = vec![0.0; g.n * g.outputs];
    fc::forward_naive(g, &f64s(&xr), &f64s(&wr), &f64s(&b), &mut want);
    assert_within(
        &format!("fc forward at {prec} {g:?}"),
        err_vs_max(&dev.download(&y)?, &want),
        TOL_GEMM,
    );

    let mut dx = dev.alloc(g.n * g.inputs)?;
    dev.fc_backward_data(g, prec, &dyd, &wd, &mut dx)?;
    let mut want = vec![0.0; g.n * g.inputs];
    fc::backward_data_naive(g, &f64s(&dyr), &f64s(&wr), &mut want);
    assert_within(
        &format!("fc data gradient at {prec} {g:?}"),
        err_vs_max(&dev.download(&dx)?, &want),
        TOL_GEMM,
    );

    let (mut dw, mut db) = (dev.alloc(g.outputs * g.inputs)?, dev.alloc(g.outputs)?);
    dev.fc_backward_filter(g, prec, &xd, &dyd, &mut dw, &mut db)?;
    let (mut want_dw, mut want_db) = (vec![0.0; g.outputs * g.inputs], vec![0.0; g.outputs]);
    fc::backward_filter_naive(g, &f64s(&xr), &f64s(&dyr), &mut want_dw, &mut want_db);
    let mut unused = vec![0.0; g.outputs * g.inputs];
    fc::backward_filter_naive(g, &f64s(&x), &f64s(&dy), &mut unused, &mut want_db);
    assert_within(
        &format!("fc filter gradient at {prec} {g:?}"),
        err_vs_max(&dev.download(&dw)?, &want_dw),
        TOL_GEMM,
    );
    assert_within(
        &format!("fc bias gradient {g:?}"),
        err_vs_max(&dev.download(&db)?, &want_db),
        TOL_REDUCE,
    );
    Ok(())
}

// ---- elementwise -----------------------------------------------------------------------------

pub fn check_activations<D: Device>(dev: &D, len: usize, seed: u64) -> Result<()> {
    // Exact zeros in x exercise relu's boundary (x > 0 keeps, x = 0 drops).
    let mut x = data(len, seed, -2.0, 2.0);
    x.iter_mut().step_by(7).for_each(|v| *v = 0.0);
    let dy = data(len, seed + 1, -1.0, 1.0);
    let (xd, dyd) = (dev.upload(&x)?, dev.upload(&dy)?);
    let mut out = dev.alloc(len)?;

    dev.relu_forward(&xd, &mut out)?;
    let mut want = vec![0.0f32; len];
    activation::relu_forward(&x, &mut want);
    assert_bits_eq("relu forward", &dev.download(&out)?, &want);

    // relu backward reads the forward output y.
    let y = want.clone();
    dev.relu_backward(&dev.upload(&y)?, &dyd, &mut out)?;
    activation::relu_backward(&y, &dy, &mut want);
    assert_bits_eq("relu backward", &dev.download(&out)?, &want);

    dev.tanh_forward(&xd, &mut out)?;
    let mut want = vec![0.0f64; len];
    activation::tanh_forward(&f64s(&x), &mut want);
    assert_within(
        "tanh forward",
        max_rel_err(&dev.download(&out)?, &want, 1e-6),
        TOL_ELEMENTWISE,
    );

    // |y| <= 0.9 keeps 1 - y² away from cancellation, so a per-element relative error is fair.
    let y = data(len, seed + 2, -0.9, 0.9);
    dev.tanh_backward(&dev.upload(&y)?, &dyd, &mut out)?;
    activation::tanh_backward(&f64s(&y), &f64s(&dy), &mut want);
    assert_within(
        "tanh backward",
        max_rel_err(&dev.download(&out)?, &want, 1e-6),
        TOL_ELEMENTWISE,
    );

    let src = data(len, seed + 3, -1.0, 1.0);
    let mut acc = dev.upload(&x)?;
    dev.add_assign(&mut acc, &dev.upload(&src)?)?;
    let want: Vec<f32> = x.iter().zip(&src).map(|(a, b)| a + b).collect();
    assert_bits_eq("add_assign", &dev.download(&acc)?, &want);
    Ok(())
}

/// `KernelDevice`'s own fill.
pub fn check_fill<L: Launcher>(dev: &KernelDevice<L>, len: usize) -> Result<()> {
    let mut buf = dev.upload(&data(len, 9, -1.0, 1.0))?;
    dev.fill(&mut buf, -3.25)?;
    assert_bits_eq("fill", &dev.download(&buf)?, &vec![-3.25; len]);
    Ok(())
}

// ---- normalisation ---------------------------------------------------------------------------

pub fn check_lrn<D: Device>(dev: &D, g: &LrnGeom, seed: u64) -> Result<()> {
    let x = data(g.len(), seed, -2.0, 2.0);
    let dy = data(g.len(), seed + 1, -1.0, 1.0);
    let xd = dev.upload(&x)?;
    let mut y = dev.alloc(g.len())?;
    dev.lrn_forward(g, &xd, &mut y)?;
    let mut want_y = vec![0.0; g.len()];
    lrn::forward_naive(g, &f64s(&x), &mut want_y);
    let got_y = dev.download(&y)?;
    assert_within(
        &format!("lrn forward {g:?}"),
        max_rel_err(&got_y, &want_y, 1e-6),
        TOL_ELEMENTWISE,
    );

    // The backward pass takes the forward output; feed both sides the device's.
    let mut dx = dev.alloc(g.len())?;
    dev.lrn_backward(g, &xd, &y, &dev.upload(&dy)?, &mut dx)?;
    let mut want = vec![0.0; g.len()];
    lrn::backward_naive(g, &f64s(&x), &f64s(&got_y), &f64s(&dy), &mut want);
    assert_within(
        &format!("lrn backward {g:?}"),
        err_vs_max(&dev.download(&dx)?, &want),
        TOL_NORM_BACKWARD,
    );
    Ok(())
}

pub fn check_spatial_norm<D: Device>(dev: &D, g: &SpatialNormGeom, seed: u64) -> Result<()> {
    let x = data(g.len(), seed, -2.0, 2.0);
    let dy = data(g.len(), seed + 1, -1.0, 1.0);
    let xd = dev.upload(&x)?;
    let mut y = dev.alloc(g.len())?;
    dev.spatial_norm_forward(g, &xd, &mut y)?;
    let mut want_y = vec![0.0; g.len()];
    spatial_norm::forward_naive(g, &f64s(&x), &mut want_y);
    let got_y = dev.download(&y)?;
    assert_within(
        &format!("spatial norm forward {g:?}"),
        max_rel_err(&got_y, &want_y, 1e-6),
        TOL_ELEMENTWISE,
    );

    let mut dx = dev.alloc(g.len())?;
    dev.spatial_norm_backward(g, &xd, &y, &dev.upload(&dy)?, &mut dx)?;
    let mut want = vec![0.0; g.len()];
    spatial_norm::backward_naive(g, &f64s(&x), &f64s(&got_y), &f64s(&dy), &mut want);
    assert_within(
        &format!("spatial norm backward {g:?}"),
        err_vs_max(&dev.download(&dx)?, &want),
        TOL_NORM_BACKWARD,
    );
    Ok(())
}

// ---- pooling ---------------------------------------------------------------------------------

/// Max pooling, exact. Inputs take few distinct values (and many zeros, as after a ReLU) so
/// that windows have ties and the first-maximum rule decides.
pub fn check_max_pool<D: Device>(dev: &D, g: &PoolGeom, seed: u64) -> Result<()> {
    let x: Vec<f32> = data(g.x_len(), seed, -3.0, 4.0)
        .iter()
        .map(|v| v.floor().max(0.0))
        .collect();
    let dy = data(g.y_len(), seed + 1, -1.0, 1.0);
    let xd = dev.upload(&x)?;
    let (mut y, mut argmax) = (dev.alloc(g.y_len())?, dev.alloc(g.y_len())?);
    dev.max_pool_forward(g, &xd, &mut y, &mut argmax)?;
    let mut want = vec![0.0f32; g.y_len()];
    pool::forward_naive(g, &x, &mut want);
    assert_bits_eq(
        &format!("max pool forward {g:?}"),
        &dev.download(&y)?,
        &want,
    );

    let mut dx = dev.alloc(g.x_len())?;
    dev.max_pool_backward(g, &argmax, &dev.upload(&dy)?, &mut dx)?;
    let mut want = vec![0.0f32; g.x_len()];
    pool::backward_naive(g, &x, &dy, &mut want);
    assert_bits_eq(
        &format!("max pool backward {g:?}"),
        &dev.download(&dx)?,
        &want,
    );
    Ok(())
}

// ---- dropout ---------------------------------------------------------------------------------

pub fn check_dropout<D: Device>(dev: &D, g: &DropoutGeom, seed: u64) -> Result<()> {
    // Nonzero inputs, so a zero in the output can only come from the mask.
    let x = data(g.len(), seed, 0.5, 1.5);
    let xd = dev.upload(&x)?;
    let mut y = dev.alloc(g.len())?;
    dev.dropout_forward_train(g, &xd, &mut y)?;
    let mut want = vec![0.0f32; g.len()];
    dropout::forward_train_naive(g, &x, &mut want);
    let got = dev.download(&y)?;
    assert_bits_eq(&format!("dropout forward {g:?}"), &got, &want);
    let kept = got.iter().filter(|&&v| v != 0.0).count();
    assert!(
        kept > 0 && kept < g.len(),
        "dropout kept {kept} of {}: the mask is degenerate",
        g.len()
    );

    dev.dropout_backward(g, &xd, &mut y)?;
    dropout::backward_naive(g, &x, &mut want);
    assert_bits_eq(
        &format!("dropout backward {g:?}"),
        &dev.download(&y)?,
        &want,
    );

    dev.dropout_forward_test(g.p, &xd, &mut y)?;
    dropout::forward_test(g.p, &x, &mut want);
    assert_bits_eq("dropout test-time scaling", &dev.download(&y)?, &want);
    Ok(())
}

// ---- softmax, top-k --------------------------------------------------------------------------

pub fn check_softmax_xent<D: Device>(dev: &D, n: usize, classes: usize, seed: u64) -> Result<()> {
    let z = data(n * classes, seed, -5.0, 5.0);
    let labels: Vec<u32> = (0..n).map(|s| ((s * 7919 + 3) % classes) as u32).collect();
    let (mut probs, mut dz) = (dev.alloc(n * classes)?, dev.alloc(n * classes)?);
    let mut losses = dev.alloc(n)?;
    let label_buf = dev.upload(&labels_as_floats(&labels, classes)?)?;
    let logits = dev.upload(&z)?;
    dev.softmax_xent(
        n,
        classes,
        &logits,
        &label_buf,
        &mut probs,
        &mut dz,
        &mut losses,
    )?;
    let (mut want_p, mut want_dz) = (vec![0.0; n * classes], vec![0.0; n * classes]);
    let mut want_losses = vec![0.0; n];
    softmax::xent_rows_naive(
        n,
        classes,
        &f64s(&z),
        &labels,
        &mut want_p,
        &mut want_dz,
        &mut want_losses,
    );
    let what = format!("softmax_xent n {n} classes {classes}");
    assert_within(
        &format!("{what} probs"),
        max_rel_err(&dev.download(&probs)?, &want_p, 1e-12),
        TOL_ELEMENTWISE,
    );
    // p - 1 cancels at the label: relative to the largest gradient.
    assert_within(
        &format!("{what} dlogits"),
        err_vs_max(&dev.download(&dz)?, &want_dz),
        TOL_ELEMENTWISE,
    );
    // Each row's loss is a log of a sum over the classes: a reduction.
    assert_within(
        &format!("{what} losses"),
        max_rel_err(&dev.download(&losses)?, &want_losses, 1e-12),
        TOL_REDUCE,
    );
    // A label that is not a class: an error, or a NaN loss for that row only.
    let mut bad = labels_as_floats(&labels, classes)?;
    bad[n - 1] = classes as f32;
    let bad_buf = dev.upload(&bad)?;
    match dev.softmax_xent(
        n,
        classes,
        &logits,
        &bad_buf,
        &mut probs,
        &mut dz,
        &mut losses,
    ) {
        Err(e) => assert!(
            format!("{e:#}").contains("not one of"),
            "{what}: unexpected error for a bad label: {e:#}"
        ),
        Ok(()) => {
            let got = dev.download(&losses)?;
            assert!(
                got[n - 1].is_nan(),
                "{what}: a bad label gave loss {}",
                got[n - 1]
            );
            assert!(
                got[..n - 1].iter().all(|l| l.is_finite()),
                "{what}: other rows spoiled"
            );
        }
    }
    Ok(())
}

/// `KernelDevice`'s top-k against `ops::softmax::top_k`, with tied scores.
pub fn check_top_k<L: Launcher>(
    dev: &KernelDevice<L>,
    n: usize,
    classes: usize,
    k: usize,
    seed: u64,
) -> Result<()> {
    // Scores on a coarse grid: many exact ties, which must go to the lower index.
    let scores: Vec<f32> = data(n * classes, seed, 0.0, 8.0)
        .iter()
        .map(|v| v.floor())
        .collect();
    let got = dev.top_k(n, classes, k, &dev.upload(&scores)?)?;
    for (s, row) in scores.chunks(classes).enumerate() {
        assert_eq!(got[s], softmax::top_k(row, k), "top-{k} of row {s}");
    }
    Ok(())
}

// ---- sgd -------------------------------------------------------------------------------------

pub fn check_sgd<D: Device>(dev: &D, len: usize, seed: u64) -> Result<()> {
    let step = SgdStep {
        lr: 0.01,
        momentum: 0.9,
        weight_decay: 0.0005,
    };
    let (mut w, mut v) = (data(len, seed, -1.0, 1.0), data(len, seed + 1, -0.1, 0.1));
    let grad = data(len, seed + 2, -1.0, 1.0);
    let (mut wd, mut vd) = (dev.upload(&w)?, dev.upload(&v)?);
    let gd = dev.upload(&grad)?;
    // Two steps, so the second reads what the first wrote.
    for _ in 0..2 {
        dev.sgd_update(&step, &mut wd, &mut vd, &gd)?;
        sgd::update_naive(&step, &mut w, &mut v, &grad);
    }
    assert_bits_eq("sgd weights", &dev.download(&wd)?, &w);
    assert_bits_eq("sgd velocity", &dev.download(&vd)?, &v);
    Ok(())
}
