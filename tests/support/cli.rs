//! Helpers for the tests that run the `alexnet` binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn alexnet(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_alexnet"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the alexnet binary runs")
}

/// Runs the binary and fails the test if it has not ended after `limit`: the promise that no
/// input hangs it. Standard input is closed.
pub fn alexnet_within(limit: Duration, args: &[&str], cwd: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_alexnet"));
    cmd.args(args).current_dir(cwd);
    run_within(&mut cmd, limit, &format!("alexnet {args:?}"))
}

/// Runs `cmd` with standard input closed and its output captured, and fails the test if it has
/// not ended after `limit` (it is killed then): `what` names it.
pub fn run_within(cmd: &mut Command, limit: Duration, what: &str) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the alexnet binary runs");
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("waiting for alexnet"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &id.to_string()])
                .status();
            panic!("{what} did not end within {limit:?}: it hangs");
        }
    }
}

/// Starts a synthetic training run that would go on for minutes (`--max-minutes 5`, batch 32)
/// with `args` after `train`, its output captured.
pub fn spawn_long_training(args: &[&str], cwd: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_alexnet"))
        .arg("train")
        .args(args)
        .args(["--batch", "32", "--no-progress", "--max-minutes", "5"])
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the alexnet binary runs")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The weights and momentum of a run's checkpoint, as raw bytes.
pub fn checkpoint_tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.data().to_vec()))
        .collect();
    v.sort();
    v
}

/// Every file under `dir` (recursively) with its bytes: two snapshots are equal when nothing in
/// the folder was added, removed or changed.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

/// Waits until `path` has at least `lines` lines (a training run's metrics log filling up).
pub fn wait_for_lines(path: &Path, lines: usize) {
    let started = Instant::now();
    while std::fs::read_to_string(path).map_or(0, |t| t.lines().count()) < lines {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{} never reached {lines} lines",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `signal` (`INT`, `TERM`, `KILL`) to process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

/// A TCP port free on this machine now (for a rendezvous).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
