//! The host executor's fiber switch cost: a kernel that does nothing but `__syncthreads()` in a
//! loop, so nearly all its time is switching between the block's fibers. Prints switches per
//! second and nanoseconds per switch.
//!   cargo bench --bench emu_fiber_switch

use alexnet::device::launch::{Kernel, LaunchConfig, Launcher};
use alexnet::emu::{EmuLauncher, fiber_switches};
use std::ffi::c_void;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let l = EmuLauncher::new();
    let kernel = Kernel {
        module: "selftest",
        name: "selftest_barrier_loop",
    };
    for threads in [32u32, 256, 1024] {
        let blocks = 4u32;
        let mut iters = (4_000_000 / (threads * blocks)) as i32;
        let out = l.alloc((threads * blocks) as usize)?;
        let mut ptr = l.device_ptr(&out);
        let args = [
            &mut iters as *mut i32 as *mut c_void,
            &mut ptr as *mut u64 as *mut c_void,
        ];
        let cfg = LaunchConfig {
            grid: [blocks, 1, 1],
            block: [threads, 1, 1],
            shared_bytes: 0,
        };
        l.launch(kernel, cfg, &args)?; // warm up: fiber stacks mapped and touched
        let (before, start) = (fiber_switches(), Instant::now());
        l.launch(kernel, cfg, &args)?;
        let secs = start.elapsed().as_secs_f64();
        let switches = (fiber_switches() - before) as f64;
        println!(
            "{threads:5} threads/block: {:.0} switches in {:.3} s = {:.1} M switches/s, {:.1} ns/switch",
            switches,
            secs,
            switches / secs / 1e6,
            secs / switches * 1e9
        );
    }
    Ok(())
}
