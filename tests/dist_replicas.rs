//! `alexnet train` with data-parallel replicas on the CPU (issue #16): as threads of one
//! process (`--replicas 2`) and as two real processes started the way torchrun starts ranks
//! (WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT), each loading only its shard of every batch.

pub mod support;

use alexnet::data::stats::compute;
use alexnet::data::{Batch, Dataset, Geometry, Loader, LoaderConfig, Shard, Split, Synthetic};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::cli::{alexnet, checkpoint_tensors, free_port, text};

const BATCH: &str = "16";
const STEPS: &str = "4";

/// A short synthetic run on the CPU in `cwd` (plus `extra`, and the environment `env`).
fn command(cwd: &Path, extra: &[&str], env: &[(&str, String)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_alexnet"));
    c.args([
        "train",
        "--device",
        "cpu",
        "--batch",
        BATCH,
        "--no-progress",
    ])
    .args(["--seed", "3", "--peer-timeout", "20"])
    .args(extra)
    .current_dir(cwd)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if !extra.contains(&"--max-steps") {
        c.args(["--max-steps", STEPS]);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// (loss, top-1 error) of every step in a run's metrics log.
fn steps(run: &Path) -> Vec<(f64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("loss").is_some())
        .map(|v| {
            (
                v["loss"].as_f64().unwrap(),
                v["top1_error"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// A checkpoint's f32 tensors (weights and momentum), by name.
fn tensors(run: &Path) -> Vec<(String, Vec<f32>)> {
    checkpoint_tensors(&run.join("checkpoint.safetensors"))
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

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn run_ok(c: &mut Command) -> Output {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    o
}

/// Two replicas on slices of 8 compute the step one network computes on the batch of 16 in
/// another order of summation (each replica sums its 8 samples' terms, the collective adds the
/// two halves and halves them; halving is exact, so only the order differs: tests/dist_data_parallel.rs
/// measured 1e-6 of a tensor's largest magnitude over single steps). Over these 4 steps the
/// measured worst error of a weight or momentum tensor is 4.1e-6 (floor as below) and the
/// losses agree to 1e-7; the tolerances, 1e-4 (against a floor of 1e-1 of each tensor's
/// largest magnitude, as there) and 1e-5 of the loss, are far above both and far below what a
/// replica that drops, doubles or misplaces a sample changes (~1/16 of a gradient). The top-1
/// error may differ by one sample where two classes tie to rounding.
const TOL: f64 = 1e-4;
const FLOOR: f64 = 1e-1;
const LOSS_TOL: f64 = 1e-5;

fn assert_same_training(one: &Path, two: &Path) {
    let (a, b) = (steps(one), steps(two));
    assert_eq!(a.len(), b.len(), "steps logged");
    assert_eq!(a.len(), STEPS.parse::<usize>().unwrap());
    for (s, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x.0 - y.0).abs() <= LOSS_TOL * x.0.abs(),
            "step {s}: loss {} with one network, {} with replicas",
            x.0,
            y.0
        );
        assert!((x.1 - y.1).abs() <= 1.0 / 16.0 + 1e-12, "step {s}: top-1");
    }
    let (ta, tb) = (tensors(one), tensors(two));
    assert_eq!(ta.len(), tb.len());
    let mut worst = 0f64;
    for ((na, va), (nb, vb)) in ta.iter().zip(&tb) {
        assert_eq!(na, nb);
        let scale = va.iter().fold(0f64, |m, &x| m.max((x as f64).abs()));
        let floor = (FLOOR * scale).max(1e-30);
        for (x, y) in va.iter().zip(vb) {
            let e = (*x as f64 - *y as f64).abs() / (x.abs() as f64).max(floor);
            worst = worst.max(e);
        }
    }
    println!("worst tensor error: {worst:.2e}");
    assert!(worst <= TOL, "worst tensor error {worst:.2e} over {TOL:e}");
}

#[test]
fn two_cpu_replicas_train_as_one_network_and_write_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_ok(&mut command(d, &["--out", "one"], &[]));
    let o = run_ok(&mut command(d, &["--replicas", "2", "--out", "two"], &[]));
    assert!(
        text(&o).contains("2 data-parallel replicas of 8 each"),
        "{}",
        text(&o)
    );
    assert_same_training(&d.join("one"), &d.join("two"));
    assert_eq!(entries(d), ["one", "two"]);
    assert_eq!(entries(&d.join("one")), entries(&d.join("two")));
}

#[test]
fn a_batch_that_does_not_split_over_the_replicas_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let o = alexnet(
        &[
            "train",
            "--device",
            "cpu",
            "--replicas",
            "3",
            "--batch",
            "16",
        ],
        dir.path(),
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("batch 16 does not split evenly over 3 replicas"),
        "{}",
        text(&o)
    );
    assert!(entries(dir.path()).is_empty());
    // CPU processes take one replica each (the TCP collective links processes, not threads).
    let env = [
        ("WORLD_SIZE", "2".to_string()),
        ("RANK", "0".to_string()),
        ("MASTER_ADDR", "127.0.0.1".to_string()),
        ("MASTER_PORT", free_port().to_string()),
    ];
    let o = command(dir.path(), &["--replicas", "2"], &env)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o).contains("takes one replica per process"),
        "{}",
        text(&o)
    );
    assert!(entries(dir.path()).is_empty());
}

/// The ranks of a two-process run on localhost, killed if the test ends early.
struct Ranks(Vec<Child>);

impl Drop for Ranks {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts rank `r` of 2 in `cwds[r]`.
fn start_ranks(cwds: [&Path; 2], extra: [&[&str]; 2]) -> Ranks {
    let port = free_port().to_string();
    let ranks = (0..2)
        .map(|r| {
            let env = [
                ("WORLD_SIZE", "2".to_string()),
                ("RANK", r.to_string()),
                ("LOCAL_RANK", r.to_string()),
                ("MASTER_ADDR", "127.0.0.1".to_string()),
                ("MASTER_PORT", port.clone()),
            ];
            command(cwds[r], extra[r], &env).spawn().unwrap()
        })
        .collect();
    Ranks(ranks)
}

/// Waits for every rank (at most `limit`: none may hang) and returns their outputs.
fn finish(mut ranks: Ranks, limit: Duration) -> Vec<Output> {
    let start = Instant::now();
    while ranks.0.iter_mut().any(|c| c.try_wait().unwrap().is_none()) {
        assert!(
            start.elapsed() < limit,
            "a rank still runs after {limit:?}: a hang"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::mem::take(&mut ranks.0)
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

/// Two processes, one replica each over the TCP collective (rank 0 adds in rank order, as the
/// in-process collective does), train exactly what two replicas in one process train: the
/// same losses and checkpoint bit for bit. Rank 0 alone writes; rank 1's folder stays empty.
/// Both then resume from rank 0's checkpoint and continue it.
#[test]
fn two_processes_train_as_two_threads_and_resume_the_same_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (r0, r1) = (d.join("rank0"), d.join("rank1"));
    std::fs::create_dir_all(&r0).unwrap();
    std::fs::create_dir_all(&r1).unwrap();
    let ranks = start_ranks([&r0, &r1], [&["--out", "run"], &["--out", "run"]]);
    run_ok(&mut command(
        d,
        &["--replicas", "2", "--out", "threads"],
        &[],
    ));
    for (r, o) in finish(ranks, Duration::from_secs(120)).iter().enumerate() {
        assert!(o.status.success(), "rank {r}: {}", text(o));
    }
    assert_eq!(steps(&r0.join("run")), steps(&d.join("threads")));
    assert_eq!(
        checkpoint_tensors(&r0.join("run/checkpoint.safetensors")),
        checkpoint_tensors(&d.join("threads/checkpoint.safetensors"))
    );
    assert!(entries(&r1).is_empty(), "rank 1 wrote {:?}", entries(&r1));

    // Every rank resumes the same checkpoint (here the one path both see) and trains on.
    let run = r0.join("run");
    let resume = ["--resume", run.to_str().unwrap(), "--max-steps", "6"];
    let ranks = start_ranks([&r0, &r1], [&resume, &resume]);
    for (r, o) in finish(ranks, Duration::from_secs(120)).iter().enumerate() {
        assert!(o.status.success(), "rank {r}: {}", text(o));
    }
    assert_eq!(steps(&run).len(), 6);
    assert!(entries(&r1).is_empty(), "rank 1 wrote {:?}", entries(&r1));
}

/// Ranks that would train different things (here rank 1 was given another learning rate)
/// stop before the first step, naming why; a rank that dies mid-run makes the other
/// exit with an error within seconds, not hang.
#[test]
fn ranks_that_disagree_or_die_stop_the_run_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (r0, r1) = (d.join("rank0"), d.join("rank1"));
    std::fs::create_dir_all(&r0).unwrap();
    std::fs::create_dir_all(&r1).unwrap();
    let ranks = start_ranks([&r0, &r1], [&["--out", "run"], &["--lr", "0.02"]]);
    for (r, o) in finish(ranks, Duration::from_secs(60)).iter().enumerate() {
        assert!(!o.status.success(), "rank {r} went on: {}", text(o));
        assert!(
            text(o).contains("do not start from the same weights"),
            "rank {r}: {}",
            text(o)
        );
    }
    assert!(!r0.join("run/checkpoint.safetensors").exists());

    // A long run; rank 1 is killed once it trains.
    let long = [
        "--max-steps",
        "100000",
        "--max-minutes",
        "2",
        "--out",
        "run2",
    ];
    let mut ranks = start_ranks([&r0, &r1], [&long, &long]);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    ranks.0[1].kill().unwrap();
    let killed = Instant::now();
    let outs = finish(ranks, Duration::from_secs(60));
    let rank0 = text(&outs[0]);
    assert!(!outs[0].status.success(), "rank 0 went on: {rank0}");
    assert!(rank0.contains("rank 1"), "{rank0}");
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "rank 0 took {:?} to stop (started {:?} ago)",
        killed.elapsed(),
        started.elapsed()
    );
}

/// Each replica's loader makes exactly its slice of every training batch (same images, same
/// augmentation, same labels as the whole batch's rows) and every other validation batch.
#[test]
fn a_shard_loads_its_slice_of_each_batch_and_nothing_else() {
    let ds = Arc::new(Dataset::synthetic(Synthetic {
        seed: 2,
        split: Split::Train,
        per_class: 10,
    }));
    let stats = Arc::new(compute(&ds, 32, 2).unwrap().0);
    let g = Geometry::new(32, 28).unwrap();
    let make = |shard: Shard, train: bool| -> Vec<Batch> {
        let mut c = if train {
            LoaderConfig::train(g, 12, 4)
        } else {
            LoaderConfig::eval(g, 12, alexnet::data::EvalViews::Centre)
        };
        c.threads = 2;
        c.shard = shard;
        let l = Loader::new(ds.clone(), stats.clone(), c).unwrap();
        l.epoch(1, 0).map(Result::unwrap).collect()
    };
    let whole = make(Shard::WHOLE, true);
    let per = g.input_len();
    for rank in 0..3 {
        let part = make(Shard { rank, of: 3 }, true);
        assert_eq!(part.len(), whole.len());
        for (p, w) in part.iter().zip(&whole) {
            let rows = rank * 4..(rank + 1) * 4;
            assert_eq!(p.labels, w.labels[rows.clone()]);
            assert_eq!(p.samples, w.samples[rows.clone()]);
            assert!(p.images == w.images[rows.start * per..rows.end * per]);
        }
    }
    let whole = make(Shard::WHOLE, false);
    let mut seen: Vec<usize> = (0..2)
        .flat_map(|rank| make(Shard { rank, of: 2 }, false))
        .map(|b| b.index)
        .collect();
    seen.sort();
    assert_eq!(seen, (0..whole.len()).collect::<Vec<_>>());
}
