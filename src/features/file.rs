//! Feature matrices on disk, in formats other programs read without this engine, streamed row by
//! row so that a gallery of a million images never sits in memory:
//!
//! - `.npy` (NumPy's format, read by numpy, PyTorch and FAISS' loaders): one `[rows, cols]`
//!   little-endian f32 (or f16) matrix, and a sidecar `<name>.rows.tsv` beside it, one line per
//!   row: its index, path and label.
//! - `.safetensors`: the same matrix as the tensor `features`, with the rows' paths and labels
//!   in the metadata (`rows`, a JSON list of `[path, label]`).
//!
//! Nothing is visible under the final names until [`FeatureWriter::finish`]: the rows go to
//! partial files beside them (removed if the writer is dropped unfinished, e.g. on Ctrl-C) and
//! are renamed into place at the end. An existing file is never overwritten.

use crate::files::partial_path;
use anyhow::{Context, Result, bail, ensure};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The `.npy` header's length, fixed so that the row count can be rewritten in place at the
/// end: magic, version, length and a dict padded with spaces (a multiple of 64, as NumPy aligns).
const NPY_HEADER_BYTES: usize = 128;

/// The file formats, chosen by the name given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Npy,
    Safetensors,
}

impl Format {
    pub fn of(path: &Path) -> Result<Format> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("npy") => Ok(Format::Npy),
            Some("safetensors") => Ok(Format::Safetensors),
            _ => bail!(
                "{}: name the features file .npy (a NumPy matrix, with a .rows.tsv beside it) or .safetensors",
                path.display()
            ),
        }
    }
}

/// The sidecar listing a `.npy` file's rows.
pub fn rows_path(npy: &Path) -> PathBuf {
    npy.with_extension("rows.tsv")
}

/// Writes a feature matrix one row at a time; see the module documentation.
pub struct FeatureWriter {
    format: Format,
    path: PathBuf,
    cols: usize,
    half: bool,
    rows: u64,
    /// The matrix's bytes (for `.npy`, behind the header), under a partial name.
    data: Option<(PathBuf, BufWriter<File>)>,
    /// Each row's path and label: streamed to the sidecar (`.npy`) or kept for the metadata.
    index: RowIndex,
    /// What the rows are (layer, network, views, checkpoint): in the `.safetensors` metadata, or
    /// on the sidecar's first line.
    about: Vec<(String, String)>,
}

enum RowIndex {
    Sidecar(PathBuf, BufWriter<File>),
    InMemory(Vec<(String, String)>),
}

impl FeatureWriter {
    /// A writer of `cols`-wide rows to `path` (f16 with `half`), refused where `path` (or its
    /// sidecar) exists. `about` is recorded in the `.safetensors` metadata, or on the sidecar's
    /// first line (`#key=value` pairs, tab-separated).
    pub fn create(
        path: &Path,
        cols: usize,
        half: bool,
        about: Vec<(String, String)>,
    ) -> Result<FeatureWriter> {
        let format = Format::of(path)?;
        ensure!(cols > 0, "features of width 0");
        let mut finals = vec![path.to_path_buf()];
        if format == Format::Npy {
            finals.push(rows_path(path));
        }
        for f in &finals {
            ensure!(
                !f.exists(),
                "{} exists: features are never written over a file (remove it, or name another)",
                f.display()
            );
        }
        let data_path = partial_path(path);
        let mut data = BufWriter::new(create_new(&data_path)?);
        if format == Format::Npy {
            data.write_all(&npy_header(0, cols, half))?;
        }
        let index = match format {
            Format::Npy => {
                let p = partial_path(&rows_path(path));
                let f = create_new(&p).inspect_err(|_| {
                    let _ = std::fs::remove_file(&data_path);
                })?;
                let mut f = BufWriter::new(f);
                // What the rows are, on a comment line (numpy's loadtxt and pandas' read_csv
                // with comment='#' skip it): `alexnet similar` checks a gallery by it.
                let line: Vec<String> = about
                    .iter()
                    .map(|(k, v)| format!("{k}={}", tsv(v)))
                    .collect();
                writeln!(f, "#{}", line.join("\t"))?;
                RowIndex::Sidecar(p, f)
            }
            Format::Safetensors => RowIndex::InMemory(Vec::new()),
        };
        Ok(FeatureWriter {
            format,
            path: path.to_path_buf(),
            cols,
            half,
            rows: 0,
            data: Some((data_path, data)),
            index,
            about,
        })
    }

    /// Appends one row: its values, and the path and label it is listed with.
    pub fn push(&mut self, row: &[f32], path: &str, label: &str) -> Result<()> {
        ensure!(
            row.len() == self.cols,
            "a row of {} values in a file of {}-wide rows",
            row.len(),
            self.cols
        );
        let (data_path, data) = self.data.as_mut().expect("open until finished");
        let mut bytes = Vec::with_capacity(row.len() * 4);
        for &v in row {
            if self.half {
                bytes.extend_from_slice(&half::f16::from_f32(v).to_le_bytes());
            } else {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        data.write_all(&bytes)
            .with_context(|| format!("cannot write {}", data_path.display()))?;
        match &mut self.index {
            RowIndex::Sidecar(p, f) => writeln!(f, "{}\t{}\t{}", self.rows, tsv(path), tsv(label))
                .with_context(|| format!("cannot write {}", p.display()))?,
            RowIndex::InMemory(v) => v.push((path.to_string(), label.to_string())),
        }
        self.rows += 1;
        Ok(())
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Completes the file(s) and renames them into place; returns the matrix's path.
    pub fn finish(mut self) -> Result<PathBuf> {
        let (data_path, data) = self.data.take().expect("open until finished");
        let mut file = data
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("cannot write {}", data_path.display()))?;
        let result = match self.format {
            Format::Npy => self.finish_npy(&mut file, &data_path),
            Format::Safetensors => self.finish_safetensors(file, &data_path),
        };
        if result.is_err() {
            let _ = std::fs::remove_file(&data_path);
        }
        result?;
        Ok(self.path.clone())
    }

    fn finish_npy(&mut self, file: &mut File, data_path: &Path) -> Result<()> {
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&npy_header(self.rows, self.cols, self.half))?;
        file.sync_all()
            .with_context(|| format!("cannot write {}", data_path.display()))?;
        let RowIndex::Sidecar(rows_partial, rows) =
            std::mem::replace(&mut self.index, RowIndex::InMemory(Vec::new()))
        else {
            unreachable!(".npy rows go to a sidecar")
        };
        let rows = rows.into_inner().map_err(|e| e.into_error())?;
        rows.sync_all()?;
        // The sidecar first: a matrix is never in place without its rows' list.
        std::fs::rename(&rows_partial, rows_path(&self.path))?;
        std::fs::rename(data_path, &self.path)
            .with_context(|| format!("cannot rename to {}", self.path.display()))
    }

    fn finish_safetensors(&mut self, data: File, data_path: &Path) -> Result<()> {
        let RowIndex::InMemory(rows) = &self.index else {
            unreachable!(".safetensors rows are kept for the metadata")
        };
        let width = if self.half { 2 } else { 4 };
        let bytes = self.rows * self.cols as u64 * width;
        let mut metadata = serde_json::Map::new();
        for (k, v) in &self.about {
            metadata.insert(k.clone(), v.clone().into());
        }
        metadata.insert("rows".into(), serde_json::to_string(rows)?.into());
        let header = serde_json::json!({
            "__metadata__": metadata,
            "features": {
                "dtype": if self.half { "F16" } else { "F32" },
                "shape": [self.rows, self.cols as u64],
                "data_offsets": [0, bytes],
            },
        });
        let mut header = serde_json::to_vec(&header)?;
        // Padded with spaces so the data starts 8-byte aligned, as the format allows.
        while (8 + header.len()) % 8 != 0 {
            header.push(b' ');
        }
        let out_partial = partial_path(&partial_path(&self.path));
        let written = (|| -> Result<()> {
            let mut out = BufWriter::new(create_new(&out_partial)?);
            out.write_all(&(header.len() as u64).to_le_bytes())?;
            out.write_all(&header)?;
            let mut data = std::io::BufReader::new(data);
            data.seek(SeekFrom::Start(0))?;
            std::io::copy(&mut data, &mut out)?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&out_partial, &self.path)
                .with_context(|| format!("cannot rename to {}", self.path.display()))
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&out_partial);
        }
        let _ = std::fs::remove_file(data_path);
        written
    }
}

impl Drop for FeatureWriter {
    /// An unfinished writer (an error, an interruption) leaves nothing behind.
    fn drop(&mut self) {
        if let Some((p, _)) = self.data.take() {
            let _ = std::fs::remove_file(p);
        }
        if let RowIndex::Sidecar(p, _) = &self.index {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn create_new(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

/// A field of the sidecar: tabs and line breaks (which a path may hold) shown as spaces.
fn tsv(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

/// NumPy's format 1.0 header for a C-order `[rows, cols]` matrix, [`NPY_HEADER_BYTES`] long.
fn npy_header(rows: u64, cols: usize, half: bool) -> Vec<u8> {
    let descr = if half { "<f2" } else { "<f4" };
    let dict =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let mut h = b"\x93NUMPY\x01\x00".to_vec();
    let len = NPY_HEADER_BYTES - 10;
    h.extend_from_slice(&(len as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h.resize(NPY_HEADER_BYTES - 1, b' ');
    h.push(b'\n');
    h
}

/// A `.npy` or `.safetensors` feature file opened for reading a block of rows at a time (a
/// million-row gallery is never read whole): its shape, each row's path and label, and what the
/// writer recorded about it (layer, network, views, checkpoint).
pub struct FeatureReader {
    path: PathBuf,
    file: File,
    rows: usize,
    cols: usize,
    half: bool,
    /// Where row 0 starts in the file.
    data_start: u64,
    listed: Vec<(String, String)>,
    about: Vec<(String, String)>,
    /// The last block's bytes, as read.
    bytes: Vec<u8>,
}

/// The longest safetensors header read (its metadata lists every row's path: a million rows
/// of 100-byte paths take 100 MB).
const MAX_HEADER_BYTES: u64 = 1 << 30;

impl FeatureReader {
    pub fn open(path: &Path) -> Result<FeatureReader> {
        let format = Format::of(path)?;
        let (file, len) = crate::files::open_regular(path)?;
        let mut r = FeatureReader {
            path: path.to_path_buf(),
            file,
            rows: 0,
            cols: 0,
            half: false,
            data_start: 0,
            listed: Vec::new(),
            about: Vec::new(),
            bytes: Vec::new(),
        };
        match format {
            Format::Npy => r.open_npy()?,
            Format::Safetensors => r.open_safetensors()?,
        }
        // Checked: the shape is what the file claims, the length what it has.
        let expected = (r.rows as u64)
            .checked_mul(r.cols as u64)
            .and_then(|v| v.checked_mul(r.value_bytes() as u64))
            .and_then(|v| v.checked_add(r.data_start));
        ensure!(
            expected == Some(len),
            "{} is {len} bytes, not what its header's [{}, {}] {} matrix makes",
            path.display(),
            r.rows,
            r.cols,
            if r.half { "f16" } else { "f32" }
        );
        ensure!(
            r.listed.len() == r.rows,
            "{} lists {} rows' paths for a matrix of {} rows",
            path.display(),
            r.listed.len(),
            r.rows
        );
        Ok(r)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Each row's path and label, in row order.
    pub fn listed(&self) -> &[(String, String)] {
        &self.listed
    }

    /// What the writer recorded under `key` (`layer`, `network`, `views`, `checkpoint`), if it did.
    pub fn about(&self, key: &str) -> Option<&str> {
        self.about
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn value_bytes(&self) -> usize {
        if self.half { 2 } else { 4 }
    }

    /// Rows `start..start + count` as f32, `[count, cols]`, into `out` (its memory reused: a
    /// search reads a block after another of the same size).
    pub fn read_rows_into(&mut self, start: usize, count: usize, out: &mut Vec<f32>) -> Result<()> {
        ensure!(
            start + count <= self.rows,
            "rows {start}..{} of {}, which has {}",
            start + count,
            self.path.display(),
            self.rows
        );
        let width = self.value_bytes();
        let at = self.data_start + (start * self.cols * width) as u64;
        self.bytes.resize(count * self.cols * width, 0);
        self.file
            .seek(SeekFrom::Start(at))
            .and_then(|_| self.file.read_exact(&mut self.bytes))
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        decode_into(&self.bytes, self.half, out);
        Ok(())
    }

    fn not_ours(&self, why: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "{} is not a feature matrix this engine reads: {why}",
            self.path.display()
        )
    }

    /// NumPy's header (format 1.0, or 2.0/3.0 with a 4-byte length), then the sidecar.
    fn open_npy(&mut self) -> Result<()> {
        let mut lead = [0u8; 12];
        self.file
            .read_exact(&mut lead[..10])
            .map_err(|_| self.not_ours("shorter than a .npy header"))?;
        ensure!(
            lead.starts_with(b"\x93NUMPY"),
            self.not_ours("no .npy magic")
        );
        let (header_len, header_start) = match lead[6] {
            1 => (u16::from_le_bytes([lead[8], lead[9]]) as u64, 10),
            2 | 3 => {
                self.file
                    .read_exact(&mut lead[10..12])
                    .map_err(|_| self.not_ours("shorter than a .npy header"))?;
                (
                    u32::from_le_bytes([lead[8], lead[9], lead[10], lead[11]]) as u64,
                    12,
                )
            }
            v => return Err(self.not_ours(&format!(".npy format version {v}"))),
        };
        ensure!(
            header_len <= 1 << 20,
            self.not_ours("a .npy header over 1 MiB")
        );
        let mut dict = vec![0u8; header_len as usize];
        self.file
            .read_exact(&mut dict)
            .map_err(|_| self.not_ours("its .npy header is cut short"))?;
        let dict = String::from_utf8_lossy(&dict);
        self.half = if dict.contains("'descr': '<f2'") {
            true
        } else if dict.contains("'descr': '<f4'") {
            false
        } else {
            return Err(self.not_ours("its values are not little-endian f32 or f16"));
        };
        ensure!(
            dict.contains("'fortran_order': False"),
            self.not_ours("the matrix is stored column by column (Fortran order)")
        );
        let dims: Vec<usize> = dict
            .split("'shape': (")
            .nth(1)
            .and_then(|s| s.split(')').next())
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .filter_map(|s| s.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let [rows, cols] = dims[..] else {
            return Err(self.not_ours("not a two-dimensional matrix"));
        };
        (self.rows, self.cols) = (rows, cols);
        self.data_start = header_start + header_len;
        let sidecar = rows_path(&self.path);
        let text = crate::files::read_text(&sidecar)
            .context("the rows' paths and labels of a .npy gallery are read from beside it")?;
        for line in text.lines() {
            if let Some(about) = line.strip_prefix('#') {
                self.about.extend(about.split('\t').filter_map(|kv| {
                    kv.trim()
                        .split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                }));
                continue;
            }
            let mut fields = line.splitn(3, '\t').skip(1);
            let path = fields.next().unwrap_or_default().to_string();
            self.listed
                .push((path, fields.next().unwrap_or_default().to_string()));
        }
        Ok(())
    }

    /// The 8-byte header length, the JSON header (tensor `features` and the metadata), read
    /// without reading the data.
    fn open_safetensors(&mut self) -> Result<()> {
        let mut n = [0u8; 8];
        self.file
            .read_exact(&mut n)
            .map_err(|_| self.not_ours("shorter than a safetensors header"))?;
        let n = u64::from_le_bytes(n);
        ensure!(
            n <= MAX_HEADER_BYTES,
            self.not_ours(&format!("a header of {n} bytes"))
        );
        let mut header = Vec::new();
        (&mut self.file).take(n).read_to_end(&mut header)?;
        ensure!(
            header.len() as u64 == n,
            self.not_ours("its header is cut short")
        );
        let header: serde_json::Value = serde_json::from_slice(&header)
            .map_err(|e| self.not_ours(&format!("its header is not JSON ({e})")))?;
        let t = header
            .get("features")
            .ok_or_else(|| self.not_ours("it holds no `features` tensor"))?;
        self.half = match t.get("dtype").and_then(|d| d.as_str()) {
            Some("F32") => false,
            Some("F16") => true,
            other => return Err(self.not_ours(&format!("features of dtype {other:?}"))),
        };
        let dims: Vec<usize> = t
            .get("shape")
            .and_then(|s| s.as_array())
            .map(|s| {
                s.iter()
                    .filter_map(|d| d.as_u64())
                    .map(|d| d as usize)
                    .collect()
            })
            .unwrap_or_default();
        let [rows, cols] = dims[..] else {
            return Err(self.not_ours("the features are not a matrix"));
        };
        (self.rows, self.cols) = (rows, cols);
        let begin = t
            .get("data_offsets")
            .and_then(|o| o.get(0))
            .and_then(|o| o.as_u64())
            .ok_or_else(|| self.not_ours("no data offsets"))?;
        self.data_start = 8 + n + begin;
        let meta = header.get("__metadata__").and_then(|m| m.as_object());
        for (k, v) in meta.into_iter().flatten() {
            let Some(v) = v.as_str() else { continue };
            if k == "rows" {
                self.listed = serde_json::from_str(v)
                    .map_err(|e| self.not_ours(&format!("its `rows` metadata ({e})")))?;
            } else {
                self.about.push((k.clone(), v.to_string()));
            }
        }
        Ok(())
    }
}

/// A feature file read whole: `[rows, cols]` values as f32, and each row's path and label.
pub fn read(path: &Path) -> Result<(usize, Vec<f32>, Vec<(String, String)>)> {
    let mut r = FeatureReader::open(path)?;
    let mut values = Vec::new();
    r.read_rows_into(0, r.rows, &mut values)?;
    Ok((r.cols, values, r.listed))
}

/// Little-endian f32 (or f16) values as f32, into `out`.
fn decode_into(bytes: &[u8], half: bool, out: &mut Vec<f32>) {
    out.clear();
    if half {
        out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
        );
    } else {
        out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, cols: usize) -> Vec<Vec<f32>> {
        (0..n)
            .map(|r| {
                (0..cols)
                    .map(|c| r as f32 * 0.5 - c as f32 * 0.25)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn both_formats_read_back_what_was_written_and_name_each_row() {
        let dir = tempfile::tempdir().unwrap();
        for (name, half) in [("f.npy", false), ("h.npy", true), ("f.safetensors", false)] {
            let path = dir.path().join(name);
            let mut w = FeatureWriter::create(&path, 3, half, vec![("layer".into(), "fc7".into())])
                .unwrap();
            for (i, r) in rows(5, 3).iter().enumerate() {
                w.push(r, &format!("img/{i}.jpg"), "dog").unwrap();
            }
            assert_eq!(w.finish().unwrap(), path);
            let (cols, values, listed) = read(&path).unwrap();
            assert_eq!(cols, 3);
            // Every value here is a multiple of 1/4 below 3: exact in f16 too.
            assert_eq!(values, rows(5, 3).concat(), "{name}");
            assert_eq!(listed.len(), 5);
            assert_eq!(listed[4], ("img/4.jpg".to_string(), "dog".to_string()));
            let leftovers: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().contains("partial"))
                .collect();
            assert!(leftovers.is_empty(), "{leftovers:?}");
        }
        let header = std::fs::read(dir.path().join("f.npy")).unwrap();
        let dict = String::from_utf8_lossy(&header[10..NPY_HEADER_BYTES]);
        assert!(dict.contains("'shape': (5, 3)"), "{dict}");
        assert_eq!(header.len(), NPY_HEADER_BYTES + 5 * 3 * 4);
    }

    #[test]
    fn an_existing_file_is_refused_and_an_unfinished_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.npy");
        std::fs::write(rows_path(&path), "mine").unwrap();
        let e = FeatureWriter::create(&path, 3, false, vec![])
            .err()
            .unwrap();
        assert!(e.to_string().contains("never written over"), "{e}");
        std::fs::remove_file(rows_path(&path)).unwrap();
        let mut w = FeatureWriter::create(&path, 3, false, vec![]).unwrap();
        w.push(&[1.0, 2.0, 3.0], "a", "").unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let e = FeatureWriter::create(&dir.path().join("f.bin"), 3, false, vec![])
            .err()
            .unwrap();
        assert!(e.to_string().contains(".npy"), "{e}");
    }
}
