//! The host executor as a [`Launcher`]: the unchanged `cuda/*.cu` kernels, compiled for the CPU
//! by build.rs against `cuda/host/shim.h`, run by `cuda/host/executor.cpp` one block after
//! another with one fiber per CUDA thread, deterministically (DESIGN.md §5, layer 3).
//!
//! Buffers are host `Vec<f32>`s and a "device pointer" is the host address of the first element,
//! so everything above the `Launcher` interface (launch configurations, argument order, buffer
//! sizes) runs exactly as it does on a GPU.
//!
//! Variants: build.rs compiles some files a second time with a test switch (e.g. `nobarrier`:
//! `cuda/conv.cu` and `cuda/selftest.cu` without their `TEST_BARRIER()`); an
//! [`EmuLauncher::with_variant`] launcher takes a kernel from that build where there is one.

use crate::device::launch::{Kernel, LaunchConfig, Launcher};
use crate::device::{Block, copy_2d_host};
use anyhow::{Result, bail, ensure};
use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_void};
use std::sync::OnceLock;

/// A kernel's host entry: unpacks `args` (one pointer per parameter) and runs the kernel body
/// for the current CUDA thread.
type KernelFn = unsafe extern "C" fn(args: *mut *mut c_void);

/// `alexnet_emu::KernelEntry` (cuda/host/registry.h).
#[repr(C)]
struct RawEntry {
    variant: *const c_char,
    module: *const c_char,
    name: *const c_char,
    launch: KernelFn,
    n_params: u32,
    /// Per parameter: size, alignment and kind (for the simulated platform; unused here).
    _param_sizes: *const u32,
    _param_aligns: *const u32,
    _param_kinds: *const u8,
}

/// `alexnet_emu::KernelTable` (cuda/host/registry.h).
#[repr(C)]
struct RawTable {
    entries: *const RawEntry,
    len: usize,
}

unsafe extern "C" {
    /// build.rs's generated registry: one table per host-built kernel file.
    fn alexnet_emu_tables(count: *mut usize) -> *const *const RawTable;
    /// cuda/host/executor.cpp. Returns 0, or non-zero with a message in `err`.
    fn alexnet_emu_launch(
        kernel: KernelFn,
        args: *mut *mut c_void,
        grid: *const u32,
        block: *const u32,
        shared_bytes: u32,
        mode: i32,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn alexnet_emu_fiber_switches() -> u64;
}

/// The executor's fiber mode (the only one the crate's build has).
const MODE_FIBERS: i32 = 0;

#[derive(Clone, Copy)]
struct Entry {
    launch: KernelFn,
    n_params: u32,
}

/// (variant, module, kernel name) → entry; the normal build's variant is "".
type Registry = HashMap<(&'static str, &'static str, &'static str), Entry>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let text = |p: *const c_char| -> &'static str {
            // SAFETY: the registry's strings are NUL-terminated literals with static lifetime.
            unsafe { CStr::from_ptr(p) }
                .to_str()
                .expect("kernel names are ASCII")
        };
        let mut map = Registry::new();
        let mut count = 0usize;
        // SAFETY: the generated registry returns `count` valid table pointers, each with `len`
        // entries; all of it is static data.
        let tables = unsafe { std::slice::from_raw_parts(alexnet_emu_tables(&mut count), count) };
        for &table in tables {
            let table = unsafe { &*table };
            if table.len == 0 {
                continue;
            }
            let entries = unsafe { std::slice::from_raw_parts(table.entries, table.len) };
            for e in entries {
                map.insert(
                    (text(e.variant), text(e.module), text(e.name)),
                    Entry {
                        launch: e.launch,
                        n_params: e.n_params,
                    },
                );
            }
        }
        map
    })
}

/// Every kernel of the host build as (variant, module, name), sorted; variant "" is the normal
/// build.
pub fn registered_kernels() -> Vec<(&'static str, &'static str, &'static str)> {
    let mut all: Vec<_> = registry().keys().copied().collect();
    all.sort_unstable();
    all
}

/// Fiber switches the executor has made since the process started (for benchmarks).
pub fn fiber_switches() -> u64 {
    // SAFETY: reads a counter.
    unsafe { alexnet_emu_fiber_switches() }
}

/// Runs kernels on the CPU through the host executor. Launches are serialised (the executor
/// has global state, guarded by a mutex on its side).
#[derive(Clone, Debug, Default)]
pub struct EmuLauncher {
    variant: Option<&'static str>,
}

impl EmuLauncher {
    pub fn new() -> Self {
        Self::default()
    }

    /// A launcher that takes each kernel from the `variant` build of its file where there is
    /// one (e.g. "nobarrier"), else from the normal build.
    pub fn with_variant(variant: &str) -> Result<Self> {
        let Some(&(v, _, _)) = registry()
            .keys()
            .find(|(v, _, _)| !v.is_empty() && *v == variant)
        else {
            let mut known: Vec<_> = registry()
                .keys()
                .map(|k| k.0)
                .filter(|v| !v.is_empty())
                .collect();
            known.sort_unstable();
            known.dedup();
            bail!("emu: no kernel build variant {variant:?} (known: {known:?})");
        };
        Ok(Self { variant: Some(v) })
    }

    pub fn variant(&self) -> Option<&'static str> {
        self.variant
    }

    fn entry(&self, kernel: Kernel) -> Result<Entry> {
        let reg = registry();
        if let Some(v) = self.variant
            && let Some(e) = reg.get(&(v, kernel.module, kernel.name))
        {
            return Ok(*e);
        }
        if let Some(e) = reg.get(&("", kernel.module, kernel.name)) {
            return Ok(*e);
        }
        let in_module: Vec<_> = registered_kernels()
            .into_iter()
            .filter(|(v, m, _)| v.is_empty() && *m == kernel.module)
            .map(|(_, _, n)| n)
            .collect();
        if in_module.is_empty() {
            bail!(
                "emu: no kernel {}::{}: the host build has no module {:?} (no cuda/{}.cu, or it defines no extern \"C\" __global__ kernel)",
                kernel.module,
                kernel.name,
                kernel.module,
                kernel.module
            );
        }
        bail!(
            "emu: no kernel {}::{} (cuda/{}.cu defines {in_module:?})",
            kernel.module,
            kernel.name,
            kernel.module
        )
    }
}

impl Launcher for EmuLauncher {
    type Buf = Vec<f32>;

    fn describe(&self) -> String {
        match self.variant {
            Some(v) => format!("emu (host executor, fibers; variant {v})"),
            None => "emu (host executor, fibers)".into(),
        }
    }

    fn alloc(&self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }

    fn upload(&self, data: &[f32]) -> Result<Vec<f32>> {
        Ok(data.to_vec())
    }

    fn download(&self, buf: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(buf.clone())
    }

    fn len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }

    /// The host address of the first element. Kernels write through it into the buffer the
    /// caller passes as an output; that is sound as long as no Rust reference into the
    /// elements is alive during the launch (the elements sit behind the Vec's own raw pointer,
    /// so the `&Vec` used here does not cover them).
    fn device_ptr(&self, buf: &Vec<f32>) -> u64 {
        buf.as_ptr() as u64
    }

    fn copy_2d(
        &self,
        src: &Vec<f32>,
        from: Block,
        dst: &mut Vec<f32>,
        to: Block,
        width: usize,
        rows: usize,
    ) -> Result<()> {
        copy_2d_host(src, from, dst, to, width, rows)
    }

    fn launch(&self, kernel: Kernel, cfg: LaunchConfig, args: &[*mut c_void]) -> Result<()> {
        let entry = self.entry(kernel)?;
        let describe = || {
            format!(
                "emu: launching {}::{} (grid {:?}, block {:?}, {} shared bytes)",
                kernel.module, kernel.name, cfg.grid, cfg.block, cfg.shared_bytes
            )
        };
        ensure!(
            args.len() == entry.n_params as usize,
            "{}: {} arguments given, the kernel takes {}",
            describe(),
            args.len(),
            entry.n_params
        );
        let mut args = args.to_vec();
        let mut err = [0 as c_char; 512];
        // SAFETY: by the `Launcher::launch` contract each `args[i]` points to a value of the
        // kernel's i-th parameter type and every device pointer among them addresses a live host
        // buffer of the size the kernel uses; the launch is synchronous, so they outlive it.
        let rc = unsafe {
            alexnet_emu_launch(
                entry.launch,
                args.as_mut_ptr(),
                cfg.grid.as_ptr(),
                cfg.block.as_ptr(),
                cfg.shared_bytes,
                MODE_FIBERS,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if rc != 0 {
            // SAFETY: the executor NUL-terminates the message within the buffer.
            let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy();
            bail!("{}: {msg}", describe());
        }
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}
