//! The `alexnet` binary on GPUs without a GPU: every run here loads the simulated platform that
//! build.rs builds (`target/<profile>/sim`: libcuda.so.1, libcublas.so.13, libnccl.so.2) through
//! LD_LIBRARY_PATH, with its stream sanitizer on, and the binary runs unchanged. Training on
//! one and two GPUs, data-parallel replicas over NCCL, a resume and a Ctrl-C; and the faults a
//! machine can have (out of memory, no peer access, a library missing, cuBLAS failing to
//! start, a replica that dies or never arrives), each ending with the clear error the README
//! promises, within the engine's own timeouts, with nothing lost.
//!
//! On a machine where a CUDA driver loads, the simulation is not used, and a build without nvcc
//! has no GPU kernels to load: each test prints one SKIP line then (tests/gpu_engine.rs runs on the real
//! GPU there).

pub mod support;

use alexnet::ops::precision::Precision;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::cli::{checkpoint_tensors, run_within, signal, text, wait_for_lines};
use support::step_checks::{step_tolerance, tensor_errors_with_floor};

const SIM_DIR: &str = env!("ALEXNET_SIM_DIR");

/// Whether the tests run here: no CUDA driver of the machine's own is loadable.
fn simulated(test: &str) -> bool {
    if alexnet::cuda::driver::library_present() {
        eprintln!(
            "SKIP {test}: this machine has a CUDA driver; the simulated platform is not used"
        );
        return false;
    }
    if !alexnet::fatbins::KERNELS_EMBEDDED {
        eprintln!(
            "SKIP {test}: this build has no GPU kernels (nvcc was not found); {}",
            alexnet::cuda::NO_KERNELS
        );
        return false;
    }
    true
}

/// The binary on the simulated platform (library folder `libs`), with `env` besides its
/// defaults; fails the test if it has not ended within `limit` (nothing may hang).
fn alexnet_on(
    libs: &Path,
    limit: Duration,
    args: &[&str],
    env: &[(&str, &str)],
    cwd: &Path,
) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_alexnet"));
    cmd.args(args)
        .current_dir(cwd)
        .env("LD_LIBRARY_PATH", libs)
        .env("ALEXNET_SIM_SANITIZE", "1")
        .env_remove("ALEXNET_PLANTED_FAULT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_within(&mut cmd, limit, &format!("alexnet {args:?}"))
}

fn alexnet_sim(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Output {
    alexnet_on(Path::new(SIM_DIR), Duration::from_secs(300), args, env, cwd)
}

/// A few steps of the cifar preset on the built-in synthetic set, the same on every device.
fn short_run(device: &[&str], prec: Precision, steps: &str, out: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "--preset",
        "cifar",
        "--batch",
        "16",
        "--max-steps",
        steps,
        "--no-val",
        "--no-progress",
        "--lr-schedule",
        "constant",
        "--seed",
        "3",
        "--out",
        out,
        "--precision",
        prec.name(),
    ]
    .map(String::from)
    .to_vec();
    args.extend(device.iter().map(|s| s.to_string()));
    args
}

fn run_ok(args: &[String], env: &[(&str, &str)], d: &Path) -> String {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = alexnet_sim(&args, env, d);
    assert!(
        o.status.success(),
        "alexnet {args:?} with {env:?}:\n{}",
        text(&o)
    );
    text(&o)
}

/// A checkpoint's tensors (weights and momentum) as floats, by name.
fn floats(path: &Path) -> Vec<(String, Vec<f32>)> {
    checkpoint_tensors(path)
        .into_iter()
        .map(|(n, b)| {
            let v = b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (n, v)
        })
        .collect()
}

/// The largest error between two checkpoints (see `step_tolerance`).
fn checkpoint_error(a: &Path, b: &Path, floor: f64) -> f64 {
    let (a, b) = (floats(a), floats(b));
    assert_eq!(
        a.iter().map(|t| &t.0).collect::<Vec<_>>(),
        b.iter().map(|t| &t.0).collect::<Vec<_>>()
    );
    let values = |v: &[(String, Vec<f32>)]| v.iter().map(|t| t.1.clone()).collect::<Vec<_>>();
    tensor_errors_with_floor(&values(&a), &values(&b), floor)
}

fn same_bits(a: &Path, b: &Path) -> bool {
    checkpoint_tensors(a) == checkpoint_tensors(b)
}

#[test]
fn devices_lists_the_simulated_gpus_and_nccl() {
    if !simulated("devices_lists_the_simulated_gpus_and_nccl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let o = alexnet_sim(
        &["devices"],
        &[("ALEXNET_SIM_GPUS", "4"), ("ALEXNET_SIM_MEMORY", "3GiB")],
        dir.path(),
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for want in [
        "4 GPUs",
        "cuda:3",
        "3.22 GB",
        "compute capability 9.0",
        "NCCL: 2.27.3",
    ] {
        assert!(out.contains(want), "no {want:?} in:\n{out}");
    }
}

/// The cifar preset on two simulated GPUs, at every precision, against the CPU path; then the
/// same on one GPU (both towers on it) and with peer access unsupported, bit for bit.
#[test]
fn cifar_trains_on_simulated_gpus_as_on_the_cpu() {
    if !simulated("cifar_trains_on_simulated_gpus_as_on_the_cpu") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let two = ["--device", "cuda", "--devices", "0,1"];
    for prec in Precision::ALL {
        let (cuda, cpu) = (format!("cuda-{prec}"), format!("cpu-{prec}"));
        let log = run_ok(&short_run(&two, prec, "2", &cuda), &[], d);
        assert!(
            log.contains("towers on: cuda:0") && log.contains("cuda:1"),
            "{log}"
        );
        run_ok(&short_run(&["--device", "cpu"], prec, "2", &cpu), &[], d);
        let (tol, floor) = step_tolerance(prec);
        let ck = |run: &str| d.join(run).join("checkpoint.safetensors");
        let e = checkpoint_error(&ck(&cuda), &ck(&cpu), floor);
        println!(
            "{prec}: simulated GPUs against the CPU, largest error {e:.2e} (tolerance {tol:.1e})"
        );
        assert!(
            e < tol,
            "{prec}: the GPU run's checkpoint differs from the CPU's by {e:.3e}"
        );
    }
    // One GPU with both towers, and two GPUs that cannot reach each other's memory (the
    // exchange's copies are staged): the same kernels in the same order, so the same bits.
    let fp32 = d.join("cuda-fp32/checkpoint.safetensors");
    run_ok(
        &short_run(
            &["--device", "cuda", "--devices", "0"],
            Precision::Fp32,
            "2",
            "one",
        ),
        &[("ALEXNET_SIM_GPUS", "1")],
        d,
    );
    assert!(
        same_bits(&d.join("one/checkpoint.safetensors"), &fp32),
        "both towers on one GPU differ from two GPUs"
    );
    let devices = alexnet_sim(&["devices"], &[("ALEXNET_SIM_PEERS", "none")], d);
    assert!(text(&devices).contains("     no"), "{}", text(&devices));
    run_ok(
        &short_run(&two, Precision::Fp32, "2", "apart"),
        &[("ALEXNET_SIM_PEERS", "none")],
        d,
    );
    assert!(
        same_bits(&d.join("apart/checkpoint.safetensors"), &fp32),
        "without peer access the run differs"
    );
}

/// `--devices 0,1,2,3`: two data-parallel replicas over the simulated NCCL, the same update as
/// one replica to fp32 summation order.
#[test]
fn two_replicas_over_simulated_nccl_train_as_one() {
    if !simulated("two_replicas_over_simulated_nccl_train_as_one") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let four = [("ALEXNET_SIM_GPUS", "4")];
    let log = run_ok(
        &short_run(
            &["--device", "cuda", "--devices", "0,1,2,3"],
            Precision::Fp32,
            "2",
            "replicas",
        ),
        &four,
        d,
    );
    assert!(log.contains("2 data-parallel replicas"), "{log}");
    run_ok(
        &short_run(
            &["--device", "cuda", "--devices", "0,1"],
            Precision::Fp32,
            "2",
            "single",
        ),
        &four,
        d,
    );
    let ck = |run: &str| d.join(run).join("checkpoint.safetensors");
    let e = checkpoint_error(&ck("replicas"), &ck("single"), 1e-2);
    assert!(
        e < support::step_checks::STEP_TOL,
        "two replicas differ from one by {e:.3e}"
    );
}

/// Stopped at step 2 and resumed to 4 on the simulated GPUs: the same bits as 4 straight.
#[test]
fn a_resumed_gpu_run_ends_bit_identical_and_ctrl_c_saves() {
    if !simulated("a_resumed_gpu_run_ends_bit_identical_and_ctrl_c_saves") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let gpus = ["--device", "cuda"];
    run_ok(&short_run(&gpus, Precision::Fp32, "4", "straight"), &[], d);
    run_ok(&short_run(&gpus, Precision::Fp32, "2", "split"), &[], d);
    let log = run_ok(
        &[
            "train",
            "--resume",
            "split",
            "--max-steps",
            "4",
            "--batch",
            "16",
            "--no-progress",
            "--device",
            "cuda",
        ]
        .map(String::from),
        &[],
        d,
    );
    assert!(log.contains("resuming"), "{log}");
    assert!(
        same_bits(
            &d.join("straight/checkpoint.safetensors"),
            &d.join("split/checkpoint.safetensors")
        ),
        "the resumed run differs from the straight one"
    );

    // Ctrl-C while it trains: a checkpoint, a clean exit, nothing left behind.
    let child = Command::new(env!("CARGO_BIN_EXE_alexnet"))
        .args([
            "train",
            "--device",
            "cuda",
            "--preset",
            "cifar",
            "--batch",
            "16",
            "--no-progress",
            "--max-minutes",
            "5",
            "--out",
            "run",
        ])
        .current_dir(d)
        .env("LD_LIBRARY_PATH", SIM_DIR)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_lines(&d.join("run/metrics.jsonl"), 2);
    signal(child.id(), "INT");
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success() && text(&o).contains("Interrupted"),
        "{}",
        text(&o)
    );
    let ck = alexnet::train::checkpoint::load(&d.join("run/checkpoint.safetensors")).unwrap();
    assert!(ck.state.step >= 2, "saved at step {}", ck.state.step);
    for e in std::fs::read_dir(d.join("run")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.contains("partial") && name != "run.lock",
            "left behind: {name}"
        );
    }
}

/// A folder holding only the named libraries of the platform (the others missing).
fn libraries(keep: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for lib in keep {
        std::os::unix::fs::symlink(Path::new(SIM_DIR).join(lib), dir.path().join(lib)).unwrap();
    }
    dir
}

#[test]
fn each_missing_library_is_a_clear_error_or_a_stated_fallback() {
    if !simulated("each_missing_library_is_a_clear_error_or_a_stated_fallback") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let limit = Duration::from_secs(120);
    let gpus = ["--device", "cuda"];
    let args = |out: &str| short_run(&gpus, Precision::Fp32, "1", out);
    let run = |libs: &Path, args: &[String], env: &[(&str, &str)]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        alexnet_on(libs, limit, &args, env, d)
    };
    // No driver: --device cuda says so and names the alternatives; nothing is written.
    let no_driver = libraries(&["libcublas.so.13", "libnccl.so.2"]);
    let o = run(no_driver.path(), &args("a"), &[]);
    assert!(
        !o.status.success() && text(&o).contains("no CUDA driver on this machine"),
        "{}",
        text(&o)
    );
    assert!(
        text(&o).contains("--device cpu") && !d.join("a").exists(),
        "{}",
        text(&o)
    );
    // No cuBLAS: the fc layers run on the engine's own kernels, and the log says why.
    let no_blas = libraries(&["libcuda.so.1", "libnccl.so.2"]);
    let o = run(no_blas.path(), &args("b"), &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("fc on own kernels: libcublas not found"),
        "{}",
        text(&o)
    );
    // No NCCL: replicas are refused, naming the library, before anything is written.
    let no_nccl = libraries(&["libcuda.so.1", "libcublas.so.13"]);
    let o = run(
        no_nccl.path(),
        &short_run(
            &["--device", "cuda", "--devices", "0,1,2,3"],
            Precision::Fp32,
            "1",
            "c",
        ),
        &[("ALEXNET_SIM_GPUS", "4")],
    );
    assert!(
        !o.status.success() && text(&o).contains("libnccl.so.2"),
        "{}",
        text(&o)
    );
    assert!(!d.join("c").exists(), "a refused start left its folder");
}

#[test]
fn out_of_memory_and_a_failing_cublas_are_clear() {
    if !simulated("out_of_memory_and_a_failing_cublas_are_clear") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let gpus = ["--device", "cuda"];
    // The 40th device allocation (inside the network's set-up) fails: the error names the
    // allocation and the GPU, and the failed start leaves no folder behind.
    let o = alexnet_sim(
        &short_run(&gpus, Precision::Fp32, "1", "oom")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &[("ALEXNET_SIM_FAULT", "oom:40")],
        d,
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("CUDA_ERROR_OUT_OF_MEMORY") && out.contains("cuda:"),
        "{out}"
    );
    assert!(!out.contains("panicked"), "{out}");
    // cublasCreate fails: the fc layers run on the engine's own kernels, and the log says why.
    let log = run_ok(
        &short_run(&gpus, Precision::Fp32, "1", "blas"),
        &[("ALEXNET_SIM_FAULT", "cublas-create")],
        d,
    );
    assert!(
        log.contains("fc on own kernels: cublasCreate failed"),
        "{log}"
    );
}

/// A replica that dies mid-step, and one that never reaches NCCL's set-up: the others stop
/// with an error naming what happened within --peer-timeout, and nothing hangs.
#[test]
fn a_replica_that_dies_or_never_arrives_stops_the_run_without_a_hang() {
    if !simulated("a_replica_that_dies_or_never_arrives_stops_the_run_without_a_hang") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let replicas = [
        "--device",
        "cuda",
        "--devices",
        "0,1,2,3",
        "--peer-timeout",
        "3",
    ];
    let limit = Duration::from_secs(90);
    let args = |out: &str| short_run(&replicas, Precision::Fp32, "3", out);
    let run = |args: &[String], fault: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let started = Instant::now();
        let o = alexnet_on(
            Path::new(SIM_DIR),
            limit,
            &args,
            &[("ALEXNET_SIM_GPUS", "4"), ("ALEXNET_SIM_FAULT", fault)],
            d,
        );
        (o, started.elapsed())
    };
    // Replica 1's second all-reduce call fails (its step ends in an error): replica 0's step
    // waits for it until the timeout, then aborts.
    let (o, took) = run(&args("dies"), "nccl-fail:1:2");
    let out = text(&o);
    assert!(!o.status.success() && !out.contains("panicked"), "{out}");
    // The error shown is the cause: replica 1's failed call, not replica 0's wait for it.
    assert!(
        out.contains("error: replica 1 of 2") && out.contains("ncclAllReduce"),
        "{out}"
    );
    println!("a replica dying mid-step: the run ended after {took:.1?}");
    // Replica 1 reaches the set-up 8 s late: replica 0 gives up after 3 s; replica 1 then finds
    // the set-up abandoned.
    let (o, took) = run(&args("late"), "nccl-late:1:8");
    let out = text(&o);
    assert!(!o.status.success() && !out.contains("panicked"), "{out}");
    assert!(out.contains("did not complete within 3s"), "{out}");
    println!("a replica arriving late: the run ended after {took:.1?}");
}

#[test]
fn features_and_similar_on_simulated_gpus_find_what_the_cpu_finds() {
    if !simulated("features_and_similar_on_simulated_gpus_find_what_the_cpu_finds") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_ok(
        &short_run(&["--device", "cpu"], Precision::Fp32, "2", "run"),
        &[],
        d,
    );
    std::fs::create_dir_all(d.join("imgs")).unwrap();
    for (i, side) in [40, 52, 64, 33, 90, 71].into_iter().enumerate() {
        let jpeg = support::data::rgb_jpeg(side, side * 3 / 4 + 7);
        std::fs::write(d.join(format!("imgs/{i}.jpg")), jpeg).unwrap();
    }
    // The gallery's features on two simulated GPUs, then searched there in blocks of two rows
    // (each block's upload staged on the copy stream, the sanitizer watching).
    let similar = |device: &str, out: &str| -> serde_json::Value {
        let base = [
            "--checkpoint",
            "run",
            "--device",
            device,
            "--layer",
            "pool3",
        ];
        let mut args: Vec<&str> = vec!["features", "--no-progress", "--out", out];
        args.extend(base);
        args.push("imgs");
        run_ok(
            &args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            &[],
            d,
        );
        let mut args: Vec<&str> = vec!["similar", "--json", "--block", "2", "--top", "4"];
        args.extend(base);
        args.extend(["--gallery", out, "imgs/1.jpg", "imgs/4.jpg"]);
        let o = alexnet_sim(&args, &[], d);
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let (gpu, cpu) = (similar("cuda", "g.npy"), similar("cpu", "c.npy"));
    let hits = |v: &serde_json::Value| -> Vec<(String, f64)> {
        let queries = v["queries"].as_array().unwrap();
        queries
            .iter()
            .flat_map(|q| q["nearest"].as_array().unwrap().clone())
            .map(|h| {
                (
                    h["path"].as_str().unwrap().to_string(),
                    h["distance"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let (gpu, cpu) = (hits(&gpu), hits(&cpu));
    assert_eq!(gpu.len(), 8);
    for (g, c) in gpu.iter().zip(&cpu) {
        assert_eq!(g.0, c.0, "ranks differ: {gpu:?} against {cpu:?}");
        // Features through the CUDA kernels against the CPU's: within the kernels' 1e-4.
        assert!(
            (g.1 - c.1).abs() <= 1e-4 * c.1.max(1.0),
            "{g:?} against {c:?}"
        );
    }
    assert!(gpu[0].0.ends_with("1.jpg") && gpu[0].1 < 1e-3, "{gpu:?}");
}
