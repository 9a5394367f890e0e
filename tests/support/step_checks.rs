//! A few training steps of the tiny two-tower net (`super::net::tiny_spec`) on a device of the
//! kernels (the host executor, or a GPU) against the same steps on the CPU reference: the whole
//! launch path above the kernels, exchanges included. tests/executor_step.rs and tests/gpu_engine.rs share it.

use super::net::{batch, tiny_spec};
use alexnet::device::Device;
use alexnet::device::cpu::CpuDevice;
use alexnet::engine::Network;
use alexnet::model::Plan;
use alexnet::model::init::{NetParams, init_params};
use alexnet::ops::precision::Precision;
use alexnet::tensor::max_rel_err;

/// The kernels sum in another order than the CPU path (tiled GEMM, split-K filter gradients)
/// and a GPU uses `__expf`-class intrinsics (the host executor maps them to libm): fp32
/// reordering of sums of a few hundred terms, about 1e-6 relative, compounded over the steps.
/// 1e-4 relative, with floors of 1e-2 of each tensor's largest magnitude for elements that cancel
/// to near zero, leaves a wide margin and still catches any wrong term (as the golden tests show,
/// a wrong term moves results by 1e-2 or more).
pub const STEP_TOL: f64 = 1e-4;

/// Each weight and bias tensor of `p`, in order.
pub fn tensors(p: &NetParams) -> Vec<Vec<f32>> {
    p.iter()
        .flatten()
        .flat_map(|t| [t.weight.data.clone(), t.bias.data.clone()])
        .collect()
}

/// The largest difference between two lists of tensors, per tensor: the error relative to the
/// element, with a floor of `floor` times the reference tensor's largest magnitude.
pub fn tensor_errors_with_floor(got: &[Vec<f32>], want: &[Vec<f32>], floor: f64) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(g, w)| {
            let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
            max_rel_err(g, w, (floor * scale).max(f64::MIN_POSITIVE))
        })
        .fold(0.0, f64::max)
}

/// How close a device's step must come to the reference's at `prec`: (tolerance, floor).
///
/// fp32: `STEP_TOL` with element floors of 1e-2, as above.
///
/// TF32 and bf16: both sides round the same operands the same way, but an operand that the two
/// sides hold ~1 fp32 ulp apart (their sums run in different orders) falls on different sides of
/// a rounding boundary now and then: with ~1e-7 differences and TF32's 2^-10 steps, about one
/// operand in 10^4, several per step of the tiny net. One such flip among the logits' gradients
/// moves every gradient upstream of it by up to a rounding unit u of the tensor's scale (TF32
/// u = 2^-11, bf16 u = 2^-8; measured 5.1e-4 of a tensor's largest value after a TF32 flip, with
/// 90% of its elements past 1e-4 of themselves). So these precisions are judged against each
/// tensor's largest magnitude (floor 1) at 4u, which a wrong launch, buffer or exchange (an O(1)
/// error) still exceeds by orders of magnitude; the kernels themselves are held to 1e-4 by
/// tests/executor_kernels.rs. Weights and momentum are reset to the reference's before each step, so
/// the flips of one step do not compound into the next.
pub fn step_tolerance(prec: Precision) -> (f64, f64) {
    match prec {
        Precision::Fp32 => (STEP_TOL, 1e-2),
        Precision::Tf32 => (4.0 * 2f64.powi(-11), 1.0),
        Precision::Bf16 => (4.0 * 2f64.powi(-8), 1.0),
    }
}

/// `steps` training steps of the tiny net, with the classifier split over both towers and on
/// tower 0 alone (with ReLU and tanh), on `devices()` against the CPU reference, both at
/// precision `prec`: loss, top-k errors, logits, gradients and updated weights after every step,
/// within [`step_tolerance`].
pub fn tiny_steps_match_the_cpu<D: Device>(
    devices: impl Fn() -> Vec<D>,
    prec: Precision,
    steps: u64,
) {
    let (tol, floor) = step_tolerance(prec);
    let errors = |got: &[Vec<f32>], want: &[Vec<f32>]| tensor_errors_with_floor(got, want, floor);
    for (first_tower_classifier, tanh) in [(false, false), (true, true)] {
        let mut spec = tiny_spec(first_tower_classifier, tanh);
        spec.precision = prec;
        let plan = Plan::new(&spec).unwrap();
        let params = init_params(&plan, 6);
        let mut cpu = Network::new(&plan, vec![CpuDevice, CpuDevice], &params, 3).unwrap();
        let mut dev = Network::new(&plan, devices(), &params, 3).unwrap();
        let (images, labels) = batch(&plan, 3, 4);
        for step in 0..steps {
            if prec != Precision::Fp32 && step > 0 {
                dev = Network::new(&plan, devices(), &cpu.params().unwrap(), 3).unwrap();
                dev.set_velocities(&cpu.velocities().unwrap()).unwrap();
            }
            let case = format!(
                "{prec}: classifier on tower 0 only: {first_tower_classifier}, tanh {tanh}, step {step}"
            );
            let a = cpu.train_step(&images, &labels, 0.05, step).unwrap();
            let b = dev.train_step(&images, &labels, 0.05, step).unwrap();
            assert!(
                (a.loss - b.loss).abs() < tol * a.loss,
                "{case}: loss {} vs {}",
                a.loss,
                b.loss
            );
            assert_eq!(
                (a.top1_errors, a.top5_errors),
                (b.top1_errors, b.top5_errors),
                "{case}"
            );
            let logits = errors(&[dev.logits().unwrap()], &[cpu.logits().unwrap()]);
            assert!(logits < tol, "{case}: logits differ by {logits:.3e}");
            let grads = errors(
                &tensors(&dev.gradients().unwrap()),
                &tensors(&cpu.gradients().unwrap()),
            );
            assert!(grads < tol, "{case}: gradients differ by {grads:.3e}");
            let weights = errors(
                &tensors(&dev.params().unwrap()),
                &tensors(&cpu.params().unwrap()),
            );
            assert!(weights < tol, "{case}: weights differ by {weights:.3e}");
            println!(
                "{case}: loss {:.6} vs {:.6}; logits {logits:.1e}, gradients {grads:.1e}, weights {weights:.1e}",
                a.loss, b.loss
            );
        }
    }
}

/// Trains a few steps on different batches twice from the same start: synchronously
/// (`train_step`), and double-buffered as the training loop does (`stage_batch` of the next batch
/// while a step is queued, `queue_staged_step`, `finish_step`). Every step's stats and the final
/// weights must be bit-identical: the staged path only reorders uploads.
pub fn staged_steps_equal_synchronous_steps<D: Device>(devices: impl Fn() -> Vec<D>) {
    let plan = Plan::new(&tiny_spec(false, false)).unwrap();
    let params = init_params(&plan, 3);
    let batches: Vec<_> = (0..4).map(|k| batch(&plan, 4, 10 + k)).collect();
    let mut sync = Network::new(&plan, devices(), &params, 7).unwrap();
    let mut staged = Network::new(&plan, devices(), &params, 7).unwrap();
    let e = staged.queue_staged_step(0.05, 0).unwrap_err();
    assert!(format!("{e:#}").contains("no batch is staged"), "{e:#}");
    staged.stage_batch(&batches[0].0, &batches[0].1).unwrap();
    let e = staged
        .stage_batch(&batches[0].0, &batches[0].1)
        .unwrap_err();
    assert!(format!("{e:#}").contains("already staged"), "{e:#}");
    for (k, (images, labels)) in batches.iter().enumerate() {
        let want = sync.train_step(images, labels, 0.05, k as u64).unwrap();
        staged.queue_staged_step(0.05, k as u64).unwrap();
        if let Some((next_images, next_labels)) = batches.get(k + 1) {
            staged.stage_batch(next_images, next_labels).unwrap();
        }
        let got = staged.finish_step().unwrap();
        assert_eq!(got, want, "step {k}");
    }
    assert_eq!(
        super::net::flatten(&staged.params().unwrap()),
        super::net::flatten(&sync.params().unwrap()),
        "weights after {} steps",
        batches.len()
    );
}
