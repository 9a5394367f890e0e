//! A few training steps of a small two-tower net through the real CUDA kernels, run by the host
//! executor (`KernelDevice<EmuLauncher>`, the `emu` device), against the same steps on the CPU
//! reference. This exercises the whole launch path a GPU uses — configurations, argument order,
//! buffer sizes, exchange order — on a machine without one.

mod common;

use alexnet::device::cpu::CpuDevice;
use alexnet::device::kernels::KernelDevice;
use alexnet::emu::EmuLauncher;
use alexnet::model::Plan;
use alexnet::model::init::init_params;
use alexnet::parallel::Network;
use alexnet::tensor::max_rel_err;
use common::{batch, flatten, tiny_spec};

/// The kernels sum in another order than the CPU path (tiled GEMM, split-K filter gradients)
/// and use `__expf`-class intrinsics on the GPU (the host executor maps them to libm): fp32
/// reordering of sums of a few hundred terms, about 1e-6 relative, compounded over three
/// steps. 1e-4 relative, with floors of 1e-2 of the quantity's scale for elements that cancel
/// to near zero, leaves a wide margin and still catches any wrong term (as the golden tests
/// show, a wrong term moves results by 1e-2 or more).
const TOL: f64 = 1e-4;

#[test]
fn training_steps_through_the_kernels_match_the_cpu_reference() {
    for (first_tower_classifier, tanh) in [(false, false), (true, true)] {
        let plan = Plan::new(&tiny_spec(first_tower_classifier, tanh)).unwrap();
        let params = init_params(&plan, 6);
        let mut cpu = Network::new(&plan, vec![CpuDevice, CpuDevice], &params, 3).unwrap();
        let emu_devices = vec![
            KernelDevice::new(EmuLauncher::new()),
            KernelDevice::new(EmuLauncher::new()),
        ];
        let mut emu = Network::new(&plan, emu_devices, &params, 3).unwrap();
        let (images, labels) = batch(&plan, 3, 4);
        for step in 0..3 {
            let a = cpu.train_step(&images, &labels, 0.05, step).unwrap();
            let b = emu.train_step(&images, &labels, 0.05, step).unwrap();
            let case = format!(
                "first-tower classifier {first_tower_classifier}, tanh {tanh}, step {step}"
            );
            assert!(
                (a.loss - b.loss).abs() < TOL * a.loss,
                "{case}: loss {} vs {}",
                a.loss,
                b.loss
            );
            assert_eq!(
                (a.top1_errors, a.top5_errors),
                (b.top1_errors, b.top5_errors),
                "{case}"
            );
            let err = max_rel_err(&emu.logits().unwrap(), &cpu.logits().unwrap(), 1e-2);
            assert!(err < TOL, "{case}: logits differ by {err}");
            let (ge, gc) = (
                flatten(&emu.gradients().unwrap()),
                flatten(&cpu.gradients().unwrap()),
            );
            let scale = gc.iter().fold(0f32, |m, g| m.max(g.abs())) as f64;
            let err = max_rel_err(&ge, &gc, 1e-2 * scale);
            assert!(err < TOL, "{case}: gradients differ by {err}");
            let err = max_rel_err(
                &flatten(&emu.params().unwrap()),
                &flatten(&cpu.params().unwrap()),
                1e-2,
            );
            assert!(err < TOL, "{case}: weights differ by {err}");
            println!("{case}: loss {:.6} vs {:.6}", a.loss, b.loss);
        }
    }
}
