//! The simulated CUDA platform (DESIGN.md §5, level 3b): `cuda/sim/*.cpp` with the host
//! executor's objects, linked into the three libraries a real installation provides, under the
//! names it gives them (and no other), in `target/<profile>/sim/`. Their exports are listed
//! here; everything else stays inside each library.

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
