//! Opening a pack split for reading: the manifest, every shard and its index, checked against
//! each other before a single image is read.

use super::format::{Entry, Manifest, read_index, read_manifest, shard_name};
use crate::files::open_regular;
use anyhow::{Context, Result, ensure};
use std::path::{Path, PathBuf};

/// What a pack split holds, checked against its files: every shard present and exactly as long
/// as the manifest says (a shard cut short is an error naming it), every index line inside its
/// shard with a known label.
pub(crate) struct Opened {
    pub manifest: Manifest,
    pub shards: Vec<(PathBuf, std::fs::File)>,
    /// Per shard, its images.
    pub entries: Vec<Vec<Entry>>,
}

pub(crate) fn open(dir: &Path) -> Result<Opened> {
    let manifest = read_manifest(dir)?;
    let mut shards = Vec::with_capacity(manifest.shards.len());
    let mut entries = Vec::with_capacity(manifest.shards.len());
    for (s, entry) in manifest.shards.iter().enumerate() {
        let path = dir.join(&entry.file);
        let (file, len) = open_regular(&path).context("a shard of the pack is missing")?;
        ensure!(
            len == entry.bytes,
            "{} is {}: it holds {len} bytes, the pack's manifest says {} (a copy cut short?)",
            path.display(),
            if len < entry.bytes {
                "truncated"
            } else {
                "not the shard the pack made"
            },
            entry.bytes
        );
        let (header, lines) = read_index(&dir.join(format!("{}.idx", shard_name(s))))?;
        ensure!(
            header.images == entry.images && header.bytes == entry.bytes,
            "{}: its index does not match the manifest",
            path.display()
        );
        for e in &lines {
            ensure!(
                e.offset.checked_add(e.size).is_some_and(|end| end <= len),
                "{}: the index puts {} past the shard's end",
                path.display(),
                e.name
            );
            ensure!(
                (e.label as usize) < manifest.classes.len(),
                "{}: {} has label {}, but the pack has {} classes",
                path.display(),
                e.name,
                e.label,
                manifest.classes.len()
            );
        }
        shards.push((path, file));
        entries.push(lines);
    }
    Ok(Opened {
        manifest,
        shards,
        entries,
    })
}
