//! The GPU build: each `cuda/*.cu` through nvcc into one fatbin, listed in the generated
//! `fatbins.rs` that `src/fatbins.rs` includes (an empty list where there is no nvcc).

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
