//! A few training steps of the tiny two-tower net (`super::tiny_spec`) on a device of the
//! kernels (the host executor, or a GPU) against the same steps on the CPU reference: the whole
//! launch path above the kernels, exchanges included. tests/emu_step.rs and tests/gpu.rs share it.

use super::{batch, tiny_spec};
use alexnet::device::Device;
use alexnet::device::cpu::CpuDevice;
use alexnet::model::Plan;
use alexnet::model::init::{NetParams, init_params};
use alexnet::parallel::Network;
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
/// element, with a floor of 1e-2 of the reference tensor's largest magnitude.
pub fn tensor_errors(got: &[Vec<f32>], want: &[Vec<f32>]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(g, w)| {
            let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
            max_rel_err(g, w, (1e-2 * scale).max(f64::MIN_POSITIVE))
        })
        .fold(0.0, f64::max)
}

/// `steps` training steps of the tiny net, with the classifier split over both towers and on
/// tower 0 alone (with ReLU and tanh), on `devices()` against the CPU reference: loss, top-k
/// errors, logits, gradients and updated weights after every step, within `STEP_TOL`.
pub fn tiny_steps_match_the_cpu<D: Device>(devices: impl Fn() -> Vec<D>, steps: u64) {
    for (first_tower_classifier, tanh) in [(false, false), (true, true)] {
        let plan = Plan::new(&tiny_spec(first_tower_classifier, tanh)).unwrap();
        let params = init_params(&plan, 6);
        let mut cpu = Network::new(&plan, vec![CpuDevice, CpuDevice], &params, 3).unwrap();
        let mut dev = Network::new(&plan, devices(), &params, 3).unwrap();
        let (images, labels) = batch(&plan, 3, 4);
        for step in 0..steps {
            let case = format!(
                "classifier on tower 0 only: {first_tower_classifier}, tanh {tanh}, step {step}"
            );
            let a = cpu.train_step(&images, &labels, 0.05, step).unwrap();
            let b = dev.train_step(&images, &labels, 0.05, step).unwrap();
            assert!(
                (a.loss - b.loss).abs() < STEP_TOL * a.loss,
                "{case}: loss {} vs {}",
                a.loss,
                b.loss
            );
            assert_eq!(
                (a.top1_errors, a.top5_errors),
                (b.top1_errors, b.top5_errors),
                "{case}"
            );
            let logits = tensor_errors(&[dev.logits().unwrap()], &[cpu.logits().unwrap()]);
            assert!(logits < STEP_TOL, "{case}: logits differ by {logits:.3e}");
            let grads = tensor_errors(
                &tensors(&dev.gradients().unwrap()),
                &tensors(&cpu.gradients().unwrap()),
            );
            assert!(grads < STEP_TOL, "{case}: gradients differ by {grads:.3e}");
            let weights = tensor_errors(
                &tensors(&dev.params().unwrap()),
                &tensors(&cpu.params().unwrap()),
            );
            assert!(
                weights < STEP_TOL,
                "{case}: weights differ by {weights:.3e}"
            );
            println!(
                "{case}: loss {:.6} vs {:.6}; logits {logits:.1e}, gradients {grads:.1e}, weights {weights:.1e}",
                a.loss, b.loss
            );
        }
    }
}
