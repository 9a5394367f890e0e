//! Compiles the CUDA kernels `cuda/*.cu` twice:
//! - for the GPU with nvcc, one fatbin per file (SASS per target plus PTX of the lowest, so newer
//!   GPUs JIT it), embedded in the crate (`src/fatbins.rs`). Without nvcc the crate still builds,
//!   with no fatbins, unless `CI` is set.
//! - for the CPU with the host C++ compiler (the `cc` crate), each file unchanged after
//!   `cuda/host/shim.h`, plus a registry of its `extern "C" __global__` kernels: the host executor
//!   (`src/emu`). This needs no CUDA toolkit, so every build can run the kernels.
//!
//! and builds the simulated CUDA platform (`cuda/sim`) from the same host objects:
//! `target/<profile>/sim/` with `libcuda.so.1`, `libcublas.so.13` and `libnccl.so.2`, named as a
//! real installation names them, for running the GPU path without a GPU (README).

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

// The three builds, one file each under build/; this file holds what they share.
#[path = "build/gpu.rs"]
mod gpu;
#[path = "build/host.rs"]
mod host;
#[path = "build/sim.rs"]
mod sim;

/// Extra host-only builds of a kernel file: (module, variant, macro defined for it). The
/// variant's kernels are registered under the variant's name (`EmuLauncher::with_variant`).
const HOST_VARIANTS: &[(&str, &str, &str)] = &[
    ("conv", "nobarrier", "ALEXNET_DROP_TEST_BARRIER"),
    ("conv", "nowait", "ALEXNET_DROP_TEST_ASYNC_WAIT"),
    ("conv", "skipmma", "ALEXNET_TEST_SKIP_ONE_MMA"),
    ("selftest", "nobarrier", "ALEXNET_DROP_TEST_BARRIER"),
    ("selftest", "nowait", "ALEXNET_DROP_TEST_ASYNC_WAIT"),
];

/// SASS targets when `ALEXNET_CUDA_ARCHS` is unset: A100 and H100/H200.
const DEFAULT_ARCHS: &str = "80,90";

/// The token shim.h turns `__global__` into while build.rs scans a preprocessed source.
const GLOBAL_MARK: &str = "ALEXNET_EMU_GLOBAL_MARK";

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(env_var("OUT_DIR")?);
    let cuda = manifest.join("cuda");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=cuda");
    let sources = kernel_sources(&cuda)?;
    gpu::build(&sources, &cuda, &out)?;
    let host_objects = host::build(&sources, &cuda, &out)?;
    sim::build(&cuda, &out, &host_objects)
}

fn env_var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|_| format!("{name} is not set (build.rs runs under cargo)"))
}

/// Set and non-empty (and not "0"/"false").
fn env_flag(name: &str) -> bool {
    env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// A kernel file: its stem (the module name) and path.
struct Source {
    module: String,
    path: PathBuf,
}

fn kernel_sources(cuda: &Path) -> Result<Vec<Source>, String> {
    let entries = fs::read_dir(cuda).map_err(|e| format!("reading {}: {e}", cuda.display()))?;
    let mut sources = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("reading {}: {e}", cuda.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "cu") {
            let module = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let valid = module
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && module
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "{}: kernel file names must be C identifiers (they name modules)",
                    path.display()
                ));
            }
            sources.push(Source { module, path });
        }
    }
    sources.sort_by(|a, b| a.module.cmp(&b.module));
    Ok(sources)
}

/// `target/<profile>`, where the ptxas report goes (OUT_DIR is `target/<profile>/build/<pkg>/out`).
fn profile_dir(out: &Path) -> PathBuf {
    out.ancestors().nth(3).unwrap_or(out).to_path_buf()
}

fn write_file(path: &Path, contents: &str) -> Result<(), String> {
    // Leave an unchanged file alone so its timestamp does not trigger rebuilds.
    if fs::read_to_string(path).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    fs::write(path, contents).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Runs `f` on every item with up to `available_parallelism` threads; the first error wins.
fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R, String> + Sync,
) -> Result<Vec<R>, String> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len().max(1));
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<Result<R, String>>>> =
        Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().unwrap();
                        *n += 1;
                        *n - 1
                    };
                    if i >= items.len() {
                        break;
                    }
                    let r = f(&items[i]);
                    results.lock().unwrap()[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.expect("every item ran"))
        .collect()
}
