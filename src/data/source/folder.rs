//! Listing a dataset that is a folder.

use super::listing::{Found, Listing};
use anyhow::{Context, Result};
use std::path::Path;

/// Lists a folder two levels deep (`<class>/<image>`), or one level when `flat`.
pub(super) fn list_folder(root: &Path, flat: bool) -> Result<Listing> {
    let mut listing = Listing::default();
    for entry in read_dir_sorted(root, &[], &mut listing.unreadable)? {
        match entry {
            (name, EntryKind::File) => listing.files.push(Found {
                parts: vec![name],
                offset: 0,
                size: 0,
            }),
            (name, EntryKind::Dir) if !flat && !name.starts_with('.') => {
                let parent = [name.clone()];
                for inner in read_dir_sorted(&root.join(&name), &parent, &mut listing.unreadable)? {
                    if let (inner, EntryKind::File) = inner {
                        listing.files.push(Found {
                            parts: vec![name.clone(), inner],
                            offset: 0,
                            size: 0,
                        });
                    }
                }
                listing.dirs.push(vec![name]);
            }
            _ => {}
        }
    }
    Ok(listing)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum EntryKind {
    File,
    Dir,
}

/// Entries of a folder that are regular files or folders (symbolic links resolved), sorted by
/// name. Everything else (FIFOs, sockets, devices, broken or looping links, names that are not
/// UTF-8) is added to `unreadable` as `parent/name` with the reason; it never stops the listing.
fn read_dir_sorted(
    dir: &Path,
    parent: &[String],
    unreadable: &mut Vec<(String, String)>,
) -> Result<Vec<(String, EntryKind)>> {
    let below = |name: &str| {
        let mut parts = parent.to_vec();
        parts.push(name.to_string());
        parts.join("/")
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = match entry.file_name().into_string() {
            Ok(name) => name,
            Err(raw) => {
                let lossy = raw.to_string_lossy().into_owned();
                unreadable.push((below(&lossy), "its name is not UTF-8".into()));
                continue;
            }
        };
        // The entry's own type comes with the listing; only links need a look at their target.
        let kind = match entry.file_type() {
            Ok(kind) if kind.is_symlink() => match std::fs::metadata(entry.path()) {
                Ok(target) => target.file_type(),
                Err(e) => {
                    let why = match e.raw_os_error() {
                        Some(libc::ELOOP) => "a symbolic link that loops".to_string(),
                        _ if e.kind() == std::io::ErrorKind::NotFound => {
                            "a broken symbolic link (its target does not exist)".to_string()
                        }
                        _ => format!("a symbolic link that cannot be followed ({e})"),
                    };
                    unreadable.push((below(&name), why));
                    continue;
                }
            },
            Ok(kind) => kind,
            Err(e) => {
                unreadable.push((below(&name), format!("cannot be read ({e})")));
                continue;
            }
        };
        if kind.is_dir() {
            out.push((name, EntryKind::Dir));
        } else if kind.is_file() {
            out.push((name, EntryKind::File));
        } else {
            let what = crate::files::kind_name(kind);
            unreadable.push((below(&name), format!("{what}, not a regular file")));
        }
    }
    out.sort();
    Ok(out)
}
