//! Reading users' files without hanging or over-allocating, and writing ours without tearing.
//!
//! Anything a user points the engine at (images, labels, specs, checkpoints, statistics) is opened
//! through [`open_regular`]: non-blocking, so a FIFO named `x.JPEG` cannot hang the open, then
//! checked to be a regular file (after symbolic links are resolved) before a byte is read. Reads
//! are bounded by the size the file really has and by a caller's cap, never by what a header
//! inside it claims. Our own outputs are written by [`write_atomic`]: a temporary file, flushed to
//! disk, renamed into place, so a crash, a kill or a full disk leaves the previous file intact.

use anyhow::{Context, Result, bail};
use std::fs::{File, FileType};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The default cap on one image's encoded bytes: far above any real photograph (ImageNet's
/// largest JPEG is under 16 MB; a 100-megapixel camera's are about 50 MB), far below what would
/// hurt a machine if a few threads read such files at once.
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 256 << 20;

/// The cap on a text file we read whole (labels, specs, synset lists): ImageNet's are under 3 MB.
pub const MAX_TEXT_BYTES: u64 = 256 << 20;

/// What a non-regular entry is, for messages.
pub fn kind_name(kind: FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_socket() {
            return "a socket";
        }
        if kind.is_char_device() {
            return "a character device";
        }
        if kind.is_block_device() {
            return "a block device";
        }
    }
    if kind.is_dir() {
        "a folder"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// Opens `path` for reading if it is a regular file (following symbolic links), and returns it
/// with its length. The open does not block on a FIFO or a device. Errors name the file.
pub fn open_regular(path: &Path) -> Result<(File, u64)> {
    open_regular_unnamed(path).map_err(|e| named(path, e))
}

/// `<path>: <error and its causes>` as one message.
fn named(path: &Path, e: anyhow::Error) -> anyhow::Error {
    anyhow::anyhow!("{}: {e:#}", path.display())
}

/// [`open_regular`] with errors that leave naming the file to the caller.
pub fn open_regular_unnamed(path: &Path) -> Result<(File, u64)> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Without it, opening a FIFO waits for a writer that may never come. Regular files ignore
        // the flag, so reads below behave as usual.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).context("cannot open it")?;
    let meta = file.metadata().context("cannot read it")?;
    if !meta.is_file() {
        bail!("is {}, not a regular file", kind_name(meta.file_type()));
    }
    Ok((file, meta.len()))
}

/// The whole of a regular file of at most `cap` bytes. A larger file is refused without reading
/// it; one that grows while read is cut at `cap + 1` bytes and refused too. Errors name the file.
pub fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>> {
    read_capped_unnamed(path, cap).map_err(|e| named(path, e))
}

/// [`read_capped`] with errors that leave naming the file to the caller (reports that name
/// each bad file once).
pub fn read_capped_unnamed(path: &Path, cap: u64) -> Result<Vec<u8>> {
    let (file, len) = open_regular_unnamed(path)?;
    let too_big = |n: u64| anyhow::anyhow!("is {n} bytes, more than the limit of {cap} bytes");
    if len > cap {
        return Err(too_big(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .context("cannot read it")?;
    if bytes.len() as u64 > cap {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// A regular text file of at most [`MAX_TEXT_BYTES`], as UTF-8.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = read_capped(path, MAX_TEXT_BYTES)?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// A regular file whole, with no cap but its real size (checkpoints: a paper net's is 488 MB).
pub fn read_whole(path: &Path) -> Result<Vec<u8>> {
    read_capped(path, u64::MAX - 1)
}

/// The temporary name [`write_atomic`] writes `path` under: beside it (a rename must stay on one
/// filesystem), marked with this process, so two writers never share one.
pub fn partial_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!("{name}.partial-{}", std::process::id()))
}

/// Writes `bytes` to `path` so that readers see the old file or the new one, never part of one:
/// written to [`partial_path`], flushed to disk, renamed over `path`, and the folder flushed so
/// the rename itself survives a power loss. A failure removes the temporary file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = partial_path(path);
    let written = (|| -> Result<()> {
        let mut f =
            File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        // Best effort: some filesystems refuse to sync a folder, and the data is already safe.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_are_read_within_their_cap_and_nothing_else_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.bin");
        std::fs::write(&file, [7u8; 100]).unwrap();
        assert_eq!(read_capped(&file, 100).unwrap().len(), 100);
        let e = format!("{:#}", read_capped(&file, 99).unwrap_err());
        assert!(
            e.contains("a.bin: is 100 bytes, more than the limit of 99"),
            "{e}"
        );
        let e = format!("{:#}", read_capped(dir.path(), 1000).unwrap_err());
        assert!(e.contains("is a folder, not a regular file"), "{e}");
        #[cfg(unix)]
        {
            let fifo = dir.path().join("x.JPEG");
            let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
            // Returns at once (a blocking open would wait for a writer forever).
            let e = format!("{:#}", read_capped(&fifo, 1000).unwrap_err());
            assert!(e.contains("x.JPEG: is a FIFO, not a regular file"), "{e}");
        }
    }

    #[test]
    fn an_atomic_write_replaces_the_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert!(!partial_path(&path).exists());
        // A folder squatting on the target: the write fails, the temporary is removed.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir_all(blocked.join("inside")).unwrap();
        assert!(write_atomic(&blocked, b"x").is_err());
        assert!(!partial_path(&blocked).exists());
    }
}
