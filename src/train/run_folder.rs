//! A run folder claimed by one training process: an exclusive lock for the run's life, and a
//! start that either becomes a run or leaves the folder as it found it.
//!
//! The lock is `run.lock` inside the folder, held with `flock` (through std's `File::try_lock`)
//! and holding the owner's pid. The kernel drops the lock when its process ends, however it
//! ends, so a lock file left by a killed process is recognised as stale (it is not locked) and
//! taken over. Until [`RunFolder::started`] is called, dropping the claim removes every file it
//! recorded as created, the lock file, and the folder itself if the claim created it: a start
//! refused by a check, a missing device or an interruption leaves nothing behind.

use anyhow::{Context, Result, bail};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub const LOCK_FILE: &str = "run.lock";

pub struct RunFolder {
    path: PathBuf,
    lock_path: PathBuf,
    /// Held (locked) until this is dropped.
    lock: Option<File>,
    created_folder: bool,
    created_files: Vec<PathBuf>,
    started: Arc<AtomicBool>,
    /// The pid in a stale lock file that was taken over, for the caller to mention.
    pub took_over_from: Option<String>,
}

impl RunFolder {
    /// Creates `path` if needed and takes its lock, or says which process holds it.
    pub fn claim(path: &Path) -> Result<RunFolder> {
        let created_folder = !path.exists();
        std::fs::create_dir_all(path)
            .with_context(|| format!("creating the run folder {}", path.display()))?;
        let mut folder = RunFolder {
            path: path.to_path_buf(),
            lock_path: path.join(LOCK_FILE),
            lock: None,
            created_folder,
            created_files: Vec::new(),
            started: Arc::new(AtomicBool::new(false)),
            took_over_from: None,
        };
        folder.lock()?;
        Ok(folder)
    }

    fn lock(&mut self) -> Result<()> {
        // A holder that exits unlinks the lock file after we opened it: then we may lock a file
        // no longer at the path, so the inode is compared after locking and the claim retried.
        for _ in 0..10 {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.lock_path)
                .with_context(|| format!("creating the lock {}", self.lock_path.display()))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = read_pid(&mut file);
                    bail!(
                        "the run folder {} is in use by another training process (pid {holder}, \
                         holding {}): wait for it to end or stop it, or pass --out to start a \
                         run elsewhere",
                        self.path.display(),
                        self.lock_path.display()
                    );
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(e).with_context(|| {
                        format!(
                            "locking {} (does this filesystem support flock?)",
                            self.lock_path.display()
                        )
                    });
                }
            }
            if !same_file(&file, &self.lock_path) {
                continue;
            }
            let previous = read_pid(&mut file);
            if !previous.is_empty() {
                self.took_over_from = Some(previous);
            }
            file.set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| writeln!(file, "{}", std::process::id()))
                .with_context(|| format!("writing {}", self.lock_path.display()))?;
            self.lock = Some(file);
            return Ok(());
        }
        bail!(
            "could not lock {}: it keeps being replaced by another process",
            self.lock_path.display()
        )
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records that the start wrote `file` (so a failed start removes it).
    pub fn created(&mut self, file: PathBuf) {
        self.created_files.push(file);
    }

    /// The run has begun: from now on the folder and what the start wrote in it are kept.
    pub fn started(&self) {
        self.started.store(true, Ordering::SeqCst);
    }

    /// A flag that marks the run begun when set, for code that runs where this claim is not at
    /// hand (the training job, once its devices are up).
    pub fn start_flag(&self) -> Arc<AtomicBool> {
        self.started.clone()
    }
}

impl Drop for RunFolder {
    fn drop(&mut self) {
        let started = self.started.load(Ordering::SeqCst);
        if !started {
            for f in &self.created_files {
                let _ = std::fs::remove_file(f);
            }
        }
        if self.lock.is_some() {
            // Unlinked while still locked, so no other process can be holding this file.
            let _ = std::fs::remove_file(&self.lock_path);
            self.lock = None;
        }
        if !started && self.created_folder {
            // Only if empty: never remove what someone else put there meanwhile.
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

/// The pid a lock file holds (empty if none), as text for messages.
fn read_pid(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file
        .rewind()
        .and_then(|_| file.take(64).read_to_string(&mut text));
    text.trim().to_string()
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &File, path: &Path) -> bool {
    path.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_claim_at_a_time_and_a_stale_lock_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let first = RunFolder::claim(&run).unwrap();
        first.started();
        let pid = std::process::id().to_string();
        assert_eq!(
            std::fs::read_to_string(run.join(LOCK_FILE)).unwrap().trim(),
            pid
        );
        // flock locks belong to the open file, so a second claim in this process is refused
        // just as another process's would be.
        let e = format!("{:#}", RunFolder::claim(&run).err().unwrap());
        assert!(
            e.contains("in use by another training process") && e.contains(&pid),
            "{e}"
        );
        drop(first);
        assert!(!run.join(LOCK_FILE).exists(), "released on drop");

        // A lock file left by a dead process (no flock held): taken over, its pid reported.
        std::fs::write(run.join(LOCK_FILE), "999999\n").unwrap();
        let second = RunFolder::claim(&run).unwrap();
        assert_eq!(second.took_over_from.as_deref(), Some("999999"));
    }

    #[test]
    fn a_start_that_never_began_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("new-run");
        let mut claim = RunFolder::claim(&run).unwrap();
        std::fs::write(run.join("stats.safetensors"), b"x").unwrap();
        claim.created(run.join("stats.safetensors"));
        drop(claim);
        assert!(!run.exists(), "the folder this claim made is gone");

        // An existing folder keeps everything it had, byte for byte.
        let old = dir.path().join("old-run");
        std::fs::create_dir(&old).unwrap();
        std::fs::write(old.join("metrics.jsonl"), b"{}\n").unwrap();
        drop(RunFolder::claim(&old).unwrap());
        let names: Vec<_> = std::fs::read_dir(&old)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["metrics.jsonl"]);
        assert_eq!(std::fs::read(old.join("metrics.jsonl")).unwrap(), b"{}\n");
    }
}
