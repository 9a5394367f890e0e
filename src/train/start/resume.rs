//! The run a start continues: its folder, its checkpoint, and what that checkpoint records.

use crate::train::checkpoint::{self, Checkpoint, DataRecord};
use crate::train::run::checkpoint_path;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The run being continued: its folder, checkpoint file and what the checkpoint holds.
pub(super) struct Resume {
    pub(super) folder: PathBuf,
    pub(super) file: PathBuf,
    pub(super) ck: Checkpoint,
}

impl Resume {
    pub(super) fn open(path: &Path) -> Result<Resume> {
        let (folder, file) = if path.is_dir() {
            (path.to_path_buf(), checkpoint_path(path))
        } else {
            let folder = path.parent().map(PathBuf::from).unwrap_or_default();
            (folder, path.to_path_buf())
        };
        let ck = checkpoint::load(&file)
            .with_context(|| format!("cannot resume from {}", path.display()))?;
        if !ck.checksummed {
            eprintln!(
                "note: {} predates tensor checksums; its weights were checked only for being finite",
                file.display()
            );
        }
        Ok(Resume { folder, file, ck })
    }

    pub(super) fn record(&self) -> Option<&DataRecord> {
        self.ck.data.as_ref()
    }
}
