//! A few training steps of a small two-tower net through the real CUDA kernels, run by the host
//! executor (`KernelDevice<EmuLauncher>`, the `emu` device), against the same steps on the CPU
//! reference. This exercises the whole launch path a GPU uses — configurations, argument order,
//! buffer sizes, exchange order — on a machine without one.

mod common;

use alexnet::device::kernels::KernelDevice;
use alexnet::emu::EmuLauncher;
use common::step_checks::tiny_steps_match_the_cpu;

#[test]
fn training_steps_through_the_kernels_match_the_cpu_reference() {
    tiny_steps_match_the_cpu(
        || {
            vec![
                KernelDevice::new(EmuLauncher::new()),
                KernelDevice::new(EmuLauncher::new()),
            ]
        },
        3,
    );
}
