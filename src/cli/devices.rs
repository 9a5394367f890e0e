//! `alexnet devices`: the GPUs, their peer access, and the kernels and libraries this build can
//! use.

use crate::cuda::{self, driver};
use std::fmt::Write;

/// What `alexnet devices` prints: the GPUs, their peer access, and the kernels in this build.
/// Without a driver it says so (it is not an error to have no GPU).
pub fn report() -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}", cpu_line());
    let _ = writeln!(
        s,
        "GPU kernels embedded in this build: {}",
        kernels_embedded()
    );
    let drv = match driver::init() {
        Ok(d) => d,
        Err(e) => {
            let _ = writeln!(s, "GPUs: none usable: {e:#}");
            let _ = writeln!(s, "{}", nccl_line());
            return s;
        }
    };
    let _ = writeln!(
        s,
        "CUDA driver: supports CUDA {}; {}",
        drv.version_string(),
        driver::plural(drv.devices, "GPU")
    );
    for o in 0..drv.devices {
        let _ = writeln!(s, "  {}", gpu_line(o));
    }
    s += &peer_access(drv.devices);
    let _ = writeln!(
        s,
        "fc layers: {}",
        match crate::cuda::blas::why_not_cublas() {
            None => "cuBLAS".to_string(),
            Some(why) => format!("our own GEMM kernels ({why})"),
        }
    );
    let _ = writeln!(s, "{}", nccl_line());
    let _ = writeln!(
        s,
        "Placement: --device cuda --devices 0,1 puts tower A on GPU 0 and B on GPU 1; --devices 0 puts both on GPU 0 (two streams)."
    );
    s
}

/// The CPU path's vectors: the set in use, and the machine's best where the variable lowers it.
fn cpu_line() -> String {
    use crate::ops::simd::Isa;
    let (active, best) = (Isa::active(), Isa::best());
    let why = if active == best {
        "this CPU's best".to_string()
    } else {
        format!("held there by ALEXNET_CPU_ISA; this CPU's best is {best}")
    };
    format!(
        "CPU kernels: {active} ({why}), {} threads",
        rayon::current_num_threads()
    )
}

/// The architectures this build's kernels are compiled for, or why there are none.
fn kernels_embedded() -> String {
    let archs = crate::fatbins::CUDA_ARCHS;
    if !crate::fatbins::KERNELS_EMBEDDED {
        return "no (built without nvcc; --device emu runs them on the CPU)".to_string();
    }
    let arch_list = archs
        .iter()
        .map(|a| format!("sm_{a}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "yes ({arch_list}; PTX for compute_{})",
        archs.first().copied().unwrap_or_default()
    )
}

/// GPU `o`: its name, memory, compute capability, and whether this build's kernels run on it.
fn gpu_line(o: usize) -> String {
    match driver::gpu_info(o) {
        Ok(g) => {
            let (major, minor) = g.compute_capability;
            format!(
                "cuda:{o} {}: {}, compute capability {major}.{minor}, {} SMs; kernels: {}",
                g.name,
                driver::gb(g.total_bytes),
                g.multiprocessors,
                if crate::fatbins::KERNELS_EMBEDDED {
                    driver::kernel_fit(crate::fatbins::CUDA_ARCHS, g.compute_capability)
                } else {
                    "none in this build"
                }
            )
        }
        Err(e) => format!("cuda:{o}: {e:#}"),
    }
}

/// Which of `gpus` GPUs reads which one's memory directly, as a table (one line for one GPU).
fn peer_access(gpus: usize) -> String {
    if gpus == 1 {
        return "Peer access: one GPU, nothing to enable (two towers share it on two streams)\n"
            .to_string();
    }
    let mut s = "Peer access (row reads column's memory directly; otherwise copies are staged):\n"
        .to_string();
    let _ = write!(s, "{:>10}", "");
    for b in 0..gpus {
        let _ = write!(s, " {:>7}", format!("cuda:{b}"));
    }
    s.push('\n');
    for a in 0..gpus {
        let _ = write!(s, "{:>10}", format!("cuda:{a}"));
        for b in 0..gpus {
            let cell = if a == b {
                "-"
            } else {
                match driver::can_access_peer(a, b) {
                    Ok(true) => "yes",
                    Ok(false) => "no",
                    Err(_) => "error",
                }
            };
            let _ = write!(s, " {cell:>7}");
        }
        s.push('\n');
    }
    s
}

/// Whether NCCL loaded, and its version: data-parallel replicas need it.
fn nccl_line() -> String {
    match cuda::nccl::version() {
        Ok(v) => format!("NCCL: {v} (data-parallel replicas of the tower pair can run)"),
        Err(_) => {
            "NCCL: not loaded (libnccl.so.2 not found): data-parallel replicas cannot run".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_says_plainly_when_there_is_no_driver() {
        let r = report();
        assert!(r.contains("GPU kernels embedded in this build: "), "{r}");
        if !driver::library_present() {
            assert!(
                r.contains("GPUs: none usable: no CUDA driver on this machine"),
                "{r}"
            );
        } else {
            println!("this machine has a CUDA driver; the report:\n{r}");
        }
    }

    #[test]
    fn the_report_says_whether_nccl_loaded() {
        let r = report();
        assert!(r.contains("NCCL: "), "{r}");
        if !cuda::nccl::library_present() {
            assert!(
                r.contains("NCCL: not loaded (libnccl.so.2 not found)"),
                "{r}"
            );
        }
    }
}
