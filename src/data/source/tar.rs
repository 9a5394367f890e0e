//! Listing a dataset that is an uncompressed tar archive, and reading its members in place.

use super::listing::{Found, Listing, is_image};
use anyhow::{Context, Result, anyhow, bail};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Component, Path, PathBuf};

/// Tar's block size: headers and member data start on multiples of it.
const TAR_BLOCK: u64 = 512;

/// Indexes an uncompressed tar: every regular member's path, data offset and size (hard links
/// and symbolic links to regular members read their target's bytes). Every member type that
/// GNU, ustar and pax tar write is either read or reported in `unreadable`; an archive whose
/// members run past its end, or that ends without its end-of-archive block, is an error that
/// says so. A single top folder wrapping the whole tree is stripped.
pub(super) fn list_tar(path: &Path, flat: bool) -> Result<(File, Listing)> {
    let (file, archive_len) = crate::files::open_regular(path)?;
    refuse_gzip(&file, path)?;
    let mut listing = Listing::default();
    // Member path → (offset, size) of every regular member, for links to find their target.
    let mut regular: BTreeMap<Vec<String>, (u64, u64)> = BTreeMap::new();
    let mut symlinks: Vec<(Vec<String>, PathBuf)> = Vec::new();
    let (mut members, mut end) = (0usize, 0u64);
    {
        let mut archive = tar::Archive::new(&file);
        let entries = archive
            .entries_with_seek()
            .with_context(|| format!("reading {}", path.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| {
                if members == 0 {
                    anyhow!(
                        "{} is not a folder or a tar archive (it does not start with a tar header)",
                        path.display()
                    )
                } else {
                    anyhow!(
                        "{} is a damaged or truncated tar archive: after {members} members, the \
                         next header (near byte {end}) cannot be read: {}",
                        path.display(),
                        printable(&e.to_string())
                    )
                }
            })?;
            members += 1;
            let (offset, size) = (entry.raw_file_position(), entry.size());
            let data_end = offset.checked_add(size).filter(|&e| e <= archive_len);
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(data_end) = data_end else {
                bail!(
                    "{} is truncated: member {members} ({name}) claims {size} bytes at byte \
                     {offset}, but the archive ends at byte {archive_len} ({} members read before it)",
                    path.display(),
                    members - 1
                );
            };
            end = data_end.div_ceil(TAR_BLOCK) * TAR_BLOCK;
            let parts = member_parts(Path::new(&name));
            add_member(
                &mut listing,
                &mut regular,
                &mut symlinks,
                &entry,
                parts,
                offset,
                size,
            );
        }
    }
    // A tar ends with zero blocks; reaching the end of the bytes first means it was cut short at
    // a member boundary (the iterator stops quietly there). An empty file is an empty archive.
    if archive_len > 0 && archive_len < end + TAR_BLOCK {
        bail!(
            "{} is truncated: it ends after {members} members without tar's end-of-archive block \
             (a copy or download cut short?)",
            path.display()
        );
    }
    resolve_symlinks(&mut listing, &symlinks, &regular);
    strip_top_folder(&mut listing, flat);
    Ok((file, listing))
}

/// Adds one tar member to the listing: a file, a folder, a hard link to an earlier regular
/// member, a symbolic link (resolved once the whole archive is read), or, for anything else,
/// an unreadable entry saying what it is.
#[allow(clippy::too_many_arguments)]
fn add_member(
    listing: &mut Listing,
    regular: &mut BTreeMap<Vec<String>, (u64, u64)>,
    symlinks: &mut Vec<(Vec<String>, PathBuf)>,
    entry: &tar::Entry<'_, &File>,
    parts: Vec<String>,
    offset: u64,
    size: u64,
) {
    use tar::EntryType as T;
    match entry.header().entry_type() {
        // Metadata for the archive as a whole, not a member.
        T::XGlobalHeader => {}
        _ if parts.is_empty() => {}
        T::Directory => listing.dirs.push(parts),
        T::Regular | T::Continuous => {
            regular.insert(parts.clone(), (offset, size));
            listing.files.push(Found {
                parts,
                offset,
                size,
            });
        }
        T::Link => {
            // GNU tar stores a file's later copies as hard links to its first.
            let target = entry
                .link_name_bytes()
                .map(|t| member_parts(Path::new(&*String::from_utf8_lossy(&t))));
            match target.as_ref().and_then(|t| regular.get(t)) {
                Some(&(offset, size)) => listing.files.push(Found {
                    parts,
                    offset,
                    size,
                }),
                None => listing.unreadable.push((
                    parts.join("/"),
                    "a hard link to no regular member before it".into(),
                )),
            }
        }
        T::Symlink => match entry.link_name_bytes() {
            Some(t) => symlinks.push((
                parts,
                PathBuf::from(String::from_utf8_lossy(&t).into_owned()),
            )),
            None => listing
                .unreadable
                .push((parts.join("/"), "a symbolic link without a target".into())),
        },
        other => {
            let what = match other {
                T::Fifo => "a FIFO".to_string(),
                T::Char => "a character device".to_string(),
                T::Block => "a block device".to_string(),
                T::GNUSparse => "a sparse file (not read from archives)".to_string(),
                other => format!("a tar member of type {:?}", other.as_byte() as char),
            };
            listing
                .unreadable
                .push((parts.join("/"), format!("{what}, not a regular file")));
        }
    }
}

/// A gzip-compressed archive is refused by name: members are read in place by offset.
fn refuse_gzip(file: &File, path: &Path) -> Result<()> {
    let mut magic = [0u8; 2];
    if read_at(file, 0, 2)
        .map(|m| magic.copy_from_slice(&m))
        .is_ok()
        && magic == [0x1f, 0x8b]
    {
        bail!(
            "{} is gzip-compressed; members are read in place by offset, so decompress it first (gunzip)",
            path.display()
        );
    }
    Ok(())
}

/// Adds each symbolic link whose target is a regular member (`regular`) as a file reading the
/// target's bytes, and the others as unreadable.
fn resolve_symlinks(
    listing: &mut Listing,
    symlinks: &[(Vec<String>, PathBuf)],
    regular: &BTreeMap<Vec<String>, (u64, u64)>,
) {
    // Symbolic links read their target's bytes when it is a regular member (followed through
    // other links, at most a few deep).
    let links: BTreeMap<Vec<String>, PathBuf> = symlinks.iter().cloned().collect();
    for (parts, _) in symlinks.iter().cloned() {
        match resolve_tar_link(&parts, &links, regular) {
            Ok((offset, size)) => listing.files.push(Found {
                parts,
                offset,
                size,
            }),
            Err(why) => listing.unreadable.push((parts.join("/"), why)),
        }
    }
}

/// Strips the one top folder that wraps the whole tree, where there is one.
fn strip_top_folder(listing: &mut Listing, flat: bool) {
    // `[<top>/]<class>/<image>` (or `[<top>/]<image>` when flat): strip the one top folder.
    let depth = if flat { 1 } else { 2 };
    let images = listing.files.iter().filter(|f| is_image(&f.parts));
    let tops: BTreeSet<&str> = images.clone().map(|f| f.parts[0].as_str()).collect();
    if tops.len() == 1 && images.clone().all(|f| f.parts.len() == depth + 1) {
        let top = tops.into_iter().next().unwrap_or_default().to_string();
        listing
            .files
            .retain(|f| f.parts.len() > 1 && f.parts[0] == top);
        for f in &mut listing.files {
            f.parts.remove(0);
        }
        listing.dirs.retain(|d| d.len() > 1 && d[0] == top);
        for d in &mut listing.dirs {
            d.remove(0);
        }
        for (name, _) in &mut listing.unreadable {
            if let Some(rest) = name.strip_prefix(&format!("{top}/")) {
                *name = rest.to_string();
            }
        }
    }
}

/// A member path's normal components (`./a/b` and `a/b` are the same member).
fn member_parts(path: &Path) -> Vec<String> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect()
}

/// The regular member a tar symbolic link at `parts` points to, or why it points to none.
fn resolve_tar_link(
    parts: &[String],
    links: &BTreeMap<Vec<String>, PathBuf>,
    regular: &BTreeMap<Vec<String>, (u64, u64)>,
) -> std::result::Result<(u64, u64), String> {
    let mut at = parts.to_vec();
    for _ in 0..8 {
        let Some(target) = links.get(&at) else {
            return regular.get(&at).copied().ok_or_else(|| {
                format!(
                    "a symbolic link to {}, which is no regular member of the archive",
                    at.join("/")
                )
            });
        };
        if target.is_absolute() {
            return Err(format!(
                "a symbolic link to {}, outside the archive",
                target.display()
            ));
        }
        // Relative to the link's folder, `..` resolved lexically.
        at.pop();
        for c in target.components() {
            match c {
                Component::Normal(s) => at.push(s.to_string_lossy().into_owned()),
                Component::ParentDir => {
                    if at.pop().is_none() {
                        return Err(format!(
                            "a symbolic link to {}, outside the archive",
                            target.display()
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    Err("a symbolic link that loops (or chains more than 8 links)".into())
}

/// A message from a parser made safe to print: control and non-ASCII bytes become `?`, and it
/// is cut to a line.
fn printable(message: &str) -> String {
    let clean: String = message
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(120)
        .collect();
    if message.chars().count() > 120 {
        format!("{clean}...")
    } else {
        clean
    }
}

/// Reads `len` bytes at `offset` without moving a shared cursor, so threads can read one file at
/// once.
pub(crate) fn read_at(file: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(&mut buf, offset)?;
    }
    #[cfg(windows)]
    {
        use std::os::windows::fs::FileExt;
        let mut done = 0;
        while done < len {
            let n = file.seek_read(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            done += n;
        }
    }
    Ok(buf)
}
