//! Writing a pack split from a dataset (see `pack`): shards cut, encoded and indexed in
//! parallel, resumable shard by shard, with the statistics summed in the same pass.

use super::format::{
    BLOCK, Entry, FORMAT, MANIFEST, Manifest, PackOptions, ShardEntry, ShardHeader, Skipped,
    index_text, read_index, read_manifest, shard_name,
};
use crate::data::decode;
use crate::data::source::Dataset;
use crate::data::stats::{Stats, Sums};
use crate::data::{BadSample, thread_pool};
use crate::files::{open_regular, write_atomic};
use crate::progress::Progress;
use anyhow::{Context, Result, anyhow, ensure};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// What [`pack_split`] did.
pub struct Packed {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// Shards found complete from an earlier, interrupted run (0 when all were made now).
    pub reused_shards: usize,
    /// Whether the whole split was already packed (nothing was written).
    pub complete_before: bool,
    /// Source files left out, as the raw readers name them.
    pub bad: Vec<BadSample>,
    /// The mean image and colour PCA of the packed images, when asked for.
    pub stats: Option<Stats>,
}

/// Packs every image of `source` into the split folder `dir` (see the module documentation),
/// resuming a pack of the same source and options left there by an interrupted run; with
/// `want_stats`, also sums the statistics of what it packs. Nothing is written until the source
/// and the folder have been checked.
pub fn pack_split(
    source: &Dataset,
    dir: &Path,
    options: &PackOptions,
    want_stats: bool,
    progress: &Progress,
) -> Result<Packed> {
    let fingerprint = source.fingerprint();
    let complete_before = check_destination_of(source, &fingerprint, dir, options)?;
    let manifest_path = dir.join(MANIFEST);
    let pool = thread_pool(options.threads)?;
    let n = source.len();
    let shards = n.div_ceil(options.shard_images);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut entries = Vec::with_capacity(shards);
    let mut headers = Vec::with_capacity(shards);
    let mut sums = want_stats.then(|| Sums::new(options.base));
    let mut reused = 0;
    let interrupted = |done: usize| {
        progress.finish();
        anyhow!(
            "interrupted: {done} of {shards} shards of {} are complete; run the same command again to resume",
            dir.display()
        )
    };
    for s in 0..shards {
        let first = s * options.shard_images;
        let count = options.shard_images.min(n - first);
        let made = match read_complete_shard(dir, s, &fingerprint, options, first, count)? {
            Some(found) => {
                reused += 1;
                if let Some(total) = sums.take() {
                    let tar = dir.join(format!("{}.tar", shard_name(s)));
                    let read = sum_shard(&pool, &tar, &found.1, options.base, progress)?;
                    sums = Some(total.merge(read));
                } else {
                    for _ in 0..count {
                        progress.inc();
                    }
                }
                found
            }
            None => {
                let Some((header, lines, shard_sums)) = write_shard(
                    &pool,
                    source,
                    dir,
                    s,
                    first,
                    count,
                    options,
                    &fingerprint,
                    want_stats,
                    progress,
                )?
                else {
                    return Err(interrupted(s));
                };
                sums = match (sums, shard_sums) {
                    (Some(total), Some(add)) => Some(total.merge(add)),
                    (total, _) => total,
                };
                (header, lines)
            }
        };
        if progress.interrupted() {
            return Err(interrupted(s));
        }
        headers.push(made.0);
        entries.push(made.1);
    }
    progress.finish();
    let manifest = manifest_of(source, fingerprint, options, &headers);
    ensure!(
        manifest.images > 0,
        "none of the {n} images of {} could be read; the first error: {}",
        source.path().display(),
        manifest
            .skipped
            .first()
            .map_or("none", |s| s.error.as_str())
    );
    if !complete_before {
        let json = serde_json::to_string_pretty(&manifest).expect("a manifest serialises");
        write_atomic(&manifest_path, json.as_bytes())?;
    }
    let bad = bad_samples(source, &headers);
    let stats = match sums {
        Some(sums) => {
            let packed = Dataset::open(dir)?;
            Some(sums.into_stats(&packed, options.base)?.0)
        }
        None => None,
    };
    Ok(Packed {
        dir: dir.to_path_buf(),
        manifest,
        reused_shards: if complete_before { 0 } else { reused },
        complete_before,
        bad,
        stats,
    })
}

/// The manifest of a split whose shards' headers are `headers`.
fn manifest_of(
    source: &Dataset,
    fingerprint: String,
    options: &PackOptions,
    headers: &[ShardHeader],
) -> Manifest {
    Manifest {
        format: FORMAT.into(),
        base: options.base,
        quality: options.quality,
        shard_images: options.shard_images,
        source: source.path().display().to_string(),
        source_fingerprint: fingerprint,
        classes: source.classes().to_vec(),
        images: headers.iter().map(|h| h.images).sum(),
        shards: headers
            .iter()
            .enumerate()
            .map(|(s, h)| ShardEntry {
                file: format!("{}.tar", shard_name(s)),
                images: h.images,
                bytes: h.bytes,
            })
            .collect(),
        skipped: headers.iter().flat_map(|h| h.skipped.clone()).collect(),
    }
}

/// Checks that `dir` can take a pack of `source` with `options` (nothing is written): the
/// options are valid, and the folder is absent, empty, an interrupted pack's, or a complete pack
/// of the same source and options (then `true`). Callers packing several splits check every one
/// first.
pub fn check_destination(source: &Dataset, dir: &Path, options: &PackOptions) -> Result<bool> {
    check_destination_of(source, &source.fingerprint(), dir, options)
}

/// [`check_destination`] with the source's fingerprint already taken (it hashes every name).
fn check_destination_of(
    source: &Dataset,
    fingerprint: &str,
    dir: &Path,
    options: &PackOptions,
) -> Result<bool> {
    ensure!(
        (1..=100).contains(&options.quality),
        "JPEG quality {} is not in 1..=100",
        options.quality
    );
    ensure!(
        options.shard_images > 0,
        "a shard must hold at least one image"
    );
    ensure!(
        (1..=4096).contains(&options.base),
        "base image side {} is not in 1..=4096",
        options.base
    );
    ensure!(
        !source.is_empty(),
        "{} holds no images",
        source.path().display()
    );
    let manifest_path = dir.join(MANIFEST);
    let want = |m: &Manifest| {
        m.format == FORMAT
            && m.base == options.base
            && m.quality == options.quality
            && m.shard_images == options.shard_images
            && m.source_fingerprint == fingerprint
            && m.classes == source.classes()
    };
    let mut complete_before = false;
    if manifest_path.exists() {
        let m = read_manifest(dir)?;
        ensure!(
            want(&m),
            "{} already holds a pack of {} (base {}, quality {}, {} per shard{}): remove it or choose another folder",
            dir.display(),
            m.source,
            m.base,
            m.quality,
            m.shard_images,
            if m.source_fingerprint == fingerprint {
                ""
            } else {
                ", other images than this source holds now"
            }
        );
        complete_before = true;
    } else if dir.exists() {
        check_only_shards(dir)?;
    }
    Ok(complete_before)
}

/// The source's unreadable files as [`BadSample`]s (by source index, found by name).
fn bad_samples(source: &Dataset, headers: &[ShardHeader]) -> Vec<BadSample> {
    let mut bad = Vec::new();
    for h in headers {
        for sk in &h.skipped {
            if let Some(i) = (h.first..h.first + h.count).find(|&i| source.describe(i) == sk.path) {
                bad.push(BadSample {
                    index: i,
                    path: sk.path.clone(),
                    error: sk.error.clone(),
                });
            }
        }
    }
    bad
}

/// A split folder without a manifest may hold only an interrupted pack's files.
fn check_only_shards(dir: &Path) -> Result<()> {
    ensure!(dir.is_dir(), "{} exists and is not a folder", dir.display());
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let ours = name.starts_with("shard-")
            && (name.ends_with(".tar") || name.ends_with(".idx") || name.contains(".partial-"));
        ensure!(
            ours,
            "{} holds {name}, which is not part of a pack: choose an empty or new folder",
            dir.display()
        );
    }
    Ok(())
}

/// Shard `s` as an earlier run left it, if complete and made from the same source and options.
/// Leftover temporary files are removed.
fn read_complete_shard(
    dir: &Path,
    s: usize,
    fingerprint: &str,
    options: &PackOptions,
    first: usize,
    count: usize,
) -> Result<Option<(ShardHeader, Vec<Entry>)>> {
    let idx = dir.join(format!("{}.idx", shard_name(s)));
    let tar = dir.join(format!("{}.tar", shard_name(s)));
    if let Ok(list) = std::fs::read_dir(dir) {
        let prefix = format!("{}.", shard_name(s));
        for e in list.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && name.contains(".partial-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if !idx.exists() {
        return Ok(None);
    }
    let (header, lines) = read_index(&idx)?;
    let expected = |h: &ShardHeader| {
        h.format == FORMAT
            && h.source_fingerprint == fingerprint
            && h.base == options.base
            && h.quality == options.quality
            && h.first == first
            && h.count == count
    };
    ensure!(
        expected(&header),
        "{} was made from another source or with other options than this pack: remove the folder or choose another",
        idx.display()
    );
    let tar_len = std::fs::metadata(&tar).map(|m| m.len()).ok();
    // A tar that disagrees with its index was cut short after it: made again.
    Ok((tar_len == Some(header.bytes)).then_some((header, lines)))
}

/// A shard as written: its header, its images' index lines, and their statistics' sums when
/// asked for.
type WrittenShard = (ShardHeader, Vec<Entry>, Option<Sums>);

/// Decodes, cuts, encodes and writes shard `s` (source samples `first .. first + count`);
/// `None` if interrupted, with nothing of it written.
#[allow(clippy::too_many_arguments)]
fn write_shard(
    pool: &rayon::ThreadPool,
    source: &Dataset,
    dir: &Path,
    s: usize,
    first: usize,
    count: usize,
    options: &PackOptions,
    fingerprint: &str,
    want_stats: bool,
    progress: &Progress,
) -> Result<Option<WrittenShard>> {
    let base = options.base;
    type Encoded = std::result::Result<Vec<u8>, String>;
    let (mut encoded, sums): (Vec<(usize, Encoded)>, Option<Sums>) = pool.install(|| {
        (first..first + count)
            .into_par_iter()
            .fold(
                || (Vec::new(), want_stats.then(|| Sums::new(base))),
                |(mut out, mut sums), i| {
                    if progress.interrupted() {
                        return (out, sums);
                    }
                    let jpeg = source
                        .load_unnamed(i, base)
                        .map_err(|e| format!("{e:#}"))
                        .and_then(|pixels| encode_jpeg(&pixels, base, options.quality))
                        .and_then(|jpeg| {
                            // Summed as the loader will see it: the packed JPEG decoded.
                            if let Some(sums) = sums.as_mut() {
                                let pixels = decode::decode_base(&jpeg, base)
                                    .map_err(|e| format!("re-encoded JPEG unreadable: {e:#}"))?;
                                sums.add_image(&pixels);
                            }
                            Ok(jpeg)
                        });
                    out.push((i, jpeg));
                    progress.inc();
                    (out, sums)
                },
            )
            .reduce(
                || (Vec::new(), want_stats.then(|| Sums::new(base))),
                |(mut a, sa), (b, sb)| {
                    a.extend(b);
                    let sums = match (sa, sb) {
                        (Some(x), Some(y)) => Some(x.merge(y)),
                        _ => None,
                    };
                    (a, sums)
                },
            )
    });
    if progress.interrupted() {
        return Ok(None); // nothing of this shard is written
    }
    encoded.sort_by_key(|(i, _)| *i);
    let (tar, lines, skipped) = shard_tar(source, encoded)?;
    let header = ShardHeader {
        format: FORMAT.into(),
        source_fingerprint: fingerprint.into(),
        base,
        quality: options.quality,
        first,
        count,
        images: lines.len(),
        bytes: tar.len() as u64,
        skipped,
    };
    let name = shard_name(s);
    write_atomic(&dir.join(format!("{name}.tar")), &tar)?;
    write_atomic(
        &dir.join(format!("{name}.idx")),
        index_text(&header, &lines).as_bytes(),
    )?;
    Ok(Some((header, lines, sums)))
}

/// The tar of a shard's encoded images (in sample order; a failed one is skipped with its
/// error), with its index lines.
#[allow(clippy::type_complexity)]
fn shard_tar(
    source: &Dataset,
    encoded: Vec<(usize, std::result::Result<Vec<u8>, String>)>,
) -> Result<(Vec<u8>, Vec<Entry>, Vec<Skipped>)> {
    let mut tar = Vec::new();
    let mut lines = Vec::new();
    let mut skipped = Vec::new();
    for (i, jpeg) in encoded {
        match jpeg {
            Ok(jpeg) => {
                let key = format!("{i:08}");
                let label = source.label(i);
                let offset = append_member(&mut tar, &format!("{key}.jpg"), &jpeg)?;
                append_member(
                    &mut tar,
                    &format!("{key}.cls"),
                    label.to_string().as_bytes(),
                )?;
                lines.push(Entry {
                    key: i as u32,
                    offset,
                    size: jpeg.len() as u64,
                    label,
                    name: source.samples()[i].name.clone(),
                });
            }
            Err(error) => skipped.push(Skipped {
                path: source.describe(i),
                error,
            }),
        }
    }
    tar.resize(tar.len() + 2 * BLOCK, 0); // the end-of-archive blocks
    Ok((tar, lines, skipped))
}

/// The packed image: baseline JPEG at `quality` with 4:2:0 chroma (as nearly every ImageNet
/// photograph already is; it decodes ~25% faster than 4:4:4) and the standard Huffman tables.
/// (jpeg-encoder 0.7.1's optimised tables corrupt 4:2:0 images: a mean error of ~115 grey levels,
/// which `tests/data_pack.rs` catches.)
fn encode_jpeg(pixels: &[u8], base: usize, quality: u8) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, quality);
    encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_0);
    encoder
        .encode(
            pixels,
            base as u16,
            base as u16,
            jpeg_encoder::ColorType::Rgb,
        )
        .map_err(|e| format!("encoding the base image: {e}"))?;
    Ok(out)
}

/// Appends one ustar member (mode 0644, owner 0, time 0: the shard depends on its images only)
/// and returns where its data starts.
fn append_member(tar: &mut Vec<u8>, name: &str, data: &[u8]) -> Result<u64> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)?;
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    tar.extend_from_slice(h.as_bytes());
    let offset = tar.len() as u64;
    tar.extend_from_slice(data);
    tar.resize(tar.len().div_ceil(BLOCK) * BLOCK, 0);
    Ok(offset)
}

/// Sums the statistics of a complete shard by decoding its images again.
fn sum_shard(
    pool: &rayon::ThreadPool,
    tar: &Path,
    entries: &[Entry],
    base: usize,
    progress: &Progress,
) -> Result<Sums> {
    let (file, _) = open_regular(tar)?;
    pool.install(|| {
        entries
            .par_iter()
            .try_fold(
                || Sums::new(base),
                |mut sums, e| -> Result<Sums> {
                    let bytes = crate::data::source::tar::read_at(&file, e.offset, e.size as usize)
                        .with_context(|| format!("reading {}", tar.display()))?;
                    let pixels = decode::decode_base(&bytes, base)
                        .with_context(|| format!("{}:{}", tar.display(), e.name))?;
                    sums.add_image(&pixels);
                    progress.inc();
                    Ok(sums)
                },
            )
            .try_reduce(|| Sums::new(base), |a, b| Ok(a.merge(b)))
    })
}
