//! A few training steps of a small two-tower net through the real CUDA kernels, run by the host
//! executor (`KernelDevice<EmuLauncher>`, the `emu` device), against the same steps on the CPU
//! reference. This exercises the whole launch path a GPU uses — configurations, argument order,
//! buffer sizes, exchange order — on a machine without one; at fp32 and on the tensor-core
//! kernels at TF32 and bf16, each against the CPU at the same precision.

pub mod support;

use alexnet::device::kernels::KernelDevice;
use alexnet::emu::EmuLauncher;
use alexnet::ops::precision::Precision;
use support::step_checks::{staged_steps_equal_synchronous_steps, tiny_steps_match_the_cpu};

fn emu_pair() -> Vec<KernelDevice<EmuLauncher>> {
    vec![
        KernelDevice::new(EmuLauncher::new()),
        KernelDevice::new(EmuLauncher::new()),
    ]
}

#[test]
fn training_steps_through_the_kernels_match_the_cpu_reference() {
    tiny_steps_match_the_cpu(emu_pair, Precision::Fp32, 3);
}

#[test]
fn tensor_core_training_steps_match_the_cpu_reference_at_the_same_precision() {
    for prec in [Precision::Tf32, Precision::Bf16] {
        tiny_steps_match_the_cpu(emu_pair, prec, 3);
    }
}

#[test]
fn the_tensor_core_step_check_fails_with_a_broken_kernel() {
    // The tensor-core steps are judged at 4 rounding units of each tensor's scale (see
    // `step_tolerance`); kernels that read a stage before its copies land, or before all its
    // threads wrote it, must still fail. (The `skipmma` build would not: the tiny net's layers
    // have fewer outputs than a warp's last product covers.)
    for (variant, prec) in [("nowait", Precision::Tf32), ("nobarrier", Precision::Bf16)] {
        let broken = || {
            vec![
                KernelDevice::new(EmuLauncher::with_variant(variant).unwrap()),
                KernelDevice::new(EmuLauncher::with_variant(variant).unwrap()),
            ]
        };
        let result = std::panic::catch_unwind(|| tiny_steps_match_the_cpu(broken, prec, 1));
        assert!(
            result.is_err(),
            "the {variant} kernels passed the {prec} step check"
        );
    }
}

#[test]
fn the_double_buffered_upload_trains_bit_identically_to_the_synchronous_one() {
    staged_steps_equal_synchronous_steps(emu_pair);
}
