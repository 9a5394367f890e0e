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

mod gpu {
    use super::*;

    pub fn build(sources: &[Source], cuda: &Path, out: &Path) -> Result<(), String> {
        for var in ["NVCC", "CUDA_HOME", "CUDA_PATH", "ALEXNET_CUDA_ARCHS", "CI"] {
            println!("cargo:rerun-if-env-changed={var}");
        }
        let archs = cuda_archs()?;
        let report = profile_dir(out).join("ptxas-report.txt");
        let Some(nvcc) = find_nvcc()? else {
            if env_flag("CI") {
                return Err(
                    "CI is set but nvcc was not found, so the GPU kernels would not be \
                    compiled. Install it with ../shared/tools/install-nvcc.sh and export the NVCC \
                    line it prints (or set CUDA_HOME, or put nvcc on PATH)."
                        .into(),
                );
            }
            println!(
                "cargo:warning=GPU kernels not compiled: nvcc not found (the host executor still \
                 runs them on the CPU). To build them, run ../shared/tools/install-nvcc.sh and \
                 export the NVCC=... line it prints, or set CUDA_HOME / put nvcc on PATH."
            );
            write_file(&report, "# no nvcc: GPU kernels not compiled\n")?;
            return write_fatbins_rs(out, false, &archs, &[]);
        };

        let release = nvcc_release(&nvcc)?;
        if release > (13, 0) {
            println!(
                "cargo:warning=nvcc {}.{} emits PTX that the 580 driver (CUDA 13.0) cannot load; \
                 the project pins nvcc 13.0 (../shared/tools/install-nvcc.sh)",
                release.0, release.1
            );
        }
        let compiled = parallel_map(sources, |src| compile(&nvcc, src, cuda, out, &archs))?;
        let mut lines: Vec<String> = compiled
            .iter()
            .flat_map(|c| c.report.iter().cloned())
            .collect();
        lines.sort();
        let mut text = format!(
            "# nvcc {}.{}, ptxas -v per kernel and target: registers, shared memory, stack frame and spills (bytes)\n",
            release.0, release.1
        );
        for line in lines {
            text.push_str(&line);
            text.push('\n');
        }
        write_file(&report, &text)?;
        let fatbins: Vec<(String, PathBuf)> =
            compiled.into_iter().map(|c| (c.module, c.fatbin)).collect();
        write_fatbins_rs(out, true, &archs, &fatbins)
    }

    fn cuda_archs() -> Result<Vec<u32>, String> {
        let spec = env::var("ALEXNET_CUDA_ARCHS").unwrap_or_else(|_| DEFAULT_ARCHS.into());
        let mut archs = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let arch: u32 = part.parse().map_err(|_| {
                format!("ALEXNET_CUDA_ARCHS={spec:?}: expected compute capabilities like \"80,90\"")
            })?;
            archs.push(arch);
        }
        if archs.is_empty() {
            return Err(format!("ALEXNET_CUDA_ARCHS={spec:?} names no target"));
        }
        archs.sort_unstable();
        archs.dedup();
        Ok(archs)
    }

    /// NVCC, then CUDA_HOME / CUDA_PATH (`bin/nvcc`), then PATH.
    fn find_nvcc() -> Result<Option<PathBuf>, String> {
        if let Some(nvcc) = env::var_os("NVCC").filter(|v| !v.is_empty()) {
            let nvcc = PathBuf::from(nvcc);
            if !nvcc.is_file() {
                return Err(format!("NVCC={} does not exist", nvcc.display()));
            }
            return Ok(Some(nvcc));
        }
        for var in ["CUDA_HOME", "CUDA_PATH"] {
            if let Some(home) = env::var_os(var).filter(|v| !v.is_empty()) {
                let nvcc = PathBuf::from(home).join("bin").join("nvcc");
                if nvcc.is_file() {
                    return Ok(Some(nvcc));
                }
            }
        }
        println!("cargo:rerun-if-env-changed=PATH");
        let path = env::var_os("PATH").unwrap_or_default();
        Ok(env::split_paths(&path)
            .map(|dir| dir.join("nvcc"))
            .find(|p| p.is_file()))
    }

    /// (major, minor) from `nvcc --version` ("Cuda compilation tools, release 13.0, V13.0.88").
    fn nvcc_release(nvcc: &Path) -> Result<(u32, u32), String> {
        let output = Command::new(nvcc)
            .arg("--version")
            .output()
            .map_err(|e| format!("running {} --version: {e}", nvcc.display()))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let release = text
            .split("release ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|r| r.split_once('.'))
            .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
        release.ok_or_else(|| format!("{} --version printed no release: {text}", nvcc.display()))
    }

    struct Compiled {
        module: String,
        fatbin: PathBuf,
        report: Vec<String>,
    }

    fn compile(
        nvcc: &Path,
        src: &Source,
        cuda: &Path,
        out: &Path,
        archs: &[u32],
    ) -> Result<Compiled, String> {
        let fatbin = out.join(format!("{}.fatbin", src.module));
        let mut cmd = Command::new(nvcc);
        cmd.args(["-fatbin", "-O3", "-std=c++17", "-lineinfo", "-Xptxas", "-v"])
            .arg("-I")
            .arg(cuda);
        for arch in archs {
            cmd.arg("-gencode")
                .arg(format!("arch=compute_{arch},code=sm_{arch}"));
        }
        // PTX for the lowest target: GPUs newer than every SASS target JIT it.
        cmd.arg("-gencode")
            .arg(format!("arch=compute_{0},code=compute_{0}", archs[0]));
        cmd.arg("-o").arg(&fatbin).arg(&src.path);
        let output = cmd
            .output()
            .map_err(|e| format!("running {}: {e}", nvcc.display()))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(format!(
                "nvcc failed on {}:\n{stdout}{stderr}",
                src.path.display()
            ));
        }
        for line in stdout.lines().chain(stderr.lines()) {
            if line.contains("warning") {
                println!("cargo:warning=nvcc {}: {line}", src.path.display());
            }
        }
        Ok(Compiled {
            module: src.module.clone(),
            fatbin,
            report: ptxas_report(&src.module, &stderr),
        })
    }

    /// One line per kernel and target from ptxas's `-v` output:
    /// `module kernel sm_XX registers=N smem=N stack=N spill_stores=N spill_loads=N`.
    fn ptxas_report(module: &str, log: &str) -> Vec<String> {
        let number_before = |line: &str, what: &str| -> u64 {
            let Some(end) = line.find(what) else { return 0 };
            line[..end]
                .split(|c: char| !c.is_ascii_digit())
                .rfind(|s| !s.is_empty())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        let mut lines = Vec::new();
        let (mut kernel, mut arch) = (String::new(), String::new());
        let (mut stack, mut spill_st, mut spill_ld) = (0, 0, 0);
        for line in log.lines() {
            if let Some(rest) = line.split("Compiling entry function '").nth(1) {
                let mut parts = rest.split('\'');
                kernel = parts.next().unwrap_or_default().to_string();
                arch = parts.nth(1).unwrap_or_default().to_string();
                (stack, spill_st, spill_ld) = (0, 0, 0);
            } else if line.contains("bytes stack frame") {
                stack = number_before(line, "bytes stack frame");
                spill_st = number_before(line, "bytes spill stores");
                spill_ld = number_before(line, "bytes spill loads");
            } else if line.contains("Used") && line.contains("registers") && !kernel.is_empty() {
                let registers = number_before(line, "registers");
                let smem = number_before(line, "bytes smem");
                lines.push(format!(
                    "{module} {kernel} {arch} registers={registers} smem={smem} stack={stack} spill_stores={spill_st} spill_loads={spill_ld}"
                ));
                kernel.clear();
            }
        }
        lines
    }

    fn write_fatbins_rs(
        out: &Path,
        embedded: bool,
        archs: &[u32],
        fatbins: &[(String, PathBuf)],
    ) -> Result<(), String> {
        let mut rs = String::from("// Generated by build.rs.\n");
        let _ = writeln!(rs, "pub const KERNELS_EMBEDDED: bool = {embedded};");
        let _ = writeln!(rs, "pub const CUDA_ARCHS: &[u32] = &{archs:?};");
        rs.push_str("pub static FATBINS: &[(&str, &[u8])] = &[\n");
        for (module, path) in fatbins {
            let _ = writeln!(
                rs,
                "    ({module:?}, include_bytes!({:?})),",
                path.display().to_string()
            );
        }
        rs.push_str("];\n");
        write_file(&out.join("fatbins.rs"), &rs)
    }
}

/// The simulated CUDA platform (DESIGN.md §5, level 3b): `cuda/sim/*.cpp` with the host
/// executor's objects, linked into the three libraries a real installation provides, under the
/// names it gives them (and no other), in `target/<profile>/sim/`. Their exports are listed
/// here; everything else stays inside each library.
mod sim {
    use super::*;

    /// (library, its sources in cuda/sim, the symbols it exports by prefix)
    const LIBRARIES: &[(&str, &[&str], &[&str])] = &[
        (
            "libcuda.so.1",
            &[
                "config.cpp",
                "copy.cpp",
                "driver.cpp",
                "errors.cpp",
                "memory.cpp",
                "module.cpp",
                "sanitizer.cpp",
                "scheduler.cpp",
                "sim_api.cpp",
                "trace.cpp",
            ],
            &["cu", "alexnet_sim_"],
        ),
        ("libcublas.so.13", &["cublas.cpp"], &["cublas"]),
        ("libnccl.so.2", &["nccl.cpp"], &["nccl"]),
    ];

    pub fn build(cuda: &Path, out: &Path, host_objects: &[PathBuf]) -> Result<(), String> {
        let src = cuda.join("sim");
        let dir = profile_dir(out).join("sim");
        fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let mut build = cc::Build::new();
        build
            .cpp(true)
            .std("c++17")
            .pic(true)
            .include(&src)
            .include(cuda.join("host"))
            .flag("-fvisibility=hidden")
            .flag("-fno-strict-aliasing")
            .flag("-pthread")
            .warnings(false);
        let linker = build.get_compiler();
        for (library, sources, exports) in LIBRARIES {
            let objects = build
                .clone()
                .files(sources.iter().map(|f| src.join(f)))
                .try_compile_intermediates()
                .map_err(|e| format!("building the simulated {library} failed: {e}"))?;
            let script = out.join(format!("{library}.map"));
            write_file(&script, &version_script(exports))?;
            let mut cmd = linker.to_command();
            cmd.arg("-shared")
                .arg("-o")
                .arg(dir.join(library))
                .arg(format!("-Wl,-soname,{library}"))
                .arg(format!("-Wl,--version-script={}", script.display()))
                .args(&objects);
            if *library == "libcuda.so.1" {
                // The kernels and the executor that runs them.
                cmd.args(host_objects);
            } else {
                // The core it queues its work on: the libcuda.so.1 beside it.
                cmd.arg(format!("-L{}", dir.display()))
                    .arg("-l:libcuda.so.1")
                    .arg("-Wl,-rpath,$ORIGIN");
            }
            cmd.arg("-pthread");
            let output = cmd
                .output()
                .map_err(|e| format!("linking the simulated {library}: {e}"))?;
            if !output.status.success() {
                return Err(format!(
                    "linking the simulated {library} failed:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
        }
        // Where tests find it.
        println!("cargo:rustc-env=ALEXNET_SIM_DIR={}", dir.display());
        Ok(())
    }

    fn version_script(prefixes: &[&str]) -> String {
        let globals: String = prefixes.iter().map(|p| format!("    {p}*;\n")).collect();
        format!("{{\n  global:\n{globals}  local: *;\n}};\n")
    }
}

mod host {
    use super::*;

    /// One translation unit of the host build: a kernel file, built plainly or as a variant.
    struct Unit<'a> {
        src: &'a Source,
        variant: &'a str,
        define: Option<&'a str>,
    }

    impl Unit<'_> {
        fn tag(&self) -> String {
            let variant = if self.variant.is_empty() {
                "base"
            } else {
                self.variant
            };
            format!("{}__{variant}", self.src.module)
        }
    }

    /// Builds the host executor and every kernel file for it into the static library the crate
    /// links; returns their objects (the simulated platform links them too).
    pub fn build(sources: &[Source], cuda: &Path, out: &Path) -> Result<Vec<PathBuf>, String> {
        let host_dir = cuda.join("host");
        let mut units = Vec::new();
        for src in sources {
            units.push(Unit {
                src,
                variant: "",
                define: None,
            });
            for (module, variant, define) in HOST_VARIANTS {
                if *module == src.module {
                    units.push(Unit {
                        src,
                        variant,
                        define: Some(define),
                    });
                }
            }
        }

        let mut build = cc::Build::new();
        build
            .cpp(true)
            .std("c++17")
            .include(&host_dir)
            .include(cuda)
            // Kernels reinterpret float* as float4* and the like, as CUDA code does.
            .flag("-fno-strict-aliasing")
            // No errno from math functions on the GPU either; lets g++ vectorise expf & co.
            .flag("-fno-math-errno")
            // Sums stay as written (no contraction of a*b+c), as the kernels' references expect.
            .flag("-ffp-contract=off")
            .flag("-Wno-unknown-pragmas")
            .warnings(false);
        // fmaf (the tensor-core emulation's inner loop) as one instruction instead of a call
        // into libm, where the machine building (and running) the tests has it.
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("fma") {
            build.flag("-mfma");
        }
        // The kernels run thousands of fibers; unoptimised they are far too slow even for tests.
        if matches!(env::var("OPT_LEVEL").as_deref(), Ok("0" | "1" | "s" | "z")) {
            build.opt_level(2);
        }
        let compiler = build.get_compiler();

        let generated = parallel_map(&units, |unit| {
            let kernels = scan_kernels(&compiler, unit, &host_dir, out)?;
            let path = out.join(format!("emu_{}.cpp", unit.tag()));
            write_file(&path, &unit_source(unit, &kernels))?;
            Ok(path)
        })?;
        let registry = out.join("emu_registry.cpp");
        write_file(&registry, &registry_source(&units))?;

        build
            .files(&generated)
            .file(&registry)
            .file(host_dir.join("executor.cpp"));
        let objects = build
            .try_compile_intermediates()
            .map_err(|e| format!("host build of the kernels failed: {e}"))?;
        archive(&build, out, "alexnet_emu", &objects)?;
        Ok(objects)
    }

    /// `lib<name>.a` in `out` from `objects`, linked into the crate (with the C++ library).
    fn archive(
        build: &cc::Build,
        out: &Path,
        name: &str,
        objects: &[PathBuf],
    ) -> Result<(), String> {
        let lib = out.join(format!("lib{name}.a"));
        let _ = fs::remove_file(&lib);
        let status = build
            .get_archiver()
            .arg("crs")
            .arg(&lib)
            .args(objects)
            .status()
            .map_err(|e| format!("running the archiver: {e}"))?;
        if !status.success() {
            return Err(format!("the archiver failed making {}", lib.display()));
        }
        println!("cargo:rustc-link-search=native={}", out.display());
        println!("cargo:rustc-link-lib=static={name}");
        println!("cargo:rustc-link-lib=stdc++");
        Ok(())
    }

    /// The `extern "C"` kernels the unit defines, found in its preprocessed text (so `#if`
    /// blocks count as the host compile will see them).
    fn scan_kernels(
        compiler: &cc::Tool,
        unit: &Unit,
        host_dir: &Path,
        out: &Path,
    ) -> Result<Vec<String>, String> {
        let scan = out.join(format!("scan_{}.cpp", unit.tag()));
        write_file(
            &scan,
            &format!(
                "#include \"shim.h\"\n#include {:?}\n",
                unit.src.path.display().to_string()
            ),
        )?;
        let mut cmd = compiler.to_command();
        cmd.arg("-E")
            .arg("-DALEXNET_EMU_SCAN")
            .arg("-I")
            .arg(host_dir);
        if let Some(define) = unit.define {
            cmd.arg(format!("-D{define}"));
        }
        cmd.arg(&scan);
        let output = cmd
            .output()
            .map_err(|e| format!("running the host C++ compiler: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "preprocessing {} for the host executor failed:\n{}",
                unit.src.path.display(),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(find_kernels(&String::from_utf8_lossy(&output.stdout)))
    }

    fn unit_source(unit: &Unit, kernels: &[String]) -> String {
        let tag = unit.tag();
        let mut s = format!(
            "// Generated by build.rs: the host executor's build of cuda/{}.cu{}.\n",
            unit.src.module,
            if unit.variant.is_empty() {
                String::new()
            } else {
                format!(" (variant {})", unit.variant)
            }
        );
        if let Some(define) = unit.define {
            let _ = writeln!(s, "#define {define} 1");
        }
        s.push_str("#include \"shim.h\"\n#include \"registry.h\"\n");
        s.push_str(
            "// Each build of a file gets its own symbols: kernels renamed, the rest internal.\n",
        );
        for k in kernels {
            let _ = writeln!(s, "#define {k} alexnet_emu_{tag}__{k}");
        }
        let _ = writeln!(
            s,
            "namespace {{\n#include {:?}\n}}  // namespace",
            unit.src.path.display().to_string()
        );
        if kernels.is_empty() {
            let _ = writeln!(
                s,
                "extern \"C\" const alexnet_emu::KernelTable alexnet_emu_table__{tag} = {{nullptr, 0}};"
            );
        } else {
            s.push_str("static const alexnet_emu::KernelEntry alexnet_emu_entries[] = {\n");
            for k in kernels {
                let _ = writeln!(
                    s,
                    "    alexnet_emu::kernel_entry<&{k}>({:?}, {:?}, {k:?}),",
                    unit.variant, unit.src.module
                );
            }
            s.push_str("};\n");
            let _ = writeln!(
                s,
                "extern \"C\" const alexnet_emu::KernelTable alexnet_emu_table__{tag} = {{alexnet_emu_entries, {}}};",
                kernels.len()
            );
        }
        s
    }

    fn registry_source(units: &[Unit]) -> String {
        let mut s = String::from(
            "// Generated by build.rs: every host-built kernel file's table.\n#include \"registry.h\"\n",
        );
        for u in units {
            let _ = writeln!(
                s,
                "extern \"C\" const alexnet_emu::KernelTable alexnet_emu_table__{};",
                u.tag()
            );
        }
        s.push_str("static const alexnet_emu::KernelTable* const tables[] = {\n");
        for u in units {
            let _ = writeln!(s, "    &alexnet_emu_table__{},", u.tag());
        }
        s.push_str("    nullptr,\n};\n");
        let _ = writeln!(
            s,
            "extern \"C\" const alexnet_emu::KernelTable* const* alexnet_emu_tables(size_t* count) {{\n    *count = {};\n    return tables;\n}}",
            units.len()
        );
        s
    }

    #[derive(Debug, PartialEq)]
    enum Token {
        Ident(String),
        Str(String),
        Punct(char),
    }

    /// A rough C++ lexer, enough for preprocessed text: identifiers, string literals, punctuation.
    fn tokens(text: &str) -> Vec<Token> {
        let chars: Vec<char> = text.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        let mut line_start = true;
        while i < chars.len() {
            let c = chars[i];
            if c == '\n' {
                line_start = true;
                i += 1;
                continue;
            }
            if c.is_whitespace() {
                i += 1;
                continue;
            }
            if c == '#' && line_start {
                // A line marker or a #pragma: skip the line.
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            line_start = false;
            if c.is_ascii_alphabetic() || c == '_' {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                out.push(Token::Ident(chars[start..i].iter().collect()));
            } else if c.is_ascii_digit() {
                // Numbers, with C++14 digit separators and exponent signs.
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric()
                        || chars[i] == '.'
                        || chars[i] == '\''
                        || ((chars[i] == '+' || chars[i] == '-')
                            && matches!(chars[i - 1], 'e' | 'E' | 'p' | 'P')))
                {
                    i += 1;
                }
            } else if c == '"' || c == '\'' {
                let start = i + 1;
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if c == '"' {
                    out.push(Token::Str(
                        chars[start..i.min(chars.len())].iter().collect(),
                    ));
                }
                i += 1;
            } else {
                out.push(Token::Punct(c));
                i += 1;
            }
        }
        out
    }

    /// Names of the functions marked `__global__` with C linkage (`extern "C"` before the
    /// marker, or inside an `extern "C" { ... }` block), in order, without repeats.
    pub(super) fn find_kernels(text: &str) -> Vec<String> {
        let toks = tokens(text);
        let is_ident = |i: usize, s: &str| matches!(toks.get(i), Some(Token::Ident(x)) if x == s);
        let is_punct = |i: usize, c: char| matches!(toks.get(i), Some(Token::Punct(x)) if *x == c);
        let is_extern_c = |i: usize| {
            is_ident(i, "extern") && matches!(toks.get(i + 1), Some(Token::Str(s)) if s == "C")
        };
        let mut braces: Vec<bool> = Vec::new(); // per open brace: an extern "C" block?
        let mut names: Vec<String> = Vec::new();
        for i in 0..toks.len() {
            if is_punct(i, '{') {
                braces.push(i >= 2 && is_extern_c(i - 2));
            } else if is_punct(i, '}') {
                braces.pop();
            } else if is_ident(i, GLOBAL_MARK) {
                let c_linkage = braces.iter().any(|&b| b) || (i >= 2 && is_extern_c(i - 2));
                if !c_linkage {
                    continue; // a template or C++-mangled kernel: not launchable by name
                }
                let mut j = i + 1;
                while j < toks.len() && !is_punct(j, ';') && !is_punct(j, '{') {
                    if is_ident(j, "__attribute__") {
                        // Skip its parenthesised group.
                        let mut depth = 0;
                        j += 1;
                        while j < toks.len() {
                            if is_punct(j, '(') {
                                depth += 1;
                            } else if is_punct(j, ')') {
                                depth -= 1;
                                if depth == 0 {
                                    break;
                                }
                            }
                            j += 1;
                        }
                    } else if let (Some(Token::Ident(name)), true) =
                        (toks.get(j), is_punct(j + 1, '('))
                    {
                        if !names.contains(name) {
                            names.push(name.clone());
                        }
                        break;
                    }
                    j += 1;
                }
            }
        }
        names
    }
}
