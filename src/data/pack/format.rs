//! What a pack is on disk (see `pack`): the manifest, the shards' names and their index lines,
//! read and written here and nowhere else.

use crate::files::read_text;
use anyhow::{Context, Result, anyhow, ensure};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The manifest's `format`, and the first word of each index's header.
pub const FORMAT: &str = "alexnet-pack-1";
/// The file whose presence makes a folder a pack split.
pub const MANIFEST: &str = "pack.json";
/// Tar's block: headers and members are padded to it.
pub(super) const BLOCK: usize = 512;

/// How to pack.
#[derive(Clone, Debug)]
pub struct PackOptions {
    /// Side of the stored base images (256, the paper's).
    pub base: usize,
    /// JPEG quality of the stored images (1-100); 90 takes about 20 KB per 256×256 ImageNet
    /// image.
    pub quality: u8,
    /// Images per shard (the last holds the rest): 4096 at 256×256 are about 100 MB.
    pub shard_images: usize,
    /// Decoding and encoding threads.
    pub threads: usize,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            base: 256,
            quality: 90,
            shard_images: 4096,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// `pack.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub base: usize,
    pub quality: u8,
    pub shard_images: usize,
    /// The source dataset's path and `Dataset::fingerprint`.
    pub source: String,
    pub source_fingerprint: String,
    pub classes: Vec<String>,
    /// Images in the pack.
    pub images: usize,
    pub shards: Vec<ShardEntry>,
    /// Source files left out because they could not be read.
    pub skipped: Vec<Skipped>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub file: String,
    pub images: usize,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub path: String,
    pub error: String,
}

/// The JSON of an index's `#` line: what must match for a shard to be reused on resume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct ShardHeader {
    pub format: String,
    pub source_fingerprint: String,
    pub base: usize,
    pub quality: u8,
    /// The source samples `first .. first + count` were packed into this shard.
    pub first: usize,
    pub count: usize,
    pub images: usize,
    pub bytes: u64,
    pub skipped: Vec<Skipped>,
}

/// One image's index line.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Entry {
    /// The source sample index, the member's key.
    pub key: u32,
    pub offset: u64,
    pub size: u64,
    pub label: u32,
    pub name: String,
}

pub(super) fn shard_name(s: usize) -> String {
    format!("shard-{s:06}")
}

pub(super) fn escape(name: &str) -> String {
    name.replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

pub(super) fn index_text(header: &ShardHeader, lines: &[Entry]) -> String {
    let mut text = format!(
        "# {}\n",
        serde_json::to_string(header).expect("a header serialises")
    );
    for e in lines {
        text += &format!(
            "{}\t{}\t{}\t{:08}\t{}\n",
            e.offset,
            e.size,
            e.label,
            e.key,
            escape(&e.name)
        );
    }
    text
}

/// Reads a shard index, naming it in every error.
pub(super) fn read_index(path: &Path) -> Result<(ShardHeader, Vec<Entry>)> {
    let text = read_text(path)?;
    let bad = |line: usize, why: &str| anyhow!("{} line {line}: {why}", path.display());
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let header: ShardHeader = first
        .strip_prefix("# ")
        .and_then(|j| serde_json::from_str(j).ok())
        .ok_or_else(|| bad(1, "not a pack index header (`# {json}`)"))?;
    let mut entries = Vec::with_capacity(header.images);
    for (k, line) in lines.enumerate() {
        let f: Vec<&str> = line.splitn(5, '\t').collect();
        let [offset, size, label, key, name] = f[..] else {
            return Err(bad(k + 2, "expected offset, size, label, key and name"));
        };
        let num = |s: &str| s.parse::<u64>().map_err(|_| bad(k + 2, "not a number"));
        entries.push(Entry {
            key: key.parse().map_err(|_| bad(k + 2, "bad key"))?,
            offset: num(offset)?,
            size: num(size)?,
            label: label.parse().map_err(|_| bad(k + 2, "bad label"))?,
            name: unescape(name),
        });
    }
    ensure!(
        entries.len() == header.images,
        "{}: {} image lines, its header says {}",
        path.display(),
        entries.len(),
        header.images
    );
    Ok((header, entries))
}

pub(super) fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = read_text(&path)?;
    let m: Manifest = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a pack manifest", path.display()))?;
    ensure!(
        m.format == FORMAT,
        "{} is a pack of format {:?}; this build reads {FORMAT:?}",
        path.display(),
        m.format
    );
    Ok(m)
}
