//! Dataset readers: which images a dataset holds, their labels, and their bytes.
//!
//! A dataset is a folder or an uncompressed tar archive of one, in one of two layouts:
//! - class folders (ImageFolder; ImageNet's `train/`, CIFAR-10's tars): `<root>/<class>/<image>`.
//!   A tar may wrap the tree in one top folder (`train/<class>/<image>`).
//! - flat, with a labels file (ImageNet's `val/`): `<root>/<image>`; see [`OpenOptions::labels`].
//!
//! Classes are the sorted folder names; samples are ordered by class, then by file name (the
//! order torchvision's ImageFolder uses). Only files named `*.jpg`, `*.jpeg` or `*.png` (any case)
//! count as images, and hidden files (`.name`) are skipped; what is inside is detected from the
//! content, not the name. A tar is indexed once (member offsets and sizes) and then read in place,
//! from any number of threads at once, by positioned reads.

mod folder;
mod labels;
mod layout;
mod listing;
pub(crate) mod tar;

use super::decode;
use super::synthetic::Synthetic;
use anyhow::{Context, Result, anyhow, bail, ensure};
use folder::list_folder;
use std::fs::File;
use std::path::{Path, PathBuf};
use tar::{list_tar, read_at};

/// One image of a dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Path relative to the dataset root (a folder) or the member path (a tar), `/`-separated.
    pub name: String,
    /// Index into [`Dataset::classes`].
    pub label: u32,
    /// Where a tar member's bytes start, and how many there are (unused for folders).
    offset: u64,
    size: u64,
}

/// How to open a dataset: the defaults read class folders.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Read the flat layout: every image directly in the root (or in the tar's one top folder),
    /// labelled by this text file. Two forms are accepted (blank lines and `#` lines are skipped):
    /// - `<file name> <label>` per line (e.g. Caffe's ImageNet `val.txt`); images without a line
    ///   are skipped with a warning, a line naming a missing image is an error;
    /// - one `<label>` per line: line i labels the i-th image in sorted file-name order (the
    ///   counts must match).
    ///
    /// A label is a class name, or a 0-based index into the sorted class list (which needs
    /// [`OpenOptions::classes`]); a token that is a class name is read as a name. ILSVRC-2012's
    /// devkit ground truth uses its own 1-based ids in another order: convert it to wnids first.
    pub labels: Option<PathBuf>,
    /// The training set's classes, so that labels mean the same in every split: class folders
    /// must be among them, label indices refer to them. Without it, classes are this dataset's
    /// own folder names (or, flat, the sorted distinct label names).
    pub classes: Option<Vec<String>>,
    /// The most bytes one image file may hold; a larger one is skipped by name without being
    /// read [default: [`crate::files::DEFAULT_MAX_IMAGE_BYTES`]].
    pub max_image_bytes: Option<u64>,
}

/// A dataset: its classes, its samples, and the means to read them.
pub struct Dataset {
    path: PathBuf,
    classes: Vec<String>,
    samples: Vec<Sample>,
    store: Store,
    warnings: Vec<String>,
    max_image_bytes: u64,
}

enum Store {
    Folder,
    Tar(File),
    /// A pack split's shards (path, file) and each sample's shard.
    Pack {
        shards: Vec<(PathBuf, File)>,
        shard_of: Vec<u32>,
        /// Each sample's member key (its index in the source).
        keys: Vec<u32>,
    },
    Synthetic(Synthetic),
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("path", &self.path)
            .field("classes", &self.classes.len())
            .field("samples", &self.samples.len())
            .finish()
    }
}

impl Dataset {
    /// Opens a folder or tar of class folders.
    pub fn open(path: impl AsRef<Path>) -> Result<Dataset> {
        Self::open_with(path, &OpenOptions::default())
    }

    /// Opens a folder or tar with the given options (a labels file reads the flat layout).
    pub fn open_with(path: impl AsRef<Path>, options: &OpenOptions) -> Result<Dataset> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path)
            .with_context(|| format!("dataset not found: {}", path.display()))?;
        if meta.is_dir() && path.join(super::pack::format::MANIFEST).exists() {
            return Self::open_pack(path, options);
        }
        let flat = options.labels.is_some();
        let (store, listing) = if meta.is_dir() {
            (Store::Folder, list_folder(path, flat)?)
        } else {
            let (file, listing) = list_tar(path, flat)?;
            (Store::Tar(file), listing)
        };
        let mut dataset = Dataset {
            path: path.to_path_buf(),
            classes: Vec::new(),
            samples: Vec::new(),
            store,
            warnings: Vec::new(),
            max_image_bytes: options
                .max_image_bytes
                .unwrap_or(crate::files::DEFAULT_MAX_IMAGE_BYTES),
        };
        dataset.report_unreadable(&listing.unreadable);
        dataset.arrange(listing.files, listing.dirs, options)?;
        Ok(dataset)
    }

    /// A pack split (see [`super::pack`]): its manifest and shards checked, samples in the
    /// order they were packed (the source's, less its unreadable files).
    fn open_pack(path: &Path, options: &OpenOptions) -> Result<Dataset> {
        ensure!(
            options.labels.is_none(),
            "{} is a pack, which carries its labels: no labels file is read for it",
            path.display()
        );
        let opened = super::pack::reader::open(path)?;
        let m = &opened.manifest;
        if let Some(classes) = &options.classes {
            ensure!(
                classes == &m.classes,
                "{} was packed with {} classes that are not the training set's {}",
                path.display(),
                m.classes.len(),
                classes.len()
            );
        }
        let mut warnings = Vec::new();
        if !m.skipped.is_empty() {
            warnings.push(format!(
                "{}: {} unreadable files of {} were left out when it was packed (listed in its {})",
                path.display(),
                m.skipped.len(),
                m.source,
                super::pack::format::MANIFEST
            ));
        }
        let (mut samples, mut shard_of, mut keys) = (Vec::new(), Vec::new(), Vec::new());
        for (s, lines) in opened.entries.into_iter().enumerate() {
            for e in lines {
                samples.push(Sample {
                    name: e.name,
                    label: e.label,
                    offset: e.offset,
                    size: e.size,
                });
                shard_of.push(s as u32);
                keys.push(e.key);
            }
        }
        ensure!(
            !samples.is_empty(),
            "the pack {} holds no images",
            path.display()
        );
        Ok(Dataset {
            path: path.to_path_buf(),
            classes: m.classes.clone(),
            samples,
            store: Store::Pack {
                shards: opened.shards,
                shard_of,
                keys,
            },
            warnings,
            max_image_bytes: options
                .max_image_bytes
                .unwrap_or(crate::files::DEFAULT_MAX_IMAGE_BYTES),
        })
    }

    /// Whether this is a pack split.
    pub fn is_pack(&self) -> bool {
        matches!(self.store, Store::Pack { .. })
    }

    /// The built-in procedural dataset (see [`super::synthetic`]).
    pub fn synthetic(synthetic: Synthetic) -> Dataset {
        let classes = super::synthetic::CLASSES.map(String::from).to_vec();
        let samples = (0..synthetic.len())
            .map(|i| Sample {
                name: format!("{}/{i:06}", classes[synthetic.label(i) as usize]),
                label: synthetic.label(i),
                offset: 0,
                size: 0,
            })
            .collect();
        Dataset {
            path: PathBuf::from(format!("synthetic:{}", synthetic.describe())),
            classes,
            samples,
            store: Store::Synthetic(synthetic),
            warnings: Vec::new(),
            max_image_bytes: crate::files::DEFAULT_MAX_IMAGE_BYTES,
        }
    }

    /// The path this dataset was opened from (`synthetic:...` for the built-in one).
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn is_synthetic(&self) -> bool {
        matches!(self.store, Store::Synthetic(_))
    }
    /// Class names; label `i` is `classes()[i]`.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }
    pub fn len(&self) -> usize {
        self.samples.len()
    }
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
    pub fn label(&self, index: usize) -> u32 {
        self.samples[index].label
    }
    /// Things found while opening that did not stop it (empty class folders, skipped files): the
    /// caller should print them.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
    /// Samples per class, indexed by label.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for s in &self.samples {
            counts[s.label as usize] += 1;
        }
        counts
    }

    /// Where sample `index` lives, for messages: `<root>/<name>` or `<tar>:<member>`.
    pub fn describe(&self, index: usize) -> String {
        let name = &self.samples[index].name;
        match &self.store {
            Store::Folder => self.path.join(name).display().to_string(),
            Store::Pack {
                shards,
                shard_of,
                keys,
            } => {
                let shard = &shards[shard_of[index] as usize].0;
                format!("{}:{:08}.jpg ({name})", shard.display(), keys[index])
            }
            Store::Tar(_) | Store::Synthetic(_) => format!("{}:{name}", self.path.display()),
        }
    }

    /// A fingerprint of what the dataset holds: XXH3-64 over its classes and every sample's name,
    /// label and (for tar members) size, as 16 hex digits. Cheap (no file is read), and it changes
    /// when images are added, removed, renamed or relabelled, which is what would make a resumed
    /// run see other batches than the ones it started with; a file rewritten in place under the
    /// same name is not noticed.
    pub fn fingerprint(&self) -> String {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let mut field = |bytes: &[u8]| {
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        if let Store::Synthetic(s) = &self.store {
            field(s.describe().as_bytes());
        }
        for c in &self.classes {
            field(c.as_bytes());
        }
        for s in &self.samples {
            field(s.name.as_bytes());
            field(&s.label.to_le_bytes());
            field(&s.size.to_le_bytes());
        }
        format!("{:016x}", h.digest())
    }

    /// The encoded bytes of sample `index` (an error for the synthetic dataset, which has none).
    /// Errors name the file.
    pub fn read(&self, index: usize) -> Result<Vec<u8>> {
        self.read_unnamed(index)
            .with_context(|| format!("reading {}", self.describe(index)))
    }

    /// [`Dataset::read`] with errors that do not repeat the file's name (the caller gives it).
    fn read_unnamed(&self, index: usize) -> Result<Vec<u8>> {
        let sample = &self.samples[index];
        let cap = self.max_image_bytes;
        match &self.store {
            Store::Folder => crate::files::read_capped_unnamed(&self.path.join(&sample.name), cap),
            Store::Tar(file) => {
                ensure!(
                    sample.size <= cap,
                    "the member is {} bytes, more than the limit of {cap} bytes per image",
                    sample.size
                );
                Ok(read_at(file, sample.offset, sample.size as usize)?)
            }
            Store::Pack {
                shards, shard_of, ..
            } => {
                ensure!(
                    sample.size <= cap,
                    "the image is {} bytes, more than the limit of {cap} bytes per image",
                    sample.size
                );
                let file = &shards[shard_of[index] as usize].1;
                Ok(read_at(file, sample.offset, sample.size as usize)?)
            }
            Store::Synthetic(_) => bail!("the synthetic dataset has no files"),
        }
    }

    /// Sample `index` as a `base`×`base` RGB image, `u8` in HWC order: decoded and cut to the
    /// centred square, then resized (see [`decode::to_base`]). Errors name the file.
    pub fn load(&self, index: usize, base: usize) -> Result<Vec<u8>> {
        self.load_unnamed(index, base)
            .with_context(|| format!("cannot use {}", self.describe(index)))
    }

    /// [`Dataset::load`] with errors that do not name the file, for reports that name it once
    /// themselves ([`super::BadSample`]).
    pub(crate) fn load_unnamed(&self, index: usize, base: usize) -> Result<Vec<u8>> {
        if let Store::Synthetic(synthetic) = &self.store {
            return Ok(synthetic.render(index, base));
        }
        let bytes = self.read_unnamed(index)?;
        decode::decode_base(&bytes, base)
    }

    /// Entries that are no image to read (FIFOs, devices, broken links, names that are not
    /// UTF-8): each named in the warnings, up to a screenful.
    fn report_unreadable(&mut self, unreadable: &[(String, String)]) {
        const SHOWN: usize = 20;
        for (name, why) in unreadable.iter().take(SHOWN) {
            self.warnings
                .push(format!("skipped {}: {why}", self.member_path(name)));
        }
        if unreadable.len() > SHOWN {
            self.warnings.push(format!(
                "{}: skipped {} more entries that are not readable files",
                self.path.display(),
                unreadable.len() - SHOWN
            ));
        }
    }

    /// A path inside the dataset, for messages.
    fn member_path(&self, relative: &str) -> String {
        match self.store {
            Store::Folder => self.path.join(relative).display().to_string(),
            _ => format!("{}:{relative}", self.path.display()),
        }
    }
}

/// One line of a labels file.
/// The training and validation parts of a dataset root: `train` or `train.tar`, and `val`,
/// `val.tar`, `test` or `test.tar` (the first present), e.g. ImageNet's `train/` and `val/`, or
/// CIFAR-10's `train.tar` and `test.tar`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Splits {
    pub train: PathBuf,
    pub val: Option<PathBuf>,
}

impl Splits {
    pub fn find(root: impl AsRef<Path>) -> Result<Splits> {
        let root = root.as_ref();
        ensure!(
            root.is_dir(),
            "dataset not found: {} is not a folder",
            root.display()
        );
        let first = |names: &[&str]| names.iter().map(|n| root.join(n)).find(|p| p.exists());
        let train = first(&["train", "train.tar"])
            .ok_or_else(|| anyhow!("{} holds neither train/ nor train.tar", root.display()))?;
        let val = first(&["val", "val.tar", "test", "test.tar"]);
        Ok(Splits { train, val })
    }
}
