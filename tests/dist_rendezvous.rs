//! The rendezvous of a multi-process data-parallel run, across real processes on localhost
//! (`alexnet rendezvous-check`, started the way torchrun starts ranks): the ranks meet, every
//! rank gets rank 0's id, the epoch's shards neither overlap nor leave gaps, and a rank that is
//! killed makes the others exit with an error naming it, within the timeout.

pub mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::cli::free_port;

const IMAGES: usize = 100;
const BATCH: usize = 12;

/// The ranks' processes, killed if the test ends early.
struct Ranks {
    children: Vec<Child>,
    stdout: Vec<Arc<Mutex<Vec<String>>>>,
    stderr: Vec<Arc<Mutex<String>>>,
}

impl Drop for Ranks {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start(world: usize, rendezvous: Option<&str>, extra: &[&str]) -> Ranks {
    let port = free_port().to_string();
    let mut ranks = Ranks {
        children: vec![],
        stdout: vec![],
        stderr: vec![],
    };
    for rank in 0..world {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_alexnet"));
        cmd.arg("rendezvous-check")
            .args([
                "--images",
                &IMAGES.to_string(),
                "--batch",
                &BATCH.to_string(),
            ])
            .args(extra)
            .env("WORLD_SIZE", world.to_string())
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", &port)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(r) = rendezvous {
            cmd.args(["--rendezvous", r]);
        }
        let mut child = cmd.spawn().unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(String::new()));
        let (o, e) = (out.clone(), err.clone());
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => o.lock().unwrap().push(l),
                    Err(_) => break,
                }
            }
        });
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            *e.lock().unwrap() = s;
        });
        ranks.children.push(child);
        ranks.stdout.push(out);
        ranks.stderr.push(err);
    }
    ranks
}

/// Waits for the given ranks to exit, or fails after `limit`; their exit statuses' success.
fn wait_all(ranks: &mut Ranks, which: &[usize], limit: Duration) -> Vec<bool> {
    let deadline = Instant::now() + limit;
    which
        .iter()
        .map(|&r| {
            loop {
                if let Some(status) = ranks.children[r].try_wait().unwrap() {
                    // Let the reader threads drain the pipes.
                    std::thread::sleep(Duration::from_millis(100));
                    break status.success();
                }
                assert!(
                    Instant::now() < deadline,
                    "rank {r} did not exit within {limit:?} (a hang)"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .collect()
}

fn first_line(ranks: &Ranks, r: usize) -> serde_json::Value {
    let line = ranks.stdout[r].lock().unwrap().first().cloned();
    let line = line.unwrap_or_else(|| {
        panic!(
            "rank {r} printed nothing; stderr: {}",
            ranks.stderr[r].lock().unwrap()
        )
    });
    serde_json::from_str(&line).unwrap()
}

fn exchange_and_shard(world: usize, rendezvous: Option<&str>) {
    let mut ranks = start(world, rendezvous, &["--checks", "3", "--timeout", "30"]);
    let ok = wait_all(
        &mut ranks,
        &(0..world).collect::<Vec<_>>(),
        Duration::from_secs(60),
    );
    for (r, ok) in ok.iter().enumerate() {
        assert!(ok, "rank {r} failed: {}", ranks.stderr[r].lock().unwrap());
        assert_eq!(
            ranks.stdout[r].lock().unwrap().len(),
            4,
            "rank {r}: the line and 3 checks"
        );
    }
    let lines: Vec<serde_json::Value> = (0..world).map(|r| first_line(&ranks, r)).collect();
    let id = lines[0]["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 256, "a 128-byte id");
    let mut all = Vec::new();
    for (r, l) in lines.iter().enumerate() {
        assert_eq!(l["rank"], r);
        assert_eq!(l["world"], world);
        assert_eq!(l["id"].as_str().unwrap(), id, "rank {r} got another id");
        let shard: Vec<u64> = l["shard"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(
            shard.len(),
            (IMAGES / BATCH) * BATCH / world,
            "rank {r}'s share"
        );
        all.extend(shard);
    }
    // The whole batches of the epoch, each image once: no overlap, no gap.
    let distinct: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "shards overlap");
    assert_eq!(all.len(), (IMAGES / BATCH) * BATCH, "shards leave a gap");
    assert!(distinct.iter().all(|&i| (i as usize) < IMAGES));
}

#[test]
fn two_and_three_processes_meet_over_tcp_and_shard_an_epoch() {
    exchange_and_shard(2, None);
    exchange_and_shard(3, None);
}

#[test]
fn processes_meet_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = format!("file:{}", dir.path().join("rdv").display());
    exchange_and_shard(2, Some(&path));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "left files"
    );
}

#[test]
fn a_killed_rank_makes_the_others_exit_with_an_error() {
    let timeout = 5.0;
    let mut ranks = start(
        3,
        None,
        &[
            "--checks",
            "100000",
            "--interval-ms",
            "20",
            "--timeout",
            &timeout.to_string(),
        ],
    );
    // Once all three have met and checked in at least once, rank 1 dies.
    let deadline = Instant::now() + Duration::from_secs(60);
    while (0..3).any(|r| ranks.stdout[r].lock().unwrap().len() < 2) {
        assert!(Instant::now() < deadline, "the ranks did not meet");
        std::thread::sleep(Duration::from_millis(20));
    }
    ranks.children[1].kill().unwrap();
    let killed = Instant::now();
    let ok = wait_all(&mut ranks, &[0, 2], Duration::from_secs_f64(timeout + 10.0));
    assert!(
        killed.elapsed() < Duration::from_secs_f64(timeout + 5.0),
        "took {:?}",
        killed.elapsed()
    );
    assert_eq!(ok, [false, false], "the survivors must fail");
    let e0 = ranks.stderr[0].lock().unwrap().clone();
    let e2 = ranks.stderr[2].lock().unwrap().clone();
    assert!(e0.contains("rank 1 closed the connection"), "rank 0: {e0}");
    assert!(
        e0.contains("a rank is gone; stopping the run"),
        "rank 0: {e0}"
    );
    assert!(
        e2.contains("rank 2: ") && e2.contains("rank 0"),
        "rank 2: {e2}"
    );
}

#[test]
fn a_rank_that_never_comes_is_named() {
    // Rank 0 of three alone: it names ranks 1 and 2 after its timeout.
    let port = free_port().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_alexnet"))
        .args(["rendezvous-check", "--timeout", "1"])
        .env("WORLD_SIZE", "3")
        .env("RANK", "0")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", &port)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("rank(s) 1, 2 of 3 did not arrive"), "{e}");
}
